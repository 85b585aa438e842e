//! `milonga steps --json` (and text, `--no-sizes`, a filter) and `milonga runs --json` on a
//! workspace of many step records, each with a manifest of its own.
//!
//! ```text
//! cargo build --release -p milonga --features cli --bin milonga
//! cargo run --release -p milonga-benches --bin cli_steps -- target/release/milonga 100000 1000
//! # the same workspace as an older release wrote it (schema 2, no result sizes), for an A/B:
//! cargo run --release -p milonga-benches --bin cli_steps -- OLD_MILONGA 100000 1000 --schema2
//! ```
//!
//! The workspace gets `distinct` real results (computed by the executor), then each record is
//! copied under new unique ids up to `records` rows in one SQLite transaction (computing
//! 100,000 real steps, each with its fsyncs, would take minutes). Each copy gets a manifest
//! object of its own (its original's files plus an empty file named after the copy, written
//! without fsync), so a listing that read manifests would read `records` distinct ones; and
//! the copies are registered in runs of 100 steps. With `--schema2` the workspace is turned
//! back into schema 2 (the `result_size` column dropped) before anything is timed: what an
//! older release wrote, and what this one fills in at its first listing.
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

/// Times one run of `bin` (the first listing of a schema-2 workspace also upgrades it).
fn time_once(bin: &str, ws: &std::path::Path, args: &[&str]) -> f64 {
    let t = Instant::now();
    let status = Command::new(bin)
        .arg("-w")
        .arg(ws)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run milonga");
    assert!(status.success(), "{args:?} failed");
    t.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .expect("usage: cli_steps MILONGA_BINARY [RECORDS] [DISTINCT] [--schema2]");
    let records: u64 = args.next().map_or(100_000, |a| a.parse().expect("RECORDS"));
    let distinct: u64 = args.next().map_or(1_000, |a| a.parse().expect("DISTINCT"));
    let schema2 = args.next().is_some_and(|a| a == "--schema2");
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
    let t = Instant::now();
    let records = copy_records(dir.path(), records, distinct);
    eprintln!(
        "{records} records, each with its own manifest, in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if schema2 {
        let conn =
            rusqlite::Connection::open(dir.path().join(milonga::DATABASE_FILE)).expect("database");
        conn.execute_batch(
            "ALTER TABLE steps DROP COLUMN result_size; UPDATE schema_version SET version = 2;",
        )
        .expect("back to schema 2");
        drop(conn);
        let first = time_once(&bin, dir.path(), &["steps", "--json"]);
        println!("first `milonga steps --json` of the schema-2 workspace: {first:.3} s");
    }
    println!("| command ({records} records, as many manifests) | best of 3 |");
    println!("|---|---|");
    for args in [
        &["steps", "--json"][..],
        &["steps", "--json", "--no-sizes"],
        &["steps"],
        &["steps", "--json", "--state", "failed"],
        &["runs", "--json"],
    ] {
        let s = time(&bin, dir.path(), args);
        println!("| `milonga {}` | {:.3} s |", args.join(" "), s);
    }
    if std::env::var_os("MILONGA_BENCH_KEEP").is_some() {
        eprintln!("kept the workspace in {}", dir.keep().display());
    }
}

/// Copies each of the `distinct` records of the workspace at `root` until it has about
/// `records`, each copy with a manifest object of its own, and registers them all in runs of
/// 100 steps. Returns the number of records.
fn copy_records(root: &std::path::Path, records: u64, distinct: u64) -> u64 {
    use milonga::store::{LocalStore, ObjectStore};
    use std::io::Write;
    let store = LocalStore::open(root).expect("store").without_sync();
    let empty = {
        let w = store.writer().expect("writer");
        w.commit().expect("empty object").0
    };
    let mut conn = rusqlite::Connection::open(root.join(milonga::DATABASE_FILE)).expect("database");
    let tx = conn.transaction().expect("transaction");
    let originals: Vec<(String, String, Option<i64>)> = tx
        .prepare("SELECT unique_id, manifest_id, result_size FROM steps WHERE state = 'COMPLETED'")
        .expect("select")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(originals.len() as u64, distinct);
    let reps = (records / distinct.max(1)).saturating_sub(1);
    let mut n = distinct;
    {
        let mut copy = tx
            .prepare(
                "INSERT INTO steps (unique_id, step_type, version, state, manifest_id, format_id,
                     format_version, started_at, ended_at, error, metadata, attempts, owner,
                     args, provenance_id, last_access, result_size)
                 SELECT ?2, step_type, version, state, ?3, format_id, format_version,
                     started_at, ended_at, error, metadata, attempts, owner, args,
                     provenance_id, last_access, result_size
                 FROM steps WHERE unique_id = ?1",
            )
            .expect("prepare");
        let mut run = tx
            .prepare("INSERT INTO runs (name, started_at) VALUES (?1, ?2)")
            .expect("prepare");
        let mut member = tx
            .prepare(
                "INSERT INTO run_steps (run_id, unique_id, name, target) VALUES (?1, ?2, ?3, ?4)",
            )
            .expect("prepare");
        let mut run_id = 0;
        for (o, (id, manifest, _)) in originals.iter().enumerate() {
            let mid = milonga::ContentId::from_hex(manifest).expect("manifest id");
            let bytes = std::fs::read(store.object_path(&mid)).expect("manifest");
            let original = milonga::Manifest::decode(&bytes, "manifest").expect("decode");
            for k in 0..=reps {
                let copy_id = if k == 0 {
                    id.clone()
                } else {
                    let mut m = original.clone();
                    m.files.push(milonga::FileEntry {
                        name: format!("copy-{k}"),
                        len: 0,
                        id: empty,
                    });
                    let mut w = store.writer().expect("writer");
                    w.write_all(&m.encode().expect("encode")).expect("write");
                    let (new_manifest, _) = w.commit().expect("commit");
                    let copy_id = format!("{id}-copy{k}");
                    copy.execute(rusqlite::params![id, copy_id, new_manifest.to_hex()])
                        .expect("copy the record");
                    n += 1;
                    copy_id
                };
                let i = o as u64 * (reps + 1) + k;
                if i.is_multiple_of(100) {
                    run.execute(rusqlite::params![format!("run-{i}"), i as i64])
                        .expect("run");
                    run_id = tx.last_insert_rowid();
                }
                member
                    .execute(rusqlite::params![
                        run_id,
                        copy_id,
                        format!("s{i}"),
                        i.is_multiple_of(100)
                    ])
                    .expect("member");
            }
        }
    }
    tx.commit().expect("commit");
    n
}
