// Private topics in a real browser, on a page of another origin: an HttpOnly
// cookie with `withCredentials` reads its own topic and is refused another
// user's (the EventSource errors and stays closed); the short-lived query
// token recipe (a new EventSource with a fresh token and the old one's last
// id) resumes exactly; @microsoft/fetch-event-source sends the token in an
// Authorization header. Tokens are minted with `jose`, as an app would.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import {
  metric, publish, setUpSuite, startEventSource, startGateway, stopGateway, waitFor, waitForEvents,
} from './harness.mjs';

const suite = setUpSuite({ pageServers: 1 });

const SECRET = 'browser-suite-hs256-secret-of-at-least-32-bytes';
const PUBLISH_TOKEN = 'browser-suite-publish-token';

function secretFile() {
  const file = path.join(os.tmpdir(), `ssegate-browser-auth-${process.pid}.secret`);
  fs.writeFileSync(file, SECRET);
  return file;
}

/** A subscriber token for user 42, as the app's token route would mint it. */
async function mint(subscribe, lifetimeSeconds) {
  const exp = Math.floor(Date.now() / 1000) + lifetimeSeconds;
  const token = await new SignJWT({ ssegate: { subscribe } })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('user-42')
    .setAudience('ssegate')
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(SECRET));
  return { token, exp };
}

function jwtGateway(origin) {
  return startGateway({
    origins: [origin],
    args: ['--auth-subscribe-auth', 'jwt', '--auth-jwt-algorithms', 'HS256',
      '--auth-jwt-secret-file', secretFile(), '--publish-token', PUBLISH_TOKEN],
  });
}

test('an HttpOnly cookie reads its own topic; another user\'s is refused and stays closed', async () => {
  const { origin } = suite.pages[0];
  const gateway = await jwtGateway(origin);
  const context = await suite.browser.newContext();
  try {
    const { token } = await mint(['users/42/**'], 240);
    // What the app's login response would set: same site as the gateway
    // (127.0.0.1, another port), so SameSite=Strict still sends it.
    await context.addCookies([{
      name: 'ssegate_token', value: token, domain: '127.0.0.1', path: '/subscribe',
      httpOnly: true, sameSite: 'Strict',
    }]);
    const own = await context.newPage();
    await own.goto(`${origin}/`);
    assert.equal(await own.evaluate(() => document.cookie.includes('ssegate_token')), false,
      'the page cannot read an HttpOnly cookie');
    await startEventSource(own, `${gateway.base}/subscribe/users/42/notifications`, { withCredentials: true });
    const others = await context.newPage();
    await others.goto(`${origin}/`);
    await startEventSource(others, `${gateway.base}/subscribe/users/43/notifications`, { withCredentials: true });
    const without = await context.newPage();
    await without.goto(`${origin}/`);
    await startEventSource(without, `${gateway.base}/subscribe/users/42/notifications`);

    await waitFor(own, () => window.opened === 1);
    await waitFor(others, () => window.source.readyState === 2);
    await waitFor(without, () => window.source.readyState === 2);
    const mine = await publish(gateway.base, 'users/42/notifications', 'for 42', undefined, PUBLISH_TOKEN);
    await publish(gateway.base, 'users/43/notifications', 'for 43 only', undefined, PUBLISH_TOKEN);
    assert.deepEqual(await waitForEvents(own, 1),
      [{ type: 'message', data: 'for 42', lastEventId: mine.id }]);
    // Refused for good: no retry, nothing received.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    for (const [page, what] of [[others, 'another user\'s topic'], [without, 'no credentials']]) {
      assert.deepEqual(await page.evaluate(() => [window.opened, window.received.length, window.errors]),
        [0, 0, 1], what);
    }
    assert.equal(await metric(gateway.base, 'ssegate_auth_denied_total{reason="scope"}'), 1);
    assert.equal(await metric(gateway.base, 'ssegate_auth_denied_total{reason="missing"}'), 1);
  } finally {
    await context.close();
    assert.equal(await stopGateway(gateway), 0);
  }
});

test('the query token recipe: a fresh EventSource with last_event_id resumes exactly', async () => {
  const { origin } = suite.pages[0];
  const gateway = await jwtGateway(origin);
  const page = await suite.browser.newPage();
  try {
    // The first token lives 3 s, the ones after it two minutes.
    let minted = 0;
    await page.exposeFunction('freshToken', () => {
      minted += 1;
      return mint(['users/42/**'], minted === 1 ? 3 : 120);
    });
    await page.goto(`${origin}/`);
    await page.evaluate((base) => {
      window.received = [];
      window.opened = 0;
      window.sources = 0;
      // The recipe from the README: EventSource reconnects to the same URL,
      // whose token has expired, so when its stream ends (or is refused)
      // after the token's exp, open a new one with a fresh token and the
      // last id this one saw.
      async function open(lastEventId) {
        const { token, exp } = await window.freshToken();
        const url = new URL(`${base}/subscribe/users/42/feed`);
        url.searchParams.set('access_token', token);
        if (lastEventId) url.searchParams.set('last_event_id', lastEventId);
        const source = new EventSource(url);
        window.sources += 1;
        let last = lastEventId;
        source.onopen = () => { window.opened += 1; };
        source.onmessage = (event) => {
          last = event.lastEventId;
          window.received.push({ data: event.data, lastEventId: event.lastEventId });
        };
        source.onerror = () => {
          if (source.readyState === EventSource.CLOSED || Date.now() / 1000 >= exp) {
            source.close();
            open(last);
          }
        };
      }
      open(null);
    }, gateway.base);
    await waitFor(page, () => window.opened === 1);
    const one = await publish(gateway.base, 'users/42/feed', 'one', undefined, PUBLISH_TOKEN);
    await waitForEvents(page, 1);
    // Published while the first token runs out and the page switches.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const two = await publish(gateway.base, 'users/42/feed', 'two', undefined, PUBLISH_TOKEN);
    await waitFor(page, () => window.sources >= 2 && window.opened >= 2);
    const three = await publish(gateway.base, 'users/42/feed', 'three', undefined, PUBLISH_TOKEN);
    await waitForEvents(page, 3);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.deepEqual(await page.evaluate(() => window.received), [
      { data: 'one', lastEventId: one.id },
      { data: 'two', lastEventId: two.id },
      { data: 'three', lastEventId: three.id },
    ], 'every event once, in order, across the token change');
  } finally {
    await page.close();
    assert.equal(await stopGateway(gateway), 0);
  }
});

test('@microsoft/fetch-event-source sends the token as Authorization: Bearer', async () => {
  const { origin } = suite.pages[0];
  const gateway = await jwtGateway(origin);
  const page = await suite.browser.newPage();
  try {
    await page.goto(`${origin}/`);
    const { token } = await mint(['users/42/**'], 240);
    await page.evaluate(async ({ base, token, module }) => {
      const { fetchEventSource } = await import(module);
      window.received = [];
      window.statuses = [];
      class Fatal extends Error {}
      const follow = (topic, list) => fetchEventSource(`${base}/subscribe/${topic}`, {
        headers: { Authorization: `Bearer ${token}` },
        openWhenHidden: true,
        async onopen(response) {
          window.statuses.push([topic, response.status]);
          if (!response.ok) throw new Fatal(`status ${response.status}`);
        },
        onmessage(event) {
          if (event.data) list.push(event.data);
        },
        onerror(err) {
          if (err instanceof Fatal) throw err;
          return 250;
        },
      }).catch(() => {});
      follow('users/42/inbox', window.received);
      follow('users/43/inbox', []);
    }, {
      base: gateway.base,
      token,
      module: `${origin}/node_modules/@microsoft/fetch-event-source/lib/esm/index.js`,
    });
    await waitFor(page, () => window.statuses.length === 2);
    assert.deepEqual((await page.evaluate(() => window.statuses)).sort(),
      [['users/42/inbox', 200], ['users/43/inbox', 403]]);
    await publish(gateway.base, 'users/42/inbox', 'with a header', undefined, PUBLISH_TOKEN);
    assert.deepEqual(await waitForEvents(page, 1), ['with a header']);
  } finally {
    await page.close();
    assert.equal(await stopGateway(gateway), 0);
  }
});
