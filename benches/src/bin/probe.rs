//! Machine probe: the physical limits of this machine, measured with a small fixed workload, so
//! that BENCHMARKS.md can state milonga's throughput as a fraction of what the hardware allows.
//!
//! ```text
//! cargo run --release -p milonga-benches --bin probe -- [--dir DIR] [--mib 256] [--records 200000]
//! ```
//!
//! Measures, single-threaded:
//! - sequential write of `--mib` MiB (1 MiB `write`s of incompressible bytes) to a temp file in
//!   `--dir` (default: the current directory), once ending with `fsync` (timed) and once without
//!   (page cache only), plus the latency of a 4 KiB write + `fdatasync` (median of 20);
//! - postcard encode / decode of `--records` benchmark records (`milonga_benches::records`);
//! - zstd level 1 and 3 compress / decompress of those encoded records in 1 MiB chunks;
//! - blake3 hashing of the same bytes.
//!
//! CPU measurements are the best of 3 runs. MB = 10^6 bytes. Prints a table, then one JSON line
//! (the last line of stdout) with the same numbers.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use milonga_benches::records::{records, Record};

const CHUNK: usize = 1 << 20;
const REPEATS: usize = 3;

struct Args {
    dir: PathBuf,
    mib: usize,
    records: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        dir: PathBuf::from("."),
        mib: 256,
        records: 200_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(value()),
            "--mib" => a.mib = value().parse().unwrap_or_else(|_| usage("bad --mib")),
            "--records" => a.records = value().parse().unwrap_or_else(|_| usage("bad --records")),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    a
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("probe: {msg}");
    }
    eprintln!("usage: probe [--dir DIR] [--mib MIB] [--records N]");
    std::process::exit(if msg.is_empty() { 0 } else { 2 })
}

/// Best (shortest) of [`REPEATS`] runs of `f`.
fn best<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..REPEATS {
        let t0 = Instant::now();
        let out = f();
        let d = t0.elapsed();
        if best.as_ref().is_none_or(|(b, _)| d < *b) {
            best = Some((d, out));
        }
    }
    best.expect("REPEATS > 0")
}

fn mb_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn incompressible_block() -> Vec<u8> {
    let mut s = 0x2545_F491_4F6C_DD1D_u64;
    (0..CHUNK)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

/// Writes `mib` MiB to a new temp file in `dir`; returns the time of the writes (and of the
/// final `fsync` if `fsync`).
fn seq_write(dir: &Path, mib: usize, block: &[u8], fsync: bool) -> std::io::Result<Duration> {
    let mut f = tempfile::NamedTempFile::new_in(dir)?;
    let t0 = Instant::now();
    for _ in 0..mib {
        f.as_file_mut().write_all(block)?;
    }
    if fsync {
        f.as_file().sync_all()?;
    }
    let d = t0.elapsed();
    if !fsync {
        // Flush outside the timing so the dirty pages do not disturb the next measurements.
        f.as_file().sync_all()?;
    }
    Ok(d)
}

fn fsync_small_ms(dir: &Path) -> std::io::Result<f64> {
    let mut f = tempfile::NamedTempFile::new_in(dir)?;
    let block = [0x5a_u8; 4096];
    let mut times = Vec::with_capacity(20);
    for _ in 0..20 {
        let t0 = Instant::now();
        f.as_file_mut().write_all(&block)?;
        f.as_file().sync_data()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn encode(recs: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(recs.len() * 120);
    for r in recs {
        out = postcard::to_extend(r, out).expect("postcard encode");
    }
    out
}

fn decode(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while !bytes.is_empty() {
        let (r, rest): (Record, &[u8]) = postcard::take_from_bytes(bytes).expect("postcard decode");
        black_box(&r);
        bytes = rest;
        n += 1;
    }
    n
}

struct Zstd {
    compress_mb_s: f64,
    decompress_mb_s: f64,
    ratio: f64,
}

fn zstd_probe(data: &[u8], level: i32) -> Zstd {
    let mut comp = zstd::bulk::Compressor::new(level).expect("zstd compressor");
    let (dc, chunks) = best(|| {
        data.chunks(CHUNK)
            .map(|c| comp.compress(c).expect("zstd compress"))
            .collect::<Vec<_>>()
    });
    let compressed: usize = chunks.iter().map(Vec::len).sum();
    let mut decomp = zstd::bulk::Decompressor::new().expect("zstd decompressor");
    let mut buf = vec![0_u8; CHUNK];
    let (dd, total) = best(|| {
        let mut total = 0;
        for c in &chunks {
            total += decomp
                .decompress_to_buffer(c, &mut buf)
                .expect("zstd decompress");
            black_box(&buf);
        }
        total
    });
    assert_eq!(total, data.len());
    Zstd {
        compress_mb_s: mb_s(data.len(), dc),
        decompress_mb_s: mb_s(data.len(), dd),
        ratio: data.len() as f64 / compressed as f64,
    }
}

fn main() -> std::io::Result<()> {
    let a = parse_args();
    std::fs::create_dir_all(&a.dir)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let block = incompressible_block();
    let bytes = a.mib * CHUNK;

    eprintln!(
        "probe: sequential writes of {} MiB in {}",
        a.mib,
        a.dir.display()
    );
    let d_fsync = seq_write(&a.dir, a.mib, &block, true)?;
    let d_nofsync = seq_write(&a.dir, a.mib, &block, false)?;
    let fsync4k = fsync_small_ms(&a.dir)?;

    eprintln!("probe: codecs on {} records", a.records);
    let recs: Vec<Record> = records(a.records).collect();
    let (d_enc, encoded) = best(|| encode(&recs));
    let (d_dec, n_dec) = best(|| decode(&encoded));
    assert_eq!(n_dec as u64, a.records);
    let z1 = zstd_probe(&encoded, 1);
    let z3 = zstd_probe(&encoded, 3);
    let (d_b3, _) = best(|| black_box(blake3::hash(&encoded)));

    let n = a.records as f64;
    let enc_len = encoded.len();
    let rows: Vec<(&str, String, f64)> = vec![
        (
            "seq_write_nofsync_mb_s",
            "sequential write, no fsync (MB/s)".into(),
            mb_s(bytes, d_nofsync),
        ),
        (
            "seq_write_fsync_mb_s",
            "sequential write + fsync (MB/s)".into(),
            mb_s(bytes, d_fsync),
        ),
        (
            "fsync_4k_ms",
            "4 KiB write + fdatasync, median (ms)".into(),
            fsync4k,
        ),
        (
            "postcard_encode_items_s",
            "postcard encode (items/s)".into(),
            n / d_enc.as_secs_f64(),
        ),
        (
            "postcard_encode_mb_s",
            "postcard encode (MB/s of output)".into(),
            mb_s(enc_len, d_enc),
        ),
        (
            "postcard_decode_items_s",
            "postcard decode (items/s)".into(),
            n / d_dec.as_secs_f64(),
        ),
        (
            "postcard_decode_mb_s",
            "postcard decode (MB/s of input)".into(),
            mb_s(enc_len, d_dec),
        ),
        (
            "zstd1_compress_mb_s",
            "zstd -1 compress (MB/s of input)".into(),
            z1.compress_mb_s,
        ),
        (
            "zstd1_decompress_mb_s",
            "zstd -1 decompress (MB/s of output)".into(),
            z1.decompress_mb_s,
        ),
        (
            "zstd1_ratio",
            "zstd -1 ratio (raw/compressed)".into(),
            z1.ratio,
        ),
        (
            "zstd3_compress_mb_s",
            "zstd -3 compress (MB/s of input)".into(),
            z3.compress_mb_s,
        ),
        (
            "zstd3_decompress_mb_s",
            "zstd -3 decompress (MB/s of output)".into(),
            z3.decompress_mb_s,
        ),
        (
            "zstd3_ratio",
            "zstd -3 ratio (raw/compressed)".into(),
            z3.ratio,
        ),
        (
            "blake3_mb_s",
            "blake3 hash (MB/s)".into(),
            mb_s(enc_len, d_b3),
        ),
    ];

    println!(
        "machine probe: {cores} cores, {} MiB writes in {}, {} records = {:.1} MB postcard ({:.1} B/record)",
        a.mib,
        a.dir.display(),
        a.records,
        enc_len as f64 / 1e6,
        enc_len as f64 / n
    );
    for (_, label, v) in &rows {
        println!("  {label:<40} {v:>14.2}");
    }
    let mut json = serde_json::Map::new();
    json.insert("probe".into(), 1.into());
    json.insert("cores".into(), cores.into());
    json.insert("dir".into(), a.dir.display().to_string().into());
    json.insert("write_mib".into(), a.mib.into());
    json.insert("records".into(), a.records.into());
    json.insert("postcard_bytes".into(), enc_len.into());
    for (key, _, v) in &rows {
        json.insert((*key).into(), serde_json::json!(v));
    }
    println!("{}", serde_json::Value::Object(json));
    Ok(())
}
