//! Audit events (SPEC §3 "Audit"): what is recorded, how queries are read, and the answer's shape.
//! Never a code, a hash, an API key or the pepper: events carry the masked destination only.

use crate::error::Error;
use crate::session::{Session, VerifyOutcome};
use crate::time::UnixMillis;
use crate::validate::{self, Purpose};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Event kinds, as stored and answered.
pub const EVENTS: [&str; 10] = [
    "requested",
    "reused",
    "delivered",
    "delivery_failed",
    "verify_approved",
    "verify_invalid",
    "verify_rejected",
    "rate_limited",
    "purged",
    "canceled",
];

/// Default and maximum page sizes.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page.
pub const MAX_LIMIT: u32 = 500;

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// When (ms; answered as RFC 3339).
    pub time: UnixMillis,
    /// One of [`EVENTS`].
    pub event: String,
    /// Session id (empty for events without one, such as `rate_limited`).
    pub session_id: String,
    /// Purpose.
    pub purpose: Purpose,
    /// App label.
    pub app: Option<String>,
    /// Masked destination.
    pub dest: String,
    /// `ok`, `failed`, `refused`, …
    pub outcome: String,
    /// Verify status or error code, when there is one.
    pub status: Option<String>,
    /// Issued for a test number.
    pub test: bool,
}

impl AuditEvent {
    /// An event about a session.
    #[must_use]
    pub fn for_session(
        event: &str,
        session: &Session,
        outcome: &str,
        status: Option<&str>,
        now: UnixMillis,
    ) -> AuditEvent {
        AuditEvent {
            time: now,
            event: event.to_string(),
            session_id: session.id.clone(),
            purpose: session.purpose,
            app: session.app.clone(),
            dest: validate::mask_destination(&session.dest),
            outcome: outcome.to_string(),
            status: status.map(ToString::to_string),
            test: session.test,
        }
    }

    /// An event about a refused request (no session).
    #[must_use]
    pub fn refused(
        event: &str,
        dest: &str,
        purpose: Purpose,
        app: Option<&str>,
        code: &str,
        now: UnixMillis,
    ) -> AuditEvent {
        AuditEvent {
            time: now,
            event: event.to_string(),
            session_id: String::new(),
            purpose,
            app: app.map(ToString::to_string),
            dest: validate::mask_destination(dest),
            outcome: "refused".to_string(),
            status: Some(code.to_string()),
            test: false,
        }
    }

    /// The event for a verification outcome (`None` for NOT_FOUND: nothing to attribute).
    #[must_use]
    pub fn for_verify(
        session: &Session,
        outcome: VerifyOutcome,
        now: UnixMillis,
    ) -> Option<AuditEvent> {
        let (event, result) = match outcome {
            VerifyOutcome::NotFound => return None,
            VerifyOutcome::Approved => ("verify_approved", "ok"),
            VerifyOutcome::Invalid { .. } => ("verify_invalid", "failed"),
            _ => ("verify_rejected", "refused"),
        };
        Some(AuditEvent::for_session(
            event,
            session,
            result,
            Some(outcome.status()),
            now,
        ))
    }
}

/// A checked audit query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this session.
    pub session_id: Option<String>,
    /// Only events at or after this time.
    pub since: Option<UnixMillis>,
    /// Page size, 1–500.
    pub limit: u32,
    /// Continue below this event sequence number (newest first).
    pub cursor: Option<u64>,
}

impl AuditQuery {
    /// Reads `sessionId`, `since` (RFC 3339), `limit` (1–500, default 100), `cursor` from query pairs.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<AuditQuery, Error> {
        let mut q = AuditQuery {
            session_id: None,
            since: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
        };
        for (k, v) in pairs {
            match k {
                "sessionId" => {
                    q.session_id = Some(
                        validate::normalize_session_id(v)
                            .ok_or(Error::invalid("sessionId", "must be a session id (UUID)"))?,
                    );
                }
                "since" => {
                    q.since = Some(
                        UnixMillis::parse_rfc3339(v)
                            .ok_or(Error::invalid("since", "must be an RFC 3339 time"))?,
                    );
                }
                "limit" => {
                    q.limit = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or(Error::invalid("limit", "must be an integer from 1 to 500"))?;
                }
                "cursor" => {
                    q.cursor = Some(v.parse::<u64>().map_err(|_| {
                        Error::invalid("cursor", "must be a cursor from nextCursor")
                    })?);
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventView<'a> {
    time: String,
    event: &'a str,
    session_id: &'a str,
    purpose: Purpose,
    app: Option<&'a str>,
    dest: &'a str,
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "core::ops::Not::not")]
    test: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<'a> {
    events: Vec<EventView<'a>>,
    next_cursor: Option<String>,
}

/// `{"success":true,"message":"OK","data":{"events":[…],"nextCursor":…|null}}`.
#[must_use]
pub fn reply(events: &[AuditEvent], next_cursor: Option<u64>) -> crate::http::envelope::Reply {
    let page = Page {
        events: events
            .iter()
            .map(|e| EventView {
                time: e.time.to_rfc3339(),
                event: &e.event,
                session_id: &e.session_id,
                purpose: e.purpose,
                app: e.app.as_deref(),
                dest: &e.dest,
                outcome: &e.outcome,
                status: e.status.as_deref(),
                test: e.test,
            })
            .collect(),
        next_cursor: next_cursor.map(|c| c.to_string()),
    };
    crate::http::envelope::ok(&page)
}
