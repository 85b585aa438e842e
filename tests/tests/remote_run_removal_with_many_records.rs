//! Removing runs and collecting garbage on a remote workspace with many step records: the
//! records only removed runs had go, those another run has stay (the runs are read once per
//! operation, not once per record removed). Against the project's local SeaweedFS server
//! (`eval "$(scripts/s3-server.sh start)"`).
//!
//! `measure_run_removal_and_gc` (ignored) prints the timings BENCHMARKS.md quotes:
//! `cargo test -p milonga-tests --all-features --test remote_run_removal_with_many_records
//! -- --ignored --nocapture` (`MILONGA_MEASURE_RECORDS`, default 1,000, and
//! `MILONGA_MEASURE_OTHER_RUNS`, default 20: other runs in the workspace).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::time::Instant;

use milonga::{Executor, GcPolicy, Step, StepRef, Workspace};
use milonga_tests::s3::fresh_url;
use milonga_tests::Numbers;

/// The tests of this file, one at a time: each sets the cache directory of the workspaces it
/// opens (`MILONGA_CACHE_DIR`, read when a workspace is opened) to a directory of its own,
/// removed when the returned guard is dropped.
fn one_at_a_time() -> (std::sync::MutexGuard<'static, ()>, tempfile::TempDir) {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let held = ONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("MILONGA_CACHE_DIR", dir.path());
    (held, dir)
}

fn ids(range: std::ops::Range<u32>) -> BTreeSet<String> {
    range.map(|n| Numbers { n }.unique_id().unwrap()).collect()
}

/// Runs `Numbers { n }` for every `n` in `range` as targets of run `name`.
fn run(ws: &Workspace, name: &str, range: std::ops::Range<u32>) {
    Executor::new(ws)
        .with_run_name(name)
        .with_jobs(4)
        .run(range.map(|n| StepRef::new(Numbers { n })))
        .unwrap();
}

fn stored(ws: &Workspace) -> BTreeSet<String> {
    ws.steps()
        .unwrap()
        .into_iter()
        .map(|s| s.unique_id)
        .collect()
}

#[test]
fn removing_runs_keeps_exactly_the_records_other_runs_have() {
    let (_one, _cache) = one_at_a_time();
    let ws = Workspace::from_url(&fresh_url("run-removal")).unwrap();
    run(&ws, "a", 0..40);
    run(&ws, "b", 30..60);
    assert_eq!(stored(&ws), ids(0..60));

    // Run a alone had 0..30; 30..40 are b's too.
    let removed: BTreeSet<String> = ws.remove_run("a").unwrap().into_iter().collect();
    assert_eq!(removed, ids(0..30));
    assert_eq!(stored(&ws), ids(30..60));

    // Keep the newest run only: b goes, with the records c does not have.
    run(&ws, "c", 50..70);
    let report = ws.gc_with(&GcPolicy::new().with_keep_last_runs(1)).unwrap();
    assert_eq!(report.removed_runs, ["b"]);
    let removed: BTreeSet<String> = report.removed_steps.into_iter().collect();
    assert_eq!(removed, ids(30..50));
    assert_eq!(stored(&ws), ids(50..70));
    let runs: Vec<String> = ws.runs().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(runs, ["c"]);
    // The kept records still read.
    assert_eq!(
        *StepRef::new(Numbers { n: 69 }).result(&ws).unwrap(),
        (0..69).collect::<Vec<_>>()
    );
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn measure_run_removal_and_gc() {
    let (_one, _cache) = one_at_a_time();
    let var = |k: &str, default: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = var("MILONGA_MEASURE_RECORDS", 1000);
    let others = var("MILONGA_MEASURE_OTHER_RUNS", 20);
    let ws = Workspace::from_url(&fresh_url("measure-removal")).unwrap();
    let t = Instant::now();
    // Oldest first: a run of n records (for gc), `others` runs of one record each, then a run
    // of n records (for remove_run).
    run(&ws, "old", 0..n);
    for i in 0..others {
        run(&ws, &format!("other-{i}"), 2 * n + i..2 * n + i + 1);
    }
    run(&ws, "big", n..2 * n);
    println!(
        "recording {} steps in {} runs: {:.1} s",
        2 * n + others,
        others + 2,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let removed = ws.remove_run("big").unwrap();
    println!(
        "remove_run of a run of {n} records ({others} other runs): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(removed.len(), n as usize);
    let t = Instant::now();
    let report = ws
        .gc_with(&GcPolicy::new().with_keep_last_runs(others as usize))
        .unwrap();
    println!(
        "gc dropping a run of {n} records ({others} other runs): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(report.removed_runs, ["old"]);
    assert_eq!(report.removed_steps.len(), n as usize);
}
