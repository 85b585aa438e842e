//! Opens a workspace in its own process, for tests of concurrent opening and of read-only
//! workspaces: `milonga-test-open <workspace> <open|read|compute>`.
//!
//! - `open`: opens (creating if needed) and lists the steps; prints `ok <steps>`. With
//!   `MILONGA_TEST_BARRIER=<dir>` it first waits for a shared lock on `<dir>/gate`, which the
//!   test holds exclusively until every opener is waiting (each says so with
//!   `<dir>/ready-<pid>`), then runs the open in a fresh process of its own (as `flock(1)`
//!   would): the openers start together, each with a process start's jitter, which is when
//!   racing first opens collide most.
//! - `read`: reads the cached chain `Scale { Numbers { n: 10 }, factor: 3 }` and the stream
//!   `Count { n: 10_000 }`, lists the steps, reads each record and verifies the workspace; prints `ok <sum>`.
//! - `compute`: asks for `Square { x: 7 }` (never cached by the tests); prints `error <text>`
//!   when that fails, `ok <value>` when it succeeds.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use milonga::{Step, Workspace};
use milonga_tests::streams::Count;
use milonga_tests::{Numbers, Scale, Square};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, ws, action] = args.as_slice() else {
        return Err("usage: milonga-test-open <workspace> <open|read|compute>".into());
    };
    match action.as_str() {
        "open" => {
            if let Some(dir) = std::env::var_os("MILONGA_TEST_BARRIER") {
                let dir = std::path::PathBuf::from(dir);
                let gate = std::fs::File::open(dir.join("gate"))?;
                let ready = dir.join(format!("ready-{}", std::process::id()));
                // Say "ready" once this thread is (almost certainly) blocked on the gate.
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    std::fs::write(ready, b"").expect("write the ready file");
                });
                gate.lock_shared()?;
                let status = std::process::Command::new(std::env::current_exe()?)
                    .env_remove("MILONGA_TEST_BARRIER")
                    .args(&args[1..])
                    .status()?;
                std::process::exit(status.code().unwrap_or(1));
            }
            let ws = Workspace::open(ws)?;
            println!("ok {}", ws.steps()?.len());
        }
        "read" => {
            let ws = Workspace::open(ws)?;
            let chain = chain();
            let mut sum: u64 = chain.result(&ws)?.iter().map(|&v| u64::from(v)).sum();
            for item in stream().result(&ws)?.iter() {
                sum += item?;
            }
            for info in ws.steps()? {
                ws.step_info(&info.unique_id)?
                    .ok_or("a listed step has no record")?;
                ws.artifact(&info.unique_id)?;
            }
            let report = ws.verify()?;
            if !report.problems.is_empty() {
                return Err(format!("verify: {:?}", report.problems).into());
            }
            println!("ok {sum}");
        }
        "compute" => {
            let ws = Workspace::open(ws)?;
            match (Square { x: 7, sleep_ms: 0 }).result(&ws) {
                Ok(v) => println!("ok {v}"),
                Err(e) => println!("error {e}"),
            }
        }
        other => return Err(format!("unknown action {other}").into()),
    }
    Ok(())
}

/// The stream the read-only tests cache first.
fn stream() -> Count {
    Count {
        n: 10_000,
        delay_us: 0,
        resumable: false,
    }
}

/// The chain the read-only tests cache first.
fn chain() -> Scale {
    Scale {
        numbers: Numbers { n: 10 }.into(),
        factor: 3,
    }
}
