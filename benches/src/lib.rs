//! Benchmarks for milonga.
