//! Fuzz target `control_request`: see [`tern_fuzz::control_request`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::control_request(data));
