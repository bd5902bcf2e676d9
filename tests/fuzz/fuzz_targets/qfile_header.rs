//! Fuzz target `qfile_header`: see [`tern_fuzz::qfile_header`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::qfile_header(data));
