//! The `milonga` command-line tool against a real workspace.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;

use milonga::{
    BoxError, Context, JsonCodec, JsonFormat, PostcardFormat, Registry, Step, StepRef, Stream,
    StreamFormat, Workspace,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Hello {
    name: String,
}

impl Step for Hello {
    const NAME: &'static str = "Hello";
    type Output = String;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<String, BoxError> {
        Ok(format!("hello, {}", self.name))
    }
}

fn cli(ws: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_milonga"))
        .arg(ws)
        .args(args)
        .output()
        .expect("run the cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn steps_info_verify_rm_gc() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = Hello {
        name: "world".into(),
    };
    step.result(&ws).unwrap();
    let id = step.unique_id().unwrap();

    let (code, out) = cli(dir.path(), &["steps"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&id) && out.contains("COMPLETED"), "{out}");

    let (code, out) = cli(dir.path(), &["info", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("milonga.postcard v") && out.contains("data"),
        "{out}"
    );

    let (code, out) = cli(dir.path(), &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no problems"), "{out}");

    // Corrupt the data object: verify must fail and name the step.
    let file = ws.artifact(&id).unwrap().files()[0].clone();
    let path = milonga::store::LocalStore::open(dir.path())
        .unwrap()
        .object_path(&file.id);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (code, out) = cli(dir.path(), &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("PROBLEM") && out.contains(&id), "{out}");

    let (code, out) = cli(dir.path(), &["rm", &id]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(dir.path(), &["gc", "--grace-secs", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 2 objects"), "{out}");
    let (_, out) = cli(dir.path(), &["steps"]);
    assert!(out.contains("0 steps"), "{out}");

    let (code, out) = cli(dir.path(), &["info", "Nope-123"]);
    assert_eq!(code, 2, "{out}");
}

/// How to run a command as a user without write permission on files this test creates: as
/// `nobody` (via `setpriv`) when the test runs as root; `None` (with a message) when it cannot.
fn as_nobody() -> Option<Vec<&'static str>> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("SKIPPED: needs root to run the tool as another user");
        return None;
    }
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: `setpriv` cannot switch to nobody here");
        return None;
    }
    Some(vec![
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ])
}

fn cli_as(runner: &[&str], ws: &std::path::Path, args: &[&str]) -> (i32, String) {
    let (first, rest) = runner.split_first().expect("a runner");
    let out = Command::new(first)
        .args(rest)
        .arg(env!("CARGO_BIN_EXE_milonga"))
        .arg(ws)
        .args(args)
        .output()
        .expect("run the cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_directory_that_is_not_a_workspace_is_named_without_a_step_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = cli(dir.path(), &["steps"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not a milonga workspace"), "{out}");
    assert!(!out.contains("step :"), "{out}");
}

#[test]
fn a_workspace_the_user_may_not_read_says_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    Workspace::open(&ws_dir).unwrap();
    let Some(runner) = as_nobody() else {
        return;
    };
    // Owned by root, mode 0700: nobody may not look inside.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ws_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, out) = cli_as(&runner, &ws_dir, &["steps"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(!out.contains("not a milonga workspace"), "{out}");
}

#[test]
fn a_read_only_workspace_serves_steps_info_and_verify() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = Hello {
        name: "readers".into(),
    };
    step.result(&ws).unwrap();
    let id = step.unique_id().unwrap();
    drop(ws);

    // Explicitly read-only: reads work, writes are refused with a clear error.
    let (code, out) = cli(dir.path(), &["--read-only", "steps"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&id), "{out}");
    let (code, out) = cli(dir.path(), &["--read-only", "cat", &id, "data"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello, readers"), "{out}");
    let (code, out) = cli(dir.path(), &["--read-only", "rm", &id]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("read-only"), "{out}");

    // A user without write permission.
    let Some(runner) = as_nobody() else {
        return;
    };
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for args in [&["steps"][..], &["info", &id], &["verify"]] {
        let (code, out) = cli_as(&runner, dir.path(), args);
        assert_eq!(code, 0, "{args:?}: {out}");
    }
    let (_, out) = cli_as(&runner, dir.path(), &["info", &id]);
    assert!(out.contains("COMPLETED"), "{out}");
    let (code, out) = cli_as(&runner, dir.path(), &["cat", &id, "data"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello, readers"), "{out}");
}

#[test]
fn info_reports_a_steps_own_duration_without_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let (outer, inner) = (
        Hello {
            name: "outer".into(),
        },
        Hello {
            name: "inner".into(),
        },
    );
    outer.result(&ws).unwrap();
    inner.result(&ws).unwrap();
    let (outer_id, inner_id) = (outer.unique_id().unwrap(), inner.unique_id().unwrap());
    drop(ws);
    // Make `inner` an input that ran for 3 s inside the 4 s of `outer`.
    let conn = rusqlite::Connection::open(dir.path().join(milonga::DATABASE_FILE)).unwrap();
    conn.execute(
        "UPDATE steps SET started_at = 1000, ended_at = 5000 WHERE unique_id = ?1",
        [&outer_id],
    )
    .unwrap();
    conn.execute(
        "UPDATE steps SET started_at = 1500, ended_at = 4500 WHERE unique_id = ?1",
        [&inner_id],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO step_deps (unique_id, dep_id) VALUES (?1, ?2)",
        [&outer_id, &inner_id],
    )
    .unwrap();
    drop(conn);
    let (code, out) = cli(dir.path(), &["info", &outer_id]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("duration:     1.000 s (4.000 s with its inputs)"),
        "{out}"
    );
}

#[test]
fn verify_repair_quarantines_and_the_next_result_recomputes() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = Hello {
        name: "repair".into(),
    };
    step.result(&ws).unwrap();
    let id = step.unique_id().unwrap();
    let file = ws.artifact(&id).unwrap().files()[0].clone();
    let path = milonga::store::LocalStore::open(dir.path())
        .unwrap()
        .object_path(&file.id);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    drop(ws);

    let (code, out) = cli(dir.path(), &["verify", "--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("quarantined") && out.contains(&format!("reset {id}")),
        "{out}"
    );
    assert!(!path.exists(), "the damaged object was moved aside");
    let quarantined = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .count();
    assert_eq!(quarantined, 1);

    // The next result() computes the step again and stores a fresh copy.
    let ws = Workspace::open(dir.path()).unwrap();
    assert_eq!(*step.result(&ws).unwrap(), "hello, repair");
    assert!(path.exists());
    let (code, out) = cli(dir.path(), &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no problems"), "{out}");
}

/// A JSON value.
#[derive(Serialize, Deserialize)]
struct Doc {
    n: u64,
}

impl Step for Doc {
    const NAME: &'static str = "Doc";
    type Output = serde_json::Value;
    type Format = JsonFormat;
    fn run(&self, _: &mut Context<'_>) -> Result<serde_json::Value, BoxError> {
        Ok(serde_json::json!({ "n": self.n, "tag": "doc" }))
    }
}

/// Raw bytes.
#[derive(Serialize, Deserialize)]
struct Blob;

impl Step for Blob {
    const NAME: &'static str = "Blob";
    type Output = Vec<u8>;
    type Format = milonga::BytesFormat;
    fn run(&self, _: &mut Context<'_>) -> Result<Vec<u8>, BoxError> {
        Ok(b"raw\x01bytes".to_vec())
    }
}

/// The same output whatever its argument: stored once (deduplicated).
#[derive(Serialize, Deserialize)]
struct Twin {
    tag: u32,
}

impl Step for Twin {
    const NAME: &'static str = "Twin";
    type Output = String;
    type Format = milonga::TextFormat;
    fn run(&self, _: &mut Context<'_>) -> Result<String, BoxError> {
        Ok("the same text in every twin".into())
    }
}

/// A stream of JSON items.
#[derive(Serialize, Deserialize)]
struct Lines {
    n: u64,
}

impl Step for Lines {
    const NAME: &'static str = "Lines";
    type Output = Stream<u64>;
    type Format = StreamFormat<u64, JsonCodec>;
    fn run(&self, _: &mut Context<'_>) -> Result<Stream<u64>, BoxError> {
        Ok(Stream::new((0..self.n).map(|i| i * 10)))
    }
}

/// A postcard stream derived from another step.
#[derive(Serialize, Deserialize)]
struct Doubled {
    lines: StepRef<Lines>,
}

impl Step for Doubled {
    const NAME: &'static str = "Doubled";
    type Output = Stream<u64>;
    type Format = StreamFormat<u64>;
    fn run(&self, ctx: &mut Context<'_>) -> Result<Stream<u64>, BoxError> {
        let lines = ctx.input(&self.lines)?;
        Ok(Stream::try_new(lines.iter().map(|x| x.map(|x| x * 2))))
    }
}

/// A step that fails with the message it is given.
#[derive(Serialize, Deserialize)]
struct Fails {
    message: String,
}

impl Step for Fails {
    const NAME: &'static str = "Fails";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, _: &mut Context<'_>) -> Result<u64, BoxError> {
        Err(self.message.clone().into())
    }
}

const TOOL_ENV: &str = "MILONGA_CLI_TEST_TOOL_ARGS";
const TOOL_MARKER: &str = "--- tool output ---";

/// Not a test on its own: a tool with registered step types, which `tool()` runs by starting
/// this test binary again with its arguments in an environment variable.
#[test]
fn tool_entry_point() {
    let Ok(args) = std::env::var(TOOL_ENV) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let mut registry = Registry::new();
    registry
        .register_printable::<Hello>()
        .register_printable::<Lines>()
        .register_printable::<Doubled>()
        .register::<Fails>();
    println!("{TOOL_MARKER}");
    let code = milonga::cli::main_from(std::iter::once("mytool".to_owned()).chain(args), &registry);
    use std::process::ExitCode;
    std::process::exit(if code == ExitCode::SUCCESS {
        0
    } else if code == ExitCode::from(1) {
        1
    } else {
        2
    });
}

/// Runs the test tool (registered types: Hello, Lines, Doubled, Fails): exit code, standard
/// output, standard error.
fn tool(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tool_entry_point",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(TOOL_ENV, serde_json::to_string(args).unwrap())
        .output()
        .expect("run the tool");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (_, after) = stdout
        .split_once(&format!("{TOOL_MARKER}\n"))
        .unwrap_or_else(|| panic!("the tool did not start: {stdout}"));
    (
        out.status.code().unwrap_or(-1),
        after.to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `milonga` with `args` and the workspace given by `-w`: exit code, standard output,
/// standard error.
fn milonga_w(ws: &std::path::Path, args: &[&str]) -> (i32, String, String) {
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

fn parse_json(what: &str, out: &str) -> serde_json::Value {
    serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("{what}: not one JSON document ({e}):\n{out}"))
}

const PIPELINE: &str = r#"
[steps.lines]
type = "Lines"
n = 5

[steps.doubled]
type = "Doubled"
lines = { type = "ref", ref = "lines" }

[steps.hello]
type = "Hello"
name = "pipeline"
"#;

#[test]
fn every_command_prints_json_that_parses() {
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    let ws_arg = ws_dir.to_str().unwrap();
    let p = pipeline.to_str().unwrap();

    // run (through a tool that registers the types), and run --dry-run.
    let (code, out, err) = tool(&["run", p, "-w", ws_arg, "-j", "2", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v = parse_json("run", &out);
    assert_eq!(v["success"], true, "{out}");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{out}");
    assert!(steps.iter().all(|s| s["status"] == "computed"), "{out}");
    let (code, out, err) = tool(&["run", p, "-w", ws_arg, "--dry-run", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v = parse_json("run --dry-run", &out);
    let names: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lines", "doubled", "hello"]);

    let ws = Workspace::open(&ws_dir).unwrap();
    Doc { n: 7 }.result(&ws).unwrap();
    Blob.result(&ws).unwrap();
    Twin { tag: 1 }.result(&ws).unwrap();
    Twin { tag: 2 }.result(&ws).unwrap();
    drop(ws);

    let (code, out, err) = milonga_w(&ws_dir, &["steps", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = parse_json("steps", &out);
    assert_eq!(v["count"], 7);
    let rows = v["steps"].as_array().unwrap();
    let lines = rows.iter().find(|r| r["name"] == "Lines").unwrap();
    assert_eq!(lines["format"], "milonga.stream+json");
    assert!(lines["size"].as_u64().unwrap() > 0, "{out}");
    assert!(lines["age_secs"].as_i64().unwrap() >= 0, "{out}");
    let (_, out, _) = milonga_w(&ws_dir, &["steps", "--json", "--state", "failed"]);
    assert_eq!(parse_json("steps --state", &out)["count"], 0);
    let (_, out, _) = milonga_w(&ws_dir, &["steps", "--json", "--name", "Doubled"]);
    assert_eq!(parse_json("steps --name", &out)["count"], 1);

    let (code, out, err) = milonga_w(&ws_dir, &["info", "Doubled", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = parse_json("info", &out);
    let lines_id = lines["unique_id"].as_str().unwrap();
    assert_eq!(v["upstream"][0], lines_id, "{out}");
    let (_, out, _) = milonga_w(&ws_dir, &["info", lines_id, "--json"]);
    let v = parse_json("info", &out);
    assert_eq!(v["downstream"].as_array().unwrap().len(), 1, "{out}");
    assert!(!v["files"].as_array().unwrap().is_empty(), "{out}");

    // cat: a JSON value, JSON lines of a JSON stream (range and limit), a postcard stream only
    // through the tool.
    let (code, out, err) = milonga_w(&ws_dir, &["cat", "Doc", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(parse_json("cat Doc", &out)["n"], 7);
    let (code, out, err) = milonga_w(&ws_dir, &["cat", "Lines", "--range", "1..4", "--json"]);
    assert_eq!(code, 0, "{err}");
    let items: Vec<u64> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items, [10, 20, 30]);
    let (_, out, _) = milonga_w(&ws_dir, &["cat", "Lines", "--range", "2..", "--limit", "2"]);
    assert_eq!(out, "20\n30\n");
    let (code, out, err) = milonga_w(&ws_dir, &["cat", "Doubled", "--json"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        parse_json("cat error", &out)["error"]
            .as_str()
            .unwrap()
            .contains("register_printable"),
        "{out}{err}"
    );
    let (code, out, err) = tool(&["-w", ws_arg, "cat", "Doubled", "--limit", "3", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "0\n20\n40\n");
    let (code, out, err) = milonga_w(&ws_dir, &["cat", "Blob"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "raw\u{1}bytes");
    let (_, out, _) = milonga_w(&ws_dir, &["cat", "Blob", "--json"]);
    assert_eq!(parse_json("cat Blob", &out)["hex"], "726177016279746573");
    let (code, out, err) = tool(&["-w", ws_arg, "cat", "Hello", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(parse_json("cat Hello", &out), "hello, pipeline");

    let (code, out, err) = milonga_w(&ws_dir, &["du", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = parse_json("du", &out);
    assert_eq!(v["steps_with_results"], 7, "{out}");
    assert_eq!(v["by_format"].as_array().unwrap().len(), 6, "{out}");
    // The two twins store one file between them: deduplication saves exactly one copy.
    let twin_bytes = v["by_format"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["format"] == "milonga.text")
        .unwrap()["bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(
        v["saved_by_deduplication"].as_u64().unwrap(),
        twin_bytes / 2,
        "{out}"
    );
    assert_eq!(
        v["logical_bytes"].as_u64().unwrap() - v["stored_bytes"].as_u64().unwrap(),
        twin_bytes / 2
    );

    let (code, out, err) = milonga_w(&ws_dir, &["verify", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(parse_json("verify", &out)["ok"], true);

    let (code, out, err) = milonga_w(&ws_dir, &["rm", "Doc", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        parse_json("rm", &out)["removed"].as_array().unwrap().len(),
        1
    );

    let (code, out, err) = milonga_w(&ws_dir, &["gc", "--grace-secs", "0", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        parse_json("gc", &out)["removed_objects"].as_u64().unwrap() >= 2,
        "{out}"
    );

    // Errors are JSON too.
    let (code, out, _) = milonga_w(&ws_dir, &["info", "Nope", "--json"]);
    assert_eq!(code, 2);
    assert!(parse_json("error", &out)["error"].is_string());
}

#[test]
fn a_dangling_reference_or_an_unknown_type_fails_run_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        "[steps.d]\ntype = \"Doubled\"\nlines = { type = \"ref\", ref = \"nope\" }\n",
    )
    .unwrap();
    let ws = dir.path().join("ws");
    let (p, w) = (pipeline.to_str().unwrap(), ws.to_str().unwrap());
    let (code, out, err) = tool(&["run", p, "-w", w]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("p.toml:3:9") && err.contains("\"nope\""),
        "{err}"
    );
    // milonga itself registers no types.
    let out = Command::new(env!("CARGO_BIN_EXE_milonga"))
        .args(["run", p, "-w", w])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("registers no step types"), "{err}");
}

#[test]
fn a_failing_pipeline_step_exits_1_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        "[steps.bad]\ntype = \"Fails\"\nmessage = \"no luck\"\n",
    )
    .unwrap();
    let ws = dir.path().join("ws");
    let (code, out, err) = tool(&[
        "run",
        pipeline.to_str().unwrap(),
        "-w",
        ws.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let v = parse_json("run", &out);
    assert_eq!(v["success"], false);
    assert_eq!(v["steps"][0]["status"], "failed");
    assert!(
        v["steps"][0]["error"].as_str().unwrap().contains("no luck"),
        "{out}"
    );
}

#[test]
fn names_and_errors_from_the_workspace_are_printed_without_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let bad = Fails {
        message: "\u{1b}[2J\u{1b}]0;pwned\u{7}boom\r".into(),
    };
    assert!(bad.result(&ws).is_err());
    let id = bad.unique_id().unwrap();
    let hello = Hello { name: "x".into() };
    hello.result(&ws).unwrap();
    let hello_id = hello.unique_id().unwrap();
    drop(ws);
    // A record whose type name carries an escape sequence (written by something else).
    let conn = rusqlite::Connection::open(dir.path().join(milonga::DATABASE_FILE)).unwrap();
    conn.execute(
        "UPDATE steps SET step_type = ?1 WHERE unique_id = ?2",
        ["Evil\u{1b}[31mRed", &hello_id],
    )
    .unwrap();
    drop(conn);
    for args in [
        &["info", id.as_str()][..],
        &["info", hello_id.as_str()],
        &["steps"],
        &["du"],
        &["info", "Evil"],
    ] {
        let (code, out, err) = milonga_w(dir.path(), args);
        assert!(code == 0 || code == 2, "{args:?}: {out}{err}");
        for text in [&out, &err] {
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{args:?} printed a control character: {text:?}"
            );
        }
    }
    let (_, out, _) = milonga_w(dir.path(), &["info", &id]);
    assert!(out.contains("\\u{1b}[2J") && out.contains("boom"), "{out}");
    let (_, out, _) = milonga_w(dir.path(), &["info", &hello_id]);
    assert!(out.contains("Evil\\u{1b}[31mRed"), "{out}");
    // JSON keeps the text exact (escaped by JSON itself).
    let (_, out, _) = milonga_w(dir.path(), &["info", &id, "--json"]);
    assert!(!out.contains('\u{1b}'), "{out:?}");
    let v = parse_json("info", &out);
    assert!(v["error"].as_str().unwrap().contains("\u{1b}[2J"), "{out}");
}

#[test]
fn a_step_is_found_by_id_unique_prefix_or_unambiguous_name() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let (a, b) = (Hello { name: "a".into() }, Hello { name: "b".into() });
    a.result(&ws).unwrap();
    b.result(&ws).unwrap();
    Doc { n: 1 }.result(&ws).unwrap();
    let a_id = a.unique_id().unwrap();
    let b_id = b.unique_id().unwrap();
    // The shortest prefix that tells a from b.
    let common = a_id
        .chars()
        .zip(b_id.chars())
        .take_while(|(x, y)| x == y)
        .count();
    let prefix = &a_id[..common + 1];
    for arg in [a_id.as_str(), prefix] {
        let (code, out, err) = milonga_w(dir.path(), &["info", arg, "--json"]);
        assert_eq!(code, 0, "{arg}: {err}");
        assert_eq!(parse_json("info", &out)["unique_id"], a_id.as_str());
    }
    let (code, out, _) = milonga_w(dir.path(), &["info", "Doc", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(parse_json("info", &out)["name"], "Doc");
    // Two Hello records: ambiguous, and both are named.
    let (code, _, err) = milonga_w(dir.path(), &["info", "Hello"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("2 steps") && err.contains(&a_id) && err.contains(&b_id),
        "{err}"
    );
    let (code, _, err) = milonga_w(dir.path(), &["rm", "Hello"]);
    assert_eq!(code, 2, "{err}");
    let (_, out, _) = milonga_w(dir.path(), &["steps", "--json"]);
    assert_eq!(
        parse_json("steps", &out)["count"],
        3,
        "an ambiguous rm removed nothing"
    );
}

#[test]
fn the_workspace_is_taken_from_w_the_environment_or_the_first_argument() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    Hello { name: "w".into() }.result(&ws).unwrap();
    drop(ws);
    let bin = env!("CARGO_BIN_EXE_milonga");
    let runs = [
        Command::new(bin)
            .arg("-w")
            .arg(dir.path())
            .args(["steps", "--json"])
            .output(),
        Command::new(bin)
            .args(["steps", "--json", "--workspace"])
            .arg(dir.path())
            .output(),
        Command::new(bin)
            .args(["steps", "--json"])
            .env("MILONGA_WORKSPACE", dir.path())
            .output(),
        Command::new(bin)
            .arg(dir.path())
            .args(["steps", "--json"])
            .output(),
    ];
    for out in runs {
        let out = out.unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let v = parse_json("steps", &String::from_utf8_lossy(&out.stdout));
        assert_eq!(v["count"], 1);
    }
    let out = Command::new(bin)
        .arg("steps")
        .env_remove("MILONGA_WORKSPACE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-w PATH"));
}

#[test]
fn help_shows_an_example_for_the_tool_and_every_command() {
    let bin = env!("CARGO_BIN_EXE_milonga");
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Examples:\n  milonga -w"), "{text}");
    for command in ["steps", "info", "cat", "du", "verify", "rm", "gc", "run"] {
        let out = Command::new(bin)
            .args([command, "--help"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:\n  "), "{command}: {text}");
        assert!(text.contains(&format!(" {command}")), "{command}: {text}");
    }
    // A tool's help names the tool.
    let (code, out, _) = tool(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Usage: mytool") && out.contains("mytool -w ./ws"),
        "{out}"
    );
}
