//! Fuzz target `dotqmail`: see [`tern_fuzz::dotqmail`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::dotqmail(data));
