//! `milonga steps --json` (and text, and `--no-sizes`) on a workspace of many step records.
//!
//! ```text
//! cargo build --release -p milonga --features cli --bin milonga
//! cargo run --release -p milonga-benches --bin cli_steps -- target/release/milonga 100000 1000
//! ```
//!
//! The workspace gets `distinct` real results (computed by the executor, each with its own
//! manifest), then its records are copied under new unique ids up to `records` rows in one
//! SQLite transaction (computing 100,000 real steps, each with its fsyncs, would take minutes).
//! The copies share their originals' manifests, so the size column reads `distinct` manifests;
//! the cost of reading one manifest is printed too, to project a workspace where every record
//! has its own.

// Not a decoder: a panic here is a failing test or tool, not a panic on stored bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::{Command, Stdio};
use std::time::Instant;

use milonga::{BoxError, Context, Executor, PostcardFormat, Step, Workspace};
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    i: u64,
}

impl Step for Row {
    const NAME: &'static str = "Row";
    type Output = Vec<u64>;
    type Format = PostcardFormat;
    fn run(&self, _: &mut Context<'_>) -> Result<Vec<u64>, BoxError> {
        Ok((0..self.i % 97).collect())
    }
}

fn time(bin: &str, ws: &std::path::Path, args: &[&str]) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let status = Command::new(bin)
            .arg("-w")
            .arg(ws)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("run milonga");
        assert!(status.success(), "{args:?} failed");
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .expect("usage: cli_steps MILONGA_BINARY [RECORDS] [DISTINCT]");
    let records: u64 = args.next().map_or(100_000, |a| a.parse().expect("RECORDS"));
    let distinct: u64 = args.next().map_or(1_000, |a| a.parse().expect("DISTINCT"));
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let ws = Workspace::open(dir.path()).expect("workspace");
    let t = Instant::now();
    let steps: Vec<milonga::DynStep> = (0..distinct)
        .map(|i| milonga::DynStep::new(Row { i }))
        .collect();
    let outcome = Executor::new(&ws)
        .with_progress(false)
        .run(steps)
        .expect("executor");
    assert!(outcome.is_success());
    eprintln!(
        "{distinct} real steps in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(ws);
    let conn =
        rusqlite::Connection::open(dir.path().join(milonga::DATABASE_FILE)).expect("database");
    // Each real record is copied `reps` times: `distinct * (reps + 1)` records in all.
    let reps = (records / distinct.max(1)).saturating_sub(1);
    let records = distinct * (reps + 1);
    conn.execute(
        "WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < ?1)
         INSERT INTO steps (unique_id, step_type, version, state, manifest_id, format_id,
             format_version, started_at, ended_at, error, metadata, attempts, owner)
         SELECT s.unique_id || '-copy' || k.n, s.step_type, s.version, s.state, s.manifest_id,
             s.format_id, s.format_version, s.started_at, s.ended_at, s.error, s.metadata,
             s.attempts, s.owner
         FROM steps AS s, k",
        [reps as i64],
    )
    .expect("copy the records");
    drop(conn);
    println!("| command ({records} records, {distinct} distinct manifests) | best of 3 |");
    println!("|---|---|");
    for args in [
        &["steps", "--json"][..],
        &["steps", "--json", "--no-sizes"],
        &["steps"],
        &["steps", "--json", "--state", "failed"],
    ] {
        let s = time(&bin, dir.path(), args);
        println!("| `milonga {}` | {:.3} s |", args.join(" "), s);
    }
    if std::env::var_os("MILONGA_BENCH_KEEP").is_some() {
        eprintln!("kept the workspace in {}", dir.keep().display());
    }
}
