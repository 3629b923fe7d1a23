//! [`Error`]: malformed input or configuration. Verification outcomes are not errors; they are
//! [`crate::VerifyOutcome`] values.

use alloc::borrow::Cow;
use core::fmt;

/// Something the caller sent or configured is not acceptable.
///
/// Each variant has a stable [`Error::code`] and [`Error::http_status`] that every host exposes
/// unchanged; [`Error::message`] is for humans and may be refined between versions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A field is missing, of the wrong type or out of bounds (400).
    Validation {
        /// The request field, dotted for nested ones (`policy.ttlSeconds`); empty for the whole body.
        field: Cow<'static, str>,
        /// What is wrong, in words.
        message: Cow<'static, str>,
    },
    /// Missing, unknown or revoked credentials (401).
    Unauthorized,
    /// The route does not exist, or the session or workspace is not visible to the caller (404).
    NotFound,
    /// The body is not `application/json` (415).
    UnsupportedMediaType,
    /// The body is larger than [`crate::http::request::MAX_BODY_BYTES`] (413).
    PayloadTooLarge,
    /// The method is not allowed on the route (405).
    MethodNotAllowed,
    /// `src` is not one of the workspace's sender names (403).
    SenderNotAllowed,
    /// The destination's calling code is not in `allowedCountries` (403).
    DestinationNotAllowed,
    /// The send window for this destination (or the workspace flood shield) is full (429).
    RateLimited {
        /// Whole seconds ≥ 1 until a send would be admitted.
        retry_after_secs: u32,
    },
    /// The send would take the workspace's spend of the current UTC day past policy
    /// `dailySpendLimit` (429, SPEC §9 "Spend cap").
    SpendLimitReached {
        /// Whole seconds ≥ 1 until 00:00 UTC, when the day's spend starts again at 0.
        retry_after_secs: u32,
    },
    /// Fraud Guard refuses sends to the destination's number prefix: many sends, hardly any
    /// verified (403, SPEC §9 "Fraud Guard"). No Retry-After: when a block ends is not told.
    FraudSuspected,
    /// Too many consecutive failed verifications for this destination (429).
    DestinationLocked {
        /// Whole seconds ≥ 1 until the lock ends.
        retry_after_secs: u32,
    },
    /// The SMS gateway refused, failed or did not answer in time (502).
    DeliveryFailed,
    /// The host's store is unreachable (503).
    StoreUnavailable,
    /// The host is not configured to serve (500), e.g. no `OTP_PEPPER` of ≥ 32 bytes.
    Misconfigured {
        /// What is missing, without any secret value.
        message: Cow<'static, str>,
    },
    /// A stored value could not be read back (500). Never a panic.
    CorruptState {
        /// What did not parse.
        message: Cow<'static, str>,
    },
    /// A resend came sooner than `resendAfterSeconds` after the session's last send (429).
    ResendTooSoon {
        /// Whole seconds ≥ 1 until a resend would be admitted.
        retry_after_secs: u32,
    },
    /// The session is no longer pending, so it cannot be canceled or resent: the verify status's
    /// code and HTTP status (SPEC §7).
    SessionEnded(Ended),
    /// The `Idempotency-Key` was used in this workspace within 24 h with another request (422).
    IdempotencyKeyReused,
    /// The request first made with this `Idempotency-Key` is still running and did not end
    /// while this duplicate waited for it (409): retry shortly.
    IdempotencyKeyInUse,
    /// A delivery receipt whose signature is missing or does not match (403, SPEC §8).
    InvalidSignature,
}

/// How a session that is no longer pending ended, as the verify statuses name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Approved already: 409 `ALREADY_USED`.
    AlreadyUsed,
    /// Expired or canceled: 410 `EXPIRED`.
    Expired,
    /// Out of attempts: 423 `MAX_ATTEMPTS_REACHED`.
    MaxAttempts,
}

impl Error {
    /// A 400 for `field` with a fixed message.
    #[must_use]
    pub const fn invalid(field: &'static str, message: &'static str) -> Self {
        Error::Validation {
            field: Cow::Borrowed(field),
            message: Cow::Borrowed(message),
        }
    }

    /// The stable, machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation { .. } => "VALIDATION_ERROR",
            Error::Unauthorized => "UNAUTHORIZED",
            Error::NotFound => "NOT_FOUND",
            Error::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Error::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Error::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Error::SenderNotAllowed => "SENDER_NOT_ALLOWED",
            Error::DestinationNotAllowed => "DESTINATION_NOT_ALLOWED",
            Error::RateLimited { .. } => "RATE_LIMITED",
            Error::DestinationLocked { .. } => "DESTINATION_LOCKED",
            Error::SpendLimitReached { .. } => "SPEND_LIMIT_REACHED",
            Error::FraudSuspected => "FRAUD_SUSPECTED",
            Error::ResendTooSoon { .. } => "RESEND_TOO_SOON",
            Error::DeliveryFailed => "DELIVERY_FAILED",
            Error::StoreUnavailable => "STORE_UNAVAILABLE",
            Error::Misconfigured { .. } => "MISCONFIGURED",
            Error::CorruptState { .. } => "INTERNAL_ERROR",
            Error::SessionEnded(Ended::AlreadyUsed) => "ALREADY_USED",
            Error::SessionEnded(Ended::Expired) => "EXPIRED",
            Error::SessionEnded(Ended::MaxAttempts) => "MAX_ATTEMPTS_REACHED",
            Error::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Error::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            Error::InvalidSignature => "INVALID_SIGNATURE",
        }
    }

    /// The HTTP status every host answers with.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Validation { .. } => 400,
            Error::Unauthorized => 401,
            Error::SenderNotAllowed
            | Error::DestinationNotAllowed
            | Error::FraudSuspected
            | Error::InvalidSignature => 403,
            Error::NotFound => 404,
            Error::MethodNotAllowed => 405,
            Error::PayloadTooLarge => 413,
            Error::UnsupportedMediaType => 415,
            Error::RateLimited { .. }
            | Error::DestinationLocked { .. }
            | Error::SpendLimitReached { .. }
            | Error::ResendTooSoon { .. } => 429,
            Error::Misconfigured { .. } | Error::CorruptState { .. } => 500,
            Error::DeliveryFailed => 502,
            Error::StoreUnavailable => 503,
            Error::SessionEnded(Ended::AlreadyUsed) => 409,
            Error::SessionEnded(Ended::Expired) => 410,
            Error::SessionEnded(Ended::MaxAttempts) => 423,
            Error::IdempotencyKeyReused => 422,
            Error::IdempotencyKeyInUse => 409,
        }
    }

    /// The human-readable message of the error envelope.
    #[must_use]
    pub fn message(&self) -> &str {
        match self {
            Error::Validation { message, .. }
            | Error::Misconfigured { message }
            | Error::CorruptState { message } => message,
            Error::Unauthorized => "Missing or invalid API key",
            Error::NotFound => "Not found",
            Error::UnsupportedMediaType => "Content-Type must be application/json",
            Error::PayloadTooLarge => "Request body is larger than 16 KiB",
            Error::MethodNotAllowed => "Method not allowed",
            Error::SenderNotAllowed => "Sender name is not allowed for this workspace",
            Error::DestinationNotAllowed => "Destination country is not allowed for this workspace",
            Error::RateLimited { .. } => {
                "Too many OTP requests for this destination. Try again later."
            }
            Error::DestinationLocked { .. } => {
                "Too many failed verifications for this destination. Try again later."
            }
            Error::SpendLimitReached { .. } => {
                "The workspace's daily spend limit is reached. Try again after 00:00 UTC."
            }
            Error::FraudSuspected => {
                "Sends to this number range are paused: unusual traffic. Contact the service."
            }
            Error::ResendTooSoon { .. } => {
                "A code was sent for this session moments ago. Try again later."
            }
            Error::DeliveryFailed => "OTP could not be delivered. No code was issued; try again.",
            Error::StoreUnavailable => "Storage is unavailable. Try again shortly.",
            Error::SessionEnded(Ended::AlreadyUsed) => "This OTP session was already verified",
            Error::SessionEnded(Ended::Expired) => "This OTP session has expired or was canceled",
            Error::SessionEnded(Ended::MaxAttempts) => {
                "This OTP session has no verification attempts left"
            }
            Error::IdempotencyKeyReused => {
                "This Idempotency-Key was already used with a different request"
            }
            Error::IdempotencyKeyInUse => {
                "A request with this Idempotency-Key is still in progress. Try again shortly."
            }
            Error::InvalidSignature => "The receipt's signature is missing or invalid",
        }
    }

    /// The offending field, for validation errors.
    #[must_use]
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Validation { field, .. } if !field.is_empty() => Some(field),
            _ => None,
        }
    }

    /// Seconds for the `Retry-After` header and `error.retryAfterSeconds`.
    #[must_use]
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            Error::RateLimited { retry_after_secs }
            | Error::DestinationLocked { retry_after_secs }
            | Error::SpendLimitReached { retry_after_secs }
            | Error::ResendTooSoon { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field() {
            Some(field) => write!(f, "{}: {field} {}", self.code(), self.message()),
            None => write!(f, "{}: {}", self.code(), self.message()),
        }
    }
}

impl core::error::Error for Error {}

/// Clamps a retry delay in milliseconds to whole seconds ≥ 1 (rounded up).
#[must_use]
pub fn retry_secs_from_millis(ms: u64) -> u32 {
    u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX).max(1)
}
