//! The order of the steps: request, verify and status as sans-IO state machines.
//!
//! A host starts a flow with the parsed input, the workspace, `now`, entropy and the pepper,
//! then loops (the quinn-proto model):
//!
//! ```text
//! loop {
//!     match flow.poll() {
//!         Step::Io(io)        => { let result = perform(io).await; flow.handle(result); }
//!         Step::Answer(reply) => send(reply),   // keep polling: what follows the answer
//!         Step::Done          => break,
//!     }
//! }
//! ```
//!
//! Every [`Io`] handed out must be answered with exactly one [`Outcome`] before the next poll.
//! Effects polled before the [`Step::Answer`] decide it; those polled after it are bookkeeping
//! that may follow the answer (a Worker runs them in `waitUntil`, Node in the background), and
//! their failures change nothing.
//!
//! Every decision is made here, once: retrying the admission when a reused session turns out to
//! be stale, refunding a definite gateway failure, charging a timeout, answering 503 when the
//! store fails after a send, coalescing concurrent requests, the failure streak, the audit
//! events and the analytics deltas. A store may still fuse effects into one atomic step: the
//! admission carries the flood shield's limit ([`Io::Admit::flood_limit`]) and the daily spend
//! cap's charge ([`Io::Admit::spend`], [`crate::spend`]) so a store can charge all three in one
//! step, and a store that confirms a delivery in the same step as it stores the
//! session answers [`Io::StoreSession`] with [`Outcome::StoredAndConfirmed`], which skips the
//! [`Io::ReportDelivery`] that would otherwise follow the answer.

use crate::analytics::{self, Delta};
use crate::audit::AuditEvent;
use crate::error::Error;
use crate::fraud::FraudCharge;
use crate::gateway::OutgoingMessage;
use crate::guard::DeliveryOutcome;
use crate::http::envelope::{self, Reply};
use crate::http::request::{Dialect, IssueRequest, VerifyRequest};
use crate::policy::Policy;
use crate::secret::Pepper;
use crate::session::{plan_issue, Session, Verification, VerifyOutcome};
use crate::spend::SpendPlan;
use crate::time::UnixMillis;
use crate::transaction::Transaction;
use crate::validate::{self, Purpose};
use crate::workspace::WorkspaceRecord;
use crate::Entropy;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// How many times a request is admitted at the destination guard before it gives up with 503
/// (each retry follows a reused session that turned out to be stale, and is forgotten first).
pub const MAX_ADMITS: u8 = 3;

/// What a host does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Perform this IO, then [`RequestFlow::handle`] (or the flow's `handle`) its outcome.
    Io(Io),
    /// The answer: send it now (an `Err` is mapped by the host: envelope, HTTP status, JS error).
    /// Polling goes on with what follows the answer.
    Answer(Result<Reply, Error>),
    /// Nothing left to do.
    Done,
}

/// A verification code inside an effect: serialized as the plain string (the store checks it),
/// never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CodeText(pub String);

impl core::fmt::Debug for CodeText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One IO effect. All are scoped to the flow's workspace (the host knows it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "io",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Io {
    /// Read the reuse hint of (dest, purpose): answer [`Outcome::ReuseHint`]. Only asked of
    /// hosts that keep hints ([`HostTraits::reuse_hints`]); a failed read counts as no hint.
    ReadReuseHint {
        /// Destination.
        dest: String,
        /// Purpose.
        purpose: Purpose,
    },
    /// Read a session of the workspace: answer [`Outcome::Session`].
    ReadSession {
        /// Session id.
        session_id: String,
    },
    /// Decide a send at the destination guard (atomically): [`DestinationGuard::admit`] with
    /// these values and the workspace policy. With `flood_limit` and/or `spend`, charge the
    /// workspace flood shield and the daily spend counter too, once the guard says `Send`, in
    /// one step that charges both or neither ([`charge_workspace`]). Answer
    /// [`Outcome::Admitted`].
    ///
    /// [`DestinationGuard::admit`]: crate::guard::DestinationGuard::admit
    /// [`charge_workspace`]: crate::spend::charge_workspace
    Admit {
        /// Destination.
        dest: String,
        /// Purpose.
        purpose: Purpose,
        /// The new session's id.
        session_id: String,
        /// Its expiry.
        expires_at: UnixMillis,
        /// A test number (not charged).
        test: bool,
        /// The flood shield's limit per minute, when this send is charged to it.
        flood_limit: Option<u32>,
        /// The charge against the daily spend cap (policy `dailySpendLimit`), when there is
        /// one ([`crate::spend`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spend: Option<crate::spend::SpendCharge>,
        /// Fraud Guard's check of the destination's prefix (policy `fraudGuard`), when it is
        /// on for this send ([`crate::fraud`]); asked first, with the workspace's other limits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fraud: Option<crate::fraud::FraudCharge>,
        /// A resend of the delivered session `session_id`: charge it with
        /// [`DestinationGuard::charge_resend`] instead (answer `Send` or a refusal).
        ///
        /// [`DestinationGuard::charge_resend`]: crate::guard::DestinationGuard::charge_resend
        #[serde(default, skip_serializing_if = "core::ops::Not::not")]
        resend: bool,
    },
    /// Wait until the send of `session_id` (admitted by another request) ends: answer
    /// [`Outcome::Awaited`] (`true` once delivered; `false` if it failed or went stale after
    /// [`crate::guard::IN_FLIGHT_STALE_MS`]).
    AwaitSend {
        /// Destination.
        dest: String,
        /// The session being delivered.
        session_id: String,
    },
    /// Stop treating `session_id` as active at the guard ([`crate::guard::DestinationGuard::forget`]).
    Forget {
        /// Destination.
        dest: String,
        /// Session id.
        session_id: String,
    },
    /// Send this message through the gateway (bounded by [`crate::gateway::TIMEOUT_MS`]):
    /// answer [`Outcome::Delivery`].
    Deliver {
        /// The message (its text holds the code: it goes to the gateway and nowhere else).
        message: OutgoingMessage,
    },
    /// Store the delivered session (with its purge time, [`Session::purge_at`]): answer
    /// [`Outcome::Done`], or [`Outcome::StoredAndConfirmed`] when the store also confirmed the
    /// delivery at the guard in the same step.
    StoreSession {
        /// The session.
        session: Box<Session>,
    },
    /// Record the gateway's outcome at the guard ([`crate::guard::DestinationGuard::delivery`]):
    /// answer [`Outcome::Confirmed`] with the session the guard says to cancel.
    ReportDelivery {
        /// Destination.
        dest: String,
        /// Session id.
        session_id: String,
        /// What the gateway did.
        outcome: DeliveryOutcome,
    },
    /// Hand `micros` charged to the workspace's spend counter of `day` back
    /// ([`crate::spend::SpendCounter::refund`]): a definite delivery failure, or what a cheaper
    /// channel did not use. Answer [`Outcome::Done`].
    RefundSpend {
        /// The UTC day charged ([`crate::spend::SpendCharge::day`]).
        day: u32,
        /// Micro-units handed back.
        micros: u64,
    },
    /// Count an approved verification in Fraud Guard's prefix of the session
    /// ([`crate::fraud::PrefixCount::verified`]). Answer [`Outcome::Done`].
    FraudVerified {
        /// The prefix ([`crate::session::Session::fraud`]).
        prefix: String,
        /// The window it is counted with (ms).
        window_ms: u64,
    },
    /// Read every Fraud Guard prefix count of `workspace_id`: answer [`Outcome::Prefixes`].
    ReadFraud {
        /// Workspace id.
        workspace_id: String,
    },
    /// End the block of `prefix` in `workspace_id` and clear its counts
    /// ([`crate::fraud::PrefixCount::unblock`] at `now`; nothing changes when it is not
    /// blocked). Answer [`Outcome::Unblocked`].
    UnblockPrefix {
        /// Workspace id.
        workspace_id: String,
        /// The prefix.
        prefix: String,
        /// The flow's clock.
        now: UnixMillis,
    },
    /// Cancel a session ([`Session::cancel`]) that a newer delivered code replaced (reuse off).
    CancelSession {
        /// Session id.
        session_id: String,
    },
    /// Point the reuse hint of (dest, purpose) at `session_id` for `ttl_secs`.
    PutReuseHint {
        /// Destination.
        dest: String,
        /// Purpose.
        purpose: Purpose,
        /// Session id.
        session_id: String,
        /// Seconds to keep it.
        ttl_secs: u64,
    },
    /// Drop the reuse hint of (dest, purpose).
    DropReuseHint {
        /// Destination.
        dest: String,
        /// Purpose.
        purpose: Purpose,
    },
    /// The session a verify by destination checks: [`crate::guard::DestinationGuard::active_session`]
    /// of the guard of `dest` (read only). Answer [`Outcome::Active`].
    ReadActive {
        /// Destination.
        dest: String,
        /// Purpose.
        purpose: Purpose,
    },
    /// Verify `code` against the stored session atomically: [`verify_stored`] between the read
    /// and the write. Answer [`Outcome::Verified`].
    Verify {
        /// Session id.
        session_id: String,
        /// The code given.
        code: CodeText,
        /// The payment being approved (PSD2), for [`verify_stored_for`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transaction: Option<Box<Transaction>>,
    },
    /// One step of a resend at the stored session, atomically: [`resend_stored`] between the
    /// read and the write. Answer [`Outcome::Resent`].
    Resend {
        /// Session id.
        session_id: String,
        /// What to do.
        step: ResendStep,
    },
    /// Record a verification at the guard ([`crate::guard::DestinationGuard::record_verify`]):
    /// the failure streak, and the end of an approved or locked session's reuse.
    RecordVerify {
        /// Destination.
        dest: String,
        /// Session id.
        session_id: String,
        /// Verify status (`APPROVED`, `INVALID`, …).
        status: String,
        /// Attempts left after it.
        attempts_left: u8,
    },
    /// Append audit events and apply analytics deltas (one write where the store can).
    Record {
        /// Audit events, oldest first.
        events: Vec<AuditEvent>,
        /// Analytics deltas.
        deltas: Vec<Delta>,
    },
    /// Read a workspace record: answer [`Outcome::Workspace`].
    ReadWorkspace {
        /// Workspace id.
        workspace_id: String,
    },
    /// Store a workspace record (whole), compare-and-set: only if the stored record's
    /// `revision` is `expected` (`None`: only if none is stored). Answer [`Outcome::Done`], or
    /// [`Outcome::Conflict`] when another write came first (nothing written: the flow reads the
    /// record again and re-applies its change).
    PutWorkspace {
        /// The record (its `revision` is the new one).
        workspace: Box<WorkspaceRecord>,
        /// The revision it replaces.
        expected: Option<u64>,
    },
    /// Point an API key hash at its workspace.
    IndexKey {
        /// Hex SHA-256 of the key.
        key_hash: String,
        /// Workspace id.
        workspace_id: String,
    },
    /// Take an API key hash out of the index (revocation).
    UnindexKey {
        /// Hex SHA-256 of the key.
        key_hash: String,
    },
    /// One page of every workspace record, in a stable order (the memory and Redis stores: by
    /// id): at most `limit`, starting after `cursor` (a `next` this store answered before;
    /// `None`: from the start). Answer [`Outcome::Workspaces`], or [`Outcome::Conflict`] when
    /// the cursor is not one this store could have answered (400 on `cursor`).
    ListWorkspaces {
        /// Where the page starts (opaque to the core: the store's own).
        cursor: Option<String>,
        /// Most records in the page (1–[`crate::flow::LIST_MAX_LIMIT`]).
        limit: u32,
    },
    /// Append audit events to the trail of `workspace_id`, and apply its analytics `deltas`
    /// (the admin and receipt flows, which no workspace scopes): answer [`Outcome::Done`].
    Audit {
        /// The workspace whose trail they go to.
        workspace_id: String,
        /// Audit events, oldest first.
        events: Vec<AuditEvent>,
        /// Analytics deltas of that workspace (a delivery receipt's; none for admin actions).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deltas: Vec<Delta>,
    },
    /// Look up whose session a delivery receipt is about by its index key
    /// ([`crate::delivery::Receipt::index_key`]: `s:<session id>` or `m:<message id>`), in the
    /// entries stores keep for each delivered session ([`crate::delivery::index_entries`]).
    /// Answer [`Outcome::Owner`].
    FindReceipt {
        /// The index key.
        key: String,
    },
    /// Apply a delivery receipt to session `session_id` of `workspace_id` atomically:
    /// [`receipt_stored`] between the read and the write. Answer [`Outcome::ReceiptApplied`].
    ApplyReceipt {
        /// The session's workspace.
        workspace_id: String,
        /// Session id.
        session_id: String,
        /// The receipt.
        receipt: Box<crate::delivery::Receipt>,
    },
    /// Claim an `Idempotency-Key` (stored by its hash, per workspace) atomically, with the store's
    /// clock: [`crate::idempotency::claim_stored`] between the read and the write. Answer
    /// [`Outcome::Idempotency`].
    ClaimIdempotency {
        /// [`crate::idempotency::key_hash`].
        key_hash: String,
        /// [`crate::idempotency::fingerprint`] of the request.
        fingerprint: String,
    },
    /// Store the answer of a claimed key for replay, atomically: write `record` only if
    /// [`crate::idempotency::finish_stored`] says so. Answer [`Outcome::Done`].
    FinishIdempotency {
        /// The key's hash.
        key_hash: String,
        /// The done record (with the claim's `claimedAt` and `expiresAt`).
        record: Box<crate::idempotency::Record>,
    },
    /// Drop a claimed key (a 5xx answer is not stored, so a retry runs again), atomically:
    /// delete only if [`crate::idempotency::release_stored`] says so. Answer [`Outcome::Done`].
    ReleaseIdempotency {
        /// The key's hash.
        key_hash: String,
        /// The claim's time (its name).
        claimed_at: UnixMillis,
    },
    /// Wait this long (a duplicate waiting for the request in flight with its key), then answer
    /// [`Outcome::Done`].
    Pause {
        /// Milliseconds.
        millis: u64,
    },
}

impl Io {
    /// Its kind as serialized (`admit`, `readSession`, …): for logs and metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Io::ReadReuseHint { .. } => "readReuseHint",
            Io::ReadSession { .. } => "readSession",
            Io::Admit { .. } => "admit",
            Io::AwaitSend { .. } => "awaitSend",
            Io::Forget { .. } => "forget",
            Io::Deliver { .. } => "deliver",
            Io::StoreSession { .. } => "storeSession",
            Io::ReportDelivery { .. } => "reportDelivery",
            Io::RefundSpend { .. } => "refundSpend",
            Io::FraudVerified { .. } => "fraudVerified",
            Io::ReadFraud { .. } => "readFraud",
            Io::UnblockPrefix { .. } => "unblockPrefix",
            Io::CancelSession { .. } => "cancelSession",
            Io::PutReuseHint { .. } => "putReuseHint",
            Io::DropReuseHint { .. } => "dropReuseHint",
            Io::ReadActive { .. } => "readActive",
            Io::Verify { .. } => "verify",
            Io::Resend { .. } => "resend",
            Io::RecordVerify { .. } => "recordVerify",
            Io::Record { .. } => "record",
            Io::ReadWorkspace { .. } => "readWorkspace",
            Io::PutWorkspace { .. } => "putWorkspace",
            Io::IndexKey { .. } => "indexKey",
            Io::UnindexKey { .. } => "unindexKey",
            Io::ListWorkspaces { .. } => "listWorkspaces",
            Io::Audit { .. } => "audit",
            Io::FindReceipt { .. } => "findReceipt",
            Io::ApplyReceipt { .. } => "applyReceipt",
            Io::ClaimIdempotency { .. } => "claimIdempotency",
            Io::FinishIdempotency { .. } => "finishIdempotency",
            Io::ReleaseIdempotency { .. } => "releaseIdempotency",
            Io::Pause { .. } => "pause",
        }
    }
}

/// What the guard decided ([`Io::Admit`]'s answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Admitted {
    /// Deliver the new session's message.
    Send,
    /// A delivered, active session exists: answer with it if it is still reusable.
    Reuse {
        /// Its id.
        session_id: String,
    },
    /// Another request is delivering for this (dest, purpose): wait for it.
    Wait {
        /// The session being delivered.
        session_id: String,
    },
    /// The store waited for another request's send itself, and that send failed.
    Failed,
    /// Refused by the guard (429).
    Refused {
        /// `RATE_LIMITED` or `DESTINATION_LOCKED`.
        code: String,
        /// Seconds until a send may be admitted.
        retry_after_secs: u32,
    },
    /// The guard said send, but the flood shield refused (429 `RATE_LIMITED`).
    FloodRefused {
        /// Seconds until the shield's minute ends.
        retry_after_secs: u32,
        /// The guard recorded the send before the shield refused (a store that does not fuse
        /// the two): the flow refunds it with a failed [`Io::ReportDelivery`].
        admitted: bool,
    },
    /// The guard said send, but the daily spend cap refused (429 `SPEND_LIMIT_REACHED`); the
    /// flood shield was not counted.
    SpendRefused {
        /// Seconds until 00:00 UTC.
        retry_after_secs: u32,
        /// As for [`Admitted::FloodRefused`]: the guard recorded the send, refund it.
        admitted: bool,
    },
    /// The guard said send, but Fraud Guard refused (403 `FRAUD_SUSPECTED`); neither the
    /// spend nor the flood shield was counted.
    FraudRefused {
        /// This send's check began the block (audit `prefix_blocked`).
        new_block: bool,
        /// As for [`Admitted::FloodRefused`]: the guard recorded the send, refund it.
        admitted: bool,
    },
}

impl Admitted {
    /// The refusal of [`crate::spend::charge_workspace`] as an admission:
    /// [`Admitted::FraudRefused`] for `FRAUD_SUSPECTED`, [`Admitted::SpendRefused`] for
    /// `SPEND_LIMIT_REACHED`, else [`Admitted::FloodRefused`]. `admitted`: the guard recorded
    /// the send (it is not handed back in the same step).
    #[must_use]
    pub fn workspace_refused(r: &crate::spend::Refusal, admitted: bool) -> Admitted {
        let e = &r.error;
        let retry_after_secs = e.retry_after_secs().unwrap_or(1);
        match e {
            Error::FraudSuspected => Admitted::FraudRefused {
                new_block: r.new_block,
                admitted,
            },
            Error::SpendLimitReached { .. } => Admitted::SpendRefused {
                retry_after_secs,
                admitted,
            },
            _ => Admitted::FloodRefused {
                retry_after_secs,
                admitted,
            },
        }
    }

    /// The error a workspace refusal answers (`None` for other admissions).
    #[must_use]
    pub fn workspace_error(&self) -> Option<Error> {
        match *self {
            Admitted::FloodRefused {
                retry_after_secs, ..
            } => Some(Error::RateLimited { retry_after_secs }),
            Admitted::SpendRefused {
                retry_after_secs, ..
            } => Some(Error::SpendLimitReached { retry_after_secs }),
            Admitted::FraudRefused { .. } => Some(Error::FraudSuspected),
            _ => None,
        }
    }
}

/// The result of one [`Io`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "result",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Outcome {
    /// Performed; nothing to report.
    Done,
    /// [`Io::PutWorkspace`] not performed: the stored record is not at the expected revision.
    Conflict,
    /// The store could not perform it (`corrupt`: the stored state could not be read).
    Failed {
        /// Stored state is corrupt (500) rather than the store unreachable (503).
        #[serde(default)]
        corrupt: bool,
        /// The store does not match its deployment (500 `MISCONFIGURED`, e.g. a Redis client
        /// that is not a Cluster client on a Redis Cluster): what to set, never a secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        misconfigured: Option<String>,
    },
    /// [`Io::ReadReuseHint`].
    ReuseHint {
        /// The hinted session id.
        session_id: Option<String>,
    },
    /// [`Io::ReadActive`].
    Active {
        /// The active session's id (absent: none).
        session_id: Option<String>,
    },
    /// [`Io::ReadSession`].
    Session {
        /// The session (absent: none).
        session: Option<Session>,
    },
    /// [`Io::Admit`].
    Admitted {
        /// What the guard decided.
        admission: Admitted,
    },
    /// [`Io::AwaitSend`].
    Awaited {
        /// The awaited send was delivered.
        delivered: bool,
    },
    /// [`Io::Deliver`].
    Delivery {
        /// What the gateway did.
        outcome: DeliveryOutcome,
        /// The provider's message id in its reply ([`crate::gateway::message_id_of`]), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    /// [`Io::StoreSession`] performed together with a delivered [`Io::ReportDelivery`].
    StoredAndConfirmed {
        /// The session the guard says to cancel.
        cancel: Option<String>,
    },
    /// [`Io::ReportDelivery`].
    Confirmed {
        /// The session the guard says to cancel.
        cancel: Option<String>,
    },
    /// [`Io::ReadWorkspace`].
    Workspace {
        /// The record (absent: none).
        workspace: Option<WorkspaceRecord>,
    },
    /// [`Io::ListWorkspaces`].
    Workspaces {
        /// The page's records, in the store's order.
        workspaces: Vec<WorkspaceRecord>,
        /// Where the next page starts (`None`: this was the last).
        next: Option<String>,
    },
    /// [`Io::ReadFraud`].
    Prefixes {
        /// Every prefix count kept for the workspace, with its prefix (any order).
        prefixes: Vec<(String, crate::fraud::PrefixCount)>,
    },
    /// [`Io::UnblockPrefix`].
    Unblocked {
        /// The prefix was blocked (else nothing changed but its counts).
        was_blocked: bool,
    },
    /// [`Io::Resend`].
    Resent {
        /// The step was performed.
        done: bool,
        /// The session as stored after it (absent: none in this workspace).
        session: Option<Session>,
    },
    /// [`Io::Verify`].
    Verified {
        /// Verify status.
        status: String,
        /// Attempts left after it.
        attempts_left: u8,
        /// The session after verifying (absent when not found).
        session: Option<Session>,
    },
    /// [`Io::FindReceipt`].
    Owner {
        /// The entry's value, `workspaceId:sessionId` (absent: none).
        owner: Option<String>,
    },
    /// [`Io::ApplyReceipt`].
    ReceiptApplied {
        /// The session's delivery moved forward (and was stored).
        applied: bool,
        /// The session after it (absent: none in that workspace).
        session: Option<Session>,
    },
    /// [`Io::ClaimIdempotency`].
    Idempotency {
        /// What the claim found.
        claim: crate::idempotency::Claim,
    },
}

impl Outcome {
    /// A store failure as an outcome.
    #[must_use]
    pub fn failed(e: &Error) -> Outcome {
        Outcome::Failed {
            corrupt: matches!(e, Error::CorruptState { .. }),
            misconfigured: match e {
                Error::Misconfigured { message } => Some(String::from(&**message)),
                _ => None,
            },
        }
    }
}

mod admin;
mod cancel;
mod idempotent;
mod receipt;
mod resend;

pub use admin::{AdminAction, AdminFlow, ADMIN_RANDOM_BYTES, LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT};
pub use cancel::CancelFlow;
pub use idempotent::Idempotent;
pub use receipt::{receipt_stored, Fallback, ReceiptFlow, ReceiptSource};
pub use resend::{resend_stored, ResendFlow, ResendStep};

/// What every flow offers its driver, so one loop drives them all.
pub trait Flow {
    /// The next step.
    fn poll(&mut self) -> Step;
    /// Feeds the outcome of the IO last polled.
    fn handle(&mut self, outcome: Outcome);
}

macro_rules! impl_flow {
    ($($t:ty),*) => {$(
        impl Flow for $t {
            fn poll(&mut self) -> Step {
                <$t>::poll(self)
            }
            fn handle(&mut self, outcome: Outcome) {
                <$t>::handle(self, outcome)
            }
        }
    )*};
}
impl_flow!(
    RequestFlow,
    VerifyFlow,
    StatusFlow,
    AdminFlow,
    CancelFlow,
    ResendFlow,
    ReceiptFlow
);

impl<F: Flow + ?Sized> Flow for Box<F> {
    fn poll(&mut self) -> Step {
        (**self).poll()
    }
    fn handle(&mut self, outcome: Outcome) {
        (**self).handle(outcome);
    }
}

/// What a host can do beyond the effects every host performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostTraits {
    /// The host keeps reuse hints by (dest, purpose) (the Worker's KV): the request flow reads
    /// one first, and keeps them current.
    pub reuse_hints: bool,
}

/// An atomic verify step for a store: [`Session::verify`] on what it holds. `write` is the
/// session to store back (only when an attempt was consumed); `outcome` answers [`Io::Verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyStep {
    /// The answer to feed back.
    pub outcome: Outcome,
    /// What to write (in the same atomic step as the read), if anything.
    pub write: Option<Session>,
}

/// What a store does inside its critical section for [`Io::Verify`].
#[must_use]
pub fn verify_stored(
    stored: Option<Session>,
    workspace_id: &str,
    code: &str,
    now: UnixMillis,
    pepper: &Pepper,
) -> VerifyStep {
    verify_stored_for(stored, workspace_id, code, None, now, pepper)
}

/// [`verify_stored`] approving the payment `tx` (PSD2, [`Io::Verify`]'s `transaction`): a code
/// bound to another payment, or to none, is INVALID.
#[must_use]
pub fn verify_stored_for(
    stored: Option<Session>,
    workspace_id: &str,
    code: &str,
    tx: Option<&Transaction>,
    now: UnixMillis,
    pepper: &Pepper,
) -> VerifyStep {
    let Some(session) = stored else {
        return VerifyStep {
            outcome: not_verified(),
            write: None,
        };
    };
    let (v, after) = session.verify_for(workspace_id, code, tx, now, pepper);
    if v.outcome == VerifyOutcome::NotFound {
        return VerifyStep {
            outcome: not_verified(),
            write: None,
        };
    }
    let write = v.outcome.consumed_attempt().then(|| after.clone());
    VerifyStep {
        outcome: Outcome::Verified {
            status: v.outcome.status().into(),
            attempts_left: v.attempts_left,
            session: Some(after),
        },
        write,
    }
}

fn not_verified() -> Outcome {
    Outcome::Verified {
        status: "NOT_FOUND".into(),
        attempts_left: 0,
        session: None,
    }
}

pub(crate) fn store_error(corrupt: bool, misconfigured: Option<String>) -> Error {
    if let Some(message) = misconfigured {
        Error::Misconfigured {
            message: message.into(),
        }
    } else if corrupt {
        Error::CorruptState {
            message: "stored state could not be read".into(),
        }
    } else {
        Error::StoreUnavailable
    }
}

/// The answer for a session that is not there (or not this workspace's), per dialect.
pub(crate) fn session_not_found(dialect: Dialect) -> Reply {
    match dialect {
        Dialect::V1 => envelope::v1_session_not_found(),
        Dialect::Zend => envelope::zend_not_found(),
    }
}

/// The refusal of a cancel or a resend of a session that is no longer pending: the verify
/// status's code and HTTP status (SPEC §7).
pub(crate) fn ended_error(state: crate::session::SessionState) -> Error {
    use crate::error::Ended;
    use crate::session::SessionState;
    match state {
        SessionState::Approved => Error::SessionEnded(Ended::AlreadyUsed),
        SessionState::Locked => Error::SessionEnded(Ended::MaxAttempts),
        SessionState::Expired | SessionState::Canceled | SessionState::Pending => {
            Error::SessionEnded(Ended::Expired)
        }
    }
}

fn refused(code: &str, retry_after_secs: u32) -> Error {
    match code {
        "DESTINATION_LOCKED" => Error::DestinationLocked { retry_after_secs },
        _ => Error::RateLimited { retry_after_secs },
    }
}

/// The steps handed out, and what the next outcome answers.
#[derive(Debug, Clone)]
pub(crate) struct Queue<W> {
    steps: VecDeque<Step>,
    pub(crate) waiting: Option<W>,
}

impl<W> Default for Queue<W> {
    fn default() -> Self {
        Queue {
            steps: VecDeque::new(),
            waiting: None,
        }
    }
}

impl<W: Copy> Queue<W> {
    pub(crate) fn io(&mut self, io: Io) {
        self.steps.push_back(Step::Io(io));
    }

    pub(crate) fn answer(&mut self, a: Result<Reply, Error>) {
        self.steps.push_back(Step::Answer(a));
    }

    /// The next step; `tags` says what the outcome of each IO will answer, in order.
    pub(crate) fn poll(&mut self, tags: &mut VecDeque<W>) -> Step {
        if self.waiting.is_some() {
            // A host bug: an IO was handed out and not answered. Nothing more can be decided.
            return Step::Done;
        }
        match self.steps.pop_front() {
            Some(Step::Io(io)) => {
                self.waiting = tags.pop_front();
                Step::Io(io)
            }
            Some(Step::Answer(a)) => Step::Answer(a),
            Some(Step::Done) | None => Step::Done,
        }
    }
}

// ---- request ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqWait {
    Hint,
    HintSession,
    Admit,
    ReuseSession,
    Awaited,
    Forget,
    FloodRefund,
    Deliver,
    Store,
    FailedReport,
    SpendRefund,
    Confirm,
    After,
}

/// `POST /v1/messaging/otp/request` and `POST /otp/send`: reuse hint → admit at the destination
/// guard (with the flood shield) → deliver → store → confirm → audit and analytics.
#[derive(Debug)]
pub struct RequestFlow {
    dialect: Dialect,
    traits: HostTraits,
    flood_limit: u32,
    now: UnixMillis,
    session: Session,
    message: Option<OutgoingMessage>,
    admits: u8,
    /// The session a reuse answer is being read for (forgotten at the guard if stale).
    candidate: Option<String>,
    /// A flood-shield or spend-cap refusal, answered once the guard is refunded; the error of
    /// a failed send, answered once its spend is refunded.
    pending_error: Option<Error>,
    /// The gateway accepted the message but the session could not be stored (503).
    store_failed: bool,
    /// The send's charge against the daily spend cap ([`crate::spend`]), if it has one.
    spend: Option<SpendPlan>,
    /// Fraud Guard's check of the destination's prefix ([`crate::fraud`]), when it is on.
    fraud: Option<FraudCharge>,
    /// The analytics of a send Fraud Guard refused (`fraud_blocked`), recorded after the answer.
    blocked: Option<Delta>,
    /// That charge was made (the admission said send).
    spent: bool,
    /// The gateway failed definitely on every channel (the spend is handed back).
    definite_failure: bool,
    /// Channels still to try when a send fails definitely (policy `channelFallback`).
    fallbacks: Vec<validate::Channel>,
    /// Audit events of the tries that failed before the last one.
    tried: Vec<AuditEvent>,
    q: Queue<ReqWait>,
    tags: VecDeque<ReqWait>,
}

impl RequestFlow {
    /// Plans the send ([`plan_issue`]: sender, country, code, template) and starts the flow; a
    /// request that fails those checks is answered with the error (nothing was touched).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        req: &IssueRequest,
        workspace_id: &str,
        senders: &[String],
        policy: &Policy,
        now: UnixMillis,
        entropy: &Entropy,
        pepper: &Pepper,
        traits: HostTraits,
    ) -> Result<RequestFlow, Error> {
        let plan = plan_issue(req, workspace_id, senders, policy, now, entropy, pepper)?;
        let message = plan.message.map(|m| OutgoingMessage {
            to: plan.session.dest.clone(),
            from: plan.session.src.clone(),
            text: m.text,
            channel: plan.session.channel,
            reference: plan.session.id.clone(),
            whatsapp: crate::gateway::WhatsappSend::for_policy(policy, plan.code.expose()),
        });
        let fallbacks = policy.fallbacks_after(req.channel).to_vec();
        let channels: Vec<_> = core::iter::once(plan.session.channel)
            .chain(fallbacks.iter().copied())
            .collect();
        let spend = SpendPlan::new(
            policy,
            plan.session.test,
            plan.session.segments,
            &channels,
            now,
        );
        let fraud = FraudCharge::new(&policy.fraud_guard, &plan.session.dest, plan.session.test);
        let mut flow = RequestFlow {
            dialect: req.dialect,
            traits: HostTraits {
                reuse_hints: traits.reuse_hints && policy.reuse,
            },
            flood_limit: policy.sends_per_workspace_per_minute,
            now,
            session: plan.session,
            message,
            admits: 0,
            candidate: None,
            pending_error: None,
            store_failed: false,
            spend,
            fraud,
            blocked: None,
            spent: false,
            definite_failure: false,
            fallbacks,
            tried: Vec::new(),
            q: Queue::default(),
            tags: VecDeque::new(),
        };
        if flow.traits.reuse_hints {
            let io = Io::ReadReuseHint {
                dest: flow.session.dest.clone(),
                purpose: flow.session.purpose,
            };
            flow.ask(ReqWait::Hint, io);
        } else {
            flow.admit();
        }
        Ok(flow)
    }

    /// The session this request would create.
    #[must_use]
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The next step.
    pub fn poll(&mut self) -> Step {
        self.q.poll(&mut self.tags)
    }

    fn ask(&mut self, wait: ReqWait, io: Io) {
        self.tags.push_back(wait);
        self.q.io(io);
    }

    fn admit(&mut self) {
        if self.admits >= MAX_ADMITS {
            // Every try found a stale session in the way: give up rather than loop.
            self.q.answer(Err(Error::StoreUnavailable));
            return;
        }
        self.admits = self.admits.saturating_add(1);
        let s = &self.session;
        let io = Io::Admit {
            dest: s.dest.clone(),
            purpose: s.purpose,
            session_id: s.id.clone(),
            expires_at: s.expires_at,
            test: s.test,
            flood_limit: (!s.test).then_some(self.flood_limit),
            spend: self.spend.map(|p| p.charge),
            fraud: self.fraud.clone(),
            resend: false,
        };
        self.ask(ReqWait::Admit, io);
    }

    fn read_candidate(&mut self, session_id: String) {
        self.candidate = Some(session_id.clone());
        self.ask(ReqWait::ReuseSession, Io::ReadSession { session_id });
    }

    /// Answers with `found` if it is this request's reusable session; false otherwise.
    fn try_reuse(&mut self, found: Option<Session>) -> bool {
        let Some(s) = found else { return false };
        // A code bound to one payment (PSD2) is never reused for another: a request for a
        // different amount, currency or payee gets a new code (the old session is forgotten at
        // the guard like a stale one, and still approves only its own payment).
        let same = s.workspace_id == self.session.workspace_id
            && s.dest == self.session.dest
            && s.purpose == self.session.purpose
            && crate::transaction::same_payment(
                s.transaction.as_deref(),
                self.session.transaction.as_deref(),
            );
        if !same || !s.reusable(self.now) {
            return false;
        }
        self.q
            .answer(Ok(issue_reply(self.dialect, &s, self.now, true)));
        let events = vec![AuditEvent::for_session("reused", &s, "ok", None, self.now)];
        let deltas = analytics::reused(&s).into_iter().collect();
        self.ask(ReqWait::After, Io::Record { events, deltas });
        true
    }

    fn admitted(&mut self, admission: Admitted) {
        if let Some(e) = admission.workspace_error() {
            let admitted = matches!(
                admission,
                Admitted::FloodRefused { admitted: true, .. }
                    | Admitted::SpendRefused { admitted: true, .. }
                    | Admitted::FraudRefused { admitted: true, .. }
            );
            if let (Admitted::FraudRefused { new_block, .. }, Some(c)) = (&admission, &self.fraud) {
                let (events, delta) = fraud_refused(&self.session, c, *new_block, self.now);
                self.tried.extend(events);
                self.blocked = delta;
            } else if matches!(e, Error::SpendLimitReached { .. }) {
                // Audited like the guard's refusals: operators see why sends stop.
                let s = &self.session;
                let event = AuditEvent::refused(
                    "rate_limited",
                    &s.dest,
                    s.purpose,
                    s.app.as_deref(),
                    e.code(),
                    self.now,
                );
                self.tried.push(event);
            }
            if admitted {
                // The guard charged this send already: hand it back as a definite failure.
                self.pending_error = Some(e);
                self.report(ReqWait::FloodRefund, DeliveryOutcome::Failed);
            } else {
                self.refuse(e);
            }
            return;
        }
        match admission {
            Admitted::Send => {
                self.spent = self.spend.is_some();
                self.deliver();
            }
            Admitted::Reuse { session_id } => self.read_candidate(session_id),
            Admitted::Wait { session_id } => {
                self.candidate = Some(session_id.clone());
                let io = Io::AwaitSend {
                    dest: self.session.dest.clone(),
                    session_id,
                };
                self.ask(ReqWait::Awaited, io);
            }
            Admitted::Failed => self.q.answer(Err(Error::DeliveryFailed)),
            Admitted::Refused {
                code,
                retry_after_secs,
            } => {
                let s = &self.session;
                let event = AuditEvent::refused(
                    "rate_limited",
                    &s.dest,
                    s.purpose,
                    s.app.as_deref(),
                    &code,
                    self.now,
                );
                self.q.answer(Err(refused(&code, retry_after_secs)));
                let io = Io::Record {
                    events: vec![event],
                    deltas: Vec::new(),
                };
                self.ask(ReqWait::After, io);
            }
            // Answered above.
            Admitted::FloodRefused { .. }
            | Admitted::SpendRefused { .. }
            | Admitted::FraudRefused { .. } => {}
        }
    }

    /// Answers a workspace refusal, then records its audit events (a spend-cap or Fraud Guard
    /// refusal's) and analytics (a Fraud Guard refusal's).
    fn refuse(&mut self, e: Error) {
        self.q.answer(Err(e));
        let events = core::mem::take(&mut self.tried);
        let deltas: Vec<Delta> = self.blocked.take().into_iter().collect();
        if !events.is_empty() || !deltas.is_empty() {
            self.ask(ReqWait::After, Io::Record { events, deltas });
        }
    }

    fn deliver(&mut self) {
        match self.message.clone() {
            Some(message) => self.ask(ReqWait::Deliver, Io::Deliver { message }),
            // A test number: nothing is sent.
            None => self.delivered(DeliveryOutcome::Delivered),
        }
    }

    fn delivered(&mut self, outcome: DeliveryOutcome) {
        if outcome == DeliveryOutcome::Failed && !self.fallbacks.is_empty() {
            // A definite failure: the next channel of `channelFallback`, within this request
            // and this charge (SPEC §7). A timeout is not definite: it ends the request.
            let failed =
                AuditEvent::for_session("delivery_failed", &self.session, "failed", None, self.now);
            self.tried.push(failed);
            let next = self.fallbacks.remove(0);
            self.session.channel = next;
            if let Some(m) = &mut self.message {
                m.channel = next;
            }
            self.deliver();
            return;
        }
        if outcome == DeliveryOutcome::Delivered {
            let io = Io::StoreSession {
                session: Box::new(self.session.clone()),
            };
            self.ask(ReqWait::Store, io);
        } else {
            self.definite_failure = outcome == DeliveryOutcome::Failed;
            // Reported before the answer, so a definite failure is refunded before the client
            // can retry; a timeout stays charged (the guard decides that from the outcome).
            self.report(ReqWait::FailedReport, outcome);
        }
    }

    fn report(&mut self, wait: ReqWait, outcome: DeliveryOutcome) {
        let io = Io::ReportDelivery {
            dest: self.session.dest.clone(),
            session_id: self.session.id.clone(),
            outcome,
        };
        self.ask(wait, io);
    }

    /// The send's audit events and analytics, after the answer.
    fn record_send(&mut self, delivered: bool) {
        let s = &self.session;
        let mut events = vec![AuditEvent::for_session(
            "requested",
            s,
            "ok",
            None,
            self.now,
        )];
        events.append(&mut self.tried);
        let delta = if delivered {
            events.push(AuditEvent::for_session(
                "delivered",
                s,
                "ok",
                None,
                self.now,
            ));
            analytics::delivered(s)
        } else {
            let failed = AuditEvent::for_session("delivery_failed", s, "failed", None, self.now);
            events.push(failed);
            analytics::delivery_failed(s)
        };
        let deltas = delta.into_iter().collect();
        self.ask(ReqWait::After, Io::Record { events, deltas });
    }

    /// What follows a delivered, stored and confirmed send's answer.
    fn after_confirm(&mut self, cancel: Option<String>) {
        // Charged the most of its channels: what the one that delivered did not use goes back.
        let unused = self.spend.filter(|_| self.spent).and_then(|p| {
            p.unused(self.session.channel)
                .map(|micros| (p.charge.day, micros))
        });
        if let Some((day, micros)) = unused {
            self.ask(ReqWait::After, Io::RefundSpend { day, micros });
        }
        // The guard names this very session when a newer send superseded it while in flight:
        // it is canceled, and no hint may point at it.
        let superseded = cancel.as_deref() == Some(self.session.id.as_str());
        if let Some(session_id) = cancel {
            self.ask(ReqWait::After, Io::CancelSession { session_id });
        }
        if self.traits.reuse_hints && !superseded {
            let io = Io::PutReuseHint {
                dest: self.session.dest.clone(),
                purpose: self.session.purpose,
                session_id: self.session.id.clone(),
                ttl_secs: self.now.secs_until_ceil(self.session.expires_at).max(60),
            };
            self.ask(ReqWait::After, io);
        }
        self.record_send(true);
    }

    /// Feeds the outcome of the IO last polled.
    pub fn handle(&mut self, outcome: Outcome) {
        let Some(wait) = self.q.waiting.take() else {
            return;
        };
        match (wait, outcome) {
            (
                ReqWait::Hint,
                Outcome::ReuseHint {
                    session_id: Some(id),
                },
            ) => {
                self.ask(ReqWait::HintSession, Io::ReadSession { session_id: id });
            }
            // No hint, or it could not be read: the guard decides.
            (ReqWait::Hint, _) => self.admit(),
            (ReqWait::HintSession, Outcome::Session { session }) => {
                if !self.try_reuse(session) {
                    self.admit();
                }
            }
            // A hint is a shortcut: if the session it names cannot be read, the guard decides.
            (ReqWait::HintSession, _) => self.admit(),
            (ReqWait::Admit, Outcome::Admitted { admission }) => self.admitted(admission),
            (ReqWait::ReuseSession, Outcome::Session { session }) => {
                if !self.try_reuse(session) {
                    // Stale (used, locked, expired or gone): stop treating it as active, and
                    // ask the guard again.
                    let session_id = self.candidate.take().unwrap_or_default();
                    let dest = self.session.dest.clone();
                    self.ask(ReqWait::Forget, Io::Forget { dest, session_id });
                }
            }
            (ReqWait::Awaited, Outcome::Awaited { delivered: true }) => {
                let id = self.candidate.take().unwrap_or_default();
                self.read_candidate(id);
            }
            (ReqWait::Awaited, Outcome::Awaited { delivered: false }) => {
                self.q.answer(Err(Error::DeliveryFailed));
            }
            (ReqWait::Forget, Outcome::Done) => self.admit(),
            (ReqWait::FloodRefund, Outcome::Confirmed { .. } | Outcome::Done) => {
                let e = self.pending_error.take().unwrap_or(Error::StoreUnavailable);
                self.refuse(e);
            }
            (
                ReqWait::Deliver,
                Outcome::Delivery {
                    outcome,
                    message_id,
                },
            ) => {
                if outcome == DeliveryOutcome::Delivered && !self.session.test {
                    self.session.delivery = Some(crate::delivery::Delivery::accepted(message_id));
                }
                self.delivered(outcome);
            }
            (ReqWait::Store, Outcome::Done) => {
                self.q.answer(Ok(self.reply_new()));
                self.report(ReqWait::Confirm, DeliveryOutcome::Delivered);
            }
            (ReqWait::Store, Outcome::StoredAndConfirmed { cancel }) => {
                self.q.answer(Ok(self.reply_new()));
                self.after_confirm(cancel);
            }
            (ReqWait::Store, _) => {
                // Delivered but not stored: nobody can verify it, and the client is told 503.
                // The message did go out, so the send stays charged (reported as an unknown
                // outcome, like a timeout): a failing store must not open a pumping hole.
                self.store_failed = true;
                self.report(ReqWait::FailedReport, DeliveryOutcome::TimedOut);
            }
            (ReqWait::FailedReport, result) => {
                let reported = matches!(result, Outcome::Confirmed { .. } | Outcome::Done);
                let e = if self.store_failed || !reported {
                    Error::StoreUnavailable
                } else {
                    Error::DeliveryFailed
                };
                match self.spend.filter(|_| self.spent && self.definite_failure) {
                    // A definite failure costs nothing: the spend goes back before the answer,
                    // as the guard's charge did, so a client's retry finds it.
                    Some(p) => {
                        self.pending_error = Some(e);
                        let io = Io::RefundSpend {
                            day: p.charge.day,
                            micros: p.charge.cost_micros,
                        };
                        self.ask(ReqWait::SpendRefund, io);
                    }
                    None => {
                        self.q.answer(Err(e));
                        self.record_send(false);
                    }
                }
            }
            // Answered whether or not the refund was stored (the spend stays over-counted).
            (ReqWait::SpendRefund, _) => {
                let e = self.pending_error.take().unwrap_or(Error::DeliveryFailed);
                self.q.answer(Err(e));
                self.record_send(false);
            }
            (ReqWait::Confirm, Outcome::Confirmed { cancel }) => self.after_confirm(cancel),
            // A lost confirmation: the guard's entry goes stale as if the send had failed; the
            // session is stored and answered, so its audit events are still written.
            (ReqWait::Confirm, _) => self.after_confirm(None),
            (ReqWait::After, _) => {}
            // Any other answer to a step before the reply is a store failure.
            (
                _,
                Outcome::Failed {
                    corrupt,
                    misconfigured,
                },
            ) => self.q.answer(Err(store_error(corrupt, misconfigured))),
            (_, _) => self.q.answer(Err(Error::StoreUnavailable)),
        }
    }

    fn reply_new(&self) -> Reply {
        issue_reply(self.dialect, &self.session, self.now, false)
    }
}

/// What a send Fraud Guard refused records: `rate_limited` (refused, `FRAUD_SUSPECTED`), then
/// `prefix_blocked` when its check began the block; analytics count it in `fraud_blocked`
/// with the SMS segments it would have cost.
pub(crate) fn fraud_refused(
    s: &Session,
    c: &FraudCharge,
    new_block: bool,
    now: UnixMillis,
) -> (Vec<AuditEvent>, Option<Delta>) {
    let code = Error::FraudSuspected.code();
    let mut events = vec![AuditEvent::refused(
        "rate_limited",
        &s.dest,
        s.purpose,
        s.app.as_deref(),
        code,
        now,
    )];
    if new_block {
        events.push(AuditEvent::prefix("prefix_blocked", &c.prefix, now));
    }
    (events, analytics::fraud_blocked(s))
}

fn issue_reply(dialect: Dialect, session: &Session, now: UnixMillis, reused: bool) -> Reply {
    match dialect {
        Dialect::V1 => envelope::v1_request(session, now, reused),
        Dialect::Zend => envelope::zend_send(session, reused),
    }
}

// ---- verify ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VerWait {
    Active,
    Verify,
    After,
}

/// `POST /v1/messaging/otp/verify` and `POST /otp/{id}/verify`: the atomic verify at the
/// session, the answer, then the failure streak at the guard, the end of reuse, audit and
/// analytics.
#[derive(Debug)]
pub struct VerifyFlow {
    dialect: Dialect,
    traits: HostTraits,
    raw_session_id: String,
    /// The code, kept only while the active session of a destination is looked up.
    code: Option<CodeText>,
    /// The payment the verify approves (PSD2).
    transaction: Option<Transaction>,
    now: UnixMillis,
    q: Queue<VerWait>,
    tags: VecDeque<VerWait>,
}

impl VerifyFlow {
    /// Starts a verification (a malformed id is answered NOT_FOUND at once).
    #[must_use]
    pub fn start(
        req: &VerifyRequest,
        dialect: Dialect,
        now: UnixMillis,
        traits: HostTraits,
    ) -> VerifyFlow {
        let mut flow = VerifyFlow {
            dialect,
            traits,
            raw_session_id: req.raw_session_id.clone(),
            code: None,
            transaction: req.transaction.clone(),
            now,
            q: Queue::default(),
            tags: VecDeque::new(),
        };
        match (&req.session_id, &req.by_dest) {
            (Some(id), _) => flow.verify(id.clone(), CodeText(req.code.clone())),
            // By destination: its active session first, then the same verify as by id.
            (None, Some((dest, purpose))) => {
                flow.code = Some(CodeText(req.code.clone()));
                flow.tags.push_back(VerWait::Active);
                flow.q.io(Io::ReadActive {
                    dest: dest.clone(),
                    purpose: *purpose,
                });
            }
            (None, None) => flow.q.answer(Ok(flow.not_found())),
        }
        flow
    }

    fn verify(&mut self, session_id: String, code: CodeText) {
        self.tags.push_back(VerWait::Verify);
        let transaction = self.transaction.take().map(Box::new);
        self.q.io(Io::Verify {
            session_id,
            code,
            transaction,
        });
    }

    /// The next step.
    pub fn poll(&mut self) -> Step {
        self.q.poll(&mut self.tags)
    }

    fn not_found(&self) -> Reply {
        match self.dialect {
            Dialect::V1 => envelope::v1_verify(&self.raw_session_id, &Verification::NOT_FOUND),
            Dialect::Zend => envelope::zend_not_found(),
        }
    }

    fn after(&mut self, io: Io) {
        self.tags.push_back(VerWait::After);
        self.q.io(io);
    }

    /// Feeds the outcome of the IO last polled.
    pub fn handle(&mut self, outcome: Outcome) {
        let Some(wait) = self.q.waiting.take() else {
            return;
        };
        let (status, attempts_left, session) = match (wait, outcome) {
            (VerWait::After, _) => return,
            (
                VerWait::Active,
                Outcome::Active {
                    session_id: Some(id),
                },
            ) => {
                let code = self.code.take().unwrap_or(CodeText(String::new()));
                self.raw_session_id.clone_from(&id);
                self.verify(id, code);
                return;
            }
            (VerWait::Active, Outcome::Active { session_id: None }) => {
                self.code = None;
                self.q.answer(Ok(match self.dialect {
                    Dialect::V1 => envelope::v1_verify_no_session(),
                    Dialect::Zend => envelope::zend_not_found(),
                }));
                return;
            }
            (
                VerWait::Active,
                Outcome::Failed {
                    corrupt,
                    misconfigured,
                },
            ) => {
                self.q.answer(Err(store_error(corrupt, misconfigured)));
                return;
            }
            (VerWait::Active, _) => {
                self.q.answer(Err(Error::StoreUnavailable));
                return;
            }
            (
                VerWait::Verify,
                Outcome::Verified {
                    status,
                    attempts_left,
                    session: Some(session),
                },
            ) => (status, attempts_left, session),
            (VerWait::Verify, Outcome::Verified { session: None, .. }) => {
                self.q.answer(Ok(self.not_found()));
                return;
            }
            (
                VerWait::Verify,
                Outcome::Failed {
                    corrupt,
                    misconfigured,
                },
            ) => {
                self.q.answer(Err(store_error(corrupt, misconfigured)));
                return;
            }
            (VerWait::Verify, _) => {
                self.q.answer(Err(Error::StoreUnavailable));
                return;
            }
        };
        let outcome = match VerifyOutcome::from_status(&status, attempts_left) {
            Some(VerifyOutcome::NotFound) | None => {
                self.q.answer(Ok(self.not_found()));
                return;
            }
            Some(o) => o,
        };
        let v = Verification {
            outcome,
            attempts_left,
        };
        self.q.answer(Ok(match self.dialect {
            Dialect::V1 => envelope::v1_verify(&session.id, &v),
            Dialect::Zend => envelope::zend_verify(&v, session.verified_at),
        }));
        if outcome.consumed_attempt() {
            self.after(Io::RecordVerify {
                dest: session.dest.clone(),
                session_id: session.id.clone(),
                status: outcome.status().into(),
                attempts_left,
            });
        }
        if let (VerifyOutcome::Approved, Some(mark)) = (outcome, &session.fraud) {
            self.after(Io::FraudVerified {
                prefix: mark.prefix.clone(),
                window_ms: mark.window_ms,
            });
        }
        let ended = outcome == VerifyOutcome::Approved || outcome.locked_session();
        if ended && self.traits.reuse_hints {
            self.after(Io::DropReuseHint {
                dest: session.dest.clone(),
                purpose: session.purpose,
            });
        }
        let events: Vec<_> = AuditEvent::for_verify(&session, outcome, self.now)
            .into_iter()
            .collect();
        let deltas: Vec<_> = analytics::verified(&session, outcome).into_iter().collect();
        if !events.is_empty() || !deltas.is_empty() {
            self.after(Io::Record { events, deltas });
        }
    }
}

// ---- status ----------------------------------------------------------------------------------

/// `GET /v1/messaging/otp/sessions/{id}` and `GET /otp/{id}/status`: one read.
#[derive(Debug)]
pub struct StatusFlow {
    dialect: Dialect,
    workspace_id: String,
    now: UnixMillis,
    q: Queue<()>,
    tags: VecDeque<()>,
}

impl StatusFlow {
    /// Starts a status read for the id as given in the path (malformed → NOT_FOUND at once).
    #[must_use]
    pub fn start(raw_id: &str, dialect: Dialect, workspace_id: &str, now: UnixMillis) -> Self {
        let mut flow = StatusFlow {
            dialect,
            workspace_id: workspace_id.into(),
            now,
            q: Queue::default(),
            tags: VecDeque::new(),
        };
        match validate::normalize_session_id(raw_id) {
            Some(session_id) => {
                flow.tags.push_back(());
                flow.q.io(Io::ReadSession { session_id });
            }
            None => flow.q.answer(Ok(flow.not_found())),
        }
        flow
    }

    /// The next step.
    pub fn poll(&mut self) -> Step {
        self.q.poll(&mut self.tags)
    }

    fn not_found(&self) -> Reply {
        session_not_found(self.dialect)
    }

    /// Feeds the outcome of the read.
    pub fn handle(&mut self, outcome: Outcome) {
        if self.q.waiting.take().is_none() {
            return;
        }
        let answer = match outcome {
            Outcome::Session {
                session: Some(s), ..
            } if s.workspace_id == self.workspace_id => Ok(match self.dialect {
                Dialect::V1 => envelope::v1_session(&s.view(self.now)),
                Dialect::Zend => envelope::zend_status(&s, self.now),
            }),
            Outcome::Session { .. } => Ok(self.not_found()),
            Outcome::Failed {
                corrupt,
                misconfigured,
            } => Err(store_error(corrupt, misconfigured)),
            _ => Err(Error::StoreUnavailable),
        };
        self.q.answer(answer);
    }
}
