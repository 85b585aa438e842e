//! Every built-in format and codec through the SDK test kit (`milonga_sdk::testing`), with the
//! allocation meter on.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use milonga_formats::{
    BytesFormat, JsonCodec, JsonFormat, PostcardCodec, PostcardFormat, TextFormat,
};
use milonga_sdk::testing::{check_codec, check_format, meter_installed};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

milonga_sdk::allocation_meter!();

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u32,
    name: String,
    tags: Vec<u8>,
    score: Option<i16>,
    counts: BTreeMap<String, u64>,
    shape: Shape,
    nested: Vec<Vec<u16>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Dot,
    Circle(u32),
    Rect { w: u16, h: u16 },
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Dot),
        any::<u32>().prop_map(Shape::Circle),
        (any::<u16>(), any::<u16>()).prop_map(|(w, h)| Shape::Rect { w, h }),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    (
        any::<u32>(),
        ".{0,12}",
        proptest::collection::vec(any::<u8>(), 0..24),
        any::<Option<i16>>(),
        proptest::collection::btree_map("[a-z]{0,6}", any::<u64>(), 0..5),
        shape(),
        proptest::collection::vec(proptest::collection::vec(any::<u16>(), 0..4), 0..4),
    )
        .prop_map(|(id, name, tags, score, counts, shape, nested)| Record {
            id,
            name,
            tags,
            score,
            counts,
            shape,
            nested,
        })
}

#[test]
fn the_allocation_meter_is_on() {
    assert!(meter_installed());
}

#[test]
fn postcard_format_records() {
    check_format(&PostcardFormat, record());
}

#[test]
fn postcard_format_scalars_and_strings() {
    check_format(&PostcardFormat, any::<u64>());
    check_format(&PostcardFormat, any::<(bool, char, i128)>());
    check_format(&PostcardFormat, ".{0,40}");
    check_format(&PostcardFormat, proptest::collection::vec(".{0,3}", 0..20));
}

#[test]
fn json_format_records() {
    check_format(&JsonFormat, record());
}

#[test]
fn json_format_scalars_and_strings() {
    check_format(&JsonFormat, any::<i64>());
    check_format(&JsonFormat, ".{0,40}");
    check_format(
        &JsonFormat,
        proptest::collection::vec(any::<Option<u8>>(), 0..20),
    );
}

#[test]
fn text_format() {
    check_format(&TextFormat, ".{0,80}");
}

#[test]
fn bytes_format() {
    check_format(&BytesFormat, proptest::collection::vec(any::<u8>(), 0..200));
}

#[test]
fn postcard_codec() {
    check_codec(&PostcardCodec, record());
    check_codec(&PostcardCodec, any::<(u8, i64, Option<u32>)>());
}

#[test]
fn json_codec() {
    check_codec(&JsonCodec, record());
    check_codec(&JsonCodec, ".{0,20}");
}

mod sqlite {
    use std::collections::BTreeMap;

    use milonga_formats::{
        DatasetDict, SqliteDatasetDict, SqliteDatasetDictFormat, SqliteDict, SqliteDictFormat,
        SqliteSequence, SqliteSequenceFormat,
    };
    use milonga_sdk::testing::{Files, FormatCheck};
    use milonga_sdk::{Envelope, Error, Result};
    use proptest::prelude::*;

    /// Rewrites the envelope row of the SQLite file to `version` (the version lives in the
    /// `milonga_meta` table, not at the start of the file, so the kit needs to be told).
    fn bump_sqlite_envelope(files: &mut Files, version: u32) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let mut bumped = false;
        for (_, bytes) in files.iter_mut() {
            let path = dir.path().join("db.sqlite");
            std::fs::write(&path, &*bytes).unwrap();
            let Ok(conn) = rusqlite::Connection::open(&path) else {
                continue;
            };
            let Ok(env): rusqlite::Result<Vec<u8>> = conn.query_row(
                "SELECT value FROM milonga_meta WHERE key = 'envelope'",
                [],
                |r| r.get(0),
            ) else {
                continue;
            };
            let (mut env, _) = Envelope::decode(&env, "meta").unwrap();
            env.format_version = version;
            let mut new = Vec::new();
            env.encode_into(&mut new).unwrap();
            conn.execute_batch("DROP TRIGGER IF EXISTS milonga_immutable_milonga_meta_UPDATE")
                .unwrap();
            conn.execute(
                "UPDATE milonga_meta SET value = ?1 WHERE key = 'envelope'",
                [new],
            )
            .unwrap();
            drop(conn);
            *bytes = std::fs::read(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            bumped = true;
        }
        bumped
    }

    fn items(seq: &SqliteSequence<(u32, String)>) -> Result<Vec<(u32, String)>> {
        seq.iter().collect()
    }

    #[test]
    fn sqlite_sequence() {
        let format = SqliteSequenceFormat::<(u32, String)>::new();
        FormatCheck::lazy(
            &format,
            proptest::collection::vec((any::<u32>(), ".{0,8}"), 0..40),
            |v: &Vec<(u32, String)>| v.clone(),
            |seq: SqliteSequence<(u32, String)>| items(&seq),
        )
        .with_random_access(|seq| Ok(seq.len()), |seq, i| seq.get(i), items)
        .with_newer_version(bump_sqlite_envelope)
        // SQLite does not notice every truncation: a file cut inside its last page (which it
        // may never read) still opens and reads. The engine's content hash catches those
        // before the format sees them; here, a truncated file only must not panic.
        .with_truncation_must_fail(false)
        .with_cases(12)
        .assert();
    }

    type Value = (u32, String);

    /// Every entry, read by iterating; each one must also be found by key.
    fn dict_entries(dict: &SqliteDict<String, Value>) -> Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        for entry in dict.iter() {
            let (k, v) = entry?;
            let by_key = dict.get(&k)?;
            if by_key.as_ref() != Some(&v) || !dict.contains(&k)? {
                return Err(Error::decode(format!(
                    "key {k:?}: iterating gives {v:?}, get gives {by_key:?}"
                )));
            }
            out.insert(k, v);
        }
        if out.len() as u64 != dict.len() {
            return Err(Error::decode(format!(
                "len() is {}, iterating gives {} entries",
                dict.len(),
                out.len()
            )));
        }
        Ok(out)
    }

    #[test]
    fn sqlite_dict() {
        let format = SqliteDictFormat::<String, Value>::new();
        FormatCheck::lazy(
            &format,
            proptest::collection::btree_map(".{0,6}", (any::<u32>(), ".{0,8}"), 0..30),
            |m: &BTreeMap<String, Value>| m.clone().into_iter().collect::<Vec<_>>(),
            |dict: SqliteDict<String, Value>| dict_entries(&dict),
        )
        .with_newer_version(bump_sqlite_envelope)
        // As for the sequence: SQLite may not notice a cut inside its last page.
        .with_truncation_must_fail(false)
        .with_cases(8)
        .assert();
    }

    type Splits = DatasetDict<Vec<Value>, String>;

    fn splits(dd: SqliteDatasetDict<Value, String>) -> Result<Splits> {
        let mut splits = BTreeMap::new();
        for (name, seq) in &dd.splits {
            splits.insert(name.clone(), seq.iter().collect::<Result<Vec<_>>>()?);
        }
        Ok(DatasetDict {
            splits,
            metadata: dd.metadata,
        })
    }

    #[test]
    fn sqlite_dataset_dict() {
        let format = SqliteDatasetDictFormat::<Value, String>::new();
        let strategy = (
            proptest::collection::btree_map(
                "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,7}",
                proptest::collection::vec((any::<u32>(), ".{0,6}"), 0..12),
                0..3,
            ),
            ".{0,12}",
        )
            .prop_map(|(splits, metadata)| DatasetDict { splits, metadata });
        FormatCheck::lazy(&format, strategy, Splits::clone, splits)
            // The split files are SQLite sequences: a cut inside a last page may go unseen.
            .with_truncation_must_fail(false)
            .with_cases(8)
            .assert();
    }
}
