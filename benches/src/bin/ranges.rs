//! Verified byte ranges, measured (`BENCHMARKS.md` §5):
//!
//! ```text
//! cargo run --release -p milonga-benches --bin ranges -- [--records N] [--object-mib M] [--dir DIR]
//! ```
//!
//! 1. A stream of `N` records (default 10,000,000) in a local workspace: random `get(i)` over the
//!    whole stream (far more chunks than fit in any cache of chunk files) against random `get(i)`
//!    within its first chunk (in cache), in the same run; medians and p99 of each get's latency.
//! 2. An object of `M` MiB (default 1024): verified 4 KiB ranges at random offsets, cold (the
//!    file's pages dropped from the page cache with `posix_fadvise(DONTNEED)` before each read)
//!    and warm.
//! 3. Outboard bytes against data bytes, for the stream's chunk objects and the big object.
//! 4. A SQLite sequence of 1,000,000 records: the first open in a process (which verifies the
//!    file against its content id) against a second open (verified already).
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use milonga::store::{LocalStore, ObjectStore};
use milonga::{BoxError, Context, SqliteSequenceFormat, Step, Stream, StreamFormat, Workspace};
use milonga_benches::records::{self, Record};
use serde::Serialize;

type Records = Box<dyn Iterator<Item = Record> + Send>;

#[derive(Serialize)]
struct RangeStream {
    n: u64,
}

impl Step for RangeStream {
    const NAME: &'static str = "ranges::Stream";
    type Output = Stream<Record>;
    type Format = StreamFormat<Record>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Stream<Record>, BoxError> {
        Ok(Stream::new(records::records(self.n)))
    }
}

#[derive(Serialize)]
struct RangeSeq {
    n: u64,
}

impl Step for RangeSeq {
    const NAME: &'static str = "ranges::Seq";
    type Output = Records;
    type Format = SqliteSequenceFormat<Record>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Records, BoxError> {
        Ok(Box::new(records::records(self.n)))
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

struct Lat(Vec<Duration>);

impl Lat {
    fn pct(&mut self, p: f64) -> f64 {
        self.0.sort();
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i].as_secs_f64() * 1e6
    }
    fn report(&mut self, what: &str) -> f64 {
        let med = self.pct(0.5);
        println!(
            "{what}: median {med:.1} µs, p99 {:.1} µs ({} samples)",
            self.pct(0.99),
            self.0.len()
        );
        med
    }
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Drops the file's pages from the page cache (clean pages only; object files are).
fn drop_cache(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    }
}

/// Bytes of all files below `dir`, and of the outboards among them.
fn dir_bytes(dir: &Path) -> (u64, u64) {
    let (mut total, mut outboards) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
                if e.file_name()
                    .to_string_lossy()
                    .ends_with(milonga::store::OUTBOARD_SUFFIX)
                {
                    outboards += m.len();
                }
            }
        }
    }
    (total, outboards)
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(dir) = arg(&args, "--sqlite-open") {
        return sqlite_open(Path::new(&dir));
    }
    let n: u64 = arg(&args, "--records").map_or(Ok(10_000_000), |s| s.parse())?;
    let mib: u64 = arg(&args, "--object-mib").map_or(Ok(1024), |s| s.parse())?;
    let tmp = tempfile::tempdir()?;
    let dir: PathBuf = arg(&args, "--dir").map_or_else(|| tmp.path().to_owned(), PathBuf::from);
    let ws_dir = dir.join("ws");
    let ws = Workspace::open(&ws_dir)?;

    // 0. The write path's hashing: plain BLAKE3 against BLAKE3 with the outboard, in memory,
    // fed in 256 KiB writes as the object writer's buffer does.
    let data: Vec<u8> = (0..64u64 << 20)
        .map(|i| (records::splitmix64(i / 8) >> ((i % 8) * 8)) as u8)
        .collect();
    let (mut plain, mut with_ob) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        let mut h = blake3::Hasher::new();
        for piece in data.chunks(256 << 10) {
            h.update(piece);
        }
        std::hint::black_box(h.finalize());
        plain.push(t.elapsed());
        let t = Instant::now();
        let mut b = milonga::sdk::outboard::OutboardBuilder::new();
        for piece in data.chunks(256 << 10) {
            b.update(piece);
        }
        std::hint::black_box(b.finish());
        with_ob.push(t.elapsed());
    }
    let (p, o) = (
        *plain.iter().min().ok_or("no runs")?,
        *with_ob.iter().min().ok_or("no runs")?,
    );
    let gibs = |d: Duration| 64.0 / 1024.0 / d.as_secs_f64();
    println!(
        "hashing 64 MiB: blake3 {:.2} GiB/s, blake3 + outboard {:.2} GiB/s ({:+.1}%)",
        gibs(p),
        gibs(o),
        (o.as_secs_f64() / p.as_secs_f64() - 1.0) * 100.0
    );
    drop(data);

    // 1. Streams.
    let step = RangeStream { n };
    let t = Instant::now();
    let stream = step.result(&ws)?;
    let took = t.elapsed();
    println!(
        "stream of {n} records written in {took:.2?} ({:.2}M items/s)",
        n as f64 / took.as_secs_f64() / 1e6
    );
    let (all, outboards) = dir_bytes(&ws_dir.join(milonga::store::OBJECTS_DIR));
    let objects = all - outboards;
    println!(
        "objects {objects} bytes, outboards {outboards} bytes ({:.3}%)",
        outboards as f64 * 100.0 / objects as f64
    );
    drop(stream);
    drop(ws);
    let ws = Workspace::open(&ws_dir)?;
    let stream = step.result(&ws)?;
    let chunks = stream.chunks().known_chunks();
    let first_chunk = chunks[0].entry.item_count as u64;
    println!(
        "{} chunks; the first holds {first_chunk} items",
        chunks.len()
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Warm up the header cache and the page cache the way a long-running reader would.
    for _ in 0..5_000 {
        let i = rng.below(n);
        assert_eq!(stream.get(i)?.id, i);
    }
    let gets = 20_000;
    let mut whole = Lat(Vec::with_capacity(gets));
    let mut in_cache = Lat(Vec::with_capacity(gets));
    for _ in 0..gets {
        let i = rng.below(n);
        let t = Instant::now();
        let r = stream.get(i)?;
        whole.0.push(t.elapsed());
        assert_eq!(r.id, i);
        let i = rng.below(first_chunk);
        let t = Instant::now();
        let r = stream.get(i)?;
        in_cache.0.push(t.elapsed());
        assert_eq!(r.id, i);
    }
    let a = whole.report(&format!("random get over all {n} records"));
    let b = in_cache.report("random get within the first chunk (in cache)");
    println!("ratio whole / in cache: {:.2}", a / b);
    // The floor of any get: decompressing one block of a chunk already in memory.
    let loaded = stream.chunks().load(&chunks[0])?;
    let blocks = loaded.info.blocks.len() as u64;
    let mut dctx = milonga::chunked::raw::Decompressor::new();
    let mut floor = Lat(Vec::with_capacity(gets));
    let mut out = Vec::new();
    for _ in 0..gets {
        let block = rng.below(blocks) as usize;
        out.clear();
        let t = Instant::now();
        loaded.info.decompress_block(
            (*loaded.bytes).as_ref(),
            block,
            &chunks[0].name,
            &mut out,
            &mut dctx,
        )?;
        floor.0.push(t.elapsed());
    }
    floor.report("baseline: decompress one block of a chunk in memory (no I/O, no hashing)");
    if args.iter().any(|a| a == "--gets-only") {
        return Ok(());
    }
    let t = Instant::now();
    let mut count = 0u64;
    for r in stream.iter() {
        count += u64::from(r?.id == count);
    }
    let d = t.elapsed();
    assert_eq!(count, n);
    println!(
        "full iteration: {d:.2?} ({:.2}M items/s)",
        n as f64 / d.as_secs_f64() / 1e6
    );
    drop(stream);
    if args.iter().any(|a| a == "--streams-only") {
        return Ok(());
    }

    // 2. A big object.
    let store = LocalStore::open(&dir.join("objects"))?;
    let len = mib << 20;
    let t = Instant::now();
    let mut w = store.writer()?;
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..mib {
        for (j, b) in buf.iter_mut().enumerate() {
            *b = (records::splitmix64(i * 1_048_576 + j as u64 / 8) >> ((j % 8) * 8)) as u8;
        }
        std::io::Write::write_all(&mut w, &buf)?;
    }
    let (id, got) = w.commit()?;
    assert_eq!(got, len);
    let took = t.elapsed();
    println!(
        "object of {mib} MiB put in {took:.2?} ({:.0} MiB/s, hashing and outboard in one pass)",
        mib as f64 / took.as_secs_f64()
    );
    let ob = std::fs::metadata(store.outboard_path(&id))?.len();
    println!(
        "its outboard: {ob} bytes ({:.3}% of the data)",
        ob as f64 * 100.0 / len as f64
    );
    let reads = 5_000;
    let mut warm = Lat(Vec::with_capacity(reads));
    let mut cold = Lat(Vec::with_capacity(200));
    // Warm: the object's pages are in the page cache (it was just written).
    for _ in 0..reads {
        let at = rng.below(len - 4096);
        let t = Instant::now();
        let r = store.read_range(&id, len, at..at + 4096)?;
        warm.0.push(t.elapsed());
        assert_eq!(r.len(), 4096);
    }
    // Cold: the pages of the object and its outboard dropped before each read.
    for _ in 0..200 {
        let at = rng.below(len - 4096);
        drop_cache(&store.object_path(&id));
        drop_cache(&store.outboard_path(&id));
        let t = Instant::now();
        let r = store.read_range(&id, len, at..at + 4096)?;
        cold.0.push(t.elapsed());
        assert_eq!(r.len(), 4096);
    }
    warm.report(&format!("verified 4 KiB range of a {mib} MiB object, warm"));
    cold.report(&format!(
        "verified 4 KiB range of a {mib} MiB object, cold (page cache dropped)"
    ));
    let t = Instant::now();
    store.bytes(&id, Some(len))?;
    println!("for scale: verifying the whole object: {:.2?}", t.elapsed());
    store.remove(&id)?;

    // 4. SQLite: verification on first open, in fresh processes.
    let seq_step = RangeSeq { n: SEQ_N };
    seq_step.result(&ws)?;
    let uid = seq_step.unique_id()?;
    let entry = ws.artifact(&uid)?.files()[0].clone();
    drop(ws);
    let mut firsts = Vec::new();
    for _ in 0..5 {
        let out = std::process::Command::new(std::env::current_exe()?)
            .args(["--sqlite-open", ws_dir.to_str().ok_or("path")?])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        firsts.push(text.trim().to_owned());
    }
    println!(
        "SQLite sequence of {SEQ_N} records ({} bytes), fresh processes: [first open + get \
         (verifies the file), second open + get] in µs: {}",
        entry.len,
        firsts.join("; ")
    );
    Ok(())
}

const SEQ_N: u64 = 1_000_000;

/// In a fresh process: open the sequence twice, printing the two times in µs.
fn sqlite_open(ws_dir: &Path) -> Result<(), BoxError> {
    let mut times = Vec::new();
    for _ in 0..2 {
        let ws = Workspace::open(ws_dir)?;
        let t = Instant::now();
        let seq = RangeSeq { n: SEQ_N }.result(&ws)?;
        assert_eq!(seq.get(SEQ_N / 2)?.id, SEQ_N / 2);
        times.push(t.elapsed().as_micros().to_string());
    }
    println!("{}", times.join(", "));
    Ok(())
}
