//! `milonga`: inspect and maintain a workspace from the command line.
//!
//! ```text
//! cargo run --release -p milonga --features cli --bin milonga -- /tmp/milonga-demo steps
//! ```
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use milonga::{StepInfo, Workspace};

#[derive(Parser)]
#[command(
    name = "milonga",
    version,
    about = "Inspect and maintain a milonga workspace"
)]
struct Cli {
    /// The workspace: a path, file://PATH.
    workspace: String,
    /// Open the workspace read-only (automatic when it is not writable): read and verify, never
    /// write.
    #[arg(long)]
    read_only: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every step: state, stored size, id.
    Steps,
    /// Show one step's record and the files of its result.
    Info {
        /// The step's unique id.
        unique_id: String,
    },
    /// Re-read every stored object and check it against its content id (and rebuild missing
    /// outboards).
    Verify {
        /// Move damaged objects into quarantine and forget the steps that refer to them, so
        /// that their next run computes them again.
        #[arg(long)]
        repair: bool,
    },
    /// Write one file of a completed step's result to standard output (verified).
    Cat {
        /// The step's unique id.
        unique_id: String,
        /// The artifact file; may be left out when the result has exactly one file.
        file: Option<String>,
    },
    /// Forget steps' results so that they run again (objects stay until `gc`).
    Rm {
        /// Unique ids of the steps.
        #[arg(required = true)]
        unique_ids: Vec<String>,
    },
    /// Remove objects no step refers to.
    Gc {
        /// Keep unreferenced objects younger than this many seconds (a writer may be about to
        /// record them).
        #[arg(long, default_value_t = 3600)]
        grace_secs: u64,
    },
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn stored_size(ws: &Workspace, info: &StepInfo) -> Option<u64> {
    info.manifest_id?;
    let a = ws.artifact(&info.unique_id).ok()?;
    Some(a.files().iter().map(|f| f.len).sum())
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

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Inspecting a path that is not a workspace must not create one there.
    let local = match cli.workspace.strip_prefix("file://") {
        Some(path) => Some(path),
        None if !cli.workspace.contains("://") => Some(cli.workspace.as_str()),
        None => None,
    };
    let ws = match local {
        Some(path) if cli.read_only => Workspace::open_read_only(path)?,
        Some(path) => Workspace::open_existing(path)?,
        None => Workspace::from_url(&cli.workspace)?,
    };
    match cli.command {
        Command::Steps => {
            let steps = ws.steps()?;
            println!("{:<10} {:>10}  unique id", "state", "size");
            for s in &steps {
                let size = stored_size(&ws, s).map(human).unwrap_or_else(|| "-".into());
                println!("{:<10} {:>10}  {}", s.state.as_str(), size, s.unique_id);
            }
            println!("{} steps", steps.len());
        }
        Command::Info { unique_id } => {
            let Some(s) = ws.step_info(&unique_id)? else {
                eprintln!("no step {unique_id} in {}", ws.url());
                return Ok(ExitCode::from(2));
            };
            println!("unique id:    {}", s.unique_id);
            println!("type:         {}", s.step_type);
            println!("version:      {}", s.version.as_deref().unwrap_or("-"));
            println!("state:        {}", s.state);
            println!("format:       {} v{}", s.format_id, s.format_version);
            println!("attempts:     {}", s.attempts);
            println!("owner:        {}", s.owner.as_deref().unwrap_or("-"));
            if let Some((own, total)) = durations(&ws, &s) {
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
                println!("error:        {e}");
            }
            for d in &s.dependencies {
                println!("depends on:   {d}");
            }
            if let Some(m) = s.manifest_id {
                println!("manifest:     {m}");
                for f in ws.artifact(&unique_id)?.files() {
                    println!("  {:<24} {:>10}  {}", f.name, human(f.len), f.id);
                }
            }
        }
        Command::Verify { repair } => {
            let total: u64 = ws.steps()?.iter().filter_map(|s| stored_size(&ws, s)).sum();
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "verifying {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                )
                .expect("valid template"),
            );
            let mut progress = |_, bytes| bar.set_position(bytes);
            let report = if repair {
                ws.repair(&mut progress)?
            } else {
                ws.verify_with_progress(&mut progress)?
            };
            bar.finish_and_clear();
            println!(
                "checked {} objects, {}",
                report.objects_checked,
                human(report.bytes_checked)
            );
            if !report.problems.is_empty() {
                for p in &report.problems {
                    println!("PROBLEM {}: {}", p.unique_id, p.error);
                }
                for q in &report.quarantined {
                    println!("quarantined {q}");
                }
                for r in &report.reset_steps {
                    println!("reset {r}: its next run computes it again");
                }
                if repair && !report.reset_steps.is_empty() {
                    return Ok(ExitCode::SUCCESS);
                }
                return Ok(ExitCode::from(1));
            }
            println!("no problems");
        }
        Command::Cat { unique_id, file } => {
            let artifact = ws.artifact(&unique_id)?;
            let names: Vec<String> = artifact.files().into_iter().map(|f| f.name).collect();
            let name = match (file, names.as_slice()) {
                (Some(f), _) => f,
                (None, [only]) => only.clone(),
                (None, _) => {
                    eprintln!(
                        "{unique_id} has {} files; name one of: {}",
                        names.len(),
                        names.join(", ")
                    );
                    return Ok(ExitCode::from(2));
                }
            };
            let bytes = artifact.bytes(&name)?;
            let mut out = std::io::stdout().lock();
            std::io::Write::write_all(&mut out, (*bytes).as_ref())?;
            std::io::Write::flush(&mut out)?;
        }
        Command::Rm { unique_ids } => {
            for id in unique_ids {
                if ws.remove_step(&id)? {
                    println!("removed {id}");
                } else {
                    println!("no step {id}");
                }
            }
        }
        Command::Gc { grace_secs } => {
            let r = ws.gc(Duration::from_secs(grace_secs))?;
            println!(
                "removed {} objects and {} staging files, freed {}; kept {} live and {} recent objects",
                r.removed_objects,
                r.removed_staging_files,
                human(r.freed_bytes),
                r.live_objects,
                r.young_objects
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("milonga: {e}");
            ExitCode::from(2)
        }
    }
}
