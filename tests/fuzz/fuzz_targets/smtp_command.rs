//! Fuzz target `smtp_command`: see [`tern_fuzz::smtp_command`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::smtp_command(data));
