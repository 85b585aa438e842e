//! Fuzz target `sqlite_sequence`: see `milonga_tests::fuzz::sqlite_sequence`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::sqlite_sequence(data));
