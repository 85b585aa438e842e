//! Runs one test step in its own process: `milonga-test-step <workspace> <step> <arg>`.
//!
//! Prints `<value> computed` or `<value> loaded`; `exec <jobs>` runs a shared graph with the
//! executor and prints `<n> computed <m> loaded`; `runs <n>` makes `n` named executor runs.

use milonga::{DynStep, Executor, Step, StepRef, Workspace};
use milonga_tests::{Numbers, Scale, Square, SquareV2, Total};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, ws, step, arg, ..] = args.as_slice() else {
        return Err(
            "usage: milonga-test-step <workspace> <square|square2|sleepy-square|exec> <x>".into(),
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
        "exec" => {
            // The shared graph of the executor tests, run with `x` workers: eight slow squares
            // and four chains over one `Numbers`.
            let numbers = StepRef::new(Numbers { n: 100 });
            let mut targets: Vec<DynStep> = (1..=8)
                .map(|i| {
                    StepRef::new(Square {
                        x: i,
                        sleep_ms: 100,
                    })
                    .erased()
                })
                .collect();
            for factor in 1..=4 {
                let scaled = StepRef::new(Scale {
                    numbers: numbers.clone(),
                    factor,
                });
                targets.push(StepRef::new(Total { scaled, offset: 0 }).erased());
            }
            let outcome = Executor::new(&ws)
                .with_jobs(x as usize)
                .with_progress(false)
                .run(targets)?;
            outcome.check()?;
            println!(
                "{} computed {} loaded",
                outcome.with_status("computed").count(),
                outcome.with_status("loaded").count()
            );
            return Ok(());
        }
        "runs" => {
            // `x` executor runs, named `w-0`, `w-1`, ..., each over one `Numbers` and a
            // `Scale`; every result is read back by run and step name right after its run.
            for i in 0..x {
                let name = format!("w-{i}");
                let step = Scale {
                    numbers: Numbers {
                        n: 3 + (i % 4) as u32,
                    }
                    .into(),
                    factor: 1 + (i % 3) as u32,
                };
                let want: Vec<u32> = (0..3 + (i % 4) as u32)
                    .map(|n| n * (1 + (i % 3) as u32))
                    .collect();
                Executor::new(&ws)
                    .with_progress(false)
                    .with_jobs(2)
                    .with_run_name(&name)
                    .run_named([("scaled", DynStep::new(step))])?
                    .check()?;
                let got = ws.run(&name)?.result::<Scale>("scaled")?;
                if *got != want {
                    return Err(format!("run {name}: {got:?} != {want:?}").into());
                }
            }
            println!("{x} runs");
            return Ok(());
        }
        other => return Err(format!("unknown step {other}").into()),
    };
    println!("{value} {}", if cached { "loaded" } else { "computed" });
    Ok(())
}
