//! `du`: space by step and by format, and what deduplication saves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;

use super::common::{human, open, print_json, sanitize, CmdResult};
use super::Global;

/// Space used by step and by format, and what deduplication saves (identical files of
/// different steps are stored once).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  milonga -w ./ws du\n  milonga -w ./ws du --top 5 --json")]
pub(crate) struct Args {
    /// How many of the largest steps to list.
    #[arg(long, default_value_t = 20)]
    top: usize,
}

pub(crate) fn run(global: &Global, args: Args) -> CmdResult {
    let ws = open(global)?;
    let steps = ws.steps()?;
    let mut per_step: Vec<(String, String, u64)> = Vec::new();
    let mut per_format: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut objects: HashMap<crate::ContentId, u64> = HashMap::new();
    let mut manifests: HashSet<crate::ContentId> = HashSet::new();
    let mut logical = 0u64;
    for s in &steps {
        let Some(m) = s.manifest_id else { continue };
        let Ok(a) = ws.artifact(&s.unique_id) else {
            continue;
        };
        manifests.insert(m);
        let files = a.files();
        let n: u64 = files.iter().map(|f| f.len).sum();
        for f in &files {
            objects.insert(f.id, f.len);
        }
        logical += n;
        let e = per_format.entry(s.format_id.clone()).or_default();
        e.0 += 1;
        e.1 += n;
        per_step.push((s.unique_id.clone(), s.format_id.clone(), n));
    }
    let stored: u64 = objects.values().sum();
    per_step.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let top: Vec<_> = per_step.iter().take(args.top).collect();
    if global.json {
        let steps: Vec<_> = top
            .iter()
            .map(|(id, f, n)| serde_json::json!({ "unique_id": id, "format": f, "bytes": n }))
            .collect();
        let formats: Vec<_> = per_format
            .iter()
            .map(|(f, (c, n))| serde_json::json!({ "format": f, "steps": c, "bytes": n }))
            .collect();
        print_json(&serde_json::json!({
            "steps_with_results": per_step.len(),
            "logical_bytes": logical,
            "stored_bytes": stored,
            "saved_by_deduplication": logical - stored.min(logical),
            "objects": objects.len(),
            "manifests": manifests.len(),
            "largest_steps": steps,
            "by_format": formats,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:>10}  {:<22} step", "size", "format");
    for (id, f, n) in &top {
        println!("{:>10}  {:<22} {}", human(*n), sanitize(f), sanitize(id));
    }
    if per_step.len() > top.len() {
        println!("… and {} more steps", per_step.len() - top.len());
    }
    println!();
    println!("{:>10}  {:>6}  format", "size", "steps");
    for (f, (c, n)) in &per_format {
        println!("{:>10}  {c:>6}  {}", human(*n), sanitize(f));
    }
    println!();
    println!(
        "{} in {} results; stored once: {} in {} objects; deduplication saves {}",
        human(logical),
        per_step.len(),
        human(stored),
        objects.len(),
        human(logical - stored.min(logical))
    );
    Ok(ExitCode::SUCCESS)
}
