//! Version 1 SQLite sequence files, written by the version 1 code and kept in
//! `tests/fixtures/` forever: every later version must read them (and continue a version 1
//! builder file).

use milonga_formats::{SqliteSequenceBuilder, SqliteSequenceFormat};
use milonga_sdk::{Format, MemoryArtifact};

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The items every fixture holds (the building one: the first 250).
fn items() -> Vec<String> {
    (0..300)
        .map(|i| format!("fixture item {i}: {}", "ab".repeat(i % 7)))
        .collect()
}

/// The fixtures are never rewritten: their hashes are pinned.
#[test]
fn fixtures_are_unchanged() {
    for (name, hash) in [
        (
            "sqlite_sequence_v1_none.sqlite",
            "e36b7cc537ace80263c7fd15d73469ca121d5b8644cb8321366fb64da35af1a6",
        ),
        (
            "sqlite_sequence_v1_zstd.sqlite",
            "f7b895f3866892d1c1a14b0362950ee8cf6b31acae6384d43c213b8c9e7ba855",
        ),
        (
            "sqlite_sequence_v1_building.sqlite",
            "a599844d09c0fb97dad31658675604891dceb9192faa5df5d1e2f12136a36083",
        ),
    ] {
        assert_eq!(
            blake3::hash(&fixture(name)).to_hex().as_str(),
            hash,
            "{name}"
        );
    }
}

#[test]
fn version_1_files_are_read() {
    let want = items();
    for name in [
        "sqlite_sequence_v1_none.sqlite",
        "sqlite_sequence_v1_zstd.sqlite",
    ] {
        let artifact = MemoryArtifact::new();
        artifact.set_file("data.sqlite", fixture(name));
        let seq =
            Format::<Vec<String>>::read(&SqliteSequenceFormat::<String>::new(), artifact.handle())
                .unwrap();
        assert_eq!(seq.format_version(), 1, "{name}");
        assert_eq!(seq.len(), 300, "{name}");
        assert_eq!(seq.get_range(..).unwrap(), want, "{name}");
        assert_eq!(seq.get(299).unwrap(), want[299], "{name}");
        assert_eq!(seq.get(7).unwrap(), want[7], "{name}");
        let view = seq.slice(100..110).unwrap();
        assert_eq!(view.get_range(..).unwrap(), want[100..110], "{name}");
        assert!(seq.get(300).is_err(), "{name}");
    }
}

#[test]
fn a_version_1_builder_file_is_continued_in_its_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("work.sqlite");
    std::fs::write(&path, fixture("sqlite_sequence_v1_building.sqlite")).unwrap();
    let want = items();
    let mut b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
    assert_eq!(b.len(), 250);
    let start = b.len() as usize;
    b.extend(&want[start..]).unwrap();
    let artifact = MemoryArtifact::new();
    b.finish(&artifact).unwrap();
    let seq =
        Format::<Vec<String>>::read(&SqliteSequenceFormat::<String>::new(), artifact.handle())
            .unwrap();
    assert_eq!(seq.format_version(), 1);
    assert_eq!(seq.get_range(..).unwrap(), want);
}
