//! Errors across the boundary. A core [`Error`] is thrown as a JS `Error` whose message is
//! `OTPKIT:` + JSON [`error_info`]; `lib/errors.js` turns it into an `OtpError` with `.code`,
//! `.httpStatus` and the core's error envelope as `body`. The host-side conditions the
//! JavaScript layer raises itself (store down, gateway failed, …) are named by their code.

use napi::bindgen_prelude::Status;
use napi::Result;
use napi_derive::napi;
use otpkit_core::http::envelope;
use otpkit_core::Error;

/// The error as the JSON `lib/errors.js` reads: `{code, httpStatus, message, field?,
/// retryAfterSeconds?, body}` (a flow's `{"error": …}` step carries the same).
pub(crate) fn error_info(e: &Error) -> serde_json::Value {
    serde_json::json!({
        "code": e.code(),
        "httpStatus": e.http_status(),
        "message": e.message(),
        "field": e.field(),
        "retryAfterSeconds": e.retry_after_secs(),
        "body": envelope::error(e).body,
    })
}

/// Prefix of every error message thrown with a core error inside.
const ERROR_PREFIX: &str = "OTPKIT:";

/// The JS `Error` for a core error.
pub(crate) fn throw(e: &Error) -> napi::Error {
    napi::Error::new(
        Status::GenericFailure,
        format!("{ERROR_PREFIX}{}", error_info(e)),
    )
}

/// The JS `Error` for a core error with its cause: the failing part's own word for what
/// happened (a Redis reply's first word such as `READONLY`, or `ECONNREFUSED`), which
/// `lib/errors.js` keeps as the error's `cause.code` for the store-failure log line. Never more
/// of a reply's text.
pub(crate) fn throw_caused(e: &Error, cause: &str) -> napi::Error {
    let mut info = error_info(e);
    info["cause"] = cause.into();
    napi::Error::new(Status::GenericFailure, format!("{ERROR_PREFIX}{info}"))
}

/// Throws the core error named by `code` (see [`crate::http::error_reply`]). `message` says
/// what is wrong for `MISCONFIGURED` (never a secret); the other codes have the core's own.
#[napi]
pub fn throw_error(code: String, message: Option<String>) -> Result<()> {
    if code == "MISCONFIGURED" {
        return Err(throw(&Error::Misconfigured {
            message: message
                .unwrap_or_else(|| "the host is not configured to serve".into())
                .into(),
        }));
    }
    Err(throw(&host_error(&code)))
}

/// The core error for a host-side condition named by its code; unknown codes are internal.
pub(crate) fn host_error(code: &str) -> Error {
    match code {
        "STORE_UNAVAILABLE" => Error::StoreUnavailable,
        "DELIVERY_FAILED" => Error::DeliveryFailed,
        "NOT_FOUND" => Error::NotFound,
        "UNAUTHORIZED" => Error::Unauthorized,
        "METHOD_NOT_ALLOWED" => Error::MethodNotAllowed,
        "PAYLOAD_TOO_LARGE" => Error::PayloadTooLarge,
        "UNSUPPORTED_MEDIA_TYPE" => Error::UnsupportedMediaType,
        _ => Error::CorruptState {
            message: "internal error".into(),
        },
    }
}

/// The core error a thrown JS error carries (see [`throw`]): its code, and for `MISCONFIGURED`
/// its message; anything unreadable is `STORE_UNAVAILABLE` (what a store's failure is).
pub(crate) fn core_error(e: &napi::Error) -> Error {
    let info: serde_json::Value = e
        .reason
        .strip_prefix(ERROR_PREFIX)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    match info["code"].as_str() {
        Some("MISCONFIGURED") => Error::Misconfigured {
            message: info["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
                .into(),
        },
        Some(code) => host_error(code),
        None => Error::StoreUnavailable,
    }
}
