//! Fuzz target `verify`: see [`tern_fuzz::verify`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::verify(data));
