//! `JsonLinesFormat` and `TextLinesFormat`: plain files other tools read (golden bytes, `.zst`
//! parts that standard zstd decodes), the SDK kit's lazy-format checks with random access and
//! the allocation meter, resume after a crash, and hostile bytes in the index and the parts.
// Test code: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use milonga_formats::chunked::Compression;
use milonga_formats::{JsonLinesFormat, LinesReader, Stream, TextLinesFormat};
use milonga_sdk::testing::{check_resume, meter_installed, Crash, FormatCheck, ResumeCheck};
use milonga_sdk::{Error, Format, MemoryArtifact};
use proptest::prelude::*;

milonga_sdk::allocation_meter!();

type Row = (u32, String, Option<i16>);

fn rows() -> impl Strategy<Value = Vec<Row>> {
    proptest::collection::vec((any::<u32>(), ".{0,8}", any::<Option<i16>>()), 0..60)
}

fn text_lines() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("[^\n]{0,12}", 0..60)
}

fn collect<T>(reader: LinesReader<T>) -> milonga_sdk::Result<Vec<T>> {
    reader.iter().collect()
}

#[test]
fn the_allocation_meter_is_on() {
    assert!(meter_installed());
}

#[test]
fn jsonl_parts_are_plain_json_lines_with_sorted_keys() {
    let format = JsonLinesFormat::<BTreeMap<String, u32>>::new().with_part_size(20);
    let artifact = MemoryArtifact::new();
    let items: Vec<BTreeMap<String, u32>> = (0..4u32)
        .map(|i| BTreeMap::from([("b".to_owned(), i), ("a".to_owned(), i * 10)]))
        .collect();
    format.write(Stream::new(items.clone()), &artifact).unwrap();
    // Each part is sealed once it holds 20 bytes: two lines of 15 bytes each.
    assert_eq!(
        artifact.file("parts/000000-0-2.jsonl").unwrap(),
        b"{\"a\":0,\"b\":0}\n{\"a\":10,\"b\":1}\n"
    );
    assert_eq!(
        artifact.file("parts/000001-2-2.jsonl").unwrap(),
        b"{\"a\":20,\"b\":2}\n{\"a\":30,\"b\":3}\n"
    );
    // The index: envelope, 4 items, 2 parts of (count, text length, compression).
    let mut index = b"MLGE\x01\x0dmilonga.jsonl\x01\x00\x00\x00".to_vec();
    index.extend_from_slice(&4u64.to_le_bytes());
    index.extend_from_slice(&2u32.to_le_bytes());
    for len in [29u64, 30] {
        index.extend_from_slice(&2u64.to_le_bytes());
        index.extend_from_slice(&len.to_le_bytes());
        index.push(0);
    }
    assert_eq!(artifact.file("index").unwrap(), index);
    let reader = format.read(artifact.handle()).unwrap();
    assert_eq!(reader.len().unwrap(), 4);
    assert_eq!(reader.part_files().unwrap().len(), 2);
    assert_eq!(collect(reader.clone()).unwrap(), items);
    assert_eq!(reader.get(3).unwrap(), items[3]);
    assert!(matches!(
        reader.get(4),
        Err(Error::OutOfRange {
            index: 4,
            len: 4,
            ..
        })
    ));
}

/// The example of `docs/FORMAT.md` §8.4.
#[test]
fn text_lines_bytes_match_the_format_doc_example() {
    let artifact = MemoryArtifact::new();
    let format = TextLinesFormat::new().with_part_size(8);
    format
        .write(Stream::new(["ab", "cdefgh"].map(String::from)), &artifact)
        .unwrap();
    assert_eq!(artifact.snapshot().len(), 2);
    assert_eq!(
        artifact.file("parts/000000-0-2.txt").unwrap(),
        b"ab\ncdefgh\n"
    );
    let mut index = b"MLGE\x01\x12milonga.text_lines\x01\x00\x00\x00".to_vec();
    index.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    index.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(artifact.file("index").unwrap(), index);
}

#[test]
fn zst_parts_are_standard_frames_that_concatenate_to_the_whole_text() {
    let format = TextLinesFormat::new()
        .with_part_size(1000)
        .with_compression(Compression::Zstd { level: 3 });
    let lines: Vec<String> = (0..500).map(|i| format!("line {i} of the text")).collect();
    let artifact = MemoryArtifact::new();
    format.write(Stream::new(lines.clone()), &artifact).unwrap();
    let reader = format.read(artifact.handle()).unwrap();
    assert!(reader.part_files().unwrap().len() > 5);
    let mut whole = Vec::new();
    for name in reader.part_files().unwrap() {
        assert!(name.ends_with(".txt.zst"), "{name}");
        let part = artifact.file(&name).unwrap();
        // What `zstd -d` does: a standard frame, with its content size and a checksum.
        whole.extend(zstd::stream::decode_all(&part[..]).unwrap());
    }
    let expected: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(String::from_utf8(whole).unwrap(), expected);
    assert_eq!(collect(reader.clone()).unwrap(), lines);
    assert_eq!(reader.get(321).unwrap(), lines[321]);
}

#[test]
fn a_line_cannot_hold_a_newline() {
    let artifact = MemoryArtifact::new();
    let err = TextLinesFormat::new()
        .write(
            Stream::new(["ok".to_owned(), "two\nlines".to_owned()]),
            &artifact,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err:?}");
    assert!(artifact.file("index").is_none());
}

#[test]
fn a_missing_or_damaged_part_is_an_error_naming_it() {
    let format = TextLinesFormat::new().with_part_size(8);
    let artifact = MemoryArtifact::new();
    let lines: Vec<String> = (0..10).map(|i| format!("number {i}")).collect();
    format.write(Stream::new(lines), &artifact).unwrap();
    let name = "parts/000003-3-1.txt";
    let mut bytes = artifact.file(name).unwrap();
    // A line cut short.
    bytes.pop();
    let damaged = MemoryArtifact::new();
    for (n, b) in artifact.snapshot() {
        damaged.set_file(&n, if n == name { bytes.clone() } else { b });
    }
    let reader = format.read(damaged.handle()).unwrap();
    let err = reader.get(3).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file, .. } if file.contains(name)),
        "{err:?}"
    );
    assert_eq!(reader.get(2).unwrap(), "number 2");
    let errors: Vec<_> = reader.iter().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    // Invalid UTF-8 in a line is a decode error at its offset.
    let bad = MemoryArtifact::new();
    for (n, b) in artifact.snapshot() {
        bad.set_file(
            &n,
            if n == name {
                b"num\xffer 3\n".to_vec()
            } else {
                b
            },
        );
    }
    let err = format.read(bad.handle()).unwrap().get(3).unwrap_err();
    assert!(matches!(err, Error::Decode { offset: 3, .. }), "{err:?}");
    // A part the index names that is not there.
    let missing = MemoryArtifact::new();
    for (n, b) in artifact.snapshot() {
        if n != name {
            missing.set_file(&n, b);
        }
    }
    assert!(matches!(
        format.read(missing.handle()),
        Err(Error::MissingFile { file }) if file == name
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes after a valid envelope in the index: an error or a reader, never a panic or
    /// an allocation driven by the part count.
    #[test]
    fn any_index_bytes_give_an_error_or_a_reader(payload: Vec<u8>) {
        let artifact = MemoryArtifact::new();
        let mut index = Vec::new();
        milonga_sdk::Envelope::new("milonga.text_lines", 1).encode_into(&mut index).unwrap();
        index.extend_from_slice(&payload);
        artifact.set_file("index", index);
        if let Ok(reader) = TextLinesFormat::new().read(artifact.handle()) {
            let _ = reader.iter().count();
        }
    }
}

#[test]
fn json_lines_pass_the_kit_with_random_access() {
    // Every file of every generated value is mutated: a few parts per value keep this fast.
    let format = JsonLinesFormat::<Row>::new().with_part_size(300);
    FormatCheck::lazy(&format, rows(), |v| Stream::new(v.clone()), collect)
        .with_random_access(|r| r.len(), |r, i| r.get(i), |r| collect(r.clone()))
        .with_cases(16)
        .assert();
}

#[test]
fn compressed_text_lines_pass_the_kit_with_random_access() {
    let format = TextLinesFormat::new()
        .with_part_size(100)
        .with_compression(Compression::Zstd { level: 1 });
    FormatCheck::lazy(&format, text_lines(), |v| Stream::new(v.clone()), collect)
        .with_random_access(|r| r.len(), |r, i| r.get(i), |r| collect(r.clone()))
        .with_cases(16)
        .assert();
}

milonga_sdk::format_tests!(
    plain_text_lines,
    lazy TextLinesFormat::new().with_part_size(16),
    text_lines(),
    make = |v: &Vec<String>| Stream::new(v.clone()),
    collect = collect,
);

#[test]
fn json_lines_resume_after_a_crash() {
    check_resume(
        &JsonLinesFormat::<Row>::new().with_part_size(24),
        rows(),
        Stream::try_new,
        collect,
    );
}

#[test]
fn compressed_text_lines_resume_after_errors_and_panics() {
    let format = TextLinesFormat::new()
        .with_part_size(10)
        .with_compression(Compression::Zstd { level: 3 });
    ResumeCheck::new(&format, text_lines(), Stream::try_new, collect)
        .with_crashes(&[Crash::Error, Crash::Panic])
        .with_cases(16)
        .assert();
}

/// A `MemoryArtifact` seen by a reader while a writer fills it: `Writing` until `done` is set,
/// `Failed` once `failed` holds a reason.
#[derive(Clone, Default)]
struct Followed {
    inner: MemoryArtifact,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl milonga_sdk::ArtifactReader for Followed {
    fn describe(&self) -> String {
        "followed lines".into()
    }
    fn files(&self) -> Vec<milonga_sdk::FileEntry> {
        self.inner.files()
    }
    fn open(&self, name: &str) -> milonga_sdk::Result<Box<dyn milonga_sdk::ReadSeek>> {
        self.inner.open(name)
    }
    fn bytes(&self, name: &str) -> milonga_sdk::Result<milonga_sdk::SharedBytes> {
        self.inner.bytes(name)
    }
    fn local_path(&self, name: &str) -> milonga_sdk::Result<Option<std::path::PathBuf>> {
        self.inner.local_path(name)
    }
    fn status(&self) -> milonga_sdk::ArtifactStatus {
        use std::sync::atomic::Ordering;
        if let Some(why) = self.failed.lock().unwrap().clone() {
            milonga_sdk::ArtifactStatus::Failed(why)
        } else if self.done.load(Ordering::SeqCst) {
            milonga_sdk::ArtifactStatus::Complete
        } else {
            milonga_sdk::ArtifactStatus::Writing
        }
    }
    fn wait_for_change(
        &self,
        known: usize,
        timeout: std::time::Duration,
    ) -> milonga_sdk::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        while self.inner.files().len() <= known
            && self.status() == milonga_sdk::ArtifactStatus::Writing
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }
}

impl Followed {
    fn handle(&self) -> milonga_sdk::ArtifactHandle {
        std::sync::Arc::new(self.clone())
    }

    fn finish(&self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Lines `0..n`, produced slowly enough that a follower starts before most parts exist.
fn slow_lines(range: std::ops::Range<u32>) -> impl Iterator<Item = String> + Send {
    range.map(|i| {
        if i % 20 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        format!("line {i}")
    })
}

fn lines(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

fn followed_format() -> TextLinesFormat {
    TextLinesFormat::new()
        .with_part_size(64)
        .with_compression(Compression::Zstd { level: 1 })
}

#[test]
fn a_reader_follows_lines_until_the_writer_completes() {
    let art = Followed::default();
    let n = 600;
    // Opened before anything is written: no index yet, so the reader follows.
    let reader = followed_format().read(art.handle()).unwrap();
    assert!(!reader.is_complete());
    let iterating = {
        let reader = reader.clone();
        std::thread::spawn(move || reader.iter().collect::<Result<Vec<_>, _>>())
    };
    let writer = {
        let art = art.clone();
        std::thread::spawn(move || {
            followed_format()
                .write(Stream::new(slow_lines(0..n)), &art.inner)
                .unwrap();
            art.finish();
        })
    };
    // A lookup past what is written waits for the part that holds it.
    assert_eq!(
        reader.get(u64::from(n) - 1).unwrap(),
        format!("line {}", n - 1)
    );
    assert_eq!(iterating.join().unwrap().unwrap(), lines(0..n));
    assert_eq!(reader.len().unwrap(), u64::from(n));
    assert!(reader.is_complete());
    assert!(matches!(
        reader.get(u64::from(n)),
        Err(Error::OutOfRange { len, .. }) if len == u64::from(n)
    ));
    writer.join().unwrap();
    // The parts the follower read are the index's parts.
    let whole = followed_format().read(art.inner.handle()).unwrap();
    assert_eq!(whole.part_files().unwrap(), reader.part_files().unwrap());
}

#[test]
fn a_failed_writer_ends_followed_lines_with_writer_died_after_its_durable_lines() {
    let art = Followed::default();
    let reader = followed_format().read(art.handle()).unwrap();
    let consumer = {
        let reader = reader.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            for item in reader.iter() {
                match item {
                    Ok(line) => got.push(line),
                    Err(e) => return (got, Some(e)),
                }
            }
            (got, None)
        })
    };
    let items = slow_lines(0..300)
        .map(Ok)
        .chain(std::iter::once(Err("out of disk")));
    let r = followed_format().write(Stream::try_new(items), &art.inner);
    assert!(matches!(r, Err(Error::Source(_))), "{r:?}");
    let durable = followed_format().durable_items(&art.inner).unwrap();
    assert!(durable > 0 && durable < 300, "{durable}");
    *art.failed.lock().unwrap() = Some("the step failed: out of disk".into());
    let (got, err) = consumer.join().unwrap();
    assert_eq!(got, lines(0..durable as u32));
    assert!(
        matches!(&err, Some(Error::WriterDied { items, reason, .. })
            if *items == durable && reason.contains("out of disk")),
        "{err:?}"
    );
    // Asking for the length, or an item past the durable lines, fails the same way.
    assert!(matches!(reader.len(), Err(Error::WriterDied { .. })));
    assert!(matches!(reader.get(durable), Err(Error::WriterDied { .. })));
    assert_eq!(
        reader.get(durable - 1).unwrap(),
        format!("line {}", durable - 1)
    );
}

#[test]
fn a_follower_reads_on_through_a_write_resumed_after_a_killed_writer() {
    let art = Followed::default();
    // The first attempt dies after some parts; they stay durable.
    let items = slow_lines(0..200)
        .map(Ok)
        .chain(std::iter::once(Err("killed")));
    assert!(followed_format()
        .write(Stream::try_new(items), &art.inner)
        .is_err());
    let durable = followed_format().durable_items(&art.inner).unwrap();
    assert!(durable > 0);
    // A follower of the second attempt reads the first attempt's parts, then the new ones.
    let reader = followed_format().read(art.handle()).unwrap();
    assert_eq!(reader.get(0).unwrap(), "line 0");
    let consumer = {
        let reader = reader.clone();
        std::thread::spawn(move || reader.iter().collect::<Result<Vec<_>, _>>())
    };
    let rest = slow_lines(durable as u32..500);
    followed_format()
        .write(Stream::new(rest), &art.inner)
        .unwrap();
    art.finish();
    assert_eq!(consumer.join().unwrap().unwrap(), lines(0..500));
    assert_eq!(reader.len().unwrap(), 500);
}

#[test]
fn a_complete_artifact_without_an_index_is_missing_the_index_not_followed() {
    let art = Followed::default();
    let items = lines(0..50)
        .into_iter()
        .map(Ok)
        .chain(std::iter::once(Err("stop")));
    assert!(followed_format()
        .write(Stream::try_new(items), &art.inner)
        .is_err());
    art.finish();
    let e = followed_format().read(art.handle()).unwrap_err();
    assert!(
        matches!(&e, Error::MissingFile { file } if file == "index"),
        "{e:?}"
    );
}
