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

/// A step's own error type, with a cause of its own.
#[derive(Debug)]
struct QuotaExceeded {
    cause: std::io::Error,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "quota exceeded")
    }
}

impl std::error::Error for QuotaExceeded {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

#[derive(serde::Serialize)]
struct OverQuota;

impl milonga::Step for OverQuota {
    const NAME: &'static str = "OverQuota";
    type Output = u32;
    type Format = milonga::PostcardFormat;
    fn run(&self, _ctx: &mut milonga::Context<'_>) -> Result<u32, milonga::BoxError> {
        Err(Box::new(QuotaExceeded {
            cause: std::io::Error::new(std::io::ErrorKind::StorageFull, "tenant volume is full"),
        }))
    }
}

/// Follows `e`'s source chain, returning each link's text.
fn chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        out.push(s.to_string());
        next = s.source();
    }
    out
}

fn the_step_error_of(e: &Error) -> &QuotaExceeded {
    match e {
        Error::StepFailed {
            source: Some(source),
            ..
        } => source
            .downcast_ref::<QuotaExceeded>()
            .unwrap_or_else(|| panic!("the source is not the step's error: {source:?}")),
        other => panic!("not StepFailed with a source: {other:?}"),
    }
}

#[test]
fn a_failed_step_keeps_its_error_as_the_source() {
    use milonga::Step;
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let e = OverQuota.result(&ws).unwrap_err();
    assert_eq!(
        the_step_error_of(&e).cause.kind(),
        std::io::ErrorKind::StorageFull
    );
    // The standard source chain reaches the step's error and its cause.
    let links = chain(&e);
    assert!(links.len() >= 3, "{links:?}");
    assert!(links[0].starts_with("step OverQuota-"), "{links:?}");
    assert_eq!(links[1], "quota exceeded", "{links:?}");
    assert_eq!(links[2], "tenant volume is full", "{links:?}");
    // The same through the executor's outcome.
    let outcome = milonga::Executor::new(&ws)
        .run([milonga::StepRef::new(OverQuota).erased()])
        .unwrap();
    let e = outcome.check().unwrap_err();
    the_step_error_of(&e);
    assert_eq!(chain(&e)[1..], links[1..], "{e:?}");
}

#[test]
fn a_failed_in_memory_step_keeps_its_error_for_every_caller() {
    #[derive(serde::Serialize)]
    struct OverQuotaInMemory;
    impl milonga::Step for OverQuotaInMemory {
        const NAME: &'static str = "OverQuotaInMemory";
        const CACHEABLE: bool = false;
        type Output = u32;
        type Format = milonga::PostcardFormat;
        fn run(&self, ctx: &mut milonga::Context<'_>) -> Result<u32, milonga::BoxError> {
            OverQuota.run(ctx)
        }
    }
    let ws = Workspace::memory().unwrap();
    let outcome = milonga::Executor::new(&ws)
        .run([milonga::StepRef::new(OverQuotaInMemory).erased()])
        .unwrap();
    let e = outcome.check().unwrap_err();
    assert_eq!(
        the_step_error_of(&e).cause.kind(),
        std::io::ErrorKind::StorageFull
    );
}

#[test]
fn an_item_error_of_a_stream_is_the_source_of_the_write_error() {
    use milonga::sdk::{Format, MemoryArtifact};
    let artifact = MemoryArtifact::new();
    let items = (0..10u32).map(Ok).chain(std::iter::once(Err(QuotaExceeded {
        cause: std::io::Error::other("no space"),
    })));
    let e = milonga::StreamFormat::<u32>::new()
        .write(milonga::Stream::try_new(items), &artifact)
        .unwrap_err();
    assert!(matches!(e, milonga::sdk::Error::Source(_)), "{e:?}");
    let source = std::error::Error::source(&e).expect("a source");
    assert!(
        source.downcast_ref::<QuotaExceeded>().is_some(),
        "{source:?}"
    );
    assert_eq!(
        chain(&e)[1..],
        ["quota exceeded".to_owned(), "no space".to_owned()]
    );
}

#[test]
fn an_engine_error_through_a_format_comes_back_as_itself() {
    let engine = Error::ReadOnly {
        path: "/ws".into(),
        operation: "running step X".into(),
    };
    let sdk = milonga::sdk::Error::backend(engine);
    assert!(matches!(sdk, milonga::sdk::Error::Backend(_)), "{sdk:?}");
    assert!(sdk.to_string().contains("read-only"), "{sdk}");
    let back = Error::from(sdk);
    assert!(
        matches!(&back, Error::ReadOnly { operation, .. } if operation == "running step X"),
        "{back:?}"
    );
    // An SDK error given as a backend error is not wrapped.
    let plain = milonga::sdk::Error::backend(milonga::sdk::Error::corrupt("f", 3, "bad"));
    assert!(
        matches!(plain, milonga::sdk::Error::Corrupt { offset: 3, .. }),
        "{plain:?}"
    );
    // Another backend's error stays a format error whose source is that error.
    let other = Error::from(milonga::sdk::Error::backend(std::io::Error::other(
        "s3 said no",
    )));
    assert!(matches!(&other, Error::Format(_)), "{other:?}");
    assert_eq!(other.to_string(), "s3 said no");
}

#[test]
fn unsupported_keeps_the_error_it_is_given() {
    let e = milonga::sdk::Error::unsupported(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no range reads",
    ));
    assert_eq!(e.to_string(), "unsupported: no range reads");
    let source = std::error::Error::source(&e).expect("a source");
    assert!(source.downcast_ref::<std::io::Error>().is_some());
    // A message works too.
    let e = milonga::sdk::Error::unsupported("sealed");
    assert_eq!(e.to_string(), "unsupported: sealed");
}
