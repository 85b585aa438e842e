//! A tool of your own: three step types registered in `main`, and milonga's whole command line
//! (`run`, `steps`, `info`, `cat`, `du`, `verify`, `rm`, `gc`) on top of them.
//!
//! ```text
//! cargo run -p milonga --features cli --example pipeline_tool -- \
//!     run examples/pipeline.toml -w /tmp/milonga-pipeline -j 2
//! cargo run -p milonga --features cli --example pipeline_tool -- \
//!     -w /tmp/milonga-pipeline cat total
//! ```

use std::process::ExitCode;

use milonga::{BoxError, Context, JsonFormat, Registry, Step, StepRef, Stream, StreamFormat};
use serde::{Deserialize, Serialize};

/// The numbers `0..upto`, as a stream.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Numbers {
    upto: u64,
}

impl Step for Numbers {
    const NAME: &'static str = "Numbers";
    type Output = Stream<u64>;
    type Format = StreamFormat<u64>;
    fn run(&self, _: &mut Context<'_>) -> Result<Stream<u64>, BoxError> {
        Ok(Stream::new(0..self.upto))
    }
}

/// Each number of a stream raised to a power, as a stream (it starts while its input is
/// still being written).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Power {
    numbers: StepRef<Numbers>,
    #[serde(default = "two")]
    exponent: u32,
}

fn two() -> u32 {
    2
}

impl Step for Power {
    const NAME: &'static str = "Power";
    type Output = Stream<u64>;
    type Format = StreamFormat<u64>;
    fn run(&self, ctx: &mut Context<'_>) -> Result<Stream<u64>, BoxError> {
        let numbers = ctx.input(&self.numbers)?;
        let exponent = self.exponent;
        Ok(Stream::try_new(
            numbers
                .iter()
                .map(move |n| n.map(|n| n.saturating_pow(exponent))),
        ))
    }
}

/// The sum of a stream, with a label, as JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Total {
    values: StepRef<Power>,
    label: String,
}

#[derive(Serialize, Deserialize)]
struct Summary {
    label: String,
    count: u64,
    sum: u64,
}

impl Step for Total {
    const NAME: &'static str = "Total";
    type Output = Summary;
    type Format = JsonFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<Summary, BoxError> {
        let values = ctx.input(&self.values)?;
        let (mut count, mut sum) = (0u64, 0u64);
        for v in values.iter() {
            count += 1;
            sum = sum.saturating_add(v?);
        }
        Ok(Summary {
            label: self.label.clone(),
            count,
            sum,
        })
    }
}

fn main() -> ExitCode {
    let mut registry = Registry::new();
    registry
        .register_printable::<Numbers>()
        .register_printable::<Power>()
        .register_printable::<Total>();
    milonga::cli::main_with(registry)
}
