//! Streams and cached results on an `s3://` workspace against the same run's local workspace
//! (`BENCHMARKS.md` §14), on the project's local SeaweedFS server:
//!
//! ```text
//! eval "$(scripts/s3-server.sh start)"
//! cargo build --release -p milonga-benches --features s3 --bin remote_stream
//! target/release/remote_stream [--n 1000000] [--gets 1000] [--rounds 3]
//! ```
//!
//! For each workspace (a local directory, then `$MILONGA_TEST_S3/bench-stream-<time>`), every
//! phase runs in a fresh child process of this binary (`remote_stream phase …`), so that
//! nothing is shared in memory, and a remote phase's read-through cache is a directory chosen
//! by the parent (`MILONGA_CACHE_DIR`): empty for a cold phase, the one a full read filled for
//! a warm one.
//!
//! 1. `write`: the `N` benchmark records (`benches/src/records.rs`) as a `Stream<Record>`
//!    (chunks uploaded as they seal), and a 1,000-record `Vec<Record>` result (`hit`).
//! 2. `read` (cold cache, then warm): every item of the stream, in order.
//! 3. `get` (cold cache: nothing cached, every block a verified range read of the server;
//!    warm cache: the chunks the full read left in the cache): `G` random `get(i)`, the indices
//!    of the comparison harness.
//!    Run by hand only: `get-first`, `G` gets spread evenly over the stream (with `--gets 100`
//!    on 1,000,000 records, each the first get in its chunk: the chunk's outboard, header and
//!    block all come from the server).
//! 4. `hit` (cold cache, then warm): the cached 1,000-record result fetched in a fresh process,
//!    from opening the workspace to having the value.
//!
//! No phase after `write` may recompute a step: a child that runs one fails. Each round writes
//! streams of its own; the figures are printed as a table, remote beside local: the median of
//! the rounds and their range.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use milonga::{BoxError, Context, PostcardFormat, Step, Stream, StreamFormat, Workspace};
use milonga_benches::records::{self, Checks, Record, HIT_N};
use serde::Serialize;
use serde_json::{json, Value};

/// Steps that actually ran in this process.
static STEPS_RUN: AtomicU64 = AtomicU64::new(0);

/// Records `0..n` as a stream; `tag` keeps the ids of different runs of the bench apart.
#[derive(Serialize)]
struct Produce {
    n: u64,
    tag: String,
}

impl Step for Produce {
    const NAME: &'static str = "bench::RemoteProduce";
    type Output = Stream<Record>;
    type Format = StreamFormat<Record>;
    fn run(&self, _: &mut Context<'_>) -> Result<Stream<Record>, BoxError> {
        STEPS_RUN.fetch_add(1, Ordering::Relaxed);
        Ok(Stream::new(records::records(self.n)))
    }
}

/// A small cached result: records `0..n` as one postcard value.
#[derive(Serialize)]
struct Hit {
    n: u64,
    tag: String,
}

impl Step for Hit {
    const NAME: &'static str = "bench::RemoteHit";
    type Output = Vec<Record>;
    type Format = PostcardFormat;
    fn run(&self, _: &mut Context<'_>) -> Result<Vec<Record>, BoxError> {
        STEPS_RUN.fetch_add(1, Ordering::Relaxed);
        Ok(records::records(self.n).collect())
    }
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: not a valid value: {v}"))
        })
}

fn checks_json(c: &Checks) -> Value {
    json!({"count": c.count, "text_bytes": c.text_bytes, "score_sum": c.score_sum})
}

/// One phase, in this (child) process; returns its figures.
fn phase(name: &str, url: &str, n: u64, gets: usize, tag: &str) -> Result<Value, BoxError> {
    let produce = Produce {
        n,
        tag: tag.to_owned(),
    };
    let hit = Hit {
        n: HIT_N,
        tag: tag.to_owned(),
    };
    let t = Instant::now();
    let ws = Workspace::from_url(url)?;
    let open_s = t.elapsed().as_secs_f64();
    let out = match name {
        "write" => {
            let t = Instant::now();
            produce.result(&ws)?;
            let write_s = t.elapsed().as_secs_f64();
            // Generating the records alone, to tell the engine's cost from the generator's.
            let t = Instant::now();
            for r in records::records(n) {
                std::hint::black_box(r);
            }
            let gen_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            hit.result(&ws)?;
            let hit_write_s = t.elapsed().as_secs_f64();
            // What a full read downloads: the stream's files (chunks, index, end record).
            let stored: u64 = ws
                .artifact(&produce.unique_id()?)?
                .files()
                .iter()
                .map(|f| f.len)
                .sum();
            json!({"write_s": write_s, "gen_s": gen_s, "hit_write_s": hit_write_s,
                   "stored_bytes": stored})
        }
        "read" => {
            let t = Instant::now();
            let stream = produce.result(&ws)?;
            let mut iter = stream.iter();
            let mut c = Checks::default();
            if let Some(r) = iter.next().transpose()? {
                c.add(&r);
            }
            let first_item_s = t.elapsed().as_secs_f64();
            for r in iter {
                c.add(&r?);
            }
            let read_s = t.elapsed().as_secs_f64();
            if c.count != n {
                return Err(format!("read {} items, {n} were written", c.count).into());
            }
            json!({"read_s": read_s, "first_item_s": first_item_s, "check": checks_json(&c)})
        }
        "get" | "get-first" => {
            let stream = produce.result(&ws)?;
            let indices = if name == "get" {
                let all = records::random_indices(n);
                all[..gets.min(all.len())].to_vec()
            } else {
                // `gets` items spread evenly: with at least 10,000 items between two (chunks of
                // ~9,100 records here), every get is the first in its chunk.
                let step = n / gets.max(1) as u64;
                (0..gets as u64).map(|j| j * step + step / 2).collect()
            };
            let indices = &indices[..];
            let mut times = Vec::with_capacity(indices.len());
            let mut id_sum = 0u64;
            for &i in indices {
                let t = Instant::now();
                let r = stream.get(i)?;
                times.push(t.elapsed().as_secs_f64());
                if r.id != i {
                    return Err(format!("get({i}) returned record {}", r.id).into());
                }
                id_sum += r.id;
            }
            let first = times.first().copied().unwrap_or(0.0);
            let total: f64 = times.iter().sum();
            times.sort_by(f64::total_cmp);
            let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
            json!({"gets": times.len(), "first_s": first, "mean_s": total / times.len() as f64,
                   "median_s": q(0.5), "p99_s": q(0.99), "max_s": q(1.0), "id_sum": id_sum})
        }
        "hit" => {
            let t = Instant::now();
            let value = hit.result(&ws)?;
            let fetch_s = t.elapsed().as_secs_f64();
            let mut c = Checks::default();
            value.iter().for_each(|r| c.add(r));
            if c.count != HIT_N {
                return Err(format!("the cached result has {} records", c.count).into());
            }
            json!({"fetch_s": fetch_s, "check": checks_json(&c)})
        }
        other => return Err(format!("unknown phase {other}").into()),
    };
    let ran = STEPS_RUN.load(Ordering::Relaxed);
    if name != "write" && ran != 0 {
        return Err(format!("phase {name} recomputed {ran} step(s): the cache missed").into());
    }
    let mut out = out;
    out["open_s"] = json!(open_s);
    Ok(out)
}

/// Runs `phase` in a child process with its read-through cache in `cache`; the child's
/// figures, and its wall time as seen from here.
fn child(
    phase: &str,
    url: &str,
    cache: &Path,
    n: u64,
    gets: usize,
    tag: &str,
) -> (Value, Duration) {
    let exe = std::env::current_exe().expect("the path of this binary");
    let t = Instant::now();
    let out = Command::new(exe)
        .args(["phase", phase, "--url", url, "--n", &n.to_string()])
        .args(["--gets", &gets.to_string(), "--tag", tag])
        .env("MILONGA_CACHE_DIR", cache)
        .output()
        .expect("spawn a phase");
    let wall = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        panic!(
            "phase {phase} on {url} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("phase {phase} printed no RESULT line:\n{stdout}"));
    (serde_json::from_str(line).expect("a JSON result"), wall)
}

/// The figures of one workspace.
struct Figures {
    write: Value,
    read_cold: Value,
    read_warm: Value,
    get_cold: Value,
    get_warm: Value,
    hit_cold: (Value, Duration),
    hit_warm: (Value, Duration),
}

fn measure(url: &str, scratch: &Path, label: &str, n: u64, gets: usize, tag: &str) -> Figures {
    let dir = |name: &str| -> PathBuf {
        let d = scratch.join(format!("{label}-{name}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (writer, read, ranges, fetch) = (dir("writer"), dir("read"), dir("ranges"), dir("hit"));
    eprintln!("{label}: write");
    let write = child("write", url, &writer, n, gets, tag).0;
    eprintln!("{label}: full read, cold cache");
    let read_cold = child("read", url, &read, n, gets, tag).0;
    eprintln!("{label}: full read, warm cache");
    let read_warm = child("read", url, &read, n, gets, tag).0;
    eprintln!("{label}: get(i), cold cache");
    let get_cold = child("get", url, &ranges, n, gets, tag).0;
    eprintln!("{label}: get(i), warm cache");
    let get_warm = child("get", url, &read, n, gets, tag).0;
    eprintln!("{label}: cached result, fresh process, cold cache");
    let hit_cold = child("hit", url, &fetch, n, gets, tag);
    eprintln!("{label}: cached result, fresh process, warm cache");
    let hit_warm = child("hit", url, &fetch, n, gets, tag);
    for v in [&read_cold, &read_warm] {
        assert_eq!(v["check"], read_warm["check"], "{label}: reads disagree");
    }
    assert_eq!(get_cold["id_sum"], get_warm["id_sum"]);
    Figures {
        write,
        read_cold,
        read_warm,
        get_cold,
        get_warm,
        hit_cold,
        hit_warm,
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

/// The median of `v` and its range, formatted by `fmt`.
fn spread(mut v: Vec<f64>, fmt: impl Fn(f64) -> String) -> String {
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    if v.len() == 1 {
        fmt(median)
    } else {
        format!("{} ({}–{})", fmt(median), fmt(v[0]), fmt(v[v.len() - 1]))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(s: f64) -> String {
    if s < 0.01 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("phase") {
        let name = args.get(2).expect("a phase name");
        let url: String = arg(&args, "--url").expect("--url");
        let n = arg(&args, "--n").expect("--n");
        let gets = arg(&args, "--gets").expect("--gets");
        let tag: String = arg(&args, "--tag").expect("--tag");
        match phase(name, &url, n, gets, &tag) {
            Ok(v) => println!("RESULT {v}"),
            Err(e) => {
                eprintln!("phase {name} on {url}: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let n: u64 = arg(&args, "--n").unwrap_or(1_000_000);
    let gets: usize = arg(&args, "--gets").unwrap_or(1_000);
    let rounds: usize = arg(&args, "--rounds").unwrap_or(3).max(1);
    let base = std::env::var("MILONGA_TEST_S3")
        .expect("MILONGA_TEST_S3 is not set: run `eval \"$(scripts/s3-server.sh start)\"` first");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let scratch = tempfile::tempdir_in(".").expect("a scratch directory here");
    let local_url = scratch.path().join("local-ws").display().to_string();
    let remote_url = format!("{}/bench-stream-{stamp}", base.trim_end_matches('/'));
    println!(
        "{n} records, {gets} random gets, {rounds} rounds (each: local, then remote, every \
         phase a fresh process); local workspace {local_url}; remote workspace {remote_url}"
    );
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for round in 0..rounds {
        // Every round writes a stream of its own (another step id): writes are real writes.
        let tag = format!("{stamp}-{round}");
        let dir = scratch.path().join(format!("round-{round}"));
        local.push(measure(&local_url, &dir, "local", n, gets, &tag));
        remote.push(measure(&remote_url, &dir, "remote", n, gets, &tag));
    }

    println!();
    println!(
        "| {n} records (~115 B each); median of {rounds} rounds (range) | local workspace | \
         s3:// workspace | remote / local (medians) |"
    );
    println!("|---|---|---|---|");
    type Pick = fn(&Figures) -> f64;
    let rate = |what: &str, pick: Pick| {
        let l: Vec<f64> = local.iter().map(|x| n as f64 / pick(x)).collect();
        let r: Vec<f64> = remote.iter().map(|x| n as f64 / pick(x)).collect();
        let ratio = median(r.clone()) / median(l.clone());
        let fmt = |v: f64| format!("{:.2}M", v / 1e6);
        println!(
            "| {what} | {} items/s | {} items/s | {ratio:.2} |",
            spread(l, fmt),
            spread(r, fmt)
        );
    };
    let time = |what: &str, pick: &dyn Fn(&Figures) -> f64| {
        let l: Vec<f64> = local.iter().map(pick).collect();
        let r: Vec<f64> = remote.iter().map(pick).collect();
        let ratio = median(r.clone()) / median(l.clone());
        println!(
            "| {what} | {} | {} | {ratio:.1}× the time |",
            spread(l, ms),
            spread(r, ms)
        );
    };
    rate("stream write (generating the records included)", |x| {
        f(&x.write["write_s"])
    });
    rate("full read, fresh process, cold read-through cache", |x| {
        f(&x.read_cold["read_s"])
    });
    rate("full read, fresh process, warm read-through cache", |x| {
        f(&x.read_warm["read_s"])
    });
    time("first item of the full read, cold cache", &|x| {
        f(&x.read_cold["first_item_s"])
    });
    for (label, pick) in [
        (
            "cold cache",
            (|x: &Figures| &x.get_cold) as fn(&Figures) -> &Value,
        ),
        ("warm cache", |x: &Figures| &x.get_warm),
    ] {
        time(&format!("random get(i), {label}: median of {gets}"), &|x| {
            f(&pick(x)["median_s"])
        });
        time(&format!("… p99, {label}"), &|x| f(&pick(x)["p99_s"]));
        time(&format!("… mean, {label}"), &|x| f(&pick(x)["mean_s"]));
        time(
            &format!("… the first get of the process, {label}"),
            &|x| f(&pick(x)["first_s"]),
        );
    }
    for (label, pick) in [
        (
            "cold cache",
            (|x: &Figures| &x.hit_cold) as fn(&Figures) -> &(Value, Duration),
        ),
        ("warm cache", |x: &Figures| &x.hit_warm),
    ] {
        time(
            &format!("cached {HIT_N}-record result, fresh process, {label}: open the workspace"),
            &|x| f(&pick(x).0["open_s"]),
        );
        time(
            "… then `result()` (the record, the manifest, the value)",
            &|x| f(&pick(x).0["fetch_s"]),
        );
        time(
            &format!("… the whole process (spawn to exit), {label}"),
            &|x| pick(x).1.as_secs_f64(),
        );
    }
    println!();
    let gen = |v: &[Figures]| median(v.iter().map(|x| f(&x.write["gen_s"])).collect());
    println!(
        "generating the {n} records alone (median): {:.2} s in the local rounds, {:.2} s in the \
         remote ones",
        gen(&local),
        gen(&remote)
    );
    let stored = f(&remote[0].write["stored_bytes"]);
    let cold = median(remote.iter().map(|x| f(&x.read_cold["read_s"])).collect());
    println!(
        "the stream's files: {:.1} MiB; the cold remote full read (median) took them in at {:.0} \
         MiB/s",
        stored / (1 << 20) as f64,
        stored / (1 << 20) as f64 / cold
    );
    println!(
        "a \"cold\" local read is a fresh process reading files in the OS page cache (just \
         written)"
    );
    let hit = |v: &[Figures]| median(v.iter().map(|x| f(&x.write["hit_write_s"])).collect());
    println!(
        "writing the {HIT_N}-record result (median): {} local, {} remote",
        ms(hit(&local)),
        ms(hit(&remote))
    );
    // The remote workspace's objects stay on the server (`scripts/s3-server.sh start` begins
    // with empty data).
}
