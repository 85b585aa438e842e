//! The engine's error type.

use std::path::PathBuf;

/// A `Result` whose error is the engine [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error a step's `run` may return: any error type converts into it with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error shared by everything that reports one failure (the step's error in
/// [`Error::StepFailed`], reported to each step that needed it).
pub type SharedError = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the engine.
///
/// Errors about stored bytes (corrupt or missing objects, checksum mismatches, wrong formats) are
/// [`Error::Format`], carrying the SDK error that names the file or object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from a format or from reading or writing stored bytes (other than an I/O
    /// error, which is [`Error::Io`]).
    #[error(transparent)]
    Format(milonga_sdk::Error),
    /// An I/O error on `path`.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// `path` is not a milonga workspace (a regular file, or a directory without a metadata
    /// database where one must exist).
    #[error("{path} is not a milonga workspace: {reason}")]
    NotAWorkspace {
        /// The path given.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The workspace is read-only (opened so, or not writable by this process), and the
    /// operation needs to write.
    #[error("the workspace {path} is read-only: {operation} needs write access")]
    ReadOnly {
        /// The workspace's directory.
        path: PathBuf,
        /// What was refused (for example `running step Square-…`).
        operation: String,
    },
    /// The metadata database's schema is not one milonga wrote: a schema version that is not
    /// an integer, a missing version table beside other tables, no version row.
    #[error("metadata database {path}: {reason}")]
    BadSchema {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A follower found no live process writing the step (none started within the follow
    /// timeout, or the one that did has died) and the step has no result.
    #[error("step {unique_id}: no process is writing it: {reason}")]
    NoWriter {
        /// The step followed.
        unique_id: String,
        /// What the follower found (the step's last state).
        reason: String,
    },
    /// This process no longer holds the lease of the step it is writing (on a remote
    /// workspace): it expired and another holder took the step over with a newer fencing
    /// token, so this holder's late write (a partial file, the completion) is refused.
    #[error("step {unique_id}: lease lost, write refused: {reason}")]
    LeaseLost {
        /// The step.
        unique_id: String,
        /// The fencing token this holder had.
        token: u64,
        /// What happened (who holds the step now, with which token).
        reason: String,
    },
    /// The metadata database at `path` failed.
    #[error("metadata database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The metadata database was written by a newer milonga.
    #[error(
        "metadata database {path} has schema version {found}, written by a newer milonga; this \
         build reads schema versions up to {supported}: upgrade milonga to open this workspace"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The schema version found.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// A workspace URL with a scheme milonga does not know.
    #[error("unknown workspace URL {url:?}: expected a path, file://PATH or memory://")]
    UnknownScheme {
        /// The URL given.
        url: String,
    },
    /// A workspace URL whose scheme needs a cargo feature this build lacks (`s3://` needs
    /// feature `s3` of the `milonga` crate).
    #[error("workspace URL {url:?} needs milonga built with the cargo feature `{feature}` (for example `milonga = {{ version = \"…\", features = [\"{feature}\"] }}`, or `cargo run --features {feature}`)")]
    FeatureDisabled {
        /// The URL given.
        url: String,
        /// The feature to enable.
        feature: &'static str,
    },
    /// A step's `run` returned an error, panicked, or its output could not be written.
    #[error("step {unique_id} failed: {message}")]
    StepFailed {
        /// The failed step.
        unique_id: String,
        /// The error text (also recorded in the workspace).
        message: String,
        /// The error the step's `run` (or its format's `write`) returned, when this process ran
        /// it: downcast it to the step's own error type. `None` for a panic, or a failure
        /// known only from the workspace's record.
        #[source]
        source: Option<SharedError>,
    },
    /// A step definition is not valid (name or version characters, arguments that cannot be
    /// serialized canonically).
    #[error("invalid step {name}: {reason}")]
    InvalidStep {
        /// The step's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored result was written by another format than the step now uses.
    #[error("step {unique_id} was stored by format {stored}, but the step reads it as {expected}")]
    FormatMismatch {
        /// The step.
        unique_id: String,
        /// Format id and version recorded with the result.
        stored: String,
        /// Format id and version the step uses now.
        expected: String,
    },
    /// A run that does not exist, a run name already taken, or a step name a run does not
    /// have.
    #[error("run {name:?}: {reason}")]
    Run {
        /// The run's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The step record is in a state that does not allow the operation.
    #[error("step {unique_id}: {reason}")]
    State {
        /// The step.
        unique_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A pipeline file that cannot be built: shown as `file:line:col: what is wrong`, its own
    /// source (an I/O error reading the file) kept.
    #[cfg(feature = "pipeline")]
    #[error(transparent)]
    Pipeline(Box<crate::pipeline::PipelineError>),
}

impl Error {
    /// A [`Error::StepFailed`] with a message and no source (a panic, a recorded failure).
    pub(crate) fn step_failed(unique_id: impl Into<String>, message: impl Into<String>) -> Self {
        Error::StepFailed {
            unique_id: unique_id.into(),
            message: message.into(),
            source: None,
        }
    }

    /// A [`Error::StepFailed`] caused by `source` (its text is the message).
    pub(crate) fn step_failed_by(unique_id: impl Into<String>, source: SharedError) -> Self {
        Error::StepFailed {
            unique_id: unique_id.into(),
            message: source.to_string(),
            source: Some(source),
        }
    }

    pub(crate) fn db(path: impl Into<PathBuf>, source: rusqlite::Error) -> Self {
        Error::Database {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: PathBuf::from(path.to_string()),
            source,
        }
    }
}

/// SDK errors become engine errors; an I/O error stays an I/O error ([`Error::Io`]), so that
/// code can match one variant whichever layer failed.
impl From<milonga_sdk::Error> for Error {
    fn from(e: milonga_sdk::Error) -> Self {
        match e {
            milonga_sdk::Error::Io { path, source } => Error::Io {
                path: PathBuf::from(path),
                source,
            },
            milonga_sdk::Error::Backend(e) => match e.downcast::<Error>() {
                // An engine error that went through a format comes back as itself.
                Ok(e) => *e,
                Err(e) => Error::Format(milonga_sdk::Error::Backend(e)),
            },
            e => Error::Format(e),
        }
    }
}
