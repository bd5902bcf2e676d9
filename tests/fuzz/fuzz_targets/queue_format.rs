//! Fuzz target `queue_format`: see [`tern_fuzz::queue_format`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::queue_format(data));
