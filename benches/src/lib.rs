//! Benchmarks for milonga.
//!
//! - [`records`]: the deterministic benchmark records, shared with the Python (ai2-tango) side
//!   of the comparison harness in `benches/compare/`.
//! - `src/bin/probe.rs`: measures the machine's physical limits (disk, zstd, blake3, postcard).

pub mod records;
