//! Runs (named executor invocations) and the retention policies of garbage collection, for
//! which runs are roots.

// Not a decoder: a panic here is a failing test or tool, not a panic on stored bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use milonga::{DynStep, Error, Executor, GcPolicy, Step, StepState, Workspace};
use milonga_tests::{counting, runs, Numbers, Scale, Square};

fn scale(n: u32, factor: u32) -> Scale {
    Scale {
        numbers: Numbers { n }.into(),
        factor,
    }
}

fn exec(ws: &Workspace) -> Executor {
    let mut e = Executor::new(ws);
    e.with_progress(false).with_jobs(2);
    e
}

#[test]
fn runs_survive_processes_and_are_listed_in_order() {
    let _counting = counting();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let first = exec(&ws)
        .with_run_name("first")
        .run([DynStep::new(scale(4, 2))])
        .unwrap();
    assert_eq!(first.run.as_deref(), Some("first"));
    let generated = exec(&ws)
        .run([
            DynStep::new(scale(4, 3)),
            DynStep::new(Square { x: 2, sleep_ms: 0 }),
        ])
        .unwrap();
    let generated = generated.run.unwrap();
    let parts: Vec<&str> = generated.split('-').collect();
    assert_eq!(parts.len(), 3, "adjective-noun-NN: {generated}");
    assert!(parts[2].parse::<u8>().is_ok(), "{generated}");
    exec(&ws)
        .with_run_name("third")
        .run([DynStep::new(scale(5, 2))])
        .unwrap();
    drop(ws);

    let ws = Workspace::open(dir.path()).unwrap();
    let listed = ws.runs().unwrap();
    let names: Vec<&str> = listed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["first", generated.as_str(), "third"]);
    assert!(listed
        .windows(2)
        .all(|w| w[0].started_at <= w[1].started_at));
    let second = &listed[1];
    assert_eq!((second.steps, second.targets, second.completed), (3, 2, 3));
    assert!(second.ended_at.is_some());

    let run = ws.run(&generated).unwrap();
    let named: Vec<(Option<&str>, bool)> = run
        .steps
        .iter()
        .map(|s| (s.name.as_deref(), s.target))
        .collect();
    assert_eq!(
        named,
        [
            (Some("Scale"), true),
            (Some("Square"), true),
            (Some("Numbers"), false)
        ],
        "targets first, in the order given, then the others"
    );
    assert!(run
        .steps
        .iter()
        .all(|s| s.state == Some(StepState::Completed)));
    assert_eq!(run.steps[0].step_type.as_deref(), Some("chain::Scale"));
    let p = run
        .provenance
        .as_ref()
        .expect("a run records its provenance");
    assert_eq!(p.pid, std::process::id());
}

#[test]
fn a_result_is_fetched_by_run_and_step_name() {
    let _counting = counting();
    let ws = Workspace::memory().unwrap();
    exec(&ws)
        .with_run_name("pair")
        .run_named([
            ("small", DynStep::new(scale(3, 2))),
            ("big", DynStep::new(scale(3, 10))),
        ])
        .unwrap()
        .check()
        .unwrap();
    let run = ws.run("pair").unwrap();
    assert_eq!(*run.result::<Scale>("small").unwrap(), vec![0, 2, 4]);
    assert_eq!(*run.result::<Scale>("big").unwrap(), vec![0, 10, 20]);
    assert_eq!(*run.result::<Numbers>("Numbers").unwrap(), vec![0, 1, 2]);
    assert_eq!(
        run.info("big").unwrap().unique_id,
        scale(3, 10).unique_id().unwrap()
    );
    // By unique id, without the step's value.
    let id = scale(3, 2).unique_id().unwrap();
    assert_eq!(*ws.stored_result::<Scale>(&id).unwrap(), vec![0, 2, 4]);

    let wrong_type = run.result::<Square>("small").unwrap_err();
    assert!(
        matches!(&wrong_type, Error::Run { name, reason } if name == "pair" && reason.contains("not a Square")),
        "{wrong_type}"
    );
    let unknown = run.result::<Scale>("medium").unwrap_err();
    assert!(
        matches!(&unknown, Error::Run { reason, .. } if reason.contains("small") && reason.contains("big")),
        "the error lists the names: {unknown}"
    );
    let no_run = ws.run("nope").unwrap_err();
    assert!(
        matches!(&no_run, Error::Run { name, .. } if name == "nope"),
        "{no_run}"
    );
    let taken = exec(&ws)
        .with_run_name("pair")
        .run([DynStep::new(scale(3, 2))])
        .unwrap_err();
    assert!(
        matches!(&taken, Error::Run { reason, .. } if reason.contains("exists")),
        "{taken}"
    );
    let bad = exec(&ws)
        .with_run_name("two words")
        .run([DynStep::new(scale(3, 2))])
        .unwrap_err();
    assert!(matches!(bad, Error::Run { .. }));
}

#[test]
fn removing_a_run_makes_only_its_unique_results_collectable() {
    let _counting = counting();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let only_a = scale(5, 3);
    let only_b = scale(5, 2);
    let loose = Square { x: 12, sleep_ms: 0 };
    exec(&ws)
        .with_run_name("a")
        .run([DynStep::new(scale(5, 3))])
        .unwrap();
    exec(&ws)
        .with_run_name("b")
        .run([DynStep::new(scale(5, 2))])
        .unwrap();
    assert_eq!(*loose.result(&ws).unwrap(), 144, "a result outside any run");
    let before = ws.gc(Duration::ZERO).unwrap();
    assert_eq!(before.removed_objects, 0, "{before:?}");

    let removed = ws.remove_run("a").unwrap();
    assert_eq!(
        removed,
        [only_a.unique_id().unwrap()],
        "Numbers is shared with run b"
    );
    assert!(matches!(ws.remove_run("a"), Err(Error::Run { .. })));
    let report = ws.gc(Duration::ZERO).unwrap();
    assert_eq!(
        report.removed_objects, 2,
        "the manifest and data file of run a's own result: {report:?}"
    );
    assert_eq!(report.live_objects, before.live_objects - 2);

    let ws = Workspace::open(dir.path()).unwrap();
    let (numbers_runs, scale_runs) = (runs("Numbers"), runs("Scale"));
    assert_eq!(*only_b.result(&ws).unwrap(), vec![0, 2, 4, 6, 8]);
    assert_eq!(*loose.result(&ws).unwrap(), 144);
    assert_eq!((runs("Numbers"), runs("Scale")), (numbers_runs, scale_runs));
    assert_eq!(
        *ws.run("b").unwrap().result::<Scale>("Scale").unwrap(),
        vec![0, 2, 4, 6, 8]
    );
    assert!(ws.verify().unwrap().problems.is_empty());
    assert!(ws
        .step_info(&only_a.unique_id().unwrap())
        .unwrap()
        .is_none());
}

#[test]
fn keep_last_runs_and_max_age_remove_old_runs_and_a_dry_run_changes_nothing() {
    let _counting = counting();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    for (i, f) in [1u32, 2, 3].iter().enumerate() {
        exec(&ws)
            .with_run_name(format!("r{i}"))
            .run([DynStep::new(scale(6, *f + 10))])
            .unwrap();
    }
    let keep_one = GcPolicy::new()
        .with_keep_last_runs(1)
        .with_grace(Duration::ZERO);
    let dry = ws.gc_with(&keep_one.clone().with_dry_run(true)).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.removed_runs, ["r0", "r1"]);
    let mut expected = vec![
        scale(6, 11).unique_id().unwrap(),
        scale(6, 12).unique_id().unwrap(),
    ];
    expected.sort();
    assert_eq!(dry.removed_steps, expected);
    assert_eq!(dry.removed_objects, 4, "{dry:?}");
    assert_eq!(ws.runs().unwrap().len(), 3, "a dry run changes nothing");
    assert_eq!(ws.gc(Duration::ZERO).unwrap().removed_objects, 0);

    let real = ws.gc_with(&keep_one).unwrap();
    assert_eq!(
        (real.removed_runs.clone(), real.removed_steps.clone()),
        (dry.removed_runs, dry.removed_steps)
    );
    assert_eq!(real.removed_objects, 4);
    let names: Vec<String> = ws.runs().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["r2"]);
    assert_eq!(
        *ws.run("r2").unwrap().result::<Scale>("Scale").unwrap(),
        vec![0, 13, 26, 39, 52, 65]
    );

    // Every run started before now is older than an age of zero.
    std::thread::sleep(Duration::from_millis(5));
    let aged = ws
        .gc_with(
            &GcPolicy::new()
                .with_max_age(Duration::ZERO)
                .with_grace(Duration::ZERO),
        )
        .unwrap();
    assert_eq!(aged.removed_runs, ["r2"]);
    assert!(ws.steps().unwrap().is_empty(), "{aged:?}");
    assert!(ws.verify().unwrap().problems.is_empty());
}

#[test]
fn max_size_evicts_least_recently_read_results_outside_runs() {
    let _counting = counting();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let a = Numbers { n: 100 };
    let b = Numbers { n: 200 };
    let c = Numbers { n: 300 };
    for s in [&a, &b, &c] {
        s.result(&ws).unwrap();
    }
    exec(&ws)
        .with_run_name("rooted")
        .run([DynStep::new(scale(50, 7))])
        .unwrap();
    let size = |s: &Numbers| -> u64 {
        ws.artifact(&s.unique_id().unwrap())
            .unwrap()
            .files()
            .iter()
            .map(|f| f.len)
            .sum()
    };
    let rooted_size: u64 = ws
        .run("rooted")
        .unwrap()
        .steps
        .iter()
        .map(|s| {
            ws.artifact(&s.unique_id)
                .unwrap()
                .files()
                .iter()
                .map(|f| f.len)
                .sum::<u64>()
        })
        .sum();
    // Read c, then a, then b, each from the workspace (a fresh handle: no memory cache), with
    // every read recorded.
    let reader = Workspace::open(dir.path()).unwrap();
    reader.set_access_granularity(Duration::ZERO);
    for s in [&c, &a, &b] {
        std::thread::sleep(Duration::from_millis(3));
        s.result(&reader).unwrap();
    }
    let limit = rooted_size + size(&a) + size(&b);
    let report = ws
        .gc_with(
            &GcPolicy::new()
                .with_max_size(limit)
                .with_grace(Duration::ZERO),
        )
        .unwrap();
    assert_eq!(report.removed_steps, [c.unique_id().unwrap()], "{report:?}");
    assert_eq!(report.over_size_by, 0);

    // The results of runs are never evicted by size: below their size, only the others go.
    let report = ws
        .gc_with(&GcPolicy::new().with_max_size(1).with_grace(Duration::ZERO))
        .unwrap();
    assert_eq!(report.removed_steps.len(), 2, "{report:?}");
    assert_eq!(report.over_size_by, rooted_size - 1);
    assert_eq!(ws.steps().unwrap().len(), 2, "the run's two steps");
    assert!(ws.verify().unwrap().problems.is_empty());
}

#[test]
fn gc_policies_under_a_concurrent_writer_lose_nothing_referenced() {
    let _counting = counting();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_milonga-test-step"))
        .args([dir.path().to_str().unwrap(), "runs", "30"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut collections = 0;
    loop {
        let policy = match collections % 3 {
            0 => GcPolicy::new().with_keep_last_runs(1),
            1 => GcPolicy::new().with_max_size(0),
            _ => GcPolicy::new()
                .with_keep_last_runs(2)
                .with_max_age(Duration::from_secs(3600)),
        };
        // Staging files of a writer in progress are protected by the grace period only (they
        // are not in the database yet), so it must outlast one write; objects of the early
        // runs outgrow it while the writer is still running.
        ws.gc_with(&policy.with_grace(Duration::from_secs(1)))
            .unwrap();
        collections += 1;
        std::thread::sleep(Duration::from_millis(20));
        if child.try_wait().unwrap().is_some() {
            break;
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the writer lost a result it referenced: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "30 runs");
    assert!(collections > 1, "the collections overlapped the writer");
    // What the last runs refer to is all there.
    ws.gc_with(
        &GcPolicy::new()
            .with_keep_last_runs(2)
            .with_grace(Duration::ZERO),
    )
    .unwrap();
    let left = ws.runs().unwrap();
    assert!((1..=2).contains(&left.len()), "{left:?}");
    assert_eq!(left.last().unwrap().name, "w-29");
    for r in left {
        assert_eq!(r.completed, r.steps, "{r:?}");
        let run = ws.run(&r.name).unwrap();
        assert!(!run.result::<Scale>("scaled").unwrap().is_empty());
    }
    assert!(ws.verify().unwrap().problems.is_empty());
}

/// Sets the modification time of `path` to `ago` in the past.
fn age_file(path: &std::path::Path, ago: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - ago)
        .unwrap();
}

fn staging_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root.join(milonga::store::TMP_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn gc_with_zero_grace_keeps_the_staging_file_of_a_writer_in_progress() {
    let _counting = counting();
    use milonga::store::{LocalStore, ObjectStore};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    // A writer in progress, whose staging file is older than any grace period or floor.
    let store = LocalStore::open(dir.path()).unwrap().without_sync();
    let mut writer = store.writer().unwrap();
    writer.write_all(b"half of an object").unwrap();
    let live = staging_files(dir.path());
    assert_eq!(live.len(), 1);
    age_file(&live[0], Duration::from_secs(7200));
    // A staging file a crashed writer left two hours ago, and one a writer left a minute ago
    // (younger than the floor: it may not have taken its lock yet).
    let tmp = dir.path().join(milonga::store::TMP_DIR);
    let crashed = tmp.join("1-1-1.tmp");
    std::fs::write(&crashed, b"left behind").unwrap();
    age_file(&crashed, Duration::from_secs(7200));
    let recent = tmp.join("1-2-2.tmp");
    std::fs::write(&recent, b"just created").unwrap();
    age_file(&recent, Duration::from_secs(60));

    let report = ws.gc(Duration::ZERO).unwrap();
    assert_eq!(report.removed_staging_files, 1, "{report:?}");
    assert!(!crashed.exists());
    assert!(recent.exists());
    assert!(
        live[0].exists(),
        "the live writer's staging file was removed"
    );

    writer.write_all(b", and the rest").unwrap();
    let (id, len) = writer.commit().unwrap();
    assert_eq!(len, 31);
    assert!(store.contains(&id));
}

#[test]
fn gc_removes_the_lock_files_of_removed_steps_that_nobody_holds() {
    let _counting = counting();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let kept = Square { x: 3, sleep_ms: 0 };
    let removed = Square { x: 4, sleep_ms: 0 };
    let held = Square { x: 5, sleep_ms: 0 };
    for s in [&kept, &removed, &held] {
        s.result(&ws).unwrap();
    }
    let lock = |s: &Square| {
        dir.path()
            .join("locks")
            .join(format!("{}.lock", s.unique_id().unwrap()))
    };
    for s in [&kept, &removed, &held] {
        assert!(lock(s).exists());
    }
    assert!(ws.remove_step(&removed.unique_id().unwrap()).unwrap());
    assert!(ws.remove_step(&held.unique_id().unwrap()).unwrap());
    // Someone holds the lock of `held` (a runner about to write its record).
    let holder = std::fs::File::options()
        .write(true)
        .open(lock(&held))
        .unwrap();
    holder.lock().unwrap();

    let report = ws.gc(Duration::ZERO).unwrap();
    assert_eq!(report.removed_lock_files, 1, "{report:?}");
    assert!(!lock(&removed).exists());
    assert!(lock(&kept).exists(), "a recorded step keeps its lock file");
    assert!(lock(&held).exists(), "a held lock file is never removed");
    assert!(dir.path().join("locks/gc.lock").exists());
    drop(holder);

    // The removed step runs again, with a new lock file.
    let before = runs("Square(4)");
    assert_eq!(*removed.result(&ws).unwrap(), 16);
    assert_eq!(runs("Square(4)"), before + 1);
    assert!(lock(&removed).exists());
}
