//! Structured log lines (SPEC §9 "Logs"), the same on both hosts: one JSON line per request and
//! one per delivery failure with its cause. Built here so that what a line may hold is decided
//! once: never a code, key, hash, pepper or message text, and a destination only masked. The
//! route is named (`request`, `verify`, …), never the raw path, which a client controls.

use crate::time::UnixMillis;
use crate::validate::{self, Channel};
use alloc::string::String;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
