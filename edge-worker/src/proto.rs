//! Messages between the Worker and its Durable Objects (JSON over the stub's fetch). The
//! objects answer with the core's flow values: `Admit` with [`otpkit_core::flow::Admitted`],
//! `Delivery` with [`otpkit_core::flow::Outcome::Confirmed`], `Verify` with
//! [`otpkit_core::flow::Outcome::Verified`] ([`otpkit_core::flow::verify_stored`]), `Receipt`
//! with [`otpkit_core::flow::Outcome::ReceiptApplied`].

use otpkit_core::guard::DeliveryOutcome;
use otpkit_core::policy::Policy;
use otpkit_core::{Purpose, UnixMillis};
use serde::{Deserialize, Serialize};

/// Worker → DestinationObject.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum DestinationCall {
    /// Decide a request (send / reuse / refused), waiting for an in-flight send if there is one
    /// (so it never answers `Wait`: a waiter is answered `Reuse` or `Failed`).
    Admit {
        purpose: Purpose,
        session_id: String,
        expires_at: UnixMillis,
        test: bool,
        /// A resend of this delivered session: charge it (`Send` or a refusal, never a wait).
        #[serde(default)]
        resend: bool,
        policy: Policy,
    },
    /// Report the gateway's answer for an admitted send.
    Delivery {
        session_id: String,
        outcome: DeliveryOutcome,
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
    /// The session a verify by destination checks, answered as [`otpkit_core::flow::Outcome::Active`]
    /// (read only).
    Active { purpose: Purpose },
}

/// Worker → SessionObject.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum SessionCall {
    /// Store a delivered session (JSON of `otpkit_core::Session`).
    Create { session: String },
    /// Read it.
    Get,
    /// Verify a code (the code travels only inside this internal request), approving the
    /// payment it is bound to, if any (PSD2).
    Verify {
        workspace_id: String,
        code: String,
        #[serde(default)]
        transaction: Option<otpkit_core::transaction::Transaction>,
    },
    /// Cancel it (reuse off and a newer code was delivered).
    Cancel,
    /// One step of a resend ([`otpkit_core::flow::resend_stored`]).
    Resend {
        workspace_id: String,
        step: otpkit_core::flow::ResendStep,
    },
    /// Apply a delivery receipt ([`otpkit_core::flow::receipt_stored`]), answered with
    /// [`otpkit_core::flow::Outcome::ReceiptApplied`].
    Receipt {
        workspace_id: String,
        receipt: otpkit_core::delivery::Receipt,
    },
}
