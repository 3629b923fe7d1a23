'use strict';
// The library's `idempotencyKey` (SPEC §7 "Idempotency") with the memory store and with Redis:
// the same call answers the first answer again and sends nothing; other params → 422; parallel
// calls send once; a 5xx is not kept; the key reaches no store in clear.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { OtpService, OtpError, RedisStore } = require('..');
const { PEPPER, startRedis, newDest, recorder, redisClientFor } = require('./helpers');

const params = (dest, extra = {}) => ({ dest, src: 'Acme', purpose: 'LOGIN', ...extra });

async function rejects(promise, code) {
  await assert.rejects(promise, (e) => e instanceof OtpError && e.code === code);
}

/** `clientFor(t)`: the test's own client to the Redis the stores use (none for the memory store). */
function suite(name, makeStore, clientFor = null) {
  describe(`idempotencyKey (${name})`, () => {
    it('the same call → the same result, one send; other params → IDEMPOTENCY_KEY_REUSED; bad keys → VALIDATION_ERROR', async () => {
      const gw = recorder();
      const store = await makeStore();
      const otp = new OtpService({ pepper: PEPPER, gateway: gw, store, policy: { reuse: false, resendAfterSeconds: 0 } });
      try {
        const dest = newDest();
        const a = await otp.request(params(dest), { idempotencyKey: 'k-1' });
        const b = await otp.request({ purpose: 'LOGIN', dest, src: 'Acme' }, { idempotencyKey: 'k-1' });
        assert.deepEqual(b, a);
        assert.equal(gw.sent.length, 1, 'one send');
        await rejects(otp.request(params(newDest()), { idempotencyKey: 'k-1' }), 'IDEMPOTENCY_KEY_REUSED');
        await rejects(otp.request(params(dest), { idempotencyKey: 'a b' }), 'VALIDATION_ERROR');
        await rejects(otp.request(params(dest), { idempotencyKey: '' }), 'VALIDATION_ERROR');
        // Another workspace (another tenant) with the same key is independent.
        const other = otp.forWorkspace((await otp.createWorkspace({ name: 'B', senders: ['Acme'], policy: { reuse: false } })).workspaceId);
        const c = await other.request(params(dest), { idempotencyKey: 'k-1' });
        assert.notEqual(c.sessionId, a.sessionId);
        assert.equal(gw.sent.length, 2);
        // Resend: the session is part of the call.
        const r1 = await otp.resend(a.sessionId, {}, { idempotencyKey: 'k-2' });
        const r2 = await otp.resend(a.sessionId, {}, { idempotencyKey: 'k-2' });
        assert.deepEqual(r2, r1);
        assert.equal(gw.sent.length, 3);
        // (the other session, of another workspace, is named by the path: another request)
        await rejects(otp.resend(c.sessionId, {}, { idempotencyKey: 'k-2' }), 'IDEMPOTENCY_KEY_REUSED');
      } finally {
        await otp.close();
      }
    });

    it('10 parallel calls with one key send once and resolve alike; a DELIVERY_FAILED is not kept', async (t) => {
      let fail = true;
      const gw = recorder((m) => (m.to === failing && fail ? 'failed' : 'delivered'));
      const failing = newDest();
      const store = await makeStore();
      const otp = new OtpService({ pepper: PEPPER, gateway: gw, store, policy: { reuse: false } });
      try {
        const dest = newDest();
        const all = await Promise.all(Array.from({ length: 10 }, () => otp.request(params(dest), { idempotencyKey: 'par' })));
        assert.equal(new Set(all.map((r) => JSON.stringify(r))).size, 1);
        assert.equal(gw.sent.filter((m) => m.to === dest).length, 1);

        await rejects(otp.request(params(failing), { idempotencyKey: 'f' }), 'DELIVERY_FAILED');
        fail = false;
        const ok = await otp.request(params(failing), { idempotencyKey: 'f' });
        assert.equal(ok.reused, false);
        assert.equal(gw.sent.filter((m) => m.to === failing).length, 2, 'the retry ran');
        if (clientFor) {
          const raw = clientFor(t); // the test's own client, to search every key
          const keys = await raw.keys('*');
          const values = await Promise.all(keys.map((k) => raw.type(k).then((type) => (type === 'string' ? raw.get(k) : ''))));
          const text = keys.concat(values).join('\n');
          assert.ok(keys.some((k) => k.includes(':idem:')), 'records under idem:<ws>:<hash>');
          assert.ok(!/:(par|f)(\b|$)/.test(keys.join('\n')) && !text.includes('"par"'), 'no key in clear');
        } else {
          assert.equal(otp.store.stats().idempotencyRecords, 2);
        }
      } finally {
        await otp.close();
      }
    });
  });
}

suite('memory', async () => undefined);

describe('with Redis', () => {
  let redis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });
  suite('redis', async () => {
    const store = new RedisStore({ url: redis.url, prefix: `t${Math.random().toString(36).slice(2)}:` });
    await store.connect();
    return store;
  }, (t) => redisClientFor(redis, t));
});
