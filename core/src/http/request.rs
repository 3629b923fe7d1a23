//! Request bodies of both dialects, parsed and checked field by field.
//!
//! Order of checks a host applies (SPEC "Precise rules"): 401 auth → [`check_content`]
//! (415, then 413) → the `from_*` parsers here (400 with `field`).

use crate::error::Error;
use crate::json::{self, Object};
use crate::template;
use crate::transaction::Transaction;
use crate::validate::{self, Channel, Purpose};
use alloc::string::{String, ToString};

/// A route whose body is optional (resend) reads one only when the request says it has one: a
/// `Content-Type`, or a declared length above 0 (then [`check_content`] applies as usual).
#[must_use]
pub fn has_body(content_type: Option<&str>, declared_len: Option<u64>) -> bool {
    content_type.is_some() || declared_len.is_some_and(|n| n > 0)
}

/// Largest request body accepted (16 KiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Is this `Content-Type` JSON? (`application/json`, any case, parameters such as `charset` allowed.)
#[must_use]
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// 415 unless the content type is JSON, then 413 if the declared or received length is over 16 KiB.
pub fn check_content(content_type: Option<&str>, declared_len: Option<u64>) -> Result<(), Error> {
    if !content_type.is_some_and(is_json_content_type) {
        return Err(Error::UnsupportedMediaType);
    }
    if declared_len.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(Error::PayloadTooLarge);
    }
    Ok(())
}

/// 413 if a body read so far is over 16 KiB (for bodies without a trustworthy Content-Length).
pub fn check_body_len(len: usize) -> Result<(), Error> {
    if len > MAX_BODY_BYTES {
        Err(Error::PayloadTooLarge)
    } else {
        Ok(())
    }
}

/// Which API shape a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `/v1/messaging/otp/*` (Zeckta).
    V1,
    /// `/otp/*` (ZendOTP-compatible).
    Zend,
}

/// A checked request to issue a code. What needs the workspace (sender allowed, country
/// allowed, policy defaults) is checked by [`crate::session::plan_issue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// The dialect, which decides the response shape.
    pub dialect: Dialect,
    /// E.164 destination.
    pub dest: String,
    /// Sender name; `None` (second dialect) = the workspace's first sender.
    pub src: Option<String>,
    /// Purpose.
    pub purpose: Purpose,
    /// Channel.
    pub channel: Channel,
    /// Optional application label.
    pub app: Option<String>,
    /// Optional template (checked for `{code}` exactly once).
    pub template: Option<String>,
    /// Lifetime override in seconds (second dialect's `expiry` minutes); `None` = policy.
    pub ttl_seconds: Option<u32>,
    /// Code length override (second dialect's `length`); `None` = policy.
    pub code_length: Option<u8>,
    /// The payment the code approves (PSD2; purpose `TRANSACTION` only).
    pub transaction: Option<Transaction>,
}

impl IssueRequest {
    /// `POST /v1/messaging/otp/request`: `dest`, `src`, `purpose` required; `messageTemplate`,
    /// `app`, `channel` optional. Unknown fields are ignored; `null` counts as absent.
    pub fn from_v1_json(body: &[u8]) -> Result<IssueRequest, Error> {
        let obj = json::parse_object(body)?;
        let dest = json::req_str(&obj, "dest")?;
        validate::destination("dest", dest)?;
        let src = json::req_str(&obj, "src")?;
        validate::sender("src", src)?;
        let purpose = purpose(&obj, "purpose", true)?.unwrap_or(Purpose::Login);
        let template = json::opt_str(&obj, "messageTemplate")?;
        if let Some(t) = template {
            template::check_template("messageTemplate", t)?;
        }
        let app = app(&obj, "app")?;
        let channel = channel(&obj, "channel")?;
        let transaction = transaction(&obj)?;
        if transaction.is_some() && purpose != Purpose::Transaction {
            return Err(Error::invalid(
                "purpose",
                "must be TRANSACTION when amount, currency and payee are given",
            ));
        }
        Ok(IssueRequest {
            dialect: Dialect::V1,
            dest: dest.to_string(),
            src: Some(src.to_string()),
            purpose,
            channel,
            app,
            template: template.map(ToString::to_string),
            ttl_seconds: None,
            code_length: None,
            transaction,
        })
    }

    /// `POST /otp/send`: `phone_number`, `app` required; `channel`, `expiry` (minutes 1–10,
    /// default 10), `length` (6–10, default policy), `purpose` (default `LOGIN`) optional.
    pub fn from_zend_json(body: &[u8]) -> Result<IssueRequest, Error> {
        let obj = json::parse_object(body)?;
        let dest = json::req_str(&obj, "phone_number")?;
        validate::destination("phone_number", dest)?;
        if json::get(&obj, "app").is_none() {
            return Err(Error::invalid("app", "is required"));
        }
        let app = app(&obj, "app")?;
        let channel = channel(&obj, "channel")?;
        let expiry = json::opt_int(&obj, "expiry", "expiry", 1, 10)?.unwrap_or(10);
        let length = json::opt_int(&obj, "length", "length", 6, 10)?;
        let purpose = purpose(&obj, "purpose", false)?.unwrap_or(Purpose::Login);
        Ok(IssueRequest {
            dialect: Dialect::Zend,
            dest: dest.to_string(),
            src: None,
            purpose,
            channel,
            app,
            template: None,
            ttl_seconds: u32::try_from(expiry.saturating_mul(60)).ok(),
            code_length: length.and_then(|n| u8::try_from(n).ok()),
            transaction: None,
        })
    }
}

/// `POST /v1/messaging/otp/sessions/{id}/resend` and `POST /otp/{id}/resend` (SPEC §7): an
/// optional body `{channel?}` (an empty body is `{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResendRequest {
    /// Send on this channel (absent: the session's).
    pub channel: Option<Channel>,
}

impl ResendRequest {
    /// Parses the body; unknown fields are ignored, `null` counts as absent.
    pub fn from_json(body: &[u8]) -> Result<ResendRequest, Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(ResendRequest::default());
        }
        let obj = json::parse_object(body)?;
        let channel = match json::opt_str(&obj, "channel")? {
            None => None,
            Some(_) => Some(channel(&obj, "channel")?),
        };
        Ok(ResendRequest { channel })
    }
}

fn purpose(obj: &Object, key: &'static str, required: bool) -> Result<Option<Purpose>, Error> {
    let s = if required {
        Some(json::req_str(obj, key)?)
    } else {
        json::opt_str(obj, key)?
    };
    match s {
        None => Ok(None),
        Some(s) => Purpose::parse(s).map(Some).ok_or(Error::invalid(
            key,
            "must be one of LOGIN, PASSWORD_RESET, TRANSACTION, DEVICE_VERIFICATION, EMAIL_VERIFICATION, ACCOUNT_RECOVERY, KYC_VERIFICATION",
        )),
    }
}

fn channel(obj: &Object, key: &'static str) -> Result<Channel, Error> {
    match json::opt_str(obj, key)? {
        None => Ok(Channel::Sms),
        Some(s) => Channel::parse(s).ok_or(Error::invalid(key, "must be sms or whatsapp")),
    }
}

fn app(obj: &Object, key: &'static str) -> Result<Option<String>, Error> {
    match json::opt_str(obj, key)? {
        None => Ok(None),
        Some(s) => {
            validate::app(key, s)?;
            Ok(Some(s.to_string()))
        }
    }
}

/// A checked verification request.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    /// The session id as given (echoed in NOT_FOUND answers); empty when checked by destination.
    pub raw_session_id: String,
    /// The canonical lowercase id; `None` if malformed (answered as NOT_FOUND) or not given.
    pub session_id: Option<String>,
    /// Verify by destination (SPEC §7): the active session of (workspace, `dest`, `purpose`).
    pub by_dest: Option<(String, Purpose)>,
    /// 4–10 ASCII digits.
    pub code: String,
    /// The payment being approved (PSD2): must be the one the code is bound to.
    pub transaction: Option<Transaction>,
}

impl core::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("session_id", &self.session_id)
            .field("by_dest", &self.by_dest.as_ref().map(|(_, p)| p))
            .field("code", &"<redacted>")
            .finish()
    }
}

impl VerifyRequest {
    /// `POST /v1/messaging/otp/verify`: `code` (string of 4–10 digits) and exactly one of
    /// `sessionId` or `dest` + `purpose` (verify by destination).
    pub fn from_v1_json(body: &[u8]) -> Result<VerifyRequest, Error> {
        let obj = json::parse_object(body)?;
        if json::opt_str(&obj, "sessionId")?.is_none()
            && (json::opt_str(&obj, "dest")?.is_some() || json::opt_str(&obj, "purpose")?.is_some())
        {
            let dest = json::req_str(&obj, "dest")?;
            validate::destination("dest", dest)?;
            let purpose = purpose(&obj, "purpose", true)?.unwrap_or(Purpose::Login);
            let code = code(&obj)?;
            return Ok(VerifyRequest {
                raw_session_id: String::new(),
                session_id: None,
                by_dest: Some((dest.to_string(), purpose)),
                code,
                transaction: transaction(&obj)?,
            });
        }
        let raw = json::req_str(&obj, "sessionId")?;
        if json::opt_str(&obj, "dest")?.is_some() || json::opt_str(&obj, "purpose")?.is_some() {
            return Err(Error::invalid(
                "sessionId",
                "give either sessionId or dest and purpose, not both",
            ));
        }
        let code = code(&obj)?;
        Ok(VerifyRequest {
            raw_session_id: raw.to_string(),
            session_id: validate::normalize_session_id(raw),
            by_dest: None,
            code,
            transaction: transaction(&obj)?,
        })
    }

    /// `POST /otp/{id}/verify` with body `{code}`.
    pub fn from_zend_json(path_id: &str, body: &[u8]) -> Result<VerifyRequest, Error> {
        let obj = json::parse_object(body)?;
        let code = code(&obj)?;
        Ok(VerifyRequest {
            raw_session_id: path_id.to_string(),
            session_id: validate::normalize_session_id(path_id),
            by_dest: None,
            code,
            transaction: None,
        })
    }
}

/// `amount`, `currency`, `payee`: all three or none.
fn transaction(obj: &Object) -> Result<Option<Transaction>, Error> {
    Transaction::parse(
        json::opt_str(obj, "amount")?,
        json::opt_str(obj, "currency")?,
        json::opt_str(obj, "payee")?,
    )
}

fn code(obj: &Object) -> Result<String, Error> {
    let code = json::req_str(obj, "code")?;
    if validate::is_code_format(code) {
        Ok(code.to_string())
    } else {
        Err(Error::invalid("code", "must be a string of 4 to 10 digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_request_fields_in_order() {
        let e = IssueRequest::from_v1_json(br#"{"src":"X"}"#).unwrap_err();
        assert_eq!(e.field(), Some("dest"));
        let e =
            IssueRequest::from_v1_json(br#"{"dest":"+233202007745","src":"X","purpose":"login"}"#)
                .unwrap_err();
        assert_eq!(e.field(), Some("purpose"));
        let r = IssueRequest::from_v1_json(
            br#"{"dest":"+233202007745","src":"ZECKTA","purpose":"LOGIN","app":null}"#,
        )
        .unwrap();
        assert_eq!(
            (r.purpose, r.channel, r.app),
            (Purpose::Login, Channel::Sms, None)
        );
        assert_eq!(
            IssueRequest::from_v1_json(b"[1]").unwrap_err().code(),
            "VALIDATION_ERROR"
        );
        assert_eq!(IssueRequest::from_v1_json(b"{").unwrap_err().field(), None);
    }

    #[test]
    fn content_checks() {
        assert_eq!(check_content(None, None), Err(Error::UnsupportedMediaType));
        assert_eq!(
            check_content(Some("text/plain"), Some(1)),
            Err(Error::UnsupportedMediaType)
        );
        assert_eq!(
            check_content(Some("Application/JSON; charset=utf-8"), Some(16 * 1024)),
            Ok(())
        );
        assert_eq!(
            check_content(Some("application/json"), Some(16 * 1024 + 1)),
            Err(Error::PayloadTooLarge)
        );
    }

    #[test]
    fn verify_bodies() {
        let r = VerifyRequest::from_v1_json(br#"{"sessionId":"nope","code":"1234"}"#).unwrap();
        assert_eq!(r.session_id, None);
        let e = VerifyRequest::from_v1_json(br#"{"sessionId":"x","code":123456}"#).unwrap_err();
        assert_eq!(e.field(), Some("code"));
        let e = VerifyRequest::from_v1_json(br#"{"sessionId":"x","code":"12a456"}"#).unwrap_err();
        assert_eq!(e.field(), Some("code"));
    }
}
