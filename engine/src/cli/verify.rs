//! `verify`: re-read every stored object and check it against its content id.

use std::process::ExitCode;

use super::common::{human, open, print_json, sanitize, CmdResult};
use super::Global;

/// Re-read every stored object and check it against its content id (and rebuild missing
/// outboards). Exit code 1 when a problem is found.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  milonga -w ./ws verify\n  milonga -w ./ws verify --repair --json"
)]
pub(crate) struct Args {
    /// Move damaged objects into quarantine and forget the steps that refer to them, so that
    /// their next run computes them again.
    #[arg(long)]
    repair: bool,
}

pub(crate) fn run(global: &Global, args: Args) -> CmdResult {
    let ws = open(global)?;
    let steps = ws.steps()?;
    let refs: Vec<_> = steps.iter().collect();
    let total: u64 = super::steps::sizes(&ws, &refs).values().sum();
    let bar = if global.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "verifying {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("valid template"),
    );
    let mut progress = |_, bytes| bar.set_position(bytes);
    let report = if args.repair {
        ws.repair(&mut progress)?
    } else {
        ws.verify_with_progress(&mut progress)?
    };
    bar.finish_and_clear();
    let ok = report.problems.is_empty() || (args.repair && !report.reset_steps.is_empty());
    let code = if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if global.json {
        let problems: Vec<_> = report
            .problems
            .iter()
            .map(|p| serde_json::json!({ "unique_id": p.unique_id, "error": p.error }))
            .collect();
        print_json(&serde_json::json!({
            "objects_checked": report.objects_checked,
            "bytes_checked": report.bytes_checked,
            "problems": problems,
            "quarantined": report.quarantined,
            "reset_steps": report.reset_steps,
            "ok": report.problems.is_empty(),
        }))?;
        return Ok(code);
    }
    println!(
        "checked {} objects, {}",
        report.objects_checked,
        human(report.bytes_checked)
    );
    if report.problems.is_empty() {
        println!("no problems");
        return Ok(code);
    }
    for p in &report.problems {
        println!("PROBLEM {}: {}", sanitize(&p.unique_id), sanitize(&p.error));
    }
    for q in &report.quarantined {
        println!("quarantined {}", sanitize(q));
    }
    for r in &report.reset_steps {
        println!("reset {}: its next run computes it again", sanitize(r));
    }
    Ok(code)
}
