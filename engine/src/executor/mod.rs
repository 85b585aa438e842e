//! The executor: runs a step graph on a pool of workers, with streams pipelined between steps,
//! failures isolated, and an outcome that says what happened to every step.

mod graph;
mod outcome;
mod view;

use std::collections::{HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use graph::{Graph, Node};
pub use outcome::{Outcome, Status, StepOutcome};

use crate::error::{Error, Result};
use crate::step::scope::{Flight, Scope};
use crate::step::{DynStep, Fresh};
use crate::workspace::Workspace;

/// Runs steps as a graph: independent steps in parallel on `jobs` workers, a consumer of a
/// stream started as soon as its producer has started writing (pipelining), a failure marking
/// only the steps that depend on it as not run.
///
/// A pipelined consumer runs on a thread of its own rather than on a worker: it advances at its
/// producer's pace, and a chain of `k` streaming steps then overlaps fully whatever `jobs` is.
/// It takes the producer's chunks from memory as they are sealed (the writer keeps its last
/// few MiB of chunks for its followers), so it does not read back, verify or decompress what
/// the producer has just written; a consumer that falls behind reads the gap from the files.
/// A producer that another process is writing is followed too (from its files), and a
/// producer that fails or dies fails its consumers, never hands them a short stream.
///
/// Every cacheable step is *ensured*: computed and stored if it is missing, never read back by
/// the executor. An uncacheable step runs only inside the steps that need it (once per run), or
/// directly when it is a target.
///
/// ```
/// # use milonga::{Context, Executor, PostcardFormat, Step, StepRef, Workspace};
/// # use serde::Serialize;
/// # #[derive(Serialize)] struct Square { x: u64 }
/// # impl Step for Square { const NAME: &'static str = "Square"; type Output = u64; type Format = PostcardFormat;
/// #   fn run(&self, _: &mut Context<'_>) -> Result<u64, milonga::BoxError> { Ok(self.x * self.x) } }
/// # #[derive(Serialize)] struct Sum { parts: Vec<StepRef<Square>> }
/// # impl Step for Sum { const NAME: &'static str = "Sum"; type Output = u64; type Format = PostcardFormat;
/// #   fn run(&self, c: &mut Context<'_>) -> Result<u64, milonga::BoxError> {
/// #     let mut t = 0; for p in &self.parts { t += *c.input(p)?; } Ok(t) } }
/// let ws = Workspace::memory()?;
/// let sum = StepRef::new(Sum { parts: (1..=4).map(|x| Square { x }.into()).collect() });
/// let outcome = Executor::new(&ws).with_jobs(2).run([sum.erased()])?;
/// assert!(outcome.is_success());
/// assert_eq!(outcome.with_status("computed").count(), 5);
/// println!("{outcome}");                                   // the table
/// assert_eq!(*sum.result(&ws)?, 1 + 4 + 9 + 16);         // now a cache hit
/// # Ok::<(), milonga::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Executor {
    workspace: Workspace,
    jobs: usize,
    refresh: Vec<DynStep>,
    refresh_ids: Vec<String>,
    pipeline: bool,
    progress: bool,
    run_name: Option<String>,
    step_names: Vec<(String, DynStep)>,
}

/// What a worker reports.
enum Event {
    Finished(usize, std::result::Result<Fresh, Error>, Duration),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running {
        started: bool,
    },
    /// Finished; whether its result is available.
    Done {
        ok: bool,
    },
}

impl Executor {
    /// An executor over `workspace` with one worker per core, pipelining on, progress shown
    /// when standard error is a terminal.
    pub fn new(workspace: &Workspace) -> Self {
        Executor {
            workspace: workspace.clone(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            refresh: Vec::new(),
            refresh_ids: Vec::new(),
            pipeline: true,
            progress: true,
            run_name: None,
            step_names: Vec::new(),
        }
    }

    /// Records `step` under `name` in the runs of this executor when it is part of their graph
    /// (a target or not), for [`Run::result`](crate::Run::result): a config-file pipeline names
    /// every step of its file this way.
    pub fn name_step(&mut self, name: impl Into<String>, step: impl Into<DynStep>) -> &mut Self {
        self.step_names.push((name.into(), step.into()));
        self
    }

    /// Names the runs this executor registers (default: a memorable generated name such as
    /// `brisk-tango-42`). A run name must be new in the workspace.
    pub fn with_run_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.run_name = Some(name.into());
        self
    }

    /// As [`run`](Executor::run), giving each target the name the run records it under (for
    /// [`Run::result`](crate::Run::result)).
    ///
    /// # Errors
    /// As [`run`](Executor::run).
    pub fn run_named<I, N, T>(&self, targets: I) -> Result<Outcome>
    where
        I: IntoIterator<Item = (N, T)>,
        N: Into<String>,
        T: Into<DynStep>,
    {
        let (names, steps): (Vec<String>, Vec<DynStep>) = targets
            .into_iter()
            .map(|(n, t)| (n.into(), t.into()))
            .unzip();
        self.run_inner(steps, names)
    }

    /// Sets the number of workers (at least 1).
    pub fn with_jobs(&mut self, jobs: usize) -> &mut Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Computes `step` again in this run even if its result is stored (once, replacing the
    /// stored result). Steps that use it keep their stored results.
    pub fn refresh(&mut self, step: impl Into<DynStep>) -> &mut Self {
        self.refresh.push(step.into());
        self
    }

    /// As [`refresh`](Executor::refresh), by unique id.
    pub fn refresh_id(&mut self, unique_id: impl Into<String>) -> &mut Self {
        self.refresh_ids.push(unique_id.into());
        self
    }

    /// Whether a consumer of a stream may start while its producer is still writing (default
    /// on). Off, every step starts only once all its inputs are complete.
    pub fn with_pipeline(&mut self, on: bool) -> &mut Self {
        self.pipeline = on;
        self
    }

    /// Whether to show the progress of running steps on standard error when it is a terminal
    /// (default on; never shown when it is not a terminal).
    pub fn with_progress(&mut self, on: bool) -> &mut Self {
        self.progress = on;
        self
    }

    /// Runs `targets` and every step they need, and reports what happened to each.
    ///
    /// Step failures are in the outcome, not an error (see [`Outcome::check`]).
    ///
    /// Each call registers a run in the workspace (see [`with_run_name`](Executor::with_run_name) and
    /// [`Workspace::run`]): its steps, its targets under their step type's short name, and
    /// the provenance of this process. The run is a root of garbage collection.
    ///
    /// # Errors
    /// A step whose id cannot be computed ([`Error::InvalidStep`]); a run name already taken
    /// ([`Error::Run`]).
    pub fn run<I>(&self, targets: I) -> Result<Outcome>
    where
        I: IntoIterator,
        I::Item: Into<DynStep>,
    {
        self.run_inner(targets.into_iter().map(Into::into).collect(), Vec::new())
    }

    fn run_inner(&self, targets: Vec<DynStep>, names: Vec<String>) -> Result<Outcome> {
        let started_at = Instant::now();
        let (start_tx, start_rx) = crossbeam_channel::unbounded::<String>();
        let scope = Scope::new(HashSet::new(), Some(start_tx));
        let _entered = scope.enter();
        for step in &self.refresh {
            scope.add_refresh(step.unique_id()?);
        }
        for id in &self.refresh_ids {
            scope.add_refresh(id.clone());
        }
        let named = names
            .into_iter()
            .zip(&targets)
            .chain(self.step_names.iter().map(|(n, s)| (n.clone(), s)))
            .map(|(n, t)| Ok((t.unique_id()?, n)))
            .collect::<Result<Vec<_>>>()?;
        let graph = Graph::build(targets.into_iter())?;
        let run = self
            .workspace
            .register_run(self.run_name.as_deref(), &graph, &named)?;
        let view = (self.progress && view::enabled()).then(|| view::View::start(&scope));
        let mut outcome = self.execute(&graph, &scope, &start_rx);
        drop(view);
        if let Some(run) = &run {
            self.workspace.end_run(run);
        }
        outcome.run = run;
        outcome.elapsed = started_at.elapsed();
        Ok(outcome)
    }

    fn execute(
        &self,
        graph: &Graph,
        scope: &Arc<Scope>,
        start_rx: &crossbeam_channel::Receiver<String>,
    ) -> Outcome {
        let nodes = graph.nodes();
        let n = nodes.len();
        let dependents = graph.dependents();
        let mut state = vec![State::Waiting; n];
        let mut status: Vec<Option<(Status, Option<Duration>)>> = vec![None; n];
        let mut flights: Vec<Option<Arc<Flight>>> = vec![None; n];
        let mut ready: VecDeque<usize> = (0..n)
            .filter(|&i| nodes.get(i).is_some_and(|x| x.dependencies.is_empty()))
            .collect();
        let mut queued: Vec<bool> = vec![false; n];
        for &i in &ready {
            queued[i] = true;
        }
        let mut finished = 0usize;
        let mut running = 0usize;
        // Steps already stored are loaded without a trip to a worker (the same check `ensure`
        // makes, for the whole graph in one statement). A failed check only means the workers
        // check each step themselves.
        let stored = self
            .workspace
            .inner
            .db
            .completed_among(
                &mut nodes
                    .iter()
                    .filter(|x| x.step.cacheable())
                    .map(|x| x.unique_id.as_str()),
            )
            .unwrap_or_default();

        let (job_tx, job_rx) = crossbeam_channel::unbounded::<usize>();
        let (event_tx, event_rx) = crossbeam_channel::unbounded::<Event>();
        let jobs = self.jobs.min(n.max(1));

        let ws = &self.workspace;
        // Computes node `i` (on a worker, or on a thread of its own for a pipelined consumer).
        let work = move |i: usize| -> Option<Event> {
            let node = nodes.get(i)?;
            let t = Instant::now();
            tracing::debug!(target: "milonga::executor", step = %node.unique_id, "dispatched");
            let r = catch_unwind(AssertUnwindSafe(|| {
                node.step.ensure_in(ws, scope, &node.unique_id)
            }))
            .unwrap_or_else(|_| {
                Err(Error::step_failed(
                    node.unique_id.clone(),
                    "the executor's worker panicked",
                ))
            });
            Some(Event::Finished(i, r, t.elapsed()))
        };
        // Consumers started on a stream still being written, each on a thread of its own: they
        // advance at their producer's pace and do not take a worker.
        let mut own_thread = vec![false; n];

        std::thread::scope(|threads| {
            for _ in 0..jobs {
                let job_rx = job_rx.clone();
                let event_tx = event_tx.clone();
                threads.spawn(move || {
                    let _entered = scope.enter();
                    for i in job_rx {
                        if let Some(event) = work(i) {
                            if event_tx.send(event).is_err() {
                                break;
                            }
                        }
                    }
                });
            }
            drop(job_rx);

            // Whether node `c` may start: every input is done, or (pipelining) a followable
            // input has started writing.
            let can_start = |c: usize, state: &[State]| -> bool {
                nodes.get(c).is_some_and(|node| {
                    node.dependencies
                        .iter()
                        .all(|&d| match state.get(d).copied() {
                            Some(State::Done { ok }) => ok,
                            Some(State::Running { started: true }) => {
                                self.pipeline && nodes.get(d).is_some_and(|x| x.step.followable())
                            }
                            _ => false,
                        })
                })
            };

            while finished < n {
                // Dispatch what is ready: stored and unneeded steps at once, the others up to
                // the number of workers.
                let mut deferred = VecDeque::new();
                while let Some(i) = ready.pop_front() {
                    let Some(node) = nodes.get(i) else { continue };
                    if state[i] != State::Waiting {
                        continue;
                    }
                    if !node.step.cacheable() && !node.target {
                        // Computed inside the steps that need it, if any does.
                        state[i] = State::Done { ok: true };
                        status[i] = Some((Status::NotNeeded, None));
                        finished += 1;
                        for &c in dependents.get(i).map_or(&[][..], Vec::as_slice) {
                            if !queued[c] && can_start(c, &state) {
                                queued[c] = true;
                                ready.push_back(c);
                            }
                        }
                        continue;
                    }
                    if stored.contains(&node.unique_id) && !scope.wants_refresh(&node.unique_id) {
                        tracing::debug!(target: "milonga::step", step = %node.unique_id, "cache hit");
                        state[i] = State::Done { ok: true };
                        status[i] = Some((Status::Loaded, Some(Duration::ZERO)));
                        finished += 1;
                        for &c in dependents.get(i).map_or(&[][..], Vec::as_slice) {
                            if !queued[c] && can_start(c, &state) {
                                queued[c] = true;
                                ready.push_back(c);
                            }
                        }
                        continue;
                    }
                    let follows = node
                        .dependencies
                        .iter()
                        .any(|&d| matches!(state.get(d), Some(State::Running { .. })));
                    if running >= jobs && !follows {
                        deferred.push_back(i);
                        continue;
                    }
                    if self.pipeline && node.step.followable() {
                        flights[i] = Some(scope.start_flight(&node.unique_id));
                    }
                    state[i] = State::Running { started: false };
                    if follows {
                        own_thread[i] = true;
                        let event_tx = event_tx.clone();
                        threads.spawn(move || {
                            let _entered = scope.enter();
                            if let Some(event) = work(i) {
                                let _ = event_tx.send(event);
                            }
                        });
                        continue;
                    }
                    running += 1;
                    if job_tx.send(i).is_err() {
                        break;
                    }
                }
                deferred.append(&mut ready);
                ready = deferred;
                if finished >= n {
                    break;
                }
                crossbeam_channel::select! {
                    recv(event_rx) -> event => {
                        let Ok(Event::Finished(i, result, took)) = event else { break };
                        if !own_thread[i] {
                            running -= 1;
                        }
                        finished += 1;
                        let Some(node) = nodes.get(i) else { continue };
                        match result {
                            Ok(fresh) => {
                                state[i] = State::Done { ok: true };
                                let s = match fresh {
                                    Fresh::Computed => Status::Computed,
                                    Fresh::Loaded => Status::Loaded,
                                };
                                status[i] = Some((s, Some(took)));
                                if let Some(f) = flights[i].take() {
                                    f.finish(Ok(()));
                                }
                                for &c in dependents.get(i).map_or(&[][..], Vec::as_slice) {
                                    if !queued[c] && can_start(c, &state) {
                                        queued[c] = true;
                                        ready.push_back(c);
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::warn!(target: "milonga::executor", step = %node.unique_id, error = %e, "step failed");
                                if let Some(f) = flights[i].take() {
                                    f.finish(Err(e.to_string()));
                                }
                                state[i] = State::Done { ok: false };
                                status[i] = Some((Status::Failed(Arc::new(e)), Some(took)));
                                // Every step downstream that has not started will not run.
                                let mut stack = vec![i];
                                while let Some(j) = stack.pop() {
                                    for &c in dependents.get(j).map_or(&[][..], Vec::as_slice) {
                                        if state[c] == State::Waiting {
                                            state[c] = State::Done { ok: false };
                                            status[c] = Some((
                                                Status::NotRun { upstream: node.unique_id.clone() },
                                                None,
                                            ));
                                            finished += 1;
                                            stack.push(c);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    recv(start_rx) -> id => {
                        let Ok(id) = id else { continue };
                        let Some(i) = graph.position(&id) else { continue };
                        if state[i] == (State::Running { started: false }) {
                            state[i] = State::Running { started: true };
                            for &c in dependents.get(i).map_or(&[][..], Vec::as_slice) {
                                if !queued[c] && can_start(c, &state) {
                                    queued[c] = true;
                                    ready.push_back(c);
                                }
                            }
                        }
                    }
                }
            }
            drop(job_tx);
        });

        let steps = nodes
            .iter()
            .zip(status)
            .map(|(node, st)| {
                let (mut status, mut duration) = st.unwrap_or((Status::NotNeeded, None));
                if matches!(status, Status::NotNeeded) {
                    match scope.memo_if_any(&node.unique_id) {
                        Some(Ok((_, took))) => {
                            status = Status::Computed;
                            duration = Some(took);
                        }
                        Some(Err((message, source))) => {
                            status = Status::Failed(Arc::new(Error::StepFailed {
                                unique_id: node.unique_id.clone(),
                                message,
                                source,
                            }));
                        }
                        None => {}
                    }
                }
                StepOutcome {
                    unique_id: node.unique_id.clone(),
                    name: node.name,
                    status,
                    duration,
                    target: node.target,
                    dependencies: node
                        .dependencies
                        .iter()
                        .filter_map(|&d| nodes.get(d).map(|x| x.unique_id.clone()))
                        .collect(),
                }
            })
            .collect();
        Outcome {
            steps,
            elapsed: Duration::ZERO,
            run: None,
        }
    }
}
