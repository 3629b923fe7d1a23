//! Message templates and SMS segment counting.

use crate::error::Error;
use crate::transaction::Transaction;
use crate::validate::{self, Purpose};
use alloc::borrow::Cow;
use alloc::string::String;
use serde::Serialize;

/// The default template (SPEC §3).
pub const DEFAULT_TEMPLATE: &str =
    "{code} is your verification code. It expires in {minutes} minutes.";

/// The default message of a code bound to a payment (PSD2 dynamic linking: the payer sees what
/// the code approves).
pub const DEFAULT_TRANSACTION_TEMPLATE: &str =
    "{code} is your code to approve {amount} {currency} to {payee}. It expires in {minutes} minutes.";

/// Most segments a rendered message may take.
pub const MAX_SEGMENTS: u32 = 3;

/// Longest template accepted, in characters (a 3-segment GSM message is 459 characters; the
/// placeholders can only grow or shrink it a little).
pub const MAX_TEMPLATE_CHARS: usize = 1000;

/// How the message is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// GSM 03.38 7-bit default alphabet (with its extension table).
    Gsm7,
    /// UCS-2 (UTF-16 code units).
    Ucs2,
}

/// Size of a message on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SegmentInfo {
    /// The encoding a handset network would use.
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: u32,
    /// SMS segments: GSM-7 160 single / 153 per part, UCS-2 70 / 67.
    pub segments: u32,
}

/// A rendered message.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The text, containing the code. Send it; never log it.
    pub text: String,
    /// Its size on the air.
    pub info: SegmentInfo,
}

impl core::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Rendered")
            .field("text", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// Checks a template before any code exists: a sane length; none of
/// [`validate::is_hidden_char`] (a newline is allowed); `{code}` exactly once; no digit touching
/// `{code}` and no other run of 4 or more digits (see [`decoy_digits`]).
pub fn check_template(field: &'static str, template: &str) -> Result<(), Error> {
    if template.chars().count() > MAX_TEMPLATE_CHARS {
        return Err(Error::invalid(field, "must be at most 1000 characters"));
    }
    if let Some(message) = validate::hidden_char_problem(template, true) {
        return Err(Error::Validation {
            field: Cow::Borrowed(field),
            message: Cow::Owned(message),
        });
    }
    match template.matches("{code}").count() {
        1 => {}
        0 => return Err(Error::invalid(field, "must contain {code} exactly once")),
        _ => {
            return Err(Error::invalid(
                field,
                "must contain {code} exactly once, not more",
            ))
        }
    }
    match decoy_digits(template) {
        None => Ok(()),
        Some(Decoy::NextToCode) => Err(Error::invalid(
            field,
            "must not have a digit right next to {code} (it would read as part of the code)",
        )),
        Some(Decoy::Run) => Err(Error::invalid(
            field,
            "must not contain a run of 4 or more digits besides {code} (it could be taken for the code)",
        )),
    }
}

/// Longest run of digits a template may show besides the code.
pub const MAX_OTHER_DIGITS: u32 = 3;

/// Digits in a template that could be read as (part of) the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoy {
    /// A digit (or `{minutes}`) directly before or after `{code}`.
    NextToCode,
    /// A run of more than [`MAX_OTHER_DIGITS`] digits elsewhere.
    Run,
}

/// Finds digits that could be taken for the code. A digit is any Unicode number character
/// (`char::is_numeric`: `7`, `٧`, `７`, `⑦`); `{minutes}` counts as 2 digits (it renders 1 to
/// 10); `{app}`, `{purpose}` and other text separate runs. One space, no-break space, `-` or `.`
/// between digits does not (`"000 000"` and `"12-34"` are runs of 6 and 4).
#[must_use]
pub fn decoy_digits(template: &str) -> Option<Decoy> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Unit {
        Code,
        Digits(u32),
        Sep,
        Other,
    }
    let mut prev = Unit::Other;
    // Digits in the current run, and whether the separator just seen continues it.
    let mut run = 0u32;
    let mut bridge = false;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        // `{app}` and `{purpose}` are text like any other (every character of them is `Other`).
        let (unit, len) = if rest.starts_with("{code}") {
            (Unit::Code, 6)
        } else if rest.starts_with("{minutes}") {
            (Unit::Digits(2), 9)
        } else if c.is_numeric() {
            (Unit::Digits(1), c.len_utf8())
        } else if matches!(c, ' ' | '\u{a0}' | '\u{2007}' | '\u{202f}' | '-' | '.') {
            (Unit::Sep, c.len_utf8())
        } else {
            (Unit::Other, c.len_utf8())
        };
        match unit {
            Unit::Code if matches!(prev, Unit::Digits(_)) => return Some(Decoy::NextToCode),
            Unit::Digits(_) if prev == Unit::Code => return Some(Decoy::NextToCode),
            Unit::Digits(n) => {
                let continues = matches!(prev, Unit::Digits(_)) || (prev == Unit::Sep && bridge);
                run = if continues { run.saturating_add(n) } else { n };
                if run > MAX_OTHER_DIGITS {
                    return Some(Decoy::Run);
                }
            }
            Unit::Sep => bridge = matches!(prev, Unit::Digits(_)),
            Unit::Code | Unit::Other => {}
        }
        prev = unit;
        rest = rest.get(len..).unwrap_or("");
    }
    None
}

/// Renders a template: `{code}`, `{minutes}` (= ceil(ttl / 60)), `{app}` (`""` without an app),
/// `{purpose}` (the wire name, e.g. `LOGIN`), `{amount}`, `{currency}`, `{payee}` (the payment a
/// code is bound to; `""` without one); any other `{…}` is left as written. Fails with a 400
/// on `field` if the template is malformed or the text needs more than [`MAX_SEGMENTS`].
pub fn render(
    field: &'static str,
    template: &str,
    code: &str,
    ttl_seconds: u32,
    app: Option<&str>,
    purpose: Purpose,
    tx: Option<&Transaction>,
) -> Result<Rendered, Error> {
    check_template(field, template)?;
    let minutes = ttl_seconds.div_ceil(60);
    let mut text = String::with_capacity(template.len().saturating_add(16));
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let (before, from_brace) = rest.split_at(start);
        text.push_str(before);
        let placeholder = [
            "{code}",
            "{minutes}",
            "{app}",
            "{purpose}",
            "{amount}",
            "{currency}",
            "{payee}",
        ]
        .into_iter()
        .find(|p| from_brace.starts_with(p));
        match placeholder {
            Some(p) => {
                match p {
                    "{code}" => text.push_str(code),
                    "{minutes}" => push_u32(&mut text, minutes),
                    "{app}" => text.push_str(app.unwrap_or("")),
                    "{amount}" => text.push_str(tx.map_or("", |t| t.amount.as_str())),
                    "{currency}" => text.push_str(tx.map_or("", |t| t.currency.as_str())),
                    "{payee}" => text.push_str(tx.map_or("", |t| t.payee.as_str())),
                    _ => text.push_str(purpose.as_str()),
                }
                rest = from_brace.get(p.len()..).unwrap_or("");
            }
            None => {
                text.push('{');
                rest = from_brace.get(1..).unwrap_or("");
            }
        }
    }
    text.push_str(rest);
    let info = segments(&text);
    if info.segments > MAX_SEGMENTS {
        return Err(Error::invalid(
            field,
            "the rendered message must fit in 3 SMS segments",
        ));
    }
    Ok(Rendered { text, info })
}

fn push_u32(s: &mut String, n: u32) {
    use core::fmt::Write as _;
    let _ = write!(s, "{n}");
}

/// GSM 03.38 basic character set.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension table (each costs an escape septet plus itself).
const GSM7_EXTENSION: &str = "\u{0c}^{}\\[~]|€";

/// Septets of each ASCII character in GSM-7 (0: none), made from the two tables above: their
/// ASCII characters are their bytes below 0x80 (every byte of a longer UTF-8 sequence is
/// above). A message is mostly ASCII; a scan of [`GSM7_BASIC`] a character cost 2 % of a Node
/// request (perf).
// Evaluated at compile time: an index out of bounds would fail the build, never panic.
#[allow(clippy::indexing_slicing)]
const GSM7_ASCII: [u8; 128] = {
    let mut table = [0u8; 128];
    let basic = GSM7_BASIC.as_bytes();
    let mut i = 0;
    while i < basic.len() {
        if basic[i] < 0x80 && basic[i] != 0x1b {
            table[basic[i] as usize] = 1;
        }
        i += 1;
    }
    let extension = GSM7_EXTENSION.as_bytes();
    i = 0;
    while i < extension.len() {
        if extension[i] < 0x80 {
            table[extension[i] as usize] = 2;
        }
        i += 1;
    }
    table
};

/// Septets a character takes in GSM-7, or `None` if it has no GSM-7 form.
fn gsm7_septets(c: char) -> Option<u32> {
    match GSM7_ASCII.get(c as usize) {
        Some(&n) => (n > 0).then_some(u32::from(n)),
        None => gsm7_scanned(c),
    }
}

/// [`gsm7_septets`] by a scan of the two alphabets (what [`GSM7_ASCII`] holds for ASCII).
fn gsm7_scanned(c: char) -> Option<u32> {
    if c != '\u{1b}' && GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Segment count of a text: GSM-7 if every character has a GSM-7 form (extension-table
/// characters count 2), else UCS-2 by UTF-16 code units.
#[must_use]
pub fn segments(text: &str) -> SegmentInfo {
    let septets: Option<u32> = text
        .chars()
        .try_fold(0u32, |acc, c| Some(acc.saturating_add(gsm7_septets(c)?)));
    let (encoding, units, single, multi) = match septets {
        Some(n) => (Encoding::Gsm7, n, 160, 153),
        None => {
            let n = text
                .chars()
                .map(|c| c.len_utf16() as u32)
                .fold(0u32, u32::saturating_add);
            (Encoding::Ucs2, n, 70, 67)
        }
    };
    let segments = if units == 0 {
        0
    } else if units <= single {
        1
    } else {
        units.div_ceil(multi)
    };
    SegmentInfo {
        encoding,
        units,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASCII table says what a scan of the two alphabets says, for every ASCII character.
    #[test]
    fn gsm7_ascii_table_matches_the_alphabets() {
        for b in 0u8..0x80 {
            let scanned = gsm7_scanned(char::from(b)).unwrap_or(0);
            assert_eq!(u32::from(GSM7_ASCII[usize::from(b)]), scanned, "U+{b:04X}");
        }
        assert_eq!(gsm7_septets('é'), Some(1));
        assert_eq!(gsm7_septets('€'), Some(2));
        assert_eq!(gsm7_septets('\u{1b}'), None);
        assert_eq!(gsm7_septets('ü'), Some(1));
        assert_eq!(gsm7_septets('ç'), None);
    }

    #[test]
    fn renders_default() {
        let r = render(
            "messageTemplate",
            DEFAULT_TEMPLATE,
            "123456",
            300,
            None,
            Purpose::Login,
            None,
        )
        .unwrap();
        assert_eq!(
            r.text,
            "123456 is your verification code. It expires in 5 minutes."
        );
        assert_eq!(
            r.info,
            SegmentInfo {
                encoding: Encoding::Gsm7,
                units: 58,
                segments: 1
            }
        );
    }

    #[test]
    fn leaves_unknown_placeholders() {
        let r = render(
            "t",
            "{app}: {code} {x} {purpose} {",
            "1",
            61,
            Some("Acme"),
            Purpose::Transaction,
            None,
        )
        .unwrap();
        assert_eq!(r.text, "Acme: 1 {x} TRANSACTION {");
        assert!(render("t", "{code}{code}", "1", 60, None, Purpose::Login, None).is_err());
        assert!(render("t", "no code", "1", 60, None, Purpose::Login, None).is_err());
        let tx = Transaction::parse(Some("10.50"), Some("eur"), Some("Acme Shop"))
            .unwrap()
            .unwrap();
        let r = render(
            "t",
            DEFAULT_TRANSACTION_TEMPLATE,
            "123456",
            300,
            None,
            Purpose::Transaction,
            Some(&tx),
        )
        .unwrap();
        assert_eq!(
            r.text,
            "123456 is your code to approve 10.50 EUR to Acme Shop. It expires in 5 minutes."
        );
    }

    #[test]
    fn refuses_hidden_characters() {
        let t = |s: &str| check_template("messageTemplate", s);
        assert!(t("Your code: {code}\nDo not share it.").is_ok());
        for bad in [
            "Code {code}\u{7}\u{1b}[31m\r\nFake", // the probe, with {code}
            "Code {code}\r\n",
            "Code\t{code}",
            "{code}\u{0}",
            "{code} \u{85}",
            "\u{202e}{code}",
            "{code}\u{2066}x\u{2069}",
            "{code}\u{200f}",
            "{co\u{200b}de} {code}",
            "\u{feff}{code}",
            "{code}\u{2028}",
        ] {
            let e = t(bad).unwrap_err();
            assert_eq!(e.field(), Some("messageTemplate"), "{bad:?}");
            assert!(e.message().contains("U+"), "{bad:?}: {}", e.message());
        }
        assert_eq!(
            t("{code}\u{202e}").unwrap_err().message(),
            "must not contain control characters other than a newline, bidi controls or zero-width characters (U+202E at character 7)"
        );
    }

    #[test]
    fn refuses_decoy_digits() {
        for ok in [
            DEFAULT_TEMPLATE,
            "{app}{code}",
            "{app}: {code} for {purpose}",
            "Code {code}. Valid 10 min, 3 tries.",
            "Call 112 if this was not you: {code}",
            "{code} expires at 9:30",
            "{code} - 1. 2. 3.",
            "{code}\n{minutes} min",
            "Votre code {code} expire dans {minutes} min.",
            "{code} {x} {Code} { {} €",
        ] {
            assert_eq!(decoy_digits(ok), None, "{ok:?}");
            assert!(check_template("t", ok).is_ok(), "{ok:?}");
        }
        for (bad, why) in [
            ("Code {code}. Fake: 000000", Decoy::Run),
            ("{code} 1234", Decoy::Run),
            ("{code} 000 000", Decoy::Run),
            ("{code} 12-34", Decoy::Run),
            ("{code} 12.34", Decoy::Run),
            ("{code} 12\u{a0}34", Decoy::Run),
            ("{code} ١٢٣٤", Decoy::Run),
            ("{code} １２３４", Decoy::Run),
            ("{code} {minutes}{minutes}", Decoy::Run),
            ("{code} 12{minutes}", Decoy::Run),
            ("{code} {1234}", Decoy::Run),
            ("{code}0", Decoy::NextToCode),
            ("1{code}", Decoy::NextToCode),
            ("{code}{minutes}", Decoy::NextToCode),
            ("{minutes}{code}", Decoy::NextToCode),
            ("{code}٧", Decoy::NextToCode),
        ] {
            assert_eq!(decoy_digits(bad), Some(why), "{bad:?}");
            let e = check_template("messageTemplate", bad).unwrap_err();
            assert_eq!(e.field(), Some("messageTemplate"));
        }
        // Two separators end a run; so does any other character.
        assert_eq!(decoy_digits("{code} 12  34"), None);
        assert_eq!(decoy_digits("{code} 12/34"), None);
        assert_eq!(decoy_digits("{code} 12, 34"), None);
        assert_eq!(decoy_digits("{code} 123{app}4"), None);
    }

    #[test]
    fn counts_segments() {
        assert_eq!(segments(&"a".repeat(160)).segments, 1);
        assert_eq!(segments(&"a".repeat(161)).segments, 2);
        assert_eq!(segments(&"€".repeat(80)).units, 160);
        assert_eq!(segments(&"€".repeat(81)).segments, 2);
        assert_eq!(segments(&"é".repeat(70)).encoding, Encoding::Gsm7);
        assert_eq!(segments(&"á".repeat(70)).segments, 1);
        assert_eq!(segments(&"á".repeat(71)).segments, 2);
        assert_eq!(segments("😀").units, 2);
    }
}
