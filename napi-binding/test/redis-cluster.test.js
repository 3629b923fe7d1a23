'use strict';
// RedisStore on a real local Redis Cluster (3 masters, tests/conformance/redis.mjs): the key
// layout (each script touches one slot; a workspace's guards and sessions spread over the
// shards), the steps split across slots (the guard's charge, the store of a delivered send, the
// sweeper), and a client that does not match the deployment answering MISCONFIGURED, never 503.
// The conformance suite runs on the cluster too (HOST=node-cluster), as does two-process.test.js.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const Redis = require('ioredis');
const { OtpService, RedisStore } = require('..');
const { PEPPER, startRedis, startRedisCluster, codeOf, newDest, recorder, serve, redisClientFor } = require('./helpers');

/** Every key of every node: `{ node url → [key] }`. */
async function keysByNode(cluster) {
  const out = {};
  for (const s of cluster.servers) {
    const r = new Redis(s.url);
    try {
      out[s.url] = await r.keys('*');
    } finally {
      r.disconnect();
    }
  }
  return out;
}

describe('RedisStore on a Redis Cluster', () => {
  let cluster;
  before(async () => {
    cluster = await startRedisCluster(3);
  });
  after(async () => {
    await cluster?.stop();
  });

  it('request, verify, status and audit round-trip; the code is never stored in clear', async (t) => {
    const gw = recorder();
    const store = new RedisStore({ nodes: cluster.nodes });
    await store.connect();
    assert.equal(store.cluster, true);
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store });
    const cli = redisClientFor(cluster, t); // the test's own Cluster client, to read the session
    try {
      const r = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
      const code = codeOf(gw.sent[0].text);
      assert.equal((await otp.verify({ sessionId: r.sessionId, code: code === '000000' ? '111111' : '000000' })).attemptsLeft, 4);
      assert.equal((await otp.verify({ sessionId: r.sessionId, code })).status, 'APPROVED');
      assert.equal((await otp.status(r.sessionId)).state, 'APPROVED');
      const raw = await cli.get(`otpkit:s:default:${r.sessionId}`);
      assert.ok(raw && !raw.includes(code), 'the session is stored, without its code');
      await otp.settle();
      const events = (await otp.audit({ sessionId: r.sessionId })).events.map((e) => e.event);
      assert.deepEqual(events, ['verify_approved', 'verify_invalid', 'delivered', 'requested']);
    } finally {
      await otp.close();
    }
  });

  it("one workspace's guards and sessions spread over every shard; its own keys share one slot", async () => {
    const gw = recorder();
    const store = new RedisStore({ nodes: cluster.nodes, prefix: 'spread:' });
    await store.connect();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store, policy: {
        sendsPerWorkspacePerMinute: 1000,
        pricePerSegment: { amount: '0.05', currency: 'USD' },
        dailySpendLimit: { amount: '100.00', currency: 'USD' },
      },
    });
    try {
      for (let i = 0; i < 30; i++) await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
      await otp.settle();
      const byNode = await keysByNode(cluster);
      const mine = (re) => Object.entries(byNode).filter(([, keys]) => keys.some((k) => re.test(k))).length;
      assert.equal(mine(/^spread:s:default:/), 3, 'sessions on every node');
      assert.equal(mine(/^spread:g:default:/), 3, 'guards on every node');
      const tagged = Object.values(byNode).flat().filter((k) => k.includes('{default}'));
      assert.ok(tagged.some((k) => k.startsWith('spread:fw:')) && tagged.some((k) => k.startsWith('spread:sp:')), tagged.join(' '));
      assert.ok(tagged.some((k) => k.startsWith('spread:a')) && tagged.some((k) => k.startsWith('spread:an:')), tagged.join(' '));
      assert.equal(mine(/\{default\}/), 1, "the workspace's tagged keys are on one node");
    } finally {
      await otp.close();
    }
  });

  it("the charge in the workspace's slot refuses after the guard's slot admitted, and the guard is refunded", async () => {
    const gw = recorder();
    const store = new RedisStore({ nodes: cluster.nodes, prefix: 'flood:' });
    await store.connect();
    const otp = new OtpService({ pepper: PEPPER, gateway: gw, store, policy: { sendsPerWorkspacePerMinute: 2 } });
    try {
      const dests = Array.from({ length: 6 }, () => newDest());
      const answers = await Promise.allSettled(dests.map((dest) => otp.request({ dest, src: 'Acme', purpose: 'LOGIN' })));
      assert.equal(answers.filter((a) => a.status === 'fulfilled').length, 2);
      assert.ok(answers.filter((a) => a.status === 'rejected').every((a) => a.reason.code === 'RATE_LIMITED'));
      assert.equal(gw.sent.length, 2);
      // A refused destination is free again at its guard (the flow refunded the send its guard
      // recorded): without the shield, it sends at once, a new session, not a wait or a reuse.
      const refused = dests.filter((_, i) => answers[i].status === 'rejected');
      const gw2 = recorder();
      const freeStore = new RedisStore({ nodes: cluster.nodes, prefix: 'flood:' });
      await freeStore.connect();
      const free = new OtpService({ pepper: PEPPER, gateway: gw2, store: freeStore });
      try {
        const again = await Promise.all(refused.map((dest) => free.request({ dest, src: 'Acme', purpose: 'LOGIN' })));
        assert.ok(again.every((r) => r.reused === false), JSON.stringify(again));
        assert.equal(gw2.sent.length, refused.length);
      } finally {
        await free.close();
      }
    } finally {
      await otp.close();
    }
  });

  it('the sweeper purges each due session once across two stores, and keeps one whose resend moved its purge time', async (t) => {
    const store = new RedisStore({ nodes: cluster.nodes, prefix: 'sweep:' });
    const other = new RedisStore({ nodes: cluster.nodes, prefix: 'sweep:' });
    await Promise.all([store.connect(), other.connect()]);
    const cli = redisClientFor(cluster, t); // the test's own Cluster client, to stale the purge entry
    const otp = new OtpService({ pepper: PEPPER, gateway: recorder(), store, policy: { retentionSeconds: 0, ttlSeconds: 60 } });
    try {
      const r = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
      const later = Date.now() + 61_000;
      // A purge entry that went stale (a resend wrote a later expiry, then died before moving
      // the entry): the session's own purge time decides, and the entry moves to it.
      const kept = await otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' });
      const keptKey = `sweep:s:default:${kept.sessionId}`;
      await cli.zadd('sweep:purge:all', String(Date.now() - 1000), keptKey);
      const counts = await Promise.all([store.sweep(later - 30_000), other.sweep(later - 30_000)]);
      assert.equal(counts[0] + counts[1], 0, 'nothing before expiry + retention');
      assert.ok(Number(await cli.zscore('sweep:purge:all', keptKey)) > Date.now(), 'the stale entry moved to the purge time');
      const swept = await Promise.all([store.sweep(later), other.sweep(later)]);
      assert.equal(swept[0] + swept[1], 2, 'both purged, each by exactly one process');
      assert.equal(await otp.status(r.sessionId), null);
      await otp.settle();
      const events = (await otp.audit({ sessionId: r.sessionId })).events.filter((e) => e.event === 'purged');
      assert.equal(events.length, 1);
    } finally {
      await otp.close();
      await other.close();
    }
  });

  it('a plain Redis client on a cluster node is MISCONFIGURED (redirections), never a 503', async () => {
    const [node] = cluster.servers;
    const store = new RedisStore({ url: node.url });
    await assert.rejects(store.connect(), (e) => e.code === 'MISCONFIGURED' && e.httpStatus === 500 && /REDIS_CLUSTER_NODES/.test(e.message));
    const otp = new OtpService({ pepper: PEPPER, gateway: recorder(), store });
    await assert.rejects(otp.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' }), (e) => e.code === 'MISCONFIGURED' && /REDIS_CLUSTER_NODES/.test(e.message));
    await otp.close();
    await store.close();
    // Without connect(): a command redirected by MOVED is MISCONFIGURED too.
    const client = new Redis(node.url);
    const unchecked = new RedisStore({ client });
    const otp2 = new OtpService({ pepper: PEPPER, gateway: recorder(), store: unchecked });
    const seen = new Set();
    for (let i = 0; i < 12; i++) {
      await otp2.request({ dest: newDest(), src: 'Acme', purpose: 'LOGIN' }).then(
        () => seen.add('ok'),
        (e) => seen.add(e.code),
      );
    }
    assert.ok(seen.has('MISCONFIGURED') && !seen.has('STORE_UNAVAILABLE'), [...seen].join(','));
    await otp2.close();
    await unchecked.close();
    client.disconnect();
  });

  it('otpkit serve: REDIS_URL on a cluster node answers 500 MISCONFIGURED and says what to set', async () => {
    const host = await serve({ OTP_PEPPER: PEPPER, ADMIN_TOKEN: 'admin-token-for-this-test', REDIS_URL: cluster.servers[0].url });
    try {
      const r = await fetch(`${host.base}/v1/admin/workspaces`, {
        method: 'POST',
        headers: { authorization: 'Bearer admin-token-for-this-test', 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'x', senders: ['Acme'] }),
      });
      assert.equal(r.status, 500);
      assert.equal((await r.json()).error.code, 'MISCONFIGURED');
      assert.match(host.output(), /REDIS_URL names a Redis Cluster node: set REDIS_CLUSTER_NODES/);
    } finally {
      await host.stop();
    }
  });
});

describe('REDIS_CLUSTER_NODES on a Redis without cluster mode', () => {
  it('is MISCONFIGURED at connect, with what to set instead', async () => {
    const plain = await startRedis();
    const store = new RedisStore({ nodes: `127.0.0.1:${plain.port}` });
    try {
      await assert.rejects(store.connect(), (e) => e.code === 'MISCONFIGURED' && /REDIS_URL/.test(e.message));
    } finally {
      await store.close();
      await plain.stop();
    }
  });

  it('bad node lists are a TypeError that names the entry', () => {
    assert.throws(() => new RedisStore({ nodes: '127.0.0.1' }), /"127.0.0.1" is not host:port/);
    assert.throws(() => new RedisStore({ nodes: ' , ' }), /names no node/);
    assert.throws(() => new RedisStore({ nodes: '127.0.0.1:7000', url: 'redis://x' }), /not both/);
    assert.throws(() => new RedisStore({ nodes: '127.0.0.1:7000', prefix: 'a{b}:' }), /must not contain/);
  });
});
