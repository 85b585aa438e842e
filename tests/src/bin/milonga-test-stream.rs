//! Runs a streaming test step in its own process:
//! `milonga-test-stream <workspace> <n> <delay_us> <resumable: 0|1>`.

use milonga::{Step, Workspace};
use milonga_tests::streams::Count;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, ws, n, delay_us, resumable] = args.as_slice() else {
        return Err("usage: milonga-test-stream <workspace> <n> <delay_us> <0|1>".into());
    };
    let ws = Workspace::open(ws)?;
    let step = Count {
        n: n.parse()?,
        delay_us: delay_us.parse()?,
        resumable: resumable == "1",
    };
    let reader = step.result(&ws)?;
    println!("{} items", reader.len()?);
    Ok(())
}
