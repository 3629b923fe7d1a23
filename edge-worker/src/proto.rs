//! Messages between the Worker and its Durable Objects (JSON over the stub's fetch).

use otpkit_core::policy::Policy;
use otpkit_core::{Purpose, UnixMillis};
use serde::{Deserialize, Serialize};

/// Worker → DestinationObject.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum DestinationCall {
    /// Decide a request (send / reuse / wait), waiting for an in-flight send if there is one.
    Admit {
        purpose: Purpose,
        session_id: String,
        expires_at: UnixMillis,
        test: bool,
        policy: Policy,
    },
    /// Report the gateway's answer for an admitted send.
    Delivery {
        session_id: String,
        outcome: Delivery,
        policy: Policy,
    },
    /// Record a verification outcome (failure streak, end of reuse).
    Verified {
        session_id: String,
        status: String,
        attempts_left: u8,
        policy: Policy,
    },
    /// Stop treating a session as active.
    Forget { session_id: String },
}

/// A gateway outcome on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    /// 2xx.
    Delivered,
    /// Non-2xx or refused.
    Failed,
    /// No answer in 10 s.
    TimedOut,
}

/// DestinationObject → Worker, for `Admit`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AdmitAnswer {
    /// Deliver it.
    Send,
    /// Answer with this delivered session.
    Reuse { session_id: String },
    /// The send this request waited for failed.
    Failed,
    /// Refused (429).
    Refused { code: String, retry_after_secs: u32 },
}

/// DestinationObject → Worker, for `Delivery`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAnswer {
    /// A session the Worker must cancel (reuse off, replaced).
    pub cancel: Option<String>,
}

/// Worker → SessionObject.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum SessionCall {
    /// Store a delivered session (JSON of `otpkit_core::Session`).
    Create { session: String },
    /// Read it.
    Get,
    /// Verify a code (the code travels only inside this internal request).
    Verify { workspace_id: String, code: String },
    /// Cancel it (reuse off and a newer code was delivered).
    Cancel,
}

/// SessionObject → Worker, for `Verify`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyAnswer {
    /// Core status name (`APPROVED`, …).
    pub status: String,
    /// Attempts left after this verification.
    pub attempts_left: u8,
    /// The session after verifying (JSON), absent when not found.
    pub session: Option<String>,
}
