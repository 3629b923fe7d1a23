'use strict';
// The Redis store: several Node processes share one Redis and keep SPEC's guarantees.
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
const MAX_TRIES = 500;
const SWEEP_MS = 10_000;
// A session key outlives its purge time by this much, so the sweeper (which writes the `purged`
// audit event) finds it; the TTL is only the safety net if no process sweeps.
const PURGE_GRACE_MS = 3600 * 1000;
const FLOOD_WINDOW_MS = 60_000; // otpkit-core's FloodShield window
const FLOOD_KEEP_MS = 120_000;
const DAY_MS = 86_400_000; // otpkit-core's spend counter counts UTC days

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
const VERIFY_WRITE = luaScript('verify-write');
const ADMIT = luaScript('admit');
const CHARGE = luaScript('charge');
const FRAUD_VERIFIED = luaScript('fraud-verified');
const UNBLOCK_PREFIX = luaScript('unblock-prefix');
const READ_FRAUD = luaScript('read-fraud');
const REFUND_SPEND = luaScript('refund-spend');
const CONFIRM = luaScript('confirm');
const PUT_WORKSPACE = luaScript('put-workspace');
const PUT_RECORD_ONLY = luaScript('put-record-only');
const LOOKUP_SESSION = luaScript('lookup-session');
const RECORD = luaScript('record');
const RESEND_WRITE = luaScript('resend-write');
const SWEEP = luaScript('sweep');

function split(raw) {
  if (raw == null) return [0, null];
  const bar = raw.indexOf('|');
  return [Number(raw.slice(0, bar)), raw.slice(bar + 1)];
}

/**
 * `step` with `guardRaw`, the value the guard holds after it: `before` (read at version `ver`) if
 * nothing was written, else the script's write of `step.state` as version `ver` + 1 (null: deleted).
 * The send's end decides on it first (finish), without reading the guard again.
 */
function withGuard(step, ver, before, wrote) {
  if (!wrote) return { ...step, guardRaw: before };
  const state = step.state ?? '';
  return { ...step, guardRaw: state === '' ? null : `${ver + 1}|${state}` };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const DONE = '{"result":"done"}';
/** When a stored session (JSON) is purged, and how long its key is kept (ms from `now`). */
function retention(json, now) {
  const purgeAt = native.sessionPurgeAt(json);
  return { purgeAt, keep: Math.ceil(Math.max(1000, purgeAt - now)) + PURGE_GRACE_MS };
}
/** The CAS scripts' keep argument: '-1' keeps the key's TTL; at least 1 s otherwise. */
const keepArg = (keepMs) => (keepMs == null ? '-1' : String(Math.max(1000, Math.ceil(keepMs))));
const backoff = (i) => (i > 3 ? sleep(Math.random() * Math.min(i, 20)) : null);

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
    if (this.cluster) this.redis.defineCommand('otpkitCharge', { numberOfKeys: 2, lua: CHARGE });
    if (this.cluster) this.redis.defineCommand('otpkitPutRecord', { numberOfKeys: 1, lua: PUT_RECORD_ONLY });
    this.redis.defineCommand('otpkitCas', { numberOfKeys: 1, lua: CAS });
    this.redis.defineCommand('otpkitAdmit', { numberOfKeys: 3, lua: ADMIT });
    this.redis.defineCommand('otpkitRefundSpend', { numberOfKeys: 1, lua: REFUND_SPEND });
    this.redis.defineCommand('otpkitFraudVerified', { numberOfKeys: 2, lua: FRAUD_VERIFIED });
    this.redis.defineCommand('otpkitUnblockPrefix', { numberOfKeys: 2, lua: UNBLOCK_PREFIX });
    this.redis.defineCommand('otpkitReadFraud', { numberOfKeys: 1, lua: READ_FRAUD });
    this.redis.defineCommand('otpkitPutWorkspace', { numberOfKeys: 2, lua: PUT_WORKSPACE });
    this.redis.defineCommand('otpkitVerifyWrite', { numberOfKeys: 2, lua: VERIFY_WRITE });
    this.redis.defineCommand('otpkitConfirm', { numberOfKeys: 3, lua: CONFIRM });
    this.redis.defineCommand('otpkitLookupSession', { numberOfKeys: 1, lua: LOOKUP_SESSION });
    this.redis.defineCommand('otpkitRecord', { numberOfKeys: 3, lua: RECORD });
    this.redis.defineCommand('otpkitSweep', { numberOfKeys: 1, lua: SWEEP });
    this.redis.defineCommand('otpkitResendWrite', { numberOfKeys: 2, lua: RESEND_WRITE });
    // Purges sessions past retention with their `purged` audit event (as the Worker's alarm does).
    this.timer = setInterval(() => this.sweep().catch(() => {}), SWEEP_MS);
    this.timer.unref();
    this.indexing = new Set(); // receipt index writes in flight (see indexReceipts)
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
   * Read → decide → compare-and-set, again on conflict. `decide(json|null)` returns
   * `{state, keepMs, changed}` (state null deletes) plus anything the caller wants back.
   * `firstRaw`: the key's value already read (a string, or null when absent) — the first try
   * skips its GET. `tell`: the step also carries `guardRaw`, the value now stored (see withGuard).
   * `guessed`: `firstRaw` was not read but guessed (a destination never seen: no guard), so a
   * decision that writes nothing is checked by a read first. A compare-and-set that does not
   * write answers the value it found, and the next try decides on it: one round trip per try.
   */
  async update(key, decide, firstRaw, tell = false, guessed = false) {
    return this.run(async () => {
      let known = firstRaw;
      let guess = guessed;
      for (let i = 0; i < MAX_TRIES; i++) {
        const given = known !== undefined;
        const raw = given ? known : await this.redis.get(key);
        known = undefined;
        const [ver, json] = split(raw);
        const step = decide(json);
        if (!step.changed) {
          if (!guess) return tell ? withGuard(step, ver, raw, false) : step;
          guess = false; // decided on a guess: read, and decide again
          continue;
        }
        guess = false;
        const cas = [key, ver, step.state ?? '', keepArg(step.keepMs), given && raw != null ? raw : ''];
        const [wrote, found] = await this.redis.otpkitCas(...cas);
        if (wrote === 1) return tell ? withGuard(step, ver, raw, true) : step;
        known = found ?? null;
        await backoff(i);
      }
      throw hostError('STORE_UNAVAILABLE');
    });
  }

  /** The flow's next step: each of its store effects comes to perform(). */
  next(flow) {
    return flow.poll();
  }
  /** Feeds the outcome of an IO and answers the next step. */
  resume(flow, outcome) {
    flow.handle(outcome);
    return flow.poll();
  }

  /**
   * Performs one store effect of a flow (`io`) and answers the outcome JSON. `ctx` carries what
   * one step read for the next of the same request, so it need not read again: the session read
   * with the API key (`session`), and the guard value a step left (`guardRaw`).
   */
  async perform(engine, ws, io, raw, now, ctx) {
    switch (io.io) {
      case 'readSession': {
        const given = ctx.session !== undefined;
        const value = given ? ctx.session : await this.run(() => this.redis.get(this.sessionKey(ws.id, io.sessionId)));
        ctx.session = undefined;
        return `{"result":"session","session":${this.sessionValue(value) ?? 'null'}}`;
      }
      case 'admit':
        return this.admit(ws, io, now, ctx);
      case 'readActive': {
        const raw = await this.run(() => this.redis.get(this.key('g', ws.id, io.dest)));
        return native.guardActive(split(raw)[1], io.purpose, now);
      }
      case 'forget':
        await this.update(this.key('g', ws.id, io.dest), (json) => native.guardForget(json, ws, io.sessionId, now));
        return DONE;
      case 'storeSession':
        return this.storeSession(ws, io.session, now, ctx);
      case 'reportDelivery': {
        const guess = ctx.guardRaw;
        ctx.guardRaw = undefined;
        const cancel = await this.delivery(ws, io.dest, io.sessionId, io.outcome, now, guess);
        return JSON.stringify({ result: 'confirmed', cancel });
      }
      case 'resend':
        return this.resend(ws, io, now);
      case 'cancelSession':
        await this.cancelSession(ws.id, io.sessionId);
        return DONE;
      case 'refundSpend':
        await this.run(() => this.redis.otpkitRefundSpend(this.wsKey('sp', ws.id), String(io.day), String(io.micros)));
        return DONE;
      // Fraud Guard (SPEC §9): the counts the ADMIT script charges (see FRAUD).
      case 'fraudVerified': // the session's workspace is the flow's
        await this.run(() =>
          this.redis.otpkitFraudVerified(this.wsKey('fr', ws.id, io.prefix), this.wsKey('fx', ws.id), io.prefix, String(io.windowMs), String(now)),
        );
        return DONE;
      case 'readFraud':
        return this.readFraud(io.workspaceId, now);
      case 'unblockPrefix': {
        const was = await this.run(() =>
          this.redis.otpkitUnblockPrefix(this.wsKey('fr', io.workspaceId, io.prefix), this.wsKey('fx', io.workspaceId), io.prefix, String(io.now)),
        );
        return `{"result":"unblocked","wasBlocked":${was === 1}}`;
      }
      case 'verify':
        return this.verify(engine, ws, io.sessionId, io.code, now, ctx, io.transaction ? JSON.stringify(io.transaction) : null);
      case 'recordVerify': {
        const guess = ctx.guardRaw;
        ctx.guardRaw = undefined;
        await this.update(
          this.key('g', ws.id, io.dest),
          (json) => native.guardVerified(json, ws, io.sessionId, io.status, io.attemptsLeft, now),
          guess,
        );
        return DONE;
      }
      case 'record':
        await this.record(
          ws.id,
          io.events.map((e) => JSON.stringify(e)),
          io.deltas,
        );
        return DONE;
      case 'readWorkspace': {
        // The record with each key's lastUsedAt, kept beside it (`used:<id>`; see touchKey).
        const [json, used] = await this.run(() =>
          Promise.all([this.redis.get(this.wsKey('ws', io.workspaceId)), this.redis.hgetall(this.wsKey('used', io.workspaceId))]),
        );
        return `{"result":"workspace","workspace":${withLastUsed(json, used) ?? 'null'}}`;
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
      case 'audit': // an admin action or a delivery receipt, in the trail of the workspace it concerns
        await this.record(
          io.workspaceId,
          io.events.map((e) => JSON.stringify(e)),
          io.deltas ?? [],
        );
        return DONE;
      // Delivery receipts (SPEC §8): whose session a receipt is about, then the receipt applied.
      case 'findReceipt': {
        const owner = await this.run(() => this.redis.get(this.key('rcpt', io.key)));
        return JSON.stringify({ result: 'owner', owner: owner ?? null });
      }
      case 'applyReceipt':
        return this.applyReceipt(io);
      // SPEC §7 "Idempotency": one record per key hash (per workspace; never the key itself),
      // decided by the core (native idempotency*) and written by the compare-and-set script.
      case 'claimIdempotency':
        return this.claimIdempotency(ws, io, now, ctx);
      case 'finishIdempotency':
      case 'releaseIdempotency': {
        // The first try compares the whole value the claim wrote (ctx.idemRaw): no GET.
        const guess = ctx.idemRaw;
        ctx.idemRaw = undefined;
        const decide =
          io.io === 'finishIdempotency'
            ? (json) => native.idempotencyFinish(json, JSON.stringify(io.record))
            : (json) => native.idempotencyRelease(json, io.claimedAt);
        await this.update(this.key('idem', ws.id, io.keyHash), decide, guess);
        return DONE;
      }
      case 'readReuseHint': // this store keeps no reuse hints: the guard decides every request
        return '{"result":"reuseHint","sessionId":null}';
      default: // putReuseHint, dropReuseHint
        return DONE;
    }
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

  /**
   * Admits a send at the destination guard; with `io.fraud` / `io.floodLimit` / `io.spend`, also
   * charges Fraud Guard's count of its prefix, counts it in the workspace's flood shield and
   * charges the day's spend — in one script that counts them atomically, or none if one refuses
   * (a Fraud Guard refusal is itself counted). The guard is compared-and-set (see ADMIT).
   */
  admit(ws, io, now, ctx) {
    const guardKey = this.key('g', ws.id, io.dest);
    const decide = (json) => native.guardAdmit(json, ws, io.purpose, io.sessionId, io.expiresAt, io.test, io.resend === true, now);
    const answer = (step) => `{"result":"admitted","admission":${step.admission}}`;
    // The first try decides on no guard (most sends go to a destination not seen lately): a
    // guard that is there makes the write fail and come back with it, at no extra round trip.
    if (io.floodLimit == null && io.spend == null && io.fraud == null) {
      return this.update(guardKey, decide, null, true, true).then((step) => {
        ctx.guardRaw = step.guardRaw;
        return answer(step);
      });
    }
    // 'fw', not the 'f' of the old last-writer-wins string: no WRONGTYPE while one of those lives
    const floodKey = this.wsKey('fw', ws.id);
    const spend = io.spend;
    const spendArgs = spend
      ? [String(spend.limitMicros), String(spend.costMicros), String(spend.day), String(Math.max(1000, (spend.day + 2) * DAY_MS - now))]
      : ['', '', '', ''];
    const fraud = io.fraud;
    const fraudArgs = fraud
      ? [this.wsKey('fr', ws.id, fraud.prefix), this.wsKey('fx', ws.id), fraud.prefix, String(fraud.windowMs), String(fraud.minSends), String(fraud.minConversion), String(fraud.blockMs)]
      : [];
    const chargeArgs = [io.floodLimit ?? '', now, FLOOD_WINDOW_MS, FLOOD_KEEP_MS, ...spendArgs, ...fraudArgs];
    // The charge's refusals (nothing written but Fraud Guard's own count): the core builds each admission.
    // `admitted`: the guard recorded the send in an earlier step (Cluster), so the flow refunds it.
    const refusal = (written, admitted) => {
      if (written[0] === -3) return `{"result":"admitted","admission":${native.fraudRefused(written[1] === '1', admitted)}}`;
      if (written[0] === -2) {
        // the cap refused: the core says until when, from the day counted
        const full = JSON.stringify({ day: Number(written[1]), micros: spend.limitMicros });
        return `{"result":"admitted","admission":${native.spendJson(full, JSON.stringify(spend), now, admitted).refused}}`;
      }
      // the shield refused: the core says for how long, from the window's start
      const full = JSON.stringify({ windowStart: Number(written[1]), count: io.floodLimit });
      return `{"result":"admitted","admission":${native.floodJson(full, io.floodLimit, now, admitted).refused}}`;
    };
    if (this.cluster) {
      // The guard's slot, then the workspace's (as the Worker's two objects): a send the charge
      // refuses after the guard recorded it is refunded at the guard by the flow.
      return this.update(guardKey, decide, null, true, true).then(async (step) => {
        ctx.guardRaw = step.guardRaw;
        if (step.kind !== 'send') return answer(step);
        const written = await this.run(() => this.redis.otpkitCharge(floodKey, this.wsKey('sp', ws.id), '', '', '', ...chargeArgs));
        return Array.isArray(written) ? refusal(written, true) : answer(step);
      });
    }
    return this.run(async () => {
      let known = null; // the first try decides on no guard, as above; then on what a write found
      let guess = true;
      for (let i = 0; i < MAX_TRIES; i++) {
        const rawGuard = known !== undefined ? known : await this.redis.get(guardKey);
        known = undefined;
        const [gv, guard] = split(rawGuard);
        const step = decide(guard);
        if (step.kind !== 'send') {
          if (!step.changed) {
            if (!guess) return answer(step);
            guess = false; // decided on a guess: read, and decide again
            continue;
          }
          const [wrote, found] = await this.redis.otpkitCas(guardKey, gv, step.state ?? '', keepArg(step.keepMs), '');
          if (wrote === 1) return answer(step);
          known = found ?? null;
        } else {
          const written = await this.redis.otpkitAdmit(guardKey, floodKey, this.wsKey('sp', ws.id), gv, step.state ?? '', keepArg(step.keepMs), ...chargeArgs);
          if (written === 1) {
            ctx.guardRaw = withGuard(step, gv, rawGuard, true).guardRaw;
            return answer(step);
          }
          if (Array.isArray(written) && written[0] === 0) known = written[1] ?? null; // the guard changed
          else if (Array.isArray(written)) return refusal(written, false); // nothing written at the guard
        }
        guess = false;
        await backoff(i);
      }
      throw hostError('STORE_UNAVAILABLE');
    });
  }

  /**
   * Claims an Idempotency-Key: the first try decides on "absent" and writes with SET-if-version-0
   * semantics (CAS, PX 24 h), one round trip for a new key; a key already there is read and
   * decided again (replay, mismatch, in flight, or a stale claim taken over).
   */
  async claimIdempotency(ws, io, now, ctx) {
    const step = await this.update(
      this.key('idem', ws.id, io.keyHash),
      (json) => native.idempotencyClaim(json, io.fingerprint, now),
      null,
      true,
    );
    ctx.idemRaw = step.changed ? step.guardRaw : undefined;
    return step.outcome;
  }

  /**
   * A delivered session: stored (with its purge entry) and confirmed at the guard in one atomic
   * script, so a waiter told "delivered" always finds it. Answers `storedAndConfirmed` with the
   * session the guard says to cancel.
   */
  async storeSession(ws, session, now, ctx) {
    // What admit left in the guard (`ctx.guardRaw`): the first try decides on it, no GET.
    const guess = ctx.guardRaw;
    ctx.guardRaw = undefined;
    const json = JSON.stringify(session);
    const guardKey = this.key('g', ws.id, session.dest);
    const sessionKey = this.sessionKey(session.workspaceId, session.id);
    const value = `1|${json}`;
    const { purgeAt, keep } = retention(json, now);
    if (this.cluster) {
      // The session's slot first, then the guard's: a waiter told "delivered" finds the session.
      const purge = this.key('purge', 'all');
      await this.run(() => this.batch([['set', sessionKey, value, 'PX', String(keep)], ['zadd', purge, String(purgeAt), sessionKey]]));
      const step = await this.update(guardKey, (guard) => native.guardDelivery(guard, ws, session.id, 'delivered', now), guess);
      this.indexReceipts(json, purgeAt, now);
      return JSON.stringify({ result: 'storedAndConfirmed', cancel: step.sessionId ?? null });
    }
    const step = await this.run(async () => {
      for (let i = 0; i < MAX_TRIES; i++) {
        const guessed = i === 0 && guess !== undefined;
        const raw = guessed ? guess : await this.redis.get(guardKey);
        const [ver, guard] = split(raw);
        const s = native.guardDelivery(guard, ws, session.id, 'delivered', now);
        // A guessed absent guard is compared by version (0: still absent), as a read one is.
        const expect = guessed && raw != null ? raw : '';
        const args = [guardKey, sessionKey, this.key('purge', 'all'), ver, s.state ?? '', keepArg(s.keepMs), value, String(keep), String(purgeAt), expect];
        if (!s.changed) {
          // The guard needs no change: store the session against its current version.
          args[4] = guard ?? '';
          args[5] = '-1';
        }
        if (await this.redis.otpkitConfirm(...args)) return s;
        await backoff(i);
      }
      throw hostError('STORE_UNAVAILABLE');
    });
    this.indexReceipts(json, purgeAt, now);
    return JSON.stringify({ result: 'storedAndConfirmed', cancel: step.sessionId ?? null });
  }

  async delivery(ws, dest, sessionId, outcome, now, firstRaw) {
    const step = await this.update(
      this.key('g', ws.id, dest),
      (json) => native.guardDelivery(json, ws, sessionId, outcome, now),
      firstRaw,
    );
    return step.sessionId ?? null;
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
    for (const [wsId, lines] of byWorkspace) await this.record(wsId, lines);
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

  /**
   * One step of a resend: read → otpkit_core::flow::resend_stored → compare-and-set, again on a
   * conflict (deciding on the value the failed write found). A new code's expiry moves the session's purge time in the same script.
   */
  async resend(ws, io, now) {
    const key = this.sessionKey(ws.id, io.sessionId);
    const step = JSON.stringify(io.step);
    return this.run(async () => {
      let known; // the value a failed write found: the next try decides on it without a GET
      for (let i = 0; i < MAX_TRIES; i++) {
        const raw = known !== undefined ? known : await this.redis.get(key);
        known = undefined;
        const [ver, json] = split(raw);
        const s = native.resendStored(json, ws.id, step, now);
        if (s.write == null) return s.outcome;
        const { purgeAt, keep } = retention(s.write, now);
        const purge = this.key('purge', 'all');
        // On a Cluster the session, then its purge entry (another slot; see sweepCluster).
        const [wrote, found] = this.cluster
          ? await this.redis.otpkitCas(key, ver, s.write, String(keep))
          : await this.redis.otpkitResendWrite(key, purge, ver, s.write, String(keep), String(purgeAt));
        if (wrote === 1) {
          if (this.cluster) await this.redis.zadd(purge, String(purgeAt), key);
          // A new message was applied: receipts find it by its id until the session is purged.
          if (io.step.kind === 'apply') this.indexReceipts(s.write, purgeAt, now);
          return s.outcome;
        }
        known = found ?? null;
        await backoff(i);
      }
      throw hostError('STORE_UNAVAILABLE');
    });
  }

  /**
   * The delivery receipt index entries of a stored session (JSON; otpkit_core::delivery::
   * index_entries), each kept until `purgeAt`. Best effort, and not waited for: a failed write
   * is logged as a store failure and fails nothing. It is sent on this connection before the
   * answer that follows, so a later read of this process sees it; settle() waits for it.
   */
  indexReceipts(sessionJson, purgeAt, now) {
    let entries;
    try {
      entries = native.receiptIndexEntries(sessionJson);
    } catch (e) {
      logStoreFailure(this.kind, 'indexReceipt', fromNative(e));
      return;
    }
    if (!entries.length) return;
    const ttl = String(Math.max(1, Math.ceil(purgeAt - now)));
    const sets = [];
    for (let i = 0; i + 1 < entries.length; i += 2) sets.push(['set', this.key('rcpt', entries[i]), entries[i + 1], 'PX', ttl]);
    let p;
    try {
      p = this.batch(sets);
    } catch (e) {
      p = Promise.reject(e);
    }
    const tracked = p
      .catch((e) => logStoreFailure(this.kind, 'indexReceipt', e instanceof OtpError ? e : hostError('STORE_UNAVAILABLE', e)))
      .finally(() => this.indexing.delete(tracked));
    this.indexing.add(tracked);
  }

  /** Waits for the receipt index writes in flight. */
  async settle() {
    while (this.indexing.size) await Promise.allSettled([...this.indexing]);
  }

  /**
   * A delivery receipt on the session it names (`io.workspaceId`, `io.sessionId`): read →
   * otpkit_core::flow::receipt_stored → compare-and-set keeping the key's TTL (a receipt never
   * moves the purge time), again on a conflict. Answers `receiptApplied`.
   */
  async applyReceipt(io) {
    const receipt = JSON.stringify(io.receipt);
    const step = await this.update(this.sessionKey(io.workspaceId, io.sessionId), (json) => {
      const s = native.receiptStored(json, io.workspaceId, receipt);
      return { state: s.write, keepMs: null, changed: s.write != null, outcome: s.outcome };
    });
    return step.outcome;
  }

  async cancelSession(wsId, sessionId) {
    await this.update(this.sessionKey(wsId, sessionId), (json) =>
      json == null ? { changed: false } : { state: native.cancelJson(json), keepMs: null, changed: true },
    );
  }

  /**
   * A flow's verify: read → otpkit_core::flow::verify_stored → compare-and-set, again on a
   * conflict. The first try uses the session read with the API key (`ctx.session`) if any; a try
   * after a conflict decides on the value the failed write found (no GET). The
   * write also reads the destination guard (`ctx.guardRaw`), on which the failure streak that
   * follows the answer decides first.
   */
  async verify(engine, ws, sessionId, code, now, ctx, transaction = null) {
    const sessionKey = this.sessionKey(ws.id, sessionId);
    const prefetched = ctx.session;
    ctx.session = undefined;
    return this.run(async () => {
      let known = prefetched; // read with the API key, then what a failed write found
      for (let i = 0; i < MAX_TRIES; i++) {
        const given = known !== undefined;
        const raw = given ? known : await this.redis.get(sessionKey);
        known = undefined;
        const [ver, json] = split(raw);
        const s = engine.verifyStored(json, ws.id, code, now, transaction);
        if (s.write == null) return s.outcome; // nothing to write (no session, already ended)
        const expect = given && raw != null ? raw : '';
        if (this.cluster) {
          // The guard is in another slot: the failure streak after the answer reads it.
          const [wrote, found] = await this.redis.otpkitCas(sessionKey, ver, s.write, '-1', expect);
          if (wrote === 1) return s.outcome;
          known = found ?? null;
          await backoff(i);
          continue;
        }
        const guardKey = this.key('g', ws.id, s.dest ?? '');
        const [ok, other] = await this.redis.otpkitVerifyWrite(sessionKey, guardKey, ver, s.write, '-1', expect);
        if (ok === 1) {
          ctx.guardRaw = other; // the guard's value
          return s.outcome;
        }
        known = other ?? null; // the session's value
        await backoff(i);
      }
      throw hostError('STORE_UNAVAILABLE');
    });
  }

  /**
   * Appends audit lines and applies analytics deltas (JSON from the native module) for one
   * workspace, in one atomic script. Analytics keys: a hash of counters per UTC day
   * (`an:<ws>:<day>`, field `<counter>|<bucket>`, kept 91 days) and a sorted set of open
   * sessions by expiry (`ao:<ws>`; members past expiry are dropped as new ones arrive).
   */
  async record(wsId, lines, deltas = []) {
    const ops = deltas.length
      ? native.redisAnalyticsOps(`${this.wsKey('an', wsId)}:`, this.wsKey('ao', wsId), JSON.stringify(deltas), Date.now())
      : [];
    if (!lines.length && !ops.length) return;
    // Each line goes to the lifecycle list (`a:<ws>`) or the repeatable one (`ar:<ws>`), as the core decides.
    const repeatable = lines.length ? native.auditRepeatable(lines) : [];
    const marked = lines.map((l, i) => (repeatable[i] ? 'r' : 'l') + l);
    await this.run(() =>
      this.redis.otpkitRecord(
        this.wsKey('a', wsId),
        this.seqKey(wsId),
        this.wsKey('ar', wsId),
        String(lines.length),
        String(this.auditKeep),
        ...marked,
        ...ops,
      ),
    );
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

module.exports = { RedisStore };
