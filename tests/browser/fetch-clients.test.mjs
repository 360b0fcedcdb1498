// The fetch/XHR-based SSE clients people pick when they need headers:
// @microsoft/fetch-event-source (with an Authorization header) and sse.js,
// loaded from npm into a real Chromium page on another origin, receiving and
// resuming with Last-Event-ID after the network drops them.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  publish, setUpSuite, startGateway, startProxy, stopGateway, waitFor, waitForEvents,
} from './harness.mjs';

const suite = setUpSuite({ pageServers: 1 });

/**
 * Publishes `bodies` while the client is connected, cuts the network, publishes
 * more while it is away, and checks that it received every event exactly once,
 * in order, and that it resumed with the Last-Event-ID of the last one it had.
 */
async function receiveAndResume(page, gateway, proxy, topic) {
  await waitFor(page, () => window.opened === 1);
  const first = await publish(gateway.base, topic, 'first', 'note');
  const second = await publish(gateway.base, topic, 'second');
  await waitForEvents(page, 2);

  proxy.cut();
  const missed = [await publish(gateway.base, topic, 'missed one'),
    await publish(gateway.base, topic, 'missed two')];
  await waitFor(page, () => window.opened >= 2);
  const live = await publish(gateway.base, topic, 'live again');
  const received = await waitForEvents(page, 5);
  assert.deepEqual(received, [
    { type: 'note', data: 'first', lastEventId: first.id },
    { type: 'message', data: 'second', lastEventId: second.id },
    { type: 'message', data: 'missed one', lastEventId: missed[0].id },
    { type: 'message', data: 'missed two', lastEventId: missed[1].id },
    { type: 'message', data: 'live again', lastEventId: live.id },
  ]);
  assert.match(proxy.requests(), new RegExp(`last-event-id: ${second.id}\r\n`, 'i'),
    'the reconnect carried Last-Event-ID');
}

test('@microsoft/fetch-event-source with an Authorization header receives and resumes', async () => {
  const gateway = await startGateway({ origins: [suite.pages[0].origin] });
  const proxy = await startProxy(gateway.port);
  try {
    const page = await suite.browser.newPage();
    await page.goto(`${suite.pages[0].origin}/`);
    await page.evaluate(async ({ url, module }) => {
      const { fetchEventSource } = await import(module);
      window.received = [];
      window.opened = 0;
      class Fatal extends Error {}
      fetchEventSource(url, {
        headers: { Authorization: 'Bearer reader-token' },
        openWhenHidden: true,
        async onopen(response) {
          if (!response.ok) throw new Fatal(`status ${response.status}`);
          window.opened += 1;
        },
        onmessage(event) {
          // fetch-event-source calls onmessage at every blank line, also
          // after the `retry:` field, heartbeat comments and the position
          // block (an id alone, which it does remember for its reconnect):
          // none has a type or data, and none is an event.
          if (!event.event && !event.data) return;
          window.received.push({ type: event.event || 'message', data: event.data, lastEventId: event.id });
        },
        // The documented pattern: a stream the server ended is retried too.
        onclose() { throw new Error('stream ended'); },
        onerror(err) {
          if (err instanceof Fatal) throw err;
          return 250;
        },
      });
    }, {
      url: `${proxy.base}/subscribe/fetched`,
      module: `${suite.pages[0].origin}/node_modules/@microsoft/fetch-event-source/lib/esm/index.js`,
    });
    await receiveAndResume(page, gateway, proxy, 'fetched');
    // A header that is not CORS-safelisted: the browser asked first, and the
    // header went through on every connection.
    const requests = proxy.requests();
    assert.match(requests, /^OPTIONS \/subscribe\/fetched HTTP\/1\.1\r\n/m);
    assert.ok((requests.match(/authorization: Bearer reader-token\r\n/gi) ?? []).length >= 2, requests);
  } finally {
    await proxy.close();
    assert.equal(await stopGateway(gateway), 0);
  }
});

test('sse.js with custom headers receives and resumes', async () => {
  const gateway = await startGateway({ origins: [suite.pages[0].origin] });
  const proxy = await startProxy(gateway.port);
  try {
    const page = await suite.browser.newPage();
    await page.goto(`${suite.pages[0].origin}/`);
    await page.evaluate(async ({ url, module }) => {
      const { SSE } = await import(module);
      window.received = [];
      window.opened = 0;
      const source = new SSE(url, {
        headers: { 'X-Client': 'sse.js' },
        autoReconnect: true,
        reconnectDelay: 250,
      });
      const record = (event) => window.received.push({
        type: event.type, data: event.data, lastEventId: event.lastEventId,
      });
      source.addEventListener('open', () => { window.opened += 1; });
      source.addEventListener('message', record);
      source.addEventListener('note', record);
      window.source = source;
    }, {
      url: `${proxy.base}/subscribe/xhr`,
      module: `${suite.pages[0].origin}/node_modules/sse.js/lib/sse.js`,
    });
    await receiveAndResume(page, gateway, proxy, 'xhr');
    assert.match(proxy.requests(), /x-client: sse\.js\r\n/i);
  } finally {
    await proxy.close();
    assert.equal(await stopGateway(gateway), 0);
  }
});
