//! Fuzz target `cmdline`: see [`tern_fuzz::cmdline`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::cmdline(data));
