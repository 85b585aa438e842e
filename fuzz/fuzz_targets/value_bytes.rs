//! Fuzz target `value_bytes`: see `milonga_tests::fuzz::value_bytes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::value_bytes(data));
