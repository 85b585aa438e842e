//! Micro-measurement of the SQLite sequence on 1,000,000 benchmark records (not a test):
//! `cargo test -p milonga-formats --release --test sqlite_bench -- --ignored --nocapture`
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Instant;

use milonga_formats::{SqliteCompression, SqliteSequenceFormat};
use milonga_sdk::{Format, MemoryArtifact};

/// The benchmark records of `benches/src/records.rs`, shared by path (formats cannot depend on
/// the benches crate).
#[path = "../../benches/src/records.rs"]
#[allow(dead_code)]
mod bench_records;

use bench_records::{records, Record};

fn measure(name: &str, compression: SqliteCompression) {
    const N: u64 = 1_000_000;
    let format = SqliteSequenceFormat::<Record>::new().with_compression(compression);
    let artifact = MemoryArtifact::new();
    let t = Instant::now();
    format.write(records(N), &artifact).unwrap();
    let write = t.elapsed().as_secs_f64();
    let bytes = artifact.file("data.sqlite").unwrap().len();
    let seq = Format::<Vec<Record>>::read(&format, artifact.handle()).unwrap();
    // Warm up, then iterate.
    let _ = seq.iter().count();
    let t = Instant::now();
    let mut n = 0u64;
    for r in seq.iter() {
        let r = r.unwrap();
        assert_eq!(r.id, n);
        n += 1;
    }
    let iter = t.elapsed().as_secs_f64();
    assert_eq!(n, N);
    let gets = 300_000u64;
    let mut x: u64 = 12345;
    let t = Instant::now();
    for _ in 0..gets {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = x % N;
        assert_eq!(seq.get(i).unwrap().id, i);
    }
    let get = t.elapsed().as_secs_f64();
    println!(
        "{name}: write {:.0} items/s ({write:.2} s, incl. MemoryArtifact ingest copy), \
         random get {:.0}/s, iteration {:.0} items/s, {:.1} bytes/item ({bytes} bytes)",
        N as f64 / write,
        gets as f64 / get,
        N as f64 / iter,
        bytes as f64 / N as f64
    );
}

#[test]
#[ignore = "measurement: run with --release -- --ignored --nocapture"]
fn sqlite_sequence_one_million_records() {
    let sample: Vec<Record> = records(3).collect();
    println!(
        "record sample: {:?} (postcard {} bytes)",
        sample[0],
        postcard::to_stdvec(&sample[0]).unwrap().len()
    );
    let only = std::env::var("MILONGA_BENCH_ONLY").ok();
    let blocks = |items_per_block, level, dictionary_bytes| SqliteCompression::ZstdBlocks {
        items_per_block,
        level,
        dictionary_bytes,
    };
    for (name, c) in [
        (
            "default: blocks of 8, zstd 3, 16 KiB dict",
            SqliteCompression::default(),
        ),
        (
            "blocks of 12, zstd 3, 16 KiB dict",
            blocks(12, 3, 16 * 1024),
        ),
        (
            "blocks of 16, zstd 3, 16 KiB dict",
            blocks(16, 3, 16 * 1024),
        ),
        (
            "blocks of 32, zstd 3, 16 KiB dict",
            blocks(32, 3, 16 * 1024),
        ),
        ("blocks of 8, zstd 1, 16 KiB dict", blocks(8, 1, 16 * 1024)),
        ("blocks of 8, zstd 3, no dict", blocks(8, 3, 0)),
        ("none", SqliteCompression::None),
        ("per-value zstd 3, 16 KiB dict", SqliteCompression::zstd()),
    ] {
        if only.as_deref().is_none_or(|o| name.contains(o)) {
            measure(name, c);
        }
    }
}
