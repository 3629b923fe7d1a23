// SMS_GATEWAY_KIND=twilio on the host under test: a second host of the same kind, started by this
// file, posts Twilio's Messages form to a local Twilio stand-in. The form, basic auth, the
// `whatsapp:` prefix, a Twilio error answer (→ 502, nothing left behind) and a verify of the code
// the stand-in received. Skipped against BASE_URL (that host's gateway is not ours to choose).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { randomToken, startHost } from './host.mjs';

const ACCOUNT = `AC${randomToken(32).toLowerCase()}`;
const TOKEN = `tw_${randomToken(24)}`;
const REFUSED = '+15005550001'; // the stand-in answers Twilio's 400 for this number

describe('Twilio gateway kind', { skip: process.env.BASE_URL ? 'BASE_URL is set: not our host' : false }, () => {
  let server;
  let host;
  const seen = [];
  let key;

  before(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const form = new URLSearchParams(body);
        seen.push({ method: req.method, path: req.url, auth: req.headers.authorization, type: req.headers['content-type'], body, form: Object.fromEntries(form) });
        const to = (form.get('To') || '').replace(/^whatsapp:/, '');
        if (to === REFUSED) {
          res.writeHead(400, { 'content-type': 'application/json' }).end('{"code":21211,"message":"Invalid To","status":400}');
        } else {
          res.writeHead(201, { 'content-type': 'application/json' }).end(`{"sid":"SM${randomToken(32)}","status":"queued"}`);
        }
      });
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${server.address().port}/2010-04-01/Accounts/${ACCOUNT}/Messages.json`;
    host = await startHost({ gatewayUrl: url, gatewayToken: TOKEN, gatewayKind: 'twilio', gatewayAccount: ACCOUNT });
    const created = await fetch(`${host.baseUrl}/v1/admin/workspaces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${host.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'twilio', senders: ['+15005550006', 'ACME'] }),
    });
    assert.equal(created.status, 201);
    key = (await created.json()).data.apiKey;
  });

  after(async () => {
    await host?.stop();
    server?.close();
  });

  const post = async (p, body) => {
    const r = await fetch(`${host.baseUrl}${p}`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: r.status, json: await r.json() };
  };

  it('SMS: the Messages form with basic auth; the code the stand-in got verifies', async () => {
    const before = seen.length;
    const r = await post('/v1/messaging/otp/request', { dest: '+233202007745', src: 'ACME', purpose: 'LOGIN' });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(seen.length, before + 1);
    const m = seen.at(-1);
    assert.equal(m.method, 'POST');
    assert.equal(m.path, `/2010-04-01/Accounts/${ACCOUNT}/Messages.json`);
    assert.equal(m.auth, `Basic ${Buffer.from(`${ACCOUNT}:${TOKEN}`).toString('base64')}`);
    assert.match(m.type, /^application\/x-www-form-urlencoded/);
    assert.deepEqual(Object.keys(m.form).sort(), ['Body', 'From', 'To']);
    assert.equal(m.form.To, '+233202007745');
    assert.equal(m.form.From, 'ACME');
    const code = m.form.Body.match(/^(\d{6}) is your verification code\. It expires in 5 minutes\.$/)?.[1];
    assert.ok(code, `the default text: ${m.form.Body}`);
    const v = await post('/v1/messaging/otp/verify', { sessionId: r.json.data.sessionId, code });
    assert.equal(v.json.data.status, 'APPROVED');
  });

  it('WhatsApp: whatsapp: on To and From (second dialect, E.164 sender)', async () => {
    const ws = await fetch(`${host.baseUrl}/v1/admin/workspaces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${host.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'twilio-wa', senders: ['+15005550006'] }),
    }).then((x) => x.json());
    const r = await fetch(`${host.baseUrl}/otp/send`, {
      method: 'POST',
      headers: { 'x-api-key': ws.data.apiKey, 'content-type': 'application/json' },
      body: JSON.stringify({ phone_number: '+233202007746', app: 'shop', channel: 'whatsapp' }),
    });
    assert.equal(r.status, 200);
    const m = seen.at(-1);
    assert.equal(m.form.To, 'whatsapp:+233202007746');
    assert.equal(m.form.From, 'whatsapp:+15005550006');
    assert.match(m.body, /(^|&)To=whatsapp%3A%2B233202007746(&|$)/, 'form-encoded: ":" and "+" escaped');
  });

  it('WhatsApp with policy whatsappContentSid: ContentSid and ContentVariables {"1": code}, no Body; the sid is kept', async () => {
    const contentSid = `HX${randomToken(32).toLowerCase().replace(/[^0-9a-f]/g, 'a')}`;
    const ws = await fetch(`${host.baseUrl}/v1/admin/workspaces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${host.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'twilio-content', senders: ['+15005550006'], policy: { whatsappContentSid: contentSid } }),
    }).then((x) => x.json());
    const wsKey = ws.data.apiKey;
    const call = (method, p, body) =>
      fetch(`${host.baseUrl}${p}`, {
        method,
        headers: { 'x-api-key': wsKey, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      }).then(async (x) => ({ status: x.status, json: await x.json() }));
    const r = await call('POST', '/v1/messaging/otp/request', { dest: '+233202007749', src: '+15005550006', purpose: 'LOGIN', channel: 'whatsapp' });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const m = seen.at(-1);
    assert.deepEqual(Object.keys(m.form).sort(), ['ContentSid', 'ContentVariables', 'From', 'To']);
    assert.equal(m.form.ContentSid, contentSid);
    assert.equal(m.form.To, 'whatsapp:+233202007749');
    const vars = JSON.parse(m.form.ContentVariables);
    assert.deepEqual(Object.keys(vars), ['1']);
    assert.match(vars['1'], /^\d{6}$/);
    const status = await call('GET', `/v1/messaging/otp/sessions/${r.json.data.sessionId}`);
    assert.equal(status.json.data.delivery, 'accepted');
    const v = await call('POST', '/v1/messaging/otp/verify', { sessionId: r.json.data.sessionId, code: vars['1'] });
    assert.equal(v.json.data.status, 'APPROVED');
    // The reply's sid is on the audit trail's delivered event (written after the answer).
    let delivered;
    for (let i = 0; i < 50 && !delivered; i++) {
      const page = await call('GET', `/v1/messaging/otp/audit?sessionId=${r.json.data.sessionId}`);
      delivered = page.json.data?.events?.find((e) => e.event === 'delivered');
      if (!delivered) await new Promise((res) => setTimeout(res, 100));
    }
    assert.match(delivered?.messageId ?? '', /^SM/);
    // SMS of the same workspace keeps Body.
    const sms = await call('POST', '/v1/messaging/otp/request', { dest: '+233202007750', src: '+15005550006', purpose: 'LOGIN' });
    assert.equal(sms.status, 200);
    assert.deepEqual(Object.keys(seen.at(-1).form).sort(), ['Body', 'From', 'To']);
  });

  it('a Twilio error answer (400) is 502 DELIVERY_FAILED and leaves nothing to reuse', async () => {
    const r = await post('/v1/messaging/otp/request', { dest: REFUSED, src: 'ACME', purpose: 'LOGIN' });
    assert.equal(r.status, 502);
    assert.equal(r.json.error.code, 'DELIVERY_FAILED');
    const before = seen.length;
    const again = await post('/v1/messaging/otp/request', { dest: REFUSED, src: 'ACME', purpose: 'LOGIN' });
    assert.equal(again.status, 502, 'tried again: no session was left to reuse');
    assert.equal(seen.length, before + 1);
  });
});
