'use strict';
// The library's operations and handle()'s OTP routes go through the FlowService (src/service.rs):
// one native call an operation, the flow run to its answer in Rust. Each test makes the
// JavaScript driver's entry points fail, so a silent fallback to it cannot pass; and checks
// that what the driver still serves (a store stepping one effect at a time) answers alike.
// Against a real redis-server and the conformance suite's SMS sink (a real HTTP server).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { OtpService, RedisStore, MemoryStore, JsonGateway } = require('..');
const { requestInfo } = require('../lib/log');
const { PEPPER, startRedis, startSink, codeOf, newDest, recorder } = require('./helpers');

/** Makes the driver's entry points for the OTP routes fail (for the FlowService's tests). */
function noDriver(otp, except = []) {
  for (const name of ['issue', 'check', 'sessionStatus', 'cancelSession', 'resendSession', 'drive']) {
    if (!except.includes(name)) otp[name] = async () => assert.fail(`the driver's ${name}`);
  }
  return otp;
}

/** A handle() request: `body` an object (JSON) or a Buffer; `headers` by lower-case name. */
function req(method, path, { key, body, headers = {} } = {}) {
  const bytes = body == null ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
  const h = { 'content-type': 'application/json', ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  return {
    method,
    path,
    query: '',
    headers: h,
    readBody: async (max) => {
      if (bytes.length > max) throw Object.assign(new Error('too large'), { code: 'PAYLOAD_TOO_LARGE' });
      return bytes;
    },
  };
}

for (const kind of ['redis', 'memory']) describe(`${kind} store: the OTP operations through the FlowService`, () => {
  let redis;
  let sink;
  before(async () => {
    if (kind === 'redis') redis = await startRedis();
    sink = await startSink();
  });
  after(async () => {
    await sink?.stop();
    await redis?.stop();
  });

  async function store() {
    if (kind === 'memory') return new MemoryStore();
    const s = new RedisStore({ url: redis.url });
    await s.connect();
    return s;
  }

  it('library calls with a built-in gateway: request, verify, status, resend, cancel, each one native call', async () => {
    const otp = new OtpService({ pepper: PEPPER, gateway: new JsonGateway({ url: sink.gatewayUrl, token: 'sink-token' }), store: await store() });
    noDriver(otp);
    const calls = [];
    const flows = otp.flowService();
    const call = flows.call.bind(flows);
    flows.call = (...a) => (calls.push(a[0]), call(...a));
    try {
      const dest = newDest();
      const r = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
      assert.equal(r.reused, false);
      const [m] = await sink.messages(dest);
      assert.equal(m.reference, r.sessionId);
      const wrong = codeOf(m.text) === '000000' ? '111111' : '000000';
      assert.deepEqual(await otp.verify({ sessionId: r.sessionId, code: wrong }), {
        sessionId: r.sessionId, status: 'INVALID', verified: false, message: 'Invalid OTP', attemptsLeft: 4,
      });
      assert.equal((await otp.status(r.sessionId)).state, 'PENDING');
      assert.equal(await otp.status('sess_unknown'), null);
      await assert.rejects(otp.resend(r.sessionId), (e) => e.code === 'RESEND_TOO_SOON' && e.retryAfterSeconds > 0);
      assert.equal((await otp.cancel(r.sessionId)).state, 'CANCELED');
      await assert.rejects(otp.cancel(r.sessionId), (e) => e.code === 'EXPIRED' || e.code === 'ALREADY_USED' || e.code === 'MAX_ATTEMPTS_REACHED' || e.code === 'NOT_FOUND');
      const again = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
      const code = codeOf((await sink.messages(dest))[1].text);
      assert.equal((await otp.verify({ sessionId: again.sessionId, code })).status, 'APPROVED');
      assert.deepEqual(calls, ['request', 'verify', 'status', 'status', 'resend', 'cancel', 'cancel', 'request', 'verify']);
    } finally {
      await otp.close();
    }
  });

  it('an answer or a refusal is the driver\'s: the OtpError\'s code, status, field, message, retryAfterSeconds', async () => {
    const gw = recorder();
    const fast = noDriver(new OtpService({ pepper: PEPPER, gateway: gw, store: await store() }), ['issue']);
    const slowStore = await store();
    if (kind === 'redis') slowStore.oneEffectAtATime = true; // the driver, one effect at a time
    const slow = new OtpService({ pepper: PEPPER, gateway: gw, store: slowStore });
    if (kind === 'memory') slow.flowService = () => null; // the driver
    const refusal = async (otp, fn) => {
      try {
        return { answer: await fn(otp) };
      } catch (e) {
        return { name: e.name, code: e.code, httpStatus: e.httpStatus, field: e.field, message: e.message, retryAfterSeconds: e.retryAfterSeconds, body: e.body };
      }
    };
    let refused = 0;
    try {
      for (const fn of [
        (o) => o.verify({ sessionId: 'x', code: '12' }),
        (o) => o.verify({ sessionId: 'sess_nope', code: '123456' }),
        (o) => o.cancel('sess_nope'),
        (o) => o.resend('sess_nope'),
      ]) {
        const [a, b] = [await refusal(fast, fn), await refusal(slow, fn)];
        assert.deepEqual(a, b);
        refused += a.name === 'OtpError' ? 1 : 0;
      }
      assert.ok(refused >= 3, `${refused} refusals`);
      if (kind === 'redis') {
        // Without the exemption above, a request through the FlowService.
        delete fast.issue;
        const a = await refusal(fast, (o) => o.request({ dest: 'nope', src: 'Acme', purpose: 'LOGIN' }));
        const b = await refusal(slow, (o) => o.request({ dest: 'nope', src: 'Acme', purpose: 'LOGIN' }));
        assert.deepEqual(a, b);
        assert.equal(a.field, 'dest');
        assert.ok(!a.message.startsWith('dest '), 'the message without the field (the HTTP body names it)');
      }
    } finally {
      await fast.close();
      await slow.close();
    }
  });

  it('a gateway written in JavaScript, called from Rust: parallel requests send once, a throw is DELIVERY_FAILED', async () => {
    const gw = recorder();
    const slow = {
      sent: gw.sent,
      // Slow enough that the other requests find this send in flight and wait for it.
      async send(m) {
        await new Promise((r) => setTimeout(r, 30));
        if (m.to === broken) throw new Error('provider down');
        return gw(m);
      },
    };
    const broken = newDest();
    const otp = noDriver(new OtpService({ pepper: PEPPER, gateway: slow, store: await store() }));
    try {
      assert.equal(otp.nativeGateway, null);
      const dest = newDest();
      const all = await Promise.all(Array.from({ length: 6 }, () => otp.request({ dest, src: 'Acme', purpose: 'LOGIN' })));
      assert.equal(gw.sent.length, 1, 'one message');
      assert.equal(new Set(all.map((r) => r.sessionId)).size, 1, 'one session');
      assert.equal(all.filter((r) => r.reused).length, 5);
      assert.equal((await otp.status(all[0].sessionId)).state, 'PENDING');
      assert.equal((await otp.verify({ sessionId: all[0].sessionId, code: codeOf(gw.sent[0].text) })).status, 'APPROVED');
      await assert.rejects(otp.request({ dest: broken, src: 'Acme', purpose: 'LOGIN' }), (e) => e.code === 'DELIVERY_FAILED');
      // Nothing was stored for it: a new request sends again.
      await assert.rejects(otp.request({ dest: broken, src: 'Acme', purpose: 'LOGIN' }), (e) => e.code === 'DELIVERY_FAILED');
    } finally {
      await otp.close();
    }
  });

  it('handle(): the OTP routes through the FlowService, in SPEC order, logged in the request', async () => {
    const otp = new OtpService({ pepper: PEPPER, gateway: new JsonGateway({ url: sink.gatewayUrl, token: 'sink-token' }), store: await store(), adminToken: 'admin-token-0123456789' });
    const { apiKey, workspaceId } = await otp.createWorkspace({ name: 'Acme', senders: ['Acme'] });
    noDriver(otp);
    const lines = [];
    const info = { log: (l) => lines.push(l), level: 'info' };
    const handle = (r) => requestInfo.run(info, () => otp.handle(r));
    try {
      const dest = newDest();
      const big = Buffer.alloc(20 * 1024 * 1024, 'a');
      // 401 before any body error; then 415 and 413 before the body; 400 for a bad one.
      assert.equal((await handle(req('POST', '/v1/messaging/otp/request', { body: big }))).status, 401);
      assert.equal((await handle(req('POST', '/v1/messaging/otp/request', { key: apiKey, body: { dest }, headers: { 'content-type': 'text/plain' } }))).status, 415);
      assert.equal((await handle(req('POST', '/v1/messaging/otp/request', { key: apiKey, body: big }))).status, 413);
      const bad = await handle(req('POST', '/v1/messaging/otp/request', { key: apiKey, body: Buffer.from('{') }));
      assert.equal(bad.status, 400);
      const sent = await handle(req('POST', '/v1/messaging/otp/request', { key: apiKey, body: { dest, src: 'Acme', purpose: 'LOGIN' }, headers: { 'idempotency-key': 'k-7' } }));
      assert.equal(sent.status, 200, sent.body);
      assert.equal(info.workspace, workspaceId, 'the workspace is noted for the log line');
      const { sessionId } = JSON.parse(sent.body).data;
      const replay = await handle(req('POST', '/v1/messaging/otp/request', { key: apiKey, body: { dest, src: 'Acme', purpose: 'LOGIN' }, headers: { 'idempotency-key': 'k-7' } }));
      assert.equal(replay.replayed, true, 'an Idempotency-Key replay says so');
      assert.equal(replay.body, sent.body);
      const status = await handle(req('GET', `/v1/messaging/otp/sessions/${sessionId}`, { key: apiKey }));
      assert.equal(JSON.parse(status.body).data.state, 'PENDING');
      const early = await handle(req('POST', `/v1/messaging/otp/sessions/${sessionId}/resend`, { key: apiKey }));
      assert.equal(early.status, 429);
      assert.ok(early.retryAfter > 0, 'Retry-After');
      const code = codeOf((await sink.messages(dest))[0].text);
      const ok = await handle(req('POST', '/v1/messaging/otp/verify', { key: apiKey, body: { sessionId, code } }));
      assert.equal(JSON.parse(ok.body).data.status, 'APPROVED');
      const canceled = await handle(req('POST', `/v1/messaging/otp/sessions/${sessionId}/cancel`, { key: apiKey }));
      assert.equal(canceled.status, 409, canceled.body);
      // A refused send: the delivery_failed line in this request's log.
      const failing = newDest();
      await sink.setMode(failing, 'fail500');
      const refused = await handle(req('POST', '/v1/messaging/otp/request', { key: apiKey, body: { dest: failing, src: 'Acme', purpose: 'LOGIN' } }));
      assert.equal(refused.status, 502);
      const failed = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'delivery_failed');
      assert.ok(failed, `a delivery_failed line: ${lines.join('\n')}`);
      assert.equal(failed.gatewayStatus, 500);
    } finally {
      await otp.close();
    }
  });
});
