//! The `Engine` class: the part that holds the pepper. The flows take it to plan sends and
//! verify codes; the Redis store calls `verifyStored` inside its compare-and-set.

use crate::errors::throw;
use crate::reports::{delta_line, event_line};
use crate::{ms, num};
use napi::Result;
use napi_derive::napi;
use otpkit_core::analytics;
use otpkit_core::audit::AuditEvent;
use otpkit_core::{Error, Pepper, Session, VerifyOutcome};

/// The pepper-holding part: planning sends and verifying codes.
#[napi]
pub struct Engine {
    /// The pepper, or why there is none (`MISCONFIGURED`, answered by every operation).
    pub(crate) pepper: std::result::Result<Pepper, Error>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("configured", &self.pepper.is_ok())
            .finish()
    }
}

impl Engine {
    pub(crate) fn pepper(&self) -> Result<&Pepper> {
        self.pepper.as_ref().map_err(throw)
    }
}

#[napi]
impl Engine {
    /// `pepper`: the `OTP_PEPPER` (≥ 32 bytes). Without one every operation throws
    /// `MISCONFIGURED`, as SPEC wants a host to refuse to serve.
    #[napi(constructor)]
    pub fn new(pepper: Option<String>) -> Self {
        Engine {
            pepper: Pepper::new(pepper.as_deref().unwrap_or("").as_bytes()),
        }
    }

    /// Has a usable pepper.
    #[napi(getter)]
    pub fn configured(&self) -> bool {
        self.pepper.is_ok()
    }

    /// Throws `MISCONFIGURED` without a pepper.
    #[napi]
    pub fn check(&self) -> Result<()> {
        self.pepper().map(|_| ())
    }

    /// Verifies `code` against a stored session (JSON, or `null` when there is none) for a
    /// caller in `wsId`: the outcome, and the state to write back when it changed.
    #[napi]
    pub fn verify_json(
        &self,
        state: Option<String>,
        ws_id: String,
        code: String,
        now: f64,
    ) -> Result<VerifyStep> {
        let pepper = self.pepper()?;
        let Some(s) = read_session(state.as_deref())? else {
            return Ok(not_found_step());
        };
        let now = ms(now);
        let (v, after) = s.verify(&ws_id, &code, now, pepper);
        if v.outcome == VerifyOutcome::NotFound {
            return Ok(not_found_step());
        }
        let consumed = v.outcome.consumed_attempt();
        Ok(VerifyStep {
            status: v.outcome.status().to_string(),
            attempts_left: u32::from(v.attempts_left),
            state: consumed.then(|| after.to_json()),
            dest: Some(after.dest.clone()),
            verified_at: after.verified_at.map(num),
            consumed,
            ended: v.outcome == VerifyOutcome::Approved || v.outcome.locked_session(),
            audit: AuditEvent::for_verify(&after, v.outcome, now)
                .as_ref()
                .map(event_line),
            analytics: analytics::verified(&after, v.outcome)
                .as_ref()
                .map(delta_line),
        })
    }

    /// A flow's `verify` effect on stored JSON (`otpkit_core::flow::verify_stored`), for a
    /// store that writes back with a compare-and-set.
    #[napi]
    pub fn verify_stored(
        &self,
        state: Option<String>,
        ws_id: String,
        code: String,
        now: f64,
    ) -> Result<VerifyStored> {
        let pepper = self.pepper()?;
        let session = read_session(state.as_deref())?;
        let dest = session.as_ref().map(|s| s.dest.clone());
        let step = otpkit_core::flow::verify_stored(session, &ws_id, &code, ms(now), pepper);
        Ok(VerifyStored {
            outcome: serde_json::to_string(&step.outcome).unwrap_or_default(),
            write: step.write.as_ref().map(Session::to_json),
            dest,
        })
    }
}

fn read_session(state: Option<&str>) -> Result<Option<Session>> {
    state
        .map(Session::from_json)
        .transpose()
        .map_err(|e| throw(&e))
}

/// A flow's `verify` effect on a stored session (JSON or `null`), for a store that writes back
/// with a compare-and-set: the outcome to feed the flow (JSON) and the session to write (JSON,
/// absent when nothing changed).
#[napi(object)]
#[derive(Debug)]
pub struct VerifyStored {
    /// `otpkit_core::flow::Outcome` JSON.
    pub outcome: String,
    /// The session to store back, when an attempt was consumed.
    pub write: Option<String>,
    /// The session's destination (absent when not found).
    pub dest: Option<String>,
}

/// The outcome of a verification against stored state.
#[napi(object)]
#[derive(Debug)]
pub struct VerifyStep {
    /// `APPROVED`, `INVALID`, `EXPIRED`, `MAX_ATTEMPTS_REACHED`, `ALREADY_USED`, `NOT_FOUND`.
    pub status: String,
    /// Attempts left after this verification.
    pub attempts_left: u32,
    /// The state to store (JSON) when it changed; absent when nothing is to be written.
    pub state: Option<String>,
    /// The session's destination (absent for NOT_FOUND).
    pub dest: Option<String>,
    /// When it was verified (ms).
    pub verified_at: Option<f64>,
    /// An attempt was consumed (the guard's failure streak must hear of it).
    pub consumed: bool,
    /// The session stopped being active (approved, or its last attempt failed).
    pub ended: bool,
    /// The audit line (absent for NOT_FOUND).
    pub audit: Option<String>,
    /// The analytics delta (JSON), when this verification approved or locked the session.
    pub analytics: Option<String>,
}

fn not_found_step() -> VerifyStep {
    VerifyStep {
        status: "NOT_FOUND".into(),
        attempts_left: 0,
        state: None,
        dest: None,
        verified_at: None,
        consumed: false,
        ended: false,
        audit: None,
        analytics: None,
    }
}

/// The core outcome named by a [`VerifyStep`]'s `status` and `attemptsLeft`.
pub(crate) fn outcome_of(status: &str, attempts_left: u32) -> Result<VerifyOutcome> {
    VerifyOutcome::from_status(status, u8::try_from(attempts_left).unwrap_or(u8::MAX))
        .ok_or_else(|| throw(&Error::invalid("status", "is not a verify status")))
}
