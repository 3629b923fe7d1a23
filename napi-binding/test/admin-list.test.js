'use strict';
// The operator's library API (SPEC §9 "Admin"): listWorkspaces() pages every workspace by id,
// adminAnalytics() sums every workspace's analytics (the library's own included), and the admin
// actions land in each workspace's audit trail — on the memory store and on Redis.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { OtpService, RedisStore, OtpError } = require('..');
const { PEPPER, startRedis, codeOf, newDest, recorder } = require('./helpers');

const KEY_OR_HASH = /otpk_[A-Za-z0-9_-]{43}|(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])/;

async function exercise(makeStore) {
  const gw = recorder();
  const otp = new OtpService({ pepper: PEPPER, gateway: gw, store: await makeStore() });
  try {
    const made = [];
    for (let i = 0; i < 5; i++) made.push(await otp.createWorkspace({ name: `ws ${i}`, senders: ['Acme'] }));
    const pages = [];
    let cursor = null;
    do {
      const page = await otp.listWorkspaces({ cursor, limit: 2 });
      assert.ok(page.workspaces.length <= 2);
      assert.ok(!KEY_OR_HASH.test(JSON.stringify(page)), 'never a key or hash');
      pages.push(page);
      cursor = page.nextCursor;
    } while (cursor !== null);
    assert.equal(pages.length, 3, '5 workspaces at 2 a page');
    const ids = pages.flatMap((p) => p.workspaces.map((w) => w.workspaceId));
    assert.deepEqual(ids, made.map((m) => m.workspaceId).sort());
    assert.deepEqual(pages[0].workspaces[0], await otp.getWorkspace(ids[0]));
    for (const limit of [0, 201, 'x']) {
      await assert.rejects(otp.listWorkspaces({ limit }), (e) => e instanceof OtpError && e.code === 'VALIDATION_ERROR' && e.field === 'limit');
    }

    // Admin actions in the workspace's own trail, the key by id only.
    const [a, b] = made;
    await otp.updateWorkspace(a.workspaceId, { policy: { pricePerSegment: { amount: '0.05', currency: 'USD' } } });
    const extra = await otp.createKey(a.workspaceId);
    await otp.revokeKey(a.workspaceId, extra.keyId);
    await otp.settle();
    const trail = (await otp.forWorkspace(a.workspaceId).audit()).events;
    assert.deepEqual(
      trail.map((e) => [e.event, e.keyId]),
      [
        ['key_revoked', extra.keyId],
        ['key_created', extra.keyId],
        ['workspace_updated', undefined],
        ['key_created', a.keyId],
        ['workspace_created', undefined],
      ],
    );
    for (const e of trail) assert.deepEqual([e.sessionId, e.purpose, e.dest], ['', null, '']);

    // Analytics across workspaces: a's, b's and the library's own, each at its own price.
    const send = async (ops) => {
      const r = await ops.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN', app: 'Shop' });
      await ops.verify({ sessionId: r.sessionId, code: codeOf(gw.sent[gw.sent.length - 1].text) });
    };
    await send(otp.forWorkspace(a.workspaceId));
    await send(otp.forWorkspace(b.workspaceId));
    await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN', app: 'Shop' });
    await otp.settle();
    const all = await otp.adminAnalytics({ days: 7, app: 'Shop' });
    assert.equal(all.totals.sent, 3);
    assert.equal(all.totals.verified, 2);
    assert.deepEqual(all.totals.estimated_cost, { amount: '0.05', currency: 'USD' });
    assert.deepEqual(all.workspaces.map((w) => w.workspace_id).sort(), [a.workspaceId, b.workspaceId, 'default'].sort());
    const own = await otp.forWorkspace(a.workspaceId).analytics({ days: 7, app: 'Shop' });
    assert.deepEqual(all.workspaces.find((w) => w.workspace_id === a.workspaceId).totals, own.totals);
    await assert.rejects(otp.adminAnalytics({ days: 0 }), (e) => e.code === 'VALIDATION_ERROR' && e.field === 'days');
  } finally {
    await otp.close();
  }
}

describe('listWorkspaces, adminAnalytics and the admin audit trail', () => {
  let redis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  it('memory store', () => exercise(async () => undefined));

  it('Redis store', () =>
    exercise(async () => {
      const store = new RedisStore({ url: redis.url, prefix: `t${Date.now()}:` });
      await store.connect();
      return store;
    }));
});
