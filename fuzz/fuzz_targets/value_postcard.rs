//! Fuzz target `value_postcard`: see `milonga_tests::fuzz::value_postcard`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::value_postcard(data));
