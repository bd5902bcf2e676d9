//! Fuzz target `rules`: see [`tern_fuzz::rules`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::rules(data));
