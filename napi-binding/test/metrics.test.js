'use strict';
// `GET /metrics` of a real `otpkit serve` (SPEC §9, issue 17 item 3): Prometheus text counting
// what the requests did, the admin token unless METRICS_PUBLIC=true; labels never hold a number.

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { randomBytes } = require('node:crypto');
const { startSink, startRedis, newDest, serve } = require('./helpers');


/** The value of one sample line `name{labels} value` of the exposition, or 0 when absent. */
function sample(text, name, labels) {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inside = line.slice(name.length + 1, line.indexOf('}'));
    const have = inside.split(',');
    if (want.every((w) => have.includes(w))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

describe('GET /metrics (otpkit serve)', () => {
  const stops = [];
  after(async () => {
    for (const s of stops) await s();
  });

  it('counts sends by channel/country/outcome, verifications, refusals and latencies; admin token required', async () => {
    const sink = await startSink();
    stops.push(() => sink.stop());
    const admin = randomBytes(16).toString('hex');
    const host = await serve({ OTP_PEPPER: randomBytes(32).toString('hex'), ADMIN_TOKEN: admin, SMS_GATEWAY_URL: sink.gatewayUrl });
    stops.push(() => host.stop());
    const adminHeaders = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' };
    const created = await fetch(`${host.base}/v1/admin/workspaces`, {
      method: 'POST', headers: adminHeaders,
      body: JSON.stringify({ name: 'metrics', senders: ['Acme'], policy: { sendsPerDestination: { limit: 1, windowSeconds: 600 } } }),
    });
    assert.equal(created.status, 201);
    const { apiKey } = (await created.json()).data;
    const h = { 'x-api-key': apiKey, 'content-type': 'application/json' };
    const post = (p, body) => fetch(`${host.base}${p}`, { method: 'POST', headers: h, body: JSON.stringify(body) });
    const dest = newDest();
    const sent = await post('/v1/messaging/otp/request', { dest, src: 'Acme', purpose: 'LOGIN' });
    assert.equal(sent.status, 200);
    const { sessionId } = (await sent.json()).data;
    const code = /\d{6}/.exec((await sink.messages(dest))[0].text)[0];
    const wrong = code === '000000' ? '111111' : '000000';
    assert.equal((await post('/v1/messaging/otp/verify', { sessionId, code: wrong })).status, 400);
    assert.equal((await post('/v1/messaging/otp/verify', { sessionId, code })).status, 200);
    assert.equal((await post('/v1/messaging/otp/request', { dest, src: 'Acme', purpose: 'KYC_VERIFICATION' })).status, 429);
    const failing = newDest();
    await sink.setMode(failing, 'fail500');
    assert.equal((await post('/v1/messaging/otp/request', { dest: failing, src: 'Acme', purpose: 'LOGIN' })).status, 502);

    assert.equal((await fetch(`${host.base}/metrics`)).status, 401, 'the admin token is required');
    assert.equal((await fetch(`${host.base}/metrics`, { headers: { authorization: 'Bearer nope' } })).status, 401);
    const res = await fetch(`${host.base}/metrics`, { headers: { authorization: `Bearer ${admin}` } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const country = '1'; // newDest() numbers are +1555…
    assert.equal(sample(text, 'otpkit_sends_total', { channel: 'sms', country, outcome: 'delivered' }), 1);
    assert.equal(sample(text, 'otpkit_sends_total', { channel: 'sms', outcome: 'failed' }), 1);
    assert.equal(sample(text, 'otpkit_verifications_total', { status: 'INVALID' }), 1);
    assert.equal(sample(text, 'otpkit_verifications_total', { status: 'APPROVED' }), 1);
    assert.equal(sample(text, 'otpkit_blocked_sends_total', { reason: 'RATE_LIMITED' }), 1);
    assert.equal(sample(text, 'otpkit_requests_total', { route: 'request', status: '200' }), 1);
    assert.equal(sample(text, 'otpkit_requests_total', { route: 'request', status: '502' }), 1);
    assert.ok(sample(text, 'otpkit_gateway_latency_seconds_count', { channel: 'sms', outcome: 'delivered' }) >= 1);
    // The memory store performs its effects inside the native call: no store latency to time.
    assert.match(text, /^# TYPE otpkit_store_latency_seconds histogram$/m);
    assert.match(text, /^process_cpu_user_seconds_total /m, 'the process defaults too');
    for (const secret of [dest.slice(1), failing.slice(1), apiKey, code]) {
      assert.ok(!text.includes(secret), 'no number, key or code in the metrics');
    }
  });

  it('with Redis, each store effect is timed (otpkit_store_latency_seconds by effect)', async () => {
    const redis = await startRedis();
    stops.push(() => redis.stop());
    const sink = await startSink();
    stops.push(() => sink.stop());
    const admin = randomBytes(16).toString('hex');
    const host = await serve({ OTP_PEPPER: randomBytes(32).toString('hex'), ADMIN_TOKEN: admin, SMS_GATEWAY_URL: sink.gatewayUrl, REDIS_URL: redis.url });
    stops.push(() => host.stop());
    const created = await fetch(`${host.base}/v1/admin/workspaces`, {
      method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'metrics-redis', senders: ['Acme'] }),
    });
    const { apiKey } = (await created.json()).data;
    const r = await fetch(`${host.base}/v1/messaging/otp/request`, {
      method: 'POST', headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
      body: JSON.stringify({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' }),
    });
    assert.equal(r.status, 200);
    const text = await (await fetch(`${host.base}/metrics`, { headers: { authorization: `Bearer ${admin}` } })).text();
    assert.ok(sample(text, 'otpkit_store_latency_seconds_count', { io: 'admit' }) >= 1, text.split('\n').filter((l) => l.includes('store_latency_seconds_count')).join('\n'));
    assert.ok(sample(text, 'otpkit_store_latency_seconds_count', { io: 'storeSession' }) >= 1);
  });

  it('METRICS_PUBLIC=true answers without a token', async () => {
    const host = await serve({ OTP_PEPPER: randomBytes(32).toString('hex'), METRICS_PUBLIC: 'true' });
    stops.push(() => host.stop());
    const res = await fetch(`${host.base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /otpkit_requests_total/);
  });
});
