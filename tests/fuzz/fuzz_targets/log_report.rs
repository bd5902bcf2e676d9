//! Fuzz target `log_report`: see [`tern_fuzz::log_report`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::log_report(data));
