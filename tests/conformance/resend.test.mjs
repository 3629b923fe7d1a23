// SPEC §7 "Resend" and "Channel fallback": POST /v1/messaging/otp/sessions/{id}/resend and
// POST /otp/{id}/resend. The same session gets a new code (the old one stops matching), a new
// expiry, its attempts used kept; charged like a send; two sends of one session at least
// resendAfterSeconds apart (429 RESEND_TOO_SOON); only a pending session. Channel fallback: a
// definite failure on one channel tries the next of policy channelFallback in the same request.

import { describe, it } from 'node:test';
import {
  H, assert, call, codeOf, eventually, expectError, expectRetryAfter, expectStatus, expectVerify, newDest,
  newWorkspace, sleep, useHarness, wrongCode,
} from './lib.mjs';

useHarness();

const resendV1 = (ws, id, body) =>
  call('POST', `/v1/messaging/otp/sessions/${encodeURIComponent(id)}/resend`, { key: ws.key, ...(body ? { body } : {}) });
const resendZend = (ws, id, body) => call('POST', `/otp/${encodeURIComponent(id)}/resend`, { key: ws.key, ...(body ? { body } : {}) });

/** The newest message to `dest` at the sink, and how many there are. */
async function lastMessage(dest) {
  const msgs = await H.sink.messages(dest);
  return { count: msgs.length, message: msgs[msgs.length - 1] };
}

describe('resend', () => {
  it('a new code for the same session: the old code stops working, attempts used are kept, audit `resent`', async () => {
    const ws = await newWorkspace({ policy: { resendAfterSeconds: 0 } });
    const dest = newDest();
    const s = await ws.issue(dest);
    expectVerify(await ws.verify(s.sessionId, wrongCode(s.code)), 'INVALID', s.sessionId, 4);
    const res = await resendV1(ws, s.sessionId);
    const j = expectStatus(res, 200, 'resend');
    assert.deepEqual(Object.keys(j.data).sort(), ['attemptsLeft', 'channel', 'expiresInSeconds', 'reused', 'sessionId']);
    assert.equal(j.data.sessionId, s.sessionId, 'same session id');
    assert.equal(j.data.reused, false);
    assert.equal(j.data.channel, 'sms');
    assert.equal(j.data.attemptsLeft, 4, 'a resend never resets attempts');
    assert.ok(j.data.expiresInSeconds > 295, `a new expiry: ${j.data.expiresInSeconds}`);
    const { count, message } = await lastMessage(dest);
    assert.equal(count, 2, 'one more message reached the gateway');
    assert.equal(message.reference, s.sessionId);
    const code = codeOf(message);
    assert.ok(!res.text.includes(code), 'no code in the answer');
    if (code !== s.code) {
      expectVerify(await ws.verify(s.sessionId, s.code), 'INVALID', s.sessionId, 3);
    }
    expectVerify(await ws.verify(s.sessionId, code), 'APPROVED', s.sessionId, code !== s.code ? 2 : 3);
    await eventually(async () => {
      const events = expectStatus(await ws.audit({ sessionId: s.sessionId }), 200).data.events;
      const resent = events.filter((e) => e.event === 'resent');
      assert.equal(resent.length, 1, `audit: ${events.map((e) => e.event)}`);
      assert.equal(resent[0].channel, 'sms');
      return true;
    }, 3000);
    await eventually(async () => {
      const a = expectStatus(await call('GET', '/otp/analytics?days=1', { key: ws.key }), 200);
      assert.equal(a.totals.resent, 1, `analytics: ${JSON.stringify(a.totals)}`);
      assert.equal(a.totals.sent, 1, 'a resend is not a new session');
      assert.equal(a.totals.sms_segments, 2, 'the resend\'s segment is costed');
      return true;
    }, 3000);
  });

  it('two sends of one session at least resendAfterSeconds apart: 429 RESEND_TOO_SOON with Retry-After, nothing sent', async () => {
    const ws = await newWorkspace({ policy: { resendAfterSeconds: 30 } });
    const dest = newDest();
    const s = await ws.issue(dest);
    const res = await resendV1(ws, s.sessionId);
    const secs = expectRetryAfter(res, 'RESEND_TOO_SOON', 30);
    assert.ok(secs >= 28, `Retry-After ${secs}`);
    assert.equal((await lastMessage(dest)).count, 1, 'nothing sent');
    expectVerify(await ws.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 4);
  });

  it('20 parallel resends of one session send exactly one message (the reservation is atomic)', async () => {
    // An interval of 4 s: the 20 answers must all come within it (one CI run on loaded cores took
    // 2.9 s for 20, and with 1 s a late one was rightly a second resend).
    const ws = await newWorkspace({ policy: { resendAfterSeconds: 4, sendsPerDestination: { limit: 50, windowSeconds: 600 } } });
    const dest = newDest();
    const s = await ws.issue(dest);
    await sleep(4100); // past the interval: every one of the 20 may be the one
    const t0 = Date.now();
    const answers = await Promise.all(Array.from({ length: 20 }, () => resendV1(ws, s.sessionId)));
    const took = Date.now() - t0;
    const codes = answers.map((r) => r.status);
    assert.equal(codes.filter((c) => c === 200).length, 1, `exactly one resend in ${took} ms: ${codes}`);
    for (const r of answers.filter((r) => r.status !== 200)) expectRetryAfter(r, 'RESEND_TOO_SOON', 4);
    assert.equal((await lastMessage(dest)).count, 2, 'the first send and one resend');
    const code = codeOf((await lastMessage(dest)).message);
    expectVerify(await ws.verify(s.sessionId, code), 'APPROVED', s.sessionId, 4);
  });

  it('20 parallel resends with resendAfterSeconds 0 are bounded by the destination send limit', async () => {
    const ws = await newWorkspace({ policy: { resendAfterSeconds: 0, sendsPerDestination: { limit: 4, windowSeconds: 600 } } });
    const dest = newDest();
    const s = await ws.issue(dest);
    const answers = await Promise.all(Array.from({ length: 20 }, () => resendV1(ws, s.sessionId)));
    const ok = answers.filter((r) => r.status === 200).length;
    assert.equal(ok, 3, `the limit of 4 sends per window (1 used by the request): ${answers.map((r) => r.status)}`);
    for (const r of answers.filter((r) => r.status !== 200)) expectRetryAfter(r, 'RATE_LIMITED', 600);
    assert.equal((await lastMessage(dest)).count, 4);
    // The code of the last applied resend works; the session is still one session.
    const st = expectStatus(await ws.status(s.sessionId), 200);
    assert.equal(st.data.state, 'PENDING');
  });

  it('only a pending session: approved 409, locked 423, canceled 410, unknown 404; nothing sent', async () => {
    const ws = await newWorkspace({ policy: { maxAttempts: 1, resendAfterSeconds: 0 } });
    const a = await ws.issue(newDest());
    expectVerify(await ws.verify(a.sessionId, a.code), 'APPROVED', a.sessionId, 0);
    expectError(await resendV1(ws, a.sessionId), 409, 'ALREADY_USED');
    const b = await ws.issue(newDest());
    await ws.verify(b.sessionId, wrongCode(b.code));
    expectError(await resendV1(ws, b.sessionId), 423, 'MAX_ATTEMPTS_REACHED');
    const c = await ws.issue(newDest());
    expectStatus(await call('POST', `/v1/messaging/otp/sessions/${c.sessionId}/cancel`, { key: ws.key }), 200);
    expectError(await resendV1(ws, c.sessionId), 410, 'EXPIRED');
    expectStatus(await resendV1(ws, '9b2f4f7e-58a4-4c8e-9d7a-3f1e2d4c5b6a'), 404);
    expectStatus(await resendV1(ws, 'not-a-session'), 404);
    const other = await newWorkspace();
    expectStatus(await resendV1(other, a.sessionId), 404, 'another workspace');
    for (const x of [a, b, c]) assert.equal((await H.sink.messages(x.message.to)).length, 1);
  });

  it('a failed delivery answers 502, is not charged, gives the interval back, and the old code still works', async () => {
    const ws = await newWorkspace({ policy: { resendAfterSeconds: 0, sendsPerDestination: { limit: 2, windowSeconds: 600 } } });
    const dest = newDest();
    const s = await ws.issue(dest);
    await H.sink.setMode(dest, 'fail500');
    for (let i = 0; i < 3; i++) expectError(await resendV1(ws, s.sessionId), 502, 'DELIVERY_FAILED');
    await H.sink.setMode(dest, 'ok');
    // Three failures were refunded: the second send of the window is still free.
    expectStatus(await resendV1(ws, s.sessionId), 200);
    const code = codeOf((await lastMessage(dest)).message);
    expectVerify(await ws.verify(s.sessionId, code), 'APPROVED', s.sessionId, 4);
  });

  it('the body may name another channel; the second dialect answers like /otp/send', async () => {
    const ws = await newWorkspace({ policy: { resendAfterSeconds: 0 } });
    const dest = newDest();
    const s = await ws.issue(dest);
    const j = expectStatus(await resendV1(ws, s.sessionId, { channel: 'whatsapp' }), 200);
    assert.equal(j.data.channel, 'whatsapp');
    assert.equal((await lastMessage(dest)).message.channel, 'whatsapp');
    assert.equal(expectStatus(await ws.status(s.sessionId), 200).data.channel, 'whatsapp');
    expectError(await resendV1(ws, s.sessionId, { channel: 'pigeon' }), 400, 'VALIDATION_ERROR', { field: 'channel' });

    const { id } = expectStatus(await ws.zendSend({ phone_number: newDest(), app: 'Acme' }), 200);
    const z = expectStatus(await resendZend(ws, id), 200, 'zend resend');
    assert.equal(z.id, id);
    assert.equal(z.status, 'sent');
    assert.equal(z.expiry_minutes, 10);
  });

  it('policy resendAfterSeconds: default 30, bounds 0–600', async () => {
    const ws = await newWorkspace();
    const got = expectStatus(await call('GET', `/v1/admin/workspaces/${ws.id}`, { admin: true }), 200);
    assert.equal(got.data.policy.resendAfterSeconds, 30);
    assert.equal(got.data.policy.channelFallback, null);
    const bad = await call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { policy: { resendAfterSeconds: 601 } } });
    expectError(bad, 400, 'VALIDATION_ERROR', { field: 'policy.resendAfterSeconds' });
    const dup = await call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { policy: { channelFallback: ['sms', 'sms'] } } });
    expectError(dup, 400, 'VALIDATION_ERROR', { field: 'policy.channelFallback' });
  });
});

describe('channel fallback', () => {
  it('whatsapp fails definitely → sms in the same request; the answer and the session carry sms; each try audited', async () => {
    const ws = await newWorkspace({ policy: { channelFallback: ['whatsapp', 'sms'] } });
    const dest = newDest();
    await H.sink.setMode(dest, 'failWhatsapp');
    const res = await ws.request(ws.body(dest, { channel: 'whatsapp' }));
    const j = expectStatus(res, 200, 'request with fallback');
    assert.equal(j.data.channel, 'sms');
    const msgs = await H.sink.messages(dest);
    assert.deepEqual(msgs.map((m) => m.channel), ['whatsapp', 'sms']);
    assert.equal(codeOf(msgs[0]), codeOf(msgs[1]), 'the same code on both tries');
    assert.equal(expectStatus(await ws.status(j.data.sessionId), 200).data.channel, 'sms');
    expectVerify(await ws.verify(j.data.sessionId, codeOf(msgs[1])), 'APPROVED', j.data.sessionId, 4);
    await eventually(async () => {
      const events = expectStatus(await ws.audit({ sessionId: j.data.sessionId }), 200).data.events;
      const tries = events.filter((e) => e.event === 'delivery_failed' || e.event === 'delivered').reverse();
      assert.deepEqual(tries.map((e) => [e.event, e.channel]), [['delivery_failed', 'whatsapp'], ['delivered', 'sms']]);
      return true;
    }, 3000);
  });

  it('without channelFallback, or when every channel fails, the request answers 502 and nothing stays charged', async () => {
    const plain = await newWorkspace({ policy: { sendsPerDestination: { limit: 1, windowSeconds: 600 } } });
    const dest = newDest();
    await H.sink.setMode(dest, 'failWhatsapp');
    expectError(await plain.request(plain.body(dest, { channel: 'whatsapp' })), 502, 'DELIVERY_FAILED');
    const ws = await newWorkspace({ policy: { channelFallback: ['whatsapp', 'sms'], sendsPerDestination: { limit: 1, windowSeconds: 600 } } });
    const d2 = newDest();
    await H.sink.setMode(d2, 'fail500');
    expectError(await ws.request(ws.body(d2, { channel: 'whatsapp' })), 502, 'DELIVERY_FAILED');
    assert.equal((await H.sink.messages(d2)).length, 2, 'both channels tried');
    await H.sink.setMode(d2, 'ok');
    expectStatus(await ws.request(ws.body(d2)), 200, 'refunded: the one send of the window is free');
  });
});
