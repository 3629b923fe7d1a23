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
use alloc::vec;
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
    /// The WhatsApp Cloud API (`WHATSAPP_GATEWAY_KIND` only): an authentication template
    /// message, Bearer token (SPEC §8).
    Meta,
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

    /// Parses `WHATSAPP_GATEWAY_KIND`: `meta` in any case, else as [`GatewayKind::parse`]
    /// (absent or empty → `Json`; `json`, `twilio`), with its own error message.
    ///
    /// # Errors
    /// [`Error::Misconfigured`] for an unknown kind.
    pub fn parse_whatsapp(s: Option<&str>) -> Result<GatewayKind, Error> {
        if s.is_some_and(|k| k.eq_ignore_ascii_case("meta")) {
            return Ok(GatewayKind::Meta);
        }
        GatewayKind::parse(s).map_err(|_| Error::Misconfigured {
            message: "WHATSAPP_GATEWAY_KIND must be json, twilio or meta".into(),
        })
    }

    /// The configuration name (`json`, `twilio`, `meta`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayKind::Json => "json",
            GatewayKind::Twilio => "twilio",
            GatewayKind::Meta => "meta",
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
    /// What a WhatsApp template send needs (policy `whatsappContentSid` / `whatsappTemplate`);
    /// absent when the policy sets neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsappSend>,
}

/// A WhatsApp send by template (SPEC §8): Twilio's `ContentSid` with `ContentVariables`
/// `{"1": code}`, or a Meta authentication template with the code as its body parameter and
/// copy-code button. `Debug` redacts the code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhatsappSend {
    /// The code. A secret.
    pub code: String,
    /// Twilio Content SID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sid: Option<String>,
    /// Meta template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<crate::policy::WhatsappTemplate>,
}

impl WhatsappSend {
    /// What the policy's WhatsApp template settings need for `code`, or `None` when it sets
    /// neither `whatsappContentSid` nor `whatsappTemplate`.
    #[must_use]
    pub fn for_policy(policy: &crate::policy::Policy, code: &str) -> Option<WhatsappSend> {
        if policy.whatsapp_content_sid.is_none() && policy.whatsapp_template.is_none() {
            return None;
        }
        Some(WhatsappSend {
            code: code.into(),
            content_sid: policy.whatsapp_content_sid.clone(),
            template: policy.whatsapp_template.clone(),
        })
    }
}

impl fmt::Debug for WhatsappSend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhatsappSend")
            .field("code", &"<redacted>")
            .field("content_sid", &self.content_sid)
            .field("template", &self.template)
            .finish()
    }
}

impl fmt::Debug for OutgoingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("to", &self.to)
            .field("from", &self.from)
            .field("text", &"<redacted>")
            .field("channel", &self.channel)
            .field("reference", &self.reference)
            .field("whatsapp", &self.whatsapp)
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
    encode_with(config, m, None)
}

/// Every gateway a host has: SMS (`SMS_GATEWAY_*`), WhatsApp when `WHATSAPP_GATEWAY_*` is set
/// (else WhatsApp goes through the SMS gateway), and `PUBLIC_BASE_URL` for receipts (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gateways {
    /// `SMS_GATEWAY_*`.
    pub sms: GatewayConfig,
    /// `WHATSAPP_GATEWAY_*` (absent: none set).
    pub whatsapp: Option<GatewayConfig>,
    /// `PUBLIC_BASE_URL`: Twilio sends are asked for status callbacks there.
    pub public_base_url: Option<String>,
}

impl Gateways {
    /// The gateway a message on `channel` goes through.
    #[must_use]
    pub fn for_channel(&self, channel: Channel) -> &GatewayConfig {
        match (channel, &self.whatsapp) {
            (Channel::Whatsapp, Some(w)) => w,
            _ => &self.sms,
        }
    }

    /// The request that delivers `m` of workspace `workspace_id`, with the kind of gateway it
    /// goes to (to read the reply's message id, [`message_id_of`]); `None` when that gateway
    /// has no URL, or is `meta` and the policy names no template (a definite failure).
    /// A Twilio send asks for status callbacks at `PUBLIC_BASE_URL` + the receipt route, with
    /// the workspace and session in the query (Twilio signs the whole URL).
    #[must_use]
    pub fn encode(
        &self,
        workspace_id: &str,
        m: &OutgoingMessage,
    ) -> (GatewayKind, Option<HttpRequest>) {
        let config = self.for_channel(m.channel);
        let callback = match (config.kind, self.public_base_url.as_deref()) {
            (GatewayKind::Twilio, Some(base)) if !base.is_empty() => Some(format!(
                "{}{}?ws={workspace_id}&session={}",
                base.trim_end_matches('/'),
                crate::delivery::TWILIO_PATH,
                m.reference
            )),
            _ => None,
        };
        (config.kind, encode_with(config, m, callback.as_deref()))
    }
}

/// The provider's message id in a gateway's 2xx reply body: the json gateway's optional `id`
/// (string or number), Twilio's `sid`, Meta's `messages[0].id`. `None` when absent, not JSON, or
/// not a plausible id ([`crate::delivery::valid_message_id`]).
#[must_use]
pub fn message_id_of(kind: GatewayKind, body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = match kind {
        GatewayKind::Json => v.get("id"),
        GatewayKind::Twilio => v.get("sid"),
        GatewayKind::Meta => v.get("messages")?.get(0)?.get("id"),
    }?;
    let id = match id {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => alloc::string::ToString::to_string(n),
        _ => return None,
    };
    crate::delivery::valid_message_id(&id).then_some(id)
}

/// The Meta Cloud API body of an authentication template message.
fn meta_body(m: &OutgoingMessage) -> Option<String> {
    let w = m.whatsapp.as_ref()?;
    let t = w.template.as_ref()?;
    let code = serde_json::json!([{ "type": "text", "text": w.code }]);
    let body = serde_json::json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": m.to.strip_prefix('+').unwrap_or(&m.to),
        "type": "template",
        "template": {
            "name": t.name,
            "language": { "code": t.language },
            "components": [
                { "type": "body", "parameters": code },
                { "type": "button", "sub_type": "url", "index": "0", "parameters": code },
            ],
        },
    });
    serde_json::to_string(&body).ok()
}

fn encode_with(
    config: &GatewayConfig,
    m: &OutgoingMessage,
    status_callback: Option<&str>,
) -> Option<HttpRequest> {
    let url = config.url.as_deref().filter(|u| !u.is_empty())?;
    let mut url = String::from(url);
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
            let to = format!("{prefix}{}", m.to);
            let from = format!("{prefix}{}", m.from);
            let mut pairs: Vec<(&str, String)> = vec![("To", to), ("From", from)];
            let content = m
                .whatsapp
                .as_ref()
                .filter(|_| m.channel == Channel::Whatsapp)
                .and_then(|w| Some((w.content_sid.as_deref()?, &w.code)));
            match content {
                Some((sid, code)) => {
                    pairs.push(("ContentSid", sid.into()));
                    let vars = serde_json::to_string(&serde_json::json!({ "1": code })).ok()?;
                    pairs.push(("ContentVariables", vars));
                }
                None => pairs.push(("Body", m.text.clone())),
            }
            if let Some(cb) = status_callback {
                pairs.push(("StatusCallback", cb.into()));
            }
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            form_encode(&refs)
        }
        GatewayKind::Meta => {
            headers.push(header("content-type", "application/json"));
            if let Some(token) = config.token.as_deref() {
                headers.push(header("authorization", &format!("Bearer {token}")));
            }
            url = format!("{}/messages", url.trim_end_matches('/'));
            meta_body(m)?
        }
    };
    Some(HttpRequest {
        method: "POST",
        url,
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
            whatsapp: None,
        }
    }

    fn whatsapp_message(content_sid: Option<&str>, template: bool) -> OutgoingMessage {
        OutgoingMessage {
            whatsapp: Some(WhatsappSend {
                code: "123456".into(),
                content_sid: content_sid.map(Into::into),
                template: template.then(|| crate::policy::WhatsappTemplate {
                    name: "otp_auth".into(),
                    language: "en_US".into(),
                }),
            }),
            ..message(Channel::Whatsapp)
        }
    }

    #[test]
    fn twilio_whatsapp_content_template_and_status_callback() {
        let g = Gateways {
            sms: GatewayConfig {
                account: Some("AC1".into()),
                ..config(GatewayKind::Twilio)
            },
            whatsapp: None,
            public_base_url: Some("https://otp.example.com/".into()),
        };
        let m = whatsapp_message(Some("HX0123456789abcdef0123456789abcdef"), false);
        let (kind, req) = g.encode("ws_1", &m);
        assert_eq!(kind, GatewayKind::Twilio);
        let body = req.unwrap().body;
        let pairs = crate::delivery::form_decode(&body);
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("ContentSid").as_deref(),
            Some("HX0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            get("ContentVariables").as_deref(),
            Some(r#"{"1":"123456"}"#)
        );
        assert_eq!(get("Body"), None);
        assert_eq!(get("To").as_deref(), Some("whatsapp:+233202007745"));
        assert_eq!(
            get("StatusCallback").as_deref(),
            Some("https://otp.example.com/v1/messaging/otp/delivery-receipts/twilio?ws=ws_1&session=5f0c2a9e-0000-4000-8000-000000000001")
        );
        // SMS through the same gateway keeps Body.
        let sms = OutgoingMessage {
            channel: Channel::Sms,
            ..m
        };
        let body = g.encode("ws_1", &sms).1.unwrap().body;
        assert!(body.contains("Body=123456+is+your+code"));
        assert!(!body.contains("ContentSid"));
    }

    #[test]
    fn meta_authentication_template() {
        let g = Gateways {
            sms: config(GatewayKind::Json),
            whatsapp: Some(GatewayConfig {
                kind: GatewayKind::Meta,
                url: Some("https://graph.example/v21.0/1234/".into()),
                token: Some("meta-token".into()),
                account: None,
            }),
            public_base_url: None,
        };
        let (kind, req) = g.encode("ws_1", &whatsapp_message(None, true));
        assert_eq!(kind, GatewayKind::Meta);
        let req = req.unwrap();
        assert_eq!(req.url, "https://graph.example/v21.0/1234/messages");
        assert_eq!(req.header("authorization"), Some("Bearer meta-token"));
        let v: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(v["type"], "template");
        assert_eq!(v["to"], "233202007745");
        assert_eq!(v["template"]["name"], "otp_auth");
        assert_eq!(v["template"]["language"]["code"], "en_US");
        assert_eq!(
            v["template"]["components"][0]["parameters"][0]["text"],
            "123456"
        );
        assert_eq!(v["template"]["components"][1]["sub_type"], "url");
        assert_eq!(
            v["template"]["components"][1]["parameters"][0]["text"],
            "123456"
        );
        // No template in the policy: nothing can be sent.
        assert!(g.encode("ws_1", &whatsapp_message(None, false)).1.is_none());
        // SMS still goes to the SMS gateway.
        let (kind, req) = g.encode("ws_1", &message(Channel::Sms));
        assert_eq!(kind, GatewayKind::Json);
        assert_eq!(req.unwrap().url, "https://gw.example/send");
    }

    #[test]
    fn message_ids_from_replies() {
        assert_eq!(
            message_id_of(GatewayKind::Twilio, br#"{"sid":"SM1","status":"queued"}"#).as_deref(),
            Some("SM1")
        );
        assert_eq!(
            message_id_of(GatewayKind::Json, br#"{"id":42}"#).as_deref(),
            Some("42")
        );
        assert_eq!(message_id_of(GatewayKind::Json, b"ok"), None);
        assert_eq!(
            message_id_of(GatewayKind::Meta, br#"{"messages":[{"id":"wamid.X"}]}"#).as_deref(),
            Some("wamid.X")
        );
        assert_eq!(
            message_id_of(GatewayKind::Json, br#"{"id":"has space"}"#),
            None
        );
        assert!(GatewayKind::parse(Some("meta")).is_err());
        assert_eq!(
            GatewayKind::parse_whatsapp(Some("META")).unwrap(),
            GatewayKind::Meta
        );
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
    fn whatsapp_kind_parsing() {
        assert_eq!(GatewayKind::parse_whatsapp(None), Ok(GatewayKind::Json));
        assert_eq!(GatewayKind::parse_whatsapp(Some("")), Ok(GatewayKind::Json));
        assert_eq!(
            GatewayKind::parse_whatsapp(Some("Json")),
            Ok(GatewayKind::Json)
        );
        assert_eq!(
            GatewayKind::parse_whatsapp(Some("TWILIO")),
            Ok(GatewayKind::Twilio)
        );
        assert_eq!(
            GatewayKind::parse_whatsapp(Some("meta")),
            Ok(GatewayKind::Meta)
        );
        for bad in ["smpp", " meta", "meta "] {
            let err = GatewayKind::parse_whatsapp(Some(bad)).unwrap_err();
            assert_eq!(err.code(), "MISCONFIGURED");
            assert_eq!(
                err.message(),
                "WHATSAPP_GATEWAY_KIND must be json, twilio or meta"
            );
        }
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
