//! Delivery through the SMS/WhatsApp gateway with fetch (SPEC §5), bounded by 10 s.

use crate::config::{Gateway, GatewayKind};
use crate::proto::Delivery;
use futures_util::future::{select, Either};
use otpkit_core::Channel;
use std::time::Duration;
use worker::wasm_bindgen::JsValue;
use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit};

/// How long the gateway has to answer.
pub const TIMEOUT_MS: u64 = 10_000;

/// One message to deliver. `text` contains the code: it goes into the request body and nowhere else.
pub struct Message<'a> {
    pub to: &'a str,
    pub from: &'a str,
    pub text: &'a str,
    pub channel: Channel,
    pub reference: &'a str,
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&url_escape(k));
        out.push('=');
        out.push_str(&url_escape(v));
    }
    out
}

fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn build(gw: &Gateway, url: &str, m: &Message<'_>) -> worker::Result<Request> {
    let headers = Headers::new();
    let body = match gw.kind {
        GatewayKind::Json => {
            headers.set("content-type", "application/json")?;
            if let Some(token) = &gw.token {
                headers.set("authorization", &format!("Bearer {token}"))?;
            }
            serde_json::json!({
                "to": m.to, "from": m.from, "text": m.text, "channel": m.channel.as_str(), "reference": m.reference,
            })
            .to_string()
        }
        GatewayKind::Twilio => {
            headers.set("content-type", "application/x-www-form-urlencoded")?;
            let user = gw.account.clone().unwrap_or_default();
            let pass = gw.token.clone().unwrap_or_default();
            headers.set(
                "authorization",
                &format!("Basic {}", base64(format!("{user}:{pass}").as_bytes())),
            )?;
            let (to, from) = match m.channel {
                Channel::Whatsapp => (format!("whatsapp:{}", m.to), format!("whatsapp:{}", m.from)),
                Channel::Sms => (m.to.to_string(), m.from.to_string()),
            };
            form_encode(&[("To", &to), ("From", &from), ("Body", m.text)])
        }
    };
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(JsValue::from_str(&body)));
    Request::new_with_init(url, &init)
}

/// Sends one message: 2xx → delivered; non-2xx or refused → failed; no answer in 10 s → timed
/// out (the fetch is aborted). No gateway configured counts as a definite failure.
pub async fn send(gw: &Gateway, m: &Message<'_>) -> Delivery {
    let Some(url) = gw.url.as_deref() else {
        return Delivery::Failed;
    };
    let Ok(req) = build(gw, url, m) else {
        return Delivery::Failed;
    };
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(req);
    let sending = fetch.send_with_signal(&signal);
    futures_util::pin_mut!(sending);
    match select(sending, Delay::from(Duration::from_millis(TIMEOUT_MS))).await {
        Either::Left((Ok(resp), _)) if (200..300).contains(&resp.status_code()) => {
            Delivery::Delivered
        }
        Either::Left(_) => Delivery::Failed,
        Either::Right(_) => {
            controller.abort();
            Delivery::TimedOut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(base64(b"AC123:tok"), "QUMxMjM6dG9r");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(
            form_encode(&[("To", "whatsapp:+1 2"), ("Body", "a&b=c")]),
            "To=whatsapp%3A%2B1+2&Body=a%26b%3Dc"
        );
    }
}
