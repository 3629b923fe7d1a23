//! Code hashing (SPEC §4):
//! `HMAC-SHA256(pepper, "otpkit/v1" ‖ f(workspaceId) ‖ f(sessionId) ‖ f(purpose) ‖ f(code))`,
//! `f(x)` = 4-byte big-endian length of x ‖ x. Compared in constant time. A code bound to a
//! payment (SPEC §7, PSD2 dynamic linking) uses the v2 framing: `"otpkit/v2" ‖ … ‖ f(code) ‖
//! f(amount) ‖ f(currency) ‖ f(payee)`, the amount in its canonical decimal form.

use crate::secret::Pepper;
use crate::validate::Purpose;
use alloc::string::String;
use hmac::Mac;
use subtle::ConstantTimeEq;

/// The domain-separation prefix.
pub const DOMAIN: &[u8] = b"otpkit/v1";

fn framed(mac: &mut impl Mac, part: &[u8]) {
    // Parts are short strings (≤ 64 bytes); saturate rather than wrap for absurd inputs.
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    mac.update(&len.to_be_bytes());
    mac.update(part);
}

/// The 32-byte HMAC of a code for one session.
#[must_use]
pub fn code_hash(
    pepper: &Pepper,
    workspace_id: &str,
    session_id: &str,
    purpose: Purpose,
    code: &str,
) -> [u8; 32] {
    hmac_of(
        pepper,
        DOMAIN,
        &[
            workspace_id.as_bytes(),
            session_id.as_bytes(),
            purpose.as_str().as_bytes(),
            code.as_bytes(),
        ],
    )
}

/// `HMAC-SHA256(pepper, domain ‖ f(part) ‖ …)`.
fn hmac_of(pepper: &Pepper, domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = pepper.mac();
    mac.update(domain);
    for part in parts {
        framed(&mut mac, part);
    }
    mac.finalize().into_bytes().into()
}

/// The domain-separation prefix of codes bound to a payment.
pub const DOMAIN_V2: &[u8] = b"otpkit/v2";

/// The hash of a code: v1 without a payment, v2 bound to `tx` (its canonical amount).
#[must_use]
pub fn code_hash_for(
    pepper: &Pepper,
    workspace_id: &str,
    session_id: &str,
    purpose: Purpose,
    code: &str,
    tx: Option<&crate::transaction::Transaction>,
) -> [u8; 32] {
    let Some(tx) = tx else {
        return code_hash(pepper, workspace_id, session_id, purpose, code);
    };
    let amount = tx.canonical_amount();
    hmac_of(
        pepper,
        DOMAIN_V2,
        &[
            workspace_id.as_bytes(),
            session_id.as_bytes(),
            purpose.as_str().as_bytes(),
            code.as_bytes(),
            amount.as_bytes(),
            tx.currency.as_bytes(),
            tx.payee.as_bytes(),
        ],
    )
}

/// Constant-time equality of two byte strings (length is not secret).
#[must_use]
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Lowercase hex.
#[must_use]
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            s.push(char::from(
                HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    s
}

/// Parses exactly 64 lowercase or uppercase hex digits.
#[must_use]
pub fn from_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let hi = char::from(*pair.first()?).to_digit(16)?;
        let lo = char::from(*pair.get(1)?).to_digit(16)?;
        *o = u8::try_from(hi.checked_mul(16)?.checked_add(lo)?).ok()?;
    }
    Some(out)
}

/// SHA-256, for API keys (which are high-entropy random strings, so no pepper or stretching is needed).
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_is_unambiguous() {
        let p = Pepper::new(&[7u8; 32]).unwrap();
        // Moving a byte between adjacent parts changes the hash.
        let a = code_hash(&p, "ab", "c", Purpose::Login, "123456");
        let b = code_hash(&p, "a", "bc", Purpose::Login, "123456");
        assert_ne!(a, b);
        assert!(ct_eq(
            &a,
            &code_hash(&p, "ab", "c", Purpose::Login, "123456")
        ));
        assert_eq!(from_hex32(&to_hex(&a)), Some(a));
    }
}
