// Gateway faults (SPEC §3 "Gateway outcomes") and the send rate limit.
// 500 / connection reset: 502 DELIVERY_FAILED, no session and no reuse entry left, not charged.
// 302 / 307 / 308: the same (a redirect is never followed: the number and code go nowhere else).
// Hang: 502 after ~10 s, no session left, but charged to the send limit.
// A huge reply: the status decides; the host reads at most 64 KiB of it and drops the connection.

import { describe, it } from 'node:test';
import {
  assert, codeOf, eventually, expectError, expectRetryAfter, expectStatus, expectVectorBody, expectVerify, H,
  newDest, newWorkspace, sleep, useHarness, wrongCode,
} from './lib.mjs';

useHarness();

/** Asserts that the session a failed delivery named (the gateway reference) does not exist. */
async function assertNoSession(ws, message) {
  const ghost = message.reference;
  assert.ok(ghost, 'the gateway saw a reference');
  expectError(await ws.status(ghost), 404, 'NOT_FOUND');
  const code = codeOf(message);
  expectVerify(await ws.verify(ghost, code), 'NOT_FOUND', ghost, 0);
}

describe('gateway faults', () => {
  for (const mode of ['fail500', 'reset']) {
    it(`gateway ${mode} → 502 DELIVERY_FAILED (exact body), nothing left behind, not charged; a retry succeeds`, async () => {
      const ws = await newWorkspace({ policy: { sendsPerDestination: { limit: 1, windowSeconds: 600 } } });
      const dest = newDest();
      await H.sink.setMode(dest, mode);
      const res = await ws.request(ws.body(dest));
      expectVectorBody(res, '502');
      const msgs = await H.sink.messages(dest);
      assert.equal(msgs.length, 1, 'the gateway was called once');
      await assertNoSession(ws, msgs[0]);

      // A second failure is a failure too (no reuse entry of the failed session).
      const again = await ws.request(ws.body(dest));
      expectVectorBody(again, '502');

      // Gateway back: a clean new session, although the limit is 1 (failures were not charged).
      await H.sink.setMode(dest, 'ok');
      const ok = await ws.request(ws.body(dest));
      const j = expectStatus(ok, 200);
      assert.equal(j.data.reused, false);
      const all = await H.sink.messages(dest);
      assert.equal(all.length, 3);
      assert.notEqual(j.data.sessionId, msgs[0].reference);
      assert.equal(all[2].reference, j.data.sessionId);
      const code = codeOf(all[2]);
      expectVerify(await ws.verify(j.data.sessionId, code), 'APPROVED', j.data.sessionId, 4);
    });
  }

  for (const status of [302, 307, 308]) {
    it(`gateway answers ${status} → 502 DELIVERY_FAILED like any non-2xx; the redirect is not followed; not charged`, async () => {
      const ws = await newWorkspace({ policy: { sendsPerDestination: { limit: 1, windowSeconds: 600 } } });
      const dest = newDest();
      await H.sink.setMode(dest, `redirect${status}`);
      const res = await ws.request(ws.body(dest));
      const msgs = await H.sink.messages(dest);
      assert.equal(msgs.length, 1, 'the gateway was called once');
      assert.deepEqual(msgs[0].followed, [], `nothing reached the redirect target (the host followed the ${status}; it answered ${res.status})`);
      expectVectorBody(res, '502');
      await assertNoSession(ws, msgs[0]);

      // A definite failure is refunded: with the gateway back, a new send fits in the limit of 1.
      await H.sink.setMode(dest, 'ok');
      const ok = await ws.issue(dest);
      expectVerify(await ws.verify(ok.sessionId, ok.code), 'APPROVED', ok.sessionId, 4);
      assert.deepEqual((await H.sink.messages(dest)).flatMap((m) => m.followed), [], 'the redirect target never heard of it');
    });
  }

  it('a 50 MB gateway reply: the status decides (200 → sent), promptly; the host stops reading and drops the connection', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    await H.sink.setMode(dest, 'huge');
    const started = Date.now();
    const sent = await ws.issue(dest, {});
    const elapsed = Date.now() - started;
    assert.ok(elapsed < 5_000, `answered after ${elapsed} ms`);
    const reply = await eventually(async () => {
      const r = (await H.sink.messages(dest))[0]?.reply;
      return r && (r.complete || r.closedEarly) ? r : null;
    }, 5_000);
    assert.ok(reply, 'the host closed the gateway connection within 5 s of its answer');
    assert.equal(reply.complete, false, `the host did not read the whole reply (the sink wrote ${reply.written} of ${reply.bytes} bytes)`);
    assert.equal(reply.closedEarly, true);
    expectVerify(await ws.verify(sent.sessionId, sent.code), 'APPROVED', sent.sessionId, 4);
  });

  it('concurrent requests while the gateway fails: every one answers 502, none names an unsent session', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    await H.sink.setMode(dest, 'fail500');
    const answers = await Promise.all(Array.from({ length: 5 }, () => ws.request(ws.body(dest))));
    for (const a of answers) {
      // A reuse answer must never name a session whose SMS was not confirmed.
      assert.notEqual(a.status, 200, `no success while the gateway fails: ${a.text}`);
      expectVectorBody(a, '502');
    }
    await H.sink.setMode(dest, 'ok');
    const ok = await ws.issue(dest);
    expectVerify(await ws.verify(ok.sessionId, ok.code), 'APPROVED', ok.sessionId, 4);
  });

  it('gateway hang → 502 after ~10 s, no session, and the timeout is charged (limit 1 → next is 429)', async () => {
    const ws = await newWorkspace({ policy: { sendsPerDestination: { limit: 1, windowSeconds: 60 } } });
    const dest = newDest();
    await H.sink.setMode(dest, 'hang');
    const started = Date.now();
    const res = await ws.request(ws.body(dest), { timeoutMs: 40_000 });
    const elapsed = Date.now() - started;
    expectVectorBody(res, '502');
    assert.ok(elapsed >= 9_500 && elapsed < 20_000, `answered after ${elapsed} ms (the gateway timeout is 10 s)`);
    const msgs = await H.sink.messages(dest);
    assert.equal(msgs.length, 1);
    await assertNoSession(ws, msgs[0]);

    await H.sink.setMode(dest, 'ok');
    const next = await ws.request(ws.body(dest));
    const secs = expectRetryAfter(next, 'RATE_LIMITED', 60);
    assert.ok(secs >= 40, `the window started with the timed-out send (${secs} s left)`);
    assert.equal((await H.sink.messages(dest)).length, 1, 'no SMS while rate limited');
  });
});

describe('rate limit', () => {
  it('sendsPerDestination {limit 2, window 60 s}, reuse off: third request → 429 with Retry-After', async () => {
    const ws = await newWorkspace({ policy: { sendsPerDestination: { limit: 2, windowSeconds: 60 }, reuse: false } });
    const dest = newDest();
    await ws.issue(dest);
    await ws.issue(dest);
    const res = await ws.request(ws.body(dest));
    const secs = expectRetryAfter(res, 'RATE_LIMITED', 60);
    assert.equal(res.json.message, 'Too many OTP requests for this destination. Try again later.');
    assert.equal(res.text, JSON.stringify({
      success: false,
      message: 'Too many OTP requests for this destination. Try again later.',
      error: { code: 'RATE_LIMITED', retryAfterSeconds: secs },
    }));
    assert.equal((await H.sink.messages(dest)).length, 2, 'no third SMS');
    // Per destination: another number of the same workspace is not limited.
    await ws.issue(newDest());
    // Every purpose shares the destination's window.
    expectRetryAfter(await ws.request(ws.body(dest, { purpose: 'TRANSACTION' })), 'RATE_LIMITED', 60);
    // The second dialect shares it too.
    const zend = await ws.zendSend({ phone_number: dest, app: 'x' });
    expectRetryAfter(zend, 'RATE_LIMITED', 60);
  });

  it('reuse does not count against the limit', async () => {
    const ws = await newWorkspace({ policy: { sendsPerDestination: { limit: 2, windowSeconds: 60 } } });
    const dest = newDest();
    const first = await ws.issue(dest, { purpose: 'LOGIN' });
    for (let i = 0; i < 3; i++) {
      const r = expectStatus(await ws.request(ws.body(dest, { purpose: 'LOGIN' })), 200);
      assert.equal(r.data.reused, true);
      assert.equal(r.data.sessionId, first.sessionId);
    }
    await ws.issue(dest, { purpose: 'PASSWORD_RESET' }); // the second send of the window
    expectRetryAfter(await ws.request(ws.body(dest, { purpose: 'TRANSACTION' })), 'RATE_LIMITED', 60);
    // The active session is still reused while the limit is reached.
    const r = expectStatus(await ws.request(ws.body(dest, { purpose: 'LOGIN' })), 200);
    assert.equal(r.data.reused, true);
    assert.equal((await H.sink.messages(dest)).length, 2);
  });

  it('a refused request is audited as rate_limited', async () => {
    const ws = await newWorkspace({ policy: { sendsPerDestination: { limit: 1, windowSeconds: 60 }, reuse: false } });
    const dest = newDest();
    await ws.issue(dest);
    expectRetryAfter(await ws.request(ws.body(dest)), 'RATE_LIMITED', 60);
    const found = await eventually(async () => {
      const j = expectStatus(await ws.audit(), 200);
      return j.data.events.find((e) => e.event === 'rate_limited');
    }, 2500);
    assert.ok(found, 'a rate_limited event');
    assert.equal(found.status, 'RATE_LIMITED');
  });
});

describe('failure streak', () => {
  const OTHER_PURPOSES = ['TRANSACTION', 'DEVICE_VERIFICATION', 'EMAIL_VERIFICATION', 'ACCOUNT_RECOVERY', 'KYC_VERIFICATION'];

  /** New sends to `dest` until one is refused (the streak is recorded after the verify answer). */
  async function refusedSend(ws, dest) {
    await sleep(300);
    let res;
    for (const purpose of OTHER_PURPOSES) {
      res = await ws.request(ws.body(dest, { purpose }));
      if (res.status === 429) return res;
      await sleep(400);
    }
    return res;
  }

  it('failureStreakLimit INVALIDs across sessions lock new sends (429 DESTINATION_LOCKED); reuse still answers', async () => {
    const ws = await newWorkspace({ policy: { failureStreakLimit: 5, maxAttempts: 10, sendsPerDestination: { limit: 100, windowSeconds: 600 } } });
    const dest = newDest();
    const a = await ws.issue(dest, { purpose: 'LOGIN' });
    for (let i = 0; i < 3; i++) await ws.verify(a.sessionId, wrongCode(a.code));
    const b = await ws.issue(dest, { purpose: 'PASSWORD_RESET' }); // a new code does not reset the streak
    for (let i = 0; i < 2; i++) await ws.verify(b.sessionId, wrongCode(b.code));
    const res = await refusedSend(ws, dest);
    const secs = expectRetryAfter(res, 'DESTINATION_LOCKED', 3600);
    assert.ok(secs > 3500, `locked for about an hour (${secs} s)`);
    assert.equal(res.text, JSON.stringify({
      success: false,
      message: 'Too many failed verifications for this destination. Try again later.',
      error: { code: 'DESTINATION_LOCKED', retryAfterSeconds: secs },
    }));
    const sent = (await H.sink.messages(dest)).length;
    // The active session is still reused while the destination is locked (no SMS).
    const again = expectStatus(await ws.request(ws.body(dest, { purpose: 'LOGIN' })), 200);
    assert.equal(again.data.reused, true);
    assert.equal(again.data.sessionId, a.sessionId);
    assert.equal(again.data.attemptsLeft, 7);
    assert.equal((await H.sink.messages(dest)).length, sent);
    // Other destinations of the workspace are not affected.
    await ws.issue(newDest());
  });

  it('a success resets the streak', async () => {
    const ws = await newWorkspace({ policy: { failureStreakLimit: 5, maxAttempts: 10, sendsPerDestination: { limit: 100, windowSeconds: 600 } } });
    const dest = newDest();
    const a = await ws.issue(dest, { purpose: 'LOGIN' });
    for (let i = 0; i < 4; i++) await ws.verify(a.sessionId, wrongCode(a.code));
    expectVerify(await ws.verify(a.sessionId, a.code), 'APPROVED', a.sessionId, 5);
    const b = await ws.issue(dest, { purpose: 'PASSWORD_RESET' });
    for (let i = 0; i < 4; i++) await ws.verify(b.sessionId, wrongCode(b.code));
    await sleep(1000);
    const res = await ws.request(ws.body(dest, { purpose: 'TRANSACTION' }));
    expectStatus(res, 200, '4 failures after a success do not lock');
  });
});

