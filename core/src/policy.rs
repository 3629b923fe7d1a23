//! Workspace policy (SPEC §2): defaults, bounds, and PATCH merging.

use crate::error::Error;
use crate::fraud::FraudGuard;
use crate::json::{self, invalid, invalid_owned, Object};
use crate::validate::{self, is_e164, Channel};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The send window per (workspace, destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendWindow {
    /// Sends admitted per window (1–100).
    pub limit: u32,
    /// Window length in seconds (60–86400).
    pub window_seconds: u32,
}

/// A decimal price per SMS segment, for analytics cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// A decimal string: digits, optionally `.` and 1–6 digits.
    pub amount: String,
    /// ISO 4217 code, three capital letters.
    pub currency: String,
}

/// A workspace's policy. `Policy::default()` is SPEC §2's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Digits per code (6–10).
    pub code_length: u8,
    /// Session lifetime (60–600 s).
    pub ttl_seconds: u32,
    /// Verification attempts per session (1–10).
    pub max_attempts: u8,
    /// Reuse an active session for the same (destination, purpose).
    pub reuse: bool,
    /// Sliding send window per destination.
    pub sends_per_destination: SendWindow,
    /// Workspace flood shield (1–100000 sends per minute; counted exactly on every store).
    pub sends_per_workspace_per_minute: u32,
    /// Consecutive failed verifications per destination before a 1 h lock (5–1000).
    pub failure_streak_limit: u32,
    /// Calling-code prefixes allowed as destinations; `None` = all.
    pub allowed_countries: Option<Vec<String>>,
    /// Test destinations with their fixed code (no SMS, not charged, still attempt-limited).
    pub test_numbers: BTreeMap<String, String>,
    /// Price per SMS segment.
    pub price_per_segment: Price,
    /// How long an ended session is kept after expiry (0–2592000 s).
    pub retention_seconds: u32,
    /// Least seconds between two sends of one session (resend, SPEC §7; 0–600).
    #[serde(default = "default_resend_after")]
    pub resend_after_seconds: u32,
    /// Channels tried in order when a send fails definitely (SPEC §7); `None` = no fallback.
    #[serde(default)]
    pub channel_fallback: Option<Vec<Channel>>,
    /// An undelivered or failed delivery receipt for a pending session resends it on the next
    /// channel of `channel_fallback` (SPEC §8); off by default.
    #[serde(default)]
    pub fallback_on_undelivered: bool,
    /// Most the workspace spends on messages per UTC day, in `pricePerSegment`'s currency
    /// (SPEC §9 "Spend cap", [`crate::spend`]); `None` = no cap. At most 9 integer digits.
    #[serde(default)]
    pub daily_spend_limit: Option<Price>,
    /// SMS pumping defence (SPEC §9 "Fraud Guard", [`crate::fraud`]); off by default.
    #[serde(default)]
    pub fraud_guard: FraudGuard,
    /// The Twilio Content template (`HX` + 32 hex) a WhatsApp send through Twilio uses, with the
    /// code as its variable `1` (SPEC §8); `None` = the rendered text as `Body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp_content_sid: Option<String>,
    /// The WhatsApp authentication template a `meta` gateway sends (SPEC §8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp_template: Option<WhatsappTemplate>,
}

/// An approved WhatsApp authentication template, by name and language (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappTemplate {
    /// Template name: 1–512 of `[a-z0-9_]`.
    pub name: String,
    /// Language code (`en`, `en_US`, `pt_BR`): 2–15 of `[A-Za-z_-]`.
    pub language: String,
}

fn default_resend_after() -> u32 {
    30
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            code_length: 6,
            ttl_seconds: 300,
            max_attempts: 5,
            reuse: true,
            sends_per_destination: SendWindow {
                limit: 3,
                window_seconds: 600,
            },
            sends_per_workspace_per_minute: 600,
            failure_streak_limit: 100,
            allowed_countries: None,
            test_numbers: BTreeMap::new(),
            price_per_segment: Price {
                amount: "0".into(),
                currency: "USD".into(),
            },
            retention_seconds: 86_400,
            resend_after_seconds: default_resend_after(),
            channel_fallback: None,
            fallback_on_undelivered: false,
            daily_spend_limit: None,
            fraud_guard: FraudGuard::default(),
            whatsapp_content_sid: None,
            whatsapp_template: None,
        }
    }
}

/// How long a destination stays locked once its failure streak reaches the limit.
pub const DESTINATION_LOCK_SECS: u64 = 3600;

/// The policy keys, in SPEC order.
pub const KEYS: [&str; 18] = [
    "codeLength",
    "ttlSeconds",
    "maxAttempts",
    "reuse",
    "sendsPerDestination",
    "sendsPerWorkspacePerMinute",
    "failureStreakLimit",
    "allowedCountries",
    "testNumbers",
    "pricePerSegment",
    "retentionSeconds",
    "resendAfterSeconds",
    "channelFallback",
    "fallbackOnUndelivered",
    "dailySpendLimit",
    "fraudGuard",
    "whatsappContentSid",
    "whatsappTemplate",
];

fn small<T: TryFrom<u64>>(n: u64) -> Result<T, Error> {
    T::try_from(n).map_err(|_| Error::invalid("policy", "value out of range"))
}

impl Policy {
    /// Applies a PATCH-style `policy` object: each given key replaces its value (nested objects
    /// are replaced whole), then the result is checked as a whole. Unknown keys and
    /// out-of-bounds values are 400s naming `policy.<key>`.
    pub fn patched(&self, patch: &Value) -> Result<Policy, Error> {
        let Value::Object(obj) = patch else {
            return Err(Error::invalid("policy", "must be an object"));
        };
        let mut p = self.clone();
        for (key, v) in obj {
            let field = format!("policy.{key}");
            let f = field.as_str();
            match key.as_str() {
                "codeLength" => p.code_length = small(json::int_in(v, f, 6, 10)?)?,
                "ttlSeconds" => p.ttl_seconds = small(json::int_in(v, f, 60, 600)?)?,
                "maxAttempts" => p.max_attempts = small(json::int_in(v, f, 1, 10)?)?,
                "reuse" => {
                    p.reuse = v
                        .as_bool()
                        .ok_or_else(|| invalid(f, "must be true or false"))?
                }
                "sendsPerDestination" => p.sends_per_destination = send_window(v, f)?,
                "sendsPerWorkspacePerMinute" => {
                    p.sends_per_workspace_per_minute = small(json::int_in(v, f, 1, 100_000)?)?;
                }
                "failureStreakLimit" => {
                    p.failure_streak_limit = small(json::int_in(v, f, 5, 1000)?)?
                }
                "allowedCountries" => p.allowed_countries = allowed_countries(v, f)?,
                "testNumbers" => p.test_numbers = test_numbers(v, f)?,
                "pricePerSegment" => p.price_per_segment = price(v, f)?,
                "retentionSeconds" => {
                    p.retention_seconds = small(json::int_in(v, f, 0, 2_592_000)?)?
                }
                "resendAfterSeconds" => {
                    p.resend_after_seconds = small(json::int_in(v, f, 0, 600)?)?
                }
                "channelFallback" => p.channel_fallback = channel_fallback(v, f)?,
                "fallbackOnUndelivered" => {
                    p.fallback_on_undelivered = v
                        .as_bool()
                        .ok_or_else(|| invalid(f, "must be true or false"))?;
                }
                "dailySpendLimit" => p.daily_spend_limit = spend_limit(v, f)?,
                "fraudGuard" => p.fraud_guard = p.fraud_guard.patched(v, f)?,
                "whatsappContentSid" => p.whatsapp_content_sid = content_sid(v, f)?,
                "whatsappTemplate" => p.whatsapp_template = whatsapp_template(v, f)?,
                _ => return Err(invalid(f, "is not a policy key")),
            }
        }
        p.check()?;
        Ok(p)
    }

    /// Builds a policy from defaults and an optional `policy` value (`null` = defaults).
    pub fn from_json(value: Option<&Value>) -> Result<Policy, Error> {
        match value {
            None | Some(Value::Null) => Ok(Policy::default()),
            Some(v) => Policy::default().patched(v),
        }
    }

    /// Cross-field rules: test-number codes have `codeLength` digits; `dailySpendLimit` is in
    /// `pricePerSegment`'s currency.
    pub fn check(&self) -> Result<(), Error> {
        if let Some(limit) = &self.daily_spend_limit {
            if limit.currency != self.price_per_segment.currency {
                return Err(invalid_owned(
                    "policy.dailySpendLimit.currency",
                    format!(
                        "must be the currency of pricePerSegment ({})",
                        self.price_per_segment.currency
                    ),
                ));
            }
        }
        let len = usize::from(self.code_length);
        for (number, code) in &self.test_numbers {
            if code.len() != len || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid_owned(
                    "policy.testNumbers",
                    format!("the code of {number} must have codeLength ({len}) digits"),
                ));
            }
        }
        if self.fallback_on_undelivered && self.channel_fallback.is_none() {
            return Err(invalid(
                "policy.fallbackOnUndelivered",
                "needs policy.channelFallback (the channels to fall back on)",
            ));
        }
        Ok(())
    }

    /// The fixed code of a test number, if `dest` is one.
    #[must_use]
    pub fn test_code(&self, dest: &str) -> Option<&str> {
        self.test_numbers.get(dest).map(String::as_str)
    }
}

fn send_window(v: &Value, f: &str) -> Result<SendWindow, Error> {
    let Value::Object(o) = v else {
        return Err(invalid(f, "must be an object {limit, windowSeconds}"));
    };
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "limit" | "windowSeconds"))
    {
        return Err(invalid_owned(
            &format!("{f}.{k}"),
            "is not a key of sendsPerDestination".to_string(),
        ));
    }
    let limit = json::get(o, "limit")
        .ok_or_else(|| invalid_owned(&format!("{f}.limit"), "is required".into()))?;
    let window = json::get(o, "windowSeconds")
        .ok_or_else(|| invalid_owned(&format!("{f}.windowSeconds"), "is required".into()))?;
    Ok(SendWindow {
        limit: small(json::int_in(limit, &format!("{f}.limit"), 1, 100)?)?,
        window_seconds: small(json::int_in(
            window,
            &format!("{f}.windowSeconds"),
            60,
            86_400,
        )?)?,
    })
}

fn allowed_countries(v: &Value, f: &str) -> Result<Option<Vec<String>>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => {
            if items.is_empty() || items.len() > 300 {
                return Err(invalid(
                    f,
                    "must be null or a list of 1 to 300 calling-code prefixes",
                ));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(s)
                        if (1..=6).contains(&s.len())
                            && s.bytes().all(|b| b.is_ascii_digit())
                            && !s.starts_with('0') =>
                    {
                        out.push(s.to_string());
                    }
                    _ => {
                        return Err(invalid(
                            f,
                            "each prefix must be 1 to 6 digits, the first not 0, as a string",
                        ))
                    }
                }
            }
            Ok(Some(out))
        }
        _ => Err(invalid(
            f,
            "must be null or a list of calling-code prefixes",
        )),
    }
}

fn channel_fallback(v: &Value, f: &str) -> Result<Option<Vec<Channel>>, Error> {
    const WHAT: &str = "must be null or a list of distinct channels (\"sms\", \"whatsapp\")";
    match v {
        Value::Null => Ok(None),
        Value::Array(items) if !items.is_empty() => {
            let mut out: Vec<Channel> = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str().and_then(Channel::parse) {
                    Some(c) if !out.contains(&c) => out.push(c),
                    _ => return Err(invalid(f, WHAT)),
                }
            }
            Ok(Some(out))
        }
        _ => Err(invalid(f, WHAT)),
    }
}

fn content_sid(v: &Value, f: &str) -> Result<Option<String>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::String(s)
            if s.len() == 34
                && s.starts_with("HX")
                && s.bytes().skip(2).all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(Some(s.clone()))
        }
        _ => Err(invalid(
            f,
            "must be null or a Twilio Content SID (HX and 32 hex digits)",
        )),
    }
}

fn whatsapp_template(v: &Value, f: &str) -> Result<Option<WhatsappTemplate>, Error> {
    const WHAT: &str = "must be null or {name: 1-512 of [a-z0-9_], language: 2-15 of [A-Za-z_-]}";
    match v {
        Value::Null => Ok(None),
        Value::Object(o) => {
            let name = o.get("name").and_then(Value::as_str).unwrap_or_default();
            let language = o
                .get("language")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let name_ok = (1..=512).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            let lang_ok = (2..=15).contains(&language.len())
                && language
                    .bytes()
                    .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-');
            if o.len() != 2 || !name_ok || !lang_ok {
                return Err(invalid(f, WHAT));
            }
            Ok(Some(WhatsappTemplate {
                name: name.into(),
                language: language.into(),
            }))
        }
        _ => Err(invalid(f, WHAT)),
    }
}

impl Policy {
    /// The channels a send on `first` tries after it fails definitely, in order (SPEC §7): the
    /// ones after `first` in `channelFallback`, when `first` is in the list.
    #[must_use]
    pub fn fallbacks_after(&self, first: Channel) -> &[Channel] {
        let Some(list) = self.channel_fallback.as_deref() else {
            return &[];
        };
        match list.iter().position(|c| *c == first) {
            Some(i) => list.get(i.saturating_add(1)..).unwrap_or(&[]),
            None => &[],
        }
    }
}

fn test_numbers(v: &Value, f: &str) -> Result<BTreeMap<String, String>, Error> {
    let Value::Object(o) = v else {
        return Err(invalid(f, "must be an object of E.164 number → code"));
    };
    if o.len() > 100 {
        return Err(invalid(f, "must have at most 100 entries"));
    }
    let mut out = BTreeMap::new();
    for (number, code) in o {
        if !is_e164(number) {
            return Err(invalid(f, "keys must be E.164 phone numbers"));
        }
        // The same rule as a request's `dest`: a test number written with a trunk 0 could
        // never be requested.
        if let Some(problem) = validate::destination_problem(number) {
            return Err(invalid_owned(f, format!("keys {problem}")));
        }
        match code.as_str() {
            Some(c) if (6..=10).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit()) => {
                out.insert(number.clone(), c.to_string());
            }
            _ => return Err(invalid(f, "codes must be strings of 6 to 10 digits")),
        }
    }
    Ok(out)
}

fn price(v: &Value, f: &str) -> Result<Price, Error> {
    let Value::Object(o) = v else {
        return Err(invalid(f, "must be an object {amount, currency}"));
    };
    let o: &Object = o;
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "amount" | "currency"))
    {
        return Err(invalid_owned(
            &format!("{f}.{k}"),
            "is not a key of pricePerSegment".into(),
        ));
    }
    let amount = match json::get(o, "amount") {
        Some(Value::String(s)) if is_decimal(s) => s.clone(),
        _ => {
            return Err(invalid_owned(
                &format!("{f}.amount"),
                "must be a decimal string such as \"0.0075\"".into(),
            ))
        }
    };
    let currency = match json::get(o, "currency") {
        Some(Value::String(s)) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) => {
            s.clone()
        }
        _ => {
            return Err(invalid_owned(
                &format!("{f}.currency"),
                "must be a three-letter ISO 4217 code".into(),
            ))
        }
    };
    Ok(Price { amount, currency })
}

/// `dailySpendLimit`: `null`, or `{amount, currency}` like a price with at most 9 integer
/// digits (so every store counts it exactly in micro-units, [`crate::spend::MAX_EXACT`]).
fn spend_limit(v: &Value, f: &str) -> Result<Option<Price>, Error> {
    if v.is_null() {
        return Ok(None);
    }
    let limit = price(v, f).map_err(|e| match e.field() {
        Some(field) if field.ends_with(".amount") || field.ends_with(".currency") => e,
        Some(field) if field != f => invalid_owned(field, "is not a key of dailySpendLimit".into()),
        _ => invalid(f, "must be null or an object {amount, currency}"),
    })?;
    if limit
        .amount
        .split('.')
        .next()
        .is_some_and(|int| int.len() > 9)
    {
        return Err(invalid_owned(
            &format!("{f}.amount"),
            "must be below 1000000000".into(),
        ));
    }
    Ok(Some(limit))
}

/// Digits (1–12), optionally `.` and 1–6 digits.
fn is_decimal(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits =
        |x: &str, max: usize| (1..=max).contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit());
    digits(int, 12) && frac.is_none_or(|f| digits(f, 6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_merges_and_checks() {
        let p = Policy::default()
            .patched(&json!({"ttlSeconds": 60, "maxAttempts": 3}))
            .unwrap();
        assert_eq!((p.ttl_seconds, p.max_attempts, p.code_length), (60, 3, 6));
        let e = p.patched(&json!({"ttlSeconds": 601})).unwrap_err();
        assert_eq!(e.field(), Some("policy.ttlSeconds"));
        let e = p.patched(&json!({"bogus": 1})).unwrap_err();
        assert_eq!(e.field(), Some("policy.bogus"));
        let e = p
            .patched(&json!({"testNumbers": {"+15005550006": "1234567"}}))
            .unwrap_err();
        assert_eq!(e.field(), Some("policy.testNumbers"));
        let e = p
            .patched(&json!({"sendsPerDestination": {"limit": 0, "windowSeconds": 60}}))
            .unwrap_err();
        assert_eq!(e.field(), Some("policy.sendsPerDestination.limit"));
        assert!(p
            .patched(&json!({"pricePerSegment": {"amount": "0.0075", "currency": "EUR"}}))
            .is_ok());
        assert!(p
            .patched(&json!({"pricePerSegment": {"amount": "1e3", "currency": "EUR"}}))
            .is_err());
    }

    #[test]
    fn test_numbers_follow_the_destination_rule() {
        let p = Policy::default();
        assert!(p
            .patched(&json!({"testNumbers": {"+15005550006": "123456", "+390212345678": "654321"}}))
            .is_ok());
        for bad in ["+2330202007745", "+112025550123", "+4407700900123"] {
            let e = p
                .patched(&json!({ "testNumbers": { bad: "123456" } }))
                .unwrap_err();
            assert_eq!(e.field(), Some("policy.testNumbers"), "{bad}");
            assert!(
                e.message().starts_with("keys must not have a trunk"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn serde_round_trip() {
        let p = Policy::default();
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&s).unwrap(), p);
    }
}
