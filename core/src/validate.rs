//! Field rules shared by both dialects: destinations, sender names, purposes, channels, apps, ids, codes.

use crate::error::Error;
use alloc::borrow::Cow;
use alloc::format;
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

/// Strict E.164: `+`, then 8–15 digits, the first 1–9. The syntax only: a destination must also
/// pass [`is_destination`].
#[must_use]
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// ITU-T E.164 country calling codes, as in libphonenumber's `PhoneNumberMetadata.xml`
/// (`countryCode` attributes; printed by `scripts/gen-calling-codes`). The codes are prefix-free:
/// at most one of a number's first 1, 2 or 3 digits is in the table.
const CALLING_CODES: [u16; 215] = [
    1, 7, 20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54,
    55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98, 211,
    212, 213, 216, 218, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234,
    235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253,
    254, 255, 256, 257, 258, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 290, 291, 297, 298,
    299, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 370, 371, 372, 373, 374, 375, 376, 377,
    378, 380, 381, 382, 383, 385, 386, 387, 389, 420, 421, 423, 500, 501, 502, 503, 504, 505, 506,
    507, 508, 509, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 670, 672, 673, 674, 675, 676,
    677, 678, 679, 680, 681, 682, 683, 685, 686, 687, 688, 689, 690, 691, 692, 800, 808, 850, 852,
    853, 855, 856, 870, 878, 880, 881, 882, 883, 886, 888, 960, 961, 962, 963, 964, 965, 966, 967,
    968, 970, 971, 972, 973, 974, 975, 976, 977, 979, 992, 993, 994, 995, 996, 998,
];

/// The calling codes whose fixed-line or mobile numbers start with 0 in international format
/// too (libphonenumber's "Italian leading zero"), each with the digits that may follow that 0.
/// Everywhere else a 0 right after the code is a trunk prefix: `+233 0…` is a second spelling
/// of `+233 …`. Printed by `scripts/gen-calling-codes`, which also says why Gabon (+241, whose
/// 0-numbers were switched off in 2024) is not here.
const LEADING_ZERO: [(&str, &str); 9] = [
    ("39", "123456789"),   // Italy, Vatican: 0[1-9] fixed lines
    ("225", "157"),        // Côte d'Ivoire: 0[157] mobiles (10 digits since 2021)
    ("226", "1234567"),    // Burkina Faso: 0[1-7] mobiles
    ("229", "1"),          // Benin: 01 (10 digits since 2024)
    ("242", "12456"),      // Republic of the Congo: 0[12456] mobiles
    ("250", "6"),          // Rwanda: 06 fixed lines (mobiles are 7…: +250 07… is a trunk 0)
    ("378", "5"),          // San Marino: 0549 fixed lines
    ("881", "0123456789"), // Global Mobile Satellite System
    ("992", "0123456789"), // Tajikistan: 0… mobiles
];

/// The country calling code a number's digits (without `+`) start with, if it is assigned.
#[must_use]
pub fn calling_code(digits: &str) -> Option<&str> {
    let mut code = 0u16;
    for (n, b) in digits.bytes().take(3).enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        code = code
            .wrapping_mul(10)
            .wrapping_add(u16::from(b.wrapping_sub(b'0')));
        if CALLING_CODES.binary_search(&code).is_ok() {
            return digits.get(..=n);
        }
    }
    None
}

/// Why `s` (strict E.164) is not how a carrier writes the number: a trunk prefix right after the
/// calling code. A `0` where the country's numbers do not start with 0 (or where the digit after
/// it does not fit), and a `1` after `+1` (NANP's trunk prefix: area codes start with 2–9).
/// `None` when the number is fine or its calling code is not assigned.
fn trunk_prefix(digits: &str) -> Option<String> {
    let cc = calling_code(digits)?;
    let national = digits.get(cc.len()..)?.as_bytes();
    let first = *national.first()?;
    let zero = LEADING_ZERO.iter().find(|(c, _)| *c == cc).map(|(_, d)| *d);
    let fine = match first {
        b'0' => zero.is_some_and(|d| national.get(1).is_some_and(|n| d.as_bytes().contains(n))),
        b'1' => cc != "1",
        _ => true,
    };
    if fine {
        return None;
    }
    Some(match zero {
        Some(d) => format!(
            "must not have a trunk 0 after the country code (+{cc} numbers that start with 0 go on with one of {d})"
        ),
        None => {
            let t = char::from(first);
            format!("must not have a trunk {t} after the country code (+{cc} {t}… is written +{cc} …)")
        }
    })
}

/// What is wrong with a destination number, in words; `None` if it is acceptable.
#[must_use]
pub fn destination_problem(s: &str) -> Option<Cow<'static, str>> {
    if !is_e164(s) {
        return Some(Cow::Borrowed(
            "must be an E.164 phone number: + then 8 to 15 digits, the first not 0",
        ));
    }
    trunk_prefix(s.get(1..)?).map(Cow::Owned)
}

/// A destination as the API accepts it: strict E.164, without a trunk prefix after the calling
/// code, so that one phone has one spelling (and one send window, one failure streak).
#[must_use]
pub fn is_destination(s: &str) -> bool {
    destination_problem(s).is_none()
}

/// Checks a destination number for `field`.
pub fn destination(field: &'static str, s: &str) -> Result<(), Error> {
    match destination_problem(s) {
        None => Ok(()),
        Some(message) => Err(Error::Validation {
            field: Cow::Borrowed(field),
            message,
        }),
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

/// Characters that must not reach a phone in a message: C0 controls (`\n` only where
/// `newline` is allowed; `\r`, tab and ESC never), DEL, C1 controls, the bidi controls
/// (embeddings, overrides, isolates, marks), zero-width and other invisible format characters,
/// and the Unicode line and paragraph separators. They let a caller hide or reorder text on the
/// screen (`"Code 387653\u{1b}[31m\r\nFake: 000000"`).
#[must_use]
pub fn is_hidden_char(c: char, newline: bool) -> bool {
    match c {
        '\n' => !newline,
        '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        '\u{061c}' | '\u{180e}' | '\u{feff}' => true,
        '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' => true,
        '\u{fff9}'..='\u{fffb}' => true,
        _ => false,
    }
}

/// The first character of `s` that [`is_hidden_char`] refuses, as a message naming its code
/// point and position (1-based, in characters).
pub(crate) fn hidden_char_problem(s: &str, newline: bool) -> Option<String> {
    let (i, c) = s
        .chars()
        .enumerate()
        .find(|(_, c)| is_hidden_char(*c, newline))?;
    let what = if newline {
        "control characters other than a newline"
    } else {
        "control characters or newlines"
    };
    Some(format!(
        "must not contain {what}, bidi controls or zero-width characters (U+{:04X} at character {})",
        u32::from(c),
        i.saturating_add(1)
    ))
}

/// Checks an `app` label: ≤ 64 characters, none of [`is_hidden_char`] (a newline included: the
/// label is rendered into the SMS through `{app}`).
pub fn app(field: &'static str, s: &str) -> Result<(), Error> {
    if s.chars().count() > MAX_APP_CHARS {
        return Err(Error::invalid(field, "must be at most 64 characters"));
    }
    if let Some(message) = hidden_char_problem(s, false) {
        return Err(Error::Validation {
            field: Cow::Borrowed(field),
            message: Cow::Owned(message),
        });
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
    use alloc::string::ToString;

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
    fn calling_code_table() {
        assert!(
            CALLING_CODES.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        for a in CALLING_CODES {
            for b in CALLING_CODES {
                let (a, b) = (a.to_string(), b.to_string());
                assert!(a == b || !b.starts_with(&a), "{a} is a prefix of {b}");
            }
        }
        for (code, digits) in LEADING_ZERO {
            assert!(CALLING_CODES.contains(&code.parse().unwrap()), "{code}");
            assert!(!digits.is_empty(), "{code}");
            assert!(digits.as_bytes().windows(2).all(|w| w[0] < w[1]), "{code}");
            assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{code}");
        }
        assert_eq!(calling_code("233202007745"), Some("233"));
        assert_eq!(calling_code("12025550123"), Some("1"));
        assert_eq!(calling_code("447700900123"), Some("44"));
        assert_eq!(calling_code("3902123456"), Some("39"));
        assert_eq!(calling_code("2812345678"), None, "28x is spare");
    }

    #[test]
    fn one_number_one_spelling() {
        // The three spellings of one Ghanaian number: only the carrier's is accepted.
        assert!(is_destination("+233202007745"));
        assert!(!is_destination("+2330202007745"));
        assert!(!is_destination("+23300202007745"));
        let e = destination("dest", "+2330202007745").unwrap_err();
        assert_eq!(e.field(), Some("dest"));
        assert_eq!(e.code(), "VALIDATION_ERROR");
        assert_eq!(
            e.message(),
            "must not have a trunk 0 after the country code (+233 0… is written +233 …)"
        );
        let e = destination("phone_number", "+2330202007745").unwrap_err();
        assert_eq!(e.field(), Some("phone_number"));
        // Numbers whose plan starts with 0 in international format too.
        for ok in [
            "+390212345678",  // Italy, Milan landline
            "+393123456789",  // Italy, mobile
            "+390669812345",  // Vatican
            "+3780549886377", // San Marino landline
            "+2250712345678", // Côte d'Ivoire, Orange mobile
            "+2250512345678", // Côte d'Ivoire, MTN mobile
            "+2252721234567", // Côte d'Ivoire, fixed line
            "+242061234567",  // Republic of the Congo, mobile
            "+2290195123456", // Benin, 10 digits since 2024
            "+22670123456",   // Burkina Faso
            "+22601234567",   // Burkina Faso, 0[1-7] mobile
            "+25006123456",   // Rwanda, 06 fixed line
            "+250720123456",  // Rwanda, mobile
            "+992012345678",  // Tajikistan
            "+24166123456",   // Gabon, 9-digit plan without its 0
            "+15005550006",   // NANP test number
            "+12025550123",   // NANP
            "+447700900123",  // UK mobile without the trunk 0
            "+2812345678",    // an unassigned code: no table, no trunk rule
        ] {
            assert!(is_destination(ok), "{ok}: {:?}", destination_problem(ok));
        }
        for (bad, cc) in [
            ("+4407700900123", "+44 0"),
            ("+33061234567", "+33 0"),
            ("+9109876543210", "+91 0"),
            ("+70912345678", "+7 0"),
            ("+2410661234567", "+241 0"), // Gabon: the 0 is a trunk prefix since 2024
            ("+2500788123456", "+250"),   // Rwanda mobile with its trunk 0
            ("+3900212345678", "+39"),    // Italy: a second 0
            ("+2250012345678", "+225"),   // Côte d'Ivoire: 00…
            ("+2250212345678", "+225"),   // Côte d'Ivoire: 02… is no range
            ("+10202555012", "+1 0"),
            ("+112025550123", "+1 1"), // NANP's trunk 1
        ] {
            let problem = destination_problem(bad).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(
                problem.starts_with("must not have a trunk"),
                "{bad}: {problem}"
            );
            assert!(problem.contains(cc), "{bad}: {problem}");
        }
        assert_eq!(
            destination_problem("+2250212345678").as_deref(),
            Some("must not have a trunk 0 after the country code (+225 numbers that start with 0 go on with one of 157)")
        );
        assert!(destination_problem("+0233202007745")
            .is_some_and(|p| p.starts_with("must be an E.164 phone number")));
    }

    #[test]
    fn a_trunk_zero_is_refused_for_every_code_without_zero_numbers() {
        for code in CALLING_CODES {
            let cc = code.to_string();
            let pad = |first: &str| {
                let mut s = alloc::format!("+{cc}{first}");
                while s.len() < 12 {
                    s.push('5');
                }
                s
            };
            assert!(is_destination(&pad("2")), "{}", pad("2"));
            let zero = LEADING_ZERO.iter().find(|(c, _)| *c == cc);
            for d in '0'..='9' {
                let n = pad(&alloc::format!("0{d}"));
                let ok = zero.is_some_and(|(_, digits)| digits.contains(d));
                assert_eq!(is_destination(&n), ok, "{n}");
            }
        }
    }

    #[test]
    fn hidden_characters() {
        for c in [
            '\0', '\u{7}', '\t', '\r', '\u{1b}', '\u{7f}', '\u{80}', '\u{85}', '\u{9f}', '\u{61c}',
            '\u{200b}', '\u{200c}', '\u{200d}', '\u{200e}', '\u{200f}', '\u{2028}', '\u{2029}',
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2060}', '\u{2066}',
            '\u{2067}', '\u{2068}', '\u{2069}', '\u{feff}',
        ] {
            assert!(is_hidden_char(c, true), "{:04X}", u32::from(c));
            assert!(is_hidden_char(c, false), "{:04X}", u32::from(c));
        }
        assert!(!is_hidden_char('\n', true));
        assert!(is_hidden_char('\n', false));
        for c in ['a', ' ', 'é', 'ß', '€', 'م', '漢', '😀', '\u{a0}', '\u{ad}'] {
            assert!(!is_hidden_char(c, false), "{c}");
        }
    }

    #[test]
    fn apps() {
        assert!(app("app", "Acme Pay 2").is_ok());
        assert!(app("app", "شركة").is_ok());
        for bad in [
            "a\u{7}b",
            "a\nb",
            "a\rb",
            "\u{202e}kcaB",
            "Ac\u{200b}me",
            "\u{feff}Acme",
        ] {
            let e = app("app", bad).unwrap_err();
            assert_eq!(e.field(), Some("app"), "{bad:?}");
        }
        assert_eq!(
            app("app", "Acme\u{202e}").unwrap_err().message(),
            "must not contain control characters or newlines, bidi controls or zero-width characters (U+202E at character 5)"
        );
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
