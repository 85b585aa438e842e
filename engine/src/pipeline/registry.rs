//! The step registry: which step types a pipeline file may name, and how to build each one
//! from its arguments.

use std::any::Any;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::render::{JsonOutput, Rendered};
use crate::error::BoxError;
use crate::sdk::ArtifactHandle;
use crate::step::{DynStep, Step, StepRef};

/// A step built from a pipeline file: typed (for the step references of the steps built after
/// it) and erased (for the executor).
pub(crate) struct Built {
    /// The `StepRef<S>` of the step.
    pub(crate) typed: Arc<dyn Any + Send + Sync>,
    pub(crate) erased: DynStep,
}

type BuildToml =
    dyn for<'a> Fn(toml::de::ValueDeserializer<'a>) -> Result<Built, toml::de::Error> + Send + Sync;
type BuildJson = dyn Fn(serde_json::Value) -> Result<Built, serde_json::Error> + Send + Sync;
type Render = dyn Fn(ArtifactHandle, Range<u64>) -> Result<Rendered, BoxError> + Send + Sync;

struct Entry {
    step_name: &'static str,
    from_toml: Box<BuildToml>,
    from_json: Box<BuildJson>,
    render: Option<Box<Render>>,
}

/// The step types a tool offers to pipeline files, by name: filled in the tool's `main` and
/// handed to [`cli::main_with`](crate::cli::main_with) or [`Pipeline`](super::Pipeline).
///
/// A step type is registered with [`register`](Registry::register) (arguments read with serde:
/// the step's struct derives `Deserialize` as well as `Serialize`; a [`StepRef`] argument is
/// written in the file as `{ type = "ref", ref = "other_step" }`).
///
/// ```
/// use milonga::{BoxError, Context, PostcardFormat, Registry, Step};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Square { x: u64 }
///
/// impl Step for Square {
///     const NAME: &'static str = "Square";
///     type Output = u64;
///     type Format = PostcardFormat;
///     fn run(&self, _: &mut Context<'_>) -> Result<u64, BoxError> { Ok(self.x * self.x) }
/// }
///
/// let mut registry = Registry::new();
/// registry.register::<Square>();
/// assert_eq!(registry.type_names().collect::<Vec<_>>(), ["Square"]);
/// ```
#[derive(Default)]
pub struct Registry {
    types: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.types.keys()).finish()
    }
}

fn built<S: Step>(step: S) -> Built {
    let typed = StepRef::new(step);
    Built {
        erased: typed.erased(),
        typed: Arc::new(typed),
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers step type `S` under its [`Step::NAME`]; its arguments are read from the file
    /// with serde. Registering a name again replaces the earlier type.
    pub fn register<S: Step + DeserializeOwned>(&mut self) -> &mut Self {
        self.register_as::<S>(S::NAME)
    }

    /// Registers step type `S` under `type_name` (the name pipeline files use).
    pub fn register_as<S: Step + DeserializeOwned>(&mut self, type_name: &str) -> &mut Self {
        self.types.insert(
            type_name.to_owned(),
            Entry {
                step_name: S::NAME,
                from_toml: Box::new(|d| S::deserialize(d).map(built)),
                from_json: Box::new(|v| serde_json::from_value::<S>(v).map(built)),
                render: None,
            },
        );
        self
    }

    /// Registers step type `S` (as [`register`](Registry::register)) and lets `cat` render its
    /// stored results as JSON, which it cannot do for a format that is not self-describing
    /// (postcard) without knowing the output's type.
    pub fn register_printable<S>(&mut self) -> &mut Self
    where
        S: Step + DeserializeOwned,
        S::Format: JsonOutput<S::Output>,
    {
        self.register::<S>();
        self.add_renderer::<S>(S::NAME);
        self
    }

    fn add_renderer<S>(&mut self, type_name: &str)
    where
        S: Step,
        S::Format: JsonOutput<S::Output>,
    {
        if let Some(e) = self.types.get_mut(type_name) {
            e.render = Some(Box::new(|artifact, items| {
                S::Format::default().render(artifact, items)
            }));
        }
    }

    /// The registered type names, sorted.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Whether `type_name` is registered.
    pub fn contains(&self, type_name: &str) -> bool {
        self.types.contains_key(type_name)
    }

    pub(crate) fn build_toml<'a>(
        &self,
        type_name: &str,
        args: toml::de::ValueDeserializer<'a>,
    ) -> Option<Result<Built, toml::de::Error>> {
        Some((self.types.get(type_name)?.from_toml)(args))
    }

    pub(crate) fn build_json(
        &self,
        type_name: &str,
        args: serde_json::Value,
    ) -> Option<Result<Built, serde_json::Error>> {
        Some((self.types.get(type_name)?.from_json)(args))
    }

    /// Renders the stored result of a step whose [`Step::NAME`] is `step_name`, if a type
    /// registered with [`register_printable`](Registry::register_printable) has that name.
    pub(crate) fn render(
        &self,
        step_name: &str,
        artifact: ArtifactHandle,
        items: Range<u64>,
    ) -> Option<Result<Rendered, BoxError>> {
        let entry = self
            .types
            .values()
            .find(|e| e.step_name == step_name && e.render.is_some())?;
        entry.render.as_ref().map(|r| r(artifact, items))
    }
}
