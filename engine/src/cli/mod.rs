//! The `milonga` command line as a library: the `milonga` binary is [`main`], and a tool of your
//! own that registers its step types gets the same commands plus `run PIPELINE` with
//! [`main_with`].
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     let registry = milonga::Registry::new();
//!     // registry.register::<MyStep>();
//!     milonga::cli::main_with(registry)
//! }
//! ```
//!
//! Every command takes `--json` (one JSON document on standard output; JSON lines for `cat` of a
//! stream) and the workspace as `-w PATH`, `MILONGA_WORKSPACE`, or (the older form) a first
//! argument before the command: `milonga WS steps`.

mod cat;
mod common;
mod du;
mod explain;
mod gc;
mod info;
mod rm;
mod run;
mod run_rm;
mod runs;
mod steps;
mod verify;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::pipeline::Registry;

pub use common::sanitize;

/// The command line: global options and one command.
#[derive(Parser, Debug)]
#[command(
    name = "milonga",
    version,
    about = "Inspect, maintain and run pipelines in a milonga workspace",
    after_help = "Examples:\n  milonga -w ./ws steps --state completed\n  milonga -w ./ws info Tokenize\n  milonga -w ./ws cat Count-9aX --limit 10\n  MILONGA_WORKSPACE=./ws milonga du --json\n  milonga -w ./ws runs nightly\n  milonga -w ./ws explain Sum\n  milonga -w ./ws gc --keep-last 10 --dry-run\n\nThe older form `milonga WORKSPACE COMMAND` still works."
)]
struct Cli {
    /// The workspace: a path or file://PATH.
    #[arg(
        short,
        long,
        global = true,
        env = "MILONGA_WORKSPACE",
        value_name = "WORKSPACE"
    )]
    workspace: Option<String>,
    /// Open the workspace read-only (automatic when it is not writable): read and verify, never
    /// write.
    #[arg(long, global = true)]
    read_only: bool,
    /// Print one JSON document (JSON lines for `cat` of a stream) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
enum Command {
    Steps(steps::Args),
    Info(info::Args),
    Cat(cat::Args),
    Du(du::Args),
    Verify(verify::Args),
    Rm(rm::Args),
    Gc(gc::Args),
    Run(run::Args),
    Runs(runs::Args),
    RunRm(run_rm::Args),
    Explain(explain::Args),
}

/// Global options every command sees.
pub(crate) struct Global {
    pub(crate) workspace: Option<String>,
    pub(crate) read_only: bool,
    pub(crate) json: bool,
}

/// Runs the `milonga` command line with no step types registered (`run` then reports every
/// step type of a pipeline file as unknown). Returns the process's exit code: 0 success, 1 a
/// problem found (verify) or a step failed (run), 2 an error.
pub fn main() -> ExitCode {
    main_with(Registry::new())
}

/// Runs the command line of a tool that registered its step types in `registry`: the
/// inspection commands, and `run PIPELINE` for config-file pipelines built from those types.
/// The program name in help and errors is the tool's own (from `argv[0]`).
pub fn main_with(registry: Registry) -> ExitCode {
    main_from(std::env::args_os(), &registry)
}

/// As [`main_with`], with explicit arguments (the first is the program name).
pub fn main_from<I, T>(args: I, registry: &Registry) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let bin = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "milonga".into());
    let args = legacy_workspace(args);
    let mut command = Cli::command().name(bin.clone()).bin_name(bin.clone());
    if bin != "milonga" {
        let help = command
            .get_after_help()
            .map(|h| h.to_string().replace("milonga ", &format!("{bin} ")))
            .unwrap_or_default();
        command = command.after_help(help);
    }
    let cli = match command
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    let global = Global {
        workspace: cli.workspace,
        read_only: cli.read_only,
        json: cli.json,
    };
    let result = match cli.command {
        Command::Steps(a) => steps::run(&global, a),
        Command::Info(a) => info::run(&global, a),
        Command::Cat(a) => cat::run(&global, a, registry),
        Command::Du(a) => du::run(&global, a),
        Command::Verify(a) => verify::run(&global, a),
        Command::Rm(a) => rm::run(&global, a),
        Command::Gc(a) => gc::run(&global, a),
        Command::Run(a) => run::run(&global, a, registry),
        Command::Runs(a) => runs::run(&global, a),
        Command::RunRm(a) => run_rm::run(&global, a),
        Command::Explain(a) => explain::run(&global, a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            common::report_error(&bin, &global, &e);
            ExitCode::from(2)
        }
    }
}

/// The older form `milonga WORKSPACE COMMAND …`: a first argument that is neither an option
/// nor a command is the workspace.
fn legacy_workspace(mut args: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return args;
    };
    if first.starts_with('-') {
        return args;
    }
    let command = Cli::command();
    let known = first == "help" || command.get_subcommands().any(|c| c.get_name() == first);
    if !known {
        args.insert(1, OsString::from("--workspace"));
    }
    args
}
