//! Fuzz target `address_list`: see [`tern_fuzz::address_list`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::address_list(data));
