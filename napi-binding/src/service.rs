//! The OTP routes (request, verify, status, cancel, resend) answered in Rust, on the tokio
//! runtime, for `otpkit serve` on hyper (`serve.rs`), for `handle()` (node:http, the framework
//! adapters: [`FlowService::handle`]) and for the library's operations (`otp.request(…)`:
//! [`FlowService::call`], one Node-API call each): authentication by API key (the key cache,
//! or one lookup that also reads the session a verify or status names, on Redis), the flow of
//! the route run to its answer on the store (memory or Redis) with the gateway sending from
//! here (a built-in one; one written in JavaScript is called from here), and what follows the
//! answer. A request on these routes never waits for the
//! JavaScript thread. The steps are the ones `lib/service.js` `handle()` takes for a JavaScript
//! gateway, in the same order (401 before any body error; 415 / 413 before the body is read).
//!
//! Logs and metrics stay JavaScript's (prom-client, the log lines' writer): serve.rs tells each
//! answer to JavaScript as it hands it to hyper, in one non-blocking call, with what its run did.

use crate::engine::Engine;
use crate::errors::{core_error, throw};
use crate::flow::{
    finish_memory, run_memory, start_request, start_resend, start_verify, verify_request, Answer,
};
use crate::http::declared_length;
use crate::inflight;
use crate::inflight::now_ms;
use crate::memory::MemoryStore;
use crate::redis_store::{RedisCore, RedisSteps, RunReports, Stop};
use crate::send::{Delivered, Gateway, GatewayAnswer, GatewayCall, JsGatewayFn, NativeGateway};
use crate::workspace::Workspace;
use napi::bindgen_prelude::{Buffer, CallbackContext, Either, Function, FunctionRef, PromiseRaw};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, JsValue, Result, Status};
use napi_derive::napi;
use otpkit_core::flow::{self as core_flow, Flow, HostTraits, Io};
use otpkit_core::http::envelope::{self, Reply};
use otpkit_core::http::request as core_request;
use otpkit_core::http::request::Dialect;
use otpkit_core::http::route::{match_route, Route};
use otpkit_core::workspace::{api_key_hash, last_used_due, presented_api_key};
use otpkit_core::{Error, UnixMillis};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Workspaces parsed from stored JSON kept at most (then the map starts over): a parse is
/// 6.4 µs against 1.6 µs a hit, measured (lib/service.js `parsedWorkspace`, the same rule).
const PARSED_MAX: usize = 1000;

/// Keys whose last recorded use is remembered at most (forgetting costs one more write).
const KEY_USES_MAX: usize = 10_000;

enum Store {
    Memory(MemoryStore),
    Redis(RedisCore),
}

/// The OTP routes answered in Rust (see the module): made once by `lib/service.js`
/// `flowService()` when the service has a gateway, a pepper and a store that runs flows in Rust.
#[napi]
pub struct FlowService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FlowService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowService").finish_non_exhaustive()
    }
}

struct Inner {
    engine: Engine,
    store: Store,
    gateway: Gateway,
    /// Time each store effect (for the store latency histogram).
    timed: bool,
    /// Stored workspace JSON → its parsed workspace.
    parsed: Mutex<HashMap<String, Workspace>>,
    /// Key id → when this process last recorded its use (`lastUsedAt`).
    key_uses: Mutex<HashMap<String, u64>>,
    /// Work after answers still running (what follows a Redis flow's answer, `lastUsedAt`).
    background: AtomicUsize,
    settled: Notify,
}

/// How a request on an OTP route was answered: for its log line and metrics.
#[derive(Debug)]
pub(crate) struct Served {
    pub reply: Reply,
    /// The route's name (as logs say it).
    pub route: &'static str,
    /// The workspace it authenticated as.
    pub workspace: Option<String>,
    /// What its flow run did before the answer.
    pub reports: RunReports,
}

/// An answer of [`FlowService::handle`] or [`FlowService::call`]: the HTTP reply, and what the
/// run did before it (see `lib/log.js` `reportRun`).
#[napi(object)]
#[derive(Debug)]
pub struct FlowAnswer {
    pub status: u32,
    /// The JSON body (empty for 204).
    pub body: String,
    /// `Retry-After` seconds.
    pub retry_after: Option<u32>,
    /// A replay of the answer stored for an `Idempotency-Key` (SPEC §7).
    pub replayed: bool,
    /// The workspace the API key authenticated as (`handle`).
    pub workspace: Option<String>,
    /// An error answer's own message (`call`: the body's `message` also names the field).
    pub error_message: Option<String>,
    /// [`RunReports`]' three lists, each left out when empty (most answers: none is set).
    pub failed: Option<Vec<String>>,
    pub timed: Option<Vec<String>>,
    pub sent: Option<Vec<String>>,
}

/// `list`, unless it is empty.
fn listed(list: Vec<String>) -> Option<Vec<String>> {
    (!list.is_empty()).then_some(list)
}

impl FlowAnswer {
    fn of(reply: Reply, workspace: Option<String>, reports: RunReports) -> Self {
        FlowAnswer {
            status: u32::from(reply.status),
            body: reply.body,
            retry_after: reply.retry_after,
            replayed: reply.replayed,
            workspace,
            error_message: None,
            failed: listed(reports.failed),
            timed: listed(reports.timed),
            sent: listed(reports.sent),
        }
    }

    /// The answer of a run that ended with `answer` (none: the store failed).
    fn ended(answer: Answer, reports: RunReports) -> Self {
        match answer.unwrap_or(Err(Error::StoreUnavailable)) {
            Ok(reply) => FlowAnswer::of(reply, None, reports),
            Err(e) => FlowAnswer {
                error_message: Some(e.message().to_string()),
                ..FlowAnswer::of(envelope::error(&e), None, reports)
            },
        }
    }
}

/// Where what a flow run did after its answer goes ([`FlowService::handle`]'s `after`). Weak: it
/// does not keep Node's event loop alive.
type AfterFn = ThreadsafeFunction<RunReports, (), RunReports, Status, false, true>;

/// A gateway written in JavaScript, as `call` is given it (for the JavaScript thread).
type SendRef = FunctionRef<GatewayCall, PromiseRaw<'static, GatewayAnswer>>;

/// A library call's flow run on the memory store, on the JavaScript thread: every store effect
/// here, and a send through a gateway written in JavaScript called here too, the run going on in
/// its promise's callback (a call from the runtime would cost four thread hops a send). A wait
/// for another request's send, a pause, or a send without that function goes on on the runtime.
struct LocalRun<F> {
    inner: Arc<Inner>,
    flow: F,
    ws: Workspace,
    send: Option<Rc<SendRef>>,
    reports: RunReports,
    /// The session this run is sending, while it is (other requests may wait for it).
    sending: Option<String>,
}

/// A library call's answer: at once, or a promise of it.
type Answering = Either<FlowAnswer, PromiseRaw<'static, FlowAnswer>>;

impl<F: Flow + Send + 'static> LocalRun<F> {
    /// Runs on (from the start, or once a send's outcome is fed) to the answer, or to the next
    /// send (then a promise).
    fn go(mut self: Box<Self>, env: &Env) -> Result<Answering> {
        let Store::Memory(m) = &self.inner.store else {
            return Err(throw(&Error::StoreUnavailable));
        };
        let io = match run_memory(&mut self.flow, m, &self.inner.engine, &self.ws, now()) {
            Ok(answer) => {
                if let Some(reference) = self.sending.take() {
                    m.inflight().sent(&reference, matches!(answer, Some(Ok(_))));
                }
                let reports = self.inner.to_tell(std::mem::take(&mut self.reports));
                return Ok(Either::A(FlowAnswer::ended(answer, reports)));
            }
            Err(io) => *io,
        };
        let send = self.send.as_ref().map(Rc::clone);
        match (io, send) {
            (Io::Deliver { message }, Some(send)) => {
                let inflight = m.inflight();
                inflight.sending(&message.reference);
                self.sending = Some(message.reference.clone());
                let (started_ms, started) = (inflight::now_ms(), std::time::Instant::now());
                let call = GatewayCall::of(&self.ws.rec.id, &message);
                // The function given is the service's own wrapper, which never rejects.
                let promise = send.borrow_back(env)?.call(call)?;
                let next = promise.then(move |ctx: CallbackContext<GatewayAnswer>| {
                    let d = Delivered::of_js(Some(ctx.value), started);
                    let sent = &mut self.reports.sent;
                    let outcome = inflight::delivered(d, &message, started_ms, sent);
                    self.flow.handle(outcome);
                    self.go(&ctx.env)
                })?;
                Ok(Either::B(PromiseRaw::new(env.raw(), next.raw())))
            }
            (io, _) => {
                let LocalRun {
                    inner,
                    mut flow,
                    ws,
                    mut reports,
                    sending,
                    ..
                } = *self;
                let promise = env.spawn_future(async move {
                    let answer = inner
                        .finish_memory(&mut flow, io, sending, &ws, &mut reports)
                        .await;
                    Ok(FlowAnswer::ended(answer, inner.to_tell(reports)))
                })?;
                Ok(Either::B(PromiseRaw::new(env.raw(), promise.raw())))
            }
        }
    }
}

/// What hands what followed an answer to `after` (nothing without one).
fn tell_after(after: Option<AfterFn>) -> impl FnOnce(RunReports) + Send + 'static {
    move |r: RunReports| {
        if let Some(f) = after {
            f.call(r, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

/// Why a body could not be read: too large, or the client went first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    TooLarge,
    Aborted,
}

#[napi]
impl FlowService {
    /// `memory` or `redis`: the store; `gateway`: the built-in gateway its sends go through, or
    /// else `send`, a gateway written in JavaScript (`({message, workspaceId}) =>
    /// Promise<GatewayAnswer>`, the message as JSON); `timed`: time each store effect (metrics
    /// are on).
    #[napi(constructor)]
    pub fn new(
        engine: &Engine,
        memory: Option<&MemoryStore>,
        redis: Option<&RedisCore>,
        gateway: Option<&NativeGateway>,
        #[napi(ts_arg_type = "((call: GatewayCall) => Promise<GatewayAnswer>) | null")]
        send: Option<JsGatewayFn>,
        timed: bool,
    ) -> Result<Self> {
        let gateway = match (gateway, send) {
            (Some(g), _) => Gateway::Native(g.share()),
            (None, Some(f)) => Gateway::Js(Arc::new(f)),
            (None, None) => return Err(throw(&Error::invalid("gateway", "a gateway is required"))),
        };
        let store = match (memory, redis) {
            (Some(m), None) => Store::Memory(m.share()),
            (None, Some(r)) => Store::Redis(r.share()),
            _ => {
                return Err(throw(&Error::invalid(
                    "store",
                    "must be one memory store or one Redis store",
                )))
            }
        };
        Ok(FlowService {
            inner: Arc::new(Inner {
                engine: Engine {
                    pepper: engine.pepper.clone(),
                },
                store,
                gateway,
                timed,
                parsed: Mutex::new(HashMap::new()),
                key_uses: Mutex::new(HashMap::new()),
                background: AtomicUsize::new(0),
                settled: Notify::new(),
            }),
        })
    }

    /// Answers a request on one of the OTP routes (request, verify, status, cancel, resend) for
    /// `handle()` (node:http, the framework adapters), as `otpkit serve` on hyper does:
    /// `headers` by lower-case name; `body` the body as read (null: none), or `bodyError`
    /// (`tooLarge`, `aborted`) when it could not be; it is looked at only once the route wants
    /// it, so a missing API key is still answered 401 first. `after` gets what the flow did
    /// after its answer, when there is anything to tell.
    #[napi(ts_return_type = "Promise<FlowAnswer>")]
    #[allow(clippy::too_many_arguments)]
    pub fn handle<'env>(
        &self,
        env: &'env Env,
        method: String,
        path: String,
        headers: HashMap<String, String>,
        body: Option<Buffer>,
        body_error: Option<String>,
        #[napi(ts_arg_type = "((report: RunReports) => void) | null")] after: Option<AfterFn>,
    ) -> Result<PromiseRaw<'env, FlowAnswer>> {
        let read_body = match body_error.as_deref() {
            Some("tooLarge") => Err(BodyError::TooLarge),
            Some(_) => Err(BodyError::Aborted),
            None => Ok(body.map(|b| b.to_vec()).unwrap_or_default()),
        };
        let service = self.share();
        env.spawn_future(async move {
            let read = move |max: usize| async move {
                match read_body {
                    Ok(b) if b.len() > max => Err(BodyError::TooLarge),
                    r => r,
                }
            };
            let after = tell_after(after);
            let served = service.answer(&method, &path, &headers, read, after).await;
            let reports = service.inner.to_tell(served.reports);
            Ok(FlowAnswer::of(served.reply, served.workspace, reports))
        })
    }

    /// One operation of the library in workspace `ws` (`otp.request(…)` …): `op` `request`
    /// (`body`: its JSON), `verify` (`body`), `status`, `cancel` or `resend` (`id`: the
    /// session id; `body`: JSON or null), with the call's `Idempotency-Key` and the route path
    /// it is fingerprinted with. The answer is the v1 route's, as over HTTP; on the memory
    /// store it comes at once unless the flow sends (or waits for a send), else as a promise.
    /// `after`: as [`Self::handle`]'s.
    #[napi(ts_return_type = "FlowAnswer | Promise<FlowAnswer>")]
    #[allow(clippy::too_many_arguments)]
    pub fn call<'env>(
        &self,
        env: &'env Env,
        op: String,
        ws: &Workspace,
        id: Option<String>,
        body: Option<Buffer>,
        idempotency_key: Option<String>,
        idempotency_path: Option<String>,
        #[napi(ts_arg_type = "((report: RunReports) => void) | null")] after: Option<AfterFn>,
        #[napi(ts_arg_type = "((call: GatewayCall) => Promise<GatewayAnswer>) | null")]
        send: Option<Function<GatewayCall, PromiseRaw<'static, GatewayAnswer>>>,
    ) -> Result<Either<FlowAnswer, PromiseRaw<'env, FlowAnswer>>> {
        let send = send.map(|f| f.create_ref()).transpose()?.map(Rc::new);
        let pepper = match &self.inner.engine.pepper {
            Ok(p) => p,
            Err(e) => {
                return Ok(Either::A(FlowAnswer::ended(
                    Some(Err(e.clone())),
                    RunReports::default(),
                )))
            }
        };
        let (d, at, id) = (Dialect::V1, now(), id.as_deref().unwrap_or(""));
        let (key, path) = (idempotency_key.as_deref(), idempotency_path.as_deref());
        let bytes = body.as_deref().unwrap_or_default();
        let started = match op.as_str() {
            "request" => start_request(pepper, d, bytes, ws, at, key, path)
                .map(|f| self.drive(env, f, ws, after, send)),
            "verify" => {
                start_verify(d, None, bytes, at).map(|f| self.drive(env, f, ws, after, send))
            }
            "status" => Ok(self.drive(
                env,
                core_flow::StatusFlow::start(id, d, &ws.rec.id, at),
                ws,
                after,
                send,
            )),
            "cancel" => Ok(self.drive(
                env,
                core_flow::CancelFlow::start(id, d, &ws.rec.id, at),
                ws,
                after,
                send,
            )),
            "resend" => start_resend(pepper, d, id, body.as_deref(), ws, at, key, path)
                .map(|f| self.drive(env, f, ws, after, send)),
            _ => Err(Error::invalid(
                "op",
                "must be request, verify, status, cancel or resend",
            )),
        };
        match started {
            Ok(answer) => answer,
            Err(e) => Ok(Either::A(FlowAnswer::ended(
                Some(Err(e)),
                RunReports::default(),
            ))),
        }
    }

    /// Resolves once no work after an answer is running.
    #[napi]
    pub async fn settle(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        loop {
            let settled = inner.settled.notified();
            if inner.background.load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            settled.await;
        }
    }
}

impl FlowService {
    /// Another handle on the same service (for the server).
    pub(crate) fn share(&self) -> FlowService {
        FlowService {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Runs `flow` for a library call (see [`Self::call`]): to its answer here on the memory
    /// store when it needs no send, else on the runtime.
    fn drive<'env, F: Flow + Send + 'static>(
        &self,
        env: &'env Env,
        flow: F,
        ws: &Workspace,
        after: Option<AfterFn>,
        send: Option<Rc<SendRef>>,
    ) -> Result<Either<FlowAnswer, PromiseRaw<'env, FlowAnswer>>> {
        let inner = Arc::clone(&self.inner);
        let ws = ws.clone();
        if let Store::Memory(_) = &inner.store {
            let run = Box::new(LocalRun {
                inner,
                flow,
                ws,
                send,
                reports: RunReports::default(),
                sending: None,
            });
            return run.go(env).map(|a| match a {
                Either::A(answer) => Either::A(answer),
                Either::B(p) => Either::B(PromiseRaw::new(env.raw(), p.raw())),
            });
        }
        env.spawn_future(async move {
            let mut reports = RunReports::default();
            let answer = inner
                .run(flow, &ws, None, &mut reports, tell_after(after))
                .await;
            Ok(FlowAnswer::ended(Some(answer), inner.to_tell(reports)))
        })
        .map(Either::B)
    }

    /// Whether `method` `path` is one of the routes answered here.
    pub(crate) fn handles(method: &str, path: &str) -> bool {
        matches!(
            match_route(method, path),
            Ok(Route::Request(_)
                | Route::Verify(..)
                | Route::Status(..)
                | Route::Cancel(..)
                | Route::Resend(..))
        )
    }

    /// Answers `method` `path` (one of [`Self::handles`]'s routes). `read(max)` reads the body
    /// (called at most once, only once the route wants it); `after` gets what the flow did
    /// after its answer, once it is done (Redis; nothing when there was nothing to tell).
    pub(crate) async fn answer<R, Fut>(
        &self,
        method: &str,
        path: &str,
        headers: &HashMap<String, String>,
        read: R,
        after: impl FnOnce(RunReports) + Send + 'static,
    ) -> Served
    where
        R: FnOnce(usize) -> Fut,
        Fut: Future<Output = std::result::Result<Vec<u8>, BodyError>>,
    {
        let route = match_route(method, path);
        let mut served = Served {
            reply: Reply {
                status: 500,
                body: String::new(),
                retry_after: None,
                replayed: false,
            },
            route: route.as_ref().map_or("unknown", Route::name),
            workspace: None,
            reports: RunReports::default(),
        };
        let answered = match route {
            Ok(route) => {
                let ask = Ask {
                    path,
                    headers,
                    served: &mut served,
                };
                Arc::clone(&self.inner).route(route, ask, read, after).await
            }
            Err(e) => Err(e),
        };
        served.reply = answered.unwrap_or_else(|e| envelope::error(&e));
        served
    }
}

/// A request being answered.
struct Ask<'a> {
    path: &'a str,
    headers: &'a HashMap<String, String>,
    served: &'a mut Served,
}

impl Ask<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The API key's hash, if one is presented in our format.
    fn key_hash(&self) -> Option<String> {
        presented_api_key(self.header("authorization"), self.header("x-api-key")).map(api_key_hash)
    }

    /// 415 / 413 before the body is read (SPEC's order), then the body.
    async fn json_body<R, Fut>(&self, read: R) -> std::result::Result<Vec<u8>, Error>
    where
        R: FnOnce(usize) -> Fut,
        Fut: Future<Output = std::result::Result<Vec<u8>, BodyError>>,
    {
        let declared = declared_length(self.header("content-length"));
        core_request::check_content(self.header("content-type"), declared)?;
        read(core_request::MAX_BODY_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => Error::PayloadTooLarge,
                BodyError::Aborted => Error::invalid("body", "was not received whole"),
            })
    }
}

fn now() -> UnixMillis {
    UnixMillis(now_ms())
}

impl Inner {
    /// What of `reports` an answer tells JavaScript: all of it with metrics on; else a
    /// delivered send is left out, as `lib/log.js` `reportRun` would only count it (a failed
    /// one is logged). 8 strings a send made into JavaScript strings for nothing otherwise.
    fn to_tell(&self, mut reports: RunReports) -> RunReports {
        if !self.timed && !reports.sent.is_empty() {
            let mut kept = Vec::new();
            let mut sent = std::mem::take(&mut reports.sent).into_iter().peekable();
            while sent.peek().is_some() {
                let send: Vec<String> = sent.by_ref().take(inflight::SENT_FIELDS).collect();
                if send.get(2).map(String::as_str) != Some("delivered") {
                    kept.extend(send);
                }
            }
            reports.sent = kept;
        }
        reports
    }

    async fn route<R, Fut>(
        self: Arc<Self>,
        route: Route<'_>,
        mut ask: Ask<'_>,
        read: R,
        after: impl FnOnce(RunReports) + Send + 'static,
    ) -> std::result::Result<Reply, Error>
    where
        R: FnOnce(usize) -> Fut,
        Fut: Future<Output = std::result::Result<Vec<u8>, BodyError>>,
    {
        let pepper = self.engine.pepper.clone()?;
        let hash = ask.key_hash();
        let redis = matches!(self.store, Store::Redis(_));
        // On Redis a verify or a status reads the key's workspace and the session in one round
        // trip (unless the key is cached: then the flow reads the session).
        if redis {
            if let Route::Verify(d, id) = route {
                let hash = hash.ok_or(Error::Unauthorized)?;
                let request = match ask.json_body(read).await {
                    Ok(body) => verify_request(d, id, &body),
                    Err(e) => Err(e),
                };
                let sid = request.as_ref().ok().and_then(|r| r.session_id.clone());
                let (ws, prefetched) = self.authenticate(&hash, sid.as_deref(), &mut ask).await?;
                let flow = core_flow::VerifyFlow::start(&request?, d, now(), HostTraits::default());
                return self
                    .run(flow, &ws, prefetched, &mut ask.served.reports, after)
                    .await;
            }
            if let Route::Status(d, id) = route {
                let hash = hash.ok_or(Error::Unauthorized)?;
                let sid = otpkit_core::validate::normalize_session_id(id);
                let (ws, prefetched) = self.authenticate(&hash, sid.as_deref(), &mut ask).await?;
                let flow = core_flow::StatusFlow::start(id, d, &ws.rec.id, now());
                return self
                    .run(flow, &ws, prefetched, &mut ask.served.reports, after)
                    .await;
            }
        }
        let hash = hash.ok_or(Error::Unauthorized)?;
        let (ws, _) = self.authenticate(&hash, None, &mut ask).await?;
        let idem_key = ask.header("idempotency-key").map(str::to_string);
        match route {
            Route::Request(d) => {
                let body = ask.json_body(read).await?;
                let (key, path) = (idem_key.as_deref(), Some(ask.path));
                let flow = start_request(&pepper, d, &body, &ws, now(), key, path)?;
                self.run(flow, &ws, None, &mut ask.served.reports, after)
                    .await
            }
            Route::Verify(d, id) => {
                let body = ask.json_body(read).await?;
                let flow = start_verify(d, id, &body, now())?;
                self.run(flow, &ws, None, &mut ask.served.reports, after)
                    .await
            }
            Route::Status(d, id) => {
                let flow = core_flow::StatusFlow::start(id, d, &ws.rec.id, now());
                self.run(flow, &ws, None, &mut ask.served.reports, after)
                    .await
            }
            Route::Cancel(d, id) => {
                let flow = core_flow::CancelFlow::start(id, d, &ws.rec.id, now());
                self.run(flow, &ws, None, &mut ask.served.reports, after)
                    .await
            }
            Route::Resend(d, id) => {
                // The body is optional: read only when the request says it has one.
                let declared = declared_length(ask.header("content-length"));
                let body = if core_request::has_body(ask.header("content-type"), declared) {
                    Some(ask.json_body(read).await?)
                } else {
                    None
                };
                let (key, path) = (idem_key.as_deref(), Some(ask.path));
                let flow = start_resend(&pepper, d, id, body.as_deref(), &ws, now(), key, path)?;
                self.run(flow, &ws, None, &mut ask.served.reports, after)
                    .await
            }
            _ => Err(Error::NotFound),
        }
    }

    /// The workspace of an API key hash (401 for an unknown or revoked key) and, when
    /// `session_id` is given and the store read it with the key (Redis, key not cached), that
    /// session's stored value (`Some(None)`: there is none).
    async fn authenticate(
        self: &Arc<Self>,
        hash: &str,
        session_id: Option<&str>,
        ask: &mut Ask<'_>,
    ) -> std::result::Result<(Workspace, Option<Option<String>>), Error> {
        let (json, prefetched) = match &self.store {
            Store::Memory(m) => {
                let id = m
                    .kv_get(format!("key:{hash}"))
                    .map_err(|e| core_error(&e))?;
                let json = match id {
                    Some(id) => m.kv_get(format!("ws:{id}")).map_err(|e| core_error(&e))?,
                    None => None,
                };
                (json, None)
            }
            // A key revoked by another process: Redis sent this process's tracking connection
            // its invalidation before the revoker heard back, but the runtime may not have read
            // it yet when this request's task runs first. A yield lets the runtime poll its
            // sockets and run what they woke (the tracker drops the cache inline) before the
            // cache is read: the revocation then holds from the revoker's answer on, as it did
            // when every request crossed to JavaScript first.
            Store::Redis(r) => {
                tokio::task::yield_now().await;
                match r.cached(hash) {
                    Some(json) => (Some(json), None),
                    None => {
                        let found = r
                            .find_key(hash, session_id)
                            .await
                            .map_err(|e| core_error(&e))?;
                        (found.workspace, session_id.map(|_| found.session))
                    }
                }
            }
        };
        let ws = self.parsed(&json.ok_or(Error::Unauthorized)?)?;
        let key_id = ws
            .rec
            .live_key(hash)
            .ok_or(Error::Unauthorized)?
            .key_id
            .clone();
        ask.served.workspace = Some(ws.rec.id.clone());
        self.note_key_use(&ws.rec.id, &key_id);
        Ok((ws, prefetched))
    }

    /// The workspace of stored JSON, parsed once per distinct JSON (a record is immutable: a
    /// changed one is other JSON).
    fn parsed(&self, json: &str) -> std::result::Result<Workspace, Error> {
        if let Some(ws) = self.parsed.lock().ok().and_then(|m| m.get(json).cloned()) {
            return Ok(ws);
        }
        let ws = Workspace {
            rec: Arc::new(otpkit_core::workspace::WorkspaceRecord::from_json(json)?),
            any_sender: false,
        };
        if let Ok(mut m) = self.parsed.lock() {
            if m.len() >= PARSED_MAX {
                m.clear();
            }
            m.insert(json.to_string(), ws.clone());
        }
        Ok(ws)
    }

    /// `lastUsedAt` (SPEC §9): records a key's use in the store when the core says it is due
    /// (at most once an hour per key per process), after the answer; a failure is ignored (the
    /// next due use tries again).
    fn note_key_use(self: &Arc<Self>, ws_id: &str, key_id: &str) {
        let at = now();
        {
            let Ok(mut uses) = self.key_uses.lock() else {
                return;
            };
            if !last_used_due(uses.get(key_id).copied().map(UnixMillis), at) {
                return;
            }
            if uses.len() >= KEY_USES_MAX {
                uses.clear();
            }
            uses.insert(key_id.to_string(), at.0);
        }
        let (me, ws_id, key_id) = (Arc::clone(self), ws_id.to_string(), key_id.to_string());
        self.later(async move {
            match &me.store {
                Store::Memory(m) => {
                    let _ = m.touch_key(ws_id, key_id, crate::num(at));
                }
                Store::Redis(r) => {
                    let _ = r.touch(&ws_id, &key_id, at.0).await;
                }
            }
        });
    }

    /// Runs `work` after the answer, counted until it ends (see [`FlowService::settle`]).
    fn later(self: &Arc<Self>, work: impl Future<Output = ()> + Send + 'static) {
        self.background.fetch_add(1, Ordering::AcqRel);
        let me = Arc::clone(self);
        napi::bindgen_prelude::spawn(async move {
            work.await;
            if me.background.fetch_sub(1, Ordering::AcqRel) == 1 {
                me.settled.notify_waiters();
            }
        });
    }

    /// Runs `flow` for `ws` to its answer; what follows the answer runs on (Redis) or is done
    /// already (memory).
    async fn run<F: Flow + Send + 'static>(
        self: &Arc<Self>,
        mut flow: F,
        ws: &Workspace,
        prefetched: Option<Option<String>>,
        reports: &mut RunReports,
        after: impl FnOnce(RunReports) + Send + 'static,
    ) -> std::result::Result<Reply, Error> {
        let answer = match &self.store {
            Store::Memory(m) => match run_memory(&mut flow, m, &self.engine, ws, now()) {
                Ok(answer) => answer,
                Err(first) => {
                    self.finish_memory(&mut flow, *first, None, ws, reports)
                        .await
                }
            },
            Store::Redis(r) => {
                let steps = RedisSteps::new();
                if let Some(session) = prefetched {
                    steps.prefetch(session);
                }
                let mut run = r
                    .runner(
                        &self.engine,
                        ws,
                        &steps,
                        Some(self.gateway.share()),
                        self.timed,
                    )
                    .map_err(|e| core_error(&e))?;
                match run.until(&mut flow, reports).await {
                    Stop::Answer(a) => {
                        // What follows the answer (audit, analytics, …) runs on.
                        self.later(async move {
                            let mut reports = RunReports::default();
                            while let Stop::Answer(_) = run.until(&mut flow, &mut reports).await {}
                            let told = !reports.failed.is_empty()
                                || !reports.timed.is_empty()
                                || !reports.sent.is_empty();
                            if told {
                                after(reports);
                            }
                        });
                        Some(a)
                    }
                    // Not with a gateway: every step is taken here.
                    Stop::Yield(_) | Stop::Done => None,
                }
            }
        };
        // A flow always answers: none is a store failure.
        answer.unwrap_or(Err(Error::StoreUnavailable))
    }

    /// A memory run from the first step the store cannot take (deliver, awaitSend, pause) on:
    /// sends through the service's gateway, to the flow's answer (`sending`: as
    /// [`finish_memory`]'s).
    async fn finish_memory<F: Flow>(
        &self,
        flow: &mut F,
        first: Io,
        sending: Option<String>,
        ws: &Workspace,
        reports: &mut RunReports,
    ) -> Answer {
        let Store::Memory(m) = &self.store else {
            return None;
        };
        let (engine, gateway, sent) = (&self.engine, &self.gateway, &mut reports.sent);
        finish_memory(flow, first, sending, m, engine, ws, gateway, sent).await
    }
}
