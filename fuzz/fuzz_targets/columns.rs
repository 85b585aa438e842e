//! Fuzz target `columns`: the example's `ColumnsFormat` (`examples/columns_format.rs`) with the
//! SDK's `FormatFuzzer`, configured in `milonga_tests::fuzz::columns_fuzzer` (where the
//! regression test finds it too).
#![no_main]

use std::sync::LazyLock;

use milonga::sdk::testing::fuzz::FormatFuzzer;
use milonga_tests::fuzz::{columns_fuzzer, BitTable, ColumnsFormat, Table};

milonga::sdk::allocation_meter!();

static FUZZER: LazyLock<FormatFuzzer<Table, ColumnsFormat, BitTable>> =
    LazyLock::new(columns_fuzzer);

libfuzzer_sys::fuzz_target!(|data: &[u8]| FUZZER.run(data));
