//! The executor: graphs run in parallel give the results of sequential runs, failures stay in
//! their branch, streams are pipelined, and the caching controls (uncacheable, non-deterministic,
//! refresh) hold.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use milonga::{
    BoxError, Context, Executor, Fresh, Graph, PostcardFormat, Status, Step, StepRef, StepState,
    Stream, StreamFormat, Unstored, Workspace,
};
use milonga_tests::{count_run, runs};
use serde::Serialize;

/// A node of a test graph: a value mixed from its label and its inputs' values.
#[derive(Serialize)]
struct Node {
    /// Keeps the run counts (and ids) of different tests apart.
    tag: &'static str,
    label: String,
    inputs: Vec<StepRef<Node>>,
    #[serde(skip)]
    fail: bool,
    #[serde(skip)]
    sleep_ms: u64,
}

impl Step for Node {
    const NAME: &'static str = "exec::Node";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        count_run(&format!("{}/{}", self.tag, self.label));
        std::thread::sleep(Duration::from_millis(self.sleep_ms));
        if self.fail {
            return Err(format!("{} exploded", self.label).into());
        }
        let mut acc = self.label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        for input in &self.inputs {
            acc = acc.wrapping_mul(31).wrapping_add(*ctx.input(input)?);
        }
        Ok(acc)
    }
}

fn node(tag: &'static str, label: &str, inputs: &[&StepRef<Node>]) -> StepRef<Node> {
    StepRef::new(Node {
        tag,
        label: label.into(),
        inputs: inputs.iter().map(|s| (*s).clone()).collect(),
        fail: false,
        sleep_ms: 0,
    })
}

fn failing(tag: &'static str, label: &str, inputs: &[&StepRef<Node>]) -> StepRef<Node> {
    StepRef::new(Node {
        tag,
        label: label.into(),
        inputs: inputs.iter().map(|s| (*s).clone()).collect(),
        fail: true,
        sleep_ms: 0,
    })
}

fn status_of<'a>(outcome: &'a milonga::Outcome, step: &StepRef<Node>) -> &'a Status {
    &outcome
        .get(&step.unique_id().unwrap())
        .expect("the step is in the outcome")
        .status
}

/// a → (b, c) → d, run with `jobs` workers in a fresh workspace: every node's result.
fn diamond(tag: &'static str, jobs: usize) -> Vec<u64> {
    let ws = Workspace::memory().unwrap();
    let a = node(tag, "a", &[]);
    let b = node(tag, "b", &[&a]);
    let c = node(tag, "c", &[&a]);
    let d = node(tag, "d", &[&b, &c]);
    let outcome = Executor::new(&ws)
        .with_jobs(jobs)
        .run([d.erased()])
        .unwrap();
    assert!(outcome.is_success(), "{outcome}");
    assert_eq!(outcome.steps.len(), 4, "{outcome}");
    assert_eq!(outcome.with_status("computed").count(), 4, "{outcome}");
    [&a, &b, &c, &d]
        .iter()
        .map(|s| *s.result(&ws).unwrap())
        .collect()
}

#[test]
fn diamond_in_parallel_equals_sequential() {
    let sequential = diamond("diamond1", 1);
    let parallel = diamond("diamond4", 4);
    // Different tags give different labels' ids but the same values.
    assert_eq!(sequential, parallel);
    for label in ["a", "b", "c", "d"] {
        assert_eq!(runs(&format!("diamond1/{label}")), 1);
        assert_eq!(runs(&format!("diamond4/{label}")), 1);
    }
}

fn wide(tag: &'static str, jobs: usize) -> Vec<u64> {
    let ws = Workspace::memory().unwrap();
    let roots: Vec<_> = (0..6).map(|i| node(tag, &format!("r{i}"), &[])).collect();
    let mids: Vec<_> = (0..24)
        .map(|i| node(tag, &format!("m{i}"), &[&roots[i % 6], &roots[(i + 1) % 6]]))
        .collect();
    let outcome = Executor::new(&ws)
        .with_jobs(jobs)
        .run(mids.iter().map(StepRef::erased))
        .unwrap();
    assert!(outcome.is_success(), "{outcome}");
    assert_eq!(outcome.steps.len(), 30);
    assert_eq!(outcome.steps.iter().filter(|s| s.target).count(), 24);
    mids.iter().map(|s| *s.result(&ws).unwrap()).collect()
}

#[test]
fn wide_graph_in_parallel_equals_sequential() {
    assert_eq!(wide("wide", 1), wide("wide", 8).clone());
}

#[test]
fn graph_is_found_without_running_anything() {
    let a = node("graph", "a", &[]);
    let b = node("graph", "b", &[&a]);
    let c = node("graph", "c", &[&a, &b]);
    let graph = Graph::new([c.erased(), b.erased()]).unwrap();
    let names: Vec<_> = graph.nodes().iter().map(|n| n.unique_id.clone()).collect();
    assert_eq!(
        names,
        [
            a.unique_id().unwrap(),
            b.unique_id().unwrap(),
            c.unique_id().unwrap()
        ]
    );
    assert_eq!(graph.nodes()[2].dependencies, [0, 1]);
    assert_eq!(graph.targets(), [2, 1]);
    assert_eq!(runs("graph/a") + runs("graph/b") + runs("graph/c"), 0);
}

#[test]
fn failing_branch_leaves_the_others_completed_and_its_dependents_not_run() {
    let ws = Workspace::memory().unwrap();
    let tag = "branch";
    let good1 = node(tag, "good1", &[]);
    let good2 = node(tag, "good2", &[&good1]);
    let bad1 = failing(tag, "bad1", &[&good1]);
    let bad2 = node(tag, "bad2", &[&bad1]);
    let bad3 = node(tag, "bad3", &[&bad2]);
    let join = node(tag, "join", &[&good2, &bad3]);
    let other = node(tag, "other", &[]);
    let outcome = Executor::new(&ws)
        .with_jobs(2)
        .run([join.erased(), good2.erased(), other.erased()])
        .unwrap();
    assert!(!outcome.is_success());
    for ok in [&good1, &good2, &other] {
        assert!(
            matches!(status_of(&outcome, ok), Status::Computed),
            "{outcome}"
        );
    }
    match status_of(&outcome, &bad1) {
        Status::Failed(e) => assert!(e.to_string().contains("bad1 exploded"), "{e}"),
        other => panic!("bad1: {other:?}"),
    }
    let bad1_id = bad1.unique_id().unwrap();
    for downstream in [&bad2, &bad3, &join] {
        match status_of(&outcome, downstream) {
            Status::NotRun { upstream } => assert_eq!(upstream, &bad1_id),
            other => panic!("{other:?}\n{outcome}"),
        }
        assert!(ws
            .step_info(&downstream.unique_id().unwrap())
            .unwrap()
            .is_none());
    }
    assert_eq!(runs("branch/bad2") + runs("branch/join"), 0);
    assert_eq!(
        ws.step_info(&good2.unique_id().unwrap())
            .unwrap()
            .unwrap()
            .state,
        StepState::Completed
    );
    let table = outcome.to_string();
    assert!(
        table.contains("not run") && table.contains("failed"),
        "{table}"
    );
    assert!(outcome.check().is_err());
}

#[test]
fn shared_subgraph_runs_each_step_once_under_eight_workers() {
    let ws = Workspace::memory().unwrap();
    let tag = "shared";
    let base = node(tag, "base", &[]);
    let mids: Vec<_> = (0..16)
        .map(|i| {
            StepRef::new(Node {
                tag,
                label: format!("mid{i}"),
                inputs: vec![base.clone()],
                fail: false,
                sleep_ms: 5,
            })
        })
        .collect();
    let tops: Vec<_> = (0..16)
        .map(|i| {
            node(
                tag,
                &format!("top{i}"),
                &[&base, &mids[i], &mids[(i + 3) % 16]],
            )
        })
        .collect();
    let outcome = Executor::new(&ws)
        .with_jobs(8)
        .run(tops.iter().map(StepRef::erased))
        .unwrap();
    assert!(outcome.is_success(), "{outcome}");
    assert_eq!(outcome.steps.len(), 33);
    assert_eq!(runs("shared/base"), 1);
    for i in 0..16 {
        assert_eq!(runs(&format!("shared/mid{i}")), 1);
        assert_eq!(runs(&format!("shared/top{i}")), 1);
    }
    // A second run loads everything.
    let again = Executor::new(&ws)
        .with_jobs(8)
        .run(tops.iter().map(StepRef::erased))
        .unwrap();
    assert_eq!(again.with_status("loaded").count(), 33, "{again}");
    assert_eq!(runs("shared/base"), 1);
}

#[test]
fn ensure_computes_once_without_reading() {
    let ws = Workspace::memory().unwrap();
    let a = node("ensure", "a", &[]);
    let b = node("ensure", "b", &[&a]);
    assert_eq!(b.step().ensure(&ws).unwrap(), Fresh::Computed);
    assert_eq!(b.step().ensure(&ws).unwrap(), Fresh::Loaded);
    assert_eq!(b.erased().ensure(&ws).unwrap(), Fresh::Loaded);
    assert_eq!((runs("ensure/a"), runs("ensure/b")), (1, 1));
    assert!(ws.contains(b.step()).unwrap());
}

#[test]
fn refresh_reruns_exactly_the_chosen_steps() {
    let ws = Workspace::memory().unwrap();
    let tag = "refresh";
    let a = node(tag, "a", &[]);
    let b = node(tag, "b", &[&a]);
    let c = node(tag, "c", &[&b]);
    let d = node(tag, "d", &[&a]);
    let first = Executor::new(&ws).run([c.erased(), d.erased()]).unwrap();
    assert_eq!(first.with_status("computed").count(), 4);
    let before = *c.result(&ws).unwrap();

    let outcome = Executor::new(&ws)
        .with_jobs(3)
        .refresh(&b)
        .refresh_id(d.unique_id().unwrap())
        .run([c.erased(), d.erased()])
        .unwrap();
    assert!(
        matches!(status_of(&outcome, &a), Status::Loaded),
        "{outcome}"
    );
    assert!(
        matches!(status_of(&outcome, &b), Status::Computed),
        "{outcome}"
    );
    assert!(
        matches!(status_of(&outcome, &c), Status::Loaded),
        "{outcome}"
    );
    assert!(
        matches!(status_of(&outcome, &d), Status::Computed),
        "{outcome}"
    );
    assert_eq!(
        ["a", "b", "c", "d"].map(|l| runs(&format!("{tag}/{l}"))),
        [1, 2, 1, 2]
    );
    assert_eq!(*c.result(&ws).unwrap(), before);

    // `refresh` on one step: only that step runs again.
    assert_eq!(*c.step().refresh(&ws).unwrap(), before);
    assert_eq!(
        ["a", "b", "c", "d"].map(|l| runs(&format!("{tag}/{l}"))),
        [1, 2, 2, 2]
    );
    assert_eq!(*c.result(&ws).unwrap(), before);
}

// ---- caching controls ---------------------------------------------------------------------

/// A handle that cannot be stored (no serde at all).
struct Model {
    weights: Vec<u64>,
}

static MODEL_RUNS: AtomicU64 = AtomicU64::new(0);

#[derive(Serialize)]
struct LoadModel {
    size: u64,
}

impl Step for LoadModel {
    const NAME: &'static str = "exec::LoadModel";
    const CACHEABLE: bool = false;
    type Output = Model;
    type Format = Unstored;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Model, BoxError> {
        MODEL_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(Model {
            weights: (1..=self.size).collect(),
        })
    }
}

#[derive(Serialize)]
struct Predict {
    model: StepRef<LoadModel>,
    x: u64,
}

impl Step for Predict {
    const NAME: &'static str = "exec::Predict";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        let model = ctx.input(&self.model)?;
        Ok(model.weights.iter().map(|w| w * self.x).sum())
    }
}

#[test]
fn uncacheable_steps_never_reach_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let model = StepRef::new(LoadModel { size: 4 });
    let predictions: Vec<_> = (1..=5)
        .map(|x| {
            StepRef::new(Predict {
                model: model.clone(),
                x,
            })
        })
        .collect();
    let outcome = Executor::new(&ws)
        .with_jobs(4)
        .run(predictions.iter().map(StepRef::erased))
        .unwrap();
    assert!(outcome.is_success(), "{outcome}");
    assert_eq!(
        MODEL_RUNS.load(Ordering::SeqCst),
        1,
        "once per run, in memory"
    );
    let model_id = model.unique_id().unwrap();
    assert!(matches!(
        outcome.get(&model_id).unwrap().status,
        Status::Computed
    ));
    assert!(ws.step_info(&model_id).unwrap().is_none());
    assert!(ws.steps().unwrap().iter().all(|s| s.unique_id != model_id));
    assert_eq!(ws.steps().unwrap().len(), 5);
    for (x, p) in (1..=5u64).zip(&predictions) {
        assert_eq!(*p.result(&ws).unwrap(), 10 * x);
    }

    // Every consumer cached: the model is not needed at all.
    let again = Executor::new(&ws)
        .run(predictions.iter().map(StepRef::erased))
        .unwrap();
    assert!(matches!(
        again.get(&model_id).unwrap().status,
        Status::NotNeeded
    ));
    assert_eq!(MODEL_RUNS.load(Ordering::SeqCst), 1);

    // Asked for directly: computed in memory, each run.
    assert_eq!(model.result(&ws).unwrap().weights, [1, 2, 3, 4]);
    assert_eq!(MODEL_RUNS.load(Ordering::SeqCst), 2);
    assert!(ws.step_info(&model_id).unwrap().is_none());
}

static VOCAB_RUNS: AtomicU64 = AtomicU64::new(0);

/// Uncacheable, but with a real format: its output goes through the format in memory.
#[derive(Serialize)]
struct Vocabulary {
    words: u64,
}

impl Step for Vocabulary {
    const NAME: &'static str = "exec::Vocabulary";
    const CACHEABLE: bool = false;
    type Output = Stream<u64>;
    type Format = StreamFormat<u64>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Stream<u64>, BoxError> {
        VOCAB_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(Stream::new(0..self.words))
    }
}

#[derive(Serialize)]
struct VocabularySize {
    vocabulary: StepRef<Vocabulary>,
}

impl Step for VocabularySize {
    const NAME: &'static str = "exec::VocabularySize";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        Ok(ctx.input(&self.vocabulary)?.iter().count() as u64)
    }
}

#[test]
fn uncacheable_stream_passes_through_its_format_in_memory() {
    let ws = Workspace::memory().unwrap();
    let vocabulary = StepRef::new(Vocabulary { words: 10_000 });
    let size = StepRef::new(VocabularySize {
        vocabulary: vocabulary.clone(),
    });
    let outcome = Executor::new(&ws).run([size.erased()]).unwrap();
    assert!(outcome.is_success(), "{outcome}");
    assert_eq!(*size.result(&ws).unwrap(), 10_000);
    assert_eq!(VOCAB_RUNS.load(Ordering::SeqCst), 1);
    assert!(ws
        .step_info(&vocabulary.unique_id().unwrap())
        .unwrap()
        .is_none());
    assert_eq!(ws.steps().unwrap().len(), 1);
}

static SAMPLE_RUNS: AtomicU64 = AtomicU64::new(0);

#[derive(Serialize)]
struct Sample {
    n: u64,
}

impl Step for Sample {
    const NAME: &'static str = "exec::Sample";
    const DETERMINISTIC: bool = false;
    type Output = Vec<u64>;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<Vec<u64>, BoxError> {
        SAMPLE_RUNS.fetch_add(1, Ordering::SeqCst);
        let mut rng = ctx.rng();
        assert_eq!(
            milonga::StepRng::new(ctx.seed()).next_u64(),
            rng.clone().next_u64()
        );
        Ok((0..self.n).map(|_| rng.below(1000)).collect())
    }
}

#[derive(Serialize)]
struct Mean {
    sample: StepRef<Sample>,
}

impl Step for Mean {
    const NAME: &'static str = "exec::Mean";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        let s = ctx.input(&self.sample)?;
        Ok(s.iter().sum::<u64>() / s.len().max(1) as u64)
    }
}

#[test]
fn non_deterministic_steps_never_hit_the_cache_across_runs() {
    let ws = Workspace::memory().unwrap();
    let sample = StepRef::new(Sample { n: 50 });
    let mean = StepRef::new(Mean {
        sample: sample.clone(),
    });
    let mut seen_ids = std::collections::HashSet::new();
    for run in 1..=3 {
        let outcome = Executor::new(&ws)
            .with_jobs(2)
            .run([mean.erased()])
            .unwrap();
        assert!(outcome.is_success(), "{outcome}");
        assert_eq!(outcome.with_status("computed").count(), 2, "{outcome}");
        assert_eq!(SAMPLE_RUNS.load(Ordering::SeqCst), run);
        for s in &outcome.steps {
            assert!(seen_ids.insert(s.unique_id.clone()), "a fresh id per run");
            let info = ws.step_info(&s.unique_id).unwrap().unwrap();
            assert_eq!(info.state, StepState::Completed);
            if s.name == Sample::NAME {
                assert!(info.metadata["rng_seed"].is_u64(), "{:?}", info.metadata);
            }
        }
    }
    // Plain `result()` calls are runs too.
    mean.result(&ws).unwrap();
    mean.result(&ws).unwrap();
    assert_eq!(SAMPLE_RUNS.load(Ordering::SeqCst), 5);
}

// ---- pipelining ---------------------------------------------------------------------------

/// Opened by the consumer when it has read an item; the producer waits for it halfway (so a
/// consumer that does not start before its producer finishes is detected, not timed).
struct Gate {
    open: AtomicBool,
    opened_in_time: AtomicBool,
}

impl Gate {
    const fn new() -> Self {
        Gate {
            open: AtomicBool::new(false),
            opened_in_time: AtomicBool::new(false),
        }
    }

    fn wait(&self) {
        for _ in 0..3000 {
            if self.open.load(Ordering::SeqCst) {
                self.opened_in_time.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[derive(Serialize)]
struct Produce {
    tag: &'static str,
    n: u64,
    #[serde(skip)]
    gate: Option<&'static Gate>,
    #[serde(skip)]
    fail_at: Option<u64>,
    /// Panic (instead of returning an error) at `fail_at`.
    #[serde(skip)]
    panic: bool,
}

impl Step for Produce {
    const NAME: &'static str = "exec::Produce";
    type Output = Stream<u64>;
    type Format = StreamFormat<u64>;
    fn format(&self) -> StreamFormat<u64> {
        StreamFormat::new().with_chunk_size(4096)
    }
    fn run(&self, ctx: &mut Context<'_>) -> Result<Stream<u64>, BoxError> {
        count_run(&format!("{}/produce", self.tag));
        let (n, gate, fail_at, panic) = (self.n, self.gate, self.fail_at, self.panic);
        let progress = ctx.progress().clone();
        progress.set_length(n);
        Ok(Stream::try_new((0..n).map(move |i| {
            if i == n / 2 {
                if let Some(g) = gate {
                    g.wait();
                }
            }
            progress.inc(1);
            if fail_at == Some(i) {
                if panic {
                    panic!("producer killed at item {i}");
                }
                return Err(format!("producer killed at item {i}"));
            }
            Ok(i * 7 % 1000)
        })))
    }
}

#[derive(Serialize)]
struct Transform {
    input: StepRef<Produce>,
    #[serde(skip)]
    gate: Option<&'static Gate>,
}

impl Step for Transform {
    const NAME: &'static str = "exec::Transform";
    type Output = Stream<u64>;
    type Format = StreamFormat<u64>;
    fn format(&self) -> StreamFormat<u64> {
        StreamFormat::new().with_chunk_size(4096)
    }
    fn run(&self, ctx: &mut Context<'_>) -> Result<Stream<u64>, BoxError> {
        let input = ctx.input(&self.input)?;
        let gate = self.gate;
        Ok(Stream::try_new(input.iter().filter_map(move |r| {
            if let Some(g) = gate {
                g.open.store(true, Ordering::SeqCst);
            }
            match r {
                Ok(x) if x % 3 == 0 => None,
                Ok(x) => Some(Ok(x * 2 + 1)),
                Err(e) => Some(Err(e)),
            }
        })))
    }
}

#[derive(Serialize)]
struct Evaluate {
    input: StepRef<Transform>,
}

impl Step for Evaluate {
    const NAME: &'static str = "exec::Evaluate";
    type Output = (u64, u64);
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<(u64, u64), BoxError> {
        let input = ctx.input(&self.input)?;
        let (mut count, mut sum) = (0, 0);
        for x in input.iter() {
            count += 1;
            sum += x?;
        }
        Ok((count, sum))
    }
}

fn chain(
    tag: &'static str,
    n: u64,
    gate: Option<&'static Gate>,
    fail_at: Option<u64>,
) -> (StepRef<Produce>, StepRef<Transform>, StepRef<Evaluate>) {
    chain_with(tag, n, gate, fail_at, false)
}

fn chain_with(
    tag: &'static str,
    n: u64,
    gate: Option<&'static Gate>,
    fail_at: Option<u64>,
    panic: bool,
) -> (StepRef<Produce>, StepRef<Transform>, StepRef<Evaluate>) {
    let p = StepRef::new(Produce {
        tag,
        n,
        gate,
        fail_at,
        panic,
    });
    let t = StepRef::new(Transform {
        input: p.clone(),
        gate,
    });
    let e = StepRef::new(Evaluate { input: t.clone() });
    (p, t, e)
}

#[test]
fn pipelined_chain_equals_unpipelined() {
    static GATE: Gate = Gate::new();
    let n = 60_000;
    let piped_ws = Workspace::memory().unwrap();
    let (p, t, e) = chain("piped", n, Some(&GATE), None);
    let outcome = Executor::new(&piped_ws)
        .with_jobs(3)
        .run([e.erased()])
        .unwrap();
    assert!(outcome.is_success(), "{outcome}");
    assert!(
        GATE.opened_in_time.load(Ordering::SeqCst),
        "the consumer read items while the producer was still writing"
    );

    let plain_ws = Workspace::memory().unwrap();
    let (p2, t2, e2) = chain("piped", n, None, None);
    let outcome = Executor::new(&plain_ws)
        .with_jobs(3)
        .with_pipeline(false)
        .run([e2.erased()])
        .unwrap();
    assert!(outcome.is_success(), "{outcome}");

    assert_eq!(
        *e.result(&piped_ws).unwrap(),
        *e2.result(&plain_ws).unwrap()
    );
    let items = |r: &milonga::StreamReader<u64>| r.iter().collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(
        items(&t.result(&piped_ws).unwrap()),
        items(&t2.result(&plain_ws).unwrap())
    );
    assert_eq!(
        items(&p.result(&piped_ws).unwrap()),
        items(&p2.result(&plain_ws).unwrap())
    );
    assert_eq!(p.result(&piped_ws).unwrap().len().unwrap(), n);
    let (count, _) = *e.result(&piped_ws).unwrap();
    assert!(count > 0 && count < n);
}

/// Runs the chain with a producer that dies halfway, while its consumer follows it: the consumer
/// must fail with the producer's error, never complete on a short stream.
fn producer_dies_mid_stream(tag: &'static str, gate: &'static Gate, panic: bool) {
    let n = 60_000;
    let ws = Workspace::memory().unwrap();
    let (p, t, e) = chain_with(tag, n, Some(gate), Some(n / 2 + 10), panic);
    let outcome = Executor::new(&ws).with_jobs(3).run([e.erased()]).unwrap();
    assert!(
        gate.opened_in_time.load(Ordering::SeqCst),
        "the consumer was following"
    );
    let status = |s: &str| &outcome.get(s).unwrap().status;
    assert!(
        matches!(status(&p.unique_id().unwrap()), Status::Failed(_)),
        "{outcome}"
    );
    match status(&t.unique_id().unwrap()) {
        Status::Failed(err) => assert!(err.to_string().contains("killed"), "{err}"),
        other => panic!("the consumer must fail, not see a short stream: {other:?}\n{outcome}"),
    }
    assert!(!status(&e.unique_id().unwrap()).is_ok(), "{outcome}");
    for id in [t.unique_id().unwrap(), e.unique_id().unwrap()] {
        let state = ws.step_info(&id).unwrap().map(|i| i.state);
        assert_ne!(state, Some(StepState::Completed), "{id}");
    }
}

#[test]
fn producer_killed_mid_stream_fails_its_consumer() {
    static GATE: Gate = Gate::new();
    producer_dies_mid_stream("killed", &GATE, false);
}

#[test]
fn producer_panicking_mid_stream_fails_its_consumer() {
    static GATE: Gate = Gate::new();
    producer_dies_mid_stream("panicked", &GATE, true);
}

// ---- parallelism ----------------------------------------------------------------------------

/// Two steps that each wait (up to a long timeout) for the other to have started: they finish
/// having met only if they ran at the same time.
#[derive(Serialize)]
struct Meet {
    side: u8,
    #[serde(skip)]
    met: &'static [AtomicBool; 2],
}

impl Step for Meet {
    const NAME: &'static str = "exec::Meet";
    type Output = bool;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<bool, BoxError> {
        let (me, other) = (usize::from(self.side), usize::from(1 - self.side));
        self.met[me].store(true, Ordering::SeqCst);
        for _ in 0..2000 {
            if self.met[other].load(Ordering::SeqCst) {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(false)
    }
}

#[test]
fn independent_steps_run_at_the_same_time() {
    static MET: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
    let ws = Workspace::memory().unwrap();
    let steps = [0u8, 1].map(|side| StepRef::new(Meet { side, met: &MET }));
    let outcome = Executor::new(&ws)
        .with_jobs(2)
        .run(steps.iter().map(StepRef::erased))
        .unwrap();
    assert!(outcome.is_success(), "{outcome}");
    for s in &steps {
        assert!(*s.result(&ws).unwrap(), "both steps ran concurrently");
    }
}

#[test]
fn two_processes_running_one_graph_run_each_step_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let ws = dir.path().join("ws");
    Workspace::open(&ws).unwrap();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_milonga-test-step"))
            .arg(&ws)
            .arg("exec")
            .arg("4")
            .env("MILONGA_TEST_LOG", &log)
            .output()
            .unwrap()
    };
    let outputs = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        [a.join().unwrap(), b.join().unwrap()]
    });
    let mut computed = 0;
    for out in &outputs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(words.len(), 4, "{text}");
        let (c, l): (usize, usize) = (words[0].parse().unwrap(), words[2].parse().unwrap());
        assert_eq!(c + l, 17, "{text}");
        computed += c;
    }
    assert_eq!(
        computed, 17,
        "every step computed by exactly one of the processes"
    );
    let mut lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    let mut expected: Vec<String> = (1..=8).map(|i| format!("Square({i})")).collect();
    expected.push("Numbers".into());
    expected.extend(std::iter::repeat_n("Scale".to_owned(), 4));
    expected.extend(std::iter::repeat_n("Total".to_owned(), 4));
    expected.sort();
    assert_eq!(lines, expected);
}

// ---- following a producer that another process is writing --------------------------------

/// Sums a `Count` stream, noting how many items it has read and whether the first one arrived
/// while the producer's record still said RUNNING (it was being followed, not waited for).
#[derive(Serialize)]
struct SumFollowed {
    input: StepRef<milonga_tests::streams::Count>,
    #[serde(skip)]
    seen: &'static AtomicU64,
    #[serde(skip)]
    first_while_running: &'static AtomicBool,
    #[serde(skip)]
    ws: Workspace,
}

impl Step for SumFollowed {
    const NAME: &'static str = "exec::SumFollowed";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        let reader = ctx.input(&self.input)?;
        let input_id = self.input.unique_id()?;
        let mut sum = 0;
        for item in reader.iter() {
            // The state is read before the first item is counted: the test kills the producer
            // as soon as it sees a count, which would otherwise race with this read.
            if self.seen.load(Ordering::SeqCst) == 0 {
                let state = self.ws.step_info(&input_id)?.map(|i| i.state);
                self.first_while_running
                    .store(state == Some(StepState::Running), Ordering::SeqCst);
            }
            self.seen.fetch_add(1, Ordering::SeqCst);
            sum += item?;
        }
        Ok(sum)
    }
}

/// Starts `milonga-test-stream` writing `Count { n }` slowly into `ws`, and waits until its
/// record says RUNNING.
fn spawn_slow_producer(ws: &std::path::Path, n: u64, delay_us: u64) -> std::process::Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_milonga-test-stream"))
        .arg(ws)
        .arg(n.to_string())
        .arg(delay_us.to_string())
        .arg("0")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = StepRef::new(milonga_tests::streams::Count {
        n,
        delay_us: 0,
        resumable: false,
    })
    .unique_id()
    .unwrap();
    let reader = Workspace::open(ws).unwrap();
    let mut child = child;
    for _ in 0..6000 {
        if reader.step_info(&id).unwrap().map(|i| i.state) == Some(StepState::Running) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the producer process never started");
}

#[test]
fn a_consumer_follows_a_producer_running_in_another_process() {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    static WHILE_RUNNING: AtomicBool = AtomicBool::new(false);
    let dir = tempfile::tempdir().unwrap();
    let n = 200_000;
    let mut producer = spawn_slow_producer(dir.path(), n, 10_000);
    let ws = Workspace::open(dir.path()).unwrap();
    let count = StepRef::new(milonga_tests::streams::Count {
        n,
        delay_us: 0,
        resumable: false,
    });
    let sum = StepRef::new(SumFollowed {
        input: count.clone(),
        seen: &SEEN,
        first_while_running: &WHILE_RUNNING,
        ws: ws.clone(),
    });
    let outcome = Executor::new(&ws).with_jobs(2).run([sum.erased()]).unwrap();
    assert!(outcome.is_success(), "{outcome}");
    assert!(producer.wait().unwrap().success());
    assert!(
        WHILE_RUNNING.load(Ordering::SeqCst),
        "the consumer read its first item while the other process was still writing"
    );
    assert!(
        matches!(
            outcome.get(&count.unique_id().unwrap()).unwrap().status,
            Status::Loaded
        ),
        "the producer was computed by the other process, not here: {outcome}"
    );
    assert_eq!(*sum.result(&ws).unwrap(), n * (n - 1) / 2);
}

#[test]
fn a_producer_process_killed_mid_stream_fails_its_consumer() {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    static WHILE_RUNNING: AtomicBool = AtomicBool::new(false);
    let dir = tempfile::tempdir().unwrap();
    let n = 200_000;
    let mut producer = spawn_slow_producer(dir.path(), n, 50_000);
    let ws = Workspace::open(dir.path()).unwrap();
    let count = StepRef::new(milonga_tests::streams::Count {
        n,
        delay_us: 0,
        resumable: false,
    });
    let sum = StepRef::new(SumFollowed {
        input: count.clone(),
        seen: &SEEN,
        first_while_running: &WHILE_RUNNING,
        ws: ws.clone(),
    });
    let outcome = std::thread::scope(|s| {
        let run = s.spawn(|| Executor::new(&ws).with_jobs(2).run([sum.erased()]).unwrap());
        while SEEN.load(Ordering::SeqCst) == 0 && !run.is_finished() {
            std::thread::sleep(Duration::from_millis(2));
        }
        producer.kill().unwrap();
        let at_kill = SEEN.load(Ordering::SeqCst);
        producer.wait().unwrap();
        (run.join().unwrap(), at_kill)
    });
    let (outcome, at_kill) = outcome;
    assert!(
        WHILE_RUNNING.load(Ordering::SeqCst),
        "the consumer was following the other process"
    );
    assert!(
        at_kill > 0 && at_kill < n,
        "killed mid-stream: {at_kill} items read"
    );
    let sum_id = sum.unique_id().unwrap();
    match &outcome.get(&sum_id).unwrap().status {
        Status::Failed(e) => {
            let text = e.to_string();
            assert!(
                text.contains("died") || text.contains("stopped before completing"),
                "{text}"
            );
        }
        other => {
            panic!("the consumer must fail, not finish on a short stream: {other:?}\n{outcome}")
        }
    }
    assert_ne!(
        ws.step_info(&sum_id).unwrap().map(|i| i.state),
        Some(StepState::Completed)
    );
    // The producer itself was taken over by this process and completed; a new run completes the
    // consumer from it.
    assert!(
        outcome
            .get(&count.unique_id().unwrap())
            .unwrap()
            .status
            .is_ok(),
        "{outcome}"
    );
    let again = Executor::new(&ws).with_jobs(2).run([sum.erased()]).unwrap();
    assert!(again.is_success(), "{again}");
    assert_eq!(*sum.result(&ws).unwrap(), n * (n - 1) / 2);
}

// ---- pipelined consumers take chunks from the writer's memory ------------------------------

/// Streams `i % 1000` for `i` in `0..n`, in default-sized (1 MiB) chunks.
#[derive(Serialize)]
struct Numbers {
    tag: &'static str,
    n: u64,
}

impl Step for Numbers {
    const NAME: &'static str = "exec::Numbers";
    type Output = Stream<u64>;
    type Format = StreamFormat<u64>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Stream<u64>, BoxError> {
        Ok(Stream::new((0..self.n).map(|i| i % 1000)))
    }
}

/// Sums a stream, recording how many of its chunks came from the writer's memory; optionally
/// stops after its first item until the producer has completed (so that it falls behind).
#[derive(Serialize)]
struct SumLive {
    input: StepRef<Numbers>,
    #[serde(skip)]
    from_memory: &'static AtomicU64,
    #[serde(skip)]
    lag_behind: Option<Workspace>,
}

impl Step for SumLive {
    const NAME: &'static str = "exec::SumLive";
    type Output = (u64, u64);
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<(u64, u64), BoxError> {
        let reader = ctx.input(&self.input)?;
        let mut items = reader.iter();
        let (mut count, mut sum) = (0u64, 0u64);
        for x in items.by_ref() {
            sum += x?;
            count += 1;
            if count == 1 {
                if let Some(ws) = &self.lag_behind {
                    let id = self.input.unique_id()?;
                    for _ in 0..12_000 {
                        let state = ws.step_info(&id)?.map(|i| i.state);
                        if state == Some(StepState::Completed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        self.from_memory
            .store(items.chunks_from_memory(), Ordering::SeqCst);
        Ok((count, sum))
    }
}

fn numbers_sum(n: u64) -> u64 {
    (0..n).map(|i| i % 1000).sum()
}

#[test]
fn a_pipelined_consumer_takes_chunks_from_the_writers_memory() {
    static PIPED: AtomicU64 = AtomicU64::new(0);
    static PLAIN: AtomicU64 = AtomicU64::new(u64::MAX);
    let n = 1_500_000;
    let run = |pipelined: bool, from_memory: &'static AtomicU64| {
        let ws = Workspace::memory().unwrap();
        let sum = StepRef::new(SumLive {
            input: Numbers { tag: "memory", n }.into(),
            from_memory,
            lag_behind: None,
        });
        let outcome = Executor::new(&ws)
            .with_jobs(2)
            .with_pipeline(pipelined)
            .run([sum.erased()])
            .unwrap();
        assert!(outcome.is_success(), "{outcome}");
        *sum.result(&ws).unwrap()
    };
    assert_eq!(run(true, &PIPED), (n, numbers_sum(n)));
    assert_eq!(run(false, &PLAIN), (n, numbers_sum(n)));
    assert!(
        PIPED.load(Ordering::SeqCst) > 0,
        "a consumer running beside its producer reads from memory"
    );
    assert_eq!(
        PLAIN.load(Ordering::SeqCst),
        0,
        "a consumer of a stored stream reads its files"
    );
}

#[test]
fn a_consumer_behind_its_writer_reads_the_rest_from_the_files() {
    static FROM_MEMORY: AtomicU64 = AtomicU64::new(0);
    // About 9 MB of items: twice as many chunks (1 MiB each) as the writer keeps for followers.
    let n = 3_000_000;
    let ws = Workspace::memory().unwrap();
    let numbers = StepRef::new(Numbers { tag: "behind", n });
    let sum = StepRef::new(SumLive {
        input: numbers.clone(),
        from_memory: &FROM_MEMORY,
        lag_behind: Some(ws.clone()),
    });
    let outcome = Executor::new(&ws).with_jobs(2).run([sum.erased()]).unwrap();
    assert!(outcome.is_success(), "{outcome}");
    assert_eq!(*sum.result(&ws).unwrap(), (n, numbers_sum(n)));
    let stored = numbers.result(&ws).unwrap();
    assert_eq!(stored.len().unwrap(), n);
    let chunks = stored.chunks().known_chunks().len() as u64;
    let from_memory = FROM_MEMORY.load(Ordering::SeqCst);
    assert!(
        from_memory >= 1 && from_memory < chunks,
        "{from_memory} of {chunks} chunks from memory: the first while the writer ran, the \
         rest (dropped from its window) from the files"
    );
}
