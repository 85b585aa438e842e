//! The version 2 block layout of SqliteSequenceFormat (`compression = zstd_blocks`): random
//! access across block boundaries, the builder's partial block after a crash, bad blocks.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use milonga_formats::{SqliteCompression, SqliteSequenceBuilder, SqliteSequenceFormat};
use milonga_sdk::{Error, Format, MemoryArtifact};

fn blocks(items_per_block: u32, dictionary_bytes: u32) -> SqliteCompression {
    SqliteCompression::ZstdBlocks {
        items_per_block,
        level: 3,
        dictionary_bytes,
    }
}

fn items(n: u64) -> Vec<String> {
    (0..n)
        .map(|i| format!("item {i} of a sequence stored in blocks"))
        .collect()
}

fn write(items: Vec<String>, compression: SqliteCompression) -> MemoryArtifact {
    let artifact = MemoryArtifact::new();
    SqliteSequenceFormat::<String>::new()
        .with_compression(compression)
        .write(items, &artifact)
        .unwrap();
    artifact
}

fn read(artifact: &MemoryArtifact) -> milonga_sdk::Result<milonga_formats::SqliteSequence<String>> {
    Format::<Vec<String>>::read(&SqliteSequenceFormat::<String>::new(), artifact.handle())
}

fn sql(artifact: &MemoryArtifact) -> (tempfile::TempDir, rusqlite::Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.sqlite");
    std::fs::write(&path, artifact.file("data.sqlite").unwrap()).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    (dir, conn)
}

fn patch(artifact: &MemoryArtifact, statements: &str) {
    let (dir, conn) = sql(artifact);
    conn.execute_batch(statements).unwrap();
    drop(conn);
    artifact.set_file(
        "data.sqlite",
        std::fs::read(dir.path().join("x.sqlite")).unwrap(),
    );
}

#[test]
fn the_default_is_blocks_and_the_file_says_so() {
    assert_eq!(SqliteCompression::default(), SqliteCompression::blocks());
    let artifact = write(items(100), SqliteCompression::default());
    let (_dir, conn) = sql(&artifact);
    let meta = |key: &str| -> Vec<u8> {
        conn.query_row(
            "SELECT value FROM milonga_meta WHERE key = ?1",
            [key],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(meta("compression"), b"zstd_blocks");
    assert_eq!(meta("block_items"), 8u64.to_le_bytes());
    assert_eq!(meta("len"), 100u64.to_le_bytes());
    // Envelope: MLGE, layout 1, format id, version 2.
    let env = meta("envelope");
    assert!(env.starts_with(b"MLGE"), "{env:?}");
    assert!(env.ends_with(&2u32.to_le_bytes()), "{env:?}");
    let blocks: i64 = conn
        .query_row("SELECT COUNT(*) FROM blocks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(blocks, 13, "100 items in blocks of 8");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["blocks", "milonga_meta"]);
    let seq = read(&artifact).unwrap();
    assert_eq!(seq.format_version(), 2);
}

#[test]
fn gets_across_block_boundaries_match_the_items() {
    for (per_block, dict) in [(1, 0), (3, 0), (16, 16 * 1024), (64, 1024)] {
        let want = items(1000);
        let artifact = write(want.clone(), blocks(per_block, dict));
        let seq = read(&artifact).unwrap();
        assert_eq!(seq.len(), 1000);
        // Forwards, backwards and strided: the block cache must never serve a wrong block.
        for i in (0..1000).chain((0..1000).rev()).chain((0..1000).step_by(7)) {
            assert_eq!(seq.get(i).unwrap(), want[i as usize], "B={per_block} i={i}");
        }
        for (a, b) in [
            (0, 1000),
            (15, 17),
            (16, 32),
            (999, 1000),
            (500, 500),
            (1, 999),
        ] {
            assert_eq!(seq.get_range(a..b).unwrap(), want[a as usize..b as usize]);
            let view = seq.slice(a..b).unwrap();
            let got: Vec<String> = view.iter().collect::<Result<_, _>>().unwrap();
            assert_eq!(got, want[a as usize..b as usize]);
        }
        let all: Vec<String> = seq.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(all, want);
    }
}

#[test]
fn a_dictionary_is_trained_once_there_are_enough_items() {
    // Enough for the sample (1024 items): a dictionary; a tiny file: none.
    for (n, trained) in [(5000u64, true), (3, false)] {
        let artifact = write(items(n), SqliteCompression::default());
        let (_dir, conn) = sql(&artifact);
        let dict: Vec<u8> = conn
            .query_row(
                "SELECT value FROM milonga_meta WHERE key = 'zstd_dict'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(!dict.is_empty(), trained, "n={n}");
        assert_eq!(read(&artifact).unwrap().get_range(..).unwrap(), items(n));
    }
}

#[test]
fn an_empty_sequence_has_no_blocks() {
    let artifact = write(Vec::new(), SqliteCompression::default());
    let seq = read(&artifact).unwrap();
    assert_eq!(seq.len(), 0);
    assert_eq!(seq.iter().count(), 0);
    assert!(matches!(seq.get(0), Err(Error::OutOfRange { .. })));
}

#[test]
fn a_block_that_does_not_decode_is_a_decode_error_naming_its_items() {
    let want = items(100);
    for bad in ["x'ff'", "x''", "zeroblob(64)"] {
        let artifact = write(want.clone(), blocks(16, 0));
        patch(
            &artifact,
            &format!(
                "DROP TRIGGER milonga_immutable_blocks_UPDATE; \
                 UPDATE blocks SET v = {bad} WHERE b = 2;"
            ),
        );
        let seq = read(&artifact).unwrap();
        assert_eq!(seq.get(31).unwrap(), want[31]);
        let r = seq.get(40);
        assert!(
            matches!(r, Err(Error::Decode { ref file, ref reason, .. })
                if file.contains("data.sqlite") && reason.contains("block 2 (items 32..48)")),
            "{bad}: {r:?}"
        );
        // The block after still reads (the failed block is not cached).
        assert_eq!(seq.get(48).unwrap(), want[48]);
        assert!(seq.get(33).is_err());
        let mut it = seq.iter();
        let ok = it.by_ref().take_while(|r| r.is_ok()).count();
        assert_eq!(ok, 32, "{bad}");
        assert!(it.next().is_none(), "the iterator stops after an error");
    }
}

#[test]
fn a_block_with_another_items_frame_is_a_decode_error() {
    // Block 0 moved into block 1's row: the right size, so only the content can tell... it
    // cannot, but the last block (4 items) holds 16 items' worth: refused.
    let artifact = write(items(100), blocks(16, 0));
    patch(
        &artifact,
        "DROP TRIGGER milonga_immutable_blocks_UPDATE; \
         UPDATE blocks SET v = (SELECT v FROM blocks WHERE b = 0) WHERE b = 6;",
    );
    let seq = read(&artifact).unwrap();
    let r = seq.get(99);
    assert!(matches!(r, Err(Error::Decode { .. })), "{r:?}");
}

#[test]
fn missing_blocks_and_bad_meta_are_corrupt() {
    let artifact = write(items(100), blocks(16, 0));
    patch(
        &artifact,
        "DROP TRIGGER milonga_immutable_blocks_DELETE; DELETE FROM blocks WHERE b = 3;",
    );
    let seq = read(&artifact).unwrap();
    assert!(matches!(seq.get(50), Err(Error::Corrupt { .. })));
    assert_eq!(seq.get(47).unwrap(), items(100)[47]);
    assert!(seq.iter().any(|r| matches!(r, Err(Error::Corrupt { .. }))));

    let cases = [
        // The table ends early.
        "DROP TRIGGER milonga_immutable_blocks_DELETE; DELETE FROM blocks WHERE b = 6;",
        // A block too many.
        "DROP TRIGGER milonga_immutable_blocks_INSERT; INSERT INTO blocks VALUES (7, x'00');",
        // Impossible block sizes.
        "DROP TRIGGER milonga_immutable_milonga_meta_UPDATE; \
         UPDATE milonga_meta SET value = zeroblob(8) WHERE key = 'block_items';",
        "DROP TRIGGER milonga_immutable_milonga_meta_UPDATE; \
         UPDATE milonga_meta SET value = x'00' WHERE key = 'block_items';",
        "DROP TRIGGER milonga_immutable_milonga_meta_DELETE; \
         DELETE FROM milonga_meta WHERE key = 'block_items';",
    ];
    for case in cases {
        let artifact = write(items(100), blocks(16, 0));
        patch(&artifact, case);
        let r = read(&artifact);
        assert!(matches!(r, Err(Error::Corrupt { .. })), "{case}: {r:?}");
    }
}

#[test]
fn blocks_in_a_version_1_envelope_are_corrupt() {
    let artifact = write(items(10), SqliteCompression::default());
    let mut env = Vec::new();
    milonga_sdk::Envelope::new("milonga.sqlite_sequence", 1)
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
    let r = read(&artifact);
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
}

#[test]
fn a_frame_claiming_a_huge_block_is_refused_before_allocating() {
    let artifact = write(items(100), blocks(16, 0));
    // A frame header (magic stripped) claiming 2^40 bytes of content.
    let mut frame = Vec::new();
    frame.push(0xe0); // single segment, 8-byte content size
    frame.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    patch(
        &artifact,
        &format!(
            "DROP TRIGGER milonga_immutable_blocks_UPDATE; \
             UPDATE blocks SET v = x'{hex}' WHERE b = 0;"
        ),
    );
    let r = read(&artifact).unwrap().get(0);
    assert!(
        matches!(r, Err(Error::Decode { ref reason, .. }) if reason.contains("claims")),
        "{r:?}"
    );
}

#[test]
fn a_finished_block_file_refuses_writers() {
    let artifact = write(items(40), SqliteCompression::default());
    let path = artifact
        .handle()
        .local_path("data.sqlite")
        .unwrap()
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert!(conn
        .execute("INSERT INTO blocks (b, v) VALUES (9, x'00')", [])
        .is_err());
    assert!(conn.execute("UPDATE blocks SET v = x'00'", []).is_err());
    assert!(conn.execute("DELETE FROM blocks", []).is_err());
    drop(conn);
    let mut b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
    assert!(b.is_sealed());
    assert_eq!(b.len(), 40);
    assert!(matches!(
        b.append(&"more".to_string()),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn builder_len_counts_the_open_block_after_a_drop() {
    for dict in [0, 16 * 1024] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("work.sqlite");
        let c = blocks(16, dict);
        let mut b =
            SqliteSequenceBuilder::<String>::open_with(&path, milonga_formats::PostcardCodec, c)
                .unwrap();
        b.with_commit_every(7);
        let want = items(6000);
        // The dictionary is decided (after 1024 items) when `dict > 0`; stop at 5003 to leave
        // a partial block.
        b.extend(&want[..5003]).unwrap();
        drop(b);
        let mut b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
        assert_eq!(b.len(), 5003, "dict={dict}");
        b.extend(&want[5003..5010]).unwrap();
        drop(b);
        let mut b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
        assert_eq!(b.len(), 5010);
        b.extend(&want[5010..]).unwrap();
        let artifact = MemoryArtifact::new();
        b.finish(&artifact).unwrap();
        let seq = read(&artifact).unwrap();
        assert_eq!(seq.get_range(..).unwrap(), want, "dict={dict}");
        let (_d, conn) = sql(&artifact);
        let pending: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'pending'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pending, 0, "the finished file has no pending table");
    }
}

#[test]
fn builder_keeps_exactly_the_committed_items_after_an_abort() {
    if let Ok(path) = std::env::var("MILONGA_SQLITE_BLOCKS_CHILD") {
        let mut b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
        b.with_commit_every(10);
        b.extend(items(4133)).unwrap(); // 4130 committed: 516 blocks of 8 + 2 pending, 3 lost
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("work.sqlite");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "builder_keeps_exactly_the_committed_items_after_an_abort",
            "--nocapture",
        ])
        .env("MILONGA_SQLITE_BLOCKS_CHILD", &path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let mut b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
    assert_eq!(b.len(), 4130);
    let want = items(5000);
    b.extend(&want[4130..]).unwrap();
    let artifact = MemoryArtifact::new();
    b.finish(&artifact).unwrap();
    assert_eq!(read(&artifact).unwrap().get_range(..).unwrap(), want);
}

#[test]
fn builder_and_one_shot_write_hold_the_same_items() {
    let want = items(777);
    let dir = tempfile::tempdir().unwrap();
    let mut b = SqliteSequenceBuilder::<String>::open(dir.path().join("w.sqlite")).unwrap();
    b.extend(&want).unwrap();
    let built = MemoryArtifact::new();
    b.finish(&built).unwrap();
    let written = write(want.clone(), SqliteCompression::default());
    let a = read(&built).unwrap();
    let b = read(&written).unwrap();
    assert_eq!(a.get_range(..).unwrap(), b.get_range(..).unwrap());
}

/// A frame header (magic stripped) claiming `size` bytes of content, as a SQL blob literal.
fn lying_frame(size: u64) -> String {
    let mut frame = vec![0xe0]; // single segment, 8-byte content size
    frame.extend_from_slice(&size.to_le_bytes());
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    format!("x'{hex}'")
}

#[test]
fn a_lying_frame_with_a_huge_recorded_max_value_len_is_refused_without_allocating() {
    // `max_value_len` comes from the file too: a hostile one must not license the allocation
    // a frame header asks for (2^63 + 5 bytes panicked with "capacity overflow"; 2^40 tried
    // to reserve a terabyte).
    for size in [(1u64 << 63) + 5, 1 << 40] {
        let artifact = write(items(100), blocks(16, 0));
        patch(
            &artifact,
            &format!(
                "DROP TRIGGER milonga_immutable_blocks_UPDATE; \
                 DROP TRIGGER milonga_immutable_milonga_meta_UPDATE; \
                 UPDATE milonga_meta SET value = x'ffffffffffffffff' WHERE key = 'max_value_len'; \
                 UPDATE blocks SET v = {} WHERE b = 0;",
                lying_frame(size)
            ),
        );
        let seq = read(&artifact).unwrap();
        let r = seq.get(0);
        assert!(
            matches!(r, Err(Error::Decode { ref file, ref reason, .. })
                if file.contains("data.sqlite") && reason.contains("block 0")),
            "{size}: {r:?}"
        );
        assert!(matches!(seq.iter().next(), Some(Err(Error::Decode { .. }))));
        assert_eq!(seq.get(16).unwrap(), items(100)[16]);
    }
}

#[test]
fn a_lying_value_frame_with_a_huge_recorded_max_value_len_is_refused_without_allocating() {
    // The one-frame-per-value layout (version 1 sequences, dicts): the same check.
    for size in [(1u64 << 63) + 5, 1 << 40] {
        let artifact = write(
            items(100),
            SqliteCompression::Zstd {
                level: 3,
                dictionary_bytes: 0,
            },
        );
        patch(
            &artifact,
            &format!(
                "DROP TRIGGER milonga_immutable_items_UPDATE; \
                 DROP TRIGGER milonga_immutable_milonga_meta_UPDATE; \
                 UPDATE milonga_meta SET value = x'ffffffffffffffff' WHERE key = 'max_value_len'; \
                 UPDATE items SET v = {} WHERE i = 3;",
                lying_frame(size)
            ),
        );
        let seq = read(&artifact).unwrap();
        let r = seq.get(3);
        assert!(
            matches!(r, Err(Error::Decode { ref file, ref reason, .. })
                if file.contains("data.sqlite") && reason.contains("item 3")),
            "{size}: {r:?}"
        );
        assert_eq!(seq.get(4).unwrap(), items(100)[4]);
    }
}

/// Opens the builder file at `path` behind the builder's back and runs `statements` (the
/// builder must be dropped: it holds an exclusive lock).
fn patch_builder_file(path: &std::path::Path, statements: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(statements).unwrap();
}

#[test]
fn a_failed_append_is_not_counted_and_the_builder_reopens() {
    // An append whose SQLite write fails (simulated with a trigger; a full disk in real life)
    // was still counted: `len()` said one item too many, the next item went to the next index,
    // and the file could never be opened again ("pending item 6, expected item 5"), losing
    // every committed item.
    let want = items(40);
    for (table, c) in [
        ("pending", blocks(16, 0)),
        ("pending", blocks(16, 16 * 1024)),
        ("items", SqliteCompression::None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("work.sqlite");
        let codec = milonga_formats::PostcardCodec;
        let mut b = SqliteSequenceBuilder::<String>::open_with(&path, codec, c).unwrap();
        b.extend(&want[..3]).unwrap();
        drop(b);
        patch_builder_file(
            &path,
            &format!(
                "CREATE TRIGGER fail_once BEFORE INSERT ON {table} WHEN NEW.i = 5 \
                 AND (SELECT COUNT(*) FROM milonga_meta WHERE key = 'failed') = 0 \
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END;"
            ),
        );
        let mut b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
        b.extend(&want[3..5]).unwrap();
        assert!(b.append(&want[5]).is_err(), "{table}");
        assert_eq!(b.len(), 5, "{table}: the failed item is not counted");
        b.commit().unwrap();
        drop(b);
        patch_builder_file(
            &path,
            "INSERT INTO milonga_meta (key, value) VALUES ('failed', x'00');",
        );
        let mut b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
        assert_eq!(b.len(), 5, "{table}");
        b.extend(&want[5..]).unwrap();
        drop(b);
        let b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
        assert_eq!(b.len(), 40, "{table}");
        drop(b);
        patch_builder_file(&path, "DELETE FROM milonga_meta WHERE key = 'failed';");
        let b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
        let artifact = MemoryArtifact::new();
        b.finish(&artifact).unwrap();
        let seq = read(&artifact).unwrap();
        assert_eq!(seq.get_range(..).unwrap(), want, "{table}");
    }
}

#[test]
fn a_failed_block_write_keeps_the_block_and_later_items_stay_in_place() {
    // The write of a full block (or of the blocks waiting for the dictionary) fails once; the
    // next append succeeds. The failed block used to be dropped from memory, so the next block
    // was written in its place: items shifted, the block's items lost (here: the finished file
    // held 36 items for a length of 40).
    for (c, n, fail_below) in [(blocks(4, 0), 40, 8), (blocks(4, 16 * 1024), 2000, 1024)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("work.sqlite");
        let codec = milonga_formats::PostcardCodec;
        let b = SqliteSequenceBuilder::<String>::open_with(&path, codec, c).unwrap();
        drop(b);
        patch_builder_file(
            &path,
            &format!(
                "CREATE TRIGGER fail_once BEFORE INSERT ON blocks WHEN NEW.b = 1 \
                 AND (SELECT MAX(i) FROM pending) < {fail_below} \
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END;"
            ),
        );
        let want = items(n);
        let mut b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
        let k = fail_below as usize - 1;
        b.extend(&want[..k]).unwrap();
        assert!(b.append(&want[k]).is_err(), "{c:?}");
        assert_eq!(b.len(), fail_below, "{c:?}: the item is kept, in its block");
        b.extend(&want[k + 1..]).unwrap();
        b.commit().unwrap();
        drop(b);
        patch_builder_file(&path, "DROP TRIGGER fail_once;");
        let b = SqliteSequenceBuilder::<String>::open(&path).unwrap();
        assert_eq!(b.len(), n);
        let artifact = MemoryArtifact::new();
        b.finish(&artifact).unwrap();
        assert_eq!(
            read(&artifact).unwrap().get_range(..).unwrap(),
            want,
            "{c:?}"
        );
    }
}

#[test]
fn a_milonga_file_without_its_tables_is_corrupt_not_an_io_error() {
    // A file with milonga's application_id whose data or meta table is gone (or has other
    // columns) was an `Error::Io` ("SQLite: no such table"), as if the disk had failed.
    let cases = [
        (blocks(16, 0), "DROP TABLE blocks;"),
        (blocks(16, 0), "ALTER TABLE blocks RENAME COLUMN v TO w;"),
        (SqliteCompression::None, "DROP TABLE items;"),
        (
            SqliteCompression::zstd(),
            "ALTER TABLE items RENAME COLUMN v TO w;",
        ),
        (SqliteCompression::None, "DROP TABLE milonga_meta;"),
    ];
    for (c, case) in cases {
        let artifact = write(items(40), c);
        patch(&artifact, case);
        let r = read(&artifact).and_then(|s| {
            s.get(3)
                .and_then(|_| s.iter().collect::<Result<Vec<_>, _>>())
        });
        assert!(
            matches!(r, Err(Error::Corrupt { ref file, .. }) if file.contains("data.sqlite")),
            "{case}: {r:?}"
        );
    }
}
