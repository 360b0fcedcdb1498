// GET /api/ssegate/authorize?topic=users/42/notifications&topic=...
//
// Forward authorization (`[auth] subscribe_auth = "forward"` with
// `subscribe_auth_url = "http://<this app>/api/ssegate/authorize"`):
// ssegate asks this route before it opens a subscription, passing on the
// browser's Cookie, Authorization and Origin headers. 2xx allows every
// topic, 401 means "not signed in", 403 "not yours"; ssegate passes the
// status on and never this body. Anything else (or no answer in time) is
// a temporary refusal: EventSource is told to come back later.

import { NextRequest } from 'next/server';
import { currentUser, mayRead } from '../../../../lib/session.ts';

export async function GET(request: NextRequest): Promise<Response> {
  const user = await currentUser(request.headers.get('cookie'));
  if (!user) return new Response(null, { status: 401 });
  const topics = request.nextUrl.searchParams.getAll('topic');
  if (topics.length === 0 || !topics.every((topic) => mayRead(user, topic))) {
    return new Response(null, { status: 403 });
  }
  return new Response(null, { status: 204 });
}
