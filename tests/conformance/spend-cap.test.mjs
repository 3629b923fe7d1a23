// SPEC §9 "Spend cap": policy dailySpendLimit ({amount, currency} or null, in pricePerSegment's
// currency). A send (request, /otp/send, resend) whose cost — its SMS segments × pricePerSegment —
// would take the workspace's spend of the current UTC day past the limit is refused 429
// SPEND_LIMIT_REACHED with Retry-After until 00:00 UTC. Counted exactly under concurrency (with the
// flood shield, in one atomic step); test numbers exempt; a definite delivery failure costs nothing.

import { describe, it, before } from 'node:test';
import {
  H, assert, call, eventually, expectError, expectRetryAfter, expectStatus, newDest, newWorkspace, sleep, useHarness,
} from './lib.mjs';

useHarness();

const DAY_MS = 86_400_000;
const secondsToMidnight = () => Math.ceil((Math.ceil(Date.now() / DAY_MS) * DAY_MS - Date.now()) / 1000);
const price = { amount: '0.5', currency: 'USD' };
const capped = (amount, extra = {}) => ({ pricePerSegment: price, dailySpendLimit: { amount, currency: 'USD' }, ...extra });

/** A 429 SPEND_LIMIT_REACHED whose Retry-After is the seconds to 00:00 UTC (±2). */
function expectSpendLimit(res) {
  const secs = expectRetryAfter(res, 'SPEND_LIMIT_REACHED', 86_400);
  const want = secondsToMidnight();
  assert.ok(Math.abs(secs - want) <= 2, `Retry-After ${secs} is the ${want} s until 00:00 UTC`);
  return secs;
}

describe('spend cap', () => {
  before(async () => {
    // The day's counter starts again at 00:00 UTC: do not straddle it.
    const left = secondsToMidnight();
    if (left < 30) await sleep(left * 1000 + 1000);
  });

  it('price 0.5/segment, limit 1.20: two 1-segment sends pass, the third is refused 429 SPEND_LIMIT_REACHED until 00:00 UTC, nothing sent', async () => {
    const ws = await newWorkspace({ policy: capped('1.20') });
    await ws.issue(newDest());
    await ws.issue(newDest());
    const dest = newDest();
    expectSpendLimit(await ws.request(ws.body(dest)));
    assert.equal((await H.sink.messages(dest)).length, 0, 'nothing reached the gateway');
    // /otp/send is a send too
    expectSpendLimit(await ws.zendSend({ phone_number: newDest(), app: 'Acme' }));
    const got = expectStatus(await call('GET', `/v1/admin/workspaces/${ws.id}`, { admin: true }), 200);
    assert.deepEqual(got.data.policy.dailySpendLimit, { amount: '1.20', currency: 'USD' });
    await eventually(async () => {
      const events = expectStatus(await ws.audit(), 200).data.events;
      return events.some((e) => e.event === 'rate_limited' && e.status === 'SPEND_LIMIT_REACHED');
    }, 3000).then((seen) => assert.ok(seen, 'the refusal is audited (rate_limited, status SPEND_LIMIT_REACHED)'));
  });

  it('a resend is charged like a send: refused at the cap, and it may be retried once the cap is raised', async () => {
    const ws = await newWorkspace({ policy: capped('1.00', { resendAfterSeconds: 0 }) });
    const dest = newDest();
    const s = await ws.issue(dest);
    await ws.issue(newDest());
    const resend = () => call('POST', `/v1/messaging/otp/sessions/${encodeURIComponent(s.sessionId)}/resend`, { key: ws.key });
    expectSpendLimit(await resend());
    assert.equal((await H.sink.messages(dest)).length, 1, 'the resend sent nothing');
    expectStatus(await call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { policy: { dailySpendLimit: { amount: '1.50', currency: 'USD' } } } }), 200);
    expectStatus(await resend(), 200, 'the reservation was given back: resent at once');
  });

  it('a burst of 20 parallel sends to 20 numbers with limit 3.00 admits exactly 6', async () => {
    const ws = await newWorkspace({ policy: capped('3.00') });
    const dests = Array.from({ length: 20 }, () => newDest());
    const answers = await Promise.all(dests.map((d) => ws.request(ws.body(d))));
    const ok = answers.filter((r) => r.status === 200);
    const refused = answers.filter((r) => r.status === 429);
    assert.equal(ok.length, 6, `statuses: ${answers.map((r) => r.status).join(',')}`);
    assert.equal(refused.length, 14);
    for (const r of refused) expectSpendLimit(r);
    let sent = 0;
    for (const d of dests) sent += (await H.sink.messages(d)).length;
    assert.equal(sent, 6, 'six messages reached the gateway');
  });

  it('test numbers are exempt: they pass past the cap', async () => {
    const ws = await newWorkspace({ policy: capped('0.50', { testNumbers: { '+15005550006': '123456', '+15005550007': '123456' } }) });
    await ws.issue(newDest());
    expectSpendLimit(await ws.request(ws.body(newDest())));
    expectStatus(await ws.request(ws.body('+15005550006')), 200, 'a test number past the cap');
    expectStatus(await ws.request(ws.body('+15005550007')), 200, 'another test number past the cap');
  });

  it('a failed delivery is refunded: it costs nothing', async () => {
    const ws = await newWorkspace({ policy: capped('0.50') });
    const failing = newDest();
    await H.sink.setMode(failing, 'fail500');
    expectError(await ws.request(ws.body(failing)), 502, 'DELIVERY_FAILED');
    expectError(await ws.request(ws.body(failing)), 502, 'DELIVERY_FAILED');
    await ws.issue(newDest()); // the one send the limit allows
    expectSpendLimit(await ws.request(ws.body(newDest())));
  });

  it('a PATCH raising the limit lets sends through; null removes the cap', async () => {
    const ws = await newWorkspace({ policy: capped('0.50') });
    await ws.issue(newDest());
    expectSpendLimit(await ws.request(ws.body(newDest())));
    const patch = (policy) => call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { policy } });
    expectStatus(await patch({ dailySpendLimit: { amount: '1.00', currency: 'USD' } }), 200);
    await ws.issue(newDest());
    expectSpendLimit(await ws.request(ws.body(newDest())));
    expectStatus(await patch({ dailySpendLimit: null }), 200);
    await ws.issue(newDest());
  });

  it('policy dailySpendLimit: default null; its currency must be pricePerSegment\'s', async () => {
    const ws = await newWorkspace();
    const got = expectStatus(await call('GET', `/v1/admin/workspaces/${ws.id}`, { admin: true }), 200);
    assert.equal(got.data.policy.dailySpendLimit, null);
    const patch = (policy) => call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { policy } });
    expectError(await patch({ dailySpendLimit: { amount: '10', currency: 'EUR' } }), 400, 'VALIDATION_ERROR', { field: 'policy.dailySpendLimit.currency' });
    expectError(await patch({ dailySpendLimit: { amount: 'ten', currency: 'USD' } }), 400, 'VALIDATION_ERROR', { field: 'policy.dailySpendLimit.amount' });
    expectError(await patch({ dailySpendLimit: 5 }), 400, 'VALIDATION_ERROR', { field: 'policy.dailySpendLimit' });
    expectStatus(await patch({ dailySpendLimit: { amount: '10', currency: 'USD' } }), 200);
    // Changing the price's currency alone would leave the limit in another one.
    expectError(await patch({ pricePerSegment: { amount: '0.01', currency: 'EUR' } }), 400, 'VALIDATION_ERROR', { field: 'policy.dailySpendLimit.currency' });
    expectStatus(await patch({ pricePerSegment: { amount: '0.01', currency: 'EUR' }, dailySpendLimit: { amount: '10', currency: 'EUR' } }), 200);
  });
});
