'use strict';
// The Redis store: several Node processes share one Redis and keep SPEC's guarantees.
//
// Everything that touches Redis runs in Rust (RedisCore, src/redis_store.rs, on one redis-rs
// connection: one Redis or a Redis Cluster): the flows of requests, verifies, resends, cancels,
// status, delivery receipts and the admin routes (every store effect between two steps of the
// driver — the gateway's send, a wait — is performed there, and what follows an answer runs on
// there too), the API-key lookups and their cache (src/key_cache.rs), the sweep and the reads
// of the reports. This file is the store interface the driver (lib/service.js) calls.
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
const { fromNative, hostError } = require('./errors');
const { reportRun, logStoreFailure } = require('./log');

const AUDIT_KEEP = 10_000; // events per workspace in each audit list (otpkit_core::audit::KEEP_PER_STREAM)
const SWEEP_MS = 10_000;
const SWEEP_LIMIT = 500; // sessions purged per sweep at most

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

/** The Fraud Guard count's fields, in the order fraud.lua stores them. */
const FRAUD_FIELDS = /local FRAUD_FIELDS = \{([^}]*)\}/
  .exec(luaFile('fraud'))[1]
  .split(',')
  .map((f) => f.trim().replace(/^'|'$/g, ''));

// The scripts RedisCore runs (src/redis_store.rs), by the names it asks for.
const NATIVE_SCRIPTS = {
  cas: luaScript('cas'),
  admit: luaScript('admit'),
  charge: luaScript('charge'),
  confirm: luaScript('confirm'),
  verifyWrite: luaScript('verify-write'),
  record: luaScript('record'),
  resendWrite: luaScript('resend-write'),
  refundSpend: luaScript('refund-spend'),
  fraudVerified: luaScript('fraud-verified'),
  readFraud: luaScript('read-fraud'),
  unblockPrefix: luaScript('unblock-prefix'),
  putWorkspace: luaScript('put-workspace'),
  putRecordOnly: luaScript('put-record-only'),
  lookupSession: luaScript('lookup-session'),
  sweep: luaScript('sweep'),
  auditLists: luaScript('audit-lists'),
};

/**
 * `host:port,host:port,…` (REDIS_CLUSTER_NODES) or an array of `host:port` strings (IPv6 in
 * brackets: `[::1]:7000`): the Cluster's start nodes; a clear TypeError for anything else.
 */
function clusterNodes(given) {
  const list = Array.isArray(given) ? given : String(given).split(',');
  const nodes = list.map((n) => String(n).trim().replace(/^redis:\/\//, '')).filter((n) => n !== '');
  if (!nodes.length) throw new TypeError('REDIS_CLUSTER_NODES names no node: give host:port,host:port,…');
  for (const n of nodes) {
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]/@\s]+):(\d{1,5})$/.exec(n);
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65535) throw new TypeError(`REDIS_CLUSTER_NODES: "${n}" is not host:port`);
  }
  return nodes;
}

/**
 * Where an ioredis client given as `client` connects (its host, port, user, password, database,
 * TLS; or a Cluster's start nodes): `{url}` or `{nodes}`. The store opens its own connection
 * there; the client itself is not used.
 */
function clientTarget(client, cluster) {
  if (cluster) {
    const nodes = (client.startupNodes ?? []).map((n) => (typeof n === 'string' ? n.replace(/^redis:\/\//, '') : `${n.host ?? '127.0.0.1'}:${n.port ?? 6379}`));
    return { nodes: clusterNodes(nodes) };
  }
  const o = client.options ?? {};
  const auth = o.password ? `${encodeURIComponent(o.username ?? '')}:${encodeURIComponent(o.password)}@` : '';
  const host = /:/.test(o.host ?? '') ? `[${o.host}]` : (o.host ?? '127.0.0.1');
  return { url: `${o.tls ? 'rediss' : 'redis'}://${auth}${host}:${o.port ?? 6379}/${o.db ?? 0}` };
}

class RedisStore {
  /**
   * @param {{url?: string, nodes?: string | string[], prefix?: string, auditKeep?: number,
   *   keyCache?: boolean, log?: (line: string) => void, logLevel?: string,
   *   client?: import('ioredis').Redis | import('ioredis').Cluster}} [opts]
   *   One Redis (`url`, else REDIS_URL) or a Redis Cluster (`nodes`: `host:port,…` or an array,
   *   else REDIS_CLUSTER_NODES, which wins over REDIS_URL). `auditKeep`: audit events kept per
   *   workspace in each of its two lists (default 10,000).
   *   `keyCache` (default true): keep API key → workspace lookups in this process, dropped the
   *   moment Redis reports a write to any key entry or workspace record (src/key_cache.rs).
   *   `log` (a function of one JSON line) and `logLevel`: where the `key_cache_off` line goes
   *   when a Redis refuses the cache's tracking (an ACL, Redis before 6), once per node and
   *   cause; without `log`, a process warning says it.
   *   `client` (kept for stores made before 0.x): an ioredis client, of which only the connection
   *   options are read; the store connects by itself.
   */
  constructor({ client, url, nodes, prefix = 'otpkit:', auditKeep = AUDIT_KEEP, keyCache = true, log = null, logLevel = null } = {}) {
    if (!Number.isInteger(auditKeep) || auditKeep < 1 || auditKeep > 0xffffffff) {
      throw new TypeError('auditKeep must be a positive integer');
    }
    if (typeof keyCache !== 'boolean') throw new TypeError('keyCache must be true or false');
    if (log != null && typeof log !== 'function') throw new TypeError('log must be a function of one line');
    if (url && nodes) throw new TypeError('RedisStore takes url (one Redis) or nodes (a Redis Cluster), not both');
    this.log = log;
    this.logLevel = logLevel;
    this.kind = 'redis';
    this.prefix = prefix;
    this.auditKeep = auditKeep;
    this.misconfigured = null; // the MISCONFIGURED error connect() found, answered by every call
    let target;
    if (client) {
      this.cluster = client.isCluster === true;
      target = clientTarget(client, this.cluster);
    } else {
      const seeds = nodes ?? (url ? null : process.env.REDIS_CLUSTER_NODES || null);
      const one = url || process.env.REDIS_URL;
      if (seeds) {
        this.cluster = true;
        target = { nodes: clusterNodes(seeds) };
      } else {
        if (!one) throw new TypeError('RedisStore needs nodes, a url, REDIS_CLUSTER_NODES or REDIS_URL');
        this.cluster = false;
        target = { url: String(one) };
      }
    }
    // A hash tag in the prefix would put every key in one slot (or split a workspace's keys).
    if (this.cluster && /[{}]/.test(prefix)) throw new TypeError('a Redis Cluster key prefix must not contain { or }');
    // Purges sessions past retention with their `purged` audit event (as the Worker's alarm does).
    this.timer = setInterval(() => this.sweep().catch(() => {}), SWEEP_MS);
    this.timer.unref();
    // Each step's end comes back through one callback, by id (see stepDone).
    this.steps = new Map(); // id → { resolve, reject, flow?, drain? }
    this.running = new WeakMap(); // flow → its drain (answered, still running in Rust)
    this.stepId = 0;
    this.core = new native.RedisCore(
      { ...target, prefix, auditKeep, scripts: NATIVE_SCRIPTS, fraudFields: FRAUD_FIELDS, keyCache },
      (done) => this.stepDone(done),
      (code) => logStoreFailure(this.kind, 'indexReceipt', hostError(code ?? 'STORE_UNAVAILABLE')),
      ({ node, cause }) => this.keyCacheRefused(node, cause),
    );
    const core = this.core;
    /** The API-key cache (src/key_cache.rs), as tests and operators look at it; null when off. */
    this.keys = keyCache
      ? {
          get live() {
            return core.keyCacheLive();
          },
          /** The workspace JSON cached for an API key hash, or undefined. */
          get: (hash) => core.cachedKey(hash) ?? undefined,
          trackers: {
            get size() {
              return core.keyCacheTrackers();
            },
          },
        }
      : null;
  }

  /**
   * Connects (the connection is otherwise opened by the first step) and starts the API-key
   * cache; resolves when Redis answers. A connection that does not match the deployment
   * (REDIS_URL on a Cluster node, REDIS_CLUSTER_NODES on a Redis without cluster mode) is
   * MISCONFIGURED, and so is every call after it.
   */
  async connect() {
    if (this.misconfigured) throw this.misconfigured;
    try {
      await this.core.check();
    } catch (e) {
      const err = fromNative(e);
      if (err?.code === 'MISCONFIGURED') this.misconfigured = err;
      throw err;
    }
    this.core.startKeyCache();
  }

  /** A Redis refused the key cache's tracking (nothing is cached): said once per node and cause. */
  keyCacheRefused(node, cause) {
    if (this.log) {
      const line = native.keyCacheOffLine(this.logLevel ?? null, Date.now(), node, cause);
      if (line) this.log(line);
    } else {
      process.emitWarning(`otpkit: Redis at ${node} refused the API-key cache's tracking (${cause}): key lookups go to Redis`);
    }
  }

  /** What `start()` (a native call) answers, its error as the store's (an OtpError). */
  async call(start) {
    if (this.misconfigured) throw this.misconfigured;
    try {
      return await start();
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * The flow's next step for the driver (a promise of its JSON): RedisCore runs the flow in Rust,
   * performing every store effect, until a step the driver takes (deliver, awaitSend, pause) or
   * the answer; what follows the answer runs on there (see drained).
   */
  next(flow, engine, ws, ctx = {}) {
    if (this.stepwise()) return flow.poll();
    return this.runFlow(flow, engine, ws, null, ctx);
  }
  /** Feeds the outcome of the driver's IO and answers the next step, as next() does. */
  resume(flow, outcome, engine, ws, ctx = {}) {
    if (this.stepwise()) {
      flow.handle(outcome);
      return flow.poll();
    }
    return this.runFlow(flow, engine, ws, outcome, ctx);
  }
  /**
   * Whether flows step through perform() one effect at a time: once the store is MISCONFIGURED
   * (perform answers it), and when `oneEffectAtATime` is set (a test that acts between two
   * effects).
   */
  stepwise() {
    return this.oneEffectAtATime === true || this.misconfigured != null;
  }

  /** Once a flow run by RedisCore has answered: resolves when what follows the answer is done. */
  drained(flow) {
    const drain = this.running.get(flow);
    if (!drain) return undefined;
    return (drain.reported ??= drain.promise.then((end) => reportRun(this.kind, end, drain.ctx)));
  }

  runFlow(flow, engine, ws, outcome, ctx) {
    const steps = (ctx.native ??= new native.RedisSteps());
    const ran = new Promise((resolve, reject) => {
      const id = this.stepStarted({ resolve, reject, flow, ctx, drain: null });
      try {
        flow.runRedis(id, this.core, engine, ws, outcome, steps, ctx.metrics != null, ctx.gateway ?? null);
      } catch (e) {
        this.stepEnded(id);
        reject(e);
      }
    });
    // In the request's context: its store failures are logged, its effects timed.
    return ran.then((end) => {
      reportRun(this.kind, end, ctx);
      return end.text;
    });
  }

  /**
   * Performs one store effect of a flow (`io`; `raw`, its JSON) in Rust and answers the outcome
   * JSON (the stepwise path). `ctx` carries, per flow, what one step read for the next
   * (RedisCore's own, `native`).
   */
  async perform(engine, ws, io, raw, now, ctx) {
    if (this.misconfigured) throw this.misconfigured;
    const steps = (ctx.native ??= new native.RedisSteps());
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

  /** Where another request's send stands: `pending`, `delivered` or `gone` (also once stale). */
  entry(ws, dest, sessionId) {
    return this.call(() => this.core.entry(ws.id, dest, sessionId, Date.now()));
  }

  /**
   * Purges the sessions whose retention has passed (at most `limit` per call), writing a
   * `purged` audit event for each. Runs every 10 s; answers how many were purged.
   */
  sweep(now = Date.now(), limit = SWEEP_LIMIT) {
    return this.call(() => this.core.sweep(now, limit));
  }

  /** A session's JSON, or null. */
  getSession(wsId, sessionId) {
    return this.call(() => this.core.getSession(wsId, sessionId));
  }

  /** `GET /v1/messaging/otp/audit`: both of the workspace's lists, read atomically, merged newest first. */
  async auditReply(wsId, query) {
    const [lifecycle, repeatable] = await this.call(() => this.core.auditLists(wsId));
    return native.auditReply(lifecycle, query, repeatable);
  }

  /** `GET /otp/analytics`: the period's day hashes and the live open sessions, one pipeline. */
  async analyticsReply(ws, query, now) {
    const period = native.analyticsPeriod(query, now); // 400 before any read
    const rows = await this.call(() => this.core.analyticsRows(ws.id, period.firstDay, period.lastDay, now));
    return native.analyticsReply(ws, query, now, rows.counters, rows.open);
  }

  /**
   * `GET /v1/admin/analytics`: every indexed workspace's (and `library`'s: the library's
   * workspace, a native Workspace not stored here) records, period day hashes and live open
   * sessions, one pipeline; the core sums them.
   */
  async adminAnalyticsReply(query, now, library = null) {
    const period = native.analyticsPeriod(query, now); // 400 before any read
    const rows = await this.call(() =>
      this.core.adminAnalyticsRows(period.firstDay, period.lastDay, now, library?.id ?? null, library ? library.toJson() : null),
    );
    return native.adminAnalyticsReply(query, now, rows);
  }

  /** A workspace's stored record (JSON), or null. */
  getWorkspace(id) {
    return this.call(() => this.core.getWorkspace(id));
  }
  /**
   * Key `keyId` of workspace `wsId` authenticated a request at `at` (ms): one HSET beside the
   * record. The driver calls it after the answer, at most once an hour per key per process
   * (native.lastUsedDue).
   */
  touchKey(wsId, keyId, at) {
    return this.call(() => this.core.touchKey(wsId, keyId, at));
  }

  /** The workspace JSON an API key hash points at, or null: from the key cache when it holds it. */
  async lookupKey(hash) {
    return (await this.lookupKeyWithSession(hash, null)).workspace;
  }
  /**
   * The workspace JSON of an API key hash and, when `sessionId` is given and the key was not
   * cached, that workspace's session (raw value; null: none), read in the same round trip. With
   * the key cached no session is read here (`session` undefined): the flow reads it itself.
   */
  async lookupKeyWithSession(hash, sessionId) {
    if (typeof hash !== 'string') return { workspace: null, session: sessionId == null ? undefined : null }; // not a key's hash
    const cached = this.keys ? this.core.cachedKey(hash) : null;
    if (cached != null) return { workspace: cached, session: undefined };
    const found = await this.call(() => this.core.lookup(hash, sessionId ?? null));
    return { workspace: found.workspace ?? null, session: sessionId == null ? undefined : found.session ?? null };
  }

  /** `GET /ready`'s store check: Redis answers PING within a second. */
  async ready() {
    try {
      return await this.core.ping();
    } catch {
      return false;
    }
  }

  async close() {
    clearInterval(this.timer);
    this.core.close();
    // Steps still in flight end unheard: they fail as a lost connection would.
    for (const [id, step] of this.steps) {
      this.steps.delete(id);
      if (step.drain) step.drain.resolve({ failed: [], timed: [] });
      else step.reject(hostError('STORE_UNAVAILABLE'));
    }
  }
}

/**
 * The Lua scripts RedisCore runs, by name (each with the fragments it needs): for the tests that
 * hold them to otpkit-core's rules by calling them directly.
 */
RedisStore.scripts = NATIVE_SCRIPTS;

module.exports = { RedisStore };
