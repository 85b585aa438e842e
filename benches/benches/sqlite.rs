//! SQLite sequence (`SqliteSequenceFormat`): write, random get and full iteration of the
//! benchmark records, in the default block layout and uncompressed, each beside the raw
//! baseline: the same postcard rows inserted into and selected from a plain
//! `(i INTEGER PRIMARY KEY, v BLOB)` table with rusqlite (same pragmas, same batches).
//!
//! `cargo bench -p milonga-benches --bench sqlite` (about a minute).
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use milonga::sdk::{Format, MemoryArtifact};
use milonga::{SqliteCompression, SqliteSequence, SqliteSequenceFormat};
use milonga_benches::records::{record, records, Record};

/// Records per file: small enough for a quick run, large enough for several MB of file.
const N: u64 = 100_000;
/// Rows per transaction of the raw baseline (as the format's writer).
const BATCH: u64 = 65_536;

fn variants() -> [(&'static str, SqliteCompression); 2] {
    [
        ("blocks", SqliteCompression::default()),
        ("none", SqliteCompression::None),
    ]
}

fn write_milonga(compression: SqliteCompression) -> MemoryArtifact {
    let format = SqliteSequenceFormat::<Record>::new().with_compression(compression);
    let artifact = MemoryArtifact::new();
    format.write(records(N), &artifact).expect("write");
    artifact
}

fn open_milonga(artifact: &MemoryArtifact) -> SqliteSequence<Record> {
    Format::<Vec<Record>>::read(&SqliteSequenceFormat::<Record>::new(), artifact.handle())
        .expect("read")
}

fn write_raw(path: &Path) -> rusqlite::Connection {
    let _ = std::fs::remove_file(path);
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(
        "PRAGMA page_size = 4096; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
         PRAGMA locking_mode = EXCLUSIVE; PRAGMA cache_size = -65536; \
         CREATE TABLE items (i INTEGER PRIMARY KEY, v BLOB NOT NULL);",
    )
    .expect("schema");
    let mut buf = Vec::new();
    conn.execute_batch("BEGIN").expect("begin");
    for r in records(N) {
        buf.clear();
        buf = postcard::to_extend(&r, buf).expect("postcard");
        conn.prepare_cached("INSERT INTO items (i, v) VALUES (?1, ?2)")
            .expect("prepare")
            .execute(rusqlite::params![r.id as i64, buf])
            .expect("insert");
        if (r.id + 1) % BATCH == 0 {
            conn.execute_batch("COMMIT; BEGIN").expect("commit");
        }
    }
    conn.execute_batch("COMMIT").expect("commit");
    conn
}

fn raw_get(conn: &rusqlite::Connection, i: u64) -> Record {
    let mut stmt = conn
        .prepare_cached("SELECT v FROM items WHERE i = ?1")
        .expect("prepare");
    stmt.query_row([i as i64], |row| {
        let v = row.get_ref(0)?.as_blob()?;
        Ok(postcard::from_bytes(v).expect("decode"))
    })
    .expect("row")
}

fn raw_iterate(conn: &rusqlite::Connection) -> u64 {
    let mut stmt = conn
        .prepare_cached("SELECT i, v FROM items ORDER BY i")
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    let mut n = 0u64;
    while let Some(row) = rows.next().expect("row") {
        let v = row.get_ref(1).expect("v").as_blob().expect("blob");
        let r: Record = postcard::from_bytes(v).expect("decode");
        n += black_box(r.id) & 1;
    }
    n
}

/// Deterministic pseudo-random indices in `0..N`.
fn indices() -> Vec<u64> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % N
        })
        .collect()
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group
}

fn write(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let mut group = configure(c, "sqlite_sequence_write");
    group.throughput(Throughput::Elements(N));
    for (name, compression) in variants() {
        group.bench_function(BenchmarkId::new("milonga", name), |b| {
            b.iter(|| black_box(write_milonga(compression)))
        });
    }
    let raw = dir.path().join("raw.sqlite");
    group.bench_function("raw_rusqlite_insert", |b| {
        b.iter(|| black_box(write_raw(&raw)))
    });
    group.finish();
}

fn get(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let idx = indices();
    let mut group = configure(c, "sqlite_sequence_random_get");
    group.throughput(Throughput::Elements(idx.len() as u64));
    for (name, compression) in variants() {
        let artifact = write_milonga(compression);
        let seq = open_milonga(&artifact);
        assert_eq!(seq.get(N - 1).expect("get"), record(N - 1));
        group.bench_function(BenchmarkId::new("milonga", name), |b| {
            b.iter(|| {
                for &i in &idx {
                    black_box(seq.get(i).expect("get"));
                }
            })
        });
    }
    let conn = write_raw(&dir.path().join("raw.sqlite"));
    group.bench_function("raw_rusqlite_select", |b| {
        b.iter(|| {
            for &i in &idx {
                black_box(raw_get(&conn, i));
            }
        })
    });
    group.finish();
}

fn iterate(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let mut group = configure(c, "sqlite_sequence_iterate");
    group.throughput(Throughput::Elements(N));
    for (name, compression) in variants() {
        let artifact = write_milonga(compression);
        let seq = open_milonga(&artifact);
        group.bench_function(BenchmarkId::new("milonga", name), |b| {
            b.iter(|| {
                let mut n = 0u64;
                for r in seq.iter() {
                    n += black_box(r.expect("item").id) & 1;
                }
                n
            })
        });
    }
    let conn = write_raw(&dir.path().join("raw.sqlite"));
    group.bench_function("raw_rusqlite_scan", |b| b.iter(|| raw_iterate(&conn)));
    group.finish();
}

criterion_group!(benches, write, get, iterate);
criterion_main!(benches);
