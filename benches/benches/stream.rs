//! Streams (`StreamFormat`): write, full read and random access of the benchmark records on a
//! local workspace, each beside the raw baseline: the same postcard items, length-prefixed,
//! compressed with zstd level 3 in 16 KiB blocks into memory (no hashing, no files).
//!
//! `cargo bench -p milonga-benches --bench stream`
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use milonga::{BoxError, Context, Step, Stream, StreamFormat, Workspace};
use milonga_benches::records::{records, Record};
use serde::Serialize;

const N: u64 = 200_000;
const BLOCK: usize = 16 * 1024;

#[derive(Serialize)]
struct Produce {
    n: u64,
    /// Changes the id without changing the items, so every write is a real write.
    run: u64,
}

impl Step for Produce {
    const NAME: &'static str = "bench::Produce";
    type Output = Stream<Record>;
    type Format = StreamFormat<Record>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Stream<Record>, BoxError> {
        Ok(Stream::new(records(self.n)))
    }
}

/// Raw baseline: encode, frame and compress in blocks; returns the compressed blocks.
fn raw_write(items: &[Record]) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut buf = Vec::with_capacity(BLOCK + 256);
    let mut item = Vec::new();
    for r in items {
        item.clear();
        item = postcard::to_extend(r, item).expect("postcard");
        buf.extend_from_slice(&(item.len() as u32).to_le_bytes());
        buf.extend_from_slice(&item);
        if buf.len() >= BLOCK {
            blocks.push(zstd::bulk::compress(&buf, 3).expect("zstd"));
            buf.clear();
        }
    }
    if !buf.is_empty() {
        blocks.push(zstd::bulk::compress(&buf, 3).expect("zstd"));
    }
    blocks
}

fn raw_read(blocks: &[Vec<u8>]) -> u64 {
    let mut n = 0;
    for b in blocks {
        let data = zstd::bulk::decompress(b, BLOCK * 4).expect("zstd");
        let mut at = 0;
        while at + 4 <= data.len() {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4")) as usize;
            let r: Record = postcard::from_bytes(&data[at + 4..at + 4 + len]).expect("decode");
            black_box(r);
            at += 4 + len;
            n += 1;
        }
    }
    n
}

fn stream(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let ws = Workspace::open(dir.path()).expect("workspace");
    ws.set_cache_limits(1, 0);
    let items: Vec<Record> = records(N).collect();

    let mut group = c.benchmark_group("stream");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let mut run = 0;
    group.bench_function("milonga_write", |b| {
        b.iter(|| {
            run += 1;
            Produce { n: N, run }.result(&ws).expect("write");
        })
    });
    group.bench_function("raw_postcard_zstd3_write", |b| {
        b.iter(|| black_box(raw_write(&items)))
    });

    let step = Produce { n: N, run: 0 };
    step.result(&ws).expect("write");
    group.bench_function("milonga_read_all", |b| {
        b.iter(|| {
            let reader = step.result(&ws).expect("open");
            let mut n = 0u64;
            for r in reader.iter() {
                black_box(r.expect("item"));
                n += 1;
            }
            assert_eq!(n, N);
        })
    });
    let blocks = raw_write(&items);
    group.bench_function("raw_postcard_zstd3_read_all", |b| {
        b.iter(|| assert_eq!(raw_read(&blocks), N))
    });
    group.finish();

    let mut group = c.benchmark_group("stream_get");
    let reader = step.result(&ws).expect("open");
    let mut i = 0u64;
    group.bench_function("milonga_random_get", |b| {
        b.iter(|| {
            i = (i + 7919 * 13) % N;
            black_box(reader.get(i).expect("get"))
        })
    });
    group.bench_function("raw_block_decompress_and_decode", |b| {
        let mut k = 0usize;
        b.iter(|| {
            k = (k + 13) % blocks.len();
            black_box(raw_read(&blocks[k..k + 1]))
        })
    });
    group.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);
