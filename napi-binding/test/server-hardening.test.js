'use strict';
// `otpkit serve` against clients that hold connections open (issue 19, item 2) and clients that
// abort their bodies (item 8), over real loopback sockets against a real `otpkit serve`.
//
// The deadlines are made short through the environment (OTPKIT_*_MS) so the test takes seconds;
// the dribblers send one byte every DRIBBLE_MS, more often than the idle timeout, so only the
// hard deadlines (drain, headers, request) can cut them — the idle timeout alone would not.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const { randomBytes } = require('node:crypto');
const { sleep, startSink, newDest, serve } = require('./helpers');

const REQUEST_PATH = '/v1/messaging/otp/request';

const DEADLINES = {
  OTPKIT_HEADERS_TIMEOUT_MS: 1500,
  OTPKIT_REQUEST_TIMEOUT_MS: 3000,
  OTPKIT_IDLE_TIMEOUT_MS: 2000,
  OTPKIT_KEEPALIVE_TIMEOUT_MS: 1000,
  OTPKIT_DRAIN_TIMEOUT_MS: 1500,
};
const DRIBBLE_MS = 400; // < OTPKIT_IDLE_TIMEOUT_MS: the idle timer never fires on a dribbler
const SLACK_MS = 2000; // timer granularity (node checks request deadlines periodically) and a loaded machine

/**
 * A raw client on loopback that writes `head` and then, if `dribble`, one byte every DRIBBLE_MS
 * forever — also after the server's answer and after a FIN from the server (allowHalfOpen), like a
 * hostile client would. `closedAt` is set only when the socket is really gone (the server
 * destroyed it: a write meets a reset), not when the server merely half-closes.
 */
function rawClient(port, head, { dribble = true } = {}) {
  const c = {
    openedAt: Date.now(),
    connectedAt: null,
    answeredAt: null,
    finAt: null,
    closedAt: null,
    status: null,
    headers: null,
    raw: '',
  };
  const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  c.sock = sock;
  sock.setNoDelay(true);
  let timer = null;
  sock.on('connect', () => {
    c.connectedAt = Date.now();
    if (head) sock.write(head);
    if (dribble) {
      timer = setInterval(() => {
        if (!sock.destroyed) sock.write('x');
      }, DRIBBLE_MS);
    }
  });
  sock.on('data', (d) => {
    c.raw += d.toString('latin1');
    if (c.status == null) {
      const end = c.raw.indexOf('\r\n\r\n');
      if (end !== -1) {
        const lines = c.raw.slice(0, end).split('\r\n');
        c.status = Number(lines[0].split(' ')[1]);
        c.headers = Object.fromEntries(
          lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
        );
        c.answeredAt = Date.now();
      }
    }
  });
  // After the server's FIN keep writing (every client here does, like a hostile one would): a
  // socket the server really closed answers with a reset, one it merely half-closed absorbs it.
  sock.on('end', () => {
    c.finAt ??= Date.now();
    clearInterval(timer);
    const probe = () => !sock.destroyed && sock.write('x');
    probe();
    timer = setInterval(probe, 100);
  });
  sock.on('error', () => {});
  sock.on('close', () => {
    clearInterval(timer);
    c.closedAt = Date.now();
  });
  c.destroy = () => {
    clearInterval(timer);
    sock.destroy();
  };
  return c;
}

/** Opens `n` clients, `batch` at a time, waiting for each batch to connect (or fail). */
async function openMany(n, make, batch = 100) {
  const all = [];
  for (let i = 0; i < n; i += batch) {
    const group = Array.from({ length: Math.min(batch, n - i) }, () => make());
    await Promise.all(
      group.map((c) => new Promise((r) => (c.connectedAt || c.closedAt ? r() : (c.sock.once('connect', r), c.sock.once('close', r))))),
    );
    all.push(...group);
  }
  return all;
}

async function until(cond, ms) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

const head = (lines) => `${lines.join('\r\n')}\r\n\r\n`;
const percentile = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

describe('otpkit serve: connections held open and aborted bodies', () => {
  let sink;
  let srv;
  let key;
  const admin = randomBytes(16).toString('hex');
  const opened = [];

  before(async () => {
    sink = await startSink();
    srv = await serve({
      ...Object.fromEntries(Object.entries(DEADLINES).map(([k, v]) => [k, String(v)])),
      OTP_PEPPER: randomBytes(32).toString('hex'),
      ADMIN_TOKEN: admin,
      SMS_GATEWAY_URL: sink.gatewayUrl,
      SMS_GATEWAY_TOKEN: 'sink-token',
    });
    const created = await fetch(`${srv.base}/v1/admin/workspaces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'hardening', senders: ['Acme'] }),
    });
    assert.equal(created.status, 201);
    key = (await created.json()).data.apiKey;
  });

  after(async () => {
    for (const c of opened) c.destroy();
    await srv?.stop();
    await sink?.stop();
  });

  /** A real request with the workspace's key: 200, and the sink receives the SMS. */
  async function realRequest() {
    const dest = newDest();
    const t0 = Date.now();
    const r = await fetch(`${srv.base}${REQUEST_PATH}`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ dest, src: 'Acme', purpose: 'LOGIN' }),
    });
    const ms = Date.now() - t0;
    assert.equal(r.status, 200, await r.text());
    assert.equal((await sink.messages(dest)).length, 1);
    return ms;
  }

  async function healthMs() {
    const t0 = Date.now();
    const r = await fetch(`${srv.base}/health`);
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    return Date.now() - t0;
  }

  it('400 dribbling sockets with a wrong key get 401 + Connection: close and are closed by the drain deadline; /health and a real request still answer', async (t) => {
    const N = 400;
    const t0 = Date.now();
    const dribblers = await openMany(N, () => {
      const c = rawClient(
        srv.port,
        head([`POST ${REQUEST_PATH} HTTP/1.1`, 'host: 127.0.0.1', 'x-api-key: otpk_not-a-real-key', 'content-type: application/json', 'content-length: 1000']),
      );
      opened.push(c);
      return c;
    });
    // While they are connected (and dribbling): the service answers everyone else.
    const health = [];
    for (let i = 0; i < 10; i++) health.push(await healthMs());
    const requestMs = await realRequest();
    const openDuring = dribblers.filter((c) => c.closedAt == null).length;

    assert.ok(await until(() => dribblers.every((c) => c.status != null || c.closedAt != null), 5000), 'every dribbler is answered');
    const unanswered = dribblers.filter((c) => c.status !== 401);
    assert.equal(unanswered.length, 0, `every dribbler gets its 401 (got ${[...new Set(unanswered.map((c) => c.status))]})`);

    // The server closes each one by the drain deadline, although the client keeps sending.
    const bound = DEADLINES.OTPKIT_DRAIN_TIMEOUT_MS + SLACK_MS;
    await until(() => dribblers.every((c) => c.closedAt != null), bound + 1000);
    const stillOpen = dribblers.filter((c) => c.closedAt == null);
    const late = dribblers.filter((c) => c.closedAt != null && c.closedAt - c.answeredAt > bound);
    const closeMs = dribblers.filter((c) => c.closedAt != null).map((c) => c.closedAt - c.answeredAt);
    t.diagnostic(
      `${N} dribblers: ${openDuring} still open while /health was measured; /health p50 ${percentile(health, 50)} ms, max ${Math.max(...health)} ms; ` +
        `real request ${requestMs} ms; closed after their 401 in p50 ${percentile(closeMs, 50)} ms, max ${Math.max(...closeMs)} ms; ` +
        `all gone ${Math.max(...dribblers.map((c) => c.closedAt ?? Infinity)) - t0} ms after the first connect`,
    );
    assert.equal(stillOpen.length, 0, `${stillOpen.length} of ${N} dribblers still open ${Date.now() - t0} ms after the first connect`);
    assert.equal(late.length, 0, `${late.length} dribblers closed later than ${bound} ms after their 401`);
    const keptAlive = dribblers.filter((c) => (c.headers.connection || '').toLowerCase() !== 'close');
    assert.equal(keptAlive.length, 0, `${keptAlive.length} early 401s did not say Connection: close`);
    // and afterwards, of course
    await healthMs();
    await realRequest();
  });

  it('dribblers without an early answer are cut too: slow headers, a slow body with a valid key, a silent socket, an idle keep-alive', async (t) => {
    const slowHeaders = Array.from({ length: 20 }, () => rawClient(srv.port, 'POST /v1/messaging/otp/request HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: '));
    const slowBody = Array.from({ length: 20 }, () =>
      rawClient(
        srv.port,
        head([`POST ${REQUEST_PATH} HTTP/1.1`, 'host: 127.0.0.1', `x-api-key: ${key}`, 'content-type: application/json', 'content-length: 1000']),
      ),
    );
    const silent = Array.from({ length: 20 }, () => rawClient(srv.port, null, { dribble: false }));
    const keepAlive = Array.from({ length: 20 }, () => rawClient(srv.port, head(['GET /health HTTP/1.1', 'host: 127.0.0.1']), { dribble: false }));
    const groups = { slowHeaders, slowBody, silent, keepAlive };
    opened.push(...slowHeaders, ...slowBody, ...silent, ...keepAlive);
    const bounds = {
      slowHeaders: DEADLINES.OTPKIT_HEADERS_TIMEOUT_MS + SLACK_MS,
      slowBody: DEADLINES.OTPKIT_REQUEST_TIMEOUT_MS + SLACK_MS,
      silent: Math.min(DEADLINES.OTPKIT_HEADERS_TIMEOUT_MS, DEADLINES.OTPKIT_IDLE_TIMEOUT_MS) + SLACK_MS,
      keepAlive: DEADLINES.OTPKIT_KEEPALIVE_TIMEOUT_MS + 1000 + SLACK_MS, // node 20 adds 1 s to the keep-alive timeout
    };
    const all = Object.values(groups).flat();
    await until(() => all.every((c) => c.closedAt != null), Math.max(...Object.values(bounds)) + 1000);
    const lines = [];
    for (const [name, cs] of Object.entries(groups)) {
      const open = cs.filter((c) => c.closedAt == null).length;
      const ms = cs.filter((c) => c.closedAt != null).map((c) => c.closedAt - c.openedAt);
      lines.push(`${name}: ${open} open, closed after max ${ms.length ? Math.max(...ms) : '-'} ms (bound ${bounds[name]} ms), statuses ${[...new Set(cs.map((c) => c.status))]}`);
    }
    t.diagnostic(lines.join('; '));
    for (const [name, cs] of Object.entries(groups)) {
      const open = cs.filter((c) => c.closedAt == null);
      assert.equal(open.length, 0, `${name}: ${open.length} of ${cs.length} still open (${lines.join('; ')})`);
      const late = cs.filter((c) => c.closedAt - c.openedAt > bounds[name]);
      assert.equal(late.length, 0, `${name}: ${late.length} closed later than ${bounds[name]} ms (${lines.join('; ')})`);
    }
    for (const c of keepAlive) assert.equal(c.status, 200, 'the keep-alive request itself was answered');
    for (const c of slowBody) assert.equal(c.status, 408, 'a body not received in time is answered 408');
    await healthMs();
  });

  it('50 request bodies aborted mid-way log no "internal error", and the server still answers', async () => {
    const before = srv.output().length;
    const clients = [];
    for (let i = 0; i < 50; i++) {
      const c = rawClient(
        srv.port,
        head([`POST ${REQUEST_PATH} HTTP/1.1`, 'host: 127.0.0.1', `x-api-key: ${key}`, 'content-type: application/json', 'content-length: 1000']) +
          '{"dest":"+15550000000","src":"Acme","purpose":"LO',
        { dribble: false },
      );
      opened.push(c);
      clients.push(c);
    }
    await until(() => clients.every((c) => c.connectedAt != null), 5000);
    await sleep(200); // the server has read the headers and is waiting for the body
    clients.forEach((c, i) => (i % 2 ? c.sock.end() : c.destroy())); // half of them half-close, half just go
    await until(() => clients.every((c) => c.closedAt != null), 3000);
    await sleep(300);
    await healthMs();
    await realRequest();
    const out = srv.output().slice(before);
    assert.doesNotMatch(out, /internal error/i, out);
    assert.doesNotMatch(out, /ERR_STREAM|uncaught|unhandled/i, out);
  });

  it('no "internal error" or stack trace in the whole run, and no key in the output', () => {
    const out = srv.output();
    assert.doesNotMatch(out, /internal error|    at /i, out);
    assert.ok(!out.includes(key), 'the API key is never printed');
    assert.ok(!out.includes(admin), 'the admin token is never printed');
  });
});

describe('otpkit serve: OTPKIT_MAX_CONNECTIONS', () => {
  let srv;
  const opened = [];
  before(async () => {
    srv = await serve({ OTP_PEPPER: randomBytes(32).toString('hex'), OTPKIT_MAX_CONNECTIONS: '50' });
  });
  after(async () => {
    for (const c of opened) c.destroy();
    await srv?.stop();
  });

  it('connections past the cap are refused at once, and the server answers again when they go', async (t) => {
    const cs = await openMany(120, () => {
      const c = rawClient(srv.port, null, { dribble: false });
      opened.push(c);
      return c;
    });
    await sleep(500); // well under every deadline: only the cap can close a socket this early
    const dropped = cs.filter((c) => c.closedAt != null).length;
    t.diagnostic(`120 silent sockets against a cap of 50: ${dropped} refused within 500 ms`);
    assert.ok(dropped >= 70, `at least 70 of 120 refused by a cap of 50, got ${dropped}`);
    for (const c of cs) c.destroy();
    await sleep(200);
    const r = await fetch(`${srv.base}/health`);
    assert.equal(r.status, 200);
  });
});
