//! The in-memory store: typed state behind one mutex, so every operation is atomic (the same
//! read–decide–write a Durable Object gets from its input gate), and nothing is serialised on
//! the hot path. State is lost when the process ends; use the Redis store for several processes.

use crate::engine::Engine;
use crate::errors::throw;
use crate::http::Reply;
use crate::inflight::{now_ms, Inflight};
use crate::reports::{analytics_query, audit_page, audit_query, newest_first};
use crate::workspace::Workspace;
use crate::{ms, ops};
use napi::Result;
use napi_derive::napi;
use otpkit_core::analytics::{self, Bucket, Counter, Counts, Delta, WorkspaceCounters, Write};
use otpkit_core::audit::{AuditEvent, KEEP_PER_STREAM};
use otpkit_core::flow::{self, Admitted, Io, Outcome};
use otpkit_core::fraud::{FraudCharge, PrefixCount};
use otpkit_core::guard::{Admission, DeliveryOutcome, DestinationGuard, FloodShield};
use otpkit_core::idempotency::{self, Record};
use otpkit_core::spend::{charge_workspace, SpendCounter};
use otpkit_core::workspace::WorkspaceRecord;
use otpkit_core::{Error, Session, UnixMillis, VerifyOutcome};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::{Arc, Mutex, MutexGuard};

/// Audit events kept per workspace in each of its two streams (oldest dropped first), unless
/// the store is made with another `auditKeep`.
pub const AUDIT_KEEP: usize = KEEP_PER_STREAM as usize;

/// A workspace's audit events, newest at the front of each stream, with sequence numbers from
/// the store's one counter (so a query merges them into one newest-first order). Events an end
/// user can repeat without a send (`AuditEvent::is_repeatable`: `reused`, refusals,
/// `verify_rejected`) have their own stream and cap, so they never push lifecycle events out.
#[derive(Default)]
struct AuditLog {
    lifecycle: VecDeque<(u64, AuditEvent)>,
    repeatable: VecDeque<(u64, AuditEvent)>,
}

#[derive(Default)]
struct Inner {
    /// `ws:sid` → session (purged `retentionSeconds` after expiry).
    sessions: HashMap<String, Session>,
    /// The delivery receipt index (`otpkit_core::delivery::index_entries`: `s:<session id>`,
    /// `m:<message id>`) → `workspaceId:sessionId` and until when it is kept (its session's purge
    /// time; absent from then on, dropped by the sweep).
    receipts: HashMap<String, (String, UnixMillis)>,
    /// `ws:dest` → guard and when it may be dropped.
    guards: HashMap<String, (DestinationGuard, UnixMillis)>,
    /// Workspace id → flood shield.
    floods: HashMap<String, FloodShield>,
    /// Workspace id → the day's spend (policy `dailySpendLimit`), charged with the flood shield.
    spends: HashMap<String, SpendCounter>,
    /// Workspace id → Fraud Guard's counts (policy `fraudGuard`) by prefix, each with when it
    /// is dropped ([`ops::fraud_keep_until`]; absent from then on), charged with the flood shield.
    fraud: HashMap<String, HashMap<String, (PrefixCount, UnixMillis)>>,
    /// Workspaces and the key index (`ws:<id>`, `key:<hash>`).
    kv: HashMap<String, String>,
    /// Workspace id → key id → when the key last authenticated a request (`lastUsedAt`: kept
    /// beside the record, merged into the admin's reads, never part of its revision).
    used: HashMap<String, HashMap<String, UnixMillis>>,
    /// The ids of the workspaces in `kv`, in order: the admin listing's pages.
    workspace_ids: BTreeSet<String>,
    /// `Idempotency-Key` records by the key's hash (per workspace; never the key), dropped by
    /// the sweep once expired.
    idem: HashMap<String, Record>,
    /// Workspace id → its audit events.
    audit: HashMap<String, AuditLog>,
    seq: u64,
    /// Events kept per workspace in each audit stream.
    audit_keep: usize,
    /// Workspace id → analytics counters per bucket (kept 90 days).
    counters: HashMap<String, BTreeMap<Bucket, Counts>>,
    /// Workspace id → (bucket, provider error code) → messages refused with it (kept as long).
    errors: HashMap<String, BTreeMap<(Bucket, String), u64>>,
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
    /// A key hash in `idem`.
    Idem(String),
    /// A key in `receipts`.
    Receipt(String),
}

/// A thread-safe in-memory store of sessions, destination guards, workspaces and audit events.
#[napi]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// The sends of this process in flight (a flow run with a built-in gateway).
    inflight: Arc<Inflight>,
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
    /// Analytics buckets (day, country, channel, purpose, app) with counters.
    pub analytics_buckets: u32,
    /// Sessions open for analytics (sent, not yet verified, locked or expired).
    pub analytics_open: u32,
    /// `Idempotency-Key` records (by key hash).
    pub idempotency_records: u32,
    /// Fraud Guard prefix counts (per workspace and prefix).
    pub fraud_prefixes: u32,
    /// Delivery receipt index entries (by session id and by provider message id).
    pub receipt_index: u32,
}

/// A workspace's provider error counts, as the analytics reports take them.
fn errors_of<'a>(
    errors: &'a HashMap<String, BTreeMap<(Bucket, String), u64>>,
    ws_id: &str,
) -> impl Iterator<Item = Counter> + 'a {
    errors
        .get(ws_id)
        .into_iter()
        .flatten()
        .map(|((bucket, code), count)| Counter::Error {
            bucket: bucket.clone(),
            code: code.clone(),
            count: *count,
        })
}

fn key(a: &str, b: &str) -> String {
    let mut k = String::with_capacity(a.len() + b.len() + 1);
    k.push_str(a);
    k.push(':');
    k.push_str(b);
    k
}

/// An audit entry as a query reads it (the event not cloned).
fn by_ref((seq, e): &(u64, AuditEvent)) -> (u64, &AuditEvent) {
    (*seq, e)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl MemoryStore {
    /// A handle on the same store, for a flow run on the runtime.
    pub(crate) fn share(&self) -> MemoryStore {
        MemoryStore {
            inner: Arc::clone(&self.inner),
            inflight: Arc::clone(&self.inflight),
        }
    }

    /// The sends of this process in flight.
    pub(crate) fn inflight(&self) -> &Inflight {
        &self.inflight
    }

    /// Waits for another request's send of `session_id` to `dest` in `ws_id` (see
    /// [`Inflight::await_send`]): one process holds a memory store, so it is this process's
    /// send, or one that already ended (its guard entry and session tell how).
    pub(crate) async fn await_send(&self, ws_id: &str, dest: &str, session_id: &str) -> bool {
        let probe = || async {
            let now = UnixMillis(now_ms());
            let inner = self.inner.lock().ok()?;
            let state = match inner.guards.get(&key(ws_id, dest)) {
                Some((g, _)) => ops::entry_state(g, session_id, Some(now)),
                None => "gone",
            };
            let stored = inner.live_session(&key(ws_id, session_id), now).is_some();
            Some((state.to_string(), stored))
        };
        self.inflight.await_send(session_id, probe).await
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| throw(&Error::StoreUnavailable))
    }

    /// One store effect (a failed store answers `Outcome::Failed`).
    pub(crate) fn perform_one(
        &self,
        engine: &Engine,
        ws: &Workspace,
        io: Io,
        now: UnixMillis,
    ) -> Outcome {
        self.perform_io(engine, ws, io, now)
            .unwrap_or_else(|e| Outcome::failed(&e))
    }

    fn perform_io(
        &self,
        engine: &Engine,
        ws: &Workspace,
        io: Io,
        now: UnixMillis,
    ) -> std::result::Result<Outcome, Error> {
        let mut inner = self.inner.lock().map_err(|_| Error::StoreUnavailable)?;
        let policy = &ws.rec.policy;
        let ws_id = &ws.rec.id;
        Ok(match io {
            Io::ReadSession { session_id } => Outcome::Session {
                session: inner.live_session(&key(ws_id, &session_id), now),
            },
            Io::Admit {
                dest,
                purpose,
                session_id,
                expires_at,
                test,
                flood_limit,
                spend,
                fraud,
                resend,
            } => {
                let k = key(ws_id, &dest);
                let g = &mut inner.guard(&k).0;
                let decided =
                    g.admit_or_charge(purpose, &session_id, expires_at, test, resend, policy, now);
                let admission = match decided {
                    Ok(Admission::Send) => Admitted::Send,
                    Ok(Admission::Reuse { session_id }) => Admitted::Reuse { session_id },
                    Ok(Admission::Wait { session_id }) => Admitted::Wait { session_id },
                    Err(e) => Admitted::Refused {
                        code: e.code().into(),
                        retry_after_secs: e.retry_after_secs().unwrap_or(1),
                    },
                };
                let charged = flood_limit.is_some() || spend.is_some() || fraud.is_some();
                let admission = match admission {
                    Admitted::Send if charged => {
                        // Fraud Guard, the day's spend and the flood shield, all or none, under
                        // the lock (a Fraud Guard refusal is stored: it counts the refused send).
                        let mut shield = inner.floods.get(ws_id).copied().unwrap_or_default();
                        let mut counter = inner.spends.get(ws_id).copied().unwrap_or_default();
                        let mut count = fraud
                            .as_ref()
                            .map(|c| inner.prefix_count(ws_id, &c.prefix, now))
                            .unwrap_or_default();
                        let step = charge_workspace(
                            &mut shield,
                            flood_limit,
                            &mut counter,
                            spend.as_ref(),
                            fraud.as_ref().map(|c| (&mut count, c)),
                            now,
                        );
                        match step {
                            Ok(()) => {
                                if flood_limit.is_some() {
                                    inner.floods.insert(ws_id.clone(), shield);
                                }
                                if spend.is_some() {
                                    inner.spends.insert(ws_id.clone(), counter);
                                }
                                if let Some(c) = &fraud {
                                    inner.put_prefix_count(ws_id, c, count);
                                }
                                Admitted::Send
                            }
                            Err(r) => {
                                if let (Error::FraudSuspected, Some(c)) = (&r.error, &fraud) {
                                    inner.put_prefix_count(ws_id, c, count);
                                }
                                // Handed back under the same lock: nothing stays charged.
                                inner
                                    .guard(&k)
                                    .0
                                    .delivery(&session_id, DeliveryOutcome::Failed);
                                Admitted::workspace_refused(&r, false)
                            }
                        }
                    }
                    a => a,
                };
                inner.settle_guard(&k, ws, now);
                Outcome::Admitted { admission }
            }
            Io::ReadActive { dest, purpose } => Outcome::Active {
                session_id: inner
                    .guards
                    .get(&key(ws_id, &dest))
                    .and_then(|(g, _)| g.active_session(purpose, now))
                    .map(str::to_string),
            },
            Io::Forget { dest, session_id } => {
                let k = key(ws_id, &dest);
                if let Some((g, _)) = inner.guards.get_mut(&k) {
                    g.forget(&session_id);
                }
                inner.settle_guard(&k, ws, now);
                Outcome::Done
            }
            Io::StoreSession { session } => {
                let k = key(ws_id, &session.dest);
                let id = session.id.clone();
                inner.index_receipts(&session);
                inner.put_session(key(&session.workspace_id, &session.id), *session);
                let cancel = inner.guard(&k).0.delivery(&id, DeliveryOutcome::Delivered);
                inner.settle_guard(&k, ws, now);
                Outcome::StoredAndConfirmed { cancel }
            }
            Io::ReportDelivery {
                dest,
                session_id,
                outcome,
            } => {
                let k = key(ws_id, &dest);
                let cancel = inner.guard(&k).0.delivery(&session_id, outcome);
                inner.settle_guard(&k, ws, now);
                Outcome::Confirmed { cancel }
            }
            Io::Resend { session_id, step } => {
                let k = key(ws_id, &session_id);
                let stored = inner.live_session(&k, now);
                let done = flow::resend_stored(stored, ws_id, &step, now);
                if let Some(after) = done.write {
                    // A new message: receipts find it by its id until the session is purged.
                    if matches!(step, flow::ResendStep::Apply { .. }) {
                        inner.index_receipts(&after);
                    }
                    inner.put_session(k, after);
                }
                done.outcome
            }
            Io::RefundSpend { day, micros } => {
                if let Some(counter) = inner.spends.get_mut(ws_id) {
                    counter.refund(day, micros);
                }
                Outcome::Done
            }
            Io::FraudVerified { prefix, window_ms } => {
                let mut count = inner.prefix_count(ws_id, &prefix, now);
                count.verified(window_ms, now);
                let keep = ops::fraud_keep_until(&count, window_ms);
                let counts = inner.fraud.entry(ws_id.clone()).or_default();
                counts.insert(prefix, (count, keep));
                Outcome::Done
            }
            Io::ReadFraud { workspace_id } => Outcome::Prefixes {
                prefixes: inner
                    .fraud
                    .get(&workspace_id)
                    .into_iter()
                    .flatten()
                    .filter(|(_, (_, keep))| now < *keep)
                    .map(|(p, (c, _))| (p.clone(), *c))
                    .collect(),
            },
            Io::UnblockPrefix {
                workspace_id,
                prefix,
                now: at,
            } => {
                let mut count = inner.prefix_count(&workspace_id, &prefix, at);
                let was_blocked = count.unblock(at);
                // Cleared: a default count is an idle one, so it is dropped.
                if let Some(counts) = inner.fraud.get_mut(&workspace_id).filter(|_| was_blocked) {
                    counts.remove(&prefix);
                    if counts.is_empty() {
                        inner.fraud.remove(&workspace_id);
                    }
                }
                Outcome::Unblocked { was_blocked }
            }
            Io::CancelSession { session_id } => {
                if let Some(s) = inner.sessions.remove(&key(ws_id, &session_id)) {
                    let k = key(&s.workspace_id, &s.id);
                    inner.put_session(k, s.cancel());
                }
                Outcome::Done
            }
            Io::Verify {
                session_id,
                code,
                transaction,
            } => {
                let pepper = engine.pepper.as_ref().map_err(Clone::clone)?;
                let k = key(ws_id, &session_id);
                let stored = inner.live_session(&k, now);
                let step = flow::verify_stored_for(
                    stored,
                    ws_id,
                    &code.0,
                    transaction.as_deref(),
                    now,
                    pepper,
                );
                if let Some(after) = step.write {
                    inner.put_session(k, after);
                }
                step.outcome
            }
            Io::RecordVerify {
                dest,
                session_id,
                status,
                attempts_left,
            } => {
                if let Some(outcome) = VerifyOutcome::from_status(&status, attempts_left) {
                    let k = key(ws_id, &dest);
                    ops::record_verify(&mut inner.guard(&k).0, &session_id, outcome, policy, now);
                    inner.settle_guard(&k, ws, now);
                }
                Outcome::Done
            }
            Io::Record { events, deltas } => {
                for e in events {
                    inner.push_audit(ws_id, e);
                }
                for d in &deltas {
                    inner.count(ws_id, d);
                }
                Outcome::Done
            }
            Io::ReadWorkspace { workspace_id } => Outcome::Workspace {
                workspace: inner
                    .kv
                    .get(&key("ws", &workspace_id))
                    .map(|json| WorkspaceRecord::from_json(json))
                    .transpose()?
                    .map(|ws| inner.with_last_used(ws)),
            },
            // Compare-and-set on the revision (under this store's lock, like every step).
            Io::PutWorkspace {
                workspace,
                expected,
            } => {
                let k = key("ws", &workspace.id);
                let current = inner
                    .kv
                    .get(&k)
                    .map(|json| WorkspaceRecord::from_json(json))
                    .transpose()?
                    .map(|w| w.revision);
                if current == expected {
                    // `lastUsedAt` is kept beside the record (`used`), never in it.
                    let mut workspace = workspace;
                    workspace.clear_last_used();
                    inner.workspace_ids.insert(workspace.id.clone());
                    inner.kv.insert(k, workspace.to_json());
                    Outcome::Done
                } else {
                    Outcome::Conflict
                }
            }
            Io::IndexKey {
                key_hash,
                workspace_id,
            } => {
                inner.kv.insert(key("key", &key_hash), workspace_id);
                Outcome::Done
            }
            Io::UnindexKey { key_hash } => {
                inner.kv.remove(&key("key", &key_hash));
                Outcome::Done
            }
            // By id: the cursor is the last id of the page before (any string orders).
            Io::ListWorkspaces { cursor, limit } => {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                let after = cursor.unwrap_or_default();
                let mut ids = inner
                    .workspace_ids
                    .range::<str, _>((Excluded(after.as_str()), Unbounded))
                    .take(limit.saturating_add(1));
                let page: Vec<&String> = ids.by_ref().take(limit).collect();
                let next = match ids.next() {
                    Some(_) => page.last().map(|id| (*id).clone()),
                    None => None,
                };
                let workspaces = page
                    .iter()
                    .filter_map(|id| inner.kv.get(&key("ws", id)))
                    .map(|json| WorkspaceRecord::from_json(json))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let workspaces = workspaces
                    .into_iter()
                    .map(|ws| inner.with_last_used(ws))
                    .collect();
                Outcome::Workspaces { workspaces, next }
            }
            Io::Audit {
                workspace_id,
                events,
                deltas,
            } => {
                for e in events {
                    inner.push_audit(&workspace_id, e);
                }
                for d in &deltas {
                    inner.count(&workspace_id, d);
                }
                Outcome::Done
            }
            Io::FindReceipt { key: k } => Outcome::Owner {
                owner: inner
                    .receipts
                    .get(&k)
                    .filter(|(_, until)| now < *until)
                    .map(|(owner, _)| owner.clone()),
            },
            // Atomic under the lock; a receipt never moves the session's expiry, so its purge
            // time stays.
            Io::ApplyReceipt {
                workspace_id,
                session_id,
                receipt,
            } => {
                let k = key(&workspace_id, &session_id);
                let stored = inner.live_session(&k, now);
                let step = flow::receipt_stored(stored, &workspace_id, &receipt);
                if let Some(after) = step.write {
                    inner.put_session(k, after);
                }
                step.outcome
            }
            // This store keeps no reuse hints: the guard decides every request.
            Io::ReadReuseHint { .. } => Outcome::ReuseHint { session_id: None },
            Io::PutReuseHint { .. } | Io::DropReuseHint { .. } => Outcome::Done,
            // SPEC §7 "Idempotency": the core decides, under this store's lock.
            Io::ClaimIdempotency {
                key_hash,
                fingerprint,
            } => {
                let stored = inner.idem.get(&key_hash).cloned();
                let step = idempotency::claim_stored(stored, &fingerprint, now);
                if let Some(record) = step.write.clone() {
                    let at = record.expires_at;
                    inner.idem.insert(key_hash.clone(), record);
                    inner.due.push(Reverse((at, Due::Idem(key_hash))));
                }
                step.into_outcome()
            }
            Io::FinishIdempotency { key_hash, record } => {
                if idempotency::finish_stored(inner.idem.get(&key_hash), &record) {
                    inner.idem.insert(key_hash, *record);
                }
                Outcome::Done
            }
            Io::ReleaseIdempotency {
                key_hash,
                claimed_at,
            } => {
                if idempotency::release_stored(inner.idem.get(&key_hash), claimed_at) {
                    inner.idem.remove(&key_hash);
                }
                Outcome::Done
            }
            Io::Deliver { .. } | Io::AwaitSend { .. } | Io::Pause { .. } => Outcome::Failed {
                corrupt: false,
                misconfigured: None,
            },
        })
    }
}

impl Inner {
    /// The record as the admin reads it: each key's `lastUsedAt` from `used`.
    fn with_last_used(&self, mut ws: WorkspaceRecord) -> WorkspaceRecord {
        let used = self.used.get(&ws.id);
        ws.merge_last_used(|id| used.and_then(|u| u.get(id)).copied());
        ws
    }

    /// The Fraud Guard count of `prefix` in `ws_id` at `now` (a default one once dropped).
    fn prefix_count(&self, ws_id: &str, prefix: &str, now: UnixMillis) -> PrefixCount {
        self.fraud
            .get(ws_id)
            .and_then(|counts| counts.get(prefix))
            .filter(|(_, keep)| now < *keep)
            .map(|(c, _)| *c)
            .unwrap_or_default()
    }

    /// Stores the count of a charge's prefix, with when it is dropped.
    fn put_prefix_count(&mut self, ws_id: &str, c: &FraudCharge, count: PrefixCount) {
        let keep = ops::fraud_keep_until(&count, c.window_ms);
        let counts = self.fraud.entry(ws_id.to_string()).or_default();
        counts.insert(c.prefix.clone(), (count, keep));
    }

    /// A stored session not yet purged at `now`.
    fn live_session(&self, k: &str, now: UnixMillis) -> Option<Session> {
        self.sessions.get(k).filter(|s| now < s.purge_at()).cloned()
    }

    /// The guard for `k`, created empty if absent.
    /// Every caller settles the guard next, which sets its keep time (and schedules it): a new
    /// guard starts at time 0 so that first settle always counts as a change.
    fn guard(&mut self, k: &str) -> &mut (DestinationGuard, UnixMillis) {
        self.guards
            .entry(k.to_string())
            .or_insert_with(|| (DestinationGuard::new(), UnixMillis(0)))
    }

    /// The receipt index entries of a delivered session, kept until its purge time (scheduled
    /// once per new time, as sessions are).
    fn index_receipts(&mut self, s: &Session) {
        let until = s.purge_at();
        for (k, owner) in otpkit_core::delivery::index_entries(s) {
            if self.receipts.get(&k).map(|(_, at)| *at) != Some(until) {
                self.due.push(Reverse((until, Due::Receipt(k.clone()))));
            }
            self.receipts.insert(k, (owner, until));
        }
    }

    /// Stores a session and schedules its purge (once per purge time: a verify keeps it).
    fn put_session(&mut self, k: String, s: Session) {
        let at = s.purge_at();
        if self.sessions.get(&k).map(Session::purge_at) != Some(at) {
            self.due.push(Reverse((at, Due::Session(k.clone()))));
        }
        self.sessions.insert(k, s);
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

    /// Applies a delta's writes (`otpkit_core::analytics::Write`).
    fn count(&mut self, ws_id: &str, d: &Delta) {
        for w in d.writes() {
            match w {
                Write::Add { bucket, counts } => {
                    let c = self.counters.entry(ws_id.to_string()).or_default();
                    c.entry(bucket).or_default().add(counts);
                }
                Write::Open {
                    bucket,
                    session_id,
                    until,
                } => {
                    let open = self.open.entry(ws_id.to_string()).or_default();
                    let before = open.insert(session_id.to_string(), (bucket, until));
                    if before.is_none_or(|(_, was)| until < was) {
                        let due = Due::Open(ws_id.to_string(), session_id.to_string());
                        self.due.push(Reverse((until, due)));
                    }
                }
                Write::Close { session_id, .. } => {
                    if let Some(open) = self.open.get_mut(ws_id) {
                        open.remove(session_id);
                    }
                }
                Write::Error { bucket, code } => {
                    let e = self.errors.entry(ws_id.to_string()).or_default();
                    let n = e.entry((bucket, code.to_string())).or_default();
                    *n = n.saturating_add(1);
                }
            }
        }
    }

    fn push_audit(&mut self, ws_id: &str, e: AuditEvent) {
        self.seq = self.seq.saturating_add(1);
        let seq = self.seq;
        let log = self.audit.entry(ws_id.to_string()).or_default();
        let list = if e.is_repeatable() {
            &mut log.repeatable
        } else {
            &mut log.lifecycle
        };
        list.push_front((seq, e));
        list.truncate(self.audit_keep.max(1));
    }
}

#[napi]
impl MemoryStore {
    /// An empty store keeping `audit_keep` audit events per workspace in each stream
    /// (lifecycle, repeatable; default [`AUDIT_KEEP`], at least 1).
    #[napi(constructor)]
    pub fn new(audit_keep: Option<u32>) -> Self {
        let keep = audit_keep.map_or(AUDIT_KEEP, |n| n.max(1) as usize);
        MemoryStore {
            inner: Arc::new(Mutex::new(Inner {
                audit_keep: keep,
                ..Inner::default()
            })),
            inflight: Arc::default(),
        }
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
            .live_session(&key(&ws_id, &session_id), ms(now))
            .as_ref()
            .map(Session::to_json))
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
            .map(|(b, c)| Counter::Counts(b.clone(), *c))
            .chain(errors_of(&inner.errors, &ws.rec.id));
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

    /// `GET /v1/admin/analytics` (`query`: the URL's query string): every workspace with
    /// counters, each at its own price (`library`: the library's workspace, not stored here).
    #[napi]
    pub fn admin_analytics_reply(
        &self,
        query: String,
        now: f64,
        library: &Workspace,
    ) -> Result<Reply> {
        let q = analytics_query(&query)?;
        let now = ms(now);
        let inner = self.lock()?;
        let ids: BTreeSet<&String> = inner.counters.keys().chain(inner.open.keys()).collect();
        let mut workspaces = Vec::with_capacity(ids.len());
        for id in ids {
            let price = if *id == library.rec.id {
                library.rec.policy.price_per_segment.clone()
            } else {
                match inner.kv.get(&key("ws", id)) {
                    Some(json) => {
                        WorkspaceRecord::from_json(json)
                            .map_err(|e| throw(&e))?
                            .policy
                            .price_per_segment
                    }
                    None => otpkit_core::Policy::default().price_per_segment,
                }
            };
            workspaces.push(WorkspaceCounters {
                workspace_id: id.clone(),
                price,
                counters: inner
                    .counters
                    .get(id)
                    .into_iter()
                    .flatten()
                    .map(|(b, c)| (b.clone(), *c))
                    .collect(),
                open: inner
                    .open
                    .get(id)
                    .into_iter()
                    .flat_map(HashMap::values)
                    .filter(|(_, until)| now < *until)
                    .map(|(b, _)| b.clone())
                    .collect(),
                errors: errors_of(&inner.errors, id).collect(),
            });
        }
        Ok(analytics::admin_report(&q, now, &workspaces).into())
    }

    /// `GET /v1/messaging/otp/audit` for a workspace (`query`: the URL's query string).
    #[napi]
    pub fn audit_reply(&self, ws_id: String, query: String) -> Result<Reply> {
        let q = audit_query(&query)?;
        let inner = self.lock()?;
        let Some(log) = inner.audit.get(&ws_id) else {
            return Ok(audit_page(std::iter::empty::<(u64, &AuditEvent)>(), &q));
        };
        let events = newest_first(
            log.lifecycle.iter().map(by_ref),
            log.repeatable.iter().map(by_ref),
        );
        Ok(audit_page(events, &q))
    }

    /// Key `key_id` of workspace `ws_id` authenticated a request at `at` (ms): kept unless an
    /// older time than the one stored (`lastUsedAt`; the driver calls at most once an hour per
    /// key, after the answer).
    #[napi]
    pub fn touch_key(&self, ws_id: String, key_id: String, at: f64) -> Result<()> {
        let at = ms(at);
        let mut inner = self.lock()?;
        let slot = inner
            .used
            .entry(ws_id)
            .or_default()
            .entry(key_id)
            .or_default();
        *slot = (*slot).max(at);
        Ok(())
    }

    /// A plain value (workspace records, the key index).
    #[napi]
    pub fn kv_get(&self, k: String) -> Result<Option<String>> {
        Ok(self.lock()?.kv.get(&k).cloned())
    }

    /// Drops what has expired: sessions past retention (each leaves a `purged` audit event),
    /// idle guards, flood shields, spend counters and Fraud Guard counts. Answers how many
    /// sessions were purged.
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
                // A key claimed again after it expired has a later entry of its own.
                Due::Idem(k) => {
                    if inner.idem.get(&k).is_some_and(|r| now >= r.expires_at) {
                        inner.idem.remove(&k);
                    }
                }
                // An entry kept longer since (a resend) has a later entry of its own.
                Due::Receipt(k) => {
                    if inner
                        .receipts
                        .get(&k)
                        .is_some_and(|(_, until)| now >= *until)
                    {
                        inner.receipts.remove(&k);
                    }
                }
            }
        }
        let oldest = analytics::oldest_kept_day(now);
        for counters in inner.counters.values_mut() {
            counters.retain(|b, _| b.day >= oldest);
        }
        inner.counters.retain(|_, c| !c.is_empty());
        for errors in inner.errors.values_mut() {
            errors.retain(|(b, _), _| b.day >= oldest);
        }
        inner.errors.retain(|_, e| !e.is_empty());
        inner
            .floods
            .retain(|_, f| now < f.window_start.plus_secs(60));
        inner.spends.retain(|_, s| !s.is_idle(now));
        for counts in inner.fraud.values_mut() {
            counts.retain(|_, (_, keep)| now < *keep);
        }
        inner.fraud.retain(|_, counts| !counts.is_empty());
        Ok(count(purged))
    }

    /// Sizes.
    #[napi]
    pub fn stats(&self) -> Result<MemoryStats> {
        let inner = self.lock()?;
        Ok(MemoryStats {
            sessions: count(inner.sessions.len()),
            guards: count(inner.guards.len()),
            audit_events: count(
                inner
                    .audit
                    .values()
                    .map(|l| l.lifecycle.len() + l.repeatable.len())
                    .sum(),
            ),
            analytics_buckets: count(inner.counters.values().map(BTreeMap::len).sum()),
            analytics_open: count(inner.open.values().map(HashMap::len).sum()),
            idempotency_records: count(inner.idem.len()),
            fraud_prefixes: count(inner.fraud.values().map(HashMap::len).sum()),
            receipt_index: count(inner.receipts.len()),
        })
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(None)
    }
}
