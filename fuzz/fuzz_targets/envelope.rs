//! Fuzz target `envelope`: see `milonga_tests::fuzz::envelope`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::envelope(data));
