//! Fuzz target `chunk`: see `milonga_tests::fuzz::chunk`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::chunk(data));
