//! Fuzz target `value_json`: see `milonga_tests::fuzz::value_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::value_json(data));
