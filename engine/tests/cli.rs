//! The `milonga` command-line tool against a real workspace.

use std::process::Command;

use milonga::{BoxError, Context, PostcardFormat, Step, Workspace};
use serde::Serialize;

#[derive(Serialize)]
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
