//! `rm`: forget steps' results.

use std::process::ExitCode;

use super::common::{open, print_json, resolve, sanitize, CmdResult};
use super::Global;

/// Forget steps' results so that they run again (their objects stay until `gc`).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  milonga -w ./ws rm Tokenize-3fQ\n  milonga -w ./ws rm Count-9aX Sum --json"
)]
pub(crate) struct Args {
    /// The steps: unique ids, unique prefixes, or unambiguous step names.
    #[arg(required = true)]
    steps: Vec<String>,
}

pub(crate) fn run(global: &Global, args: Args) -> CmdResult {
    let ws = open(global)?;
    // Resolve every argument first: a typo removes nothing.
    let ids = args
        .steps
        .iter()
        .map(|s| resolve(&ws, s).map(|info| info.unique_id))
        .collect::<Result<Vec<_>, _>>()?;
    let mut removed = Vec::new();
    for id in ids {
        if ws.remove_step(&id)? {
            removed.push(id);
        }
    }
    if global.json {
        print_json(&serde_json::json!({ "removed": removed }))?;
    } else {
        for id in &removed {
            println!("removed {}", sanitize(id));
        }
    }
    Ok(ExitCode::SUCCESS)
}
