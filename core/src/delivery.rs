//! Delivery receipts (SPEC §8): what became of a message after the gateway accepted it.
//!
//! - [`Delivery`] is kept on the session: the provider's message id (the gateway reply's, read by
//!   [`crate::gateway::message_id_of`]) and a [`DeliveryState`] that receipts only move forward
//!   (`accepted` → `sent` → `delivered` | `undelivered` | `failed`), so receipts out of order and
//!   duplicates change nothing ([`apply`]).
//! - [`twilio`], [`json`] and [`meta`] authenticate and read the receipt routes (403
//!   `INVALID_SIGNATURE` for a missing or wrong signature, 400 for a malformed body) into a
//!   [`Receipt`], or `None` for a receipt to acknowledge and ignore (a status that says nothing
//!   about delivery).
//! - [`index_entries`] are what a store keeps so that a receipt naming only a message id or a
//!   session id finds its workspace ([`crate::flow::Io::FindReceipt`]).

use crate::code::base64;
use crate::error::Error;
use crate::hash::{ct_eq, to_hex};
use crate::http::envelope::Reply;
use crate::session::Session;
use crate::validate;
use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// The receipt routes.
pub const TWILIO_PATH: &str = "/v1/messaging/otp/delivery-receipts/twilio";
/// The JSON gateway's receipt route.
pub const JSON_PATH: &str = "/v1/messaging/otp/delivery-receipts/json";
/// Meta's (WhatsApp Cloud API) webhook route: `GET` verifies it, `POST` brings statuses.
pub const META_PATH: &str = "/v1/messaging/otp/delivery-receipts/meta";
/// Most statuses of one Meta webhook applied (Meta sends one, sometimes a few); the rest of a
/// larger batch is acknowledged and ignored, so one request stays within a host's subrequests.
pub const MAX_META_STATUSES: usize = 50;

/// Longest provider message id or error code kept.
pub const MAX_ID_LEN: usize = 128;
const MAX_ERROR_CODE_LEN: usize = 32;

/// Where a message is, as far as the provider has told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// The gateway accepted it (its 2xx); no receipt yet.
    Accepted,
    /// The provider handed it to the carrier / WhatsApp.
    Sent,
    /// The handset has it (WhatsApp `read` counts as delivered).
    Delivered,
    /// The carrier could not deliver it.
    Undelivered,
    /// The provider could not send it.
    Failed,
}

impl DeliveryState {
    /// `accepted`, `sent`, …
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Accepted => "accepted",
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Undelivered => "undelivered",
            DeliveryState::Failed => "failed",
        }
    }

    /// Receipts only move a state to a higher rank; the three final states share the top one.
    fn rank(self) -> u8 {
        match self {
            DeliveryState::Accepted => 0,
            DeliveryState::Sent => 1,
            DeliveryState::Delivered | DeliveryState::Undelivered | DeliveryState::Failed => 2,
        }
    }

    /// A final state that says the message did not arrive.
    #[must_use]
    pub fn is_failure(self) -> bool {
        matches!(self, DeliveryState::Undelivered | DeliveryState::Failed)
    }

    /// A provider's status word (Twilio's `MessageStatus`, or the JSON receipt's `status`), any
    /// case: `queued`/`accepted`/`scheduled` → accepted, `sending`/`sent` → sent,
    /// `delivered`/`read` → delivered, `undelivered`, `failed`/`canceled` → failed. `None` for a
    /// word that says nothing about an outbound message's delivery (`receiving`, …).
    #[must_use]
    pub fn from_provider(status: &str) -> Option<DeliveryState> {
        let s = status.to_ascii_lowercase();
        Some(match s.as_str() {
            "queued" | "accepted" | "scheduled" => DeliveryState::Accepted,
            "sending" | "sent" => DeliveryState::Sent,
            "delivered" | "read" => DeliveryState::Delivered,
            "undelivered" => DeliveryState::Undelivered,
            "failed" | "canceled" | "cancelled" => DeliveryState::Failed,
            _ => return None,
        })
    }
}

/// What is known of a session's latest message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Where it is.
    pub state: DeliveryState,
    /// The provider's message id (absent when the gateway's reply named none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The provider's error code of an `undelivered` or `failed` message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

impl Delivery {
    /// A message the gateway has just accepted.
    #[must_use]
    pub fn accepted(message_id: Option<String>) -> Delivery {
        Delivery {
            state: DeliveryState::Accepted,
            message_id,
            error_code: None,
        }
    }
}

/// A provider message id worth keeping: 1–[`MAX_ID_LEN`] visible ASCII characters.
#[must_use]
pub fn valid_message_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Which session a receipt is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Target {
    /// Named outright (the status callback URL otpkit gave Twilio carries both).
    Session {
        /// Workspace id.
        workspace_id: String,
        /// Session id.
        session_id: String,
    },
    /// By the session id alone (the JSON gateway's `reference`): the index says whose.
    Reference {
        /// Session id.
        session_id: String,
    },
    /// By the provider's message id alone: the index says whose.
    Message {
        /// Provider message id.
        message_id: String,
    },
}

/// An authenticated receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// Whose message.
    pub target: Target,
    /// The provider's message id, when the receipt names it (then it must be the session's
    /// latest message: a receipt for an earlier send of a resent session changes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The state it reports.
    pub state: DeliveryState,
    /// The provider's error code, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The provider's own status word (for logs).
    pub status: String,
}

impl Receipt {
    /// The index key the receipt is looked up by, when it does not name its workspace.
    #[must_use]
    pub fn index_key(&self) -> Option<String> {
        match &self.target {
            Target::Session { .. } => None,
            Target::Reference { session_id } => Some(format!("s:{session_id}")),
            Target::Message { message_id } => Some(format!("m:{message_id}")),
        }
    }
}

/// The index entries (key, value) a store keeps for a delivered session until it is purged, so
/// that [`crate::flow::Io::FindReceipt`] finds it by session id (`s:<id>`) or by its latest
/// message id (`m:<id>`). The value is `workspaceId:sessionId` ([`parse_owner`]). None for a test
/// number (nothing was sent).
#[must_use]
pub fn index_entries(session: &Session) -> Vec<(String, String)> {
    let Some(d) = session.delivery.as_ref().filter(|_| !session.test) else {
        return Vec::new();
    };
    let owner = format!("{}:{}", session.workspace_id, session.id);
    let mut out = Vec::with_capacity(2);
    out.push((format!("s:{}", session.id), owner.clone()));
    if let Some(id) = &d.message_id {
        out.push((format!("m:{id}"), owner));
    }
    out
}

/// Reads an index value back: (workspace id, session id).
#[must_use]
pub fn parse_owner(value: &str) -> Option<(String, String)> {
    let (ws, session) = value.split_once(':')?;
    let ok = validate::is_workspace_id(ws)
        && validate::normalize_session_id(session).as_deref() == Some(session);
    ok.then(|| (ws.to_string(), session.to_string()))
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The state moved forward: store the session.
    Moved,
    /// A duplicate or an out-of-order receipt: nothing changes.
    Unchanged,
    /// About another message than the session's latest (an earlier send of a resent session),
    /// or a session with nothing sent (a test number): nothing changes.
    OtherMessage,
}

/// Applies a receipt to a session: only forward, only for its latest message.
pub fn apply(session: &mut Session, receipt: &Receipt) -> Applied {
    if session.test {
        return Applied::OtherMessage;
    }
    let current = session
        .delivery
        .get_or_insert_with(|| Delivery::accepted(None));
    if let (Some(theirs), Some(ours)) = (&receipt.message_id, &current.message_id) {
        if theirs != ours {
            return Applied::OtherMessage;
        }
    }
    if receipt.state.rank() <= current.state.rank() {
        return Applied::Unchanged;
    }
    current.state = receipt.state;
    if current.message_id.is_none() {
        current.message_id.clone_from(&receipt.message_id);
    }
    current.error_code = if receipt.state.is_failure() {
        receipt.error_code.clone()
    } else {
        None
    };
    Applied::Moved
}

/// The secrets and settings receipts are checked with.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiptKeys<'a> {
    /// `PUBLIC_BASE_URL`: Twilio signs the URL it posted to.
    pub public_base_url: Option<&'a str>,
    /// The auth tokens of the Twilio gateways configured (SMS, WhatsApp).
    pub twilio_tokens: [Option<&'a str>; 2],
    /// `SMS_GATEWAY_TOKEN`: the JSON receipt's HMAC key.
    pub json_token: Option<&'a str>,
    /// `WHATSAPP_APP_SECRET`: the Meta app secret its webhooks are signed with.
    pub meta_app_secret: Option<&'a str>,
    /// `WHATSAPP_VERIFY_TOKEN`: the token typed into Meta's webhook settings, checked when Meta
    /// verifies the callback URL.
    pub meta_verify_token: Option<&'a str>,
}

/// A deployment's settings as configured (SPEC §6; absent or empty = not set), from which
/// [`ReceiptSettings::keys`] decides which secret checks which receipt, the same on every host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptSettings {
    /// `PUBLIC_BASE_URL`.
    pub public_base_url: Option<String>,
    /// `SMS_GATEWAY_KIND`.
    pub sms_kind: Option<String>,
    /// `SMS_GATEWAY_TOKEN`.
    pub sms_token: Option<String>,
    /// `WHATSAPP_GATEWAY_URL`.
    pub whatsapp_url: Option<String>,
    /// `WHATSAPP_GATEWAY_KIND`.
    pub whatsapp_kind: Option<String>,
    /// `WHATSAPP_GATEWAY_TOKEN`.
    pub whatsapp_token: Option<String>,
    /// `WHATSAPP_APP_SECRET`.
    pub meta_app_secret: Option<String>,
    /// `WHATSAPP_VERIFY_TOKEN`.
    pub meta_verify_token: Option<String>,
}

impl ReceiptSettings {
    /// Twilio receipts are checked with the token of each gateway that is Twilio (the SMS
    /// gateway's; WhatsApp's when it has its own URL); the JSON receipt with `SMS_GATEWAY_TOKEN`;
    /// Meta's webhooks with `WHATSAPP_APP_SECRET` and `WHATSAPP_VERIFY_TOKEN`. A kind that does not
    /// parse is no Twilio gateway (its receipts are refused; sends report the misconfiguration).
    #[must_use]
    pub fn keys(&self) -> ReceiptKeys<'_> {
        fn set(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|s| !s.is_empty())
        }
        let twilio = |kind: Result<crate::gateway::GatewayKind, Error>| {
            kind.is_ok_and(|k| k == crate::gateway::GatewayKind::Twilio)
        };
        let sms = twilio(crate::gateway::GatewayKind::parse(set(&self.sms_kind)))
            .then(|| set(&self.sms_token))
            .flatten();
        let whatsapp = (set(&self.whatsapp_url).is_some()
            && twilio(crate::gateway::GatewayKind::parse_whatsapp(set(
                &self.whatsapp_kind
            ))))
        .then(|| set(&self.whatsapp_token))
        .flatten();
        ReceiptKeys {
            public_base_url: set(&self.public_base_url),
            twilio_tokens: [sms, whatsapp],
            json_token: set(&self.sms_token),
            meta_app_secret: set(&self.meta_app_secret),
            meta_verify_token: set(&self.meta_verify_token),
        }
    }
}

/// Checks `sha256=<hex HMAC-SHA256(secret, body)>` (case-insensitive hex), in constant time.
fn check_sha256(secret: Option<&str>, body: &[u8], signature: Option<&str>) -> Result<(), Error> {
    let secret = secret
        .filter(|t| !t.is_empty())
        .ok_or_else(invalid_signature)?;
    let given = signature
        .and_then(|s| s.trim().strip_prefix("sha256="))
        .ok_or_else(invalid_signature)?
        .to_ascii_lowercase();
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| invalid_signature())?;
    mac.update(body);
    let expected = to_hex(&mac.finalize().into_bytes());
    if ct_eq(expected.as_bytes(), given.as_bytes()) {
        Ok(())
    } else {
        Err(invalid_signature())
    }
}

/// A signed JSON webhook's body: the signature checked first ([`check_sha256`]), then the body
/// parsed as a JSON object (400 `VALIDATION_ERROR` `body` otherwise).
fn signed_object(
    secret: Option<&str>,
    body: &[u8],
    signature: Option<&str>,
) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    check_sha256(secret, body, signature)?;
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(obj)) => Ok(obj),
        _ => Err(bad("body", "Body must be a JSON object")),
    }
}

fn invalid_signature() -> Error {
    Error::InvalidSignature
}

fn bad(field: &'static str, message: &'static str) -> Error {
    Error::Validation {
        field: field.into(),
        message: message.into(),
    }
}

/// The Twilio status callback: `path_and_query` is the request's path with its query string as
/// received, `body` its form body. The signature is base64(HMAC-SHA1(auth token, PUBLIC_BASE_URL
/// followed by the path and query, then every form parameter's name and value sorted by name);
/// any configured Twilio token may match. The URL otpkit asks Twilio to call names the session (`ws`,
/// `session`); without them the receipt is looked up by `MessageSid`.
///
/// # Errors
/// 403 `INVALID_SIGNATURE` (no `PUBLIC_BASE_URL` or no Twilio token configured, signature missing
/// or wrong); 400 `VALIDATION_ERROR` without `MessageSid` or `MessageStatus`.
pub fn twilio(
    path_and_query: &str,
    body: &[u8],
    signature: Option<&str>,
    keys: &ReceiptKeys<'_>,
) -> Result<Option<Receipt>, Error> {
    let base = keys
        .public_base_url
        .filter(|b| !b.is_empty())
        .ok_or_else(invalid_signature)?;
    let signature = signature
        .filter(|s| !s.is_empty())
        .ok_or_else(invalid_signature)?;
    let text = core::str::from_utf8(body).map_err(|_| bad("body", "Receipt body is not UTF-8"))?;
    let mut params = form_decode(text);
    let url = format!("{}{path_and_query}", base.trim_end_matches('/'));
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut signed = url.into_bytes();
    for (k, v) in &params {
        signed.extend_from_slice(k.as_bytes());
        signed.extend_from_slice(v.as_bytes());
    }
    let matches = keys.twilio_tokens.iter().flatten().any(|token| {
        let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()) else {
            return false;
        };
        mac.update(&signed);
        let expected = base64(&mac.finalize().into_bytes());
        ct_eq(expected.as_bytes(), signature.as_bytes())
    });
    if !matches {
        return Err(invalid_signature());
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let sid = get("MessageSid")
        .or_else(|| get("SmsSid"))
        .filter(|s| valid_message_id(s))
        .ok_or_else(|| bad("MessageSid", "MessageSid is required"))?
        .to_string();
    let status = get("MessageStatus")
        .or_else(|| get("SmsStatus"))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("MessageStatus", "MessageStatus is required"))?;
    let Some(state) = DeliveryState::from_provider(status) else {
        return Ok(None);
    };
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    let qp = form_decode(query);
    let q = |name: &str| qp.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let target = match (q("ws"), q("session")) {
        (Some(ws), Some(session))
            if validate::is_workspace_id(ws)
                && validate::normalize_session_id(session).as_deref() == Some(session) =>
        {
            Target::Session {
                workspace_id: ws.to_string(),
                session_id: session.to_string(),
            }
        }
        _ => Target::Message {
            message_id: sid.clone(),
        },
    };
    Ok(Some(Receipt {
        target,
        message_id: Some(sid),
        state,
        error_code: get("ErrorCode").and_then(error_code),
        status: short(status),
    }))
}

/// The JSON gateway's receipt: `{"id"|"reference", "status", "errorCode"?}` with
/// `X-Otpkit-Signature: sha256=<hex HMAC-SHA256(SMS_GATEWAY_TOKEN, raw body)>`.
///
/// # Errors
/// 403 `INVALID_SIGNATURE` (no token configured, signature missing or wrong, checked before the
/// body is read); 400 `VALIDATION_ERROR` for a body that is not such an object (naming the
/// field), or a `status` that is not a delivery status.
pub fn json(
    body: &[u8],
    signature: Option<&str>,
    keys: &ReceiptKeys<'_>,
) -> Result<Option<Receipt>, Error> {
    let obj = signed_object(keys.json_token, body, signature)?;
    let text = |name: &'static str| -> Result<Option<String>, Error> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Number(n)) if name == "errorCode" => Ok(Some(n.to_string())),
            Some(_) => Err(bad(name, "must be a string")),
        }
    };
    let id = text("id")?;
    if id.as_deref().is_some_and(|i| !valid_message_id(i)) {
        return Err(bad("id", "id must be 1-128 visible ASCII characters"));
    }
    let reference = match text("reference")? {
        Some(r) => Some(
            validate::normalize_session_id(&r)
                .ok_or_else(|| bad("reference", "reference must be a session id"))?,
        ),
        None => None,
    };
    let status = text("status")?.ok_or_else(|| bad("status", "status is required"))?;
    let state = DeliveryState::from_provider(&status).ok_or_else(|| {
        bad(
            "status",
            "status must be accepted, sent, delivered, undelivered or failed",
        )
    })?;
    let target = match (&reference, &id) {
        (Some(session_id), _) => Target::Reference {
            session_id: session_id.clone(),
        },
        (None, Some(message_id)) => Target::Message {
            message_id: message_id.clone(),
        },
        (None, None) => return Err(bad("id", "id or reference is required")),
    };
    Ok(Some(Receipt {
        target,
        message_id: id,
        state,
        error_code: text("errorCode")?.as_deref().and_then(error_code),
        status: short(&status),
    }))
}

/// Meta's WhatsApp Cloud API webhook: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret,
/// raw body)>`, body `{"object": "whatsapp_business_account", "entry": [{"changes": [{"field":
/// "messages", "value": {"statuses": [{"id", "status", "errors"?: [{"code"}]}]}}]}]}`. Each status
/// that says something of delivery (`sent`, `delivered`, `read` as delivered, `failed` with its
/// first error's code) is a receipt by message id, in order, at most [`MAX_META_STATUSES`]; the
/// rest of the webhook (incoming messages, other fields) is acknowledged and ignored.
///
/// # Errors
/// 403 `INVALID_SIGNATURE` (no app secret configured, signature missing or wrong, checked before
/// the body is read); 400 `VALIDATION_ERROR` for a body that is not a JSON object.
pub fn meta(
    body: &[u8],
    signature: Option<&str>,
    keys: &ReceiptKeys<'_>,
) -> Result<Vec<Receipt>, Error> {
    let v = serde_json::Value::Object(signed_object(keys.meta_app_secret, body, signature)?);
    let list = |v: &serde_json::Value, name: &str| -> Vec<serde_json::Value> {
        v.get(name)
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for entry in list(&v, "entry") {
        for change in list(&entry, "changes") {
            let Some(value) = change.get("value") else {
                continue;
            };
            for st in list(value, "statuses") {
                if out.len() >= MAX_META_STATUSES {
                    return Ok(out);
                }
                let text = |name: &str| st.get(name).and_then(serde_json::Value::as_str);
                let (Some(id), Some(status)) = (text("id"), text("status")) else {
                    continue;
                };
                let Some(state) = DeliveryState::from_provider(status) else {
                    continue;
                };
                if !valid_message_id(id) {
                    continue;
                }
                let code = list(&st, "errors")
                    .first()
                    .and_then(|e| match e.get("code") {
                        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                        Some(serde_json::Value::String(s)) => Some(s.clone()),
                        _ => None,
                    });
                out.push(Receipt {
                    target: Target::Message {
                        message_id: id.to_string(),
                    },
                    message_id: Some(id.to_string()),
                    state,
                    error_code: code.as_deref().and_then(error_code),
                    status: short(status),
                });
            }
        }
    }
    Ok(out)
}

/// Meta's check of the callback URL: `GET …/meta?hub.mode=subscribe&hub.verify_token=…&
/// hub.challenge=<digits>` (`query`: the query string) → 200 with the challenge as the whole
/// body, when the token is `WHATSAPP_VERIFY_TOKEN` (compared in constant time).
///
/// # Errors
/// 403 `INVALID_SIGNATURE` for another mode, no or another token, or none configured; 400
/// `VALIDATION_ERROR` (`hub.challenge`) for a challenge that is not 1–32 digits.
pub fn meta_challenge(query: &str, keys: &ReceiptKeys<'_>) -> Result<Reply, Error> {
    let pairs = form_decode(query);
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let expected = keys
        .meta_verify_token
        .filter(|t| !t.is_empty())
        .ok_or_else(invalid_signature)?;
    let token = get("hub.verify_token").ok_or_else(invalid_signature)?;
    if get("hub.mode") != Some("subscribe") || !ct_eq(token.as_bytes(), expected.as_bytes()) {
        return Err(invalid_signature());
    }
    let challenge = get("hub.challenge")
        .filter(|c| (1..=32).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| bad("hub.challenge", "hub.challenge must be 1-32 digits"))?;
    // The digits alone, as Meta compares them (also a JSON number).
    Ok(Reply {
        status: 200,
        body: challenge.to_string(),
        retry_after: None,
        replayed: false,
    })
}

/// A provider error code worth keeping: up to 32 of `[A-Za-z0-9_.-]`.
fn error_code(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ERROR_CODE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    ok.then(|| s.to_owned())
}

fn short(status: &str) -> String {
    status
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(24)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` a byte; a malformed escape
/// is kept as written).
#[must_use]
pub fn form_decode(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let hex = |c: Option<&u8>| c.and_then(|&c| char::from(c).to_digit(16));
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.as_bytes().iter().peekable();
    while let Some(&c) = bytes.next() {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let mut ahead = bytes.clone();
                match (hex(ahead.next()), hex(ahead.next())) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from((h << 4) | l).unwrap_or(b'?'));
                        bytes = ahead;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twilio_sig(token: &str, url: &str, params: &[(&str, &str)]) -> String {
        let mut sorted = params.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
        mac.update(url.as_bytes());
        for (k, v) in sorted {
            mac.update(k.as_bytes());
            mac.update(v.as_bytes());
        }
        base64(&mac.finalize().into_bytes())
    }

    const SESSION: &str = "0b8e2f2a-5c1d-4e6f-9a0b-1c2d3e4f5a6b";

    fn keys() -> ReceiptKeys<'static> {
        ReceiptKeys {
            public_base_url: Some("https://otp.example.com/"),
            twilio_tokens: [Some("tw-token"), None],
            json_token: Some("json-token"),
            meta_app_secret: Some("meta-secret"),
            meta_verify_token: Some("verify-me"),
        }
    }

    fn meta_signed(body: &str) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"meta-secret").unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", to_hex(&mac.finalize().into_bytes()))
    }

    #[test]
    fn meta_webhook_statuses_become_receipts_by_message_id() {
        // The shape of Meta's documented status webhook (one delivered, one failed with its
        // error, one read), with an incoming message and an unknown status beside them.
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[
            {"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1"},
             "statuses":[
              {"id":"wamid.A","status":"delivered","timestamp":"1700000000","recipient_id":"233201234567"},
              {"id":"wamid.B","status":"failed","errors":[{"code":131026,"title":"Message undeliverable"}]},
              {"id":"wamid.C","status":"read"},
              {"id":"wamid.D","status":"deleted"}]}},
            {"field":"messages","value":{"messages":[{"from":"233201234567","id":"wamid.IN","type":"text"}]}}]}]}"#;
        let got = meta(body.as_bytes(), Some(&meta_signed(body)), &keys()).unwrap();
        let view: Vec<(&str, DeliveryState, Option<&str>)> = got
            .iter()
            .map(|r| {
                let Target::Message { message_id } = &r.target else {
                    panic!("by message id")
                };
                (message_id.as_str(), r.state, r.error_code.as_deref())
            })
            .collect();
        assert_eq!(
            view,
            [
                ("wamid.A", DeliveryState::Delivered, None),
                ("wamid.B", DeliveryState::Failed, Some("131026")),
                ("wamid.C", DeliveryState::Delivered, None),
            ]
        );
        // Signed with another secret, unsigned, or no secret configured: 403.
        for sig in [Some("sha256=00"), None, Some(meta_signed("{}").as_str())] {
            assert_eq!(
                meta(body.as_bytes(), sig, &keys()),
                Err(Error::InvalidSignature)
            );
        }
        let none = ReceiptKeys {
            meta_app_secret: None,
            ..keys()
        };
        assert_eq!(
            meta(body.as_bytes(), Some(&meta_signed(body)), &none),
            Err(Error::InvalidSignature)
        );
        // Signed but not an object: 400.
        let err = meta(b"[]", Some(&meta_signed("[]")), &keys()).unwrap_err();
        assert_eq!(err.field(), Some("body"));
        // A huge batch is cut at MAX_META_STATUSES.
        let many: Vec<String> = (0..MAX_META_STATUSES + 5)
            .map(|i| format!(r#"{{"id":"wamid.{i}","status":"sent"}}"#))
            .collect();
        let body = format!(
            r#"{{"entry":[{{"changes":[{{"value":{{"statuses":[{}]}}}}]}}]}}"#,
            many.join(",")
        );
        let got = meta(body.as_bytes(), Some(&meta_signed(&body)), &keys()).unwrap();
        assert_eq!(got.len(), MAX_META_STATUSES);
    }

    #[test]
    fn meta_callback_verification() {
        let ok = meta_challenge(
            "hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444",
            &keys(),
        )
        .unwrap();
        assert_eq!((ok.status, ok.body.as_str()), (200, "1158201444"));
        for bad in [
            "hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
            "hub.mode=unsubscribe&hub.verify_token=verify-me&hub.challenge=1",
            "hub.challenge=1",
        ] {
            assert_eq!(
                meta_challenge(bad, &keys()).unwrap_err(),
                Error::InvalidSignature,
                "{bad}"
            );
        }
        let err = meta_challenge(
            "hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=<script>",
            &keys(),
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("hub.challenge"));
        let unset = ReceiptKeys {
            meta_verify_token: None,
            ..keys()
        };
        assert_eq!(
            meta_challenge(
                "hub.mode=subscribe&hub.verify_token=&hub.challenge=1",
                &unset
            )
            .unwrap_err(),
            Error::InvalidSignature
        );
    }

    #[test]
    fn receipt_settings_decide_which_secret_checks_which_receipt() {
        let s = |pairs: &[(&str, &str)]| {
            let get = |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_string())
            };
            ReceiptSettings {
                public_base_url: get("PUBLIC_BASE_URL"),
                sms_kind: get("SMS_GATEWAY_KIND"),
                sms_token: get("SMS_GATEWAY_TOKEN"),
                whatsapp_url: get("WHATSAPP_GATEWAY_URL"),
                whatsapp_kind: get("WHATSAPP_GATEWAY_KIND"),
                whatsapp_token: get("WHATSAPP_GATEWAY_TOKEN"),
                meta_app_secret: get("WHATSAPP_APP_SECRET"),
                meta_verify_token: get("WHATSAPP_VERIFY_TOKEN"),
            }
        };
        let json = s(&[("SMS_GATEWAY_TOKEN", "t1")]);
        let k = json.keys();
        assert_eq!((k.twilio_tokens, k.json_token), ([None, None], Some("t1")));
        let both = s(&[
            ("SMS_GATEWAY_KIND", "TWILIO"),
            ("SMS_GATEWAY_TOKEN", "t1"),
            ("WHATSAPP_GATEWAY_URL", "https://api.twilio.com"),
            ("WHATSAPP_GATEWAY_KIND", "twilio"),
            ("WHATSAPP_GATEWAY_TOKEN", "t2"),
            ("PUBLIC_BASE_URL", "https://otp.example.com"),
        ]);
        let k = both.keys();
        assert_eq!(k.twilio_tokens, [Some("t1"), Some("t2")]);
        assert_eq!(k.public_base_url, Some("https://otp.example.com"));
        // WhatsApp's kind without its own URL, an unknown kind, empty values: not Twilio.
        let k = s(&[
            ("SMS_GATEWAY_KIND", "smpp"),
            ("SMS_GATEWAY_TOKEN", "t1"),
            ("WHATSAPP_GATEWAY_KIND", "twilio"),
            ("WHATSAPP_GATEWAY_TOKEN", "t2"),
            ("PUBLIC_BASE_URL", ""),
        ]);
        let k = k.keys();
        assert_eq!(k.twilio_tokens, [None, None]);
        assert_eq!(k.public_base_url, None);
        let meta = s(&[
            ("WHATSAPP_GATEWAY_URL", "https://graph.facebook.com/v21.0/1"),
            ("WHATSAPP_GATEWAY_KIND", "meta"),
            ("WHATSAPP_GATEWAY_TOKEN", "bearer"),
            ("WHATSAPP_APP_SECRET", "secret"),
            ("WHATSAPP_VERIFY_TOKEN", "verify"),
        ]);
        let k = meta.keys();
        assert_eq!(k.twilio_tokens, [None, None]);
        assert_eq!(
            (k.meta_app_secret, k.meta_verify_token),
            (Some("secret"), Some("verify"))
        );
    }

    #[test]
    fn twilio_documented_example_signature() {
        // Twilio's documented example: auth token 12345, this URL and these parameters sign to
        // this value (their "Validating requests" page).
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ];
        assert_eq!(
            twilio_sig("12345", url, &params),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
    }

    #[test]
    fn twilio_receipt_names_its_session_and_checks_the_signature() {
        let path = format!("{TWILIO_PATH}?ws=ws_1&session={SESSION}");
        let params = [
            ("MessageSid", "SM123"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ];
        let body = "MessageSid=SM123&MessageStatus=undelivered&ErrorCode=30003";
        let url = format!("https://otp.example.com{path}");
        let sig = twilio_sig("tw-token", &url, &params);
        let r = twilio(&path, body.as_bytes(), Some(&sig), &keys())
            .unwrap()
            .unwrap();
        assert_eq!(
            r.target,
            Target::Session {
                workspace_id: "ws_1".into(),
                session_id: SESSION.into()
            }
        );
        assert_eq!(r.state, DeliveryState::Undelivered);
        assert_eq!(r.error_code.as_deref(), Some("30003"));
        // Another token, a changed body, no signature, no base URL: 403.
        let other = twilio_sig("other", &url, &params);
        for (sig, k) in [
            (Some(other.as_str()), keys()),
            (None, keys()),
            (
                Some(sig.as_str()),
                ReceiptKeys {
                    public_base_url: None,
                    ..keys()
                },
            ),
        ] {
            let e = twilio(&path, body.as_bytes(), sig, &k).unwrap_err();
            assert_eq!(e.code(), "INVALID_SIGNATURE");
        }
        let tampered = body.replace("undelivered", "delivered");
        let e = twilio(&path, tampered.as_bytes(), Some(&sig), &keys()).unwrap_err();
        assert_eq!(e.code(), "INVALID_SIGNATURE");
    }

    #[test]
    fn json_receipt_hmac_and_fields() {
        let body = format!(r#"{{"reference":"{SESSION}","id":"m-1","status":"DELIVERED"}}"#);
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"json-token").unwrap();
        mac.update(body.as_bytes());
        let sig = format!("sha256={}", to_hex(&mac.finalize().into_bytes()));
        let r = json(body.as_bytes(), Some(&sig), &keys()).unwrap().unwrap();
        assert_eq!(r.state, DeliveryState::Delivered);
        assert_eq!(r.index_key().as_deref(), Some(&*format!("s:{SESSION}")));
        assert_eq!(r.message_id.as_deref(), Some("m-1"));
        let e = json(body.as_bytes(), Some("sha256=00"), &keys()).unwrap_err();
        assert_eq!(e.code(), "INVALID_SIGNATURE");
        let e = json(body.as_bytes(), None, &keys()).unwrap_err();
        assert_eq!(e.code(), "INVALID_SIGNATURE");
        let bad_status = br#"{"id":"m-1","status":"lost"}"#;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"json-token").unwrap();
        mac.update(bad_status);
        let sig = format!("sha256={}", to_hex(&mac.finalize().into_bytes()));
        let e = json(bad_status, Some(&sig), &keys()).unwrap_err();
        assert_eq!(e.field(), Some("status"));
    }

    #[test]
    fn states_only_move_forward() {
        let order = [
            DeliveryState::Accepted,
            DeliveryState::Sent,
            DeliveryState::Delivered,
        ];
        for w in order.windows(2) {
            assert!(w[0].rank() < w[1].rank());
        }
        assert_eq!(
            DeliveryState::from_provider("read"),
            Some(DeliveryState::Delivered)
        );
        assert_eq!(DeliveryState::from_provider("receiving"), None);
    }

    #[test]
    fn owners_read_back() {
        assert_eq!(
            parse_owner(&format!("ws_1:{SESSION}")),
            Some(("ws_1".into(), SESSION.into()))
        );
        assert_eq!(parse_owner("ws_1"), None);
        assert_eq!(parse_owner("ws 1:x"), None);
        assert_eq!(
            form_decode("a=b+c&d=%2B1%zz"),
            [("a".into(), "b c".into()), ("d".into(), "+1%zz".into())]
        );
    }
}
