//! Delivery through the SMS/WhatsApp gateway with fetch (SPEC §5). otpkit-core encodes the
//! request and says what the answer means ([`otpkit_core::gateway`]); this module only performs
//! the fetch, aborted after [`TIMEOUT_MS`].
//!
//! A redirect is never followed (`redirect: "manual"`): the request carries the number and the
//! code, so a 3xx is a definite failure like any other non-2xx, not a reason to re-POST them to
//! wherever `Location` points (or to GET it and call that delivered). The status alone decides;
//! a 2xx reply's body (at most [`MAX_REPLY_BYTES`]) is read only for the provider's message id
//! ([`message_id_of`], SPEC §8), every other body is cancelled unread.

use futures_util::future::{select, Either};
use otpkit_core::gateway::GatewayKind;
use otpkit_core::gateway::{
    classify_status, message_id_of, Gateways, HttpRequest, OutgoingMessage, MAX_REPLY_BYTES,
    TIMEOUT_MS,
};
use otpkit_core::guard::DeliveryOutcome;
use otpkit_core::log::{DeliveryFailure, FailureCause, Level};
use otpkit_core::UnixMillis;
use std::time::Duration;
use worker::wasm_bindgen::JsValue;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{
    AbortController, Date, Delay, Fetch, Headers, Method, Request, RequestInit, RequestRedirect,
    Response, ResponseBody,
};

/// Sends one message: 2xx → delivered; non-2xx (3xx included: not followed) or refused →
/// failed; no answer in 10 s → timed out (the fetch is aborted). No gateway URL configured
/// counts as a definite failure.
/// A failure is logged with its cause at `level` ([`otpkit_core::log::DeliveryFailure`]).
/// Answers the outcome and the provider's message id of an accepted message, if its reply named
/// one.
pub async fn deliver(
    env: &worker::Env,
    gateways: &Gateways,
    workspace_id: &str,
    m: &OutgoingMessage,
    level: Level,
) -> (DeliveryOutcome, Option<String>) {
    let started = Date::now().as_millis();
    let (kind, req) = gateways.encode(workspace_id, m);
    let (outcome, cause, message_id) = attempt(kind, req).await;
    let outcome_name = match outcome {
        DeliveryOutcome::Delivered => "delivered",
        DeliveryOutcome::Failed => "failed",
        DeliveryOutcome::TimedOut => "timedOut",
    };
    let country =
        otpkit_core::validate::calling_code(m.to.trim_start_matches('+')).unwrap_or("unknown");
    #[allow(clippy::cast_precision_loss)] // a latency in ms
    let latency = Date::now().as_millis().saturating_sub(started) as f64;
    crate::config::metric(
        env,
        "send",
        &[m.channel.as_str(), country, outcome_name],
        &[latency, 1.0],
    );
    if let Some(cause) = cause {
        let failure = DeliveryFailure {
            time: UnixMillis(Date::now().as_millis()),
            gateway: kind.as_str(),
            channel: m.channel,
            dest: &m.to,
            session_id: &m.reference,
            cause,
            latency_ms: Date::now().as_millis().saturating_sub(started),
        };
        if let Some(line) = failure.line(level) {
            worker::console_warn!("{line}");
        }
    }
    (outcome, message_id)
}

async fn attempt(
    kind: GatewayKind,
    req: Option<HttpRequest>,
) -> (DeliveryOutcome, Option<FailureCause>, Option<String>) {
    let unreachable = (
        DeliveryOutcome::Failed,
        Some(FailureCause::Unreachable),
        None,
    );
    let Some(req) = req else {
        return unreachable;
    };
    let Ok(req) = request(&req) else {
        return unreachable;
    };
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(req);
    let sending = fetch.send_with_signal(&signal);
    futures_util::pin_mut!(sending);
    match select(sending, Delay::from(Duration::from_millis(TIMEOUT_MS))).await {
        Either::Left((Ok(mut resp), _)) => {
            let status = resp.status_code();
            let outcome = classify_status(status);
            if outcome != DeliveryOutcome::Delivered {
                discard(&resp).await;
                return (outcome, Some(FailureCause::Status(status)), None);
            }
            (outcome, None, message_id(kind, &mut resp).await)
        }
        Either::Left((Err(_), _)) => unreachable,
        Either::Right(_) => {
            controller.abort();
            (DeliveryOutcome::TimedOut, Some(FailureCause::Timeout), None)
        }
    }
}

/// The message id in an accepted reply: its body is read up to [`MAX_REPLY_BYTES`] (a longer
/// one, by its `content-length` or as it streams, is let go unread); the delivery stands either
/// way.
async fn message_id(kind: GatewayKind, resp: &mut Response) -> Option<String> {
    use futures_util::StreamExt;
    let declared = resp
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_REPLY_BYTES) {
        discard(resp).await;
        return None;
    }
    let mut stream = resp.stream().ok()?;
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        if body.len().saturating_add(chunk.len()) > MAX_REPLY_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    message_id_of(kind, &body)
}

/// Cancels the reply body unread (however large it is), so the connection is let go now rather
/// than when the response is collected.
async fn discard(resp: &Response) {
    if let ResponseBody::Stream(body) = resp.body() {
        if !body.locked() {
            let _ = JsFuture::from(body.cancel()).await;
        }
    }
}

/// The core's request as a fetch `Request` that does not follow redirects.
fn request(r: &HttpRequest) -> worker::Result<Request> {
    let headers = Headers::new();
    for (name, value) in &r.headers {
        headers.set(name, value)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::from(r.method.to_string()))
        .with_headers(headers)
        .with_body(Some(JsValue::from_str(&r.body)))
        .with_redirect(RequestRedirect::Manual);
    Request::new_with_init(&r.url, &init)
}
