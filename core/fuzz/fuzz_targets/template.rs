#![no_main]
//! `cargo fuzz run template`: see `otpkit_core_fuzz::harness::template`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _accepted = otpkit_core_fuzz::harness::template(data);
});
