#![no_main]
//! `cargo fuzz run guard_state`: see `otpkit_core_fuzz::harness::guard_state`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _accepted = otpkit_core_fuzz::harness::guard_state(data);
});
