//! `steps`: list step records.

use std::collections::HashMap;
use std::process::ExitCode;

use serde::Serialize;

use crate::workspace::{StepInfo, StepState, Workspace};

use super::common::{age, human, now_millis, open, print_json, sanitize, usage, CmdResult};
use super::Global;

/// List step records: state, stored size, format, age, unique id.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  milonga -w ./ws steps\n  milonga -w ./ws steps --state failed --state incomplete\n  milonga -w ./ws steps --name Tokenize --json"
)]
pub(crate) struct Args {
    /// Only steps in this state (completed, running, failed, incomplete); may be repeated.
    #[arg(long, value_name = "STATE")]
    state: Vec<String>,
    /// Only steps whose name or unique id contains this text.
    #[arg(long, value_name = "TEXT")]
    name: Option<String>,
    /// Leave out stored sizes (sizes come from the step records; only records completed before
    /// schema 3 without one yet need their manifest read).
    #[arg(long)]
    no_sizes: bool,
}

/// One step in `steps --json`.
#[derive(Serialize)]
pub(crate) struct StepRow<'a> {
    unique_id: &'a str,
    name: &'a str,
    version: Option<&'a str>,
    state: &'static str,
    format: &'a str,
    format_version: u32,
    /// Bytes of the result's files (`null` without a stored result or with `--no-sizes`).
    size: Option<u64>,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    /// Seconds since the step last ended (or started).
    age_secs: Option<i64>,
    dependencies: &'a [String],
}

/// The document `steps --json` prints.
#[derive(Serialize)]
struct StepsDoc<'a> {
    workspace: &'a str,
    count: usize,
    steps: Vec<StepRow<'a>>,
}

/// The stored size of each completed step's result: the size its record holds (schema 3 writes
/// it at completion), else read from its manifest, each distinct manifest once (on every core
/// when there are many). Sizes read from manifests are written back to their records (unless
/// the workspace is read-only), so that a workspace upgraded from schema 2 pays for its old
/// records once.
pub(crate) fn sizes(ws: &Workspace, steps: &[&StepInfo]) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::with_capacity(steps.len());
    let mut missing: Vec<&StepInfo> = Vec::new();
    for s in steps {
        match (s.result_size, s.manifest_id) {
            (Some(n), Some(_)) => {
                out.insert(s.unique_id.clone(), n);
            }
            (None, Some(_)) => missing.push(s),
            _ => {}
        }
    }
    if missing.is_empty() {
        return out;
    }
    let mut manifests: Vec<crate::ContentId> =
        missing.iter().filter_map(|s| s.manifest_id).collect();
    manifests.sort_unstable();
    manifests.dedup();
    let load = |ids: &[crate::ContentId]| -> Vec<(crate::ContentId, u64)> {
        ids.iter()
            .filter_map(|id| {
                let m = ws.inner.load_manifest(id).ok()?;
                Some((*id, m.total_len()))
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let by_manifest: HashMap<crate::ContentId, u64> = if manifests.len() < 256 || threads < 2 {
        load(&manifests).into_iter().collect()
    } else {
        let per = manifests.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = manifests
                .chunks(per)
                .map(|part| scope.spawn(move || load(part)))
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().unwrap_or_default())
                .collect()
        })
    };
    let mut fill: Vec<(&str, crate::ContentId, u64)> = Vec::new();
    for s in missing {
        let Some(m) = s.manifest_id else { continue };
        if let Some(&n) = by_manifest.get(&m) {
            out.insert(s.unique_id.clone(), n);
            fill.push((&s.unique_id, m, n));
        }
    }
    if !ws.is_read_only() {
        // Only a cache of what the manifests say: a listing that cannot write it back (a busy
        // or damaged database) still shows the sizes it read.
        if let Err(e) = ws.inner.db.fill_result_sizes(&fill) {
            tracing::warn!(target: "milonga::cli", "result sizes not recorded: {e}");
        }
    }
    out
}

fn parse_state(s: &str) -> Result<StepState, crate::BoxError> {
    let all = [
        StepState::Completed,
        StepState::Running,
        StepState::Failed,
        StepState::Incomplete,
    ];
    all.into_iter()
        .find(|st| st.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            usage(format!(
                "unknown state {}: one of completed, running, failed, incomplete",
                sanitize(s)
            ))
        })
}

pub(crate) fn run(global: &Global, args: Args) -> CmdResult {
    let states = args
        .state
        .iter()
        .map(|s| parse_state(s))
        .collect::<Result<Vec<_>, _>>()?;
    let ws = open(global)?;
    let all = ws.steps()?;
    let steps: Vec<&StepInfo> = all
        .iter()
        .filter(|s| states.is_empty() || states.contains(&s.state))
        .filter(|s| {
            args.name
                .as_deref()
                .is_none_or(|n| s.step_type.contains(n) || s.unique_id.contains(n))
        })
        .collect();
    let sizes = if args.no_sizes {
        HashMap::new()
    } else {
        sizes(&ws, &steps)
    };
    let now = now_millis();
    let age_of = |s: &StepInfo| s.ended_at.or(s.started_at).map(|t| (now - t) / 1000);
    if global.json {
        let rows: Vec<StepRow<'_>> = steps
            .iter()
            .map(|s| StepRow {
                unique_id: &s.unique_id,
                name: &s.step_type,
                version: s.version.as_deref(),
                state: s.state.as_str(),
                format: &s.format_id,
                format_version: s.format_version,
                size: sizes.get(&s.unique_id).copied(),
                started_at: s.started_at,
                ended_at: s.ended_at,
                age_secs: age_of(s),
                dependencies: &s.dependencies,
            })
            .collect();
        // Serialized as it is (not through a `serde_json::Value`): 100,000 rows stay cheap.
        print_json(&StepsDoc {
            workspace: ws.url(),
            count: rows.len(),
            steps: rows,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(
        out,
        "{:<10} {:>10} {:>5}  {:<22} unique id",
        "state", "size", "age", "format"
    )?;
    for s in &steps {
        let size = sizes
            .get(&s.unique_id)
            .map(|&n| human(n))
            .unwrap_or_else(|| "-".into());
        let a = age_of(s).map(age).unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<10} {:>10} {:>5}  {:<22} {}",
            s.state.as_str(),
            size,
            a,
            sanitize(&s.format_id),
            sanitize(&s.unique_id)
        )?;
    }
    writeln!(out, "{} steps", steps.len())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
