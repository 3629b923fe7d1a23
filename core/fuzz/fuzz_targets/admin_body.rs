#![no_main]
//! `cargo fuzz run admin_body`: see `otpkit_core_fuzz::harness::admin_body`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _accepted = otpkit_core_fuzz::harness::admin_body(data);
});
