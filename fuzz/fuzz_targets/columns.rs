//! Fuzz target `columns`: the example's `ColumnsFormat` (`examples/columns_format.rs`), see
//! `milonga_tests::fuzz::columns`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::columns(data));
