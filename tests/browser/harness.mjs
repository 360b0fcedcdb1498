// Shared by the browser suites: the real ssegate binary on a free port, a
// page server on another origin (so every request is cross-origin), a TCP
// proxy whose connections a test can cut, a round-robin proxy over several
// gateways, and headless Chromium.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const BIN = process.env.SSEGATE_BIN;
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const PATIENCE_MS = 15000;
const HERE = path.dirname(fileURLToPath(import.meta.url));

export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Gateways still running: killed if this process exits (a test timed out). */
const spawned = new Set();
process.once('exit', () => {
  for (const proc of spawned) proc.kill('SIGKILL');
});

/**
 * Starts the gateway on `port` (a free one when omitted) and resolves once it
 * logs its address. `origins` become `cors_allowed_origins`; `retry` is the
 * reconnection delay it tells browsers.
 */
export function startGateway({ port, origins = [], args = [], retry = '250ms' } = {}) {
  return (port ? Promise.resolve(port) : freePort()).then((port) => {
    const allArgs = ['--listen', `127.0.0.1:${port}`, '--retry', retry, ...args];
    if (origins.length > 0) allArgs.push('--cors-allowed-origins', origins.join(','));
    const proc = spawn(BIN, allArgs, { env: { ...process.env, RUST_LOG: 'info' } });
    spawned.add(proc);
    proc.once('exit', () => spawned.delete(proc));
    let log = '';
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`gateway did not start: ${log}`)), PATIENCE_MS);
      proc.stderr.on('data', (chunk) => {
        log += chunk;
        if (log.includes('listen=')) {
          clearTimeout(timer);
          resolve({ proc, port, base: `http://127.0.0.1:${port}`, log: () => log });
        }
      });
      proc.once('exit', (code) => reject(new Error(`gateway exited with ${code}: ${log}`)));
    });
  });
}

/** SIGTERM, then the exit code. */
export function stopGateway(gateway) {
  return new Promise((resolve) => {
    if (gateway.proc.exitCode !== null) return resolve(gateway.proc.exitCode);
    gateway.proc.once('exit', (code) => resolve(code));
    gateway.proc.kill('SIGTERM');
  });
}

/** SIGKILL (no shutdown, no goodbye to clients), then how it ended. */
export function killGateway(gateway) {
  return new Promise((resolve) => {
    const { proc } = gateway;
    if (proc.exitCode !== null || proc.signalCode !== null) {
      return resolve({ code: proc.exitCode, signal: proc.signalCode });
    }
    proc.once('exit', (code, signal) => resolve({ code, signal }));
    proc.kill('SIGKILL');
  });
}

/** Publishes; `token`, when given, goes in `Authorization: Bearer`. */
export async function publish(base, topic, body, eventType, token) {
  const query = eventType ? `?event=${eventType}` : '';
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const response = await fetch(`${base}/publish/${topic}${query}`, { method: 'POST', body, headers });
  assert.equal(response.status, 200, await response.clone().text());
  return response.json();
}

/**
 * Publishes `count` events to `topic` as HTTP/1.1 requests pipelined in one
 * write on one connection: the gateway reads them back to back, so no
 * subscriber runs between them (what a publisher flood looks like to a
 * slow reader). Resolves when every response is in; rejects on a non-200.
 */
export function publishPipelined(base, topic, body, count) {
  const { hostname, port } = new URL(base);
  const request = `POST /publish/${topic} HTTP/1.1\r\nHost: ${hostname}\r\n`
    + `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.write(request.repeat(count)));
    let replies = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk) => {
      replies += chunk;
      const statuses = replies.match(/HTTP\/1\.1 \d{3}/g) ?? [];
      if (statuses.some((s) => !s.endsWith('200'))) {
        socket.destroy();
        reject(new Error(`pipelined publish refused: ${statuses.join(', ')}`));
      } else if (statuses.length === count) {
        socket.end();
        resolve();
      }
    });
    socket.on('error', reject);
  });
}

/** One value of the gateway's /metrics. */
export async function metric(base, name) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `metric ${name} missing`);
  return Number(line.split(' ')[1]);
}

/** Static roots of the page server: URL prefix, directory, content type. */
const STATIC = [
  ['/node_modules/', path.join(HERE, 'node_modules'), 'text/javascript'],
  ['/examples/', path.join(HERE, '../../examples'), 'text/html; charset=utf-8'],
];

/**
 * A page origin: `/` is a blank page, `/node_modules/...` serves this suite's
 * npm packages (with `.js` appended when an ES module imports './parse'),
 * `/examples/...` the repository's example pages.
 */
export async function startPageServer() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://page');
    const served = STATIC.find(([prefix]) => url.pathname.startsWith(prefix));
    if (served) {
      const [prefix, dir, contentType] = served;
      const root = path.resolve(dir);
      let relative;
      try {
        relative = decodeURIComponent(url.pathname.slice(prefix.length));
      } catch {
        res.writeHead(400).end();
        return;
      }
      const file = path.resolve(root, relative);
      if (!file.startsWith(root + path.sep)) {
        res.writeHead(403).end();
        return;
      }
      const found = [file, `${file}.js`].find((f) => fs.existsSync(f) && fs.statSync(f).isFile());
      if (!found) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': found.endsWith('.js') ? 'text/javascript' : contentType });
      fs.createReadStream(found).pipe(res);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>ssegate browser test</title>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/**
 * A TCP proxy to `targetPort`: `cut()` resets every connection open through
 * it, as a flaky network or a restarted load balancer would; `stall()` stops
 * reading from the target until `resume()`, as a client on a slow link
 * would; `requests()` is everything clients sent through it.
 */
export async function startProxy(targetPort) {
  const sockets = new Set();
  const upstreams = new Set();
  let stalled = false;
  let requests = '';
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    upstreams.add(upstream);
    upstream.on('close', () => upstreams.delete(upstream));
    if (stalled) upstream.pause();
    // What clients sent (request heads), kept for assertions, bounded.
    client.on('data', (chunk) => {
      if (requests.length < 1 << 20) requests += chunk.toString('latin1');
    });
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      sockets.add(a);
      a.on('close', () => sockets.delete(a));
      a.on('error', () => b.destroy());
      a.pipe(b);
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    base: `http://127.0.0.1:${port}`,
    connections: () => sockets.size / 2,
    requests: () => requests,
    cut() {
      for (const socket of sockets) socket.resetAndDestroy();
    },
    stall() {
      stalled = true;
      for (const upstream of upstreams) upstream.pause();
    },
    resume() {
      stalled = false;
      for (const upstream of upstreams) upstream.resume();
    },
    close: () => new Promise((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(resolve);
    }),
  };
}

/**
 * A round-robin TCP proxy over `targetPorts`, as a load balancer in front of
 * several gateways: each new connection goes to the next target in turn,
 * and when that one refuses (its process is gone) to the one after it, so
 * only targets that are up get connections; a connection no target takes
 * is reset. `routes()` lists every connection that reached a target: its
 * port, the ports that refused it first (`skipped`), and what the client
 * sent on it (its request head first), bounded.
 */
export async function startRoundRobinProxy(targetPorts) {
  const sockets = new Set();
  const routes = [];
  let next = 0;
  const connectToNextUp = (first, skipped = []) => new Promise((resolve) => {
    if (skipped.length === targetPorts.length) return resolve({ upstream: null, skipped });
    const port = targetPorts[(first + skipped.length) % targetPorts.length];
    const upstream = net.connect(port, '127.0.0.1');
    upstream.once('connect', () => {
      upstream.removeAllListeners('error');
      resolve({ upstream, port, skipped });
    });
    upstream.once('error', () => {
      upstream.destroy();
      resolve(connectToNextUp(first, [...skipped, port]));
    });
  });
  const server = net.createServer(async (client) => {
    // Held (unread) until a target has taken the connection.
    client.pause();
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    const first = next;
    next = (next + 1) % targetPorts.length;
    const { upstream, port, skipped } = await connectToNextUp(first);
    if (!upstream) {
      client.resetAndDestroy();
      return;
    }
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    const route = { port, skipped, sent: '' };
    routes.push(route);
    client.on('data', (chunk) => {
      if (route.sent.length < 1 << 16) route.sent += chunk.toString('latin1');
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    base: `http://127.0.0.1:${port}`,
    routes: () => routes.map((route) => ({ ...route })),
    close: () => new Promise((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(resolve);
    }),
  };
}

export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * Opens a page on `origin` with an EventSource on `url` that records every
 * event (the default `message` and the named `eventTypes`) in
 * `window.received`, and counts opens and errors.
 */
export async function openEventSource(browser, origin, url, options = {}) {
  const page = await browser.newPage();
  await page.goto(`${origin}/`);
  await startEventSource(page, url, options);
  return page;
}

/** `openEventSource` on a page already open (with its own cookies, say). */
export async function startEventSource(page, url, { eventTypes = [], withCredentials = false } = {}) {
  await page.evaluate(({ url, eventTypes, withCredentials }) => {
    window.received = [];
    window.opened = 0;
    window.errors = 0;
    const source = new EventSource(url, { withCredentials });
    const record = (event) => window.received.push({
      type: event.type, data: event.data, lastEventId: event.lastEventId,
    });
    source.onmessage = record;
    source.onopen = () => { window.opened += 1; };
    source.onerror = () => { window.errors += 1; };
    for (const type of eventTypes) source.addEventListener(type, record);
    window.source = source;
  }, { url, eventTypes, withCredentials });
}

export async function waitForEvents(page, n) {
  await page.waitForFunction((n) => window.received.length >= n, n, { timeout: PATIENCE_MS });
  return page.evaluate(() => window.received);
}

export function waitFor(page, predicate, arg) {
  return page.waitForFunction(predicate, arg, { timeout: PATIENCE_MS });
}

/**
 * The shared set-up of a suite: Chromium, and `pageServers` page origins,
 * started before its tests and closed after them. Read `suite.browser` and
 * `suite.pages[i].origin` inside tests.
 */
export function setUpSuite({ pageServers = 0 } = {}) {
  const suite = { browser: null, pages: [] };
  before(async () => {
    assert.ok(BIN, 'SSEGATE_BIN must name the ssegate binary');
    for (let i = 0; i < pageServers; i += 1) suite.pages.push(await startPageServer());
    suite.browser = await launchBrowser();
  });
  after(async () => {
    await suite.browser?.close();
    for (const page of suite.pages) page.server.close();
  });
  return suite;
}
