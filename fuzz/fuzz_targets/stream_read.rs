//! Fuzz target `stream_read`: see `milonga_tests::fuzz::stream_read`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::stream_read(data));
