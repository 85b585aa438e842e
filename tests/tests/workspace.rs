//! Workspace maintenance: removing steps, garbage collection, listing.

use std::time::Duration;

use milonga::{Step, StepState, Workspace};
use milonga_tests::{counting, runs, Numbers, Scale};

#[test]
fn gc_removes_only_what_no_step_refers_to() {
    let _counting = counting();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let keep = Numbers { n: 10 };
    let drop_me = Scale {
        numbers: Numbers { n: 20 }.into(),
        factor: 5,
    };
    keep.result(&ws).unwrap();
    drop_me.result(&ws).unwrap();
    let before = ws.gc(Duration::ZERO).unwrap();
    assert_eq!(before.removed_objects, 0, "{before:?}");
    let live_before = before.live_objects;

    assert!(ws.remove_step(&drop_me.unique_id().unwrap()).unwrap());
    let young = ws.gc(Duration::from_secs(3600)).unwrap();
    assert_eq!(
        young.removed_objects, 0,
        "young objects are kept: {young:?}"
    );
    assert_eq!(
        young.young_objects, 2,
        "a manifest and a data file: {young:?}"
    );

    let report = ws.gc(Duration::ZERO).unwrap();
    assert_eq!(report.removed_objects, 2, "{report:?}");
    assert!(report.freed_bytes > 0);
    assert_eq!(report.live_objects, live_before - 2);
    assert!(ws.verify().unwrap().problems.is_empty());

    // The kept result still reads in a new process; the removed one runs again.
    let fresh = Workspace::open(dir.path()).unwrap();
    assert_eq!(keep.result(&fresh).unwrap().len(), 10);
    let scale_runs = runs("Scale");
    assert_eq!(drop_me.result(&fresh).unwrap().len(), 20);
    assert_eq!(runs("Scale"), scale_runs + 1);
    let info = fresh
        .step_info(&drop_me.unique_id().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(info.state, StepState::Completed);
}

#[test]
fn identical_results_are_stored_once() {
    let _counting = counting();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    // Two different steps (different ids) whose outputs are byte-identical.
    let a = Scale {
        numbers: Numbers { n: 0 }.into(),
        factor: 1,
    };
    let b = Scale {
        numbers: Numbers { n: 0 }.into(),
        factor: 2,
    };
    a.result(&ws).unwrap();
    b.result(&ws).unwrap();
    let ia = ws.step_info(&a.unique_id().unwrap()).unwrap().unwrap();
    let ib = ws.step_info(&b.unique_id().unwrap()).unwrap().unwrap();
    assert_ne!(ia.unique_id, ib.unique_id);
    assert_eq!(ia.manifest_id, ib.manifest_id, "same content, same object");
}
