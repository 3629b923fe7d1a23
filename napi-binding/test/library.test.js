'use strict';
// The library through the binding: shared vectors (tests/vectors), OtpService with the memory
// store and a real HTTP sink as the gateway, errors, multi-tenancy, CommonJS and ESM.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const native = require('../lib/native');
const otpkit = require('..');
const { ROOT, PEPPER, startSink, codeOf, newDest, recorder } = require('./helpers');

const { OtpService, OtpError, JsonGateway, MemoryStore } = otpkit;
const vectors = (name) => JSON.parse(fs.readFileSync(path.join(ROOT, 'tests', 'vectors', name), 'utf8'));

/**
 * The session a request flow stores, driven by hand as a store would: the guard admits the
 * send, the gateway delivers it, and the flow's storeSession step carries the session (JSON).
 */
function storedSession(engine, ws, body) {
  const flow = native.requestFlow(engine, 'v1', Buffer.from(body), ws, Date.now());
  const results = {
    admit: { result: 'admitted', admission: { kind: 'send' } },
    deliver: { result: 'delivery', outcome: 'delivered' },
  };
  for (;;) {
    const step = JSON.parse(flow.poll());
    if (step.io === 'storeSession') return step.session;
    assert.ok(step.io in results, `a new send's flow asked for ${step.io ?? JSON.stringify(step)}`);
    flow.handle(JSON.stringify(results[step.io]));
  }
}

describe('vectors through the binding', () => {
  it('hash.json: a stored hash verifies with its code and pepper, not with another code', () => {
    // A real session from the binding, with the vector's ids and hash put in.
    const ws = native.Workspace.library('ws_vec', null, null, Date.now());
    const base = storedSession(new native.Engine(PEPPER), ws, '{"dest":"+233202007745","src":"A","purpose":"LOGIN"}');
    assert.equal(base.workspaceId, 'ws_vec');
    const cases = vectors('hash.json').cases;
    assert.ok(cases.length >= 5);
    let checked = 0;
    for (const c of cases) {
      if (!native.normalizeSessionId(c.sessionId)) continue; // framing-only vectors (ids like "c")
      checked++;
      const engine = new native.Engine(c.pepper);
      const s = { ...base, id: c.sessionId, workspaceId: c.workspaceId, purpose: c.purpose, codeHash: c.hash, codeLength: c.code.length };
      // A vector with a payment (PSD2, v2 framing): the session is bound to it, and a verify
      // approves only with the same payment (another amount is INVALID like a wrong code).
      const tx = c.amount === undefined ? null : { amount: c.amount, currency: c.currency, payee: c.payee };
      if (tx) s.transaction = tx;
      const txJson = tx && JSON.stringify(tx);
      const ok = JSON.parse(engine.verifyStored(JSON.stringify(s), c.workspaceId, c.code, Date.now(), txJson).outcome);
      assert.equal(ok.status, 'APPROVED', `vector ${c.sessionId} ${c.amount ?? ''}`);
      const wrong = String((Number(c.code[0]) + 1) % 10) + c.code.slice(1);
      assert.equal(JSON.parse(engine.verifyStored(JSON.stringify(s), c.workspaceId, wrong, Date.now(), txJson).outcome).status, 'INVALID');
      if (tx) {
        const other = JSON.stringify({ ...tx, amount: `${tx.amount}1` });
        assert.equal(JSON.parse(engine.verifyStored(JSON.stringify(s), c.workspaceId, c.code, Date.now(), other).outcome).status, 'INVALID');
        assert.equal(JSON.parse(engine.verifyStored(JSON.stringify(s), c.workspaceId, c.code, Date.now(), null).outcome).status, 'INVALID');
      }
    }
    assert.ok(checked >= 5, `checked ${checked}`);
  });

  it('validation.json: every request and verify body answers as the core decides', () => {
    const engine = new native.Engine(PEPPER);
    const ws = native.Workspace.library('ws_vec', null, null, Date.now());
    let checked = 0;
    for (const c of vectors('validation.json').cases) {
      const body = Buffer.from(c.body ?? '');
      let run;
      if (c.route === 'v1.request') run = () => native.requestFlow(engine, 'v1', body, ws, Date.now());
      else if (c.route === 'zend.send') run = () => native.requestFlow(engine, 'zend', body, ws, Date.now());
      else if (c.route === 'content') run = () => native.checkContent(c.contentType ?? null, c.length == null ? null : String(c.length));
      else if (c.route === 'admin.create') run = () => native.Workspace.create(body, Date.now());
      else if (c.route === 'admin.patch') run = () => ws.patched(body);
      else if (c.route === 'v1.verify') run = () => native.parseVerify('v1', null, body);
      else if (c.route === 'zend.verify') run = () => native.parseVerify('zend', c.pathId ?? 'x', body);
      else continue;
      checked++;
      if (c.error) {
        assert.throws(run, (e) => {
          const err = require('../lib/errors').fromNative(e);
          assert.equal(err.code, c.error.code, c.name);
          assert.equal(err.httpStatus, c.error.status, c.name);
          assert.equal(err.field, c.error.field ?? undefined, c.name);
          return true;
        }, c.name);
      } else {
        assert.doesNotThrow(run, c.name);
      }
    }
    assert.equal(checked, vectors('validation.json').cases.length);
  });

  it('envelopes.json: host-side error bodies are the core\'s, byte for byte', () => {
    let checked = 0;
    for (const c of vectors('envelopes.json').cases) {
      if (c.kind !== 'error' || Object.keys(c.error).length !== 1) continue;
      const r = native.errorReply(c.error.code);
      if (r.body !== c.body && c.error.code !== r.body.match(/"code":"(\w+)"/)[1]) continue; // not a host-side code
      assert.equal(r.status, c.status, c.name);
      assert.equal(r.body, c.body, c.name);
      checked++;
    }
    assert.ok(checked >= 3, `checked ${checked}`);
  });
});

describe('OtpService (memory store)', () => {
  let sink;
  before(async () => {
    sink = await startSink();
  });
  after(async () => {
    await sink.stop();
  });

  it('request → SMS at the real sink → verify wrong, right, then already used; status', async () => {
    const otp = new OtpService({ pepper: PEPPER, gateway: new JsonGateway({ url: sink.gatewayUrl, token: 't' }), senders: ['Acme'] });
    const dest = newDest();
    const r = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN', app: 'shop' });
    assert.equal(r.reused, false);
    assert.equal(r.attemptsLeft, 5);
    assert.equal(r.expiresInSeconds, 300);
    assert.ok(!JSON.stringify(r).match(/\d{6}/) || !JSON.stringify(r).includes(codeOf((await sink.messages(dest))[0].body.text)));
    const msgs = await sink.messages(dest);
    assert.equal(msgs.length, 1);
    assert.equal(msgs[0].body.from, 'Acme');
    assert.equal(msgs[0].body.reference, r.sessionId);
    const code = codeOf(msgs[0].body.text);
    const wrong = code === '000000' ? '111111' : '000000';
    assert.deepEqual(await otp.verify({ sessionId: r.sessionId, code: wrong }), {
      sessionId: r.sessionId, status: 'INVALID', verified: false, message: 'Invalid OTP', attemptsLeft: 4,
    });
    const ok = await otp.verify({ sessionId: r.sessionId, code });
    assert.equal(ok.status, 'APPROVED');
    assert.equal(ok.verified, true);
    assert.equal((await otp.verify({ sessionId: r.sessionId, code })).status, 'ALREADY_USED');
    const st = await otp.status(r.sessionId);
    assert.equal(st.state, 'APPROVED');
    assert.equal(st.attemptsUsed, 2);
    assert.match(st.dest, /^\+155\*+\d{4}$/);
    assert.equal(await otp.status('00000000-0000-4000-8000-000000000000'), null);
    await otp.settle();
    const audit = await otp.audit({ sessionId: r.sessionId });
    assert.deepEqual(audit.events.map((e) => e.event), ['verify_rejected', 'verify_approved', 'verify_invalid', 'delivered', 'requested']);
    assert.ok(!JSON.stringify(audit).includes(code));
    await otp.close();
  });

  it('reuse: a second request for (dest, purpose) sends nothing; concurrent requests send one SMS', async () => {
    const gw = recorder();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw });
    const dest = newDest();
    const all = await Promise.all(Array.from({ length: 10 }, () => otp.request({ dest, src: 'Acme', purpose: 'LOGIN' })));
    assert.equal(gw.sent.length, 1);
    assert.equal(new Set(all.map((r) => r.sessionId)).size, 1);
    assert.equal(all.filter((r) => !r.reused).length, 1);
    const other = await otp.request({ dest, src: 'Acme', purpose: 'PASSWORD_RESET' });
    assert.equal(other.reused, false);
    assert.equal(gw.sent.length, 2);
    await otp.close();
  });

  it('cancel: a pending session → CANCELED (verify EXPIRED, reuse sends anew); ended or unknown ones reject with their code', async () => {
    const gw = recorder();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw });
    const dest = newDest();
    const a = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
    const view = await otp.cancel(a.sessionId);
    assert.equal(view.state, 'CANCELED');
    assert.equal(view.sessionId, a.sessionId);
    assert.equal((await otp.verify({ sessionId: a.sessionId, code: codeOf(gw.sent[0].text) })).status, 'EXPIRED');
    await assert.rejects(otp.cancel(a.sessionId), (e) => e instanceof OtpError && e.code === 'EXPIRED' && e.httpStatus === 410);
    const b = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
    assert.equal(b.reused, false, 'reuse never returns a canceled session');
    assert.equal(gw.sent.length, 2);
    assert.equal((await otp.verify({ sessionId: b.sessionId, code: codeOf(gw.sent[1].text) })).status, 'APPROVED');
    await assert.rejects(otp.cancel(b.sessionId), (e) => e.code === 'ALREADY_USED' && e.httpStatus === 409);
    await assert.rejects(otp.cancel('3f1c2b9e-8a47-4d0e-9b6a-1c2d3e4f5a6b'), (e) => e.code === 'NOT_FOUND' && e.httpStatus === 404);
    await otp.settle();
    const events = (await otp.audit({ sessionId: a.sessionId })).events.map((e) => e.event);
    assert.equal(events[0], 'verify_rejected', 'the verify after the cancel');
    assert.ok(events.includes('canceled'), events.join(','));
    await otp.close();
  });

  it('resend: a new code for the same session (attempts kept, old code dead); RESEND_TOO_SOON inside the interval', async () => {
    const gw = recorder();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, policy: { resendAfterSeconds: 0 } });
    const dest = newDest();
    const a = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
    const old = codeOf(gw.sent[0].text);
    await otp.verify({ sessionId: a.sessionId, code: old === '000000' ? '111111' : '000000' });
    const r = await otp.resend(a.sessionId, { channel: 'whatsapp' });
    assert.deepEqual([r.sessionId, r.reused, r.attemptsLeft, r.channel], [a.sessionId, false, 4, 'whatsapp']);
    assert.equal(gw.sent.length, 2);
    assert.equal(gw.sent[1].channel, 'whatsapp');
    const fresh = codeOf(gw.sent[1].text);
    if (fresh !== old) assert.equal((await otp.verify({ sessionId: a.sessionId, code: old })).status, 'INVALID');
    assert.equal((await otp.verify({ sessionId: a.sessionId, code: fresh })).status, 'APPROVED');
    await assert.rejects(otp.resend(a.sessionId), (e) => e instanceof OtpError && e.code === 'ALREADY_USED' && e.httpStatus === 409);
    await otp.close();

    const strict = new OtpService({ pepper: PEPPER, gateway: recorder() });
    const b = await strict.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
    await assert.rejects(strict.resend(b.sessionId), (e) => e.code === 'RESEND_TOO_SOON' && e.httpStatus === 429 && e.retryAfterSeconds >= 29);
    await strict.close();
  });

  it('verify by destination: {dest, purpose, code} checks the active session, counted as by id', async () => {
    const gw = recorder();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw });
    const dest = newDest();
    const a = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
    const code = codeOf(gw.sent[0].text);
    const wrong = await otp.verify({ dest, purpose: 'LOGIN', code: code === '000000' ? '111111' : '000000' });
    assert.deepEqual([wrong.status, wrong.sessionId, wrong.attemptsLeft], ['INVALID', a.sessionId, 4]);
    const none = await otp.verify({ dest, purpose: 'PASSWORD_RESET', code });
    assert.deepEqual([none.status, none.sessionId], ['NOT_FOUND', null]);
    const ok = await otp.verify({ dest, purpose: 'LOGIN', code });
    assert.deepEqual([ok.status, ok.sessionId, ok.attemptsLeft], ['APPROVED', a.sessionId, 3]);
    await assert.rejects(otp.verify({ sessionId: a.sessionId, dest, purpose: 'LOGIN', code }), (e) => e.code === 'VALIDATION_ERROR' && e.field === 'sessionId');
    await otp.close();
  });

  it('PSD2: a TRANSACTION code is bound to its payment; only the same payment approves', async () => {
    const gw = recorder();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw });
    const dest = newDest();
    const payment = { amount: '10.50', currency: 'EUR', payee: 'Acme Shop' };
    const r = await otp.request({ dest, src: 'Acme', purpose: 'TRANSACTION', ...payment });
    assert.match(gw.sent[0].text, /approve 10\.50 EUR to Acme Shop/);
    const code = codeOf(gw.sent[0].text);
    assert.deepEqual((await otp.status(r.sessionId)).transaction, payment);
    assert.equal((await otp.verify({ sessionId: r.sessionId, code, ...payment, amount: '11' })).status, 'INVALID');
    assert.equal((await otp.verify({ sessionId: r.sessionId, code, ...payment, amount: '10.5' })).status, 'APPROVED');
    await assert.rejects(otp.request({ dest, src: 'Acme', purpose: 'LOGIN', ...payment }), (e) => e.code === 'VALIDATION_ERROR' && e.field === 'purpose');
    await otp.close();
  });

  it('errors are OtpError with code, httpStatus, field and retryAfterSeconds', async () => {
    assert.throws(() => new OtpService({ pepper: 'short', gateway: recorder() }), (e) => e instanceof OtpError && e.code === 'MISCONFIGURED' && e.httpStatus === 500);
    assert.throws(
      () => new OtpService({ pepper: PEPPER, gateway: recorder(), policy: { ttlSeconds: 5 } }),
      (e) => e.code === 'VALIDATION_ERROR' && e.field === 'policy.ttlSeconds',
    );
    const otp = new OtpService({ pepper: PEPPER, gateway: recorder(), senders: ['Acme'], policy: { reuse: false } });
    await assert.rejects(otp.request({ dest: '233202007745', src: 'Acme', purpose: 'LOGIN' }), (e) => e instanceof OtpError && e.code === 'VALIDATION_ERROR' && e.field === 'dest' && e.httpStatus === 400);
    await assert.rejects(otp.request({ dest: newDest(), src: 'Other', purpose: 'LOGIN' }), (e) => e.code === 'SENDER_NOT_ALLOWED' && e.httpStatus === 403);
    await assert.rejects(otp.verify({ sessionId: 'x', code: 12345 }), (e) => e.code === 'VALIDATION_ERROR' && e.field === 'code');
    const dest = newDest();
    for (let i = 0; i < 3; i++) await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
    await assert.rejects(otp.request({ dest, src: 'Acme', purpose: 'LOGIN' }), (e) => e.code === 'RATE_LIMITED' && e.httpStatus === 429 && e.retryAfterSeconds >= 1);
    await otp.close();
  });

  it('a failed delivery is 502 DELIVERY_FAILED, leaves no session and is not charged', async () => {
    const gw = recorder('failed');
    const otp = new OtpService({ pepper: PEPPER, gateway: gw });
    const dest = newDest();
    for (let i = 0; i < 4; i++) {
      await assert.rejects(otp.request({ dest, src: 'Acme', purpose: 'LOGIN' }), (e) => e.code === 'DELIVERY_FAILED' && e.httpStatus === 502);
    }
    assert.equal(gw.sent.length, 4); // four definite failures, none charged to the limit of 3
    assert.equal(await otp.status(gw.sent[0].reference), null);
    await otp.close();
  });

  it('test numbers: fixed code, no SMS, still attempt-limited', async () => {
    const gw = recorder();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, policy: { testNumbers: { '+15005550006': '424242' }, maxAttempts: 2 } });
    const r = await otp.request({ dest: '+15005550006', src: 'Acme', purpose: 'LOGIN' });
    assert.equal(gw.sent.length, 0);
    assert.equal((await otp.verify({ sessionId: r.sessionId, code: '111111' })).status, 'INVALID');
    assert.equal((await otp.verify({ sessionId: r.sessionId, code: '111111' })).status, 'INVALID');
    assert.equal((await otp.verify({ sessionId: r.sessionId, code: '424242' })).status, 'MAX_ATTEMPTS_REACHED');
    await otp.close();
  });

  it('workspaces: create, act by API key, revoke immediately; tenants do not see each other', async () => {
    const gw = recorder();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store: new MemoryStore() });
    const a = await otp.createWorkspace({ name: 'A', senders: ['AAA'] });
    const b = await otp.createWorkspace({ name: 'B', senders: ['BBB'] });
    assert.match(a.apiKey, /^otpk_/);
    const r = await otp.forApiKey(a.apiKey).request({ dest: newDest(), src: 'AAA', purpose: 'LOGIN' });
    assert.equal((await otp.forApiKey(b.apiKey).verify({ sessionId: r.sessionId, code: '123456' })).status, 'NOT_FOUND');
    assert.equal(await otp.forWorkspace(b.workspaceId).status(r.sessionId), null);
    assert.equal((await otp.forWorkspace(a.workspaceId).status(r.sessionId)).state, 'PENDING');
    await assert.rejects(otp.forApiKey(a.apiKey).request({ dest: newDest(), src: 'BBB', purpose: 'LOGIN' }), (e) => e.code === 'SENDER_NOT_ALLOWED');
    await otp.revokeKey(a.workspaceId, a.keyId);
    await assert.rejects(otp.forApiKey(a.apiKey).status(r.sessionId), (e) => e.code === 'UNAUTHORIZED' && e.httpStatus === 401);
    const detail = await otp.getWorkspace(a.workspaceId);
    assert.deepEqual([detail.keyIds, detail.keys.map((k) => [k.keyId, typeof k.revokedAt])], [[], [[a.keyId, 'string']]]);
    assert.ok(!JSON.stringify(detail).includes(a.apiKey));
    await assert.rejects(otp.getWorkspace('ws_nope'), (e) => e.code === 'NOT_FOUND');
    await otp.close();
  });

  it('the memory sweep drops what is due (sessions, guards, open analytics entries) and nothing before', async () => {
    const otp = new OtpService({ pepper: PEPPER, gateway: recorder(), policy: { retentionSeconds: 0, ttlSeconds: 60 } });
    const dests = [newDest(), newDest(), newDest()];
    const sessions = [];
    for (const dest of dests) sessions.push(await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' }));
    // One more code to the first number: its guard's keep time moves; the old deadline must not drop it.
    await otp.request({ dest: dests[0], src: 'Acme', purpose: 'PASSWORD_RESET' });
    await otp.settle();
    const before = otp.store.stats();
    assert.equal(before.sessions, 4);
    assert.equal(before.guards, 3);
    assert.equal(before.analyticsOpen, 4);
    assert.equal(otp.store.sweep(Date.now() + 30_000), 0, 'nothing is due yet');
    assert.deepEqual(otp.store.stats(), before);
    assert.equal(otp.store.sweep(Date.now() + 61_000), 4, 'every session is due at expiry + retention');
    const after = otp.store.stats();
    assert.equal(after.sessions, 0);
    assert.equal(after.analyticsOpen, 0, 'expired open entries leave');
    assert.equal(otp.store.sweep(Date.now() + 2 * 86_400_000), 0);
    assert.equal(otp.store.stats().guards, 0, 'idle guards leave once their windows are over');
    await otp.close();
  });

  it('sessions are purged retentionSeconds after expiry, with a purged audit event', async () => {
    const otp = new OtpService({ pepper: PEPPER, gateway: recorder(), policy: { retentionSeconds: 0, ttlSeconds: 60 } });
    const r = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
    assert.equal(otp.store.sweep(Date.now() + 30_000), 0, 'not before expiry + retention');
    assert.equal((await otp.status(r.sessionId)).state, 'PENDING');
    assert.equal(otp.store.sweep(Date.now() + 61_000), 1);
    assert.equal(await otp.status(r.sessionId), null);
    await otp.settle();
    assert.equal((await otp.audit({ sessionId: r.sessionId })).events[0].event, 'purged');
    await otp.close();
  });

  it('the ESM entry exports the same objects', async () => {
    const esm = await import('../index.mjs');
    assert.equal(esm.OtpService, OtpService);
    assert.equal(esm.default.RedisStore, otpkit.RedisStore);
  });
});

describe('TwilioGateway over HTTP', () => {
  it('posts the Twilio form (whatsapp: prefix) with basic auth to a real local server', async () => {
    const http = require('node:http');
    const seen = [];
    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        seen.push({ auth: req.headers.authorization, type: req.headers['content-type'], form: Object.fromEntries(new URLSearchParams(body)) });
        res.writeHead(seen.length === 1 ? 201 : 400).end('{}');
      });
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${server.address().port}/2010-04-01/Accounts/AC1/Messages.json`;
    try {
      const gw = new otpkit.TwilioGateway({ url, account: 'AC1', token: 'secret' });
      const m = { to: '+233202007745', from: '+15005550006', text: '123456 is your code', channel: 'whatsapp', reference: 'x' };
      assert.equal(await gw.send(m), 'delivered');
      assert.equal(await gw.send({ ...m, channel: 'sms' }), 'failed'); // 400 from the server
      assert.equal(seen[0].auth, `Basic ${Buffer.from('AC1:secret').toString('base64')}`);
      assert.equal(seen[0].type, 'application/x-www-form-urlencoded');
      assert.deepEqual(seen[0].form, { To: 'whatsapp:+233202007745', From: 'whatsapp:+15005550006', Body: '123456 is your code' });
      assert.deepEqual(seen[1].form, { To: '+233202007745', From: '+15005550006', Body: '123456 is your code' });
      assert.ok(!JSON.stringify(gw).includes('secret'), 'the token is not enumerable');
    } finally {
      server.close();
    }
  });

  it('JsonGateway: a gateway that does not answer in time is timedOut, a refused connection failed', async () => {
    const http = require('node:http');
    const server = http.createServer(() => {}); // never answers
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const port = server.address().port;
    try {
      const slow = new JsonGateway({ url: `http://127.0.0.1:${port}/sms`, timeoutMs: 200 });
      const m = { to: '+233202007745', from: 'Acme', text: 'x', channel: 'sms', reference: 'r' };
      assert.equal(await slow.send(m), 'timedOut');
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      assert.equal(await slow.send(m), 'failed');
    } finally {
      server.close();
    }
  });
});
