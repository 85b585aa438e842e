//! A quick measurement of `StreamFormat` on the issue-3 workload (not a benchmark harness; the
//! criterion benches live in `benches/`). Run with:
//!
//! ```text
//! cargo test -p milonga-formats --release --test stream_measure -- --ignored --nocapture
//! ```
//!
//! Records are generated before the clock starts; writes go to a `MemoryArtifact`; reads go
//! through a wrapper that, like the engine's stored artifacts, lists files from a fixed snapshot
//! (a manifest) and verifies each file's blake3 content hash in `bytes`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use milonga_formats::chunked::Compression;
use milonga_formats::{Stream, StreamFormat};
use milonga_sdk::{
    ArtifactReader, ContentId, Error, FileEntry, Format, MemoryArtifact, ReadSeek, Result,
    SharedBytes,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    text: String,
    score: f32,
}

const WORDS: &[&str] = &[
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "pipeline",
    "stream",
    "chunk",
    "cache",
    "result",
];

fn records(n: u64) -> Vec<Record> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|id| {
            let mut text = String::with_capacity(110);
            while text.len() < 100 {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
            }
            Record {
                id,
                text,
                score: (next() % 1000) as f32 / 10.0,
            }
        })
        .collect()
}

/// Files from a fixed snapshot; `bytes` verifies the content hash, as the engine does.
struct Verifying {
    files: Vec<FileEntry>,
    inner: MemoryArtifact,
}

impl ArtifactReader for Verifying {
    fn describe(&self) -> String {
        "measured artifact".into()
    }
    fn files(&self) -> Vec<FileEntry> {
        self.files.clone()
    }
    fn entry(&self, name: &str) -> Option<FileEntry> {
        self.files.iter().find(|f| f.name == name).cloned()
    }
    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>> {
        self.inner.open(name)
    }
    fn bytes(&self, name: &str) -> Result<SharedBytes> {
        let e = self.entry(name).ok_or_else(|| Error::MissingFile {
            file: name.to_owned(),
        })?;
        let b = self.inner.bytes(name)?;
        let id = ContentId::of((*b).as_ref());
        if id != e.id {
            return Err(Error::ChecksumMismatch {
                file: name.into(),
                expected: e.id.to_hex(),
                actual: id.to_hex(),
            });
        }
        Ok(b)
    }
    fn local_path(&self, _: &str) -> Result<Option<PathBuf>> {
        Ok(None)
    }
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:.2}M items/s", n as f64 / d.as_secs_f64() / 1e6)
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn measure_write_read_get() {
    let n: u64 = std::env::var("MEASURE_ITEMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let t = Instant::now();
    let recs = records(n);
    let raw: usize = recs
        .iter()
        .map(|r| postcard::to_allocvec(r).unwrap().len())
        .sum();
    println!(
        "{n} records, {raw} bytes of postcard ({:.1} B/item), generated in {:?}",
        raw as f64 / n as f64,
        t.elapsed()
    );
    for level in [-1, 1, 3, 6] {
        let f = StreamFormat::<Record>::new().with_compression(Compression::Zstd { level });
        let artifact = MemoryArtifact::new();
        let input = recs.clone();
        let t = Instant::now();
        f.write(Stream::new(input), &artifact).unwrap();
        let d = t.elapsed();
        let snap = artifact.snapshot();
        let stored: usize = snap.iter().map(|(_, b)| b.len()).sum();
        println!(
            "write zstd L{level}: {:?} = {}, {} files, {stored} bytes, ratio {:.2} (vs postcard)",
            d,
            rate(n, d),
            snap.len(),
            raw as f64 / stored as f64
        );
        if level != 3 {
            continue;
        }
        let handle = std::sync::Arc::new(Verifying {
            files: ArtifactReader::files(&artifact),
            inner: artifact.clone(),
        });
        let t = Instant::now();
        let reader = f.read(handle.clone()).unwrap();
        let opened = t.elapsed();
        let mut it = reader.iter();
        let first = it.next().unwrap().unwrap();
        let ttfi = t.elapsed();
        assert_eq!(first, recs[0]);
        drop(it);
        println!("time to first item (open + first item): {ttfi:?} (open: {opened:?})");
        let t = Instant::now();
        let again = f.read(handle.clone()).unwrap().get(0).unwrap();
        assert_eq!(again, recs[0]);
        println!("open + get(0) on a fresh reader: {:?}", t.elapsed());

        let t = Instant::now();
        let mut count = 0u64;
        for r in reader.iter() {
            let r = r.unwrap();
            count += u64::from(r.id == count);
        }
        let d = t.elapsed();
        assert_eq!(count, n);
        println!("full read (owned records): {d:?} = {}", rate(n, d));

        let t = Instant::now();
        let mut it = reader.iter();
        let mut slot = Record {
            id: 0,
            text: String::new(),
            score: 0.0,
        };
        let mut count = 0u64;
        while it.read_into(&mut slot).unwrap() {
            count += 1;
        }
        let d = t.elapsed();
        assert_eq!(count, n);
        println!("full read (read_into one slot): {d:?} = {}", rate(n, d));

        let mut x: u64 = 12345;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let fresh = f.read(handle.clone()).unwrap();
        let gets = 20_000;
        let t = Instant::now();
        for _ in 0..gets {
            let i = rnd();
            assert_eq!(fresh.get(i).unwrap().id, i);
        }
        let cold = t.elapsed();
        let t = Instant::now();
        for _ in 0..gets {
            let i = rnd();
            assert_eq!(fresh.get(i).unwrap().id, i);
        }
        let warm = t.elapsed();
        println!(
            "random get: {:.1} µs each over the first {gets} (chunk files loaded and verified \
             on first use), {:.1} µs each over the next {gets}",
            cold.as_secs_f64() * 1e6 / gets as f64,
            warm.as_secs_f64() * 1e6 / gets as f64
        );
        // Reading the raw bytes once, for scale.
        let t = Instant::now();
        let mut sink = Vec::new();
        for (name, _) in &snap {
            let mut r = handle.open(name).unwrap();
            r.read_to_end(&mut sink).unwrap();
            sink.clear();
        }
        println!("baseline: reading every file's bytes: {:?}", t.elapsed());
    }
}
