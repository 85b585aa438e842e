//! Fuzz target `store`: random operations with injected I/O failures on a local object store,
//! checked against an in-memory model (see `milonga_tests::fuzz::store_ops`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milonga_tests::fuzz::store_ops(data));
