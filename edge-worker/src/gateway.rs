//! Delivery through the SMS/WhatsApp gateway with fetch (SPEC §5). otpkit-core encodes the
//! request and says what the answer means ([`otpkit_core::gateway`]); this module only performs
//! the fetch, aborted after [`TIMEOUT_MS`].

use futures_util::future::{select, Either};
use otpkit_core::gateway::{
    classify_status, encode, GatewayConfig, HttpRequest, OutgoingMessage, TIMEOUT_MS,
};
use otpkit_core::guard::DeliveryOutcome;
use std::time::Duration;
use worker::wasm_bindgen::JsValue;
use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit};

/// Sends one message: 2xx → delivered; non-2xx or refused → failed; no answer in 10 s → timed
/// out (the fetch is aborted). No gateway URL configured counts as a definite failure.
pub async fn deliver(gw: &GatewayConfig, m: &OutgoingMessage) -> DeliveryOutcome {
    let Some(req) = encode(gw, m) else {
        return DeliveryOutcome::Failed;
    };
    let Ok(req) = request(&req) else {
        return DeliveryOutcome::Failed;
    };
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(req);
    let sending = fetch.send_with_signal(&signal);
    futures_util::pin_mut!(sending);
    match select(sending, Delay::from(Duration::from_millis(TIMEOUT_MS))).await {
        Either::Left((Ok(resp), _)) => classify_status(resp.status_code()),
        Either::Left((Err(_), _)) => DeliveryOutcome::Failed,
        Either::Right(_) => {
            controller.abort();
            DeliveryOutcome::TimedOut
        }
    }
}

/// The core's request as a fetch `Request`.
fn request(r: &HttpRequest) -> worker::Result<Request> {
    let headers = Headers::new();
    for (name, value) in &r.headers {
        headers.set(name, value)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::from(r.method.to_string()))
        .with_headers(headers)
        .with_body(Some(JsValue::from_str(&r.body)));
    Request::new_with_init(&r.url, &init)
}
