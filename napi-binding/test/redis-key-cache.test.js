'use strict';
// RedisStore's API key cache (src/key_cache.rs) against a real redis-server and a real local
// 3-master Redis Cluster: a cached lookup costs no Redis command; any write to a key entry or a
// workspace record — through otpkit or by hand — empties it as soon as Redis reports it (CLIENT
// TRACKING … BCAST, RESP3 push messages); while a tracking connection is down nothing is cached.
// The revocation across two processes is in two-process.test.js.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { OtpService, RedisStore } = require('..');
const native = require('../lib/native');
const Redis = require('ioredis');
const { PEPPER, startRedis, startRedisCluster, sleep, recorder, redisClientFor } = require('./helpers');

/** Polls `cond` every 10 ms until it holds (or fails the test after `ms`). */
async function until(cond, what, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Closes the key cache's tracking connections on one Redis (CLIENT LIST flag `t`): how many. */
async function killTrackers(client) {
  const ids = (await client.client('LIST'))
    .split('\n')
    .filter((l) => /\bflags=\S*t/.test(l))
    .map((l) => /\bid=(\d+)/.exec(l)[1]);
  for (const id of ids) await client.client('KILL', 'ID', id);
  return ids.length;
}

describe('RedisStore key cache (one Redis)', () => {
  let redis;
  let raw; // a plain client for INFO, writes by hand and CLIENT KILL
  before(async () => {
    redis = await startRedis();
    raw = new Redis(redis.url);
  });
  after(async () => {
    raw?.disconnect();
    await redis.stop();
  });

  /** Calls of EVALSHA and GET Redis has run so far (INFO commandstats). */
  async function calls() {
    const info = await raw.info('commandstats');
    const of = (cmd) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
    return of('evalsha') + of('eval') + of('get');
  }

  async function setup() {
    const store = new RedisStore({ url: redis.url });
    await store.connect();
    const otp = new OtpService({ pepper: PEPPER, gateway: recorder(), store, adminToken: 'admin-token-0123456789abcdef' });
    const { apiKey, workspaceId, keyId } = await otp.createWorkspace({ name: 'cache', senders: ['Acme'] });
    await until(() => store.keys.live, 'the tracking connection');
    return { store, otp, hash: native.apiKeyHash(apiKey), workspaceId, keyId, apiKey };
  }

  it('a cached lookup costs no Redis command; the answer is the record Redis holds', async () => {
    const { store, otp, hash, workspaceId } = await setup();
    try {
      const first = await store.lookupKey(hash);
      assert.equal(JSON.parse(first).id, workspaceId);
      const before = await calls();
      for (let i = 0; i < 100; i++) assert.equal(await store.lookupKey(hash), first);
      const found = await store.lookupKeyWithSession(hash, null);
      assert.equal(found.workspace, first);
      assert.equal((await calls()) - before, 0, 'no EVALSHA or GET for 101 cached lookups');
      // With a session to read, nothing is read here either: the flow reads the session itself.
      const withSession = await store.lookupKeyWithSession(hash, 'sess_absent');
      assert.deepEqual(withSession, { workspace: first, session: undefined });
      assert.equal((await calls()) - before, 0);
      assert.equal(await store.lookupKey(native.apiKeyHash('otpk_unknown')), null, 'an unknown key is answered by Redis');
    } finally {
      await otp.close();
    }
  });

  it('a write by hand to the key entry or the record empties the cache as soon as Redis reports it', async () => {
    const { store, otp, hash, workspaceId } = await setup();
    try {
      const record = await store.lookupKey(hash);
      assert.ok(store.keys.get(hash));
      await raw.set(`otpkit:ws:${workspaceId}`, record); // same bytes: still a write
      await until(() => store.keys.get(hash) === undefined, 'the invalidation of the record');
      assert.equal(await store.lookupKey(hash), record);
      assert.ok(store.keys.get(hash), 'cached again');
      await raw.del(`otpkit:key:${hash}`);
      await until(() => store.keys.get(hash) === undefined, 'the invalidation of the key entry');
      assert.equal(await store.lookupKey(hash), null, 'the deleted entry is not found');
      // A write elsewhere (a session, a guard) leaves the cache alone.
      await raw.set(`otpkit:key:${hash}`, workspaceId);
      await until(async () => (await store.lookupKey(hash)) != null && store.keys.get(hash) !== undefined, 'the entry cached again');
      await raw.set('otpkit:s:other:sess_x', '1');
      await sleep(100);
      assert.ok(store.keys.get(hash), 'still cached after an unrelated write');
    } finally {
      await otp.close();
    }
  });

  it("revoking a key through this process refuses it at once, before Redis's report arrives", async () => {
    const { store, otp, hash, workspaceId, keyId, apiKey } = await setup();
    try {
      await otp.forApiKey(apiKey).status('sess_absent');
      assert.ok(store.keys.get(hash), 'cached by the call');
      await otp.revokeKey(workspaceId, keyId);
      await assert.rejects(otp.forApiKey(apiKey).status('sess_absent'), { code: 'UNAUTHORIZED' });
    } finally {
      await otp.close();
    }
  });

  it('while the tracking connection is down nothing is cached; it comes back by itself', async () => {
    const { store, otp, hash } = await setup();
    try {
      await store.lookupKey(hash);
      assert.ok(store.keys.get(hash));
      assert.equal(await killTrackers(raw), 1, 'one tracking connection');
      await until(() => !store.keys.live, 'the cache to turn off');
      assert.equal(store.keys.get(hash), undefined, 'emptied');
      const before = await calls();
      await store.lookupKey(hash);
      assert.ok((await calls()) - before >= 1, 'answered by Redis while off');
      await until(() => store.keys.live, 'the tracking connection to come back');
      await store.lookupKey(hash);
      assert.ok(store.keys.get(hash), 'cached again');
    } finally {
      await otp.close();
    }
  });

  it('a Redis that refuses CLIENT TRACKING (ACL): one key_cache_off line, lookups still answered, nothing cached', async () => {
    await raw.call('ACL', 'SETUSER', 'notrack', 'on', '>notrack-secret-pw', '~*', '&*', '+@all', '-client|tracking');
    const lines = [];
    const url = redis.url.replace('redis://', 'redis://notrack:notrack-secret-pw@');
    const store = new RedisStore({ url, log: (l) => lines.push(l), logLevel: 'info' });
    await store.connect();
    const otp = new OtpService({ pepper: PEPPER, gateway: recorder(), store, adminToken: 'a'.repeat(32) });
    try {
      const { apiKey } = await otp.createWorkspace({ name: 'notrack', senders: ['Acme'] });
      await until(() => lines.length > 0, 'the key_cache_off line');
      const hash = native.apiKeyHash(apiKey);
      for (let i = 0; i < 3; i++) assert.ok(await store.lookupKey(hash), 'the key is found through Redis');
      assert.equal(store.keys.live, false);
      assert.equal(store.keys.get(hash), undefined, 'nothing cached');
      await sleep(300);
      assert.equal(lines.length, 1, `once: ${lines.join('\n')}`);
      const line = JSON.parse(lines[0]);
      const port = new URL(redis.url).port;
      assert.deepEqual({ ...line, time: undefined }, { time: undefined, level: 'warn', msg: 'key_cache_off', store: 'redis', node: `127.0.0.1:${port}`, cause: 'NOPERM' });
      assert.ok(!lines[0].includes('notrack-secret-pw'));
      // Without `log`: a process warning, once.
      const warnings = [];
      const onWarning = (w) => warnings.push(w.message);
      process.on('warning', onWarning);
      const quiet = new RedisStore({ url });
      await quiet.connect();
      await quiet.lookupKey(hash);
      await until(() => warnings.length > 0, 'the process warning');
      process.off('warning', onWarning);
      await quiet.close();
      assert.match(warnings[0], /refused the API-key cache's tracking \(NOPERM\): key lookups go to Redis/);
    } finally {
      await otp.close();
      await raw.call('ACL', 'DELUSER', 'notrack');
    }
  });

  it('keyCache: false keeps none; a non-boolean is a TypeError', async () => {
    const store = new RedisStore({ url: redis.url, keyCache: false });
    await store.connect();
    assert.equal(store.keys, null);
    await store.close();
    assert.throws(() => new RedisStore({ url: redis.url, keyCache: 'yes' }), { name: 'TypeError', message: /keyCache/ });
    assert.equal(new RedisStore({ nodes: '127.0.0.1:1', keyCache: false }).keys, null);
  });
});

describe('RedisStore key cache (3-master Redis Cluster)', () => {
  let cluster;
  let masters; // a plain client per master, for INFO, writes by hand and CLIENT KILL
  before(async () => {
    cluster = await startRedisCluster(3);
    masters = cluster.servers.map((s) => new Redis(s.url));
    masters.forEach((m) => m.on('error', () => {}));
  });
  after(async () => {
    for (const m of masters ?? []) m.disconnect();
    await cluster?.stop();
  });

  const calls = async () => {
    let n = 0;
    for (const m of masters) {
      const info = await m.info('commandstats');
      for (const cmd of ['get', 'evalsha', 'eval']) n += Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
    }
    return n;
  };

  it('a tracking connection per master; hits cost no command on any master; a write by hand on the record empties it; a killed tracker turns it off until it is back', async (t) => {
    const store = new RedisStore({ nodes: cluster.nodes });
    await store.connect();
    const otp = new OtpService({ pepper: PEPPER, gateway: recorder(), store, adminToken: 'admin-token-0123456789abcdef' });
    try {
      const { apiKey, workspaceId } = await otp.createWorkspace({ name: 'cache', senders: ['Acme'] });
      const hash = native.apiKeyHash(apiKey);
      await until(() => store.keys.live, 'every master tracking');
      assert.equal(store.keys.trackers.size, 3);
      // Reports of the workspace's own creation can still be on their way from a master that began
      // tracking before those writes: let them arrive (each empties the cache), then cache it.
      await sleep(200);
      const record = await store.lookupKey(hash);
      assert.equal(JSON.parse(record).id, workspaceId);
      const before = await calls();
      for (let i = 0; i < 50; i++) assert.equal(await store.lookupKey(hash), record);
      assert.equal((await calls()) - before, 0, 'no GET for 50 cached lookups');
      // The record lives in its workspace's slot, on one master: written there by hand.
      const byHand = redisClientFor(cluster, t);
      await byHand.set(`otpkit:ws:{${workspaceId}}`, record);
      await until(() => store.keys.get(hash) === undefined, 'the invalidation from the record\'s master');
      assert.equal(await store.lookupKey(hash), record);
      assert.ok(store.keys.get(hash), 'cached again');
      assert.equal(await killTrackers(masters[1]), 1, "the master's tracking connection");
      await until(() => !store.keys.live, 'the cache to turn off');
      assert.equal(store.keys.get(hash), undefined);
      await until(() => store.keys.live, 'the tracker to come back');
      await store.lookupKey(hash);
      assert.ok(store.keys.get(hash), 'cached again');
    } finally {
      await otp.close();
    }
  });
});
