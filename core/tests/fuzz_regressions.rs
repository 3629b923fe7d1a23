#![cfg(not(target_arch = "wasm32"))]
//! What fuzzing found, as normal tests, and the committed fuzz corpus replayed natively.
//!
//! The harnesses live in `core/fuzz/src/harness.rs` and are compiled here by path, so `cargo test`
//! runs every corpus file (`core/fuzz/corpus/<target>/*`) through exactly the code the fuzz
//! targets run, without cargo-fuzz, nightly features or a fuzzing feature in the library.

#[path = "../fuzz/src/harness.rs"]
mod harness;

use otpkit_core::guard::{Admission, DeliveryOutcome, DestinationGuard, MAX_REPLACED_CHAIN};
use otpkit_core::policy::Policy;
use otpkit_core::validate::Purpose;
use otpkit_core::UnixMillis;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Every fuzz target has a harness here and a corpus, and nothing else is in `fuzz_targets/`.
#[test]
fn every_fuzz_target_has_a_harness_and_a_corpus() {
    let mut on_disk: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = harness::TARGETS
        .iter()
        .map(|(n, _)| (*n).to_string())
        .collect();
    known.sort();
    assert_eq!(on_disk, known);
    for (name, _) in harness::TARGETS {
        let corpus = fuzz_dir().join("corpus").join(name);
        assert!(
            !files(&corpus).is_empty(),
            "{} has no corpus",
            corpus.display()
        );
    }
}

/// Replays the committed corpus through the harnesses (their invariants included). Seeds named
/// `valid-*` must be accepted by the target's parser and `invalid-*` refused.
#[test]
fn committed_corpus_replays_clean() {
    let mut total = 0usize;
    let mut failures = Vec::new();
    for (name, run) in harness::TARGETS {
        for path in files(&fuzz_dir().join("corpus").join(name)) {
            total += 1;
            let data = fs::read(&path).expect("corpus file");
            let shown = path
                .strip_prefix(fuzz_dir())
                .unwrap_or(&path)
                .display()
                .to_string();
            match catch_unwind(AssertUnwindSafe(|| run(&data))) {
                Err(_) => failures.push(format!("{shown}: panicked")),
                Ok(accepted) => {
                    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
                    if file.starts_with("valid-") && !accepted {
                        failures.push(format!("{shown}: a valid-* seed was refused"));
                    }
                    if file.starts_with("invalid-") && accepted {
                        failures.push(format!("{shown}: an invalid-* seed was accepted"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} corpus files failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        (50..300).contains(&total),
        "the corpus should hold 50–300 files, it has {total}"
    );
}

const T0: u64 = 1_767_225_600_000;

/// Found while writing the `guard_state` target, from its invariant (a guard the core changed must
/// store and read back as itself), and confirmed through the harness (next test). With reuse off, every send admitted while the previous one is still in flight
/// nests the previous entry one level deeper; test numbers are not charged to the send window, so
/// nothing bounded the chain. At 126 levels the stored JSON passed serde_json's nesting limit of
/// 128 and `DestinationGuard::from_json` refused it as corrupt: every later request for that
/// destination would have failed with a 500. Fixed: the chain keeps `MAX_REPLACED_CHAIN` entries.
#[test]
fn a_long_chain_of_replaced_sends_still_reads_back() {
    let policy = Policy {
        reuse: false,
        ..Policy::default()
    };
    let now = UnixMillis(T0);
    let mut guard = DestinationGuard::new();
    for i in 0..200 {
        let id = format!("s{i}");
        let admitted = guard.admit(Purpose::Login, &id, now.plus_secs(300), true, &policy, now);
        assert_eq!(admitted, Ok(Admission::Send));
        let back = DestinationGuard::from_json(&guard.to_json());
        assert_eq!(back.as_ref(), Ok(&guard), "after {} sends", i + 1);
    }
    // The chain under the newest entry is bounded.
    let mut depth = 0;
    let mut entry = guard.active.first().and_then(|a| a.previous.as_deref());
    while let Some(e) = entry {
        depth += 1;
        entry = e.previous.as_deref();
    }
    assert_eq!(depth, MAX_REPLACED_CHAIN);
    // A replaced send dropped from the chain that is delivered after all is to be canceled; one
    // still in the chain is canceled as well (it was replaced). Failing the newest send restores
    // the one it replaced.
    assert_eq!(
        guard.delivery("s0", DeliveryOutcome::Delivered),
        Some("s0".into())
    );
    assert_eq!(
        guard.delivery("s190", DeliveryOutcome::Delivered),
        Some("s190".into())
    );
    assert_eq!(guard.delivery("s199", DeliveryOutcome::Failed), None);
    assert_eq!(
        guard.active.first().map(|a| a.session_id.as_str()),
        Some("s198")
    );
    assert_eq!(
        DestinationGuard::from_json(&guard.to_json()).as_ref(),
        Ok(&guard)
    );
}

/// The same defect through the fuzz harness: 130 "admit a test-number send, reuse off" operations.
#[test]
fn guard_harness_replays_the_long_chain() {
    assert!(harness::guard_state(&[0x03; 130]));
}
