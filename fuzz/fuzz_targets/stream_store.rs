//! Fuzz target `stream_store`: streaming steps written through `StreamFormat` into a workspace
//! over a fault-injecting store, with I/O failures and producer crashes mid-stream, then resumed
//! and checked against a model (see `milonga_tests::fuzz::stream_store_ops`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::stream_store_ops(data));
