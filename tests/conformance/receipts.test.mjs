// Delivery receipts (SPEC §8) on a host started by this file with SMS_GATEWAY_KIND=twilio and
// PUBLIC_BASE_URL set: sends ask Twilio for status callbacks (StatusCallback names the workspace
// and session), and the local Twilio stand-in's test then plays Twilio: it signs receipts the way
// Twilio does (HMAC-SHA1 of PUBLIC_BASE_URL + path and query + the sorted form parameters, with
// the auth token) and posts them. The JSON receipt route is signed with HMAC-SHA256 of the raw
// body and SMS_GATEWAY_TOKEN. Checked: states only move forward, duplicates and out-of-order
// receipts change nothing, forged or missing signatures are 403, unknown ids are 200 and ignored,
// and status, audit and analytics show what receipts said. Skipped against BASE_URL.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { randomToken, startHost } from './host.mjs';

const ACCOUNT = `AC${randomToken(32).toLowerCase()}`;
const TOKEN = `tw_${randomToken(24)}`;
const PUBLIC = 'https://otp.example.test';
const TWILIO = '/v1/messaging/otp/delivery-receipts/twilio';
const JSON_ROUTE = '/v1/messaging/otp/delivery-receipts/json';

function twilioSignature(url, params, token = TOKEN) {
  const data = Object.keys(params)
    .sort()
    .reduce((acc, k) => acc + k + params[k], url);
  return crypto.createHmac('sha1', token).update(Buffer.from(data, 'utf8')).digest('base64');
}

describe('delivery receipts', { skip: process.env.BASE_URL ? 'BASE_URL is set: not our host' : false }, () => {
  let server;
  let host;
  let key;
  const seen = [];

  before(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const form = Object.fromEntries(new URLSearchParams(body));
        const sid = `SM${randomToken(32).toLowerCase().replace(/[^0-9a-z]/g, 'a')}`;
        seen.push({ form, sid });
        res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ sid, status: 'queued' }));
      });
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${server.address().port}/2010-04-01/Accounts/${ACCOUNT}/Messages.json`;
    host = await startHost({ gatewayUrl: url, gatewayToken: TOKEN, gatewayKind: 'twilio', gatewayAccount: ACCOUNT, extraEnv: { PUBLIC_BASE_URL: PUBLIC } });
    const created = await fetch(`${host.baseUrl}/v1/admin/workspaces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${host.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'receipts', senders: ['ACME'] }),
    });
    assert.equal(created.status, 201);
    key = (await created.json()).data.apiKey;
  });

  after(async () => {
    await host?.stop();
    server?.close();
  });

  const api = async (method, p, body) => {
    const r = await fetch(`${host.baseUrl}${p}`, {
      method,
      headers: { 'x-api-key': key, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: r.status, json: await r.json() };
  };

  let n = 0;
  const send = async () => {
    const dest = `+23320${String(3000000 + n++).padStart(7, '0')}`;
    const r = await api('POST', '/v1/messaging/otp/request', { dest, src: 'ACME', purpose: 'LOGIN' });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const m = seen.at(-1);
    return { sessionId: r.json.data.sessionId, sid: m.sid, callback: m.form.StatusCallback };
  };

  /** Posts a Twilio status callback to `pathAndQuery`, signed unless `signature` is given. */
  const twilio = async (pathAndQuery, params, { signature, token } = {}) => {
    const sig = signature === undefined ? twilioSignature(`${PUBLIC}${pathAndQuery}`, params, token) : signature;
    const r = await fetch(`${host.baseUrl}${pathAndQuery}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(sig === null ? {} : { 'x-twilio-signature': sig }) },
      body: new URLSearchParams(params).toString(),
    });
    return { status: r.status, json: await r.json() };
  };

  const jsonReceipt = async (obj, { signature } = {}) => {
    const body = typeof obj === 'string' ? obj : JSON.stringify(obj);
    const sig = signature === undefined ? `sha256=${crypto.createHmac('sha256', TOKEN).update(body).digest('hex')}` : signature;
    const r = await fetch(`${host.baseUrl}${JSON_ROUTE}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(sig === null ? {} : { 'x-otpkit-signature': sig }) },
      body,
    });
    return { status: r.status, json: await r.json() };
  };

  const status = async (id) => (await api('GET', `/v1/messaging/otp/sessions/${id}`)).json.data;

  const receiptEvents = async (id, want) => {
    let events = [];
    for (let i = 0; i < 60; i++) {
      const page = await api('GET', `/v1/messaging/otp/audit?sessionId=${id}`);
      events = (page.json.data?.events ?? []).filter((e) => e.event === 'delivery_receipt');
      if (events.length >= want) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    return events;
  };

  it('sends ask for status callbacks naming the workspace and the session', async () => {
    const s = await send();
    const cb = new URL(s.callback);
    assert.equal(`${cb.origin}${cb.pathname}`, `${PUBLIC}${TWILIO}`);
    assert.equal(cb.searchParams.get('session'), s.sessionId);
    assert.match(cb.searchParams.get('ws'), /^[A-Za-z0-9_-]+$/);
    assert.equal((await status(s.sessionId)).delivery, 'accepted');
  });

  it('Twilio receipts move the state forward only; duplicates and late ones change nothing', async () => {
    const s = await send();
    const pq = s.callback.slice(PUBLIC.length);
    const sent = await twilio(pq, { MessageSid: s.sid, MessageStatus: 'sent', AccountSid: ACCOUNT });
    assert.equal(sent.status, 200, JSON.stringify(sent.json));
    assert.equal(sent.json.data.received, true);
    assert.equal((await status(s.sessionId)).delivery, 'sent');
    assert.equal((await twilio(pq, { MessageSid: s.sid, MessageStatus: 'delivered' })).status, 200);
    assert.equal((await status(s.sessionId)).delivery, 'delivered');
    // Late and duplicate receipts: 200, nothing moves.
    assert.equal((await twilio(pq, { MessageSid: s.sid, MessageStatus: 'sent' })).status, 200);
    assert.equal((await twilio(pq, { MessageSid: s.sid, MessageStatus: 'delivered' })).status, 200);
    assert.equal((await twilio(pq, { MessageSid: s.sid, MessageStatus: 'undelivered', ErrorCode: '30003' })).status, 200);
    const view = await status(s.sessionId);
    assert.equal(view.delivery, 'delivered');
    assert.equal(view.deliveryErrorCode, undefined);
    const events = await receiptEvents(s.sessionId, 2);
    assert.deepEqual(events.map((e) => e.outcome).sort(), ['delivered', 'sent'], 'one audit event per move');
    for (const e of events) {
      assert.equal(e.messageId, s.sid);
      assert.equal(e.channel, 'sms');
      assert.match(e.dest, /^\+\d{3}\*+\d{4}$/);
    }
  });

  it('an undelivered receipt keeps the provider error code; status and zend status show it', async () => {
    const s = await send();
    const pq = s.callback.slice(PUBLIC.length);
    const r = await twilio(pq, { MessageSid: s.sid, MessageStatus: 'undelivered', ErrorCode: '30003' });
    assert.equal(r.status, 200);
    const view = await status(s.sessionId);
    assert.equal(view.delivery, 'undelivered');
    assert.equal(view.deliveryErrorCode, '30003');
    const zend = await api('GET', `/otp/${s.sessionId}/status`);
    assert.equal(zend.json.delivery, 'undelivered');
    assert.equal(zend.json.delivery_error_code, '30003');
    const [e] = await receiptEvents(s.sessionId, 1);
    assert.equal(e.outcome, 'undelivered');
    assert.equal(e.status, '30003');
  });

  it('forged, missing or replayed-elsewhere signatures are 403 INVALID_SIGNATURE and change nothing', async () => {
    const s = await send();
    const pq = s.callback.slice(PUBLIC.length);
    const params = { MessageSid: s.sid, MessageStatus: 'delivered' };
    for (const opts of [{ signature: null }, { signature: 'AAAA' }, { token: 'not-the-token' }]) {
      const r = await twilio(pq, params, opts);
      assert.equal(r.status, 403, JSON.stringify(r.json));
      assert.equal(r.json.error.code, 'INVALID_SIGNATURE');
    }
    // Signed for another session's URL: the signature covers the query.
    const other = await send();
    const sig = twilioSignature(`${PUBLIC}${other.callback.slice(PUBLIC.length)}`, params);
    assert.equal((await twilio(pq, params, { signature: sig })).status, 403);
    assert.equal((await status(s.sessionId)).delivery, 'accepted');
  });

  it('a Twilio receipt without the session in its URL is found by MessageSid; an unknown sid is 200 and ignored', async () => {
    const s = await send();
    const r = await twilio(TWILIO, { MessageSid: s.sid, MessageStatus: 'delivered' });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal((await status(s.sessionId)).delivery, 'delivered');
    const unknown = await twilio(TWILIO, { MessageSid: `SM${'0'.repeat(32)}`, MessageStatus: 'delivered' });
    assert.equal(unknown.status, 200);
    assert.equal(unknown.json.data.received, true);
  });

  it('JSON receipts: by reference or by id, HMAC-signed; bad signature 403, bad status 400, unknown 200', async () => {
    const a = await send();
    const r1 = await jsonReceipt({ reference: a.sessionId, status: 'delivered' });
    assert.equal(r1.status, 200, JSON.stringify(r1.json));
    assert.equal((await status(a.sessionId)).delivery, 'delivered');

    const b = await send();
    const r2 = await jsonReceipt({ id: b.sid, status: 'failed', errorCode: 'E42' });
    assert.equal(r2.status, 200, JSON.stringify(r2.json));
    const vb = await status(b.sessionId);
    assert.equal(vb.delivery, 'failed');
    assert.equal(vb.deliveryErrorCode, 'E42');

    const c = await send();
    const forged = await jsonReceipt({ reference: c.sessionId, status: 'delivered' }, { signature: 'sha256=00' });
    assert.equal(forged.status, 403);
    assert.equal(forged.json.error.code, 'INVALID_SIGNATURE');
    const missing = await jsonReceipt({ reference: c.sessionId, status: 'delivered' }, { signature: null });
    assert.equal(missing.status, 403);
    const bad = await jsonReceipt({ reference: c.sessionId, status: 'lost' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'VALIDATION_ERROR');
    assert.equal(bad.json.error.field, 'status');
    assert.equal((await status(c.sessionId)).delivery, 'accepted');

    const unknown = await jsonReceipt({ reference: crypto.randomUUID(), status: 'delivered' });
    assert.equal(unknown.status, 200);
  });

  it('policy fallbackOnUndelivered: an undelivered WhatsApp message is sent again by SMS, once, charged as a resend', async () => {
    const admin = (method, p, body) =>
      fetch(`${host.baseUrl}${p}`, {
        method,
        headers: { authorization: `Bearer ${host.adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    // It needs the channels to fall back on.
    const bad = await admin('POST', '/v1/admin/workspaces', { name: 'fb-bad', senders: ['+15005550006'], policy: { fallbackOnUndelivered: true } });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.field, 'policy.fallbackOnUndelivered');
    const created = await admin('POST', '/v1/admin/workspaces', {
      name: 'fallback',
      senders: ['+15005550006'],
      policy: { channelFallback: ['whatsapp', 'sms'], fallbackOnUndelivered: true },
    });
    assert.equal(created.status, 201);
    const fbKey = (await created.json()).data.apiKey;
    const call = async (method, p, body) => {
      const r = await fetch(`${host.baseUrl}${p}`, {
        method,
        headers: { 'x-api-key': fbKey, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      return { status: r.status, json: await r.json() };
    };
    const dest = '+233209876543';
    const r = await call('POST', '/v1/messaging/otp/request', { dest, src: '+15005550006', purpose: 'LOGIN', channel: 'whatsapp' });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const id = r.json.data.sessionId;
    const first = seen.at(-1);
    assert.equal(first.form.To, `whatsapp:${dest}`);
    const before = seen.length;
    // Twilio: WhatsApp refused the free-form text (63016), seconds after the send (well within
    // resendAfterSeconds, which a fallback is not held to).
    const pq = first.form.StatusCallback.slice(PUBLIC.length);
    const receipt = { MessageSid: first.sid, MessageStatus: 'undelivered', ErrorCode: '63016' };
    assert.equal((await twilio(pq, receipt)).status, 200);
    let view;
    for (let i = 0; i < 100 && seen.length === before; i++) await new Promise((res) => setTimeout(res, 50));
    assert.equal(seen.length, before + 1, 'one fallback message was sent');
    const again = seen.at(-1);
    assert.equal(again.form.To, dest, 'by SMS');
    assert.ok(!('ContentSid' in again.form));
    for (let i = 0; i < 60; i++) {
      view = (await call('GET', `/v1/messaging/otp/sessions/${id}`)).json.data;
      if (view.channel === 'sms' && view.delivery === 'accepted') break;
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(view.state, 'PENDING');
    assert.equal(view.channel, 'sms');
    assert.equal(view.delivery, 'accepted', 'the new message is the one tracked now');
    // The resend is audited (with its channel and message id) and counted.
    let resent;
    for (let i = 0; i < 60 && !resent; i++) {
      const page = await call('GET', `/v1/messaging/otp/audit?sessionId=${id}`);
      resent = page.json.data.events.find((e) => e.event === 'resent');
      if (!resent) await new Promise((res) => setTimeout(res, 50));
    }
    assert.ok(resent, 'audited as resent');
    assert.equal(resent.channel, 'sms');
    assert.equal(resent.messageId, again.sid);
    // The same receipt again, and a receipt for the first message now: nothing more is sent.
    assert.equal((await twilio(pq, receipt)).status, 200);
    assert.equal((await twilio(pq, { ...receipt, MessageStatus: 'failed' })).status, 200);
    // The SMS is refused too: SMS is the list's last channel, so nothing more is sent.
    const pq2 = again.form.StatusCallback.slice(PUBLIC.length);
    assert.equal((await twilio(pq2, { MessageSid: again.sid, MessageStatus: 'undelivered', ErrorCode: '30003' })).status, 200);
    await new Promise((res) => setTimeout(res, 500));
    assert.equal(seen.length, before + 1, 'no further send');
    assert.equal((await call('GET', `/v1/messaging/otp/sessions/${id}`)).json.data.delivery, 'undelivered');
  });

  it('analytics count delivered and undelivered messages, the delivery rate and the top error codes', async () => {
    let totals;
    let topErrors;
    for (let i = 0; i < 60; i++) {
      const r = await api('GET', '/otp/analytics');
      totals = r.json.totals;
      topErrors = r.json.top_errors;
      if (totals?.delivered >= 3 && totals?.undelivered >= 2 && topErrors?.length >= 2) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    // delivered: the forward-only session, the MessageSid one, the JSON reference one;
    // undelivered: the 30003 one and the JSON failed one.
    assert.equal(totals.delivered, 3, JSON.stringify(totals));
    assert.equal(totals.undelivered, 2, JSON.stringify(totals));
    assert.equal(totals.delivery_rate, 0.6);
    // One message each refused with 30003 and E42 (the late 30003 on a delivered message did
    // not move it, so it is not counted); ties are ordered by code.
    assert.deepEqual(topErrors, [{ code: '30003', count: 1 }, { code: 'E42', count: 1 }]);
    // The admin report sums every workspace's codes.
    const admin = await fetch(`${host.baseUrl}/v1/admin/analytics?days=1`, { headers: { authorization: `Bearer ${host.adminToken}` } });
    assert.equal(admin.status, 200);
    const all = (await admin.json()).top_errors;
    for (const code of ['30003', 'E42']) {
      assert.ok(all.some((e) => e.code === code && e.count >= 1), JSON.stringify(all));
    }
  });
});
