// SPEC §9 "Fraud Guard": SMS pumping defence. Policy `fraudGuard` (off by default) counts, per
// (workspace, number prefix), the sends and approved verifications of a rolling window; once a
// prefix has `minSends` sends with approvals per send under `minConversion`, new sends to it are
// refused 403 FRAUD_SUSPECTED (no Retry-After) for `blockSeconds`. The check runs before a send is
// counted (minSends 20 → exactly 20 pass), atomically on every store. Test numbers and safe-listed
// numbers/prefixes are never counted nor refused. Admin: GET /v1/admin/workspaces/{id}/fraud,
// DELETE /v1/admin/workspaces/{id}/fraud/blocks/{prefix}; audit prefix_blocked/prefix_unblocked
// (and rate_limited, status FRAUD_SUSPECTED, per refused send); analytics fraud_blocked and
// fraud_saved.
//
// The prefix is "+", the calling code and `prefixDigits` digits: +233 20 2xxxxxx → "+233202".
// Every workspace here uses codeLength 8, so that no code can ever read like a 6-digit prefix
// ("233202") in a body that lib.mjs checks for leaked codes. Only the pumping and unblock tests
// use such prefixes (the default prefixDigits 3); the others use 2 digits ("+23326": 5 digits,
// never code-like), so that zzz-leaks' run-wide search meets as few as possible.

import { before, describe, it } from 'node:test';
import { randomInt } from 'node:crypto';
import {
  H, RFC3339, assert, call, eventually, expectError, expectStatus, expectVerify, newWorkspace, sleep, useHarness,
} from './lib.mjs';

useHarness();

const DAY_MS = 86_400_000;
const secondsToMidnight = () => Math.ceil((Math.ceil(Date.now() / DAY_MS) * DAY_MS - Date.now()) / 1000);
const LAG_MS = 5000; // audit rows and analytics may lag an answer (SPEC: 2 s; the Worker writes after it)
const PRICE = { amount: '0.05', currency: 'USD' };
const DEFAULT_GUARD = {
  enabled: false, prefixDigits: 3, windowSeconds: 3600, minSends: 20, minConversion: 0.1, blockSeconds: 3600, safeList: [],
};
const VIEW_KEYS = ['blocked', 'conversion', 'prefix', 'refused', 'sends', 'verified'];

/** A workspace's policy: 8-digit codes, no flood shield in the way, Fraud Guard as given. */
function policyWith(fraudGuard, extra = {}) {
  return {
    codeLength: 8,
    sendsPerWorkspacePerMinute: 100_000,
    ...(fraudGuard === undefined ? {} : { fraudGuard }),
    ...extra,
  };
}

/** An enabled guard with a one-day window (buckets start at 00:00 UTC: see the `before` hook). */
const guard = (over = {}) => ({ enabled: true, windowSeconds: 86_400, ...over });

// Destinations: `range` (e.g. "+233202") then random digits up to 12 digits in all, distinct
// within this file (each test has its own workspace, so limits are never shared).
const used = new Set();
function inRange(range) {
  const width = 13 - range.length;
  for (;;) {
    const d = `${range}${String(randomInt(0, 10 ** width)).padStart(width, '0')}`;
    if (!used.has(d)) {
      used.add(d);
      return d;
    }
  }
}

const fraudPath = (id) => `/v1/admin/workspaces/${id}/fraud`;
const blockPath = (id, prefix) => `/v1/admin/workspaces/${id}/fraud/blocks/${prefix}`;
const getFraud = async (ws) => expectStatus(await call('GET', fraudPath(ws.id), { admin: true }), 200, 'GET …/fraud').data;
const unblock = (ws, prefix, opts = { admin: true }) => call('DELETE', blockPath(ws.id, prefix), opts);
const patchPolicy = (ws, policy) => call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { policy } });
const analytics = async (ws) => expectStatus(await call('GET', '/otp/analytics?days=1', { key: ws.key }), 200, 'analytics');

/** A 403 FRAUD_SUSPECTED (expectError also checks: no Retry-After, no retryAfterSeconds). */
function expectFraud(res, what = '') {
  assert.equal(res.status, 403, `${what}: expected 403 FRAUD_SUSPECTED, got ${res.status}: ${res.text}`);
  return expectError(res, 403, 'FRAUD_SUSPECTED');
}

/** Sends one request per destination, one after the other; answers the responses in order. */
async function sendEach(ws, dests) {
  const out = [];
  for (const d of dests) out.push(await ws.request(ws.body(d)));
  return out;
}

/** The highest sequence number the sink has handed out so far. */
async function sinkMark() {
  let max = 0;
  for (const m of await H.sink.messages()) max = Math.max(max, m.seq);
  return max;
}

/** Messages the sink received after `mark` for any of `dests`. */
async function sinkSince(mark, dests) {
  const set = new Set(dests);
  return (await H.sink.messages()).filter((m) => m.seq > mark && set.has(m.to));
}

/** Every audit event of a workspace (every page), newest first. */
async function allAudit(ws) {
  const events = [];
  let cursor = null;
  for (let page = 0; page < 50; page++) {
    const j = expectStatus(await ws.audit({ limit: '500', ...(cursor ? { cursor: String(cursor) } : {}) }), 200, 'audit');
    events.push(...j.data.events);
    cursor = j.data.nextCursor;
    if (cursor === null || cursor === undefined) return events;
  }
  throw new Error('the audit log did not end');
}

/** Polls the audit log until `want(events)` holds (or LAG_MS pass); answers the last events. */
async function auditUntil(ws, want) {
  let last = [];
  await eventually(async () => {
    last = await allAudit(ws);
    return want(last);
  }, LAG_MS, 200);
  return last;
}

const prefixEvents = (events, name, prefix) => events.filter((e) => e.event === name && e.dest === prefix);
const fraudRefusals = (events) => events.filter((e) => e.event === 'rate_limited' && e.status === 'FRAUD_SUSPECTED');

/** `amount` × n, written as the API writes money (analytics.rs `times`: the amount's decimals kept). */
function times(amount, n) {
  const [int, frac = ''] = amount.split('.');
  const total = (BigInt(`${int}${frac}`) * BigInt(n)).toString();
  if (!frac) return total;
  const padded = total.padStart(frac.length + 1, '0');
  return `${padded.slice(0, padded.length - frac.length)}.${padded.slice(padded.length - frac.length)}`;
}

/** Checks one prefix of GET …/fraud: its fields, and the values given. */
function expectPrefix(view, want) {
  const keys = Object.keys(view).sort();
  const expected = view.blocked ? [...VIEW_KEYS, 'blockedUntil'].sort() : VIEW_KEYS;
  assert.deepEqual(keys, expected, `the fields of a prefix: ${JSON.stringify(view)}`);
  for (const [k, v] of Object.entries(want)) assert.deepEqual(view[k], v, `${view.prefix}.${k}: ${JSON.stringify(view)}`);
  if (view.blocked) assert.match(view.blockedUntil, RFC3339);
}

describe('fraud guard', () => {
  before(async () => {
    // Windows of one day start at 00:00 UTC (so do the analytics' days): do not straddle it.
    const left = secondsToMidnight();
    if (left < 120) await sleep(left * 1000 + 1000);
  });

  it('off by default: 25 unverified sends to one prefix all pass, nothing is counted; minConversion 0 only counts', async () => {
    const ws = await newWorkspace({ policy: policyWith(undefined) });
    const dests = Array.from({ length: 25 }, () => inRange('+233202'));
    const mark = await sinkMark();
    const answers = await Promise.all(dests.map((d) => ws.request(ws.body(d))));
    answers.forEach((r, i) => expectStatus(r, 200, `send ${i + 1} of 25 with Fraud Guard off`));
    assert.equal((await sinkSince(mark, dests)).length, 25, 'every send reached the gateway');
    const view = await getFraud(ws);
    assert.deepEqual(view, { workspaceId: ws.id, fraudGuard: DEFAULT_GUARD, prefixes: [] }, 'off: no prefix counted');
    const a = await eventually(async () => {
      const r = await analytics(ws);
      return r.totals.sent === 25 ? r : null;
    }, LAG_MS);
    assert.ok(a, 'analytics caught up');
    assert.equal(a.totals.fraud_blocked, 0);
    assert.deepEqual(a.totals.fraud_saved, { amount: '0', currency: 'USD' });

    // On with minConversion 0 (and one prefix digit): counted, never refused.
    const counting = await newWorkspace({ policy: policyWith(guard({ minSends: 2, minConversion: 0, prefixDigits: 1 })) });
    const more = [inRange('+233202'), inRange('+233244'), inRange('+233202'), inRange('+233244'), inRange('+233202')];
    for (const r of await sendEach(counting, more)) expectStatus(r, 200, 'minConversion 0 never blocks');
    const cv = await getFraud(counting);
    assert.equal(cv.fraudGuard.minConversion, 0);
    assert.equal(cv.prefixes.length, 1, `one prefix "+2332" for both ranges: ${JSON.stringify(cv.prefixes)}`);
    expectPrefix(cv.prefixes[0], { prefix: '+2332', sends: 5, verified: 0, conversion: 0, blocked: false, refused: 0 });
  });

  it('a pumping run beside legitimate traffic: exactly minSends pumped sends pass, the rest are 403; the legitimate range is untouched; view, audit and analytics agree', async () => {
    const ws = await newWorkspace({
      policy: policyWith(guard({ minSends: 20, minConversion: 0.1 }), { pricePerSegment: PRICE }),
    });
    const PUMPED = 200;
    const pumped = Array.from({ length: PUMPED }, () => inRange('+233202'));
    const legit = [];
    const pumpedAnswers = [];
    let blockedAt = null;
    const pump = async (i) => {
      pumpedAnswers[i] = await ws.request(ws.body(pumped[i]));
    };
    // A real user beside the bots: asks for a code, reads it off the phone, types it in.
    const user = async () => {
      const good = inRange('+233244');
      legit.push(good);
      const s = await ws.issue(good);
      expectVerify(await ws.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 4);
    };
    const mark = await sinkMark();
    // One by one until the block has begun (the 21st)…
    const SEQUENTIAL = 25;
    for (let i = 0; i < SEQUENTIAL; i++) {
      await pump(i);
      if (i === 20) blockedAt = Date.now();
      if (i % 8 === 3) await user();
    }
    // …then the rest of the run 8 at a time, each batch beside a user.
    for (let i = SEQUENTIAL; i < PUMPED; i += 8) {
      const batch = [];
      for (let j = i; j < Math.min(i + 8, PUMPED); j++) batch.push(pump(j));
      await Promise.all([...batch, user()]);
    }
    assert.ok(legit.length > 20, `the legitimate range sent past minSends too (${legit.length})`);
    const statuses = pumpedAnswers.map((r) => r.status);
    const passed = statuses.filter((s) => s === 200).length;
    assert.equal(passed, 20, `exactly minSends=20 pumped sends pass: ${statuses.join(',')}`);
    statuses.slice(0, 20).forEach((s, i) => assert.equal(s, 200, `pumped send ${i + 1} passes`));
    pumpedAnswers.slice(20).forEach((r, i) => expectFraud(r, `pumped send ${i + 21}`));
    const refused = PUMPED - 20;
    const pumpedMsgs = await sinkSince(mark, pumped);
    assert.equal(pumpedMsgs.length, 20, 'exactly 20 messages reached the gateway for the pumped range');
    assert.deepEqual(new Set(pumpedMsgs.map((m) => m.to)), new Set(pumped.slice(0, 20)), 'the first 20 numbers, once each');
    assert.equal((await sinkSince(mark, legit)).length, legit.length, 'every legitimate send reached the gateway');

    // A send through the second dialect to the blocked range is refused too (and counted).
    expectFraud(await ws.zendSend({ phone_number: inRange('+233202'), app: 'Shop' }), 'POST /otp/send to the blocked range');
    const totalRefused = refused + 1;

    // The admin view: the pumped prefix blocked, the legitimate one converting.
    const view = await eventually(async () => {
      const v = await getFraud(ws);
      const good = v.prefixes.find((p) => p.prefix === '+233244');
      return good && good.verified === legit.length ? v : null;
    }, LAG_MS);
    assert.ok(view, `the legitimate range's approvals are counted: ${JSON.stringify(await getFraud(ws))}`);
    assert.equal(view.workspaceId, ws.id);
    assert.deepEqual(view.fraudGuard, { ...DEFAULT_GUARD, enabled: true, windowSeconds: 86_400 });
    assert.deepEqual(view.prefixes.map((p) => p.prefix), ['+233202', '+233244'], 'both prefixes, the blocked one first');
    const [bad, good] = view.prefixes;
    expectPrefix(bad, { prefix: '+233202', sends: 20, verified: 0, conversion: 0, blocked: true, refused: totalRefused });
    const until = Date.parse(bad.blockedUntil);
    assert.ok(Math.abs(until - (blockedAt + 3600_000)) < 60_000, `blocked for blockSeconds=3600 from the 21st send: ${bad.blockedUntil}`);
    expectPrefix(good, { prefix: '+233244', sends: legit.length, verified: legit.length, conversion: 1, blocked: false, refused: 0 });

    // The audit trail: one prefix_blocked, one rate_limited per refused send.
    const events = await auditUntil(ws, (evs) => fraudRefusals(evs).length >= totalRefused && prefixEvents(evs, 'prefix_blocked', '+233202').length >= 1);
    const blocks = events.filter((e) => e.event === 'prefix_blocked');
    assert.equal(blocks.length, 1, `exactly one prefix_blocked: ${JSON.stringify(blocks)}`);
    const b = blocks[0];
    assert.equal(b.dest, '+233202', 'the prefix itself, not a number');
    assert.equal(b.sessionId, '');
    assert.equal(b.purpose, null);
    assert.equal(b.outcome, 'blocked');
    assert.equal(b.status, 'FRAUD_SUSPECTED');
    assert.match(b.time, RFC3339);
    const refusals = fraudRefusals(events);
    assert.equal(refusals.length, totalRefused, 'every refused send is audited rate_limited / FRAUD_SUSPECTED');
    for (const e of refusals) {
      assert.equal(e.outcome, 'refused', JSON.stringify(e));
      assert.equal(e.sessionId, '', JSON.stringify(e));
      assert.match(e.dest, /^\+233\*+\d{4}$/, `masked: ${JSON.stringify(e)}`);
    }
    assert.ok(!events.some((e) => e.event === 'prefix_blocked' && e.dest === '+233244'), 'the legitimate range was never blocked');
    assert.equal(events.filter((e) => e.event === 'verify_approved').length, legit.length);

    // Analytics: the refused sends and what they would have cost.
    const a = await eventually(async () => {
      const r = await analytics(ws);
      return r.totals.fraud_blocked === totalRefused && r.totals.sent === 20 + legit.length && r.totals.verified === legit.length ? r : null;
    }, LAG_MS);
    assert.ok(a, `analytics caught up: ${JSON.stringify((await analytics(ws)).totals)}`);
    const segments = a.totals.sms_segments / a.totals.sent;
    assert.ok(Number.isInteger(segments) && segments >= 1, `every message has the same segments: ${JSON.stringify(a.totals)}`);
    assert.deepEqual(a.totals.estimated_cost, { amount: times(PRICE.amount, a.totals.sms_segments), currency: 'USD' }, 'the cost as this test computes it');
    const saved = { amount: times(PRICE.amount, totalRefused * segments), currency: 'USD' };
    assert.deepEqual(a.totals.fraud_saved, saved, `fraud_saved = ${totalRefused} × ${segments} × ${PRICE.amount}`);
    const today = a.days[a.days.length - 1];
    for (const [where, c] of [['days[today]', today], ['by_channel.sms', a.by_channel.sms], ['by_purpose.LOGIN', a.by_purpose.LOGIN]]) {
      assert.equal(c?.fraud_blocked, totalRefused, `${where}.fraud_blocked`);
      assert.deepEqual(c.fraud_saved, saved, `${where}.fraud_saved`);
    }
  });

  it('unblock: DELETE …/fraud/blocks/{prefix} → 204 (any spelling), sends pass again, audit prefix_unblocked; 404 when not blocked, malformed or unknown; 401 without the admin token', async () => {
    const ws = await newWorkspace({ policy: policyWith(guard({ minSends: 3 }), { resendAfterSeconds: 0 }) });
    /** Sends until the range is blocked: `passes` sends pass, the next is refused. */
    const pumpUntilBlocked = async (passes, what) => {
      const dests = Array.from({ length: passes + 1 }, () => inRange('+233202'));
      const answers = await sendEach(ws, dests);
      answers.slice(0, passes).forEach((r, i) => expectStatus(r, 200, `${what}: send ${i + 1}`));
      expectFraud(answers[passes], `${what}: send ${passes + 1}`);
      return answers;
    };
    const first = await pumpUntilBlocked(3, 'first block');
    assert.equal((await getFraud(ws)).prefixes[0]?.blocked, true, 'blocked');
    // A resend of a session in the blocked range is a send: refused too.
    const sessionId = first[0].json.data.sessionId;
    expectFraud(await call('POST', `/v1/messaging/otp/sessions/${encodeURIComponent(sessionId)}/resend`, { key: ws.key }), 'resend to the blocked range');

    // Only the operator may unblock.
    const other = await newWorkspace({ policy: policyWith(guard({ minSends: 3 })) });
    for (const auth of [{}, { admin: 'wrong-token' }, { admin: `${H.adminToken}x` }, { key: ws.key }]) {
      expectError(await unblock(ws, '%2B233202', auth), 401, 'UNAUTHORIZED');
      expectError(await call('GET', fraudPath(ws.id), auth), 401, 'UNAUTHORIZED');
    }
    expectError(await unblock(other, '%2B233202'), 404, 'NOT_FOUND'); // not blocked in that workspace
    assert.equal((await getFraud(ws)).prefixes[0]?.blocked, true, 'still blocked after the refused unblocks');
    expectFraud(await ws.request(ws.body(inRange('+233202'))), 'still refused');

    // %2B spelling.
    const res = await unblock(ws, '%2B233202');
    expectStatus(res, 204, 'unblock %2B233202');
    assert.equal(res.text, '', '204 has no body');
    const after = await getFraud(ws);
    assert.ok(!after.prefixes.some((p) => p.prefix === '+233202' && p.blocked), `not blocked any more: ${JSON.stringify(after.prefixes)}`);
    // A second DELETE: not blocked. (Before the next send: an unblock also clears the counts.)
    expectError(await unblock(ws, '%2B233202'), 404, 'NOT_FOUND');
    const dest = inRange('+233202');
    const mark = await sinkMark();
    expectStatus(await ws.request(ws.body(dest)), 200, 'a new send to the unblocked range');
    assert.equal((await sinkSince(mark, [dest])).length, 1, 'and it reached the gateway');
    const unblocked = await auditUntil(ws, (evs) => prefixEvents(evs, 'prefix_unblocked', '+233202').length >= 1);
    const u = prefixEvents(unblocked, 'prefix_unblocked', '+233202');
    assert.equal(u.length, 1, `one prefix_unblocked: ${JSON.stringify(unblocked.filter((e) => e.event.startsWith('prefix_')))}`);
    assert.equal(u[0].outcome, 'ok');
    assert.equal(u[0].sessionId, '');
    assert.equal(u[0].purpose, null);

    // The counts were cleared: the send above was the first of 3 again. "+" spelling.
    await pumpUntilBlocked(2, 'second block');
    expectStatus(await unblock(ws, '+233202'), 204, 'unblock +233202');
    expectStatus(await ws.request(ws.body(inRange('+233202'))), 200, 'passes after the second unblock');
    // Digits-only spelling.
    await pumpUntilBlocked(2, 'third block');
    expectStatus(await unblock(ws, '233202'), 204, 'unblock 233202');
    expectError(await unblock(ws, '233202'), 404, 'NOT_FOUND');

    // Malformed prefixes, a prefix never seen, an unknown workspace.
    for (const bad of ['abc', '%2B', '%2B2', '+23320a', '2'.repeat(19), '%2B%2B233202']) {
      expectError(await unblock(ws, bad), 404, 'NOT_FOUND');
    }
    expectError(await unblock(ws, '%2B447700'), 404, 'NOT_FOUND');
    expectError(await call('DELETE', blockPath('ws_doesnotexist', '%2B233202'), { admin: true }), 404, 'NOT_FOUND');
    expectError(await call('GET', fraudPath('ws_doesnotexist'), { admin: true }), 404, 'NOT_FOUND');

    const events = await auditUntil(ws, (evs) => prefixEvents(evs, 'prefix_unblocked', '+233202').length >= 3);
    assert.equal(prefixEvents(events, 'prefix_unblocked', '+233202').length, 3, 'one prefix_unblocked per 204');
    assert.equal(prefixEvents(events, 'prefix_blocked', '+233202').length, 3, 'one prefix_blocked per block');
  });

  it('exemptions: safe-listed prefixes and numbers, and test numbers, are never counted nor refused', async () => {
    const safeNumber = inRange('+23326');
    const testNumber = inRange('+23325');
    const ws = await newWorkspace({
      policy: policyWith(guard({ minSends: 3, prefixDigits: 2, safeList: ['+23327', safeNumber] }), {
        reuse: false,
        sendsPerDestination: { limit: 100, windowSeconds: 600 },
        testNumbers: { [testNumber]: '24681357' },
      }),
    });
    // A safe-listed prefix: twice minSends, all pass.
    for (const r of await sendEach(ws, Array.from({ length: 6 }, () => inRange('+23327')))) {
      expectStatus(r, 200, 'a send to a safe-listed prefix');
    }
    // The safe number's range gets blocked by its other numbers; the safe number still passes.
    const others = await sendEach(ws, Array.from({ length: 4 }, () => inRange('+23326')));
    others.slice(0, 3).forEach((r) => expectStatus(r, 200));
    expectFraud(others[3], 'a non-safe number of +23326 after 3 sends');
    const mark = await sinkMark();
    for (let i = 0; i < 5; i++) expectStatus(await ws.request(ws.body(safeNumber)), 200, `safe number, send ${i + 1}, its range blocked`);
    assert.equal((await sinkSince(mark, [safeNumber])).length, 5, 'the safe number got its messages');
    // A test number's range blocked; the test number still passes (and verifies).
    const testRange = await sendEach(ws, Array.from({ length: 4 }, () => inRange('+23325')));
    testRange.slice(0, 3).forEach((r) => expectStatus(r, 200));
    expectFraud(testRange[3], 'a non-test number of +23325 after 3 sends');
    let last;
    for (let i = 0; i < 5; i++) last = expectStatus(await ws.request(ws.body(testNumber)), 200, `test number, send ${i + 1}, its range blocked`);
    expectVerify(await ws.verify(last.data.sessionId, '24681357'), 'APPROVED', last.data.sessionId, 4);

    const view = await getFraud(ws);
    assert.deepEqual(view.fraudGuard.safeList, ['+23327', safeNumber]);
    assert.deepEqual(view.prefixes.map((p) => p.prefix).sort(), ['+23325', '+23326'], 'the safe-listed prefix is not counted');
    for (const p of view.prefixes) {
      expectPrefix(p, { sends: 3, verified: 0, blocked: true, refused: 1 });
    }

    // Safe-listing a blocked range (PATCH merges: the guard stays on) lets its sends through.
    expectStatus(await patchPolicy(ws, { fraudGuard: { safeList: ['+23327', safeNumber, '+23325'] } }), 200);
    expectStatus(await ws.request(ws.body(inRange('+23325'))), 200, 'a newly safe-listed blocked range');
    expectFraud(await ws.request(ws.body(inRange('+23326'))), '+23326 is still blocked');
    const g = (await getFraud(ws)).fraudGuard;
    assert.equal(g.enabled, true, 'a fraudGuard patch merges');
    assert.equal(g.minSends, 3);
  });

  it('a burst of 60 parallel sends to one fresh prefix with minSends 10 admits exactly 10', async () => {
    const ws = await newWorkspace({ policy: policyWith(guard({ minSends: 10, prefixDigits: 2 })) });
    const dests = Array.from({ length: 60 }, () => inRange('+23323'));
    const mark = await sinkMark();
    const answers = await Promise.all(dests.map((d) => ws.request(ws.body(d))));
    const statuses = answers.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 10, `exactly 10 pass: ${statuses.join(',')}`);
    for (const r of answers.filter((x) => x.status !== 200)) expectFraud(r, 'a refused send of the burst');
    assert.equal((await sinkSince(mark, dests)).length, 10, 'ten messages reached the gateway');
    const view = await getFraud(ws);
    assert.equal(view.prefixes.length, 1);
    expectPrefix(view.prefixes[0], { prefix: '+23323', sends: 10, blocked: true, refused: 50 });
    const events = await auditUntil(ws, (evs) => fraudRefusals(evs).length >= 50);
    assert.equal(fraudRefusals(events).length, 50);
    assert.equal(events.filter((e) => e.event === 'prefix_blocked').length, 1, 'exactly one send began the block');
    const a = await eventually(async () => {
      const r = await analytics(ws);
      return r.totals.fraud_blocked === 50 && r.totals.sent === 10 ? r : null;
    }, LAG_MS);
    assert.ok(a, `analytics: ${JSON.stringify((await analytics(ws)).totals)}`);
  });

  it('policy fraudGuard: defaults, merging patches, null resets, 400s naming policy.fraudGuard.<key>', async () => {
    const ws = await newWorkspace();
    const policyOf = async () => expectStatus(await call('GET', `/v1/admin/workspaces/${ws.id}`, { admin: true }), 200).data.policy;
    assert.deepEqual((await policyOf()).fraudGuard, DEFAULT_GUARD, 'the defaults');

    const bad = [
      [5, 'policy.fraudGuard'],
      ['on', 'policy.fraudGuard'],
      [[], 'policy.fraudGuard'],
      [{ enabled: 'yes' }, 'policy.fraudGuard.enabled'],
      [{ enabled: 1 }, 'policy.fraudGuard.enabled'],
      [{ prefixDigits: 0 }, 'policy.fraudGuard.prefixDigits'],
      [{ prefixDigits: 7 }, 'policy.fraudGuard.prefixDigits'],
      [{ prefixDigits: 2.5 }, 'policy.fraudGuard.prefixDigits'],
      [{ windowSeconds: 59 }, 'policy.fraudGuard.windowSeconds'],
      [{ windowSeconds: 86_401 }, 'policy.fraudGuard.windowSeconds'],
      [{ minSends: 0 }, 'policy.fraudGuard.minSends'],
      [{ minSends: 100_001 }, 'policy.fraudGuard.minSends'],
      [{ minSends: '20' }, 'policy.fraudGuard.minSends'],
      [{ minConversion: -0.1 }, 'policy.fraudGuard.minConversion'],
      [{ minConversion: 1.5 }, 'policy.fraudGuard.minConversion'],
      [{ minConversion: '0.1' }, 'policy.fraudGuard.minConversion'],
      [{ blockSeconds: 59 }, 'policy.fraudGuard.blockSeconds'],
      [{ blockSeconds: 604_801 }, 'policy.fraudGuard.blockSeconds'],
      [{ safeList: '+233' }, 'policy.fraudGuard.safeList'],
      [{ safeList: ['233202'] }, 'policy.fraudGuard.safeList'],
      [{ safeList: ['+'] }, 'policy.fraudGuard.safeList'],
      [{ safeList: ['+2332a'] }, 'policy.fraudGuard.safeList'],
      [{ safeList: [`+${'1'.repeat(16)}`] }, 'policy.fraudGuard.safeList'],
      [{ safeList: [233] }, 'policy.fraudGuard.safeList'],
      [{ safeList: Array.from({ length: 101 }, (_, i) => `+1${String(i).padStart(4, '0')}`) }, 'policy.fraudGuard.safeList'],
      [{ unknownKey: 1 }, 'policy.fraudGuard.unknownKey'],
    ];
    for (const [fraudGuard, field] of bad) {
      const res = await patchPolicy(ws, { fraudGuard });
      assert.equal(res.status, 400, `fraudGuard ${JSON.stringify(fraudGuard).slice(0, 60)} → 400: ${res.text}`);
      expectError(res, 400, 'VALIDATION_ERROR', { field });
    }
    // Also on creation.
    expectError(await call('POST', '/v1/admin/workspaces', { admin: true, body: { name: 'fg', senders: ['ACME'], policy: { fraudGuard: { minSends: 0 } } } }),
      400, 'VALIDATION_ERROR', { field: 'policy.fraudGuard.minSends' });
    assert.deepEqual((await policyOf()).fraudGuard, DEFAULT_GUARD, 'a refused patch changes nothing');

    // Bounds are inclusive; a patch merges into the current value.
    const edge = { prefixDigits: 6, windowSeconds: 60, minSends: 100_000, minConversion: 1, blockSeconds: 604_800 };
    expectStatus(await patchPolicy(ws, { fraudGuard: { enabled: true, ...edge } }), 200);
    const safeList = Array.from({ length: 100 }, (_, i) => `+1${String(i).padStart(4, '0')}`);
    expectStatus(await patchPolicy(ws, { fraudGuard: { prefixDigits: 1, minConversion: 0, safeList } }), 200);
    const merged = (await policyOf()).fraudGuard;
    assert.deepEqual(merged, { ...edge, enabled: true, prefixDigits: 1, minConversion: 0, safeList }, 'given keys replaced, the others kept');
    expectStatus(await patchPolicy(ws, { fraudGuard: { minConversion: 0.25, windowSeconds: 86_400, blockSeconds: 60 } }), 200);
    const again = (await policyOf()).fraudGuard;
    assert.equal(again.minConversion, 0.25);
    assert.equal(again.enabled, true);
    assert.equal(again.safeList.length, 100);
    // The admin fraud view shows the same policy.
    assert.deepEqual((await getFraud(ws)).fraudGuard, again);
    // Another key of the policy leaves fraudGuard alone; null resets it.
    expectStatus(await patchPolicy(ws, { ttlSeconds: 120 }), 200);
    assert.deepEqual((await policyOf()).fraudGuard, again);
    expectStatus(await patchPolicy(ws, { fraudGuard: null }), 200);
    assert.deepEqual((await policyOf()).fraudGuard, DEFAULT_GUARD, 'null: the defaults');
    // Created with a partial fraudGuard: the rest are defaults.
    const made = await newWorkspace({ policy: { fraudGuard: { enabled: true, minSends: 50 } } });
    const got = expectStatus(await call('GET', `/v1/admin/workspaces/${made.id}`, { admin: true }), 200).data.policy.fraudGuard;
    assert.deepEqual(got, { ...DEFAULT_GUARD, enabled: true, minSends: 50 });
  });
});
