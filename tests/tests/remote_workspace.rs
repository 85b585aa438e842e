//! A remote workspace on a real S3-compatible server (SeaweedFS, started by the project's own
//! script), shared by several processes: single flight, resume and follow across processes,
//! leases taken over and fenced, verify, gc and the command line on `s3://`.
//!
//! Needs the server: `eval "$(scripts/s3-server.sh start)"` sets `MILONGA_TEST_S3`
//! (`s3://BUCKET`) and the `AWS_*` variables. Without it every test fails, saying so.
//! Each test uses a fresh prefix. Child processes are this test binary itself, run with
//! `--exact child_process` and `MILONGA_REMOTE_CHILD` naming what to do.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use milonga::{Executor, GcPolicy, Step, StepRef, StepState, Workspace};
use milonga_tests::streams::{last_start, Count};
use milonga_tests::{Numbers, Scale, Total};

/// The lease duration of every process in these tests: short, so that a taken-over lease is
/// seen within seconds (the heartbeat renews it three times as often).
const LEASE_SECONDS: &str = "1.5";

/// The cache directory (`MILONGA_CACHE_DIR`) every test of this process shares.
fn shared_cache_dir() -> PathBuf {
    std::env::temp_dir().join(format!("milonga-remote-tests-{}", std::process::id()))
}

/// The server's base URL, and the settings every process of these tests shares.
fn base() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let url = std::env::var("MILONGA_TEST_S3").unwrap_or_default();
        assert!(
            url.starts_with("s3://"),
            "MILONGA_TEST_S3 is not set (or not s3://BUCKET): these tests need the local S3 \
             server. Start it with `eval \"$(scripts/s3-server.sh start)\"` (it prints the \
             MILONGA_TEST_S3 and AWS_* variables to export), then run the tests again"
        );
        remove_dead_processes_cache_dirs();
        // Set once, before any workspace is opened, and the same for every test.
        std::env::set_var("MILONGA_LEASE_SECONDS", LEASE_SECONDS);
        std::env::set_var("MILONGA_CACHE_DIR", shared_cache_dir());
        url.trim_end_matches('/').to_owned()
    })
}

/// How many tests of this process use the shared cache directory now.
static CACHE_USERS: Mutex<usize> = Mutex::new(0);

/// A test's use of the shared cache directory: the last test to end, passed or failed (this is
/// dropped while a panic unwinds), removes the directory. Declared before the test's
/// workspaces, it is dropped after them.
struct CacheUse;

impl CacheUse {
    fn new() -> CacheUse {
        *CACHE_USERS.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        CacheUse
    }
}

impl Drop for CacheUse {
    fn drop(&mut self) {
        let mut users = CACHE_USERS.lock().unwrap_or_else(PoisonError::into_inner);
        *users -= 1;
        if *users == 0 {
            // A file written meanwhile by a thread a test left behind can make one attempt fail.
            let dir = shared_cache_dir();
            for _ in 0..20 {
                if std::fs::remove_dir_all(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Removes the cache directories of test processes that no longer run (left by a process
/// killed before its last test ended).
fn remove_dead_processes_cache_dirs() {
    // Whether a process runs is read from /proc: elsewhere, nothing is removed.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("milonga-remote-tests-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A fresh workspace URL for one test, and the test's use of the shared cache directory.
fn fresh(test: &str) -> (String, CacheUse) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!("{}/{test}-{}-{nanos}", base(), std::process::id());
    (url, CacheUse::new())
}

/// Spawns this test binary as a child doing `role` on workspace `url`, with a cache directory
/// of its own (another machine, as far as local state goes).
fn spawn_child(
    role: &str,
    url: &str,
    args: &[&str],
    log: Option<&Path>,
) -> (Child, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("MILONGA_REMOTE_CHILD", role)
    .env("MILONGA_REMOTE_URL", url)
    .env("MILONGA_REMOTE_ARGS", args.join(" "))
    .env("MILONGA_CACHE_DIR", cache.path())
    .env("MILONGA_LEASE_SECONDS", LEASE_SECONDS)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(log) = log {
        cmd.env("MILONGA_TEST_LOG", log);
    }
    (cmd.spawn().expect("spawn a child process"), cache)
}

/// The JSON a child printed between its markers.
fn child_output(child: Child) -> (bool, String, String) {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let body = stdout
        .split_once("<<<OUT\n")
        .and_then(|(_, rest)| rest.split_once("\nOUT>>>"))
        .map(|(body, _)| body.to_owned())
        .unwrap_or_default();
    (out.status.success(), body, format!("{stdout}\n{stderr}"))
}

/// What a child process does (not a test by itself: it returns at once unless run as a child).
#[test]
fn child_process() {
    let Ok(role) = std::env::var("MILONGA_REMOTE_CHILD") else {
        return;
    };
    let url = std::env::var("MILONGA_REMOTE_URL").unwrap();
    let args: Vec<String> = std::env::var("MILONGA_REMOTE_ARGS")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(Into::into)
        .collect();
    let out = match role.as_str() {
        "chain" => {
            let ws = Workspace::from_url(&url).unwrap();
            let total = chain();
            Executor::new(&ws)
                .with_jobs(2)
                .run([total.clone()])
                .unwrap();
            (*total.result(&ws).unwrap()).to_string()
        }
        "stream" => {
            let ws = Workspace::from_url(&url).unwrap();
            let step = Count {
                n: args[0].parse().unwrap(),
                delay_us: args[1].parse().unwrap(),
                resumable: args[2] == "1",
            };
            match step.result(&ws) {
                Ok(r) => r.len().unwrap().to_string(),
                Err(e) => {
                    println!("<<<OUT\nerror: {e}\nOUT>>>");
                    std::process::exit(3);
                }
            }
        }
        "cli" => {
            let code = milonga::cli::main_from(
                std::iter::once("milonga".to_owned())
                    .chain(["-w".to_owned(), url.clone()])
                    .chain(args.iter().cloned()),
                &milonga::Registry::new(),
            );
            // The command printed its output itself (between the markers).
            let _ = code;
            String::new()
        }
        other => panic!("unknown child role {other}"),
    };
    println!("<<<OUT\n{out}\nOUT>>>");
}

/// The chain both racing processes run: Numbers → Scale → Total.
fn chain() -> StepRef<Total> {
    let numbers = StepRef::new(Numbers { n: 1000 });
    let scaled = StepRef::new(Scale { numbers, factor: 3 });
    StepRef::new(Total { scaled, offset: 11 })
}

#[test]
fn two_processes_racing_on_one_chain_run_each_step_once() {
    let (url, _cache_use) = fresh("race");
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("runs.log");
    let (a, _cache_a) = spawn_child("chain", &url, &[], Some(&log));
    let (b, _cache_b) = spawn_child("chain", &url, &[], Some(&log));
    let (ok_a, out_a, all_a) = child_output(a);
    let (ok_b, out_b, all_b) = child_output(b);
    assert!(ok_a, "first worker failed:\n{all_a}");
    assert!(ok_b, "second worker failed:\n{all_b}");
    let expected = (0..1000u64).map(|n| n * 3).sum::<u64>() + 11;
    assert_eq!(out_a, expected.to_string());
    assert_eq!(out_b, expected.to_string());
    let runs = std::fs::read_to_string(&log).unwrap();
    for step in ["Numbers", "Scale", "Total"] {
        assert_eq!(
            runs.lines().filter(|l| *l == step).count(),
            1,
            "{step} ran once across both processes; log:\n{runs}"
        );
    }
    let ws = Workspace::from_url(&url).unwrap();
    let steps = ws.steps().unwrap();
    assert_eq!(steps.len(), 3);
    assert!(steps.iter().all(|s| s.state == StepState::Completed));
}

/// Waits until the step being written in another process has at least `files` durable files,
/// read through the remote metadata.
fn wait_for_files(ws: &Workspace, unique_id: &str, files: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let followed = ws
            .follow_artifact_timeout(unique_id, Some(Duration::from_secs(60)))
            .unwrap();
        if followed.files().len() >= files {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the writer never committed {files} files"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_writer_leaves_a_stream_another_process_resumes() {
    let (url, _cache_use) = fresh("resume");
    let n = 300_000u64;
    let step = Count {
        n,
        delay_us: 20_000,
        resumable: true,
    };
    let id = step.unique_id().unwrap();
    let (mut child, _cache) = spawn_child("stream", &url, &[&n.to_string(), "20000", "1"], None);
    let ws = Workspace::from_url(&url).unwrap();
    wait_for_files(&ws, &id, 8);
    child.kill().unwrap();
    child.wait().unwrap();
    let durable = ws.follow_artifact_timeout(&id, None).unwrap().files().len();
    assert!(durable >= 8, "{durable} durable files");
    // Once the dead writer's lease has expired, this process (another cache directory: another
    // machine) takes the step and resumes after the durable items.
    let fast = Count {
        n,
        delay_us: 0,
        resumable: true,
    };
    let reader = fast.result(&ws).unwrap();
    let start = last_start(n).expect("the step ran here");
    assert!(
        start > 0 && start < n,
        "resumed after the durable items, from {start}"
    );
    assert_eq!(reader.len().unwrap(), n);
    let all: Vec<u64> = reader.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    // Byte-identical to an uninterrupted write.
    let once = Workspace::memory().unwrap();
    fast.result(&once).unwrap();
    assert_eq!(
        ws.step_info(&id).unwrap().unwrap().manifest_id,
        once.step_info(&id).unwrap().unwrap().manifest_id
    );
}

#[test]
fn a_follower_in_another_process_reads_a_stream_while_it_is_written() {
    let (url, _cache_use) = fresh("follow");
    let n = 60_000u64;
    let step = Count {
        n,
        delay_us: 2_000,
        resumable: false,
    };
    let (child, _cache) = spawn_child("stream", &url, &[&n.to_string(), "2000", "0"], None);
    let ws = Workspace::from_url(&url).unwrap();
    let reader = ws
        .follow_timeout(&step, Some(Duration::from_secs(120)))
        .unwrap();
    let all: Vec<u64> = reader.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    let (ok, out, all_out) = child_output(child);
    assert!(ok, "{all_out}");
    assert_eq!(out, n.to_string());
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

#[test]
fn a_paused_lease_holder_is_taken_over_and_its_late_commit_is_refused() {
    let (url, _cache_use) = fresh("fence");
    let n = 200_000u64;
    let (child, _cache) = spawn_child("stream", &url, &[&n.to_string(), "20000", "0"], None);
    let ws = Workspace::from_url(&url).unwrap();
    let step = Count {
        n,
        delay_us: 0,
        resumable: false,
    };
    let id = step.unique_id().unwrap();
    wait_for_files(&ws, &id, 3);
    // The holder stops (its heartbeat too) for longer than its lease.
    signal(&child, "STOP");
    std::thread::sleep(Duration::from_secs(4));
    let info = ws.step_info(&id).unwrap().unwrap();
    assert_eq!(
        info.state,
        StepState::Incomplete,
        "a RUNNING record whose lease expired is reported INCOMPLETE"
    );
    // This process takes the step over and completes it.
    let reader = step.result(&ws).unwrap();
    assert_eq!(reader.len().unwrap(), n);
    let manifest = ws.step_info(&id).unwrap().unwrap().manifest_id;
    // The old holder wakes up: its next write is refused by its fencing token.
    signal(&child, "CONT");
    let (ok, out, all) = child_output(child);
    assert!(!ok, "the stale holder must fail:\n{all}");
    assert!(
        out.contains("lease lost") && out.contains("fencing token"),
        "the stale holder is refused with its fencing token: {out}\n{all}"
    );
    let after = ws.step_info(&id).unwrap().unwrap();
    assert_eq!(after.state, StepState::Completed);
    assert_eq!(after.manifest_id, manifest, "the result stands");
    let again: Vec<u64> = step
        .result(&ws)
        .unwrap()
        .iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(again.len() as u64, n);
}

#[test]
fn verify_and_gc_on_a_remote_workspace() {
    let (url, _cache_use) = fresh("gc");
    let ws = Workspace::from_url(&url).unwrap();
    let total = chain();
    let expected = (0..1000u64).map(|n| n * 3).sum::<u64>() + 11;
    assert_eq!(*total.result(&ws).unwrap(), expected);
    let report = ws.verify().unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(report.objects_checked >= 6, "{report:?}");

    // Forget the last step: its objects are garbage, the others' are not.
    let id = total.unique_id().unwrap();
    assert!(ws.remove_step(&id).unwrap());
    let young = ws.gc(Duration::from_secs(3600)).unwrap();
    assert_eq!(
        young.removed_objects, 0,
        "young objects are kept: {young:?}"
    );
    assert!(young.young_objects > 0, "{young:?}");
    let gc = ws
        .gc_with(&GcPolicy::new().with_grace(Duration::ZERO))
        .unwrap();
    assert!(gc.removed_objects >= 1, "{gc:?}");
    assert!(gc.live_objects >= 4, "{gc:?}");
    let report = ws.verify().unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    // The kept steps still read (from a fresh process's point of view: another cache).
    let (child, _cache) = spawn_child("chain", &url, &[], None);
    let (ok, out, all) = child_output(child);
    assert!(ok, "{all}");
    assert_eq!(out, expected.to_string());
}

#[test]
fn cli_commands_work_on_an_s3_workspace() {
    let (url, _cache_use) = fresh("cli");
    let ws = Workspace::from_url(&url).unwrap();
    let total = chain();
    Executor::new(&ws)
        .with_run_name("nightly")
        .run([total.clone()])
        .unwrap();
    let cli = |args: &[&str]| -> serde_json::Value {
        let (child, _cache) = spawn_child("cli", &url, args, None);
        let (ok, _, all) = child_output(child);
        assert!(ok, "milonga {args:?} failed:\n{all}");
        // The command's own output comes before the marker the child prints at its end,
        // maybe after the test harness's own text on the same line.
        let text = all.split("<<<OUT").next().unwrap_or_default();
        let start = text
            .find(['{', '['])
            .unwrap_or_else(|| panic!("milonga {args:?} printed no JSON:\n{all}"));
        serde_json::Deserializer::from_str(&text[start..])
            .into_iter::<serde_json::Value>()
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("milonga {args:?} printed no JSON:\n{all}"))
    };
    let steps = cli(&["steps", "--json"]);
    assert_eq!(steps["steps"].as_array().map(Vec::len), Some(3), "{steps}");
    let id = total.unique_id().unwrap();
    let info = cli(&["info", &id, "--json"]);
    assert_eq!(info["state"], "COMPLETED", "{info}");
    let runs = cli(&["runs", "--json"]);
    assert_eq!(runs["runs"][0]["name"], "nightly", "{runs}");
    let run = cli(&["runs", "nightly", "--json"]);
    assert!(run.to_string().contains(&id), "{run}");
    let explain = cli(&["explain", &id, "--json"]);
    assert!(explain.is_object(), "{explain}");
    let du = cli(&["du", "--json"]);
    assert!(du.is_object(), "{du}");
    let verify = cli(&["verify", "--json"]);
    assert_eq!(
        verify["problems"].as_array().map(Vec::len),
        Some(0),
        "{verify}"
    );
    assert!(verify["objects_checked"].as_u64() >= Some(6), "{verify}");
    // A postcard value is not self-describing: `cat` reads the record and says so.
    let cat = cli(&["cat", &id, "--json"]);
    assert!(
        cat["error"]
            .as_str()
            .is_some_and(|e| e.contains("postcard")),
        "{cat}"
    );
    let rm = cli(&["rm", &id, "--json"]);
    assert_eq!(rm["removed"].as_array().map(Vec::len), Some(1), "{rm}");
    assert_eq!(ws.steps().unwrap().len(), 2);
    // Removing the run removes the records only it had (the two upstream steps).
    let rm_run = cli(&["run-rm", "nightly", "--json"]);
    assert_eq!(
        rm_run["removed"][0]["removed_steps"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{rm_run}"
    );
    let gc = cli(&["gc", "--grace-secs", "0", "--json"]);
    assert!(gc["removed_objects"].as_u64() >= Some(6), "{gc}");
    assert!(ws.steps().unwrap().is_empty());
    assert!(ws.runs().unwrap().is_empty());
}

/// A test run as a child by the one below: opens a workspace in the shared cache directory,
/// then fails if asked to.
#[test]
fn a_workspace_opens_on_a_fresh_prefix() {
    let (url, _cache_use) = fresh("open");
    let ws = Workspace::from_url(&url).unwrap();
    assert!(ws.steps().unwrap().is_empty());
    assert!(shared_cache_dir().is_dir());
    assert!(
        std::env::var_os("MILONGA_REMOTE_FAIL").is_none(),
        "failing on purpose"
    );
}

#[test]
fn the_tests_remove_their_cache_directory_when_they_pass_or_fail() {
    for fail in [false, true] {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "a_workspace_opens_on_a_fresh_prefix",
            "--nocapture",
        ]);
        if fail {
            cmd.env("MILONGA_REMOTE_FAIL", "1");
        }
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("milonga-remote-tests-{}", child.id()));
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), !fail, "{text}");
        assert!(
            text.contains("1 passed") || text.contains("1 failed"),
            "{text}"
        );
        assert!(
            !dir.exists(),
            "{} is left behind (fail: {fail})",
            dir.display()
        );
    }
}
