//! Config-file pipelines: a TOML (or JSON) file names steps, their types (registered by the
//! tool in a [`Registry`]), their arguments, and references to other steps of the file by name.
//!
//! ```toml
//! [steps.numbers]
//! type = "Count"
//! upto = 100
//!
//! [steps.total]
//! type = "Sum"
//! numbers = { type = "ref", ref = "numbers" }
//! ```
//!
//! Each table under `steps` is one step: `type` is the registered type name, every other key
//! is an argument of the step's struct (read with serde, so `#[serde(default)]` and
//! `#[serde(deny_unknown_fields)]` work as usual), and a [`StepRef`](crate::StepRef) argument is
//! `{ type = "ref", ref = "NAME" }` (Tango's form). The JSON form is the same tree:
//! `{"steps": {"numbers": {"type": "Count", "upto": 100}, …}}`.

mod error;
mod load;
mod refs;
mod registry;
mod render;

pub use error::{PipelineError, PipelineErrorKind};
pub use load::{Pipeline, PipelineStep};
pub use registry::Registry;
pub use render::{JsonOutput, Rendered};
