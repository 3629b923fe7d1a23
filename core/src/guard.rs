//! The per-(workspace, destination) guard: the sliding send window, the cross-session failure
//! streak, and the active session per purpose (which makes reuse race-free: the guard is the
//! arbiter that says "send", "reuse" or "wait for the send in flight").
//!
//! Protocol for one request (the host holds the guard atomically — one Durable Object, or one
//! compare-and-set in Redis):
//! 1. [`DestinationGuard::admit`] → `Send`, `Reuse`, `Wait`, or an error (429).
//! 2. On `Send`, deliver outside the guard, then report [`DestinationGuard::delivery`].
//! 3. After each verification, [`DestinationGuard::record_verify`] (may follow the response).

use crate::error::{retry_secs_from_millis, Error};
use crate::policy::{Policy, DESTINATION_LOCK_SECS};
use crate::session::VerifyOutcome;
use crate::time::UnixMillis;
use crate::validate::Purpose;
use crate::STATE_VERSION;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// A send still in flight after this long is treated as timed out (the gateway timeout is 10 s);
/// this frees the (destination, purpose) if a host died mid-send.
pub const IN_FLIGHT_STALE_MS: u64 = 15_000;

/// A charged send inside the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendRecord {
    /// When it was admitted.
    pub at: UnixMillis,
    /// The session it was for (so a definite failure can be refunded).
    pub session_id: String,
}

/// The newest session per purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActiveSession {
    /// Purpose.
    pub purpose: Purpose,
    /// Session id.
    pub session_id: String,
    /// Its expiry.
    pub expires_at: UnixMillis,
    /// The gateway accepted its message (until then, others wait).
    pub confirmed: bool,
    /// When its send was admitted.
    pub admitted_at: UnixMillis,
    /// The entry it replaced (reuse off): canceled once this one is delivered, restored as it
    /// was if this one fails.
    pub previous: Option<Box<ActiveSession>>,
}

/// What the host does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Deliver the new session's message, then report the outcome with [`DestinationGuard::delivery`].
    Send,
    /// A delivered, active session exists: answer `reused: true` with it (no SMS). If loading it
    /// shows it is no longer reusable, call [`DestinationGuard::forget`] and admit again.
    Reuse {
        /// The session to answer with.
        session_id: String,
    },
    /// Another request is delivering for this (destination, purpose): wait for its outcome and
    /// answer reused with it, or 502 if it failed.
    Wait {
        /// The session being delivered.
        session_id: String,
    },
}

/// What the gateway did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryOutcome {
    /// 2xx: the session is live.
    Delivered,
    /// Non-2xx or refused: a definite failure, refunded from the send window.
    Failed,
    /// No answer in time: unknown outcome, still charged (a slow gateway is no pumping hole).
    TimedOut,
}

/// The guard's stored state (versioned JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationGuard {
    /// Format version.
    pub v: u8,
    /// Charged sends inside the window, oldest first.
    pub sends: Vec<SendRecord>,
    /// Consecutive INVALID verifications across sessions.
    pub failure_streak: u32,
    /// Sends are refused until then.
    pub locked_until: Option<UnixMillis>,
    /// Newest session per purpose.
    pub active: Vec<ActiveSession>,
}

impl DestinationGuard {
    /// An empty guard.
    #[must_use]
    pub fn new() -> Self {
        DestinationGuard {
            v: STATE_VERSION,
            ..Default::default()
        }
    }

    /// Drops what time has made irrelevant: sends out of the window, expired or stale entries,
    /// an ended lock (which also ends the streak that caused it).
    pub fn prune(&mut self, policy: &Policy, now: UnixMillis) {
        let window_ms = u64::from(policy.sends_per_destination.window_seconds).saturating_mul(1000);
        self.sends.retain(|s| s.at.plus_millis(window_ms) > now);
        self.active.retain(|a| {
            now < a.expires_at
                && (a.confirmed || a.admitted_at.plus_millis(IN_FLIGHT_STALE_MS) > now)
        });
        if self.locked_until.is_some_and(|until| now >= until) {
            self.locked_until = None;
            self.failure_streak = 0;
        }
    }

    /// Decides a request for `purpose`. On `Send`, the new session (`session_id`, `expires_at`) is
    /// recorded as in flight and, unless `test`, charged to the window.
    pub fn admit(
        &mut self,
        purpose: Purpose,
        session_id: &str,
        expires_at: UnixMillis,
        test: bool,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<Admission, Error> {
        self.prune(policy, now);
        let current = self.active.iter().position(|a| a.purpose == purpose);
        if policy.reuse {
            if let Some(a) = current.and_then(|i| self.active.get(i)) {
                let session_id = a.session_id.clone();
                return Ok(if a.confirmed {
                    Admission::Reuse { session_id }
                } else {
                    Admission::Wait { session_id }
                });
            }
        }
        self.charge(session_id, test, policy, now)?;
        let mut previous = current.map(|i| Box::new(self.active.swap_remove(i)));
        truncate_chain(&mut previous, MAX_REPLACED_CHAIN);
        self.active.push(ActiveSession {
            purpose,
            session_id: session_id.into(),
            expires_at,
            confirmed: false,
            admitted_at: now,
            previous,
        });
        Ok(Admission::Send)
    }

    /// What a store does for [`crate::flow::Io::Admit`]: [`DestinationGuard::charge_resend`]
    /// (answered `Send` once charged) when `resend`, else [`DestinationGuard::admit`].
    #[allow(clippy::too_many_arguments)]
    pub fn admit_or_charge(
        &mut self,
        purpose: Purpose,
        session_id: &str,
        expires_at: UnixMillis,
        test: bool,
        resend: bool,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<Admission, Error> {
        if resend {
            self.charge_resend(session_id, expires_at, test, policy, now)
                .map(|()| Admission::Send)
        } else {
            self.admit(purpose, session_id, expires_at, test, policy, now)
        }
    }

    /// Refuses a send while the destination is locked or (unless `test`) its window is full;
    /// else records it in the window.
    fn charge(
        &mut self,
        session_id: &str,
        test: bool,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<(), Error> {
        if let Some(until) = self.locked_until {
            return Err(Error::DestinationLocked {
                retry_after_secs: retry_secs_from_millis(now.millis_until(until)),
            });
        }
        if test {
            return Ok(());
        }
        let limit = usize::try_from(policy.sends_per_destination.limit).unwrap_or(usize::MAX);
        if self.sends.len() >= limit {
            let window_ms =
                u64::from(policy.sends_per_destination.window_seconds).saturating_mul(1000);
            let oldest = self.sends.first().map_or(now, |s| s.at);
            return Err(Error::RateLimited {
                retry_after_secs: retry_secs_from_millis(
                    now.millis_until(oldest.plus_millis(window_ms)),
                ),
            });
        }
        self.sends.push(SendRecord {
            at: now,
            session_id: session_id.into(),
        });
        Ok(())
    }

    /// Charges a resend of the delivered session `session_id` (SPEC §7) like a send: refused
    /// while the destination is locked or its window is full (unless `test`), else recorded in
    /// the window; the session's active entry, if it is the active one, lives until
    /// `expires_at`. Report the gateway's answer with [`DestinationGuard::delivery`]: a definite
    /// failure is refunded and the entry stays, as the session does.
    pub fn charge_resend(
        &mut self,
        session_id: &str,
        expires_at: UnixMillis,
        test: bool,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<(), Error> {
        self.prune(policy, now);
        self.charge(session_id, test, policy, now)?;
        if let Some(a) = self.active.iter_mut().find(|a| a.session_id == session_id) {
            a.expires_at = a.expires_at.max(expires_at);
        }
        Ok(())
    }

    /// Records the gateway's answer for a session admitted with `Send`. Returns the id of a
    /// session the host must now cancel (the one replaced with reuse off, or this one if a newer
    /// send superseded it while it was in flight).
    pub fn delivery(&mut self, session_id: &str, outcome: DeliveryOutcome) -> Option<String> {
        let index = self.active.iter().position(|a| a.session_id == session_id);
        if outcome == DeliveryOutcome::Failed {
            if let Some(i) = self.sends.iter().rposition(|s| s.session_id == session_id) {
                self.sends.remove(i);
            }
        }
        match (outcome, index) {
            (DeliveryOutcome::Delivered, Some(i)) => {
                let a = self.active.get_mut(i)?;
                a.confirmed = true;
                a.previous.take().map(|p| p.session_id)
            }
            // A confirmed entry's session is live whatever became of a resend of it: only the
            // charge is refunded (above), on a definite failure.
            (_, Some(i)) if self.active.get(i).is_some_and(|a| a.confirmed) => None,
            (_, Some(i)) => {
                let a = self.active.swap_remove(i);
                if let Some(previous) = a.previous {
                    self.active.push(*previous);
                }
                None
            }
            (_, None) => {
                // Superseded while in flight: its send has ended, so it must not come back if
                // the newer send fails (it would be "in flight" forever, or canceled but reused).
                for a in &mut self.active {
                    unlink(&mut a.previous, session_id);
                }
                (outcome == DeliveryOutcome::Delivered).then(|| session_id.into())
            }
        }
    }

    /// Records a verification outcome: INVALID extends the streak (locking the destination for
    /// 1 h at `failureStreakLimit`), APPROVED resets it; a session that is approved or locked
    /// stops being active. Returns whether the guard changed.
    pub fn record_verify(
        &mut self,
        session_id: &str,
        outcome: VerifyOutcome,
        policy: &Policy,
        now: UnixMillis,
    ) -> bool {
        self.prune(policy, now);
        match outcome {
            VerifyOutcome::Invalid { .. } => {
                self.failure_streak = self.failure_streak.saturating_add(1);
                if self.failure_streak >= policy.failure_streak_limit && self.locked_until.is_none()
                {
                    self.locked_until = Some(now.plus_secs(DESTINATION_LOCK_SECS));
                }
                if outcome.locked_session() {
                    self.forget(session_id);
                }
                true
            }
            VerifyOutcome::Approved => {
                self.failure_streak = 0;
                self.forget(session_id);
                true
            }
            _ => false,
        }
    }

    /// The session a verify by destination checks (SPEC §7): the newest delivered, unexpired
    /// session for `purpose` — an entry still in flight stands for the one it replaces, whose
    /// code is still the one the user holds.
    #[must_use]
    pub fn active_session(&self, purpose: Purpose, now: UnixMillis) -> Option<&str> {
        let mut entry = self.active.iter().find(|a| a.purpose == purpose);
        while let Some(a) = entry {
            if a.confirmed && now < a.expires_at {
                return Some(&a.session_id);
            }
            if a.confirmed {
                return None;
            }
            entry = a.previous.as_deref();
        }
        None
    }

    /// Stops treating `session_id` as active (it was found used, locked or gone).
    pub fn forget(&mut self, session_id: &str) {
        self.active.retain(|a| a.session_id != session_id);
    }

    /// Nothing left worth storing: the host may delete the guard.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.sends.is_empty()
            && self.active.is_empty()
            && self.failure_streak == 0
            && self.locked_until.is_none()
    }

    /// The next time pruning would change something (for a cleanup alarm), if any.
    #[must_use]
    pub fn next_change(&self, policy: &Policy) -> Option<UnixMillis> {
        let window_ms = u64::from(policy.sends_per_destination.window_seconds).saturating_mul(1000);
        let sends = self.sends.iter().map(|s| s.at.plus_millis(window_ms));
        // An unconfirmed send is pruned when it goes stale, if that comes before its expiry.
        let active = self.active.iter().map(|a| {
            if a.confirmed {
                a.expires_at
            } else {
                a.expires_at
                    .min(a.admitted_at.plus_millis(IN_FLIGHT_STALE_MS))
            }
        });
        sends.chain(active).chain(self.locked_until).min()
    }

    /// Stored JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads stored JSON back ([`Error::CorruptState`] on anything else).
    pub fn from_json(s: &str) -> Result<DestinationGuard, Error> {
        let g: DestinationGuard = serde_json::from_str(s).map_err(|_| Error::CorruptState {
            message: "stored destination guard is not valid JSON of version 1".into(),
        })?;
        if g.v != STATE_VERSION {
            return Err(Error::CorruptState {
                message: "stored destination guard has an unknown version".into(),
            });
        }
        Ok(g)
    }
}

/// Most replaced entries kept under one active entry. Each is one more level of JSON nesting,
/// and `serde_json` refuses values nested over 128 deep. Found with the `guard_state` fuzz
/// target's invariant (a changed guard reads back as itself): a chain of 126 sends replaced while
/// in flight (test numbers, so uncharged; reuse off) made a guard that
/// [`DestinationGuard::from_json`] could not read back, so every later request for that
/// destination failed. A replaced send dropped from the chain is treated like one that ended:
/// if it is delivered after all, [`DestinationGuard::delivery`] asks the host to cancel it.
pub const MAX_REPLACED_CHAIN: usize = 64;

/// Keeps the first `keep` entries of a chain of replaced entries, dropping the older rest.
fn truncate_chain(slot: &mut Option<Box<ActiveSession>>, keep: usize) {
    match (keep, slot) {
        (_, None) => {}
        (0, slot) => *slot = None,
        (n, Some(p)) => truncate_chain(&mut p.previous, n.saturating_sub(1)),
    }
}

/// Removes `session_id` from a chain of replaced entries, keeping the rest of the chain.
fn unlink(slot: &mut Option<Box<ActiveSession>>, session_id: &str) {
    if slot.as_ref().is_some_and(|p| p.session_id == session_id) {
        let rest = slot.take().and_then(|p| p.previous);
        *slot = rest;
    } else if let Some(p) = slot {
        unlink(&mut p.previous, session_id);
    }
}

/// The workspace flood shield: a fixed one-minute window (SPEC allows approximation here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct FloodShield {
    /// Start of the current minute window.
    pub window_start: UnixMillis,
    /// Sends admitted in it.
    pub count: u32,
}

impl FloodShield {
    /// Admits one send or refuses with 429 `RATE_LIMITED` until the window ends.
    pub fn admit(&mut self, limit: u32, now: UnixMillis) -> Result<(), Error> {
        // A `now` a little before the window's start is a request that read its clock before
        // another one that opened the window reached the counter (concurrent requests, hosts
        // with skewed clocks): it belongs to this window. Resetting on it let a burst through
        // one send over the limit (CI, issue 19). Only a clock a whole window back starts anew.
        if now >= self.window_start.plus_secs(60) || now.plus_secs(60) <= self.window_start {
            *self = FloodShield {
                window_start: now,
                count: 0,
            };
        }
        if self.count >= limit {
            let until = self.window_start.plus_secs(60);
            let from = if now < self.window_start {
                self.window_start
            } else {
                now
            };
            return Err(Error::RateLimited {
                retry_after_secs: retry_secs_from_millis(from.millis_until(until)),
            });
        }
        self.count = self.count.saturating_add(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrent requests read their clocks before they reach the counter, in any order: one
    /// whose `now` is a little before the window's start counts in that window (it reset the
    /// window and let an 11th send through a limit of 10 in CI); a clock a whole window back
    /// starts a new window.
    #[test]
    fn flood_shield_counts_a_slightly_earlier_clock_in_the_window() {
        let t0 = UnixMillis(10_000_000);
        let mut s = FloodShield::default();
        for _ in 0..3 {
            s.admit(3, t0).unwrap();
        }
        let late = UnixMillis(t0.0 - 40);
        match s.admit(3, late) {
            Err(Error::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 60),
            other => panic!("an earlier clock inside the window is refused, got {other:?}"),
        }
        assert_eq!((s.window_start, s.count), (t0, 3));
        assert!(
            s.admit(3, UnixMillis(t0.0 - 60_000)).is_ok(),
            "a whole window back: new"
        );
        assert!(s.admit(3, t0.plus_secs(60)).is_ok(), "the window ended");
    }

    /// Verify by destination checks the newest delivered, unexpired session of the purpose: a
    /// newer send still in flight stands for the one it replaces (whose code the user holds), an
    /// approved one is forgotten, an expired one is none, and another purpose is not looked at.
    #[test]
    fn active_session_for_verify_by_destination() {
        let policy = Policy {
            reuse: false,
            ..Policy::default()
        };
        let t0 = UnixMillis(1_000_000);
        let mut g = DestinationGuard::new();
        assert_eq!(g.active_session(Purpose::Login, t0), None);
        let exp = t0.plus_secs(300);
        g.admit(Purpose::Login, "a", exp, false, &policy, t0)
            .unwrap();
        assert_eq!(
            g.active_session(Purpose::Login, t0),
            None,
            "in flight, nothing before it"
        );
        g.delivery("a", DeliveryOutcome::Delivered);
        assert_eq!(g.active_session(Purpose::Login, t0), Some("a"));
        assert_eq!(g.active_session(Purpose::PasswordReset, t0), None);
        g.admit(Purpose::Login, "b", exp.plus_secs(10), false, &policy, t0)
            .unwrap();
        assert_eq!(
            g.active_session(Purpose::Login, t0),
            Some("a"),
            "b still in flight"
        );
        g.delivery("b", DeliveryOutcome::Delivered);
        assert_eq!(g.active_session(Purpose::Login, t0), Some("b"));
        assert_eq!(
            g.active_session(Purpose::Login, exp.plus_secs(10)),
            None,
            "expired"
        );
        g.record_verify("b", VerifyOutcome::Approved, &policy, t0);
        assert_eq!(
            g.active_session(Purpose::Login, t0),
            None,
            "approved: forgotten"
        );
    }

    /// Found by the property test: with reuse off, a send replaced while in flight timed out
    /// (while nested), then the newer one timed out too. The old entry must not come back as
    /// "in flight", or a later request would wait for a send nobody is making.
    #[test]
    fn superseded_send_that_ended_is_not_restored() {
        let mut policy = Policy {
            reuse: false,
            ..Policy::default()
        };
        let t0 = UnixMillis(1_000_000);
        let exp = t0.plus_secs(60);
        let mut g = DestinationGuard::new();
        assert_eq!(
            g.admit(Purpose::Login, "s1", exp, true, &policy, t0),
            Ok(Admission::Send)
        );
        assert_eq!(
            g.admit(Purpose::Login, "s2", exp, false, &policy, t0),
            Ok(Admission::Send)
        );
        assert_eq!(g.delivery("s1", DeliveryOutcome::TimedOut), None);
        assert_eq!(g.delivery("s2", DeliveryOutcome::TimedOut), None);
        assert!(g.active.is_empty());
        policy.reuse = true;
        let later = t0.plus_secs(10);
        assert_eq!(
            g.admit(Purpose::Login, "s3", exp, true, &policy, later),
            Ok(Admission::Send)
        );
        // A superseded send that is delivered is canceled and not restored either.
        policy.reuse = false;
        assert_eq!(
            g.admit(Purpose::Login, "s4", exp, true, &policy, later),
            Ok(Admission::Send)
        );
        assert_eq!(
            g.delivery("s3", DeliveryOutcome::Delivered),
            Some("s3".into())
        );
        assert_eq!(g.delivery("s4", DeliveryOutcome::Failed), None);
        assert!(g.active.is_empty());
    }
}
