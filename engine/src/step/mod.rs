//! Steps: functions whose results are cached in a workspace under an id made from the step's
//! name, version, format and arguments.

pub mod canonical;
mod erased;
mod id;
pub(crate) mod preimage;
mod progress;
mod rng;
mod run;
pub(crate) mod scope;
mod unstored;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use milonga_sdk::Format;
use serde::{Serialize, Serializer};

use crate::error::{BoxError, Result};
use crate::workspace::Workspace;

pub use erased::{DynStep, Fresh};
pub use id::ID_SCHEME;
pub use progress::Progress;
pub use rng::StepRng;
pub use unstored::Unstored;

use scope::{Flight, Scope};

pub(crate) use id::identity;
pub(crate) use run::load_stored;

/// What `result()` of step `S` returns (inside an `Arc`): the value its format reads back, which
/// is the step's output itself or a lazy handle over it.
pub type ResultOf<S> = <<S as Step>::Format as Format<<S as Step>::Output>>::Output;

/// A unit of cached work.
///
/// The step's struct holds its arguments; they must be [`Serialize`], because the step's
/// [`unique_id`](Step::unique_id) is a hash of their canonical encoding (map and set order never
/// matter; reordering struct fields does not change it). Leave an argument out of the id with
/// serde's attributes: `#[serde(skip)]`, or `#[serde(skip_serializing_if = "…")]` to leave it
/// out only at its default value (so adding an argument does not invalidate existing results).
///
/// ```
/// use milonga::{Context, PostcardFormat, Step, StepRef, Workspace};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Count { upto: u32 }
///
/// impl Step for Count {
///     const NAME: &'static str = "Count";
///     type Output = Vec<u32>;
///     type Format = PostcardFormat;
///     fn run(&self, _ctx: &mut Context<'_>) -> Result<Vec<u32>, milonga::BoxError> {
///         Ok((0..self.upto).collect())
///     }
/// }
///
/// #[derive(Serialize)]
/// struct Sum { numbers: StepRef<Count> }
///
/// impl Step for Sum {
///     const NAME: &'static str = "Sum";
///     const VERSION: Option<&'static str> = Some("2");
///     type Output = u64;
///     type Format = PostcardFormat;
///     fn run(&self, ctx: &mut Context<'_>) -> Result<u64, milonga::BoxError> {
///         let numbers = ctx.input(&self.numbers)?;
///         Ok(numbers.iter().map(|&n| u64::from(n)).sum())
///     }
/// }
///
/// # fn main() -> milonga::Result<()> {
/// let ws = Workspace::memory()?;
/// let sum = Sum { numbers: Count { upto: 10 }.into() };
/// assert_eq!(*sum.result(&ws)?, 45);
/// assert!(sum.unique_id()?.starts_with("Sum-2-"));
/// # Ok(()) }
/// ```
pub trait Step: Serialize + Send + Sync + 'static {
    /// The step's type name: `Name` or a path such as `corpus::Tokenize`. The whole name enters
    /// the id hash (so two steps called `Prep` in different modules do not share results when
    /// their names say so); the last segment starts the unique id. Segments are ASCII letters,
    /// digits and `_`.
    const NAME: &'static str;

    /// The step's version. Bump it when the code changes its results: every result of the old
    /// version is then missed and computed again. ASCII letters and digits only.
    const VERSION: Option<&'static str> = None;

    /// Whether the result is stored in the workspace (the default). An uncacheable step
    /// (`false`, for a value that cannot or should not be stored, such as a model handle) runs
    /// in the process that needs it, at most once per run, and its output is passed to its
    /// consumers in memory: nothing of it reaches the workspace. Give it the [`Unstored`] format
    /// to pass the output as it is; with another format the output goes through the format in
    /// memory.
    const CACHEABLE: bool = true;

    /// Whether the step computes the same result from the same arguments (the default). A
    /// non-deterministic step (`false`) gets a fresh unique id in every run (one
    /// [`Executor::run`](crate::Executor::run), or one top-level [`result`](Step::result)
    /// call), so it is never a cache hit for another run, and neither are the steps that take
    /// it as input. Its [`Context::rng`] is seeded from that id, and the seed is recorded in
    /// the step's metadata (`"rng_seed"`).
    const DETERMINISTIC: bool = true;

    /// What `run` returns.
    type Output: Send + 'static;

    /// How the output is stored; [`PostcardFormat`](type@crate::PostcardFormat) for plain serde
    /// values.
    type Format: Format<Self::Output> + Default;

    /// The format instance used to write and read the result; override to configure one.
    fn format(&self) -> Self::Format {
        Self::Format::default()
    }

    /// Computes the output. Never called directly: [`result`](Step::result) calls it when the
    /// workspace has no result for the step yet.
    ///
    /// # Errors
    /// Any error: the step is recorded FAILED with its text, and the next `result()` runs it
    /// again.
    fn run(&self, ctx: &mut Context<'_>) -> Result<Self::Output, BoxError>;

    /// Whether a consumer may read this step's result while it is still being written (the
    /// executor then starts the consumer as soon as this step has started, and the consumer
    /// reads through [`Workspace::follow`]). The default is true for cacheable steps whose
    /// format is a stream ([`StreamFormat`](crate::StreamFormat), id `milonga.stream…`, and the
    /// lines formats [`JsonLinesFormat`](crate::JsonLinesFormat) and
    /// [`TextLinesFormat`](crate::TextLinesFormat)).
    fn followable(&self) -> bool {
        let format = self.format();
        let id = format.id();
        Self::CACHEABLE
            && (id.starts_with("milonga.stream")
                || id == crate::TextLinesFormat::ID
                || id == crate::JsonLinesFormat::<()>::ID)
    }

    /// Free-form metadata recorded with the step (not part of its id).
    fn metadata(&self) -> serde_json::Value {
        serde_json::Value::Object(Default::default())
    }

    /// The step's unique id: `Name[-VERSION]-<hash>`, stable across processes, platforms and
    /// releases.
    ///
    /// # Errors
    /// [`Error::InvalidStep`](crate::Error::InvalidStep) for an invalid name or version, or
    /// arguments whose `Serialize` fails.
    fn unique_id(&self) -> Result<String>
    where
        Self: Sized,
    {
        id::unique_id(self).map(|(id, _)| id)
    }

    /// The step's result: read from the workspace (or this process's memory cache) if it is
    /// there, otherwise computed by [`run`](Step::run), stored, and read back. When several
    /// processes ask for the same missing result at once, one runs it and the others wait for it.
    ///
    /// # Errors
    /// [`Error::StepFailed`](crate::Error::StepFailed) if the step (or one of its inputs) fails;
    /// storage errors.
    fn result(&self, workspace: &Workspace) -> Result<Arc<ResultOf<Self>>>
    where
        Self: Sized,
    {
        run::result(self, workspace)
    }

    /// Makes sure the workspace has the step's result, computing and storing it if it is
    /// missing, without reading it back (Tango's `ensure_result`). For an uncacheable step this
    /// computes it (and keeps it for the rest of the run).
    ///
    /// # Errors
    /// As [`result`](Step::result).
    fn ensure(&self, workspace: &Workspace) -> Result<Fresh>
    where
        Self: Sized,
    {
        let scope = Scope::current_or_new();
        let _entered = scope.enter();
        run::ensure(self, workspace, &scope, None)
    }

    /// As [`result`](Step::result), but computes the step again even if its result is stored,
    /// and replaces the stored result. Only this step runs again: its inputs are read from the
    /// workspace (or computed if they are missing), and steps that use it keep their results.
    ///
    /// # Errors
    /// As [`result`](Step::result).
    fn refresh(&self, workspace: &Workspace) -> Result<Arc<ResultOf<Self>>>
    where
        Self: Sized,
    {
        let scope = Scope::new(Default::default(), None);
        let _entered = scope.enter();
        let unique_id = self.unique_id()?;
        scope.add_refresh(unique_id.clone());
        run::value(self, workspace, &scope, Some(unique_id))
    }
}

/// What a running step can ask of the engine.
pub struct Context<'a> {
    workspace: &'a Workspace,
    unique_id: &'a str,
    work_dir: PathBuf,
    durable_items: u64,
    resumed: bool,
    scope: Arc<Scope>,
    /// Inputs read while their producer was still writing them: the step's result is recorded
    /// only once they completed.
    followed: Mutex<Vec<(String, Arc<Flight>)>>,
    progress: Progress,
    seed: u64,
}

impl<'a> Context<'a> {
    /// The workspace the step runs in.
    pub fn workspace(&self) -> &Workspace {
        self.workspace
    }

    /// The unique id of the running step.
    pub fn unique_id(&self) -> &str {
        self.unique_id
    }

    /// A directory that belongs to this step and survives a crash, for checkpoints and resumable
    /// work. It is created on first use.
    ///
    /// # Errors
    /// An I/O error creating it.
    pub fn work_dir(&self) -> Result<&Path> {
        std::fs::create_dir_all(&self.work_dir)
            .map_err(|e| crate::Error::io(self.work_dir.display(), e))?;
        Ok(&self.work_dir)
    }

    /// The result of an input step (computed first if it is missing).
    ///
    /// When the executor is computing the input right now and its result is a stream
    /// ([`Step::followable`]), this returns a reader that follows the stream as it is written
    /// (pipelining): it yields the items committed so far, waits for more, and fails if the
    /// producer fails; this step's own result is recorded only after the input completed.
    ///
    /// # Errors
    /// As [`Step::result`].
    pub fn input<S: Step>(&self, input: &StepRef<S>) -> Result<Arc<ResultOf<S>>> {
        run::input(input, self.workspace, &self.scope, &self.followed)
    }

    /// The progress handle of this step: set the number of items when known and count the
    /// items processed; the executor shows it.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// A seed for this step's randomness, derived from its unique id: the same for every run of
    /// a deterministic step, fresh in every run of a non-deterministic one (where it is recorded
    /// in the step's metadata as `"rng_seed"`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A random number generator seeded with [`seed`](Context::seed).
    pub fn rng(&self) -> StepRng {
        StepRng::new(self.seed)
    }

    /// For a step whose output is a stream of items: how many items an earlier, interrupted run
    /// already stored durably. A resumable step calls this and returns only the items after
    /// them; a step that never calls it starts over, and the earlier items are discarded.
    pub fn resume_from(&mut self) -> u64 {
        self.resumed = true;
        self.durable_items
    }
}

/// A reference to another step, used as an argument: the upstream step's unique id enters this
/// step's id (a Merkle chain), and [`Context::input`] gives its result at run time.
pub struct StepRef<S: Step> {
    step: Arc<S>,
    id: Arc<OnceLock<std::result::Result<String, String>>>,
}

impl<S: Step> StepRef<S> {
    /// Wraps `step`.
    pub fn new(step: S) -> Self {
        StepRef {
            step: Arc::new(step),
            id: Arc::new(OnceLock::new()),
        }
    }

    /// The referenced step.
    pub fn step(&self) -> &S {
        &self.step
    }

    /// The referenced step's unique id (computed once).
    ///
    /// # Errors
    /// As [`Step::unique_id`].
    pub fn unique_id(&self) -> Result<String> {
        self.cached_id()
            .map_err(|reason| crate::Error::InvalidStep {
                name: S::NAME.into(),
                reason,
            })
    }

    fn cached_id(&self) -> std::result::Result<String, String> {
        if let Some(id) = self.id.get() {
            return id.clone();
        }
        // An id that involves a non-deterministic step changes with every run: not cached.
        let outer = id::NONDETERMINISTIC.with(|n| n.replace(false));
        let id = self.step.unique_id().map_err(|e| e.to_string());
        let nondeterministic = id::NONDETERMINISTIC.with(|n| n.replace(outer || n.get()));
        if !nondeterministic {
            let _ = self.id.set(id.clone());
        }
        id
    }

    /// The referenced step's result, as [`Step::result`].
    ///
    /// # Errors
    /// As [`Step::result`].
    pub fn result(&self, workspace: &Workspace) -> Result<Arc<ResultOf<S>>> {
        self.step.result(workspace)
    }
}

impl<S: Step> Clone for StepRef<S> {
    fn clone(&self) -> Self {
        StepRef {
            step: Arc::clone(&self.step),
            id: Arc::clone(&self.id),
        }
    }
}

impl<S: Step> From<S> for StepRef<S> {
    fn from(step: S) -> Self {
        StepRef::new(step)
    }
}

impl<S: Step> fmt::Debug for StepRef<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cached_id() {
            Ok(id) => write!(f, "StepRef({id})"),
            Err(e) => write!(f, "StepRef({}: {e})", S::NAME),
        }
    }
}

impl<S: Step> Serialize for StepRef<S> {
    /// Serializes as a reference carrying the upstream unique id (a newtype struct named
    /// `$milonga::StepRef` around the id string), which the canonical id encoding recognises.
    fn serialize<Ser: Serializer>(
        &self,
        serializer: Ser,
    ) -> std::result::Result<Ser::Ok, Ser::Error> {
        let id =
            erased::without_collector(|| self.cached_id()).map_err(serde::ser::Error::custom)?;
        erased::collect(&id, &self.step);
        serializer.serialize_newtype_struct(canonical::STEP_REF_NAME, &id)
    }
}
