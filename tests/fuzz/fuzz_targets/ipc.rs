//! Fuzz target `ipc`: see [`tern_fuzz::ipc`].
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::ipc(data));
