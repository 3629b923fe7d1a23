// SPEC §7 "Verify by destination": POST /v1/messaging/otp/verify {dest, purpose, code} (exactly one
// of sessionId or dest+purpose) checks the active session of (workspace, dest, purpose) with the
// same counting, streak and answers as by id; none → 404 NOT_FOUND.

import { describe, it } from 'node:test';
import {
  assert, call, expectError, expectStatus, expectVerify, newDest, newWorkspace, useHarness, wrongCode,
} from './lib.mjs';

useHarness();

const byDest = (ws, dest, purpose, code) =>
  call('POST', '/v1/messaging/otp/verify', { key: ws.key, body: { dest, purpose, code } });

describe('verify by destination', () => {
  it('the right code for (dest, purpose) → APPROVED naming the session; then NOT_FOUND (no active session)', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const s = await ws.issue(dest);
    expectVerify(await byDest(ws, dest, 'LOGIN', s.code), 'APPROVED', s.sessionId, 4);
    expectVerify(await ws.verify(s.sessionId, s.code), 'ALREADY_USED', s.sessionId, 4);
    const res = await byDest(ws, dest, 'LOGIN', s.code);
    const j = expectStatus(res, 404);
    assert.deepEqual(j, { success: false, message: 'OTP session not found', data: { sessionId: null, status: 'NOT_FOUND', verified: false, message: j.data.message, attemptsLeft: 0 } });
  });

  it('wrong codes count exactly as by id: attempts shared between the two ways, then MAX_ATTEMPTS_REACHED', async () => {
    const ws = await newWorkspace({ policy: { maxAttempts: 3 } });
    const dest = newDest();
    const s = await ws.issue(dest);
    const wrong = wrongCode(s.code);
    expectVerify(await byDest(ws, dest, 'LOGIN', wrong), 'INVALID', s.sessionId, 2);
    expectVerify(await ws.verify(s.sessionId, wrong), 'INVALID', s.sessionId, 1);
    expectVerify(await byDest(ws, dest, 'LOGIN', wrong), 'INVALID', s.sessionId, 0);
    // Locked: no longer active for the destination, and by id it is out of attempts.
    assert.equal((await byDest(ws, dest, 'LOGIN', s.code)).status, 404);
    expectVerify(await ws.verify(s.sessionId, s.code), 'MAX_ATTEMPTS_REACHED', s.sessionId, 0);
    assert.equal(expectStatus(await ws.status(s.sessionId), 200).data.attemptsUsed, 3);
  });

  it('20 parallel wrong codes by destination consume exactly maxAttempts', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const s = await ws.issue(dest);
    const answers = await Promise.all(Array.from({ length: 20 }, () => byDest(ws, dest, 'LOGIN', wrongCode(s.code))));
    const invalid = answers.filter((r) => r.json?.data?.status === 'INVALID').length;
    assert.equal(invalid, 5, answers.map((r) => r.json?.data?.status).join(','));
    assert.equal(expectStatus(await ws.status(s.sessionId), 200).data.attemptsUsed, 5);
  });

  it('the purpose selects the session; another number, purpose or workspace has none', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const login = await ws.issue(dest);
    const reset = await ws.issue(dest, { purpose: 'PASSWORD_RESET' });
    assert.equal((await byDest(ws, dest, 'KYC_VERIFICATION', login.code)).status, 404);
    assert.equal((await byDest(ws, newDest(), 'LOGIN', login.code)).status, 404);
    const other = await newWorkspace();
    assert.equal((await byDest(other, dest, 'LOGIN', login.code)).status, 404);
    expectVerify(await byDest(ws, dest, 'PASSWORD_RESET', reset.code), 'APPROVED', reset.sessionId, 4);
    expectVerify(await byDest(ws, dest, 'LOGIN', login.code), 'APPROVED', login.sessionId, 4);
  });

  it('a canceled session is not active: by destination → 404', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const s = await ws.issue(dest);
    expectStatus(await call('POST', `/v1/messaging/otp/sessions/${s.sessionId}/cancel`, { key: ws.key }), 200);
    assert.equal((await byDest(ws, dest, 'LOGIN', s.code)).status, 404);
  });

  it('exactly one of sessionId or dest+purpose: both, or dest without purpose → 400 naming the field', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const s = await ws.issue(dest);
    const verify = (body) => call('POST', '/v1/messaging/otp/verify', { key: ws.key, body });
    expectError(await verify({ sessionId: s.sessionId, dest, purpose: 'LOGIN', code: s.code }), 400, 'VALIDATION_ERROR', { field: 'sessionId' });
    expectError(await verify({ dest, code: s.code }), 400, 'VALIDATION_ERROR', { field: 'purpose' });
    expectError(await verify({ purpose: 'LOGIN', code: s.code }), 400, 'VALIDATION_ERROR', { field: 'dest' });
    expectError(await verify({ dest: '0202007745', purpose: 'LOGIN', code: s.code }), 400, 'VALIDATION_ERROR', { field: 'dest' });
    expectError(await verify({ code: s.code }), 400, 'VALIDATION_ERROR', { field: 'sessionId' });
    // Still pending after all of those.
    expectVerify(await byDest(ws, dest, 'LOGIN', s.code), 'APPROVED', s.sessionId, 4);
  });
});
