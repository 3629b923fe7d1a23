//! The fuzz harnesses of otpkit-core, shared by the fuzz targets (`fuzz_targets/*.rs`) and by
//! the normal test `core/tests/fuzz_regressions.rs` (which includes `harness.rs` by path).
#![forbid(unsafe_code)]

pub mod harness;
