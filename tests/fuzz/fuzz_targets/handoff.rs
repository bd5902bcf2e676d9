//! Fuzz target `handoff`: see [`tern_fuzz::handoff`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::handoff(data));
