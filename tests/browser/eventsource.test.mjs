// Chromium's own EventSource against the real ssegate binary: delivery,
// event types, CORS and credentials, and the browser's automatic reconnect
// with Last-Event-ID after each way a stream can end.
//
// Run through `cargo test` (tests/browser.rs), which passes the binary in
// SSEGATE_BIN.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PATIENCE_MS, metric, openEventSource, publish, publishPipelined, setUpSuite, startGateway, startProxy, stopGateway, waitFor, waitForEvents,
} from './harness.mjs';

const suite = setUpSuite({ pageServers: 2 });

/** The `message` ids must be strictly increasing: nothing repeated. */
function assertNoDuplicates(received) {
  const ids = received.filter((e) => e.type !== 'gap').map((e) => e.lastEventId);
  for (let i = 1; i < ids.length; i += 1) {
    assert.ok(ids[i - 1] < ids[i], `ids out of order or repeated: ${ids[i - 1]} then ${ids[i]}`);
  }
}

test('EventSource receives events, event types and multi-line data cross-origin', async () => {
  const gateway = await startGateway({ origins: [suite.pages[0].origin] });
  try {
    const page = await openEventSource(suite.browser, suite.pages[0].origin, `${gateway.base}/subscribe/prices`,
      { eventTypes: ['price'] });
    await waitFor(page, () => window.opened === 1);
    const first = await publish(gateway.base, 'prices', 'line one\r\nline two\rline three\n');
    const second = await publish(gateway.base, 'prices', '{"eur":1.08} ✓', 'price');
    const received = await waitForEvents(page, 2);
    assert.deepEqual(received, [
      { type: 'message', data: 'line one\nline two\nline three\n', lastEventId: first.id },
      { type: 'price', data: '{"eur":1.08} ✓', lastEventId: second.id },
    ]);
  } finally {
    assert.equal(await stopGateway(gateway), 0);
  }
});

test('withCredentials works for an allowed origin; another origin is refused by the browser', async () => {
  const gateway = await startGateway({ origins: [suite.pages[0].origin] });
  try {
    const allowed = await openEventSource(suite.browser, suite.pages[0].origin, `${gateway.base}/subscribe/t`,
      { withCredentials: true });
    const refused = await openEventSource(suite.browser, suite.pages[1].origin, `${gateway.base}/subscribe/t`,
      { withCredentials: true });
    await waitFor(allowed, () => window.opened === 1);
    // A CORS failure is fatal for EventSource: CLOSED, never opened.
    await waitFor(refused, () => window.source.readyState === 2);
    const event = await publish(gateway.base, 't', 'for the allowed origin');
    assert.deepEqual(await waitForEvents(allowed, 1),
      [{ type: 'message', data: 'for the allowed origin', lastEventId: event.id }]);
    assert.deepEqual(await refused.evaluate(() => [window.opened, window.received.length]), [0, 0]);
  } finally {
    assert.equal(await stopGateway(gateway), 0);
  }
});

test('after a network cut EventSource reconnects and gets exactly what it missed', async () => {
  const gateway = await startGateway({ origins: [suite.pages[0].origin] });
  const proxy = await startProxy(gateway.port);
  try {
    const page = await openEventSource(suite.browser, suite.pages[0].origin, `${proxy.base}/subscribe/orders`,
      { eventTypes: ['gap'] });
    await waitFor(page, () => window.opened === 1);
    const published = [await publish(gateway.base, 'orders', 'one')];
    await waitForEvents(page, 1);

    proxy.cut();
    for (const body of ['two', 'three', 'four']) {
      published.push(await publish(gateway.base, 'orders', body));
    }
    const received = await waitForEvents(page, 4);
    await waitFor(page, () => window.opened >= 2);
    assert.deepEqual(received,
      published.map((p, i) => ({ type: 'message', data: ['one', 'two', 'three', 'four'][i], lastEventId: p.id })));
    // Nothing else arrives: no duplicate from the replay/live seam.
    const last = await publish(gateway.base, 'orders', 'five');
    const all = await waitForEvents(page, 5);
    assert.equal(all.length, 5);
    assert.deepEqual(all[4], { type: 'message', data: 'five', lastEventId: last.id });
  } finally {
    await proxy.close();
    assert.equal(await stopGateway(gateway), 0);
  }
});

test('a slow subscriber dropped by the gateway reconnects and is told about the gap', async () => {
  // One event per topic buffer: a browser whose connection takes nothing
  // while more is published than its socket holds falls behind the buffer,
  // and is dropped once its connection moves again.
  const gateway = await startGateway({ origins: [suite.pages[0].origin], args: ['--buffer-events', '1'] });
  const proxy = await startProxy(gateway.port);
  try {
    const page = await openEventSource(suite.browser, suite.pages[0].origin, `${proxy.base}/subscribe/flood`,
      { eventTypes: ['gap'] });
    await waitFor(page, () => window.opened === 1);
    // One event first: a browser dropped before it has any id reconnects
    // without Last-Event-ID, and then gets only what comes after.
    await publish(gateway.base, 'flood', 'warm-up');
    await waitForEvents(page, 1);
    proxy.stall();
    // 16 MB: more than the socket buffers between gateway and browser hold.
    const body = 'x'.repeat(16 * 1024);
    for (let round = 0; round < 50; round += 1) {
      await publishPipelined(gateway.base, 'flood', body, 20);
    }
    proxy.resume();
    let dropped = 0;
    const deadline = Date.now() + PATIENCE_MS;
    while (dropped === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      dropped = 0;
      for (const reason of ['lagged', 'write_timeout']) {
        dropped += await metric(gateway.base, `ssegate_subscribers_dropped_total{reason="${reason}"}`);
      }
    }
    assert.ok(dropped >= 1, 'the stalled browser was never dropped');

    const marker = await publish(gateway.base, 'flood', 'marker');
    await waitFor(page, (id) => window.received.some((e) => e.lastEventId === id && e.data === 'marker'), marker.id)
      .catch(async (err) => {
        const seen = await page.evaluate(() => ({
          opened: window.opened, errors: window.errors, readyState: window.source.readyState,
          last: window.received.slice(-3).map((e) => [e.type, e.lastEventId, e.data.slice(0, 20)]),
        }));
        throw new Error(`marker ${marker.id} never arrived: ${JSON.stringify(seen)}; ${err.message}`);
      });
    const received = await page.evaluate(() => window.received);
    assert.ok(await page.evaluate(() => window.opened) >= 2, 'the browser reconnected by itself');
    const gaps = received.map((e, i) => [e, i]).filter(([e]) => e.type === 'gap');
    assert.ok(gaps.length >= 1, 'a gap event after the drop');
    for (const [gap, i] of gaps) {
      // The gap names the id the browser resumed from: its last event.
      const resumedFrom = received.slice(0, i).filter((e) => e.type === 'message').at(-1);
      assert.deepEqual(JSON.parse(gap.data), { last_event_id: resumedFrom.lastEventId });
    }
    assertNoDuplicates(received);
    assert.equal(received.at(-1).data, 'marker');
  } finally {
    await proxy.close();
    assert.equal(await stopGateway(gateway), 0);
  }
});

test('after a graceful shutdown and restart EventSource reconnects and is told about the gap', async () => {
  let gateway = await startGateway({ origins: [suite.pages[0].origin] });
  const page = await openEventSource(suite.browser, suite.pages[0].origin, `${gateway.base}/subscribe/orders`,
    { eventTypes: ['gap'] });
  await waitFor(page, () => window.opened === 1);
  const before = await publish(gateway.base, 'orders', 'before restart');
  await waitForEvents(page, 1);

  // The stream ends on SIGTERM; the browser keeps retrying every 250 ms.
  assert.equal(await stopGateway(gateway), 0);
  gateway = await startGateway({ port: gateway.port, origins: [suite.pages[0].origin] });
  try {
    const after = await publish(gateway.base, 'orders', 'after restart');
    const received = await waitForEvents(page, 3);
    assert.deepEqual(received[1], {
      type: 'gap', data: JSON.stringify({ last_event_id: before.id }), lastEventId: before.id,
    });
    assert.deepEqual(received[2], { type: 'message', data: 'after restart', lastEventId: after.id });
    assert.ok(await page.evaluate(() => window.opened) >= 2, 'the browser reconnected');
  } finally {
    assert.equal(await stopGateway(gateway), 0);
  }
});

test('a subscriber the gateway refuses is not retried by EventSource', async () => {
  const gateway = await startGateway({ origins: [suite.pages[0].origin], args: ['--max-topics-per-subscription', '1'] });
  try {
    const page = await openEventSource(suite.browser, suite.pages[0].origin, `${gateway.base}/subscribe?topic=a&topic=b`);
    // A 400 makes EventSource fail permanently: readyState CLOSED.
    await waitFor(page, () => window.source.readyState === 2);
  } finally {
    assert.equal(await stopGateway(gateway), 0);
  }
});

test('an EventSource refused at max_subscribers comes back by itself once a slot frees', async () => {
  const { origin } = suite.pages[0];
  const gateway = await startGateway({
    origins: [origin], args: ['--max-subscribers', '1', '--refusal-retry', '600ms'],
  });
  try {
    const holder = await openEventSource(suite.browser, origin, `${gateway.base}/subscribe/slot`);
    await waitFor(holder, () => window.opened === 1);
    const waiting = await openEventSource(suite.browser, origin, `${gateway.base}/subscribe/slot`);
    // Refused for now, again and again, but never closed for good (a 503
    // would have closed it).
    await waitFor(waiting, () => window.errors >= 2);
    assert.notEqual(await waiting.evaluate(() => window.source.readyState), 2, 'not CLOSED');
    assert.ok(await metric(gateway.base, 'ssegate_subscribes_refused_total{reason="max_subscribers"}') >= 2);
    await holder.close();
    // It takes the freed slot by itself (a second stream opened: refusals
    // open none), and then receives.
    const deadline = Date.now() + PATIENCE_MS;
    while (await metric(gateway.base, 'ssegate_subscriptions_total') !== 2) {
      assert.ok(Date.now() < deadline, 'the refused page came back');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const event = await publish(gateway.base, 'slot', 'you are in');
    assert.deepEqual(await waitForEvents(waiting, 1),
      [{ type: 'message', data: 'you are in', lastEventId: event.id }]);
  } finally {
    assert.equal(await stopGateway(gateway), 0);
  }
});

test('the position block: EventSource takes its id without an event, and resumes from it', async () => {
  const { origin } = suite.pages[0];
  // A long retry, so that the publish below lands while the page is away.
  const gateway = await startGateway({ origins: [origin], retry: '1500ms' });
  const proxy = await startProxy(gateway.port);
  try {
    const page = await openEventSource(suite.browser, origin, `${proxy.base}/subscribe/quiet`);
    await waitFor(page, () => window.opened === 1);
    // The block arrives right after the opening; nothing is dispatched.
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(await page.evaluate(() => window.received), []);
    // Cut before the first event: the reconnect carries the position, so
    // what was published meanwhile arrives, exactly once.
    proxy.cut();
    const missed = await publish(gateway.base, 'quiet', 'published while away');
    await waitFor(page, () => window.opened >= 2);
    assert.deepEqual(await waitForEvents(page, 1),
      [{ type: 'message', data: 'published while away', lastEventId: missed.id }]);
    assert.match(proxy.requests(), /last-event-id: [0-9a-f]{16}-0{16}\r\n/i,
      'the reconnect resumed from the position block');
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal((await page.evaluate(() => window.received)).length, 1, 'nothing twice');
  } finally {
    await proxy.close();
    assert.equal(await stopGateway(gateway), 0);
  }
});
