//! `info`: one step's record, its upstream and downstream steps, and its files.

use std::process::ExitCode;

use crate::workspace::{StepInfo, Workspace};

use super::common::{human, open, print_json, resolve, sanitize, CmdResult};
use super::Global;

/// Show one step's record, its upstream and downstream steps, and the files of its result.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "STEP is a unique id, a unique prefix of one, or a step name only one record has.\n\nExamples:\n  milonga -w ./ws info Tokenize-3fQ\n  milonga -w ./ws info Tokenize --json"
)]
pub(crate) struct Args {
    /// The step: a unique id, a unique prefix, or an unambiguous step name.
    step: String,
}

/// A step's own run time and its total time, in milliseconds. The recorded interval of a step
/// includes computing the inputs it asked for while it ran; the union of those inputs'
/// intervals (where they lie inside it) is not its own time.
fn durations(ws: &Workspace, s: &StepInfo) -> Option<(i64, i64)> {
    let (a, b) = (s.started_at?, s.ended_at?);
    let total = (b - a).max(0);
    let mut inputs: Vec<(i64, i64)> = s
        .dependencies
        .iter()
        .filter_map(|d| ws.step_info(d).ok().flatten())
        .filter_map(|d| Some((d.started_at?.max(a), d.ended_at?.min(b))))
        .filter(|(x, y)| x < y)
        .collect();
    inputs.sort_unstable();
    let mut covered = 0;
    let mut end = a;
    for (x, y) in inputs {
        let x = x.max(end);
        if y > x {
            covered += y - x;
            end = y;
        }
    }
    Some((total - covered, total))
}

pub(crate) fn run(global: &Global, args: Args) -> CmdResult {
    let ws = open(global)?;
    let s = resolve(&ws, &args.step)?;
    let downstream: Vec<String> = ws
        .steps()?
        .into_iter()
        .filter(|d| d.dependencies.contains(&s.unique_id))
        .map(|d| d.unique_id)
        .collect();
    let files = match s.manifest_id {
        Some(_) => ws.artifact(&s.unique_id)?.files(),
        None => Vec::new(),
    };
    let durations = durations(&ws, &s);
    let arguments = s.arguments()?;
    if global.json {
        let files: Vec<_> = files
            .iter()
            .map(|f| serde_json::json!({ "name": f.name, "len": f.len, "id": f.id.to_string() }))
            .collect();
        print_json(&serde_json::json!({
            "unique_id": s.unique_id,
            "name": s.step_type,
            "version": s.version,
            "state": s.state.as_str(),
            "format": s.format_id,
            "format_version": s.format_version,
            "attempts": s.attempts,
            "owner": s.owner,
            "started_at": s.started_at,
            "ended_at": s.ended_at,
            "own_duration_ms": durations.map(|d| d.0),
            "duration_ms": durations.map(|d| d.1),
            "error": s.error,
            "metadata": s.metadata,
            "manifest": s.manifest_id.map(|m| m.to_string()),
            "arguments": arguments,
            "provenance": s.provenance.as_deref(),
            "reused_from": s.reused_from,
            "last_access": s.last_access,
            "upstream": s.dependencies,
            "downstream": downstream,
            "files": files,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("unique id:    {}", sanitize(&s.unique_id));
    println!("type:         {}", sanitize(&s.step_type));
    println!(
        "version:      {}",
        sanitize(s.version.as_deref().unwrap_or("-"))
    );
    println!("state:        {}", s.state);
    println!(
        "format:       {} v{}",
        sanitize(&s.format_id),
        s.format_version
    );
    println!("attempts:     {}", s.attempts);
    println!(
        "owner:        {}",
        sanitize(s.owner.as_deref().unwrap_or("-"))
    );
    if let Some((own, total)) = durations {
        if own == total {
            println!("duration:     {:.3} s", own as f64 / 1000.0);
        } else {
            println!(
                "duration:     {:.3} s ({:.3} s with its inputs)",
                own as f64 / 1000.0,
                total as f64 / 1000.0
            );
        }
    }
    if let Some(e) = &s.error {
        println!("error:        {}", sanitize(e));
    }
    if s.metadata.as_object().is_some_and(|m| !m.is_empty()) {
        println!("metadata:     {}", sanitize(&s.metadata.to_string()));
    }
    if let Some(a) = &arguments {
        println!("arguments:    {}", sanitize(&a.to_string()));
    }
    if let Some(r) = &s.reused_from {
        println!("reused from:  {} (early cutoff)", sanitize(r));
    }
    if let Some(p) = &s.provenance {
        println!("command:      {}", sanitize(&p.argv.join(" ")));
        if let Some(c) = &p.git_commit {
            let dirty = if p.git_dirty == Some(true) {
                " (dirty)"
            } else {
                ""
            };
            println!("git:          {}{dirty}", sanitize(c));
        }
        println!(
            "where:        {}@{} ({}), milonga {}, {}",
            sanitize(p.user.as_deref().unwrap_or("?")),
            sanitize(&p.host),
            sanitize(&p.platform),
            sanitize(&p.milonga_version),
            sanitize(&p.rustc_version)
        );
    }
    for d in &s.dependencies {
        println!("upstream:     {}", sanitize(d));
    }
    for d in &downstream {
        println!("downstream:   {}", sanitize(d));
    }
    if let Some(m) = s.manifest_id {
        println!("manifest:     {m}");
        for f in &files {
            println!("  {:<24} {:>10}  {}", sanitize(&f.name), human(f.len), f.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}
