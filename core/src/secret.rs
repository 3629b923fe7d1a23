//! Secrets as newtypes whose `Debug` never shows the value.

use crate::error::Error;
use alloc::string::String;
use core::fmt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Minimum pepper length in bytes (SPEC §6).
pub const MIN_PEPPER_BYTES: usize = 32;

/// The server-wide HMAC key (`OTP_PEPPER`). Holds the keyed HMAC state, so hashing a code
/// costs two SHA-256 compressions instead of four.
#[derive(Clone)]
pub struct Pepper {
    mac: Hmac<Sha256>,
}

impl Pepper {
    /// Accepts the UTF-8 bytes of `OTP_PEPPER`; refuses fewer than 32 bytes.
    pub fn new(bytes: &[u8]) -> Result<Pepper, Error> {
        if bytes.len() < MIN_PEPPER_BYTES {
            return Err(Error::Misconfigured {
                message: "OTP_PEPPER must be set to at least 32 bytes".into(),
            });
        }
        // HMAC accepts keys of any length; this cannot fail.
        let mac = Hmac::<Sha256>::new_from_slice(bytes).map_err(|_| Error::Misconfigured {
            message: "OTP_PEPPER is unusable".into(),
        })?;
        Ok(Pepper { mac })
    }

    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

/// A one-time code in clear. Exists only between generation and the SMS; never stored or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

impl Code {
    pub(crate) fn new(digits: String) -> Code {
        Code(digits)
    }

    /// The digits, for rendering the message that carries them. Handle with care.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Number of digits.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a generated code.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code(<{} digits redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn debug_is_redacted() {
        let p = Pepper::new(b"0123456789abcdef0123456789abcdef-secret").unwrap();
        assert!(!format!("{p:?}").contains("secret"));
        let c = Code::new("123456".into());
        assert_eq!(format!("{c:?}"), "Code(<6 digits redacted>)");
        assert!(Pepper::new(b"short").is_err());
    }
}
