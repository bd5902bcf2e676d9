//! Fuzz target `control`: see [`tern_fuzz::control`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::control(data));
