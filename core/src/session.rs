//! The session state machine: issue, verify, reuse, cancel, status view.
//!
//! A session is a value. The host loads it, calls a method, and stores what comes back;
//! inside a Durable Object or a Redis compare-and-set that read–decide–write is atomic.

use crate::code::{digits_from_bytes, uuid_v4, Entropy};
use crate::error::Error;
use crate::hash::{code_hash_for, ct_eq, from_hex32, to_hex};
use crate::http::request::IssueRequest;
use crate::policy::Policy;
use crate::secret::{Code, Pepper};
use crate::template::{self, Rendered};
use crate::time::UnixMillis;
use crate::transaction::Transaction;
use crate::validate::{self, Channel, Purpose};
use crate::STATE_VERSION;
use alloc::boxed::Box;
use alloc::string::{String, ToString};
use serde::{Deserialize, Serialize};

/// What is stored of a session's life; EXPIRED and LOCKED are derived from time and attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StoredState {
    /// Issued, not yet approved or canceled.
    Pending,
    /// Approved once; never again.
    Approved,
    /// Replaced by a newer code while reuse was off.
    Canceled,
}

/// The state a caller sees (SPEC §3 sessions route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionState {
    /// Waiting for the right code.
    Pending,
    /// Verified.
    Approved,
    /// Past its lifetime unverified.
    Expired,
    /// Every attempt used.
    Locked,
    /// Replaced by a newer code.
    Canceled,
}

impl SessionState {
    /// The wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Pending => "PENDING",
            SessionState::Approved => "APPROVED",
            SessionState::Expired => "EXPIRED",
            SessionState::Locked => "LOCKED",
            SessionState::Canceled => "CANCELED",
        }
    }

    /// The second dialect's status (`pending` `verified` `expired` `failed`).
    #[must_use]
    pub fn zend_status(self) -> &'static str {
        match self {
            SessionState::Pending => "pending",
            SessionState::Approved => "verified",
            SessionState::Expired | SessionState::Canceled => "expired",
            SessionState::Locked => "failed",
        }
    }
}

/// One issued code. Stored as versioned JSON (`"v": 1`) by both hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Session {
    /// Format version, [`STATE_VERSION`].
    pub v: u8,
    /// UUID v4, lowercase.
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// E.164 destination.
    pub dest: String,
    /// Sender name used.
    pub src: String,
    /// Purpose.
    pub purpose: Purpose,
    /// Channel.
    pub channel: Channel,
    /// Application label (absent: none; stored JSON leaves a `null` out, as readers before
    /// take a missing optional field for none: 29 bytes, one Redis size class, a session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Hex HMAC of the code (SPEC §4). Never the code.
    pub code_hash: String,
    /// Digits in the code.
    pub code_length: u8,
    /// Issue time.
    pub created_at: UnixMillis,
    /// End of life.
    pub expires_at: UnixMillis,
    /// Verification attempts used.
    pub attempts_used: u8,
    /// Verification attempts allowed.
    pub max_attempts: u8,
    /// Stored state.
    pub state: StoredState,
    /// Approval time (absent: not approved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<UnixMillis>,
    /// Issued for a test number (no SMS).
    pub test: bool,
    /// SMS segments of the message sent (0 for test numbers).
    pub segments: u32,
    /// Seconds kept after expiry before purging.
    pub retention_seconds: u32,
    /// The payment the code is bound to (PSD2 dynamic linking, purpose `TRANSACTION`): its hash
    /// is the v2 framing, and a verify must carry the same values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Box<Transaction>>,
    /// The request's own message template (absent: the default), so that a resend says the
    /// same. The business's text: it never holds the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Lifetime of each code, in seconds (absent: the first code's, `expires_at − created_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u32>,
    /// When the latest send of this session was admitted (absent: `created_at`); a resend
    /// reserves it first, so sends of one session are `resendAfterSeconds` apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<UnixMillis>,
    /// Codes sent after the first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resends: u32,
    /// The Fraud Guard prefix this session's sends were counted in (absent: not counted), so
    /// that its approval is counted there too ([`crate::fraud`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraud: Option<crate::fraud::FraudMark>,
    /// What became of the latest message (SPEC §8): the provider's message id and the state its
    /// receipts moved it to. Absent for test numbers and sessions stored before receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::delivery::Delivery>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The result of a verification, in SPEC's check order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// No such session in this workspace, malformed id, or purged. No attempt consumed.
    NotFound,
    /// Approved before. No attempt consumed.
    AlreadyUsed,
    /// Past its lifetime, or canceled. No attempt consumed.
    Expired,
    /// Every attempt already used. No attempt consumed.
    MaxAttemptsReached,
    /// Right code: the session is now used. One attempt consumed.
    Approved,
    /// Wrong code. One attempt consumed; `attempts_left == 0` means this attempt locked it.
    Invalid {
        /// Attempts still allowed.
        attempts_left: u8,
    },
}

impl VerifyOutcome {
    /// The wire status.
    #[must_use]
    pub fn status(self) -> &'static str {
        match self {
            VerifyOutcome::NotFound => "NOT_FOUND",
            VerifyOutcome::AlreadyUsed => "ALREADY_USED",
            VerifyOutcome::Expired => "EXPIRED",
            VerifyOutcome::MaxAttemptsReached => "MAX_ATTEMPTS_REACHED",
            VerifyOutcome::Approved => "APPROVED",
            VerifyOutcome::Invalid { .. } => "INVALID",
        }
    }

    /// Reads a wire status back (`attempts_left` is used for INVALID); `None` if unknown.
    #[must_use]
    pub fn from_status(status: &str, attempts_left: u8) -> Option<VerifyOutcome> {
        Some(match status {
            "NOT_FOUND" => VerifyOutcome::NotFound,
            "ALREADY_USED" => VerifyOutcome::AlreadyUsed,
            "EXPIRED" => VerifyOutcome::Expired,
            "MAX_ATTEMPTS_REACHED" => VerifyOutcome::MaxAttemptsReached,
            "APPROVED" => VerifyOutcome::Approved,
            "INVALID" => VerifyOutcome::Invalid { attempts_left },
            _ => return None,
        })
    }

    /// The HTTP status.
    #[must_use]
    pub fn http_status(self) -> u16 {
        match self {
            VerifyOutcome::NotFound => 404,
            VerifyOutcome::AlreadyUsed => 409,
            VerifyOutcome::Expired => 410,
            VerifyOutcome::MaxAttemptsReached => 423,
            VerifyOutcome::Approved => 200,
            VerifyOutcome::Invalid { .. } => 400,
        }
    }

    /// Did this verification use an attempt (so the session changed and must be stored)?
    #[must_use]
    pub fn consumed_attempt(self) -> bool {
        matches!(
            self,
            VerifyOutcome::Approved | VerifyOutcome::Invalid { .. }
        )
    }

    /// Did this attempt lock the session?
    #[must_use]
    pub fn locked_session(self) -> bool {
        matches!(self, VerifyOutcome::Invalid { attempts_left: 0 })
    }
}

/// A verification's answer: the outcome and the attempts the session has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// What happened.
    pub outcome: VerifyOutcome,
    /// `max − used` of the session after this verification; 0 when not found (so another
    /// workspace's session reveals nothing). Reported as `attemptsLeft` / `attempts_remaining`.
    pub attempts_left: u8,
}

impl Verification {
    /// The answer for a missing, malformed, purged or foreign session.
    pub const NOT_FOUND: Verification = Verification {
        outcome: VerifyOutcome::NotFound,
        attempts_left: 0,
    };
}

/// A session ready to be delivered: the session to store once the gateway accepts, the code
/// (for the message only), and the message.
#[derive(Debug, Clone)]
pub struct IssuePlan {
    /// The new session, not yet stored.
    pub session: Session,
    /// The code in clear. Goes into `message` and nowhere else.
    pub code: Code,
    /// The rendered message (`None` for a test number: nothing is sent).
    pub message: Option<Rendered>,
}

/// Everything a host checks and decides before delivery, in order: sender allowed (403),
/// destination country allowed unless a test number (403), code generation (test numbers get
/// their fixed code), template rendering within 3 segments (400 `messageTemplate`).
pub fn plan_issue(
    req: &IssueRequest,
    workspace_id: &str,
    senders: &[String],
    policy: &Policy,
    now: UnixMillis,
    entropy: &Entropy,
    pepper: &Pepper,
) -> Result<IssuePlan, Error> {
    let src = match &req.src {
        Some(src) if senders.iter().any(|s| s == src) => src.clone(),
        Some(_) => return Err(Error::SenderNotAllowed),
        None => senders.first().cloned().ok_or(Error::SenderNotAllowed)?,
    };
    let test_code = policy.test_code(&req.dest);
    if test_code.is_none()
        && !validate::country_allowed(&req.dest, policy.allowed_countries.as_deref())
    {
        return Err(Error::DestinationNotAllowed);
    }
    let ttl = req.ttl_seconds.unwrap_or(policy.ttl_seconds);
    let id = uuid_v4(&entropy.session_id);
    let code = match test_code {
        Some(fixed) => Code::new(fixed.to_string()),
        None => digits_from_bytes(
            &entropy.code,
            usize::from(req.code_length.unwrap_or(policy.code_length)),
        ),
    };
    let message = match test_code {
        Some(_) => None,
        None => Some(template::render(
            "messageTemplate",
            req.template
                .as_deref()
                .unwrap_or(if req.transaction.is_some() {
                    template::DEFAULT_TRANSACTION_TEMPLATE
                } else {
                    template::DEFAULT_TEMPLATE
                }),
            code.expose(),
            ttl,
            req.app.as_deref(),
            req.purpose,
            req.transaction.as_ref(),
        )?),
    };
    let hash = code_hash_for(
        pepper,
        workspace_id,
        &id,
        req.purpose,
        code.expose(),
        req.transaction.as_ref(),
    );
    let session = Session {
        v: STATE_VERSION,
        id,
        workspace_id: workspace_id.to_string(),
        dest: req.dest.clone(),
        src,
        purpose: req.purpose,
        channel: req.channel,
        app: req.app.clone(),
        code_hash: to_hex(&hash),
        code_length: u8::try_from(code.len()).unwrap_or(u8::MAX),
        created_at: now,
        expires_at: now.plus_secs(u64::from(ttl)),
        attempts_used: 0,
        max_attempts: policy.max_attempts,
        state: StoredState::Pending,
        verified_at: None,
        test: test_code.is_some(),
        segments: message.as_ref().map_or(0, |m| m.info.segments),
        retention_seconds: policy.retention_seconds,
        transaction: req.transaction.clone().map(Box::new),
        template: req.template.clone(),
        ttl_seconds: None,
        sent_at: None,
        resends: 0,
        fraud: crate::fraud::FraudCharge::new(&policy.fraud_guard, &req.dest, test_code.is_some())
            .map(|c| c.mark()),
        delivery: None,
    };
    Ok(IssuePlan {
        session,
        code,
        message,
    })
}

impl Session {
    /// Verifies `code` for a caller in `workspace_id`, in SPEC's order. Returns the answer and
    /// the session to store (changed only if [`VerifyOutcome::consumed_attempt`]).
    #[must_use]
    pub fn verify(
        self,
        workspace_id: &str,
        code: &str,
        now: UnixMillis,
        pepper: &Pepper,
    ) -> (Verification, Session) {
        self.verify_for(workspace_id, code, None, now, pepper)
    }

    /// [`Session::verify`] with the payment the caller approves (PSD2): the code is checked
    /// against the hash bound to `tx`, so other values (or none, for a bound session) are
    /// INVALID and consume an attempt.
    #[must_use]
    pub fn verify_for(
        mut self,
        workspace_id: &str,
        code: &str,
        tx: Option<&Transaction>,
        now: UnixMillis,
        pepper: &Pepper,
    ) -> (Verification, Session) {
        if self.workspace_id != workspace_id {
            return (Verification::NOT_FOUND, self);
        }
        let outcome = if self.state == StoredState::Approved {
            VerifyOutcome::AlreadyUsed
        } else if self.state == StoredState::Canceled || now >= self.expires_at {
            VerifyOutcome::Expired
        } else if self.attempts_used >= self.max_attempts {
            VerifyOutcome::MaxAttemptsReached
        } else {
            self.attempts_used = self.attempts_used.saturating_add(1);
            let expected = from_hex32(&self.code_hash).unwrap_or([0u8; 32]);
            let given = code_hash_for(pepper, &self.workspace_id, &self.id, self.purpose, code, tx);
            if ct_eq(&expected, &given) {
                self.state = StoredState::Approved;
                self.verified_at = Some(now);
                VerifyOutcome::Approved
            } else {
                VerifyOutcome::Invalid {
                    attempts_left: self.attempts_left(),
                }
            }
        };
        (
            Verification {
                outcome,
                attempts_left: self.attempts_left(),
            },
            self,
        )
    }

    /// Attempts still allowed (`max − used`).
    #[must_use]
    pub fn attempts_left(&self) -> u8 {
        self.max_attempts.saturating_sub(self.attempts_used)
    }

    /// Can a new request for the same (destination, purpose) reuse this session?
    /// Only if pending, unexpired and not locked.
    #[must_use]
    pub fn reusable(&self, now: UnixMillis) -> bool {
        self.state == StoredState::Pending
            && now < self.expires_at
            && self.attempts_used < self.max_attempts
    }

    /// Seconds each code of this session lives (a resend's new expiry is `now` plus this).
    #[must_use]
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_seconds.map_or_else(
            || self.created_at.millis_until(self.expires_at) / 1000,
            u64::from,
        )
    }

    /// When its latest send was admitted.
    #[must_use]
    pub fn last_sent_at(&self) -> UnixMillis {
        self.sent_at.unwrap_or(self.created_at)
    }

    /// Whole seconds left, rounded down (so a reuse answer never overstates the lifetime).
    #[must_use]
    pub fn remaining_secs(&self, now: UnixMillis) -> u64 {
        now.millis_until(self.expires_at) / 1000
    }

    /// The state a caller sees, in verify's order: approved, canceled, expired, locked, pending.
    #[must_use]
    pub fn state_at(&self, now: UnixMillis) -> SessionState {
        match self.state {
            StoredState::Approved => SessionState::Approved,
            StoredState::Canceled => SessionState::Canceled,
            StoredState::Pending if now >= self.expires_at => SessionState::Expired,
            StoredState::Pending if self.attempts_used >= self.max_attempts => SessionState::Locked,
            StoredState::Pending => SessionState::Pending,
        }
    }

    /// Cancels a pending session (reuse off and a newer code was sent). Others are unchanged:
    /// approved stays approved and locked stays locked, whenever the cancel arrives.
    #[must_use]
    pub fn cancel(mut self) -> Session {
        if self.state == StoredState::Pending && self.attempts_used < self.max_attempts {
            self.state = StoredState::Canceled;
        }
        self
    }

    /// When the host may delete it: expiry plus retention.
    #[must_use]
    pub fn purge_at(&self) -> UnixMillis {
        self.expires_at.plus_secs(u64::from(self.retention_seconds))
    }

    /// The status view (masked destination, RFC 3339 times).
    #[must_use]
    pub fn view(&self, now: UnixMillis) -> SessionView {
        SessionView {
            session_id: self.id.clone(),
            dest: validate::mask_destination(&self.dest),
            purpose: self.purpose,
            app: self.app.clone(),
            channel: self.channel,
            state: self.state_at(now),
            attempts_used: self.attempts_used,
            max_attempts: self.max_attempts,
            created_at: self.created_at.to_rfc3339(),
            expires_at: self.expires_at.to_rfc3339(),
            verified_at: self.verified_at.map(UnixMillis::to_rfc3339),
            transaction: self.transaction.clone(),
            delivery: self.delivery.as_ref().map(|d| d.state),
            delivery_error_code: self.delivery.as_ref().and_then(|d| d.error_code.clone()),
        }
    }

    /// Stored JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads stored JSON back, refusing other versions and inconsistent values with
    /// [`Error::CorruptState`] (never a panic).
    pub fn from_json(s: &str) -> Result<Session, Error> {
        let corrupt = |m: &'static str| Error::CorruptState { message: m.into() };
        let session: Session = serde_json::from_str(s)
            .map_err(|_| corrupt("stored session is not valid JSON of version 1"))?;
        if session.v != STATE_VERSION {
            return Err(corrupt("stored session has an unknown version"));
        }
        if from_hex32(&session.code_hash).is_none() {
            return Err(corrupt("stored session has a malformed code hash"));
        }
        if session.max_attempts == 0 || session.attempts_used > session.max_attempts {
            return Err(corrupt("stored session has inconsistent attempts"));
        }
        if validate::normalize_session_id(&session.id).as_deref() != Some(session.id.as_str()) {
            return Err(corrupt("stored session has a malformed id"));
        }
        if session.expires_at < session.created_at {
            return Err(corrupt("stored session expires before it was created"));
        }
        Ok(session)
    }
}

/// `GET /v1/messaging/otp/sessions/{id}` data. Never the code or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// Id.
    pub session_id: String,
    /// Masked destination.
    pub dest: String,
    /// Purpose.
    pub purpose: Purpose,
    /// App label or null.
    pub app: Option<String>,
    /// Channel.
    pub channel: Channel,
    /// Derived state.
    pub state: SessionState,
    /// Attempts used.
    pub attempts_used: u8,
    /// Attempts allowed.
    pub max_attempts: u8,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// RFC 3339 or null.
    pub verified_at: Option<String>,
    /// The payment the code is bound to (PSD2), absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Box<Transaction>>,
    /// What the provider's receipts say of the latest message (SPEC §8); absent for test numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::delivery::DeliveryState>,
    /// The provider's error code of an `undelivered` or `failed` message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_error_code: Option<String>,
}
