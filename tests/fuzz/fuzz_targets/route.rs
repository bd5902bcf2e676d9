//! Fuzz target `route`: see [`tern_fuzz::route`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::route(data));
