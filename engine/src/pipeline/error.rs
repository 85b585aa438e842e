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

/// A pipeline error is an engine [`Error::Pipeline`](crate::Error::Pipeline), so that `?`
/// carries it through code that returns [`crate::Result`], still naming the file, line and
/// column, and with its source.
impl From<PipelineError> for crate::Error {
    fn from(e: PipelineError) -> Self {
        crate::Error::Pipeline(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_pipeline_error_becomes_an_engine_error_with_its_position_and_source() {
        fn build() -> crate::Result<()> {
            Err(PipelineError {
                file: PathBuf::from("pipeline.toml"),
                position: Some((3, 7)),
                kind: PipelineErrorKind::Io(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "no access",
                )),
            })?;
            Ok(())
        }
        let Err(e) = build() else {
            panic!("the error was lost");
        };
        assert!(matches!(e, crate::Error::Pipeline(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with("pipeline.toml:3:7: "), "{text}");
        assert!(text.contains("no access"), "{text}");
        let source = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            source.map(std::io::Error::kind),
            Some(std::io::ErrorKind::PermissionDenied)
        );

        let cycle = crate::Error::from(PipelineError {
            file: PathBuf::from("p.json"),
            position: None,
            kind: PipelineErrorKind::Cycle {
                steps: vec!["a".into(), "b".into(), "a".into()],
            },
        });
        assert_eq!(
            cycle.to_string(),
            "p.json: steps refer to each other in a cycle: a -> b -> a"
        );
    }
}
