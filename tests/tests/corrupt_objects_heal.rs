//! A damaged object heals: a read that finds it damaged moves it into quarantine and says so;
//! publishing content whose id exists never keeps an unverified copy, so `rm` and a re-run (in
//! another process) store a fresh one; `repair` forgets the steps that refer to damaged objects
//! so that the next `result()` recomputes them.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command;

use milonga::sdk::Error as SdkError;
use milonga::store::LocalStore;
use milonga::{Error, Step, Workspace};
use milonga_tests::{corrupt_object, Numbers, Square};

fn helper(ws: &Path, step: &str, x: u64) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_milonga-test-step"))
        .args([ws.to_str().unwrap(), step, &x.to_string()])
        .output()
        .expect("run helper");
    assert!(
        out.status.success(),
        "helper failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn corrupt_then_rm_then_rerun_in_another_process_repairs() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(helper(dir.path(), "square", 12), "144 computed");
    let step = Square { x: 12, sleep_ms: 0 };
    let uid = step.unique_id().unwrap();
    let file = {
        let ws = Workspace::open(dir.path()).unwrap();
        ws.artifact(&uid).unwrap().files()[0].clone()
    };
    // Damage the stored result, then forget the step (no read in between).
    let path = corrupt_object(dir.path(), &file.id, |b| *b.last_mut().unwrap() ^= 0x10);
    {
        let ws = Workspace::open(dir.path()).unwrap();
        assert!(ws.remove_step(&uid).unwrap());
    }
    // Another process runs the step again: it publishes the same content, finds the damaged
    // file under that id, moves it aside and stores the fresh copy.
    assert_eq!(helper(dir.path(), "square", 12), "144 computed");
    assert_eq!(helper(dir.path(), "square", 12), "144 loaded");
    let ws = Workspace::open(dir.path()).unwrap();
    assert_eq!(*step.result(&ws).unwrap(), 144);
    assert_eq!(
        std::fs::read(&path).unwrap().len() as u64,
        file.len,
        "a fresh copy"
    );
    assert!(ws.verify().unwrap().problems.is_empty());
    let quarantined = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .count();
    assert_eq!(quarantined, 1, "the damaged copy is kept for inspection");
}

#[test]
fn a_read_that_finds_damage_quarantines_the_object_and_names_where() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = Numbers { n: 50_000 };
    step.result(&ws).unwrap();
    let uid = step.unique_id().unwrap();
    let file = ws.artifact(&uid).unwrap().files()[0].clone();
    drop(ws);
    let path = corrupt_object(dir.path(), &file.id, |b| b[100] ^= 1);
    let ws = Workspace::open(dir.path()).unwrap();
    let err = step.result(&ws).unwrap_err();
    let Error::Format(SdkError::ChecksumMismatch { file: what, .. }) = &err else {
        panic!("expected a checksum mismatch, got {err:?}");
    };
    assert!(what.contains("quarantine"), "{what}");
    assert!(!path.exists());
    // The step is now missing its object: rm and re-run heal it.
    assert!(ws.remove_step(&uid).unwrap());
    assert_eq!(step.result(&ws).unwrap().len(), 50_000);
    assert!(ws.verify().unwrap().problems.is_empty());
}

#[test]
fn repair_then_result_recomputes_damaged_steps_only() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let good = Square { x: 3, sleep_ms: 0 };
    let bad = Numbers { n: 1000 };
    good.result(&ws).unwrap();
    bad.result(&ws).unwrap();
    let bad_id = bad.unique_id().unwrap();
    let file = ws.artifact(&bad_id).unwrap().files()[0].clone();
    drop(ws);
    corrupt_object(dir.path(), &file.id, |b| b[0] ^= 0x80);
    let ws = Workspace::open(dir.path()).unwrap();
    let report = ws.repair(&mut |_, _| {}).unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.reset_steps, vec![bad_id.clone()]);
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    assert!(!LocalStore::open(dir.path())
        .unwrap()
        .object_path(&file.id)
        .exists());
    assert!(ws.step_info(&bad_id).unwrap().is_none());
    assert!(ws.contains(&good).unwrap(), "undamaged steps are kept");
    assert_eq!(bad.result(&ws).unwrap().len(), 1000);
    assert!(ws.verify().unwrap().problems.is_empty());
}
