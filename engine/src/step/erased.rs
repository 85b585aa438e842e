//! A type-erased view of steps: what the executor needs to know of any step (its name, unique id
//! and inputs) and can ask of it (compute it and store the result), without its types.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use super::{id, run, scope::Scope, Step, StepRef};
use crate::error::Result;
use crate::workspace::Workspace;

/// How a step's result became available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fresh {
    /// The step ran (in this call).
    Computed,
    /// The result was already there: in the workspace, in this process's memory cache, or
    /// computed by another process while this one waited.
    Loaded,
}

/// What a step looks like from the executor: its identity and inputs, and a way to compute it.
pub(crate) trait ErasedStep: Send + Sync {
    fn name(&self) -> &'static str;
    fn cacheable(&self) -> bool;
    fn deterministic(&self) -> bool;
    fn followable(&self) -> bool;
    /// The unique id and the steps referenced by the arguments, found by serializing them.
    fn describe(&self) -> Result<(String, Vec<(String, DynStep)>)>;
    /// Computes the step (if needed) and stores the result, without reading it back.
    fn ensure(&self, ws: &Workspace, scope: &Arc<Scope>, unique_id: &str) -> Result<Fresh>;
}

impl<S: Step> ErasedStep for S {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn cacheable(&self) -> bool {
        S::CACHEABLE
    }

    fn deterministic(&self) -> bool {
        S::DETERMINISTIC
    }

    fn followable(&self) -> bool {
        Step::followable(self)
    }

    fn describe(&self) -> Result<(String, Vec<(String, DynStep)>)> {
        let previous = COLLECTOR.with(|c| c.borrow_mut().replace(Vec::new()));
        let id = id::unique_id(self);
        let deps = COLLECTOR.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous));
        let (id, _) = id?;
        let mut deps = deps.unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        deps.retain(|(id, _)| seen.insert(id.clone()));
        Ok((id, deps))
    }

    fn ensure(&self, ws: &Workspace, scope: &Arc<Scope>, unique_id: &str) -> Result<Fresh> {
        run::ensure(self, ws, scope, Some(unique_id.to_owned()))
    }
}

thread_local! {
    /// While a step's arguments are serialized by [`ErasedStep::describe`], the step references
    /// met on the way (only the direct ones: computing a referenced step's own id suspends it).
    static COLLECTOR: RefCell<Option<Vec<(String, DynStep)>>> = const { RefCell::new(None) };
}

/// Runs `f` with the collector suspended (for nested id computations).
pub(crate) fn without_collector<T>(f: impl FnOnce() -> T) -> T {
    let saved = COLLECTOR.with(|c| c.borrow_mut().take());
    let out = f();
    COLLECTOR.with(|c| *c.borrow_mut() = saved);
    out
}

/// Records a step reference met while serializing arguments, if a collector is active.
pub(crate) fn collect<S: Step>(unique_id: &str, step: &Arc<S>) {
    COLLECTOR.with(|c| {
        if let Some(refs) = c.borrow_mut().as_mut() {
            let erased: Arc<dyn ErasedStep> = Arc::clone(step) as Arc<dyn ErasedStep>;
            refs.push((unique_id.to_owned(), DynStep { step: erased }));
        }
    });
}

/// A step of any type, as the [`Executor`](crate::Executor) sees it: a name, a unique id, the
/// steps its arguments refer to, and a way to compute and store it.
///
/// Make one from a [`StepRef`] (`DynStep::from(step_ref)`, or [`StepRef::erased`]) or from a step
/// value (`DynStep::new(step)`). Clones share the step.
#[derive(Clone)]
pub struct DynStep {
    step: Arc<dyn ErasedStep>,
}

impl DynStep {
    /// Wraps a step value.
    pub fn new<S: Step>(step: S) -> Self {
        DynStep {
            step: Arc::new(step),
        }
    }

    /// The step's type name ([`Step::NAME`]).
    pub fn name(&self) -> &'static str {
        self.step.name()
    }

    /// The step's unique id (see [`Step::unique_id`]).
    ///
    /// # Errors
    /// As [`Step::unique_id`].
    pub fn unique_id(&self) -> Result<String> {
        Ok(self.step.describe()?.0)
    }

    /// The steps this step's arguments refer to, with their unique ids, deduplicated, found by
    /// serializing the arguments (nothing runs).
    ///
    /// # Errors
    /// As [`Step::unique_id`].
    pub fn dependencies(&self) -> Result<Vec<(String, DynStep)>> {
        Ok(self.step.describe()?.1)
    }

    /// [`Step::CACHEABLE`].
    pub fn cacheable(&self) -> bool {
        self.step.cacheable()
    }

    /// [`Step::DETERMINISTIC`].
    pub fn deterministic(&self) -> bool {
        self.step.deterministic()
    }

    /// [`Step::followable`].
    pub fn followable(&self) -> bool {
        self.step.followable()
    }

    /// Computes the step if the workspace has no result for it and stores the result, without
    /// reading it back (see [`Step::ensure`]).
    ///
    /// # Errors
    /// As [`Step::result`].
    pub fn ensure(&self, workspace: &Workspace) -> Result<Fresh> {
        let scope = Scope::current_or_new();
        let _entered = scope.enter();
        let (id, _) = self.step.describe()?;
        self.step.ensure(workspace, &scope, &id)
    }

    pub(crate) fn describe(&self) -> Result<(String, Vec<(String, DynStep)>)> {
        self.step.describe()
    }

    pub(crate) fn ensure_in(
        &self,
        workspace: &Workspace,
        scope: &Arc<Scope>,
        unique_id: &str,
    ) -> Result<Fresh> {
        self.step.ensure(workspace, scope, unique_id)
    }
}

impl fmt::Debug for DynStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynStep")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl<S: Step> From<StepRef<S>> for DynStep {
    fn from(step: StepRef<S>) -> Self {
        step.erased()
    }
}

impl<S: Step> From<&StepRef<S>> for DynStep {
    fn from(step: &StepRef<S>) -> Self {
        step.erased()
    }
}

impl<S: Step> StepRef<S> {
    /// The referenced step as a [`DynStep`] (sharing the step).
    pub fn erased(&self) -> DynStep {
        DynStep {
            step: Arc::clone(&self.step) as Arc<dyn ErasedStep>,
        }
    }
}
