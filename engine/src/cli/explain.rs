//! `explain`: why a step's id differs from the closest earlier record of the same step.

use std::process::ExitCode;

use super::common::{open, print_json, resolve, sanitize, CmdResult};
use super::Global;

/// Say why a step missed the cache: what differs between its id pre-image and the closest
/// earlier record of the same step type (VERSION, format, an argument, an upstream step,
/// recursively), and whether its result was reused by early cutoff.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "STEP is a unique id, a unique prefix of one, or a step name only one record has.\n\nExamples:\n  milonga -w ./ws explain Tokenize-3fQ\n  milonga -w ./ws explain Sum-2-9aX --json"
)]
pub(crate) struct Args {
    /// The step: a unique id, a unique prefix, or an unambiguous step name.
    step: String,
}

pub(crate) fn run(global: &Global, args: Args) -> CmdResult {
    let ws = open(global)?;
    let info = resolve(&ws, &args.step)?;
    let why = ws.explain(&info.unique_id)?;
    if global.json {
        print_json(&why)?;
    } else {
        // Argument values come from the workspace: print them sanitized, line by line.
        for line in why.to_string().lines() {
            println!("{}", sanitize(line));
        }
    }
    Ok(ExitCode::SUCCESS)
}
