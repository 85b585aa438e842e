//! Runs one test step in its own process: `milonga-test-step <workspace> <step> <arg>`.
//!
//! Prints `<value> computed` or `<value> loaded`.

use milonga::{Step, Workspace};
use milonga_tests::{Square, SquareV2};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, ws, step, arg, ..] = args.as_slice() else {
        return Err(
            "usage: milonga-test-step <workspace> <square|square2|sleepy-square> <x>".into(),
        );
    };
    let ws = Workspace::open(ws)?;
    let x: u64 = arg.parse()?;
    let (value, cached) = match step.as_str() {
        "square" => {
            let s = Square { x, sleep_ms: 0 };
            let cached = ws.contains(&s)?;
            (*s.result(&ws)?, cached)
        }
        "sleepy-square" => {
            let s = Square { x, sleep_ms: 500 };
            let cached = ws.contains(&s)?;
            (*s.result(&ws)?, cached)
        }
        "square2" => {
            let s = SquareV2 { x };
            let cached = ws.contains(&s)?;
            (*s.result(&ws)?, cached)
        }
        other => return Err(format!("unknown step {other}").into()),
    };
    println!("{value} {}", if cached { "loaded" } else { "computed" });
    Ok(())
}
