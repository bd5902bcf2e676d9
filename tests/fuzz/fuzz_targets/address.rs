//! Fuzz target `address`: see [`tern_fuzz::address`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::address(data));
