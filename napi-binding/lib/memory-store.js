'use strict';
// The in-memory store: the Rust MemoryStore (typed state behind one mutex) behind the store
// interface OtpService uses. One process only; state is gone when it exits.

const native = require('./native');
const { fromNative } = require('./errors');

const SWEEP_MS = 10_000;

class MemoryStore {
  constructor() {
    this.kind = 'memory';
    this.native = new native.MemoryStore();
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

  /** Admits a send; with `flood`, also counts it in the workspace's flood shield (a refusal throws). One native call. */
  admit(ws, plan, now, flood = false) {
    return this.native.admit(ws, plan, now, flood);
  }
  /**
   * The end of an admitted send, one native call: a delivered session is stored, the guard records
   * the outcome, and the send's audit events are written (so the service writes none: finishAudits).
   */
  finish(ws, plan, outcome, now) {
    return this.native.finish(ws, plan, outcome, now);
  }
  get finishAudits() {
    return true;
  }
  delivery(ws, dest, sessionId, outcome, now) {
    return this.native.delivery(ws, dest, sessionId, outcome, now);
  }
  entry(ws, dest, sessionId) {
    return this.native.entry(ws.id, dest, sessionId, Date.now());
  }
  forget(ws, dest, sessionId, now) {
    return this.native.forget(ws, dest, sessionId, now);
  }
  getSession(wsId, sessionId, now) {
    return this.native.getSession(wsId, sessionId, now);
  }
  cancelSession(wsId, sessionId) {
    return this.native.cancelSession(wsId, sessionId);
  }
  verify(engine, ws, sessionId, code, now) {
    return this.native.verify(engine, ws, sessionId, code, now);
  }
  /** A whole verify request (parse, verify, reply) in one native call; audit recorded inside. */
  verifyRequest(engine, ws, dialect, pathId, body, now) {
    return this.native.verifyRequest(engine, ws, dialect, pathId, body, now);
  }
  /** Audit lines and analytics deltas (JSON) of one workspace. */
  record(wsId, lines, deltas = []) {
    if (lines.length || deltas.length) this.native.record(wsId, lines, deltas);
  }
  /** Session events of a plan (`requested`, `delivered` ok, `delivery_failed` failed) and their analytics. */
  auditPlan(plan, events, now) {
    this.native.auditPlan(plan, events, now);
  }
  auditReply(wsId, query) {
    return this.native.auditReply(wsId, query);
  }
  analyticsReply(ws, query, now) {
    return this.native.analyticsReply(ws, query, now);
  }
  getWorkspace(id) {
    return this.native.kvGet(`ws:${id}`);
  }
  putWorkspace(ws) {
    this.native.kvSet(`ws:${ws.id}`, ws.toJson());
  }
  indexKey(hash, wsId) {
    this.native.kvSet(`key:${hash}`, wsId);
  }
  unindexKey(hash) {
    this.native.kvDelete(`key:${hash}`);
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
