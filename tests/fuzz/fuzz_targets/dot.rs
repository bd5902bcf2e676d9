//! Fuzz target `dot`: see [`tern_fuzz::dot`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::dot(data));
