//! The milonga side of the comparison harness (`benches/compare/run.py`).
//!
//! ```text
//! milonga-compare <workload> <phase> --n N --dir DIR
//! ```
//!
//! One phase per process; prints one JSON object on the last line of stdout. The contract (keys,
//! what each time covers) is documented at the top of `benches/compare/run.py`; the workloads
//! mirror `benches/compare/tango_side.py` on the same records
//! ([`milonga_benches::records`]).
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use milonga::{
    BoxError, Context, PostcardFormat, SqliteSequenceFormat, Step, StepRef, Stream, StreamFormat,
    Workspace,
};
use milonga_benches::records::{self, Checks, Record, HIT_N, ID_LIST_LEN};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Steps that actually ran in this process.
static STEPS_RUN: AtomicU64 = AtomicU64::new(0);

type Records = Box<dyn Iterator<Item = Record> + Send>;

/// (a) records 0..n as a random-access SQLite sequence.
#[derive(Serialize)]
struct SeqProduce {
    n: u64,
}

impl Step for SeqProduce {
    const NAME: &'static str = "compare::SeqProduce";
    type Output = Records;
    type Format = SqliteSequenceFormat<Record>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Records, BoxError> {
        STEPS_RUN.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(records::records(self.n)))
    }
}

/// (b) records 0..n as a stream.
#[derive(Serialize)]
struct StreamProduce {
    n: u64,
}

impl Step for StreamProduce {
    const NAME: &'static str = "compare::StreamProduce";
    type Output = Stream<Record>;
    type Format = StreamFormat<Record>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Stream<Record>, BoxError> {
        STEPS_RUN.fetch_add(1, Ordering::Relaxed);
        Ok(Stream::new(records::records(self.n)))
    }
}

/// (c) a small cached result: records 0..n as one postcard value.
#[derive(Serialize)]
struct HitProduce {
    n: u64,
}

impl Step for HitProduce {
    const NAME: &'static str = "compare::HitProduce";
    type Output = Vec<Record>;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Vec<Record>, BoxError> {
        STEPS_RUN.fetch_add(1, Ordering::Relaxed);
        Ok(records::records(self.n).collect())
    }
}

/// (c) a step whose argument is a 1,000-element list, for the id cost.
#[derive(Serialize)]
struct WithList {
    items: Vec<u64>,
}

impl Step for WithList {
    const NAME: &'static str = "compare::WithList";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        Ok(self.items.iter().sum())
    }
}

/// (d) step 2: text upper-cased, score doubled, streamed lazily from the input stream.
#[derive(Serialize)]
struct ChainTransform {
    records: StepRef<StreamProduce>,
}

impl Step for ChainTransform {
    const NAME: &'static str = "compare::ChainTransform";
    type Output = Stream<Record>;
    type Format = StreamFormat<Record>;
    fn run(&self, ctx: &mut Context<'_>) -> Result<Stream<Record>, BoxError> {
        STEPS_RUN.fetch_add(1, Ordering::Relaxed);
        let input = ctx.input(&self.records)?;
        let iter = input.iter().map(|r| {
            r.map(|r| Record {
                id: r.id,
                text: r.text.to_uppercase(),
                score: r.score * 2.0,
            })
        });
        Ok(Stream::try_new(iter))
    }
}

/// (d) step 3's result.
#[derive(Debug, Serialize, Deserialize)]
struct Evaluation {
    count: u64,
    text_bytes: u64,
    mean_score: f64,
}

/// (d) step 3: count, total text bytes, mean score (plain sequential f64 sum).
#[derive(Serialize)]
struct ChainEvaluate {
    records: StepRef<ChainTransform>,
}

impl Step for ChainEvaluate {
    const NAME: &'static str = "compare::ChainEvaluate";
    type Output = Evaluation;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<Evaluation, BoxError> {
        STEPS_RUN.fetch_add(1, Ordering::Relaxed);
        let mut c = Checks::default();
        for r in ctx.input(&self.records)?.iter() {
            c.add(&r?);
        }
        Ok(Evaluation {
            count: c.count,
            text_bytes: c.text_bytes,
            mean_score: if c.count == 0 {
                0.0
            } else {
                c.score_sum / c.count as f64
            },
        })
    }
}

fn checks_json(c: &Checks) -> Value {
    json!({"count": c.count, "text_bytes": c.text_bytes, "score_sum": c.score_sum})
}

/// Bytes of the files holding a step's result: its artifact files and its manifest object.
fn bytes_on_disk(ws: &Workspace, unique_id: &str) -> Result<u64, BoxError> {
    let info = ws.step_info(unique_id)?.ok_or("no record")?;
    let files: u64 = ws.artifact(unique_id)?.files().iter().map(|f| f.len).sum();
    let manifest = info.manifest_id.ok_or("no manifest")?;
    let root = ws.root().ok_or("not a local workspace")?;
    let path = milonga::store::LocalStore::open(root)?.object_path(&manifest);
    Ok(files + std::fs::metadata(path)?.len())
}

/// Time to generate (and drop) the records alone, subtracted from write times.
fn gen_time(n: u64) -> f64 {
    let t = Instant::now();
    for r in records::records(n) {
        black_box(r);
    }
    t.elapsed().as_secs_f64()
}

fn peak_rss_self() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn ws_at(dir: &Path) -> Result<Workspace, BoxError> {
    Ok(Workspace::open(dir.join("ws"))?)
}

fn write_phase<S: Step>(dir: &Path, n: u64, step: S) -> Result<Value, BoxError> {
    let ws = ws_at(dir)?;
    let t = Instant::now();
    step.result(&ws)?;
    let write_s = t.elapsed().as_secs_f64();
    let gen_s = gen_time(n);
    let id = step.unique_id()?;
    Ok(json!({
        "write_s": write_s,
        "gen_s": gen_s,
        "items_per_s": n as f64 / (write_s - gen_s).max(1e-9),
        "bytes_on_disk": bytes_on_disk(&ws, &id)?,
        "unique_id": id,
    }))
}

fn run(workload: &str, phase: &str, n: u64, dir: &Path) -> Result<Value, BoxError> {
    Ok(match (workload, phase) {
        ("seq", "write") => write_phase(dir, n, SeqProduce { n })?,
        ("seq", "read") => {
            let t = Instant::now();
            let ws = ws_at(dir)?;
            let seq = SeqProduce { n }.result(&ws)?;
            let open_s = t.elapsed().as_secs_f64();
            let indices = records::random_indices(n);
            let t = Instant::now();
            let mut get_id_sum = 0u64;
            for &i in &indices {
                get_id_sum += seq.get(i)?.id;
            }
            let get_us = t.elapsed().as_secs_f64() * 1e6 / indices.len() as f64;
            let t = Instant::now();
            let mut c = Checks::default();
            for r in seq.iter() {
                c.add(&r?);
            }
            let iter_s = t.elapsed().as_secs_f64();
            let mut check = checks_json(&c);
            check["get_id_sum"] = json!(get_id_sum);
            json!({
                "open_s": open_s, "gets": indices.len(), "get_us": get_us, "iter_s": iter_s,
                "iter_items_per_s": c.count as f64 / iter_s.max(1e-9), "check": check,
            })
        }
        ("stream", "write") => write_phase(dir, n, StreamProduce { n })?,
        ("stream", "read") => {
            let t = Instant::now();
            let ws = ws_at(dir)?;
            let stream = StreamProduce { n }.result(&ws)?;
            let mut iter = stream.iter();
            let mut c = Checks::default();
            let first = iter.next().transpose()?;
            let first_item_s = t.elapsed().as_secs_f64();
            if let Some(r) = first {
                c.add(&r);
            }
            for r in iter {
                c.add(&r?);
            }
            let iter_s = t.elapsed().as_secs_f64();
            json!({
                "first_item_s": first_item_s, "iter_s": iter_s,
                "iter_items_per_s": c.count as f64 / iter_s.max(1e-9), "check": checks_json(&c),
            })
        }
        ("hit", "prepare") => {
            let ws = ws_at(dir)?;
            let step = HitProduce { n: HIT_N };
            let t = Instant::now();
            step.result(&ws)?;
            let id = step.unique_id()?;
            json!({"write_s": t.elapsed().as_secs_f64(), "bytes_on_disk": bytes_on_disk(&ws, &id)?, "unique_id": id})
        }
        ("hit", "fetch") => {
            let t = Instant::now();
            let ws = ws_at(dir)?;
            let value = HitProduce { n: HIT_N }.result(&ws)?;
            let fetch_s = t.elapsed().as_secs_f64();
            let mut c = Checks::default();
            value.iter().for_each(|r| c.add(r));
            if STEPS_RUN.load(Ordering::Relaxed) != 0 {
                return Err("the cached result was recomputed".into());
            }
            json!({"fetch_s": fetch_s, "check": checks_json(&c)})
        }
        ("hit", "id") => {
            let rounds = 2_000;
            let mut times = Vec::with_capacity(rounds);
            let mut id = String::new();
            for _ in 0..rounds {
                let t = Instant::now();
                let step = WithList {
                    items: (0..ID_LIST_LEN as u64).collect(),
                };
                id = black_box(step.unique_id()?);
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            times.sort_by(f64::total_cmp);
            json!({"ids": rounds, "list_len": ID_LIST_LEN, "id_us": mean,
                   "id_us_median": times[times.len() / 2], "unique_id": id})
        }
        ("chain", "run1" | "run2") => {
            let t = Instant::now();
            let ws = ws_at(dir)?;
            let evaluate = ChainEvaluate {
                records: ChainTransform {
                    records: StreamProduce { n }.into(),
                }
                .into(),
            };
            let result = evaluate.result(&ws)?;
            let run_s = t.elapsed().as_secs_f64();
            let steps_run = STEPS_RUN.load(Ordering::Relaxed);
            if phase == "run2" && steps_run != 0 {
                return Err(format!("second run re-ran {steps_run} steps").into());
            }
            json!({"run_s": run_s, "steps_run": steps_run,
                   "result": {"count": result.count, "text_bytes": result.text_bytes, "mean_score": result.mean_score}})
        }
        _ => return Err(format!("unknown workload/phase {workload} {phase}").into()),
    })
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: milonga-compare <workload> <phase> --n N --dir DIR";
    let (mut n, mut dir) = (None, None);
    let mut i = 2;
    while i < args.len() {
        match args[i].as_str() {
            "--n" => n = args.get(i + 1).map(|s| s.parse::<u64>()).transpose()?,
            "--dir" => dir = args.get(i + 1).map(PathBuf::from),
            other => return Err(format!("unknown argument {other}; {usage}").into()),
        }
        i += 2;
    }
    let (Some(workload), Some(phase), Some(n), Some(dir)) = (args.first(), args.get(1), n, dir)
    else {
        return Err(usage.into());
    };
    std::fs::create_dir_all(&dir)?;
    let mut out = run(workload, phase, n, &dir)?;
    out["system"] = json!("milonga");
    out["workload"] = json!(workload);
    out["phase"] = json!(phase);
    out["n"] = json!(n);
    if let Some(rss) = peak_rss_self() {
        out["peak_rss_self_bytes"] = json!(rss);
    }
    println!("{out}");
    Ok(())
}
