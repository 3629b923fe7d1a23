//! The comparisons that guard secrets run in constant time (SECURITY.md, "Timing").
//!
//! A statistical timing test over HTTP cannot tell an early-exit compare from a constant-time one
//! on a shared, noisy machine, so this file proves it where it can be proved: it counts the
//! instructions the compare executes under valgrind's callgrind (deterministic, no noise) and
//! requires the count to be identical whether the given value matches the secret in none, some,
//! or all of its leading bytes. A deliberately early-exit compare is measured the same way and
//! must show different counts, so the measurement is known to be able to fail.
//!
//! Without valgrind the callgrind test says so and passes, unless OTPKIT_REQUIRE_CALLGRIND=1
//! (CI sets it after `apt-get install valgrind`). The truth-table tests always run.

#![cfg(not(target_arch = "wasm32"))]

use otpkit_core::hash::{ct_eq, sha256};
use otpkit_core::workspace::{admin_authorized, api_key_hash, is_api_key_format};
use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;

/// A stand-in admin token: 36 characters, like `adm_` + 32 random ones.
const ADMIN: &str = "adm_Q7pV0s3kXc9LmN2bR8tY4wZ1eH6jUfAg";
const PROBE_ENV: &str = "OTPKIT_CT_PROBE";
const LOOPS: usize = 200;

/// `ADMIN` with byte `i` changed (same length).
fn flipped(i: usize) -> String {
    let mut b = ADMIN.as_bytes().to_vec();
    b[i] = if b[i] == b'z' { b'y' } else { b'z' };
    String::from_utf8(b).unwrap()
}

/// The named Authorization header values the probe and the truth table use.
fn header(form: &str) -> String {
    let n = ADMIN.len();
    match form {
        "exact" => format!("Bearer {ADMIN}"),
        "first-wrong" => format!("Bearer {}", flipped(0)),
        "middle-wrong" => format!("Bearer {}", flipped(n / 2)),
        "last-wrong" => format!("Bearer {}", flipped(n - 1)),
        "unrelated" => format!("Bearer {}", "x".repeat(n)),
        // Shorter by one: a true prefix of the token, and an unrelated string of that length.
        "prefix" => format!("Bearer {}", &ADMIN[..n - 1]),
        "unrelated-short" => format!("Bearer {}", "x".repeat(n - 1)),
        // Longer by one: the token plus a character, and an unrelated string of that length.
        "extended" => format!("Bearer {ADMIN}x"),
        "unrelated-long" => format!("Bearer {}", "x".repeat(n + 1)),
        other => panic!("unknown form {other}"),
    }
}

/// 32 bytes equal to `A32` in their first `k` bytes (all 32: equal).
const A32: [u8; 32] = [
    0x3a, 0x91, 0x5c, 0x07, 0xee, 0x42, 0x18, 0xb6, 0x7d, 0x20, 0xc4, 0x9f, 0x63, 0x0b, 0xd8, 0x55,
    0x2e, 0xa1, 0x74, 0xf0, 0x39, 0x86, 0x4b, 0x1c, 0xe7, 0x5a, 0x93, 0x08, 0xbd, 0x61, 0x2f, 0xc0,
];
fn matching_prefix(k: usize) -> [u8; 32] {
    let mut b = A32;
    for x in b.iter_mut().skip(k) {
        *x ^= 0xff;
    }
    b
}

/// What an early-exit compare (the thing this file guards against) looks like.
fn early_exit_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    for i in 0..a.len() {
        if black_box(a[i]) != black_box(b[i]) {
            return false;
        }
    }
    true
}

/// The inputs of one probe, built before the measured region.
enum Probe {
    Admin(String),
    CtEq([u8; 32]),
    Early([u8; 32]),
}

fn probe(kind: &str, arg: &str) -> Probe {
    match kind {
        "admin" => Probe::Admin(header(arg)),
        "ct_eq" => Probe::CtEq(matching_prefix(arg.parse().unwrap())),
        "early" => Probe::Early(matching_prefix(arg.parse().unwrap())),
        other => panic!("unknown probe kind {other}"),
    }
}

/// The measured region: only instructions executed inside this function (and what it calls)
/// are counted (`--toggle-collect`). Its inputs are built outside it.
#[inline(never)]
fn ct_probe_loop(p: &Probe) -> usize {
    let mut yes = 0usize;
    for _ in 0..LOOPS {
        let ok = match p {
            Probe::Admin(h) => admin_authorized(black_box(ADMIN), black_box(Some(h.as_str()))),
            Probe::CtEq(b) => ct_eq(black_box(&A32), black_box(b)),
            Probe::Early(b) => early_exit_eq(black_box(&A32), black_box(b)),
        };
        yes += usize::from(ok);
    }
    yes
}

/// Run only under callgrind by `instruction_counts_do_not_depend_on_how_much_matches`.
#[test]
#[ignore = "a probe: run by instruction_counts_do_not_depend_on_how_much_matches under callgrind"]
fn probe_for_callgrind() {
    let spec = std::env::var(PROBE_ENV).expect("OTPKIT_CT_PROBE=kind:arg");
    let (kind, arg) = spec.split_once(':').expect("kind:arg");
    let p = probe(kind, arg);
    black_box(ct_probe_loop(black_box(&p)));
}

#[test]
fn admin_token_truth_table() {
    assert!(admin_authorized(ADMIN, Some(&header("exact"))));
    assert!(admin_authorized(ADMIN, Some(&format!("bearer   {ADMIN} "))));
    for form in [
        "first-wrong",
        "middle-wrong",
        "last-wrong",
        "unrelated",
        "prefix",
        "unrelated-short",
        "extended",
        "unrelated-long",
    ] {
        assert!(!admin_authorized(ADMIN, Some(&header(form))), "{form}");
    }
    for h in [
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer "),
        Some(ADMIN),
        Some(&*format!("Basic {ADMIN}")),
        Some(&*format!("Token {ADMIN}")),
        Some(&*format!("Bearer{ADMIN}")),
    ] {
        assert!(!admin_authorized(ADMIN, h), "{h:?}");
    }
    // An empty configured token authorizes nothing, not even an empty Bearer.
    assert!(!admin_authorized("", Some("Bearer ")));
    assert!(!admin_authorized("", None));
}

#[test]
fn ct_eq_truth_table() {
    for k in 0..32 {
        assert!(!ct_eq(&A32, &matching_prefix(k)), "prefix {k}");
    }
    assert!(ct_eq(&A32, &matching_prefix(32)));
    assert!(!ct_eq(&A32, &A32[..31]), "a shorter slice is not equal");
    assert!(!ct_eq(&A32[..0], &A32));
}

/// API keys are looked up by their SHA-256, never by the key: a table lookup's timing depends
/// on the digest, which a caller cannot steer byte by byte.
#[test]
fn api_keys_are_looked_up_by_digest() {
    let key = format!("otpk_{}", "A".repeat(43));
    assert!(is_api_key_format(&key));
    let h = api_key_hash(&key);
    assert_eq!(h.len(), 64);
    assert!(!h.contains(&key[5..]));
    assert_eq!(h, otpkit_core::hash::to_hex(&sha256(key.as_bytes())));
    // One changed character: an unrelated digest (no shared prefix to probe for).
    let near = format!("otpk_{}B", "A".repeat(42));
    let hn = api_key_hash(&near);
    let same_prefix = h
        .bytes()
        .zip(hn.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        same_prefix < 8,
        "digests of neighbouring keys share {same_prefix} hex digits"
    );
}

fn valgrind_available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Instructions executed inside `ct_probe_loop` for one probe, from callgrind's totals.
fn instructions(kind: &str, arg: &str, dir: &std::path::Path) -> u64 {
    let out: PathBuf = dir.join(format!("callgrind.{kind}.{arg}.out"));
    let exe = std::env::current_exe().unwrap();
    let run = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--toggle-collect=*ct_probe_loop*",
            &format!("--callgrind-out-file={}", out.display()),
        ])
        .arg(&exe)
        .args([
            "--ignored",
            "--exact",
            "probe_for_callgrind",
            "--test-threads=1",
            "--quiet",
        ])
        .env(PROBE_ENV, format!("{kind}:{arg}"))
        .output()
        .expect("run valgrind");
    assert!(
        run.status.success(),
        "valgrind probe {kind}:{arg} failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&out).expect("callgrind output");
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no totals in {}", out.display()));
    assert!(
        total > 0,
        "callgrind counted nothing in ct_probe_loop for {kind}:{arg}"
    );
    total
}

#[test]
fn instruction_counts_do_not_depend_on_how_much_matches() {
    if !valgrind_available() {
        let msg = "valgrind is not installed: the callgrind constant-time check did not run (apt-get install valgrind)";
        assert!(std::env::var("OTPKIT_REQUIRE_CALLGRIND").is_err(), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let dir = std::env::temp_dir().join(format!("otpkit-ct-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let count = |kind: &str, arg: &str| instructions(kind, arg, &dir);

    // The raw compare: 0, 1, 16, 31 and 32 (equal) leading bytes in common.
    let ct: Vec<(usize, u64)> = [0, 1, 16, 31, 32]
        .iter()
        .map(|&k| (k, count("ct_eq", &k.to_string())))
        .collect();
    eprintln!("ct_eq instructions by matching prefix (bytes, Ir for {LOOPS} calls): {ct:?}");
    assert!(
        ct.iter().all(|&(_, ir)| ir == ct[0].1),
        "ct_eq's instruction count depends on how many leading bytes match: {ct:?}"
    );

    // The measurement can fail: an early-exit compare shows the matching prefix.
    let early: Vec<(usize, u64)> = [0, 16, 32]
        .iter()
        .map(|&k| (k, count("early", &k.to_string())))
        .collect();
    eprintln!("early-exit compare for contrast: {early:?}");
    assert!(
        early[0].1 < early[1].1 && early[1].1 < early[2].1,
        "callgrind did not see an early-exit compare's prefix dependence: {early:?}"
    );

    // The admin check: for a given length, every wrong token costs the same however much of the
    // token it matches. (The right token takes a few more instructions after the compare — the
    // `&& !admin_token.is_empty()` — which tells the caller only what the 200 tells it anyway.)
    let exact = count("admin", "exact");
    eprintln!("admin_authorized, the right token ({LOOPS} calls): {exact}");
    let groups: [&[&str]; 3] = [
        &["first-wrong", "middle-wrong", "last-wrong", "unrelated"],
        &["prefix", "unrelated-short"],
        &["extended", "unrelated-long"],
    ];
    for group in groups {
        let irs: Vec<(&str, u64)> = group.iter().map(|f| (*f, count("admin", f))).collect();
        eprintln!("admin_authorized instructions ({LOOPS} calls): {irs:?}");
        assert!(
            irs.iter().all(|&(_, ir)| ir == irs[0].1),
            "admin_authorized's instruction count depends on the token's content: {irs:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
