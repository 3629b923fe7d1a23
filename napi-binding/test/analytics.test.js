'use strict';
// Analytics through the library, on both stores, with the clock moved forward instead of waited
// for: counts per cohort, expired derived from open sessions, the 90-day period, key lifetimes
// in Redis, and no destination number in any analytics key or value.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { OtpService, RedisStore, MemoryStore } = require('..');
const native = require('../lib/native');
const { PEPPER, startRedis, codeOf, newDest, recorder, redisClientFor } = require('./helpers');

const DAY = 86_400_000;

/** Sends 3 codes: one approved, one locked, one left to expire; one reuse; one failed delivery. */
async function scenario(store) {
  const failing = newDest();
  const gw = recorder((m) => (m.to === failing ? 'failed' : 'delivered'));
  const otp = new OtpService({
    pepper: PEPPER,
    gateway: gw,
    store,
    policy: { maxAttempts: 2, ttlSeconds: 120, pricePerSegment: { amount: '0.0075', currency: 'EUR' } },
  });
  const dests = [newDest(), newDest(), newDest()];
  const sessions = [];
  for (const dest of dests) sessions.push(await otp.request({ dest, src: 'Acme', purpose: 'LOGIN', app: 'shop' }));
  assert.equal((await otp.request({ dest: dests[2], src: 'Acme', purpose: 'LOGIN', app: 'shop' })).reused, true);
  const code = (i) => codeOf(gw.sent[i].text);
  const wrong = (c) => (c === '000000' ? '111111' : '000000');
  assert.equal((await otp.verify({ sessionId: sessions[0].sessionId, code: code(0) })).status, 'APPROVED');
  for (let i = 0; i < 2; i++) await otp.verify({ sessionId: sessions[1].sessionId, code: wrong(code(1)) });
  await assert.rejects(otp.request({ dest: failing, src: 'Acme', purpose: 'LOGIN', app: 'shop' }), { code: 'DELIVERY_FAILED' });
  await otp.settle();
  return { otp, dests };
}

function check(report, expired) {
  assert.deepEqual(report.totals, {
    sent: 3, reused: 1, delivery_failed: 1, verified: 1, failed: 1, expired,
    verification_rate: 0.3333, sms_segments: 3, resent: 0, estimated_cost: { amount: '0.0225', currency: 'EUR' },
    fraud_blocked: 0, fraud_saved: { amount: '0.0000', currency: 'EUR' },
    delivered: 0, undelivered: 0, delivery_rate: 0, // no delivery receipt here (SPEC §8)
  });
  assert.deepEqual(report.by_country, { 1: report.totals }, 'every destination is +1…: calling code 1');
}

describe('analytics', () => {
  let redis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  for (const kind of ['memory', 'redis']) {
    it(`${kind}: counts by cohort; the unverified session becomes expired at its expiry, not before`, async (t) => {
      let store;
      if (kind === 'redis') {
        store = new RedisStore({ url: redis.url, prefix: `an${Date.now()}:` });
        await store.connect();
      } else {
        store = new MemoryStore();
      }
      // Closed whatever happens: an open Redis client would keep the test process alive.
      const run = await scenario(store).catch(async (e) => {
        await store.close();
        throw e;
      });
      try {
        await checks(kind, store, run, kind === 'redis' ? redisClientFor(redis, t) : null);
      } finally {
        await run.otp.close();
      }
    });
  }

  /** `raw`: the test's own client to the store's Redis (null for the memory store). */
  async function checks(kind, store, { otp, dests }, raw) {
    check(await otp.analytics({ app: 'shop', days: 1 }), 0);
    const ws = otp.libraryWorkspace;
    const at = (ms, q = 'days=1') => store.analyticsReply(ws, q, Date.now() + ms);
    check(JSON.parse((await at(110_000)).body), 0);
    check(JSON.parse((await at(125_000)).body), 1);
    // The period moves on: 30 days later the sessions are outside a 7-day query, inside a 31-day one.
    assert.equal(JSON.parse((await at(30 * DAY, 'days=7')).body).totals.sent, 0);
    assert.equal(JSON.parse((await at(30 * DAY, 'days=31')).body).totals.sent, 3);
    assert.equal(JSON.parse((await at(0, 'app=blog')).body).totals.sent, 0);
    await assert.rejects(otp.analytics({ days: 0 }), { code: 'VALIDATION_ERROR', field: 'days' });

    if (kind === 'redis') {
      const keys = await raw.keys(`${store.prefix}a[no]:*`);
      assert.equal(keys.length, 2, `one day hash and the open set: ${keys}`);
      for (const k of keys) {
        const ttl = await raw.pttl(k);
        assert.ok(ttl > 0 && ttl <= 92 * DAY, `${k} has a TTL (${ttl} ms)`);
        const content = JSON.stringify(k.includes(':an:') ? await raw.hgetall(k) : await raw.zrange(k, 0, -1));
        for (const d of dests) assert.ok(!content.includes(d.slice(1)), 'no destination in analytics');
      }
    } else {
      assert.deepEqual([store.stats().analyticsOpen, store.stats().analyticsBuckets], [1, 1]);
      store.sweep(Date.now() + 125_000); // expired open sessions leave; the counters stay
      assert.deepEqual([store.stats().analyticsOpen, store.stats().analyticsBuckets], [0, 1]);
      check(JSON.parse((await at(125_000)).body), 1);
      store.sweep(Date.now() + 91 * DAY); // counters older than 90 days go
      assert.equal(store.stats().analyticsBuckets, 0);
    }
  }

  it('analyticsPeriod names the days a store must read; bad queries throw the core error', () => {
    const now = Date.UTC(2026, 10, 22, 12);
    const day = Math.floor(now / DAY);
    assert.deepEqual({ ...native.analyticsPeriod('days=3', now) }, { firstDay: day - 2, lastDay: day });
    assert.deepEqual({ ...native.analyticsPeriod('', now) }, { firstDay: day - 29, lastDay: day });
    assert.throws(() => native.analyticsPeriod('days=91', now), /OTPKIT:.*"field":"days"/);
  });
});
