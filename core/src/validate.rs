//! Field rules shared by both dialects: destinations, sender names, purposes, channels, apps, ids, codes.

use crate::error::Error;
use alloc::string::String;
use core::fmt;
use serde::{Deserialize, Serialize};

/// Why a code is being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum Purpose {
    Login,
    PasswordReset,
    Transaction,
    DeviceVerification,
    EmailVerification,
    AccountRecovery,
    KycVerification,
}

impl Purpose {
    /// Every purpose, in SPEC order.
    pub const ALL: [Purpose; 7] = [
        Purpose::Login,
        Purpose::PasswordReset,
        Purpose::Transaction,
        Purpose::DeviceVerification,
        Purpose::EmailVerification,
        Purpose::AccountRecovery,
        Purpose::KycVerification,
    ];

    /// The wire name (`LOGIN`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Login => "LOGIN",
            Purpose::PasswordReset => "PASSWORD_RESET",
            Purpose::Transaction => "TRANSACTION",
            Purpose::DeviceVerification => "DEVICE_VERIFICATION",
            Purpose::EmailVerification => "EMAIL_VERIFICATION",
            Purpose::AccountRecovery => "ACCOUNT_RECOVERY",
            Purpose::KycVerification => "KYC_VERIFICATION",
        }
    }

    /// Parses a wire name exactly (case-sensitive, as Twilio's enums are).
    #[must_use]
    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the code travels.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Channel {
    #[default]
    Sms,
    Whatsapp,
}

impl Channel {
    /// The wire name (`sms`, `whatsapp`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
        }
    }

    /// Parses a wire name exactly.
    #[must_use]
    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "sms" => Some(Channel::Sms),
            "whatsapp" => Some(Channel::Whatsapp),
            _ => None,
        }
    }
}

/// Maximum length of `app`, in characters.
pub const MAX_APP_CHARS: usize = 64;

/// Strict E.164: `+`, then 8–15 digits, the first 1–9.
#[must_use]
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Checks a destination number for `field`.
pub fn destination(field: &'static str, s: &str) -> Result<(), Error> {
    if is_e164(s) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be an E.164 phone number: + then 8 to 15 digits, the first not 0",
        ))
    }
}

/// A sender name: an alphanumeric sender ID (1–11 of `[A-Za-z0-9 ]`, not only spaces) or an E.164 number.
#[must_use]
pub fn is_sender_name(s: &str) -> bool {
    if s.starts_with('+') {
        return is_e164(s);
    }
    (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && s.bytes().any(|b| b != b' ')
}

/// Checks a sender name for `field`.
pub fn sender(field: &'static str, s: &str) -> Result<(), Error> {
    if is_sender_name(s) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be an alphanumeric sender ID (1 to 11 letters, digits or spaces) or an E.164 number",
        ))
    }
}

/// Checks an `app` label: ≤ 64 characters, no control characters.
pub fn app(field: &'static str, s: &str) -> Result<(), Error> {
    if s.chars().count() > MAX_APP_CHARS {
        return Err(Error::invalid(field, "must be at most 64 characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// A workspace id: 1–64 of `[A-Za-z0-9_-]`.
#[must_use]
pub fn is_workspace_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A session id in canonical UUID form (either hex case), lowercased; `None` if malformed.
/// A malformed id is answered as `NOT_FOUND`, never as a validation error.
#[must_use]
pub fn normalize_session_id(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let ok = if matches!(i, 8 | 13 | 18 | 23) {
            *c == b'-'
        } else {
            c.is_ascii_hexdigit()
        };
        if !ok {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

/// A code as the API accepts it: 4–10 ASCII digits. A well-formed code of the wrong length is
/// simply wrong at verification, not malformed.
#[must_use]
pub fn is_code_format(s: &str) -> bool {
    (4..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Does `dest` start with one of the calling-code prefixes? (`None` = every country.)
#[must_use]
pub fn country_allowed(dest: &str, allowed: Option<&[String]>) -> bool {
    match allowed {
        None => true,
        Some(prefixes) => {
            let digits = dest.strip_prefix('+').unwrap_or(dest);
            prefixes.iter().any(|p| digits.starts_with(p.as_str()))
        }
    }
}

/// Masks a destination: keeps `+`, the first 3 and the last 4 digits (`+233202007745` → `+233*****7745`).
#[must_use]
pub fn mask_destination(dest: &str) -> String {
    let digits = dest.strip_prefix('+').unwrap_or(dest);
    let n = digits.chars().count();
    let mut out = String::with_capacity(dest.len());
    if dest.starts_with('+') {
        out.push('+');
    }
    for (i, c) in digits.chars().enumerate() {
        let keep = i < 3 || i.saturating_add(4) >= n;
        out.push(if keep { c } else { '*' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164() {
        for ok in [
            "+12025550123",
            "+23320200774",
            "+123456789012345",
            "+12345678",
        ] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "12025550123",
            "+02025550123",
            "+1234567",
            "+1234567890123456",
            "+1202555012a",
            "+",
            "",
            "+１２３４５６７８",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn masks() {
        assert_eq!(mask_destination("+233202007745"), "+233*****7745");
        assert_eq!(mask_destination("+12345678"), "+123*5678");
    }

    #[test]
    fn session_ids() {
        assert_eq!(
            normalize_session_id("FEAB6011-2469-4804-ACE5-EE9DCB5B9EF2").as_deref(),
            Some("feab6011-2469-4804-ace5-ee9dcb5b9ef2")
        );
        assert_eq!(
            normalize_session_id("feab6011-2469-4804-ace5-ee9dcb5b9ef"),
            None
        );
        assert_eq!(
            normalize_session_id("../../etc/passwd-aaaaaaaaaaaaaaaaaaaa"),
            None
        );
    }

    #[test]
    fn senders() {
        assert!(is_sender_name("Zeckta"));
        assert!(is_sender_name("My Bank 01"));
        assert!(is_sender_name("+12025550123"));
        assert!(!is_sender_name("TooLongSender"));
        assert!(!is_sender_name("   "));
        assert!(!is_sender_name("Bad-Name"));
    }
}
