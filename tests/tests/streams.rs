//! Streaming steps end to end: lazy results, resume after a killed writer, tail-follow across
//! threads and processes, streams as inputs.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use milonga::{Step, Workspace};
use milonga_tests::runs;
use milonga_tests::streams::{last_start, Count, SumStream};

/// How long a follower started before its writer waits for the writer to start: far more than
/// a process needs to start, so never reached.
const START: Duration = Duration::from_secs(120);

fn spawn_writer(ws: &std::path::Path, n: u64, delay_us: u64, resumable: bool) -> Child {
    Command::new(env!("CARGO_BIN_EXE_milonga-test-stream"))
        .arg(ws)
        .arg(n.to_string())
        .arg(delay_us.to_string())
        .arg(if resumable { "1" } else { "0" })
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the writer")
}

/// Waits until the step being written has at least `files` durable files.
fn wait_for_files(ws: &Workspace, unique_id: &str, files: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let followed = ws.follow_artifact(unique_id).unwrap();
        if followed.files().len() >= files {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the writer never committed {files} files"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn all(reader: &milonga::StreamReader<u64>) -> Vec<u64> {
    reader.iter().collect::<Result<Vec<_>, _>>().unwrap()
}

#[test]
fn stream_result_is_lazy_and_random_access() {
    let ws = Workspace::memory().unwrap();
    let step = Count {
        n: 100_000,
        delay_us: 0,
        resumable: false,
    };
    let reader = step.result(&ws).unwrap();
    assert_eq!(reader.len().unwrap(), 100_000);
    assert_eq!(reader.get(77_777).unwrap(), 77_777);
    let part: Vec<u64> = reader.range(10..20).collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(part, (10..20).collect::<Vec<_>>());
    assert_eq!(all(&reader), (0..100_000).collect::<Vec<_>>());
    assert!(
        ws.artifact(&step.unique_id().unwrap())
            .unwrap()
            .files()
            .len()
            > 10,
        "written as many chunk objects"
    );
}

#[test]
fn killed_writer_is_resumed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let n = 400_000;
    let step = Count {
        n,
        delay_us: 3_000,
        resumable: true,
    };
    let id = step.unique_id().unwrap();
    let mut child = spawn_writer(dir.path(), n, 3_000, true);
    let ws = Workspace::open(dir.path()).unwrap();
    wait_for_files(&ws, &id, 20);
    child.kill().unwrap();
    child.wait().unwrap();
    let durable = ws.follow_artifact(&id).unwrap().files().len();
    assert!(durable >= 20);

    let reader = step.result(&ws).unwrap();
    let start = last_start(n).expect("the step ran");
    assert!(
        start > 0 && start < n,
        "resumed after the durable items, from {start}"
    );
    assert_eq!(runs(&format!("Count from {start}")), 1);
    assert_eq!(reader.len().unwrap(), n);
    assert_eq!(all(&reader), (0..n).collect::<Vec<_>>());

    // Resumed output is byte-identical to an uninterrupted write: same manifest.
    let once = Workspace::memory().unwrap();
    Count {
        n,
        delay_us: 0,
        resumable: false,
    }
    .result(&once)
    .unwrap();
    assert_eq!(
        ws.step_info(&id).unwrap().unwrap().manifest_id,
        once.step_info(&id).unwrap().unwrap().manifest_id
    );
}

#[test]
fn a_step_that_does_not_resume_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let n = 300_000;
    let step = Count {
        n,
        delay_us: 3_000,
        resumable: false,
    };
    let id = step.unique_id().unwrap();
    let mut child = spawn_writer(dir.path(), n, 3_000, false);
    let ws = Workspace::open(dir.path()).unwrap();
    wait_for_files(&ws, &id, 10);
    child.kill().unwrap();
    child.wait().unwrap();

    let fast = Count {
        n,
        delay_us: 0,
        resumable: false,
    };
    let reader = fast.result(&ws).unwrap();
    assert_eq!(last_start(n), Some(0));
    assert_eq!(all(&reader), (0..n).collect::<Vec<_>>());
}

#[test]
fn follow_a_stream_written_by_another_thread() {
    let ws = Workspace::memory().unwrap();
    let step = Count {
        n: 200_000,
        delay_us: 2_000,
        resumable: false,
    };
    // Open the follower before the writer has even started: it waits for one to start.
    let reader = ws.follow_timeout(&step, Some(START)).unwrap();
    assert!(!reader.is_complete());
    let writer = {
        let ws = ws.clone();
        std::thread::spawn(move || {
            Count {
                n: 200_000,
                delay_us: 2_000,
                resumable: false,
            }
            .result(&ws)
            .map(|r| r.len().unwrap())
        })
    };
    let mut iter = reader.iter();
    let first = iter.next().unwrap().unwrap();
    assert!(!writer.is_finished(), "the first item came while writing");
    let mut items = vec![first];
    for item in iter {
        items.push(item.unwrap());
    }
    assert_eq!(items, (0..200_000).collect::<Vec<_>>());
    assert_eq!(writer.join().unwrap().unwrap(), 200_000);
}

#[test]
fn follow_a_stream_written_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let n = 200_000;
    let step = Count {
        n,
        delay_us: 2_000,
        resumable: false,
    };
    Workspace::open(dir.path()).unwrap();
    let mut child = spawn_writer(dir.path(), n, 2_000, false);
    let ws = Workspace::open(dir.path()).unwrap();
    // The writer may not have started yet: wait for it.
    let reader = ws.follow_timeout(&step, Some(START)).unwrap();
    let mut iter = reader.iter();
    let first = iter.next().unwrap().unwrap();
    assert_eq!(first, 0);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first item came while the other process was writing"
    );
    let rest: Vec<u64> = iter.collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(rest.len() as u64, n - 1);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_follower_of_a_dead_writer_gets_an_error_not_a_short_stream() {
    let dir = tempfile::tempdir().unwrap();
    let n = 1_000_000;
    let step = Count {
        n,
        delay_us: 3_000,
        resumable: false,
    };
    Workspace::open(dir.path()).unwrap();
    let mut child = spawn_writer(dir.path(), n, 3_000, false);
    let ws = Workspace::open(dir.path()).unwrap();
    wait_for_files(&ws, &step.unique_id().unwrap(), 3);
    let reader = ws.follow(&step).unwrap();
    let mut iter = reader.iter();
    assert_eq!(iter.next().unwrap().unwrap(), 0);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut count = 1u64;
    let mut error = None;
    for item in iter {
        match item {
            Ok(_) => count += 1,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert!(count < n);
    let error = error.expect("the stream must end with an error, not silently short");
    assert!(error.to_string().contains("died"), "{error}");
}

#[test]
fn a_stream_step_as_input_is_consumed_lazily() {
    let ws = Workspace::memory().unwrap();
    let sum = SumStream {
        input: Count {
            n: 50_000,
            delay_us: 0,
            resumable: false,
        }
        .into(),
    };
    assert_eq!(*sum.result(&ws).unwrap(), 50_000 * 49_999 / 2);
}
