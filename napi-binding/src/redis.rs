//! The JSON transitions `lib/redis-store.js` runs inside its compare-and-set and Lua scripts:
//! the destination guard and the workspace flood shield on stored JSON, a session's
//! cancellation and purge time, and the analytics writes of a `record` effect as script
//! arguments; and the core's rules its Lua scripts mirror (the flood shield, the spend cap,
//! Fraud Guard), on JSON, so a test holds the scripts to them. Every decision is the core's (through [`crate::ops`]); the store only reads,
//! calls one of these, and writes back what it is given.

use crate::engine::outcome_of;
use crate::errors::throw;
use crate::workspace::Workspace;
use crate::{ms, num, ops, purpose};
use napi::Result;
use napi_derive::napi;
use otpkit_core::analytics::{self, Delta};
use otpkit_core::delivery::Receipt;
use otpkit_core::flow::{Admitted, ResendStep, VerifyStep};
use otpkit_core::fraud::{FraudCharge, PrefixCount};
use otpkit_core::guard::{DestinationGuard, FloodShield};
use otpkit_core::spend::{charge_workspace, Refusal, SpendCharge, SpendCounter};
use otpkit_core::{Error, Session, UnixMillis};

/// A step of the destination guard on stored JSON.
#[napi(object)]
#[derive(Debug)]
pub struct GuardStep {
    /// `send`, `reuse`, `wait`, `refused` (admit); `done` (other steps).
    pub kind: String,
    /// The session to reuse or wait for (admit), or to cancel (delivery).
    pub session_id: Option<String>,
    /// The refusal (`RATE_LIMITED`, `DESTINATION_LOCKED`).
    pub error_code: Option<String>,
    /// Its retry delay.
    pub retry_after: Option<u32>,
    /// The state to store: JSON, or `null` to delete the key.
    pub state: Option<String>,
    /// How long to keep it (ms).
    pub keep_ms: f64,
    /// Whether the state changed (nothing to write otherwise).
    pub changed: bool,
    /// For an admission: the flow outcome's `admission` (`otpkit_core::flow::Admitted` JSON).
    pub admission: Option<String>,
}

fn read_guard(state: Option<&str>) -> Result<DestinationGuard> {
    state
        .map(DestinationGuard::from_json)
        .transpose()
        .map(Option::unwrap_or_default)
        .map(|mut g| {
            g.v = otpkit_core::STATE_VERSION;
            g
        })
        .map_err(|e| throw(&e))
}

fn guard_step(
    before: &DestinationGuard,
    after: &DestinationGuard,
    ws: &Workspace,
    now: UnixMillis,
    kind: &str,
) -> GuardStep {
    let keep = ops::guard_keep_ms(after, &ws.rec.policy, now);
    GuardStep {
        kind: kind.into(),
        session_id: None,
        error_code: None,
        retry_after: None,
        state: keep.map(|_| after.to_json()),
        keep_ms: keep.map_or(0.0, |k| k as f64),
        changed: before != after,
        admission: None,
    }
}

/// Admits a send (a flow's `admit` effect: purpose, session id, expiry, test; a resend is
/// charged instead) on a stored guard (JSON or `null`).
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn guard_admit(
    state: Option<String>,
    ws: &Workspace,
    purpose_name: String,
    session_id: String,
    expires_at: f64,
    test: bool,
    resend: bool,
    now: f64,
) -> Result<GuardStep> {
    let before = read_guard(state.as_deref())?;
    let mut g = before.clone();
    let now = ms(now);
    let (kind, sid, code, retry) = ops::admit(
        &mut g,
        purpose(&purpose_name)?,
        &session_id,
        ms(expires_at),
        test,
        resend,
        &ws.rec.policy,
        now,
    );
    let admission = match (kind, &sid, code) {
        ("reuse", Some(id), _) => Admitted::Reuse {
            session_id: id.clone(),
        },
        ("wait", Some(id), _) => Admitted::Wait {
            session_id: id.clone(),
        },
        (_, _, Some(code)) => Admitted::Refused {
            code: code.into(),
            retry_after_secs: retry.unwrap_or(1),
        },
        _ => Admitted::Send,
    };
    let mut out = guard_step(&before, &g, ws, now, kind);
    out.admission = serde_json::to_string(&admission).ok();
    out.session_id = sid;
    out.error_code = code.map(str::to_string);
    out.retry_after = retry;
    Ok(out)
}

/// Records a delivery outcome (`delivered`, `failed`, `timedOut`); `sessionId` of the answer
/// is a session to cancel.
#[napi]
pub fn guard_delivery(
    state: Option<String>,
    ws: &Workspace,
    session_id: String,
    outcome: String,
    now: f64,
) -> Result<GuardStep> {
    let before = read_guard(state.as_deref())?;
    let mut g = before.clone();
    let cancel = g.delivery(
        &session_id,
        ops::delivery_outcome(&outcome).map_err(|e| throw(&e))?,
    );
    let mut out = guard_step(&before, &g, ws, ms(now), "done");
    out.session_id = cancel;
    Ok(out)
}

/// Records a verification outcome on the guard (failure streak, end of reuse).
#[napi]
pub fn guard_verified(
    state: Option<String>,
    ws: &Workspace,
    session_id: String,
    status: String,
    attempts_left: u32,
    now: f64,
) -> Result<GuardStep> {
    let before = read_guard(state.as_deref())?;
    let mut g = before.clone();
    let now = ms(now);
    ops::record_verify(
        &mut g,
        &session_id,
        outcome_of(&status, attempts_left)?,
        &ws.rec.policy,
        now,
    );
    Ok(guard_step(&before, &g, ws, now, "done"))
}

/// Stops treating a session as active.
#[napi]
pub fn guard_forget(
    state: Option<String>,
    ws: &Workspace,
    session_id: String,
    now: f64,
) -> Result<GuardStep> {
    let before = read_guard(state.as_deref())?;
    let mut g = before.clone();
    g.forget(&session_id);
    Ok(guard_step(&before, &g, ws, ms(now), "done"))
}

/// The session a verify by destination checks (`flow::Io::ReadActive`): the flow outcome JSON
/// `{"result":"active","sessionId":…}` of the stored guard.
#[napi]
pub fn guard_active(state: Option<String>, purpose: String, now: f64) -> Result<String> {
    let g = read_guard(state.as_deref())?;
    let purpose = otpkit_core::Purpose::parse(&purpose)
        .ok_or_else(|| throw(&otpkit_core::Error::invalid("purpose", "unknown purpose")))?;
    let outcome = otpkit_core::flow::Outcome::Active {
        session_id: g.active_session(purpose, ms(now)).map(str::to_string),
    };
    Ok(serde_json::to_string(&outcome).unwrap_or_default())
}

/// Where another request's send stands: `pending`, `delivered` or `gone` (also once it is
/// stale at `now`, when given).
#[napi]
pub fn guard_entry(state: Option<String>, session_id: String, now: Option<f64>) -> Result<String> {
    Ok(ops::entry_state(&read_guard(state.as_deref())?, &session_id, now.map(ms)).to_string())
}

/// One step of the workspace flood shield on stored JSON.
#[napi(object)]
#[derive(Debug)]
pub struct FloodStep {
    /// The state to store when the send is counted.
    pub state: Option<String>,
    /// The flow outcome's `admission` when the shield refuses (`floodRefused`, nothing written).
    pub refused: Option<String>,
}

/// Counts one send in the flood shield (stored JSON or `null`): the state to store, or the
/// refusal (429 until the minute ends). `admitted`: the guard recorded the send in an earlier
/// step (a Redis Cluster's CHARGE script), so the flow refunds it; absent, it was not.
#[napi]
pub fn flood_json(
    state: Option<String>,
    limit: u32,
    now: f64,
    admitted: Option<bool>,
) -> FloodStep {
    let mut shield: FloodShield = state
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    match ops::flood(&mut shield, limit, ms(now)) {
        Ok(()) => FloodStep {
            state: Some(serde_json::to_string(&shield).unwrap_or_default()),
            refused: None,
        },
        Err(e) => FloodStep {
            state: None,
            refused: serde_json::to_string(&Admitted::FloodRefused {
                retry_after_secs: e.retry_after_secs().unwrap_or(1),
                admitted: admitted.unwrap_or(false),
            })
            .ok(),
        },
    }
}

/// One charge of the day's spend (`otpkit_core::spend::SpendCounter::charge`) on stored JSON
/// (`{"day","micros"}` or `null`): what the ADMIT script mirrors, and how a refusal it answers
/// becomes the flow's admission.
#[napi(object)]
#[derive(Debug)]
pub struct SpendStep {
    /// The counter to store when the send is charged.
    pub state: Option<String>,
    /// The flow outcome's `admission` when the cap refuses (`spendRefused`, nothing written).
    pub refused: Option<String>,
}

fn read_spend(state: Option<&str>) -> SpendCounter {
    state
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Charges one send (`charge`: an `Io::Admit`'s `spend` JSON) to the day's spend counter.
/// `admitted` as for [`flood_json`].
#[napi]
pub fn spend_json(
    state: Option<String>,
    charge: String,
    now: f64,
    admitted: Option<bool>,
) -> Result<SpendStep> {
    let charge: SpendCharge = serde_json::from_str(&charge)
        .map_err(|_| throw(&Error::invalid("spend", "not a spend charge")))?;
    let mut counter = read_spend(state.as_deref());
    Ok(match counter.charge(&charge, ms(now)) {
        Ok(()) => SpendStep {
            state: serde_json::to_string(&counter).ok(),
            refused: None,
        },
        Err(e) => SpendStep {
            state: None,
            refused: serde_json::to_string(&Admitted::workspace_refused(
                &Refusal::from(e),
                admitted.unwrap_or(false),
            ))
            .ok(),
        },
    })
}

/// Hands `micros` charged to `day` back (`SpendCounter::refund`): the counter to store.
#[napi]
pub fn spend_refund_json(state: Option<String>, day: u32, micros: f64) -> String {
    let mut counter = read_spend(state.as_deref());
    counter.refund(day, ms(micros).0);
    serde_json::to_string(&counter).unwrap_or_default()
}

/// The flow outcome's `admission` when the ADMIT script's Fraud Guard refuses a send
/// (`fraudRefused`; `new_block`: this send's check began the block). `admitted` as for
/// [`flood_json`]: with ADMIT the guard was not written, so nothing is handed back.
#[napi]
pub fn fraud_refused(new_block: bool, admitted: Option<bool>) -> String {
    let r = Refusal {
        error: Error::FraudSuspected,
        new_block,
    };
    serde_json::to_string(&Admitted::workspace_refused(&r, admitted.unwrap_or(false)))
        .unwrap_or_default()
}

fn read_json<T: serde::de::DeserializeOwned + Default>(
    state: Option<&str>,
    what: &'static str,
) -> Result<T> {
    state
        .map(serde_json::from_str)
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|_| throw(&Error::invalid(what, "malformed")))
}

fn charge_of<T: serde::de::DeserializeOwned>(
    charge: Option<&str>,
    what: &'static str,
) -> Result<Option<T>> {
    charge
        .map(serde_json::from_str)
        .transpose()
        .map_err(|_| throw(&Error::invalid(what, "malformed")))
}

/// [`charge_workspace_json`]'s answer: every state after the step (JSON; as given when it did
/// not change), and the admission.
#[napi(object)]
#[derive(Debug)]
pub struct WorkspaceCharge {
    /// The flood shield (`FloodShield` JSON).
    pub shield: String,
    /// The day's spend (`SpendCounter` JSON).
    pub spend: String,
    /// The prefix's Fraud Guard count (`PrefixCount` JSON).
    pub fraud: String,
    /// Until when that count is kept (ms; `ops::fraud_keep_until`).
    pub fraud_keep_until: f64,
    /// The flow outcome's `admission` (`send`, or the refusal, nothing handed back).
    pub admission: String,
}

/// One step of `otpkit_core::spend::charge_workspace` on stored JSON (each state JSON or
/// `null`; `spend_charge` an `Io::Admit`'s `spend`, `fraud_charge` its `fraud`, `flood_limit`
/// its `floodLimit`): what the ADMIT script of `lib/redis-store.js` mirrors, in the core, for
/// the test that holds the script to it.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn charge_workspace_json(
    shield: Option<String>,
    flood_limit: Option<u32>,
    spend: Option<String>,
    spend_charge: Option<String>,
    fraud: Option<String>,
    fraud_charge: Option<String>,
    now: f64,
) -> Result<WorkspaceCharge> {
    let mut s: FloodShield = read_json(shield.as_deref(), "shield")?;
    let mut counter: SpendCounter = read_json(spend.as_deref(), "spend")?;
    let mut count: PrefixCount = read_json(fraud.as_deref(), "fraud")?;
    let spend_charge: Option<SpendCharge> = charge_of(spend_charge.as_deref(), "spendCharge")?;
    let fraud_charge: Option<FraudCharge> = charge_of(fraud_charge.as_deref(), "fraudCharge")?;
    let step = charge_workspace(
        &mut s,
        flood_limit,
        &mut counter,
        spend_charge.as_ref(),
        fraud_charge.as_ref().map(|c| (&mut count, c)),
        ms(now),
    );
    let admission = match step {
        Ok(()) => Admitted::Send,
        Err(r) => Admitted::workspace_refused(&r, false),
    };
    let window = fraud_charge.as_ref().map_or(0, |c| c.window_ms);
    Ok(WorkspaceCharge {
        shield: serde_json::to_string(&s).unwrap_or_default(),
        spend: serde_json::to_string(&counter).unwrap_or_default(),
        fraud: serde_json::to_string(&count).unwrap_or_default(),
        fraud_keep_until: num(ops::fraud_keep_until(&count, window)),
        admission: serde_json::to_string(&admission).unwrap_or_default(),
    })
}

/// A prefix count after a step, and until when it is kept.
#[napi(object)]
#[derive(Debug)]
pub struct FraudCountStep {
    /// `PrefixCount` JSON.
    pub state: String,
    /// Until when it is kept (ms; `ops::fraud_keep_until`).
    pub keep_until: f64,
}

/// An approved verification counted in a stored prefix count (`PrefixCount::verified`; JSON or
/// `null`): what the FRAUD_VERIFIED script mirrors.
#[napi]
pub fn fraud_verified_json(
    state: Option<String>,
    window_ms: f64,
    now: f64,
) -> Result<FraudCountStep> {
    let mut count: PrefixCount = read_json(state.as_deref(), "fraud")?;
    let window = ms(window_ms).0;
    count.verified(window, ms(now));
    Ok(FraudCountStep {
        state: serde_json::to_string(&count).unwrap_or_default(),
        keep_until: num(ops::fraud_keep_until(&count, window)),
    })
}

/// Whether an operator's unblock of a stored prefix count (JSON or `null`) ends a block at
/// `now` (`PrefixCount::unblock`; the count is cleared either way): what the UNBLOCK_PREFIX
/// script mirrors.
#[napi]
pub fn fraud_unblock_json(state: Option<String>, now: f64) -> Result<bool> {
    let mut count: PrefixCount = read_json(state.as_deref(), "fraud")?;
    Ok(count.unblock(ms(now)))
}

/// [`resend_stored`]'s and [`receipt_stored`]'s answer: the core's step
/// (`otpkit_core::flow::VerifyStep`) as JSON.
#[napi(object)]
pub struct StoredStep {
    /// The outcome JSON.
    pub outcome: String,
    /// The session JSON to store, if the step changed it.
    pub write: Option<String>,
}

/// Runs one of the core's `*_stored` steps on a stored session (JSON or `null`; a malformed
/// one is thrown before `run` is called) and encodes its answer.
fn on_stored(
    state: Option<&str>,
    run: impl FnOnce(Option<Session>) -> Result<VerifyStep>,
) -> Result<StoredStep> {
    let session = state
        .map(Session::from_json)
        .transpose()
        .map_err(|e| throw(&e))?;
    let done = run(session)?;
    Ok(StoredStep {
        outcome: serde_json::to_string(&done.outcome).unwrap_or_default(),
        write: done.write.as_ref().map(Session::to_json),
    })
}

/// One step of a resend (a flow's `resend` effect: `step` is its JSON) on a stored session
/// (JSON or `null`): `otpkit_core::flow::resend_stored`. `outcome` answers the effect, `write`
/// is the session to store (or null).
#[napi]
pub fn resend_stored(
    state: Option<String>,
    ws_id: String,
    step_json: String,
    now: f64,
) -> Result<StoredStep> {
    on_stored(state.as_deref(), |session| {
        let step: ResendStep = serde_json::from_str(&step_json)
            .map_err(|_| throw(&Error::invalid("step", "malformed")))?;
        Ok(otpkit_core::flow::resend_stored(
            session,
            &ws_id,
            &step,
            ms(now),
        ))
    })
}

/// A delivery receipt (an `applyReceipt` effect's `receipt` JSON) on a stored session of
/// `ws_id` (JSON or `null`): `otpkit_core::flow::receipt_stored`. `outcome` answers the effect,
/// `write` is the session to store back (or null: nothing changed).
#[napi]
#[allow(clippy::needless_pass_by_value)]
pub fn receipt_stored(
    state: Option<String>,
    ws_id: String,
    receipt_json: String,
) -> Result<StoredStep> {
    on_stored(state.as_deref(), |session| {
        let receipt: Receipt = serde_json::from_str(&receipt_json)
            .map_err(|_| throw(&Error::invalid("receipt", "malformed")))?;
        Ok(otpkit_core::flow::receipt_stored(session, &ws_id, &receipt))
    })
}

/// The delivery receipt index entries of a stored session (JSON): `[key, value, key, value…]`
/// (`otpkit_core::delivery::index_entries`; none for a test number or a session with nothing
/// delivered). Kept until the session's purge time ([`session_purge_at`]).
#[napi]
#[allow(clippy::needless_pass_by_value)]
pub fn receipt_index_entries(session_json: String) -> Result<Vec<String>> {
    let s = Session::from_json(&session_json).map_err(|e| throw(&e))?;
    Ok(otpkit_core::delivery::index_entries(&s)
        .into_iter()
        .flat_map(|(k, v)| [k, v])
        .collect())
}

/// The cancellation of a stored session (reuse off, replaced): the JSON to store.
#[napi]
pub fn cancel_json(state: String) -> Result<String> {
    Ok(Session::from_json(&state)
        .map_err(|e| throw(&e))?
        .cancel()
        .to_json())
}

/// When a stored session (JSON) is purged (ms): `retentionSeconds` after its expiry.
#[napi]
pub fn session_purge_at(session_json: String) -> Result<f64> {
    Ok(num(Session::from_json(&session_json)
        .map_err(|e| throw(&e))?
        .purge_at()))
}

/// The Redis store's analytics operations for a `record` effect's deltas (JSON array), as the
/// RECORD script reads them: four arguments each (op, key, a, b). `counters` + day is a day's
/// hash of counters (fields `counter|bucket` and `error:code|bucket`), `open` the sorted set of open sessions. Every
/// write is the core's (`otpkit_core::analytics::Write`); this only encodes them.
#[napi]
pub fn redis_analytics_ops(
    counters: String,
    open: String,
    deltas_json: String,
    now: f64,
) -> Result<Vec<String>> {
    let deltas: Vec<Delta> = serde_json::from_str(&deltas_json)
        .map_err(|_| throw(&Error::invalid("deltas", "are not analytics deltas")))?;
    let mut ops: Vec<String> = Vec::new();
    let mut push = |op: &str, k: &str, a: String, b: String| {
        ops.extend([op.to_string(), k.to_string(), a, b]);
    };
    const DAY_MS: u64 = 86_400_000;
    for d in &deltas {
        for w in d.writes() {
            match w {
                analytics::Write::Add { bucket, counts } => {
                    let hash = format!("{counters}{}", bucket.day);
                    for (name, n) in counts.nonzero() {
                        let field = analytics::counter_field(name, &bucket);
                        push("H", &hash, field, n.to_string());
                    }
                    let keep = analytics::keep_until(bucket.day).0.to_string();
                    push("E", &hash, keep, String::new());
                }
                analytics::Write::Open {
                    bucket,
                    session_id,
                    until,
                } => {
                    // Members past their expiry are dropped as new ones arrive.
                    push("R", &open, (ms(now).0).to_string(), String::new());
                    push(
                        "O",
                        &open,
                        until.0.to_string(),
                        bucket.open_member(session_id),
                    );
                    push("T", &open, DAY_MS.to_string(), String::new());
                }
                analytics::Write::Close { bucket, session_id } => {
                    push("C", &open, String::new(), bucket.open_member(session_id));
                }
                analytics::Write::Error { bucket, code } => {
                    let hash = format!("{counters}{}", bucket.day);
                    let field = analytics::error_field(code, &bucket);
                    push("H", &hash, field, "1".into());
                    let keep = analytics::keep_until(bucket.day).0.to_string();
                    push("E", &hash, keep, String::new());
                }
            }
        }
    }
    Ok(ops)
}
