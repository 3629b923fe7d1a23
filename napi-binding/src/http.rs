//! What `otpkit serve` (lib/server.js) needs around the core's flows: routing, the checks
//! before a body is read, authentication, and the answers that are not a flow's (health, the
//! OpenAPI document, host-side errors, and the single-step replies of the library API).

use crate::dialect;
use crate::errors::{host_error, throw};
use napi::bindgen_prelude::Buffer;
use napi::Result;
use napi_derive::napi;
use otpkit_core::http::envelope::{self, Reply as CoreReply};
use otpkit_core::http::request::{self, Dialect};
use otpkit_core::http::route::{match_route, Route as CoreRoute};
use otpkit_core::workspace;

/// An HTTP answer: status, JSON body (empty for 204), `Retry-After` seconds.
#[napi(object)]
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u32,
    /// JSON body.
    pub body: String,
    /// `Retry-After` seconds, when the answer has one.
    pub retry_after: Option<u32>,
    /// `true` for a replayed `Idempotency-Key` answer (header `Idempotent-Replayed: true`).
    pub replayed: Option<bool>,
}

impl From<CoreReply> for Reply {
    fn from(r: CoreReply) -> Self {
        Reply {
            status: u32::from(r.status),
            body: r.body,
            retry_after: r.retry_after,
            replayed: r.replayed.then_some(true),
        }
    }
}

/// The error envelope for a host-side condition: `STORE_UNAVAILABLE`, `DELIVERY_FAILED`,
/// `NOT_FOUND`, `UNAUTHORIZED`, `METHOD_NOT_ALLOWED`, `PAYLOAD_TOO_LARGE`,
/// `UNSUPPORTED_MEDIA_TYPE`; anything else is `INTERNAL_ERROR`.
#[napi]
pub fn error_reply(code: String) -> Reply {
    envelope::error(&host_error(&code)).into()
}

/// `GET /ready`: `storeOk` from the store's own check, `configured` from the engine.
#[napi]
pub fn ready_reply(store_ok: bool, configured: bool) -> Reply {
    envelope::ready(store_ok, configured).into()
}

/// `GET /health`.
#[napi]
pub fn health_reply(configured: bool) -> Reply {
    envelope::health(configured).into()
}

/// `GET /openapi.json`.
#[napi]
pub fn openapi_reply() -> Reply {
    otpkit_core::http::openapi::reply().into()
}

/// A matched route.
#[napi(object)]
#[derive(Debug)]
pub struct RouteMatch {
    /// `health`, `openapi`, `request`, `verify`, `status`, `cancel`, `resend`, `audit`, `createWorkspace`, `patchWorkspace`,
    /// `createKey`, `revokeKey`, `listWorkspaces`, `adminAnalytics`, `getFraud`, `unblockPrefix`,
    /// `twilioReceipt`, `jsonReceipt`.
    pub kind: String,
    /// `v1` or `zend` for the OTP routes.
    pub dialect: Option<String>,
    /// Path id: session id (zend verify, status, cancel) or workspace id (admin).
    pub id: Option<String>,
    /// Key id (`revokeKey`).
    pub key_id: Option<String>,
    /// Number prefix as in the path (`unblockPrefix`).
    pub prefix: Option<String>,
    /// An operator route.
    pub admin: bool,
    /// A delivery receipt route (SPEC §8): no API key, any content type, signed.
    pub receipt: bool,
}

/// Routes `method` `path` (no query string); throws 404 / 405 as the core decides.
#[napi]
pub fn route(method: String, path: String) -> Result<RouteMatch> {
    let r = match_route(&method, &path).map_err(|e| throw(&e))?;
    let d = |d: Dialect| {
        Some(match d {
            Dialect::V1 => "v1".to_string(),
            Dialect::Zend => "zend".to_string(),
        })
    };
    // The name is the core's (`Route::name`, as logs say it); the rest is what the path carries.
    let mut prefix = None;
    let (dialect, id, key_id) = match r {
        CoreRoute::Request(x) => (d(x), None, None),
        CoreRoute::Verify(x, id) => (d(x), id.map(str::to_string), None),
        CoreRoute::Status(x, id) | CoreRoute::Cancel(x, id) | CoreRoute::Resend(x, id) => {
            (d(x), Some(id.to_string()), None)
        }
        CoreRoute::PatchWorkspace(id)
        | CoreRoute::GetWorkspace(id)
        | CoreRoute::CreateKey(id)
        | CoreRoute::GetFraud(id) => (None, Some(id.to_string()), None),
        CoreRoute::RevokeKey(id, k) => (None, Some(id.to_string()), Some(k.to_string())),
        CoreRoute::UnblockPrefix(id, p) => {
            prefix = Some(p.to_string());
            (None, Some(id.to_string()), None)
        }
        _ => (None, None, None),
    };
    Ok(RouteMatch {
        kind: r.name().to_string(),
        dialect,
        id,
        key_id,
        prefix,
        admin: r.is_admin(),
        receipt: r.is_receipt(),
    })
}

/// A `Content-Length` header's value, when it is a number.
pub(crate) fn declared_length(v: Option<&str>) -> Option<u64> {
    v.and_then(|v| v.trim().parse::<u64>().ok())
}

/// 415 / 413 before the body is read (SPEC's order).
#[napi]
pub fn check_content(content_type: Option<String>, content_length: Option<String>) -> Result<()> {
    let declared = declared_length(content_length.as_deref());
    request::check_content(content_type.as_deref(), declared).map_err(|e| throw(&e))
}

/// Does a request on a route whose body is optional (resend) carry one? (`otpkit_core`'s rule.)
#[napi]
pub fn has_body(content_type: Option<String>, content_length: Option<String>) -> bool {
    let declared = declared_length(content_length.as_deref());
    request::has_body(content_type.as_deref(), declared)
}

/// The largest body accepted, in bytes.
#[napi]
pub fn max_body_bytes() -> u32 {
    u32::try_from(request::MAX_BODY_BYTES).unwrap_or(u32::MAX)
}

/// Hex SHA-256 of the API key presented by `Authorization: Bearer` or `x-api-key`, or `null`
/// when none is presented in our key format.
#[napi]
pub fn presented_key_hash(
    authorization: Option<String>,
    x_api_key: Option<String>,
) -> Option<String> {
    workspace::presented_api_key(authorization.as_deref(), x_api_key.as_deref())
        .map(workspace::api_key_hash)
}

/// Hex SHA-256 of an API key given to the library directly (`null` if not in our format).
#[napi]
pub fn api_key_hash(api_key: String) -> Option<String> {
    workspace::is_api_key_format(&api_key).then(|| workspace::api_key_hash(&api_key))
}

/// Constant-time admin token check of an `Authorization` header.
#[napi]
pub fn admin_authorized(admin_token: String, authorization: Option<String>) -> bool {
    workspace::admin_authorized(&admin_token, authorization.as_deref())
}

/// The canonical session id, or `null` for a malformed one (answered as not found).
#[napi]
pub fn normalize_session_id(raw: String) -> Option<String> {
    otpkit_core::validate::normalize_session_id(&raw)
}

/// A parsed verification request.
#[napi(object)]
pub struct VerifyInput {
    /// As given (echoed in NOT_FOUND answers).
    pub raw_session_id: String,
    /// Canonical id, `null` when malformed (answered NOT_FOUND without a lookup).
    pub session_id: Option<String>,
    /// The code (4–10 digits). Never log it.
    pub code: String,
}

impl std::fmt::Debug for VerifyInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyInput")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// Parses a verify body (`v1`: `{sessionId, code}`; `zend`: `{code}` with the path id).
#[napi]
pub fn parse_verify(
    dialect_name: String,
    path_id: Option<String>,
    body: Buffer,
) -> Result<VerifyInput> {
    let r = crate::flow::verify_request(dialect(&dialect_name)?, path_id.as_deref(), &body)
        .map_err(|e| throw(&e))?;
    Ok(VerifyInput {
        raw_session_id: r.raw_session_id,
        session_id: r.session_id,
        code: r.code,
    })
}
