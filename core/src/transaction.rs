//! PSD2 dynamic linking (SPEC §7): a code for purpose `TRANSACTION` may be bound to an `amount`,
//! a `currency` and a `payee`. They go into the code's HMAC ([`crate::hash::code_hash_v2`]),
//! into the message (`{amount}`, `{currency}`, `{payee}`) and into the status views; a verify
//! must carry the same three (the amount compared as a decimal: `"10.5"` = `"10.50"`), or it is
//! INVALID and consumes an attempt — a code approves this payment and no other.

use crate::error::Error;
use crate::validate;
use alloc::borrow::Cow;
use alloc::string::{String, ToString};
use serde::{Deserialize, Serialize};

/// Most digits an amount may have, and after the point.
pub const MAX_AMOUNT_DIGITS: usize = 18;
/// Most digits after the point.
pub const MAX_AMOUNT_DECIMALS: usize = 4;
/// Most characters of a payee.
pub const MAX_PAYEE_CHARS: usize = 64;

/// The payment a code is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transaction {
    /// As given (a decimal string), shown in the message and the status.
    pub amount: String,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// Who is paid (1–64 characters, no hidden characters).
    pub payee: String,
}

impl Transaction {
    /// Checks the three values (field names as in the body): all three or none of them.
    pub fn parse(
        amount: Option<&str>,
        currency: Option<&str>,
        payee: Option<&str>,
    ) -> Result<Option<Transaction>, Error> {
        let (amount, currency, payee) = match (amount, currency, payee) {
            (None, None, None) => return Ok(None),
            (Some(a), Some(c), Some(p)) => (a, c, p),
            (None, _, _) => return Err(all_three("amount")),
            (_, None, _) => return Err(all_three("currency")),
            (_, _, None) => return Err(all_three("payee")),
        };
        if canonical_amount(amount).is_none() {
            return Err(Error::invalid(
                "amount",
                "must be a decimal string of at most 18 digits, 4 after the point (e.g. \"10.50\")",
            ));
        }
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(Error::invalid(
                "currency",
                "must be an ISO 4217 code of 3 letters (e.g. \"EUR\")",
            ));
        }
        let chars = payee.chars().count();
        if chars == 0 || chars > MAX_PAYEE_CHARS || payee.trim().is_empty() {
            return Err(Error::invalid("payee", "must be 1 to 64 characters"));
        }
        if let Some(message) = validate::hidden_char_problem(payee, false) {
            return Err(Error::Validation {
                field: Cow::Borrowed("payee"),
                message: Cow::Owned(message),
            });
        }
        Ok(Some(Transaction {
            amount: amount.to_string(),
            currency: currency.to_ascii_uppercase(),
            payee: payee.to_string(),
        }))
    }

    /// The amount as the HMAC binds it: no leading zeros, no trailing zeros after the point, no
    /// point without decimals (`"010.50"` → `"10.5"`, `"3.000"` → `"3"`).
    #[must_use]
    pub fn canonical_amount(&self) -> String {
        canonical_amount(&self.amount).unwrap_or_default()
    }
}

/// Whether two requests approve the same payment (or both none): the amount compared as a
/// decimal. A session bound to another payment is never reused for a request.
#[must_use]
pub fn same_payment(a: Option<&Transaction>, b: Option<&Transaction>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.canonical_amount() == b.canonical_amount()
                && a.currency == b.currency
                && a.payee == b.payee
        }
        _ => false,
    }
}

fn all_three(missing: &'static str) -> Error {
    Error::invalid(
        missing,
        "is required with the others: give amount, currency and payee together, or none",
    )
}

/// The canonical form of a valid amount, `None` if it is not one.
#[must_use]
pub fn canonical_amount(s: &str) -> Option<String> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) {
        return None;
    }
    if let Some(f) = frac {
        if !digits(f) || f.len() > MAX_AMOUNT_DECIMALS {
            return None;
        }
    }
    if int.len().saturating_add(frac.map_or(0, str::len)) > MAX_AMOUNT_DIGITS {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.map_or("", |f| f.trim_end_matches('0'));
    let mut out = String::from(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_compare_as_decimals() {
        for (given, canonical) in [
            ("10.50", "10.5"),
            ("10.5", "10.5"),
            ("010", "10"),
            ("3.000", "3"),
            ("0", "0"),
            ("0.0001", "0.0001"),
            ("000.10", "0.1"),
            ("123456789012345678", "123456789012345678"),
        ] {
            assert_eq!(
                canonical_amount(given).as_deref(),
                Some(canonical),
                "{given}"
            );
        }
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "-1",
            "+1",
            "1e3",
            "1,5",
            "1.23456",
            " 1",
            "١٢",
            "1234567890123456789",
            "12345678901234567.89",
        ] {
            assert_eq!(canonical_amount(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn all_three_or_none_with_fields_named() {
        assert_eq!(Transaction::parse(None, None, None), Ok(None));
        let e = Transaction::parse(Some("1"), None, Some("Shop")).unwrap_err();
        assert_eq!(e.field(), Some("currency"));
        let e = Transaction::parse(Some("1"), Some("EURO"), Some("Shop")).unwrap_err();
        assert_eq!(e.field(), Some("currency"));
        let e = Transaction::parse(Some("1"), Some("eur"), Some("Shop\u{202e}")).unwrap_err();
        assert_eq!(e.field(), Some("payee"));
        let t = Transaction::parse(Some("10.50"), Some("eur"), Some("Acme Shop"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.currency.as_str(), t.canonical_amount().as_str()),
            ("EUR", "10.5")
        );
    }
}
