// API keys (Bearer and x-api-key; missing, unknown, revoked), the admin API, /health, sender and
// destination policy refusals.

import { describe, it } from 'node:test';
import {
  adminCreate, API_KEY, assert, call, expectError, expectStatus, expectVectorBody, expectVerify, H, newDest,
  newWorkspace, useHarness,
} from './lib.mjs';

useHarness();

const REQUEST = '/v1/messaging/otp/request';
const SOME_ID = '3f1c2b9e-8a47-4d0e-9b6a-1c2d3e4f5a6b';

describe('readiness', () => {
  it('GET /ready → 200 {"status":"ready"} without any key (store and configuration usable)', async () => {
    const res = await call('GET', '/ready');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.text, '{"status":"ready"}');
    assert.match(res.headers.get('content-type') || '', /^application\/json/i);
    expectError(await call('POST', '/ready'), 405, 'METHOD_NOT_ALLOWED');
  });
});

describe('health', () => {
  it('GET /health → 200 {"status":"ok"} without any key', async () => {
    const res = await call('GET', '/health');
    assert.equal(res.status, 200);
    assert.equal(res.text, '{"status":"ok"}');
  });
});

describe('API keys', () => {
  const routes = (ws, dest) => [
    ['POST', REQUEST, { body: ws.body(dest) }],
    ['POST', '/v1/messaging/otp/verify', { body: { sessionId: SOME_ID, code: '123456' } }],
    ['GET', `/v1/messaging/otp/sessions/${SOME_ID}`, {}],
    ['GET', '/v1/messaging/otp/audit', {}],
    ['POST', '/otp/send', { body: { phone_number: dest, app: 'x' } }],
    ['POST', `/otp/${SOME_ID}/verify`, { body: { code: '123456' } }],
    ['GET', `/otp/${SOME_ID}/status`, {}],
  ];

  it('missing key → 401 UNAUTHORIZED (exact body) on every API route, and nothing is sent', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    for (const [method, route, opts] of routes(ws, dest)) {
      expectVectorBody(await call(method, route, opts), '401');
    }
    assert.equal((await H.sink.messages(dest)).length, 0);
  });

  it('unknown or malformed keys → 401, in either header', async () => {
    const ws = await newWorkspace();
    const dest = newDest();
    const unknown = `otpk_${'A'.repeat(43)}`;
    const tampered = ws.key.slice(0, -1) + (ws.key.endsWith('A') ? 'B' : 'A');
    for (const key of [unknown, tampered, 'otpk_short', 'not-a-key', ws.key.slice(5)]) {
      expectVectorBody(await call('POST', REQUEST, { key, body: ws.body(dest) }), '401');
      expectVectorBody(await call('POST', REQUEST, { xApiKey: key, body: ws.body(dest) }), '401');
    }
    // Other schemes than Bearer do not carry a key.
    expectVectorBody(await call('POST', REQUEST, { headers: { authorization: `Basic ${ws.key}` }, body: ws.body(dest) }), '401');
    expectVectorBody(await call('POST', REQUEST, { headers: { authorization: ws.key }, body: ws.body(dest) }), '401');
    assert.equal((await H.sink.messages(dest)).length, 0);
  });

  it('a valid key works as Authorization: Bearer and as x-api-key', async () => {
    const ws = await newWorkspace({ policy: { reuse: false } });
    const dest = newDest();
    expectStatus(await call('POST', REQUEST, { key: ws.key, body: ws.body(dest) }), 200);
    expectStatus(await call('POST', REQUEST, { xApiKey: ws.key, body: ws.body(dest) }), 200);
    expectStatus(await call('POST', REQUEST, { headers: { authorization: `bearer ${ws.key}` }, body: ws.body(dest, { purpose: 'TRANSACTION' }) }), 200);
    assert.equal((await H.sink.messages(dest)).length, 3);
  });

  it('a second key works; a revoked key → 401 at once; the other key keeps working', async () => {
    const ws = await newWorkspace();
    const created = await call('POST', `/v1/admin/workspaces/${ws.id}/keys`, { admin: true });
    const j = expectStatus(created, 201);
    assert.deepEqual(j, { success: true, message: j.message, data: { apiKey: j.data.apiKey, keyId: j.data.keyId } });
    assert.equal(typeof j.message, 'string');
    assert.match(j.data.apiKey, API_KEY);
    assert.notEqual(j.data.apiKey, ws.key);
    assert.notEqual(j.data.keyId, ws.keyId);
    const second = j.data.apiKey;

    const dest = newDest();
    const s = await ws.issue(dest);
    // Sessions belong to the workspace, not the key.
    const st = await call('GET', `/v1/messaging/otp/sessions/${s.sessionId}`, { xApiKey: second });
    expectStatus(st, 200);

    const del = await call('DELETE', `/v1/admin/workspaces/${ws.id}/keys/${j.data.keyId}`, { admin: true });
    assert.equal(del.status, 204);
    assert.equal(del.text, '');
    for (const opts of [{ key: second }, { xApiKey: second }]) {
      expectVectorBody(await call('POST', '/v1/messaging/otp/verify', { ...opts, body: { sessionId: s.sessionId, code: s.code } }), '401');
    }
    expectVerify(await ws.verify(s.sessionId, s.code), 'APPROVED', s.sessionId, 4);

    // Revoking it again, or an unknown key id → 404.
    expectError(await call('DELETE', `/v1/admin/workspaces/${ws.id}/keys/${j.data.keyId}`, { admin: true }), 404, 'NOT_FOUND');
    expectError(await call('DELETE', `/v1/admin/workspaces/${ws.id}/keys/key_0000000000000000`, { admin: true }), 404, 'NOT_FOUND');

    // Revoking the original key as well leaves the workspace without access.
    expect204(await call('DELETE', `/v1/admin/workspaces/${ws.id}/keys/${ws.keyId}`, { admin: true }));
    expectVectorBody(await call('GET', `/v1/messaging/otp/sessions/${s.sessionId}`, { key: ws.key }), '401');
  });
});

function expect204(res) {
  assert.equal(res.status, 204, res.text);
  assert.equal(res.text, '');
}

describe('admin API', () => {
  it('create → 201 {workspaceId, apiKey, keyId}', async () => {
    const res = await adminCreate({ name: 'Acme', senders: ['ACME'] });
    const j = expectStatus(res, 201);
    assert.deepEqual(Object.keys(j), ['success', 'message', 'data']);
    assert.equal(j.success, true);
    assert.equal(j.message, 'Workspace created');
    assert.deepEqual(Object.keys(j.data).sort(), ['apiKey', 'keyId', 'workspaceId']);
    assert.match(j.data.workspaceId, /^[A-Za-z0-9_-]{1,64}$/);
    assert.match(j.data.apiKey, API_KEY);
    assert.equal(typeof j.data.keyId, 'string');
    assert.ok(!j.data.keyId.includes(j.data.apiKey.slice(5)), 'the key id does not reveal the key');
    const other = expectStatus(await adminCreate({ name: 'Acme', senders: ['ACME'] }), 201);
    assert.notEqual(other.data.workspaceId, j.data.workspaceId);
    assert.notEqual(other.data.apiKey, j.data.apiKey);
  });

  it('wrong or missing admin token → 401 UNAUTHORIZED on every admin route', async () => {
    const ws = await newWorkspace();
    const attempts = [
      ['POST', '/v1/admin/workspaces', { body: { name: 'x', senders: ['X'] } }],
      ['PATCH', `/v1/admin/workspaces/${ws.id}`, { body: { senders: ['X'] } }],
      ['POST', `/v1/admin/workspaces/${ws.id}/keys`, {}],
      ['DELETE', `/v1/admin/workspaces/${ws.id}/keys/${ws.keyId}`, {}],
    ];
    for (const [method, route, opts] of attempts) {
      for (const auth of [{}, { admin: 'wrong-token' }, { admin: `${H.adminToken}x` }, { key: ws.key }]) {
        const res = await call(method, route, { ...opts, ...auth });
        expectError(res, 401, 'UNAUTHORIZED');
      }
    }
    // The workspace key still works (nothing was revoked).
    expectStatus(await ws.request(ws.body(newDest())), 200);
  });

  it('create validation: name, senders, policy keys and bounds → 400 with a field', async () => {
    const bad = [
      [{ senders: ['X'] }, 'name'],
      [{ name: '', senders: ['X'] }, 'name'],
      [{ name: 'x' }, 'senders'],
      [{ name: 'x', senders: [] }, 'senders'],
      [{ name: 'x', senders: ['Bad-Name'] }, 'senders'],
      [{ name: 'x', senders: 'X' }, 'senders'],
      [{ name: 'x', senders: ['X'], policy: { nope: 1 } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: { ttlSeconds: 59 } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: { ttlSeconds: 601 } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: { codeLength: 5 } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: { codeLength: 11 } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: { maxAttempts: 0 } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: { maxAttempts: 11 } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: { reuse: 'yes' } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: { sendsPerDestination: { limit: 0, windowSeconds: 60 } } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: { sendsPerDestination: { limit: 1, windowSeconds: 59 } } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: { failureStreakLimit: 4 } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: { testNumbers: { '+15005550006': '12345' } } }, /^policy/],
      [{ name: 'x', senders: ['X'], policy: 'strict' }, /^policy/],
    ];
    for (const [body, field] of bad) {
      const res = await adminCreate(body);
      const j = expectError(res, 400, 'VALIDATION_ERROR');
      if (field instanceof RegExp) assert.match(j.error.field ?? '', field, `${JSON.stringify(body)}: ${res.text}`);
      else assert.equal(j.error.field, field, `${JSON.stringify(body)}: ${res.text}`);
    }
  });

  it('PATCH → 200 {workspaceId, name, senders, policy, keyIds}; policy keys merge, senders replace', async () => {
    const ws = await newWorkspace({ senders: ['OTPKIT', 'ACME'], policy: { maxAttempts: 3, ttlSeconds: 120 } });
    const res = await call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { senders: ['NEWCO'], policy: { ttlSeconds: 180 } } });
    const j = expectStatus(res, 200);
    assert.equal(j.success, true);
    assert.equal(typeof j.message, 'string');
    assert.deepEqual(Object.keys(j.data).sort(), ['keyIds', 'name', 'policy', 'senders', 'workspaceId']);
    assert.equal(j.data.workspaceId, ws.id);
    assert.deepEqual(j.data.senders, ['NEWCO']);
    assert.equal(j.data.policy.ttlSeconds, 180);
    assert.equal(j.data.policy.maxAttempts, 3, 'unnamed policy keys keep their value');
    assert.equal(j.data.policy.codeLength, 6);
    assert.deepEqual(j.data.keyIds, [ws.keyId]);
    assert.ok(!res.text.includes(ws.key), 'no API key in the answer');

    // The new settings are in force.
    const dest = newDest();
    expectError(await ws.request(ws.body(dest, { src: 'OTPKIT' })), 403, 'SENDER_NOT_ALLOWED');
    const res2 = await ws.request(ws.body(dest, { src: 'NEWCO' }));
    const r = expectStatus(res2, 200);
    assert.ok(r.data.expiresInSeconds > 170 && r.data.expiresInSeconds <= 180, res2.text);
    assert.equal(r.data.attemptsLeft, 3);

    // Bad patches.
    expectError(await call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { policy: { ttlSeconds: 9999 } } }), 400, 'VALIDATION_ERROR');
    expectError(await call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { senders: [] } }), 400, 'VALIDATION_ERROR', { field: 'senders' });
    expectError(await call('PATCH', '/v1/admin/workspaces/ws_doesnotexist', { admin: true, body: { senders: ['X'] } }), 404, 'NOT_FOUND');
    expectError(await call('POST', '/v1/admin/workspaces/ws_doesnotexist/keys', { admin: true }), 404, 'NOT_FOUND');
  });

  it('GET /v1/admin/workspaces/{id} → 200 with its keys by id and times (revoked too), never a key or hash; 404, 401', async () => {
    const ws = await newWorkspace({ senders: ['OTPKIT'], policy: { maxAttempts: 4 } });
    const second = expectStatus(await call('POST', `/v1/admin/workspaces/${ws.id}/keys`, { admin: true }), 201).data;
    assert.equal((await call('DELETE', `/v1/admin/workspaces/${ws.id}/keys/${second.keyId}`, { admin: true })).status, 204);
    const res = await call('GET', `/v1/admin/workspaces/${ws.id}`, { admin: true });
    const j = expectStatus(res, 200);
    assert.equal(j.success, true);
    assert.deepEqual(Object.keys(j.data).sort(), ['createdAt', 'keyIds', 'keys', 'name', 'policy', 'senders', 'workspaceId']);
    assert.equal(j.data.workspaceId, ws.id);
    assert.deepEqual(j.data.senders, ['OTPKIT']);
    assert.equal(j.data.policy.maxAttempts, 4);
    assert.deepEqual(j.data.keyIds, [ws.keyId]);
    assert.deepEqual(j.data.keys.map((k) => [k.keyId, k.revokedAt === null]), [[ws.keyId, true], [second.keyId, false]]);
    for (const k of j.data.keys) {
      assert.deepEqual(Object.keys(k).sort(), ['createdAt', 'keyId', 'lastUsedAt', 'revokedAt']);
      assert.ok(!Number.isNaN(Date.parse(k.createdAt)));
    }
    assert.ok(!res.text.includes(ws.key) && !res.text.includes(second.apiKey), 'no API key in the answer');
    assert.ok(!/[0-9a-f]{64}/.test(res.text), 'no key hash in the answer');
    expectError(await call('GET', '/v1/admin/workspaces/ws_doesnotexist', { admin: true }), 404, 'NOT_FOUND');
    expectError(await call('GET', `/v1/admin/workspaces/${ws.id}`, { key: ws.key }), 401, 'UNAUTHORIZED');
    expectError(await call('DELETE', `/v1/admin/workspaces/${ws.id}`, { admin: true }), 405, 'METHOD_NOT_ALLOWED');
  });

  it('concurrent admin writes are never lost: 20 parallel key creations all work; parallel PATCHes all land', async () => {
    // Issue 19 item 4: whole-record writes without compare-and-set let 18 of 20 new keys vanish
    // and dropped an allowedCountries list. Every workspace write is now compare-and-set.
    const ws = await newWorkspace({ senders: ['OTPKIT', 'ACME'] });
    const created = await Promise.all(Array.from({ length: 20 }, () => call('POST', `/v1/admin/workspaces/${ws.id}/keys`, { admin: true })));
    const keys = created.map((r) => expectStatus(r, 201, 'key creation').data.apiKey);
    assert.equal(new Set(keys).size, 20);
    const unknown = `/v1/messaging/otp/sessions/${SOME_ID}`;
    const auth = await Promise.all([ws.key, ...keys].map((key) => call('GET', unknown, { key })));
    const works = auth.filter((r) => r.status === 404).length;
    assert.equal(works, 21, `keys that authenticate: ${works} of 21 (${auth.map((r) => r.status).join(',')})`);

    const patches = [
      { policy: { allowedCountries: ['233'] } },
      { senders: ['NEWCO', 'OTPKIT'] },
      { policy: { ttlSeconds: 180 } },
      { policy: { maxAttempts: 3 } },
      { policy: { codeLength: 8 } },
      { policy: { failureStreakLimit: 50 } },
    ];
    const answers = await Promise.all(patches.map((body) => call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body })));
    for (const r of answers) expectStatus(r, 200, 'patch');
    const now = expectStatus(await call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: {} }), 200).data;
    assert.deepEqual(now.senders, ['NEWCO', 'OTPKIT']);
    assert.deepEqual(
      [now.policy.allowedCountries, now.policy.ttlSeconds, now.policy.maxAttempts, now.policy.codeLength, now.policy.failureStreakLimit],
      [['233'], 180, 3, 8, 50],
    );
    assert.equal(now.keyIds.length, 21, 'every key is still in the record');
    // The dropped list would let a +1 number through.
    expectError(await ws.request({ dest: '+14155550123', src: 'NEWCO', purpose: 'LOGIN' }), 403, 'DESTINATION_NOT_ALLOWED');
  });

  it('admin bodies follow the same content rules (415, malformed JSON 400)', async () => {
    expectVectorBody(await call('POST', '/v1/admin/workspaces', { admin: true, raw: '{"name":"x","senders":["X"]}', contentType: 'text/plain' }), '415');
    const res = await call('POST', '/v1/admin/workspaces', { admin: true, raw: '{"name"' });
    expectError(res, 400, 'VALIDATION_ERROR');
  });
});

describe('policy refusals', () => {
  it('a sender name the workspace does not own → 403 SENDER_NOT_ALLOWED (exact body), no SMS', async () => {
    const ws = await newWorkspace({ senders: ['OTPKIT'] });
    const dest = newDest();
    for (const src of ['ACME', 'otpkit', '+12025550123']) {
      expectVectorBody(await ws.request(ws.body(dest, { src })), '403 sender');
    }
    assert.equal((await H.sink.messages(dest)).length, 0);
  });

  it('allowedCountries: another calling code → 403 DESTINATION_NOT_ALLOWED (exact body), no SMS', async () => {
    const ws = await newWorkspace({ policy: { allowedCountries: ['234', '1'] } });
    const dest = newDest(); // +233…
    expectVectorBody(await ws.request(ws.body(dest)), '403 destination');
    assert.equal((await H.sink.messages(dest)).length, 0);
    const ok = `+234${dest.slice(4)}`;
    expectStatus(await ws.request(ws.body(ok)), 200);
  });

  it('test numbers: fixed code, no SMS, still attempt-limited, not subject to allowedCountries', async () => {
    const fixed = String(Math.floor(100000 + Math.random() * 899999));
    const testNumber = newDest();
    const ws = await newWorkspace({ policy: { maxAttempts: 2, allowedCountries: ['1'], testNumbers: { [testNumber]: fixed } } });
    const res = await ws.request(ws.body(testNumber));
    const j = expectStatus(res, 200);
    assert.equal(j.data.reused, false);
    assert.equal((await H.sink.messages(testNumber)).length, 0, 'no SMS for a test number');
    expectVerify(await ws.verify(j.data.sessionId, fixed === '999999' ? '999998' : String(Number(fixed) + 1)), 'INVALID', j.data.sessionId, 1);
    expectVerify(await ws.verify(j.data.sessionId, fixed), 'APPROVED', j.data.sessionId, 0);
  });
});
