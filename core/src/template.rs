//! Message templates and SMS segment counting.

use crate::error::Error;
use crate::validate::Purpose;
use alloc::string::String;
use serde::Serialize;

/// The default template (SPEC §3).
pub const DEFAULT_TEMPLATE: &str =
    "{code} is your verification code. It expires in {minutes} minutes.";

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

/// Checks a template before any code exists: `{code}` exactly once, a sane length, no NUL.
pub fn check_template(field: &'static str, template: &str) -> Result<(), Error> {
    if template.chars().count() > MAX_TEMPLATE_CHARS {
        return Err(Error::invalid(field, "must be at most 1000 characters"));
    }
    if template.contains('\0') {
        return Err(Error::invalid(field, "must not contain NUL characters"));
    }
    match template.matches("{code}").count() {
        1 => Ok(()),
        0 => Err(Error::invalid(field, "must contain {code} exactly once")),
        _ => Err(Error::invalid(
            field,
            "must contain {code} exactly once, not more",
        )),
    }
}

/// Renders a template: `{code}`, `{minutes}` (= ceil(ttl / 60)), `{app}` (`""` without an app),
/// `{purpose}` (the wire name, e.g. `LOGIN`); any other `{…}` is left as written. Fails with a 400
/// on `field` if the template is malformed or the text needs more than [`MAX_SEGMENTS`].
pub fn render(
    field: &'static str,
    template: &str,
    code: &str,
    ttl_seconds: u32,
    app: Option<&str>,
    purpose: Purpose,
) -> Result<Rendered, Error> {
    check_template(field, template)?;
    let minutes = ttl_seconds.div_ceil(60);
    let mut text = String::with_capacity(template.len().saturating_add(16));
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let (before, from_brace) = rest.split_at(start);
        text.push_str(before);
        let placeholder = ["{code}", "{minutes}", "{app}", "{purpose}"]
            .into_iter()
            .find(|p| from_brace.starts_with(p));
        match placeholder {
            Some(p) => {
                match p {
                    "{code}" => text.push_str(code),
                    "{minutes}" => push_u32(&mut text, minutes),
                    "{app}" => text.push_str(app.unwrap_or("")),
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

/// Septets a character takes in GSM-7, or `None` if it has no GSM-7 form.
fn gsm7_septets(c: char) -> Option<u32> {
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

    #[test]
    fn renders_default() {
        let r = render(
            "messageTemplate",
            DEFAULT_TEMPLATE,
            "123456",
            300,
            None,
            Purpose::Login,
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
        )
        .unwrap();
        assert_eq!(r.text, "Acme: 1 {x} TRANSACTION {");
        assert!(render("t", "{code}{code}", "1", 60, None, Purpose::Login).is_err());
        assert!(render("t", "no code", "1", 60, None, Purpose::Login).is_err());
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
