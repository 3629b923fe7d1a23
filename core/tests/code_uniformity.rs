//! Codes are uniform decimal digits (SPEC §4 "no modulo bias"; SECURITY.md, "Brute force").
//!
//! 100 000 six-digit codes from deterministic pseudo-random seeds (SHA-256 of a counter, so the
//! run is reproducible): every digit and every (position, digit) cell within a chi-square bound
//! that `byte % 10` over all 256 byte values (the classic bias: 0–5 are 26/256, 6–9 are
//! 24/256) exceeds several times over. The biased mapping is measured the same way, so the test is
//! known to be able to fail.

#![cfg(not(target_arch = "wasm32"))]

use otpkit_core::code::digits_from_bytes;
use otpkit_core::hash::sha256;

const CODES: u32 = 100_000;
const LEN: usize = 6;

fn seed(i: u32) -> [u8; 32] {
    sha256(&i.to_be_bytes())
}

/// Chi-square of counts against a uniform expectation.
fn chi2(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

fn tally(codes: impl Iterator<Item = String>) -> ([u64; 10], Vec<u64>) {
    let mut digits = [0u64; 10];
    let mut cells = vec![0u64; LEN * 10];
    for code in codes {
        assert_eq!(code.len(), LEN);
        for (pos, c) in code.bytes().enumerate() {
            let d = usize::from(c - b'0');
            digits[d] += 1;
            cells[pos * 10 + d] += 1;
        }
    }
    (digits, cells)
}

#[test]
fn digits_are_uniform_and_the_check_sees_modulo_bias() {
    let (digits, cells) =
        tally((0..CODES).map(|i| digits_from_bytes(&seed(i), LEN).expose().to_string()));
    let (c_digits, c_cells) = (chi2(&digits), chi2(&cells));
    eprintln!("otpkit digits: chi2 {c_digits:.1} (9 df), per position {c_cells:.1} (59 df); counts {digits:?}");
    // 9 df: P(chi2 > 40) ≈ 5e-6; 59 df: P(chi2 > 120) ≈ 3e-6 (and the seeds are fixed: no flakiness).
    assert!(
        c_digits < 40.0,
        "digit counts are not uniform: chi2 {c_digits:.1}, {digits:?}"
    );
    assert!(
        c_cells < 120.0,
        "per-position digit counts are not uniform: chi2 {c_cells:.1}"
    );
    // Leading zeros exist (a code is a string of digits, not a number).
    assert!(cells[0] > 0);

    // The same measurement of `byte % 10` without rejection.
    let biased = (0..CODES).map(|i| {
        seed(i)
            .iter()
            .take(LEN)
            .map(|b| char::from(b'0' + b % 10))
            .collect::<String>()
    });
    let (b_digits, _) = tally(biased);
    let c_biased = chi2(&b_digits);
    eprintln!("byte % 10 without rejection: chi2 {c_biased:.1}; counts {b_digits:?}");
    assert!(
        c_biased > 40.0,
        "the check did not see modulo bias (chi2 {c_biased:.1})"
    );
}
