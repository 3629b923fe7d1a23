// The claims of SECURITY.md that the rest of the suite does not already prove (each section
// there names its tests): cross-workspace answers indistinguishable from missing sessions down
// to the headers, the default failure streak (100) across sessions, identical 401s for every
// wrong admin token and API key form, replay across dialects, and random session ids.

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { describe, it } from 'node:test';
import { freePort, randomToken, ROOT } from './host.mjs';
import {
  assert, call, expectError, expectRetryAfter, expectStatus, expectVerify, H, newDest, newWorkspace, sleep, useHarness,
  UUID_V4, wrongCode,
} from './lib.mjs';

useHarness();

// Headers that may differ between two answers without telling anything about the session.
// x-otpkit-wasm-bytes (tracing only) is the isolate's memory at answer time, like date.
const VOLATILE = new Set(['date', 'cf-ray', 'x-request-id', 'x-otpkit-wasm-bytes']);

/** The answer with `from` replaced by `to` everywhere (an id echoed in the body). */
function normalized(res, from, to) {
  const headers = {};
  for (const [k, v] of res.headers) if (!VOLATILE.has(k)) headers[k] = v.split(from).join(to);
  return { status: res.status, headers, body: res.text.split(from).join(to) };
}

/** Every credential form in `forms` gets a 401 identical (status, body, headers) to the first's, on every route. */
async function expectIdentical401s(routes, forms) {
  for (const [method, route, opts] of routes) {
    let first = null;
    for (const [name, auth] of Object.entries(forms)) {
      const res = await call(method, route, { ...opts, ...auth });
      expectError(res, 401, 'UNAUTHORIZED');
      const got = normalized(res, '\0', '\0');
      first ??= { name, got };
      assert.deepEqual(got, first.got, `${method} ${route}: "${name}" vs "${first.name}"`);
    }
  }
}

/** Asserts two answers equal in status, body and headers (but date), once `idB` reads `idA`. */
function assertSameAnswer(a, idA, b, idB, what) {
  assert.deepEqual(normalized(b, idB, idA), normalized(a, idA, idA), `${what}: an existing foreign session vs a missing one`);
}

describe('security', () => {
  it('another workspace\'s session answers exactly like a missing one (status, body, headers) on verify and status, both dialects', async () => {
    const owner = await newWorkspace();
    const other = await newWorkspace();
    const s = await owner.issue(newDest());
    const missing = randomUUID();
    const probes = [
      ['v1 verify (right code)', (id) => other.verify(id, s.code)],
      ['v1 verify (wrong code)', (id) => other.verify(id, wrongCode(s.code))],
      ['v1 status', (id) => other.status(id)],
      ['second-dialect verify', (id) => other.zendVerify(id, s.code)],
      ['second-dialect status', (id) => other.zendStatus(id)],
    ];
    for (const [what, probe] of probes) {
      const foreign = await probe(s.sessionId);
      const absent = await probe(missing);
      assert.equal(foreign.status, 404, `${what}: ${foreign.text}`);
      assertSameAnswer(foreign, s.sessionId, absent, missing, what);
      // A malformed id is answered like a missing one too (its id echoed as given).
      const malformed = await probe('nope');
      assert.equal(malformed.status, 404, `${what} malformed: ${malformed.text}`);
      assert.equal(malformed.text.split('nope').join(s.sessionId), foreign.text, `${what}: malformed vs foreign body`);
    }
    // None of it cost the owner an attempt.
    expectVerify(await owner.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 4);
  });

  it('failure streak at the default limit (100): 99 INVALIDs across sessions do not lock, the 100th does; a new code does not reset it; reuse does not bypass it', async () => {
    const ws = await newWorkspace();
    // Only the send limit is raised, so 21 codes can be sent to one number; everything else is the default.
    const patched = expectStatus(await call('PATCH', `/v1/admin/workspaces/${ws.id}`, {
      admin: true, body: { policy: { sendsPerDestination: { limit: 100, windowSeconds: 600 } } },
    }), 200, 'PATCH policy');
    assert.equal(patched.data.policy.failureStreakLimit, 100, 'SPEC §2 default failureStreakLimit');
    assert.equal(patched.data.policy.maxAttempts, 5, 'SPEC §2 default maxAttempts');
    const dest = newDest();

    // 19 sessions used up (5 INVALIDs each: 95), then 4 on a 20th: 99 consecutive failures.
    for (let i = 0; i < 19; i++) {
      const s = await ws.issue(dest);
      for (let left = 4; left >= 0; left--) expectVerify(await ws.verify(s.sessionId, wrongCode(s.code)), 'INVALID', s.sessionId, left);
    }
    const s20 = await ws.issue(dest);
    for (let left = 4; left >= 1; left--) expectVerify(await ws.verify(s20.sessionId, wrongCode(s20.code)), 'INVALID', s20.sessionId, left);
    await sleep(1000); // the Worker records the streak after answering
    // At 99 a new code is still sent (and it will not reset the streak).
    const s21 = await ws.issue(dest, { purpose: 'PASSWORD_RESET' });
    expectVerify(await ws.verify(s21.sessionId, wrongCode(s21.code)), 'INVALID', s21.sessionId, 4); // 100
    await sleep(1000);
    const sent = (await H.sink.messages(dest)).length;
    const locked = await ws.request(ws.body(dest, { purpose: 'TRANSACTION' }));
    const secs = expectRetryAfter(locked, 'DESTINATION_LOCKED', 3600);
    assert.ok(secs > 3500, `locked for about an hour (${secs} s)`);
    expectError(await ws.zendSend({ phone_number: dest, app: 'A', purpose: 'KYC_VERIFICATION' }), 429, 'DESTINATION_LOCKED');

    // Reuse answers with the sessions that exist, with the attempts they have left: no new attempts.
    const r20 = expectStatus(await ws.request(ws.body(dest)), 200).data;
    assert.deepEqual([r20.reused, r20.sessionId, r20.attemptsLeft], [true, s20.sessionId, 1]);
    const r21 = expectStatus(await ws.request(ws.body(dest, { purpose: 'PASSWORD_RESET' })), 200).data;
    assert.deepEqual([r21.reused, r21.sessionId, r21.attemptsLeft], [true, s21.sessionId, 4]);
    // Once the reused session is used up, there is no new code for its purpose either.
    expectVerify(await ws.verify(s20.sessionId, wrongCode(s20.code)), 'INVALID', s20.sessionId, 0);
    await sleep(500);
    expectError(await ws.request(ws.body(dest)), 429, 'DESTINATION_LOCKED');
    // Turning reuse off does not open it either.
    expectStatus(await call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { policy: { reuse: false } } }), 200);
    expectError(await ws.request(ws.body(dest, { purpose: 'PASSWORD_RESET' })), 429, 'DESTINATION_LOCKED');
    assert.equal((await H.sink.messages(dest)).length, sent, 'no SMS reached the locked number');
  });

  it('admin routes: every wrong token form gets the same 401, byte for byte, headers included', async () => {
    const ws = await newWorkspace();
    const t = H.adminToken;
    const flip = (s, i) => s.slice(0, i) + (s[i] === 'z' ? 'y' : 'z') + s.slice(i + 1);
    const forms = {
      none: {},
      'empty Bearer': { headers: { authorization: 'Bearer ' } },
      'Bearer wrong': { admin: 'wrong-token' },
      'same length, unrelated': { admin: 'x'.repeat(t.length) },
      'first character changed': { admin: flip(t, 0) },
      'last character changed': { admin: flip(t, t.length - 1) },
      'prefix (one short)': { admin: t.slice(0, -1) },
      'token + 1 character': { admin: `${t}x` },
      'upper-cased': { admin: t.toUpperCase() },
      'Basic scheme': { headers: { authorization: `Basic ${t}` } },
      'no scheme': { headers: { authorization: t } },
      'x-api-key header': { xApiKey: t },
      'a workspace API key': { key: ws.key },
    };
    const routes = [
      ['POST', '/v1/admin/workspaces', { body: { name: 'x', senders: ['X'] } }],
      ['PATCH', `/v1/admin/workspaces/${ws.id}`, { body: { senders: ['X'] } }],
      ['POST', `/v1/admin/workspaces/${ws.id}/keys`, {}],
      ['DELETE', `/v1/admin/workspaces/${ws.id}/keys/${ws.keyId}`, {}],
    ];
    await expectIdentical401s(routes, forms);
    // Nothing was changed by any of them.
    expectStatus(await ws.request(ws.body(newDest())), 200);
  });

  it('API keys: unknown, tampered, malformed, revoked keys and the admin token get the same 401, headers included', async () => {
    const ws = await newWorkspace();
    const second = expectStatus(await call('POST', `/v1/admin/workspaces/${ws.id}/keys`, { admin: true }), 201).data;
    assert.equal((await call('DELETE', `/v1/admin/workspaces/${ws.id}/keys/${second.keyId}`, { admin: true })).status, 204);
    const dest = newDest();
    const forms = {
      none: {},
      unknown: { key: `otpk_${'A'.repeat(43)}` },
      'last character changed': { key: ws.key.slice(0, -1) + (ws.key.endsWith('A') ? 'B' : 'A') },
      'prefix (one short)': { key: ws.key.slice(0, -1) },
      revoked: { key: second.apiKey },
      'revoked, x-api-key': { xApiKey: second.apiKey },
      'the admin token': { admin: true },
      malformed: { key: 'otpk_short' },
    };
    await expectIdentical401s([
      ['POST', '/v1/messaging/otp/request', { body: ws.body(dest) }],
      ['GET', `/v1/messaging/otp/sessions/${randomUUID()}`, {}],
    ], forms);
    assert.equal((await H.sink.messages(dest)).length, 0, 'nothing was sent');
  });

  it('replay: an approved code is refused (409) on both dialects, whichever dialect approved it', async () => {
    const ws = await newWorkspace();
    const zendUsed = (res, what) => {
      assert.equal(res.status, 409, `${what}: ${res.text}`);
      assert.equal(res.json.success, false, res.text);
      assert.equal(res.json.message, 'OTP already used', res.text);
    };
    // Approved through v1.
    const a = await ws.issue(newDest());
    expectVerify(await ws.verify(a.sessionId, a.code), 'APPROVED', a.sessionId, 4);
    expectVerify(await ws.verify(a.sessionId, a.code), 'ALREADY_USED', a.sessionId, 4);
    zendUsed(await ws.zendVerify(a.sessionId, a.code), 'v1-approved, second dialect');
    zendUsed(await ws.zendVerify(a.sessionId.toUpperCase(), a.code), 'v1-approved, upper-case id');
    // Approved through the second dialect.
    const b = await ws.issue(newDest());
    const ok = await ws.zendVerify(b.sessionId, b.code);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.success, true, ok.text);
    zendUsed(await ws.zendVerify(b.sessionId, b.code), 'second-dialect-approved, second dialect');
    expectVerify(await ws.verify(b.sessionId, b.code), 'ALREADY_USED', b.sessionId, 4);
    // Neither replay consumed an attempt or changed the approval.
    const st = expectStatus(await ws.status(b.sessionId), 200).data;
    assert.deepEqual([st.state, st.attemptsUsed], ['APPROVED', 1]);
  });

  it('session ids are UUID v4 with 122 random bits: 64 ids, all distinct, no random bit constant', async () => {
    const ws = await newWorkspace({ policy: { reuse: false, sendsPerDestination: { limit: 100, windowSeconds: 600 } } });
    const dest = newDest();
    const ids = [];
    for (let i = 0; i < 64; i++) ids.push((await ws.issue(dest)).sessionId);
    for (const id of ids) assert.match(id, UUID_V4);
    assert.equal(new Set(ids).size, ids.length, 'distinct');
    // The 128 bits without the 4 version and 2 variant bits.
    const bits = ids.map((id) => {
      const b = [...id.replace(/-/g, '')].flatMap((h) => [...parseInt(h, 16).toString(2).padStart(4, '0')].map(Number));
      return b.filter((_, i) => !(i >= 48 && i < 52) && !(i >= 64 && i < 66));
    });
    assert.equal(bits[0].length, 122);
    // A time-ordered or counter id (v1, v7, sequences) has bit positions that never change over a
    // few seconds; for random bits each position is constant over 64 ids with odds 2^-63.
    const constant = [];
    let ones = 0;
    for (let i = 0; i < 122; i++) {
      const n = bits.reduce((acc, b) => acc + b[i], 0);
      ones += n;
      if (n === 0 || n === ids.length) constant.push(i);
    }
    assert.deepEqual(constant, [], 'bit positions (of the 122 random ones) that never changed');
    const share = ones / (122 * ids.length);
    assert.ok(Math.abs(share - 0.5) < 0.03, `share of one bits ${share.toFixed(4)} (5 σ ≈ 0.028)`);
  });
});

describe('admin routes without ADMIN_TOKEN', {
  skip: process.env.BASE_URL || !['node', 'node-redis', 'node-cluster'].includes(process.env.HOST)
    ? 'starts its own `otpkit serve` (HOST=node*); the Worker refuses the same way in edge-worker/src/lib.rs (config::read ADMIN_TOKEN → NotFound)'
    : false,
}, () => {
  it('are absent: 404, the same answer as an unknown route, whatever token is sent', async () => {
    const port = await freePort();
    const env = { ...process.env, PORT: String(port), OTP_PEPPER: randomToken(48), SMS_GATEWAY_URL: `${H.sink.url}/sms` };
    for (const k of ['ADMIN_TOKEN', 'REDIS_URL', 'SMS_GATEWAY_TOKEN']) delete env[k];
    const child = spawn(process.execPath, [path.join(ROOT, 'napi-binding', 'bin', 'otpkit.js'), 'serve'], { env, stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    const base = `http://127.0.0.1:${port}`;
    try {
      let up = false;
      for (let i = 0; i < 200 && !up; i++) {
        up = await fetch(`${base}/health`).then((r) => r.ok, () => false);
        if (!up) await sleep(100);
      }
      assert.ok(up, 'otpkit serve without ADMIN_TOKEN answered /health');
      const unknown = await fetch(`${base}/v1/admin/nothing-here`, { method: 'POST' });
      const unknownBody = await unknown.text();
      assert.equal(unknown.status, 404);
      for (const authorization of [undefined, 'Bearer ', 'Bearer anything', `Bearer ${H.adminToken}`]) {
        const r = await fetch(`${base}/v1/admin/workspaces`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
          body: JSON.stringify({ name: 'x', senders: ['X'] }),
        });
        assert.equal(r.status, 404, `admin create with ${authorization ? 'a token' : 'no token'}`);
        assert.equal(await r.text(), unknownBody);
      }
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
