// The example page (examples/live-orders.html) in a real browser: it shows
// published events, and after a restart of the gateway it reconnects by
// itself and shows the gap.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { publish, setUpSuite, startGateway, stopGateway, waitFor } from './harness.mjs';

const suite = setUpSuite({ pageServers: 1 });

const entries = (page) => page.$$eval('#log li', (items) => items.map((li) => ({
  kind: li.dataset.kind, id: li.dataset.id, text: li.textContent,
})));

test('examples/live-orders.html shows events and resumes after a restart', async () => {
  let gateway = await startGateway({ origins: [suite.pages[0].origin] });
  const page = await suite.browser.newPage();
  await page.goto(`${suite.pages[0].origin}/examples/live-orders.html?gateway=${gateway.base}&topic=orders/7`);
  await waitFor(page, () => document.getElementById('connection').textContent === 'live');
  const shipped = await publish(gateway.base, 'orders/7', 'shipped', 'status');
  await waitFor(page, () => document.querySelectorAll('#log li').length === 1);
  const [first] = await entries(page);
  assert.equal(first.kind, 'status');
  assert.equal(first.id, shipped.id);
  assert.match(first.text, /status: shipped$/);

  assert.equal(await stopGateway(gateway), 0);
  await waitFor(page, () => document.getElementById('connection').textContent.startsWith('disconnected'));
  gateway = await startGateway({ port: gateway.port, origins: [suite.pages[0].origin] });
  try {
    await waitFor(page, () => document.getElementById('connection').textContent === 'live');
    const delivered = await publish(gateway.base, 'orders/7', 'delivered', 'status');
    await waitFor(page, () => document.querySelectorAll('#log li').length === 3);
    const [, gap, after] = await entries(page);
    assert.equal(gap.kind, 'gap');
    assert.match(gap.text, new RegExp(`events after ${shipped.id} may be missing`));
    assert.equal(after.id, delivered.id);
    assert.match(after.text, /status: delivered$/);
  } finally {
    assert.equal(await stopGateway(gateway), 0);
  }
});
