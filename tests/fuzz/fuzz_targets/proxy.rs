//! Fuzz target `proxy`: see [`tern_fuzz::proxy`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::proxy(data));
