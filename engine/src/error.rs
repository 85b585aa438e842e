//! The engine's error type.

use std::path::PathBuf;

/// A `Result` whose error is the engine [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error a step's `run` may return: any error type converts into it with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the engine.
///
/// Errors about stored bytes (corrupt or missing objects, checksum mismatches, wrong formats) are
/// [`Error::Format`], carrying the SDK error that names the file or object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from a format or from reading or writing stored bytes.
    #[error(transparent)]
    Format(#[from] milonga_sdk::Error),
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
        "metadata database {path} has schema version {found}; this build reads up to {supported}"
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
    /// A step's `run` returned an error, panicked, or its output could not be written.
    #[error("step {unique_id} failed: {message}")]
    StepFailed {
        /// The failed step.
        unique_id: String,
        /// The error text (also recorded in the workspace).
        message: String,
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
    /// The step record is in a state that does not allow the operation.
    #[error("step {unique_id}: {reason}")]
    State {
        /// The step.
        unique_id: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn db(path: impl Into<PathBuf>, source: rusqlite::Error) -> Self {
        Error::Database {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Format(milonga_sdk::Error::io(path, source))
    }
}
