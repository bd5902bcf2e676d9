//! Fuzz target `header`: see [`tern_fuzz::header`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::header(data));
