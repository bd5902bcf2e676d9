//! Fuzz target `smtp_encode`: see [`tern_fuzz::smtp_encode`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::smtp_encode(data));
