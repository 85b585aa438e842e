//! The canonical id of a step with a 1,000-entry map argument (or a 1,000-string list, the
//! baseline), computed `N` times: a fixed workload for `valgrind --tool=callgrind`, whose
//! instruction counts repeat exactly on a busy machine where timings do not.
//!
//! ```text
//! cargo build --release -p milonga-benches --bin id_count
//! valgrind --tool=callgrind target/release/id_count map 200
//! valgrind --tool=callgrind target/release/id_count list 200
//! ```
//!
//! Subtract a run with `N = 0` (set-up only) and divide by `N` for the instructions per id.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use milonga::{BoxError, Context, PostcardFormat, Step};
use serde::Serialize;

/// The `map_of_1000` step of `benches/benches/ids.rs`.
#[derive(Serialize)]
struct Mapped {
    weights: std::collections::HashMap<String, u64>,
}

impl Step for Mapped {
    const NAME: &'static str = "Mapped";
    type Output = usize;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<usize, BoxError> {
        Ok(self.weights.len())
    }
}

/// The `list_of_1000` step of `benches/benches/ids.rs`.
#[derive(Serialize)]
struct Large {
    items: Vec<String>,
}

impl Step for Large {
    const NAME: &'static str = "Large";
    type Output = usize;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<usize, BoxError> {
        Ok(self.items.len())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().expect("usage: id_count map|list N");
    let n: usize = args.next().map_or(100, |a| a.parse().expect("N"));
    let mapped = Mapped {
        weights: (0..1000).map(|i| (format!("key-{i}"), i)).collect(),
    };
    let large = Large {
        items: (0..1000).map(|i| format!("item-{i}")).collect(),
    };
    let t = std::time::Instant::now();
    let mut last = String::new();
    for _ in 0..n {
        last = match what.as_str() {
            "map" => black_box(mapped.unique_id().unwrap()),
            _ => black_box(large.unique_id().unwrap()),
        };
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
    println!("{what}: {last} ({per:.1} us per id, wall clock, {n} ids)");
}
