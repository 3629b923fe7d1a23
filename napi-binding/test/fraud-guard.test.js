'use strict';
// Fraud Guard (SPEC §9, SMS pumping defence) on the Node host: the memory store and Redis count
// sends and approved verifications per (workspace, number prefix) in the same atomic step as the
// spend cap and the flood shield, refuse a pumped prefix 403 FRAUD_SUSPECTED, and the admin API
// reads and unblocks prefixes — through the library and over HTTP (`otpkit serve`'s listener),
// with the refusals in /metrics. Then the Redis store's Lua mirror of the core's rules
// (PrefixCount in core/src/fraud.rs, charge_workspace in core/src/spend.rs) is held to the core
// on random sequences, so the two cannot drift apart.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { randomBytes } = require('node:crypto');
const { OtpService, RedisStore, MemoryStore, Metrics, OtpError, listener } = require('..');
const native = require('../lib/native');
const { PEPPER, startRedis, codeOf, recorder, defineStepScripts, redisClientFor } = require('./helpers');

let numbers = Math.floor(Math.random() * 1e5);
/** A fresh number in `prefix` (`+233202` → `+233202xxxxxx`). */
const numberIn = (prefix) => `${prefix}${String(numbers++ % 1e6).padStart(6, '0')}`;

/** The value of one sample `name{labels} value` of a Prometheus exposition (0 when absent). */
function sample(text, name, labels) {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const have = line.slice(name.length + 1, line.indexOf('}')).split(',');
    if (want.every((w) => have.includes(w))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

async function exercise(store) {
  const gw = recorder();
  const admin = randomBytes(16).toString('hex');
  const otp = new OtpService({ pepper: PEPPER, gateway: gw, store, adminToken: admin, metrics: new Metrics() });
  const server = http.createServer(listener(otp)); // `otpkit serve`'s listener, without its log lines
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  try {
    const adminH = { authorization: `Bearer ${admin}` };
    const w = await otp.createWorkspace({
      name: 'pumped',
      senders: ['Acme'],
      policy: {
        pricePerSegment: { amount: '0.05', currency: 'USD' },
        resendAfterSeconds: 0,
        fraudGuard: { enabled: true, minSends: 3, minConversion: 0.5, safeList: ['+233209'] },
      },
    });
    const ops = otp.forWorkspace(w.workspaceId);
    const keyH = { 'x-api-key': w.apiKey, 'content-type': 'application/json' };
    const request = (dest) =>
      fetch(`${base}/v1/messaging/otp/request`, { method: 'POST', headers: keyH, body: JSON.stringify({ dest, src: 'Acme', purpose: 'LOGIN' }) });

    // A converting prefix: sent and verified.
    const good = await ops.request({ dest: numberIn('+233244'), src: 'Acme', purpose: 'LOGIN' });
    assert.equal((await ops.verify({ sessionId: good.sessionId, code: codeOf(gw.sent.at(-1).text) })).status, 'APPROVED');

    // The pumped prefix: 3 sends pass (minSends), the 4th begins the block, later ones are refused.
    const first = [];
    for (let i = 0; i < 3; i++) {
      const r = await request(numberIn('+233202'));
      assert.equal(r.status, 200);
      first.push((await r.json()).data.sessionId);
    }
    const sentBefore = gw.sent.length;
    for (let i = 0; i < 2; i++) {
      const r = await request(numberIn('+233202'));
      assert.equal(r.status, 403);
      const body = await r.json();
      assert.equal(body.error.code, 'FRAUD_SUSPECTED');
      assert.equal(r.headers.get('retry-after'), null, 'when a block ends is not told');
    }
    // A resend to the blocked prefix is refused too; nothing was sent.
    await assert.rejects(ops.resend(first[0]), (e) => e instanceof OtpError && e.code === 'FRAUD_SUSPECTED' && e.httpStatus === 403);
    assert.equal(gw.sent.length, sentBefore, 'no message to a blocked prefix');
    // Safe-listed numbers are never counted nor refused.
    for (let i = 0; i < 5; i++) await ops.request({ dest: numberIn('+233209'), src: 'Acme', purpose: 'LOGIN' });

    await otp.settle();
    const report = await otp.getFraud(w.workspaceId);
    assert.equal(report.workspaceId, w.workspaceId);
    assert.deepEqual(report.fraudGuard, {
      enabled: true, prefixDigits: 3, windowSeconds: 3600, minSends: 3, minConversion: 0.5, blockSeconds: 3600, safeList: ['+233209'],
    });
    assert.deepEqual(
      report.prefixes.map(({ blockedUntil, ...p }) => p),
      [
        { prefix: '+233202', sends: 3, verified: 0, conversion: 0, blocked: true, refused: 3 },
        { prefix: '+233244', sends: 1, verified: 1, conversion: 1, blocked: false, refused: 0 },
      ],
    );
    const until = Date.parse(report.prefixes[0].blockedUntil);
    assert.ok(until > Date.now() + 3590_000 && until <= Date.now() + 3600_000, report.prefixes[0].blockedUntil);
    // The same over HTTP.
    const got = await fetch(`${base}/v1/admin/workspaces/${w.workspaceId}/fraud`, { headers: adminH });
    assert.equal(got.status, 200);
    assert.deepEqual((await got.json()).data, report);
    assert.equal((await fetch(`${base}/v1/admin/workspaces/ws_nothere/fraud`, { headers: adminH })).status, 404);
    assert.equal((await fetch(`${base}/v1/admin/workspaces/${w.workspaceId}/fraud`)).status, 401);
    await assert.rejects(otp.getFraud('ws_nothere'), (e) => e.code === 'NOT_FOUND');

    // Audit and analytics: one prefix_blocked, three refusals counted with what they would have cost.
    const events = (await ops.audit()).events;
    const blocked = events.filter((e) => e.event === 'prefix_blocked');
    assert.equal(blocked.length, 1);
    assert.equal(blocked[0].dest, '+233202');
    assert.equal(events.filter((e) => e.status === 'FRAUD_SUSPECTED' && e.event === 'rate_limited').length, 3);
    const totals = (await ops.analytics({ days: 1 })).totals;
    assert.equal(totals.fraud_blocked, 3);
    assert.equal(Number(totals.fraud_saved.amount), 0.15);
    assert.equal(totals.fraud_saved.currency, 'USD');
    assert.equal(totals.sent, 3 + 1 + 5);

    // Metrics: the refusals over HTTP, by reason.
    const metrics = await (await fetch(`${base}/metrics`, { headers: adminH })).text();
    assert.equal(sample(metrics, 'otpkit_blocked_sends_total', { reason: 'FRAUD_SUSPECTED' }), 2);

    // Unblock (over HTTP, the prefix as the path carries it): 204, then 404; the prefix sends again.
    const del = (p) => fetch(`${base}/v1/admin/workspaces/${w.workspaceId}/fraud/blocks/${p}`, { method: 'DELETE', headers: adminH });
    assert.equal((await del('%2B233202')).status, 204);
    assert.equal((await del('%2B233202')).status, 404);
    assert.equal((await del('abc')).status, 404);
    await assert.rejects(otp.unblockPrefix(w.workspaceId, '+233202'), (e) => e.code === 'NOT_FOUND');
    assert.equal((await request(numberIn('+233202'))).status, 200);
    await otp.settle();
    const after = await otp.getFraud(w.workspaceId);
    assert.deepEqual(after.prefixes.find((p) => p.prefix === '+233202'), {
      prefix: '+233202', sends: 1, verified: 0, conversion: 0, blocked: false, refused: 0,
    });
    assert.equal((await ops.audit()).events.filter((e) => e.event === 'prefix_unblocked').length, 1);

    // The library's unblock, on a block made again.
    for (let i = 0; i < 3; i++) await ops.request({ dest: numberIn('+233202'), src: 'Acme', purpose: 'LOGIN' }).catch(() => {});
    assert.equal((await otp.getFraud(w.workspaceId)).prefixes[0].blocked, true);
    assert.equal(await otp.unblockPrefix(w.workspaceId, '233202'), undefined);
    assert.equal((await otp.getFraud(w.workspaceId)).prefixes.some((p) => p.prefix === '+233202'), false, 'cleared');

    // A send the spend cap refuses is not counted by Fraud Guard (charged in one step, all or none).
    const capped = await otp.createWorkspace({
      name: 'capped',
      senders: ['Acme'],
      policy: {
        pricePerSegment: { amount: '0.05', currency: 'USD' },
        dailySpendLimit: { amount: '0.10', currency: 'USD' },
        fraudGuard: { enabled: true, minSends: 10 },
      },
    });
    const cops = otp.forWorkspace(capped.workspaceId);
    for (let i = 0; i < 2; i++) await cops.request({ dest: numberIn('+447700'), src: 'Acme', purpose: 'LOGIN' });
    await assert.rejects(cops.request({ dest: numberIn('+447700'), src: 'Acme', purpose: 'LOGIN' }), (e) => e.code === 'SPEND_LIMIT_REACHED');
    assert.deepEqual(
      (await otp.getFraud(capped.workspaceId)).prefixes.map((p) => [p.prefix, p.sends]),
      [['+44770', 2]],
    );
    // Off (the default): nothing counted.
    const off = await otp.createWorkspace({ name: 'off', senders: ['Acme'] });
    await otp.forWorkspace(off.workspaceId).request({ dest: numberIn('+233202'), src: 'Acme', purpose: 'LOGIN' });
    assert.deepEqual((await otp.getFraud(off.workspaceId)).prefixes, []);
    return w.workspaceId;
  } finally {
    await new Promise((r) => server.close(r));
    await otp.close();
  }
}

describe('Fraud Guard on the memory store', () => {
  it('blocks a pumped prefix, reads and unblocks it (library, HTTP, metrics)', async () => {
    await exercise(new MemoryStore());
  });

  it('drops counts once idle (the sweep)', async () => {
    const store = new MemoryStore();
    const otp = new OtpService({ pepper: PEPPER, gateway: recorder(), store });
    const w = await otp.createWorkspace({ name: 'idle', senders: ['Acme'], policy: { fraudGuard: { enabled: true, windowSeconds: 60 } } });
    await otp.forWorkspace(w.workspaceId).request({ dest: numberIn('+233202'), src: 'Acme', purpose: 'LOGIN' });
    assert.equal(store.stats().fraudPrefixes, 1);
    store.sweep(Date.now() + 60_000);
    assert.equal(store.stats().fraudPrefixes, 1, 'kept for two windows');
    store.sweep(Date.now() + 2 * 60_000 + 1000);
    assert.equal(store.stats().fraudPrefixes, 0);
    await otp.close();
  });
});

describe('Fraud Guard on Redis', () => {
  let redis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
  });

  it('blocks a pumped prefix, reads and unblocks it (library, HTTP, metrics); counts expire once idle', async (t) => {
    const store = new RedisStore({ url: redis.url, prefix: `fg${process.pid}:` });
    await store.connect();
    const wsId = await exercise(store);
    const client = new RedisStore({ url: redis.url, prefix: `fg${process.pid}:` });
    await client.connect();
    try {
      const r = defineStepScripts(redisClientFor(redis, t)); // the test's own client, to read the counts
      const [key] = await r.keys(`fg${process.pid}:fr:${wsId}:*`);
      assert.ok(key, 'a prefix count');
      const ttl = await r.pttl(key);
      assert.ok(ttl > 3600_000 && ttl <= 2 * 3600_000, `expires two windows after its bucket began (${ttl})`);
      const indexKey = `fg${process.pid}:fx:${wsId}`;
      const index = await r.zrange(indexKey, 0, -1);
      assert.ok(index.length >= 1 && index.every((p) => /^\+\d+$/.test(p)), JSON.stringify(index));
      // Absolute expiry times: two PTTL reads a millisecond apart would compare the clock.
      assert.ok(
        Number(await r.call('PEXPIRETIME', indexKey)) >= Number(await r.call('PEXPIRETIME', key)),
        'the index outlives its counts',
      );
      // A count gone leaves the index at the next read.
      const gone = key.slice(key.lastIndexOf(':') + 1);
      await r.del(key);
      const io = { io: 'readFraud', workspaceId: wsId };
      const probe = new OtpService({ pepper: PEPPER, gateway: recorder(), store: client });
      const read = JSON.parse(await client.perform(probe.engine, probe.libraryWorkspace, io, JSON.stringify(io), Date.now(), {}));
      assert.equal(read.result, 'prefixes');
      assert.ok(!read.prefixes.some(([p]) => p === gone));
      assert.ok(!(await r.zrange(indexKey, 0, -1)).includes(gone));
    } finally {
      await client.close();
    }
  });

  it('the ADMIT, FRAUD_VERIFIED and UNBLOCK_PREFIX scripts count Fraud Guard exactly as otpkit-core does (4,000 random steps)', async (t) => {
    // Each admit runs at a fresh guard key (version 0), with Fraud Guard and, at random, the spend
    // cap and the flood shield: the core's charge_workspace (through the native module) and the
    // script must give the same admission and leave the same count, with the same expiry.
    const p = `fq${process.pid}:`;
    const store = new RedisStore({ url: redis.url, prefix: p });
    await store.connect();
    t.after(() => store.close());
    const r = defineStepScripts(redisClientFor(redis, t)); // the test's own client runs the scripts
    let rng = 0x3c6ef372;
    const rand = (n) => {
      rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
      return Math.floor((rng / 2 ** 32) * n);
    };
    const prefix = '+233202';
    const key = `${p}fr:w:${prefix}`;
    const index = `${p}fx:w`;
    const FIELDS = ['start', 'sends', 'verified', 'prevSends', 'prevVerified', 'blockedUntil', 'refused'];
    const DEFAULT = JSON.stringify(Object.fromEntries(FIELDS.map((f) => [f, 0])));
    let fraud = null; // the core's PrefixCount JSON
    let spend = null;
    let shield = null;
    let expiry = null; // the core's keep-until of the stored count
    // Far ahead of the real clock, so that no key expires during the test.
    let now = 4_000_000_000_000;
    let window = 3_600_000;
    const seen = { counted: 0, blockedRefused: 0, newBlock: 0, spendRefusedCounted: 0, floodRefused: 0, verified: 0, unblocked: 0, notBlocked: 0, rolled: 0 };
    for (let i = 0; i < 4000; i++) {
      // windows that divide evenly and ones that do not (the bucket before's weight is rounded down)
      if (i % 400 === 0) window = [60_000, 3_600_000, 86_400_000, 7_000, 9_973, 60_001][rand(6)];
      const x = rand(100);
      now += x < 75 ? rand(Math.ceil(window / 40)) : x < 88 ? rand(window) : x < 96 ? window + rand(2 * window) : -rand(Math.ceil(window / 2));
      const kind = rand(100);
      const before = JSON.parse(fraud ?? DEFAULT);
      if (kind < 65) {
        // Half the thresholds near what the window holds, so that the rounding of the estimate decides.
        const near = Math.max(1, before.sends + Math.round((before.prevSends * rand(1001)) / 1000) + rand(3) - 1);
        const charge = {
          prefix,
          windowMs: window,
          minSends: rand(2) ? near : 1 + rand(40),
          minConversion: [0, 0, 100, 500, 1000, 1 + rand(999)][rand(6)],
          blockMs: 1 + rand(2 * window),
        };
        const spendCharge = rand(3) === 0 ? { limitMicros: 1 + rand(2_000_000), costMicros: 1 + rand(1_000_000), day: Math.floor(now / 86_400_000) } : null;
        const floodLimit = rand(3) === 0 ? 1 + rand(6) : null;
        const want = native.chargeWorkspaceJson(shield, floodLimit, spend, spendCharge && JSON.stringify(spendCharge), fraud, JSON.stringify(charge), now);
        const spendArgs = spendCharge
          ? [String(spendCharge.limitMicros), String(spendCharge.costMicros), String(spendCharge.day), String(2 * 86_400_000)]
          : ['', '', '', ''];
        const got = await r.otpkitAdmit(`${p}g:${i}`, `${p}fw`, `${p}sp`, 0, '{}', 60000, floodLimit ?? '', now, 60_000, 120_000, ...spendArgs,
          key, index, prefix, String(charge.windowMs), String(charge.minSends), String(charge.minConversion), String(charge.blockMs));
        const admission = JSON.parse(want.admission);
        const step = `step ${i} (${JSON.stringify({ now, charge, before })})`;
        switch (admission.kind) {
          case 'send':
            assert.equal(got, 1, `${step}: the core sends, the script answered ${JSON.stringify(got)}`);
            seen.counted++;
            break;
          case 'fraudRefused':
            assert.deepEqual(got, [-3, admission.newBlock ? '1' : '0'], step);
            seen[admission.newBlock ? 'newBlock' : 'blockedRefused']++;
            break;
          case 'spendRefused':
            assert.ok(Array.isArray(got) && got[0] === -2, `${step}: the core's cap refuses, the script answered ${JSON.stringify(got)}`);
            break;
          case 'floodRefused':
            assert.ok(Array.isArray(got) && got[0] === -1, `${step}: the core's shield refuses, the script answered ${JSON.stringify(got)}`);
            seen.floodRefused++;
            break;
          default:
            assert.fail(`${step}: ${want.admission}`);
        }
        if (admission.kind === 'spendRefused' || admission.kind === 'floodRefused') {
          // Fraud Guard would have counted it: the refusal must leave its count as it was.
          const alone = native.chargeWorkspaceJson(null, null, null, null, fraud, JSON.stringify(charge), now);
          if (JSON.parse(alone.admission).kind === 'send') seen.spendRefusedCounted++;
          assert.equal(want.fraud, fraud ?? DEFAULT, `${step}: the core leaves the count`);
        }
        if (admission.kind === 'send' || admission.kind === 'fraudRefused') {
          if (JSON.parse(want.fraud).start !== before.start) seen.rolled++;
          fraud = want.fraud;
          expiry = want.fraudKeepUntil;
        }
        shield = want.shield;
        spend = want.spend;
      } else if (kind < 93) {
        const want = native.fraudVerifiedJson(fraud, window, now);
        assert.equal(await r.otpkitFraudVerified(key, index, prefix, String(window), String(now)), 1);
        fraud = want.state;
        expiry = want.keepUntil;
        seen.verified++;
      } else {
        const was = native.fraudUnblockJson(fraud, now);
        assert.equal(await r.otpkitUnblockPrefix(key, index, prefix, String(now)), was ? 1 : 0, `step ${i}: unblock`);
        seen[was ? 'unblocked' : 'notBlocked']++;
        if (was) {
          // Cleared; a prefix that was not blocked keeps its counts (and its expiry).
          fraud = null;
          expiry = null;
        }
      }
      const stored = await r.hgetall(key);
      if (fraud == null) {
        assert.deepEqual(stored, {}, `step ${i}: cleared`);
        assert.deepEqual(await r.zrange(index, 0, -1), [], `step ${i}: not indexed`);
        continue;
      }
      const count = JSON.parse(fraud);
      assert.deepEqual(Object.fromEntries(FIELDS.map((f) => [f, Number(stored[f])])), count, `step ${i}: the count`);
      assert.equal(await r.call('PEXPIRETIME', key), expiry, `step ${i}: kept until it is idle`);
      assert.deepEqual(await r.zrange(index, 0, -1, 'WITHSCORES'), [prefix, String(expiry)], `step ${i}: indexed until then`);
      assert.equal(await r.call('PEXPIRETIME', index), expiry, `step ${i}: the index expires with its last count`);
    }
    // every branch was taken (a test that cannot fail is a defect)
    t.diagnostic(JSON.stringify(seen));
    for (const [k, n] of Object.entries(seen)) assert.ok(n >= 20, `${k}: ${JSON.stringify(seen)}`);
  });

  it('the scripts decide as otpkit-core does on arbitrary counts at the edges of the window and the block (3,000 crafted counts)', async (t) => {
    // Large counts make every rounding visible (the bucket before's weight, in thousandths, times
    // thousands of sends), and the clock is put on the edges: a bucket's end, two windows on, a
    // block's end, behind the bucket's start.
    const p = `fe${process.pid}:`;
    const store = new RedisStore({ url: redis.url, prefix: p });
    await store.connect();
    t.after(() => store.close());
    const r = defineStepScripts(redisClientFor(redis, t)); // the test's own client runs the scripts
    let rng = 0x7f4a7c15;
    const rand = (n) => {
      rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
      return Math.floor((rng / 2 ** 32) * n);
    };
    const prefix = '+1415';
    const key = `${p}fr:w:${prefix}`;
    const index = `${p}fx:w`;
    const FIELDS = ['start', 'sends', 'verified', 'prevSends', 'prevVerified', 'blockedUntil', 'refused'];
    const outcomes = {};
    for (let i = 0; i < 3000; i++) {
      const w = [60_000, 7_000, 9_973, 3_600_000, 86_400_000][rand(5)];
      // (start 0 is a count never rolled; the clock stays far ahead of the real one, so that no
      // key expires while it is checked)
      const start = rand(20) === 0 ? 0 : Math.floor((4_000_000_000_000 + rand(1e9)) / w) * w;
      const base = start || 4_000_000_000_000;
      const count = {
        start,
        sends: rand(3000),
        verified: rand(3) ? rand(200) : rand(3000),
        prevSends: rand(5000),
        prevVerified: rand(3) ? rand(200) : rand(5000),
        blockedUntil: rand(3) ? 0 : base + rand(3 * w),
        refused: rand(10),
      };
      const edges = [base + w - 1, base + w, base + 2 * w - 1, base + 2 * w, base - 1 - rand(w), base + rand(w), base + 2 * w + rand(3 * w), count.blockedUntil, count.blockedUntil - 1];
      const now = Math.max(base - w, edges[rand(edges.length)]);
      const state = JSON.stringify(count);
      await r.del(key, index);
      await r.hset(key, ...FIELDS.flatMap((f) => [f, String(count[f])]));
      let want;
      let stored;
      const step = `count ${i} (${JSON.stringify({ now, w, count })})`;
      if (rand(4)) {
        const charge = {
          prefix,
          windowMs: w,
          minSends: rand(2) ? 1 + rand(count.sends + count.prevSends + 1) : 1 + rand(10_000),
          minConversion: rand(1001),
          blockMs: 1 + rand(2 * w),
        };
        // Two in three charges sit on a threshold, found with the core itself: the most sends
        // that still block (at a 100 % conversion bar), or the lowest bar that blocks (at 1 send).
        const blocks = (ch) => JSON.parse(native.chargeWorkspaceJson(null, null, null, null, state, JSON.stringify(ch), now).admission).kind !== 'send';
        const edge = rand(3);
        if (edge === 0 && blocks({ ...charge, minSends: 1, minConversion: 1000 }) && !blocks({ ...charge, minSends: 1e6, minConversion: 1000 })) {
          let lo = 1; // blocks
          let hi = 1e6; // does not
          while (hi - lo > 1) {
            const mid = Math.floor((lo + hi) / 2);
            if (blocks({ ...charge, minSends: mid, minConversion: 1000 })) lo = mid;
            else hi = mid;
          }
          Object.assign(charge, { minSends: lo + rand(2), minConversion: 1000 });
          outcomes.sendsEdge = (outcomes.sendsEdge ?? 0) + 1;
        } else if (edge === 1 && blocks({ ...charge, minSends: 1, minConversion: 1000 }) && !blocks({ ...charge, minSends: 1, minConversion: 0 })) {
          let lo = 0; // does not block
          let hi = 1000; // blocks
          while (hi - lo > 1) {
            const mid = Math.floor((lo + hi) / 2);
            if (blocks({ ...charge, minSends: 1, minConversion: mid })) hi = mid;
            else lo = mid;
          }
          Object.assign(charge, { minSends: 1, minConversion: hi - rand(2) });
          outcomes.conversionEdge = (outcomes.conversionEdge ?? 0) + 1;
        }
        const c = native.chargeWorkspaceJson(null, null, null, null, state, JSON.stringify(charge), now);
        const admission = JSON.parse(c.admission);
        const got = await r.otpkitAdmit(`${p}g:${i}`, `${p}fw`, `${p}sp`, 0, '{}', 60000, '', now, 60_000, 120_000, '', '', '', '',
          key, index, prefix, String(w), String(charge.minSends), String(charge.minConversion), String(charge.blockMs));
        const name = admission.kind === 'send' ? 'send' : admission.newBlock ? 'newBlock' : 'blocked';
        outcomes[name] = (outcomes[name] ?? 0) + 1;
        assert.deepEqual(got, name === 'send' ? 1 : [-3, name === 'newBlock' ? '1' : '0'], `${step} ${JSON.stringify(charge)}: core ${c.admission}`);
        want = { state: c.fraud, keepUntil: c.fraudKeepUntil };
      } else {
        want = native.fraudVerifiedJson(state, w, now);
        await r.otpkitFraudVerified(key, index, prefix, String(w), String(now));
        outcomes.verified = (outcomes.verified ?? 0) + 1;
      }
      stored = await r.hgetall(key);
      assert.deepEqual(Object.fromEntries(FIELDS.map((f) => [f, Number(stored[f])])), JSON.parse(want.state), step);
      assert.equal(await r.call('PEXPIRETIME', key), want.keepUntil, step);
    }
    t.diagnostic(JSON.stringify(outcomes));
    for (const k of ['send', 'newBlock', 'blocked', 'verified', 'sendsEdge', 'conversionEdge']) assert.ok(outcomes[k] >= 100, JSON.stringify(outcomes));
  });
});
