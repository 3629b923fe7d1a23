'use strict';
// Delivery receipts (SPEC §8) on both stores, through the library API (OtpService#receipt) and
// through handle()/listener (`otpkit serve`'s routing): the receipt index a store keeps per
// delivered session (by session id and by the latest provider message id, also after a resend),
// forward-only states, receipts about an earlier message of a resent session ignored, the audit
// event and analytics counters in the session's workspace, the index's lifetime (the session's
// purge time), no API key and any content type on the routes, and the `delivery_undelivered`
// log line without a token, signature or full number.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');
const { OtpService, RedisStore, MemoryStore, listener, receiptKeysFromEnv } = require('..');
const { PEPPER, startRedis, newDest, redisClientFor } = require('./helpers');

const JSON_TOKEN = 'json-receipt-token-0123456789';
const TWILIO_TOKEN = 'twilio-auth-token-0123456789';
const PUBLIC = 'https://otp.example.test';
const TWILIO_PATH = '/v1/messaging/otp/delivery-receipts/twilio';
const JSON_PATH = '/v1/messaging/otp/delivery-receipts/json';

const jsonSig = (body) => `sha256=${crypto.createHmac('sha256', JSON_TOKEN).update(body).digest('hex')}`;
function twilioSig(pathAndQuery, params) {
  const data = Object.keys(params)
    .sort()
    .reduce((acc, k) => acc + k + params[k], PUBLIC + pathAndQuery);
  return crypto.createHmac('sha1', TWILIO_TOKEN).update(Buffer.from(data, 'utf8')).digest('base64');
}

/** A gateway that accepts every message with a fresh provider message id. */
function acceptingGateway() {
  let n = 0;
  const sent = [];
  const gw = async (m) => {
    const messageId = `MSG${Date.now()}x${n++}`;
    sent.push({ ...m, messageId });
    return { outcome: 'delivered', messageId };
  };
  gw.sent = sent;
  return gw;
}

function service(store, gateway) {
  return new OtpService({
    pepper: PEPPER,
    gateway,
    store,
    policy: { resendAfterSeconds: 0, ttlSeconds: 120, retentionSeconds: 60 },
    receipts: { publicBaseUrl: PUBLIC, twilioTokens: [TWILIO_TOKEN], jsonToken: JSON_TOKEN },
  });
}

const jsonReceipt = (otp, fields) => {
  const body = JSON.stringify(fields);
  return otp.receipt('json', JSON_PATH, jsonSig(body), Buffer.from(body));
};

describe('delivery receipts (library and handle)', () => {
  let redis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  async function makeStore(kind) {
    if (kind === 'memory') return new MemoryStore();
    const store = new RedisStore({ url: redis.url, prefix: `rc${Date.now()}${Math.random().toString(36).slice(2, 6)}:` });
    await store.connect();
    return store;
  }

  for (const kind of ['memory', 'redis']) {
    it(`${kind}: receipts by message id, by reference and by URL; a resend's new message is indexed, the old one ignored`, async (t) => {
      const store = await makeStore(kind);
      const gw = acceptingGateway();
      const otp = service(store, gw);
      try {
        const { sessionId } = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
        const first = gw.sent.at(-1).messageId;
        await otp.settle();

        // By the provider's message id: sent, then delivered; the same again changes nothing.
        let r = await jsonReceipt(otp, { id: first, status: 'sent' });
        assert.equal(r.status, 200, r.body);
        assert.equal((await otp.status(sessionId)).delivery, 'sent');

        // A resend: a new message id, indexed; receipts about the first message change nothing.
        await otp.resend(sessionId);
        const second = gw.sent.at(-1).messageId;
        assert.notEqual(second, first);
        await otp.settle();
        assert.equal((await otp.status(sessionId)).delivery, 'accepted');
        r = await jsonReceipt(otp, { id: first, status: 'delivered' });
        assert.equal(r.status, 200);
        assert.equal((await otp.status(sessionId)).delivery, 'accepted', 'a receipt of the earlier message');
        r = await jsonReceipt(otp, { id: second, status: 'undelivered', errorCode: '30003' });
        assert.equal(r.status, 200);
        let view = await otp.status(sessionId);
        assert.deepEqual([view.delivery, view.deliveryErrorCode], ['undelivered', '30003']);

        // By reference (the session id): a final state does not move again.
        r = await jsonReceipt(otp, { reference: sessionId, status: 'delivered' });
        assert.equal(r.status, 200);
        assert.equal((await otp.status(sessionId)).delivery, 'undelivered');

        // Twilio, the session named in the callback URL, signed over PUBLIC_BASE_URL + path + query.
        const other = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
        const sid = gw.sent.at(-1).messageId;
        const pq = `${TWILIO_PATH}?ws=${otp.libraryWorkspace.id}&session=${other.sessionId}`;
        const params = { MessageSid: sid, MessageStatus: 'delivered', AccountSid: 'AC1' };
        const form = new URLSearchParams(params).toString();
        r = await otp.receipt('twilio', pq, twilioSig(pq, params), Buffer.from(form));
        assert.equal(r.status, 200, r.body);
        assert.equal((await otp.status(other.sessionId)).delivery, 'delivered');
        // Forged, missing, or signed for another URL: 403, nothing changes.
        const forged = await otp.receipt('twilio', pq, twilioSig(`${pq}&x=1`, params), Buffer.from(form));
        assert.equal(forged.status, 403);
        assert.equal(JSON.parse(forged.body).error.code, 'INVALID_SIGNATURE');
        assert.equal((await otp.receipt('json', JSON_PATH, null, Buffer.from('{}'))).status, 403);
        // Unknown ids: acknowledged and ignored.
        assert.equal((await jsonReceipt(otp, { id: 'MSG-unknown', status: 'delivered' })).status, 200);

        // The trail and the analytics of the session's workspace.
        await otp.settle();
        const events = (await otp.audit({ sessionId })).events.filter((e) => e.event === 'delivery_receipt');
        assert.equal(events.length, 2, JSON.stringify(events));
        const report = await otp.analytics({ days: 1 });
        assert.deepEqual([report.totals.delivered, report.totals.undelivered, report.totals.delivery_rate], [1, 1, 0.5]);
        assert.deepEqual(report.top_errors, [{ code: '30003', count: 1 }]);

        // The index: s:<id> per session, m:<id> per message sent; kept until the purge time.
        if (kind === 'memory') {
          assert.equal(store.stats().receiptIndex, 5);
          store.sweep(Date.now() + 10 * 60_000);
          assert.equal(store.stats().receiptIndex, 0);
        } else {
          const raw = redisClientFor(redis, t); // the test's own client, to read the index
          const keys = await raw.keys(`${store.prefix}rcpt:*`);
          assert.equal(keys.length, 5, keys.join(' '));
          assert.deepEqual(await raw.get(`${store.prefix}rcpt:m:${second}`), `${otp.libraryWorkspace.id}:${sessionId}`);
          for (const k of keys) {
            const ttl = await raw.pttl(k);
            assert.ok(ttl > 0 && ttl <= 180_000 + 1000, `${k} lives until the purge time (${ttl} ms)`);
          }
        }
      } finally {
        await otp.close();
      }
    });
  }

  for (const kind of ['memory', 'redis']) {
    it(`${kind}: the library's own policy fallbackOnUndelivered sends an undelivered WhatsApp code again by SMS, once`, async () => {
      const store = await makeStore(kind);
      const gw = acceptingGateway();
      const otp = new OtpService({
        pepper: PEPPER,
        gateway: gw,
        store,
        // resendAfterSeconds does not hold a fallback back: the user received nothing.
        policy: { resendAfterSeconds: 600, channelFallback: ['whatsapp', 'sms'], fallbackOnUndelivered: true },
        receipts: { jsonToken: JSON_TOKEN },
      });
      try {
        const { sessionId } = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN', channel: 'whatsapp' });
        const first = gw.sent.at(-1);
        assert.equal(first.channel, 'whatsapp');
        await otp.settle();
        assert.equal((await jsonReceipt(otp, { id: first.messageId, status: 'undelivered', errorCode: '63016' })).status, 200);
        await otp.settle();
        assert.equal(gw.sent.length, 2, 'one fallback message');
        const again = gw.sent.at(-1);
        assert.equal(again.channel, 'sms');
        assert.equal(again.to, first.to);
        const view = await otp.status(sessionId);
        assert.deepEqual([view.state, view.channel, view.delivery], ['PENDING', 'sms', 'accepted']);
        // The duplicate and the SMS's own failure (the list's last channel): nothing more is sent.
        await jsonReceipt(otp, { id: first.messageId, status: 'undelivered', errorCode: '63016' });
        await jsonReceipt(otp, { id: again.messageId, status: 'failed', errorCode: '30008' });
        await otp.settle();
        assert.equal(gw.sent.length, 2);
        const events = (await otp.audit({ sessionId })).events.map((e) => e.event);
        assert.ok(events.includes('resent'), events.join(' '));
        const report = await otp.analytics({ days: 1 });
        assert.equal(report.totals.resent, 1);
        assert.deepEqual(report.top_errors, [{ code: '30008', count: 1 }, { code: '63016', count: 1 }]);
      } finally {
        await otp.close();
      }
    });
  }

  it('the routes take no API key and any content type, answer the flow, and log an undelivered message', async () => {
    const gw = acceptingGateway();
    const otp = service(new MemoryStore(), gw);
    const lines = [];
    const server = http.createServer(listener(otp, { log: (l) => lines.push(l), logLevel: 'info' }));
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${server.address().port}`;
    try {
      const dest = newDest();
      const { sessionId } = await otp.request({ dest, src: 'Acme', purpose: 'LOGIN' });
      const sid = gw.sent.at(-1).messageId;
      // Twilio: a form, no API key, a query string kept exactly as received.
      const pq = `${TWILIO_PATH}?ws=${otp.libraryWorkspace.id}&session=${sessionId}`;
      const params = { MessageSid: sid, MessageStatus: 'undelivered', ErrorCode: '30005' };
      const signature = twilioSig(pq, params);
      const res = await fetch(base + pq, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': signature },
        body: new URLSearchParams(params).toString(),
      });
      assert.equal(res.status, 200);
      assert.deepEqual((await res.json()).data, { received: true });
      assert.equal((await otp.status(sessionId)).delivery, 'undelivered');
      // JSON: any content type, raw bytes signed; a bad status is 400, no signature 403.
      const body = JSON.stringify({ reference: sessionId, status: 'bogus' });
      const bad = await fetch(base + JSON_PATH, { method: 'POST', headers: { 'content-type': 'text/plain', 'x-otpkit-signature': jsonSig(body) }, body });
      assert.equal(bad.status, 400);
      const unsigned = await fetch(base + JSON_PATH, { method: 'POST', body });
      assert.equal(unsigned.status, 403);
      // The usual body limit.
      const big = await fetch(base + JSON_PATH, { method: 'POST', body: 'x'.repeat(64 * 1024) });
      assert.equal(big.status, 413);
      // Only POST.
      assert.equal((await fetch(base + JSON_PATH)).status, 405);
      await otp.settle();
      const warn = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'delivery_undelivered');
      assert.ok(warn, lines.join('\n'));
      assert.equal(warn.errorCode, '30005');
      const all = lines.join('\n');
      for (const secret of [signature, TWILIO_TOKEN, JSON_TOKEN, dest]) assert.ok(!all.includes(secret), 'never a token, signature or full number');
    } finally {
      server.close();
      await otp.close();
    }
  });

  it('receiptKeysFromEnv: the Twilio tokens of the gateways that are Twilio, the SMS token for JSON, PUBLIC_BASE_URL', () => {
    assert.deepEqual(receiptKeysFromEnv({ SMS_GATEWAY_TOKEN: 'a', PUBLIC_BASE_URL: PUBLIC }), {
      publicBaseUrl: PUBLIC,
      twilioTokens: [],
      jsonToken: 'a',
      metaAppSecret: null,
      metaVerifyToken: null,
    });
    const env = {
      SMS_GATEWAY_KIND: 'twilio',
      SMS_GATEWAY_TOKEN: 'a',
      WHATSAPP_GATEWAY_URL: 'https://wa.example.test',
      WHATSAPP_GATEWAY_KIND: 'twilio',
      WHATSAPP_GATEWAY_TOKEN: 'b',
    };
    assert.deepEqual(receiptKeysFromEnv(env), { publicBaseUrl: null, twilioTokens: ['a', 'b'], jsonToken: 'a', metaAppSecret: null, metaVerifyToken: null });
    const meta = receiptKeysFromEnv({ WHATSAPP_APP_SECRET: 's', WHATSAPP_VERIFY_TOKEN: 'v', SMS_GATEWAY_KIND: 'smpp' });
    assert.deepEqual([meta.metaAppSecret, meta.metaVerifyToken, meta.twilioTokens], ['s', 'v', []], 'an unknown kind is no Twilio gateway');
    assert.deepEqual(receiptKeysFromEnv({ ...env, WHATSAPP_GATEWAY_KIND: 'meta' }).twilioTokens, ['a']);
    assert.deepEqual(receiptKeysFromEnv({ ...env, WHATSAPP_GATEWAY_URL: '' }).twilioTokens, ['a']);
  });
});
