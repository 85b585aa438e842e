//! SQLite sequences, dicts and dataset dicts as step results: stored as objects of the
//! content-addressed store, read lazily in place, covered by `verify`, and built resumably
//! inside a step that survives a `kill -9`.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "../src/bin/milonga-sqlite-step/steps.rs"]
#[allow(dead_code)]
mod steps;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use milonga::{Step, StepState, Workspace};
use steps::{record, BuiltSquares, Records, Splits, WordLengths};

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn helper(ws: &Path, step: &str, n: u64, log: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_milonga-sqlite-step"))
        .arg(ws)
        .arg(step)
        .arg(n.to_string())
        .env("MILONGA_TEST_LOG", log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn an_iterator_result_is_a_sqlite_object_read_lazily_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let ws_dir = dir.path().join("ws");
    // Computed in another process, then read here.
    assert_eq!(helper(&ws_dir, "records", 5000, &log), "5000 Some(4999)");
    let ws = Workspace::open(&ws_dir).unwrap();
    let step = Records { n: 5000 };
    let seq = step.result(&ws).unwrap();
    assert_eq!(log_lines(&log), ["Records"], "loaded, not recomputed");
    assert_eq!(seq.len(), 5000);
    assert_eq!(seq.get(1234).unwrap(), record(1234));
    assert_eq!(
        seq.get_range(10..13).unwrap(),
        vec![record(10), record(11), record(12)]
    );
    let all: Vec<_> = seq.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(all, (0..5000).map(record).collect::<Vec<_>>());
    assert_eq!(seq.format_version(), 2);

    // The file is the store's object, opened where it lies.
    let id = step.unique_id().unwrap();
    let artifact = ws.artifact(&id).unwrap();
    let path = artifact.local_path("data.sqlite").unwrap().unwrap();
    let objects = ws_dir.join("objects").canonicalize().unwrap();
    assert!(
        path.canonicalize().unwrap().starts_with(&objects),
        "{} is not under {}",
        path.display(),
        objects.display()
    );
    assert!(seq.file().contains("data.sqlite"), "{}", seq.file());
    let files = artifact.files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        files[0].len,
        "the object is the whole file"
    );
    // Reading left no journal or lock file beside the object.
    let sidecars: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-journal") || n.ends_with("-wal") || n.ends_with("-shm"))
        .collect();
    assert!(sidecars.is_empty(), "{sidecars:?}");
}

#[test]
fn verify_covers_the_sqlite_file_and_detects_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = Records { n: 3000 };
    step.result(&ws).unwrap();
    let id = step.unique_id().unwrap();
    let report = ws.verify().unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    let artifact = ws.artifact(&id).unwrap();
    let file = artifact.files().into_iter().next().unwrap();
    assert!(report.bytes_checked >= file.len, "{report:?}");
    drop(artifact);
    drop(ws);

    milonga_tests::corrupt_object(dir.path(), &file.id, |bytes| {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
    });

    let ws = Workspace::open(dir.path()).unwrap();
    let report = ws.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.problems[0].unique_id, id);
    assert!(
        report.problems[0].error.contains("data.sqlite"),
        "{report:?}"
    );
}

fn wait_for_progress(progress: &Path, at_least: u64, child: &mut std::process::Child) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = log_lines(progress)
            .last()
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(0);
        if last >= at_least {
            return last;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before committing {at_least} items"
        );
        assert!(Instant::now() < deadline, "no progress: {last}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_builder_step_killed_mid_build_resumes_from_len() {
    const N: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let progress = dir.path().join("progress.log");
    let ws_dir = dir.path().join("ws");
    Workspace::open(&ws_dir).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_milonga-sqlite-step"))
        .arg(&ws_dir)
        .arg("built-squares")
        .arg(N.to_string())
        .env("MILONGA_TEST_LOG", &log)
        .env("MILONGA_SQLITE_PROGRESS", &progress)
        .env("MILONGA_SQLITE_SLOW_MS", "20")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let seen = wait_for_progress(&progress, 750, &mut child);
    child.kill().unwrap(); // SIGKILL: no destructor, no commit on drop
    child.wait().unwrap();
    let committed = log_lines(&progress)
        .last()
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap();
    assert!(committed >= seen && committed < N, "{committed}");

    // A new process resumes from the committed length.
    let sum: u64 = (0..N).map(|i| i * i).sum();
    assert_eq!(
        helper(&ws_dir, "built-squares", N, &log),
        format!("{N} {sum}")
    );
    let runs = log_lines(&log);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0], "start 0");
    let resumed: u64 = runs[1].strip_prefix("start ").unwrap().parse().unwrap();
    // Everything committed was kept (a kill between a commit and its progress line keeps one
    // more batch), and a partial batch never is.
    assert!(
        resumed == committed || resumed == committed + 100,
        "resumed from {resumed}, {committed} were committed"
    );
    assert_eq!(resumed % 100, 0, "only whole commits survive: {resumed}");
    let progress_after = log_lines(&progress);
    let redone = progress_after
        .iter()
        .filter_map(|l| l.parse::<u64>().ok())
        .filter(|&v| v <= committed)
        .count() as u64;
    assert_eq!(redone, committed / 100, "no committed batch was redone");

    // The final result equals the full sequence; the work file became the artifact.
    let ws = Workspace::open(&ws_dir).unwrap();
    let step = BuiltSquares {
        n: N,
        commit_every: 100,
    };
    let info = ws.step_info(&step.unique_id().unwrap()).unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (StepState::Completed, 2));
    let seq = step.result(&ws).unwrap();
    assert_eq!(
        seq.get_range(..).unwrap(),
        (0..N).map(|i| i * i).collect::<Vec<u64>>()
    );
    assert_eq!(seq.get(N - 1).unwrap(), (N - 1) * (N - 1));
    assert!(ws.verify().unwrap().problems.is_empty());
}

#[test]
fn a_builder_step_that_runs_through_publishes_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = BuiltSquares {
        n: 1000,
        commit_every: 64,
    };
    let seq = step.result(&ws).unwrap();
    assert_eq!(seq.len(), 1000);
    assert_eq!(seq.get(999).unwrap(), 999 * 999);
    let id = step.unique_id().unwrap();
    let path = ws
        .artifact(&id)
        .unwrap()
        .local_path("data.sqlite")
        .unwrap()
        .unwrap();
    assert!(
        path.starts_with(dir.path().join("objects")),
        "{}",
        path.display()
    );
}

#[test]
fn a_dict_result_through_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let words: Vec<String> = ["milonga", "tango", "vals", "", "candombe"]
        .map(String::from)
        .to_vec();
    let step = WordLengths {
        words: words.clone(),
    };
    {
        let ws = Workspace::open(dir.path()).unwrap();
        step.result(&ws).unwrap();
    }
    let ws = Workspace::open(dir.path()).unwrap();
    let dict = step.result(&ws).unwrap();
    assert_eq!(dict.len(), 5);
    assert_eq!(dict.get("tango").unwrap(), Some(5));
    assert_eq!(dict.get("").unwrap(), Some(0));
    assert_eq!(dict.get("zamba").unwrap(), None);
    assert!(dict.contains("candombe").unwrap());
    let mut keys: Vec<String> = dict.keys().collect::<Result<_, _>>().unwrap();
    keys.sort();
    let mut want = words;
    want.sort();
    assert_eq!(keys, want);
    let sum: u32 = dict.iter().map(|r| r.unwrap().1).sum();
    assert_eq!(sum, 7 + 5 + 4 + 8);
    let id = step.unique_id().unwrap();
    assert!(ws.verify().unwrap().problems.is_empty());
    let path = ws
        .artifact(&id)
        .unwrap()
        .local_path("data.sqlite")
        .unwrap()
        .unwrap();
    assert!(
        path.starts_with(dir.path().join("objects")),
        "{}",
        path.display()
    );
}

#[test]
fn a_dataset_dict_result_through_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let step = Splits {
        train: 700,
        validation: 50,
    };
    {
        let ws = Workspace::open(dir.path()).unwrap();
        step.result(&ws).unwrap();
    }
    let ws = Workspace::open(dir.path()).unwrap();
    let dd = step.result(&ws).unwrap();
    assert_eq!(dd.names().collect::<Vec<_>>(), ["train", "validation"]);
    assert_eq!(
        dd.metadata.get("source").map(String::as_str),
        Some("synthetic")
    );
    let train = dd.split("train").unwrap();
    assert_eq!(train.len(), 700);
    assert_eq!(train.get(699).unwrap(), record(699));
    let validation = dd.split("validation").unwrap();
    let v: Vec<_> = validation.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(v, (700..750).map(record).collect::<Vec<_>>());
    let id = step.unique_id().unwrap();
    let artifact = ws.artifact(&id).unwrap();
    let mut names: Vec<String> = artifact.files().into_iter().map(|f| f.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "dataset_dict",
            "splits/train.sqlite",
            "splits/validation.sqlite"
        ]
    );
    assert!(ws.verify().unwrap().problems.is_empty());
}
