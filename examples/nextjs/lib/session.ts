// The app's own sessions, as small as a demo can make them: the `session`
// cookie is a JWT signed with SESSION_SECRET whose `sub` is the user id.
// Your app already has sessions (next-auth, iron-session, a database row);
// replace `currentUser` with however it reads them.

import { SignJWT, jwtVerify } from 'jose';

const SESSION_COOKIE = 'session';

function sessionKey(): Uint8Array {
  const secret = process.env.SESSION_SECRET;
  if (!secret || secret.length < 32) {
    throw new Error('SESSION_SECRET must be set to at least 32 characters');
  }
  return new TextEncoder().encode(secret);
}

/** The signed-in user's id, or null. */
export async function currentUser(cookieHeader: string | null): Promise<string | null> {
  const value = cookieHeader
    ?.split(';')
    .map((pair) => pair.trim())
    .find((pair) => pair.startsWith(`${SESSION_COOKIE}=`))
    ?.slice(SESSION_COOKIE.length + 1);
  if (!value) return null;
  try {
    const { payload } = await jwtVerify(value, sessionKey(), { algorithms: ['HS256'] });
    return typeof payload.sub === 'string' ? payload.sub : null;
  } catch {
    return null;
  }
}

/** A `Set-Cookie` value signing `userId` in for a day. */
export async function sessionCookie(userId: string): Promise<string> {
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setExpirationTime('1d')
    .sign(sessionKey());
  return `${SESSION_COOKIE}=${token}; Path=/; HttpOnly; SameSite=Lax`;
}

/** The topics a user may read: their own, and nothing else. */
export function mayRead(userId: string, topic: string): boolean {
  return topic.startsWith(`users/${userId}/`);
}
