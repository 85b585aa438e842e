//! Fuzz target `sqlite_sequence`: the SDK's `FormatFuzzer` on a built-in format, see
//! `milonga_tests::fuzz::sqlite_sequence`.
#![no_main]

// Caps and meters what a read may allocate: a lying length is a crash with the input saved.
milonga::sdk::allocation_meter!();

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::sqlite_sequence(data));
