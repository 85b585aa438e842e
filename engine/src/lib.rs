//! # milonga
//!
//! A streaming-first, content-addressed storage engine for cached pipeline results.
//!
//! A [`Step`] is a function whose result is cached in a [`Workspace`] under an id made from the
//! step's name, [`VERSION`](Step::VERSION), format and arguments. Steps take other steps as
//! inputs through [`StepRef`]; re-running a pipeline computes only what is missing, even in a
//! new process; bumping `VERSION` invalidates. A step's [`Format`] decides how its result is
//! stored: [`PostcardFormat`](type@PostcardFormat) for any serde value, or a custom one written against the SDK.
//!
//! ```
//! use milonga::{Context, PostcardFormat, Step, Workspace};
//! use serde::Serialize;
//!
//! #[derive(Serialize)]
//! struct Square { x: u64 }
//!
//! impl Step for Square {
//!     const NAME: &'static str = "Square";
//!     type Output = u64;
//!     type Format = PostcardFormat;
//!     fn run(&self, _ctx: &mut Context<'_>) -> Result<u64, milonga::BoxError> {
//!         Ok(self.x * self.x)
//!     }
//! }
//!
//! # fn main() -> milonga::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let ws = Workspace::open(dir.path())?;
//! assert_eq!(*Square { x: 7 }.result(&ws)?, 49);        // computed and stored
//! let again = Workspace::open(dir.path())?;
//! assert_eq!(*Square { x: 7 }.result(&again)?, 49);     // read from the workspace
//! # Ok(()) }
//! ```
//!
//! Crates: [`sdk`] (the contracts a format author implements) and [`formats`] (the built-in
//! formats) are re-exported here, so users depend on `milonga` only.

// The decoder lints of `[workspace.lints.clippy]` (no `unwrap`, `expect` or indexing) apply to
// the manifest decoder, which reads stored bytes. The other modules decode no stored bytes
// themselves (formats and the SDK do, under the same lints): they opt out here.
#[cfg(feature = "cli")]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
pub mod cli;
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod error;
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod executor;
mod manifest;
#[cfg(feature = "pipeline")]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod pipeline;
#[cfg(feature = "s3")]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
pub mod remote;
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod step;
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
pub mod store;
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod workspace;

pub use error::{BoxError, Error, Result, SharedError};
pub use executor::{Executor, Graph, Node, Outcome, Status, StepOutcome};
pub use manifest::Manifest;
#[cfg(feature = "pipeline")]
pub use pipeline::{
    JsonOutput, Pipeline, PipelineError, PipelineErrorKind, PipelineStep, Registry, Rendered,
};
pub use step::canonical;
pub use step::{
    Context, DynStep, Fresh, Progress, ResultOf, Step, StepRef, StepRng, Unstored, ID_SCHEME,
};
pub use workspace::{
    Difference, Explanation, GcPolicy, GcReport, Problem, Provenance, Run, RunStep, RunSummary,
    StepInfo, StepState, VerifyReport, Workspace, CACHE_DIR_ENV, DATABASE_FILE,
    DEFAULT_ACCESS_GRANULARITY, DEFAULT_RESULT_CACHE_BYTES, DEFAULT_RESULT_CACHE_ENTRIES,
    FOLLOW_START_TIMEOUT, METADATA_SCHEMA_VERSION,
};

pub use milonga_formats as formats;
pub use milonga_formats::*;
pub use milonga_sdk as sdk;
pub use milonga_sdk::{
    ArtifactHandle, ArtifactReader, ArtifactStatus, ArtifactWriter, Codec, ContentId, Envelope,
    FileEntry, FileWriter, Format,
};

/// The README's examples, compiled (and the custom format run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
