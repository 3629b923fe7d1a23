//! The SMS / WhatsApp gateway (SPEC §5) as values: the host's configuration, the message to
//! deliver, the HTTP request that carries it, and what the gateway's answer means.
//!
//! The core encodes; the host only sends. A host:
//! 1. reads its configuration into a [`GatewayConfig`] ([`GatewayKind::parse`] refuses an
//!    unknown `SMS_GATEWAY_KIND`);
//! 2. calls [`encode`] for each [`OutgoingMessage`]. `None` (no `SMS_GATEWAY_URL`) is a
//!    definite failure: [`DeliveryOutcome::Failed`], nothing is sent;
//! 3. performs the [`HttpRequest`] as is, aborting it after [`TIMEOUT_MS`]. It never follows
//!    a redirect (the request carries the number and the code: a 3xx is the answer), and it
//!    reads at most [`MAX_REPLY_BYTES`] of the reply body, or none: only the status counts;
//! 4. turns what happened into a [`DeliveryOutcome`]:
//!    - an HTTP answer: [`classify_status`] (2xx → `Delivered`, anything else → `Failed`);
//!    - no answer because the connection was refused or reset (a transport error): `Failed`;
//!    - no answer within [`TIMEOUT_MS`] (the request was aborted): `TimedOut`.

use crate::code::base64;
use crate::error::Error;
use crate::guard::DeliveryOutcome;
use crate::validate::Channel;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// How long the gateway has to answer before the host aborts the request (→ `TimedOut`).
pub const TIMEOUT_MS: u64 = 10_000;

/// The most of a gateway's reply body a host reads (64 KiB) before it cancels the rest; the
/// outcome depends on the status only.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Which wire format the gateway speaks (`SMS_GATEWAY_KIND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GatewayKind {
    /// SPEC §5 JSON: `{"to","from","text","channel","reference"}` with a Bearer token (default).
    #[default]
    Json,
    /// The Twilio Messages API: form-encoded `To`, `From`, `Body`, basic auth.
    Twilio,
}

impl GatewayKind {
    /// Parses `SMS_GATEWAY_KIND`: absent or empty → `Json`; `json` or `twilio` in any case;
    /// anything else is `MISCONFIGURED`.
    ///
    /// # Errors
    /// [`Error::Misconfigured`] for an unknown kind.
    pub fn parse(s: Option<&str>) -> Result<GatewayKind, Error> {
        match s {
            None | Some("") => Ok(GatewayKind::Json),
            Some(k) if k.eq_ignore_ascii_case("json") => Ok(GatewayKind::Json),
            Some(k) if k.eq_ignore_ascii_case("twilio") => Ok(GatewayKind::Twilio),
            Some(_) => Err(Error::Misconfigured {
                message: "SMS_GATEWAY_KIND must be json or twilio".into(),
            }),
        }
    }

    /// The configuration name (`json`, `twilio`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayKind::Json => "json",
            GatewayKind::Twilio => "twilio",
        }
    }
}

/// The gateway settings (`SMS_GATEWAY_KIND`, `_URL`, `_TOKEN`, `_ACCOUNT`). `Debug` never shows
/// the token.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct GatewayConfig {
    /// The wire format.
    pub kind: GatewayKind,
    /// Where messages are POSTed; none configured means every send fails.
    pub url: Option<String>,
    /// Bearer token (json) or auth token (twilio). A secret.
    pub token: Option<String>,
    /// Twilio account SID (the basic-auth user).
    pub account: Option<String>,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("account", &self.account)
            .finish()
    }
}

/// One message to deliver. `text` contains the code: it goes into the request body and nowhere
/// else (`Debug` redacts it; serde carries it, for flow effects).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingMessage {
    /// The destination, E.164.
    pub to: String,
    /// The sender name or number.
    pub from: String,
    /// The rendered text, with the code in it. A secret.
    pub text: String,
    /// SMS or WhatsApp.
    pub channel: Channel,
    /// The session id.
    pub reference: String,
}

impl fmt::Debug for OutgoingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("to", &self.to)
            .field("from", &self.from)
            .field("text", &"<redacted>")
            .field("channel", &self.channel)
            .field("reference", &self.reference)
            .finish()
    }
}

/// An HTTP request for the host to perform as is. `Debug` shows neither header values (the
/// credentials) nor the body (the code).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Always `POST`.
    pub method: &'static str,
    /// The gateway URL.
    pub url: String,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: String,
}

impl HttpRequest {
    /// The value of header `name` (ASCII case-insensitive), if set.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &names)
            .field(
                "body",
                &format_args!("<{} bytes redacted>", self.body.len()),
            )
            .finish()
    }
}

/// The SPEC §5 JSON body, keys in this order.
#[derive(Serialize)]
struct JsonBody<'a> {
    to: &'a str,
    from: &'a str,
    text: &'a str,
    channel: Channel,
    reference: &'a str,
}

/// The request that delivers `m` through the configured gateway, or `None` when no URL is
/// configured (the host counts that as [`DeliveryOutcome::Failed`] without sending anything).
///
/// - `Json`: `content-type: application/json`, `authorization: Bearer <token>` when a token is
///   set, body `{"to","from","text","channel","reference"}`.
/// - `Twilio`: `content-type: application/x-www-form-urlencoded`,
///   `authorization: Basic base64(account:token)` (empty strings for what is not set), body
///   `To`, `From`, `Body`, with `whatsapp:` before `To` and `From` on the WhatsApp channel.
#[must_use]
pub fn encode(config: &GatewayConfig, m: &OutgoingMessage) -> Option<HttpRequest> {
    let url = config.url.as_deref().filter(|u| !u.is_empty())?;
    let mut headers = Vec::with_capacity(2);
    let body = match config.kind {
        GatewayKind::Json => {
            headers.push(header("content-type", "application/json"));
            if let Some(token) = config.token.as_deref() {
                headers.push(header("authorization", &format!("Bearer {token}")));
            }
            serde_json::to_string(&JsonBody {
                to: &m.to,
                from: &m.from,
                text: &m.text,
                channel: m.channel,
                reference: &m.reference,
            })
            .ok()?
        }
        GatewayKind::Twilio => {
            headers.push(header("content-type", "application/x-www-form-urlencoded"));
            let user = config.account.as_deref().unwrap_or_default();
            let pass = config.token.as_deref().unwrap_or_default();
            let credentials = base64(format!("{user}:{pass}").as_bytes());
            headers.push(header("authorization", &format!("Basic {credentials}")));
            let prefix = match m.channel {
                Channel::Whatsapp => "whatsapp:",
                Channel::Sms => "",
            };
            form_encode(&[
                ("To", &format!("{prefix}{}", m.to)),
                ("From", &format!("{prefix}{}", m.from)),
                ("Body", &m.text),
            ])
        }
    };
    Some(HttpRequest {
        method: "POST",
        url: url.into(),
        headers,
        body,
    })
}

/// What an HTTP answer from the gateway means: 2xx → `Delivered` (accepted), any other status
/// → `Failed` (a definite failure, refunded). That includes a 3xx: redirects are not followed. A transport error (refused, reset) is `Failed`
/// and no answer within [`TIMEOUT_MS`] is `TimedOut`; the host knows those without a status.
#[must_use]
pub fn classify_status(status: u16) -> DeliveryOutcome {
    if (200..300).contains(&status) {
        DeliveryOutcome::Delivered
    } else {
        DeliveryOutcome::Failed
    }
}

fn header(name: &str, value: &str) -> (String, String) {
    (name.into(), value.into())
}

/// `application/x-www-form-urlencoded`: `k=v` pairs joined by `&`.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        url_escape(k, &mut out);
        out.push('=');
        url_escape(v, &mut out);
    }
    out
}

/// Keeps `A-Za-z0-9-._~`, writes a space as `+` and every other UTF-8 byte as `%XX` (uppercase).
/// Decodes to the same values as `URLSearchParams` encoding (which also keeps `*`).
fn url_escape(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let hex = |n: u8| char::from(HEX.get(usize::from(n & 15)).copied().unwrap_or(b'0'));
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(hex(b >> 4));
                out.push(hex(b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn message(channel: Channel) -> OutgoingMessage {
        OutgoingMessage {
            to: "+233202007745".into(),
            from: "Acme".into(),
            text: "123456 is your code".into(),
            channel,
            reference: "5f0c2a9e-0000-4000-8000-000000000001".into(),
        }
    }

    fn config(kind: GatewayKind) -> GatewayConfig {
        GatewayConfig {
            kind,
            url: Some("https://gw.example/send".into()),
            token: Some("tok".into()),
            account: Some("AC123".into()),
        }
    }

    #[test]
    fn kind_parsing() {
        assert_eq!(GatewayKind::parse(None), Ok(GatewayKind::Json));
        assert_eq!(GatewayKind::parse(Some("")), Ok(GatewayKind::Json));
        assert_eq!(GatewayKind::parse(Some("json")), Ok(GatewayKind::Json));
        assert_eq!(GatewayKind::parse(Some("JSON")), Ok(GatewayKind::Json));
        assert_eq!(GatewayKind::parse(Some("Twilio")), Ok(GatewayKind::Twilio));
        let err = GatewayKind::parse(Some("smpp")).unwrap_err();
        assert_eq!(err.code(), "MISCONFIGURED");
        assert_eq!(err.http_status(), 500);
        assert_eq!(err.message(), "SMS_GATEWAY_KIND must be json or twilio");
        assert!(GatewayKind::parse(Some(" json")).is_err());
    }

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b"AC123:tok"), "QUMxMjM6dG9r");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff, 0xfe]), "+//+");
        assert_eq!(base64(b":"), "Og==");
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form_encode(&[("To", "whatsapp:+1 2"), ("Body", "a&b=c")]),
            "To=whatsapp%3A%2B1+2&Body=a%26b%3Dc"
        );
        assert_eq!(
            form_encode(&[("k", "A-z0.9_~*/%é")]),
            "k=A-z0.9_~%2A%2F%25%C3%A9"
        );
        assert_eq!(form_encode(&[]), "");
        assert_eq!(form_encode(&[("a", "")]), "a=");
    }

    #[test]
    fn json_request() {
        let r = encode(&config(GatewayKind::Json), &message(Channel::Sms)).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.url, "https://gw.example/send");
        assert_eq!(
            r.headers,
            [
                ("content-type".to_string(), "application/json".to_string()),
                ("authorization".to_string(), "Bearer tok".to_string()),
            ]
        );
        assert_eq!(
            r.body,
            r#"{"to":"+233202007745","from":"Acme","text":"123456 is your code","channel":"sms","reference":"5f0c2a9e-0000-4000-8000-000000000001"}"#
        );
        let wa = encode(&config(GatewayKind::Json), &message(Channel::Whatsapp)).unwrap();
        assert!(
            wa.body.contains(r#""to":"+233202007745""#),
            "no prefix in json"
        );
        assert!(wa.body.contains(r#""channel":"whatsapp""#));
    }

    #[test]
    fn json_without_token_and_escapes() {
        let mut c = config(GatewayKind::Json);
        c.token = None;
        let mut m = message(Channel::Sms);
        m.text = "a \"b\"\n\u{1}é".into();
        let r = encode(&c, &m).unwrap();
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        // What JSON.stringify would write for the same text.
        assert!(
            r.body.contains(r#""text":"a \"b\"\n\u0001é""#),
            "{}",
            r.body
        );
    }

    #[test]
    fn twilio_request() {
        let r = encode(&config(GatewayKind::Twilio), &message(Channel::Whatsapp)).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.headers,
            [
                (
                    "content-type".to_string(),
                    "application/x-www-form-urlencoded".to_string()
                ),
                (
                    "authorization".to_string(),
                    "Basic QUMxMjM6dG9r".to_string()
                ),
            ]
        );
        assert_eq!(
            r.body,
            "To=whatsapp%3A%2B233202007745&From=whatsapp%3AAcme&Body=123456+is+your+code"
        );
        let sms = encode(&config(GatewayKind::Twilio), &message(Channel::Sms)).unwrap();
        assert_eq!(
            sms.body,
            "To=%2B233202007745&From=Acme&Body=123456+is+your+code"
        );
    }

    #[test]
    fn twilio_without_credentials() {
        let mut c = config(GatewayKind::Twilio);
        c.account = None;
        c.token = None;
        let r = encode(&c, &message(Channel::Sms)).unwrap();
        assert_eq!(r.header("authorization"), Some("Basic Og==")); // base64(":")
    }

    #[test]
    fn no_url_no_request() {
        for kind in [GatewayKind::Json, GatewayKind::Twilio] {
            let mut c = config(kind);
            c.url = None;
            assert_eq!(encode(&c, &message(Channel::Sms)), None);
            c.url = Some(String::new());
            assert_eq!(encode(&c, &message(Channel::Sms)), None);
        }
    }

    #[test]
    fn classification() {
        assert_eq!(classify_status(200), DeliveryOutcome::Delivered);
        assert_eq!(classify_status(201), DeliveryOutcome::Delivered);
        assert_eq!(classify_status(299), DeliveryOutcome::Delivered);
        assert_eq!(classify_status(199), DeliveryOutcome::Failed);
        for redirect in [300, 301, 302, 303, 307, 308] {
            assert_eq!(
                classify_status(redirect),
                DeliveryOutcome::Failed,
                "{redirect}"
            );
        }
        assert_eq!(classify_status(400), DeliveryOutcome::Failed);
        assert_eq!(classify_status(500), DeliveryOutcome::Failed);
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = config(GatewayKind::Twilio);
        let m = message(Channel::Sms);
        let shown = format!("{c:?} {m:?}");
        assert!(!shown.contains("tok\""), "{shown}");
        assert!(!shown.contains("123456"), "{shown}");
        assert!(shown.contains("<redacted>"));
        for kind in [GatewayKind::Json, GatewayKind::Twilio] {
            let r = encode(&config(kind), &m).unwrap();
            let shown = format!("{r:?}");
            assert!(!shown.contains("tok"), "{shown}");
            assert!(!shown.contains("QUMxMjM6dG9r"), "{shown}");
            assert!(!shown.contains("123456"), "{shown}");
            assert!(shown.contains("authorization"), "{shown}");
        }
    }

    #[test]
    fn message_serde() {
        let m = message(Channel::Whatsapp);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"to":"+233202007745","from":"Acme","text":"123456 is your code","channel":"whatsapp","reference":"5f0c2a9e-0000-4000-8000-000000000001"}"#
        );
        assert_eq!(serde_json::from_str::<OutgoingMessage>(&json).unwrap(), m);
    }
}
