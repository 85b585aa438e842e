//! Fuzz target `value_text`: see `milonga_tests::fuzz::value_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::value_text(data));
