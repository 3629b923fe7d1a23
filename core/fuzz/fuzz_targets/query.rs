#![no_main]
//! `cargo fuzz run query`: see `otpkit_core_fuzz::harness::query`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _accepted = otpkit_core_fuzz::harness::query(data);
});
