// Cluster mode in a real browser: Chromium's own EventSource, through a
// round-robin proxy over two nodes sharing one Redis, loses the node it is
// connected to (SIGKILL) while events are published on the other, and must
// resume by itself on the survivor with Last-Event-ID: every event exactly
// once, in order, no gap, and no DOM update twice.
//
// Run through `cargo test` (tests/browser.rs), which starts the Redis (a
// `redis-server` of its own) and passes its URL in TEST_REDIS_URL; the
// nodes are started here, with the binary in SSEGATE_BIN.

import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PATIENCE_MS, killGateway, metric, publish, setUpSuite, startGateway, startRoundRobinProxy, stopGateway, waitFor,
} from './harness.mjs';

const REDIS_URL = process.env.TEST_REDIS_URL;
/** How often the publisher publishes. */
const PUBLISH_EVERY_MS = 20;
/** Events the page must have before the kill; events published after its reconnect. */
const BEFORE_KILL = 25;
const AFTER_RECONNECT = 25;
const suite = setUpSuite({ pageServers: 1 });

before(() => {
  assert.ok(REDIS_URL, 'TEST_REDIS_URL must name the Redis the nodes share');
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `predicate()`, failing after PATIENCE_MS. */
async function until(predicate, what) {
  const deadline = Date.now() + PATIENCE_MS;
  while (!predicate()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** `(ms, seq)` of a cluster id `<epoch>-<ms>-<seq>`, for ordering. */
function streamId(id) {
  const match = /^([0-9a-z]{13})-(\d+)-(\d+)$/.exec(id);
  assert.ok(match, `not a cluster id: ${JSON.stringify(id)}`);
  return { epoch: match[1], ms: BigInt(match[2]), seq: BigInt(match[3]) };
}

function isBefore(a, b) {
  return a.ms < b.ms || (a.ms === b.ms && a.seq < b.seq);
}

/**
 * Publishes `seq 1`, `seq 2`, ... to `topic` on `base`, one every
 * `PUBLISH_EVERY_MS`, each after the previous one's reply, until `stop()`;
 * `published` is every reply's id with its sequence number and when it
 * came (`Date.now()`), in order.
 */
function startPublisher(base, topic) {
  const published = [];
  let stopped = false;
  const done = (async () => {
    for (let seq = 1; !stopped; seq += 1) {
      const { id } = await publish(base, topic, `seq ${seq}`);
      published.push({ seq, id, at: Date.now() });
      await sleep(PUBLISH_EVERY_MS);
    }
  })();
  // A failed publish is reported by `stop()`, not as an unhandled rejection.
  done.catch(() => {});
  return {
    published,
    stop: async () => {
      stopped = true;
      await done;
    },
  };
}

/**
 * A page with an EventSource on `url` that shows each event as an `<li>`
 * of `#log` and in `#latest`, the way an application would, and records:
 * `received` (every event, `gap` events included, with the connection it
 * came on), `domUpdates` (every `<li>` a MutationObserver saw added),
 * `opened`/`errors`, and `timeline` (each open and error with the last id
 * received by then, its `readyState`, and when: `Date.now()`, the clock the
 * test's own process reads).
 */
async function openRecordingPage(browser, origin, url) {
  const page = await browser.newPage();
  await page.goto(`${origin}/`);
  await page.evaluate((url) => {
    document.body.innerHTML = '<output id="latest"></output><ol id="log"></ol>';
    const log = document.getElementById('log');
    const latest = document.getElementById('latest');
    window.received = [];
    window.domUpdates = [];
    window.timeline = [];
    window.opened = 0;
    window.errors = 0;
    new MutationObserver((mutations) => {
      for (const mutation of mutations) {
        for (const node of mutation.addedNodes) {
          if (node.nodeName === 'LI') window.domUpdates.push({ id: node.dataset.id, text: node.textContent });
        }
      }
    }).observe(log, { childList: true });
    const lastId = () => window.received.at(-1)?.lastEventId ?? null;
    const source = new EventSource(url);
    const record = (event) => {
      window.received.push({
        type: event.type, data: event.data, lastEventId: event.lastEventId, connection: window.opened,
      });
      const item = document.createElement('li');
      item.dataset.id = event.lastEventId;
      item.textContent = event.data;
      log.append(item);
      latest.textContent = event.data;
    };
    source.onmessage = record;
    source.addEventListener('gap', record);
    source.onopen = () => {
      window.opened += 1;
      window.timeline.push({ what: 'open', lastId: lastId(), readyState: source.readyState, at: Date.now() });
    };
    source.onerror = () => {
      window.errors += 1;
      window.timeline.push({ what: 'error', lastId: lastId(), readyState: source.readyState, at: Date.now() });
    };
    window.source = source;
  }, url);
  return page;
}

/** The page's state, for failure messages. */
function snapshot(page) {
  return page.evaluate(() => ({
    opened: window.opened,
    errors: window.errors,
    readyState: window.source.readyState,
    received: window.received.length,
    last: window.received.slice(-3),
    timeline: window.timeline,
  }));
}

async function waitOrExplain(page, what, predicate, arg) {
  try {
    await waitFor(page, predicate, arg);
  } catch (err) {
    throw new Error(`${what}: ${JSON.stringify(await snapshot(page))}; ${err.message}`);
  }
}

// Every wait below is bounded by PATIENCE_MS; the whole test by TEST_TIMEOUT_MS.
const TEST_TIMEOUT_MS = 6 * PATIENCE_MS;

test('an EventSource whose cluster node is killed resumes exactly on the other node through the proxy', {
  timeout: TEST_TIMEOUT_MS,
}, async (t) => {
  const { origin } = suite.pages[0];
  const nodeOptions = { origins: [origin], retry: '500ms', args: ['--cluster-redis-url', REDIS_URL] };
  const nodes = [await startGateway(nodeOptions), await startGateway(nodeOptions)];
  const running = new Set(nodes);
  const proxy = await startRoundRobinProxy(nodes.map((node) => node.port));
  const topic = `failover-${process.pid}-${Date.now()}`;
  let publisher;
  let page;
  try {
    page = await openRecordingPage(suite.browser, origin, `${proxy.base}/subscribe/${topic}`);
    await waitOrExplain(page, 'the EventSource never opened', () => window.opened === 1);

    // The node the proxy gave the EventSource to, and the other one.
    const subscribeRoutes = () => proxy.routes().filter((route) => route.sent.startsWith(`GET /subscribe/${topic} `));
    assert.equal(subscribeRoutes().length, 1, JSON.stringify(proxy.routes()));
    const connected = nodes.findIndex((node) => node.port === subscribeRoutes()[0].port);
    const [doomed, survivor] = [nodes[connected], nodes[1 - connected]];
    assert.equal(await metric(doomed.base, 'ssegate_subscribers'), 1);
    assert.equal(await metric(survivor.base, 'ssegate_subscribers'), 0);
    // One more connection through the proxy (to the survivor): its next
    // pick is the doomed node, so the reconnect has to skip it.
    assert.equal(await metric(proxy.base, 'ssegate_subscribers'), 0);
    assert.deepEqual(proxy.routes().filter((route) => route.sent !== '').map(({ port, skipped }) => ({ port, skipped })),
      [{ port: doomed.port, skipped: [] }, { port: survivor.port, skipped: [] }]);

    // A steady stream published on the survivor, through Redis to both.
    publisher = startPublisher(survivor.base, topic);
    await waitOrExplain(page, 'events before the kill', (n) => window.received.length >= n, BEFORE_KILL);

    const killedAt = Date.now();
    running.delete(doomed);
    assert.deepEqual(await killGateway(doomed), { code: null, signal: 'SIGKILL' });
    await waitOrExplain(page, 'the EventSource never reopened', () => window.errors >= 1 && window.opened >= 2);
    // Live events on the new connection too, past the replay/live seam.
    const publishedAtReopen = publisher.published.length;
    await until(() => publisher.published.length >= publishedAtReopen + AFTER_RECONNECT, 'publishes after the reopen');
    await publisher.stop();
    const { published } = publisher;
    publisher = null;

    // Everything published arrives, and then nothing more (a duplicate from
    // the replay/live seam would come after the last one).
    const lastId = published.at(-1).id;
    await waitOrExplain(page, `the last event ${lastId} never arrived`,
      (id) => window.received.some((e) => e.lastEventId === id), lastId);
    await sleep(500);
    const state = await page.evaluate(() => ({
      received: window.received,
      domUpdates: window.domUpdates,
      timeline: window.timeline,
      readyState: window.source.readyState,
      items: [...document.querySelectorAll('#log li')].map((li) => ({ id: li.dataset.id, text: li.textContent })),
      latest: document.getElementById('latest').textContent,
    }));

    // Every sequence number exactly once, in order, with the id its publish
    // got; no `gap` event.
    const gaps = state.received.filter((e) => e.type !== 'message');
    assert.deepEqual(gaps, [], 'no gap (or other) event');
    const seqs = state.received.map((e) => Number(/^seq (\d+)$/.exec(e.data)?.[1]));
    const missing = published.filter((p) => !seqs.includes(p.seq)).map((p) => p.seq);
    const repeated = seqs.filter((seq, i) => seqs.indexOf(seq) !== i);
    assert.deepEqual({ missing, repeated }, { missing: [], repeated: [] }, `sequence numbers received: ${seqs}`);
    assert.deepEqual(state.received.map(({ data, lastEventId }) => ({ data, lastEventId })),
      published.map(({ seq, id }) => ({ data: `seq ${seq}`, lastEventId: id })));
    // lastEventId continuous: one epoch, strictly increasing.
    const ids = state.received.map((e) => streamId(e.lastEventId));
    for (let i = 1; i < ids.length; i += 1) {
      assert.equal(ids[i].epoch, ids[0].epoch, 'one epoch');
      assert.ok(isBefore(ids[i - 1], ids[i]),
        `ids out of order: ${state.received[i - 1].lastEventId} then ${state.received[i].lastEventId}`);
    }
    // Both connections delivered: the first up to the kill, the second the
    // rest, starting right after the first one's last event.
    const onFirst = state.received.filter((e) => e.connection === 1).length;
    assert.ok(onFirst >= BEFORE_KILL);
    assert.ok(state.received.slice(onFirst).every((e) => e.connection === 2));

    // The DOM: one `<li>` per event, each added once, in order.
    const expectedItems = published.map(({ seq, id }) => ({ id, text: `seq ${seq}` }));
    assert.deepEqual(state.domUpdates, expectedItems, 'each DOM update once');
    assert.deepEqual(state.items, expectedItems);
    assert.equal(state.latest, `seq ${published.at(-1).seq}`);

    // The browser reconnected by itself: one error, one more open, and its
    // stream is live (OPEN).
    const lastOnFirst = state.received[onFirst - 1].lastEventId;
    assert.deepEqual(state.timeline.map(({ at, ...entry }) => entry), [
      { what: 'open', lastId: null, readyState: 1 },
      { what: 'error', lastId: lastOnFirst, readyState: 0 },
      { what: 'open', lastId: lastOnFirst, readyState: 1 },
    ]);
    assert.equal(state.readyState, 1);
    // After the `retry: 500` the nodes sent, not the browser's default 3 s.
    const [, errorAt, reopenedAt] = state.timeline.map(({ at }) => at);
    assert.ok(errorAt >= killedAt, 'the error came after the kill');
    const away = reopenedAt - errorAt;
    assert.ok(away >= 400 && away < 2500, `reconnected ${away} ms after the error`);
    // Events were published while the page had no connection, and came
    // (replayed) on the second one.
    const whileAway = published.filter(({ at }) => at > errorAt && at < reopenedAt);
    assert.ok(whileAway.length >= 5, `only ${whileAway.length} events published while away`);
    for (const { id } of whileAway) {
      assert.equal(state.received.find((e) => e.lastEventId === id).connection, 2);
    }
    t.diagnostic(`${published.length} events: ${onFirst} before the kill, ${whileAway.length} published `
      + `in the ${away} ms between the error and the reopen, ${published.length - publishedAtReopen} after`);

    // Through the proxy, which found the doomed node down, to the survivor,
    // with Last-Event-ID: the last id the page had.
    const routes = subscribeRoutes();
    assert.equal(routes.length, 2, JSON.stringify(routes));
    assert.equal(routes[1].port, survivor.port);
    assert.deepEqual(routes[1].skipped, [doomed.port]);
    const head = routes[1].sent.split('\r\n\r\n')[0].split('\r\n');
    const header = head.find((line) => /^last-event-id:/i.test(line));
    assert.ok(header, `no Last-Event-ID in the reconnect: ${head}`);
    assert.equal(header.slice(header.indexOf(':') + 1).trim(), lastOnFirst);
    assert.equal(await metric(survivor.base, 'ssegate_subscribers'), 1);
  } finally {
    await publisher?.stop().catch(() => {});
    await page?.close();
    await proxy.close();
    for (const node of nodes.filter((n) => !running.has(n))) await killGateway(node);
    const codes = [];
    for (const node of running) codes.push(await stopGateway(node));
    assert.deepEqual(codes, codes.map(() => 0), 'the nodes left shut down cleanly');
  }
});
