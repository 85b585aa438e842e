//! Steps end to end: caching across processes, versions, chains, failures, ids.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};
use std::process::Command;

use milonga::{BoxError, Context, Error, PostcardFormat, Step, StepRef, StepState, Workspace};
use milonga_tests::{runs, Numbers, Scale, Square, SquareV2, Total, WithCollections};
use proptest::prelude::*;
use serde::Serialize;

fn helper(ws: &std::path::Path, step: &str, x: u64, log: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_milonga-test-step"))
        .arg(ws)
        .arg(step)
        .arg(x.to_string())
        .env("MILONGA_TEST_LOG", log)
        .output()
        .expect("run helper");
    assert!(
        out.status.success(),
        "helper failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn log_lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn cache_hit_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let ws = dir.path().join("ws");
    assert_eq!(helper(&ws, "square", 12, &log), "144 computed");
    assert_eq!(helper(&ws, "square", 12, &log), "144 loaded");
    assert_eq!(log_lines(&log), vec!["Square(12)"], "ran exactly once");
    // And this process finds it too, without running it.
    let ws = Workspace::open(&ws).unwrap();
    assert_eq!(*Square { x: 12, sleep_ms: 0 }.result(&ws).unwrap(), 144);
    assert_eq!(runs("Square(12)"), 0);
}

#[test]
fn version_bump_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let ws = dir.path().join("ws");
    assert_eq!(helper(&ws, "square", 5, &log), "25 computed");
    assert_eq!(helper(&ws, "square2", 5, &log), "25 computed");
    assert_eq!(helper(&ws, "square2", 5, &log), "25 loaded");
    assert_eq!(log_lines(&log), vec!["Square(5)", "SquareV2(5)"]);
    let v1 = Square { x: 5, sleep_ms: 0 }.unique_id().unwrap();
    let v2 = SquareV2 { x: 5 }.unique_id().unwrap();
    assert!(
        v1.starts_with("Square-") && v2.starts_with("Square-2-"),
        "{v1} {v2}"
    );
    assert_ne!(v1, v2);
}

#[test]
fn single_flight_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let ws = dir.path().join("ws");
    Workspace::open(&ws).unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_milonga-test-step"))
            .arg(&ws)
            .arg("sleepy-square")
            .arg("9")
            .env("MILONGA_TEST_LOG", &log)
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("81 "));
    }
    assert_eq!(
        log_lines(&log),
        vec!["Square(9)"],
        "one process ran it, the other waited"
    );
}

#[test]
fn chain_reruns_only_what_changed() {
    let ws = Workspace::memory().unwrap();
    let numbers = StepRef::new(Numbers { n: 100 });
    let scaled = StepRef::new(Scale {
        numbers: numbers.clone(),
        factor: 3,
    });
    let first = Total {
        scaled: scaled.clone(),
        offset: 0,
    };
    assert_eq!(*first.result(&ws).unwrap(), 3 * 4950);
    assert_eq!((runs("Numbers"), runs("Scale"), runs("Total")), (1, 1, 1));

    let second = Total { scaled, offset: 7 };
    assert_eq!(*second.result(&ws).unwrap(), 3 * 4950 + 7);
    assert_eq!((runs("Numbers"), runs("Scale"), runs("Total")), (1, 1, 2));

    // The chain's ids are Merkle-chained: a change upstream changes every id below it.
    let changed = Total {
        scaled: Scale {
            numbers: Numbers { n: 10 }.into(),
            factor: 3,
        }
        .into(),
        offset: 7,
    };
    assert_ne!(changed.unique_id().unwrap(), second.unique_id().unwrap());
    let info = ws.step_info(&second.unique_id().unwrap()).unwrap().unwrap();
    assert_eq!(info.state, StepState::Completed);
    assert_eq!(
        info.dependencies,
        vec![second.scaled.unique_id().unwrap()],
        "the upstream id is recorded as a dependency"
    );
}

#[test]
fn repeated_result_is_served_from_memory() {
    let ws = Workspace::memory().unwrap();
    let step = Numbers { n: 1000 };
    let a = step.result(&ws).unwrap();
    let b = step.result(&ws).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b), "no second deserialization");
    ws.set_cache_limits(0, 0);
    let c = step.result(&ws).unwrap();
    assert!(
        !std::sync::Arc::ptr_eq(&a, &c),
        "an emptied cache reads again"
    );
    assert_eq!(a, c);
}

static FAIL_FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

#[derive(Serialize)]
struct Flaky;

impl Step for Flaky {
    const NAME: &'static str = "Flaky";
    type Output = String;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<String, BoxError> {
        if FAIL_FIRST.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err("the disk is full (simulated)".into());
        }
        Ok("fine".into())
    }
}

#[test]
fn failure_is_recorded_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let err = Flaky.result(&ws).unwrap_err();
    assert!(
        matches!(&err, Error::StepFailed { message, .. } if message.contains("disk is full")),
        "{err}"
    );
    let id = Flaky.unique_id().unwrap();
    let info = ws.step_info(&id).unwrap().unwrap();
    assert_eq!(info.state, StepState::Failed);
    assert!(info.error.unwrap().contains("disk is full"));
    assert!(info.manifest_id.is_none(), "nothing partial is visible");
    assert!(!ws.contains(&Flaky).unwrap());

    assert_eq!(*Flaky.result(&ws).unwrap(), "fine");
    let info = ws.step_info(&id).unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (StepState::Completed, 2));
}

#[derive(Serialize)]
struct Panics {
    message: String,
}

impl Step for Panics {
    const NAME: &'static str = "Panics";
    type Output = u8;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<u8, BoxError> {
        panic!("{}", self.message)
    }
}

#[test]
fn panic_is_recorded_as_failure() {
    let ws = Workspace::memory().unwrap();
    let step = Panics {
        message: "index out of bounds (simulated)".into(),
    };
    let err = step.result(&ws).unwrap_err();
    assert!(err.to_string().contains("index out of bounds"), "{err}");
    let info = ws.step_info(&step.unique_id().unwrap()).unwrap().unwrap();
    assert_eq!(info.state, StepState::Failed);
}

#[test]
fn flipped_byte_in_an_object_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let step = Numbers { n: 5000 };
    let id = {
        let ws = Workspace::open(dir.path()).unwrap();
        step.result(&ws).unwrap();
        step.unique_id().unwrap()
    };
    let ws = Workspace::open(dir.path()).unwrap();
    let artifact = ws.artifact(&id).unwrap();
    let file = artifact.files().into_iter().next().unwrap();
    milonga_tests::corrupt_object(dir.path(), &file.id, |bytes| {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
    });

    let err = step.result(&ws).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::Format(milonga::sdk::Error::ChecksumMismatch { .. })
        ),
        "{text}"
    );
    assert!(text.contains(&file.id.to_hex()), "names the object: {text}");
    let report = ws.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.problems[0].unique_id, id);
}

#[test]
fn unknown_url_scheme_is_a_typed_error() {
    let err = Workspace::from_url("gopher://example/ws").unwrap_err();
    assert!(matches!(err, Error::UnknownScheme { ref url } if url == "gopher://example/ws"));
    assert!(Workspace::from_url("memory://").is_ok());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let ws = Workspace::from_url(&url).unwrap();
    assert_eq!(ws.root().unwrap(), dir.path().canonicalize().unwrap());
}

#[test]
fn database_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Workspace::open(dir.path()).unwrap());
    let db = milonga_tests::tamper_database(dir.path(), "UPDATE schema_version SET version = 99");
    let err = Workspace::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::SchemaTooNew { found: 99, supported, ref path }
            if path == &db && supported == milonga::METADATA_SCHEMA_VERSION),
        "{err}"
    );
}

#[test]
fn a_foreign_database_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(milonga::DATABASE_FILE), b"not sqlite at all, just text that is long enough to be a header of some kind of file.......").unwrap();
    let err = Workspace::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains(milonga::DATABASE_FILE), "{err}");
}

#[test]
fn truncated_manifest_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let step = Numbers { n: 3 };
    let ws = Workspace::open(dir.path()).unwrap();
    step.result(&ws).unwrap();
    let info = ws.step_info(&step.unique_id().unwrap()).unwrap().unwrap();
    milonga_tests::corrupt_object(dir.path(), &info.manifest_id.unwrap(), |bytes| {
        bytes.truncate(bytes.len() - 10);
    });
    let fresh = Workspace::open(dir.path()).unwrap();
    let err = step.result(&fresh).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Format(milonga::sdk::Error::ChecksumMismatch { .. })
        ),
        "{err}"
    );
}

#[test]
fn left_out_arguments_do_not_change_the_id() {
    let a = Square { x: 3, sleep_ms: 0 }.unique_id().unwrap();
    let b = Square {
        x: 3,
        sleep_ms: 900,
    }
    .unique_id()
    .unwrap();
    let c = Square { x: 4, sleep_ms: 0 }.unique_id().unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn id_ignores_map_and_set_order(entries in proptest::collection::hash_map("[a-z]{0,6}", any::<u32>(), 0..20),
                                    set in proptest::collection::hash_set(any::<i64>(), 0..20),
                                    seed in any::<u64>()) {
        let a = WithCollections { map: entries.clone(), set: set.clone() };
        // Rebuild both collections with a different insertion order and capacity.
        let mut keys: Vec<_> = entries.keys().cloned().collect();
        keys.sort();
        if seed % 2 == 0 { keys.reverse(); }
        let mut map = HashMap::with_capacity((seed % 64) as usize);
        for k in keys { map.insert(k.clone(), entries[&k]); }
        let mut elems: Vec<_> = set.iter().copied().collect();
        elems.sort_by_key(|e| e.wrapping_mul(seed as i64 | 1));
        let set2: HashSet<i64> = elems.into_iter().collect();
        let b = WithCollections { map, set: set2 };
        prop_assert_eq!(a.unique_id().unwrap(), b.unique_id().unwrap());
    }
}

#[test]
fn a_killed_runner_never_wedges_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let ws_dir = dir.path().join("ws");
    Workspace::open(&ws_dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_milonga-test-step"))
        .arg(&ws_dir)
        .arg("sleepy-square")
        .arg("11")
        .env("MILONGA_TEST_LOG", &log)
        .spawn()
        .unwrap();
    // Wait until it is inside `run` (it logs on entry), then kill it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log_lines(&log).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "child never started its run"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let ws = Workspace::open(&ws_dir).unwrap();
    let step = Square { x: 11, sleep_ms: 0 };
    let info = ws.step_info(&step.unique_id().unwrap()).unwrap().unwrap();
    assert_eq!(
        info.state,
        StepState::Incomplete,
        "the dead run is reported as such"
    );
    assert!(info.error.unwrap().contains("died"));
    assert_eq!(
        *step.result(&ws).unwrap(),
        121,
        "the lock died with its holder"
    );
    let info = ws.step_info(&step.unique_id().unwrap()).unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (StepState::Completed, 2));
}
