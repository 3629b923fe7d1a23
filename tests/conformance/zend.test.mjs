// The second dialect (ZendOTP-compatible): POST /otp/send, GET /otp/{id}/status,
// POST /otp/{id}/verify. Same engine, same auth; sessions are shared with the v1 routes.

import { describe, it } from 'node:test';
import {
  assert, call, codeOf, eventually, expectError, expectStatus, expectVectorBody, expectVerify, H, newDest, newWorkspace, RFC3339,
  useHarness, UUID_V4, wrongCode,
} from './lib.mjs';

useHarness();

const ZEND_NOT_FOUND = '{"success":false,"message":"OTP session not found"}';

/** POST /otp/send expecting a new session; answers { id, code, body, message }. */
async function send(ws, body) {
  const before = (await H.sink.messages(body.phone_number)).length;
  const res = await ws.zendSend(body);
  const j = expectStatus(res, 200, '/otp/send');
  const msgs = await H.sink.messages(body.phone_number);
  assert.equal(msgs.length, before + 1, 'one SMS');
  const message = msgs[msgs.length - 1];
  assert.equal(message.reference, j.id);
  return { id: j.id, code: codeOf(message), body: j, res, message };
}

describe('second dialect', () => {
  it('POST /otp/send → 200 with ZendOTP fields; defaults: first sender, sms, 10 minutes, codeLength', async () => {
    const ws = await newWorkspace({ senders: ['ZEND', 'OTHER'] });
    const dest = newDest();
    const { body, message, code, res } = await send(ws, { phone_number: dest, app: 'MyApp' });
    assert.deepEqual(Object.keys(body).sort(), ['app', 'channel', 'created_at', 'expires_at', 'expiry_minutes', 'id', 'length', 'phone_number', 'status']);
    assert.match(body.id, UUID_V4);
    assert.equal(body.phone_number, dest);
    assert.equal(body.app, 'MyApp');
    assert.equal(body.channel, 'sms');
    assert.equal(body.expiry_minutes, 10);
    assert.equal(body.length, 6);
    assert.equal(body.status, 'sent');
    assert.match(body.created_at, RFC3339);
    assert.match(body.expires_at, RFC3339);
    assert.equal(Date.parse(body.expires_at) - Date.parse(body.created_at), 600_000);
    assert.equal(res.json.reused, undefined, 'no "reused" on a new session');
    assert.equal(message.body.from, 'ZEND', 'the workspace\'s first sender name');
    assert.equal(message.body.channel, 'sms');
    assert.equal(code.length, 6);
    assert.match(message.body.text, /10 minutes/);
    // Purpose defaults to LOGIN.
    const st = expectStatus(await ws.status(body.id), 200);
    assert.equal(st.data.purpose, 'LOGIN');
  });

  it('expiry, length, channel and purpose are honoured', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const { body, code, message } = await send(ws, { phone_number: dest, app: 'A', channel: 'whatsapp', expiry: 2, length: 8, purpose: 'TRANSACTION' });
    assert.equal(body.expiry_minutes, 2);
    assert.equal(body.length, 8);
    assert.equal(body.channel, 'whatsapp');
    assert.equal(Date.parse(body.expires_at) - Date.parse(body.created_at), 120_000);
    assert.equal(code.length, 8);
    assert.equal(message.body.channel, 'whatsapp');
    assert.match(message.body.text, /2 minutes/);
    const st = expectStatus(await ws.status(body.id), 200);
    assert.equal(st.data.purpose, 'TRANSACTION');
  });

  it('an active session is reused: status "pending", "reused": true, same id, no SMS', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const first = await send(ws, { phone_number: dest, app: 'A' });
    const res = await ws.zendSend({ phone_number: dest, app: 'B', length: 9 });
    const j = expectStatus(res, 200);
    assert.equal(j.id, first.id);
    assert.equal(j.status, 'pending');
    assert.equal(j.reused, true);
    assert.equal(j.app, 'A', 'the existing session\'s values');
    assert.equal(j.length, 6);
    assert.equal((await H.sink.messages(dest)).length, 1);
  });

  it('GET /otp/{id}/status: pending → verified, attempts counted', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const s = await send(ws, { phone_number: dest, app: 'A' });
    const res = await ws.zendStatus(s.id);
    const j = expectStatus(res, 200);
    assert.deepEqual(Object.keys(j).sort(), ['app', 'attempts', 'channel', 'created_at', 'delivery', 'expires_at', 'id', 'max_attempts', 'phone_number', 'status', 'verified_at']);
    assert.equal(j.delivery, 'accepted', 'SPEC §8: the gateway took it, no receipt yet');
    assert.equal(j.id, s.id);
    assert.equal(j.phone_number, dest);
    assert.equal(j.status, 'pending');
    assert.equal(j.attempts, 0);
    assert.equal(j.max_attempts, 5);
    assert.equal(j.verified_at, null);

    assert.equal((await ws.zendVerify(s.id, wrongCode(s.code))).text, zendInvalid(4));
    const mid = expectStatus(await ws.zendStatus(s.id), 200);
    assert.equal(mid.status, 'pending');
    assert.equal(mid.attempts, 1);

    const ok = await ws.zendVerify(s.id, s.code);
    const v = expectZendApproved(ok, 3);
    const done = expectStatus(await ws.zendStatus(s.id), 200);
    assert.equal(done.status, 'verified');
    assert.equal(done.attempts, 2);
    assert.equal(done.verified_at, v.verified_at);
  });

  it('POST /otp/{id}/verify: every outcome with its HTTP status', async () => {
    const ws = await newWorkspace({ policy: { maxAttempts: 2 } });
    const a = await send(ws, { phone_number: newDest(), app: 'A' });
    // INVALID, exact body.
    const inv = await ws.zendVerify(a.id, wrongCode(a.code));
    assert.equal(inv.status, 400);
    assert.equal(inv.text, zendInvalid(1));
    // APPROVED.
    expectZendApproved(await ws.zendVerify(a.id, a.code), 0);
    // ALREADY_USED → 409.
    const used = await ws.zendVerify(a.id, a.code);
    assert.equal(used.status, 409, used.text);
    assert.equal(used.json.success, false);
    assert.equal(used.json.attempts_remaining, 0);
    assert.equal(typeof used.json.message, 'string');

    // MAX_ATTEMPTS_REACHED → 423; status "failed".
    const b = await send(ws, { phone_number: newDest(), app: 'A' });
    await ws.zendVerify(b.id, wrongCode(b.code));
    assert.equal((await ws.zendVerify(b.id, wrongCode(b.code))).text, zendInvalid(0));
    const locked = await ws.zendVerify(b.id, b.code);
    assert.equal(locked.status, 423, locked.text);
    assert.equal(locked.json.success, false);
    assert.equal(locked.json.message, 'Maximum verification attempts reached');
    assert.equal(locked.json.attempts_remaining, 0);
    assert.equal(expectStatus(await ws.zendStatus(b.id), 200).status, 'failed');
  });

  it('missing sessions → 404 {"success":false,"message":"OTP session not found"} on verify and status', async () => {
    const ws = await newWorkspace();
    for (const id of ['3f1c2b9e-8a47-4d0e-9b6a-1c2d3e4f5a6b', 'nope']) {
      const v = await ws.zendVerify(id, '123456');
      assert.equal(v.status, 404);
      assert.equal(v.text, ZEND_NOT_FOUND);
      const st = await ws.zendStatus(id);
      assert.equal(st.status, 404);
      assert.equal(st.text, ZEND_NOT_FOUND);
    }
    // Another workspace's session is missing too, and costs its owner nothing.
    const owner = await newWorkspace();
    const s = await send(owner, { phone_number: newDest(), app: 'A' });
    assert.equal((await ws.zendVerify(s.id, s.code)).text, ZEND_NOT_FOUND);
    assert.equal((await ws.zendStatus(s.id)).text, ZEND_NOT_FOUND);
    assert.equal((await owner.zendVerify(s.id, wrongCode(s.code))).text, zendInvalid(4));
  });

  it('validation: the v1 error envelope with snake_case fields', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const bad = [
      [{ app: 'A' }, 'phone_number', 'phone_number is required'],
      [{ phone_number: dest.slice(1), app: 'A' }, 'phone_number'],
      [{ phone_number: dest }, 'app', 'app is required'],
      [{ phone_number: dest, app: 'a'.repeat(65) }, 'app'],
      [{ phone_number: dest, app: 'A', channel: 'email' }, 'channel'],
      [{ phone_number: dest, app: 'A', expiry: 0 }, 'expiry'],
      [{ phone_number: dest, app: 'A', expiry: 11 }, 'expiry'],
      [{ phone_number: dest, app: 'A', expiry: '5' }, 'expiry'],
      [{ phone_number: dest, app: 'A', length: 5 }, 'length'],
      [{ phone_number: dest, app: 'A', length: 11 }, 'length'],
      [{ phone_number: dest, app: 'A', purpose: 'login' }, 'purpose'],
    ];
    for (const [body, field, message] of bad) {
      expectError(await ws.zendSend(body), 400, 'VALIDATION_ERROR', { field, message });
    }
    assert.equal((await H.sink.messages(dest)).length, 0);
    // Verify body validation: no attempt consumed.
    const s = await send(ws, { phone_number: dest, app: 'A' });
    expectError(await call('POST', `/otp/${s.id}/verify`, { key: ws.key, body: {} }), 400, 'VALIDATION_ERROR', { field: 'code' });
    expectError(await call('POST', `/otp/${s.id}/verify`, { key: ws.key, body: { code: 123456 } }), 400, 'VALIDATION_ERROR', { field: 'code' });
    assert.equal(expectStatus(await ws.zendStatus(s.id), 200).attempts, 0);
  });

  it('sessions are shared across dialects', async () => {
    const ws = await newWorkspace();
    // v1 request → second-dialect status and verify.
    const dest = newDest();
    const v1 = await ws.issue(dest);
    const st = expectStatus(await ws.zendStatus(v1.sessionId), 200);
    assert.equal(st.id, v1.sessionId);
    assert.equal(st.status, 'pending');
    // A second-dialect send for the same (dest, LOGIN) reuses the v1 session.
    const re = expectStatus(await ws.zendSend({ phone_number: dest, app: 'A' }), 200);
    assert.equal(re.id, v1.sessionId);
    assert.equal(re.reused, true);
    assert.equal((await H.sink.messages(dest)).length, 1);
    expectZendApproved(await ws.zendVerify(v1.sessionId, v1.code), 4);
    expectVerify(await ws.verify(v1.sessionId, v1.code), 'ALREADY_USED', v1.sessionId, 4);

    // Second-dialect send → v1 status and verify.
    const z = await send(ws, { phone_number: newDest(), app: 'A' });
    const vs = expectStatus(await ws.status(z.id), 200);
    assert.equal(vs.data.state, 'PENDING');
    assert.equal(vs.data.app, 'A');
    expectVerify(await ws.verify(z.id, wrongCode(z.code)), 'INVALID', z.id, 4);
    expectVerify(await ws.verify(z.id, z.code), 'APPROVED', z.id, 3);
    assert.equal(expectStatus(await ws.zendStatus(z.id), 200).status, 'verified');
  });

  it('GET /otp/analytics → totals, every day, by channel and purpose, with cost; test numbers not counted', async () => {
    const testNumber = '+15005550006';
    const ws = await newWorkspace({
      policy: { maxAttempts: 2, pricePerSegment: { amount: '0.05', currency: 'USD' }, testNumbers: { [testNumber]: '424242' } },
    });
    const app = `Shop${Date.now()}`;
    const a = await send(ws, { phone_number: newDest(), app });
    await send(ws, { phone_number: newDest(), app, channel: 'whatsapp' });
    const locked = await send(ws, { phone_number: newDest(), app, purpose: 'TRANSACTION' });
    expectStatus(await ws.zendSend({ phone_number: a.body.phone_number, app }), 200); // a reuse
    expectZendApproved(await ws.zendVerify(a.id, a.code), 1);
    for (let i = 0; i < 2; i++) assert.equal((await ws.zendVerify(locked.id, wrongCode(locked.code))).status, 400);
    const failing = newDest();
    await H.sink.setMode(failing, 'fail500');
    assert.equal((await ws.zendSend({ phone_number: failing, app })).status, 502);
    // A test number is sent, reused and verified, and counted nowhere.
    const t = expectStatus(await ws.zendSend({ phone_number: testNumber, app }), 200);
    expectStatus(await ws.zendSend({ phone_number: testNumber, app }), 200);
    expectZendApproved(await ws.zendVerify(t.id, '424242'), 1);
    // Another app of the same workspace: only in the unfiltered answer.
    await send(ws, { phone_number: newDest(), app: `${app}-other` });

    const analytics = async (q) => call('GET', `/otp/analytics?${q}`, { key: ws.key });
    // Rows may lag an answer by up to 2 s (SPEC "Precise rules").
    const j = await eventually(async () => {
      const r = expectStatus(await analytics(`app=${encodeURIComponent(app)}&days=30`), 200);
      const c = r.totals;
      return c.sent === 3 && c.reused === 1 && c.verified === 1 && c.failed === 1 && c.delivery_failed === 1 ? r : null;
    }, 2500);
    assert.ok(j, 'analytics caught up within 2.5 s');
    const today = new Date().toISOString().slice(0, 10);
    assert.deepEqual(Object.keys(j).sort(), ['app', 'by_channel', 'by_country', 'by_purpose', 'days', 'from', 'period_days', 'to', 'top_errors', 'totals']);
    assert.deepEqual(j.top_errors, [], 'no delivery receipt said a message was refused');
    assert.equal(j.app, app);
    assert.equal(j.period_days, 30);
    assert.equal(j.to, today);
    assert.equal(j.from, new Date(Date.parse(`${today}T00:00:00Z`) - 29 * 86_400_000).toISOString().slice(0, 10));
    assert.deepEqual(j.totals, {
      sent: 3, reused: 1, delivery_failed: 1, verified: 1, failed: 1, expired: 0, verification_rate: 0.3333,
      sms_segments: 2, resent: 0, estimated_cost: { amount: '0.10', currency: 'USD' },
      fraud_blocked: 0, fraud_saved: { amount: '0.00', currency: 'USD' },
      delivered: 0, undelivered: 0, delivery_rate: 0,
    }, 'the WhatsApp message has no SMS segments; nothing has reached expiry yet');
    assert.equal(j.days.length, 30);
    assert.equal(j.days[29].date, today);
    assert.equal(j.days[0].date, j.from);
    assert.deepEqual(j.days[29], { date: today, ...j.totals });
    assert.equal(j.days[0].sent, 0);
    assert.deepEqual(Object.keys(j.by_channel).sort(), ['sms', 'whatsapp']);
    assert.equal(j.by_channel.whatsapp.sent, 1);
    assert.equal(j.by_channel.whatsapp.sms_segments, 0);
    assert.equal(j.by_channel.sms.sent, 2);
    assert.equal(j.by_channel.sms.delivery_failed, 1);
    assert.deepEqual(Object.keys(j.by_purpose).sort(), ['LOGIN', 'TRANSACTION']);
    assert.equal(j.by_purpose.TRANSACTION.failed, 1);
    assert.equal(j.by_purpose.LOGIN.verified, 1);
    assert.deepEqual(j.by_country, { 233: j.totals }, 'every counted destination is in Ghana (+233)');

    // Every app (default 30 days), and one day.
    const all = await eventually(async () => {
      const r = expectStatus(await analytics('days=1'), 200);
      return r.totals.sent === 4 ? r : null;
    }, 2500);
    assert.ok(all, 'the other app counted when no app is named');
    assert.equal(all.app, null);
    assert.equal(all.period_days, 1);
    assert.equal(all.days.length, 1);
    assert.equal(all.totals.verified, 1, 'the test number\'s approval is not counted');
    assert.equal(expectStatus(await analytics(''), 200).period_days, 30);

    // Another workspace sees none of it.
    const other = await newWorkspace();
    const o = expectStatus(await call('GET', `/otp/analytics?app=${encodeURIComponent(app)}`, { key: other.key }), 200);
    assert.equal(o.totals.sent, 0);
    assert.deepEqual(o.by_channel, {});
    assert.deepEqual(o.by_country, {});
  });

  it('GET /otp/analytics: days 1–90 and app ≤ 64 characters, else 400 with the field; a key is needed', async () => {
    const ws = await newWorkspace();
    for (const q of ['days=0', 'days=91', 'days=abc', 'days=-3', 'days=2.5']) {
      expectError(await call('GET', `/otp/analytics?${q}`, { key: ws.key }), 400, 'VALIDATION_ERROR', { field: 'days' });
    }
    expectError(await call('GET', `/otp/analytics?app=${'a'.repeat(65)}`, { key: ws.key }), 400, 'VALIDATION_ERROR', { field: 'app' });
    assert.equal(expectStatus(await call('GET', '/otp/analytics?days=90', { key: ws.key }), 200).days.length, 90);
    expectVectorBody(await call('GET', '/otp/analytics'), '401');
    assert.equal((await call('POST', '/otp/analytics', { key: ws.key, body: {} })).status, 405);
  });

  it('the same auth: no key → 401', async () => {
    expectVectorBody(await call('POST', '/otp/send', { body: { phone_number: newDest(), app: 'A' } }), '401');
  });
});

function zendInvalid(left) {
  return JSON.stringify({ success: false, message: 'Invalid OTP code', attempts_remaining: left });
}

function expectZendApproved(res, left) {
  assert.equal(res.status, 200, res.text);
  const j = res.json;
  assert.match(j?.verified_at ?? '', RFC3339, res.text);
  assert.ok(Math.abs(Date.parse(j.verified_at) - Date.now()) < 60_000);
  assert.equal(res.text, JSON.stringify({ success: true, message: 'OTP verified successfully', verified_at: j.verified_at, attempts_remaining: left }));
  return j;
}
