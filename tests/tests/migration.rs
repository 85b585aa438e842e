//! Workspaces written by earlier releases open and upgrade in place; a workspace written by a
//! newer milonga is refused with an error that says so.

use milonga::{Step, Workspace};
use milonga_tests::{runs, Numbers, Scale};

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
