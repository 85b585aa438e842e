//! Workspaces written by earlier releases open and upgrade in place; a workspace written by a
//! newer milonga is refused with an error that says so.

// Not a decoder: a panic here is a failing test or tool, not a panic on stored bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use milonga::{Step, Workspace};
use milonga_tests::{counting, runs, Numbers, Scale};

/// The steps stored in the fixture `tests/fixtures/workspace-schema-v1`.
fn fixture_steps() -> (Numbers, Scale) {
    (
        Numbers { n: 5 },
        Scale {
            numbers: Numbers { n: 5 }.into(),
            factor: 3,
        },
    )
}

/// Writes the schema-v1 fixture into `$MILONGA_FIXTURE_OUT`. It was run once with the release
/// that wrote schema 1 (commit 8e58a4d), and its output committed under
/// `tests/fixtures/workspace-schema-v1`; run with a later release it writes a newer schema, so it
/// must never overwrite that fixture.
#[test]
#[ignore = "writes a fixture; run by hand"]
fn write_schema_fixture() {
    let out = std::env::var("MILONGA_FIXTURE_OUT").expect("MILONGA_FIXTURE_OUT");
    let ws = Workspace::open(&out).unwrap();
    let (numbers, scale) = fixture_steps();
    assert_eq!(*numbers.result(&ws).unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(*scale.result(&ws).unwrap(), vec![0, 3, 6, 9, 12]);
    let _ = runs("Scale");
}

/// The run stored in the fixture `tests/fixtures/workspace-schema-v2`.
const V2_RUN: &str = "fixture-run";

/// The steps stored in the fixture `tests/fixtures/workspace-schema-v2`: those of the v1
/// fixture, run as the run [`V2_RUN`], and a third one outside any run.
fn fixture_v2_steps() -> (Numbers, Scale, Numbers) {
    let (numbers, scale) = fixture_steps();
    (numbers, scale, Numbers { n: 7 })
}

/// Writes the schema-v2 fixture into `$MILONGA_FIXTURE_OUT`. It was run once with the release
/// that wrote schema 2 (commit 34e3f13), and its output committed under
/// `tests/fixtures/workspace-schema-v2`; like [`write_schema_fixture`], it must never overwrite
/// that fixture with a later release.
#[test]
#[ignore = "writes a fixture; run by hand"]
fn write_schema_v2_fixture() {
    let out = std::env::var("MILONGA_FIXTURE_OUT").expect("MILONGA_FIXTURE_OUT");
    let ws = Workspace::open(&out).unwrap();
    let (numbers, scale, other) = fixture_v2_steps();
    let outcome = milonga::Executor::new(&ws)
        .with_progress(false)
        .with_run_name(V2_RUN)
        .run([milonga::DynStep::new(scale), milonga::DynStep::new(numbers)])
        .unwrap();
    assert!(outcome.is_success());
    assert_eq!(*other.result(&ws).unwrap(), vec![0, 1, 2, 3, 4, 5, 6]);
}

/// A copy of the schema-v1 fixture in a fresh temporary directory (opening it upgrades it).
fn fixture_copy() -> tempfile::TempDir {
    fixture_copy_of("workspace-schema-v1")
}

/// A copy of the fixture `tests/fixtures/<name>` in a fresh temporary directory.
fn fixture_copy_of(name: &str) -> tempfile::TempDir {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/{name}"));
    copy(&fixture, dir.path());
    dir
}

fn schema_version(root: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(root.join(milonga::DATABASE_FILE)).unwrap();
    conn.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn schema_v1_workspace_upgrades_in_place_and_keeps_its_results() {
    let _counting = counting();
    let dir = fixture_copy();
    assert_eq!(schema_version(dir.path()), 1);
    let ws = Workspace::open(dir.path()).unwrap();
    assert_eq!(schema_version(dir.path()), milonga::METADATA_SCHEMA_VERSION);
    assert_eq!(milonga::METADATA_SCHEMA_VERSION, 3);

    let (numbers, scale) = fixture_steps();
    let before = (runs("Numbers"), runs("Scale"));
    assert_eq!(*scale.result(&ws).unwrap(), vec![0, 3, 6, 9, 12]);
    assert_eq!(*numbers.result(&ws).unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(
        (runs("Numbers"), runs("Scale")),
        before,
        "the stored results are read, not computed again"
    );
    // The old records have no pre-image or provenance; explain says so instead of failing.
    let info = ws.step_info(&scale.unique_id().unwrap()).unwrap().unwrap();
    assert_eq!(info.preimage, None);
    assert_eq!(info.provenance, None);
    assert_eq!(info.arguments().unwrap(), None);
    assert!(ws.verify().unwrap().problems.is_empty());
    assert!(ws.runs().unwrap().is_empty());

    // The upgraded workspace takes new steps, runs and their pre-images.
    let wider = Scale {
        numbers: Numbers { n: 5 }.into(),
        factor: 4,
    };
    let outcome = milonga::Executor::new(&ws)
        .with_progress(false)
        .with_run_name("after-upgrade")
        .run([milonga::DynStep::new(wider)])
        .unwrap();
    assert!(outcome.is_success());
    let run = ws.run("after-upgrade").unwrap();
    assert_eq!(
        *run.result::<Scale>("Scale").unwrap(),
        vec![0, 4, 8, 12, 16]
    );
    let why = ws.explain(&run.step("Scale").unwrap().unique_id).unwrap();
    assert!(
        why.differences.iter().any(|d| matches!(d,
            milonga::Difference::NoPreimage { unique_id } if *unique_id == scale.unique_id().unwrap())),
        "{why}"
    );

    // A second open finds the new schema and changes nothing.
    drop(ws);
    let again = Workspace::open(dir.path()).unwrap();
    assert_eq!(again.runs().unwrap().len(), 1);
}

#[test]
fn schema_v1_opened_read_only_is_read_without_upgrading() {
    let _counting = counting();
    let dir = fixture_copy();
    let ws = Workspace::open_read_only(dir.path()).unwrap();
    let (numbers, scale) = fixture_steps();
    assert_eq!(*scale.result(&ws).unwrap(), vec![0, 3, 6, 9, 12]);
    assert_eq!(*numbers.result(&ws).unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(ws.steps().unwrap().len(), 2);
    assert!(ws.runs().unwrap().is_empty());
    drop(ws);
    assert_eq!(
        schema_version(dir.path()),
        1,
        "a read-only open writes nothing"
    );
}

#[test]
fn concurrent_opens_of_a_schema_v1_workspace_upgrade_it_once() {
    let _counting = counting();
    let dir = fixture_copy();
    let path = dir.path().to_owned();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let ws = Workspace::open(&path).unwrap();
                ws.steps().unwrap().len()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 2);
    }
    assert_eq!(schema_version(&path), milonga::METADATA_SCHEMA_VERSION);
    let conn = rusqlite::Connection::open(path.join(milonga::DATABASE_FILE)).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn newer_schema_is_refused_with_an_error_naming_the_versions() {
    let _counting = counting();
    let dir = fixture_copy();
    drop(Workspace::open(dir.path()).unwrap());
    milonga_tests::tamper_database(dir.path(), "UPDATE schema_version SET version = 4");
    for read_only in [false, true] {
        let err = if read_only {
            Workspace::open_read_only(dir.path())
        } else {
            Workspace::open(dir.path())
        }
        .unwrap_err();
        assert!(
            matches!(
                err,
                milonga::Error::SchemaTooNew {
                    found: 4,
                    supported: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("newer milonga"), "{text}");
        assert!(text.contains(milonga::DATABASE_FILE), "{text}");
    }
    assert_eq!(schema_version(dir.path()), 4, "refusing writes nothing");
}

#[test]
fn schema_v2_workspace_upgrades_in_place_and_keeps_its_runs_and_results() {
    let _counting = counting();
    let dir = fixture_copy_of("workspace-schema-v2");
    assert_eq!(schema_version(dir.path()), 2);
    let ws = Workspace::open(dir.path()).unwrap();
    assert_eq!(schema_version(dir.path()), 3);

    let (numbers, scale, other) = fixture_v2_steps();
    let before = (runs("Numbers"), runs("Scale"));
    let run = ws.run(V2_RUN).unwrap();
    assert_eq!(*run.result::<Scale>("Scale").unwrap(), vec![0, 3, 6, 9, 12]);
    assert_eq!(*numbers.result(&ws).unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(*other.result(&ws).unwrap(), vec![0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(
        (runs("Numbers"), runs("Scale")),
        before,
        "the stored results are read, not computed again"
    );
    // Schema-2 records keep their pre-images and provenance; they have no result size until a
    // listing fills it in.
    let info = ws.step_info(&scale.unique_id().unwrap()).unwrap().unwrap();
    assert!(info.preimage.is_some());
    assert!(info.provenance.is_some());
    assert_eq!(info.result_size, None);
    assert_eq!(ws.runs().unwrap().len(), 1);
    assert!(ws.verify().unwrap().problems.is_empty());

    // A step completed after the upgrade records its size: the same as a fresh workspace's.
    let wider = Scale {
        numbers: Numbers { n: 5 }.into(),
        factor: 4,
    };
    assert_eq!(*wider.result(&ws).unwrap(), vec![0, 4, 8, 12, 16]);
    let size = ws
        .step_info(&wider.unique_id().unwrap())
        .unwrap()
        .unwrap()
        .result_size;
    let fresh = Workspace::memory().unwrap();
    wider.result(&fresh).unwrap();
    let fresh_size = fresh
        .step_info(&wider.unique_id().unwrap())
        .unwrap()
        .unwrap()
        .result_size;
    assert!(size.is_some_and(|n| n > 0), "{size:?}");
    assert_eq!(size, fresh_size);
}

#[test]
fn schema_v2_opened_read_only_is_read_without_upgrading() {
    let _counting = counting();
    let dir = fixture_copy_of("workspace-schema-v2");
    let ws = Workspace::open_read_only(dir.path()).unwrap();
    let run = ws.run(V2_RUN).unwrap();
    assert_eq!(*run.result::<Scale>("Scale").unwrap(), vec![0, 3, 6, 9, 12]);
    let steps = ws.steps().unwrap();
    assert_eq!(steps.len(), 3);
    assert!(steps.iter().all(|s| s.result_size.is_none()));
    drop(ws);
    assert_eq!(
        schema_version(dir.path()),
        2,
        "a read-only open writes nothing"
    );
}

#[test]
fn completed_steps_record_the_size_of_their_result() {
    let _counting = counting();
    let ws = Workspace::memory().unwrap();
    let (numbers, scale, other) = fixture_v2_steps();
    for id in [
        scale.result(&ws).map(|_| scale.unique_id().unwrap()),
        other.result(&ws).map(|_| other.unique_id().unwrap()),
    ] {
        let id = id.unwrap();
        let info = ws.step_info(&id).unwrap().unwrap();
        let files: u64 = ws
            .artifact(&id)
            .unwrap()
            .files()
            .iter()
            .map(|f| f.len)
            .sum();
        assert_eq!(info.result_size, Some(files), "{id}");
    }
    let _ = numbers;
}
