//! Fuzz target `dkim`: see [`tern_fuzz::dkim`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::dkim(data));
