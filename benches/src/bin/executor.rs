//! Executor benchmarks: pipelining, parallel speed-up, and the overhead of a cached graph.
//!
//! ```text
//! cargo run --release -p milonga-benches --bin executor -- [--records 1000000] [--steps 10000]
//!     [--rounds 400000000] [--dir DIR] [--only pipeline|parallel|overhead] [--overhead-ws DIR]
//!     [--repeat 3]
//! ```
//!
//! Every measurement runs in a fresh child process of this binary (so peak RSS is that run's
//! own), in a fresh workspace under `--dir` (default: a temporary directory):
//!
//! 1. **Pipelining**: the quickstart's produce → transform → evaluate chain over `--records`
//!    records, once step after step (`pipeline(false)`) and once pipelined, both with the
//!    default number of workers; wall time and peak RSS of each, and the ratio.
//! 2. **Parallel speed-up**: eight independent CPU-bound steps with 1 and with 2 workers.
//!
//! 1 and 2 alternate `--repeat` times; the fastest run of each mode counts (the machine is
//! shared; every run is printed on standard error).
//! 3. **Overhead**: a graph of `--steps` small steps, computed once, then run again in a fresh
//!    process where every step is cached: the child's wall time from start to exit (opening the
//!    workspace, building the graph, checking every step). `--overhead-ws` keeps that workspace
//!    (the first run then only computes what is missing).
//!
//! Prints a table, then one JSON line with the numbers.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use milonga::{BoxError, Context, Executor, PostcardFormat, Step, StepRef, Workspace};
use milonga_benches::chain::chain;
use serde::Serialize;

/// This process's CPU time (user + system), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A CPU-bound step: `rounds` rounds of a xorshift generator.
#[derive(Serialize)]
struct Spin {
    i: u64,
    rounds: u64,
    nonce: u64,
}

impl Step for Spin {
    const NAME: &'static str = "bench::Spin";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        let mut x = self.i.wrapping_add(0x9E37_79B9_7F4A_7C15) | 1;
        for _ in 0..self.rounds {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        Ok(std::hint::black_box(x))
    }
}

/// A small step of the overhead graph.
#[derive(Serialize)]
struct Leaf {
    i: u64,
}

impl Step for Leaf {
    const NAME: &'static str = "bench::Leaf";
    type Output = u8;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<u8, BoxError> {
        Ok(0)
    }
}

/// A group of leaves.
#[derive(Serialize)]
struct Group {
    i: u64,
    leaves: Vec<StepRef<Leaf>>,
}

impl Step for Group {
    const NAME: &'static str = "bench::Group";
    type Output = u8;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<u8, BoxError> {
        Ok(0)
    }
}

/// The overhead graph: groups of 99 leaves, `steps` nodes in all (rounded to 100s).
fn overhead_graph(steps: u64) -> Vec<StepRef<Group>> {
    (0..steps / 100)
        .map(|g| {
            StepRef::new(Group {
                i: g,
                leaves: (0..99).map(|l| Leaf { i: g * 1000 + l }.into()).collect(),
            })
        })
        .collect()
}

fn child(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "chain" => {
            let ws = Workspace::open(arg(1))?;
            let n: u64 = arg(2).parse()?;
            let pipelined = arg(3) == "pipelined";
            let target = chain(n);
            let t = Instant::now();
            let outcome = Executor::new(&ws)
                .with_pipeline(pipelined)
                .with_progress(false)
                .run([target.erased()])?;
            let secs = t.elapsed().as_secs_f64();
            outcome.check()?;
            let report = target.result(&ws)?;
            println!(
                "{secs} {} {} {}",
                peak_rss_kib(),
                report.kept,
                cpu_seconds()
            );
        }
        "spin" => {
            let ws = Workspace::memory()?;
            let jobs: usize = arg(1).parse()?;
            let rounds: u64 = arg(2).parse()?;
            let nonce: u64 = arg(3).parse()?;
            let steps: Vec<StepRef<Spin>> =
                (0..8).map(|i| Spin { i, rounds, nonce }.into()).collect();
            let t = Instant::now();
            let outcome = Executor::new(&ws)
                .with_jobs(jobs)
                .with_progress(false)
                .run(steps.iter().map(StepRef::erased))?;
            let secs = t.elapsed().as_secs_f64();
            outcome.check()?;
            println!("{secs} {}", cpu_seconds());
        }
        "overhead" => {
            let t = Instant::now();
            let ws = Workspace::open(arg(1))?;
            let opened = t.elapsed().as_secs_f64();
            let steps: u64 = arg(2).parse()?;
            let graph = overhead_graph(steps);
            let built = t.elapsed().as_secs_f64();
            let outcome = Executor::new(&ws)
                .with_progress(false)
                .run(graph.iter().map(StepRef::erased))?;
            let secs = t.elapsed().as_secs_f64();
            outcome.check()?;
            let computed = outcome.with_status("computed").count();
            println!("{secs} {} {computed} {opened} {built}", outcome.steps.len());
        }
        other => return Err(format!("unknown child command {other:?}").into()),
    }
    Ok(())
}

fn run_child(exe: &Path, args: &[&str]) -> (f64, Vec<String>) {
    let t = Instant::now();
    let out = Command::new(exe)
        .arg("--child")
        .args(args)
        .output()
        .expect("run the child");
    let wall = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fields = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    (wall, fields)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let mut records: u64 = 1_000_000;
    let mut steps: u64 = 10_000;
    let mut rounds: u64 = 400_000_000;
    let mut dir: Option<PathBuf> = None;
    let mut only: Option<String> = None;
    let mut overhead_ws: Option<String> = None;
    let mut repeat: usize = 3;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--records" => records = value()?.parse()?,
            "--steps" => steps = value()?.parse()?,
            "--rounds" => rounds = value()?.parse()?,
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--only" => only = Some(value()?),
            "--repeat" => repeat = value()?.parse::<usize>()?.max(1),
            "--overhead-ws" => overhead_ws = Some(value()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let tmp = tempfile::tempdir_in(dir.unwrap_or_else(|| PathBuf::from(".")))?;
    let exe = std::env::current_exe()?;
    let ws = |name: &str| tmp.path().join(name).display().to_string();
    let n = records.to_string();

    let wanted = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let f = |v: &[String], i: usize| v.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let mut json = Vec::new();

    // 1. Pipelining, in the same run: step after step, then pipelined.
    if wanted("pipeline") {
        // Alternating, `--repeat` times each, fresh workspaces; the fastest run of each counts
        // (the machine is shared: the slower runs measure the neighbours).
        let mut seq: Vec<String> = Vec::new();
        let mut piped: Vec<String> = Vec::new();
        for round in 0..repeat {
            let (_, s) = run_child(
                &exe,
                &["chain", &ws(&format!("seq{round}")), &n, "sequential"],
            );
            let (_, p) = run_child(
                &exe,
                &["chain", &ws(&format!("piped{round}")), &n, "pipelined"],
            );
            assert_eq!(s.get(2), p.get(2), "both runs keep the same records");
            eprintln!(
                "  round {round}: step after step {} s, pipelined {} s",
                f(&s, 0),
                f(&p, 0)
            );
            if seq.is_empty() || f(&s, 0) < f(&seq, 0) {
                seq = s;
            }
            if piped.is_empty() || f(&p, 0) < f(&piped, 0) {
                piped = p;
            }
        }
        let (seq_s, piped_s) = (f(&seq, 0), f(&piped, 0));
        println!("pipelining: {records} records, produce -> transform -> evaluate");
        println!(
            "  step after step  {seq_s:>7.3} s   peak RSS {:>6.1} MiB   CPU {:.2} s ({:.2} cores busy)",
            f(&seq, 1) / 1024.0,
            f(&seq, 3),
            f(&seq, 3) / seq_s
        );
        println!(
            "  pipelined        {piped_s:>7.3} s   peak RSS {:>6.1} MiB   CPU {:.2} s ({:.2} cores busy)",
            f(&piped, 1) / 1024.0,
            f(&piped, 3),
            f(&piped, 3) / piped_s
        );
        println!("  speed-up         {:>7.2}x", seq_s / piped_s);
        json.push(format!(
        "\"records\":{records},\"sequential_s\":{seq_s},\"pipelined_s\":{piped_s},\"sequential_rss_kib\":{},\"pipelined_rss_kib\":{}",
        f(&seq, 1),
        f(&piped, 1)
    ));
    }

    // 2. Eight independent CPU-bound steps.
    if wanted("parallel") {
        let r = rounds.to_string();
        let mut one: Vec<String> = Vec::new();
        let mut two: Vec<String> = Vec::new();
        for round in 0..repeat {
            let (_, o) = run_child(&exe, &["spin", "1", &r, &format!("{round}1")]);
            let (_, t) = run_child(&exe, &["spin", "2", &r, &format!("{round}2")]);
            eprintln!(
                "  round {round}: 1 worker {} s, 2 workers {} s",
                f(&o, 0),
                f(&t, 0)
            );
            if one.is_empty() || f(&o, 0) < f(&one, 0) {
                one = o;
            }
            if two.is_empty() || f(&t, 0) < f(&two, 0) {
                two = t;
            }
        }
        let (one_s, two_s) = (f(&one, 0), f(&two, 0));
        println!("parallel: 8 independent CPU-bound steps");
        println!(
            "  1 worker         {one_s:>7.3} s   CPU {:.3} s ({:.2} cores busy)",
            f(&one, 1),
            f(&one, 1) / one_s
        );
        println!(
            "  2 workers        {two_s:>7.3} s   CPU {:.3} s ({:.2} cores busy)",
            f(&two, 1),
            f(&two, 1) / two_s
        );
        println!("  speed-up         {:>7.2}x", one_s / two_s);
        json.push(format!(
            "\"spin_1_worker_s\":{one_s},\"spin_2_workers_s\":{two_s},\"spin_2_workers_cpu_s\":{}",
            f(&two, 1)
        ));
    }

    // 3. Overhead of a cached graph, in a fresh process.
    if wanted("overhead") {
        let s = steps.to_string();
        let overhead_ws = overhead_ws.clone().unwrap_or_else(|| ws("overhead"));
        let (setup_wall, setup) = run_child(&exe, &["overhead", &overhead_ws, &s]);
        let (wall, cached) = run_child(&exe, &["overhead", &overhead_ws, &s]);
        println!(
            "overhead: {} steps",
            cached.get(1).map_or("?", String::as_str)
        );
        println!(
            "  first run        {setup_wall:>7.3} s   ({} computed)",
            setup.get(2).map_or("?", String::as_str)
        );
        println!(
        "  cached, fresh process: {wall:.3} s wall (process start to exit); in the process: {:.3} s, of which opening the workspace {:.3} s, making the steps {:.3} s ({} computed)",
        f(&cached, 0),
        f(&cached, 3),
        f(&cached, 4) - f(&cached, 3),
        cached.get(2).map_or("?", String::as_str)
    );

        json.push(format!(
            "\"cached_steps\":{},\"cached_wall_s\":{wall},\"cached_executor_s\":{}",
            cached.get(1).map_or("0", String::as_str),
            f(&cached, 0)
        ));
    }
    println!("{{{}}}", json.join(","));
    Ok(())
}
