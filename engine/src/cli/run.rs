//! `run`: build a config-file pipeline from the tool's registered step types and run it.

use std::process::ExitCode;

use crate::executor::{Executor, Status};
use crate::pipeline::{Pipeline, Registry};

use super::common::{open_or_create, print_json, sanitize, CmdResult};
use super::Global;

/// Run a pipeline file (TOML, or JSON when it ends in .json) built from the step types this
/// tool registers. Exit code 1 when a step fails.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The file names each step, its type and its arguments; a step refers \
    to another by name:\n\n  [steps.numbers]\n  type = \"Count\"\n  upto = 100\n\n  \
    [steps.total]\n  type = \"Sum\"\n  numbers = { type = \"ref\", ref = \"numbers\" }\n\n\
    Examples:\n  mytool run pipeline.toml -w ./ws -j 4\n  \
    mytool run pipeline.toml -w ./ws --step total --run nightly --json"
)]
pub(crate) struct Args {
    /// The pipeline file.
    pipeline: std::path::PathBuf,
    /// Number of workers (default: one per core).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// A name for this run (default: a generated one); fetch results by it later.
    #[arg(long, value_name = "NAME")]
    run: Option<String>,
    /// Run only these steps of the file (and what they need); may be repeated.
    #[arg(long, value_name = "NAME")]
    step: Vec<String>,
    /// Build the steps and print their unique ids without running anything.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) fn run(global: &Global, args: Args, registry: &Registry) -> CmdResult {
    let pipeline = Pipeline::from_file(&args.pipeline, registry)?;
    let targets = pipeline.targets(&args.step)?;
    let names: Vec<(String, String)> = pipeline
        .steps()
        .iter()
        .map(|s| Ok((s.step.unique_id()?, s.name.clone())))
        .collect::<crate::Result<_>>()?;
    let name_of = |id: &str| names.iter().find(|(i, _)| i == id).map(|(_, n)| n.as_str());
    if args.dry_run {
        if global.json {
            let steps: Vec<_> = pipeline
                .steps()
                .iter()
                .zip(&names)
                .map(|(s, (id, _))| serde_json::json!({ "name": s.name, "type": s.type_name, "unique_id": id }))
                .collect();
            print_json(&serde_json::json!({ "steps": steps }))?;
        } else {
            for (s, (id, _)) in pipeline.steps().iter().zip(&names) {
                println!("{:<20} {}", sanitize(&s.name), sanitize(id));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let ws = open_or_create(global)?;
    let mut executor = Executor::new(&ws);
    if let Some(j) = args.jobs {
        executor.with_jobs(j);
    }
    if global.json {
        executor.with_progress(false);
    }
    // The run records every step of the file under its name in the file.
    if let Some(name) = &args.run {
        executor.with_run_name(name.clone());
    }
    for s in pipeline.steps() {
        executor.name_step(s.name.clone(), s.step.clone());
    }
    let outcome = executor.run(targets)?;
    let code = if outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if global.json {
        let steps: Vec<_> = outcome
            .steps
            .iter()
            .map(|s| {
                let error = match &s.status {
                    Status::Failed(e) => Some(e.to_string()),
                    _ => None,
                };
                let status = s.status.label();
                serde_json::json!({
                    "name": name_of(&s.unique_id),
                    "unique_id": s.unique_id,
                    "type": s.name,
                    "status": status,
                    "error": error,
                    "duration_ms": s.duration.map(|d| d.as_millis() as u64),
                    "target": s.target,
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "pipeline": pipeline.file(),
            "workspace": ws.url(),
            "run": outcome.run,
            "success": outcome.is_success(),
            "elapsed_ms": outcome.elapsed.as_millis() as u64,
            "steps": steps,
        }))?;
    } else {
        println!("{}", sanitize_table(&outcome.to_string()).trim_end());
        if let Some(run) = &outcome.run {
            println!("run: {}", sanitize(run));
        }
        for (id, name) in &names {
            println!("{:<20} {}", sanitize(name), sanitize(id));
        }
    }
    Ok(code)
}

/// The outcome table, with control characters escaped but its line breaks kept.
fn sanitize_table(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| match line.strip_suffix('\n') {
            Some(l) => sanitize(l) + "\n",
            None => sanitize(line),
        })
        .collect()
}
