//! What can be wrong with a pipeline file, and where.

use std::fmt;
use std::path::PathBuf;

/// A pipeline file that cannot be built: what is wrong and where in the file
/// (`pipeline.toml:12:9: …`).
#[derive(Debug)]
pub struct PipelineError {
    /// The file (as given).
    pub file: PathBuf,
    /// The 1-based line and column of the problem, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub kind: PipelineErrorKind,
}

/// What is wrong with a pipeline file.
#[derive(Debug)]
#[non_exhaustive]
pub enum PipelineErrorKind {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is not valid TOML (or JSON), or not shaped as a pipeline.
    Syntax(String),
    /// A step names a type the tool did not register.
    UnknownType {
        /// The step's name in the file.
        step: String,
        /// The type it names.
        type_name: String,
        /// The types the tool registered.
        known: Vec<String>,
    },
    /// A step's arguments do not fit its type.
    BadArguments {
        /// The step's name in the file.
        step: String,
        /// What serde reported.
        message: String,
    },
    /// A step refers to a step the file does not have.
    DanglingRef {
        /// The step that refers.
        step: String,
        /// The name it refers to.
        target: String,
    },
    /// Steps refer to each other in a cycle.
    Cycle {
        /// The steps of the cycle, in order, the first repeated at the end.
        steps: Vec<String>,
    },
    /// A target asked for is not a step of the file.
    UnknownTarget(String),
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        match &self.kind {
            PipelineErrorKind::Io(e) => write!(f, "cannot read the pipeline file: {e}"),
            PipelineErrorKind::Syntax(m) => f.write_str(m),
            PipelineErrorKind::UnknownType {
                step,
                type_name,
                known,
            } => {
                write!(f, "step {step:?}: unknown step type {type_name:?}")?;
                if known.is_empty() {
                    f.write_str(" (this tool registers no step types)")
                } else {
                    write!(f, " (known: {})", known.join(", "))
                }
            }
            PipelineErrorKind::BadArguments { step, message } => {
                write!(f, "step {step:?}: bad arguments: {message}")
            }
            PipelineErrorKind::DanglingRef { step, target } => write!(
                f,
                "step {step:?} refers to {target:?}, which is not a step of this file"
            ),
            PipelineErrorKind::Cycle { steps } => {
                write!(
                    f,
                    "steps refer to each other in a cycle: {}",
                    steps.join(" -> ")
                )
            }
            PipelineErrorKind::UnknownTarget(t) => {
                write!(f, "{t:?} is not a step of this file")
            }
        }
    }
}

impl std::error::Error for PipelineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            PipelineErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}
