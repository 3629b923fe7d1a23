//! `otpkit serve`'s HTTP/1.1 server: hyper 1 on napi's tokio runtime. Connections, parsing,
//! keep-alive, deadlines and writes happen here, off the JavaScript thread. The OTP routes are
//! answered here too, by [`FlowService`] (`src/service.rs`), and told to JavaScript afterwards
//! for the log line and metrics ([`ServedEvent`]); every other request is answered by the
//! JavaScript service (`lib/server.js` `serveNative`) through one threadsafe function call, with
//! the body when it came with the head (else a [`RequestBody`] to read).
//!
//! Every connection has a deadline, whatever it sends (as `lib/server.js` documents for node:http):
//! - **headers**: a request head must be complete within `headersTimeoutMs` of its first byte
//!   (a new connection: of its accept);
//! - **request**: a body not received within `requestTimeoutMs` of its head's first byte is
//!   answered 408 and the connection closed;
//! - **idle**: no byte either way for `idleTimeoutMs`: the connection is closed;
//! - **keep-alive**: an idle connection between two requests is closed after `keepAliveTimeoutMs`;
//! - **drain**: an answer given before its body was read (401, 413, 415) says `Connection: close`;
//!   the rest of the body is read and discarded for at most `drainTimeoutMs` (and 64 MiB), then
//!   the connection is closed, so a client that dribbles its body cannot hold it;
//!
//! and at most `maxConnections` are open at once (more are closed at accept).

use crate::errors::{host_error, throw};
use crate::redis_store::RunReports;
use crate::service::{BodyError, FlowService, Served};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use napi::bindgen_prelude::{spawn, Buffer, Either};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Error, Result, Status};
use napi_derive::napi;
use otpkit_core::http::envelope::Reply;
use otpkit_core::Error as CoreError;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::sleep_until;

/// The largest request head (request line and headers) answered: node:http's default, 16 KiB.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The bytes of the rest of a body read and discarded after an early answer, at most.
const DRAIN_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The connection limits (milliseconds, except the counts).
#[napi(object)]
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub max_connections: u32,
    pub headers_timeout_ms: u32,
    pub request_timeout_ms: u32,
    pub idle_timeout_ms: u32,
    pub keep_alive_timeout_ms: u32,
    pub drain_timeout_ms: u32,
    /// The largest body a request may have (bytes).
    pub max_body_bytes: u32,
}

/// A request, as the JavaScript service reads it.
#[napi(object, object_from_js = false)]
pub struct ServedRequest {
    /// Answer it with [`NativeServer::respond`] and this id.
    pub id: u32,
    pub method: String,
    /// The request target as received (path and query).
    pub url: String,
    /// Header names in lower case; a repeated header's values joined with `, `.
    pub headers: HashMap<String, String>,
    /// The whole body, when it had arrived with the head (none: read it from `stream`).
    pub body: Option<Buffer>,
    /// The body still to come.
    pub stream: Option<RequestBody>,
}

/// The answer to a request.
#[napi(object)]
pub struct ServedReply {
    pub status: u32,
    pub headers: HashMap<String, String>,
    pub body: Option<Either<String, Buffer>>,
}

impl std::fmt::Debug for ServedReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedReply")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// What is known of a body: the bytes read so far, and whether its end was seen.
struct BodyState {
    incoming: tokio::sync::Mutex<Option<Incoming>>,
    read: Mutex<Vec<u8>>,
    done: AtomicBool,
    /// The request was answered 408: a read still waiting gives up.
    cancelled: AtomicBool,
    cancel: Notify,
}

impl BodyState {
    /// Reads the rest of the body (at most `max` bytes in all): `PAYLOAD_TOO_LARGE` past it,
    /// `CLIENT_ABORTED` when the connection goes first.
    async fn read_all(&self, max: usize) -> std::result::Result<Vec<u8>, &'static str> {
        let mut guard = self.incoming.lock().await;
        let Some(incoming) = guard.as_mut() else {
            return Err("CLIENT_ABORTED");
        };
        loop {
            let cancelled = self.cancel.notified();
            if self.cancelled.load(Ordering::Acquire) {
                *guard = None;
                return Err("CLIENT_ABORTED");
            }
            if self.read.lock().map_or(0, |r| r.len()) > max {
                return Err("PAYLOAD_TOO_LARGE");
            }
            if self.done.load(Ordering::Acquire) {
                return Ok(std::mem::take(
                    &mut *self.read.lock().map_err(|_| "CLIENT_ABORTED")?,
                ));
            }
            let frame = tokio::select! {
                f = incoming.frame() => f,
                () = cancelled => continue,
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if let Ok(mut r) = self.read.lock() {
                            r.extend_from_slice(&data);
                        }
                    }
                }
                Some(Err(_)) => return Err("CLIENT_ABORTED"),
                None => self.done.store(true, Ordering::Release),
            }
        }
    }
}

/// The part of a request body that had not arrived with its head.
#[napi]
pub struct RequestBody {
    state: Arc<BodyState>,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody").finish_non_exhaustive()
    }
}

#[napi]
impl RequestBody {
    /// The whole body, at most `max` bytes: rejects with `PAYLOAD_TOO_LARGE` past it (the
    /// rest is discarded), `CLIENT_ABORTED` when the client goes before its end.
    #[napi]
    pub async fn read(&self, max: u32) -> Result<Buffer> {
        let state = Arc::clone(&self.state);
        state
            .read_all(max as usize)
            .await
            .map(Buffer::from)
            .map_err(|code| Error::new(Status::GenericFailure, code))
    }
}

/// Phases of a connection, for its deadlines.
const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// One connection's clock, shared by its reads and writes, its requests and its watchdog.
struct ConnClock {
    epoch: Instant,
    /// When a byte last went either way (ms since `epoch`).
    last_io: AtomicU64,
    phase: AtomicU8,
    /// When the phase began (ms since `epoch`).
    since: AtomicU64,
    /// A request was answered on it (an idle connection is kept alive, not new).
    served: AtomicBool,
    kill: Notify,
}

impl ConnClock {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    fn at(&self, ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_millis(ms))
    }
    fn set(&self, phase: u8) {
        self.since.store(self.now(), Ordering::Release);
        self.phase.store(phase, Ordering::Release);
    }
    /// A request was answered: the connection is idle, its keep-alive deadline from now.
    fn answered(&self) {
        self.served.store(true, Ordering::Release);
        self.set(IDLE);
    }
    /// The next moment a deadline could pass.
    fn deadline(&self, l: &ServeLimits) -> u64 {
        let idle = self.last_io.load(Ordering::Acquire) + u64::from(l.idle_timeout_ms);
        let since = self.since.load(Ordering::Acquire);
        let phase = match self.phase.load(Ordering::Acquire) {
            // kept alive: from the answer's last byte (a long answer is still being written)
            IDLE if self.served.load(Ordering::Acquire) => {
                since.max(self.last_io.load(Ordering::Acquire)) + u64::from(l.keep_alive_timeout_ms)
            }
            IDLE | HEAD => since + u64::from(l.headers_timeout_ms),
            _ => u64::MAX,
        };
        idle.min(phase)
    }
}

/// A socket that tells its clock when bytes move.
struct Timed {
    io: TcpStream,
    clock: Arc<ConnClock>,
}

impl AsyncRead for Timed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let c = &this.clock;
            c.last_io.store(c.now(), Ordering::Release);
            if c.phase.load(Ordering::Acquire) == IDLE {
                c.set(HEAD);
            }
        }
        r
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.clock
                .last_io
                .store(this.clock.now(), Ordering::Release);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The JavaScript service: called with each request, which it answers with
/// [`NativeServer::respond`] (a synchronous call: cheaper than a promise to await from here).
type Handler = ThreadsafeFunction<ServedRequest, (), ServedRequest, Status, false>;

/// An answer given in Rust ([`FlowService`]), told to JavaScript for its log line and metrics
/// as it is handed to hyper; or (`after`) what its flow did after the answer, once done.
#[napi(object, object_from_js = false)]
#[derive(Debug)]
pub struct ServedEvent {
    pub method: String,
    /// The route's name (`request`, `verify`, …).
    pub route: String,
    pub status: u32,
    /// How long it took to answer (ms).
    pub latency_ms: f64,
    /// The workspace it authenticated as.
    pub workspace: Option<String>,
    /// The answer's body, when it is an error (its code is logged, nothing else of it).
    pub body: Option<String>,
    /// What its flow run did: see `lib/log.js` `reportRun`.
    pub failed: Vec<String>,
    pub timed: Vec<String>,
    pub sent: Vec<String>,
    /// Only what followed the answer (`failed`, `timed`, `sent`): no request to log.
    pub after: bool,
}

impl ServedEvent {
    fn of(method: &str, latency_ms: f64, served: Served) -> Self {
        let status = u32::from(served.reply.status);
        ServedEvent {
            method: method.to_string(),
            route: served.route.to_string(),
            status,
            latency_ms,
            workspace: served.workspace,
            body: (status >= 400).then_some(served.reply.body),
            failed: served.reports.failed,
            timed: served.reports.timed,
            sent: served.reports.sent,
            after: false,
        }
    }

    fn after(r: RunReports) -> Self {
        ServedEvent {
            method: String::new(),
            route: String::new(),
            status: 0,
            latency_ms: 0.0,
            workspace: None,
            body: None,
            failed: r.failed,
            timed: r.timed,
            sent: r.sent,
            after: true,
        }
    }
}

/// Where [`ServedEvent`]s go. Weak: it does not keep Node's event loop alive.
type ServedFn = ThreadsafeFunction<ServedEvent, (), ServedEvent, Status, false, true>;

/// The HTTP answer to a core reply, with the headers `lib/server.js` `replyTo` gives one.
fn answer_of(reply: &Reply) -> Answer {
    let mut headers = HashMap::with_capacity(4);
    if reply.status != 204 {
        headers.insert("content-type".into(), "application/json".into());
    }
    if let Some(s) = reply.retry_after {
        headers.insert("retry-after".into(), s.to_string());
    }
    if reply.replayed {
        headers.insert("idempotent-replayed".into(), "true".into()); // SPEC §7
    }
    // A 401 always closes (see `replyTo`).
    if reply.status == 401 {
        headers.insert("connection".into(), "close".into());
    }
    let body = if reply.status == 204 {
        Bytes::new()
    } else {
        Bytes::from(reply.body.clone())
    };
    Answer {
        status: u32::from(reply.status),
        headers,
        body,
    }
}

/// An answer, owned on this side.
struct Answer {
    status: u32,
    headers: HashMap<String, String>,
    body: Bytes,
}

/// Requests handed to the service and not answered yet: id → where the answer goes.
#[derive(Default)]
struct Pending {
    next: u32,
    waiting: HashMap<u32, oneshot::Sender<Answer>>,
}

/// Forgets a request's entry when its answer is no longer awaited (answered, or the connection
/// went), so an answer that never comes leaks nothing.
struct Waiting<'a> {
    pending: &'a Mutex<Pending>,
    id: u32,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.waiting.remove(&self.id);
        }
    }
}

struct Shared {
    /// Taken on close, so the JavaScript event loop is no longer held open by the server.
    handler: Mutex<Option<Arc<Handler>>>,
    /// The OTP routes answered in Rust (none: every request goes to `handler`).
    service: Option<FlowService>,
    /// Told of each answer of `service`, as it is handed to hyper, for its log line and metrics.
    on_served: Option<Arc<ServedFn>>,
    pending: Mutex<Pending>,
    limits: ServeLimits,
    active: AtomicUsize,
    gone: Notify,
    shutdown: watch::Sender<bool>,
    kill_all: watch::Sender<bool>,
}

/// A running server.
#[napi]
pub struct NativeServer {
    shared: Arc<Shared>,
    port: u32,
}

impl std::fmt::Debug for NativeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

#[napi]
impl NativeServer {
    /// The port it listens on.
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Connections open now.
    #[napi(getter)]
    pub fn connections(&self) -> u32 {
        u32::try_from(self.shared.active.load(Ordering::Acquire)).unwrap_or(u32::MAX)
    }

    /// Answers request `id` (ignored when nobody waits for it any more: its connection went,
    /// or it was answered 408).
    #[napi]
    #[allow(clippy::needless_pass_by_value)]
    pub fn respond(&self, id: u32, reply: ServedReply) {
        let Some(tx) = self
            .shared
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.waiting.remove(&id))
        else {
            return;
        };
        let body = match reply.body {
            Some(Either::A(s)) => Bytes::from(s),
            Some(Either::B(b)) => Bytes::copy_from_slice(&b),
            None => Bytes::new(),
        };
        let _ = tx.send(Answer {
            status: reply.status,
            headers: reply.headers,
            body,
        });
    }

    /// Stops accepting; lets each connection finish the request it is serving (an idle one is
    /// closed at once) for at most `grace_ms`, then closes what is left. Resolves once every
    /// connection is gone.
    #[napi]
    pub async fn close(&self, grace_ms: u32) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let _ = shared.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(grace_ms));
        loop {
            let gone = shared.gone.notified();
            if shared.active.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, gone).await.is_err() {
                let _ = shared.kill_all.send(true); // the grace is over: what is left is closed
                break;
            }
        }
        if let Ok(mut h) = shared.handler.lock() {
            h.take();
        }
        Ok(())
    }
}

/// Listens on `host`:`port` (0: any free port) and answers each request with `handler`.
#[napi]
#[allow(clippy::needless_pass_by_value)]
pub fn serve_native(
    host: String,
    port: u32,
    limits: ServeLimits,
    handler: Handler,
    service: Option<&FlowService>,
    on_served: Option<ServedFn>,
) -> Result<NativeServer> {
    let port =
        u16::try_from(port).map_err(|_| throw(&CoreError::invalid("port", "must be 0–65535")))?;
    let std_listener = std::net::TcpListener::bind((host.as_str(), port)).map_err(|e| {
        throw(&CoreError::Misconfigured {
            message: format!("cannot listen on {host}:{port}: {e}").into(),
        })
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| Error::from_reason(e.to_string()))?;
    let bound = std_listener
        .local_addr()
        .map_err(|e| Error::from_reason(e.to_string()))?
        .port();
    let (shutdown, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        handler: Mutex::new(Some(Arc::new(handler))),
        service: service.map(FlowService::share),
        on_served: on_served.map(Arc::new),
        pending: Mutex::new(Pending::default()),
        limits,
        active: AtomicUsize::new(0),
        gone: Notify::new(),
        shutdown,
        kill_all: watch::channel(false).0,
    });
    let accepting = Arc::clone(&shared);
    spawn(async move {
        let Ok(listener) = TcpListener::from_std(std_listener) else {
            return;
        };
        let mut stop = accepting.shutdown.subscribe();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    if accepting.active.load(Ordering::Acquire) >= accepting.limits.max_connections as usize {
                        drop(stream); // past the cap: refused at once
                        continue;
                    }
                    accepting.active.fetch_add(1, Ordering::AcqRel);
                    let shared = Arc::clone(&accepting);
                    spawn(async move {
                        connection(&shared, stream).await;
                        shared.active.fetch_sub(1, Ordering::AcqRel);
                        shared.gone.notify_waiters();
                    });
                }
                _ = stop.changed() => break,
            }
        }
    });
    Ok(NativeServer {
        shared,
        port: u32::from(bound),
    })
}

/// Serves one connection until it ends, a deadline passes, or the server closes.
async fn connection(shared: &Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let clock = Arc::new(ConnClock {
        epoch: Instant::now(),
        last_io: AtomicU64::new(0),
        phase: AtomicU8::new(IDLE),
        since: AtomicU64::new(0),
        served: AtomicBool::new(false),
        kill: Notify::new(),
    });
    let io = TokioIo::new(Timed {
        io: stream,
        clock: Arc::clone(&clock),
    });
    let svc = {
        let shared = Arc::clone(shared);
        let clock = Arc::clone(&clock);
        service_fn(move |req| {
            let shared = Arc::clone(&shared);
            let clock = Arc::clone(&clock);
            async move { Ok::<_, std::convert::Infallible>(answer(&shared, &clock, req).await) }
        })
    };
    // A head past MAX_HEAD_BYTES is answered 431 by `answer` (with the error envelope); one past
    // hyper's buffer, by hyper itself (431, no body). A client may half-close after its request
    // and still read the answer, as on node:http.
    let conn = http1::Builder::new()
        .keep_alive(true)
        .half_close(true)
        .max_buf_size(64 * 1024)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let mut stop = shared.shutdown.subscribe();
    let mut killed = shared.kill_all.subscribe();
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let at = clock.at(clock.deadline(&shared.limits));
        tokio::select! {
            _ = conn.as_mut() => return,
            () = clock.kill.notified() => return,
            _ = killed.changed() => return,
            () = sleep_until(at) => {
                if clock.now() >= clock.deadline(&shared.limits) {
                    return; // dropped: the socket is closed
                }
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A reply of `status` with a JSON error envelope and `Connection: close`, for what node:http's
/// `clientError` handler answered in lib/server.js (408, 431): no core error stands for these.
fn envelope(status: StatusCode, message: &str, code: &str) -> Response<Full<Bytes>> {
    // In the order of every other envelope (SPEC §5): success, message, error.
    let text = |v: &str| serde_json::to_string(v).unwrap_or_default();
    let body = format!(
        r#"{{"success":false,"message":{},"error":{{"code":{}}}}}"#,
        text(message),
        text(code)
    );
    closing(status, body)
}

/// The core's `INTERNAL_ERROR` answer (the service gave none), closing the connection.
fn internal_error() -> Response<Full<Bytes>> {
    let reply = otpkit_core::http::envelope::error(&host_error("INTERNAL_ERROR"));
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    closing(status, reply.body)
}

/// A JSON `body` of `status` with `Connection: close`.
fn closing(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    res
}

/// A waker for a poll that does not wait.
struct NoWake;
impl std::task::Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

/// The bytes of `body` that are already here (up to `max` + 1), without waiting; `true` when its
/// end was seen too.
fn ready_part(body: &mut Incoming, max: usize) -> (Vec<u8>, bool, bool) {
    let mut got = Vec::new();
    if body.is_end_stream() {
        return (got, true, false);
    }
    let waker = Waker::from(Arc::new(NoWake));
    let mut cx = Context::from_waker(&waker);
    loop {
        if got.len() > max {
            return (got, false, false);
        }
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            Poll::Ready(Some(Err(_))) => return (got, false, true),
            Poll::Ready(None) => return (got, true, false),
            Poll::Pending => return (got, body.is_end_stream(), false),
        }
    }
}

async fn answer(
    shared: &Arc<Shared>,
    clock: &Arc<ConnClock>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let limits = shared.limits;
    // The request began with its head's first byte (a pipelined one: now).
    let started = if clock.phase.load(Ordering::Acquire) == HEAD {
        clock.since.load(Ordering::Acquire)
    } else {
        clock.now()
    };
    clock.set(BUSY);
    let (parts, mut incoming) = req.into_parts();
    let head_bytes = parts.method.as_str().len()
        + parts.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head_bytes > MAX_HEAD_BYTES {
        clock.answered();
        return envelope(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request headers are too large",
            "VALIDATION_ERROR",
        );
    }
    let mut headers: HashMap<String, String> = HashMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let (ready, ended, aborted) = ready_part(&mut incoming, limits.max_body_bytes as usize);
    let method = parts.method.as_str();
    let url = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = parts.uri.path();
    // The OTP routes are answered in Rust when the service can (`OtpService.flowService()`).
    let fast = shared
        .service
        .as_ref()
        .filter(|_| FlowService::handles(method, path))
        .map(FlowService::share);
    let state = Arc::new(BodyState {
        incoming: tokio::sync::Mutex::new((!ended && !aborted).then_some(incoming)),
        read: Mutex::new(Vec::new()),
        done: AtomicBool::new(ended),
        cancelled: AtomicBool::new(false),
        cancel: Notify::new(),
    });
    let (mut whole, body, stream) = if ended {
        if fast.is_some() {
            (Some(ready), None, None)
        } else {
            (None, Some(Buffer::from(ready)), None)
        }
    } else {
        if let Ok(mut r) = state.read.lock() {
            *r = ready;
        }
        let stream = RequestBody {
            state: Arc::clone(&state),
        };
        (None, None, Some(stream))
    };
    let body_state = Arc::clone(&state);
    let reply = async {
        if let Some(service) = fast {
            let read = |max: usize| {
                let (whole, state) = (whole.take(), Arc::clone(&body_state));
                async move {
                    match whole {
                        Some(b) if b.len() > max => Err(BodyError::TooLarge),
                        Some(b) => Ok(b),
                        None => state.read_all(max).await.map_err(|code| match code {
                            "PAYLOAD_TOO_LARGE" => BodyError::TooLarge,
                            _ => BodyError::Aborted,
                        }),
                    }
                }
            };
            let begun = Instant::now();
            let told = shared.on_served.as_ref().map(Arc::clone);
            let later = told.as_ref().map(Arc::clone);
            let after = move |r: RunReports| {
                if let Some(f) = later {
                    f.call(
                        ServedEvent::after(r),
                        ThreadsafeFunctionCallMode::NonBlocking,
                    );
                }
            };
            let served = service.answer(method, path, &headers, read, after).await;
            let answer = answer_of(&served.reply);
            if let Some(f) = told {
                let latency_ms = begun.elapsed().as_secs_f64() * 1000.0;
                let event = ServedEvent::of(method, latency_ms, served);
                f.call(event, ThreadsafeFunctionCallMode::NonBlocking);
            }
            return Some(answer);
        }
        let (tx, rx) = oneshot::channel();
        let id = match shared.pending.lock() {
            Ok(mut p) => {
                p.next = p.next.wrapping_add(1);
                let id = p.next;
                p.waiting.insert(id, tx);
                id
            }
            Err(_) => return None,
        };
        let _waiting = Waiting {
            pending: &shared.pending,
            id,
        };
        let request = ServedRequest {
            id,
            method: method.to_string(),
            url: url.to_string(),
            headers: std::mem::take(&mut headers),
            body,
            stream,
        };
        let handler = shared.handler.lock().ok().and_then(|h| h.clone());
        let handler = handler?; // closed
        if handler.call(request, ThreadsafeFunctionCallMode::NonBlocking) != Status::Ok {
            return None;
        }
        rx.await.ok()
    };
    tokio::pin!(reply);
    let request_deadline = clock.at(started + u64::from(limits.request_timeout_ms));
    let reply = tokio::select! {
        r = reply.as_mut() => r,
        () = sleep_until(request_deadline), if !state.done.load(Ordering::Acquire) => {
            if state.done.load(Ordering::Acquire) {
                reply.as_mut().await // the body came in time; the answer is the service's
            } else {
                // The body did not arrive in time: 408, and the connection goes (a read of
                // the service gives up, the body is dropped, and a backstop closes the socket).
                state.cancelled.store(true, Ordering::Release);
                state.cancel.notify_waiters();
                clock.served.store(true, Ordering::Release);
                let (state, clock) = (Arc::clone(&state), Arc::clone(clock));
                spawn(async move {
                    state.incoming.lock().await.take();
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    clock.kill.notify_one();
                });
                return envelope(StatusCode::REQUEST_TIMEOUT, "Request not received in time", "VALIDATION_ERROR");
            }
        }
    };
    let Some(reply) = reply else {
        clock.answered();
        return internal_error();
    };
    let mut res = Response::new(Full::new(reply.body));
    // hyper sends no body for HEAD (its Content-Length is the service's).
    *res.status_mut() = StatusCode::from_u16(u16::try_from(reply.status).unwrap_or(500))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            res.headers_mut().insert(n, v);
        }
    }
    if !state.done.load(Ordering::Acquire) {
        // Answered before the whole body arrived: say so, read and discard the rest for a
        // while (so the client reads the answer rather than a reset), then close.
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        let clock = Arc::clone(clock);
        let drain_ms = u64::from(limits.drain_timeout_ms);
        state.cancelled.store(true, Ordering::Release);
        state.cancel.notify_waiters();
        spawn(async move {
            let ended = tokio::time::timeout(Duration::from_millis(drain_ms), async {
                let mut guard = state.incoming.lock().await;
                let Some(incoming) = guard.as_mut() else {
                    return false;
                };
                let mut size = 0usize;
                while let Some(frame) = incoming.frame().await {
                    match frame {
                        Ok(f) => {
                            size += f.data_ref().map_or(0, Bytes::len);
                            if size > DRAIN_MAX_BYTES {
                                return false;
                            }
                        }
                        Err(_) => return false,
                    }
                }
                true
            })
            .await;
            if !matches!(ended, Ok(true)) {
                clock.kill.notify_one();
            }
        });
    }
    clock.answered();
    res
}
