//! Streaming steps shared by the stream tests and the `milonga-test-stream` helper binary.

use std::collections::BTreeMap;
use std::sync::Mutex;

use milonga::{BoxError, Context, PostcardFormat, Step, StepRef, Stream, StreamFormat};
use serde::Serialize;

use crate::count_run;

/// For each `n`, the item number the last run of `Count { n, .. }` in this process started
/// from (keyed by `n`, since tests run in parallel).
static LAST_START: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());

/// Where the last run of `Count { n, .. }` in this process started, if it ran.
pub fn last_start(n: u64) -> Option<u64> {
    LAST_START.lock().unwrap().get(&n).copied()
}

/// Streams the numbers `0..n`, optionally slowly, optionally resuming after the items an
/// interrupted run already stored.
#[derive(Serialize)]
pub struct Count {
    /// How many numbers.
    pub n: u64,
    /// Microseconds to sleep after every 1,000 items (left out of the id).
    #[serde(skip)]
    pub delay_us: u64,
    /// Whether `run` resumes (left out of the id: the same step, written two ways).
    #[serde(skip)]
    pub resumable: bool,
}

impl Step for Count {
    const NAME: &'static str = "streams::Count";
    type Output = Stream<u64>;
    type Format = StreamFormat<u64>;

    fn format(&self) -> StreamFormat<u64> {
        // Small chunks, so that even short streams have many durable chunks.
        StreamFormat::new().with_chunk_size(4096)
    }

    fn run(&self, ctx: &mut Context<'_>) -> Result<Stream<u64>, BoxError> {
        let start = if self.resumable { ctx.resume_from() } else { 0 };
        LAST_START.lock().unwrap().insert(self.n, start);
        count_run(&format!("Count from {start}"));
        let delay = std::time::Duration::from_micros(self.delay_us);
        Ok(Stream::new((start..self.n).inspect(move |i| {
            if !delay.is_zero() && i % 1000 == 999 {
                std::thread::sleep(delay);
            }
        })))
    }
}

/// Sums a stream step's items, reading them lazily.
#[derive(Serialize)]
pub struct SumStream {
    /// The input stream.
    pub input: StepRef<Count>,
}

impl Step for SumStream {
    const NAME: &'static str = "streams::SumStream";
    type Output = u64;
    type Format = PostcardFormat;

    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        let reader = ctx.input(&self.input)?;
        let mut sum = 0;
        for item in reader.iter() {
            sum += item?;
        }
        Ok(sum)
    }
}
