//! Object store: write (hash + fsync + rename), read (verified), verify — each beside the raw
//! baseline (`fs::write` + fsync, `fs::read`).
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use milonga::store::{LocalStore, ObjectStore};

fn payload(len: usize) -> Vec<u8> {
    // Mildly compressible, deterministic bytes.
    (0..len).map(|i| ((i * 31) ^ (i >> 7)) as u8).collect()
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let store = LocalStore::open(dir.path()).expect("store");
    let mut group = c.benchmark_group("store");
    for &len in &[64 * 1024, 4 * 1024 * 1024] {
        let data = payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        let mut n = 0u64;
        group.bench_with_input(BenchmarkId::new("milonga_put", len), &data, |b, data| {
            b.iter(|| {
                // Distinct content each time, so every put is a real write.
                n += 1;
                let mut w = store.writer().expect("writer");
                w.write_all(&n.to_le_bytes()).expect("write");
                w.write_all(data).expect("write");
                black_box(w.commit().expect("commit"))
            })
        });
        let raw = dir.path().join("raw");
        group.bench_with_input(
            BenchmarkId::new("raw_write_fsync", len),
            &data,
            |b, data| {
                b.iter(|| {
                    let mut f = std::fs::File::create(&raw).expect("create");
                    f.write_all(data).expect("write");
                    f.sync_all().expect("sync");
                })
            },
        );
        let mut w = store.writer().expect("writer");
        w.write_all(&data).expect("write");
        let (id, _) = w.commit().expect("commit");
        std::fs::write(&raw, &data).expect("write raw");
        group.bench_with_input(
            BenchmarkId::new("milonga_get_verified", len),
            &id,
            |b, id| b.iter(|| black_box((*store.bytes(id, None).expect("bytes")).as_ref().len())),
        );
        group.bench_with_input(BenchmarkId::new("raw_read", len), &raw, |b, raw| {
            b.iter(|| black_box(std::fs::read(raw).expect("read").len()))
        });
        group.bench_with_input(BenchmarkId::new("blake3_only", len), &data, |b, data| {
            b.iter(|| black_box(blake3::hash(data)))
        });
    }
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
