// SPEC §7 "Cancel": POST /v1/messaging/otp/sessions/{id}/cancel and POST /otp/{id}/cancel.
// A pending session becomes CANCELED (verify answers EXPIRED), reuse never returns it, audit
// `canceled`; a session that is no longer pending answers the verify status's code and HTTP
// status in an error envelope.

import { describe, it } from 'node:test';
import {
  assert, call, eventually, expectError, expectStatus, expectVerify, newDest, newWorkspace, useHarness,
  wrongCode,
} from './lib.mjs';

useHarness();

const cancelV1 = (ws, id) => call('POST', `/v1/messaging/otp/sessions/${encodeURIComponent(id)}/cancel`, { key: ws.key });
const cancelZend = (ws, id) => call('POST', `/otp/${encodeURIComponent(id)}/cancel`, { key: ws.key });

describe('cancel', () => {
  it('a pending session → 200 with its view, state CANCELED; verify then answers EXPIRED; status CANCELED; audit `canceled`', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const s = await ws.issue(dest);
    expectVerify(await ws.verify(s.sessionId, wrongCode(s.code)), 'INVALID', s.sessionId, 4);
    const res = await cancelV1(ws, s.sessionId);
    const j = expectStatus(res, 200, 'cancel');
    assert.equal(j.success, true);
    assert.equal(j.data.sessionId, s.sessionId);
    assert.equal(j.data.state, 'CANCELED');
    assert.equal(j.data.attemptsUsed, 1, 'attempts used are kept');
    assert.ok(!res.text.includes(s.code), 'no code in the answer');
    assert.ok(!res.text.includes(dest), 'the destination is masked');

    expectVerify(await ws.verify(s.sessionId, s.code), 'EXPIRED', s.sessionId, 4);
    assert.equal(expectStatus(await ws.status(s.sessionId), 200).data.state, 'CANCELED');
    // Canceling again: it is no longer pending → 410 EXPIRED (the verify status), nothing changes.
    expectError(await cancelV1(ws, s.sessionId), 410, 'EXPIRED');
    await eventually(async () => {
      const events = expectStatus(await ws.audit({ sessionId: s.sessionId }), 200).data.events.map((e) => e.event);
      assert.ok(events.includes('canceled'), `audit: ${events}`);
      assert.equal(events.filter((e) => e === 'canceled').length, 1);
    }, 3000);
  });

  it('reuse never returns a canceled session: the next request sends a new code, which works', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const s = await ws.issue(dest);
    expectStatus(await cancelV1(ws, s.sessionId), 200);
    const again = await ws.issue(dest); // asserts reused:false and one new SMS
    assert.notEqual(again.sessionId, s.sessionId);
    expectVerify(await ws.verify(again.sessionId, again.code), 'APPROVED', again.sessionId, 4);
  });

  it('the second dialect: POST /otp/{id}/cancel → 200 with its status body (status "expired")', async () => {
    const ws = await newWorkspace();
    const { id } = expectStatus(await ws.zendSend({ phone_number: newDest(), app: 'Acme' }), 200);
    const j = expectStatus(await cancelZend(ws, id), 200, 'zend cancel');
    const st = expectStatus(await ws.zendStatus(id), 200);
    assert.deepEqual(j, st, 'the answer is the status body');
    assert.equal(st.status, 'expired');
    expectError(await cancelZend(ws, id), 410, 'EXPIRED');
  });

  it('approved → 409 ALREADY_USED, locked → 423 MAX_ATTEMPTS_REACHED (error envelopes); both stay as they were', async () => {
    const ws = await newWorkspace({ policy: { maxAttempts: 2 } });
    const a = await ws.issue(newDest());
    expectVerify(await ws.verify(a.sessionId, a.code), 'APPROVED', a.sessionId, 1);
    expectError(await cancelV1(ws, a.sessionId), 409, 'ALREADY_USED');
    assert.equal(expectStatus(await ws.status(a.sessionId), 200).data.state, 'APPROVED');

    const b = await ws.issue(newDest());
    await ws.verify(b.sessionId, wrongCode(b.code));
    await ws.verify(b.sessionId, wrongCode(b.code));
    expectError(await cancelV1(ws, b.sessionId), 423, 'MAX_ATTEMPTS_REACHED');
    assert.equal(expectStatus(await ws.status(b.sessionId), 200).data.state, 'LOCKED');
  });

  it('unknown, malformed or another workspace\'s session → 404; GET on the route → 405; no key → 401', async () => {
    const ws = await newWorkspace();
    const other = await newWorkspace();
    const s = await other.issue(newDest());
    for (const id of ['3f1c2b9e-8a47-4d0e-9b6a-1c2d3e4f5a6b', 'not-an-id', s.sessionId]) {
      const res = await cancelV1(ws, id);
      assert.equal(res.status, 404, res.text);
    }
    assert.equal((await cancelZend(ws, s.sessionId)).status, 404);
    // Still pending for its own workspace.
    expectVerify(await other.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 4);
    expectError(await call('GET', `/v1/messaging/otp/sessions/${s.sessionId}/cancel`, { key: ws.key }), 405, 'METHOD_NOT_ALLOWED');
    expectError(await call('POST', `/v1/messaging/otp/sessions/${s.sessionId}/cancel`, {}), 401, 'UNAUTHORIZED');
  });

  it('cancel racing right verifies: never both a 200 cancel and an APPROVED verify', async () => {
    const ws = await newWorkspace();
    for (let round = 0; round < 3; round++) {
      const s = await ws.issue(newDest());
      const answers = await Promise.all([
        ...Array.from({ length: 5 }, () => cancelV1(ws, s.sessionId)),
        ...Array.from({ length: 5 }, () => ws.verify(s.sessionId, s.code)),
      ]);
      const canceled = answers.slice(0, 5).filter((r) => r.status === 200).length;
      const approved = answers.slice(5).filter((r) => r.json?.data?.status === 'APPROVED').length;
      assert.ok(canceled <= 5 && approved <= 1, `canceled ${canceled}, approved ${approved}`);
      assert.ok((canceled > 0) !== (approved > 0), `exactly one side wins: canceled ${canceled}, approved ${approved}`);
      const state = expectStatus(await ws.status(s.sessionId), 200).data.state;
      assert.equal(state, approved ? 'APPROVED' : 'CANCELED');
      for (const r of answers.slice(0, 5)) {
        if (r.status !== 200) assert.ok([409, 410].includes(r.status), r.text);
      }
    }
  });
});
