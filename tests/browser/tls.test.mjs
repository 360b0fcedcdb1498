// Over TLS, Chromium negotiates HTTP/2 with ssegate (ALPN) and ten
// EventSources on one origin share one connection: over HTTP/1.1 the
// browser's six-connections-per-origin limit would stall four of them.
// tests/browser.rs generates the self-signed certificate (TEST_TLS_CERT/KEY).

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { setUpSuite, startGateway, stopGateway, waitFor } from './harness.mjs';

const CERT = process.env.TEST_TLS_CERT;
const KEY = process.env.TEST_TLS_KEY;
const suite = setUpSuite();

before(() => {
  assert.ok(CERT && KEY, 'TEST_TLS_CERT and TEST_TLS_KEY must name a certificate and key');
});

test('ten EventSources on one origin all receive, over one HTTP/2 connection', async () => {
  const gateway = await startGateway({ args: ['--tls-cert', CERT, '--tls-key', KEY] });
  const context = await suite.browser.newContext({ ignoreHTTPSErrors: true });
  try {
    const page = await context.newPage();
    const origin = `https://127.0.0.1:${gateway.port}`;
    await page.goto(`${origin}/`);
    assert.equal(await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol), 'h2');

    await page.evaluate(() => {
      window.opened = 0;
      window.received = {};
      for (let i = 0; i < 10; i += 1) {
        const source = new EventSource(`/subscribe/room/${i}`);
        source.onopen = () => { window.opened += 1; };
        source.onmessage = (event) => { window.received[i] = event.data; };
      }
    });
    await waitFor(page, () => window.opened === 10);
    await page.evaluate(async () => {
      for (let i = 0; i < 10; i += 1) {
        const response = await fetch(`/publish/room/${i}`, { method: 'POST', body: `hello room ${i}` });
        if (response.status !== 200) throw new Error(`publish ${i}: ${response.status}`);
      }
    });
    await waitFor(page, () => Object.keys(window.received).length === 10);
    const received = await page.evaluate(() => window.received);
    for (let i = 0; i < 10; i += 1) assert.equal(received[i], `hello room ${i}`);

    // Everything above, the page included, went over one connection.
    const metrics = await page.evaluate(async () => (await fetch('/metrics')).text());
    const connections = Number(/^ssegate_connections (\d+)$/m.exec(metrics)[1]);
    const subscribers = Number(/^ssegate_subscribers (\d+)$/m.exec(metrics)[1]);
    assert.equal(subscribers, 10);
    assert.equal(connections, 1, metrics);
  } finally {
    await context.close();
    assert.equal(await stopGateway(gateway), 0);
  }
});
