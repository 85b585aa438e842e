//! Runs one SQLite test step in its own process: `milonga-sqlite-step <workspace> <step> <n>`.
//!
//! Steps: `records` (prints the length and the last record's id) and `built-squares` (commits
//! every 100 items; prints the length and the sum of the squares).

#[allow(dead_code)] // The dict and dataset steps are run by the tests only.
mod steps;

use milonga::{Step, Workspace};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, ws, step, n, ..] = args.as_slice() else {
        return Err("usage: milonga-sqlite-step <workspace> <records|built-squares> <n>".into());
    };
    let ws = Workspace::open(ws)?;
    let n: u64 = n.parse()?;
    match step.as_str() {
        "records" => {
            let seq = steps::Records { n }.result(&ws)?;
            let last = if seq.is_empty() {
                None
            } else {
                Some(seq.get(seq.len() - 1)?.id)
            };
            println!("{} {last:?}", seq.len());
        }
        "built-squares" => {
            let seq = steps::BuiltSquares {
                n,
                commit_every: 100,
            }
            .result(&ws)?;
            let mut sum = 0u64;
            for v in seq.iter() {
                sum = sum.wrapping_add(v?);
            }
            println!("{} {sum}", seq.len());
        }
        other => return Err(format!("unknown step {other}").into()),
    }
    Ok(())
}
