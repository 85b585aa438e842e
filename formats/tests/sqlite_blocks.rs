//! The version 2 block layout of SqliteSequenceFormat (`compression = zstd_blocks`): random
//! access across block boundaries, the builder's partial block after a crash, bad blocks.

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
        .compression(compression)
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
        b.set_commit_every(7);
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
        b.set_commit_every(10);
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
