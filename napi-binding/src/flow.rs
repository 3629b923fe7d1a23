//! The core's flows (`otpkit_core::flow`) through Node-API: the JavaScript driver starts one,
//! then loops `poll()` → perform the IO it names → `handle(outcome)` until the answer, and runs
//! what follows the answer in the background. Steps and outcomes cross as the core's JSON (the
//! same form as `tests/vectors/flows/`), so the driver holds no decision of its own.

use crate::engine::Engine;
use crate::errors::{error_info, throw};
use crate::inflight;
use crate::memory::MemoryStore;
use crate::redis_store::{RedisCore, RedisSteps};
use crate::send::{Gateway, NativeGateway};
use crate::workspace::Workspace;
use crate::{dialect, ms, random};
use napi::bindgen_prelude::{Buffer, Either, PromiseRaw};
use napi::{Env, Result};
use napi_derive::napi;
use otpkit_core::delivery::ReceiptKeys;
use otpkit_core::flow::{
    self, AdminAction, Flow, HostTraits, Io, Outcome, Step, ADMIN_RANDOM_BYTES,
};
use otpkit_core::http::envelope::Reply;
use otpkit_core::http::request::{Dialect, IssueRequest, ResendRequest, VerifyRequest};
use otpkit_core::idempotency::Idempotency;
use otpkit_core::{Entropy, Error, Pepper, UnixMillis};
use std::sync::{Arc, Mutex};

/// One step as JSON: `{"io": …}` (perform it), `{"answer": {status, body, retryAfter}}`,
/// `{"error": {code, httpStatus, message, …, body}}`, or `{"done": true}`.
pub(crate) fn step_json(step: Step) -> String {
    match step {
        Step::Io(io) => serde_json::to_string(&io).unwrap_or_default(),
        // `replayed` only when set: a replayed `Idempotency-Key` answer (SPEC §7).
        Step::Answer(Ok(r)) if r.replayed => serde_json::json!({
            "answer": {"status": r.status, "body": r.body, "retryAfter": r.retry_after, "replayed": true}
        })
        .to_string(),
        Step::Answer(Ok(r)) => serde_json::json!({
            "answer": {"status": r.status, "body": r.body, "retryAfter": r.retry_after}
        })
        .to_string(),
        Step::Answer(Err(e)) => serde_json::json!({ "error": error_info(&e) }).to_string(),
        Step::Done => r#"{"done":true}"#.to_string(),
    }
}

/// An outcome from the driver; anything unreadable counts as a store failure.
pub(crate) fn outcome(json: &str) -> Outcome {
    serde_json::from_str(json).unwrap_or(Outcome::Failed {
        corrupt: false,
        misconfigured: None,
    })
}

/// A flow's answer, when it gave one.
pub(crate) type Answer = Option<std::result::Result<Reply, Error>>;

/// Runs `flow` on the memory store up to the first step the store cannot take: its end (with
/// the answer: what follows the answer here is all in-memory bookkeeping, done before returning
/// as in one critical section), or that step (deliver, awaitSend, pause).
pub(crate) fn run_memory(
    flow: &mut impl Flow,
    store: &MemoryStore,
    engine: &Engine,
    ws: &Workspace,
    now: UnixMillis,
) -> std::result::Result<Answer, Box<Io>> {
    let mut answer = None;
    loop {
        match flow.poll() {
            // Not the store's: the gateway, the wait for another request's send and the pause of
            // an `Idempotency-Key` duplicate (all come before the answer).
            Step::Io(io @ (Io::Deliver { .. } | Io::AwaitSend { .. } | Io::Pause { .. })) => {
                return Err(Box::new(io))
            }
            Step::Io(io) => flow.handle(store.perform_one(engine, ws, io, now)),
            Step::Answer(a) => answer = Some(a),
            Step::Done => return Ok(answer),
        }
    }
}

/// A memory run's last step as JSON: its answer with `done`, or `done` alone.
fn answered(answer: Answer) -> String {
    match answer {
        Some(a) => step_json(Step::Answer(a)).replacen('{', r#"{"done":true,"#, 1),
        None => step_json(Step::Done),
    }
}

/// How a memory run that went on on the runtime ended ([`finish_memory`]).
#[napi(object)]
#[derive(Debug)]
pub struct MemoryEnd {
    /// The answer with `done` (as `runMemory` answers it), or `done` alone.
    pub text: String,
    /// Each send through the built-in gateway: `[channel, gateway kind, outcome, seconds, HTTP
    /// status or "", destination, session id, started at (ms), …]`.
    pub sent: Vec<String>,
}

/// Takes a memory run on from `first` (the step [`run_memory`] stopped at) on the runtime: the
/// gateway's send through `gateway`, the wait for another request's send, a pause, and every
/// store effect, until the flow is done. `sending`: the session this run was already sending
/// when it came here (other requests may wait for it), told sent or not with the answer.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish_memory<F: Flow>(
    flow: &mut F,
    first: Io,
    mut sending: Option<String>,
    store: &MemoryStore,
    engine: &Engine,
    ws: &Workspace,
    gateway: &Gateway,
    sent: &mut Vec<String>,
) -> Answer {
    let mut answer = None;
    let mut next = Some(first);
    loop {
        let step = next.take().map_or_else(|| flow.poll(), Step::Io);
        match step {
            Step::Io(Io::Pause { millis }) => {
                tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
                flow.handle(Outcome::Done);
            }
            Step::Io(Io::Deliver { message }) => {
                sending = Some(message.reference.clone());
                let inflight = store.inflight();
                let o = inflight::deliver(gateway, inflight, &ws.rec.id, &message, sent);
                flow.handle(o.await);
            }
            Step::Io(Io::AwaitSend { dest, session_id }) => {
                let delivered = store.await_send(&ws.rec.id, &dest, &session_id).await;
                flow.handle(Outcome::Awaited { delivered });
            }
            Step::Io(io) => {
                let now = otpkit_core::UnixMillis(inflight::now_ms());
                flow.handle(store.perform_one(engine, ws, io, now));
            }
            Step::Answer(a) => {
                if let Some(reference) = sending.take() {
                    store.inflight().sent(&reference, a.is_ok());
                }
                answer = Some(a);
            }
            Step::Done => {
                if let Some(reference) = sending.take() {
                    store.inflight().sent(&reference, false);
                }
                return answer;
            }
        }
    }
}

macro_rules! node_flow {
    ($name:ident, $inner:ty, $doc:literal) => {
        #[doc = $doc]
        #[napi]
        #[derive(Debug)]
        pub struct $name {
            inner: Lent<$inner>,
        }

        #[napi]
        impl $name {
            /// The next step (JSON).
            #[napi]
            pub fn poll(&mut self) -> Result<String> {
                self.inner.with(|f| step_json(f.poll()))
            }

            /// Feeds the outcome (JSON) of the IO last polled.
            #[napi]
            pub fn handle(&mut self, outcome_json: String) -> Result<()> {
                self.inner.with(|f| f.handle(outcome(&outcome_json)))
            }

            /// Runs the flow on the Redis store (`RedisCore`, in Rust): after feeding
            /// `outcome_json` (the driver's IO's, if any), every store effect is performed on
            /// the tokio runtime, and the first step the store cannot take (deliver and
            /// awaitSend, unless `gateway`, the service's built-in gateway, sends here) or the
            /// answer goes to the store's callback with `id`. What
            /// follows the answer runs on, and a second callback says when it is done. The
            /// flow is lent meanwhile: no other call may use it until then.
            #[napi]
            #[allow(clippy::too_many_arguments)]
            pub fn run_redis(
                &mut self,
                id: u32,
                core: &RedisCore,
                engine: &Engine,
                ws: &Workspace,
                outcome_json: Option<String>,
                steps: &RedisSteps,
                timed: bool,
                gateway: Option<&NativeGateway>,
            ) -> Result<()> {
                let mut flow = self.inner.lend()?;
                if let Some(o) = outcome_json {
                    flow.handle(outcome(&o));
                }
                core.run(
                    id,
                    flow,
                    self.inner.clone(),
                    engine,
                    ws,
                    steps,
                    timed,
                    gateway,
                )
            }

            /// [`Self::handle`], then [`Self::run_memory`] (without a gateway): one Node-API
            /// call.
            #[napi]
            pub fn resume_memory(
                &mut self,
                outcome_json: String,
                store: &MemoryStore,
                engine: &Engine,
                ws: &Workspace,
                now: f64,
            ) -> Result<String> {
                self.inner.with(|f| {
                    f.handle(outcome(&outcome_json));
                    match run_memory(f, store, engine, ws, ms(now)) {
                        Ok(answer) => answered(answer),
                        Err(io) => step_json(Step::Io(*io)),
                    }
                })
            }

            /// Runs the flow on the memory store: every store effect is performed here, in
            /// Rust, and the first step the store cannot take comes back as JSON (deliver,
            /// awaitSend, pause), or the answer once everything after it is done too (`done:
            /// true`) — one Node-API call instead of one per effect. With `gateway` (the
            /// service's built-in gateway), a run that reaches such a step goes on on the
            /// runtime instead, sending there, and answers a promise of its [`MemoryEnd`]; the
            /// flow is lent meanwhile.
            #[napi(ts_return_type = "string | Promise<MemoryEnd>")]
            pub fn run_memory<'env>(
                &mut self,
                env: &'env Env,
                store: &MemoryStore,
                engine: &Engine,
                ws: &Workspace,
                now: f64,
                gateway: Option<&NativeGateway>,
            ) -> Result<Either<String, PromiseRaw<'env, MemoryEnd>>> {
                let stopped = self
                    .inner
                    .with(|f| run_memory(f, store, engine, ws, ms(now)))?;
                let first = match (stopped, gateway) {
                    (Ok(answer), _) => return Ok(Either::A(answered(answer))),
                    (Err(io), None) => return Ok(Either::A(step_json(Step::Io(*io)))),
                    (Err(io), Some(_)) => *io,
                };
                let Some(gateway) = gateway else {
                    return Err(throw(&Error::StoreUnavailable));
                };
                let mut flow = self.inner.lend()?;
                let slot = self.inner.clone();
                let engine = Engine {
                    pepper: Ok(engine.pepper()?.clone()),
                };
                let (store, ws) = (store.share(), ws.clone());
                let gateway = Gateway::Native(gateway.share());
                env.spawn_future(async move {
                    let mut sent = Vec::new();
                    let answer = finish_memory(
                        &mut *flow, first, None, &store, &engine, &ws, &gateway, &mut sent,
                    )
                    .await;
                    slot.give_back(flow);
                    Ok(MemoryEnd {
                        text: answered(answer),
                        sent,
                    })
                })
                .map(Either::B)
            }
        }
    };
}

node_flow!(
    RequestFlow,
    flow::Idempotent<flow::RequestFlow>,
    "`POST /v1/messaging/otp/request` and `POST /otp/send` (otpkit_core::flow::RequestFlow), with its `Idempotency-Key` if any (otpkit_core::flow::Idempotent)."
);
node_flow!(
    VerifyFlow,
    flow::VerifyFlow,
    "`POST …/verify` (otpkit_core::flow::VerifyFlow)."
);
node_flow!(
    AdminFlow,
    flow::AdminFlow,
    "The admin routes (otpkit_core::flow::AdminFlow)."
);
node_flow!(
    StatusFlow,
    flow::StatusFlow,
    "`GET …/sessions/{id}` and `GET /otp/{id}/status` (otpkit_core::flow::StatusFlow)."
);

node_flow!(
    CancelFlow,
    flow::CancelFlow,
    "`POST …/sessions/{id}/cancel` and `POST /otp/{id}/cancel` (otpkit_core::flow::CancelFlow)."
);

node_flow!(
    ResendFlow,
    flow::Idempotent<flow::ResendFlow>,
    "`POST …/sessions/{id}/resend` and `POST /otp/{id}/resend` (otpkit_core::flow::ResendFlow), with its `Idempotency-Key` if any (otpkit_core::flow::Idempotent)."
);

node_flow!(
    ReceiptFlow,
    flow::ReceiptFlow,
    "`POST /v1/messaging/otp/delivery-receipts/twilio` and `…/json` (otpkit_core::flow::ReceiptFlow): no workspace scopes it; the receipt or the index names the session."
);

#[napi]
impl ReceiptFlow {
    /// The `delivery_undelivered` lines (warn) once the receipt is answered: one per session a
    /// receipt moved to an undelivered or failed state, when `LOG_LEVEL` `level` prints them.
    /// Masked destination, ids, provider status and error code only.
    #[napi]
    #[allow(clippy::needless_pass_by_value)]
    pub fn log_lines(&self, level: Option<String>, now: f64) -> Result<Vec<String>> {
        self.inner
            .with(|f| f.log_lines(ms(now), otpkit_core::log::Level::parse(level.as_deref())))
    }

    /// Once the flow is done: how many resends the receipts ask for (policy
    /// `fallbackOnUndelivered`, otpkit_core::flow::Fallback).
    #[napi]
    pub fn fallback_count(&self) -> Result<u32> {
        self.inner
            .with(|f| u32::try_from(f.fallbacks().len()).unwrap_or(u32::MAX))
    }

    /// The workspace of resend `i` (null past the last).
    #[napi]
    pub fn fallback_workspace(&self, i: u32) -> Result<Option<Workspace>> {
        self.fallback(i, |fb| Workspace {
            rec: std::sync::Arc::new(fb.workspace.clone()),
            any_sender: false,
        })
    }

    /// Resend `i` as a flow to drive in `fallbackWorkspace(i)`
    /// (otpkit_core::flow::ResendFlow::fallback); null past the last.
    #[napi]
    pub fn fallback_flow(&self, engine: &Engine, i: u32, now: f64) -> Result<Option<ResendFlow>> {
        let entropy = Entropy::from_bytes(&random::<48>()?);
        let pepper = engine.pepper()?;
        let made = self.fallback(i, |fb| {
            flow::ResendFlow::fallback(fb, ms(now), &entropy, pepper, HostTraits::default())
        })?;
        let Some(inner) = made else {
            return Ok(None);
        };
        Ok(Some(ResendFlow {
            inner: flow::Idempotent::new(inner, None).into(),
        }))
    }

    /// The `delivery_fallback` line once resend `i` ended: `refused` is the error code it was
    /// refused with (null: sent); null when `LOG_LEVEL` `level` does not print it.
    #[napi]
    #[allow(clippy::needless_pass_by_value)]
    pub fn fallback_log_line(
        &self,
        i: u32,
        refused: Option<String>,
        level: Option<String>,
        now: f64,
    ) -> Result<Option<String>> {
        Ok(self
            .fallback(i, |fb| {
                otpkit_core::log::fallback(
                    ms(now),
                    fb,
                    refused.as_deref(),
                    otpkit_core::log::Level::parse(level.as_deref()),
                )
            })?
            .flatten())
    }
}

impl ReceiptFlow {
    /// `f` of resend `i` (None past the last).
    fn fallback<R>(&self, i: u32, f: impl FnOnce(&flow::Fallback) -> R) -> Result<Option<R>> {
        self.inner.with(|flow| {
            usize::try_from(i)
                .ok()
                .and_then(|i| flow.fallbacks().get(i))
                .map(f)
        })
    }
}

/// A flow's state, shared with the tokio runtime: the Redis store runs the flow there
/// ([`RedisCore`]) and gives it back before the driver may use it again.
pub(crate) struct Lent<T>(Arc<Mutex<Option<Box<T>>>>);

impl<T> Clone for Lent<T> {
    fn clone(&self) -> Self {
        Lent(Arc::clone(&self.0))
    }
}

impl<T> From<T> for Lent<T> {
    fn from(flow: T) -> Self {
        Lent(Arc::new(Mutex::new(Some(Box::new(flow)))))
    }
}

impl<T> std::fmt::Debug for Lent<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent").finish_non_exhaustive()
    }
}

fn in_use() -> napi::Error {
    throw(&Error::CorruptState {
        message: "the flow is in use by the Redis store".into(),
    })
}

impl<T> Lent<T> {
    /// `f` on the flow; an error while it is lent.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let mut slot = self.0.lock().map_err(|_| in_use())?;
        slot.as_deref_mut().map(f).ok_or_else(in_use)
    }
    /// Takes the flow out, to run it elsewhere.
    pub(crate) fn lend(&self) -> Result<Box<T>> {
        self.0
            .lock()
            .map_err(|_| in_use())?
            .take()
            .ok_or_else(in_use)
    }
    /// Puts it back.
    pub(crate) fn give_back(&self, flow: Box<T>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(flow);
        }
    }
}

/// The secrets delivery receipts are checked with (otpkit_core::delivery::ReceiptKeys): what
/// `receiptKeys` decides from the settings, or what a library gives.
#[napi(object)]
#[derive(Debug, Default)]
pub struct ReceiptSecrets {
    /// `PUBLIC_BASE_URL`: Twilio signs the URL it posted to.
    pub public_base_url: Option<String>,
    /// The auth tokens of the Twilio gateways (at most two are used).
    pub twilio_tokens: Vec<String>,
    /// The JSON receipt's HMAC key (`SMS_GATEWAY_TOKEN`).
    pub json_token: Option<String>,
    /// `WHATSAPP_APP_SECRET`: Meta's webhooks are signed with it.
    pub meta_app_secret: Option<String>,
    /// `WHATSAPP_VERIFY_TOKEN`: Meta's check of the callback URL.
    pub meta_verify_token: Option<String>,
}

/// A deployment's receipt settings, by their configuration names (SPEC §6).
#[napi(object)]
#[derive(Debug, Default)]
pub struct ReceiptSettingsInput {
    #[napi(js_name = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    #[napi(js_name = "SMS_GATEWAY_KIND")]
    pub sms_gateway_kind: Option<String>,
    #[napi(js_name = "SMS_GATEWAY_TOKEN")]
    pub sms_gateway_token: Option<String>,
    #[napi(js_name = "WHATSAPP_GATEWAY_URL")]
    pub whatsapp_gateway_url: Option<String>,
    #[napi(js_name = "WHATSAPP_GATEWAY_KIND")]
    pub whatsapp_gateway_kind: Option<String>,
    #[napi(js_name = "WHATSAPP_GATEWAY_TOKEN")]
    pub whatsapp_gateway_token: Option<String>,
    #[napi(js_name = "WHATSAPP_APP_SECRET")]
    pub whatsapp_app_secret: Option<String>,
    #[napi(js_name = "WHATSAPP_VERIFY_TOKEN")]
    pub whatsapp_verify_token: Option<String>,
}

/// Which secret checks which receipt, from the settings (the core's
/// `ReceiptSettings::keys`: the same rule as the Worker's).
#[napi]
pub fn receipt_keys(settings: ReceiptSettingsInput) -> ReceiptSecrets {
    let s = otpkit_core::delivery::ReceiptSettings {
        public_base_url: settings.public_base_url,
        sms_kind: settings.sms_gateway_kind,
        sms_token: settings.sms_gateway_token,
        whatsapp_url: settings.whatsapp_gateway_url,
        whatsapp_kind: settings.whatsapp_gateway_kind,
        whatsapp_token: settings.whatsapp_gateway_token,
        meta_app_secret: settings.whatsapp_app_secret,
        meta_verify_token: settings.whatsapp_verify_token,
    };
    let k = s.keys();
    let own = |v: Option<&str>| v.map(ToString::to_string);
    ReceiptSecrets {
        public_base_url: own(k.public_base_url),
        twilio_tokens: k
            .twilio_tokens
            .iter()
            .flatten()
            .map(|t| (*t).to_string())
            .collect(),
        json_token: own(k.json_token),
        meta_app_secret: own(k.meta_app_secret),
        meta_verify_token: own(k.meta_verify_token),
    }
}

/// Starts a delivery receipt (SPEC §8): `kind` is the route (`twilio`, `json`, `meta` or
/// `metaCheck`: Meta's `GET`), `path_and_query` the request's path and query string as received
/// (Twilio signs the URL; Meta's check is in the query), `signature` the route's signature header
/// (`X-Twilio-Signature`, `X-Otpkit-Signature`, `X-Hub-Signature-256`), `body` the raw body,
/// `keys` what they are checked with. `own`: the library's workspace, which is not in the store
/// (its policy decides a fallback for its sessions). The flow answers 403 / 400 itself; throws
/// only for an unknown `kind`.
#[allow(clippy::needless_pass_by_value)]
#[napi]
pub fn receipt_flow(
    kind: String,
    path_and_query: String,
    signature: Option<String>,
    body: Buffer,
    keys: ReceiptSecrets,
    now: f64,
    own: &Workspace,
) -> Result<ReceiptFlow> {
    let signature = signature.as_deref();
    let source = match kind.as_str() {
        "twilio" => flow::ReceiptSource::Twilio {
            path_and_query: &path_and_query,
            signature,
        },
        "json" => flow::ReceiptSource::Json { signature },
        "meta" => flow::ReceiptSource::Meta { signature },
        "metaCheck" => flow::ReceiptSource::MetaChallenge {
            path_and_query: &path_and_query,
        },
        _ => {
            return Err(throw(&Error::invalid(
                "kind",
                "must be twilio, json, meta or metaCheck",
            )))
        }
    };
    fn set(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|t| !t.is_empty())
    }
    let token = |i: usize| {
        keys.twilio_tokens
            .get(i)
            .map(String::as_str)
            .filter(|t| !t.is_empty())
    };
    let keys = ReceiptKeys {
        public_base_url: set(&keys.public_base_url),
        twilio_tokens: [token(0), token(1)],
        json_token: set(&keys.json_token),
        meta_app_secret: set(&keys.meta_app_secret),
        meta_verify_token: set(&keys.meta_verify_token),
    };
    Ok(ReceiptFlow {
        inner: flow::ReceiptFlow::start(source, &body, &keys, ms(now))
            .with_own_workspace((*own.rec).clone())
            .into(),
    })
}

/// Starts a resend of the id as given in the path, with the optional body (`{channel?}`;
/// empty: none), and its `Idempotency-Key` if any (`idempotency_key`; `path`: the request's,
/// part of the fingerprint). Throws 400 for a malformed key or body.
#[allow(clippy::too_many_arguments)]
#[napi]
pub fn resend_flow(
    engine: &Engine,
    dialect_name: String,
    raw_id: String,
    body: Option<Buffer>,
    ws: &Workspace,
    now: f64,
    idempotency_key: Option<String>,
    path: Option<String>,
) -> Result<ResendFlow> {
    let inner = start_resend(
        engine.pepper()?,
        dialect(&dialect_name)?,
        &raw_id,
        body.as_deref(),
        ws,
        ms(now),
        idempotency_key.as_deref(),
        path.as_deref(),
    )
    .map_err(|e| throw(&e))?;
    Ok(ResendFlow {
        inner: inner.into(),
    })
}

/// 48 random bytes for a flow that may send (codes, ids).
fn entropy() -> std::result::Result<Entropy, Error> {
    let mut bytes = [0u8; 48];
    getrandom::fill(&mut bytes).map_err(|_| Error::Misconfigured {
        message: "no CSPRNG available".into(),
    })?;
    Ok(Entropy::from_bytes(&bytes))
}

/// `POST …/sessions/{id}/resend`'s flow (`body`: none, or its JSON).
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_resend(
    pepper: &Pepper,
    d: Dialect,
    raw_id: &str,
    body: Option<&[u8]>,
    ws: &Workspace,
    now: UnixMillis,
    idempotency_key: Option<&str>,
    path: Option<&str>,
) -> std::result::Result<flow::Idempotent<flow::ResendFlow>, Error> {
    let bytes = body.unwrap_or_default();
    let idem = idempotency(&ws.rec.id, idempotency_key, path, bytes)?;
    let req = ResendRequest::from_json(bytes)?;
    let inner = flow::ResendFlow::start(
        raw_id,
        &req,
        d,
        &ws.rec.policy,
        now,
        &entropy()?,
        pepper,
        HostTraits::default(),
    );
    Ok(flow::Idempotent::new(inner, idem))
}

#[napi]
pub fn cancel_flow(
    dialect_name: String,
    raw_id: String,
    ws_id: String,
    now: f64,
) -> Result<CancelFlow> {
    Ok(CancelFlow {
        inner: flow::CancelFlow::start(&raw_id, dialect(&dialect_name)?, &ws_id, ms(now)).into(),
    })
}

/// The `Idempotency-Key` of a request (`None` when it has none): 400 on the header's field for a
/// malformed key; the fingerprint is of `POST` `path` and the body.
pub(crate) fn idempotency(
    ws_id: &str,
    key: Option<&str>,
    path: Option<&str>,
    body: &[u8],
) -> std::result::Result<Option<Idempotency>, Error> {
    Idempotency::from_header(ws_id, key, "POST", path.unwrap_or_default(), body)
}

/// Starts a request flow: checks the `Idempotency-Key` (`idempotency_key`, with the request's
/// `path` in its fingerprint), parses the body of `dialect`, plans the send in `ws` (sender,
/// country, code, template). Throws the 400/403 errors in SPEC's order.
#[napi]
pub fn request_flow(
    engine: &Engine,
    dialect_name: String,
    body: Buffer,
    ws: &Workspace,
    now: f64,
    idempotency_key: Option<String>,
    path: Option<String>,
) -> Result<RequestFlow> {
    let inner = start_request(
        engine.pepper()?,
        dialect(&dialect_name)?,
        &body,
        ws,
        ms(now),
        idempotency_key.as_deref(),
        path.as_deref(),
    )
    .map_err(|e| throw(&e))?;
    Ok(RequestFlow {
        inner: inner.into(),
    })
}

/// `POST /v1/messaging/otp/request`'s (or `POST /otp/send`'s) flow, with its `Idempotency-Key`.
pub(crate) fn start_request(
    pepper: &Pepper,
    d: Dialect,
    body: &[u8],
    ws: &Workspace,
    now: UnixMillis,
    idempotency_key: Option<&str>,
    path: Option<&str>,
) -> std::result::Result<flow::Idempotent<flow::RequestFlow>, Error> {
    let idem = idempotency(&ws.rec.id, idempotency_key, path, body)?;
    let req = match d {
        Dialect::V1 => IssueRequest::from_v1_json(body),
        Dialect::Zend => IssueRequest::from_zend_json(body),
    }?;
    let own;
    let senders = match (&req.src, ws.any_sender) {
        (Some(src), true) => {
            own = [src.clone()];
            &own[..]
        }
        _ => &ws.rec.senders[..],
    };
    let inner = flow::RequestFlow::start(
        &req,
        &ws.rec.id,
        senders,
        &ws.rec.policy,
        now,
        &entropy()?,
        pepper,
        HostTraits::default(),
    )?;
    Ok(flow::Idempotent::new(inner, idem))
}

#[napi]
pub fn verify_flow(
    dialect_name: String,
    path_id: Option<String>,
    body: Buffer,
    now: f64,
) -> Result<VerifyFlow> {
    let inner = start_verify(dialect(&dialect_name)?, path_id.as_deref(), &body, ms(now));
    Ok(VerifyFlow {
        inner: inner.map_err(|e| throw(&e))?.into(),
    })
}

/// `POST …/verify`'s flow (`path_id`: the session id in a `zend` path).
pub(crate) fn start_verify(
    d: Dialect,
    path_id: Option<&str>,
    body: &[u8],
    now: UnixMillis,
) -> std::result::Result<flow::VerifyFlow, Error> {
    let req = verify_request(d, path_id, body)?;
    Ok(flow::VerifyFlow::start(&req, d, now, HostTraits::default()))
}

/// A verify body as the core reads it (`zend`: the session id is the path's).
pub(crate) fn verify_request(
    d: Dialect,
    path_id: Option<&str>,
    body: &[u8],
) -> std::result::Result<VerifyRequest, Error> {
    match (d, path_id) {
        (Dialect::Zend, Some(id)) => VerifyRequest::from_zend_json(id, body),
        _ => VerifyRequest::from_v1_json(body),
    }
}

#[napi]
pub fn status_flow(
    dialect_name: String,
    raw_id: String,
    ws_id: String,
    now: f64,
) -> Result<StatusFlow> {
    Ok(StatusFlow {
        inner: flow::StatusFlow::start(&raw_id, dialect(&dialect_name)?, &ws_id, ms(now)).into(),
    })
}

/// Starts `GET /v1/admin/workspaces` (an admin flow): `query` is the URL's query string
/// (`cursor`, `limit`; checked by the flow, 400 on a bad one).
#[napi]
pub fn list_workspaces_flow(query: String, now: f64) -> Result<AdminFlow> {
    let pairs = crate::reports::query_pairs(&query);
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let action = AdminAction::ListWorkspaces {
        cursor: param("cursor"),
        limit: param("limit"),
    };
    let random = random::<ADMIN_RANDOM_BYTES>()?;
    Ok(AdminFlow {
        inner: flow::AdminFlow::start(action, ms(now), &random).into(),
    })
}

/// Starts an admin flow: `action` is `createWorkspace`, `patchWorkspace`, `getWorkspace`,
/// `createKey`, `revokeKey`, `getFraud` or `unblockPrefix`; `id` the workspace id, `keyId` the
/// key, `body` the JSON body (create, patch), `prefix` the number prefix (unblockPrefix, as in
/// the path: `+233202`, `%2B233202` or `233202`).
#[napi]
pub fn admin_flow(
    action: String,
    id: Option<String>,
    key_id: Option<String>,
    body: Option<Buffer>,
    now: f64,
    prefix: Option<String>,
) -> Result<AdminFlow> {
    let body = body.as_deref().unwrap_or_default();
    let id = id.as_deref().unwrap_or_default();
    let key_id = key_id.as_deref().unwrap_or_default();
    let prefix = prefix.as_deref().unwrap_or_default();
    let action = match action.as_str() {
        "createWorkspace" => AdminAction::CreateWorkspace { body },
        "patchWorkspace" => AdminAction::PatchWorkspace { id, body },
        "getWorkspace" => AdminAction::GetWorkspace { id },
        "createKey" => AdminAction::CreateKey { id },
        "revokeKey" => AdminAction::RevokeKey { id, key_id },
        "getFraud" => AdminAction::GetFraud { id },
        "unblockPrefix" => AdminAction::UnblockPrefix { id, prefix },
        _ => return Err(throw(&Error::NotFound)),
    };
    let random = random::<ADMIN_RANDOM_BYTES>()?;
    Ok(AdminFlow {
        inner: flow::AdminFlow::start(action, ms(now), &random).into(),
    })
}
