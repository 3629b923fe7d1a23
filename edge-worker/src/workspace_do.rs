//! `WorkspaceObject`: one Durable Object per workspace (named by its id).
//!
//! It keeps what must be exact per workspace and that KV (last writer wins, eventually
//! consistent) cannot keep exact (issue 19):
//! - the flood shield (`sendsPerWorkspacePerMinute`) and the day's spend (`dailySpendLimit`,
//!   `otpkit_core::spend`), charged together in one call: read–decide–write on this object's
//!   storage with no other await in between, so input gates make a burst admit exactly the
//!   limits;
//! - Fraud Guard's counts (`otpkit_core::fraud`, SPEC §9): one `PrefixCount` per number prefix
//!   under `fraud:{prefix}`, checked and counted in the same call as the flood shield and the
//!   spend, and counted again when a send to it is verified; an alarm drops the idle ones;
//! - writes of the workspace record: compare-and-set on its `revision`, one at a time, each
//!   followed by its copy to KV `WORKSPACES` (which authentication reads), so concurrent admin
//!   writes never lose one another and KV ends at the latest record;
//! - when each key last authenticated a request (`lastUsedAt`), under `used:{keyId}` beside the
//!   record (never in it: it takes no part in the revision), written by `Touch` at most once
//!   an hour per key per isolate (`otpkit_core::workspace::last_used_due`) and merged into the
//!   record `Read` answers.
//!
//! A workspace created before this object existed is read from KV on first use.

use crate::http;
use crate::workspaces;
use futures_channel::oneshot;
use otpkit_core::flow::Admitted;
use otpkit_core::fraud::{FraudCharge, PrefixCount};
use otpkit_core::guard::FloodShield;
use otpkit_core::spend::{charge_workspace, Refusal, SpendCharge, SpendCounter};
use otpkit_core::workspace::WorkspaceRecord;
use otpkit_core::{Error, UnixMillis};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use worker::{durable_object, DurableObject, Env, ListOptions, Request, Response, Result, State};

const FLOOD: &str = "flood";
const SPEND: &str = "spend";
const RECORD: &str = "workspace";
/// When a key last authenticated a request is stored under `used:{keyId}` (ms).
const USED: &str = "used:";
/// Fraud Guard's count of a prefix is stored under `fraud:{prefix}`.
const FRAUD: &str = "fraud:";
/// The longest window a policy can give Fraud Guard (`windowSeconds` ≤ 86400): a count idle
/// under it is idle under any, and is dropped by the alarm.
const MAX_FRAUD_WINDOW_MS: u64 = 86_400_000;
/// How often the alarm looks for idle prefix counts while there are any.
const SWEEP_EVERY_MS: u64 = 86_400_000;

fn fraud_key(prefix: &str) -> String {
    format!("{FRAUD}{prefix}")
}

/// Worker → WorkspaceObject.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum WorkspaceCall {
    /// Check the destination's prefix with Fraud Guard (with `fraud`), count one send in the
    /// flood shield (with `limit`) and charge it to the day's spend (with `spend`), all or
    /// none (`otpkit_core::spend::charge_workspace`): 200 `null`, or 200 with the refusal as
    /// the flow's admission (`fraudRefused` / `floodRefused` / `spendRefused`, `admitted:
    /// true`: the Worker calls once the destination guard recorded the send). `now` is the
    /// request's.
    Flood {
        limit: Option<u32>,
        #[serde(default)]
        spend: Option<SpendCharge>,
        #[serde(default)]
        fraud: Option<FraudCharge>,
        now: UnixMillis,
    },
    /// Count an approved verification of a send to `prefix` (`PrefixCount::verified`): 200.
    FraudVerified {
        prefix: String,
        window_ms: u64,
        now: UnixMillis,
    },
    /// Every prefix count: 200 with `[[prefix, count], …]` (any order).
    ReadFraud,
    /// End the block of `prefix` and clear its counts (`PrefixCount::unblock`): 200 with
    /// whether it was blocked at `now`.
    Unblock { prefix: String, now: UnixMillis },
    /// Hand spend charged to `day` back (a definite delivery failure): 200.
    RefundSpend { day: u32, micros: u64 },
    /// The record: 200 with its JSON, or 404.
    Read { workspace_id: String },
    /// Store the record (JSON) if the stored one is at revision `expected` (`None`: none is
    /// stored): 200, or 409 when another write came first. Its `lastUsedAt` times are not
    /// stored (they live under `used:{keyId}`).
    Put {
        workspace: String,
        expected: Option<u64>,
    },
    /// Key `key_id` authenticated a request at `at` (sent after the answer, at most once an
    /// hour per key per isolate): 200. An older time than the stored one changes nothing.
    Touch { key_id: String, at: UnixMillis },
    /// When each key last authenticated a request: 200 with `[[keyId, ms], …]` (the listing).
    LastUsed,
}

#[durable_object]
pub struct WorkspaceObject {
    state: State,
    env: Env,
    /// One record write at a time, KV copy included (KV keeps the last write to arrive).
    writing: Cell<bool>,
    queue: RefCell<VecDeque<oneshot::Sender<()>>>,
    /// This instance knows the alarm that drops idle prefix counts is set.
    sweep_armed: Cell<bool>,
}

/// Holds the object's write turn until dropped (also when a request is abandoned).
struct Turn<'a>(&'a WorkspaceObject);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Hand the turn to the next waiter still waiting, or free it.
        while let Some(next) = self.0.queue.borrow_mut().pop_front() {
            if next.send(()).is_ok() {
                return;
            }
        }
        self.0.writing.set(false);
    }
}

impl WorkspaceObject {
    async fn turn(&self) -> Turn<'_> {
        if self.writing.replace(true) {
            let (tx, rx) = oneshot::channel();
            self.queue.borrow_mut().push_back(tx);
            let _ = rx.await;
        }
        Turn(self)
    }

    async fn stored(&self) -> std::result::Result<Option<WorkspaceRecord>, Error> {
        let raw: Option<String> = self
            .state
            .storage()
            .get(RECORD)
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        raw.map(|s| WorkspaceRecord::from_json(&s)).transpose()
    }

    /// The record: this object's copy, else KV's (a workspace older than this object).
    async fn record(&self, id: &str) -> std::result::Result<Option<WorkspaceRecord>, Error> {
        match self.stored().await? {
            Some(ws) => Ok(Some(ws)),
            None => workspaces::load(&self.env, id).await,
        }
    }

    async fn read<T: serde::de::DeserializeOwned + Default>(
        &self,
        key: &str,
    ) -> std::result::Result<T, Error> {
        let raw: Option<String> = self
            .state
            .storage()
            .get(key)
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        Ok(raw
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default())
    }

    async fn write<T: Serialize>(&self, key: &str, value: &T) -> std::result::Result<(), Error> {
        self.state
            .storage()
            .put(key, serde_json::to_string(value).unwrap_or_default())
            .await
            .map_err(|_| Error::StoreUnavailable)
    }

    async fn flood(
        &self,
        limit: Option<u32>,
        spend: Option<SpendCharge>,
        fraud: Option<FraudCharge>,
        now: UnixMillis,
    ) -> std::result::Result<Option<Admitted>, Error> {
        // Every read, the decision, then the writes: no other request's step runs in between
        // (input gates hold deliveries while storage operations are in flight).
        let mut shield: FloodShield = self.read(FLOOD).await?;
        let mut counter: SpendCounter = match spend {
            Some(_) => self.read(SPEND).await?,
            None => SpendCounter::default(),
        };
        let key = fraud.as_ref().map(|c| fraud_key(&c.prefix));
        let mut count: PrefixCount = match &key {
            Some(k) => self.read(k).await?,
            None => PrefixCount::default(),
        };
        let charged = charge_workspace(
            &mut shield,
            limit,
            &mut counter,
            spend.as_ref(),
            fraud.as_ref().map(|c| (&mut count, c)),
            now,
        );
        // A Fraud Guard refusal changed the prefix's count (the refused send, a new block);
        // any other refusal changed nothing.
        let fraud_refused = matches!(
            &charged,
            Err(Refusal {
                error: Error::FraudSuspected,
                ..
            })
        );
        if let Err(refusal) = &charged {
            if let (true, Some(k)) = (fraud_refused, &key) {
                self.write(k, &count).await?;
            }
            return Ok(Some(Admitted::workspace_refused(refusal, true)));
        }
        if limit.is_some() {
            self.write(FLOOD, &shield).await?;
        }
        if spend.is_some() {
            self.write(SPEND, &counter).await?;
        }
        if let Some(k) = &key {
            self.write(k, &count).await?;
            self.arm_sweep().await;
        }
        Ok(None)
    }

    async fn fraud_verified(
        &self,
        prefix: &str,
        window_ms: u64,
        now: UnixMillis,
    ) -> std::result::Result<(), Error> {
        let key = fraud_key(prefix);
        let mut count: PrefixCount = self.read(&key).await?;
        count.verified(window_ms, now);
        self.write(&key, &count).await?;
        self.arm_sweep().await;
        Ok(())
    }

    /// Every stored prefix count, with its prefix.
    async fn prefixes(&self) -> std::result::Result<Vec<(String, PrefixCount)>, Error> {
        let map = self
            .state
            .storage()
            .list_with_options(ListOptions::new().prefix(FRAUD))
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        let mut out = Vec::with_capacity(usize::try_from(map.size()).unwrap_or(0));
        map.for_each(&mut |value, key| {
            let (Some(key), Some(raw)) = (key.as_string(), value.as_string()) else {
                return;
            };
            let Some(prefix) = key.strip_prefix(FRAUD) else {
                return;
            };
            if let Ok(count) = serde_json::from_str::<PrefixCount>(&raw) {
                out.push((prefix.to_string(), count));
            }
        });
        Ok(out)
    }

    async fn unblock(&self, prefix: &str, now: UnixMillis) -> std::result::Result<bool, Error> {
        let key = fraud_key(prefix);
        let mut count: PrefixCount = self.read(&key).await?;
        if !count.unblock(now) {
            return Ok(false);
        }
        // Cleared counts are what a missing key reads as.
        self.state
            .storage()
            .delete(&key)
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        Ok(true)
    }

    /// Makes sure the alarm that drops idle prefix counts is set (checked once per instance;
    /// after the step's writes, so it never splits a read–decide–write). Its failure changes
    /// no answer: the next write tries again.
    async fn arm_sweep(&self) {
        if self.sweep_armed.get() {
            return;
        }
        let storage = self.state.storage();
        let set = match storage.get_alarm().await {
            Ok(Some(_)) => true,
            Ok(None) => storage.set_alarm(sweep_offset()).await.is_ok(),
            Err(_) => false,
        };
        self.sweep_armed.set(set);
    }

    /// The alarm: drops the prefix counts idle under the longest window (they read back as a
    /// missing key does), and comes back while any are left.
    async fn sweep(&self) -> std::result::Result<(), Error> {
        let now = UnixMillis(worker::Date::now().as_millis());
        let prefixes = self.prefixes().await?;
        let (idle, kept): (Vec<_>, Vec<_>) = prefixes
            .into_iter()
            .partition(|(_, c)| c.is_idle(MAX_FRAUD_WINDOW_MS, now));
        let storage = self.state.storage();
        // At most 128 keys per delete.
        for chunk in idle.chunks(128) {
            let keys: Vec<String> = chunk.iter().map(|(p, _)| fraud_key(p)).collect();
            storage
                .delete_multiple(keys)
                .await
                .map_err(|_| Error::StoreUnavailable)?;
        }
        if kept.is_empty() {
            self.sweep_armed.set(false);
        } else {
            storage
                .set_alarm(sweep_offset())
                .await
                .map_err(|_| Error::StoreUnavailable)?;
            self.sweep_armed.set(true);
        }
        Ok(())
    }

    async fn refund_spend(&self, day: u32, micros: u64) -> std::result::Result<(), Error> {
        let mut counter: SpendCounter = self.read(SPEND).await?;
        counter.refund(day, micros);
        self.write(SPEND, &counter).await
    }

    /// Every key's last use: key id → time.
    async fn last_used(&self) -> std::result::Result<Vec<(String, UnixMillis)>, Error> {
        let map = self
            .state
            .storage()
            .list_with_options(ListOptions::new().prefix(USED))
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        let mut out = Vec::new();
        map.for_each(&mut |value, key| {
            let (Some(key), Some(raw)) = (key.as_string(), value.as_string()) else {
                return;
            };
            let (Some(key_id), Ok(at)) = (key.strip_prefix(USED), raw.parse::<u64>()) else {
                return;
            };
            out.push((key_id.to_string(), UnixMillis(at)));
        });
        Ok(out)
    }

    async fn touch(&self, key_id: &str, at: UnixMillis) -> std::result::Result<(), Error> {
        let key = format!("{USED}{key_id}");
        let stored: Option<String> = self
            .state
            .storage()
            .get(&key)
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        if stored.and_then(|s| s.parse::<u64>().ok()) >= Some(at.0) {
            return Ok(());
        }
        self.state
            .storage()
            .put(&key, at.0.to_string())
            .await
            .map_err(|_| Error::StoreUnavailable)
    }

    async fn put(&self, json: &str, expected: Option<u64>) -> std::result::Result<bool, Error> {
        let mut ws = WorkspaceRecord::from_json(json)?;
        // Kept beside the record (`used:{keyId}`), never in it.
        ws.clear_last_used();
        let _turn = self.turn().await;
        let current = self.record(&ws.id).await?;
        if current.as_ref().map(|c| c.revision) != expected {
            return Ok(false);
        }
        self.state
            .storage()
            .put(RECORD, ws.to_json())
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        workspaces::save(&self.env, &ws).await?;
        Ok(true)
    }

    async fn handle(&self, call: WorkspaceCall) -> std::result::Result<Response, Error> {
        let reply = |body: String, status: u16| {
            Response::ok(body)
                .map(|r| r.with_status(status))
                .map_err(|_| Error::StoreUnavailable)
        };
        match call {
            WorkspaceCall::Flood {
                limit,
                spend,
                fraud,
                now,
            } => {
                let refused = self.flood(limit, spend, fraud, now).await?;
                reply(serde_json::to_string(&refused).unwrap_or_default(), 200)
            }
            WorkspaceCall::FraudVerified {
                prefix,
                window_ms,
                now,
            } => {
                self.fraud_verified(&prefix, window_ms, now).await?;
                reply(String::new(), 200)
            }
            WorkspaceCall::ReadFraud => {
                let prefixes = self.prefixes().await?;
                reply(serde_json::to_string(&prefixes).unwrap_or_default(), 200)
            }
            WorkspaceCall::Unblock { prefix, now } => {
                let was_blocked = self.unblock(&prefix, now).await?;
                reply(was_blocked.to_string(), 200)
            }
            WorkspaceCall::RefundSpend { day, micros } => {
                self.refund_spend(day, micros).await?;
                reply(String::new(), 200)
            }
            WorkspaceCall::Read { workspace_id } => match self.record(&workspace_id).await? {
                Some(mut ws) => {
                    let used = self.last_used().await?;
                    ws.merge_last_used(|id| used.iter().find(|(k, _)| k == id).map(|(_, t)| *t));
                    reply(ws.to_json(), 200)
                }
                None => reply(String::new(), 404),
            },
            WorkspaceCall::Touch { key_id, at } => {
                self.touch(&key_id, at).await?;
                reply(String::new(), 200)
            }
            WorkspaceCall::LastUsed => {
                let used = self.last_used().await?;
                reply(serde_json::to_string(&used).unwrap_or_default(), 200)
            }
            WorkspaceCall::Put {
                workspace,
                expected,
            } => match self.put(&workspace, expected).await? {
                true => reply(String::new(), 200),
                false => reply(String::new(), 409),
            },
        }
    }
}

impl DurableObject for WorkspaceObject {
    fn new(state: State, env: Env) -> Self {
        WorkspaceObject {
            state,
            env,
            writing: Cell::new(false),
            queue: RefCell::new(VecDeque::new()),
            sweep_armed: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: WorkspaceCall = match req.json().await {
            Ok(c) => c,
            Err(_) => return http::error(&Error::invalid("", "bad internal call")),
        };
        match self.handle(call).await {
            Ok(r) => Ok(r),
            Err(e) => http::error(&e),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        match self.sweep().await {
            Ok(()) => Response::ok(""),
            Err(_) => {
                // The next write sets it again.
                self.sweep_armed.set(false);
                Response::error("sweep failed", 503)
            }
        }
    }
}

/// When the next sweep runs: in [`SWEEP_EVERY_MS`] (an offset from now, in ms).
fn sweep_offset() -> i64 {
    i64::try_from(SWEEP_EVERY_MS).unwrap_or(i64::MAX)
}

impl std::fmt::Debug for WorkspaceObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkspaceObject")
    }
}
