#![no_main]
//! `cargo fuzz run verify_body`: see `otpkit_core_fuzz::harness::verify_body`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _accepted = otpkit_core_fuzz::harness::verify_body(data);
});
