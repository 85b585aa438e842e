//! Only regular files of the recorded length are objects: a FIFO, a symbolic link, a directory
//! or a file of another length at an object path is a typed error at once (never a hang, never
//! a read of a hostile size), and publishing onto such a path replaces it without touching what
//! a link points to.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use milonga::sdk::Error as SdkError;
use milonga::store::{LocalStore, ObjectStore};
use milonga::{ContentId, Error, Step, Workspace};
use milonga_tests::Numbers;

/// Runs `f` on another thread and fails the test if it has not returned within 20 s (a hang).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// A completed step whose data object is replaced by `make(path)`; returns the workspace
/// directory, the step's id and the object path.
fn with_replaced_object(
    make: impl FnOnce(&Path),
) -> (tempfile::TempDir, String, PathBuf, ContentId) {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = Numbers { n: 20_000 };
    step.result(&ws).unwrap();
    let uid = step.unique_id().unwrap();
    let file = ws.artifact(&uid).unwrap().files()[0].clone();
    let path = LocalStore::open(dir.path()).unwrap().object_path(&file.id);
    std::fs::remove_file(&path).unwrap();
    make(&path);
    (dir, uid, path, file.id)
}

fn assert_not_regular(err: &Error, kind: &str) {
    let Error::Format(SdkError::Corrupt { reason, .. }) = err else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert!(
        reason.contains(kind) && reason.contains("not a regular file"),
        "{reason}"
    );
}

#[test]
fn a_fifo_at_an_object_path_is_an_error_not_a_hang() {
    let (dir, uid, path, _) = with_replaced_object(|p| {
        rustix::fs::mkfifoat(rustix::fs::CWD, p, rustix::fs::Mode::from_raw_mode(0o600))
            .expect("mkfifo");
    });
    let root = dir.path().to_owned();
    let err = within("result() on a FIFO", move || {
        let ws = Workspace::open(&root).unwrap();
        Numbers { n: 20_000 }.result(&ws).map(|_| ()).unwrap_err()
    });
    assert_not_regular(&err, "a FIFO");
    let root = dir.path().to_owned();
    let report = within("verify on a FIFO", move || {
        Workspace::open(&root).unwrap().verify().unwrap()
    });
    assert_eq!(report.problems.len(), 1);
    assert!(report.problems[0].unique_id == uid);
    assert!(report.problems[0].error.contains("FIFO"), "{:?}", report);
    // rm and a re-run replace the FIFO with the object.
    let ws = Workspace::open(dir.path()).unwrap();
    ws.remove_step(&uid).unwrap();
    assert_eq!(Numbers { n: 20_000 }.result(&ws).unwrap().len(), 20_000);
    assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
}

#[test]
fn a_directory_at_an_object_path_is_an_error() {
    let (dir, _, _, _) = with_replaced_object(|p| std::fs::create_dir(p).unwrap());
    let ws = Workspace::open(dir.path()).unwrap();
    let err = Numbers { n: 20_000 }.result(&ws).map(|_| ()).unwrap_err();
    assert_not_regular(&err, "a directory");
}

#[test]
fn a_symlink_at_an_object_path_is_an_error_and_publishing_never_touches_its_target() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious");
    std::fs::write(&target, b"not milonga's").unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&target)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let t = target.clone();
    let (dir, uid, path, _) = with_replaced_object(|p| std::os::unix::fs::symlink(&t, p).unwrap());
    let ws = Workspace::open(dir.path()).unwrap();
    let err = Numbers { n: 20_000 }.result(&ws).map(|_| ()).unwrap_err();
    assert_not_regular(&err, "a symbolic link");
    ws.remove_step(&uid).unwrap();
    assert_eq!(Numbers { n: 20_000 }.result(&ws).unwrap().len(), 20_000);
    assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    assert_eq!(std::fs::read(&target).unwrap(), b"not milonga's");
    assert_eq!(std::fs::metadata(&target).unwrap().modified().unwrap(), old);
}

#[test]
fn a_file_of_another_length_is_refused_before_it_is_read() {
    // A sparse 4 GiB file: mapping and hashing it would take seconds and gigabytes.
    let (dir, _, _, id) = with_replaced_object(|p| {
        let f = std::fs::File::create(p).unwrap();
        f.set_len(4 << 30).unwrap();
    });
    let root = dir.path().to_owned();
    let err = within("result() on a 4 GiB file", move || {
        let ws = Workspace::open(&root).unwrap();
        Numbers { n: 20_000 }.result(&ws).map(|_| ()).unwrap_err()
    });
    let Error::Format(SdkError::Corrupt { reason, .. }) = &err else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert!(reason.contains("4294967296 bytes"), "{reason}");
    let store = LocalStore::open(dir.path()).unwrap();
    let err = within("a range read of a 4 GiB file", move || {
        store.read_range(&id, 1000, 0..10).unwrap_err()
    });
    assert!(matches!(err, SdkError::Corrupt { .. }), "{err:?}");
}
