//! Response bodies for both dialects, so both hosts answer byte for byte alike. Each builder
//! returns a [`Reply`]: status, JSON body, and the `Retry-After` value if one applies.

use crate::error::Error;
use crate::session::{Session, SessionView, Verification, VerifyOutcome};
use crate::time::UnixMillis;
use crate::validate::Channel;
use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::Serialize;

/// An HTTP answer. Hosts send `body` with `content-type: application/json` (nothing for 204),
/// when `retry_after` is set a `Retry-After` header with that many seconds, and when `replayed`
/// is set `Idempotent-Replayed: true` (SPEC §7: the stored answer of an `Idempotency-Key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body (empty for 204).
    pub body: String,
    /// `Retry-After` seconds.
    pub retry_after: Option<u32>,
    /// A replay of the answer stored for an `Idempotency-Key` ([`crate::idempotency`]).
    pub replayed: bool,
}

impl Reply {
    pub(crate) fn json<T: Serialize>(status: u16, value: &T) -> Reply {
        // Serializing these plain structs cannot fail; an empty body would show it if it did.
        Reply {
            status,
            body: serde_json::to_string(value).unwrap_or_default(),
            retry_after: None,
            replayed: false,
        }
    }

    /// 204 with no body.
    #[must_use]
    pub fn no_content() -> Reply {
        Reply {
            status: 204,
            body: String::new(),
            retry_after: None,
            replayed: false,
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    success: bool,
    message: &'a str,
    data: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u32>,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    success: bool,
    message: &'a str,
    error: ErrorBody<'a>,
}

/// The error envelope of both dialects:
/// `{"success":false,"message":…,"error":{"code":…,"field"?:…,"retryAfterSeconds"?:…}}`.
#[must_use]
pub fn error(e: &Error) -> Reply {
    let message = match e.field() {
        Some(field) => Cow::Owned(format!("{field} {}", e.message())),
        None => Cow::Borrowed(e.message()),
    };
    let mut r = Reply::json(
        e.http_status(),
        &ErrorEnvelope {
            success: false,
            message: &message,
            error: ErrorBody {
                code: e.code(),
                field: e.field(),
                retry_after_seconds: e.retry_after_secs(),
            },
        },
    );
    r.retry_after = e.retry_after_secs();
    r
}

/// Message of a new send.
pub const SENT_MESSAGE: &str = "OTP sent successfully";
/// Message of a reuse.
pub const REUSED_MESSAGE: &str = "Active OTP already exists. No new SMS sent.";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestData<'a> {
    session_id: &'a str,
    expires_in_seconds: u64,
    attempts_left: u8,
    reused: bool,
    channel: Channel,
}

/// `POST /v1/messaging/otp/request` success, new (`reused = false`) or reused.
#[must_use]
pub fn v1_request(session: &Session, now: UnixMillis, reused: bool) -> Reply {
    Reply::json(
        200,
        &Envelope {
            success: true,
            message: if reused { REUSED_MESSAGE } else { SENT_MESSAGE },
            data: RequestData {
                session_id: &session.id,
                expires_in_seconds: session.remaining_secs(now),
                attempts_left: session.attempts_left(),
                reused,
                channel: session.channel,
            },
        },
    )
}

/// (top-level message, `data.message`) per verify status, exactly as the seed documents.
#[must_use]
pub fn verify_messages(outcome: VerifyOutcome) -> (&'static str, &'static str) {
    match outcome {
        VerifyOutcome::Approved => ("OTP verification successful", "OTP verified successfully"),
        VerifyOutcome::Invalid { .. } => ("Invalid OTP", "Invalid OTP"),
        VerifyOutcome::Expired => ("OTP expired", "OTP expired"),
        VerifyOutcome::MaxAttemptsReached => (
            "Maximum verification attempts reached",
            "Maximum verification attempts reached",
        ),
        VerifyOutcome::AlreadyUsed => ("OTP already used", "OTP already verified"),
        VerifyOutcome::NotFound => ("OTP session not found", "OTP session not found"),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VerifyData<'a> {
    session_id: Option<&'a str>,
    status: &'static str,
    verified: bool,
    message: &'static str,
    attempts_left: u8,
}

/// `POST /v1/messaging/otp/verify` for any outcome. `session_id` is the id as the caller gave it.
#[must_use]
pub fn v1_verify(session_id: &str, v: &Verification) -> Reply {
    v1_verify_of(Some(session_id), v)
}

/// `POST /v1/messaging/otp/verify` by destination with no active session: NOT_FOUND with
/// `sessionId: null` (there is no session to name).
#[must_use]
pub fn v1_verify_no_session() -> Reply {
    v1_verify_of(None, &Verification::NOT_FOUND)
}

fn v1_verify_of(session_id: Option<&str>, v: &Verification) -> Reply {
    let outcome = v.outcome;
    let approved = outcome == VerifyOutcome::Approved;
    let (top, inner) = verify_messages(outcome);
    Reply::json(
        outcome.http_status(),
        &Envelope {
            success: approved,
            message: top,
            data: VerifyData {
                session_id,
                status: outcome.status(),
                verified: approved,
                message: inner,
                attempts_left: v.attempts_left,
            },
        },
    )
}

/// `{"success":true,"message":"OK","data":…}` (200).
pub fn ok<T: Serialize>(data: &T) -> Reply {
    Reply::json(
        200,
        &Envelope {
            success: true,
            message: "OK",
            data,
        },
    )
}

/// `GET /v1/messaging/otp/sessions/{id}` success.
#[must_use]
pub fn v1_session(view: &SessionView) -> Reply {
    Reply::json(
        200,
        &Envelope {
            success: true,
            message: "OK",
            data: view,
        },
    )
}

/// `GET /v1/messaging/otp/sessions/{id}` for a missing (or another workspace's) session.
#[must_use]
pub fn v1_session_not_found() -> Reply {
    let mut r = error(&Error::NotFound);
    r.body = serde_json::to_string(&ErrorEnvelope {
        success: false,
        message: "OTP session not found",
        error: ErrorBody {
            code: "NOT_FOUND",
            field: None,
            retry_after_seconds: None,
        },
    })
    .unwrap_or_default();
    r
}

/// `GET /ready` (SPEC §9): `{"status":"ready"}` (200), or `{"status":"unready","failing":[…]}`
/// (503) naming what keeps requests from being served: `"store"` (the host's store did not
/// answer) and/or `"config"` (no usable `OTP_PEPPER`). `/health` stays liveness.
#[must_use]
pub fn ready(store_ok: bool, config_ok: bool) -> Reply {
    #[derive(Serialize)]
    struct Ready {
        status: &'static str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        failing: Vec<&'static str>,
    }
    let mut failing = Vec::new();
    if !store_ok {
        failing.push("store");
    }
    if !config_ok {
        failing.push("config");
    }
    let (code, status) = if failing.is_empty() {
        (200, "ready")
    } else {
        (503, "unready")
    };
    Reply::json(code, &Ready { status, failing })
}

/// `GET /health`: `{"status":"ok"}` (200) or `{"status":"misconfigured"}` (503).
#[must_use]
pub fn health(configured: bool) -> Reply {
    #[derive(Serialize)]
    struct Health {
        status: &'static str,
    }
    if configured {
        Reply::json(200, &Health { status: "ok" })
    } else {
        Reply::json(
            503,
            &Health {
                status: "misconfigured",
            },
        )
    }
}

#[derive(Serialize)]
struct ZendSend<'a> {
    id: &'a str,
    phone_number: &'a str,
    app: Option<&'a str>,
    channel: Channel,
    expiry_minutes: u64,
    length: u8,
    status: &'static str,
    created_at: String,
    expires_at: String,
    #[serde(skip_serializing_if = "core::ops::Not::not")]
    reused: bool,
}

/// `POST /otp/send` success: `status: "sent"`, or `"pending"` with `reused: true`.
#[must_use]
pub fn zend_send(session: &Session, reused: bool) -> Reply {
    Reply::json(
        200,
        &ZendSend {
            id: &session.id,
            phone_number: &session.dest,
            app: session.app.as_deref(),
            channel: session.channel,
            // Each code's lifetime (a resend's too, whose expiry is later than the first's).
            expiry_minutes: session.ttl_secs().div_ceil(60),
            length: session.code_length,
            status: if reused { "pending" } else { "sent" },
            created_at: session.created_at.to_rfc3339(),
            expires_at: session.expires_at.to_rfc3339(),
            reused,
        },
    )
}

#[derive(Serialize)]
struct ZendStatus<'a> {
    id: &'a str,
    phone_number: &'a str,
    app: Option<&'a str>,
    channel: Channel,
    status: &'static str,
    attempts: u8,
    max_attempts: u8,
    created_at: String,
    expires_at: String,
    verified_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction: Option<&'a crate::transaction::Transaction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<crate::delivery::DeliveryState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_error_code: Option<&'a str>,
}

/// `GET /otp/{id}/status`.
#[must_use]
pub fn zend_status(session: &Session, now: UnixMillis) -> Reply {
    Reply::json(
        200,
        &ZendStatus {
            id: &session.id,
            phone_number: &session.dest,
            app: session.app.as_deref(),
            channel: session.channel,
            status: session.state_at(now).zend_status(),
            attempts: session.attempts_used,
            max_attempts: session.max_attempts,
            created_at: session.created_at.to_rfc3339(),
            expires_at: session.expires_at.to_rfc3339(),
            verified_at: session.verified_at.map(UnixMillis::to_rfc3339),
            transaction: session.transaction.as_deref(),
            delivery: session.delivery.as_ref().map(|d| d.state),
            delivery_error_code: session
                .delivery
                .as_ref()
                .and_then(|d| d.error_code.as_deref()),
        },
    )
}

/// The second dialect's 404 for a missing session: `{"success":false,"message":"OTP session not found"}`.
#[must_use]
pub fn zend_not_found() -> Reply {
    #[derive(Serialize)]
    struct NotFound {
        success: bool,
        message: &'static str,
    }
    Reply::json(
        404,
        &NotFound {
            success: false,
            message: "OTP session not found",
        },
    )
}

#[derive(Serialize)]
struct ZendVerify {
    success: bool,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    verified_at: Option<String>,
    attempts_remaining: u8,
}

/// `POST /otp/{id}/verify` for any outcome; `verified_at` is the stored session's approval time
/// after verifying (`Session::verified_at`), `None` when not found or not approved.
#[must_use]
pub fn zend_verify(v: &Verification, verified_at: Option<UnixMillis>) -> Reply {
    let outcome = v.outcome;
    let message = match outcome {
        VerifyOutcome::NotFound => return zend_not_found(),
        VerifyOutcome::Invalid { .. } => "Invalid OTP code",
        VerifyOutcome::Approved => "OTP verified successfully",
        other => verify_messages(other).0,
    };
    Reply::json(
        outcome.http_status(),
        &ZendVerify {
            success: outcome == VerifyOutcome::Approved,
            message,
            verified_at: verified_at.map(UnixMillis::to_rfc3339),
            attempts_remaining: v.attempts_left,
        },
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyCreated<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace_id: Option<&'a str>,
    api_key: &'a str,
    key_id: &'a str,
}

/// `POST /v1/admin/workspaces` → 201 `{workspaceId, apiKey, keyId}` in the v1 envelope.
#[must_use]
pub fn admin_workspace_created(workspace_id: &str, api_key: &str, key_id: &str) -> Reply {
    Reply::json(
        201,
        &Envelope {
            success: true,
            message: "Workspace created",
            data: KeyCreated {
                workspace_id: Some(workspace_id),
                api_key,
                key_id,
            },
        },
    )
}

/// `POST /v1/admin/workspaces/{id}/keys` → 201 `{apiKey, keyId}`.
#[must_use]
pub fn admin_key_created(api_key: &str, key_id: &str) -> Reply {
    Reply::json(
        201,
        &Envelope {
            success: true,
            message: "API key created",
            data: KeyCreated {
                workspace_id: None,
                api_key,
                key_id,
            },
        },
    )
}

/// `GET /v1/admin/workspaces/{id}` → 200 with the workspace and its keys (never a key hash).
#[must_use]
pub fn admin_workspace(ws: &crate::workspace::WorkspaceRecord) -> Reply {
    ok(&ws.detail_view())
}

/// `PATCH /v1/admin/workspaces/{id}` → 200 with the workspace (never its key hashes).
#[must_use]
pub fn admin_workspace_updated(ws: &crate::workspace::WorkspaceRecord) -> Reply {
    Reply::json(
        200,
        &Envelope {
            success: true,
            message: "Workspace updated",
            data: ws.public_view(),
        },
    )
}
