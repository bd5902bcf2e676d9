//! Fuzz target `smtp_auth`: see [`tern_fuzz::smtp_auth`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::smtp_auth(data));
