//! Benchmarks for milonga.
//!
//! - [`records`]: the deterministic benchmark records, shared with the Python (ai2-tango) side
//!   of the comparison harness in `benches/compare/`.
//! - [`chain`]: the quickstart's three-step chain, for `src/bin/executor.rs` (the executor
//!   benchmarks: pipelining, parallel speed-up, overhead of a cached graph).
//! - `src/bin/probe.rs`: measures the machine's physical limits (disk, zstd, blake3, postcard).

pub mod chain;
pub mod records;
