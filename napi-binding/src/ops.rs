//! The store operations, written once over typed state. The in-memory store ([`crate::memory`])
//! applies them to values it holds; the JSON transitions in [`crate::redis`] apply them to what the
//! Redis store read, and the Redis store writes the result back with a compare-and-set.
//! Every decision is otpkit-core's; this module only decides what to keep and for how long.

use otpkit_core::fraud::PrefixCount;
use otpkit_core::guard::{
    Admission, DeliveryOutcome, DestinationGuard, FloodShield, IN_FLIGHT_STALE_MS,
};
use otpkit_core::policy::Policy;
use otpkit_core::{Error, Purpose, UnixMillis, VerifyOutcome};

/// A failure streak with no lock is kept this long without activity (the streak has no expiry
/// of its own in SPEC; a month of silence ends it).
pub const STREAK_KEEP_MS: u64 = 30 * 24 * 3600 * 1000;

/// What the guard decided for a request: `send`, `reuse`, `wait` or `refused`.
pub type Admitted = (
    &'static str,
    Option<String>,
    Option<&'static str>,
    Option<u32>,
);

/// Admits a planned session on its destination's guard: the decision, the session to reuse or
/// wait for, and for a refusal its code and retry delay. A resend is charged instead.
#[allow(clippy::too_many_arguments)]
pub fn admit(
    guard: &mut DestinationGuard,
    purpose: Purpose,
    session_id: &str,
    expires_at: UnixMillis,
    test: bool,
    resend: bool,
    policy: &Policy,
    now: UnixMillis,
) -> Admitted {
    match guard.admit_or_charge(purpose, session_id, expires_at, test, resend, policy, now) {
        Ok(Admission::Send) => ("send", None, None, None),
        Ok(Admission::Reuse { session_id }) => ("reuse", Some(session_id), None, None),
        Ok(Admission::Wait { session_id }) => ("wait", Some(session_id), None, None),
        Err(e) => ("refused", None, Some(e.code()), e.retry_after_secs()),
    }
}

/// Parses a delivery outcome name (`delivered`, `failed`, `timedOut`).
pub fn delivery_outcome(name: &str) -> Result<DeliveryOutcome, Error> {
    match name {
        "delivered" => Ok(DeliveryOutcome::Delivered),
        "failed" => Ok(DeliveryOutcome::Failed),
        "timedOut" => Ok(DeliveryOutcome::TimedOut),
        _ => Err(Error::invalid(
            "outcome",
            "must be delivered, failed or timedOut",
        )),
    }
}

/// Where a send another request is making stands: `pending` (in flight), `delivered`, or
/// `gone` (it failed, went stale, or ended; the caller checks the session itself). With `now`,
/// an unconfirmed send admitted [`IN_FLIGHT_STALE_MS`] ago or more is `gone`: its sender died
/// (a crash, or its store failed before it could report), so a waiter stops waiting then — as
/// the guard's own prune does — instead of a full stale period after it started to wait.
pub fn entry_state(
    guard: &DestinationGuard,
    session_id: &str,
    now: Option<UnixMillis>,
) -> &'static str {
    match guard.active.iter().find(|a| a.session_id == session_id) {
        Some(a) if a.confirmed => "delivered",
        Some(a) if now.is_some_and(|t| a.admitted_at.plus_millis(IN_FLIGHT_STALE_MS) <= t) => {
            "gone"
        }
        Some(_) => "pending",
        None => "gone",
    }
}

/// A verification's effect on the guard (failure streak, end of reuse).
pub fn record_verify(
    guard: &mut DestinationGuard,
    session_id: &str,
    outcome: VerifyOutcome,
    policy: &Policy,
    now: UnixMillis,
) -> bool {
    guard.record_verify(session_id, outcome, policy, now)
}

/// How long to keep a guard (ms from `now`), or `None` when it holds nothing worth keeping.
pub fn guard_keep_ms(guard: &DestinationGuard, policy: &Policy, now: UnixMillis) -> Option<u64> {
    if guard.is_idle() {
        return None;
    }
    let window_ms = u64::from(policy.sends_per_destination.window_seconds).saturating_mul(1000);
    let sends = guard.sends.iter().map(|s| s.at.plus_millis(window_ms));
    let active = guard.active.iter().map(|a| a.expires_at);
    let mut until = sends
        .chain(active)
        .chain(guard.locked_until)
        .max()
        .unwrap_or(now);
    if guard.failure_streak > 0 {
        until = until.max(now.plus_millis(STREAK_KEEP_MS));
    }
    Some(now.millis_until(until).max(1000))
}

/// Until when a Fraud Guard prefix count is kept (its Redis key's `PEXPIREAT`; the memory
/// store treats it as absent from then): while blocked, and until it is idle
/// ([`PrefixCount::is_idle`]: two windows after its bucket began). A count dropped then reads
/// back as a default one, which every rule treats as the idle one it replaced. The ADMIT,
/// FRAUD_VERIFIED scripts of `lib/redis-store.js` mirror this (`fraud_write`).
pub fn fraud_keep_until(count: &PrefixCount, window_ms: u64) -> UnixMillis {
    UnixMillis(
        count
            .blocked_until
            .max(count.start.saturating_add(window_ms.saturating_mul(2))),
    )
}

/// The workspace flood shield, one step.
pub fn flood(shield: &mut FloodShield, limit: u32, now: UnixMillis) -> Result<(), Error> {
    shield.admit(limit, now)
}
