//! Config-file pipelines: steps built from a registry, references by name, and every kind of
//! error pointing at its place in the file.

// Not a decoder: a panic here is a failing test or tool, not a panic on stored bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use milonga::{
    BoxError, Context, Executor, Pipeline, PipelineError, PipelineErrorKind, PostcardFormat,
    Registry, Step, StepRef, Workspace,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Count {
    upto: u64,
}

impl Step for Count {
    const NAME: &'static str = "Count";
    type Output = Vec<u64>;
    type Format = PostcardFormat;
    fn run(&self, _: &mut Context<'_>) -> Result<Vec<u64>, BoxError> {
        Ok((0..self.upto).collect())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sum {
    numbers: StepRef<Count>,
    #[serde(default)]
    offset: u64,
}

impl Step for Sum {
    const NAME: &'static str = "Sum";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        Ok(ctx.input(&self.numbers)?.iter().sum::<u64>() + self.offset)
    }
}

/// A step that takes a list of sums (to build cycles and nested references).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Both {
    parts: Vec<StepRef<Sum>>,
}

impl Step for Both {
    const NAME: &'static str = "Both";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        let mut t = 0;
        for p in &self.parts {
            t += *ctx.input(p)?;
        }
        Ok(t)
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register::<Count>().register::<Sum>().register::<Both>();
    r
}

fn toml_err(text: &str) -> PipelineError {
    Pipeline::from_toml(text, "p.toml", &registry()).expect_err("the file is wrong")
}

const GOOD: &str = r#"
[steps.total]
type = "Sum"
numbers = { type = "ref", ref = "numbers" }
offset = 1

[steps.numbers]
type = "Count"
upto = 10

[steps.both]
type = "Both"
parts = [{ type = "ref", ref = "total" }, { type = "ref", ref = "total" }]
"#;

#[test]
fn a_toml_pipeline_builds_in_file_order_and_runs_with_references_resolved() {
    let p = Pipeline::from_toml(GOOD, "p.toml", &registry()).unwrap();
    let names: Vec<&str> = p.steps().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["total", "numbers", "both"]);
    // The step built from the file has the id of the same step built in code.
    let by_hand = Sum {
        numbers: Count { upto: 10 }.into(),
        offset: 1,
    };
    assert_eq!(
        p.step("total").unwrap().step.unique_id().unwrap(),
        by_hand.unique_id().unwrap()
    );
    let ws = Workspace::memory().unwrap();
    let outcome = Executor::new(&ws)
        .with_progress(false)
        .run(p.targets(&[]).unwrap())
        .unwrap();
    assert!(outcome.is_success(), "{outcome}");
    assert_eq!(*by_hand.result(&ws).unwrap(), 46);
    // Only the named targets (and what they need).
    let only = p.targets(&["numbers".to_owned()]).unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].name(), "Count");
    let e = p.targets(&["nope".to_owned()]).unwrap_err();
    assert!(matches!(e.kind, PipelineErrorKind::UnknownTarget(ref t) if t == "nope"));
}

#[test]
fn a_json_pipeline_builds_the_same_steps_as_the_toml_one() {
    let json = r#"{"steps": {
        "numbers": {"type": "Count", "upto": 10},
        "total": {"type": "Sum", "numbers": {"type": "ref", "ref": "numbers"}, "offset": 1}
    }}"#;
    let p = Pipeline::from_json(json, "p.json", &registry()).unwrap();
    let t = Pipeline::from_toml(GOOD, "p.toml", &registry()).unwrap();
    assert_eq!(
        p.step("total").unwrap().step.unique_id().unwrap(),
        t.step("total").unwrap().step.unique_id().unwrap()
    );
    let e = Pipeline::from_json(
        "{\"steps\": {\n  \"a\": {\"type\": \"Count\", \"upto\": \"many\"}\n}}",
        "p.json",
        &registry(),
    )
    .unwrap_err();
    assert!(
        matches!(e.kind, PipelineErrorKind::BadArguments { ref step, .. } if step == "a"),
        "{e}"
    );
    assert_eq!(e.position, Some((2, 8)), "{e}");
}

#[test]
fn invalid_toml_is_a_syntax_error_with_its_line_and_column() {
    let e = toml_err("[steps.a]\ntype = \"Count\"\nupto = = 3\n");
    assert!(matches!(e.kind, PipelineErrorKind::Syntax(_)), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
    assert!(e.to_string().starts_with("p.toml:3:"), "{e}");
}

#[test]
fn a_step_without_a_type_or_an_unknown_key_is_reported_where_it_is() {
    let e = toml_err("[steps.a]\nupto = 3\n");
    assert!(
        matches!(e.kind, PipelineErrorKind::Syntax(ref m) if m.contains("no `type`")),
        "{e}"
    );
    assert_eq!(e.position.map(|p| p.0), Some(1), "{e}");
    let e = toml_err("title = \"x\"\n[steps.a]\ntype = \"Count\"\nupto = 3\n");
    assert!(
        matches!(e.kind, PipelineErrorKind::Syntax(ref m) if m.contains("title")),
        "{e}"
    );
    assert_eq!(e.position, Some((1, 1)), "{e}");
}

#[test]
fn an_unknown_type_names_the_step_points_at_the_type_and_lists_the_known_ones() {
    let e = toml_err("[steps.a]\ntype = \"Count\"\nupto = 3\n\n[steps.b]\ntype = \"Cuont\"\n");
    match &e.kind {
        PipelineErrorKind::UnknownType {
            step,
            type_name,
            known,
        } => {
            assert_eq!((step.as_str(), type_name.as_str()), ("b", "Cuont"));
            assert_eq!(known, &["Both", "Count", "Sum"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.position, Some((6, 8)), "{e}");
    assert!(e.to_string().contains("known: Both, Count, Sum"), "{e}");
}

#[test]
fn bad_arguments_point_at_the_value_serde_rejected() {
    // A wrong type.
    let e = toml_err("[steps.a]\ntype = \"Count\"\nupto = \"ten\"\n");
    assert!(
        matches!(e.kind, PipelineErrorKind::BadArguments { ref step, .. } if step == "a"),
        "{e}"
    );
    assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
    // A missing argument: the step's table.
    let e = toml_err("[steps.a]\ntype = \"Count\"\n");
    assert!(
        matches!(e.kind, PipelineErrorKind::BadArguments { ref message, .. } if message.contains("upto")),
        "{e}"
    );
    // An unknown argument (the type denies unknown fields).
    let e = toml_err("[steps.a]\ntype = \"Count\"\nupto = 1\nuptoo = 2\n");
    assert!(
        matches!(e.kind, PipelineErrorKind::BadArguments { ref message, .. } if message.contains("uptoo")),
        "{e}"
    );
    // A reference to a step of the wrong type.
    let e = toml_err(
        "[steps.a]\ntype = \"Count\"\nupto = 1\n[steps.b]\ntype = \"Sum\"\nnumbers = { type = \"ref\", ref = \"a\" }\n[steps.c]\ntype = \"Sum\"\nnumbers = { type = \"ref\", ref = \"b\" }\n",
    );
    match &e.kind {
        PipelineErrorKind::BadArguments { step, message } => {
            assert_eq!(step, "c");
            assert!(message.contains("\"b\" is a Sum"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.position.map(|p| p.0), Some(9), "{e}");
}

#[test]
fn a_dangling_reference_names_both_steps_and_points_at_the_reference() {
    let e = toml_err(
        "[steps.total]\ntype = \"Sum\"\nnumbers = { type = \"ref\", ref = \"numbres\" }\n",
    );
    match &e.kind {
        PipelineErrorKind::DanglingRef { step, target } => {
            assert_eq!((step.as_str(), target.as_str()), ("total", "numbres"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.position, Some((3, 11)), "{e}");
}

#[test]
fn a_cycle_lists_its_steps_and_points_at_the_reference_that_closes_it() {
    let e = toml_err(concat!(
        "[steps.a]\ntype = \"Both\"\nparts = [{ type = \"ref\", ref = \"b\" }]\n",
        "[steps.b]\ntype = \"Both\"\nparts = [{ type = \"ref\", ref = \"c\" }]\n",
        "[steps.c]\ntype = \"Both\"\nparts = [{ type = \"ref\", ref = \"a\" }]\n",
    ));
    match &e.kind {
        PipelineErrorKind::Cycle { steps } => assert_eq!(steps, &["a", "b", "c", "a"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.position.map(|p| p.0), Some(9), "{e}");
    // A step that refers to itself.
    let e = toml_err("[steps.a]\ntype = \"Both\"\nparts = [{ type = \"ref\", ref = \"a\" }]\n");
    assert!(
        matches!(e.kind, PipelineErrorKind::Cycle { ref steps } if steps == &["a", "a"]),
        "{e}"
    );
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let e = Pipeline::from_file("/nonexistent/pipeline.toml", &registry()).unwrap_err();
    assert!(matches!(e.kind, PipelineErrorKind::Io(_)), "{e}");
    assert!(e.to_string().contains("/nonexistent/pipeline.toml"), "{e}");
}

#[test]
fn a_step_ref_outside_a_pipeline_file_cannot_be_deserialized() {
    let r: Result<StepRef<Count>, _> = serde_json::from_str(r#"{"type": "ref", "ref": "a"}"#);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("pipeline file"), "{e}");
}
