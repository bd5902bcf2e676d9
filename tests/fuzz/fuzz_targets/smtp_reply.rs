//! Fuzz target `smtp_reply`: see [`tern_fuzz::smtp_reply`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::smtp_reply(data));
