// POST /v1/messaging/otp/verify (every row of SPEC §3's table, byte for byte), the session status
// route, workspace isolation, and concurrent verification.

import { describe, it } from 'node:test';
import {
  assert, call, eventually, expectError, expectStatus, expectVerify, mask, newDest, newWorkspace, RFC3339, useHarness,
  verifyBody, wrongCode,
} from './lib.mjs';

useHarness();

const UNKNOWN = '3f1c2b9e-8a47-4d0e-9b6a-1c2d3e4f5a6b';

describe('verify', () => {
  it('the right code → 200 APPROVED (exact body), attemptsLeft = max − 1', async () => {
    const ws = await newWorkspace();
    const s = await ws.issue(newDest());
    expectVerify(await ws.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 4);
  });

  it('a wrong code → 400 INVALID (exact body), then the right code still approves', async () => {
    const ws = await newWorkspace();
    const s = await ws.issue(newDest());
    expectVerify(await ws.verify(s.sessionId, wrongCode(s.code)), 'INVALID', s.sessionId, 4);
    expectVerify(await ws.verify(s.sessionId, wrongCode(s.code)), 'INVALID', s.sessionId, 3);
    expectVerify(await ws.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 2);
  });

  it('after approval → 409 ALREADY_USED for the right and wrong codes, attempts unchanged', async () => {
    const ws = await newWorkspace();
    const s = await ws.issue(newDest());
    await ws.verify(s.sessionId, wrongCode(s.code));
    expectVerify(await ws.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 3);
    expectVerify(await ws.verify(s.sessionId, s.code), 'ALREADY_USED', s.sessionId, 3);
    expectVerify(await ws.verify(s.sessionId, wrongCode(s.code)), 'ALREADY_USED', s.sessionId, 3);
    const st = expectStatus(await ws.status(s.sessionId), 200);
    assert.equal(st.data.attemptsUsed, 2);
  });

  it('max attempts: the last wrong attempt locks; then 423 even with the right code', async () => {
    const ws = await newWorkspace({ policy: { maxAttempts: 3 } });
    const s = await ws.issue(newDest());
    const bad = wrongCode(s.code);
    expectVerify(await ws.verify(s.sessionId, bad), 'INVALID', s.sessionId, 2);
    expectVerify(await ws.verify(s.sessionId, bad), 'INVALID', s.sessionId, 1);
    expectVerify(await ws.verify(s.sessionId, bad), 'INVALID', s.sessionId, 0);
    expectVerify(await ws.verify(s.sessionId, s.code), 'MAX_ATTEMPTS_REACHED', s.sessionId, 0);
    expectVerify(await ws.verify(s.sessionId, bad), 'MAX_ATTEMPTS_REACHED', s.sessionId, 0);
    const st = expectStatus(await ws.status(s.sessionId), 200);
    assert.equal(st.data.state, 'LOCKED');
    assert.equal(st.data.attemptsUsed, 3);
    assert.equal(st.data.maxAttempts, 3);
    assert.equal(st.data.verifiedAt, null);
  });

  it('a locked session is not reused: the next request sends a new code', async () => {
    const ws = await newWorkspace({ policy: { maxAttempts: 1 } });
    const dest = newDest();
    const s = await ws.issue(dest);
    expectVerify(await ws.verify(s.sessionId, wrongCode(s.code)), 'INVALID', s.sessionId, 0);
    const next = await ws.issue(dest);
    assert.notEqual(next.sessionId, s.sessionId);
    expectVerify(await ws.verify(next.sessionId, next.code), 'APPROVED', next.sessionId, 0);
  });

  it('unknown session id → 404 NOT_FOUND (exact body), attemptsLeft 0, the id echoed', async () => {
    const ws = await newWorkspace();
    expectVerify(await ws.verify(UNKNOWN, '123456'), 'NOT_FOUND', UNKNOWN, 0);
  });

  it('malformed session ids → 404 NOT_FOUND echoing the id given', async () => {
    const ws = await newWorkspace();
    for (const id of ['not-a-uuid', '', '../../etc/passwd', `${UNKNOWN}x`, UNKNOWN.slice(1), 'ws_x:3f1c2b9e-8a47-4d0e-9b6a-1c2d3e4f5a6b']) {
      const res = await ws.verify(id, '123456');
      const want = verifyBody('NOT_FOUND', id, 0);
      assert.equal(res.status, 404, `${JSON.stringify(id)}: ${res.text}`);
      assert.equal(res.text, want.body, `exact body for ${JSON.stringify(id)}`);
    }
  });

  it('another workspace\'s session is NOT_FOUND and costs the owner nothing', async () => {
    const owner = await newWorkspace();
    const other = await newWorkspace();
    const s = await owner.issue(newDest());
    // Even the right code does not work from another workspace.
    expectVerify(await other.verify(s.sessionId, s.code), 'NOT_FOUND', s.sessionId, 0);
    expectVerify(await other.verify(s.sessionId, wrongCode(s.code)), 'NOT_FOUND', s.sessionId, 0);
    expectError(await other.status(s.sessionId), 404, 'NOT_FOUND', { message: 'OTP session not found' });
    // The owner's attempts are untouched.
    expectVerify(await owner.verify(s.sessionId, wrongCode(s.code)), 'INVALID', s.sessionId, 4);
    expectVerify(await owner.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 3);
  });

  it('an upper-case session id is the same session', async () => {
    const ws = await newWorkspace();
    const s = await ws.issue(newDest());
    const res = await ws.verify(s.sessionId.toUpperCase(), s.code);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.data.status, 'APPROVED');
  });
});

describe('session status', () => {
  it('PENDING → APPROVED, with the masked destination and never the code', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const s = await ws.issue(dest, { app: 'Acme', purpose: 'KYC_VERIFICATION' });
    const res = await ws.status(s.sessionId);
    const j = expectStatus(res, 200);
    assert.equal(j.success, true);
    assert.deepEqual(Object.keys(j.data).sort(), [
      'app', 'attemptsUsed', 'channel', 'createdAt', 'delivery', 'dest', 'expiresAt', 'maxAttempts', 'purpose', 'sessionId', 'state', 'verifiedAt',
    ]);
    assert.equal(j.data.delivery, 'accepted', 'SPEC §8: the gateway took it, no receipt yet');
    assert.equal(j.data.sessionId, s.sessionId);
    assert.equal(j.data.dest, mask(dest));
    assert.match(j.data.dest, /^\+\d{3}\*+\d{4}$/);
    assert.ok(!res.text.includes(dest), 'the full number is not shown');
    assert.equal(j.data.purpose, 'KYC_VERIFICATION');
    assert.equal(j.data.app, 'Acme');
    assert.equal(j.data.channel, 'sms');
    assert.equal(j.data.state, 'PENDING');
    assert.equal(j.data.attemptsUsed, 0);
    assert.equal(j.data.maxAttempts, 5);
    assert.match(j.data.createdAt, RFC3339);
    assert.match(j.data.expiresAt, RFC3339);
    const lifetime = Date.parse(j.data.expiresAt) - Date.parse(j.data.createdAt);
    assert.ok(Math.abs(lifetime - 300_000) < 1000, `expiresAt − createdAt = ${lifetime} ms`);
    assert.ok(Math.abs(Date.parse(j.data.createdAt) - Date.now()) < 60_000, 'createdAt is now');
    assert.equal(j.data.verifiedAt, null);
    assert.ok(!/hash/i.test(res.text), 'no hash in the status');

    await ws.verify(s.sessionId, wrongCode(s.code));
    const mid = expectStatus(await ws.status(s.sessionId), 200);
    assert.equal(mid.data.state, 'PENDING');
    assert.equal(mid.data.attemptsUsed, 1);

    expectVerify(await ws.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 3);
    const done = expectStatus(await ws.status(s.sessionId), 200);
    assert.equal(done.data.state, 'APPROVED');
    assert.equal(done.data.attemptsUsed, 2);
    assert.match(done.data.verifiedAt, RFC3339);
    assert.ok(Date.parse(done.data.verifiedAt) >= Date.parse(done.data.createdAt));
  });

  it('masks like +233*****7745', async () => {
    const ws = await newWorkspace();
    const dest = '+233202007745';
    const s = await ws.issue(dest);
    const j = expectStatus(await ws.status(s.sessionId), 200);
    assert.equal(j.data.dest, '+233*****7745');
  });

  it('unknown and malformed ids → 404 NOT_FOUND', async () => {
    const ws = await newWorkspace();
    for (const id of [UNKNOWN, 'not-a-uuid']) {
      expectError(await ws.status(id), 404, 'NOT_FOUND', { message: 'OTP session not found' });
    }
  });
});

describe('concurrency', () => {
  it('20 parallel wrong verifies consume exactly maxAttempts (5 INVALID, 15 locked)', async () => {
    const ws = await newWorkspace();
    const s = await ws.issue(newDest());
    const bad = wrongCode(s.code);
    const answers = await Promise.all(Array.from({ length: 20 }, () => ws.verify(s.sessionId, bad)));
    const invalid = answers.filter((a) => a.status === 400);
    const locked = answers.filter((a) => a.status === 423);
    assert.equal(invalid.length + locked.length, 20, `only 400/423: ${answers.map((a) => a.status).join(',')}`);
    assert.equal(invalid.length, 5, 'exactly maxAttempts INVALID answers');
    assert.equal(locked.length, 15);
    for (const a of invalid) assert.equal(a.json.data.status, 'INVALID');
    assert.deepEqual(invalid.map((a) => a.json.data.attemptsLeft).sort(), [0, 1, 2, 3, 4], 'each attempt counted once');
    for (const a of locked) assert.equal(a.text, verifyBody('MAX_ATTEMPTS_REACHED', s.sessionId, 0).body);
    expectVerify(await ws.verify(s.sessionId, s.code), 'MAX_ATTEMPTS_REACHED', s.sessionId, 0);
    const st = expectStatus(await ws.status(s.sessionId), 200);
    assert.equal(st.data.attemptsUsed, 5);
    assert.equal(st.data.state, 'LOCKED');
  });

  it('10 parallel right verifies → exactly one APPROVED, nine ALREADY_USED', async () => {
    const ws = await newWorkspace();
    const s = await ws.issue(newDest());
    const answers = await Promise.all(Array.from({ length: 10 }, () => ws.verify(s.sessionId, s.code)));
    const approved = answers.filter((a) => a.status === 200);
    const used = answers.filter((a) => a.status === 409);
    assert.equal(approved.length, 1, `statuses ${answers.map((a) => a.status).join(',')}`);
    assert.equal(used.length, 9);
    assert.equal(approved[0].text, verifyBody('APPROVED', s.sessionId, 4).body);
    for (const a of used) assert.equal(a.text, verifyBody('ALREADY_USED', s.sessionId, 4).body);
  });

  it('parallel right and wrong codes: at most one approval, attempts never over-counted', async () => {
    const ws = await newWorkspace({ policy: { maxAttempts: 3 } });
    const s = await ws.issue(newDest());
    const bad = wrongCode(s.code);
    const codes = Array.from({ length: 12 }, (_, i) => (i % 3 === 0 ? s.code : bad));
    const answers = await Promise.all(codes.map((c) => ws.verify(s.sessionId, c)));
    const by = (st) => answers.filter((a) => a.json?.data?.status === st).length;
    assert.ok(by('APPROVED') <= 1, 'approved at most once');
    assert.ok(by('APPROVED') + by('INVALID') <= 3, 'no more than maxAttempts attempts consumed');
    assert.equal(by('APPROVED') + by('INVALID') + by('ALREADY_USED') + by('MAX_ATTEMPTS_REACHED'), 12);
    const st = expectStatus(await ws.status(s.sessionId), 200);
    assert.equal(st.data.attemptsUsed, by('APPROVED') + by('INVALID'));
  });
});

describe('expiry (slow: waits 61 s)', () => {
  it('after ttlSeconds → 410 EXPIRED even with the right code; status EXPIRED; a new request sends; analytics counts it expired', async () => {
    const ws = await newWorkspace({ policy: { ttlSeconds: 60 } });
    const dest = newDest();
    const s = await ws.issue(dest);
    assert.ok(s.data.expiresInSeconds <= 60 && s.data.expiresInSeconds > 55);
    expectVerify(await ws.verify(s.sessionId, wrongCode(s.code)), 'INVALID', s.sessionId, 4);
    const totals = async () => expectStatus(await call('GET', '/otp/analytics?days=1', { key: ws.key }), 200).totals;
    const live = await eventually(async () => ((await totals()).sent === 1 ? totals() : null), 2500);
    assert.equal(live?.expired, 0, 'a live session is not expired');
    // SLOW: the one real wait of the suite.
    await new Promise((r) => setTimeout(r, 61_000));
    const after = await totals();
    assert.deepEqual([after.sent, after.expired, after.verified, after.failed], [1, 1, 0, 0], 'reached expiry unverified');
    expectVerify(await ws.verify(s.sessionId, s.code), 'EXPIRED', s.sessionId, 4);
    expectVerify(await ws.verify(s.sessionId, wrongCode(s.code)), 'EXPIRED', s.sessionId, 4);
    const st = expectStatus(await ws.status(s.sessionId), 200);
    assert.equal(st.data.state, 'EXPIRED');
    assert.equal(st.data.attemptsUsed, 1);
    const next = await ws.issue(dest);
    assert.notEqual(next.sessionId, s.sessionId, 'an expired session is not reused');
    assert.ok(next.data.expiresInSeconds > 55);
    const both = await eventually(async () => ((await totals()).sent === 2 ? totals() : null), 2500);
    assert.equal(both?.expired, 1, 'the new session is live, the old one expired');
  });
});
