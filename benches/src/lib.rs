//! Benchmarks for milonga.
//!
//! - [`records`]: the deterministic benchmark records, shared with the Python (ai2-tango) side
//!   of the comparison harness in `benches/compare/`.
//! - [`chain`]: the quickstart's three-step chain, for `src/bin/executor.rs` (the executor
//!   benchmarks: pipelining, parallel speed-up, overhead of a cached graph).
//! - `src/bin/probe.rs`: measures the machine's physical limits (disk, zstd, blake3, postcard).
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod chain;
pub mod records;
