//! SqliteSequenceFormat, SqliteSequenceBuilder, SqliteDictFormat and the dataset dict.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use milonga_formats::{
    DatasetDict, JsonCodec, SqliteCompression, SqliteDatasetDictFormat, SqliteDictFormat,
    SqliteSequenceBuilder, SqliteSequenceFormat,
};
use milonga_sdk::{Error, Format, MemoryArtifact};
use proptest::prelude::*;

fn write_seq(items: Vec<String>, compression: SqliteCompression) -> MemoryArtifact {
    let format = SqliteSequenceFormat::<String>::new().with_compression(compression);
    let artifact = MemoryArtifact::new();
    format.write(items, &artifact).unwrap();
    artifact
}

fn read_seq(
    artifact: &MemoryArtifact,
) -> milonga_sdk::Result<milonga_formats::SqliteSequence<String>> {
    Format::<Vec<String>>::read(&SqliteSequenceFormat::<String>::new(), artifact.handle())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn roundtrip_and_random_access_match_a_vec(
        items in proptest::collection::vec(".{0,40}", 0..300),
        mode in 0u8..4,
        per_block in 1u32..6,
        queries in proptest::collection::vec((0u64..400, 0u64..400), 0..20),
    ) {
        let compression = match mode {
            0 => SqliteCompression::None,
            1 => SqliteCompression::zstd(),
            2 => SqliteCompression::default(),
            _ => SqliteCompression::ZstdBlocks {
                items_per_block: per_block,
                level: 1,
                dictionary_bytes: 1024,
            },
        };
        let artifact = write_seq(items.clone(), compression);
        let seq = read_seq(&artifact).unwrap();
        let n = items.len() as u64;
        prop_assert_eq!(seq.len(), n);
        let all: Vec<String> = seq.iter().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(&all, &items);
        for (a, b) in queries {
            match seq.get(a) {
                Ok(v) => prop_assert_eq!(&v, &items[a as usize]),
                Err(Error::OutOfRange { index, len, .. }) => {
                    prop_assert!(a >= n);
                    prop_assert_eq!((index, len), (a, n));
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
            let (lo, hi) = (a.min(b), a.max(b));
            match seq.get_range(lo..hi) {
                Ok(v) => prop_assert_eq!(&v[..], &items[lo as usize..hi as usize]),
                Err(Error::OutOfRange { .. }) => prop_assert!(hi > n),
                Err(e) => prop_assert!(false, "{e}"),
            }
            if hi <= n {
                let view = seq.slice(lo..hi).unwrap();
                prop_assert_eq!(view.len(), hi - lo);
                let inner: Vec<String> = view.iter().collect::<Result<_, _>>().unwrap();
                prop_assert_eq!(&inner[..], &items[lo as usize..hi as usize]);
                if hi > lo {
                    prop_assert_eq!(view.get(hi - lo - 1).unwrap(), items[hi as usize - 1].clone());
                    let past = matches!(view.get(hi - lo), Err(Error::OutOfRange { .. }));
                    prop_assert!(past);
                }
            }
        }
    }
}

#[test]
fn writing_is_deterministic() {
    let items: Vec<String> = (0..5000).map(|i| format!("item number {i}")).collect();
    for c in [
        SqliteCompression::None,
        SqliteCompression::zstd(),
        SqliteCompression::default(),
    ] {
        let a = write_seq(items.clone(), c).file("data.sqlite").unwrap();
        let b = write_seq(items.clone(), c).file("data.sqlite").unwrap();
        assert!(a == b, "{c:?}");
    }
}

#[test]
fn a_file_that_is_not_sqlite_is_corrupt() {
    let artifact = write_seq(vec!["a".into()], SqliteCompression::None);
    artifact.set_file(
        "data.sqlite",
        b"this is not a database, just text".repeat(200),
    );
    let r = read_seq(&artifact);
    assert!(
        matches!(r, Err(Error::Corrupt { ref file, .. }) if file.contains("data.sqlite")),
        "{r:?}"
    );
    artifact.set_file("data.sqlite", Vec::new());
    assert!(read_seq(&artifact).is_err());
}

#[test]
fn a_sqlite_file_with_another_schema_is_wrong_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    let artifact = MemoryArtifact::new();
    artifact.set_file("data.sqlite", std::fs::read(&path).unwrap());
    let r = read_seq(&artifact);
    assert!(matches!(r, Err(Error::WrongFormat { .. })), "{r:?}");
}

#[test]
fn another_codec_or_format_is_wrong_format() {
    let artifact = write_seq(vec!["a".into()], SqliteCompression::None);
    let json = SqliteSequenceFormat::<String, JsonCodec>::with_codec(JsonCodec);
    let r = Format::<Vec<String>>::read(&json, artifact.handle());
    assert!(matches!(r, Err(Error::WrongFormat { .. })), "{r:?}");
    let dict = SqliteDictFormat::<String, String>::new();
    let r = Format::<Vec<(String, String)>>::read(&dict, artifact.handle());
    assert!(matches!(r, Err(Error::WrongFormat { .. })), "{r:?}");
}

fn patch(artifact: &MemoryArtifact, sql: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.sqlite");
    std::fs::write(&path, artifact.file("data.sqlite").unwrap()).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    artifact.set_file("data.sqlite", std::fs::read(&path).unwrap());
}

#[test]
fn a_newer_version_is_unsupported() {
    let artifact = write_seq(vec!["a".into()], SqliteCompression::None);
    let mut env = Vec::new();
    milonga_sdk::Envelope::new("milonga.sqlite_sequence", 99)
        .encode_into(&mut env)
        .unwrap();
    let hex: String = env.iter().map(|b| format!("{b:02x}")).collect();
    patch(
        &artifact,
        &format!(
            "DROP TRIGGER milonga_immutable_milonga_meta_UPDATE; \
             UPDATE milonga_meta SET value = x'{hex}' WHERE key = 'envelope';"
        ),
    );
    let r = read_seq(&artifact);
    assert!(
        matches!(r, Err(Error::UnsupportedVersion { found: 99, .. })),
        "{r:?}"
    );
}

#[test]
fn a_row_that_does_not_decode_is_a_decode_error_naming_the_item() {
    for c in [SqliteCompression::None, SqliteCompression::zstd()] {
        let items: Vec<String> = (0..100).map(|i| format!("value {i}")).collect();
        let artifact = write_seq(items, c);
        patch(
            &artifact,
            "DROP TRIGGER milonga_immutable_items_UPDATE; \
             UPDATE items SET v = x'ff' WHERE i = 42;",
        );
        let seq = read_seq(&artifact).unwrap();
        assert_eq!(seq.get(41).unwrap(), "value 41");
        let r = seq.get(42);
        assert!(
            matches!(r, Err(Error::Decode { ref file, ref reason, .. }) if file.contains("data.sqlite") && reason.contains("item 42")),
            "{r:?}"
        );
        let mut it = seq.iter();
        let ok = it.by_ref().take_while(|r| r.is_ok()).count();
        assert_eq!(ok, 42);
        assert!(it.next().is_none(), "the iterator stops after an error");
    }
}

#[test]
fn a_missing_row_or_truncated_table_is_corrupt() {
    let items: Vec<String> = (0..100).map(|i| format!("value {i}")).collect();
    let artifact = write_seq(items.clone(), SqliteCompression::None);
    patch(
        &artifact,
        "DROP TRIGGER milonga_immutable_items_DELETE; DELETE FROM items WHERE i = 7;",
    );
    let seq = read_seq(&artifact).unwrap();
    assert!(matches!(seq.get(7), Err(Error::Corrupt { .. })));
    assert!(seq.iter().any(|r| matches!(r, Err(Error::Corrupt { .. }))));
    let artifact = write_seq(items, SqliteCompression::None);
    patch(
        &artifact,
        "DROP TRIGGER milonga_immutable_items_DELETE; DELETE FROM items WHERE i = 99;",
    );
    assert!(matches!(read_seq(&artifact), Err(Error::Corrupt { .. })));
}

#[test]
fn a_finished_artifact_refuses_writers() {
    let artifact = write_seq(vec!["a".into(), "b".into()], SqliteCompression::None);
    let path = artifact
        .handle()
        .local_path("data.sqlite")
        .unwrap()
        .unwrap();
    // A foreign writer through SQLite is stopped by the triggers.
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert!(conn
        .execute("INSERT INTO items (i, v) VALUES (2, x'00')", [])
        .is_err());
    assert!(conn.execute("UPDATE items SET v = x'00'", []).is_err());
    assert!(conn.execute("DELETE FROM items", []).is_err());
    drop(conn);
    // A builder opened on it may read its length but not append.
    let mut b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
    assert!(b.is_sealed());
    assert_eq!(b.len(), 2);
    assert!(matches!(
        b.append(&"c".to_string()),
        Err(Error::Unsupported(_))
    ));
    drop(b);
    let seq = read_seq(&artifact).unwrap();
    assert_eq!(seq.get_range(..).unwrap(), vec!["a", "b"]);
}

#[test]
fn builder_resumes_after_drop_and_finishes_as_the_artifact() {
    for c in [SqliteCompression::None, SqliteCompression::zstd()] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("work.sqlite");
        let mut b =
            SqliteSequenceBuilder::<u64>::open_with(&path, milonga_formats::PostcardCodec, c)
                .unwrap();
        b.with_commit_every(1000);
        b.extend(0..2500u64).unwrap();
        b.commit().unwrap();
        b.extend(2500..2600u64).unwrap();
        drop(b);
        let mut b = SqliteSequenceBuilder::<u64>::open(&path).unwrap();
        assert_eq!(b.len(), 2600);
        let start = b.len();
        b.extend(start..10_000).unwrap();
        let format = SqliteSequenceFormat::<u64>::new();
        let artifact = MemoryArtifact::new();
        format.write(b, &artifact).unwrap();
        assert!(!path.exists(), "the file was moved into the artifact");
        let seq = Format::<Vec<u64>>::read(&format, artifact.handle()).unwrap();
        assert_eq!(seq.len(), 10_000);
        assert!(seq.iter().enumerate().all(|(i, v)| v.unwrap() == i as u64));
        assert_eq!(seq.get(9_999).unwrap(), 9_999);
    }
}

#[test]
fn a_live_builder_holds_the_file_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("work.sqlite");
    let mut b = SqliteSequenceBuilder::<u64>::open(&path).unwrap();
    b.with_commit_every(100);
    b.extend(0..250u64).unwrap();
    // Simulate a kill: leak the builder so neither Drop nor close runs.
    std::mem::forget(b);
    // The leaked connection still holds the lock within this process: a second builder is
    // refused while it lives.
    let r = SqliteSequenceBuilder::<u64>::open(&path);
    assert!(
        matches!(r, Err(Error::Io { ref source, .. }) if source.kind() == std::io::ErrorKind::ResourceBusy),
        "{r:?}"
    );
}

#[test]
fn builder_keeps_committed_rows_after_the_process_aborts() {
    if let Ok(path) = std::env::var("MILONGA_SQLITE_CHILD") {
        let mut b = SqliteSequenceBuilder::<u64>::open(&path).unwrap();
        b.with_commit_every(100);
        b.extend(0..250u64).unwrap();
        std::process::abort(); // 200 committed, 50 not
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("work.sqlite");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "builder_keeps_committed_rows_after_the_process_aborts",
            "--nocapture",
        ])
        .env("MILONGA_SQLITE_CHILD", &path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let mut b = SqliteSequenceBuilder::<u64>::open(&path).unwrap();
    assert_eq!(b.len(), 200);
    let start = b.len();
    b.extend(start..300).unwrap();
    let artifact = MemoryArtifact::new();
    b.finish(&artifact).unwrap();
    let seq =
        Format::<Vec<u64>>::read(&SqliteSequenceFormat::<u64>::new(), artifact.handle()).unwrap();
    assert_eq!(seq.get_range(..).unwrap(), (0..300).collect::<Vec<u64>>());
}

#[test]
fn second_builder_on_the_same_file_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("work.sqlite");
    let mut a = SqliteSequenceBuilder::<u64>::open(&path).unwrap();
    a.extend(0..10u64).unwrap();
    a.commit().unwrap();
    let r = SqliteSequenceBuilder::<u64>::open(&path);
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    drop(a);
    assert_eq!(SqliteSequenceBuilder::<u64>::open(&path).unwrap().len(), 10);
}

#[test]
fn dict_roundtrip_with_string_and_tuple_keys() {
    for c in [SqliteCompression::None, SqliteCompression::zstd()] {
        let format = SqliteDictFormat::<String, Vec<u32>>::new().with_compression(c);
        let artifact = MemoryArtifact::new();
        let entries: Vec<(String, Vec<u32>)> = (0..3000u32)
            .map(|i| (format!("key{i}"), vec![i, i * 2]))
            .collect();
        format.write(entries.clone(), &artifact).unwrap();
        let dict = Format::<Vec<(String, Vec<u32>)>>::read(&format, artifact.handle()).unwrap();
        assert_eq!(dict.len(), 3000);
        assert_eq!(dict.get("key17").unwrap(), Some(vec![17, 34]));
        assert_eq!(dict.get("nope").unwrap(), None);
        assert!(dict.contains("key2999").unwrap());
        let oracle: BTreeMap<String, Vec<u32>> = entries.into_iter().collect();
        let got: BTreeMap<String, Vec<u32>> = dict.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(got, oracle);
        assert_eq!(dict.keys().count(), 3000);
    }
    let format = SqliteDictFormat::<(u32, String), f64>::new();
    let artifact = MemoryArtifact::new();
    format
        .write(
            vec![
                ((1, "a".into()), 1.5),
                ((2, "b".into()), 2.5),
                ((1, "a".into()), 3.5),
            ],
            &artifact,
        )
        .unwrap();
    let dict = Format::<Vec<((u32, String), f64)>>::read(&format, artifact.handle()).unwrap();
    assert_eq!(dict.len(), 2);
    assert_eq!(dict.get(&(1, "a".to_string())).unwrap(), Some(3.5));
}

#[test]
fn dict_bytes_do_not_depend_on_input_order() {
    let format = SqliteDictFormat::<String, u64>::new();
    let entries: Vec<(String, u64)> = (0..2000u64).map(|i| (format!("k{i}"), i)).collect();
    let a = MemoryArtifact::new();
    format.write(entries.clone(), &a).unwrap();
    let b = MemoryArtifact::new();
    format.write(entries.into_iter().rev(), &b).unwrap();
    assert!(a.file("data.sqlite") == b.file("data.sqlite"));
}

#[test]
fn dataset_dict_roundtrip_from_iterators_and_builders() {
    let format = SqliteDatasetDictFormat::<String, BTreeMap<String, u32>>::new();
    let mut splits = BTreeMap::new();
    splits.insert(
        "train".to_string(),
        (0..100).map(|i| format!("t{i}")).collect::<Vec<_>>(),
    );
    splits.insert("validation".to_string(), vec!["v".to_string()]);
    let metadata: BTreeMap<String, u32> = [("version".to_string(), 3)].into();
    let artifact = MemoryArtifact::new();
    format
        .write(
            DatasetDict {
                splits,
                metadata: metadata.clone(),
            },
            &artifact,
        )
        .unwrap();
    let dd = Format::<DatasetDict<Vec<String>, _>>::read(&format, artifact.handle()).unwrap();
    assert_eq!(dd.metadata, metadata);
    assert_eq!(dd.names().collect::<Vec<_>>(), vec!["train", "validation"]);
    assert_eq!(dd.split("train").unwrap().get(42).unwrap(), "t42");

    let dir = tempfile::tempdir().unwrap();
    let mut splits = BTreeMap::new();
    for name in ["a", "b"] {
        let mut b =
            SqliteSequenceBuilder::<String>::open(dir.path().join(format!("{name}.sqlite")))
                .unwrap();
        b.extend((0..10).map(|i| format!("{name}{i}"))).unwrap();
        splits.insert(name.to_string(), b);
    }
    let artifact = MemoryArtifact::new();
    format
        .write(
            DatasetDict {
                splits,
                metadata: BTreeMap::new(),
            },
            &artifact,
        )
        .unwrap();
    let dd = Format::<DatasetDict<Vec<String>, _>>::read(&format, artifact.handle()).unwrap();
    assert_eq!(dd.split("b").unwrap().get(9).unwrap(), "b9");

    let bad = DatasetDict {
        splits: [("../x".to_string(), Vec::<String>::new())].into(),
        metadata: BTreeMap::new(),
    };
    assert!(format.write(bad, &MemoryArtifact::new()).is_err());
}
