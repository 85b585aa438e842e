//! Fuzz target `sqlite_dict`: see `milonga_tests::fuzz::sqlite_dict`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::sqlite_dict(data));
