//! The gateway's HTTP request, sent from Rust: the core encodes it (`otpkit_core::gateway`),
//! reqwest sends it on napi's tokio runtime, and the core reads the provider's message id from an
//! accepted reply. `lib/gateway.js` makes one native call per message (no `fetch`, no body
//! streaming through JavaScript).
//!
//! The rules are the ones `lib/gateway.js` had with `fetch`, and the Worker's:
//! - a redirect is never followed (the request carries the number and the code): a 3xx is a
//!   definite failure like any other non-2xx;
//! - the whole exchange (connect, request, reply body) has `timeout_ms`, by default the core's `TIMEOUT_MS` (10 s); no
//!   answer in time is `timedOut` (unknown: charged), while a status already read decides even if
//!   the body then stalls;
//! - of the reply body at most [`MAX_REPLY_BYTES`] are read: a short one is drained so that the
//!   connection is reused, a longer one is dropped there (the connection is closed);
//! - no proxy from the environment (Node's `fetch` reads none either).
//!
//! TLS: rustls with the ring provider, trusting Mozilla's roots (what Node bundles) and the PEM
//! certificates in `NODE_EXTRA_CA_CERTS` (as Node does, read once when the first message goes).

use crate::errors::throw;
use crate::gateway::encode_request;
use napi::bindgen_prelude::Promise;
use napi::threadsafe_function::ThreadsafeFunction;
use napi::Result;
use napi_derive::napi;
use otpkit_core::gateway::{
    message_id_of, GatewayConfig, GatewayKind, Gateways, HttpRequest, OutgoingMessage,
    MAX_REPLY_BYTES, TIMEOUT_MS,
};
use otpkit_core::Channel;
use otpkit_core::Error;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Idle keep-alive connections to a gateway are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// How one message went: `outcome` is `delivered` (2xx), `failed` (definite: refunded) or
/// `timedOut` (unknown: charged); `status` is the gateway's answer when there was one;
/// `messageId` the provider's id from an accepted reply, when it told one.
#[napi(object)]
#[derive(Debug)]
pub struct Sent {
    pub outcome: String,
    pub status: Option<u32>,
    pub message_id: Option<String>,
}

impl Sent {
    fn failed(status: Option<u32>) -> Self {
        Sent {
            outcome: "failed".into(),
            status,
            message_id: None,
        }
    }
}

/// The process's client, built once; `Err` holds why it could not be (bad extra certificates).
static CLIENT: OnceLock<std::result::Result<reqwest::Client, String>> = OnceLock::new();

/// The roots: Mozilla's, plus every certificate in the PEM file `extra` names.
fn roots(extra: Option<&str>) -> std::result::Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    if let Some(path) = extra.filter(|p| !p.is_empty()) {
        let pem = std::fs::read(path)
            .map_err(|e| format!("NODE_EXTRA_CA_CERTS ({path}) cannot be read: {e}"))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("NODE_EXTRA_CA_CERTS ({path}) is not PEM certificates: {e}"))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "NODE_EXTRA_CA_CERTS ({path}) holds no usable certificate"
            ));
        }
    }
    Ok(roots)
}

fn build_client() -> std::result::Result<reqwest::Client, String> {
    let extra = std::env::var("NODE_EXTRA_CA_CERTS").ok();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots(extra.as_deref())?)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(POOL_IDLE)
        .build()
        .map_err(|e| format!("the gateway's HTTP client cannot start: {e}"))
}

fn client() -> Result<&'static reqwest::Client> {
    CLIENT
        .get_or_init(build_client)
        .as_ref()
        .map_err(|message| {
            throw(&Error::Misconfigured {
                message: message.clone().into(),
            })
        })
}

/// Starts the process's gateway client now (the built-in gateways' constructors call this), so
/// that unusable `NODE_EXTRA_CA_CERTS` is a `MISCONFIGURED` error when the gateway is made, not a
/// failed delivery later.
#[napi]
pub fn check_gateway_client() -> Result<()> {
    client().map(|_| ())
}

/// Reads a reply body up to [`MAX_REPLY_BYTES`]; answers its bytes when `keep` and it fit. A
/// longer body is dropped there (closing the connection); a read error ends it (the status has
/// decided already).
async fn drain(res: &mut reqwest::Response, keep: bool) -> Option<Vec<u8>> {
    let mut kept = Vec::new();
    let mut read = 0usize;
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > MAX_REPLY_BYTES {
                    return None;
                }
                if keep {
                    kept.extend_from_slice(&chunk);
                }
            }
            Ok(None) => return keep.then_some(kept),
            Err(_) => return None,
        }
    }
}

/// Sends one encoded request to a gateway of `kind` within `timeout` and answers how it went
/// (see the module's rules).
pub(crate) async fn send_request(
    kind: GatewayKind,
    request: HttpRequest,
    timeout: Duration,
) -> Result<Sent> {
    let client = client()?;
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut builder = client
        .request(method, request.url.as_str())
        .timeout(timeout)
        .body(request.body);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let mut res = match builder.send().await {
        Ok(res) => res,
        Err(e) if e.is_timeout() => {
            return Ok(Sent {
                outcome: "timedOut".into(),
                status: None,
                message_id: None,
            })
        }
        // Not reachable, refused, reset, a URL or header that cannot be sent: definite.
        Err(_) => return Ok(Sent::failed(None)),
    };
    let status = res.status().as_u16();
    if !res.status().is_success() {
        drain(&mut res, false).await;
        return Ok(Sent::failed(Some(u32::from(status))));
    }
    let body = drain(&mut res, true).await;
    Ok(Sent {
        outcome: "delivered".into(),
        status: Some(u32::from(status)),
        message_id: body.and_then(|b| message_id_of(kind, &b)),
    })
}

/// Sends one message (`message_json`: the flow's `deliver` message as the core wrote it) of
/// workspace `workspace_id` through the gateway `kind_name` (`json`, `twilio` or `meta`) at
/// `url`, as [`crate::gateway::encode_gateway_message`] encodes it, and answers how it went.
/// Nothing to send (no `url`; `meta` without a template) is `failed` with no status. Rejects
/// with `MISCONFIGURED` for an unknown kind or unusable `NODE_EXTRA_CA_CERTS`, and
/// `VALIDATION_ERROR` for a message that is not the core's.
#[napi]
#[allow(clippy::too_many_arguments)]
pub async fn send_gateway_message(
    kind_name: Option<String>,
    url: Option<String>,
    token: Option<String>,
    account: Option<String>,
    message_json: String,
    workspace_id: String,
    public_base_url: Option<String>,
    timeout_ms: Option<u32>,
) -> Result<Sent> {
    let kind = GatewayKind::parse_whatsapp(kind_name.as_deref()).map_err(|e| throw(&e))?;
    let request = encode_request(
        kind,
        url,
        token,
        account,
        &message_json,
        &workspace_id,
        public_base_url,
    )?;
    let Some(request) = request else {
        return Ok(Sent::failed(None));
    };
    let timeout = Duration::from_millis(timeout_ms.map_or(TIMEOUT_MS, u64::from));
    send_request(kind, request, timeout).await
}

/// One built-in gateway's settings, as `lib/gateway.js`'s `HttpGateway` holds them.
#[napi(object, object_to_js = false)]
#[allow(missing_debug_implementations)] // holds the token
pub struct GatewaySettings {
    /// `json`, `twilio` or `meta`.
    pub kind: String,
    pub url: Option<String>,
    pub token: Option<String>,
    pub account: Option<String>,
    /// A Twilio send asks for status callbacks here (SPEC §8).
    pub public_base_url: Option<String>,
    /// The whole exchange's deadline (default: the core's 10 s).
    pub timeout_ms: Option<u32>,
}

/// One channel's gateway, ready to send.
struct Route {
    gateways: Gateways,
    timeout: Duration,
}

impl Route {
    fn new(s: GatewaySettings) -> Result<Self> {
        let kind = GatewayKind::parse_whatsapp(Some(&s.kind)).map_err(|e| throw(&e))?;
        Ok(Route {
            gateways: Gateways {
                sms: GatewayConfig {
                    kind,
                    url: s.url,
                    token: s.token,
                    account: s.account,
                },
                whatsapp: None,
                public_base_url: s.public_base_url,
            },
            timeout: Duration::from_millis(s.timeout_ms.map_or(TIMEOUT_MS, u64::from)),
        })
    }
}

/// The built-in gateways of a service (SMS, and WhatsApp when it has its own), for the flows
/// the Redis store runs in Rust: their `deliver` steps are sent here without a crossing into
/// JavaScript. A gateway written in JavaScript (a function, a provider's SDK) is not one of
/// these: its sends go through the driver.
#[napi]
pub struct NativeGateway {
    routes: Arc<(Route, Option<Route>)>,
}

impl std::fmt::Debug for NativeGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeGateway").finish_non_exhaustive() // tokens inside
    }
}

/// How one message went, for the host's metrics and log line (never its text).
#[derive(Debug)]
pub(crate) struct Delivered {
    pub sent: Sent,
    /// The gateway's kind (`json`, `twilio`, `meta`; a JavaScript gateway's own, or `custom`).
    pub kind: String,
    /// How long the exchange took.
    pub seconds: f64,
}

#[napi]
impl NativeGateway {
    /// `sms`: the SMS gateway (WhatsApp too when `whatsapp` is absent). Throws `MISCONFIGURED`
    /// for an unknown kind or unusable `NODE_EXTRA_CA_CERTS`.
    #[napi(constructor)]
    pub fn new(sms: GatewaySettings, whatsapp: Option<GatewaySettings>) -> Result<Self> {
        client()?;
        let sms = Route::new(sms)?;
        let whatsapp = whatsapp.map(Route::new).transpose()?;
        Ok(NativeGateway {
            routes: Arc::new((sms, whatsapp)),
        })
    }
}

impl NativeGateway {
    /// A handle for a task on the runtime.
    pub(crate) fn share(&self) -> NativeGateway {
        NativeGateway {
            routes: Arc::clone(&self.routes),
        }
    }

    /// Sends `message` of workspace `workspace_id` through its channel's gateway.
    pub(crate) async fn deliver(&self, workspace_id: &str, message: &OutgoingMessage) -> Delivered {
        let (sms, whatsapp) = &*self.routes;
        let route = match (message.channel, whatsapp) {
            (Channel::Whatsapp, Some(w)) => w,
            _ => sms,
        };
        let started = std::time::Instant::now();
        let (kind, request) = route.gateways.encode(workspace_id, message);
        let sent = match request {
            // Nothing to send (no url; meta without a template): a definite failure.
            None => Sent::failed(None),
            Some(request) => send_request(kind, request, route.timeout)
                .await
                .unwrap_or_else(|_| Sent::failed(None)),
        };
        Delivered {
            sent,
            kind: kind.as_str().to_string(),
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// How a gateway written in JavaScript answered a message ([`JsGatewayFn`]).
#[napi(object)]
#[derive(Debug)]
pub struct GatewayAnswer {
    /// `delivered`, `failed` or `timedOut`.
    pub outcome: String,
    /// The provider's id of an accepted message, when it told one.
    pub message_id: Option<String>,
    /// The provider's HTTP status of a refusal, when there was one.
    pub status: Option<u32>,
    /// The gateway's kind, for the log line (`custom` for a function).
    pub kind: String,
}

/// What a gateway written in JavaScript is called with ([`JsGatewayFn`]).
#[napi(object, object_from_js = false)]
#[derive(Debug)]
pub struct GatewayCall {
    /// The message (`otpkit_core::gateway::OutgoingMessage`) as JSON: never logged.
    pub message: String,
    pub workspace_id: String,
}

/// A gateway written in JavaScript, called from a flow run in Rust: `({message, workspaceId}) =>
/// Promise<GatewayAnswer>`. Weak: it does not keep Node's event loop alive.
pub(crate) type JsGatewayFn =
    ThreadsafeFunction<GatewayCall, Promise<GatewayAnswer>, GatewayCall, napi::Status, false, true>;

/// Where a flow run in Rust sends its messages: a built-in gateway (from here), or one written
/// in JavaScript (called on the JavaScript thread, awaited here).
pub(crate) enum Gateway {
    Native(NativeGateway),
    Js(Arc<JsGatewayFn>),
}

impl Gateway {
    /// A handle for a task on the runtime.
    pub(crate) fn share(&self) -> Gateway {
        match self {
            Gateway::Native(g) => Gateway::Native(g.share()),
            Gateway::Js(f) => Gateway::Js(Arc::clone(f)),
        }
    }

    /// Sends `message` of workspace `workspace_id`.
    pub(crate) async fn deliver(&self, workspace_id: &str, message: &OutgoingMessage) -> Delivered {
        let f = match self {
            Gateway::Native(g) => return g.deliver(workspace_id, message).await,
            Gateway::Js(f) => f,
        };
        let started = std::time::Instant::now();
        let call = GatewayCall::of(workspace_id, message);
        let answer = match f.call_async(call).await {
            Ok(promise) => promise.await.ok(),
            Err(_) => None,
        };
        Delivered::of_js(answer, started)
    }
}

impl GatewayCall {
    /// The call of a gateway written in JavaScript for `message`.
    pub(crate) fn of(workspace_id: &str, message: &OutgoingMessage) -> Self {
        GatewayCall {
            message: serde_json::to_string(message).unwrap_or_default(),
            workspace_id: workspace_id.to_string(),
        }
    }
}

impl Delivered {
    /// How a gateway written in JavaScript answered (`None`: it threw, or could not be
    /// called), called at `started`.
    pub(crate) fn of_js(answer: Option<GatewayAnswer>, started: std::time::Instant) -> Self {
        let (sent, kind) = match answer {
            Some(a) => (
                Sent {
                    outcome: match a.outcome.as_str() {
                        "delivered" | "timedOut" => a.outcome,
                        _ => "failed".into(),
                    },
                    status: a.status,
                    message_id: a.message_id,
                },
                a.kind,
            ),
            // It threw or could not be called: a definite failure.
            None => (Sent::failed(None), "custom".into()),
        };
        Delivered {
            sent,
            kind,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}
