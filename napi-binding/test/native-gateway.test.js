'use strict';
// A built-in gateway (JsonGateway, …) on either store: a flow run in Rust sends its messages
// itself (native.NativeGateway), waits there for another request's send or pauses for an
// Idempotency-Key duplicate, and reports each send back for the request's metrics and log line.
// Against a real redis-server and the conformance suite's SMS sink (a real HTTP server). A
// gateway written in JavaScript is called from Rust too (test/flow-service.test.js).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { OtpService, RedisStore, MemoryStore, JsonGateway, Metrics } = require('..');
const { nativeGateway } = require('../lib/gateway');
const { requestInfo } = require('../lib/log');
const { PEPPER, startRedis, startSink, codeOf, newDest, recorder } = require('./helpers');

for (const kind of ['redis', 'memory']) describe(`${kind} store with a built-in gateway: sends from Rust`, () => {
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

  async function service(opts = {}) {
    let store = new MemoryStore();
    if (kind === 'redis') {
      store = new RedisStore({ url: redis.url });
      await store.connect();
    }
    const gateway = opts.gateway ?? new JsonGateway({ url: sink.gatewayUrl, token: 'sink-token' });
    const otp = new OtpService({ pepper: PEPPER, gateway, store, metrics: opts.metrics });
    // A built-in gateway's sends and waits never reach the driver's own.
    if (!opts.gateway) {
      otp.send = async () => assert.fail("a send through the driver's path");
      otp.waitFor = async () => assert.fail("a wait on the driver's path");
    }
    return otp;
  }

  it('only a built-in gateway whose send is its own is sent from Rust', () => {
    assert.ok(nativeGateway(new JsonGateway({ url: sink.gatewayUrl })));
    assert.equal(nativeGateway({ send: async () => 'delivered' }), null);
    class Wrapped extends JsonGateway {
      async send(m, o) {
        return super.send(m, o);
      }
    }
    assert.equal(nativeGateway(new Wrapped({ url: sink.gatewayUrl })), null, 'a subclass that changes send keeps the driver');
  });

  it('the message reaches the gateway, its code verifies, and the send is counted in the request', async () => {
    const metrics = new Metrics();
    const otp = await service({ metrics });
    try {
      assert.ok(otp.nativeGateway, 'the service sends from Rust');
      const dest = newDest();
      const r = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
      const [m] = await sink.messages(dest);
      assert.equal(m.reference, r.sessionId);
      assert.equal((await otp.verify({ sessionId: r.sessionId, code: codeOf(m.text) })).status, 'APPROVED');
      const text = (await metrics.expose()).body;
      assert.match(text, /otpkit_sends_total\{[^}]*outcome="delivered"[^}]*\} 1/);
      assert.match(text, /otpkit_gateway_latency_seconds_count\{[^}]*outcome="delivered"[^}]*\} 1/);
    } finally {
      await otp.close();
    }
  });

  it('parallel requests for one destination: one message, the others wait for it in Rust and reuse it', async () => {
    const otp = await service();
    try {
      const dest = newDest();
      const all = await Promise.all(Array.from({ length: 8 }, () => otp.request({ dest, src: 'Acme', purpose: 'LOGIN' })));
      assert.equal((await sink.messages(dest)).length, 1, 'one SMS');
      assert.equal(new Set(all.map((r) => r.sessionId)).size, 1, 'one session');
      assert.equal(all.filter((r) => r.reused).length, 7);
    } finally {
      await otp.close();
    }
  });

  it('an Idempotency-Key duplicate in flight pauses in Rust, then answers the first answer', async () => {
    const otp = await service();
    try {
      const dest = newDest();
      const params = { dest, src: 'Acme', purpose: 'LOGIN' };
      const [a, b] = await Promise.all([
        otp.request(params, { idempotencyKey: 'k-1' }),
        otp.request(params, { idempotencyKey: 'k-1' }),
      ]);
      assert.equal((await sink.messages(dest)).length, 1, 'one SMS');
      assert.equal(a.sessionId, b.sessionId);
      assert.equal(a.reused, false);
      assert.equal(b.reused, false, 'the first answer, replayed (not a reuse)');
    } finally {
      await otp.close();
    }
  });

  it('a gateway that fails: DELIVERY_FAILED, the delivery_failed line in the request, nothing stored', async () => {
    const otp = await service();
    const dest = newDest();
    await sink.setMode(dest, 'fail500');
    const lines = [];
    try {
      await requestInfo.run({ log: (l) => lines.push(l), level: 'info' }, () =>
        assert.rejects(otp.request({ dest, src: 'Acme', purpose: 'LOGIN' }), (e) => e.code === 'DELIVERY_FAILED'),
      );
      const failed = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'delivery_failed');
      assert.ok(failed, `a delivery_failed line: ${lines.join('\n')}`);
      assert.equal(failed.gateway, 'json');
      assert.equal(failed.gatewayStatus, 500);
      assert.ok(!lines.join('\n').includes(dest), 'the number is masked');
    } finally {
      await otp.close();
    }
  });

  it('a gateway written in JavaScript is not a built-in one, and its messages go out', async () => {
    const gw = recorder();
    const otp = await service({ gateway: gw });
    try {
      assert.equal(otp.nativeGateway, null);
      const r = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
      assert.equal(gw.sent.length, 1);
      assert.equal((await otp.verify({ sessionId: r.sessionId, code: codeOf(gw.sent[0].text) })).status, 'APPROVED');
    } finally {
      await otp.close();
    }
  });
});
