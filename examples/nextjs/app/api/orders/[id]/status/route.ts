// POST /api/orders/:id/status  {"status": "shipped"}
//
// Before: this route kept a TransformStream open per browser and wrote SSE
// into it, and every client that left turned into a ResponseAborted
// rejection, with events lost on reconnect. Now it updates the order and
// publishes one event; ssegate holds the streams, replays what a reconnecting
// browser missed, and the browser subscribes with
//   new EventSource(`${SSEGATE_URL}/subscribe/orders/${id}`)

import { NextRequest, NextResponse } from 'next/server';
import { publish, PublishError } from '../../../../../lib/ssegate.ts';

const ORDER_ID = /^[A-Za-z0-9_-]{1,64}$/;

export async function POST(
  request: NextRequest,
  { params }: { params: Promise<{ id: string }> },
): Promise<NextResponse> {
  const { id } = await params;
  if (!ORDER_ID.test(id)) {
    return NextResponse.json({ error: 'invalid order id' }, { status: 400 });
  }
  const body: unknown = await request.json().catch(() => null);
  const status = (body as { status?: unknown } | null)?.status;
  if (typeof status !== 'string' || status.length === 0) {
    return NextResponse.json({ error: 'body must be {"status": "<text>"}' }, { status: 400 });
  }

  // ... save the new status in your database here ...

  try {
    const published = await publish(`orders/${id}`, JSON.stringify({ id, status }), {
      event: 'status',
    });
    return NextResponse.json({ id, status, eventId: published.id });
  } catch (err) {
    // The order is saved; only the live update failed. Say so, do not hide it.
    const reason = err instanceof PublishError ? err.reason : String(err);
    return NextResponse.json({ id, status, liveUpdate: `failed: ${reason}` }, { status: 202 });
  }
}
