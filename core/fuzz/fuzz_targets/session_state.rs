#![no_main]
//! `cargo fuzz run session_state`: see `otpkit_core_fuzz::harness::session_state`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _accepted = otpkit_core_fuzz::harness::session_state(data);
});
