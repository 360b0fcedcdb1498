// The built-in status page in a real browser: the numbers move when events
// are published and the chart draws. Leaves a screenshot in
// $SSEGATE_ARTIFACTS (target/browser-artifacts under cargo test).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { publish, setUpSuite, startGateway, stopGateway, waitFor } from './harness.mjs';

const suite = setUpSuite();

/** Pixels of the publish line's colour (#2563eb) above the chart's baseline. */
function publishLinePixels() {
  const canvas = document.getElementById('chart');
  const { data, width, height } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  let n = 0;
  for (let y = 0; y < height - 24; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const i = (y * width + x) * 4;
      if (Math.abs(data[i] - 0x25) < 40 && Math.abs(data[i + 1] - 0x63) < 40
        && Math.abs(data[i + 2] - 0xeb) < 40 && data[i + 3] > 128) n += 1;
    }
  }
  return n;
}

test('the status page shows live figures and draws the chart', async () => {
  const gateway = await startGateway();
  try {
    const page = await suite.browser.newPage({ viewport: { width: 1000, height: 800 } });
    await page.goto(`${gateway.base}/`);
    await waitFor(page, () => document.getElementById('state').textContent === 'live');
    await waitFor(page, () => document.getElementById('published').textContent === '0');
    const watcher = await suite.browser.newPage();
    await watcher.goto(`${gateway.base}/`);
    await watcher.evaluate(() => { window.feed = new EventSource('/subscribe/orders/eu'); });

    // Publish for a few seconds so the per-second rates have something to show.
    let published = 0;
    let bestRate = 0;
    const until = Date.now() + 3500;
    while (Date.now() < until) {
      await Promise.all(Array.from({ length: 10 }, () => publish(gateway.base, 'orders/eu', 'tick')));
      published += 10;
      await new Promise((resolve) => setTimeout(resolve, 100));
      const shown = Number((await page.textContent('#publish-rate')).replace(/[^0-9]/g, ''));
      bestRate = Math.max(bestRate, shown);
    }
    assert.ok(bestRate > 0, 'the publish rate moved while events were published');
    await waitFor(page, (n) => document.getElementById('published').textContent === n.toLocaleString('en-US'), published);
    await waitFor(page, () => document.getElementById('subscribers').textContent === '1');
    const topicRow = await page.textContent('#topic-rows tr');
    assert.match(topicRow, /orders\/eu/);
    assert.ok(await page.evaluate(publishLinePixels) > 20, 'the publish line is drawn above the baseline');

    const dir = process.env.SSEGATE_ARTIFACTS;
    if (dir) {
      fs.mkdirSync(dir, { recursive: true });
      await page.screenshot({ path: path.join(dir, 'status-page.png'), fullPage: true });
    }
  } finally {
    assert.equal(await stopGateway(gateway), 0);
  }
});
