//! otpkit for Node.js: otpkit-core's pure operations through Node-API, and a thread-safe
//! in-memory store. The npm package's JavaScript (`lib/`) holds the Redis store, the gateway
//! and the HTTP server; every rule those need is a function here, so no rule of SPEC is
//! written twice.
//!
//! Conventions at this boundary:
//! - Errors are thrown as `Error` whose message is `OTPKIT:` + JSON `{code, httpStatus, message,
//!   field?, retryAfterSeconds?, body}`; `lib/errors.js` turns them into `OtpError`. `body` is the
//!   core's error envelope, so an HTTP host answers it byte for byte like the Worker.
//! - Times are Unix milliseconds as JS numbers.
//! - Stored state crosses as the core's versioned JSON (`"v": 1`).

mod flow;
mod gateway;
mod memory;
mod ops;

use napi::bindgen_prelude::{Buffer, Status};
use napi::Result;
use napi_derive::napi;
use otpkit_core::analytics::{self, AnalyticsQuery, Bucket, Counts, Delta};
use otpkit_core::audit::{self, AuditEvent, AuditQuery};
use otpkit_core::flow::Admitted;
use otpkit_core::guard::{DestinationGuard, FloodShield};
use otpkit_core::http::envelope::{self, Reply as CoreReply};
use otpkit_core::http::request::{self, Dialect, IssueRequest, VerifyRequest};
use otpkit_core::http::route::{match_route, Route as CoreRoute};
use otpkit_core::session::{plan_issue, Verification};
use otpkit_core::workspace::{self, WorkspaceRecord};
use otpkit_core::{Entropy, Error, Pepper, Purpose, Session, UnixMillis, VerifyOutcome};

pub use memory::MemoryStore;

/// Prefix of every error message thrown with a core error inside.
const ERROR_PREFIX: &str = "OTPKIT:";

pub(crate) fn throw(e: &Error) -> napi::Error {
    let info = serde_json::json!({
        "code": e.code(),
        "httpStatus": e.http_status(),
        "message": e.message(),
        "field": e.field(),
        "retryAfterSeconds": e.retry_after_secs(),
        "body": envelope::error(e).body,
    });
    napi::Error::new(Status::GenericFailure, format!("{ERROR_PREFIX}{info}"))
}

pub(crate) fn ms(now: f64) -> UnixMillis {
    // JS numbers are exact up to 2^53 ms; negative or NaN clock values become 0.
    UnixMillis(if now.is_finite() && now > 0.0 {
        now as u64
    } else {
        0
    })
}

pub(crate) fn num(t: UnixMillis) -> f64 {
    t.0 as f64
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|_| {
        throw(&Error::Misconfigured {
            message: "no CSPRNG available".into(),
        })
    })?;
    Ok(buf)
}

fn dialect(name: &str) -> Result<Dialect> {
    match name {
        "v1" => Ok(Dialect::V1),
        "zend" => Ok(Dialect::Zend),
        _ => Err(throw(&Error::invalid("dialect", "must be v1 or zend"))),
    }
}

fn purpose(name: &str) -> Result<Purpose> {
    Purpose::parse(name).ok_or_else(|| throw(&Error::invalid("purpose", "is not a purpose")))
}

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
}

impl From<CoreReply> for Reply {
    fn from(r: CoreReply) -> Self {
        Reply {
            status: u32::from(r.status),
            body: r.body,
            retry_after: r.retry_after,
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

/// Throws the core error named by `code` (see [`error_reply`]).
#[napi]
pub fn throw_error(code: String) -> Result<()> {
    Err(throw(&host_error(&code)))
}

/// Throws a guard's refusal (`RATE_LIMITED` or `DESTINATION_LOCKED`) with its retry delay.
#[napi]
pub fn throw_refused(code: String, retry_after: u32) -> Result<()> {
    let retry_after_secs = retry_after.max(1);
    Err(throw(&match code.as_str() {
        "DESTINATION_LOCKED" => Error::DestinationLocked { retry_after_secs },
        _ => Error::RateLimited { retry_after_secs },
    }))
}

fn host_error(code: &str) -> Error {
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
    /// `health`, `openapi`, `request`, `verify`, `status`, `audit`, `createWorkspace`, `patchWorkspace`,
    /// `createKey`, `revokeKey`.
    pub kind: String,
    /// `v1` or `zend` for the OTP routes.
    pub dialect: Option<String>,
    /// Path id: session id (zend verify, status) or workspace id (admin).
    pub id: Option<String>,
    /// Key id (`revokeKey`).
    pub key_id: Option<String>,
    /// An operator route.
    pub admin: bool,
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
    let (kind, dialect, id, key_id) = match r {
        CoreRoute::Health => ("health", None, None, None),
        CoreRoute::OpenApi => ("openapi", None, None, None),
        CoreRoute::Request(x) => ("request", d(x), None, None),
        CoreRoute::Verify(x, id) => ("verify", d(x), id.map(str::to_string), None),
        CoreRoute::Status(x, id) => ("status", d(x), Some(id.to_string()), None),
        CoreRoute::Audit => ("audit", None, None, None),
        CoreRoute::Analytics => ("analytics", None, None, None),
        CoreRoute::CreateWorkspace => ("createWorkspace", None, None, None),
        CoreRoute::PatchWorkspace(id) => ("patchWorkspace", None, Some(id.to_string()), None),
        CoreRoute::CreateKey(id) => ("createKey", None, Some(id.to_string()), None),
        CoreRoute::RevokeKey(id, k) => {
            ("revokeKey", None, Some(id.to_string()), Some(k.to_string()))
        }
    };
    Ok(RouteMatch {
        kind: kind.to_string(),
        dialect,
        id,
        key_id,
        admin: r.is_admin(),
    })
}

/// 415 / 413 before the body is read (SPEC's order).
#[napi]
pub fn check_content(content_type: Option<String>, content_length: Option<String>) -> Result<()> {
    let declared = content_length.and_then(|v| v.trim().parse::<u64>().ok());
    request::check_content(content_type.as_deref(), declared).map_err(|e| throw(&e))
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

/// A tenant: sender names, policy and keys (the core's `WorkspaceRecord`).
#[napi]
#[derive(Debug, Clone)]
pub struct Workspace {
    pub(crate) rec: WorkspaceRecord,
    /// The library's default workspace without a sender list accepts any valid sender name.
    any_sender: bool,
}

#[napi]
impl Workspace {
    /// Reads a stored record.
    #[napi(factory)]
    pub fn from_json(json: String) -> Result<Workspace> {
        Ok(Workspace {
            rec: WorkspaceRecord::from_json(&json).map_err(|e| throw(&e))?,
            any_sender: false,
        })
    }

    /// `POST /v1/admin/workspaces` body → a new workspace with a fresh id (no key yet).
    #[napi(factory)]
    pub fn create(body: Buffer, now: f64) -> Result<Workspace> {
        let id = workspace::workspace_id(&random::<12>()?);
        Ok(Workspace {
            rec: WorkspaceRecord::from_create_json(&body, id, ms(now)).map_err(|e| throw(&e))?,
            any_sender: false,
        })
    }

    /// The library's workspace: `id`, optional `senders` (absent: any valid sender name is
    /// accepted) and `policy` JSON (validated as the admin API does).
    #[napi(factory)]
    pub fn library(
        id: String,
        senders: Option<Vec<String>>,
        policy: Option<String>,
        now: f64,
    ) -> Result<Workspace> {
        if !otpkit_core::validate::is_workspace_id(&id) {
            return Err(throw(&Error::invalid(
                "workspaceId",
                "must be 1 to 64 characters of A-Z a-z 0-9 _ -",
            )));
        }
        let policy_value: serde_json::Value = match policy.as_deref() {
            Some(p) => serde_json::from_str(p)
                .map_err(|_| throw(&Error::invalid("policy", "must be an object")))?,
            None => serde_json::Value::Null,
        };
        let any_sender = senders.is_none();
        let body = serde_json::json!({
            "name": id,
            // Without a list, any valid sender name is accepted; "otpkit" is the default sender.
            "senders": senders.unwrap_or_else(|| vec!["otpkit".to_string()]),
            "policy": policy_value,
        });
        let rec = WorkspaceRecord::from_create_json(body.to_string().as_bytes(), id, ms(now))
            .map_err(|e| throw(&e))?;
        Ok(Workspace { rec, any_sender })
    }

    /// Workspace id.
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.rec.id.clone()
    }

    /// `sendsPerWorkspacePerMinute`.
    #[napi(getter)]
    pub fn flood_limit(&self) -> u32 {
        self.rec.policy.sends_per_workspace_per_minute
    }

    /// Whether reuse is on.
    #[napi(getter)]
    pub fn reuse(&self) -> bool {
        self.rec.policy.reuse
    }

    /// Stored JSON.
    #[napi]
    pub fn to_json(&self) -> String {
        self.rec.to_json()
    }

    /// Does this workspace hold a live key with this hash?
    #[napi]
    pub fn live_key(&self, key_hash: String) -> bool {
        self.rec.live_key(&key_hash).is_some()
    }

    /// `PATCH` body → the updated workspace (nothing changes unless all of it is valid).
    #[napi]
    pub fn patched(&self, body: Buffer) -> Result<Workspace> {
        Ok(Workspace {
            rec: self.rec.patched(&body).map_err(|e| throw(&e))?,
            any_sender: self.any_sender,
        })
    }
}

/// A planned issue: the session to store and the message to send. Holds the code only inside
/// the rendered text, which goes to the gateway and nowhere else.
#[napi]
pub struct Plan {
    pub(crate) session: Session,
    text: Option<String>,
    dialect: Dialect,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("session_id", &self.session.id)
            .finish_non_exhaustive()
    }
}

#[napi]
impl Plan {
    /// Session id.
    #[napi(getter)]
    pub fn session_id(&self) -> String {
        self.session.id.clone()
    }
    /// Workspace id.
    #[napi(getter)]
    pub fn workspace_id(&self) -> String {
        self.session.workspace_id.clone()
    }
    /// Destination (E.164).
    #[napi(getter)]
    pub fn dest(&self) -> String {
        self.session.dest.clone()
    }
    /// Sender name.
    #[napi(getter)]
    pub fn src(&self) -> String {
        self.session.src.clone()
    }
    /// Purpose.
    #[napi(getter)]
    pub fn purpose(&self) -> String {
        self.session.purpose.as_str().to_string()
    }
    /// App label.
    #[napi(getter)]
    pub fn app(&self) -> Option<String> {
        self.session.app.clone()
    }
    /// `sms` or `whatsapp`.
    #[napi(getter)]
    pub fn channel(&self) -> String {
        self.session.channel.as_str().to_string()
    }
    /// Expiry (ms).
    #[napi(getter)]
    pub fn expires_at(&self) -> f64 {
        num(self.session.expires_at)
    }
    /// A test number: nothing is sent.
    #[napi(getter)]
    pub fn test(&self) -> bool {
        self.session.test
    }
    /// `v1` or `zend`.
    #[napi(getter)]
    pub fn dialect(&self) -> String {
        match self.dialect {
            Dialect::V1 => "v1".into(),
            Dialect::Zend => "zend".into(),
        }
    }
    /// The message text (contains the code; for the gateway only). `null` for a test number.
    #[napi(getter)]
    pub fn text(&self) -> Option<String> {
        self.text.clone()
    }
    /// What the gateway is asked to deliver (`null` for a test number), in one call.
    #[napi]
    pub fn message(&self) -> Option<OutgoingMessage> {
        let text = self.text.clone()?;
        Some(OutgoingMessage {
            to: self.session.dest.clone(),
            from: self.session.src.clone(),
            text,
            channel: self.session.channel.as_str().to_string(),
            reference: self.session.id.clone(),
        })
    }
    /// The session's stored JSON.
    #[napi]
    pub fn session_json(&self) -> String {
        self.session.to_json()
    }
    /// When the session is purged (ms): `retentionSeconds` after expiry.
    #[napi(getter)]
    pub fn purge_at(&self) -> f64 {
        num(self.session.purge_at())
    }
    /// How long to keep the stored session (ms from `now`): until `retentionSeconds` after expiry.
    #[napi]
    pub fn keep_ms(&self, now: f64) -> f64 {
        num(UnixMillis(
            ms(now).millis_until(self.session.purge_at()).max(1000),
        ))
    }
    /// The 200 answer for this new session.
    #[napi]
    pub fn reply(&self, now: f64) -> Reply {
        issue_reply_for(self.dialect, &self.session, ms(now), false)
    }
    /// The analytics delta (JSON) of `delivered` or `delivery_failed` for this session, or null
    /// (test numbers, other events).
    #[napi]
    pub fn analytics(&self, event: String) -> Option<String> {
        plan_delta(&self.session, &event).as_ref().map(delta_line)
    }

    /// Audit line for this session (`requested`, `delivered`, `delivery_failed`).
    #[napi]
    pub fn audit(&self, event: String, outcome: String, now: f64) -> String {
        event_line(&AuditEvent::for_session(
            &event,
            &self.session,
            &outcome,
            None,
            ms(now),
        ))
    }
}

/// A message for the gateway. `text` holds the code: never log it.
#[napi(object)]
pub struct OutgoingMessage {
    /// Destination.
    pub to: String,
    /// Sender name.
    pub from: String,
    /// Rendered text.
    pub text: String,
    /// `sms` or `whatsapp`.
    pub channel: String,
    /// Session id.
    pub reference: String,
}

impl std::fmt::Debug for OutgoingMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

fn issue_reply_for(dialect: Dialect, s: &Session, now: UnixMillis, reused: bool) -> Reply {
    match dialect {
        Dialect::V1 => envelope::v1_request(s, now, reused),
        Dialect::Zend => envelope::zend_send(s, reused),
    }
    .into()
}

pub(crate) fn event_line(e: &AuditEvent) -> String {
    serde_json::to_string(e).unwrap_or_default()
}

pub(crate) fn delta_line(d: &Delta) -> String {
    serde_json::to_string(d).unwrap_or_default()
}

/// The analytics delta of a planned session's delivery outcome event.
pub(crate) fn plan_delta(session: &Session, event: &str) -> Option<Delta> {
    match event {
        "delivered" => analytics::delivered(session),
        "delivery_failed" => analytics::delivery_failed(session),
        _ => None,
    }
}

/// The outcome of a verification against stored state.
#[napi(object)]
#[derive(Debug)]
pub struct VerifyStep {
    /// `APPROVED`, `INVALID`, `EXPIRED`, `MAX_ATTEMPTS_REACHED`, `ALREADY_USED`, `NOT_FOUND`.
    pub status: String,
    /// Attempts left after this verification.
    pub attempts_left: u32,
    /// The state to store (JSON) when it changed; absent when nothing is to be written.
    pub state: Option<String>,
    /// The session's destination (absent for NOT_FOUND).
    pub dest: Option<String>,
    /// When it was verified (ms).
    pub verified_at: Option<f64>,
    /// An attempt was consumed (the guard's failure streak must hear of it).
    pub consumed: bool,
    /// The session stopped being active (approved, or its last attempt failed).
    pub ended: bool,
    /// The audit line (absent for NOT_FOUND).
    pub audit: Option<String>,
    /// The analytics delta (JSON), when this verification approved or locked the session.
    pub analytics: Option<String>,
}

pub(crate) fn verify_step(
    session: Option<Session>,
    ws_id: &str,
    code: &str,
    now: UnixMillis,
    pepper: &Pepper,
    serialize: bool,
) -> (
    VerifyStep,
    Option<Session>,
    Option<AuditEvent>,
    Option<Delta>,
) {
    let Some(s) = session else {
        return (not_found_step(), None, None, None);
    };
    let (v, after) = s.verify(ws_id, code, now, pepper);
    if v.outcome == VerifyOutcome::NotFound {
        return (not_found_step(), None, None, None);
    }
    let consumed = v.outcome.consumed_attempt();
    let event = AuditEvent::for_verify(&after, v.outcome, now);
    let delta = analytics::verified(&after, v.outcome);
    // The Redis store needs the new state and the audit line as JSON; the memory store keeps
    // both as values, so it skips serialising them.
    let step = VerifyStep {
        status: v.outcome.status().to_string(),
        attempts_left: u32::from(v.attempts_left),
        state: (serialize && consumed).then(|| after.to_json()),
        dest: Some(after.dest.clone()),
        verified_at: after.verified_at.map(num),
        consumed,
        ended: v.outcome == VerifyOutcome::Approved || v.outcome.locked_session(),
        audit: if serialize {
            event.as_ref().map(event_line)
        } else {
            None
        },
        analytics: if serialize {
            delta.as_ref().map(delta_line)
        } else {
            None
        },
    };
    (step, consumed.then_some(after), event, delta)
}

pub(crate) fn not_found_step() -> VerifyStep {
    VerifyStep {
        status: "NOT_FOUND".into(),
        attempts_left: 0,
        state: None,
        dest: None,
        verified_at: None,
        consumed: false,
        ended: false,
        audit: None,
        analytics: None,
    }
}

fn outcome_of(status: &str, attempts_left: u32) -> Result<VerifyOutcome> {
    VerifyOutcome::from_status(status, u8::try_from(attempts_left).unwrap_or(u8::MAX))
        .ok_or_else(|| throw(&Error::invalid("status", "is not a verify status")))
}

/// The verify answer of `dialect` for a step (`rawSessionId` as the caller gave it).
#[napi]
pub fn verify_reply(
    dialect_name: String,
    raw_session_id: String,
    step: VerifyStep,
) -> Result<Reply> {
    let outcome = outcome_of(&step.status, step.attempts_left)?;
    let v = Verification {
        outcome,
        attempts_left: u8::try_from(step.attempts_left).unwrap_or(u8::MAX),
    };
    Ok(match dialect(&dialect_name)? {
        Dialect::V1 => envelope::v1_verify(&raw_session_id, &v),
        Dialect::Zend if outcome == VerifyOutcome::NotFound => envelope::zend_not_found(),
        Dialect::Zend => envelope::zend_verify(&v, step.verified_at.map(ms)),
    }
    .into())
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
    let r = match (dialect(&dialect_name)?, path_id) {
        (Dialect::Zend, Some(id)) => VerifyRequest::from_zend_json(&id, &body),
        _ => VerifyRequest::from_v1_json(&body),
    }
    .map_err(|e| throw(&e))?;
    Ok(VerifyInput {
        raw_session_id: r.raw_session_id,
        session_id: r.session_id,
        code: r.code,
    })
}

/// The pepper-holding part: planning issues and verifying codes.
#[napi]
pub struct Engine {
    pepper: std::result::Result<Pepper, Error>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("configured", &self.pepper.is_ok())
            .finish()
    }
}

impl Engine {
    pub(crate) fn pepper(&self) -> Result<&Pepper> {
        self.pepper.as_ref().map_err(throw)
    }
}

#[napi]
impl Engine {
    /// `pepper`: the `OTP_PEPPER` (≥ 32 bytes). Without one every operation throws
    /// `MISCONFIGURED`, as SPEC wants a host to refuse to serve.
    #[napi(constructor)]
    pub fn new(pepper: Option<String>) -> Self {
        Engine {
            pepper: Pepper::new(pepper.as_deref().unwrap_or("").as_bytes()),
        }
    }

    /// Has a usable pepper.
    #[napi(getter)]
    pub fn configured(&self) -> bool {
        self.pepper.is_ok()
    }

    /// Throws `MISCONFIGURED` without a pepper.
    #[napi]
    pub fn check(&self) -> Result<()> {
        self.pepper().map(|_| ())
    }

    /// Parses a request body of `dialect` and plans the issue in `ws` (sender, country, code,
    /// template): throws the 400/403 errors in SPEC's order.
    #[napi]
    pub fn plan(
        &self,
        dialect_name: String,
        body: Buffer,
        ws: &Workspace,
        now: f64,
    ) -> Result<Plan> {
        let pepper = self.pepper()?;
        let d = dialect(&dialect_name)?;
        let req = match d {
            Dialect::V1 => IssueRequest::from_v1_json(&body),
            Dialect::Zend => IssueRequest::from_zend_json(&body),
        }
        .map_err(|e| throw(&e))?;
        let own;
        let senders = match (&req.src, ws.any_sender) {
            (Some(src), true) => {
                own = [src.clone()];
                &own[..]
            }
            _ => &ws.rec.senders[..],
        };
        let entropy = Entropy::from_bytes(&random::<48>()?);
        let plan = plan_issue(
            &req,
            &ws.rec.id,
            senders,
            &ws.rec.policy,
            ms(now),
            &entropy,
            pepper,
        )
        .map_err(|e| throw(&e))?;
        Ok(Plan {
            session: plan.session,
            text: plan.message.map(|m| m.text),
            dialect: d,
        })
    }

    /// Verifies `code` against a stored session (JSON, or `null` when there is none) for a
    /// caller in `wsId`. The Redis store writes `state` back with a compare-and-set.
    #[napi]
    pub fn verify_json(
        &self,
        state: Option<String>,
        ws_id: String,
        code: String,
        now: f64,
    ) -> Result<VerifyStep> {
        let pepper = self.pepper()?;
        let session = state
            .as_deref()
            .map(Session::from_json)
            .transpose()
            .map_err(|e| throw(&e))?;
        Ok(verify_step(session, &ws_id, &code, ms(now), pepper, true).0)
    }
}

/// A flow's `verify` effect on a stored session (JSON or `null`), for a store that writes back
/// with a compare-and-set: the outcome to feed the flow (JSON) and the session to write (JSON,
/// absent when nothing changed).
#[napi(object)]
#[derive(Debug)]
pub struct VerifyStored {
    /// `otpkit_core::flow::Outcome` JSON.
    pub outcome: String,
    /// The session to store back, when an attempt was consumed.
    pub write: Option<String>,
    /// The session's destination (absent when not found).
    pub dest: Option<String>,
}

#[napi]
impl Engine {
    /// `otpkit_core::flow::verify_stored` on stored JSON.
    #[napi]
    pub fn verify_stored(
        &self,
        state: Option<String>,
        ws_id: String,
        code: String,
        now: f64,
    ) -> Result<VerifyStored> {
        let pepper = self.pepper()?;
        let session = state
            .as_deref()
            .map(Session::from_json)
            .transpose()
            .map_err(|e| throw(&e))?;
        let dest = session.as_ref().map(|s| s.dest.clone());
        let step = otpkit_core::flow::verify_stored(session, &ws_id, &code, ms(now), pepper);
        Ok(VerifyStored {
            outcome: serde_json::to_string(&step.outcome).unwrap_or_default(),
            write: step.write.as_ref().map(Session::to_json),
            dest,
        })
    }
}

/// When a stored session (JSON) is purged (ms): `retentionSeconds` after its expiry.
#[napi]
pub fn session_purge_at(session_json: String) -> Result<f64> {
    Ok(num(Session::from_json(&session_json)
        .map_err(|e| throw(&e))?
        .purge_at()))
}

/// The answer for an active session that is reused, or `null` when it is not reusable now.
#[napi]
pub fn reuse_reply(dialect_name: String, session_json: String, now: f64) -> Result<Option<Reply>> {
    let d = dialect(&dialect_name)?;
    let s = Session::from_json(&session_json).map_err(|e| throw(&e))?;
    let now = ms(now);
    Ok(s.reusable(now).then(|| issue_reply_for(d, &s, now, true)))
}

/// The analytics delta (JSON) of `reused` for a stored session, or null (test numbers).
#[napi]
pub fn session_analytics(event: String, session_json: String) -> Result<Option<String>> {
    let s = Session::from_json(&session_json).map_err(|e| throw(&e))?;
    Ok(match event.as_str() {
        "reused" => analytics::reused(&s).as_ref().map(delta_line),
        _ => None,
    })
}

/// The period an analytics query covers.
#[napi(object)]
#[derive(Debug)]
pub struct AnalyticsPeriod {
    /// First UTC day number (days since 1970-01-01).
    pub first_day: u32,
    /// Today's UTC day number.
    pub last_day: u32,
}

pub(crate) fn analytics_query(query: &str) -> Result<AnalyticsQuery> {
    let pairs = query_pairs(query);
    AnalyticsQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| throw(&e))
}

/// Checks an analytics query string (400 `VALIDATION_ERROR` with the field) and answers the
/// days it covers, so a store reads only those.
#[napi]
pub fn analytics_period(query: String, now: f64) -> Result<AnalyticsPeriod> {
    let q = analytics_query(&query)?;
    let now = ms(now);
    Ok(AnalyticsPeriod {
        first_day: q.first_day(now),
        last_day: analytics::day_of(now),
    })
}

/// `GET /otp/analytics` from a store's raw rows: `counters` is flat `[day, field, value, …]`
/// with fields `<counter>|<bucket>`, `open` the members of sessions still open and unexpired.
#[napi]
pub fn analytics_reply(
    ws: &Workspace,
    query: String,
    now: f64,
    counters: Vec<String>,
    open: Vec<String>,
) -> Result<Reply> {
    let q = analytics_query(&query)?;
    let rows = counters.chunks_exact(3).filter_map(|c| {
        let [day, field, value] = c else { return None };
        let (name, bucket) = field.split_once('|')?;
        let b = Bucket::parse(day.parse().ok()?, bucket)?;
        let mut counts = Counts::default();
        counts
            .add_to(name, value.parse().ok()?)
            .then_some((b, counts))
    });
    let live = open.iter().filter_map(|m| analytics::parse_open_member(m));
    Ok(analytics::report(&q, ms(now), rows, live, &ws.rec.policy.price_per_segment).into())
}

/// The Redis store's analytics operations for a `record` effect's deltas (JSON array), as the
/// RECORD script reads them: four arguments each (op, key, a, b). `counters` + day is a day's
/// hash of counters (field `counter|bucket`), `open` the sorted set of open sessions. Every
/// write is the core's (`otpkit_core::analytics::Write`); this only encodes them.
#[napi]
pub fn redis_analytics_ops(
    counters: String,
    open: String,
    deltas_json: String,
    now: f64,
) -> Result<Vec<String>> {
    let deltas: Vec<Delta> = serde_json::from_str(&deltas_json)
        .map_err(|_| throw(&Error::invalid("deltas", "are not analytics deltas")))?;
    let mut ops: Vec<String> = Vec::new();
    let mut push = |op: &str, k: &str, a: String, b: String| {
        ops.extend([op.to_string(), k.to_string(), a, b]);
    };
    const DAY_MS: u64 = 86_400_000;
    for d in &deltas {
        for w in d.writes() {
            match w {
                analytics::Write::Add { bucket, counts } => {
                    let hash = format!("{counters}{}", bucket.day);
                    for (name, n) in counts.nonzero() {
                        push(
                            "H",
                            &hash,
                            format!("{name}|{}", bucket.key()),
                            n.to_string(),
                        );
                    }
                    let keep = analytics::keep_until(bucket.day).0.to_string();
                    push("E", &hash, keep, String::new());
                }
                analytics::Write::Open {
                    bucket,
                    session_id,
                    until,
                } => {
                    // Members past their expiry are dropped as new ones arrive.
                    push("R", &open, (ms(now).0).to_string(), String::new());
                    push(
                        "O",
                        &open,
                        until.0.to_string(),
                        bucket.open_member(session_id),
                    );
                    push("T", &open, DAY_MS.to_string(), String::new());
                }
                analytics::Write::Close { bucket, session_id } => {
                    push("C", &open, String::new(), bucket.open_member(session_id));
                }
            }
        }
    }
    Ok(ops)
}

/// The `reused` audit line for a stored session.
#[napi]
pub fn session_audit(
    event: String,
    session_json: String,
    outcome: String,
    now: f64,
) -> Result<String> {
    let s = Session::from_json(&session_json).map_err(|e| throw(&e))?;
    Ok(event_line(&AuditEvent::for_session(
        &event,
        &s,
        &outcome,
        None,
        ms(now),
    )))
}

/// The `rate_limited` audit line for a refused request.
#[napi]
pub fn refused_audit(
    dest: String,
    purpose_name: String,
    app: Option<String>,
    code: String,
    now: f64,
) -> Result<String> {
    Ok(event_line(&AuditEvent::refused(
        "rate_limited",
        &dest,
        purpose(&purpose_name)?,
        app.as_deref(),
        &code,
        ms(now),
    )))
}

/// The status answer of `dialect` for a stored session seen from `wsId` (`null` = not found).
#[napi]
pub fn status_reply(
    dialect_name: String,
    ws_id: String,
    session_json: Option<String>,
    now: f64,
) -> Result<Reply> {
    let d = dialect(&dialect_name)?;
    let s = session_json
        .as_deref()
        .map(Session::from_json)
        .transpose()
        .map_err(|e| throw(&e))?
        .filter(|s| s.workspace_id == ws_id);
    let now = ms(now);
    Ok(match (d, s) {
        (Dialect::V1, Some(s)) => envelope::v1_session(&s.view(now)),
        (Dialect::Zend, Some(s)) => envelope::zend_status(&s, now),
        (Dialect::V1, None) => envelope::v1_session_not_found(),
        (Dialect::Zend, None) => envelope::zend_not_found(),
    }
    .into())
}

/// The audit page for `query` (the URL's query string) over `lines` (`seq|eventJSON`, newest
/// first, already limited to one workspace).
#[napi]
pub fn audit_reply(lines: Vec<String>, query: String) -> Result<Reply> {
    let q = audit_query(&query)?;
    Ok(audit_page(lines.iter().filter_map(|l| parse_line(l)), &q))
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(crate) fn audit_query(query: &str) -> Result<AuditQuery> {
    let pairs = query_pairs(query);
    AuditQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| throw(&e))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 2;
                } else {
                    out.push(b);
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<(u64, AuditEvent)> {
    let (seq, json) = line.split_once('|')?;
    Some((seq.parse().ok()?, serde_json::from_str(json).ok()?))
}

pub(crate) fn audit_page(events: impl Iterator<Item = (u64, AuditEvent)>, q: &AuditQuery) -> Reply {
    let limit = q.limit as usize;
    let mut page: Vec<(u64, AuditEvent)> = events
        .filter(|(seq, e)| {
            q.cursor.is_none_or(|c| *seq < c)
                && q.since.is_none_or(|s| e.time >= s)
                && q.session_id
                    .as_deref()
                    .is_none_or(|sid| e.session_id == sid)
        })
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next = if more {
        page.last().map(|(s, _)| *s)
    } else {
        None
    };
    let events: Vec<AuditEvent> = page.into_iter().map(|(_, e)| e).collect();
    audit::reply(&events, next).into()
}

/// A step of the destination guard on stored JSON.
#[napi(object)]
#[derive(Debug)]
pub struct GuardStep {
    /// `send`, `reuse`, `wait`, `refused` (admit); `done` (other steps).
    pub kind: String,
    /// The session to reuse or wait for (admit), or to cancel (delivery).
    pub session_id: Option<String>,
    /// The refusal (`RATE_LIMITED`, `DESTINATION_LOCKED`).
    pub error_code: Option<String>,
    /// Its retry delay.
    pub retry_after: Option<u32>,
    /// The state to store: JSON, or `null` to delete the key.
    pub state: Option<String>,
    /// How long to keep it (ms).
    pub keep_ms: f64,
    /// Whether the state changed (nothing to write otherwise).
    pub changed: bool,
    /// For an admission: the flow outcome's `admission` (`otpkit_core::flow::Admitted` JSON).
    pub admission: Option<String>,
}

fn read_guard(state: Option<&str>) -> Result<DestinationGuard> {
    state
        .map(DestinationGuard::from_json)
        .transpose()
        .map(Option::unwrap_or_default)
        .map(|mut g| {
            g.v = otpkit_core::STATE_VERSION;
            g
        })
        .map_err(|e| throw(&e))
}

fn guard_step(
    before: &DestinationGuard,
    after: &DestinationGuard,
    ws: &Workspace,
    now: UnixMillis,
    kind: &str,
) -> GuardStep {
    let keep = ops::guard_keep_ms(after, &ws.rec.policy, now);
    GuardStep {
        kind: kind.into(),
        session_id: None,
        error_code: None,
        retry_after: None,
        state: keep.map(|_| after.to_json()),
        keep_ms: keep.map_or(0.0, |k| k as f64),
        changed: before != after,
        admission: None,
    }
}

/// Admits a send (a flow's `admit` effect: purpose, session id, expiry, test) on a stored guard
/// (JSON or `null`).
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn guard_admit(
    state: Option<String>,
    ws: &Workspace,
    purpose_name: String,
    session_id: String,
    expires_at: f64,
    test: bool,
    now: f64,
) -> Result<GuardStep> {
    let before = read_guard(state.as_deref())?;
    let mut g = before.clone();
    let now = ms(now);
    let (kind, sid, code, retry) = ops::admit(
        &mut g,
        purpose(&purpose_name)?,
        &session_id,
        ms(expires_at),
        test,
        &ws.rec.policy,
        now,
    );
    let admission = match (kind, &sid, code) {
        ("reuse", Some(id), _) => Admitted::Reuse {
            session_id: id.clone(),
        },
        ("wait", Some(id), _) => Admitted::Wait {
            session_id: id.clone(),
        },
        (_, _, Some(code)) => Admitted::Refused {
            code: code.into(),
            retry_after_secs: retry.unwrap_or(1),
        },
        _ => Admitted::Send,
    };
    let mut out = guard_step(&before, &g, ws, now, kind);
    out.admission = serde_json::to_string(&admission).ok();
    out.session_id = sid;
    out.error_code = code.map(str::to_string);
    out.retry_after = retry;
    Ok(out)
}

/// Records a delivery outcome (`delivered`, `failed`, `timedOut`); `sessionId` of the answer
/// is a session to cancel.
#[napi]
pub fn guard_delivery(
    state: Option<String>,
    ws: &Workspace,
    session_id: String,
    outcome: String,
    now: f64,
) -> Result<GuardStep> {
    let before = read_guard(state.as_deref())?;
    let mut g = before.clone();
    let cancel = g.delivery(
        &session_id,
        ops::delivery_outcome(&outcome).map_err(|e| throw(&e))?,
    );
    let mut out = guard_step(&before, &g, ws, ms(now), "done");
    out.session_id = cancel;
    Ok(out)
}

/// Records a verification outcome on the guard (failure streak, end of reuse).
#[napi]
pub fn guard_verified(
    state: Option<String>,
    ws: &Workspace,
    session_id: String,
    status: String,
    attempts_left: u32,
    now: f64,
) -> Result<GuardStep> {
    let before = read_guard(state.as_deref())?;
    let mut g = before.clone();
    let now = ms(now);
    ops::record_verify(
        &mut g,
        &session_id,
        outcome_of(&status, attempts_left)?,
        &ws.rec.policy,
        now,
    );
    Ok(guard_step(&before, &g, ws, now, "done"))
}

/// Stops treating a session as active.
#[napi]
pub fn guard_forget(
    state: Option<String>,
    ws: &Workspace,
    session_id: String,
    now: f64,
) -> Result<GuardStep> {
    let before = read_guard(state.as_deref())?;
    let mut g = before.clone();
    g.forget(&session_id);
    Ok(guard_step(&before, &g, ws, ms(now), "done"))
}

/// Where another request's send stands: `pending`, `delivered` or `gone` (also once it is
/// stale at `now`, when given).
#[napi]
pub fn guard_entry(state: Option<String>, session_id: String, now: Option<f64>) -> Result<String> {
    Ok(ops::entry_state(&read_guard(state.as_deref())?, &session_id, now.map(ms)).to_string())
}

/// The cancellation of a stored session (reuse off, replaced): the JSON to store.
#[napi]
pub fn cancel_json(state: String) -> Result<String> {
    Ok(Session::from_json(&state)
        .map_err(|e| throw(&e))?
        .cancel()
        .to_json())
}

/// One step of the workspace flood shield on stored JSON.
#[napi(object)]
#[derive(Debug)]
pub struct FloodStep {
    /// The state to store when the send is counted.
    pub state: Option<String>,
    /// The flow outcome's `admission` when the shield refuses (`floodRefused`, nothing written).
    pub refused: Option<String>,
}

/// Counts one send in the flood shield (stored JSON or `null`): the state to store, or the
/// refusal (429 until the minute ends).
#[napi]
pub fn flood_json(state: Option<String>, limit: u32, now: f64) -> FloodStep {
    let mut shield: FloodShield = state
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    match ops::flood(&mut shield, limit, ms(now)) {
        Ok(()) => FloodStep {
            state: Some(serde_json::to_string(&shield).unwrap_or_default()),
            refused: None,
        },
        Err(e) => FloodStep {
            state: None,
            refused: serde_json::to_string(&Admitted::FloodRefused {
                retry_after_secs: e.retry_after_secs().unwrap_or(1),
                admitted: false,
            })
            .ok(),
        },
    }
}
