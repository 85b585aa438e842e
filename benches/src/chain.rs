//! The quickstart's three-step chain (produce → transform → evaluate over a stream of
//! records), for the executor benchmarks. Same steps as `examples/quickstart.rs`.

use milonga::{BoxError, Context, PostcardFormat, Step, StepRef, Stream, StreamFormat};
use serde::{Deserialize, Serialize};

/// One record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Position.
    pub id: u64,
    /// Twelve words.
    pub text: String,
    /// In `[0, 1)`.
    pub score: f32,
}

const WORDS: [&str; 16] = [
    "tango", "milonga", "vals", "abrazo", "ocho", "giro", "sacada", "boleo", "parada", "cadencia",
    "salida", "cruce", "pausa", "ronda", "cortina", "tanda",
];

/// Step 1: `n` records from `seed`, as a stream.
#[derive(Serialize)]
pub struct Produce {
    /// How many records.
    pub n: u64,
    /// The generator's seed.
    pub seed: u64,
}

impl Step for Produce {
    const NAME: &'static str = "bench::Produce";
    type Output = Stream<Record>;
    type Format = StreamFormat<Record>;

    fn run(&self, ctx: &mut Context<'_>) -> Result<Stream<Record>, BoxError> {
        let progress = ctx.progress().clone();
        progress.set_length(self.n);
        let mut state = self.seed;
        let mut next = move || {
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

/// Step 2: keep the records scoring at least `threshold`, upper-cased.
#[derive(Serialize)]
pub struct Transform {
    /// Input.
    pub records: StepRef<Produce>,
    /// Minimum score.
    pub threshold: f32,
}

impl Step for Transform {
    const NAME: &'static str = "bench::Transform";
    type Output = Stream<Record>;
    type Format = StreamFormat<Record>;

    fn run(&self, ctx: &mut Context<'_>) -> Result<Stream<Record>, BoxError> {
        let records = ctx.input(&self.records)?;
        let threshold = self.threshold;
        Ok(Stream::try_new(records.iter().filter_map(
            move |r| match r {
                Ok(r) if r.score < threshold => None,
                Ok(r) => Some(Ok(Record {
                    text: r.text.to_uppercase(),
                    ..r
                })),
                Err(e) => Some(Err(e)),
            },
        )))
    }
}

/// The evaluation.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Records kept.
    pub kept: u64,
    /// Their mean score.
    pub mean_score: f64,
    /// The most common word.
    pub most_common_word: String,
}

/// Step 3: evaluate the transformed records.
#[derive(Serialize)]
pub struct Evaluate {
    /// Input.
    pub records: StepRef<Transform>,
}

impl Step for Evaluate {
    const NAME: &'static str = "bench::Evaluate";
    type Output = Report;
    type Format = PostcardFormat;

    fn run(&self, ctx: &mut Context<'_>) -> Result<Report, BoxError> {
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

/// The chain's last step over `n` records.
pub fn chain(n: u64) -> StepRef<Evaluate> {
    let produce = StepRef::new(Produce { n, seed: 42 });
    let transform = StepRef::new(Transform {
        records: produce,
        threshold: 0.5,
    });
    StepRef::new(Evaluate { records: transform })
}
