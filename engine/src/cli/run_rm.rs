//! `run-rm`: delete runs.

use std::process::ExitCode;

use super::common::{open, print_json, sanitize, CmdResult};
use super::Global;

/// Delete runs: the records of their steps that no other run has go too (their objects at the
/// next `gc`); nothing else is touched.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  milonga -w ./ws run-rm nightly\n  milonga -w ./ws run-rm brisk-tango-42 calm-waltz-7 --json"
)]
pub(crate) struct Args {
    /// The runs' names.
    #[arg(required = true)]
    runs: Vec<String>,
}

pub(crate) fn run(global: &Global, args: Args) -> CmdResult {
    let ws = open(global)?;
    // Check every name first: a typo removes nothing.
    for name in &args.runs {
        ws.run(name)?;
    }
    let mut removed = Vec::new();
    for name in &args.runs {
        let steps = ws.remove_run(name)?;
        removed.push(serde_json::json!({ "run": name, "removed_steps": steps }));
        if !global.json {
            println!(
                "removed run {} and {} step records only it had",
                sanitize(name),
                steps.len()
            );
        }
    }
    if global.json {
        print_json(&serde_json::json!({ "removed": removed }))?;
    } else {
        println!("their objects are freed by the next `gc`");
    }
    Ok(ExitCode::SUCCESS)
}
