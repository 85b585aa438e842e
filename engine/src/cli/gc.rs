//! `gc`: remove objects no step refers to.

use std::process::ExitCode;
use std::time::Duration;

use super::common::{human, open, print_json, CmdResult};
use super::Global;

/// Remove objects no step refers to.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  milonga -w ./ws gc\n  milonga -w ./ws gc --grace-secs 0 --json"
)]
pub(crate) struct Args {
    /// Keep unreferenced objects younger than this many seconds (a writer may be about to
    /// record them).
    #[arg(long, default_value_t = 3600)]
    grace_secs: u64,
}

pub(crate) fn run(global: &Global, args: Args) -> CmdResult {
    let ws = open(global)?;
    let r = ws.gc(Duration::from_secs(args.grace_secs))?;
    if global.json {
        print_json(&serde_json::json!({
            "removed_objects": r.removed_objects,
            "removed_staging_files": r.removed_staging_files,
            "freed_bytes": r.freed_bytes,
            "live_objects": r.live_objects,
            "young_objects": r.young_objects,
        }))?;
    } else {
        println!(
            "removed {} objects and {} staging files, freed {}; kept {} live and {} recent objects",
            r.removed_objects,
            r.removed_staging_files,
            human(r.freed_bytes),
            r.live_objects,
            r.young_objects
        );
    }
    Ok(ExitCode::SUCCESS)
}
