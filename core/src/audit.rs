//! Audit events (SPEC §3 "Audit"): what is recorded, how queries are read, and the answer's shape.
//! Never a code, a hash, an API key or the pepper: events carry the masked destination only.

use crate::error::Error;
use crate::session::{Session, VerifyOutcome};
use crate::time::UnixMillis;
use crate::validate::{self, Channel, Purpose};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Event kinds, as stored and answered.
pub const EVENTS: [&str; 18] = [
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
    "resent",
    "workspace_created",
    "workspace_updated",
    "key_created",
    "key_revoked",
    "prefix_blocked",
    "prefix_unblocked",
    "delivery_receipt",
];

/// The operator's actions (SPEC §9 "Admin"), audited in the workspace's own trail: lifecycle
/// events (never repeatable) without a session, purpose or destination ([`AuditEvent::admin`]).
pub const ADMIN_EVENTS: [&str; 4] = [
    "workspace_created",
    "workspace_updated",
    "key_created",
    "key_revoked",
];

/// The events an end user can cause again and again without a send: a request answered by an
/// active session (`reused`), a refused request (`rate_limited`), a verification of a session
/// that has ended (`verify_rejected`: already used, expired, locked). Every other event needs a
/// send of its own (`requested`, `delivered`, `delivery_failed`), is bounded by the attempts of
/// one (`verify_invalid`) or happens once per session (`verify_approved`, `canceled`, `purged`);
/// `resent` needs a send of its own too (charged, and `resendAfterSeconds` apart).
///
/// Hosts that cap the audit log by count keep these in a stream of their own with its own cap
/// ([`is_repeatable`]), so however many of them a caller produces, they never push a session's
/// lifecycle events out of the log (issue 19, item 3; SECURITY.md §10).
pub const REPEATABLE: [&str; 3] = ["reused", "rate_limited", "verify_rejected"];

/// Events kept per workspace in each stream (lifecycle, repeatable) by hosts that cap by count.
pub const KEEP_PER_STREAM: u32 = 10_000;

/// Whether `event` is one of [`REPEATABLE`]. Other names are lifecycle events, unless the event's
/// outcome is `refused` ([`AuditEvent::is_repeatable`]).
#[must_use]
pub fn is_repeatable(event: &str) -> bool {
    REPEATABLE.contains(&event)
}

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
    /// Purpose (`None` for an event about no session: the admin events).
    #[serde(default)]
    pub purpose: Option<Purpose>,
    /// App label.
    pub app: Option<String>,
    /// Masked destination (empty for an event about no destination: the admin events).
    pub dest: String,
    /// `ok`, `failed`, `refused`, …
    pub outcome: String,
    /// Verify status or error code, when there is one.
    pub status: Option<String>,
    /// Issued for a test number.
    pub test: bool,
    /// The channel of a delivery event (`delivered`, `delivery_failed`, `resent`): with channel
    /// fallback, each try is its own event (SPEC §7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// The API key an admin event is about (`key_created`, `key_revoked`), by its id: never the
    /// key or its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The provider's message id of a `delivered` or `resent` message, when the gateway's reply
    /// named one (SPEC §8). Only in the session's own workspace's trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// The events that say which channel a message went out on (or failed on).
const DELIVERY_EVENTS: [&str; 4] = ["delivered", "delivery_failed", "resent", "delivery_receipt"];

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
            purpose: Some(session.purpose),
            app: session.app.clone(),
            dest: validate::mask_destination(&session.dest),
            outcome: outcome.to_string(),
            status: status.map(ToString::to_string),
            test: session.test,
            channel: DELIVERY_EVENTS.contains(&event).then_some(session.channel),
            key_id: None,
            message_id: matches!(event, "delivered" | "resent" | "delivery_receipt")
                .then(|| session.delivery.as_ref()?.message_id.clone())
                .flatten(),
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
            purpose: Some(purpose),
            app: app.map(ToString::to_string),
            dest: validate::mask_destination(dest),
            outcome: "refused".to_string(),
            status: Some(code.to_string()),
            test: false,
            channel: None,
            key_id: None,
            message_id: None,
        }
    }

    /// An operator's action on a workspace (one of [`ADMIN_EVENTS`]): no session, purpose or
    /// destination; `key_id` names the key of `key_created` and `key_revoked` (by id only).
    #[must_use]
    pub fn admin(event: &str, key_id: Option<&str>, now: UnixMillis) -> AuditEvent {
        AuditEvent {
            time: now,
            event: event.to_string(),
            session_id: String::new(),
            purpose: None,
            app: None,
            dest: String::new(),
            outcome: "ok".to_string(),
            status: None,
            test: false,
            channel: None,
            key_id: key_id.map(ToString::to_string),
            message_id: None,
        }
    }

    /// A Fraud Guard event about a number prefix (`prefix_blocked`, `prefix_unblocked`, SPEC §9):
    /// `dest` is the prefix itself (a range, not anyone's number), no session or purpose.
    #[must_use]
    pub fn prefix(event: &str, prefix: &str, now: UnixMillis) -> AuditEvent {
        let blocked = event == "prefix_blocked";
        AuditEvent {
            time: now,
            event: event.to_string(),
            session_id: String::new(),
            purpose: None,
            app: None,
            dest: prefix.to_string(),
            outcome: (if blocked { "blocked" } else { "ok" }).to_string(),
            status: blocked.then(|| Error::FraudSuspected.code().to_string()),
            test: false,
            channel: None,
            key_id: None,
            message_id: None,
        }
    }

    /// Whether this event is one an end user can repeat without a send: one of [`REPEATABLE`],
    /// or any refusal (outcome `refused`, as [`AuditEvent::refused`] writes: a refused request
    /// sends nothing, whatever its event name).
    #[must_use]
    pub fn is_repeatable(&self) -> bool {
        is_repeatable(&self.event) || self.outcome == "refused"
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
    purpose: Option<Purpose>,
    app: Option<&'a str>,
    dest: &'a str,
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "core::ops::Not::not")]
    test: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
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
                channel: e.channel,
                key_id: e.key_id.as_deref(),
                message_id: e.message_id.as_deref(),
            })
            .collect(),
        next_cursor: next_cursor.map(|c| c.to_string()),
    };
    crate::http::envelope::ok(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeatable_events_are_known_and_the_rest_are_lifecycle() {
        let repeatable: Vec<&str> = EVENTS.into_iter().filter(|e| is_repeatable(e)).collect();
        assert_eq!(repeatable, ["reused", "verify_rejected", "rate_limited"]);
        for e in [
            "requested",
            "delivered",
            "delivery_failed",
            "verify_approved",
            "verify_invalid",
            "purged",
            "canceled",
            "some_future_event",
        ] {
            assert!(!is_repeatable(e), "{e} is a lifecycle event");
        }
    }

    #[test]
    fn admin_events_are_lifecycle_events_without_session_or_destination() {
        let now = UnixMillis(1_763_800_000_000);
        for name in ADMIN_EVENTS {
            assert!(EVENTS.contains(&name), "{name} is a known event");
            let e = AuditEvent::admin(name, Some("key_0123456789abcdef"), now);
            assert!(!e.is_repeatable(), "{name} is a lifecycle event");
            assert_eq!((e.session_id.as_str(), e.dest.as_str()), ("", ""));
            assert_eq!((e.purpose, e.channel), (None, None));
            // Stored as JSON and read back (Redis, memory): the same event.
            let back: AuditEvent =
                serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
            assert_eq!(back, e);
        }
        let page = reply(
            &[AuditEvent::admin("key_revoked", Some("key_1"), now)],
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        let ev = &v["data"]["events"][0];
        assert_eq!(ev["event"], "key_revoked");
        assert_eq!(ev["keyId"], "key_1");
        assert_eq!(ev["purpose"], serde_json::Value::Null);
        // Events stored before admin events existed still read (purpose given, no keyId).
        let old: AuditEvent = serde_json::from_str(
            r#"{"time":1,"event":"requested","sessionId":"s","purpose":"LOGIN","app":null,
            "dest":"+233****7745","outcome":"ok","status":null,"test":false}"#,
        )
        .unwrap();
        assert_eq!(
            (old.purpose, old.key_id.clone()),
            (Some(Purpose::Login), None)
        );
        let page = reply(&[old], None);
        assert!(!page.body.contains("keyId"));
    }

    #[test]
    fn verify_outcomes_classify_by_whether_they_need_a_send() {
        let s = Session::from_json(
            r#"{"v":1,"id":"00000000-0000-4000-8000-000000000000","workspaceId":"ws",
            "dest":"+15550000000","src":"Acme","purpose":"LOGIN","channel":"sms","app":null,
            "codeHash":"0000000000000000000000000000000000000000000000000000000000000000",
            "codeLength":6,"createdAt":0,"expiresAt":300000,"attemptsUsed":0,"maxAttempts":5,
            "state":"PENDING","verifiedAt":null,"test":false,"segments":1,"retentionSeconds":0}"#,
        )
        .unwrap();
        let now = UnixMillis(1);
        let event = |o| AuditEvent::for_verify(&s, o, now).unwrap();
        assert!(!event(VerifyOutcome::Approved).is_repeatable());
        assert!(!event(VerifyOutcome::Invalid { attempts_left: 1 }).is_repeatable());
        for o in [
            VerifyOutcome::AlreadyUsed,
            VerifyOutcome::Expired,
            VerifyOutcome::MaxAttemptsReached,
        ] {
            assert!(event(o).is_repeatable(), "{o:?}");
        }
        let refused = AuditEvent::refused(
            "rate_limited",
            "+15550000000",
            s.purpose,
            None,
            "RATE_LIMITED",
            now,
        );
        assert!(refused.is_repeatable());
        let other = AuditEvent::refused(
            "fraud_suspected",
            "+15550000000",
            s.purpose,
            None,
            "FRAUD_SUSPECTED",
            now,
        );
        assert!(other.is_repeatable(), "every refusal, whatever its name");
        assert!(AuditEvent::for_session("reused", &s, "ok", None, now).is_repeatable());
        assert!(!AuditEvent::for_session("canceled", &s, "ok", None, now).is_repeatable());
        assert!(!AuditEvent::for_session("requested", &s, "ok", None, now).is_repeatable());
    }
}
