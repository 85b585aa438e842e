//! The quickstart pipeline: produce records → transform them → evaluate.
//!
//! ```text
//! cargo run --release -p milonga --example quickstart -- <workspace-dir>
//! # or a remote workspace (the `s3` feature; endpoint and credentials from AWS_* variables):
//! cargo run --release -p milonga --features s3 --example quickstart -- s3://bucket/prefix
//! ```
//!
//! The executor runs the pipeline as a graph and prints what happened to each step. The first
//! run computes all three steps and stores their results in the workspace; a second run (a new
//! process) prints the same final result with every step loaded from the cache.
//!
//! The records are a stream: the first step yields them one by one, they are written in
//! compressed chunks as they come, and the second step reads them lazily while they are still
//! being written (the executor pipelines the three steps), so no step ever holds the whole data
//! set in memory.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use milonga::{Context, Executor, PostcardFormat, Step, StepRef, Stream, StreamFormat, Workspace};
use serde::{Deserialize, Serialize};

/// One record of the demo data set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Record {
    id: u64,
    text: String,
    score: f32,
}

const WORDS: [&str; 16] = [
    "tango", "milonga", "vals", "abrazo", "ocho", "giro", "sacada", "boleo", "parada", "cadencia",
    "salida", "cruce", "pausa", "ronda", "cortina", "tanda",
];

/// Step 1: produce `n` records deterministically from `seed`, as a stream.
#[derive(Serialize)]
struct Produce {
    n: u64,
    seed: u64,
}

impl Step for Produce {
    const NAME: &'static str = "quickstart::Produce";
    const VERSION: Option<&'static str> = Some("1");
    type Output = Stream<Record>;
    type Format = StreamFormat<Record>;

    fn run(&self, ctx: &mut Context<'_>) -> Result<Stream<Record>, milonga::BoxError> {
        let progress = ctx.progress().clone();
        progress.set_length(self.n);
        let mut state = self.seed;
        let mut next = move || {
            // A small LCG: deterministic and dependency-free.
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        Ok(Stream::new((0..self.n).map(move |id| {
            let words: Vec<&str> = (0..12)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect();
            progress.inc(1);
            Record {
                id,
                text: words.join(" "),
                score: (next() % 1000) as f32 / 1000.0,
            }
        })))
    }
}

/// Step 2: keep the records whose score passes `threshold` and upper-case their text,
/// reading the input stream lazily and streaming the output.
#[derive(Serialize)]
struct Transform {
    records: StepRef<Produce>,
    threshold: f32,
}

impl Step for Transform {
    const NAME: &'static str = "quickstart::Transform";
    type Output = Stream<Record>;
    type Format = StreamFormat<Record>;

    fn run(&self, ctx: &mut Context<'_>) -> Result<Stream<Record>, milonga::BoxError> {
        let records = ctx.input(&self.records)?;
        let threshold = self.threshold;
        let kept = records.iter().filter_map(move |r| match r {
            Ok(r) if r.score < threshold => None,
            Ok(r) => Some(Ok(Record {
                text: r.text.to_uppercase(),
                ..r
            })),
            Err(e) => Some(Err(e)),
        });
        Ok(Stream::try_new(kept))
    }
}

/// The evaluation of the transformed records.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Report {
    kept: u64,
    mean_score: f64,
    most_common_word: String,
}

/// Step 3: evaluate the transformed records.
#[derive(Serialize)]
struct Evaluate {
    records: StepRef<Transform>,
}

impl Step for Evaluate {
    const NAME: &'static str = "quickstart::Evaluate";
    type Output = Report;
    type Format = PostcardFormat;

    fn run(&self, ctx: &mut Context<'_>) -> Result<Report, milonga::BoxError> {
        let records = ctx.input(&self.records)?;
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        let (mut kept, mut total) = (0u64, 0f64);
        for r in records.iter() {
            let r = r?;
            kept += 1;
            total += f64::from(r.score);
            for w in r.text.split(' ') {
                *counts.entry(w.to_owned()).or_default() += 1;
            }
        }
        let most_common_word = counts
            .iter()
            .max_by_key(|(w, c)| (**c, std::cmp::Reverse(w.as_str())))
            .map(|(w, _)| w.clone())
            .unwrap_or_default();
        Ok(Report {
            kept,
            mean_score: if kept == 0 { 0.0 } else { total / kept as f64 },
            most_common_word,
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).ok_or(
        "usage: cargo run --release -p milonga --example quickstart -- <workspace-dir or URL>",
    )?;
    // A directory, file://PATH, or s3://bucket/prefix (with the `s3` feature).
    let ws = Workspace::from_url(&url)?;

    let produce = StepRef::new(Produce {
        n: 1_000_000,
        seed: 42,
    });
    let transform = StepRef::new(Transform {
        records: produce,
        threshold: 0.5,
    });
    let evaluate = StepRef::new(Evaluate { records: transform });

    // The executor finds the graph from the `StepRef` arguments, runs what is missing (in
    // parallel, streams pipelined), and reports every step.
    let outcome = Executor::new(&ws).run([evaluate.erased()])?;
    println!("workspace: {}", ws.url());
    println!("{outcome}");
    outcome.check()?;

    let report = evaluate.result(&ws)?;
    println!(
        "result: kept {} records, mean score {:.4}, most common word {:?}",
        report.kept, report.mean_score, report.most_common_word
    );
    Ok(())
}
