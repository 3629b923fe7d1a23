// SPEC §9 "Admin", issue 17 item 4: GET /v1/admin/workspaces/{id} (and the listing, which shows
// each record the same way) shows each key's `lastUsedAt`: when it last authenticated a request,
// to within an hour (RFC 3339), or null. Hosts record a key's use at most once an hour per key per
// process/isolate, beside the record (never part of its revision), and may do so after the answer:
// so the tests poll for it.

import { describe, it } from 'node:test';
import { assert, call, eventually, expectStatus, newWorkspace, RFC3339, useHarness } from './lib.mjs';

useHarness();

const detail = async (id) => expectStatus(await call('GET', `/v1/admin/workspaces/${id}`, { admin: true }), 200, 'GET workspace').data;
const keyOf = (ws, keyId) => ws.keys.find((k) => k.keyId === keyId);

/** The listing's entry of workspace `id` (every page, largest limit). */
async function listed(id) {
  let cursor = null;
  for (let i = 0; i < 1000; i++) {
    const q = new URLSearchParams({ limit: '200', ...(cursor ? { cursor } : {}) });
    const page = expectStatus(await call('GET', `/v1/admin/workspaces?${q}`, { admin: true }), 200, 'list').data;
    const found = page.workspaces.find((w) => w.workspaceId === id);
    if (found) return found;
    cursor = page.nextCursor;
    if (cursor === null) return null;
  }
  return null;
}

/** One authenticated request with `key` that sends nothing (the audit trail). */
async function use(key) {
  expectStatus(await call('GET', '/v1/messaging/otp/audit?limit=1', { key }), 200, 'audit with the key');
}

describe('lastUsedAt of API keys', () => {
  it('is null for a new key, set within a minute after one request, null for an unused key, kept when revoked, shown the same by the listing', async () => {
    const ws = await newWorkspace();
    const second = expectStatus(await call('POST', `/v1/admin/workspaces/${ws.id}/keys`, { admin: true }), 201, 'second key').data;

    const fresh = await detail(ws.id);
    for (const k of fresh.keys) {
      assert.ok(Object.hasOwn(k, 'lastUsedAt'), `every key shows lastUsedAt: ${JSON.stringify(k)}`);
      assert.equal(k.lastUsedAt, null, `a key never used shows null: ${JSON.stringify(k)}`);
    }

    const before = Date.now();
    await use(ws.key);
    // The Worker records it after the answer: poll up to 3 s.
    const used = await eventually(async () => {
      const d = await detail(ws.id);
      return keyOf(d, ws.keyId).lastUsedAt ? d : null;
    }, 3000);
    assert.ok(used, 'lastUsedAt is set within 3 s of the request');
    const at = keyOf(used, ws.keyId).lastUsedAt;
    assert.match(at, RFC3339);
    const ms = Date.parse(at);
    assert.ok(ms >= before - 60_000 && ms <= Date.now() + 60_000, `lastUsedAt ${at} is within the last minute`);
    assert.equal(keyOf(used, second.keyId).lastUsedAt, null, 'the unused second key stays null');

    // Another request within the hour changes nothing (recorded at most once an hour).
    await use(ws.key);
    // An admin write (compare-and-set on the revision) neither conflicts with it nor drops it.
    const patched = await call('PATCH', `/v1/admin/workspaces/${ws.id}`, { admin: true, body: { name: `last used ${process.pid}` } });
    expectStatus(patched, 200, 'PATCH after a use');
    assert.ok(!Object.hasOwn(patched.json.data, 'keys'), 'PATCH answers the workspace without keys');
    assert.equal(keyOf(await detail(ws.id), ws.keyId).lastUsedAt, at, 'a PATCH keeps lastUsedAt');

    // The listing shows the record exactly as GET does.
    assert.deepEqual(await listed(ws.id), await detail(ws.id), 'the listing shows lastUsedAt as GET does');

    // Revoked: the key keeps its last time.
    assert.equal((await call('DELETE', `/v1/admin/workspaces/${ws.id}/keys/${ws.keyId}`, { admin: true })).status, 204);
    const revoked = await detail(ws.id);
    assert.equal(typeof keyOf(revoked, ws.keyId).revokedAt, 'string');
    assert.equal(keyOf(revoked, ws.keyId).lastUsedAt, at, 'a revoked key keeps its lastUsedAt');
    assert.equal(keyOf(revoked, second.keyId).lastUsedAt, null);
    // A refused (revoked) key records nothing.
    assert.equal((await call('GET', '/v1/messaging/otp/audit?limit=1', { key: ws.key })).status, 401);
    assert.equal(keyOf(await detail(ws.id), ws.keyId).lastUsedAt, at);
  });

  it('shows the second key its own time once it is used', async () => {
    const ws = await newWorkspace();
    const second = expectStatus(await call('POST', `/v1/admin/workspaces/${ws.id}/keys`, { admin: true }), 201, 'second key').data;
    await use(second.apiKey);
    const d = await eventually(async () => {
      const d = await detail(ws.id);
      return keyOf(d, second.keyId).lastUsedAt ? d : null;
    }, 3000);
    assert.ok(d, 'the second key shows lastUsedAt within 3 s');
    assert.equal(keyOf(d, ws.keyId).lastUsedAt, null, 'the first key, unused, stays null');
  });
});
