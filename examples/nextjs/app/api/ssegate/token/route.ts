// GET /api/ssegate/token
//
// JWT authorization (`[auth] subscribe_auth = "jwt"`): mints a short-lived
// subscriber token for the signed-in user, granting their own topics. The
// page puts it in a cookie or in the EventSource URL:
//   new EventSource(`${SSEGATE}/subscribe/users/${user}/notifications?access_token=${token}`)
// and, when the stream ends after `expiresAt`, opens a new EventSource with
// a fresh token and `last_event_id` of the old one (README, "Private topics").
// SSEGATE_JWT_SECRET is the content of ssegate's `jwt_secret_file`.

import { NextRequest, NextResponse } from 'next/server';
import { SignJWT } from 'jose';
import { currentUser } from '../../../../lib/session.ts';

/** Under ssegate's `query_token_max_lifetime` (5 minutes by default). */
const LIFETIME_SECONDS = 240;

export async function GET(request: NextRequest): Promise<NextResponse> {
  const user = await currentUser(request.headers.get('cookie'));
  if (!user) return NextResponse.json({ error: 'sign in first' }, { status: 401 });
  const secret = process.env.SSEGATE_JWT_SECRET;
  if (!secret) return NextResponse.json({ error: 'SSEGATE_JWT_SECRET is not set' }, { status: 500 });
  const expiresAt = Math.floor(Date.now() / 1000) + LIFETIME_SECONDS;
  const token = await new SignJWT({ ssegate: { subscribe: [`users/${user}/**`] } })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(user)
    .setAudience('ssegate')
    .setExpirationTime(expiresAt)
    .sign(new TextEncoder().encode(secret));
  return NextResponse.json({ token, expiresAt }, { headers: { 'cache-control': 'no-store' } });
}
