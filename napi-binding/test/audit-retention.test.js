'use strict';
// Audit retention (issue 19, item 3): events an end user can repeat without a send (`reused`,
// `rate_limited`, `verify_rejected`: otpkit_core::audit::is_repeatable) are capped apart from a
// session's lifecycle events, so flooding them never pushes `requested`/`delivered` out of the
// audit trail. Memory store and Redis store (a private redis-server), with a small cap
// (`auditKeep`) and once at the default cap of 10,000.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { OtpService, MemoryStore, RedisStore } = require('..');
const { PEPPER, startRedis, codeOf, newDest, recorder, redisClientFor } = require('./helpers');

const KEEP = 50;
const DEFAULT_KEEP = 10_000;

/** Every event the workspace's audit answers for `query`, following nextCursor (pages of `limit`). */
async function allEvents(otp, query = {}, limit = 500) {
  const out = [];
  let cursor;
  for (;;) {
    const page = await otp.audit({ ...query, limit, ...(cursor ? { cursor } : {}) });
    out.push(...page.events);
    if (!page.nextCursor) return out;
    cursor = page.nextCursor;
  }
}

const names = (events) => events.map((e) => e.event);
const countOf = (events, name) => events.filter((e) => e.event === name).length;

/** One send for a new number, then `n` more requests for it (all reused). */
async function reuseFlood(otp, gw, n) {
  const dest = newDest();
  const first = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
  assert.equal(first.reused, false);
  for (let i = 0; i < n; i++) {
    const r = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
    assert.equal(r.sessionId, first.sessionId);
    assert.equal(r.reused, true);
  }
  await otp.settle();
  assert.equal(gw.sent.length, 1, 'one SMS');
  return first.sessionId;
}

/** The store-independent checks, with `makeStore()` giving a store capped at KEEP per stream. */
function smallCapSuite(makeStore) {
  it(`${KEEP + 10} reused requests keep the session's requested/delivered; reused events are capped at ${KEEP}`, async () => {
    const gw = recorder();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store: await makeStore() });
    const sid = await reuseFlood(otp, gw, KEEP + 10);
    const events = (await otp.audit({ sessionId: sid, limit: 500 })).events;
    assert.equal(countOf(events, 'reused'), KEEP, 'the repeatable stream keeps its cap');
    assert.deepEqual(names(events).slice(-2), ['delivered', 'requested'], 'lifecycle events are still answered, oldest last');
    assert.equal(events.length, KEEP + 2);
    // One ordering across both streams: paging by nextCursor answers the same events, in order.
    const paged = await allEvents(otp, { sessionId: sid }, 7);
    assert.deepEqual(paged, events);
    await otp.close();
  });

  it('rate_limited and verify_rejected floods keep the session lifecycle too', async () => {
    const gw = recorder();
    const store = await makeStore();
    const policy = { reuse: false, sendsPerDestination: { limit: 1, windowSeconds: 3600 } };
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store, policy });
    const dest = newDest();
    const r = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
    for (let i = 0; i < KEEP + 10; i++) {
      await assert.rejects(otp.request({ dest, src: 'Acme', purpose: 'LOGIN' }), (e) => e.code === 'RATE_LIMITED');
    }
    assert.equal((await otp.verify({ sessionId: r.sessionId, code: codeOf(gw.sent[0].text) })).status, 'APPROVED');
    for (let i = 0; i < KEEP + 10; i++) {
      assert.equal((await otp.verify({ sessionId: r.sessionId, code: '000000' })).status, 'ALREADY_USED');
    }
    await otp.settle();
    const events = (await otp.audit({ sessionId: r.sessionId, limit: 500 })).events;
    assert.equal(countOf(events, 'verify_rejected'), KEEP);
    assert.deepEqual(names(events).slice(-3), ['verify_approved', 'delivered', 'requested']);
    const all = await allEvents(otp);
    assert.equal(countOf(all, 'rate_limited') + countOf(all, 'verify_rejected'), KEEP, 'one cap for every repeatable event');
    assert.equal(countOf(all, 'verify_rejected'), KEEP, 'the newest repeatable events are kept');
    await otp.close();
  });

  it(`lifecycle events keep their own cap of ${KEEP}`, async () => {
    const gw = recorder();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store: await makeStore() });
    const ids = [];
    for (let i = 0; i < KEEP; i++) ids.push((await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' })).sessionId);
    await otp.settle();
    const all = await allEvents(otp, {}, 9);
    assert.equal(all.length, KEEP, 'requested + delivered of the newest 25 sessions');
    assert.equal(new Set(all.map((e) => e.sessionId)).size, KEEP / 2);
    assert.equal(all[0].sessionId, ids[ids.length - 1]);
    await otp.close();
  });
}

/** One session, then 10,100 reused requests, at the default cap. */
async function defaultCapFlood(t, store) {
  const gw = recorder();
  const otp = new OtpService({ pepper: PEPPER, gateway: gw, store });
  const n = DEFAULT_KEEP + 100 - 1; // 10,100 requests in all, as in the report
  const t0 = process.hrtime.bigint();
  const sid = await reuseFlood(otp, gw, n);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const t1 = process.hrtime.bigint();
  const events = (await otp.audit({ sessionId: sid, limit: 500 })).events;
  const queryMs = Number(process.hrtime.bigint() - t1) / 1e6;
  const tail = (await allEvents(otp, { sessionId: sid })).slice(-2);
  assert.deepEqual(names(tail), ['delivered', 'requested'], 'the session is still in its audit trail');
  assert.equal(events.length, 500);
  assert.equal(countOf(await allEvents(otp, { sessionId: sid }), 'reused'), DEFAULT_KEEP);
  t.diagnostic(`${store.kind}: 10,100 requests in ${Math.round(ms)} ms; one audit page of 500 in ${queryMs.toFixed(1)} ms`);
  await otp.close();
}

describe('audit retention: memory store', () => {
  smallCapSuite(() => new MemoryStore({ auditKeep: KEEP }));

  it('at the default cap: 10,100 requests for one number (10,099 reused) leave requested/delivered', async (t) => {
    await defaultCapFlood(t, new MemoryStore());
  });

  it('auditKeep must be a positive integer', () => {
    assert.throws(() => new MemoryStore({ auditKeep: 0 }), TypeError);
    assert.throws(() => new MemoryStore({ auditKeep: 1.5 }), TypeError);
  });
});

describe('audit retention: Redis store', () => {
  let redis;
  let n = 0;
  const stores = [];
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const s of stores) await s.close(); // also those a failed test left open
    await redis.stop();
  });
  async function make(opts = {}) {
    const store = new RedisStore({ url: redis.url, prefix: `ar${n++}:`, ...opts });
    await store.connect();
    stores.push(store);
    return store;
  }

  smallCapSuite(() => make({ auditKeep: KEEP }));

  it('the two streams are separate lists, each with the 90-day TTL', async (t) => {
    const store = await make({ auditKeep: KEEP });
    const raw = redisClientFor(redis, t); // the test's own client, to read the lists
    const gw = recorder();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store });
    await reuseFlood(otp, gw, 3);
    const lifecycle = await raw.lrange(`${store.prefix}a:default`, 0, -1);
    const repeatable = await raw.lrange(`${store.prefix}ar:default`, 0, -1);
    assert.deepEqual(lifecycle.map((l) => JSON.parse(l.slice(l.indexOf('|') + 1)).event), ['delivered', 'requested']);
    assert.equal(repeatable.length, 3);
    for (const k of ['a', 'ar']) {
      const ttl = await raw.pttl(`${store.prefix}${k}:default`);
      assert.ok(ttl > 89 * 86_400_000 && ttl <= 90 * 86_400_000, `${k} TTL ${ttl}`);
    }
    await otp.close();
  });

  it('at the default cap: 10,100 requests for one number (10,099 reused) leave requested/delivered', async (t) => {
    await defaultCapFlood(t, await make());
  });

  it('auditKeep must be a positive integer', () => {
    assert.throws(() => new RedisStore({ url: redis.url, auditKeep: -1 }), TypeError);
  });
});
