// POST /api/login  {"user": "42"}
//
// A stand-in for your real sign-in: it sets the `session` cookie that the
// two ssegate routes below read. Never ship this one.

import { NextRequest, NextResponse } from 'next/server';
import { sessionCookie } from '../../../lib/session.ts';

const USER_ID = /^[A-Za-z0-9_-]{1,64}$/;

export async function POST(request: NextRequest): Promise<NextResponse> {
  const body: unknown = await request.json().catch(() => null);
  const user = (body as { user?: unknown } | null)?.user;
  if (typeof user !== 'string' || !USER_ID.test(user)) {
    return NextResponse.json({ error: 'body must be {"user": "<id>"}' }, { status: 400 });
  }
  const response = NextResponse.json({ user });
  response.headers.set('set-cookie', await sessionCookie(user));
  return response;
}
