//! Steps whose results are SQLite sequences, dicts and dataset dicts; shared by the
//! `milonga-sqlite-step` helper binary and `tests/sqlite_steps.rs` (included by path in both,
//! so both compute the same step ids).

use std::collections::BTreeMap;
use std::io::Write;

use milonga::{
    BoxError, Context, DatasetDict, SqliteDatasetDictFormat, SqliteDictFormat,
    SqliteSequenceBuilder, SqliteSequenceFormat, Step,
};
use milonga_tests::count_run;
use serde::{Deserialize, Serialize};

/// A benchmark-like record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Record {
    /// Its index.
    pub id: u64,
    /// Some text.
    pub text: String,
    /// A score.
    pub score: f32,
}

/// Record `i`, deterministic.
pub fn record(i: u64) -> Record {
    Record {
        id: i,
        text: format!("record {i} says {}", "la ".repeat((i % 13) as usize)),
        score: (i % 100) as f32 / 100.0,
    }
}

/// `n` records, returned as an iterator (never collected).
#[derive(Serialize)]
pub struct Records {
    /// How many.
    pub n: u64,
}

impl Step for Records {
    const NAME: &'static str = "sqlite::Records";
    type Output = Box<dyn Iterator<Item = Record> + Send>;
    type Format = SqliteSequenceFormat<Record>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Self::Output, BoxError> {
        count_run("Records");
        Ok(Box::new((0..self.n).map(record)))
    }
}

/// The squares `0..n`, built with a resumable [`SqliteSequenceBuilder`] in the step's work
/// directory.
///
/// `run` logs `start <len>` to the run log (`MILONGA_TEST_LOG`); after each commit it appends
/// `<len>` to the file named by `MILONGA_SQLITE_PROGRESS` (if set) and sleeps
/// `MILONGA_SQLITE_SLOW_MS` milliseconds (if set), so that a test can kill it mid-build.
#[derive(Serialize)]
pub struct BuiltSquares {
    /// How many.
    pub n: u64,
    /// Items per commit.
    pub commit_every: u64,
}

impl Step for BuiltSquares {
    const NAME: &'static str = "sqlite::BuiltSquares";
    type Output = SqliteSequenceBuilder<u64>;
    type Format = SqliteSequenceFormat<u64>;
    fn run(&self, ctx: &mut Context<'_>) -> Result<Self::Output, BoxError> {
        let path = ctx.work_dir()?.join("seq.sqlite");
        let mut b = SqliteSequenceBuilder::<u64>::open(&path)?;
        let start = b.len();
        count_run(&format!("start {start}"));
        let progress = std::env::var_os("MILONGA_SQLITE_PROGRESS");
        let slow: u64 = std::env::var("MILONGA_SQLITE_SLOW_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        for i in start..self.n {
            b.append(&(i * i))?;
            if (i + 1) % self.commit_every == 0 {
                b.commit()?;
                if let Some(p) = &progress {
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?;
                    writeln!(f, "{}", i + 1)?;
                }
                std::thread::sleep(std::time::Duration::from_millis(slow));
            }
        }
        Ok(b)
    }
}

/// A dict from word to its length.
#[derive(Serialize)]
pub struct WordLengths {
    /// The words.
    pub words: Vec<String>,
}

impl Step for WordLengths {
    const NAME: &'static str = "sqlite::WordLengths";
    type Output = Vec<(String, u32)>;
    type Format = SqliteDictFormat<String, u32>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Self::Output, BoxError> {
        count_run("WordLengths");
        Ok(self
            .words
            .iter()
            .map(|w| (w.clone(), w.len() as u32))
            .collect())
    }
}

/// Train and validation splits of records, with metadata.
#[derive(Serialize)]
pub struct Splits {
    /// Records in the train split.
    pub train: u64,
    /// Records in the validation split.
    pub validation: u64,
}

/// The metadata of [`Splits`].
pub type SplitsMeta = BTreeMap<String, String>;

impl Step for Splits {
    const NAME: &'static str = "sqlite::Splits";
    type Output = DatasetDict<Box<dyn Iterator<Item = Record> + Send>, SplitsMeta>;
    type Format = SqliteDatasetDictFormat<Record, SplitsMeta>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Self::Output, BoxError> {
        count_run("Splits");
        let mut splits: BTreeMap<String, Box<dyn Iterator<Item = Record> + Send>> = BTreeMap::new();
        splits.insert("train".into(), Box::new((0..self.train).map(record)));
        let (a, b) = (self.train, self.train + self.validation);
        splits.insert("validation".into(), Box::new((a..b).map(record)));
        let metadata = [("source".to_string(), "synthetic".to_string())].into();
        Ok(DatasetDict { splits, metadata })
    }
}
