//! Read-only workspaces: a cache shared on a read-only mount or in a directory others may not
//! write serves every cached result; computing a missing step fails with an error that says
//! the workspace is read-only.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// How to run a process that may read but not write the workspace at `ws`: as `nobody` when
/// this test runs as root (root ignores permissions), else as ourselves after removing write
/// permission. `None` (with a message) where neither can be arranged.
fn read_only_runner(ws: &Path) -> Option<Vec<String>> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        let probe = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
            .status();
        if !probe.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: running as root and `setpriv` cannot switch to nobody");
            return None;
        }
        // Readable (not writable) by others, all the way down.
        let mut dir = Some(ws);
        while let Some(d) = dir {
            let mode = std::fs::metadata(d).unwrap().permissions().mode();
            if mode & 0o005 != 0o005 {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o755)).unwrap();
            }
            dir = d.parent().filter(|p| p.starts_with(std::env::temp_dir()));
        }
        Some(vec![
            "setpriv".into(),
            "--reuid=65534".into(),
            "--regid=65534".into(),
            "--clear-groups".into(),
        ])
    } else {
        let status = Command::new("chmod").args(["-R", "a-w"]).arg(ws).status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: cannot remove write permission from the workspace");
            return None;
        }
        Some(Vec::new())
    }
}

fn helper(runner: &[String], ws: &Path, action: &str) -> (bool, String, String) {
    let bin = env!("CARGO_BIN_EXE_milonga-test-open");
    let mut cmd = match runner.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let out = cmd
        .arg(ws)
        .arg(action)
        .output()
        .expect("run milonga-test-open");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[test]
fn a_user_without_write_permission_reads_every_cached_result() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    // Cache everything as the owner, then read as someone who may not write.
    let (ok, cached, err) = helper(&[], &ws, "read");
    assert!(ok, "{err}");
    let Some(runner) = read_only_runner(&ws) else {
        return;
    };
    let (ok, out, err) = helper(&runner, &ws, "read");
    assert!(ok, "a read-only reader failed: {err}");
    assert_eq!(out, cached);

    // A missing step cannot be computed, and the error says why.
    let (ok, out, err) = helper(&runner, &ws, "compute");
    assert!(ok, "{err}");
    assert!(out.starts_with("error "), "{out}");
    assert!(out.contains("read-only"), "{out}");

    // Nothing was written by the readers: the owner still computes the missing step.
    let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&ws).status();
    let (ok, out, err) = helper(&[], &ws, "compute");
    assert!(ok, "{err}");
    assert_eq!(out, "ok 49");
}

/// Every file under `dir` with its length and modification time, except the `-wal` and `-shm`
/// files SQLite keeps beside the database (a reader creates them where the directory allows).
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with("-wal") || name.ends_with("-shm") {
                continue;
            }
            out.push((entry.path(), meta.len(), meta.modified().unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_workspace_opened_read_only_serves_results_and_writes_nothing() {
    use milonga::{Error, Step, Workspace};
    use milonga_tests::{Numbers, Scale, Square};

    let dir = tempfile::tempdir().unwrap();
    let chain = Scale {
        numbers: Numbers { n: 10 }.into(),
        factor: 3,
    };
    let expected = chain.result(&Workspace::open(dir.path()).unwrap()).unwrap();
    let before = snapshot(dir.path());

    let ws = Workspace::open_read_only(dir.path()).unwrap();
    assert!(ws.is_read_only());
    assert_eq!(chain.result(&ws).unwrap(), expected);
    assert_eq!(ws.steps().unwrap().len(), 2);
    assert!(ws.verify().unwrap().problems.is_empty());
    let missing = Square { x: 3, sleep_ms: 0 };
    let e = missing.result(&ws).unwrap_err();
    assert!(matches!(e, Error::ReadOnly { .. }), "{e:?}");
    assert!(e.to_string().contains("read-only"), "{e}");
    let e = ws.remove_step(&chain.unique_id().unwrap()).unwrap_err();
    assert!(matches!(e, Error::ReadOnly { .. }), "{e:?}");
    let e = ws.gc(std::time::Duration::ZERO).unwrap_err();
    assert!(matches!(e, Error::ReadOnly { .. }), "{e:?}");
    drop(ws);
    assert_eq!(snapshot(dir.path()), before, "a read-only workspace wrote");

    // A directory that is not a workspace is not made one by a read-only open.
    let empty = tempfile::tempdir().unwrap();
    let e = Workspace::open_read_only(empty.path()).unwrap_err();
    assert!(matches!(e, Error::NotAWorkspace { .. }), "{e:?}");
    assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none());
}

/// A read-only bind mount of a directory, unmounted on drop.
struct ReadOnlyMount {
    dir: tempfile::TempDir,
}

impl ReadOnlyMount {
    fn of(source: &Path) -> Option<ReadOnlyMount> {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let target = dir.path().to_str().unwrap().to_owned();
        if !run(&["--bind", source.to_str().unwrap(), &target]) {
            eprintln!("SKIPPED: cannot bind-mount here (needs root)");
            return None;
        }
        let mount = ReadOnlyMount { dir };
        if !run(&["-o", "remount,ro,bind", &target]) {
            eprintln!("SKIPPED: cannot remount the bind mount read-only");
            return None;
        }
        Some(mount)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[test]
fn a_workspace_on_a_read_only_mount_opens_read_only_by_itself() {
    use milonga::{Error, Step, Workspace};
    use milonga_tests::{Numbers, Scale, Square};

    let dir = tempfile::tempdir().unwrap();
    let chain = Scale {
        numbers: Numbers { n: 10 }.into(),
        factor: 3,
    };
    let expected = chain.result(&Workspace::open(dir.path()).unwrap()).unwrap();
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("SKIPPED: a read-only bind mount needs root");
        return;
    }
    let Some(mount) = ReadOnlyMount::of(dir.path()) else {
        return;
    };
    // Root may write anywhere, except on a read-only filesystem.
    let ws = Workspace::open(mount.dir.path()).unwrap();
    assert!(ws.is_read_only());
    assert_eq!(chain.result(&ws).unwrap(), expected);
    assert_eq!(ws.steps().unwrap().len(), 2);
    assert!(ws.verify().unwrap().problems.is_empty());
    let e = Square { x: 5, sleep_ms: 0 }.result(&ws).unwrap_err();
    assert!(matches!(e, Error::ReadOnly { .. }), "{e:?}");
    drop(ws);
    drop(mount);
}

#[test]
fn a_read_only_workspace_written_before_outboards_serves_range_reads_and_verifies() {
    use milonga::{BoxError, Context, Step, Stream, StreamFormat, Workspace};

    /// Default-sized chunks (more than one 16 KiB group each).
    #[derive(serde::Serialize)]
    struct Words {
        n: u64,
    }
    impl Step for Words {
        const NAME: &'static str = "read_only::Words";
        type Output = Stream<String>;
        type Format = StreamFormat<String>;
        fn run(&self, _ctx: &mut Context<'_>) -> Result<Stream<String>, BoxError> {
            Ok(Stream::new((0..self.n).map(word)))
        }
    }
    fn word(i: u64) -> String {
        format!("word {i} {}", "xyz ".repeat((i % 9) as usize))
    }

    let dir = tempfile::tempdir().unwrap();
    let step = Words { n: 100_000 };
    {
        let ws = Workspace::open(dir.path()).unwrap();
        assert_eq!(step.result(&ws).unwrap().len().unwrap(), 100_000);
    }
    // As a workspace of a release before outboards existed.
    let outboards = || outboard_files(&dir.path().join(milonga::store::OBJECTS_DIR));
    let found = outboards();
    assert!(!found.is_empty());
    for f in found {
        std::fs::remove_file(f).unwrap();
    }
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("SKIPPED: a read-only bind mount needs root");
        return;
    }
    let Some(mount) = ReadOnlyMount::of(dir.path()) else {
        return;
    };
    let ws = Workspace::open(mount.dir.path()).unwrap();
    assert!(ws.is_read_only());
    let stream = step.result(&ws).unwrap();
    for i in [99_999u64, 0, 51_234] {
        assert_eq!(stream.get(i).unwrap(), word(i));
    }
    assert!(ws.verify().unwrap().problems.is_empty());
    assert!(outboards().is_empty(), "nothing written");
    drop(stream);
    drop(ws);
    drop(mount);
}

/// Every outboard file below `dir`.
fn outboard_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .to_string_lossy()
                .ends_with(milonga::store::OUTBOARD_SUFFIX)
            {
                out.push(p);
            }
        }
    }
    out
}
