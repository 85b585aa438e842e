//! Provenance in step records, `explain` (why a step's id differs from an earlier one), and
//! early cutoff (a re-run upstream with byte-identical output does not make its consumers run
//! again).

use std::marker::PhantomData;

use milonga::{
    BoxError, Context, Difference, DynStep, Executor, PostcardFormat, Step, StepRef, Workspace,
};
use milonga_tests::{count_run, runs, Numbers, Scale, Square, SquareV2, Total};
use serde::Serialize;
use serde_json::json;

fn scale(n: u32, factor: u32) -> Scale {
    Scale {
        numbers: Numbers { n }.into(),
        factor,
    }
}

#[test]
fn every_step_record_carries_its_provenance_and_readable_arguments() {
    let ws = Workspace::memory().unwrap();
    let s = scale(4, 3);
    s.result(&ws).unwrap();
    let info = ws.step_info(&s.unique_id().unwrap()).unwrap().unwrap();
    let numbers_id = Numbers { n: 4 }.unique_id().unwrap();
    assert_eq!(
        info.arguments().unwrap(),
        Some(json!({ "numbers": { "$ref": numbers_id }, "factor": 3 }))
    );
    let p = info.provenance.expect("provenance");
    assert_eq!(p.pid, std::process::id());
    assert_eq!(p.argv, std::env::args().collect::<Vec<_>>());
    assert!(!p.host.is_empty());
    assert_eq!(p.milonga_version, env!("CARGO_PKG_VERSION"));
    assert!(p.rustc_version.starts_with("rustc "), "{}", p.rustc_version);
    assert!(
        p.platform.starts_with(std::env::consts::OS),
        "{}",
        p.platform
    );
    // The tests run inside the project's git repository (when git is installed).
    if std::process::Command::new("git")
        .arg("--version")
        .output()
        .is_ok()
    {
        let commit = p.git_commit.clone().expect("a commit inside a repository");
        assert_eq!(commit.len(), 40, "{commit}");
        assert!(p.git_dirty.is_some());
    }
    assert!(info.started_at.is_some() && info.ended_at >= info.started_at);
    // The upstream step's record has the same provenance (one record per process).
    let up = ws.step_info(&numbers_id).unwrap().unwrap();
    assert_eq!(up.provenance.as_ref().unwrap().pid, std::process::id());
    assert_eq!(up.arguments().unwrap(), Some(json!({ "n": 4 })));
}

#[test]
fn explain_names_the_changed_argument() {
    let ws = Workspace::memory().unwrap();
    scale(4, 3).result(&ws).unwrap();
    scale(4, 5).result(&ws).unwrap();
    let why = ws.explain(&scale(4, 5).unique_id().unwrap()).unwrap();
    assert_eq!(why.compared_with, Some(scale(4, 3).unique_id().unwrap()));
    assert_eq!(
        why.differences,
        [Difference::Argument {
            path: "factor".into(),
            old: Some(json!(3)),
            new: Some(json!(5)),
        }]
    );
    assert!(
        why.to_string().contains("argument factor changed: 3 -> 5"),
        "{why}"
    );
    // Before a step ever ran: why it would miss.
    let ahead = ws.explain_step(&scale(4, 4)).unwrap();
    assert!(
        matches!(&ahead.differences[..], [Difference::Argument { path, new: Some(n), .. }] if path == "factor" && *n == json!(4)),
        "{ahead}"
    );
    // JSON for scripts.
    let j = serde_json::to_value(&why).unwrap();
    assert_eq!(j["differences"][0]["kind"], "argument");
    assert_eq!(j["differences"][0]["path"], "factor");
}

#[test]
fn explain_names_the_bumped_version() {
    let ws = Workspace::memory().unwrap();
    Square { x: 7, sleep_ms: 0 }.result(&ws).unwrap();
    SquareV2 { x: 7 }.result(&ws).unwrap();
    let why = ws.explain(&SquareV2 { x: 7 }.unique_id().unwrap()).unwrap();
    assert_eq!(
        why.differences,
        [Difference::Version {
            old: None,
            new: Some("2".into())
        }]
    );
    assert!(
        why.to_string().contains("VERSION changed: (none) -> 2"),
        "{why}"
    );
    let first = ws
        .explain(&Square { x: 7, sleep_ms: 0 }.unique_id().unwrap())
        .unwrap();
    assert_eq!(first.compared_with, None, "nothing earlier: {first}");
}

#[test]
fn explain_follows_the_changed_upstream_recursively() {
    let ws = Workspace::memory().unwrap();
    let total = |n: u32| Total {
        scaled: scale(n, 2).into(),
        offset: 1,
    };
    total(5).result(&ws).unwrap();
    total(6).result(&ws).unwrap();
    let why = ws.explain(&total(6).unique_id().unwrap()).unwrap();
    let [Difference::Upstream {
        path,
        old,
        new,
        same_output: false,
        explanation: Some(scaled),
    }] = &why.differences[..]
    else {
        panic!("{why:#?}")
    };
    assert_eq!(path, "scaled");
    assert_eq!(*old, scale(5, 2).unique_id().unwrap());
    assert_eq!(*new, scale(6, 2).unique_id().unwrap());
    let [Difference::Upstream {
        path,
        explanation: Some(numbers),
        ..
    }] = &scaled.differences[..]
    else {
        panic!("{scaled:#?}")
    };
    assert_eq!(path, "numbers");
    assert_eq!(
        numbers.differences,
        [Difference::Argument {
            path: "n".into(),
            old: Some(json!(5)),
            new: Some(json!(6)),
        }]
    );
    let text = why.to_string();
    assert!(text.contains("upstream scaled changed"), "{text}");
    assert!(text.contains("argument n changed: 5 -> 6"), "{text}");
}

/// A version of the [`Base`] step, as a type (so that two versions are two step types).
trait Version: Send + Sync + 'static {
    const VERSION: &'static str;
    /// What the step's output is multiplied by.
    const TIMES: u32;
}
struct V1;
struct V2;
struct V3;
impl Version for V1 {
    const VERSION: &'static str = "1";
    const TIMES: u32 = 1;
}
/// Version 2: the code changed, the output did not.
impl Version for V2 {
    const VERSION: &'static str = "2";
    const TIMES: u32 = 1;
}
/// Version 3: the output changed.
impl Version for V3 {
    const VERSION: &'static str = "3";
    const TIMES: u32 = 2;
}

#[derive(Serialize)]
#[serde(bound = "")]
struct Base<V: Version> {
    n: u32,
    #[serde(skip)]
    v: PhantomData<V>,
}

impl<V: Version> Step for Base<V> {
    const NAME: &'static str = "cutoff::Base";
    const VERSION: Option<&'static str> = Some(V::VERSION);
    type Output = Vec<u32>;
    type Format = PostcardFormat;
    fn run(&self, _: &mut Context<'_>) -> Result<Vec<u32>, BoxError> {
        count_run("Base");
        Ok((0..self.n).map(|x| x * V::TIMES).collect())
    }
}

#[derive(Serialize)]
#[serde(bound = "")]
struct Sum<V: Version> {
    base: StepRef<Base<V>>,
}

impl<V: Version> Step for Sum<V> {
    const NAME: &'static str = "cutoff::Sum";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        count_run("Sum");
        Ok(ctx.input(&self.base)?.iter().map(|&x| u64::from(x)).sum())
    }
}

#[derive(Serialize)]
#[serde(bound = "")]
struct Double<V: Version> {
    sum: StepRef<Sum<V>>,
}

impl<V: Version> Step for Double<V> {
    const NAME: &'static str = "cutoff::Double";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        count_run("Double");
        Ok(*ctx.input(&self.sum)? * 2)
    }
}

fn double<V: Version>() -> StepRef<Double<V>> {
    StepRef::new(Double {
        sum: Sum {
            base: Base::<V> {
                n: 10,
                v: PhantomData,
            }
            .into(),
        }
        .into(),
    })
}

#[test]
fn early_cutoff_after_a_version_bump_that_does_not_change_content() {
    let ws = Workspace::memory().unwrap();
    let exec = |targets: Vec<DynStep>| {
        let outcome = Executor::new(&ws)
            .with_progress(false)
            .run(targets)
            .unwrap();
        outcome.check().unwrap();
        outcome
    };
    exec(vec![double::<V1>().erased()]);
    let counts = || (runs("Base"), runs("Sum"), runs("Double"));
    let before = counts();

    // Base's VERSION is bumped; it runs again and writes the same bytes: Sum and Double (whose
    // ids changed with it) are not computed again.
    let outcome = exec(vec![double::<V2>().erased()]);
    assert_eq!(counts(), (before.0 + 1, before.1, before.2));
    assert_eq!(outcome.with_status("computed").count(), 1, "{outcome}");
    assert_eq!(*double::<V2>().result(&ws).unwrap(), 90);
    let sum_v2 = Sum::<V2> {
        base: Base::<V2> {
            n: 10,
            v: PhantomData,
        }
        .into(),
    };
    let sum_v1 = Sum::<V1> {
        base: Base::<V1> {
            n: 10,
            v: PhantomData,
        }
        .into(),
    };
    assert_ne!(sum_v2.unique_id().unwrap(), sum_v1.unique_id().unwrap());
    let info = ws.step_info(&sum_v2.unique_id().unwrap()).unwrap().unwrap();
    assert_eq!(info.reused_from, Some(sum_v1.unique_id().unwrap()));
    let earlier = ws.step_info(&sum_v1.unique_id().unwrap()).unwrap().unwrap();
    assert_eq!(info.manifest_id, earlier.manifest_id);
    // The reused result's size comes with it (schema 3).
    assert!(earlier.result_size.is_some_and(|n| n > 0));
    assert_eq!(info.result_size, earlier.result_size);

    // Explain says so, and why: the upstream's VERSION changed, its output did not.
    let why = ws.explain(&sum_v2.unique_id().unwrap()).unwrap();
    assert_eq!(why.reused_from, Some(sum_v1.unique_id().unwrap()));
    let [Difference::Upstream {
        same_output: true,
        explanation: Some(base),
        ..
    }] = &why.differences[..]
    else {
        panic!("{why:#?}")
    };
    assert_eq!(
        base.differences,
        [Difference::Version {
            old: Some("1".into()),
            new: Some("2".into())
        }]
    );
    let text = why.to_string();
    assert!(text.contains("early cutoff"), "{text}");
    assert!(text.contains("byte-identical output"), "{text}");
    let double_why = ws.explain(&double::<V2>().unique_id().unwrap()).unwrap();
    assert!(
        double_why.reused_from.is_some(),
        "transitively: {double_why}"
    );

    // A bump that changes the output makes the consumers run.
    exec(vec![double::<V3>().erased()]);
    assert_eq!(counts(), (before.0 + 2, before.1 + 1, before.2 + 1));
    assert_eq!(*double::<V3>().result(&ws).unwrap(), 180);

    // Refreshing a consumer computes it even though a result with its content key exists.
    Executor::new(&ws)
        .with_progress(false)
        .refresh(double::<V2>().erased())
        .run([double::<V2>().erased()])
        .unwrap()
        .check()
        .unwrap();
    assert_eq!(runs("Double"), before.2 + 2);
}
