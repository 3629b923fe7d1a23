//! Structured log lines (SPEC §9 "Logs"), the same on both hosts: one JSON line per request and
//! one per delivery failure with its cause. Built here so that what a line may hold is decided
//! once: never a code, key, hash, pepper or message text, and a destination only masked. The
//! route is named (`request`, `verify`, …), never the raw path, which a client controls.

use crate::time::UnixMillis;
use crate::validate::{self, Channel};
use alloc::string::String;
use alloc::vec::Vec;
use serde::Serialize;

/// How much a host prints (`LOG_LEVEL`: `debug`, `info` (default), `warn`, `error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Everything, `/health` and `/ready` probes included.
    Debug,
    /// Every request.
    Info,
    /// Refusals a client can cause (429) and delivery failures.
    Warn,
    /// 5xx answers only.
    Error,
}

impl Level {
    /// `LOG_LEVEL` (case-insensitive); absent or unknown: `info`.
    #[must_use]
    pub fn parse(s: Option<&str>) -> Level {
        match s.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
            Some("debug") => Level::Debug,
            Some("warn" | "warning") => Level::Warn,
            Some("error") => Level::Error,
            _ => Level::Info,
        }
    }

    /// The wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One answered request.
#[derive(Debug, Clone, Copy)]
pub struct RequestLog<'a> {
    /// When it was answered.
    pub time: UnixMillis,
    /// HTTP method.
    pub method: &'a str,
    /// The route's name (`request`, `verify`, `status`, …; `unknown` for a 404 route).
    pub route: &'a str,
    /// HTTP status answered.
    pub status: u16,
    /// Milliseconds from the request to its answer.
    pub latency_ms: u64,
    /// The authenticated workspace, if any.
    pub workspace: Option<&'a str>,
    /// The answer's error code (from [`error_code`]), if it is an error.
    pub error: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestLine<'a> {
    time: String,
    level: &'static str,
    msg: &'static str,
    method: &'a str,
    route: &'a str,
    status: u16,
    latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl RequestLog<'_> {
    /// Its level: 5xx `error`, 429 `warn`, probes (`health`, `ready`) `debug`, the rest `info`.
    #[must_use]
    pub fn level(&self) -> Level {
        match self.status {
            500.. => Level::Error,
            429 => Level::Warn,
            _ if matches!(self.route, "health" | "ready") => Level::Debug,
            _ => Level::Info,
        }
    }

    /// The JSON line, if a host at `threshold` prints it.
    #[must_use]
    pub fn line(&self, threshold: Level) -> Option<String> {
        let level = self.level();
        if level < threshold {
            return None;
        }
        serde_json::to_string(&RequestLine {
            time: self.time.to_rfc3339(),
            level: level.as_str(),
            msg: "request",
            method: self.method,
            route: self.route,
            status: self.status,
            latency_ms: self.latency_ms,
            workspace: self.workspace,
            error: self.error,
        })
        .ok()
    }
}

/// The error code of an error envelope (`{"error":{"code":…}}`), if `body` is one.
#[must_use]
pub fn error_code(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("error")?.get("code")?.as_str().map(String::from)
}

/// Why a message did not reach the gateway's 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// The gateway answered this non-2xx status.
    Status(u16),
    /// No answer within the gateway timeout.
    Timeout,
    /// No gateway configured, or the request could not be made (DNS, connection, TLS).
    Unreachable,
}

/// One delivery that failed.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryFailure<'a> {
    /// When.
    pub time: UnixMillis,
    /// The gateway kind (`json`, `twilio`).
    pub gateway: &'a str,
    /// The channel tried.
    pub channel: Channel,
    /// The destination, in full: the line holds it masked.
    pub dest: &'a str,
    /// The session (the message's reference).
    pub session_id: &'a str,
    /// Why.
    pub cause: FailureCause,
    /// Milliseconds the attempt took.
    pub latency_ms: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FailureLine<'a> {
    time: String,
    level: &'static str,
    msg: &'static str,
    gateway: &'a str,
    channel: Channel,
    dest: String,
    session_id: &'a str,
    cause: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_status: Option<u16>,
    latency_ms: u64,
}

/// A delivery receipt that says a message did not arrive (SPEC §8, §9 "Logs"): the provider's
/// status and error code, the masked number, the session and message ids; never the text.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptLine<'a> {
    time: String,
    level: &'static str,
    msg: &'static str,
    channel: Channel,
    dest: String,
    session_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    provider_status: &'a str,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
}

/// The `delivery_undelivered` line (level `warn`) for a receipt that moved `session` to an
/// undelivered or failed state, if a host at `threshold` prints it.
#[must_use]
pub fn receipt_failure(
    time: UnixMillis,
    session: &crate::session::Session,
    receipt: &crate::delivery::Receipt,
    threshold: Level,
) -> Option<String> {
    if Level::Warn < threshold || !receipt.state.is_failure() {
        return None;
    }
    serde_json::to_string(&ReceiptLine {
        time: time.to_rfc3339(),
        level: Level::Warn.as_str(),
        msg: "delivery_undelivered",
        channel: session.channel,
        dest: validate::mask_destination(&session.dest),
        session_id: &session.id,
        message_id: session
            .delivery
            .as_ref()
            .and_then(|d| d.message_id.as_deref()),
        provider_status: &receipt.status,
        state: receipt.state.as_str(),
        error_code: receipt.error_code.as_deref(),
    })
    .ok()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FallbackLine<'a> {
    time: String,
    level: &'static str,
    msg: &'static str,
    workspace_id: &'a str,
    session_id: &'a str,
    channel: Channel,
    /// `sent`, or the error code the resend was refused with.
    outcome: &'a str,
}

/// The `delivery_fallback` line (level `info`; `warn` when refused) once the resend a receipt
/// asked for ([`crate::flow::Fallback`]) ended: sent on its channel, or `refused` with that
/// error code (`RATE_LIMITED`, `DELIVERY_FAILED`, `ALREADY_USED`, …).
#[must_use]
pub fn fallback(
    time: UnixMillis,
    fb: &crate::flow::Fallback,
    refused: Option<&str>,
    threshold: Level,
) -> Option<String> {
    let level = if refused.is_some() {
        Level::Warn
    } else {
        Level::Info
    };
    if level < threshold {
        return None;
    }
    serde_json::to_string(&FallbackLine {
        time: time.to_rfc3339(),
        level: level.as_str(),
        msg: "delivery_fallback",
        workspace_id: &fb.workspace.id,
        session_id: &fb.session_id,
        channel: fb.channel,
        outcome: refused.unwrap_or("sent"),
    })
    .ok()
}

impl DeliveryFailure<'_> {
    /// The JSON line (level `warn`), if a host at `threshold` prints it.
    #[must_use]
    pub fn line(&self, threshold: Level) -> Option<String> {
        if Level::Warn < threshold {
            return None;
        }
        let (cause, gateway_status) = match self.cause {
            FailureCause::Status(s) => ("gateway_status", Some(s)),
            FailureCause::Timeout => ("gateway_timeout", None),
            FailureCause::Unreachable => ("gateway_unreachable", None),
        };
        serde_json::to_string(&FailureLine {
            time: self.time.to_rfc3339(),
            level: Level::Warn.as_str(),
            msg: "delivery_failed",
            gateway: self.gateway,
            channel: self.channel,
            dest: validate::mask_destination(self.dest),
            session_id: self.session_id,
            cause,
            gateway_status,
            latency_ms: self.latency_ms,
        })
        .ok()
    }
}

/// A store step that failed (SPEC §9 "Logs": a failure with its cause): which IO, whether the
/// stored state could not be read (corrupt) or the store could not be reached, and the store's
/// own error name — never a key, value, number or code.
#[derive(Debug, Clone, Copy)]
pub struct StoreFailure<'a> {
    /// When.
    pub time: UnixMillis,
    /// The store (`durableObject`, `kv`, `d1`, `redis`, `memory`).
    pub store: &'a str,
    /// The flow's IO kind (`admit`, `verify`, …: [`crate::flow::Io::kind`]).
    pub io: &'a str,
    /// The stored state could not be read (a 500), rather than the store unreachable (a 503).
    pub corrupt: bool,
    /// The store's error name or code (`ECONNREFUSED`, `CROSSSLOT`, `STORE_UNAVAILABLE`); only
    /// letters, digits and `_.:-` are kept, at most 64 of them.
    pub cause: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoreLine<'a> {
    time: String,
    level: &'static str,
    msg: &'static str,
    store: &'a str,
    io: &'a str,
    kind: &'static str,
    cause: String,
}

/// `s` with only letters, digits and `_.:-` (a space becomes `_`), a run of 6 or more digits
/// (a number or a code) as `#`, at most 64 characters: what a store's error name may add to a
/// line without carrying data.
fn error_name(s: &str) -> String {
    let kept: Vec<char> = s
        .chars()
        .map(|c| if c == ' ' { '_' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
        .collect();
    let mut out = String::new();
    let mut i = 0usize;
    while let Some(&c) = kept.get(i) {
        let run = kept
            .get(i..)
            .unwrap_or(&[])
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if run >= 6 {
            out.push('#');
            i = i.saturating_add(run);
        } else {
            out.push(c);
            i = i.saturating_add(1);
        }
    }
    out.chars().take(64).collect()
}

impl StoreFailure<'_> {
    /// The JSON line (level `error`), if a host at `threshold` prints it.
    #[must_use]
    pub fn line(&self, threshold: Level) -> Option<String> {
        if Level::Error < threshold {
            return None;
        }
        serde_json::to_string(&StoreLine {
            time: self.time.to_rfc3339(),
            level: Level::Error.as_str(),
            msg: "store_failed",
            store: self.store,
            io: self.io,
            kind: if self.corrupt {
                "corrupt"
            } else {
                "unavailable"
            },
            cause: error_name(self.cause),
        })
        .ok()
    }
}

/// A Redis node on which the API-key cache cannot follow writes (Redis refused `CLIENT
/// TRACKING` or `SUBSCRIBE`: an ACL, or Redis before 6): while it lasts, key lookups go to
/// Redis, as they would with the cache off. A host prints it once per node and cause.
#[derive(Debug, Clone, Copy)]
pub struct KeyCacheOff<'a> {
    /// When.
    pub time: UnixMillis,
    /// The node (`host:port`).
    pub node: &'a str,
    /// Redis's error (`NOPERM`, `ERR`); only letters, digits and `_.:-` are kept, at most 64.
    pub cause: &'a str,
}

#[derive(Serialize)]
struct KeyCacheLine {
    time: String,
    level: &'static str,
    msg: &'static str,
    store: &'static str,
    node: String,
    cause: String,
}

impl KeyCacheOff<'_> {
    /// The `key_cache_off` line (level `warn`), if a host at `threshold` prints it.
    #[must_use]
    pub fn line(&self, threshold: Level) -> Option<String> {
        if Level::Warn < threshold {
            return None;
        }
        serde_json::to_string(&KeyCacheLine {
            time: self.time.to_rfc3339(),
            level: Level::Warn.as_str(),
            msg: "key_cache_off",
            store: "redis",
            node: error_name(self.node),
            cause: error_name(self.cause),
        })
        .ok()
    }
}

#[derive(Serialize)]
struct ProblemLine<'a> {
    time: String,
    level: &'static str,
    msg: &'static str,
    problem: &'a str,
}

/// The configuration problem a 500 `MISCONFIGURED` answer names (its message: what is missing or
/// wrong, never a value), as its own line (level `error`): `None` for any other answer or when a
/// host at `threshold` does not print errors.
#[must_use]
pub fn config_problem_line(time: UnixMillis, body: &str, threshold: Level) -> Option<String> {
    if Level::Error < threshold {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    if v.get("error")?.get("code")?.as_str()? != "MISCONFIGURED" {
        return None;
    }
    config_problem(time, v.get("message")?.as_str()?, threshold)
}

/// A configuration problem (what is missing or wrong, never a value) as a line of level
/// `error`: a host prints it when it finds one (at start-up, or when a request meets it).
#[must_use]
pub fn config_problem(time: UnixMillis, problem: &str, threshold: Level) -> Option<String> {
    if Level::Error < threshold {
        return None;
    }
    serde_json::to_string(&ProblemLine {
        time: time.to_rfc3339(),
        level: Level::Error.as_str(),
        msg: "config_problem",
        problem,
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_cache_off_line() {
        let l = KeyCacheOff {
            time: UnixMillis(1_763_800_000_000),
            node: "10.0.0.7:6379",
            cause: "NOPERM this user has no permissions to run the 'client|tracking' command",
        };
        let line = l.line(Level::Info).unwrap_or_default();
        assert!(
            line.contains(
                r#""level":"warn","msg":"key_cache_off","store":"redis","node":"10.0.0.7:6379""#
            ),
            "{line}"
        );
        assert!(
            line.contains(
                r#""cause":"NOPERM_this_user_has_no_permissions_to_run_the_clienttracking_co""#
            ),
            "{line}"
        );
        assert_eq!(l.line(Level::Error), None);
    }

    #[test]
    fn levels_and_request_lines() {
        assert_eq!(Level::parse(None), Level::Info);
        assert_eq!(Level::parse(Some(" WARN ")), Level::Warn);
        assert_eq!(Level::parse(Some("nonsense")), Level::Info);
        let mut r = RequestLog {
            time: UnixMillis(1_763_800_000_000),
            method: "POST",
            route: "request",
            status: 200,
            latency_ms: 12,
            workspace: Some("ws_1"),
            error: None,
        };
        let line = r.line(Level::Info).unwrap();
        assert_eq!(
            line,
            r#"{"time":"2025-11-22T08:26:40.000Z","level":"info","msg":"request","method":"POST","route":"request","status":200,"latencyMs":12,"workspace":"ws_1"}"#
        );
        assert_eq!(r.line(Level::Warn), None, "info is below warn");
        r.status = 503;
        r.error = Some("STORE_UNAVAILABLE");
        assert!(r
            .line(Level::Error)
            .unwrap()
            .contains(r#""error":"STORE_UNAVAILABLE""#));
        r.route = "health";
        r.status = 200;
        assert_eq!(r.line(Level::Info), None, "probes are debug");
        assert_eq!(
            error_code(r#"{"success":false,"error":{"code":"RATE_LIMITED"}}"#).as_deref(),
            Some("RATE_LIMITED")
        );
        assert_eq!(error_code(r#"{"success":true}"#), None);
    }

    #[test]
    fn a_failure_line_masks_the_destination() {
        let f = DeliveryFailure {
            time: UnixMillis(0),
            gateway: "json",
            channel: Channel::Sms,
            dest: "+233202007745",
            session_id: "s",
            cause: FailureCause::Status(401),
            latency_ms: 3,
        };
        let line = f.line(Level::Info).unwrap();
        assert!(line.contains(r#""dest":"+233*****7745""#), "{line}");
        assert!(line.contains(r#""gatewayStatus":401"#), "{line}");
        assert!(!line.contains("202007745"), "{line}");
        assert_eq!(f.line(Level::Error), None);
    }

    #[test]
    fn store_failures_and_config_problems_have_their_own_lines() {
        let f = StoreFailure {
            time: UnixMillis(0),
            store: "redis",
            io: "admit",
            corrupt: false,
            cause: "ECONNREFUSED 127.0.0.1:6379 {\"dest\":\"+233202007745\"}",
        };
        let line = f.line(Level::Info).unwrap();
        assert!(line.contains(r#""msg":"store_failed""#), "{line}");
        assert!(line.contains(r#""kind":"unavailable""#), "{line}");
        assert!(
            line.contains(r#""cause":"ECONNREFUSED_127.0.0.1:6379_dest:#""#),
            "only the error's name survives, a number never: {line}"
        );
        assert!(
            f.line(Level::Error).is_some(),
            "errors print at every level"
        );
        let io = crate::flow::Io::Forget {
            dest: "+233202007745".into(),
            session_id: "s".into(),
        };
        assert_eq!(io.kind(), "forget");
        let body = r#"{"success":false,"message":"OTP_PEPPER is missing or shorter than 32 bytes","error":{"code":"MISCONFIGURED"}}"#;
        let p = config_problem_line(UnixMillis(0), body, Level::Info).unwrap();
        assert!(
            p.contains(r#""msg":"config_problem""#) && p.contains("OTP_PEPPER"),
            "{p}"
        );
        assert_eq!(
            config_problem_line(
                UnixMillis(0),
                r#"{"error":{"code":"RATE_LIMITED"}}"#,
                Level::Info
            ),
            None
        );
    }
}
