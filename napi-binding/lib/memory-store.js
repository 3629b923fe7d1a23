'use strict';
// The in-memory store: the Rust MemoryStore (typed state behind one mutex) behind the store
// interface OtpService uses. One process only; state is gone when it exits.

const native = require('./native');
const { fromNative } = require('./errors');
const { reportRun } = require('./log');

const SWEEP_MS = 10_000;

class MemoryStore {
  /**
   * @param {{auditKeep?: number}} [opts] `auditKeep`: audit events kept per workspace in each of
   *   its two streams (lifecycle; events an end user can repeat without a send), default 10,000.
   */
  constructor({ auditKeep } = {}) {
    if (auditKeep !== undefined && (!Number.isInteger(auditKeep) || auditKeep < 1 || auditKeep > 0xffffffff)) {
      throw new TypeError('auditKeep must be a positive integer');
    }
    this.kind = 'memory';
    this.native = new native.MemoryStore(auditKeep);
    // Purges sessions past retention (with their `purged` audit event) and idle guards.
    this.timer = setInterval(() => {
      try {
        this.native.sweep(Date.now());
      } catch {
        // a poisoned lock would already answer STORE_UNAVAILABLE everywhere
      }
    }, SWEEP_MS);
    this.timer.unref();
  }

  /**
   * The flow's next step after performing, in one native call under the store's lock, every
   * store effect it names (admission with the flood shield, store with confirm, verify, …);
   * what comes back is for the driver: deliver, awaitSend, the answer, or done. With a built-in
   * gateway (`ctx.gateway`) the send, a wait for another send and a pause happen in Rust too:
   * then a promise of the answer (or done), once the flow is done.
   */
  next(flow, engine, ws, ctx = {}) {
    const ran = flow.runMemory(this.native, engine, ws, Date.now(), ctx.gateway ?? null);
    if (typeof ran === 'string') return ran;
    return ran.then((end) => {
      reportRun(this.kind, end, ctx); // in the request's context: its sends are counted and logged
      return end.text;
    });
  }
  /** Feeds the outcome of the driver's IO and answers the next step, as next() does: one call. */
  resume(flow, outcome, engine, ws) {
    return flow.resumeMemory(outcome, this.native, engine, ws, Date.now());
  }
  /** Where another request's send stands: `pending`, `delivered` or `gone`. */
  entry(ws, dest, sessionId) {
    return this.native.entry(ws.id, dest, sessionId, Date.now());
  }
  getSession(wsId, sessionId, now) {
    return this.native.getSession(wsId, sessionId, now);
  }
  auditReply(wsId, query) {
    return this.native.auditReply(wsId, query);
  }
  analyticsReply(ws, query, now) {
    return this.native.analyticsReply(ws, query, now);
  }
  /** `GET /v1/admin/analytics`: every workspace's counters (`library`: the library's workspace). */
  adminAnalyticsReply(query, now, library) {
    return this.native.adminAnalyticsReply(query, now, library);
  }
  getWorkspace(id) {
    return this.native.kvGet(`ws:${id}`);
  }
  /** Key `keyId` of workspace `wsId` authenticated a request at `at` (ms): kept beside the record. */
  touchKey(wsId, keyId, at) {
    this.native.touchKey(wsId, keyId, at);
  }
  /** The workspace JSON an API key hash points at, or null. */
  lookupKey(hash) {
    const id = this.native.kvGet(`key:${hash}`);
    return id == null ? null : this.native.kvGet(`ws:${id}`);
  }
  /** Purges sessions past retention (each with a `purged` audit event); runs every 10 s. */
  sweep(now = Date.now()) {
    return this.native.sweep(now);
  }
  stats() {
    try {
      return this.native.stats();
    } catch (e) {
      throw fromNative(e);
    }
  }
  async close() {
    clearInterval(this.timer);
  }
}

module.exports = { MemoryStore };
