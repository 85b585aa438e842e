//! Regression tests for defects found in review: each failed before its fix.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use milonga::sdk::{
    ArtifactHandle, ArtifactWriter, Error as SdkError, Format, Result as SdkResult,
};
use milonga::{BoxError, Context, Error, Step, StepState, Workspace};
use milonga_tests::streams::Count;
use serde::Serialize;

/// Writes two files, `a` then `b`; writing `b` fails while `FAIL_B` is positive.
#[derive(Default)]
struct TwoFiles;

static FAIL_B: AtomicUsize = AtomicUsize::new(0);

impl Format<u8> for TwoFiles {
    type Output = u8;
    fn id(&self) -> &str {
        "test.two_files"
    }
    fn version(&self) -> u32 {
        1
    }
    fn write(&self, value: u8, artifact: &dyn ArtifactWriter) -> SdkResult<()> {
        let mut a = artifact.create("a")?;
        a.write_all(&[value]).map_err(|e| SdkError::io("a", e))?;
        a.finish()?;
        if FAIL_B.load(Ordering::SeqCst) > 0 {
            FAIL_B.fetch_sub(1, Ordering::SeqCst);
            return Err(SdkError::io(
                "b",
                std::io::Error::other("disk full (simulated)"),
            ));
        }
        let mut b = artifact.create("b")?;
        b.write_all(&[value]).map_err(|e| SdkError::io("b", e))?;
        b.finish()?;
        Ok(())
    }
    fn read(&self, artifact: ArtifactHandle) -> SdkResult<u8> {
        let a = artifact.bytes("a")?;
        let b = artifact.bytes("b")?;
        match ((*a).as_ref(), (*b).as_ref()) {
            ([x], [y]) if x == y => Ok(*x),
            _ => Err(SdkError::corrupt("a", 0, "a and b differ")),
        }
    }
}

#[derive(Serialize)]
struct WritesTwo {
    value: u8,
}

impl Step for WritesTwo {
    const NAME: &'static str = "WritesTwo";
    type Output = u8;
    type Format = TwoFiles;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<u8, BoxError> {
        Ok(self.value)
    }
}

#[test]
fn a_write_that_failed_halfway_does_not_wedge_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    FAIL_B.store(1, Ordering::SeqCst);
    let step = WritesTwo { value: 7 };
    let err = step.result(&ws).unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    // The fault is gone: the next attempt starts over and succeeds.
    assert_eq!(*step.result(&ws).unwrap(), 7);
    let info = ws.step_info(&step.unique_id().unwrap()).unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (StepState::Completed, 2));
    assert_eq!(ws.artifact(&info.unique_id).unwrap().files().len(), 2);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn dropped_workspaces_and_results_release_their_files() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ws = Workspace::open(dir.path()).unwrap();
        Count {
            n: 10_000,
            delay_us: 0,
            resumable: false,
        }
        .result(&ws)
        .unwrap();
    }
    let before = open_fds();
    for _ in 0..20 {
        let ws = Workspace::open(dir.path()).unwrap();
        let reader = Count {
            n: 10_000,
            delay_us: 0,
            resumable: false,
        }
        .result(&ws)
        .unwrap();
        assert_eq!(reader.len().unwrap(), 10_000);
    }
    // Tests run in parallel threads of this process: allow a little slack, not 20 leaked
    // database connections (each holds several descriptors).
    let after = open_fds();
    assert!(after < before + 10, "{before} → {after} open descriptors");

    // A memory workspace's temporary folder goes with its last handle, even after a lazy
    // result was read through it.
    let ws = Workspace::memory().unwrap();
    let weak = {
        let reader = Count {
            n: 1_000,
            delay_us: 0,
            resumable: false,
        }
        .result(&ws)
        .unwrap();
        Arc::downgrade(&reader)
    };
    drop(ws);
    assert!(
        weak.upgrade().is_none(),
        "the cached result was freed with the workspace"
    );
}

#[test]
fn followers_never_mistake_a_finished_writer_for_a_dead_one() {
    let ws = Workspace::memory().unwrap();
    for n in 1..=60u64 {
        let follower = {
            let ws = ws.clone();
            std::thread::spawn(move || {
                // The follower may start before the writer: it waits for one.
                let reader = ws
                    .follow_timeout(
                        &Count {
                            n,
                            delay_us: 0,
                            resumable: false,
                        },
                        Some(std::time::Duration::from_secs(120)),
                    )
                    .unwrap();
                reader.iter().collect::<Result<Vec<_>, _>>()
            })
        };
        Count {
            n,
            delay_us: 0,
            resumable: false,
        }
        .result(&ws)
        .unwrap();
        let items = follower
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("n = {n}: {e}"));
        assert_eq!(items, (0..n).collect::<Vec<_>>());
    }
}

#[derive(Serialize)]
struct Squares {
    n: u64,
}

impl Step for Squares {
    const NAME: &'static str = "robust::Squares";
    type Output = Vec<u64>;
    type Format = milonga::SqliteSequenceFormat<u64>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Vec<u64>, BoxError> {
        Ok((0..self.n).map(|i| i * i).collect())
    }
}

#[test]
fn a_sqlite_result_in_memory_reads_from_many_threads() {
    for _ in 0..5 {
        let ws = Workspace::memory().unwrap();
        Squares { n: 50_000 }.result(&ws).unwrap();
        ws.set_cache_limits(1, 0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let ws = &ws;
                s.spawn(move || {
                    let seq = Squares { n: 50_000 }.result(ws).unwrap();
                    assert_eq!(seq.len(), 50_000);
                    assert_eq!(seq.get(t * 1000).unwrap(), (t * 1000) * (t * 1000));
                });
            }
        });
    }
}

#[derive(Serialize)]
struct Slow;

impl Step for Slow {
    const NAME: &'static str = "robust::Slow";
    type Output = u8;
    type Format = milonga::PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u8, BoxError> {
        let id = ctx.unique_id().to_owned();
        let err = ctx.workspace().remove_step(&id).unwrap_err();
        assert!(matches!(err, Error::State { .. }), "{err}");
        Ok(1)
    }
}

#[test]
fn a_running_step_cannot_be_removed() {
    let ws = Workspace::memory().unwrap();
    assert_eq!(*Slow.result(&ws).unwrap(), 1);
    assert!(ws.remove_step(&Slow.unique_id().unwrap()).unwrap());
}

#[test]
fn verify_reports_a_completed_record_without_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = WritesTwo { value: 1 };
    step.result(&ws).unwrap();
    drop(ws);
    milonga_tests::tamper_database(dir.path(), "UPDATE steps SET manifest_id = NULL");
    let ws = Workspace::open(dir.path()).unwrap();
    let report = ws.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(report.problems[0].error.contains("without a manifest"));
}

#[test]
fn a_file_that_is_not_sqlite_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(milonga::DATABASE_FILE), vec![0x5a; 8192]).unwrap();
    let err = Workspace::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Format(SdkError::Corrupt { ref file, .. }) if file.contains(milonga::DATABASE_FILE)),
        "{err:?}"
    );
    let mistyped = dir.path().join("no-such-workspace");
    assert!(Workspace::open_existing(&mistyped).is_err());
    assert!(
        !mistyped.exists(),
        "inspecting a typo does not create a workspace"
    );
}
