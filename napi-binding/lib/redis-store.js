'use strict';
// The Redis store: several Node processes share one Redis and keep SPEC's guarantees.
//
// The flows of requests, verifies, resends, cancels, status and delivery receipts run in Rust
// (RedisCore, src/redis_store.rs, on its own redis-rs connection): every store effect between two
// steps of the driver (the gateway's send, a wait) is performed there, and what follows an answer
// runs on there too. This file keeps the admin effects, the API-key lookups and their cache, the
// sweep and the reports, on ioredis.
//
// Every value that changes is stored as "<version>|<JSON>". A change is read → decided by the
// core (through the native module) → written by one Lua script that compares the version and
// sets the new value only if nobody wrote in between; on a conflict the step is decided again
// on fresh state. So attempts are never over-counted, a session is approved at most once, and
// concurrent requests for one (destination, purpose) admit one send, across processes.
// Keys expire with the session retention (sessions), the send window / lock (guards), and
// once idle (Fraud Guard's prefix counts). The delivery receipt index (`rcpt:<key>`: `s:<session
// id>` or `m:<provider message id>` → `workspaceId:sessionId`) lives until its session's purge time.

const fs = require('node:fs');
const path = require('node:path');
const native = require('./native');
const { OtpError, fromNative, hostError } = require('./errors');
const { logStoreFailure } = require('./log');

const AUDIT_KEEP = 10_000; // events per workspace in each audit list (otpkit_core::audit::KEEP_PER_STREAM)
const SWEEP_MS = 10_000;
// A session key outlives its purge time by this much, so the sweeper (which writes the `purged`
// audit event) finds it; the TTL is only the safety net if no process sweeps (as src/redis_store.rs).
const PURGE_GRACE_MS = 3600 * 1000;

// The Lua scripts are files in lib/redis/, one per step, each with what it takes and answers;
// the functions several share are fragments (versioned.lua, fraud.lua, charge-fns.lua,
// put-record.lua) that a script names on its `--| needs:` line. Read once, at load: a script is
// the fragments it needs (theirs first, each once) followed by its own text.
const SCRIPT_DIR = path.join(__dirname, 'redis');

const LUA_FILES = new Map(); // name → text: each file read once, however many scripts need it
function luaFile(name) {
  let text = LUA_FILES.get(name);
  if (text === undefined) {
    text = fs.readFileSync(path.join(SCRIPT_DIR, `${name}.lua`), 'utf8');
    LUA_FILES.set(name, text);
  }
  return text;
}

function luaScript(name, seen = new Set()) {
  const text = luaFile(name);
  const needs = /^--\| needs: (.+)$/m.exec(text)?.[1].trim().split(/\s+/) ?? [];
  let out = '';
  for (const n of needs) {
    if (seen.has(n)) continue;
    seen.add(n);
    out += luaScript(n, seen);
  }
  return out + text;
}

// Fraud Guard's count fields, in the order fraud.lua's HMGET reads them (READ_FRAUD answers them so).
const FRAUD_FIELDS = /local FRAUD_FIELDS = \{([^}]*)\}/
  .exec(luaFile('fraud'))[1]
  .split(',')
  .map((f) => f.trim().replace(/^'|'$/g, ''));

const CAS = luaScript('cas');
// The scripts the flow steps in Rust run (src/redis_store.rs), by the names it asks for.
const NATIVE_SCRIPTS = {
  cas: CAS,
  admit: luaScript('admit'),
  charge: luaScript('charge'),
  confirm: luaScript('confirm'),
  verifyWrite: luaScript('verify-write'),
  record: luaScript('record'),
  resendWrite: luaScript('resend-write'),
  refundSpend: luaScript('refund-spend'),
  fraudVerified: luaScript('fraud-verified'),
};
// The flow effects RedisCore performs in Rust (every step of a request, verify, resend, cancel
// and delivery receipt); the admin effects stay here.
const NATIVE_IO = new Set([
  'readSession', 'admit', 'readActive', 'forget', 'storeSession', 'reportDelivery', 'resend',
  'cancelSession', 'refundSpend', 'fraudVerified', 'verify', 'recordVerify', 'record',
  'audit', 'findReceipt', 'applyReceipt', 'readWorkspace', 'claimIdempotency', 'finishIdempotency', 'releaseIdempotency',
  'readReuseHint', 'putReuseHint', 'dropReuseHint',
]);
const UNBLOCK_PREFIX = luaScript('unblock-prefix');
const READ_FRAUD = luaScript('read-fraud');
const PUT_WORKSPACE = luaScript('put-workspace');
const PUT_RECORD_ONLY = luaScript('put-record-only');
const LOOKUP_SESSION = luaScript('lookup-session');
const SWEEP = luaScript('sweep');

function split(raw) {
  if (raw == null) return [0, null];
  const bar = raw.indexOf('|');
  return [Number(raw.slice(0, bar)), raw.slice(bar + 1)];
}

const DONE = '{"result":"done"}';
/** When a stored session (JSON) is purged, and how long its key is kept (ms from `now`). */
function retention(json, now) {
  const purgeAt = native.sessionPurgeAt(json);
  return { purgeAt, keep: Math.ceil(Math.max(1000, purgeAt - now)) + PURGE_GRACE_MS };
}

/** JSON.stringify's replacer that leaves keys' lastUsedAt out of a stored record. */
const withoutLastUsed = (k, v) => (k === 'lastUsedAt' ? undefined : v);

/** A stored record (JSON or null) with each key's lastUsedAt from `used` (keyId → ms, HGETALL's). */
function withLastUsed(json, used) {
  if (json == null || !used || Object.keys(used).length === 0) return json;
  const ws = JSON.parse(json);
  for (const k of ws.keys ?? []) {
    const at = Number(used[k.keyId]);
    if (Number.isSafeInteger(at) && at >= 0) k.lastUsedAt = at;
  }
  return JSON.stringify(ws);
}

/**
 * `host:port,host:port,…` (REDIS_CLUSTER_NODES) or an array of `host:port` strings as ioredis'
 * Cluster start nodes; a clear TypeError for anything else.
 */
function clusterNodes(given) {
  const list = Array.isArray(given) ? given : String(given).split(',');
  const nodes = list.map((n) => String(n).trim()).filter((n) => n !== '');
  if (!nodes.length) throw new TypeError('REDIS_CLUSTER_NODES names no node: give host:port,host:port,…');
  return nodes.map((n) => {
    const m = /^(.+):(\d{1,5})$/.exec(n);
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65535) throw new TypeError(`REDIS_CLUSTER_NODES: "${n}" is not host:port`);
    return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port };
  });
}

/**
 * Where RedisCore (src/redis_store.rs) connects: the same Redis, or the same Cluster start nodes,
 * as the ioredis client (made here or given): `{url}` or `{nodes: ['host:port', …]}`.
 */
function coreTarget(client, cluster) {
  if (cluster) {
    const nodes = (client.startupNodes ?? []).map((n) => (typeof n === 'string' ? n.replace(/^redis:\/\//, '') : `${n.host ?? '127.0.0.1'}:${n.port ?? 6379}`));
    return { nodes };
  }
  const o = client.options ?? {};
  const auth = o.password ? `${encodeURIComponent(o.username ?? '')}:${encodeURIComponent(o.password)}@` : '';
  const host = /:/.test(o.host ?? '') ? `[${o.host}]` : (o.host ?? '127.0.0.1');
  return { url: `${o.tls ? 'rediss' : 'redis'}://${auth}${host}:${o.port ?? 6379}/${o.db ?? 0}` };
}

// A Redis reply that says the client does not match the deployment: a plain client on a Cluster
// node is redirected (MOVED, ASK), or a script's keys span slots (CROSSSLOT). A permanent fault:
// MISCONFIGURED, never a transient 503. A Cluster client follows redirections itself; when it
// gives up ("Too many Cluster redirections", even with MOVED as the last error) a node is down or
// failing over — other nodes keep redirecting to it — and that is a 503 like any outage
// (scripts/faults cluster).
const MISMATCH = /^(MOVED|ASK|CROSSSLOT)\b|cluster support disabled/;

class RedisStore {
  /**
   * @param {{client?: import('ioredis').Redis | import('ioredis').Cluster, url?: string,
   *   nodes?: string | string[], prefix?: string, auditKeep?: number}} [opts]
   *   `client`: an ioredis client (or `Redis.Cluster`) you created; else one is made from `nodes`
   *   (Redis Cluster: `host:port,…` or an array), `url`, REDIS_CLUSTER_NODES, or REDIS_URL, in
   *   that order. `auditKeep`: audit events kept per workspace in each of its two lists (default 10,000).
   *   `keyCache` (default true): keep API key → workspace lookups in this process, dropped the
   *   moment Redis reports a write to any key entry or workspace record (see KeyCache).
   *   `log` (a function of one JSON line) and `logLevel`: where the `key_cache_off` line goes
   *   when a Redis refuses the cache's tracking (an ACL, Redis before 6), once per node and
   *   cause; without `log`, a process warning says it.
   */
  constructor({ client, url, nodes, prefix = 'otpkit:', auditKeep = AUDIT_KEEP, keyCache = true, log = null, logLevel = null } = {}) {
    if (!Number.isInteger(auditKeep) || auditKeep < 1 || auditKeep > 0xffffffff) {
      throw new TypeError('auditKeep must be a positive integer');
    }
    if (typeof keyCache !== 'boolean') throw new TypeError('keyCache must be true or false');
    if (log != null && typeof log !== 'function') throw new TypeError('log must be a function of one line');
    this.log = log;
    this.logLevel = logLevel;
    if (url && nodes) throw new TypeError('RedisStore takes url (one Redis) or nodes (a Redis Cluster), not both');
    this.kind = 'redis';
    this.prefix = prefix;
    this.auditKeep = auditKeep;
    this.misconfigured = null; // the MISCONFIGURED error connect() found, answered by every call
    if (client) {
      this.redis = client;
      this.ownClient = false;
      this.cluster = client.isCluster === true;
    } else {
      const Redis = require('ioredis');
      const seeds = nodes ?? (url ? null : process.env.REDIS_CLUSTER_NODES || null);
      const target = url || process.env.REDIS_URL;
      if (seeds) {
        // Fail fast while a node is down (a clear 503), refresh the slots in the background.
        this.redis = new Redis.Cluster(clusterNodes(seeds), {
          lazyConnect: true,
          enableOfflineQueue: false,
          slotsRefreshTimeout: 2000,
          clusterRetryStrategy: (times) => Math.min(times * 100, 1000),
          redisOptions: { connectTimeout: 2000, maxRetriesPerRequest: 1 },
        });
        this.cluster = true;
      } else {
        if (!target) throw new TypeError('RedisStore needs a client, nodes, a url, REDIS_CLUSTER_NODES or REDIS_URL');
        // Fail fast while Redis is down (a clear 503), reconnect in the background.
        this.redis = new Redis(target, {
          lazyConnect: true,
          enableOfflineQueue: false,
          maxRetriesPerRequest: 1,
          connectTimeout: 2000,
          retryStrategy: (times) => Math.min(times * 100, 1000),
        });
        this.cluster = false;
      }
      this.redis.on('error', () => {}); // each failed command answers STORE_UNAVAILABLE
      this.ownClient = true;
    }
    // A hash tag in the prefix would put every key in one slot (or split a workspace's keys).
    if (this.cluster && /[{}]/.test(prefix)) throw new TypeError('a Redis Cluster key prefix must not contain { or }');
    if (this.cluster) this.redis.defineCommand('otpkitPutRecord', { numberOfKeys: 1, lua: PUT_RECORD_ONLY });
    this.redis.defineCommand('otpkitCas', { numberOfKeys: 1, lua: CAS });
    this.redis.defineCommand('otpkitUnblockPrefix', { numberOfKeys: 2, lua: UNBLOCK_PREFIX });
    this.redis.defineCommand('otpkitReadFraud', { numberOfKeys: 1, lua: READ_FRAUD });
    this.redis.defineCommand('otpkitPutWorkspace', { numberOfKeys: 2, lua: PUT_WORKSPACE });
    this.redis.defineCommand('otpkitLookupSession', { numberOfKeys: 1, lua: LOOKUP_SESSION });
    this.redis.defineCommand('otpkitSweep', { numberOfKeys: 1, lua: SWEEP });
    // Purges sessions past retention with their `purged` audit event (as the Worker's alarm does).
    this.timer = setInterval(() => this.sweep().catch(() => {}), SWEEP_MS);
    this.timer.unref();
    // The flow steps run in Rust on a redis-rs connection to the same Redis (src/redis_store.rs).
    // Each step's end comes back through one callback, by id (see stepDone).
    this.steps = new Map(); // id → { resolve, reject, flow?, drain? }
    this.running = new WeakMap(); // flow → its drain (answered, still running in Rust)
    this.stepId = 0;
    this.core = new native.RedisCore(
      { ...coreTarget(this.redis, this.cluster), prefix, auditKeep, scripts: NATIVE_SCRIPTS },
      (done) => this.stepDone(done),
      (code) => logStoreFailure(this.kind, 'indexReceipt', hostError(code ?? 'STORE_UNAVAILABLE')),
    );
    this.keys = keyCache ? new KeyCache(this) : null;
  }

  /**
   * Connects (the client made from a URL or nodes connects lazily); resolves when Redis answers.
   * A client that does not match the deployment (REDIS_URL on a Cluster node, REDIS_CLUSTER_NODES
   * on a Redis without cluster mode) is MISCONFIGURED, and so is every call after it.
   */
  async connect() {
    if (this.ownClient && this.redis.status === 'wait') {
      try {
        await this.redis.connect();
      } catch (e) {
        if (this.cluster) await this.checkClusterSeeds(e);
        throw e;
      }
    }
    await this.run(() => this.redis.ping());
    if (!this.cluster) {
      const info = await this.run(() => this.redis.info('cluster'));
      if (/cluster_enabled:1/.test(info)) {
        this.misconfigured = hostError(
          'MISCONFIGURED',
          null,
          'REDIS_URL names a Redis Cluster node: set REDIS_CLUSTER_NODES=host:port,… to use the cluster',
        );
        throw this.misconfigured;
      }
    }
    this.keys?.start();
  }

  /** Why a Cluster client could not connect: its seeds are plain Redis servers (MISCONFIGURED). */
  async checkClusterSeeds(cause) {
    const Redis = require('ioredis');
    const [seed] = this.redis.startupNodes;
    const probe = new Redis({ host: seed.host, port: seed.port, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: 2000, retryStrategy: () => null });
    probe.on('error', () => {});
    try {
      await probe.connect();
      if (/cluster_enabled:0/.test(await probe.info('cluster'))) {
        this.misconfigured = hostError(
          'MISCONFIGURED',
          cause,
          'REDIS_CLUSTER_NODES names a Redis without cluster mode: set REDIS_URL=redis://host:port for one Redis',
        );
        throw this.misconfigured;
      }
    } catch (e) {
      if (e === this.misconfigured) throw e;
    } finally {
      probe.disconnect();
    }
  }

  async run(fn) {
    if (this.misconfigured) throw this.misconfigured;
    try {
      return await fn();
    } catch (e) {
      const err = fromNative(e);
      if (err instanceof OtpError) throw err;
      if (typeof e?.message === 'string' && MISMATCH.test(e.message)) {
        const what = this.cluster
          ? 'a Redis Cluster refused a step of this store because its keys span slots (CROSSSLOT): a key prefix or client that does not match this store'
          : 'Redis answered with a cluster redirection: REDIS_URL names a Redis Cluster node; set REDIS_CLUSTER_NODES';
        throw hostError('MISCONFIGURED', e, what);
      }
      throw hostError('STORE_UNAVAILABLE', e);
    }
  }

  /**
   * A batch of commands (`[name, ...args]`): one MULTI on one Redis; on a Cluster, where the keys
   * are in different slots, sent side by side. Resolves once all are done; any error rejects.
   */
  async batch(commands) {
    if (this.cluster) return Promise.all(commands.map(([name, ...args]) => this.redis[name](...args)));
    const multi = this.redis.multi();
    for (const [name, ...args] of commands) multi[name](...args);
    const results = await multi.exec();
    if (!results || results.some(([err]) => err)) throw hostError('STORE_UNAVAILABLE');
    return results.map(([, r]) => r);
  }

  key(kind, a, b) {
    return b === undefined ? `${this.prefix}${kind}:${a}` : `${this.prefix}${kind}:${a}:${b}`;
  }

  /**
   * A key in workspace `wsId`'s slot. On a Redis Cluster the id is a hash tag (`ws:{<id>}`), so
   * the keys one script touches together share a slot: the record and its key use, the audit
   * lists and their sequence, the analytics, and the flood shield, spend and Fraud Guard counts.
   * Guards (`g:<ws>:<dest>`) and sessions (`s:<ws>:<id>`) have no tag: each hashes on its own, so
   * one busy workspace's sends and verifies spread over every shard. On one Redis the names are
   * those of before (no tag), so an existing store reads on.
   */
  wsKey(kind, wsId, b) {
    return this.key(kind, this.cluster ? `{${wsId}}` : wsId, b);
  }

  /** The sequence both audit lists of a workspace share: one per workspace on a Cluster. */
  seqKey(wsId) {
    return this.cluster ? this.wsKey('aseq', wsId) : this.key('aseq', 'all');
  }

  /**
   * The flow's next step for the driver (a promise of its JSON): RedisCore runs the flow in Rust,
   * performing every store effect, until a step the driver takes (deliver, awaitSend, pause) or
   * the answer; what follows the answer runs on there (see drained). An admin flow, whose
   * effects are partly this store's, steps here one effect at a time through perform().
   */
  next(flow, engine, ws, ctx = {}) {
    if (this.stepwise(flow)) return flow.poll();
    return this.runFlow(flow, engine, ws, null, ctx);
  }
  /** Feeds the outcome of the driver's IO and answers the next step, as next() does. */
  resume(flow, outcome, engine, ws, ctx = {}) {
    if (this.stepwise(flow)) {
      flow.handle(outcome);
      return flow.poll();
    }
    return this.runFlow(flow, engine, ws, outcome, ctx);
  }
  /**
   * Whether a flow steps through perform() one effect at a time: an admin flow, every flow once
   * the store is MISCONFIGURED (perform answers it), and every flow when `oneEffectAtATime` is
   * set (a test that needs to act between two effects).
   */
  stepwise(flow) {
    return this.oneEffectAtATime === true || this.misconfigured != null || flow instanceof native.AdminFlow;
  }

  /** Once a flow run by RedisCore has answered: resolves when what follows the answer is done. */
  drained(flow) {
    const drain = this.running.get(flow);
    if (!drain) return undefined;
    return (drain.reported ??= drain.promise.then((end) => this.report(end, drain.ctx)));
  }

  runFlow(flow, engine, ws, outcome, ctx) {
    const steps = (ctx.native ??= new native.RedisSteps());
    if (ctx.session !== undefined) {
      steps.prefetch(ctx.session);
      ctx.session = undefined;
    }
    const ran = new Promise((resolve, reject) => {
      const id = this.stepStarted({ resolve, reject, flow, ctx, drain: null });
      try {
        flow.runRedis(id, this.core, engine, ws, outcome, steps, ctx.metrics != null);
      } catch (e) {
        this.stepEnded(id);
        reject(e);
      }
    });
    // In the request's context: its store failures are logged, its effects timed.
    return ran.then((end) => {
      this.report(end, ctx);
      return end.text;
    });
  }

  /** The store effects of a flow run that failed (logged as the driver logs its own) and their times. */
  report({ failed, timed }, ctx) {
    for (let i = 0; i + 1 < failed.length; i += 2) logStoreFailure(this.kind, failed[i], hostError(failed[i + 1]));
    for (let i = 0; i + 1 < timed.length; i += 2) ctx.metrics?.stored(timed[i], Number(timed[i + 1]));
  }

  /**
   * Performs one store effect of a flow (`io`; `raw`, its JSON) and answers the outcome JSON.
   * The steps of requests, verifies, resends, cancels and receipts run in Rust (RedisCore); `ctx`
   * carries, per flow, what one step read for the next: the session read with the API key
   * (`session`), then RedisCore's own (`native`). The admin effects run here.
   */
  async perform(engine, ws, io, raw, now, ctx) {
    if (NATIVE_IO.has(io.io)) {
      if (this.misconfigured) throw this.misconfigured;
      const steps = (ctx.native ??= new native.RedisSteps());
      if (ctx.session !== undefined) {
        steps.prefetch(ctx.session);
        ctx.session = undefined;
      }
      return new Promise((resolve, reject) => {
        const id = this.stepStarted({ resolve, reject });
        try {
          this.core.perform(id, engine, ws, raw, now, steps);
        } catch (e) {
          this.stepEnded(id);
          reject(e);
        }
      });
    }
    switch (io.io) {
      case 'readFraud':
        return this.readFraud(io.workspaceId, now);
      case 'unblockPrefix': {
        const was = await this.run(() =>
          this.redis.otpkitUnblockPrefix(this.wsKey('fr', io.workspaceId, io.prefix), this.wsKey('fx', io.workspaceId), io.prefix, String(io.now)),
        );
        return `{"result":"unblocked","wasBlocked":${was === 1}}`;
      }
      case 'putWorkspace': {
        // compare-and-set on the record's revision: concurrent admin writes, from any process,
        // never lose one another (the core reads again and re-applies on a conflict)
        const args = [JSON.stringify(io.workspace, withoutLastUsed), io.expected ?? '', io.workspace.id];
        const index = this.key('wsindex', 'all');
        const record = this.wsKey('ws', io.workspace.id);
        const put = this.cluster
          ? async () => (await this.redis.zadd(index, 0, io.workspace.id), this.redis.otpkitPutRecord(record, ...args))
          : () => this.redis.otpkitPutWorkspace(record, index, ...args);
        // This process's own writes leave its key cache at once (others hear Redis's invalidation).
        return (await this.ownWrite(() => this.run(put))) === 1 ? DONE : '{"result":"conflict"}';
      }
      case 'indexKey':
        await this.ownWrite(() => this.run(() => this.redis.set(this.key('key', io.keyHash), io.workspaceId)));
        return DONE;
      case 'unindexKey':
        await this.ownWrite(() => this.run(() => this.redis.del(this.key('key', io.keyHash))));
        return DONE;
      case 'listWorkspaces':
        return this.listWorkspaces(io.cursor, io.limit);
      default:
        throw hostError('INTERNAL_ERROR', null, `not a step of the Redis store: ${io.io}`);
    }
  }

  /** A step RedisCore performed has ended: its outcome JSON, or its error (an `OTPKIT:` message). */
  stepDone(end) {
    const { id, ok, text } = end;
    const step = this.steps.get(id);
    if (!step) return;
    if (!step.flow) {
      // perform(): one effect
      this.stepEnded(id);
      if (ok) step.resolve(text);
      else step.reject(new Error(text));
      return;
    }
    if (step.drain) {
      // what followed the answer is done
      this.stepEnded(id);
      step.drain.resolve(end); // kept in `running` while the flow lives: drained() answers it after this too
      return;
    }
    if (text.startsWith('{"answer"') || text.startsWith('{"error"')) {
      // The flow goes on in Rust: its end comes under the same id.
      let resolve;
      const promise = new Promise((r) => (resolve = r));
      step.drain = { promise, resolve, ctx: step.ctx };
      this.running.set(step.flow, step.drain);
    } else {
      this.stepEnded(id);
    }
    step.resolve(end);
  }

  /** A step handed to RedisCore: its id. Node's event loop is kept alive while any is in flight. */
  stepStarted(entry) {
    if (this.steps.size === 0) this.core.hold(true);
    const id = (this.stepId = (this.stepId + 1) >>> 0);
    this.steps.set(id, entry);
    return id;
  }

  stepEnded(id) {
    if (this.steps.delete(id) && this.steps.size === 0) this.core.hold(false);
  }

  /** Every Fraud Guard count of a workspace, one script: the `prefixes` outcome. */
  async readFraud(wsId, now) {
    const flat = await this.run(() => this.redis.otpkitReadFraud(this.wsKey('fx', wsId), `${this.wsKey('fr', wsId)}:`, String(now)));
    const n = FRAUD_FIELDS.length + 1;
    const prefixes = [];
    for (let i = 0; i + n <= flat.length; i += n) {
      const count = {};
      FRAUD_FIELDS.forEach((f, j) => (count[f] = Number(flat[i + 1 + j])));
      prefixes.push([flat[i], count]);
    }
    return JSON.stringify({ result: 'prefixes', prefixes });
  }

  async entry(ws, dest, sessionId) {
    const raw = await this.run(() => this.redis.get(this.key('g', ws.id, dest)));
    return native.guardEntry(split(raw)[1], sessionId, Date.now()); // a stale send is gone
  }

  /** Stores a session (an object of the core's session JSON) by itself, without the guard. */
  async putSession(session, now) {
    const json = JSON.stringify(session);
    const key = this.sessionKey(session.workspaceId, session.id);
    const { purgeAt, keep } = retention(json, now);
    await this.run(() => this.batch([['set', key, `1|${json}`, 'PX', keep], ['zadd', this.key('purge', 'all'), purgeAt, key]]));
  }

  /**
   * Purges the sessions whose retention has passed (at most `limit` per call), writing a
   * `purged` audit event for each. Runs every 10 s; answers how many were purged.
   */
  async sweep(now = Date.now(), limit = 500) {
    const values = this.cluster ? await this.sweepCluster(now, limit) : await this.run(() => this.redis.otpkitSweep(this.key('purge', 'all'), now, limit));
    const byWorkspace = new Map();
    for (const raw of values) {
      const json = split(raw)[1];
      let wsId;
      try {
        wsId = JSON.parse(json).workspaceId;
      } catch {
        continue; // unreadable: dropped without an event
      }
      if (!byWorkspace.has(wsId)) byWorkspace.set(wsId, []);
      byWorkspace.get(wsId).push(native.sessionAudit('purged', json, 'ok', now));
    }
    for (const [wsId, lines] of byWorkspace) await this.run(() => this.core.recordLines(wsId, lines));
    return values.length;
  }

  /**
   * The sweep on a Redis Cluster, where the schedule and the sessions are in different slots: each
   * due entry is claimed by the one process whose ZREM removes it; its session is deleted only if
   * its own purge time has come (a resend writes the session, then moves its entry: the session
   * is the truth) and it did not change since it was read. Answers the values purged.
   */
  async sweepCluster(now, limit) {
    const purge = this.key('purge', 'all');
    const due = await this.run(() => this.redis.zrangebyscore(purge, '-inf', now, 'LIMIT', 0, limit));
    const purged = [];
    await Promise.all(
      due.map((k) =>
        this.run(async () => {
          if ((await this.redis.zrem(purge, k)) !== 1) return; // another process has it
          const raw = await this.redis.get(k);
          if (raw == null) return;
          let purgeAt;
          try {
            purgeAt = retention(split(raw)[1], now).purgeAt;
          } catch {
            await this.redis.del(k); // unreadable: dropped without an event, as SWEEP does
            return;
          }
          if (purgeAt > now) await this.redis.zadd(purge, String(purgeAt), k);
          else if ((await this.redis.otpkitCas(k, split(raw)[0], '', '-1', raw))[0] === 1) purged.push(raw);
          else await this.redis.zadd(purge, String(now), k); // it changed: the next sweep decides again
        }),
      ),
    );
    return purged;
  }

  sessionKey(wsId, sessionId) {
    return this.key('s', wsId, sessionId);
  }

  async getSession(wsId, sessionId) {
    return this.sessionValue(await this.run(() => this.redis.get(this.sessionKey(wsId, sessionId))));
  }
  /** A session's JSON from its stored value (null when absent). */
  sessionValue(raw) {
    return split(raw)[1];
  }

  /** `GET /v1/messaging/otp/audit`: both of the workspace's lists, read atomically, merged newest first. */
  async auditReply(wsId, query) {
    const results = await this.run(() =>
      this.redis.multi().lrange(this.wsKey('a', wsId), 0, -1).lrange(this.wsKey('ar', wsId), 0, -1).exec(),
    );
    if (!results || results.some(([err]) => err)) throw hostError('STORE_UNAVAILABLE');
    return native.auditReply(results[0][1], query, results[1][1]);
  }

  /** `GET /otp/analytics`: the period's day hashes and the live open sessions, one pipeline. */
  async analyticsReply(ws, query, now) {
    const period = native.analyticsPeriod(query, now); // 400 before any read
    const results = await this.run(() => {
      const pipe = this.redis.pipeline();
      for (let day = period.firstDay; day <= period.lastDay; day++) pipe.hgetall(this.wsKey('an', ws.id, day));
      pipe.zrangebyscore(this.wsKey('ao', ws.id), `(${now}`, '+inf');
      return pipe.exec();
    });
    if (!results || results.some(([err]) => err)) throw hostError('STORE_UNAVAILABLE');
    const counters = [];
    results.slice(0, -1).forEach(([, hash], i) => {
      const day = String(period.firstDay + i);
      for (const [field, value] of Object.entries(hash)) counters.push(day, field, value);
    });
    return native.analyticsReply(ws, query, now, counters, results[results.length - 1][1]);
  }

  /**
   * One page of the admin listing: the ids after `cursor` (the last id of the page before; any
   * string orders) from the index, by id, then their records (one MGET). `nextCursor` is the
   * page's last id while more follow.
   */
  async listWorkspaces(cursor, limit) {
    const ids = await this.run(() =>
      this.redis.zrangebylex(this.key('wsindex', 'all'), cursor == null ? '-' : `(${cursor}`, '+', 'LIMIT', 0, limit + 1),
    );
    const page = ids.slice(0, limit);
    const [records, used] = page.length
      ? await this.run(() =>
          Promise.all([
            this.cluster ? Promise.all(page.map((id) => this.redis.get(this.wsKey('ws', id)))) : this.redis.mget(...page.map((id) => this.wsKey('ws', id))),
            Promise.all(page.map((id) => this.redis.hgetall(this.wsKey('used', id)))),
          ]),
        )
      : [[], []];
    const next = ids.length > limit ? page[page.length - 1] : null;
    const shown = records.map((r, i) => withLastUsed(r, used[i])).filter((r) => r != null);
    return `{"result":"workspaces","workspaces":[${shown.join(',')}],"next":${JSON.stringify(next)}}`;
  }

  /**
   * `GET /v1/admin/analytics`: every indexed workspace's (and `library`'s: the library's
   * workspace, a native Workspace not stored here) records, period day hashes and live open
   * sessions, one pipeline; the core sums them.
   */
  async adminAnalyticsReply(query, now, library = null) {
    const extra = library ? { id: library.id, json: library.toJson() } : null;
    const period = native.analyticsPeriod(query, now); // 400 before any read
    const ids = await this.run(() => this.redis.zrange(this.key('wsindex', 'all'), 0, -1));
    if (extra && !ids.includes(extra.id)) ids.push(extra.id);
    const days = period.lastDay - period.firstDay + 1;
    // One pipeline per workspace: its keys share its slot on a Cluster.
    const results = await this.run(() =>
      Promise.all(
        ids.map(async (id) => {
          const pipe = this.redis.pipeline();
          pipe.get(this.wsKey('ws', id));
          for (let day = period.firstDay; day <= period.lastDay; day++) pipe.hgetall(this.wsKey('an', id, day));
          pipe.zrangebyscore(this.wsKey('ao', id), `(${now}`, '+inf');
          const got = await pipe.exec();
          if (!got || got.some(([err]) => err)) throw hostError('STORE_UNAVAILABLE');
          return got;
        }),
      ),
    );
    const rows = ids.map((id, i) => {
      const got = results[i];
      const counters = [];
      got.slice(1, 1 + days).forEach(([, hash], d) => {
        for (const [field, value] of Object.entries(hash)) counters.push(String(period.firstDay + d), field, value);
      });
      const workspace = got[0][1] ?? (extra && extra.id === id ? extra.json : null);
      return { workspaceId: id, workspace, counters, open: got[days + 1][1] };
    });
    return native.adminAnalyticsReply(query, now, rows);
  }

  getWorkspace(id) {
    return this.run(() => this.redis.get(this.wsKey('ws', id)));
  }
  /**
   * Key `keyId` of workspace `wsId` authenticated a request at `at` (ms): one HSET of the hash
   * `used:<wsId>` beside the record (never in it: no part in its revision). The driver calls it
   * after the answer, at most once an hour per key per process (native.lastUsedDue).
   */
  touchKey(wsId, keyId, at) {
    return this.run(() => this.redis.hset(this.wsKey('used', wsId), keyId, String(at)));
  }
  /** An admin write: this process's key cache is emptied before and after it (see KeyCache). */
  ownWrite(write) {
    return this.keys ? this.keys.around(write) : write();
  }

  /** The workspace JSON an API key hash points at, or null: from the key cache when it holds it. */
  async lookupKey(hash) {
    return (await this.lookupKeyWithSession(hash, null)).workspace;
  }
  /**
   * The workspace JSON of an API key hash and that workspace's session `sessionId` (raw value),
   * one round trip (the session alone when the key cache holds the workspace).
   */
  async lookupKeyWithSession(hash, sessionId) {
    const cached = this.keys?.entry(hash);
    if (cached !== undefined) {
      const session = sessionId == null ? undefined : await this.run(() => this.redis.get(this.sessionKey(cached.id, sessionId)));
      return { workspace: cached.json, session: sessionId == null ? undefined : session ?? null };
    }
    const gen = this.keys?.gen;
    if (this.cluster) {
      // The key's entry, then its workspace and session (three slots): two round trips.
      const id = await this.run(() => this.redis.get(this.key('key', hash)));
      if (id == null) return { workspace: null, session: sessionId == null ? undefined : null };
      const [workspace, session] = await this.run(() =>
        Promise.all([this.redis.get(this.wsKey('ws', id)), sessionId == null ? undefined : this.redis.get(this.sessionKey(id, sessionId))]),
      );
      this.keys?.put(hash, workspace ?? null, gen);
      return { workspace: workspace ?? null, session: sessionId == null ? undefined : session ?? null };
    }
    const [workspace, session] = await this.run(() =>
      this.redis.otpkitLookupSession(this.key('key', hash), `${this.prefix}ws:`, `${this.prefix}s:`, sessionId ?? ''),
    );
    this.keys?.put(hash, workspace ?? null, gen);
    return { workspace: workspace ?? null, session: sessionId == null ? undefined : session ?? null };
  }

  /** `GET /ready`'s store check: Redis answers PING within a second. */
  async ready() {
    let timer;
    const late = new Promise((resolve) => (timer = setTimeout(() => resolve(false), 1000)));
    try {
      return await Promise.race([this.redis.ping().then((p) => p === 'PONG', () => false), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close() {
    clearInterval(this.timer);
    this.keys?.stop();
    this.core.close();
    // Steps still in flight end unheard: they fail as a lost connection would.
    for (const [id, step] of this.steps) {
      this.steps.delete(id);
      if (step.drain) step.drain.resolve({ failed: [], timed: [] });
      else step.reject(hostError('STORE_UNAVAILABLE'));
    }
    if (this.ownClient) this.redis.disconnect();
  }
}

/** How long a cached key lookup is used at most, even with no invalidation heard. */
const KEY_CACHE_MS = 60_000;
/** Entries kept at most; past that the cache starts over (forgetting costs one lookup each). */
const KEY_CACHE_MAX = 10_000;

/**
 * API key hash → workspace JSON, in this process, so that a request's authentication usually
 * costs no Redis round trip (issue 14: a new send then waits for 2 on one Redis, plus the gateway).
 *
 * Revocation stays immediate through Redis's own server-assisted client-side caching: a
 * dedicated connection to each Redis that holds keys (the one Redis, or every master of a
 * Cluster) turns on `CLIENT TRACKING … BCAST` for the prefixes of the key entries and the
 * workspace records, redirected to itself, and subscribes to `__redis__:invalidate`. Redis then
 * reports every write to those keys — by any process, any otpkit version, or by hand — and the
 * cache is emptied on each report (admin writes are rare). A lookup answered by Redis is cached
 * only if no report came while it was in flight (`gen`). Unless every one of those connections
 * is tracking (starting, reconnecting, a master added or failed over, an ACL without `CLIENT` or
 * `SUBSCRIBE`, Redis before 6), nothing is cached and every lookup goes to Redis, as without the
 * cache. This process's own admin writes empty the cache before and after they run (`around`).
 * Unknown keys are not cached (a flood of random keys would only churn it).
 */
class KeyCache {
  constructor(store) {
    this.store = store;
    this.map = new Map(); // hash → { json, at }
    this.gen = 0; // bumped by every report and own write: a lookup that spans one is not kept
    this.live = false;
    this.trackers = null;
  }

  /** The workspace JSON cached for `hash`, or undefined. */
  get(hash) {
    return this.entry(hash)?.json;
  }

  /** `{json, id}` cached for `hash` (id: the workspace's), or undefined. */
  entry(hash) {
    if (!this.live) return undefined;
    const e = this.map.get(hash);
    if (!e) return undefined;
    if (Date.now() - e.at > KEY_CACHE_MS) {
      this.map.delete(hash);
      return undefined;
    }
    return e;
  }

  /** Keeps what Redis answered for `hash` when no report came since the lookup began (`gen`). */
  put(hash, json, gen) {
    if (!this.live || json == null || gen !== this.gen) return;
    let id;
    try {
      id = JSON.parse(json).id;
    } catch {
      return; // not a record: the caller's parse will say so
    }
    if (typeof id !== 'string') return;
    if (this.map.size >= KEY_CACHE_MAX) this.map.clear();
    this.map.set(hash, { json, id, at: Date.now() });
  }

  drop() {
    this.gen++;
    this.map.clear();
  }

  async around(write) {
    this.drop();
    try {
      return await write();
    } finally {
      this.drop();
    }
  }

  /**
   * Opens the tracking connections in the background (until all track, lookups go to Redis): one
   * to the Redis, or one to each master of a Cluster, kept in step with its topology.
   */
  start() {
    if (this.trackers) return;
    this.trackers = new Map(); // 'host:port' → { conn, tracking }
    const redis = this.store.redis;
    if (!this.store.cluster) {
      this.trackers.set('', this.tracker(redis.duplicate(TRACKER_OPTIONS)));
      return;
    }
    this.sync = () => {
      if (!this.trackers) return;
      const masters = new Map(redis.nodes('master').map((n) => [`${n.options.host}:${n.options.port}`, n]));
      let changed = false;
      for (const [addr, t] of this.trackers) {
        if (!masters.has(addr)) {
          this.trackers.delete(addr);
          t.conn.disconnect();
          changed = true;
        }
      }
      for (const [addr, node] of masters) {
        if (this.trackers.has(addr)) continue;
        this.trackers.set(addr, this.tracker(node.duplicate(TRACKER_OPTIONS)));
        changed = true;
      }
      if (changed) this.settle(); // the same masters (a periodic slot refresh): the cache stays
    };
    for (const event of CLUSTER_EVENTS) redis.on(event, this.sync);
    this.sync();
  }

  /** One tracking connection: re-armed by hand after each reconnect (a subscriber can run nothing else). */
  tracker(conn) {
    const t = { conn, tracking: false };
    conn.on('error', () => {}); // a lost connection is 'close', then 'reconnecting'
    conn.on('close', () => {
      t.tracking = false;
      this.settle();
    });
    conn.on('message', (channel) => {
      if (channel === '__redis__:invalidate') this.drop();
    });
    conn.on('ready', async () => {
      try {
        const id = await conn.client('ID');
        const p = this.store.prefix;
        await conn.client('TRACKING', 'on', 'REDIRECT', String(id), 'BCAST', 'PREFIX', `${p}key:`, 'PREFIX', `${p}ws:`);
        await conn.subscribe('__redis__:invalidate');
        t.tracking = true;
      } catch (e) {
        t.tracking = false; // no tracking here (an ACL, Redis < 6): lookups keep going to Redis
        if (conn.status === 'ready') this.refused(conn, e); // not a connection lost meanwhile
      }
      this.settle();
    });
    return t;
  }

  /** Says once per node and cause that Redis refused tracking there (so nothing is cached). */
  refused(conn, e) {
    const node = `${conn.options.host}:${conn.options.port}`;
    // Redis's error word (NOPERM, ERR, …): never more of its text.
    const cause = typeof e?.message === 'string' ? e.message.split(' ')[0] : String(e?.name ?? 'Error');
    const said = (this.said ??= new Set());
    if (said.has(`${node} ${cause}`)) return;
    said.add(`${node} ${cause}`);
    const { log, logLevel } = this.store;
    if (log) {
      const line = native.keyCacheOffLine(logLevel ?? null, Date.now(), node, cause);
      if (line) log(line);
    } else {
      process.emitWarning(`otpkit: Redis at ${node} refused the API-key cache's tracking (${cause}): key lookups go to Redis`);
    }
  }

  /** Live only while every connection tracks; any change empties the cache. */
  settle() {
    if (!this.trackers) return;
    this.live = this.trackers.size > 0 && [...this.trackers.values()].every((t) => t.tracking);
    this.drop();
  }

  stop() {
    this.live = false;
    this.drop();
    if (this.sync) for (const event of CLUSTER_EVENTS) this.store.redis.off(event, this.sync);
    for (const t of this.trackers?.values() ?? []) t.conn.disconnect();
    this.trackers = null;
  }
}

/**
 * A tracking connection's options: it connects at once, waits out outages, reconnects by itself
 * (a Cluster's node connections do not: the Cluster client reconnects them), re-arms by hand.
 */
const TRACKER_OPTIONS = {
  lazyConnect: false,
  autoResubscribe: false,
  enableOfflineQueue: true,
  maxRetriesPerRequest: null,
  retryStrategy: (times) => Math.min(times * 100, 1000),
};
/** Cluster client events after which the set of masters may have changed. */
const CLUSTER_EVENTS = ['refresh', '+node', '-node', 'ready'];

/**
 * The Lua scripts RedisCore runs, by name (each with the fragments it needs): for the tests that
 * hold them to otpkit-core's rules by calling them directly.
 */
RedisStore.scripts = NATIVE_SCRIPTS;

module.exports = { RedisStore };
