'use strict';
// OtpService: the OTP flows on Node. Every rule is otpkit-core's (through the native module);
// this file only moves values between the store, the gateway and the caller, in the same order
// as the Worker (edge-worker/src/otp.rs): admit → send → store → confirm, verify, status.

const native = require('./native');
const { OtpError, fromNative, hostError, fromReply } = require('./errors');
const { MemoryStore } = require('./memory-store');

const IN_FLIGHT_STALE_MS = 15_000; // as otpkit-core's guard::IN_FLIGHT_STALE_MS
const POLL_MS = 20;
const NOT_FOUND_STEP = { status: 'NOT_FOUND', attemptsLeft: 0, consumed: false, ended: false };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const toBody = (value) => Buffer.from(JSON.stringify(value ?? {}));

function normalize(e) {
  return fromNative(e);
}

class OtpService {
  /**
   * @param {object} opts
   * @param {string} opts.pepper OTP_PEPPER, ≥ 32 bytes.
   * @param {{send(m: object): Promise<string>} | ((m: object) => Promise<string>)} opts.gateway
   * @param {object} [opts.store] MemoryStore (default) or RedisStore.
   * @param {string[]} [opts.senders] sender names of the library's workspace (default: any).
   * @param {object} [opts.policy] policy of the library's workspace (SPEC §2 keys).
   * @param {string} [opts.workspaceId] id of the library's workspace (default "default").
   * @param {string} [opts.adminToken] enables the admin routes of handle().
   * @param {boolean} [opts.allowMisconfigured] serve MISCONFIGURED answers instead of throwing.
   */
  constructor(opts = {}) {
    this.engine = new native.Engine(opts.pepper ?? null);
    if (!this.engine.configured && !opts.allowMisconfigured) {
      try {
        this.engine.check();
      } catch (e) {
        throw normalize(e);
      }
    }
    const gw = opts.gateway;
    this.gateway = typeof gw === 'function' ? { send: gw } : gw || null;
    this.store = opts.store || new MemoryStore();
    this.adminToken = opts.adminToken || null;
    this.inflight = new Map(); // sessionId → { promise, resolve } for sends made by this process
    this.background = new Set();
    try {
      this.libraryWorkspace = native.Workspace.library(
        opts.workspaceId || 'default',
        opts.senders ?? null,
        opts.policy == null ? null : JSON.stringify(opts.policy),
        Date.now(),
      );
    } catch (e) {
      throw normalize(e);
    }
    /** The operations in the library's own workspace (the same code as forWorkspace/forApiKey). */
    this.own = this.#scoped(() => this.libraryWorkspace);
  }

  // ---- library API (the library's workspace) -------------------------------------------

  /** Issues (or reuses) a code: `{sessionId, expiresInSeconds, attemptsLeft, reused}`. */
  request(params) {
    return this.own.request(params);
  }

  /** Checks a code: `{sessionId, status, verified, message, attemptsLeft}` for every outcome. */
  verify(params) {
    return this.own.verify(params);
  }

  /** A session's status (masked destination, state, attempts, times), or null if not found. */
  status(sessionId) {
    return this.own.status(sessionId);
  }

  /** Audit events, newest first: `{events, nextCursor}`. `query`: {sessionId, since, limit, cursor}. */
  audit(query = {}) {
    return this.own.audit(query);
  }

  /** Analytics (GET /otp/analytics's answer): `query`: {app, days}. */
  analytics(query = {}) {
    return this.own.analytics(query);
  }

  /** The same operations inside another workspace (multi-tenant), by id. */
  forWorkspace(workspaceId) {
    return this.#scoped(async () => {
      const json = await this.store.getWorkspace(String(workspaceId));
      if (json == null) throw hostError('NOT_FOUND');
      return native.Workspace.fromJson(json);
    });
  }

  /** The same operations inside the workspace an API key belongs to (401 if none). */
  forApiKey(apiKey) {
    return this.#scoped(async () => {
      const hash = native.apiKeyHash(String(apiKey ?? ''));
      return this.authenticateHash(hash);
    });
  }

  /** Creates a workspace: `{workspaceId, apiKey, keyId}` (the key is shown once). */
  async createWorkspace({ name, senders, policy } = {}) {
    return this.#data(() => this.createWorkspaceReply(toBody({ name, senders, policy })));
  }
  /** Replaces senders and/or merges policy keys; answers the workspace (without keys). */
  async updateWorkspace(workspaceId, patch = {}) {
    return this.#data(() => this.patchWorkspaceReply(String(workspaceId), toBody(patch)));
  }
  /** Mints another API key: `{apiKey, keyId}`. */
  async createKey(workspaceId) {
    return this.#data(() => this.createKeyReply(String(workspaceId)));
  }
  /** Revokes a key (immediately). */
  async revokeKey(workspaceId, keyId) {
    await this.#data(() => this.revokeKeyReply(String(workspaceId), String(keyId)));
  }

  /** Waits for bookkeeping that follows answers (audit, failure streak). */
  async settle() {
    while (this.background.size) await Promise.allSettled([...this.background]);
    if (this.store.settle) await this.store.settle();
  }

  /** Settles and closes the store. */
  async close() {
    await this.settle();
    await this.store.close?.();
  }

  #scoped(load) {
    return {
      request: (params) => this.#data(async () => this.issue(await load(), 'v1', toBody(params))),
      verify: (params) => this.#data(async () => this.check(await load(), 'v1', null, toBody(params)), true),
      status: async (sessionId) => {
        const reply = await this.#reply(async () => this.sessionStatus(await load(), 'v1', String(sessionId ?? '')));
        return reply.status === 200 ? JSON.parse(reply.body).data : null;
      },
      audit: (query = {}) =>
        this.#data(async () => this.store.auditReply((await load()).id, new URLSearchParams(query).toString())),
      analytics: async (query = {}) => {
        const reply = await this.#reply(async () =>
          this.store.analyticsReply(await load(), new URLSearchParams(query).toString(), Date.now()),
        );
        if (reply.status !== 200) throw fromReply(reply);
        return JSON.parse(reply.body);
      },
    };
  }

  async #reply(fn) {
    try {
      return await fn();
    } catch (e) {
      throw normalize(e);
    }
  }

  async #data(fn, anyStatus = false) {
    const reply = await this.#reply(fn);
    if (reply.status === 204) return undefined;
    if (!anyStatus && (reply.status < 200 || reply.status >= 300)) throw fromReply(reply);
    return JSON.parse(reply.body).data;
  }

  // ---- flows (answer core replies: {status, body, retryAfter}) ---------------------------

  later(promise) {
    const p = Promise.resolve(promise)
      .catch(() => {})
      .finally(() => this.background.delete(p));
    this.background.add(p);
  }

  /** Audit lines and analytics deltas, after the answer (as the Worker's waitUntil). */
  recordLater(wsId, lines, deltas = []) {
    this.later(this.store.record(wsId, lines, deltas));
  }

  async send(message) {
    if (!this.gateway) return 'failed';
    try {
      const outcome = await this.gateway.send(message);
      return outcome === 'delivered' || outcome === 'timedOut' ? outcome : 'failed';
    } catch {
      return 'failed';
    }
  }

  /** POST /v1/messaging/otp/request and POST /otp/send. */
  async issue(ws, dialect, body) {
    const now = Date.now();
    const plan = this.engine.plan(dialect, body, ws, now);
    // Read once: each property of a native object is a call across Node-API.
    const sessionId = plan.sessionId;
    const dest = plan.dest;
    // The workspace flood shield (approximate, as SPEC allows) counts each admitted send that
    // leaves (not test numbers); the store admits and counts in one step, or refuses (throws).
    const flood = !plan.test;
    let admitted = null; // the store's admit step (the Redis store's carries what it wrote)
    for (let i = 0; i < 3 && !admitted; i++) {
      const a = await this.store.admit(ws, plan, now, flood);
      if (a.kind === 'send') {
        admitted = a;
      } else if (a.kind === 'reuse') {
        const reply = await this.reuse(ws, dialect, dest, a.sessionId, now);
        if (reply) return reply;
      } else if (a.kind === 'wait') {
        if (!(await this.waitFor(ws, dest, a.sessionId))) throw hostError('DELIVERY_FAILED');
        const reply = await this.reuse(ws, dialect, dest, a.sessionId, now);
        if (reply) return reply;
      } else {
        this.recordLater(ws.id, [native.refusedAudit(dest, plan.purpose, plan.app ?? null, a.errorCode, now)]);
        native.throwRefused(a.errorCode, a.retryAfter ?? 1);
      }
    }
    if (!admitted) throw hostError('STORE_UNAVAILABLE');

    let resolve;
    const promise = new Promise((r) => (resolve = r));
    this.inflight.set(sessionId, { promise, resolve });
    let final = 'failed';
    try {
      const message = plan.message(); // null for a test number: nothing is sent
      const outcome = message ? await this.send(message) : 'delivered';
      final = outcome;
      let cancel = null;
      // The memory store writes the send's audit events inside finish (finishAudits).
      let audited = false;
      // Delivered: the session is stored no later than the guard confirms it, so a waiter told to
      // reuse it can read it. If that fails, the guard records a failed send.
      try {
        cancel = await this.store.finish(ws, plan, outcome, now, admitted);
        audited = this.store.finishAudits === true;
      } catch (e) {
        if (outcome !== 'delivered') throw e;
        final = 'failed';
        await this.store.delivery(ws, dest, sessionId, 'failed', now);
      }
      if (final !== 'delivered') {
        if (!audited) this.later(this.store.auditPlan(plan, ['requested', 'delivery_failed'], now));
        throw hostError(outcome === 'delivered' ? 'STORE_UNAVAILABLE' : 'DELIVERY_FAILED');
      }
      if (!audited) this.later(this.store.auditPlan(plan, ['requested', 'delivered'], now));
      if (cancel) this.later(this.store.cancelSession(ws.id, cancel));
      return plan.reply(now);
    } finally {
      this.inflight.delete(sessionId);
      resolve(final === 'delivered');
    }
  }

  /** The reused answer for an active session, or null (then it is forgotten and admit runs again). */
  async reuse(ws, dialect, dest, sessionId, now) {
    const json = await this.store.getSession(ws.id, sessionId, now);
    const reply = json == null ? null : native.reuseReply(dialect, json, now);
    if (reply) {
      const delta = native.sessionAnalytics('reused', json);
      this.recordLater(ws.id, [native.sessionAudit('reused', json, 'ok', now)], delta == null ? [] : [delta]);
      return reply;
    }
    await this.store.forget(ws, dest, sessionId, now);
    return null;
  }

  /** Waits for another request's send: true once delivered, false if it failed or went stale. */
  async waitFor(ws, dest, sessionId) {
    const local = this.inflight.get(sessionId);
    if (local) {
      let timer;
      const stale = new Promise((r) => (timer = setTimeout(() => r(false), IN_FLIGHT_STALE_MS)));
      try {
        return await Promise.race([local.promise, stale]);
      } finally {
        clearTimeout(timer);
      }
    }
    // Another process is sending (Redis): watch the guard.
    const deadline = Date.now() + IN_FLIGHT_STALE_MS;
    while (Date.now() < deadline) {
      const state = await this.store.entry(ws, dest, sessionId);
      if (state === 'delivered') return true;
      // A session is stored only after the gateway accepted its message: once it is there the
      // send succeeded, even if its sender died before confirming it (Redis lost mid-request).
      const stored = (await this.store.getSession(ws.id, sessionId, Date.now())) != null;
      if (stored || state === 'gone') return stored;
      await sleep(POLL_MS);
    }
    return false;
  }

  /** POST /v1/messaging/otp/verify and POST /otp/{id}/verify. `prefetched`: see checkPrefetched. */
  async check(ws, dialect, pathId, body, prefetched) {
    if (this.store.verifyRequest) return this.store.verifyRequest(this.engine, ws, dialect, pathId, body, Date.now());
    const input = prefetched?.input ?? native.parseVerify(dialect, pathId, body);
    if (!input.sessionId) return native.verifyReply(dialect, input.rawSessionId, NOT_FOUND_STEP);
    const now = Date.now();
    const step = await this.store.verify(this.engine, ws, input.sessionId, input.code, now, prefetched?.session);
    // The memory store records in the same critical section; Redis answers lines to record.
    if (step.audit) this.recordLater(ws.id, [step.audit], step.analytics ? [step.analytics] : []);
    const shownId = step.status === 'NOT_FOUND' ? input.rawSessionId : input.sessionId;
    return native.verifyReply(dialect, shownId, step);
  }

  /** GET /v1/messaging/otp/sessions/{id} and GET /otp/{id}/status. */
  async sessionStatus(ws, dialect, rawId) {
    const now = Date.now();
    const sessionId = native.normalizeSessionId(rawId);
    const json = sessionId == null ? null : await this.store.getSession(ws.id, sessionId, now);
    return native.statusReply(dialect, ws.id, json, now);
  }

  /** The status over HTTP with the key and the session read in one round trip (Redis). */
  async statusPrefetched(r, hash) {
    if (!hash) throw hostError('UNAUTHORIZED');
    const sessionId = native.normalizeSessionId(r.id);
    const found = await this.store.lookupKeyWithSession(hash, sessionId);
    const ws = this.workspaceOfKey(hash, found.workspace);
    const json = sessionId == null ? null : this.store.sessionValue(found.session);
    return native.statusReply(r.dialect, ws.id, json, Date.now());
  }

  async authenticateHash(hash) {
    if (!hash) throw hostError('UNAUTHORIZED');
    return this.workspaceOfKey(hash, await this.store.lookupKey(hash));
  }

  workspaceOfKey(hash, json) {
    if (json == null) throw hostError('UNAUTHORIZED');
    const ws = native.Workspace.fromJson(json);
    if (!ws.liveKey(hash)) throw hostError('UNAUTHORIZED');
    return ws;
  }

  /**
   * A verify over HTTP on a store that can read the key's workspace and the session in one round
   * trip (Redis): the body is read and parsed first, then one lookup answers both, so the answer
   * waits for two round trips (that read and the session's compare-and-set). Answers keep their
   * order: 401 before any body error (415, 413, 400).
   */
  async checkPrefetched(r, hash, req) {
    if (!hash) throw hostError('UNAUTHORIZED');
    let body = null;
    let input = null;
    let bodyError = null;
    try {
      body = await this.jsonBody(req);
      input = native.parseVerify(r.dialect, r.id ?? null, body);
    } catch (e) {
      bodyError = e;
    }
    const found = await this.store.lookupKeyWithSession(hash, input?.sessionId ?? null);
    const ws = this.workspaceOfKey(hash, found.workspace);
    if (bodyError) throw bodyError;
    return this.check(ws, r.dialect, r.id ?? null, body, { input, session: found.session });
  }

  async loadWorkspace(id) {
    const json = await this.store.getWorkspace(id);
    if (json == null) throw hostError('NOT_FOUND');
    return native.Workspace.fromJson(json);
  }

  async createWorkspaceReply(body) {
    const now = Date.now();
    const ws = native.Workspace.create(body, now);
    const key = ws.addKey(now);
    await this.store.putWorkspace(ws);
    await this.store.indexKey(key.keyHash, ws.id);
    return ws.createdReply(key);
  }

  async patchWorkspaceReply(id, body) {
    const ws = await this.loadWorkspace(id);
    const next = ws.patched(body);
    await this.store.putWorkspace(next);
    return next.updatedReply();
  }

  async createKeyReply(id) {
    const ws = await this.loadWorkspace(id);
    const key = ws.addKey(Date.now());
    await this.store.putWorkspace(ws);
    await this.store.indexKey(key.keyHash, ws.id);
    return native.keyCreatedReply(key);
  }

  async revokeKeyReply(id, keyId) {
    const ws = await this.loadWorkspace(id);
    const hash = ws.revoke(keyId, Date.now());
    await this.store.putWorkspace(ws);
    await this.store.unindexKey(hash);
    return native.noContentReply();
  }

  // ---- HTTP (one request → one core reply) ----------------------------------------------

  /**
   * Answers one HTTP request exactly as the Worker does.
   * @param {{method: string, path: string, query: string, headers: Record<string, string|undefined>,
   *          readBody: (maxBytes: number) => Promise<Buffer>}} req
   * @returns {Promise<{status: number, body: string, retryAfter?: number}>}
   */
  async handle(req) {
    try {
      const r = native.route(req.method, req.path);
      if (r.kind === 'health') return native.healthReply(this.engine.configured);
      if (r.kind === 'openapi') return native.openapiReply();
      this.engine.check();
      const h = req.headers;
      if (r.admin) {
        if (!this.adminToken) throw hostError('NOT_FOUND');
        if (!native.adminAuthorized(this.adminToken, h.authorization ?? null)) throw hostError('UNAUTHORIZED');
        switch (r.kind) {
          case 'createWorkspace':
            return await this.createWorkspaceReply(await this.jsonBody(req));
          case 'patchWorkspace':
            return await this.patchWorkspaceReply(r.id, await this.jsonBody(req));
          case 'createKey':
            return await this.createKeyReply(r.id);
          default:
            return await this.revokeKeyReply(r.id, r.keyId);
        }
      }
      const hash = native.presentedKeyHash(h.authorization ?? null, h['x-api-key'] ?? null);
      if (this.store.lookupKeyWithSession) {
        if (r.kind === 'verify') return await this.checkPrefetched(r, hash, req);
        if (r.kind === 'status') return await this.statusPrefetched(r, hash);
      }
      const ws = await this.authenticateHash(hash);
      switch (r.kind) {
        case 'request':
          return await this.issue(ws, r.dialect, await this.jsonBody(req));
        case 'verify':
          return await this.check(ws, r.dialect, r.id ?? null, await this.jsonBody(req));
        case 'status':
          return await this.sessionStatus(ws, r.dialect, r.id);
        case 'analytics':
          return await this.store.analyticsReply(ws, req.query || '', Date.now());
        default:
          return await this.store.auditReply(ws.id, req.query || '');
      }
    } catch (e) {
      return this.errorReply(e);
    }
  }

  /** 415 / 413 in SPEC's order, then the body (the core answers 400 for empty or malformed). */
  async jsonBody(req) {
    native.checkContent(req.headers['content-type'] ?? null, req.headers['content-length'] ?? null);
    return req.readBody(native.maxBodyBytes());
  }

  errorReply(e) {
    const err = normalize(e);
    if (err instanceof OtpError) return err.reply;
    // Never the error's content: it could hold request data.
    process.emitWarning(`otpkit: internal error (${err && err.name})`);
    return native.errorReply('INTERNAL_ERROR');
  }
}

module.exports = { OtpService };
