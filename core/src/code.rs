//! Randomness turned into codes, session ids and API keys. The host draws the bytes from its
//! CSPRNG (`crypto.getRandomValues` on the Worker, `crypto.randomFillSync`/getrandom on Node);
//! the core only maps them, deterministically, so vectors can pin the mapping.

use crate::secret::Code;
use alloc::string::String;
use sha2::{Digest, Sha256};

/// Bytes a host supplies to issue one session.
#[derive(Clone)]
pub struct Entropy {
    /// 16 bytes for the session id (UUID v4; version and variant bits are overwritten).
    pub session_id: [u8; 16],
    /// 32 bytes for the code digits (rejection sampling; extended by SHA-256 if ever exhausted).
    pub code: [u8; 32],
}

impl Entropy {
    /// Splits 48 bytes: the first 16 for the id, the last 32 for the code.
    #[must_use]
    pub fn from_bytes(bytes: &[u8; 48]) -> Entropy {
        let mut session_id = [0u8; 16];
        let mut code = [0u8; 32];
        let (a, b) = bytes.split_at(16);
        session_id.copy_from_slice(a);
        code.copy_from_slice(b);
        Entropy { session_id, code }
    }
}

impl core::fmt::Debug for Entropy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Entropy(<redacted>)")
    }
}

/// Bytes ≥ this are rejected so that `b % 10` is uniform (250 = 25 × 10).
const REJECT_FROM: u8 = 250;

/// `len` uniform decimal digits from `seed`: each byte < 250 gives `byte % 10`, bytes ≥ 250 are
/// skipped (no modulo bias). If the 32 bytes run out (probability < 10⁻³⁰ for 10 digits), the
/// stream continues with `SHA-256("otpkit/v1/digits" ‖ seed ‖ counter)` blocks.
#[must_use]
pub fn digits_from_bytes(seed: &[u8; 32], len: usize) -> Code {
    let mut out = String::with_capacity(len);
    let mut take = |b: u8| {
        if out.len() < len && b < REJECT_FROM {
            out.push(char::from(b'0'.saturating_add(b % 10)));
        }
        out.len() == len
    };
    for &b in seed {
        if take(b) {
            return Code::new(out);
        }
    }
    let mut counter: u32 = 0;
    loop {
        let block: [u8; 32] = Sha256::new()
            .chain_update(b"otpkit/v1/digits")
            .chain_update(seed)
            .chain_update(counter.to_be_bytes())
            .finalize()
            .into();
        for &b in &block {
            if take(b) {
                return Code::new(out);
            }
        }
        counter = counter.wrapping_add(1);
    }
}

/// A UUID v4 string from 16 bytes (version and variant bits set).
#[must_use]
pub fn uuid_v4(bytes: &[u8; 16]) -> String {
    let mut b = *bytes;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = crate::hash::to_hex(&b);
    let mut s = String::with_capacity(36);
    for (i, c) in hex.chars().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            s.push('-');
        }
        s.push(c);
    }
    s
}

/// Base64url without padding (RFC 4648 §5).
#[must_use]
pub fn base64url(data: &[u8]) -> String {
    base64_with(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        false,
        data,
    )
}

/// Standard base64 with padding (RFC 4648 §4), as HTTP basic auth wants it.
#[must_use]
pub fn base64(data: &[u8]) -> String {
    base64_with(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        true,
        data,
    )
}

fn base64_with(alphabet: &[u8; 64], pad: bool, data: &[u8]) -> String {
    let sym = |i: u32| char::from(alphabet.get((i & 63) as usize).copied().unwrap_or(b'A'));
    let mut s = String::with_capacity(data.len().div_ceil(3).saturating_mul(4));
    for chunk in data.chunks(3) {
        let b0 = u32::from(chunk.first().copied().unwrap_or(0));
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = (b0 << 16) | (b1 << 8) | b2;
        s.push(sym(n >> 18));
        s.push(sym(n >> 12));
        match (chunk.len() > 1, pad) {
            (true, _) => s.push(sym(n >> 6)),
            (false, true) => s.push('='),
            (false, false) => {}
        }
        match (chunk.len() > 2, pad) {
            (true, _) => s.push(sym(n)),
            (false, true) => s.push('='),
            (false, false) => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_skips_high_bytes() {
        let mut seed = [0u8; 32];
        seed[0] = 255; // skipped
        seed[1] = 249; // → 9
        seed[2] = 250; // skipped
        seed[3] = 13; // → 3
        for (i, b) in seed.iter_mut().enumerate().skip(4) {
            *b = i as u8;
        }
        assert_eq!(digits_from_bytes(&seed, 6).expose(), "934567");
        // All bytes rejected: the SHA-256 extension still yields digits, deterministically.
        let all_high = [255u8; 32];
        let c = digits_from_bytes(&all_high, 10);
        assert_eq!(c.len(), 10);
        assert_eq!(c, digits_from_bytes(&all_high, 10));
    }

    #[test]
    fn uuid_and_base64() {
        assert_eq!(uuid_v4(&[0u8; 16]), "00000000-0000-4000-8000-000000000000");
        assert_eq!(
            uuid_v4(&[0xffu8; 16]),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(b"fooba"), "Zm9vYmE");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
