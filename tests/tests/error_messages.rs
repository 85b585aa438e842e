//! Errors that tell the truth: each names what is wrong and where, with a typed variant.

use milonga::{Error, Workspace};
use milonga_tests::tamper_database;

#[test]
fn opening_a_regular_file_says_it_is_not_a_workspace_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, b"hello").unwrap();
    let e = Workspace::open(&file).unwrap_err();
    assert!(
        matches!(&e, Error::NotAWorkspace { path, .. } if *path == file),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("is a file") && text.contains("afile"),
        "{text}"
    );
    assert!(!text.contains("os error 17"), "{text}");
    // The same from the inspecting open (the CLI's), which must not create anything.
    let e = Workspace::open_existing(&file).unwrap_err();
    assert!(matches!(&e, Error::NotAWorkspace { .. }), "{e:?}");
    assert!(e.to_string().contains("is a file"), "{e}");
    let e = Workspace::open_read_only(&file).unwrap_err();
    assert!(matches!(&e, Error::NotAWorkspace { .. }), "{e:?}");
}

#[test]
fn engine_io_errors_are_engine_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, b"hello").unwrap();
    // A workspace below a regular file cannot be created: an I/O error naming the path.
    let e = Workspace::open(file.join("ws")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("afile"), "{e}");
}

#[test]
fn a_schema_version_stored_as_text_is_a_typed_error_naming_the_database() {
    let dir = tempfile::tempdir().unwrap();
    drop(Workspace::open(dir.path()).unwrap());
    let db = tamper_database(dir.path(), "UPDATE schema_version SET version = 'one';");
    let e = Workspace::open(dir.path()).unwrap_err();
    assert!(
        matches!(&e, Error::BadSchema { path, .. } if *path == db),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains(&db.display().to_string()), "{text}");
    assert!(text.contains("schema version"), "{text}");
}

#[test]
fn a_dropped_schema_version_table_is_an_error_not_version_1() {
    let dir = tempfile::tempdir().unwrap();
    drop(Workspace::open(dir.path()).unwrap());
    let db = tamper_database(dir.path(), "DROP TABLE schema_version;");
    let e = Workspace::open(dir.path())
        .expect_err("a database with steps but no schema version is not silently version 1");
    assert!(
        matches!(&e, Error::BadSchema { path, .. } if *path == db),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains(&db.display().to_string()), "{text}");
    assert!(text.contains("schema version"), "{text}");
}
