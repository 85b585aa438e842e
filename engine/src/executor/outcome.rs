//! What an executor run did, step by step.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// What happened to one step in a run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Status {
    /// The step ran in this run and its result is stored (or, for an uncacheable step, was
    /// passed in memory).
    Computed,
    /// The result was already stored (or another process computed it meanwhile).
    Loaded,
    /// The step failed; nothing was stored.
    Failed(Arc<Error>),
    /// The step did not run because an input failed: `upstream` is the unique id of the failed
    /// step.
    NotRun {
        /// The failed step upstream.
        upstream: String,
    },
    /// An uncacheable step that no step needed in this run (its consumers were loaded).
    NotNeeded,
}

impl Status {
    /// A short label: `computed`, `loaded`, `failed`, `not run` or `not needed`.
    pub fn label(&self) -> &'static str {
        match self {
            Status::Computed => "computed",
            Status::Loaded => "loaded",
            Status::Failed(_) => "failed",
            Status::NotRun { .. } => "not run",
            Status::NotNeeded => "not needed",
        }
    }

    /// Whether the step failed.
    pub fn is_failed(&self) -> bool {
        matches!(self, Status::Failed(_))
    }

    /// Whether the step's result is available (computed or loaded).
    pub fn is_ok(&self) -> bool {
        matches!(self, Status::Computed | Status::Loaded)
    }
}

/// One row of an [`Outcome`].
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// The step's unique id.
    pub unique_id: String,
    /// The step's type name.
    pub name: &'static str,
    /// What happened.
    pub status: Status,
    /// How long the executor spent on it (computing, or finding it stored); `None` if it did not
    /// run.
    pub duration: Option<Duration>,
    /// Whether the step was a target of the run.
    pub target: bool,
    /// The unique ids of the step's inputs.
    pub dependencies: Vec<String>,
}

/// What an [`Executor`](crate::Executor) run did: every step of the graph, in topological
/// order, with its [`Status`] and duration. `Display` prints it as a table.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Every step of the graph, each after its inputs.
    pub steps: Vec<StepOutcome>,
    /// The run's wall-clock time.
    pub elapsed: Duration,
    /// The name of the run registered in the workspace (`None` on a read-only workspace).
    pub run: Option<String>,
}

impl Outcome {
    /// Whether every step's result is available (none failed or was not run).
    pub fn is_success(&self) -> bool {
        self.steps
            .iter()
            .all(|s| s.status.is_ok() || matches!(s.status, Status::NotNeeded))
    }

    /// The row of the step with this unique id.
    pub fn get(&self, unique_id: &str) -> Option<&StepOutcome> {
        self.steps.iter().find(|s| s.unique_id == unique_id)
    }

    /// The steps with this status label (see [`Status::label`]).
    pub fn with_status<'a>(&'a self, label: &'a str) -> impl Iterator<Item = &'a StepOutcome> {
        self.steps.iter().filter(move |s| s.status.label() == label)
    }

    /// The first failure, as an error (for `?`): `Ok(())` if every step succeeded.
    ///
    /// # Errors
    /// The error of the first failed step in topological order.
    pub fn check(&self) -> crate::Result<()> {
        for s in &self.steps {
            match &s.status {
                Status::Failed(e) => {
                    return Err(match e.as_ref() {
                        Error::StepFailed {
                            message, source, ..
                        } => Error::StepFailed {
                            unique_id: s.unique_id.clone(),
                            message: message.clone(),
                            source: source.clone(),
                        },
                        other => Error::StepFailed {
                            unique_id: s.unique_id.clone(),
                            message: other.to_string(),
                            source: Some(Arc::clone(e) as crate::SharedError),
                        },
                    })
                }
                Status::NotRun { upstream } => {
                    return Err(Error::State {
                        unique_id: s.unique_id.clone(),
                        reason: format!("not run: input {upstream} failed"),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn secs(d: Option<Duration>) -> String {
    match d {
        Some(d) if d.as_secs_f64() >= 0.0995 => format!("{:.1} s", d.as_secs_f64()),
        Some(d) => format!("{:.0} ms", d.as_secs_f64() * 1000.0),
        None => "-".into(),
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<10} {:>8}  step", "status", "time")?;
        for s in &self.steps {
            let mark = if s.target { "  *" } else { "" };
            writeln!(
                f,
                "{:<10} {:>8}  {}{mark}",
                s.status.label(),
                secs(s.duration),
                s.unique_id
            )?;
            match &s.status {
                Status::Failed(e) => writeln!(f, "{:>21}{e}", "")?,
                Status::NotRun { upstream } => writeln!(f, "{:>21}input {upstream} failed", "")?,
                _ => {}
            }
        }
        let count = |label| self.with_status(label).count();
        write!(
            f,
            "{} steps: {} computed, {} loaded, {} failed, {} not run; {} (* = target)",
            self.steps.len(),
            count("computed"),
            count("loaded"),
            count("failed"),
            count("not run"),
            secs(Some(self.elapsed)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, status: Status, target: bool) -> StepOutcome {
        StepOutcome {
            unique_id: id.into(),
            name: "T",
            status,
            duration: Some(Duration::from_millis(1500)),
            target,
            dependencies: Vec::new(),
        }
    }

    #[test]
    fn table_names_every_status_and_the_failed_upstream() {
        let outcome = Outcome {
            steps: vec![
                row("A-1", Status::Computed, false),
                row("B-1", Status::Loaded, false),
                row(
                    "C-1",
                    Status::Failed(Arc::new(Error::step_failed("C-1", "boom"))),
                    false,
                ),
                row(
                    "D-1",
                    Status::NotRun {
                        upstream: "C-1".into(),
                    },
                    true,
                ),
                row("E-1", Status::NotNeeded, false),
            ],
            elapsed: Duration::from_millis(20),
            run: None,
        };
        let table = outcome.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "status         time  step");
        assert_eq!(lines[1], "computed      1.5 s  A-1");
        assert_eq!(lines[2], "loaded        1.5 s  B-1");
        assert!(
            lines[3].starts_with("failed") && lines[4].contains("boom"),
            "{table}"
        );
        assert!(
            lines[5].starts_with("not run") && lines[5].ends_with("D-1  *"),
            "{table}"
        );
        assert!(
            lines[6].trim_start().starts_with("input C-1 failed"),
            "{table}"
        );
        assert!(lines[7].starts_with("not needed"), "{table}");
        assert_eq!(
            lines[8],
            "5 steps: 1 computed, 1 loaded, 1 failed, 1 not run; 20 ms (* = target)"
        );
        assert!(!outcome.is_success());
        assert!(matches!(outcome.check(), Err(Error::StepFailed { .. })));
        assert_eq!(
            outcome.get("E-1").map(|s| s.status.label()),
            Some("not needed")
        );
    }
}
