//! Fuzz target `smtp_data`: see [`tern_fuzz::smtp_data`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::smtp_data(data));
