//! `runs`: list the runs of a workspace, or show one with its steps and their states.

use std::process::ExitCode;

use super::common::{age, now_millis, open, print_json, sanitize, CmdResult};
use super::Global;

/// List runs (oldest first), or show one run's steps and their states.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  milonga -w ./ws runs\n  milonga -w ./ws runs nightly\n  milonga -w ./ws runs --json"
)]
pub(crate) struct Args {
    /// Show this run (its steps, names, states and provenance) instead of listing them all.
    run: Option<String>,
}

fn when(ms: i64) -> String {
    format!("{} ago", age((now_millis() - ms) / 1000))
}

pub(crate) fn run(global: &Global, args: Args) -> CmdResult {
    let ws = open(global)?;
    let Some(name) = args.run else {
        let runs = ws.runs()?;
        if global.json {
            print_json(&serde_json::json!({ "count": runs.len(), "runs": runs }))?;
        } else {
            println!(
                "{:<32} {:>10} {:>9} {:>7} {:>9}",
                "run", "started", "duration", "steps", "completed"
            );
            for r in &runs {
                let took = r
                    .ended_at
                    .map(|e| format!("{:.1} s", (e - r.started_at) as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<32} {:>10} {:>9} {:>7} {:>9}",
                    sanitize(&r.name),
                    when(r.started_at),
                    took,
                    r.steps,
                    r.completed
                );
            }
            println!("{} runs", runs.len());
        }
        return Ok(ExitCode::SUCCESS);
    };
    let run = ws.run(&name)?;
    if global.json {
        print_json(&serde_json::json!({
            "name": run.name,
            "started_at": run.started_at,
            "ended_at": run.ended_at,
            "provenance": run.provenance,
            "steps": run.steps,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("run:        {}", sanitize(&run.name));
    println!("started:    {}", when(run.started_at));
    match run.ended_at {
        Some(e) => println!(
            "ended:      {} ({:.1} s)",
            when(e),
            (e - run.started_at) as f64 / 1000.0
        ),
        None => println!("ended:      - (still running, or its process died)"),
    }
    if let Some(p) = &run.provenance {
        println!("command:    {}", sanitize(&p.argv.join(" ")));
        if let Some(c) = &p.git_commit {
            let dirty = if p.git_dirty == Some(true) {
                " (dirty)"
            } else {
                ""
            };
            println!("git:        {}{dirty}", sanitize(c));
        }
        println!(
            "where:      {}@{} ({}), milonga {}",
            sanitize(p.user.as_deref().unwrap_or("?")),
            sanitize(&p.host),
            sanitize(&p.platform),
            sanitize(&p.milonga_version)
        );
    }
    println!();
    println!("{:<24} {:<11} unique id", "step", "state");
    for s in &run.steps {
        let state = s.state.map_or("(removed)", |s| s.as_str());
        println!(
            "{:<24} {:<11} {}{}",
            sanitize(s.name.as_deref().unwrap_or("-")),
            state,
            sanitize(&s.unique_id),
            if s.target { "  *" } else { "" }
        );
    }
    println!("{} steps (* = target)", run.steps.len());
    Ok(ExitCode::SUCCESS)
}
