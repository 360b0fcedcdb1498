// Chromium's own EventSource against the real ssegate binary.
//
// Run through `cargo test` (tests/browser.rs), which passes the binary in
// SSEGATE_BIN. The page is served from another port, so every request is
// cross-origin and CORS is exercised as a browser does it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { chromium } from 'playwright-core';

const BIN = process.env.SSEGATE_BIN;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const PATIENCE_MS = 15000;

let browser;
let pageServer;
let pageOrigin;

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Starts the gateway on `port` and resolves once it logs its address. */
function startGateway(port, extraArgs = []) {
  const args = ['--listen', `127.0.0.1:${port}`, '--retry', '250ms',
    '--cors-allowed-origins', pageOrigin, ...extraArgs];
  const proc = spawn(BIN, args, { env: { ...process.env, RUST_LOG: 'info' } });
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start: ${log}`)), PATIENCE_MS);
    proc.stderr.on('data', (chunk) => {
      log += chunk;
      if (log.includes('listen=')) {
        clearTimeout(timer);
        resolve({ proc, base: `http://127.0.0.1:${port}` });
      }
    });
    proc.once('exit', (code) => reject(new Error(`gateway exited with ${code}: ${log}`)));
  });
}

function stopGateway(gateway) {
  return new Promise((resolve) => {
    if (gateway.proc.exitCode !== null) return resolve(gateway.proc.exitCode);
    gateway.proc.once('exit', (code) => resolve(code));
    gateway.proc.kill('SIGTERM');
  });
}

async function publish(base, topic, body, eventType) {
  const query = eventType ? `?event=${eventType}` : '';
  const response = await fetch(`${base}/publish/${topic}${query}`, { method: 'POST', body });
  assert.equal(response.status, 200, await response.clone().text());
  return response.json();
}

/** Opens a page on the page origin with an EventSource collecting events. */
async function openEventSource(url, eventTypes = []) {
  const page = await browser.newPage();
  await page.goto(`${pageOrigin}/`);
  await page.evaluate(({ url, eventTypes }) => {
    window.received = [];
    window.opened = 0;
    const source = new EventSource(url);
    const record = (event) => window.received.push({
      type: event.type, data: event.data, lastEventId: event.lastEventId,
    });
    source.onmessage = record;
    source.onopen = () => { window.opened += 1; };
    for (const type of eventTypes) source.addEventListener(type, record);
    window.source = source;
  }, { url, eventTypes });
  return page;
}

async function waitForEvents(page, n) {
  await page.waitForFunction((n) => window.received.length >= n, n, { timeout: PATIENCE_MS });
  return page.evaluate(() => window.received);
}

before(async () => {
  assert.ok(BIN, 'SSEGATE_BIN must name the ssegate binary');
  pageServer = http.createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>ssegate browser test</title>');
  });
  await new Promise((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
  pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  pageServer?.close();
});

test('EventSource receives events, event types and multi-line data cross-origin', async () => {
  const gateway = await startGateway(await freePort());
  try {
    const page = await openEventSource(`${gateway.base}/subscribe/prices`, ['price']);
    await page.waitForFunction(() => window.opened === 1, null, { timeout: PATIENCE_MS });
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

test('after a restart EventSource reconnects with Last-Event-ID and is told about the gap', async () => {
  const port = await freePort();
  let gateway = await startGateway(port);
  const page = await openEventSource(`${gateway.base}/subscribe/orders`, ['gap']);
  await page.waitForFunction(() => window.opened === 1, null, { timeout: PATIENCE_MS });
  const before = await publish(gateway.base, 'orders', 'before restart');
  await waitForEvents(page, 1);

  // The stream ends on SIGTERM; the browser keeps retrying every 250 ms.
  assert.equal(await stopGateway(gateway), 0);
  gateway = await startGateway(port);
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
  const gateway = await startGateway(await freePort(), ['--max-topics-per-subscription', '1']);
  try {
    const page = await openEventSource(`${gateway.base}/subscribe?topic=a&topic=b`);
    // A 400 makes EventSource fail permanently: readyState CLOSED.
    await page.waitForFunction(() => window.source.readyState === 2, null, { timeout: PATIENCE_MS });
  } finally {
    assert.equal(await stopGateway(gateway), 0);
  }
});
