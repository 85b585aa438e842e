//! Runs, explain and the cost of storing id pre-images (issue 14).
//!
//! ```sh
//! cargo bench -p milonga-benches --bench runs
//! ```

// Not a decoder: a panic here is a failing test or tool, not a panic on stored bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use milonga::{BoxError, Context, DynStep, Executor, PostcardFormat, Step, StepRef, Workspace};
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
struct Up {
    n: u64,
}

impl Step for Up {
    const NAME: &'static str = "bench::Up";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        Ok(self.n)
    }
}

#[derive(Serialize)]
struct Down {
    up: StepRef<Up>,
    factor: u64,
    label: String,
}

impl Step for Down {
    const NAME: &'static str = "bench::Down";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        Ok(*ctx.input(&self.up)? * self.factor)
    }
}

/// `result()` of a step that is not stored yet (a new one each iteration): runs, writes its
/// record (with the id pre-image and provenance), stores and reads back its result. Run the
/// same bench on the release before pre-images (commit 8e58a4d, where `ids.rs` has it too) to
/// compare.
fn result_miss(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let ws = Workspace::open(dir.path()).expect("workspace");
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("result_miss");
    group.sample_size(30);
    group.bench_function("small_step_local", |b| {
        b.iter(|| {
            let x = next.fetch_add(1, Ordering::Relaxed);
            let s = Small {
                x,
                name: "tokenize".into(),
            };
            black_box(*s.result(&ws).unwrap())
        })
    });
    let mem = Workspace::memory().expect("workspace");
    group.bench_function("small_step_memory", |b| {
        b.iter(|| {
            let x = next.fetch_add(1, Ordering::Relaxed);
            let s = Small {
                x,
                name: "tokenize".into(),
            };
            black_box(*s.result(&mem).unwrap())
        })
    });
    group.finish();
}

/// `result()` of a stored step read from the workspace (not the memory cache): the path that
/// may record a last access (at most once an hour per step by default).
fn cache_hit(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let ws = Workspace::open(dir.path()).expect("workspace");
    let s = Small {
        x: 7,
        name: "tokenize".into(),
    };
    s.result(&ws).unwrap();
    let cold = Workspace::open(dir.path()).expect("workspace");
    cold.set_cache_limits(1, 0);
    let mut group = c.benchmark_group("cache_hit");
    group.bench_function("disk_verified", |b| {
        b.iter(|| black_box(*s.result(&cold).unwrap()))
    });
    group.finish();
}

/// `explain` of one step in a workspace of 10,000 step records (5,000 `Up`, 5,000 `Down`; the
/// explained `Down` differs from its closest record by an argument and an upstream whose own
/// argument differs). The records are written through `result()` in a memory workspace (a local
/// one would spend minutes in fsyncs to set up); the queries are the same.
fn explain(c: &mut Criterion) {
    let ws = Workspace::memory().expect("workspace");
    ws.set_cache_limits(1, 0);
    for i in 0..5_000u64 {
        Down {
            up: Up { n: i }.into(),
            factor: i % 7,
            label: format!("label-{}", i % 13),
        }
        .result(&ws)
        .unwrap();
    }
    let target = Down {
        up: Up { n: 5_000 }.into(),
        factor: 3,
        label: "new".into(),
    };
    target.result(&ws).unwrap();
    let id = target.unique_id().unwrap();
    assert!(ws.steps().unwrap().len() >= 10_000);
    let why = ws.explain(&id).unwrap();
    assert!(why.compared_with.is_some(), "{why}");
    let mut group = c.benchmark_group("explain");
    group.bench_function("one_step_of_10000", |b| {
        b.iter(|| black_box(ws.explain(&id).unwrap()))
    });
    group.finish();
}

/// `Workspace::runs` on a workspace of 100,000 step records in 1,000 runs of 100 steps. The
/// records are inserted with SQL in one transaction (writing them through the executor would
/// take minutes of fsyncs); the listing reads the same tables.
fn runs(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    {
        let ws = Workspace::open(dir.path()).expect("workspace");
        Executor::new(&ws)
            .with_progress(false)
            .run([DynStep::new(Up { n: 0 })])
            .unwrap();
    }
    let mut conn = rusqlite::Connection::open(dir.path().join(milonga::DATABASE_FILE)).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut step = tx
            .prepare(
                "INSERT INTO steps (unique_id, step_type, state, manifest_id, format_id,
                                    format_version, started_at, ended_at, metadata, attempts,
                                    args)
                 VALUES (?1, 'bench::Up', 'COMPLETED', ?2, 'milonga.postcard', 1, ?3, ?3, '{}',
                         1, x'0c0000000000000000')",
            )
            .unwrap();
        let mut run = tx
            .prepare("INSERT INTO runs (name, started_at) VALUES (?1, ?2)")
            .unwrap();
        let mut member = tx
            .prepare(
                "INSERT INTO run_steps (run_id, unique_id, name, target) VALUES (?1, ?2, ?3, ?4)",
            )
            .unwrap();
        let manifest = "0".repeat(64);
        for r in 0..1_000i64 {
            run.execute(rusqlite::params![format!("run-{r}"), r])
                .unwrap();
            let run_id = tx.last_insert_rowid();
            for s in 0..100i64 {
                let id = format!("Up-{r}x{s}");
                step.execute(rusqlite::params![id, manifest, r]).unwrap();
                member
                    .execute(rusqlite::params![run_id, id, format!("s{s}"), s == 0])
                    .unwrap();
            }
        }
    }
    tx.commit().unwrap();
    drop(conn);
    let ws = Workspace::open(dir.path()).expect("workspace");
    assert_eq!(ws.runs().unwrap().len(), 1_001);
    let mut group = c.benchmark_group("runs");
    group.sample_size(10);
    group.bench_function("list_1000_runs_of_100000_steps", |b| {
        b.iter(|| black_box(ws.runs().unwrap()))
    });
    group.bench_function("show_one_run_of_100_steps", |b| {
        b.iter(|| black_box(ws.run("run-500").unwrap()))
    });
    group.finish();
}

criterion_group!(benches, result_miss, cache_hit, explain, runs);
criterion_main!(benches);
