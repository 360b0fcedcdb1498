// Publishing to ssegate from plain Node.js (18+) with fetch: no SDK needed.
//   node examples/node/publish.mjs [base-url] [topic]
// Exercised by tests/examples.rs.

import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const base = process.argv[2] ?? process.env.SSEGATE_URL ?? 'http://127.0.0.1:8080';
const topic = process.argv[3] ?? 'examples/node';
const token = process.env.SSEGATE_PUBLISH_TOKEN; // when publish_token is set

function headers(contentType) {
  return {
    ...(contentType ? { 'Content-Type': contentType } : {}),
    ...(token ? { Authorization: `Bearer ${token}` } : {}),
  };
}

/** One event: the body is the data; `event` sets its type. Returns its id. */
export async function publish(topic, data, { event } = {}) {
  const query = event ? `?event=${encodeURIComponent(event)}` : '';
  const response = await fetch(`${base}/publish/${topic}${query}`, {
    method: 'POST',
    headers: headers(),
    body: data,
    signal: AbortSignal.timeout(5000),
  });
  if (!response.ok) throw new Error(`publish: ${response.status} ${await response.text()}`);
  return (await response.json()).id;
}

/** Several events in one request, in order, all or nothing. Returns their ids. */
export async function publishBatch(topic, events) {
  const response = await fetch(`${base}/publish/${topic}`, {
    method: 'POST',
    headers: headers('application/x-ndjson'),
    body: events.map((e) => JSON.stringify(e)).join('\n'),
    signal: AbortSignal.timeout(5000),
  });
  if (!response.ok) throw new Error(`publish batch: ${response.status} ${await response.text()}`);
  return (await response.json()).ids;
}

// Run as a script (not imported): publish a few examples.
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  const id = await publish(topic, JSON.stringify({ order: 42, status: 'shipped' }), { event: 'status' });
  console.log(`published ${id}`);
  const ids = await publishBatch(topic, [
    { data: 'line one\nline two' },
    { data: { order: 43, status: 'packed' }, event: 'status' },
  ]);
  console.log(`published batch ${ids.join(' ')}`);
}
