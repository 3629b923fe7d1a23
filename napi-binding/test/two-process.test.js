'use strict';
// Two `otpkit serve` processes on one Redis, and again on a local 3-master Redis Cluster, hammered
// in parallel over HTTP: attempts are never over-counted, a session is approved once, and
// concurrent requests for one (dest, purpose) send one SMS, across processes. The gateway is the
// conformance suite's real HTTP sink.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { randomBytes } = require('node:crypto');
const { ROOT, sleep, startRedis, startRedisCluster, startSink, codeOf, newDest, serve } = require('./helpers');

const BACKENDS = [
  { name: 'one Redis', start: async () => ((r) => ({ env: { REDIS_URL: r.url }, stop: () => r.stop() }))(await startRedis()) },
  {
    name: 'a 3-master Redis Cluster',
    start: async () => ((c) => ({ env: { REDIS_CLUSTER_NODES: c.nodes }, stop: () => c.stop() }))(await startRedisCluster(3)),
  },
];

for (const backend of BACKENDS)
describe(`two otpkit serve processes sharing ${backend.name}`, () => {
  let redis;
  let sink;
  let a;
  let b;
  let key;
  let wsId;
  const admin = randomBytes(16).toString('hex');

  before(async () => {
    redis = await backend.start();
    sink = await startSink();
    const env = {
      OTP_PEPPER: randomBytes(32).toString('hex'),
      ADMIN_TOKEN: admin,
      SMS_GATEWAY_URL: sink.gatewayUrl,
      SMS_GATEWAY_TOKEN: 'sink-token',
      ...redis.env,
    };
    [a, b] = await Promise.all([serve(env), serve(env)]);
    const created = await fetch(`${a.base}/v1/admin/workspaces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'two-process', senders: ['Acme'], policy: { maxAttempts: 5 } }),
    });
    assert.equal(created.status, 201);
    ({ apiKey: key, workspaceId: wsId } = (await created.json()).data);
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await sink?.stop();
    await redis?.stop();
  });

  const post = (host, p, body) =>
    fetch(`${host.base}${p}`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, body: await r.json() }));
  const hosts = () => [a, b];
  const adminCall = (host, method, p) =>
    fetch(`${host.base}${p}`, { method, headers: { authorization: `Bearer ${admin}` } }).then(async (r) => ({ status: r.status, body: r.status === 204 ? null : await r.json() }));

  it('a key revoked through one process is refused by the other right after, though that one has used it (10 keys)', async () => {
    for (let i = 0; i < 10; i++) {
      const [revoker, user] = i % 2 ? [b, a] : [a, b];
      const made = await adminCall(revoker, 'POST', `/v1/admin/workspaces/${wsId}/keys`);
      assert.equal(made.status, 201);
      const { apiKey, keyId } = made.body.data;
      const status = (host) =>
        fetch(`${host.base}/v1/messaging/otp/sessions/sess_unknown`, { headers: { 'x-api-key': apiKey } }).then((r) => r.status);
      // Used twice on `user`: the second lookup is the one a key cache would answer.
      assert.equal(await status(user), 404);
      assert.equal(await status(user), 404);
      assert.equal((await adminCall(revoker, 'DELETE', `/v1/admin/workspaces/${wsId}/keys/${keyId}`)).status, 204);
      assert.equal(await status(user), 401, `key ${i}: refused by the other process`);
      assert.equal(await status(revoker), 401, `key ${i}: refused by the revoking process`);
    }
  });

  it('40 concurrent requests for one (dest, purpose) across both processes send one SMS', async () => {
    const dest = newDest();
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) => post(hosts()[i % 2], '/v1/messaging/otp/request', { dest, src: 'Acme', purpose: 'LOGIN' })),
    );
    assert.deepEqual([...new Set(answers.map((x) => x.status))], [200]);
    assert.equal(new Set(answers.map((x) => x.body.data.sessionId)).size, 1);
    assert.equal(answers.filter((x) => x.body.data.reused === false).length, 1);
    assert.equal((await sink.messages(dest)).length, 1);
  });

  it('60 concurrent wrong verifies across both processes consume exactly 5 attempts', async () => {
    const dest = newDest();
    const r = await post(a, '/v1/messaging/otp/request', { dest, src: 'Acme', purpose: 'LOGIN' });
    const code = codeOf((await sink.messages(dest))[0].body.text);
    const wrong = code === '000000' ? '111111' : '000000';
    const answers = await Promise.all(
      Array.from({ length: 60 }, (_, i) => post(hosts()[i % 2], '/v1/messaging/otp/verify', { sessionId: r.body.data.sessionId, code: wrong })),
    );
    const count = (s) => answers.filter((x) => x.body.data.status === s).length;
    assert.equal(count('INVALID'), 5);
    assert.equal(count('MAX_ATTEMPTS_REACHED'), 55);
    assert.deepEqual(answers.filter((x) => x.body.data.status === 'INVALID').map((x) => x.body.data.attemptsLeft).sort(), [0, 1, 2, 3, 4]);
    const st = await fetch(`${b.base}/v1/messaging/otp/sessions/${r.body.data.sessionId}`, { headers: { 'x-api-key': key } }).then((x) => x.json());
    assert.equal(st.data.attemptsUsed, 5);
    assert.equal(st.data.state, 'LOCKED');
  });

  it('30 concurrent right verifies across both processes approve exactly once', async () => {
    const dest = newDest();
    const r = await post(b, '/v1/messaging/otp/request', { dest, src: 'Acme', purpose: 'LOGIN' });
    const code = codeOf((await sink.messages(dest))[0].body.text);
    const answers = await Promise.all(
      Array.from({ length: 30 }, (_, i) => post(hosts()[i % 2], '/v1/messaging/otp/verify', { sessionId: r.body.data.sessionId, code })),
    );
    assert.equal(answers.filter((x) => x.status === 200 && x.body.data.status === 'APPROVED').length, 1);
    assert.equal(answers.filter((x) => x.status === 409 && x.body.data.status === 'ALREADY_USED').length, 29);
  });

  it('analytics of the runs above count every send, reuse, approval and lock exactly once, read from either process', async () => {
    const want = { sent: 3, reused: 39, delivery_failed: 0, verified: 1, failed: 1, expired: 0 };
    const read = async (host) => {
      const r = await fetch(`${host.base}/otp/analytics?days=1`, { headers: { 'x-api-key': key } });
      assert.equal(r.status, 200);
      return (await r.json()).totals;
    };
    const deadline = Date.now() + 2500; // rows may lag an answer by up to 2 s
    let totals;
    do {
      totals = await read(a);
      if (Object.entries(want).every(([k, v]) => totals[k] === v)) break;
      await sleep(100);
    } while (Date.now() < deadline);
    for (const host of [a, b]) {
      const t = await read(host);
      assert.deepEqual(Object.fromEntries(Object.keys(want).map((k) => [k, t[k]])), want);
      assert.equal(t.sms_segments, 3);
    }
  });

  it('admin writes across both processes are never lost: 20 parallel key creations all work, parallel PATCHes all land', async () => {
    // Issue 19 item 4: 20 parallel creations answered 201 but only 2 keys worked.
    const adminCall = (host, method, p, body) =>
      fetch(`${host.base}${p}`, {
        method,
        headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      }).then(async (r) => ({ status: r.status, body: await r.json() }));
    const created = await adminCall(a, 'POST', '/v1/admin/workspaces', { name: 'admin-race', senders: ['Acme'] });
    const id = created.body.data.workspaceId;
    const made = await Promise.all(Array.from({ length: 20 }, (_, i) => adminCall(hosts()[i % 2], 'POST', `/v1/admin/workspaces/${id}/keys`)));
    assert.deepEqual([...new Set(made.map((x) => x.status))], [201]);
    const statuses = await Promise.all(
      made.map((x, i) =>
        fetch(`${hosts()[i % 2].base}/v1/messaging/otp/sessions/3f1c2b9e-8a47-4d0e-9b6a-1c2d3e4f5a6b`, { headers: { 'x-api-key': x.body.data.apiKey } }).then((r) => r.status),
      ),
    );
    assert.equal(statuses.filter((s) => s === 404).length, 20, `keys that authenticate: ${statuses.join(',')}`);
    const patches = [{ policy: { allowedCountries: ['233'] } }, { senders: ['Acme', 'Other'] }, { policy: { maxAttempts: 3 } }, { policy: { ttlSeconds: 180 } }];
    const answers = await Promise.all(patches.map((body, i) => adminCall(hosts()[i % 2], 'PATCH', `/v1/admin/workspaces/${id}`, body)));
    assert.deepEqual([...new Set(answers.map((x) => x.status))], [200]);
    const now = (await adminCall(b, 'PATCH', `/v1/admin/workspaces/${id}`, {})).body.data;
    assert.deepEqual([now.senders, now.policy.allowedCountries, now.policy.maxAttempts, now.policy.ttlSeconds], [['Acme', 'Other'], ['233'], 3, 180]);
    assert.equal(now.keyIds.length, 21);
  });

  it('the flood shield holds across both processes: 5 bursts of 40 to different numbers, limit 10 → exactly 10 SMS', async () => {
    // Issue 19 item 1: the shield was written from a value read earlier; 500 of 500 got through.
    const created = await fetch(`${a.base}/v1/admin/workspaces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'flood', senders: ['Acme'], policy: { sendsPerWorkspacePerMinute: 10 } }),
    });
    const floodKey = (await created.json()).data.apiKey;
    const dests = Array.from({ length: 200 }, () => newDest());
    const answers = [];
    for (let burst = 0; burst < 5; burst++) {
      const slice = dests.slice(burst * 40, burst * 40 + 40);
      answers.push(
        ...(await Promise.all(
          slice.map((dest, i) =>
            fetch(`${hosts()[i % 2].base}/v1/messaging/otp/request`, {
              method: 'POST',
              headers: { 'x-api-key': floodKey, 'content-type': 'application/json' },
              body: JSON.stringify({ dest, src: 'Acme', purpose: 'LOGIN' }),
            }).then((r) => r.status),
          ),
        )),
      );
    }
    assert.equal(answers.filter((s) => s === 200).length, 10, answers.join(','));
    assert.equal(answers.filter((s) => s === 429).length, 190);
    let sent = 0;
    for (const d of dests) sent += (await sink.messages(d)).length;
    assert.equal(sent, 10);
  });
});

describe('otpkit serve without a usable OTP_PEPPER', () => {
  it('answers /health 503 and every other route 500 MISCONFIGURED, with the core\'s exact bodies', async () => {
    const fs = require('node:fs');
    const cases = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests', 'vectors', 'envelopes.json'), 'utf8')).cases;
    const body = (name) => cases.find((c) => c.name === name).body;
    for (const pepper of [undefined, 'too-short']) {
      const host = await serve({ OTP_PEPPER: pepper ?? '', ADMIN_TOKEN: 'admin-token-for-this-test' });
      try {
        const health = await fetch(`${host.base}/health`);
        assert.equal(health.status, 503);
        assert.equal(await health.text(), body('health misconfigured'));
        const ready = await fetch(`${host.base}/ready`);
        assert.equal(ready.status, 503);
        assert.equal(await ready.text(), '{"status":"unready","failing":["config"]}');
        for (const [method, p] of [['POST', '/v1/messaging/otp/request'], ['POST', '/otp/send'], ['GET', '/v1/messaging/otp/audit'], ['POST', '/v1/admin/workspaces']]) {
          const r = await fetch(`${host.base}${p}`, { method, headers: { 'content-type': 'application/json' }, body: method === 'POST' ? '{}' : undefined });
          assert.equal(r.status, 500, `${method} ${p}`);
          assert.equal(await r.text(), body('500 misconfigured (no pepper)'), `${method} ${p}`);
        }
        assert.match(host.output(), /OTP_PEPPER is missing or shorter than 32 bytes/);
      } finally {
        await host.stop();
      }
    }
  });
});

describe('otpkit serve readiness (SPEC §9)', () => {
  it('Redis down: /health stays 200 (liveness), /ready answers 503 failing ["store"]; back up: 200 ready', async () => {
    const redis = await startRedis();
    const sink = await startSink();
    const host = await serve({ OTP_PEPPER: randomBytes(32).toString('hex'), SMS_GATEWAY_URL: sink.gatewayUrl, REDIS_URL: redis.url });
    try {
      let r = await fetch(`${host.base}/ready`);
      assert.equal(r.status, 200);
      assert.equal(await r.text(), '{"status":"ready"}');
      await redis.stop();
      r = await fetch(`${host.base}/ready`);
      assert.equal(r.status, 503);
      assert.equal(await r.text(), '{"status":"unready","failing":["store"]}');
      assert.equal((await fetch(`${host.base}/health`)).status, 200);
    } finally {
      await host.stop();
      await sink.stop();
    }
  });
});
