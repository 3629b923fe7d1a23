// SPEC §3 "Analytics" and §8 `by_country`: both analytics answers (GET /otp/analytics and
// GET /v1/admin/analytics) count by the destination's calling code ("233", "44"), with the same
// counts as by_channel, each costed at its workspace's price.

import { describe, it } from 'node:test';
import {
  assert, call, eventually, expectStatus, expectVerify, H, newDest, newWorkspace, useHarness, wrongCode,
} from './lib.mjs';

useHarness();

const usedUk = new Set();
/** A UK mobile number (+44 7700 9xxxxx), new in this run. */
function ukDest() {
  for (;;) {
    const d = `+4477009${String(Math.floor(Math.random() * 100_000)).padStart(5, '0')}`;
    if (!usedUk.has(d)) {
      usedUk.add(d);
      return d;
    }
  }
}

const FIELDS = ['sent', 'reused', 'delivery_failed', 'verified', 'failed', 'expired', 'sms_segments', 'resent', 'fraud_blocked', 'delivered', 'undelivered'];

/** The expected count object: zeros, a cost at `price` per segment, and these counts. */
function counts(c, cost, saved) {
  const v = { sent: 0, reused: 0, delivery_failed: 0, verified: 0, failed: 0, expired: 0, sms_segments: 0, resent: 0, ...c };
  return {
    sent: v.sent, reused: v.reused, delivery_failed: v.delivery_failed, verified: v.verified, failed: v.failed,
    expired: v.expired, verification_rate: v.verification_rate ?? 0, sms_segments: v.sms_segments, resent: v.resent,
    estimated_cost: { amount: cost, currency: 'USD' }, fraud_blocked: 0, fraud_saved: { amount: saved, currency: 'USD' },
    delivered: 0, undelivered: 0, delivery_rate: 0,
  };
}

/** Each count of `totals` is the sum of the countries'. */
function sumsToTotals(r) {
  for (const f of FIELDS) {
    const sum = Object.values(r.by_country).reduce((n, c) => n + c[f], 0);
    assert.equal(sum, r.totals[f], `by_country sums to totals.${f}`);
  }
}

describe('analytics by country', () => {
  it('by_country in GET /otp/analytics and GET /v1/admin/analytics: counts and cost per calling code', async () => {
    const app = `Country${process.pid}${Date.now()}`;
    const a = await newWorkspace({ policy: { maxAttempts: 2, pricePerSegment: { amount: '0.05', currency: 'USD' } } });
    const b = await newWorkspace({ policy: { pricePerSegment: { amount: '0.0075', currency: 'USD' } } });
    // Workspace a: Ghana, one verified and one still open; the UK, one verified, one locked and
    // one whose delivery failed. Workspace b: the UK, one verified.
    const gh1 = await a.issue(newDest(), { app });
    await a.issue(newDest(), { app });
    const uk1 = await a.issue(ukDest(), { app });
    const uk2 = await a.issue(ukDest(), { app });
    const failing = ukDest();
    await H.sink.setMode(failing, 'fail500');
    assert.equal((await a.request(a.body(failing, { app }))).status, 502, 'the gateway refused it');
    const buk = await b.issue(ukDest(), { app });
    expectVerify(await a.verify(gh1.sessionId, gh1.code), 'APPROVED', gh1.sessionId, 1);
    expectVerify(await a.verify(uk1.sessionId, uk1.code), 'APPROVED', uk1.sessionId, 1);
    expectVerify(await b.verify(buk.sessionId, buk.code), 'APPROVED', buk.sessionId, 4);
    expectVerify(await a.verify(uk2.sessionId, wrongCode(uk2.code)), 'INVALID', uk2.sessionId, 1);
    expectVerify(await a.verify(uk2.sessionId, wrongCode(uk2.code)), 'INVALID', uk2.sessionId, 0); // locks it

    const own = async (ws) => expectStatus(await call('GET', `/otp/analytics?app=${app}&days=7`, { key: ws.key }), 200);
    const ready = await eventually(async () => {
      const [x, y] = [await own(a), await own(b)];
      const t = x.totals;
      const done = t.sent === 4 && t.verified === 2 && t.failed === 1 && t.delivery_failed === 1
        && y.totals.sent === 1 && y.totals.verified === 1;
      return done ? [x, y] : null;
    }, 5000);
    assert.ok(ready, 'both workspaces’ analytics caught up');
    const [ra, rb] = ready;

    // Workspace a's own answer, at 0.05 a segment.
    assert.deepEqual(Object.keys(ra.by_country).sort(), ['233', '44'], 'by calling code; nothing under "other"');
    assert.deepEqual(ra.by_country['233'], counts({ sent: 2, verified: 1, verification_rate: 0.5, sms_segments: 2 }, '0.10', '0.00'));
    assert.deepEqual(
      ra.by_country['44'],
      counts({ sent: 2, delivery_failed: 1, verified: 1, failed: 1, verification_rate: 0.5, sms_segments: 2 }, '0.10', '0.00'),
    );
    sumsToTotals(ra);
    assert.deepEqual(ra.totals.estimated_cost, { amount: '0.20', currency: 'USD' });
    // Workspace b's, at 0.0075.
    assert.deepEqual(rb.by_country, {
      44: counts({ sent: 1, verified: 1, verification_rate: 1, sms_segments: 1 }, '0.0075', '0.0000'),
    });
    // Another workspace sees none of it.
    const other = await newWorkspace();
    assert.deepEqual(expectStatus(await call('GET', `/otp/analytics?app=${app}`, { key: other.key }), 200).by_country, {});

    // The admin answer: both workspaces summed, each bucket at its own workspace's price.
    const all = expectStatus(await call('GET', `/v1/admin/analytics?app=${app}&days=7`, { admin: true }), 200);
    assert.deepEqual(Object.keys(all.by_country).sort(), ['233', '44']);
    assert.deepEqual(all.by_country['233'], ra.by_country['233'], 'only workspace a sent to Ghana');
    assert.deepEqual(
      all.by_country['44'],
      counts(
        { sent: 3, delivery_failed: 1, verified: 2, failed: 1, verification_rate: 0.6667, sms_segments: 3 },
        '0.1075',
        '0.0000',
      ),
      '2 segments at 0.05 and 1 at 0.0075, summed exactly',
    );
    sumsToTotals(all);
    for (const f of FIELDS) {
      for (const cc of ['233', '44']) {
        assert.equal(all.by_country[cc][f], (ra.by_country[cc]?.[f] ?? 0) + (rb.by_country[cc]?.[f] ?? 0), `${cc}.${f}`);
      }
    }
    // The unfiltered admin answer has by_country too, its sums the totals.
    const every = expectStatus(await call('GET', '/v1/admin/analytics?days=1', { admin: true }), 200);
    assert.ok(every.by_country['44'].sent >= 3 && every.by_country['233'].sent >= 2);
    sumsToTotals(every);
  });
});
