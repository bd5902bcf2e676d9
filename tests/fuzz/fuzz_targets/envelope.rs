//! Fuzz target `envelope`: see [`tern_fuzz::envelope`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::envelope(data));
