// WhatsApp through its own gateway (SPEC §8): WHATSAPP_GATEWAY_KIND=meta on a host started by this
// file, SMS through a json gateway. A local stand-in plays both: the WhatsApp Cloud API
// (`POST {WHATSAPP_GATEWAY_URL}/messages`, Bearer token, an authentication template message
// whose body parameter and copy-code button carry the code) and the json SMS gateway. The
// provider's message id of each reply is kept: the audit trail's `delivered` event names it, and
// the session's `delivery` is `accepted`. Skipped against BASE_URL (not our host's gateways).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { randomToken, startHost } from './host.mjs';

const META_TOKEN = `meta_${randomToken(24)}`;
const APP_SECRET = `appsecret_${randomToken(24)}`;
const VERIFY_TOKEN = `verify_${randomToken(16)}`;
const META_PATH = '/v1/messaging/otp/delivery-receipts/meta';
const PHONE_ID = '106540352242922';

describe('WhatsApp Cloud API gateway (meta)', { skip: process.env.BASE_URL ? 'BASE_URL is set: not our host' : false }, () => {
  let server;
  let host;
  const seen = [];
  let withTemplate;
  let withoutTemplate;

  before(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        let json = null;
        try {
          json = JSON.parse(body);
        } catch {
          // recorded as null
        }
        const id = req.url.startsWith('/v21.0/') ? `wamid.${randomToken(40)}` : `sms-${randomToken(12)}`;
        seen.push({ method: req.method, path: req.url, auth: req.headers.authorization, type: req.headers['content-type'], json, id });
        const reply = req.url.startsWith('/v21.0/')
          ? { messaging_product: 'whatsapp', contacts: [{ input: json?.to, wa_id: json?.to }], messages: [{ id }] }
          : { id };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(reply));
      });
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${server.address().port}`;
    host = await startHost({
      gatewayUrl: `${base}/sms`,
      extraEnv: {
        WHATSAPP_GATEWAY_KIND: 'meta',
        WHATSAPP_GATEWAY_URL: `${base}/v21.0/${PHONE_ID}`,
        WHATSAPP_GATEWAY_TOKEN: META_TOKEN,
        WHATSAPP_APP_SECRET: APP_SECRET,
        WHATSAPP_VERIFY_TOKEN: VERIFY_TOKEN,
      },
    });
    const create = async (name, policy) => {
      const r = await fetch(`${host.baseUrl}/v1/admin/workspaces`, {
        method: 'POST',
        headers: { authorization: `Bearer ${host.adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name, senders: ['ACME'], policy }),
      });
      assert.equal(r.status, 201, await r.clone().text());
      return (await r.json()).data.apiKey;
    };
    withTemplate = await create('meta-template', { whatsappTemplate: { name: 'otp_auth', language: 'en_US' } });
    withoutTemplate = await create('meta-none', {});
  });

  after(async () => {
    await host?.stop();
    server?.close();
  });

  const call = async (key, method, p, body) => {
    const r = await fetch(`${host.baseUrl}${p}`, {
      method,
      headers: { 'x-api-key': key, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: r.status, json: await r.json() };
  };

  it('a WhatsApp send is an authentication template message; its code verifies', async () => {
    const before = seen.length;
    const r = await call(withTemplate, 'POST', '/v1/messaging/otp/request', { dest: '+233202007745', src: 'ACME', purpose: 'LOGIN', channel: 'whatsapp' });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(seen.length, before + 1);
    const m = seen.at(-1);
    assert.equal(m.method, 'POST');
    assert.equal(m.path, `/v21.0/${PHONE_ID}/messages`);
    assert.equal(m.auth, `Bearer ${META_TOKEN}`);
    assert.match(m.type, /^application\/json/);
    // The documented shape of an authentication template with a copy-code button.
    const code = m.json?.template?.components?.[0]?.parameters?.[0]?.text;
    assert.match(code ?? '', /^\d{6}$/);
    assert.deepEqual(m.json, {
      messaging_product: 'whatsapp',
      recipient_type: 'individual',
      to: '233202007745',
      type: 'template',
      template: {
        name: 'otp_auth',
        language: { code: 'en_US' },
        components: [
          { type: 'body', parameters: [{ type: 'text', text: code }] },
          { type: 'button', sub_type: 'url', index: '0', parameters: [{ type: 'text', text: code }] },
        ],
      },
    });
    const id = r.json.data.sessionId;
    const status = await call(withTemplate, 'GET', `/v1/messaging/otp/sessions/${id}`);
    assert.equal(status.json.data.delivery, 'accepted');
    assert.equal(status.json.data.channel, 'whatsapp');
    const v = await call(withTemplate, 'POST', '/v1/messaging/otp/verify', { sessionId: id, code });
    assert.equal(v.json.data.status, 'APPROVED');
  });

  it("the reply's message id is kept: the audit trail's delivered event names it", async () => {
    const r = await call(withTemplate, 'POST', '/v1/messaging/otp/request', { dest: '+233202007746', src: 'ACME', purpose: 'LOGIN', channel: 'whatsapp' });
    assert.equal(r.status, 200);
    const wamid = seen.at(-1).id;
    const id = r.json.data.sessionId;
    let delivered;
    for (let i = 0; i < 50 && !delivered; i++) {
      const page = await call(withTemplate, 'GET', `/v1/messaging/otp/audit?sessionId=${id}`);
      delivered = page.json.data?.events?.find((e) => e.event === 'delivered');
      if (!delivered) await new Promise((res) => setTimeout(res, 100));
    }
    assert.ok(delivered, 'a delivered event');
    assert.equal(delivered.messageId, wamid);
    assert.equal(delivered.channel, 'whatsapp');
  });

  it('SMS goes to the SMS gateway, with its own message id', async () => {
    const r = await call(withTemplate, 'POST', '/v1/messaging/otp/request', { dest: '+233202007747', src: 'ACME', purpose: 'LOGIN' });
    assert.equal(r.status, 200);
    const m = seen.at(-1);
    assert.equal(m.path, '/sms');
    assert.equal(m.json.channel, 'sms');
    const zend = await call(withTemplate, 'GET', `/otp/${r.json.data.sessionId}/status`);
    assert.equal(zend.json.delivery, 'accepted');
  });

  it('without whatsappTemplate in the policy a WhatsApp send cannot go out: 502, nothing sent', async () => {
    const before = seen.length;
    const r = await call(withoutTemplate, 'POST', '/v1/messaging/otp/request', { dest: '+233202007748', src: 'ACME', purpose: 'LOGIN', channel: 'whatsapp' });
    assert.equal(r.status, 502, JSON.stringify(r.json));
    assert.equal(r.json.error.code, 'DELIVERY_FAILED');
    assert.equal(seen.length, before);
  });

  it('policy whatsappTemplate and whatsappContentSid are checked', async () => {
    const patch = async (policy) =>
      fetch(`${host.baseUrl}/v1/admin/workspaces`, {
        method: 'POST',
        headers: { authorization: `Bearer ${host.adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'bad', senders: ['ACME'], policy }),
      }).then(async (x) => ({ status: x.status, json: await x.json() }));
    for (const [policy, field] of [
      [{ whatsappTemplate: { name: 'Has Caps', language: 'en' } }, 'policy.whatsappTemplate'],
      [{ whatsappTemplate: { name: 'otp' } }, 'policy.whatsappTemplate'],
      [{ whatsappContentSid: 'HX123' }, 'policy.whatsappContentSid'],
    ]) {
      const r = await patch(policy);
      assert.equal(r.status, 400, JSON.stringify(r.json));
      assert.equal(r.json.error.code, 'VALIDATION_ERROR');
      assert.equal(r.json.error.field, field);
    }
  });

  /** Meta's status webhook (its documented shape), signed with the app secret unless `signature` is given. */
  const webhook = async (statuses, { signature } = {}) => {
    const body = JSON.stringify({
      object: 'whatsapp_business_account',
      entry: [{ id: '102290129340398', changes: [{ field: 'messages', value: { messaging_product: 'whatsapp', metadata: { phone_number_id: PHONE_ID }, statuses } }] }],
    });
    const sig = signature === undefined ? `sha256=${crypto.createHmac('sha256', APP_SECRET).update(body).digest('hex')}` : signature;
    const r = await fetch(`${host.baseUrl}${META_PATH}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(sig === null ? {} : { 'x-hub-signature-256': sig }) },
      body,
    });
    return { status: r.status, json: await r.json() };
  };

  it("Meta's webhook: the callback check answers the challenge; signed statuses move the session, forged ones are 403", async () => {
    // The check Meta makes when the callback URL is saved in its app settings.
    const check = (token) => fetch(`${host.baseUrl}${META_PATH}?hub.mode=subscribe&hub.verify_token=${encodeURIComponent(token)}&hub.challenge=1158201444`);
    const ok = await check(VERIFY_TOKEN);
    assert.equal(ok.status, 200);
    assert.equal(await ok.text(), '1158201444');
    const wrong = await check('not-the-token');
    assert.equal(wrong.status, 403);
    assert.equal((await wrong.json()).error.code, 'INVALID_SIGNATURE');

    const send = async (dest) => {
      const r = await call(withTemplate, 'POST', '/v1/messaging/otp/request', { dest, src: 'ACME', purpose: 'LOGIN', channel: 'whatsapp' });
      assert.equal(r.status, 200, JSON.stringify(r.json));
      return { id: r.json.data.sessionId, wamid: seen.at(-1).id };
    };
    const status = async (id) => (await call(withTemplate, 'GET', `/v1/messaging/otp/sessions/${id}`)).json.data;
    const a = await send('+233202007801');
    const b = await send('+233202007802');
    // Forged or unsigned: 403, nothing moves.
    assert.equal((await webhook([{ id: a.wamid, status: 'delivered' }], { signature: 'sha256=00' })).status, 403);
    assert.equal((await webhook([{ id: a.wamid, status: 'delivered' }], { signature: null })).status, 403);
    assert.equal((await status(a.id)).delivery, 'accepted');
    // One webhook, several statuses, in order: a sent then read; b failed with Meta's error code;
    // an id otpkit never sent is ignored.
    const r = await webhook([
      { id: a.wamid, status: 'sent', timestamp: '1700000000', recipient_id: '233202007801' },
      { id: a.wamid, status: 'read', timestamp: '1700000005', recipient_id: '233202007801' },
      { id: 'wamid.unknown', status: 'delivered' },
      { id: b.wamid, status: 'failed', errors: [{ code: 131026, title: 'Message undeliverable' }] },
    ]);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal((await status(a.id)).delivery, 'delivered');
    const vb = await status(b.id);
    assert.deepEqual([vb.delivery, vb.deliveryErrorCode], ['failed', '131026']);
    // The trail names each move.
    let events = [];
    for (let i = 0; i < 60 && events.length < 2; i++) {
      const page = await call(withTemplate, 'GET', `/v1/messaging/otp/audit?sessionId=${a.id}`);
      events = page.json.data.events.filter((e) => e.event === 'delivery_receipt');
      if (events.length < 2) await new Promise((res) => setTimeout(res, 50));
    }
    assert.deepEqual(events.map((e) => e.outcome).sort(), ['delivered', 'sent']);
    assert.equal(events[0].messageId, a.wamid);
  });
});
