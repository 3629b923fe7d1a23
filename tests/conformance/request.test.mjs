// POST /v1/messaging/otp/request: success body, the gateway message, reuse, purposes, channels,
// templates, reuse off (cancellation), and the send coalescing of concurrent requests.

import { describe, it } from 'node:test';
import {
  assert, DEFAULT_TEXT, expectRetryAfter, expectStatus, expectVerify, H, newDest, newWorkspace, sleep, useHarness, UUID_V4,
  codeOf, wrongCode,
} from './lib.mjs';

useHarness();

describe('request', () => {
  it('sends a new code: 200 body, and one gateway message as SPEC §5 describes', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const res = await ws.request(ws.body(dest));
    const j = expectStatus(res, 200);
    assert.deepEqual(Object.keys(j), ['success', 'message', 'data']);
    assert.equal(j.success, true);
    assert.equal(j.message, 'OTP sent successfully');
    assert.deepEqual(Object.keys(j.data).sort(), ['attemptsLeft', 'channel', 'expiresInSeconds', 'reused', 'sessionId']);
    assert.match(j.data.sessionId, UUID_V4);
    assert.ok(j.data.expiresInSeconds > 290 && j.data.expiresInSeconds <= 300, `expiresInSeconds ${j.data.expiresInSeconds}`);
    assert.equal(j.data.attemptsLeft, 5);
    assert.equal(j.data.reused, false);

    const msgs = await H.sink.messages(dest);
    assert.equal(msgs.length, 1, 'one message at the gateway');
    const m = msgs[0];
    assert.equal(m.method, 'POST');
    assert.match(m.headers['content-type'] || '', /^application\/json/);
    if (H.gatewayToken) assert.equal(m.headers.authorization, `Bearer ${H.gatewayToken}`);
    assert.deepEqual(Object.keys(m.body).sort(), ['channel', 'from', 'reference', 'text', 'to']);
    assert.equal(m.body.to, dest);
    assert.equal(m.body.from, 'OTPKIT');
    assert.equal(m.body.channel, 'sms');
    assert.equal(m.body.reference, j.data.sessionId);
    const match = DEFAULT_TEXT.exec(m.body.text);
    assert.ok(match, `default template: "${m.body.text}"`);
    assert.equal(match[1].length, 6, 'default codeLength is 6');
    assert.equal(match[2], '5', '{minutes} = ceil(300 / 60)');
    codeOf(m);
  });

  it('reuses an active session: same id, no SMS, remaining TTL and attempts', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const first = await ws.issue(dest);
    await ws.verify(first.sessionId, wrongCode(first.code)); // one attempt used
    await sleep(1100);
    const res = await ws.request(ws.body(dest));
    const j = expectStatus(res, 200);
    assert.equal(j.success, true);
    assert.equal(j.message, 'Active OTP already exists. No new SMS sent.');
    assert.equal(j.data.sessionId, first.sessionId);
    assert.equal(j.data.reused, true);
    assert.equal(j.data.attemptsLeft, 4, 'remaining attempts');
    assert.ok(j.data.expiresInSeconds <= first.data.expiresInSeconds - 1, `remaining TTL: ${j.data.expiresInSeconds} after ${first.data.expiresInSeconds}`);
    assert.ok(j.data.expiresInSeconds > 280);
    await sleep(200);
    assert.equal((await H.sink.messages(dest)).length, 1, 'no second SMS');
    // The reused session still takes the code the phone got.
    expectVerify(await ws.verify(first.sessionId, first.code), 'APPROVED', first.sessionId, 3);
  });

  it('reuse ignores src, channel, app and template of the new request', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const first = await ws.issue(dest, { app: 'First' });
    const res = await ws.request(ws.body(dest, { src: 'ACME', channel: 'whatsapp', app: 'Other', messageTemplate: 'Code {code}' }));
    const j = expectStatus(res, 200);
    assert.equal(j.data.reused, true);
    assert.equal(j.data.sessionId, first.sessionId);
    const st = expectStatus(await ws.status(first.sessionId), 200);
    assert.equal(st.data.channel, 'sms');
    assert.equal(st.data.app, 'First');
    assert.equal((await H.sink.messages(dest)).length, 1);
  });

  it('a different purpose is a new session with its own SMS', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const login = await ws.issue(dest, { purpose: 'LOGIN' });
    const reset = await ws.issue(dest, { purpose: 'PASSWORD_RESET' });
    assert.notEqual(reset.sessionId, login.sessionId);
    assert.equal((await H.sink.messages(dest)).length, 2);
    // Codes are bound to their session: one session's code does not approve the other.
    if (login.code !== reset.code) {
      expectVerify(await ws.verify(reset.sessionId, login.code), 'INVALID', reset.sessionId, 4);
    }
    expectVerify(await ws.verify(login.sessionId, login.code), 'APPROVED', login.sessionId, 4);
  });

  it('after approval the next request sends a new code', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const first = await ws.issue(dest);
    expectVerify(await ws.verify(first.sessionId, first.code), 'APPROVED', first.sessionId, 4);
    const second = await ws.issue(dest);
    assert.notEqual(second.sessionId, first.sessionId);
  });

  it('every purpose is accepted', async () => {
    const ws = await newWorkspace({ policy: { sendsPerDestination: { limit: 10, windowSeconds: 600 } } });
    const dest = newDest();
    const purposes = ['LOGIN', 'PASSWORD_RESET', 'TRANSACTION', 'DEVICE_VERIFICATION', 'EMAIL_VERIFICATION', 'ACCOUNT_RECOVERY', 'KYC_VERIFICATION'];
    const ids = new Set();
    for (const purpose of purposes) {
      const { sessionId } = await ws.issue(dest, { purpose });
      ids.add(sessionId);
      const st = expectStatus(await ws.status(sessionId), 200);
      assert.equal(st.data.purpose, purpose);
    }
    assert.equal(ids.size, purposes.length);
  });

  it('channel whatsapp goes to the gateway as "whatsapp"; src is any allowed sender', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const { message, sessionId } = await ws.issue(dest, { channel: 'whatsapp', src: 'ACME' });
    assert.equal(message.body.channel, 'whatsapp');
    assert.equal(message.body.from, 'ACME');
    const st = expectStatus(await ws.status(sessionId), 200);
    assert.equal(st.data.channel, 'whatsapp');
  });

  it('renders a custom template: {code}, {minutes}, {app}, {purpose}; other braces as written', async () => {
    const ws = await newWorkspace({ policy: { ttlSeconds: 90, codeLength: 8 } });
    const dest = newDest();
    const { message, code } = await ws.issue(dest, {
      app: 'Acme Pay',
      purpose: 'TRANSACTION',
      messageTemplate: '{app}: {code} confirms your {purpose}. Valid {minutes} min. {other}',
    });
    assert.equal(code.length, 8, 'policy codeLength');
    assert.equal(message.body.text, `Acme Pay: ${code} confirms your TRANSACTION. Valid 2 min. {other}`);
    // {app} without an app renders as "".
    const dest2 = newDest();
    const second = await ws.issue(dest2, { messageTemplate: '[{app}] {code}' });
    assert.equal(second.message.body.text, `[] ${second.code}`);
  });

  it('reuse off: every request sends, and the previous session is canceled (EXPIRED)', async () => {
    const ws = await newWorkspace({ policy: { reuse: false } });
    const dest = newDest();
    const first = await ws.issue(dest);
    const second = await ws.issue(dest);
    assert.notEqual(second.sessionId, first.sessionId);
    assert.equal((await H.sink.messages(dest)).length, 2);
    // The cancellation may follow the response: give it a moment.
    let st;
    for (let i = 0; i < 20; i++) {
      st = expectStatus(await ws.status(first.sessionId), 200);
      if (st.data.state === 'CANCELED') break;
      await sleep(100);
    }
    assert.equal(st.data.state, 'CANCELED');
    expectVerify(await ws.verify(first.sessionId, first.code), 'EXPIRED', first.sessionId, 5);
    expectVerify(await ws.verify(second.sessionId, second.code), 'APPROVED', second.sessionId, 4);
  });

  it('10 concurrent requests for one (dest, purpose): one SMS, one session, 1 new + 9 reused', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const answers = await Promise.all(Array.from({ length: 10 }, () => ws.request(ws.body(dest))));
    for (const a of answers) expectStatus(a, 200, 'concurrent request');
    const ids = new Set(answers.map((a) => a.json.data.sessionId));
    assert.equal(ids.size, 1, `one sessionId, got ${[...ids].join(', ')}`);
    const fresh = answers.filter((a) => a.json.data.reused === false);
    const reused = answers.filter((a) => a.json.data.reused === true);
    assert.equal(fresh.length, 1, 'exactly one reused:false');
    assert.equal(reused.length, 9, 'nine reused:true');
    for (const a of reused) assert.equal(a.json.message, 'Active OTP already exists. No new SMS sent.');
    await sleep(300);
    const msgs = await H.sink.messages(dest);
    assert.equal(msgs.length, 1, 'exactly one SMS');
    assert.equal(msgs[0].reference, [...ids][0]);
    const code = codeOf(msgs[0]);
    expectVerify(await ws.verify([...ids][0], code), 'APPROVED', [...ids][0], 4);
  });

  it('the workspace flood shield refuses sends past sendsPerWorkspacePerMinute (429 RATE_LIMITED, Retry-After ≤ 60)', async () => {
    const ws = await newWorkspace({ policy: { sendsPerWorkspacePerMinute: 2 } });
    // Sequential sends; the burst test below sends them in parallel.
    for (let i = 0; i < 2; i++) {
      expectStatus(await ws.request(ws.body(newDest())), 200, `send ${i + 1} of 2`);
      await sleep(400);
    }
    const dest = newDest();
    expectRetryAfter(await ws.request(ws.body(dest)), 'RATE_LIMITED', 60);
    assert.equal((await H.sink.messages(dest)).length, 0, 'no SMS past the shield');
    // Refused by the shield, not charged to the destination: another workspace can still send to it.
    const other = await newWorkspace();
    expectStatus(await other.request(other.body(dest)), 200);
  });

  it('the flood shield holds under a burst: 60 parallel requests to different numbers, limit 10 → exactly 10 SMS', async () => {
    // Issue 19 item 1: the Redis store wrote the shield from a value read earlier (last writer
    // wins) and the Worker kept it in KV, so a burst overshot it many times over. Every store now
    // counts in one atomic step: exact within one host process.
    const ws = await newWorkspace({ policy: { sendsPerWorkspacePerMinute: 10 } });
    const dests = Array.from({ length: 60 }, () => newDest());
    const answers = await Promise.all(dests.map((d) => ws.request(ws.body(d))));
    const ok = answers.filter((r) => r.status === 200).length;
    const limited = answers.filter((r) => r.status === 429);
    assert.equal(ok, 10, `admitted ${ok} of 60: ${answers.map((r) => r.status).join(',')}`);
    assert.equal(limited.length, 50);
    for (const r of limited) expectRetryAfter(r, 'RATE_LIMITED', 60);
    await sleep(300);
    let sent = 0;
    for (const d of dests) sent += (await H.sink.messages(d)).length;
    assert.equal(sent, 10, 'exactly 10 SMS reached the gateway');
  });
});
