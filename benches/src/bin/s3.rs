//! Objects on S3-compatible storage, measured against the project's local SeaweedFS server
//! (`BENCHMARKS.md` §12):
//!
//! ```text
//! eval "$(scripts/s3-server.sh start)"
//! cargo run --release -p milonga-benches --features s3 --bin s3 -- [--object-mib M] [--objects K] [--ranges R]
//! ```
//!
//! 1. Upload: `K` objects of `M` MiB (defaults 8 × 64 MiB) through the remote store's writer
//!    (staged locally while hashed, then a create-if-absent PUT and the outboard), against the
//!    same objects written to a local store in the same run.
//! 2. Download: the same objects read whole (`bytes`) by a store with an empty read-through
//!    cache (downloaded, hashed into the cache), then again (served from the cache, verified).
//! 3. Random verified 4 KiB range reads (`R`, default 300): the first read of each object (its
//!    outboard fetched, then the covering groups), later reads straight from the server (outboard
//!    in memory: one ranged GET), and reads of objects already in the cache.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::time::{Duration, Instant};

use milonga::remote::{ReadCache, Remote, RemoteStore};
use milonga::store::{LocalStore, ObjectStore};
use milonga::ContentId;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn write(store: &dyn ObjectStore, bytes: &[u8]) -> ContentId {
    let mut w = store.writer().unwrap();
    for piece in bytes.chunks(1 << 20) {
        w.write_all(piece).unwrap();
    }
    w.commit().unwrap().0
}

fn rate(bytes: u64, d: Duration) -> String {
    format!(
        "{:.0} MiB/s",
        bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
    )
}

fn quantiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "median {:.0} µs, p99 {:.0} µs (n = {})",
        q(0.5).as_secs_f64() * 1e6,
        q(0.99).as_secs_f64() * 1e6,
        v.len()
    )
}

/// A small deterministic generator of offsets.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib = arg(&args, "--object-mib", 64);
    let count = arg(&args, "--objects", 8);
    let ranges = arg(&args, "--ranges", 300);
    let bucket = std::env::var("MILONGA_TEST_S3")
        .expect("MILONGA_TEST_S3 is not set: run `eval \"$(scripts/s3-server.sh start)\"` first");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!("{bucket}/bench/s3-{nanos}");
    let len = (mib << 20) as usize;
    let objects: Vec<Vec<u8>> = (0..count).map(|i| data(len, i + 1)).collect();
    let total = len as u64 * count;
    println!("{count} objects of {mib} MiB at {url}");

    // 1. Uploads, and the same writes to a local store.
    let local_dir = tempfile::tempdir().unwrap();
    let local = LocalStore::open(local_dir.path()).unwrap();
    let t = Instant::now();
    for o in &objects {
        write(&local, o);
    }
    let local_write = t.elapsed();
    let cache_dir = tempfile::tempdir().unwrap();
    let writer = RemoteStore::new(
        Remote::from_url(&url).unwrap(),
        ReadCache::open(cache_dir.path(), 1 << 40).unwrap(),
    );
    let t = Instant::now();
    let ids: Vec<ContentId> = objects.iter().map(|o| write(&writer, o)).collect();
    let upload = t.elapsed();
    println!(
        "upload:   {} ({:.2?}); local store writes {} (remote / local = {:.2})",
        rate(total, upload),
        upload,
        rate(total, local_write),
        local_write.as_secs_f64() / upload.as_secs_f64()
    );
    let t = Instant::now();
    for o in &objects {
        write(&writer, o);
    }
    let again = t.elapsed();
    println!(
        "upload of content already stored (HEAD, then fetch-and-hash): {} ({:.2?})",
        rate(total, again),
        again
    );

    // 2. Downloads through an empty cache, then from it.
    let read_dir = tempfile::tempdir().unwrap();
    let reader = RemoteStore::new(
        Remote::from_url(&url).unwrap(),
        ReadCache::open(read_dir.path(), 1 << 40).unwrap(),
    );
    let t = Instant::now();
    for id in &ids {
        reader.bytes(id, Some(len as u64)).unwrap();
    }
    let cold = t.elapsed();
    let t = Instant::now();
    for id in &ids {
        reader.bytes(id, Some(len as u64)).unwrap();
    }
    let warm = t.elapsed();
    println!(
        "download: {} ({:.2?}) into an empty cache; {} from the cache (verified)",
        rate(total, cold),
        cold,
        rate(total, warm)
    );

    // 3. Random 4 KiB ranges.
    let ranged_dir = tempfile::tempdir().unwrap();
    let ranged = RemoteStore::new(
        Remote::from_url(&url).unwrap(),
        ReadCache::open(ranged_dir.path(), 1 << 40).unwrap(),
    );
    let mut rng = Rng(0x1234_5678);
    let mut first = Vec::new();
    let mut remote = Vec::new();
    let mut cached = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let off = rng.below(len as u64 - 4096);
        let t = Instant::now();
        let got = ranged.read_range(id, len as u64, off..off + 4096).unwrap();
        first.push(t.elapsed());
        assert_eq!(got, objects[i][off as usize..off as usize + 4096]);
    }
    for _ in 0..ranges {
        let i = rng.below(count) as usize;
        let off = rng.below(len as u64 - 4096);
        let t = Instant::now();
        let got = ranged
            .read_range(&ids[i], len as u64, off..off + 4096)
            .unwrap();
        remote.push(t.elapsed());
        assert_eq!(got, objects[i][off as usize..off as usize + 4096]);
    }
    for _ in 0..ranges {
        let i = rng.below(count) as usize;
        let off = rng.below(len as u64 - 4096);
        let t = Instant::now();
        let got = reader
            .read_range(&ids[i], len as u64, off..off + 4096)
            .unwrap();
        cached.push(t.elapsed());
        assert_eq!(got, objects[i][off as usize..off as usize + 4096]);
    }
    println!(
        "4 KiB range, first of its object (outboard fetched): {}",
        quantiles(first)
    );
    println!(
        "4 KiB range, from the server (outboard in memory):   {}",
        quantiles(remote)
    );
    println!(
        "4 KiB range, object in the read-through cache:       {}",
        quantiles(cached)
    );
    for id in &ids {
        writer.remove(id).unwrap();
    }
}
