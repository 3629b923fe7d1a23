#![no_main]
//! `cargo fuzz run request_body`: see `otpkit_core_fuzz::harness::request_body`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _accepted = otpkit_core_fuzz::harness::request_body(data);
});
