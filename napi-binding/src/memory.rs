//! The in-memory store: typed state behind one mutex, so every operation is atomic (the same
//! read–decide–write a Durable Object gets from its input gate), and nothing is serialised on
//! the hot path. State is lost when the process ends; use the Redis store for several processes.

use crate::{
    analytics_query, audit_page, audit_query, ms, not_found_step, ops, parse_verify, plan_delta,
    throw, verify_reply, verify_step, Engine, GuardStep, Plan, Reply, VerifyStep, Workspace,
};
use napi::bindgen_prelude::Buffer;
use napi::Result;
use napi_derive::napi;
use otpkit_core::analytics::{self, Bucket, Counts, Delta};
use otpkit_core::audit::AuditEvent;
use otpkit_core::guard::{DeliveryOutcome, DestinationGuard, FloodShield};
use otpkit_core::{Error, Session, UnixMillis, VerifyOutcome};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Audit events kept per workspace (oldest dropped first).
pub const AUDIT_KEEP: usize = 10_000;

#[derive(Default)]
struct Inner {
    /// `ws:sid` → session (purged `retentionSeconds` after expiry).
    sessions: HashMap<String, Session>,
    /// `ws:dest` → guard and when it may be dropped.
    guards: HashMap<String, (DestinationGuard, UnixMillis)>,
    /// Workspace id → flood shield.
    floods: HashMap<String, FloodShield>,
    /// Workspaces and the key index (`ws:<id>`, `key:<hash>`).
    kv: HashMap<String, String>,
    /// Workspace id → events, newest at the front.
    audit: HashMap<String, VecDeque<(u64, AuditEvent)>>,
    seq: u64,
    /// Workspace id → analytics counters per bucket (kept 90 days).
    counters: HashMap<String, BTreeMap<Bucket, Counts>>,
    /// Workspace id → sessions sent and not yet verified or locked: id → (bucket, expiry).
    /// Dropped once expired (then they count as expired); see `otpkit_core::analytics`.
    open: HashMap<String, HashMap<String, (Bucket, UnixMillis)>>,
    /// When something may be due for the sweep: one entry per write of a session's purge time,
    /// a guard's keep time or an open entry's expiry (older entries of the same item stay until
    /// their time and are then skipped). The sweep pops what is due instead of walking every
    /// session, guard and open entry (32 ms at 10⁶ sessions, every 10 s, under the lock).
    due: BinaryHeap<Reverse<(UnixMillis, Due)>>,
}

/// What a `due` entry points at.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// `ws:sid` in `sessions`.
    Session(String),
    /// `ws:dest` in `guards`.
    Guard(String),
    /// (workspace id, session id) in `open`.
    Open(String, String),
}

/// A thread-safe in-memory store of sessions, destination guards, workspaces and audit events.
#[napi]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

/// Sizes, for benchmarks and health checks.
#[napi(object)]
#[derive(Debug)]
pub struct MemoryStats {
    /// Stored sessions.
    pub sessions: u32,
    /// Stored destination guards.
    pub guards: u32,
    /// Stored audit events.
    pub audit_events: u32,
    /// Analytics buckets (day, channel, purpose, app) with counters.
    pub analytics_buckets: u32,
    /// Sessions open for analytics (sent, not yet verified, locked or expired).
    pub analytics_open: u32,
}

fn key(a: &str, b: &str) -> String {
    let mut k = String::with_capacity(a.len() + b.len() + 1);
    k.push_str(a);
    k.push(':');
    k.push_str(b);
    k
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl MemoryStore {
    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| throw(&Error::StoreUnavailable))
    }
}

impl Inner {
    /// The guard for `k`, created empty if absent.
    /// Every caller settles the guard next, which sets its keep time (and schedules it): a new
    /// guard starts at time 0 so that first settle always counts as a change.
    fn guard(&mut self, k: &str) -> &mut (DestinationGuard, UnixMillis) {
        self.guards
            .entry(k.to_string())
            .or_insert_with(|| (DestinationGuard::new(), UnixMillis(0)))
    }

    /// Stores a session and schedules its purge (once per purge time: a verify keeps it).
    fn put_session(&mut self, k: String, s: Session) {
        let at = s.purge_at();
        if self.sessions.get(&k).map(Session::purge_at) != Some(at) {
            self.due.push(Reverse((at, Due::Session(k.clone()))));
        }
        self.sessions.insert(k, s);
    }

    /// A plan's session events (`delivery_failed`: outcome failed, others ok) and their analytics.
    fn audit_plan(&mut self, session: &Session, events: &[&str], now: UnixMillis) {
        for &kind in events {
            let outcome = if kind == "delivery_failed" {
                "failed"
            } else {
                "ok"
            };
            let e = AuditEvent::for_session(kind, session, outcome, None, now);
            self.push_audit(&session.workspace_id, e);
            if let Some(d) = plan_delta(session, kind) {
                self.count(&session.workspace_id, &d);
            }
        }
    }

    fn settle_guard(&mut self, k: &str, ws: &Workspace, now: UnixMillis) {
        let keep = self
            .guards
            .get(k)
            .and_then(|(g, _)| ops::guard_keep_ms(g, &ws.rec.policy, now));
        match keep {
            Some(ms) => {
                if let Some(entry) = self.guards.get_mut(k) {
                    let until = now.plus_millis(ms);
                    // Scheduled when new or earlier; a later time is rescheduled by the sweep
                    // when the earlier entry comes up (one heap entry per guard, mostly).
                    if entry.1 == UnixMillis(0) || until < entry.1 {
                        self.due.push(Reverse((until, Due::Guard(k.to_string()))));
                    }
                    entry.1 = until;
                }
            }
            None => {
                self.guards.remove(k);
            }
        }
    }

    fn count(&mut self, ws_id: &str, d: &Delta) {
        let Some(b) = Bucket::parse(d.day, &d.bucket) else {
            return;
        };
        if d.counts != Counts::default() {
            let c = self.counters.entry(ws_id.to_string()).or_default();
            c.entry(b.clone()).or_default().add(&d.counts);
        }
        let open = self.open.entry(ws_id.to_string()).or_default();
        if let Some(until) = d.open_until {
            let before = open.insert(d.session_id.clone(), (b, until));
            if before.is_none_or(|(_, was)| until < was) {
                self.due.push(Reverse((
                    until,
                    Due::Open(ws_id.to_string(), d.session_id.clone()),
                )));
            }
        }
        if d.close {
            open.remove(&d.session_id);
        }
    }

    fn push_audit(&mut self, ws_id: &str, e: AuditEvent) {
        self.seq = self.seq.saturating_add(1);
        let seq = self.seq;
        let list = self.audit.entry(ws_id.to_string()).or_default();
        list.push_front((seq, e));
        list.truncate(AUDIT_KEEP);
    }
}

#[napi]
impl MemoryStore {
    /// An empty store.
    #[napi(constructor)]
    pub fn new() -> Self {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Admits `plan` on its destination's guard (send / reuse / wait / refused). With `flood`, an
    /// admitted send is also counted in the workspace's flood shield in the same critical section;
    /// if the shield is full, the send goes back to the guard as a definite failure (nothing
    /// charged) and this throws 429 `RATE_LIMITED`.
    #[napi]
    pub fn admit(
        &self,
        ws: &Workspace,
        plan: &Plan,
        now: f64,
        flood: Option<bool>,
    ) -> Result<GuardStep> {
        let now = ms(now);
        let s = &plan.session;
        let k = key(&ws.rec.id, &s.dest);
        let mut inner = self.lock()?;
        let (kind, sid, code, retry) = ops::admit(&mut inner.guard(&k).0, s, &ws.rec.policy, now);
        if kind == "send" && flood == Some(true) {
            let limit = ws.rec.policy.sends_per_workspace_per_minute;
            let shield = inner.floods.entry(ws.rec.id.clone()).or_default();
            if let Err(e) = ops::flood(shield, limit, now) {
                inner.guard(&k).0.delivery(&s.id, DeliveryOutcome::Failed);
                inner.settle_guard(&k, ws, now);
                return Err(throw(&e));
            }
        }
        inner.settle_guard(&k, ws, now);
        Ok(GuardStep {
            kind: kind.into(),
            session_id: sid,
            error_code: code.map(str::to_string),
            retry_after: retry,
            state: None,
            keep_ms: 0.0,
            changed: true,
        })
    }

    /// The end of an admitted send in one critical section: a delivered session is stored, the
    /// guard records the outcome, and the plan's events (`requested`, then `delivered` or
    /// `delivery_failed`) go to the audit log with their analytics. Answers a session to cancel
    /// (an older delivered code when reuse is off), if any.
    #[napi]
    pub fn finish(
        &self,
        ws: &Workspace,
        plan: &Plan,
        outcome: String,
        now: f64,
    ) -> Result<Option<String>> {
        let now = ms(now);
        let outcome = ops::delivery_outcome(&outcome).map_err(|e| throw(&e))?;
        let s = &plan.session;
        let k = key(&ws.rec.id, &s.dest);
        let mut inner = self.lock()?;
        let delivered = outcome == DeliveryOutcome::Delivered;
        if delivered {
            inner.put_session(key(&s.workspace_id, &s.id), s.clone());
        }
        let cancel = inner.guard(&k).0.delivery(&s.id, outcome);
        inner.settle_guard(&k, ws, now);
        let last = if delivered {
            "delivered"
        } else {
            "delivery_failed"
        };
        inner.audit_plan(s, &["requested", last], now);
        Ok(cancel)
    }

    /// Records a delivery outcome; answers a session to cancel, if any.
    #[napi]
    pub fn delivery(
        &self,
        ws: &Workspace,
        dest: String,
        session_id: String,
        outcome: String,
        now: f64,
    ) -> Result<Option<String>> {
        let now = ms(now);
        let outcome = ops::delivery_outcome(&outcome).map_err(|e| throw(&e))?;
        let k = key(&ws.rec.id, &dest);
        let mut inner = self.lock()?;
        let cancel = inner.guard(&k).0.delivery(&session_id, outcome);
        inner.settle_guard(&k, ws, now);
        Ok(cancel)
    }

    /// Where a send stands: `pending`, `delivered`, `gone` (also once stale at `now`, when given).
    #[napi]
    pub fn entry(
        &self,
        ws_id: String,
        dest: String,
        session_id: String,
        now: Option<f64>,
    ) -> Result<String> {
        let inner = self.lock()?;
        Ok(match inner.guards.get(&key(&ws_id, &dest)) {
            Some((g, _)) => ops::entry_state(g, &session_id, now.map(ms)),
            None => "gone",
        }
        .to_string())
    }

    /// Stops treating a session as active.
    #[napi]
    pub fn forget(&self, ws: &Workspace, dest: String, session_id: String, now: f64) -> Result<()> {
        let now = ms(now);
        let k = key(&ws.rec.id, &dest);
        let mut inner = self.lock()?;
        if let Some((g, _)) = inner.guards.get_mut(&k) {
            g.forget(&session_id);
        }
        inner.settle_guard(&k, ws, now);
        Ok(())
    }

    /// A session's JSON, or `null` (also once purged).
    #[napi]
    pub fn get_session(
        &self,
        ws_id: String,
        session_id: String,
        now: f64,
    ) -> Result<Option<String>> {
        let inner = self.lock()?;
        Ok(inner
            .sessions
            .get(&key(&ws_id, &session_id))
            .filter(|s| ms(now) < s.purge_at())
            .map(Session::to_json))
    }

    /// Cancels a session (reuse off, replaced by a newer delivered code).
    #[napi]
    pub fn cancel_session(&self, ws_id: String, session_id: String) -> Result<()> {
        let mut inner = self.lock()?;
        if let Some(s) = inner.sessions.remove(&key(&ws_id, &session_id)) {
            let k = key(&s.workspace_id, &s.id);
            inner.put_session(k, s.cancel());
        }
        Ok(())
    }

    /// A whole verify request in one call (one Node-API crossing instead of three): parses the
    /// body of `dialect` (`path_id` for the zend dialect), verifies as [`Self::verify`] and answers
    /// the dialect's reply. A malformed session id is answered NOT_FOUND without a lookup.
    #[napi]
    pub fn verify_request(
        &self,
        engine: &Engine,
        ws: &Workspace,
        dialect: String,
        path_id: Option<String>,
        body: Buffer,
        now: f64,
    ) -> Result<Reply> {
        let input = parse_verify(dialect.clone(), path_id, body)?;
        let Some(session_id) = input.session_id else {
            return verify_reply(dialect, input.raw_session_id, not_found_step());
        };
        let step = self.verify(engine, ws, session_id.clone(), input.code, now)?;
        let shown = if step.status == "NOT_FOUND" {
            input.raw_session_id
        } else {
            session_id
        };
        verify_reply(dialect, shown, step)
    }

    /// Verifies a code and, in the same critical section, tells the destination guard (failure
    /// streak, end of reuse), as the Worker's Durable Objects do.
    #[napi]
    pub fn verify(
        &self,
        engine: &Engine,
        ws: &Workspace,
        session_id: String,
        code: String,
        now: f64,
    ) -> Result<VerifyStep> {
        let pepper = engine.pepper()?;
        let now = ms(now);
        let k = key(&ws.rec.id, &session_id);
        let mut inner = self.lock()?;
        let session = inner
            .sessions
            .get(&k)
            .filter(|s| now < s.purge_at())
            .cloned();
        let (step, after, event, delta) =
            verify_step(session, &ws.rec.id, &code, now, pepper, false);
        if let Some(e) = event {
            inner.push_audit(&ws.rec.id, e);
        }
        if let Some(d) = delta {
            inner.count(&ws.rec.id, &d);
        }
        if let Some(after) = after {
            let outcome = VerifyOutcome::from_status(
                &step.status,
                u8::try_from(step.attempts_left).unwrap_or(0),
            );
            let gk = key(&ws.rec.id, &after.dest);
            if let Some(outcome) = outcome {
                let g = &mut inner.guard(&gk).0;
                ops::record_verify(g, &after.id, outcome, &ws.rec.policy, now);
            }
            inner.settle_guard(&gk, ws, now);
            inner.put_session(k, after);
        }
        Ok(step)
    }

    /// Appends the plan's session events (`requested`, `delivered`: outcome ok;
    /// `delivery_failed`: failed) and their analytics, without a JSON round trip.
    #[napi]
    pub fn audit_plan(&self, plan: &Plan, events: Vec<String>, now: f64) -> Result<()> {
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        self.lock()?.audit_plan(&plan.session, &events, ms(now));
        Ok(())
    }

    /// Appends audit lines (event JSON) and applies analytics deltas (JSON) for a workspace.
    #[napi]
    pub fn record(&self, ws_id: String, lines: Vec<String>, deltas: Vec<String>) -> Result<()> {
        let mut inner = self.lock()?;
        for line in lines {
            if let Ok(e) = serde_json::from_str::<AuditEvent>(&line) {
                inner.push_audit(&ws_id, e);
            }
        }
        for d in deltas {
            if let Ok(d) = serde_json::from_str::<Delta>(&d) {
                inner.count(&ws_id, &d);
            }
        }
        Ok(())
    }

    /// `GET /otp/analytics` for a workspace (`query`: the URL's query string).
    #[napi]
    pub fn analytics_reply(&self, ws: &Workspace, query: String, now: f64) -> Result<Reply> {
        let q = analytics_query(&query)?;
        let now = ms(now);
        let inner = self.lock()?;
        let counters = inner
            .counters
            .get(&ws.rec.id)
            .into_iter()
            .flatten()
            .map(|(b, c)| (b.clone(), *c));
        let live = inner
            .open
            .get(&ws.rec.id)
            .into_iter()
            .flat_map(HashMap::values)
            .filter(|(_, until)| now < *until)
            .map(|(b, _)| b.clone());
        let price = &ws.rec.policy.price_per_segment;
        Ok(analytics::report(&q, now, counters, live, price).into())
    }

    /// `GET /v1/messaging/otp/audit` for a workspace (`query`: the URL's query string).
    #[napi]
    pub fn audit_reply(&self, ws_id: String, query: String) -> Result<Reply> {
        let q = audit_query(&query)?;
        let inner = self.lock()?;
        let events = inner
            .audit
            .get(&ws_id)
            .into_iter()
            .flatten()
            .map(|(seq, e)| (*seq, e.clone()));
        Ok(audit_page(events, &q))
    }

    /// A plain value (workspace records, the key index).
    #[napi]
    pub fn kv_get(&self, k: String) -> Result<Option<String>> {
        Ok(self.lock()?.kv.get(&k).cloned())
    }

    /// Sets a plain value.
    #[napi]
    pub fn kv_set(&self, k: String, value: String) -> Result<()> {
        self.lock()?.kv.insert(k, value);
        Ok(())
    }

    /// Deletes a plain value.
    #[napi]
    pub fn kv_delete(&self, k: String) -> Result<()> {
        self.lock()?.kv.remove(&k);
        Ok(())
    }

    /// Drops what has expired: sessions past retention (each leaves a `purged` audit event)
    /// and idle guards. Answers how many sessions were purged.
    #[napi]
    pub fn sweep(&self, now: f64) -> Result<u32> {
        let now = ms(now);
        let mut inner = self.lock()?;
        let mut purged = 0usize;
        while inner.due.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            let Some(Reverse((_, item))) = inner.due.pop() else {
                break;
            };
            match item {
                Due::Session(k) => {
                    if inner.sessions.get(&k).is_some_and(|s| now >= s.purge_at()) {
                        if let Some(s) = inner.sessions.remove(&k) {
                            let e = AuditEvent::for_session("purged", &s, "ok", None, now);
                            inner.push_audit(&s.workspace_id, e);
                            purged += 1;
                        }
                    }
                }
                Due::Guard(k) => match inner.guards.get(&k).map(|(_, until)| *until) {
                    Some(until) if now >= until => {
                        inner.guards.remove(&k);
                    }
                    Some(until) => inner.due.push(Reverse((until, Due::Guard(k)))),
                    None => {}
                },
                // Expired open sessions already count as expired without their entry.
                Due::Open(ws, sid) => {
                    let mut later = None;
                    if let Some(open) = inner.open.get_mut(&ws) {
                        match open.get(&sid).map(|(_, until)| *until) {
                            Some(until) if now >= until => {
                                open.remove(&sid);
                            }
                            Some(until) => later = Some(until),
                            None => {}
                        }
                        if open.is_empty() {
                            inner.open.remove(&ws);
                        }
                    }
                    if let Some(until) = later {
                        inner.due.push(Reverse((until, Due::Open(ws, sid))));
                    }
                }
            }
        }
        let oldest = analytics::oldest_kept_day(now);
        for counters in inner.counters.values_mut() {
            counters.retain(|b, _| b.day >= oldest);
        }
        inner.counters.retain(|_, c| !c.is_empty());
        inner
            .floods
            .retain(|_, f| now < f.window_start.plus_secs(60));
        Ok(count(purged))
    }

    /// Sizes.
    #[napi]
    pub fn stats(&self) -> Result<MemoryStats> {
        let inner = self.lock()?;
        Ok(MemoryStats {
            sessions: count(inner.sessions.len()),
            guards: count(inner.guards.len()),
            audit_events: count(inner.audit.values().map(VecDeque::len).sum()),
            analytics_buckets: count(inner.counters.values().map(BTreeMap::len).sum()),
            analytics_open: count(inner.open.values().map(HashMap::len).sum()),
        })
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}
