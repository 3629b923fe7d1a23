'use strict';
// RedisStore against a real redis-server (private, on a free port): the library round trip,
// concurrency inside one process, key expiry, and a clear 503 while Redis is down.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const { OtpService, RedisStore } = require('..');
const { PEPPER, startRedis, codeOf, newDest, sleep, recorder, defineStepScripts, redisClientFor } = require('./helpers');


describe('RedisStore', () => {
  let redis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  it('request, verify and status round-trip through Redis; keys carry a TTL', async (t) => {
    const gw = recorder();
    const store = new RedisStore({ url: redis.url });
    await store.connect();
    const raw = redisClientFor(redis, t); // the test's own client, to read the keys
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store });
    const r = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
    const code = codeOf(gw.sent[0].text);
    assert.equal((await otp.verify({ sessionId: r.sessionId, code: code === '000000' ? '111111' : '000000' })).attemptsLeft, 4);
    assert.equal((await otp.verify({ sessionId: r.sessionId, code })).status, 'APPROVED');
    assert.equal((await otp.status(r.sessionId)).state, 'APPROVED');
    const ttl = await raw.pttl(`otpkit:s:default:${r.sessionId}`);
    assert.ok(ttl > 300_000 && ttl <= 86_700_000 + 3_600_000, `session TTL ${ttl}`); // expiry + 24 h retention + 1 h for the sweeper
    const stored = await raw.get(`otpkit:s:default:${r.sessionId}`);
    assert.ok(!stored.includes(code), 'the code is never stored in clear');
    await otp.settle();
    const events = (await otp.audit({ sessionId: r.sessionId })).events.map((e) => e.event);
    assert.deepEqual(events, ['verify_approved', 'verify_invalid', 'delivered', 'requested']);
    await otp.close();
  });

  it('50 parallel wrong verifies consume exactly maxAttempts; 20 parallel right ones approve once', async () => {
    const gw = recorder();
    const store = new RedisStore({ url: redis.url });
    await store.connect();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store });
    const a = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
    const wrong = codeOf(gw.sent[0].text) === '000000' ? '111111' : '000000';
    const answers = await Promise.all(Array.from({ length: 50 }, () => otp.verify({ sessionId: a.sessionId, code: wrong })));
    const count = (s) => answers.filter((x) => x.status === s).length;
    assert.equal(count('INVALID'), 5);
    assert.equal(count('MAX_ATTEMPTS_REACHED'), 45);
    assert.equal((await otp.status(a.sessionId)).attemptsUsed, 5);

    const b = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
    const code = codeOf(gw.sent[1].text);
    const rights = await Promise.all(Array.from({ length: 20 }, () => otp.verify({ sessionId: b.sessionId, code })));
    assert.equal(rights.filter((x) => x.status === 'APPROVED').length, 1);
    assert.equal(rights.filter((x) => x.status === 'ALREADY_USED').length, 19);
    await otp.close();
  });

  it("a send's end decides on the guard admit wrote, but writes only if the guard still holds exactly that", { timeout: 60_000 }, async (t) => {
    // finish() skips re-reading the destination guard: its first try decides on the value admit
    // stored, and the script compares that whole value, not only its version. Here, while the first
    // send is at the gateway, a second send to the same number (another purpose) changes the guard,
    // and the guard is then put back at the version the first send's admit wrote — same version,
    // other content. A version-only compare would write the first send's decision over the
    // second's entry; the value compare re-reads and keeps both.
    const dest = newDest();
    let release;
    const held = new Promise((r) => (release = r));
    let calls = 0;
    const gw = recorder(() => (calls++ === 0 ? held.then(() => 'delivered') : 'delivered'));
    const store = new RedisStore({ url: redis.url });
    await store.connect();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store });
    const guardKey = `otpkit:g:default:${dest}`;
    const raw = redisClientFor(redis, t); // the test's own client, to read and put back the guard
    const first = otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
    let failed = null;
    first.catch((e) => (failed = e)); // awaited below; seen here so the wait cannot outlive it
    for (const until = Date.now() + 10_000; gw.sent.length < 1; await sleep(5)) {
      if (failed) throw failed;
      assert.ok(Date.now() < until, 'the first send reached the gateway within 10 s');
    }
    const admitted = await raw.get(guardKey); // what the first send's admit wrote
    const version = Number(admitted.split('|')[0]);
    const second = await otp.request({ dest, src: 'Acme', purpose: 'PASSWORD_RESET' });
    const changed = await raw.get(guardKey);
    assert.ok(Number(changed.split('|')[0]) > version, 'the second send wrote the guard');
    assert.ok(changed.includes(second.sessionId));
    await raw.set(guardKey, `${version}|${changed.slice(changed.indexOf('|') + 1)}`, 'KEEPTTL');
    release();
    const a = await first;
    const after = await raw.get(guardKey);
    assert.ok(after.includes(second.sessionId), "the second send's entry survives the first send's end");
    assert.ok(after.includes(a.sessionId), "the first send's entry is there");
    assert.ok(Number(after.split('|')[0]) > version, 'written after a fresh read');
    // Both sessions are live and each is reused for its own purpose.
    assert.equal((await otp.status(a.sessionId)).state, 'PENDING');
    assert.equal((await otp.status(second.sessionId)).state, 'PENDING');
    await otp.close();
  });

  it('the sweeper purges sessions past retention once, across stores, with a purged audit event', async () => {
    const store = new RedisStore({ url: redis.url });
    const other = new RedisStore({ url: redis.url });
    await Promise.all([store.connect(), other.connect()]);
    const otp = new OtpService({ pepper: PEPPER, gateway: recorder(), store, policy: { retentionSeconds: 0, ttlSeconds: 60 } });
    const r = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
    assert.equal(await store.sweep(Date.now() + 30_000), 0, 'not before expiry + retention');
    const later = Date.now() + 61_000;
    const counts = await Promise.all([store.sweep(later), other.sweep(later)]);
    assert.equal(counts[0] + counts[1], 1, 'purged by exactly one process');
    assert.equal(await otp.status(r.sessionId), null);
    const events = (await otp.audit({ sessionId: r.sessionId })).events.filter((e) => e.event === 'purged');
    assert.equal(events.length, 1);
    await otp.close();
    await other.close();
  });

  it('answers 503 STORE_UNAVAILABLE while Redis is down and recovers when it is back', async () => {
    const own = await startRedis();
    const gw = recorder();
    const store = new RedisStore({ url: own.url });
    await store.connect();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store });
    const before = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
    await own.stop();
    await sleep(100);
    await assert.rejects(otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' }), (e) => e.code === 'STORE_UNAVAILABLE' && e.httpStatus === 503);
    await assert.rejects(otp.verify({ sessionId: before.sessionId, code: '123456' }), (e) => e.code === 'STORE_UNAVAILABLE');
    // Back on the same port (empty: this server keeps nothing on disk).
    const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(own.port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    try {
      let ok = null;
      for (let i = 0; i < 50 && !ok; i++) {
        await sleep(100);
        ok = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' }).catch(() => null);
      }
      assert.ok(ok && ok.sessionId, 'requests succeed again once Redis is back');
    } finally {
      await otp.close();
      child.kill('SIGTERM');
    }
  });
  it('the ADMIT script counts the flood shield exactly as otpkit-core does (2,000 random steps)', async (t) => {
    // The script mirrors FloodShield::admit so that it can count atomically; this keeps the two
    // the same rule. Each step admits at a fresh guard key (version 0), so only the shield decides.
    const native = require('../lib/native');
    const store = new RedisStore({ url: redis.url, prefix: `eq${process.pid}:` });
    await store.connect();
    let rng = 0x2545f491;
    const rand = (n) => {
      rng = (rng * 1103515245 + 12345) % 2147483648;
      return rng % n;
    };
    let core = null; // the core's shield JSON
    let now = 1_800_000_000_000;
    t.after(() => store.close());
    const client = defineStepScripts(redisClientFor(redis, t)); // the test's own client runs the script
    for (let i = 0; i < 2000; i++) {
      // mostly small steps forward; sometimes past the window, sometimes back in time
      const r = rand(100);
      now += r < 80 ? rand(3000) : r < 95 ? 60_000 + rand(5000) : -rand(90_000);
      const limit = 1 + rand(12);
      const want = native.floodJson(core, limit, now);
      const got = await client.otpkitAdmit(`eq${process.pid}:g:${i}`, `eq${process.pid}:fw`, `eq${process.pid}:sp`, 0, '{}', 60000, limit, now, 60_000, 120_000, '', '', '', '');
      if (want.refused) {
        assert.ok(Array.isArray(got), `step ${i}: the core refuses, the script admitted`);
        const full = JSON.stringify({ windowStart: Number(got[1]), count: limit });
        assert.equal(native.floodJson(full, limit, now).refused, want.refused, `step ${i}: same Retry-After`);
      } else {
        assert.equal(got, 1, `step ${i}: the core admits, the script answered ${JSON.stringify(got)}`);
        core = want.state;
        const shield = JSON.parse(core);
        const [start, count] = await client.hmget(`eq${process.pid}:fw`, 'start', 'count');
        assert.deepEqual([Number(start), Number(count)], [shield.windowStart, shield.count], `step ${i}`);
      }
    }
  });
  it('the ADMIT and REFUND_SPEND scripts count the day\'s spend exactly as otpkit-core does (3,000 random steps)', async (t) => {
    // The scripts mirror SpendCounter::charge and ::refund so that the cap is charged atomically
    // with the guard and the flood shield; this keeps them the same rule, with amounts up to
    // 10^15 micro-units (exact below 2^53 in Lua's doubles). Each charge admits at a fresh guard
    // key (version 0) and no shield, so only the spend decides.
    const native = require('../lib/native');
    const p = `sp${process.pid}:`;
    const store = new RedisStore({ url: redis.url, prefix: p });
    await store.connect();
    t.after(() => store.close());
    const client = defineStepScripts(redisClientFor(redis, t)); // the test's own client runs the scripts
    let rng = 0x1b873593;
    const rand = (n) => {
      // 32-bit LCG in exact integer arithmetic (Math.imul), its high bits used
      rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
      return Math.floor((rng / 2 ** 32) * n);
    };
    const DAY = 86_400_000;
    let core = null; // the core's counter JSON
    let now = 1_800_000_000_000;
    const big = () => rand(1_000_000) * 1_000_000_000 + rand(1_000_000_000); // up to ~10^15
    const seen = { charged: 0, refused: 0, refunded: 0 };
    for (let i = 0; i < 3000; i++) {
      const r = rand(100);
      now += r < 85 ? rand(3_600_000) : r < 95 ? DAY : -rand(2 * DAY); // sometimes a new day, sometimes a clock behind
      const day = Math.floor(now / DAY);
      if (rand(4) === 0) {
        // a refund, sometimes of another day
        const refundDay = rand(3) === 0 ? day - 1 + rand(3) : day;
        const micros = rand(2) ? rand(3_000_000) : big();
        const before = core;
        core = native.spendRefundJson(core, refundDay, micros);
        if (core !== before && JSON.parse(core).micros !== JSON.parse(before ?? '{"micros":0}').micros) seen.refunded++;
        await client.otpkitRefundSpend(`${p}sp`, String(refundDay), String(micros));
      } else {
        const limitMicros = rand(3) ? 1 + rand(5_000_000) : big();
        const costMicros = 1 + (rand(3) ? rand(2_000_000) : Math.min(big(), limitMicros));
        const charge = JSON.stringify({ limitMicros, costMicros, day });
        const want = native.spendJson(core, charge, now);
        const got = await client.otpkitAdmit(`${p}g:${i}`, `${p}fw`, `${p}sp`, 0, '{}', 60000, '', now, 60_000, 120_000, String(limitMicros), String(costMicros), String(day), 2 * DAY);
        if (want.refused) {
          assert.ok(Array.isArray(got) && got[0] === -2, `step ${i}: the core refuses, the script answered ${JSON.stringify(got)}`);
          const full = JSON.stringify({ day: Number(got[1]), micros: limitMicros });
          assert.equal(native.spendJson(full, charge, now).refused, want.refused, `step ${i}: same Retry-After`);
          seen.refused++;
          continue;
        }
        assert.equal(got, 1, `step ${i}: the core admits, the script answered ${JSON.stringify(got)}`);
        core = want.state;
        seen.charged++;
      }
      const counter = JSON.parse(core);
      const [d, micros] = await client.hmget(`${p}sp`, 'day', 'micros');
      if (d == null) assert.equal(counter.micros, 0, `step ${i}: nothing charged yet`);
      else assert.deepEqual([Number(d), Number(micros)], [counter.day, counter.micros], `step ${i}`);
    }
    // every branch was taken many times (a test that cannot fail is a defect)
    assert.ok(seen.charged > 300 && seen.refused > 300 && seen.refunded > 100, JSON.stringify(seen));
  });
});
