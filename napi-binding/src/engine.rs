//! The `Engine` class: the part that holds the pepper. The flows take it to plan sends and
//! verify codes; the Redis store calls `verifyStored` inside its compare-and-set.

use crate::errors::throw;
use crate::ms;
use napi::Result;
use napi_derive::napi;
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

    /// A flow's `verify` effect on stored JSON (`otpkit_core::flow::verify_stored`), for a
    /// store that writes back with a compare-and-set.
    #[napi]
    pub fn verify_stored(
        &self,
        state: Option<String>,
        ws_id: String,
        code: String,
        now: f64,
        transaction: Option<String>,
    ) -> Result<VerifyStored> {
        let pepper = self.pepper()?;
        let session = read_session(state.as_deref())?;
        let dest = session.as_ref().map(|s| s.dest.clone());
        // The flow's own JSON of the payment being approved (PSD2), when the verify carries one.
        let tx: Option<otpkit_core::transaction::Transaction> = transaction
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| throw(&otpkit_core::Error::invalid("transaction", "malformed")))?;
        let step = otpkit_core::flow::verify_stored_for(
            session,
            &ws_id,
            &code,
            tx.as_ref(),
            ms(now),
            pepper,
        );
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

/// The core outcome named by a verify `status` and `attemptsLeft`.
pub(crate) fn outcome_of(status: &str, attempts_left: u32) -> Result<VerifyOutcome> {
    VerifyOutcome::from_status(status, u8::try_from(attempts_left).unwrap_or(u8::MAX))
        .ok_or_else(|| throw(&Error::invalid("status", "is not a verify status")))
}
