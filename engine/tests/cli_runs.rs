//! The run, explain and retention commands of the `milonga` tool: `runs`, `run-rm`, `explain`,
//! `gc` policies, each with `--json`.

// Not a decoder: a panic here is a failing test or tool, not a panic on stored bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;

use milonga::{BoxError, Context, DynStep, Executor, PostcardFormat, Step, StepRef, Workspace};
use serde::Serialize;

#[derive(Serialize)]
struct Base {
    n: u64,
}

impl Step for Base {
    const NAME: &'static str = "Base";
    type Output = Vec<u64>;
    type Format = PostcardFormat;
    fn run(&self, _: &mut Context<'_>) -> Result<Vec<u64>, BoxError> {
        Ok((0..self.n).collect())
    }
}

#[derive(Serialize)]
struct Sum {
    base: StepRef<Base>,
    offset: u64,
}

impl Step for Sum {
    const NAME: &'static str = "Sum";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        Ok(ctx.input(&self.base)?.iter().sum::<u64>() + self.offset)
    }
}

fn milonga(ws: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_milonga"))
        .arg("-w")
        .arg(ws)
        .args(args)
        .output()
        .expect("run the cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(what: &str, out: &str) -> serde_json::Value {
    serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("{what}: not one JSON document ({e}):\n{out}"))
}

/// A workspace with two runs: `first` (Sum offset 1) and `second` (Sum offset 2), which share
/// their `Base`.
fn two_runs() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let sum = |offset| Sum {
        base: Base { n: 4 }.into(),
        offset,
    };
    for (name, offset) in [("first", 1), ("second", 2)] {
        Executor::new(&ws)
            .with_progress(false)
            .with_run_name(name)
            .run_named([("total", DynStep::new(sum(offset)))])
            .unwrap()
            .check()
            .unwrap();
    }
    let ids = (sum(1).unique_id().unwrap(), sum(2).unique_id().unwrap());
    (dir, ids.0, ids.1)
}

#[test]
fn runs_run_rm_explain_and_gc_print_json_that_parses() {
    let (dir, first_sum, second_sum) = two_runs();
    let ws = dir.path();

    let (code, out, err) = milonga(ws, &["runs", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json("runs", &out);
    assert_eq!(v["count"], 2);
    assert_eq!(v["runs"][0]["name"], "first");
    assert_eq!(v["runs"][1]["name"], "second");
    assert_eq!(v["runs"][1]["completed"], 2);

    let (code, out, err) = milonga(ws, &["runs", "second", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json("runs second", &out);
    assert_eq!(v["steps"][0]["name"], "total");
    assert_eq!(v["steps"][0]["unique_id"], second_sum.as_str());
    assert_eq!(v["steps"][0]["state"], "COMPLETED");
    assert_eq!(v["steps"][0]["target"], true);
    assert_eq!(v["steps"][1]["name"], "Base");
    assert!(v["provenance"]["argv"].is_array());
    let (code, out, _) = milonga(ws, &["runs", "second"]);
    assert_eq!(code, 0);
    assert!(out.contains("total") && out.contains("COMPLETED"), "{out}");

    let (code, out, err) = milonga(ws, &["explain", &second_sum, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json("explain", &out);
    assert_eq!(v["compared_with"], first_sum.as_str());
    assert_eq!(v["differences"][0]["kind"], "argument");
    assert_eq!(v["differences"][0]["path"], "offset");
    assert_eq!(v["differences"][0]["old"], 1);
    assert_eq!(v["differences"][0]["new"], 2);
    let (code, out, _) = milonga(ws, &["explain", &second_sum]);
    assert_eq!(code, 0);
    assert!(out.contains("argument offset changed: 1 -> 2"), "{out}");

    let (code, out, err) = milonga(ws, &["info", &second_sum, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json("info", &out);
    assert_eq!(v["arguments"]["offset"], 2);
    assert!(v["arguments"]["base"]["$ref"].is_string());
    assert!(v["provenance"]["rustc_version"].is_string());

    let (code, out, err) = milonga(ws, &["gc", "--keep-last", "1", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json("gc --dry-run", &out);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["removed_runs"], serde_json::json!(["first"]));
    assert_eq!(v["removed_steps"], serde_json::json!([first_sum]));
    let (_, out, _) = milonga(ws, &["runs", "--json"]);
    assert_eq!(json("runs", &out)["count"], 2, "a dry run changes nothing");

    let (code, out, err) = milonga(
        ws,
        &["gc", "--keep-last", "1", "--grace-secs", "0", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let v = json("gc", &out);
    assert_eq!(v["removed_runs"], serde_json::json!(["first"]));
    assert_eq!(v["removed_objects"], 2, "{v}");

    let (code, out, err) = milonga(ws, &["run-rm", "second", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json("run-rm", &out);
    assert_eq!(v["removed"][0]["run"], "second");
    assert_eq!(
        v["removed"][0]["removed_steps"].as_array().unwrap().len(),
        2
    );

    let (code, out, _) = milonga(ws, &["run-rm", "second", "--json"]);
    assert_eq!(code, 2);
    assert!(json("run-rm error", &out)["error"]
        .as_str()
        .unwrap()
        .contains("second"));
    let (code, _, err) = milonga(ws, &["gc", "--max-age", "3y"]);
    assert_eq!(code, 2);
    assert!(err.contains("unit"), "{err}");
    let (code, out, err) = milonga(ws, &["gc", "--max-size", "1G", "--max-age", "30d"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed 0 objects"), "{out}");
}

#[test]
fn run_explain_and_gc_help_show_examples() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["runs", "run-rm", "explain", "gc"] {
        let (code, out, err) = milonga(dir.path(), &[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd}: {err}");
        assert!(out.contains("Examples:"), "{cmd}: {out}");
    }
}

/// A copy of `tests/fixtures/<name>` (a workspace written by an earlier release).
fn fixture_copy(name: &str) -> tempfile::TempDir {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    copy(&fixture, dir.path());
    dir
}

/// `(unique_id, size)` of every step `steps --json` lists.
fn listed_sizes(ws: &std::path::Path) -> Vec<(String, Option<u64>)> {
    let (code, out, err) = milonga(ws, &["steps", "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc = json("steps --json", &out);
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["unique_id"].as_str().unwrap().to_owned(),
                s["size"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn steps_lists_sizes_from_the_records_and_fills_in_those_of_an_upgraded_workspace() {
    let dir = fixture_copy("workspace-schema-v2");
    // The first listing upgrades the schema-2 workspace, reads the old records' manifests and
    // records their sizes.
    let first = listed_sizes(dir.path());
    assert_eq!(first.len(), 3);
    assert!(
        first.iter().all(|(_, n)| n.is_some_and(|n| n > 0)),
        "{first:?}"
    );
    let ws = Workspace::open(dir.path()).unwrap();
    for (id, size) in &first {
        assert_eq!(
            ws.step_info(id).unwrap().unwrap().result_size,
            *size,
            "{id}"
        );
    }
    drop(ws);
    // From then on the sizes come from the records: with every object gone, they are listed
    // all the same.
    std::fs::remove_dir_all(dir.path().join("objects")).unwrap();
    assert_eq!(listed_sizes(dir.path()), first);

    // A step completed by this release lists its size without its manifest from the start.
    let (fresh, ..) = two_runs();
    let sizes = listed_sizes(fresh.path());
    std::fs::remove_dir_all(fresh.path().join("objects")).unwrap();
    assert!(sizes.iter().all(|(_, n)| n.is_some()), "{sizes:?}");
    assert_eq!(listed_sizes(fresh.path()), sizes);
}
