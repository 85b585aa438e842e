//! Fuzz target `manifest`: see `milonga_tests::fuzz::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::manifest(data));
