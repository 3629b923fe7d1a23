//! Log lines of `otpkit serve` (SPEC §9 "Logs"), built by otpkit-core's `log` module so that both
//! hosts print the same fields and nothing else (never a code, key, hash, pepper or message text;
//! destinations masked). JavaScript only prints them.

use crate::ms;
use napi_derive::napi;
use otpkit_core::log::{self, DeliveryFailure, FailureCause, Level, RequestLog, StoreFailure};
use otpkit_core::Channel;

/// The request's line at `LOG_LEVEL` `level`, or null when that level does not print it. `body`:
/// the answer's body when it is an error (its error code is logged, nothing else of it).
#[napi]
#[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
pub fn request_log_line(
    level: Option<String>,
    now: f64,
    method: String,
    route: String,
    status: u32,
    latency_ms: f64,
    workspace: Option<String>,
    body: Option<String>,
) -> Option<String> {
    let error = body.as_deref().and_then(log::error_code);
    RequestLog {
        time: ms(now),
        method: &method,
        route: &route,
        status: u16::try_from(status).unwrap_or(500),
        latency_ms: ms(latency_ms).0,
        workspace: workspace.as_deref(),
        error: error.as_deref(),
    }
    .line(Level::parse(level.as_deref()))
}

/// A failed delivery's line: `status` the gateway's non-2xx answer, else `timedOut`, else the
/// gateway could not be reached (or none is configured).
#[napi]
#[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
pub fn delivery_failure_line(
    level: Option<String>,
    now: f64,
    gateway: String,
    channel: String,
    dest: String,
    session_id: String,
    status: Option<u32>,
    timed_out: bool,
    latency_ms: f64,
) -> Option<String> {
    let cause = match (status, timed_out) {
        (Some(s), _) => FailureCause::Status(u16::try_from(s).unwrap_or(0)),
        (None, true) => FailureCause::Timeout,
        (None, false) => FailureCause::Unreachable,
    };
    DeliveryFailure {
        time: ms(now),
        gateway: &gateway,
        channel: Channel::parse(&channel).unwrap_or_default(),
        dest: &dest,
        session_id: &session_id,
        cause,
        latency_ms: ms(latency_ms).0,
    }
    .line(Level::parse(level.as_deref()))
}

/// The calling code a destination (`+` and digits) starts with, for metrics labels; `unknown`
/// when it has none assigned. Never the number itself.
#[napi]
#[allow(clippy::needless_pass_by_value)]
pub fn calling_code(dest: String) -> String {
    otpkit_core::validate::calling_code(dest.trim_start_matches('+'))
        .unwrap_or("unknown")
        .to_string()
}

/// The error code of an error envelope, or null (for metrics' refusal reasons).
#[napi]
#[allow(clippy::needless_pass_by_value)]
pub fn error_code_of(body: String) -> Option<String> {
    log::error_code(&body)
}

/// A store step that failed (`io` the flow's IO kind, `cause` the store's error name or code):
/// the `store_failed` line, or null when `level` does not print errors.
#[napi]
#[allow(clippy::needless_pass_by_value)]
pub fn store_failure_line(
    level: Option<String>,
    now: f64,
    store: String,
    io: String,
    corrupt: bool,
    cause: String,
) -> Option<String> {
    StoreFailure {
        time: ms(now),
        store: &store,
        io: &io,
        corrupt,
        cause: &cause,
    }
    .line(Level::parse(level.as_deref()))
}

/// The `key_cache_off` line for Redis node `node` (`host:port`) that refused tracking with
/// `cause`, or null when `level` does not print warnings.
#[napi]
#[allow(clippy::needless_pass_by_value)]
pub fn key_cache_off_line(
    level: Option<String>,
    now: f64,
    node: String,
    cause: String,
) -> Option<String> {
    log::KeyCacheOff {
        time: ms(now),
        node: &node,
        cause: &cause,
    }
    .line(Level::parse(level.as_deref()))
}

/// The `config_problem` line a 500 `MISCONFIGURED` answer's `body` names, or null.
#[napi]
#[allow(clippy::needless_pass_by_value)]
pub fn config_problem_line(level: Option<String>, now: f64, body: String) -> Option<String> {
    log::config_problem_line(ms(now), &body, Level::parse(level.as_deref()))
}
