'use strict';
// `otpkit serve`'s native HTTP server (src/serve.rs, lib/server.js serveNative) over real loopback
// sockets: the same answers as node:http byte for byte where it matters, bodies that come late or in
// pieces, pipelining, graceful SIGTERM with a send in flight, and a library's close() releasing the
// event loop. Connection deadlines and the connection cap: server-hardening.test.js.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { randomBytes } = require('node:crypto');
const { ROOT, sleep, startSink, newDest, serve, freePort } = require('./helpers');

const REQUEST_PATH = '/v1/messaging/otp/request';

/** Writes `raw` on a fresh connection and collects everything until the server closes it or `ms` pass. */
function rawExchange(port, raw, { ms = 2000, pieces = null } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let out = '';
    const done = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(out);
    };
    const timer = setTimeout(done, ms);
    sock.on('data', (d) => (out += d.toString('latin1')));
    sock.on('close', done);
    sock.on('error', done);
    sock.on('connect', async () => {
      if (!pieces) return sock.write(raw);
      for (const p of pieces) {
        sock.write(p);
        await sleep(60);
      }
    });
  });
}

/** The responses in a raw exchange: `[{status, headers, body}]` (Content-Length framing only). */
function parseResponses(raw) {
  const out = [];
  let rest = raw;
  while (rest.startsWith('HTTP/1.1 ')) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const lines = rest.slice(0, end).split('\r\n');
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    const len = Number(headers['content-length'] ?? 0);
    const status = Number(lines[0].split(' ')[1]);
    const bodyLen = status === 304 || status === 204 ? 0 : len;
    out.push({ status, headers, body: rest.slice(end + 4, end + 4 + bodyLen) });
    rest = rest.slice(end + 4 + bodyLen);
  }
  return out;
}

const head = (lines, body = '') => `${lines.join('\r\n')}\r\n\r\n${body}`;
/** The same, asking the server to close after its answer (so an exchange ends with it). */
const once = (lines, body = '') => head([...lines, 'connection: close'], body);

describe('otpkit serve on the native server: the same answers as on node:http', () => {
  let sink;
  let nativeSrv;
  let nodeSrv;
  let key; // the native server's (each server has its own memory store)
  let nodeKey;
  const admin = randomBytes(16).toString('hex');
  const workspace = async (base) => {
    const created = await fetch(`${base}/v1/admin/workspaces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'native', senders: ['Acme'] }),
    });
    assert.equal(created.status, 201);
    return (await created.json()).data.apiKey;
  };

  before(async () => {
    sink = await startSink();
    const env = { OTP_PEPPER: randomBytes(32).toString('hex'), ADMIN_TOKEN: admin, SMS_GATEWAY_URL: sink.gatewayUrl, SMS_GATEWAY_TOKEN: 'sink-token' };
    nativeSrv = await serve(env);
    nodeSrv = await serve({ ...env, OTPKIT_HTTP: 'node' });
    key = await workspace(nativeSrv.base);
    nodeKey = await workspace(nodeSrv.base);
  });

  after(async () => {
    await nativeSrv?.stop();
    await nodeSrv?.stop();
    await sink?.stop();
  });

  it('prints that it listens on the native server, and the node:http one says so', () => {
    assert.match(nativeSrv.output(), /listening on http:\/\/127\.0\.0\.1:\d+ \(memory store\)\n/);
    assert.match(nodeSrv.output(), /\(memory store, node:http\)/);
  });

  it('status, body and the headers that carry meaning match node:http for requests that need no workspace', async () => {
    const big = 'x'.repeat(70 * 1024);
    const cases = (key) => ({
      health: once(['GET /health HTTP/1.1', 'host: a']),
      headHealth: once(['HEAD /health HTTP/1.1', 'host: a']),
      ready: once(['GET /ready HTTP/1.1', 'host: a']),
      unknown: once(['GET /nope?x=1 HTTP/1.1', 'host: a']),
      wrongMethod: once(['DELETE /v1/messaging/otp/request HTTP/1.1', 'host: a']),
      noKey: once(['POST /v1/messaging/otp/request HTTP/1.1', 'host: a', 'content-type: application/json', 'content-length: 2'], '{}'),
      wrongType: once(['POST /v1/messaging/otp/request HTTP/1.1', 'host: a', `x-api-key: ${key}`, 'content-type: text/plain', 'content-length: 2'], '{}'),
      tooLargeDeclared: once(['POST /v1/messaging/otp/request HTTP/1.1', 'host: a', `x-api-key: ${key}`, 'content-type: application/json', `content-length: ${big.length}`], big),
      tooLargeChunked: once(['POST /v1/messaging/otp/request HTTP/1.1', 'host: a', `x-api-key: ${key}`, 'content-type: application/json', 'transfer-encoding: chunked'], `${big.length.toString(16)}\r\n${big}\r\n0\r\n\r\n`),
      malformedJson: once(['POST /v1/messaging/otp/request HTTP/1.1', 'host: a', `x-api-key: ${key}`, 'content-type: application/json', 'content-length: 5'], '{"a":'),
      adminNoToken: once(['GET /v1/admin/workspaces HTTP/1.1', 'host: a']),
      metricsNoToken: once(['GET /metrics HTTP/1.1', 'host: a']),
      consoleRedirect: once(['GET /console HTTP/1.1', 'host: a']),
      consoleIndex: once(['GET /console/ HTTP/1.1', 'host: a']),
      openapi: once(['GET /openapi.json HTTP/1.1', 'host: a']),
      headersTooLarge: once(['GET /health HTTP/1.1', 'host: a', `x-big: ${'a'.repeat(20_000)}`]),
    });
    const meaning = ['content-type', 'content-length', 'retry-after', 'location', 'etag', 'content-security-policy', 'allow'];
    const theirs = cases(nodeKey);
    for (const [name, raw] of Object.entries(cases(key))) {
      const [a] = parseResponses(await rawExchange(nativeSrv.port, raw, { ms: 1500 }));
      const [b] = parseResponses(await rawExchange(nodeSrv.port, theirs[name], { ms: 1500 }));
      assert.ok(a, `${name}: the native server answered`);
      assert.ok(b, `${name}: node:http answered`);
      assert.equal(a.status, b.status, `${name}: status`);
      assert.equal(a.body, b.body, `${name}: body`);
      for (const h of meaning) assert.equal(a.headers[h], b.headers[h], `${name}: ${h}`);
      // A 401 always closes. (node:http also closes after a 415 or 400 whose body it never read;
      // the native server has read a body that came with its head, so it may keep those alive.)
      if (a.status === 401) assert.equal(a.headers.connection, 'close', `${name}: a 401 closes`);
      if (name === 'headHealth') assert.equal(a.body, '', 'HEAD: no body');
    }
  });

  it('a body that arrives in pieces after the head is read whole, and pipelined requests are answered in order', async () => {
    const dest = newDest();
    const body = JSON.stringify({ dest, src: 'Acme', purpose: 'LOGIN' });
    const lines = ['POST /v1/messaging/otp/request HTTP/1.1', 'host: a', `x-api-key: ${key}`, 'content-type: application/json', `content-length: ${body.length}`];
    const raw = await rawExchange(nativeSrv.port, null, { ms: 1500, pieces: [head(lines), body.slice(0, 10), body.slice(10, 30), body.slice(30)] });
    const [r] = parseResponses(raw);
    assert.equal(r?.status, 200, raw);
    assert.equal(JSON.parse(r.body).data.reused, false);
    assert.equal((await sink.messages(dest)).length, 1);

    const pipelined = head(['GET /health HTTP/1.1', 'host: a']) + head(['GET /nope HTTP/1.1', 'host: a']) + head(['GET /health HTTP/1.1', 'host: a']);
    const rs = parseResponses(await rawExchange(nativeSrv.port, pipelined, { ms: 800 }));
    assert.deepEqual(rs.map((x) => x.status), [200, 404, 200]);
  });

  it('a request log line per request, as on node:http', async () => {
    await fetch(`${nativeSrv.base}/nope`);
    await sleep(100);
    const lines = nativeSrv.output().split('\n').filter((l) => l.startsWith('{') && l.includes('"msg":"request"'));
    assert.ok(lines.some((l) => JSON.parse(l).status === 404), 'the 404 is logged');
    assert.ok(!nativeSrv.output().includes(key), 'never the key');
  });
});

describe('otpkit serve on the native server: graceful SIGTERM', () => {
  let sink;
  before(async () => {
    sink = await startSink();
  });
  after(async () => sink?.stop());

  it('finishes the request in flight (its SMS sent, 200 answered), refuses new connections, exits 0', async () => {
    const admin = randomBytes(16).toString('hex');
    const port = await freePort();
    const child = spawn(process.execPath, [path.join(ROOT, 'napi-binding', 'bin', 'otpkit.js'), 'serve'], {
      env: { ...process.env, PORT: String(port), OTP_PEPPER: randomBytes(32).toString('hex'), ADMIN_TOKEN: admin, SMS_GATEWAY_URL: sink.gatewayUrl, SMS_GATEWAY_TOKEN: 't' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    const base = `http://127.0.0.1:${port}`;
    for (let i = 0; !(await fetch(`${base}/health`).then(() => true, () => false)); i++) {
      assert.ok(i < 100, `did not listen:\n${out}`);
      await sleep(100);
    }
    const created = await fetch(`${base}/v1/admin/workspaces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'graceful', senders: ['Acme'] }),
    });
    const apiKey = (await created.json()).data.apiKey;
    const dest = newDest();
    await sink.setMode(dest, 'slow', { delayMs: 1500 });
    const t0 = Date.now();
    const inFlight = fetch(`${base}${REQUEST_PATH}`, {
      method: 'POST',
      headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
      body: JSON.stringify({ dest, src: 'Acme', purpose: 'LOGIN' }),
    });
    await sleep(400); // the send is at the gateway now
    child.kill('SIGTERM');
    await sleep(200);
    const refused = await fetch(`${base}/health`).then(() => false, () => true);
    const r = await inFlight;
    const body = await r.json();
    const { code, signal } = await exited;
    const ms = Date.now() - t0;
    assert.equal(r.status, 200, JSON.stringify(body));
    assert.equal(typeof body.data.sessionId, 'string');
    assert.ok(refused, 'a new connection after SIGTERM is refused');
    assert.equal((await sink.messages(dest)).length, 1, 'the SMS went out');
    assert.equal(code, 0, `exit code (signal ${signal}):\n${out}`);
    assert.ok(ms >= 1500, `answered after the gateway's delay (${ms} ms)`);
    assert.doesNotMatch(out, /internal error|    at /i, out);
  });
});

describe('otpkit serve on the native server: the OTP routes answered in Rust', () => {
  for (const kind of ['memory', 'redis']) {
    it(`${kind}: request and verify are answered while the JavaScript thread is blocked, then logged and counted`, async (t) => {
      const { OtpService, MemoryStore, RedisStore, JsonGateway, Metrics, serveNative } = require(path.join(ROOT, 'napi-binding'));
      const { startRedis } = require('./helpers');
      let redis = null;
      let store = new MemoryStore();
      if (kind === 'redis') {
        redis = await startRedis();
        store = new RedisStore({ url: redis.url });
        await store.connect();
      }
      // The gateway's sink runs in the child below: nothing of this process may answer anything.
      const sinkPort = await freePort();
      const gateway = new JsonGateway({ url: `http://127.0.0.1:${sinkPort}/sms`, token: 'sink-token' });
      const metrics = new Metrics();
      const service = new OtpService({ pepper: 'p'.repeat(40), gateway, store, metrics });
      const { apiKey, workspaceId } = await service.createWorkspace({ name: 'fast', senders: ['Acme'] });
      const lines = [];
      const server = serveNative(service, { port: 0, log: (l) => lines.push(l), logLevel: 'info' });
      t.after(async () => {
        await server.close(1000);
        await service.close();
        await redis?.stop();
      });
      const dest = newDest();
      const child = `
        const { startSink } = await import(${JSON.stringify(path.join(ROOT, 'tests', 'conformance', 'sink.mjs'))});
        const sink = await startSink({ port: ${sinkPort} });
        const base = 'http://127.0.0.1:${server.port}';
        const h = { 'x-api-key': ${JSON.stringify(apiKey)}, 'content-type': 'application/json' };
        const post = (p, body) => fetch(base + p, { method: 'POST', headers: h, body: JSON.stringify(body) });
        const r = await post('/v1/messaging/otp/request', { dest: ${JSON.stringify(dest)}, src: 'Acme', purpose: 'LOGIN' });
        const { sessionId } = (await r.json()).data;
        const [m] = await sink.messages(${JSON.stringify(dest)});
        const v = await post('/v1/messaging/otp/verify', { sessionId, code: /\\d{4,10}/.exec(m.text)[0] });
        const denied = await fetch(base + '/v1/messaging/otp/sessions/' + sessionId, { headers: { 'x-api-key': 'otpk_' + 'A'.repeat(43) } });
        console.log(JSON.stringify({ request: r.status, verify: v.status, status: (await v.json()).data.status, denied: denied.status, closes: denied.headers.get('connection') }));
        await sink.stop();
      `;
      // spawnSync holds this process's JavaScript thread until the child is done.
      const out = spawnSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(out.status, 0, `${out.stdout}\n${out.stderr}`);
      assert.deepEqual(JSON.parse(out.stdout), { request: 200, verify: 200, status: 'APPROVED', denied: 401, closes: 'close' });
      await sleep(100); // the answers are told to JavaScript once it runs again
      const logged = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request');
      assert.deepEqual(
        logged.map((l) => [l.route, l.status, l.workspace ?? null]),
        [['request', 200, workspaceId], ['verify', 200, workspaceId], ['status', 401, null]],
      );
      const text = (await metrics.expose()).body;
      assert.match(text, /otpkit_sends_total\{[^}]*outcome="delivered"[^}]*\} 1/);
      assert.match(text, /otpkit_verifications_total\{status="APPROVED"\} 1/);
      assert.match(text, /otpkit_requests_total\{route="status",status="401"\} 1/);
      if (kind === 'redis') assert.match(text, /otpkit_store_latency_seconds_count\{io="verify"\} 1/);
      assert.ok(!lines.join('\n').includes(apiKey), 'never the key');
    });
  }
});

describe('otpkit serve on the native server: a gateway written in JavaScript, called from Rust', () => {
  it('sends once for parallel requests, verifies, and a failure is a 502 with its delivery_failed line', async (t) => {
    const { OtpService, MemoryStore, Metrics, serveNative } = require(path.join(ROOT, 'napi-binding'));
    const sent = [];
    const failing = newDest();
    const gateway = async (m, opts) => {
      sent.push(m);
      await sleep(30); // the other requests arrive while this send is in flight
      if (m.to === failing) {
        opts.onFailure({ status: 503 });
        return 'failed';
      }
      return { outcome: 'delivered', messageId: `SM${sent.length}` };
    };
    const metrics = new Metrics();
    const service = new OtpService({ pepper: 'p'.repeat(40), gateway, store: new MemoryStore(), metrics });
    assert.ok(service.flowService(), 'the OTP routes are answered in Rust');
    // Nothing of the driver's request path may run.
    service.issue = async () => assert.fail("the driver's request path");
    service.check = async () => assert.fail("the driver's verify path");
    const { apiKey } = await service.createWorkspace({ name: 'js-gateway', senders: ['Acme'] });
    const lines = [];
    const server = serveNative(service, { port: 0, log: (l) => lines.push(l), logLevel: 'info' });
    t.after(async () => {
      await server.close(1000);
      await service.close();
    });
    const base = `http://127.0.0.1:${server.port}`;
    const h = { 'x-api-key': apiKey, 'content-type': 'application/json' };
    const post = async (p, body) => {
      const r = await fetch(base + p, { method: 'POST', headers: h, body: JSON.stringify(body) });
      return { status: r.status, body: await r.json() };
    };
    const dest = newDest();
    const all = await Promise.all(Array.from({ length: 6 }, () => post('/v1/messaging/otp/request', { dest, src: 'Acme', purpose: 'LOGIN' })));
    assert.deepEqual(all.map((r) => r.status), [200, 200, 200, 200, 200, 200]);
    assert.equal(sent.filter((m) => m.to === dest).length, 1, 'one message');
    assert.equal(all.filter((r) => r.body.data.reused).length, 5, 'the others waited for it and reuse it');
    const [m] = sent;
    assert.equal(m.reference, all[0].body.data.sessionId);
    const v = await post('/v1/messaging/otp/verify', { sessionId: m.reference, code: /\d{4,10}/.exec(m.text)[0] });
    assert.equal(v.body.data.status, 'APPROVED');
    const refused = await post('/v1/messaging/otp/request', { dest: failing, src: 'Acme', purpose: 'LOGIN' });
    assert.equal(refused.status, 502);
    assert.equal(refused.body.error.code, 'DELIVERY_FAILED');
    await sleep(100);
    const failed = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'delivery_failed');
    assert.ok(failed, lines.join('\n'));
    assert.equal(failed.gateway, 'custom');
    assert.equal(failed.gatewayStatus, 503);
    const text = (await metrics.expose()).body;
    assert.match(text, /otpkit_sends_total\{[^}]*outcome="delivered"[^}]*\} 1/);
    assert.match(text, /otpkit_sends_total\{[^}]*outcome="failed"[^}]*\} 1/);
  });
});

describe('serveNative in a library', () => {
  it('close() releases the event loop: a script that serves one request and closes exits by itself', async () => {
    const script = `
      const { OtpService, serveNative } = require(${JSON.stringify(path.join(ROOT, 'napi-binding'))});
      (async () => {
        const service = new OtpService({ pepper: 'p'.repeat(40), gateway: async () => 'delivered' });
        const server = serveNative(service, { port: 0 });
        const r = await fetch('http://127.0.0.1:' + server.port + '/health');
        console.log('status', r.status, 'port', server.port > 0);
        await server.close(1000);
        console.log('closed', server.connections);
      })();
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    const code = await new Promise((r) => child.once('exit', (c) => r(c)));
    clearTimeout(timer);
    assert.equal(code, 0, `exited by itself (not killed):\n${out}`);
    assert.match(out, /status 200 port true/);
    assert.match(out, /closed 0/);
  });

  it('a port in use throws MISCONFIGURED', async () => {
    const { OtpService, serveNative } = require(path.join(ROOT, 'napi-binding'));
    const service = new OtpService({ pepper: 'p'.repeat(40), gateway: async () => 'delivered' });
    const first = serveNative(service, { port: 0 });
    try {
      assert.throws(() => serveNative(service, { port: first.port }), (e) => e.code === 'MISCONFIGURED' || /MISCONFIGURED/.test(e.message));
    } finally {
      await first.close(100);
    }
  });
});
