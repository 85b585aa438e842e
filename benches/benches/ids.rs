//! Step ids and the cache-hit path.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use milonga::{BoxError, Context, PostcardFormat, Step, Workspace};
use serde::Serialize;

#[derive(Serialize)]
struct Small {
    x: u64,
    name: String,
}

impl Step for Small {
    const NAME: &'static str = "Small";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        Ok(self.x)
    }
}

#[derive(Serialize)]
struct Large {
    items: Vec<String>,
}

impl Step for Large {
    const NAME: &'static str = "Large";
    type Output = usize;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<usize, BoxError> {
        Ok(self.items.len())
    }
}

#[derive(Serialize)]
struct Mapped {
    weights: std::collections::HashMap<String, u64>,
}

impl Step for Mapped {
    const NAME: &'static str = "Mapped";
    type Output = usize;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<usize, BoxError> {
        Ok(self.weights.len())
    }
}

fn ids(c: &mut Criterion) {
    let small = Small {
        x: 7,
        name: "tokenize".into(),
    };
    let large = Large {
        items: (0..1000).map(|i| format!("item-{i}")).collect(),
    };
    let mut group = c.benchmark_group("unique_id");
    group.bench_function("small", |b| {
        b.iter(|| black_box(small.unique_id().unwrap()))
    });
    group.bench_function("list_of_1000", |b| {
        b.iter(|| black_box(large.unique_id().unwrap()))
    });
    let mapped = Mapped {
        weights: (0..1000).map(|i| (format!("key-{i}"), i)).collect(),
    };
    group.bench_function("map_of_1000", |b| {
        b.iter(|| black_box(mapped.unique_id().unwrap()))
    });
    // Baseline: postcard-encode and blake3 the same arguments (no canonicalisation).
    group.bench_function("raw_postcard_blake3_list_of_1000", |b| {
        b.iter(|| black_box(blake3::hash(&postcard::to_allocvec(&large.items).unwrap())))
    });
    group.finish();

    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let ws = Workspace::open(dir.path()).expect("workspace");
    small.result(&ws).expect("first run");
    let mut group = c.benchmark_group("cache_hit");
    group.bench_function("memory", |b| {
        b.iter(|| black_box(*small.result(&ws).unwrap()))
    });
    let cold = Workspace::open(dir.path()).expect("workspace");
    cold.set_cache_limits(1, 0);
    group.bench_function("disk_verified", |b| {
        b.iter(|| black_box(*small.result(&cold).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, ids);
criterion_main!(benches);
