//! The single-value formats: golden bytes, round-trips, and every kind of bad input.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// The allocation meter at the end of this file is a `GlobalAlloc`, which needs `unsafe`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use milonga_formats::{BytesFormat, Compression, JsonFormat, PostcardFormat, TextFormat};
use milonga_sdk::testing::{check_format, roundtrip, write_to_memory};
use milonga_sdk::{
    ArtifactWriter, Envelope, Error, FileEntry, FileWriter, Format, MemoryArtifact, SharedBytes,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u32,
    name: String,
    tags: Vec<u8>,
    score: Option<i16>,
}

fn record() -> Record {
    Record {
        id: 300,
        name: "ab".into(),
        tags: vec![1, 2],
        score: Some(-2),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Doc {
    z: u8,
    counts: HashMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Wide {
    a: u64,
    b: i64,
    c: String,
    d: Vec<u8>,
    e: Option<bool>,
    f: BTreeMap<String, u32>,
    g: Vec<(i32, char)>,
    h: Shape,
    x: f64,
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

fn finite_f64() -> impl Strategy<Value = f64> {
    prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO
}

/// Floats with at most 15 significant digits: every JSON parser reads them back exactly.
fn short_f64() -> impl Strategy<Value = f64> {
    (-1_000_000_000i64..1_000_000_000).prop_map(|n| n as f64 / 1000.0)
}

fn wide() -> impl Strategy<Value = Wide> {
    wide_with(finite_f64())
}

fn wide_with(x: impl Strategy<Value = f64>) -> impl Strategy<Value = Wide> {
    (
        (
            any::<u64>(),
            any::<i64>(),
            ".*",
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        (
            any::<Option<bool>>(),
            prop::collection::btree_map(".*", any::<u32>(), 0..8),
            prop::collection::vec((any::<i32>(), any::<char>()), 0..8),
            shape(),
            x,
        ),
    )
        .prop_map(|((a, b, c, d), (e, f, g, h, x))| Wide {
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            h,
            x,
        })
}

/// The bytes of the "data" file that `format` writes for `value`.
fn data_of<T, F: Format<T>>(format: &F, value: T) -> Vec<u8> {
    write_to_memory(format, value)
        .unwrap()
        .file("data")
        .expect("a data file")
}

/// An artifact whose only file is "data" with these bytes.
fn artifact_with(bytes: &[u8]) -> MemoryArtifact {
    let artifact = MemoryArtifact::new();
    artifact.set_file("data", bytes.to_vec());
    artifact
}

/// Reads a hand-made "data" file with `format`.
fn read_bytes<T, F: Format<T>>(format: &F, bytes: &[u8]) -> Result<F::Output, Error> {
    format.read(artifact_with(bytes).handle())
}

fn envelope(id: &str, version: u32) -> Vec<u8> {
    let mut out = Vec::new();
    Envelope::new(id, version).encode_into(&mut out).unwrap();
    out
}

/// Every error about stored bytes must name the file.
fn assert_names_data(e: &Error) {
    let file = match e {
        Error::Corrupt { file, .. }
        | Error::Decode { file, .. }
        | Error::WrongFormat { file, .. }
        | Error::UnsupportedVersion { file, .. }
        | Error::MissingFile { file }
        | Error::Io { path: file, .. } => file,
        other => panic!("unexpected error kind: {other:?}"),
    };
    assert_eq!(file, "data", "{e:?}");
    assert!(e.to_string().contains("data"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Golden bytes of version 2: the on-disk layouts this build writes. They must never change
// (zstd frames included: a change of the zstd library that changes them must be noticed).

/// `envelope(id, 2)` followed by `payload`.
fn v2(id: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = envelope(id, 2);
    out.extend_from_slice(payload);
    out
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn postcard_golden_bytes() {
    let bytes = data_of(&PostcardFormat, record());
    assert_eq!(
        bytes,
        b"MLGE\x01\x10milonga.postcard\x02\x00\x00\x00\
          \x00\
          \xac\x02\
          \x02ab\
          \x02\x01\x02\
          \x01\x03"
            .to_vec()
    );
    assert_eq!(
        data_of(&PostcardFormat, 7u8),
        b"MLGE\x01\x10milonga.postcard\x02\x00\x00\x00\x00\x07".to_vec()
    );
    // 602 bytes of postcard (length 600 = d8 04, then 600 times 07): compressed.
    assert_eq!(
        data_of(&PostcardFormat, vec![7u8; 600]),
        v2(PostcardFormat::ID, &hex(POSTCARD_ZSTD))
    );
    assert_eq!(
        data_of(&PostcardFormat::uncompressed(), vec![7u8; 600])[26..29],
        [0x00, 0xd8, 0x04]
    );
}

const POSTCARD_ZSTD: &str =
    "01 5a 02 00 00 00 00 00 00 28 b5 2f fd 60 5a 01 55 00 00 18 d8 04 07 01 00 54 2a 30 04";

#[test]
fn json_golden_bytes_sort_object_keys() {
    let doc = Doc {
        z: 7,
        counts: HashMap::from([("b".to_owned(), 2), ("a".to_owned(), 1)]),
    };
    assert_eq!(
        data_of(&JsonFormat, doc),
        b"MLGE\x01\x0cmilonga.json\x02\x00\x00\x00\x00{\"counts\":{\"a\":1,\"b\":2},\"z\":7}\n"
            .to_vec()
    );
    assert_eq!(
        data_of(&JsonFormat, record()),
        b"MLGE\x01\x0cmilonga.json\x02\x00\x00\x00\x00\
          {\"id\":300,\"name\":\"ab\",\"score\":-2,\"tags\":[1,2]}\n"
            .to_vec()
    );
    assert_eq!(
        data_of(&JsonFormat, 0.1f64),
        b"MLGE\x01\x0cmilonga.json\x02\x00\x00\x00\x000.1\n".to_vec()
    );
    // `[0,0,...,0]\n`: 602 bytes, compressed.
    assert_eq!(
        data_of(&JsonFormat, vec![0u8; 300]),
        v2(JsonFormat::ID, &hex(JSON_ZSTD))
    );
}

const JSON_ZSTD: &str =
    "01 5a 02 00 00 00 00 00 00 28 b5 2f fd 60 5a 01 65 00 00 28 5b 30 2c 5d 0a 01 00 52 aa dc 10";

#[test]
fn json_integer_keys_sort_as_strings_and_hand_edited_json_reads() {
    let map = HashMap::from([(9u32, true), (10, false)]);
    let bytes = data_of(&JsonFormat, map.clone());
    assert!(bytes.ends_with(b"\x00{\"10\":false,\"9\":true}\n"));
    for version in [1, 2] {
        let mut edited = envelope(JsonFormat::ID, version);
        if version == 2 {
            edited.push(0);
        }
        edited.extend_from_slice(b"{ \"9\": true,\n  \"10\": false }\n\n");
        assert_eq!(
            read_bytes::<HashMap<u32, bool>, _>(&JsonFormat, &edited).unwrap(),
            map
        );
    }
}

#[test]
fn text_golden_bytes() {
    assert_eq!(
        data_of(&TextFormat, "h\u{e9}llo".to_owned()),
        b"MLGE\x01\x0cmilonga.text\x02\x00\x00\x00\
          \x00\
          \x06\x00\x00\x00\x00\x00\x00\x00\
          h\xc3\xa9llo"
            .to_vec()
    );
    assert_eq!(
        data_of(&TextFormat, String::new()),
        b"MLGE\x01\x0cmilonga.text\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec()
    );
    assert_eq!(
        data_of(&TextFormat, "ab".repeat(300)),
        v2(TextFormat::ID, &hex(TEXT_ZSTD))
    );
}

const TEXT_ZSTD: &str =
    "01 58 02 00 00 00 00 00 00 28 b5 2f fd 60 58 01 4d 00 00 10 61 62 01 00 53 aa 1c 16";

#[test]
fn bytes_golden_bytes() {
    assert_eq!(
        data_of(&BytesFormat, vec![0x00, 0xff, 0x10]),
        b"MLGE\x01\x0dmilonga.bytes\x02\x00\x00\x00\
          \x00\
          \x03\x00\x00\x00\x00\x00\x00\x00\
          \x00\xff\x10"
            .to_vec()
    );
    assert_eq!(
        data_of(&BytesFormat, vec![0xab; 1000]),
        v2(BytesFormat::ID, &hex(BYTES_ZSTD))
    );
}

const BYTES_ZSTD: &str =
    "01 e8 03 00 00 00 00 00 00 28 b5 2f fd 60 e8 02 4d 00 00 10 ab ab 01 00 e3 2b 80 05";

/// The values of the fixture files in `tests/fixtures/value/`.
fn fixture_records() -> Vec<Record> {
    (0..24u32)
        .map(|i| Record {
            id: i * 1000,
            name: format!("record number {i} of the golden fixtures"),
            tags: (0..i as u8).collect(),
            score: if i % 3 == 0 {
                None
            } else {
                Some(i as i16 * -7)
            },
        })
        .collect()
}

fn fixture_doc() -> Doc {
    Doc {
        z: 7,
        counts: HashMap::from([("b".to_owned(), 2), ("a".to_owned(), 1)]),
    }
}

fn fixture_long_text() -> String {
    "the quick brown fox jumps over the lazy dog; ".repeat(30)
}

fn fixture_long_bytes() -> Vec<u8> {
    (0..1500u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/value")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each fixture with the value it holds, as a check that `format` reads it back: the name
/// without its `.vN.data` suffix, and a function that reads bytes and compares.
type FixtureCheck = (&'static str, Box<dyn Fn(&[u8]) -> Result<(), Error>>);

fn fixture_checks<P, J, T, B>(postcard: P, json: J, text: T, bytes: B) -> Vec<FixtureCheck>
where
    P: Format<Record, Output = Record>
        + Format<u64, Output = u64>
        + Format<Vec<Record>, Output = Vec<Record>>
        + Copy,
    J: Format<Doc, Output = Doc> + Format<Vec<Record>, Output = Vec<Record>> + Copy,
    T: Format<String, Output = String> + Copy,
    B: Format<Vec<u8>, Output = Vec<u8>> + Copy,
{
    fn eq<V: PartialEq + std::fmt::Debug>(got: V, want: V) -> Result<(), Error> {
        assert_eq!(got, want);
        Ok(())
    }
    vec![
        (
            "postcard_record",
            Box::new(move |b| eq(read_bytes::<Record, _>(&postcard, b)?, record())),
        ),
        (
            "postcard_u64_max",
            Box::new(move |b| eq(read_bytes::<u64, _>(&postcard, b)?, u64::MAX)),
        ),
        (
            "postcard_records",
            Box::new(move |b| {
                eq(
                    read_bytes::<Vec<Record>, _>(&postcard, b)?,
                    fixture_records(),
                )
            }),
        ),
        (
            "json_doc",
            Box::new(move |b| eq(read_bytes::<Doc, _>(&json, b)?, fixture_doc())),
        ),
        (
            "json_records",
            Box::new(move |b| eq(read_bytes::<Vec<Record>, _>(&json, b)?, fixture_records())),
        ),
        (
            "text_hello",
            Box::new(move |b| eq(read_bytes::<String, _>(&text, b)?, "h\u{e9}llo".to_owned())),
        ),
        (
            "text_empty",
            Box::new(move |b| eq(read_bytes::<String, _>(&text, b)?, String::new())),
        ),
        (
            "text_long",
            Box::new(move |b| eq(read_bytes::<String, _>(&text, b)?, fixture_long_text())),
        ),
        (
            "bytes_short",
            Box::new(move |b| eq(read_bytes::<Vec<u8>, _>(&bytes, b)?, vec![0x00, 0xff, 0x10])),
        ),
        (
            "bytes_long",
            Box::new(move |b| eq(read_bytes::<Vec<u8>, _>(&bytes, b)?, fixture_long_bytes())),
        ),
    ]
}

/// The files version 1 wrote (generated by the version 1 code, never regenerated): every reader
/// reads them forever, whatever its compression settings.
#[test]
fn version_1_fixtures_read_forever() {
    let settings = [
        (
            PostcardFormat::DEFAULT,
            JsonFormat::DEFAULT,
            TextFormat::DEFAULT,
            BytesFormat::DEFAULT,
        ),
        (
            PostcardFormat::uncompressed(),
            JsonFormat::uncompressed(),
            TextFormat::uncompressed(),
            BytesFormat::uncompressed(),
        ),
    ];
    for (p, j, t, b) in settings {
        for (name, check) in fixture_checks(p, j, t, b) {
            let bytes = fixture(&format!("{name}.v1.data"));
            let version = Envelope::decode(&bytes, "data").unwrap().0.format_version;
            assert_eq!(version, 1, "{name}");
            check(&bytes).unwrap_or_else(|e| panic!("{name}.v1.data: {e}"));
        }
    }
}

/// Version 2 without compression is version 1 with the version field set to 2 and a `00` byte
/// before the payload.
#[test]
fn uncompressed_version_2_is_version_1_plus_a_compression_byte() {
    let v1_to_v2 = |name: &str| {
        let v1 = fixture(&format!("{name}.v1.data"));
        let (env, payload) = Envelope::decode(&v1, "data").unwrap();
        let mut out = envelope(&env.format_id, 2);
        out.push(0);
        out.extend_from_slice(payload);
        out
    };
    let p = PostcardFormat::uncompressed();
    let j = JsonFormat::uncompressed();
    let t = TextFormat::uncompressed();
    let b = BytesFormat::uncompressed();
    assert_eq!(data_of(&p, record()), v1_to_v2("postcard_record"));
    assert_eq!(data_of(&p, u64::MAX), v1_to_v2("postcard_u64_max"));
    assert_eq!(data_of(&p, fixture_records()), v1_to_v2("postcard_records"));
    assert_eq!(data_of(&j, fixture_doc()), v1_to_v2("json_doc"));
    assert_eq!(data_of(&j, fixture_records()), v1_to_v2("json_records"));
    assert_eq!(data_of(&t, "h\u{e9}llo".to_owned()), v1_to_v2("text_hello"));
    assert_eq!(data_of(&t, String::new()), v1_to_v2("text_empty"));
    assert_eq!(data_of(&t, fixture_long_text()), v1_to_v2("text_long"));
    assert_eq!(data_of(&b, vec![0x00, 0xff, 0x10]), v1_to_v2("bytes_short"));
    assert_eq!(data_of(&b, fixture_long_bytes()), v1_to_v2("bytes_long"));
}

/// The compressed fixtures of version 2: the default settings must write exactly these bytes,
/// and every reader reads them. Regenerate only for a new version (they pin the zstd output).
#[test]
fn version_2_golden_files() {
    let bless = std::env::var_os("MILONGA_BLESS_VALUE_V2").is_some();
    let written: [(&str, Vec<u8>); 4] = [
        (
            "postcard_records",
            data_of(&PostcardFormat, fixture_records()),
        ),
        ("json_records", data_of(&JsonFormat, fixture_records())),
        ("text_long", data_of(&TextFormat, fixture_long_text())),
        ("bytes_long", data_of(&BytesFormat, fixture_long_bytes())),
    ];
    for (name, bytes) in &written {
        let file = format!("{name}.v2.data");
        if bless {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/value");
            std::fs::write(dir.join(&file), bytes).unwrap();
        }
        assert_eq!(bytes, &fixture(&file), "{file}");
        assert_eq!(bytes[payload_offset(bytes)], 1, "{file} is compressed");
    }
    for (p, j, t, b) in [
        (PostcardFormat, JsonFormat, TextFormat, BytesFormat),
        (
            PostcardFormat::uncompressed(),
            JsonFormat::uncompressed(),
            TextFormat::uncompressed(),
            BytesFormat::uncompressed(),
        ),
    ] {
        for (name, check) in fixture_checks(p, j, t, b) {
            if written.iter().any(|(n, _)| *n == name) {
                let bytes = fixture(&format!("{name}.v2.data"));
                check(&bytes).unwrap_or_else(|e| panic!("{name}.v2.data: {e}"));
            }
        }
    }
}

/// The offset of the payload (after the envelope) in a "data" file.
fn payload_offset(bytes: &[u8]) -> usize {
    bytes.len() - Envelope::decode(bytes, "data").unwrap().1.len()
}

#[test]
fn ids_versions_settings_and_file_name() {
    assert_eq!(
        <PostcardFormat as Format<u8>>::id(&PostcardFormat),
        "milonga.postcard"
    );
    assert_eq!(<JsonFormat as Format<u8>>::id(&JsonFormat), "milonga.json");
    assert_eq!(Format::<String>::id(&TextFormat), "milonga.text");
    assert_eq!(Format::<Vec<u8>>::id(&BytesFormat), "milonga.bytes");
    assert_eq!(<PostcardFormat as Format<u8>>::version(&PostcardFormat), 2);
    assert_eq!(<JsonFormat as Format<u8>>::version(&JsonFormat), 2);
    assert_eq!(Format::<String>::version(&TextFormat), 2);
    assert_eq!(Format::<Vec<u8>>::version(&BytesFormat), 2);
    assert_eq!(
        (
            PostcardFormat::ID,
            JsonFormat::ID,
            TextFormat::ID,
            BytesFormat::ID
        ),
        (
            "milonga.postcard",
            "milonga.json",
            "milonga.text",
            "milonga.bytes"
        )
    );
    for file in [
        PostcardFormat::FILE,
        JsonFormat::FILE,
        TextFormat::FILE,
        BytesFormat::FILE,
    ] {
        assert_eq!(file, "data");
    }
    let artifact = write_to_memory(&TextFormat, "x".to_owned()).unwrap();
    let names: Vec<String> = artifact.snapshot().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["data"]);

    // The settings: the constant, `default()` and `DEFAULT` agree; id and version do not depend
    // on them.
    assert_eq!(PostcardFormat, PostcardFormat::default());
    assert_eq!(
        PostcardFormat::DEFAULT.compression(),
        Compression::Zstd { level: 3 }
    );
    assert_eq!(PostcardFormat::DEFAULT.threshold(), 512);
    assert_eq!(
        JsonFormat::default().compression(),
        Compression::Zstd {
            level: JsonFormat::DEFAULT_LEVEL
        }
    );
    assert_eq!(
        TextFormat::default().threshold(),
        TextFormat::DEFAULT_THRESHOLD
    );
    assert_eq!(BytesFormat::uncompressed().compression(), Compression::None);
    let tuned = PostcardFormat::uncompressed()
        .with_compression(Compression::Zstd { level: 19 })
        .with_threshold(64);
    assert_eq!(
        (tuned.compression(), tuned.threshold()),
        (Compression::Zstd { level: 19 }, 64)
    );
    assert_ne!(tuned, PostcardFormat);
    assert_eq!(
        <PostcardFormat as Format<u8>>::id(&tuned),
        PostcardFormat::ID
    );
    assert_eq!(<PostcardFormat as Format<u8>>::version(&tuned), 2);
    fn needs_default_copy<F: Default + Copy + Clone + std::fmt::Debug + PartialEq>() -> F {
        F::default()
    }
    let _: (PostcardFormat, JsonFormat, TextFormat, BytesFormat) = (
        needs_default_copy(),
        needs_default_copy(),
        needs_default_copy(),
        needs_default_copy(),
    );
}

// ---------------------------------------------------------------------------------------------
// Round-trips and determinism.

proptest! {
    #[test]
    fn postcard_roundtrips(value in wide()) {
        prop_assert_eq!(roundtrip(&PostcardFormat, value.clone()).unwrap(), value);
    }

    #[test]
    fn postcard_roundtrips_any_f64_bit_for_bit(x in any::<f64>()) {
        prop_assert_eq!(roundtrip(&PostcardFormat, x).unwrap().to_bits(), x.to_bits());
    }

    #[test]
    fn json_roundtrips(value in wide_with(short_f64())) {
        prop_assert_eq!(roundtrip(&JsonFormat, value.clone()).unwrap(), value);
    }

    /// serde_json's default float parser can be one ulp off (1.6774741241316538e-9 read back
    /// as 1.6774741241316536e-9); formats enables its `float_roundtrip` feature, which makes
    /// it exact.
    #[test]
    fn json_roundtrips_any_finite_f64_bit_for_bit(x in finite_f64()) {
        prop_assert_eq!(roundtrip(&JsonFormat, x).unwrap().to_bits(), x.to_bits());
    }

    #[test]
    fn text_roundtrips(value in ".*") {
        prop_assert_eq!(roundtrip(&TextFormat, value.clone()).unwrap(), value);
    }

    #[test]
    fn bytes_roundtrip(value in prop::collection::vec(any::<u8>(), 0..1024)) {
        prop_assert_eq!(roundtrip(&BytesFormat, value.clone()).unwrap(), value);
    }

    /// Every setting round-trips, and every reader reads what any setting wrote.
    #[test]
    fn every_compression_setting_roundtrips(
        value in wide_with(short_f64()),
        copies in 0usize..40,
        level in prop_oneof![
            Just(Compression::None),
            (-5i32..=19).prop_map(|level| Compression::Zstd { level }),
        ],
        threshold in prop_oneof![Just(0usize), Just(512), 0usize..4096],
    ) {
        let values = vec![value; copies];
        let p = PostcardFormat::DEFAULT.with_compression(level).with_threshold(threshold);
        let j = JsonFormat::DEFAULT.with_compression(level).with_threshold(threshold);
        let t = TextFormat::DEFAULT.with_compression(level).with_threshold(threshold);
        let b = BytesFormat::DEFAULT.with_compression(level).with_threshold(threshold);
        let text: String = values.iter().map(|v| v.c.as_str()).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.d.iter().copied()).collect();
        for reader in [PostcardFormat, PostcardFormat::uncompressed(), p] {
            let file = data_of(&p, values.clone());
            prop_assert_eq!(read_bytes::<Vec<Wide>, _>(&reader, &file).unwrap(), values.clone());
        }
        for reader in [JsonFormat, JsonFormat::uncompressed(), j] {
            let file = data_of(&j, values.clone());
            prop_assert_eq!(read_bytes::<Vec<Wide>, _>(&reader, &file).unwrap(), values.clone());
        }
        for reader in [TextFormat, TextFormat::uncompressed(), t] {
            let file = data_of(&t, text.clone());
            prop_assert_eq!(read_bytes::<String, _>(&reader, &file).unwrap(), text.clone());
        }
        for reader in [BytesFormat, BytesFormat::uncompressed(), b] {
            let file = data_of(&b, bytes.clone());
            prop_assert_eq!(read_bytes::<Vec<u8>, _>(&reader, &file).unwrap(), bytes.clone());
        }
    }

    #[test]
    fn writing_is_deterministic(value in wide()) {
        let many = vec![value.clone(); 16];
        prop_assert_eq!(
            data_of(&PostcardFormat, value.clone()),
            data_of(&PostcardFormat, value.clone())
        );
        prop_assert_eq!(data_of(&JsonFormat, value.clone()), data_of(&JsonFormat, value.clone()));
        prop_assert_eq!(data_of(&TextFormat, value.c.clone()), data_of(&TextFormat, value.c));
        prop_assert_eq!(data_of(&BytesFormat, value.d.clone()), data_of(&BytesFormat, value.d));
        // Above the threshold, compressed.
        prop_assert_eq!(data_of(&PostcardFormat, many.clone()), data_of(&PostcardFormat, many.clone()));
        prop_assert_eq!(data_of(&JsonFormat, many.clone()), data_of(&JsonFormat, many));
    }

    /// Two `HashMap`s with the same entries iterate in different orders (each has its own
    /// random hasher); JSON must still write the same bytes, the ones of the sorted map.
    #[test]
    fn json_hashmap_bytes_do_not_depend_on_iteration_order(
        entries in prop::collection::btree_map(".*", any::<i64>(), 0..32)
    ) {
        let forward: HashMap<String, i64> = entries.clone().into_iter().collect();
        let mut backward = HashMap::with_capacity(entries.len() * 4);
        for (k, v) in entries.iter().rev() {
            backward.insert(k.clone(), *v);
        }
        let sorted = data_of(&JsonFormat, entries);
        prop_assert_eq!(&data_of(&JsonFormat, forward), &sorted);
        prop_assert_eq!(&data_of(&JsonFormat, backward), &sorted);
    }

    // -----------------------------------------------------------------------------------------
    // Arbitrary bytes: an error or a value, never a panic.

    #[test]
    fn arbitrary_data_files_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = read_bytes::<Wide, _>(&PostcardFormat, &bytes);
        let _ = read_bytes::<Wide, _>(&JsonFormat, &bytes);
        let _ = read_bytes::<String, _>(&TextFormat, &bytes);
        let _ = read_bytes::<Vec<u8>, _>(&BytesFormat, &bytes);
    }

    /// The same, behind a valid envelope, so that the payload decoders see the bytes.
    #[test]
    fn arbitrary_payloads_never_panic(
        payload in prop::collection::vec(any::<u8>(), 0..256),
        head in prop_oneof![
            Just(vec![]),
            Just(vec![0]),
            any::<u64>().prop_map(|n| { let mut h = vec![1]; h.extend(n.to_le_bytes()); h }),
            (0u64..4096).prop_map(|n| {
                let mut h = vec![1];
                h.extend(n.to_le_bytes());
                h.extend([0x28, 0xb5, 0x2f, 0xfd]);
                h
            }),
        ],
        version in 1u32..=2,
    ) {
        let with = |id: &str| {
            let mut bytes = envelope(id, version);
            if version == 2 {
                bytes.extend_from_slice(&head);
            }
            bytes.extend_from_slice(&payload);
            bytes
        };
        check_error_or_value(read_bytes::<Wide, _>(&PostcardFormat, &with(PostcardFormat::ID)));
        check_error_or_value(read_bytes::<Vec<String>, _>(
            &PostcardFormat,
            &with(PostcardFormat::ID),
        ));
        check_error_or_value(read_bytes::<HashMap<u32, Vec<u64>>, _>(
            &PostcardFormat,
            &with(PostcardFormat::ID),
        ));
        check_error_or_value(read_bytes::<Wide, _>(&JsonFormat, &with(JsonFormat::ID)));
        check_error_or_value(read_bytes::<String, _>(&TextFormat, &with(TextFormat::ID)));
        check_error_or_value(read_bytes::<Vec<u8>, _>(&BytesFormat, &with(BytesFormat::ID)));
    }

    /// A valid text or bytes payload with a length field that lies.
    #[test]
    fn lying_length_fields_are_corrupt(len in any::<u64>(), body in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assume!(len != body.len() as u64);
        for (id, version) in [(TextFormat::ID, 1), (BytesFormat::ID, 1), (TextFormat::ID, 2), (BytesFormat::ID, 2)] {
            let mut bytes = envelope(id, version);
            if version == 2 {
                bytes.push(0);
            }
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&body);
            let err = if id == TextFormat::ID {
                read_bytes::<String, _>(&TextFormat, &bytes).unwrap_err()
            } else {
                read_bytes::<Vec<u8>, _>(&BytesFormat, &bytes).unwrap_err()
            };
            prop_assert!(matches!(err, Error::Corrupt { .. }), "{:?}", err);
            assert_names_data(&err);
        }
    }
}

fn check_error_or_value<T>(r: Result<T, Error>) {
    if let Err(e) = r {
        assert_names_data(&e);
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input, one case at a time.

/// Valid "data" files of each format, with a reader for each.
type Reader = fn(&[u8]) -> Result<(), Error>;

fn valid_files() -> Vec<(&'static str, Vec<u8>, Reader)> {
    vec![
        ("postcard", data_of(&PostcardFormat, record()), |b| {
            read_bytes::<Record, _>(&PostcardFormat, b).map(drop)
        }),
        ("postcard u64", data_of(&PostcardFormat, u64::MAX), |b| {
            read_bytes::<u64, _>(&PostcardFormat, b).map(drop)
        }),
        ("json", data_of(&JsonFormat, record()), |b| {
            read_bytes::<Record, _>(&JsonFormat, b).map(drop)
        }),
        ("json number", data_of(&JsonFormat, 123_456u32), |b| {
            read_bytes::<u32, _>(&JsonFormat, b).map(drop)
        }),
        ("text", data_of(&TextFormat, "h\u{e9}llo".to_owned()), |b| {
            read_bytes::<String, _>(&TextFormat, b).map(drop)
        }),
        ("bytes", data_of(&BytesFormat, vec![1, 2, 3]), |b| {
            read_bytes::<Vec<u8>, _>(&BytesFormat, b).map(drop)
        }),
        (
            "postcard zstd",
            data_of(&PostcardFormat, fixture_records()),
            |b| read_bytes::<Vec<Record>, _>(&PostcardFormat, b).map(drop),
        ),
        ("json zstd", data_of(&JsonFormat, fixture_records()), |b| {
            read_bytes::<Vec<Record>, _>(&JsonFormat, b).map(drop)
        }),
        (
            "text zstd",
            data_of(&TextFormat, fixture_long_text()),
            |b| read_bytes::<String, _>(&TextFormat, b).map(drop),
        ),
        (
            "bytes zstd",
            data_of(&BytesFormat, fixture_long_bytes()),
            |b| read_bytes::<Vec<u8>, _>(&BytesFormat, b).map(drop),
        ),
        ("postcard v1", fixture("postcard_record.v1.data"), |b| {
            read_bytes::<Record, _>(&PostcardFormat, b).map(drop)
        }),
        ("json v1", fixture("json_doc.v1.data"), |b| {
            read_bytes::<Doc, _>(&JsonFormat, b).map(drop)
        }),
        ("text v1", fixture("text_long.v1.data"), |b| {
            read_bytes::<String, _>(&TextFormat, b).map(drop)
        }),
        ("bytes v1", fixture("bytes_short.v1.data"), |b| {
            read_bytes::<Vec<u8>, _>(&BytesFormat, b).map(drop)
        }),
    ]
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    for (name, bytes, read) in valid_files() {
        read(&bytes).unwrap_or_else(|e| panic!("{name}: the whole file must read: {e}"));
        for cut in 0..bytes.len() {
            let err = read(&bytes[..cut]).expect_err(&format!("{name} cut at {cut}"));
            assert_names_data(&err);
        }
    }
}

#[test]
fn trailing_bytes_are_corrupt_where_the_layout_delimits_the_value() {
    for (name, mut bytes, read) in valid_files() {
        if name == "json" || name == "json number" || name == "json v1" {
            continue; // JSON allows trailing whitespace; other bytes fail as Decode below.
        }
        let end = bytes.len() as u64;
        bytes.push(0);
        let err = read(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { offset, .. } if offset == end),
            "{name}: {err:?}"
        );
    }
    let mut json = data_of(&JsonFormat, record());
    json.extend_from_slice(b"x\n");
    assert!(matches!(
        read_bytes::<Record, _>(&JsonFormat, &json),
        Err(Error::Decode { .. })
    ));
}

#[test]
fn wrong_format_id_is_wrong_format() {
    let postcard = data_of(&PostcardFormat, "x".to_owned());
    let json = data_of(&JsonFormat, "x".to_owned());
    let text = data_of(&TextFormat, "x".to_owned());
    let bytes = data_of(&BytesFormat, b"x".to_vec());
    let cases: [(Result<String, Error>, &str, &str); 4] = [
        (
            read_bytes(&JsonFormat, &postcard),
            "milonga.json",
            "milonga.postcard",
        ),
        (
            read_bytes(&TextFormat, &json),
            "milonga.text",
            "milonga.json",
        ),
        (
            read_bytes(&PostcardFormat, &text),
            "milonga.postcard",
            "milonga.text",
        ),
        (
            read_bytes(&TextFormat, &bytes),
            "milonga.text",
            "milonga.bytes",
        ),
    ];
    for (result, want_expected, want_found) in cases {
        let err = result.unwrap_err();
        assert_names_data(&err);
        assert!(
            matches!(&err, Error::WrongFormat { expected, found, .. }
                if expected == want_expected && found == want_found),
            "{err:?}"
        );
    }
    let err = read_bytes::<Vec<u8>, _>(&BytesFormat, &text).unwrap_err();
    assert!(matches!(err, Error::WrongFormat { .. }), "{err:?}");
}

#[test]
fn newer_version_is_unsupported_version() {
    for id in [
        PostcardFormat::ID,
        JsonFormat::ID,
        TextFormat::ID,
        BytesFormat::ID,
    ] {
        let mut bytes = envelope(id, 3);
        bytes.extend_from_slice(&[0; 16]);
        let errs = [
            read_bytes::<u8, _>(&PostcardFormat, &bytes).map(drop),
            read_bytes::<u8, _>(&JsonFormat, &bytes).map(drop),
            read_bytes::<String, _>(&TextFormat, &bytes).map(drop),
            read_bytes::<Vec<u8>, _>(&BytesFormat, &bytes).map(drop),
        ];
        let err = errs
            .into_iter()
            .find_map(|r| match r {
                Err(e @ Error::UnsupportedVersion { .. }) => Some(e),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{id} version 3 must be refused"));
        assert_names_data(&err);
        assert!(
            matches!(&err, Error::UnsupportedVersion { format, found: 3, supported: 2, .. }
                if format == id),
            "{err:?}"
        );
    }
}

#[test]
fn version_zero_is_corrupt() {
    let mut bytes = envelope(TextFormat::ID, 0);
    bytes.extend_from_slice(&[0; 8]);
    let err = read_bytes::<String, _>(&TextFormat, &bytes).unwrap_err();
    assert!(matches!(err, Error::Corrupt { offset: 18, .. }), "{err:?}");
}

#[test]
fn missing_data_file_is_missing_file() {
    let empty = MemoryArtifact::new();
    empty.set_file("other", b"x".to_vec());
    let errs = [
        Format::<u8>::read(&PostcardFormat, empty.handle()).map(drop),
        Format::<u8>::read(&JsonFormat, empty.handle()).map(drop),
        Format::<String>::read(&TextFormat, empty.handle()).map(drop),
        Format::<Vec<u8>>::read(&BytesFormat, empty.handle()).map(drop),
    ];
    for r in errs {
        let err = r.unwrap_err();
        assert!(
            matches!(&err, Error::MissingFile { file } if file == "data"),
            "{err:?}"
        );
    }
}

#[test]
fn not_an_envelope_is_corrupt() {
    let err = read_bytes::<String, _>(&TextFormat, b"hello, this is not an envelope").unwrap_err();
    assert!(matches!(err, Error::Corrupt { offset: 0, .. }), "{err:?}");
    assert_names_data(&err);
}

#[test]
fn payload_of_another_type_is_decode_error_at_the_payload() {
    // Version 2: after the compression byte.
    let bytes = data_of(&PostcardFormat, "x".to_owned());
    let err = read_bytes::<Record, _>(&PostcardFormat, &bytes).unwrap_err();
    assert!(matches!(err, Error::Decode { offset: 27, .. }), "{err:?}");
    assert_names_data(&err);

    let bytes = data_of(&JsonFormat, "x".to_owned());
    let err = read_bytes::<Record, _>(&JsonFormat, &bytes).unwrap_err();
    assert!(matches!(err, Error::Decode { offset: 23, .. }), "{err:?}");
    assert_names_data(&err);

    // Version 1: right after the envelope.
    let err =
        read_bytes::<String, _>(&PostcardFormat, &fixture("postcard_record.v1.data")).unwrap_err();
    assert!(matches!(err, Error::Decode { offset: 26, .. }), "{err:?}");
    let err = read_bytes::<Record, _>(&JsonFormat, &fixture("json_doc.v1.data")).unwrap_err();
    assert!(matches!(err, Error::Decode { offset: 22, .. }), "{err:?}");

    // Compressed: at the zstd frame (after the compression byte and the length).
    let bytes = data_of(&PostcardFormat, fixture_records());
    let err = read_bytes::<Vec<String>, _>(&PostcardFormat, &bytes).unwrap_err();
    assert!(matches!(err, Error::Decode { offset: 35, .. }), "{err:?}");
    assert!(err.to_string().contains("decompressed"), "{err}");
    let bytes = data_of(&JsonFormat, fixture_records());
    let err = read_bytes::<Vec<String>, _>(&JsonFormat, &bytes).unwrap_err();
    assert!(matches!(err, Error::Decode { offset: 31, .. }), "{err:?}");
}

#[test]
fn invalid_utf8_text_is_corrupt_at_the_bad_byte() {
    let mut bytes = envelope(TextFormat::ID, 1);
    bytes.extend_from_slice(&4u64.to_le_bytes());
    bytes.extend_from_slice(b"ab\xffc");
    let err = read_bytes::<String, _>(&TextFormat, &bytes).unwrap_err();
    // 22 bytes of envelope, 8 of length, then "ab".
    assert!(matches!(err, Error::Corrupt { offset: 32, .. }), "{err:?}");

    let bytes = data_of(&BytesFormat, b"ab\xffc".to_vec());
    let bytes = [&envelope(TextFormat::ID, 2), &bytes[23..]].concat();
    let err = read_bytes::<String, _>(&TextFormat, &bytes).unwrap_err();
    // 22 bytes of envelope, the compression byte, 8 of length, then "ab".
    assert!(matches!(err, Error::Corrupt { offset: 33, .. }), "{err:?}");

    // Compressed: at the frame, with the position in the decompressed text.
    let mut text = "ab".repeat(300).into_bytes();
    text[2] = 0xff;
    let bytes = data_of(&BytesFormat, text);
    let bytes = [&envelope(TextFormat::ID, 2), &bytes[23..]].concat();
    assert_eq!(bytes[22], 1, "compressed");
    let err = read_bytes::<String, _>(&TextFormat, &bytes).unwrap_err();
    assert!(matches!(err, Error::Corrupt { offset: 31, .. }), "{err:?}");
    assert!(err.to_string().contains("at byte 2 of the body"), "{err}");
}

#[test]
fn json_without_final_newline_is_corrupt() {
    let mut bytes = data_of(&JsonFormat, 12u32);
    assert_eq!(bytes.pop(), Some(b'\n'));
    let err = read_bytes::<u32, _>(&JsonFormat, &bytes).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
}

/// Length prefixes inside a postcard payload that promise far more than the file holds are
/// refused before anything that size is allocated.
#[test]
fn lying_postcard_length_prefixes_are_errors() {
    let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]; // u64::MAX
    let with = |payload: &[u8]| {
        let mut bytes = envelope(PostcardFormat::ID, 2);
        bytes.push(0);
        bytes.extend_from_slice(payload);
        bytes
    };
    let file = with(&huge);
    let err = read_bytes::<Vec<u64>, _>(&PostcardFormat, &file).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    let err = read_bytes::<String, _>(&PostcardFormat, &file).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    let err = read_bytes::<Vec<u8>, _>(&PostcardFormat, &file).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    let err = read_bytes::<HashMap<u64, String>, _>(&PostcardFormat, &file).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    let err = read_bytes::<Vec<Vec<Record>>, _>(&PostcardFormat, &file).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    // A length of 2^60 - 1 for a string of one byte.
    let file = with(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, b'a']);
    let err = read_bytes::<String, _>(&PostcardFormat, &file).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
}

#[test]
fn lying_length_field_of_bytes_says_what_is_wrong() {
    let mut bytes = envelope(BytesFormat::ID, 2);
    bytes.push(0);
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(b"abc");
    let err = read_bytes::<Vec<u8>, _>(&BytesFormat, &bytes).unwrap_err();
    // 23 bytes of envelope, the compression byte, 8 of length, 3 present.
    assert!(matches!(err, Error::Corrupt { offset: 35, .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Write failures: typed errors, nothing published.

#[test]
fn unencodable_json_is_encode_error_and_publishes_nothing() {
    let artifact = MemoryArtifact::new();
    let err = JsonFormat.write(u128::MAX, &artifact).unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err:?}");
    assert!(artifact.snapshot().is_empty());

    let map: BTreeMap<Vec<u8>, u8> = BTreeMap::from([(vec![1], 1)]);
    let err = JsonFormat.write(map, &artifact).unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err:?}");
    assert!(artifact.snapshot().is_empty());
}

#[test]
fn unencodable_postcard_is_encode_error_and_publishes_nothing() {
    /// A value whose `Serialize` fails, as some types do for some values.
    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }
    impl<'de> Deserialize<'de> for Refuses {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Refuses)
        }
    }
    let artifact = MemoryArtifact::new();
    let err = PostcardFormat.write(Refuses, &artifact).unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err:?}");
    assert!(artifact.snapshot().is_empty());
}

/// An artifact whose files fail to write after `budget` bytes.
struct FailingArtifact {
    budget: usize,
}

struct FailingFile {
    left: usize,
}

impl Write for FailingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FileWriter for FailingFile {
    fn finish(self: Box<Self>) -> milonga_sdk::Result<FileEntry> {
        panic!("a file whose writes failed must not be finished")
    }
}

impl ArtifactWriter for FailingArtifact {
    fn create(&self, _: &str) -> milonga_sdk::Result<Box<dyn FileWriter>> {
        Ok(Box::new(FailingFile { left: self.budget }))
    }
    fn scratch_dir(&self) -> milonga_sdk::Result<PathBuf> {
        Err(Error::Unsupported("scratch".into()))
    }
    fn ingest(&self, _: &str, _: &Path) -> milonga_sdk::Result<FileEntry> {
        Err(Error::Unsupported("ingest".into()))
    }
    fn durable_files(&self) -> Vec<FileEntry> {
        Vec::new()
    }
    fn durable_bytes(&self, name: &str) -> milonga_sdk::Result<SharedBytes> {
        Err(Error::MissingFile {
            file: name.to_owned(),
        })
    }
}

#[test]
fn io_errors_while_writing_are_io_errors_naming_the_file() {
    // 100,000 letters that zstd cannot shrink below 50,000 bytes.
    let mut seed = 1u64;
    let big: String = (0..100_000)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            char::from(b'a' + (seed >> 59) as u8 % 26)
        })
        .collect();
    for budget in [0, 10, 30, 50_000] {
        let artifact = FailingArtifact { budget };
        let errs = [
            PostcardFormat.write(big.clone(), &artifact),
            JsonFormat.write(big.clone(), &artifact),
            TextFormat.write(big.clone(), &artifact),
            BytesFormat.write(big.clone().into_bytes(), &artifact),
            PostcardFormat::uncompressed().write(big.clone(), &artifact),
            JsonFormat::uncompressed().write(big.clone(), &artifact),
            TextFormat::uncompressed().write(big.clone(), &artifact),
            BytesFormat::uncompressed().write(big.clone().into_bytes(), &artifact),
        ];
        for r in errs {
            let err = r.unwrap_err();
            assert!(
                matches!(&err, Error::Io { path, source } if path == "data"
                    && source.to_string() == "disk on fire"),
                "budget {budget}: {err:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compression: when it happens, and every way a compressed payload can be bad.

/// A compressed bytes file of `len` bytes of `0xab`: envelope (23), `01`, length (8), frame.
fn zstd_bytes_file(len: usize) -> Vec<u8> {
    let bytes = data_of(&BytesFormat, vec![0xab; len]);
    assert_eq!(bytes[23], 1, "compressed");
    bytes
}

/// A bytes file with compression byte `01`, a declared length and a frame.
fn bytes_file_with_frame(declared: u64, frame: &[u8]) -> Vec<u8> {
    let mut bytes = envelope(BytesFormat::ID, 2);
    bytes.push(1);
    bytes.extend_from_slice(&declared.to_le_bytes());
    bytes.extend_from_slice(frame);
    bytes
}

fn compression_byte(bytes: &[u8]) -> u8 {
    bytes[payload_offset(bytes)]
}

#[test]
fn compression_happens_at_the_threshold_and_only_when_it_helps() {
    // Postcard of vec![7u8; n]: 2 bytes of length (n >= 128), then n bytes.
    assert_eq!(
        compression_byte(&data_of(&PostcardFormat, vec![7u8; 509])),
        0
    ); // 511 bytes
    assert_eq!(
        compression_byte(&data_of(&PostcardFormat, vec![7u8; 510])),
        1
    ); // 512 bytes
    assert_eq!(compression_byte(&data_of(&TextFormat, "a".repeat(511))), 0);
    assert_eq!(compression_byte(&data_of(&TextFormat, "a".repeat(512))), 1);
    assert_eq!(compression_byte(&data_of(&BytesFormat, vec![1; 512])), 1);
    // JSON `[0,...,0]\n` of 256 zeros: 1 + 256 + 255 + 1 + 1 = 514 bytes; of 255: 512.
    assert_eq!(compression_byte(&data_of(&JsonFormat, vec![0u8; 254])), 0);
    assert_eq!(compression_byte(&data_of(&JsonFormat, vec![0u8; 255])), 1);

    let settings = PostcardFormat::DEFAULT.with_threshold(0);
    assert_eq!(compression_byte(&data_of(&settings, vec![7u8; 100])), 1);
    // Too short for zstd to win: stored as it is even with threshold 0.
    assert_eq!(compression_byte(&data_of(&settings, 7u8)), 0);
    assert_eq!(
        compression_byte(&data_of(
            &TextFormat::DEFAULT.with_threshold(0),
            String::new()
        )),
        0
    );
    let never = PostcardFormat::uncompressed().with_threshold(0);
    assert_eq!(compression_byte(&data_of(&never, vec![7u8; 100_000])), 0);

    // Incompressible bytes are stored as they are.
    let mut seed = 7u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 56) as u8
        })
        .collect();
    let bytes = data_of(&BytesFormat, noise.clone());
    assert_eq!(compression_byte(&bytes), 0);
    assert_eq!(bytes.len(), 23 + 1 + 8 + 4096);
    assert_eq!(
        read_bytes::<Vec<u8>, _>(&BytesFormat, &bytes).unwrap(),
        noise
    );

    // The level changes the bytes, not what reads back.
    let records = fixture_records();
    let fast = data_of(
        &PostcardFormat::DEFAULT.with_compression(Compression::Zstd { level: 1 }),
        records.clone(),
    );
    let best = data_of(
        &PostcardFormat::DEFAULT.with_compression(Compression::Zstd { level: 19 }),
        records.clone(),
    );
    assert_ne!(fast, best);
    assert!(best.len() <= fast.len());
    for file in [fast, best] {
        assert_eq!(
            read_bytes::<Vec<Record>, _>(&PostcardFormat, &file).unwrap(),
            records
        );
    }
}

#[test]
fn unknown_compression_byte_is_corrupt_at_the_byte() {
    for byte in [2u8, 0x28, 0xff] {
        let mut bytes = data_of(&BytesFormat, vec![1, 2, 3]);
        bytes[23] = byte;
        let err = read_bytes::<Vec<u8>, _>(&BytesFormat, &bytes).unwrap_err();
        assert!(matches!(err, Error::Corrupt { offset: 23, .. }), "{err:?}");
        assert!(err.to_string().contains("compression byte"), "{err}");
        assert_names_data(&err);
    }
    let err = read_bytes::<Vec<u8>, _>(&BytesFormat, &envelope(BytesFormat::ID, 2)).unwrap_err();
    assert!(matches!(err, Error::Corrupt { offset: 23, .. }), "{err:?}");
}

#[test]
fn declared_length_that_does_not_match_the_frame_is_corrupt_at_the_length_field() {
    let good = zstd_bytes_file(1000);
    let frame = &good[32..];
    for declared in [0, 1, 999, 1001, 4096, 1 << 20, u64::MAX / 2, u64::MAX] {
        let bytes = bytes_file_with_frame(declared, frame);
        let err = read_bytes::<Vec<u8>, _>(&BytesFormat, &bytes).unwrap_err();
        // 23 bytes of envelope, then the compression byte: the length field is at 24.
        assert!(
            matches!(err, Error::Corrupt { offset: 24, .. }),
            "declared {declared}: {err:?}"
        );
        assert_names_data(&err);
    }
    assert_eq!(
        read_bytes::<Vec<u8>, _>(&BytesFormat, &bytes_file_with_frame(1000, frame)).unwrap(),
        vec![0xab; 1000]
    );
}

#[test]
fn bad_frames_are_corrupt() {
    let good = zstd_bytes_file(1000);
    let frame = good[32..].to_vec();
    let read = |bytes: &[u8]| read_bytes::<Vec<u8>, _>(&BytesFormat, bytes).unwrap_err();

    // Not a zstd frame: a skippable frame, and bad magic.
    let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
    skippable.extend_from_slice(&frame);
    let err = read(&bytes_file_with_frame(1000, &skippable));
    assert!(matches!(err, Error::Corrupt { offset: 32, .. }), "{err:?}");
    let mut bad_magic = frame.clone();
    bad_magic[0] ^= 1;
    let err = read(&bytes_file_with_frame(1000, &bad_magic));
    assert!(matches!(err, Error::Corrupt { offset: 32, .. }), "{err:?}");

    // Two frames, and a frame followed by bytes.
    let end = good.len() as u64;
    let err = read(&[&good[..], &frame[..]].concat());
    assert!(
        matches!(err, Error::Corrupt { offset, .. } if offset == end),
        "{err:?}"
    );
    assert!(err.to_string().contains("trailing"), "{err}");

    // Every bit flipped in the frame: an error or the right length, never a panic. (No
    // checksum: the engine's content hash covers the file.)
    for i in 0..frame.len() * 8 {
        let mut flipped = frame.clone();
        flipped[i / 8] ^= 1 << (i % 8);
        match read_bytes::<Vec<u8>, _>(&BytesFormat, &bytes_file_with_frame(1000, &flipped)) {
            Ok(v) => assert_eq!(v.len(), 1000),
            Err(e) => assert_names_data(&e),
        }
    }

    // A frame without a content size that asks for a larger window than its length needs.
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.include_contentsize(false).unwrap();
    encoder.write_all(&vec![0xab; 1000]).unwrap();
    let streamed = encoder.finish().unwrap();
    let err = read(&bytes_file_with_frame(1000, &streamed));
    assert!(matches!(err, Error::Corrupt { offset: 32, .. }), "{err:?}");
    assert!(err.to_string().contains("zstd"), "{err}");
}

/// The largest single allocation on this thread while `f` runs.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|c| c.set(0));
    TRACK.with(|c| c.set(true));
    let r = f();
    TRACK.with(|c| c.set(false));
    (r, LARGEST.with(Cell::get))
}

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

struct Meter;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged;
// `note_allocation` only touches const-initialized thread-local `Cell`s and never allocates.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// The declared length never drives an allocation: a frame that holds far more than it
/// declares, or declares far more than it holds, is refused after allocating about what zstd
/// actually produced, bounded by the declared length.
#[test]
fn decompression_allocates_what_arrives_not_what_is_declared() {
    let (_, meter_works) =
        largest_allocation(|| std::hint::black_box(Vec::<u8>::with_capacity(1000)));
    assert!(meter_works >= 1000);

    // 64 MiB of zeros in a small frame, declared as 1000 bytes.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap();
    assert!(bomb.len() < 10_000, "{}", bomb.len());
    let file = bytes_file_with_frame(1000, &bomb);
    let (r, largest) = largest_allocation(|| read_bytes::<Vec<u8>, _>(&BytesFormat, &file));
    let err = r.unwrap_err();
    // zstd refuses its window (larger than 1000 bytes need) at the frame.
    assert!(matches!(err, Error::Corrupt { offset: 32, .. }), "{err:?}");
    // A frame whose window fits the declared length but holds more: refused at the length.
    let file = bytes_file_with_frame(1 << 21, &bomb);
    let (r, largest_too) = largest_allocation(|| read_bytes::<Vec<u8>, _>(&BytesFormat, &file));
    let err = r.unwrap_err();
    assert!(matches!(err, Error::Corrupt { offset: 24, .. }), "{err:?}");
    assert!(err.to_string().contains("more than"), "{err}");
    assert!(largest_too <= (1 << 21) + 1, "allocated {largest_too}");
    assert!(largest < 2 * file.len() + 100_000, "allocated {largest}");

    // 1000 bytes in a frame, declared as the most such a frame could hold.
    let small = zstd_bytes_file(1000);
    let frame = &small[32..];
    let declared = frame.len() as u64 * 32_768;
    let file = bytes_file_with_frame(declared, frame);
    let (r, largest) = largest_allocation(|| read_bytes::<Vec<u8>, _>(&BytesFormat, &file));
    let err = r.unwrap_err();
    assert!(matches!(err, Error::Corrupt { offset: 24, .. }), "{err:?}");
    assert!(
        largest < 200_000,
        "allocated {largest} for a declared {declared}"
    );

    // An honest 64 MiB frame reads (a value may be much bigger than its file).
    let file = bytes_file_with_frame(64 << 20, &bomb);
    assert_eq!(
        read_bytes::<Vec<u8>, _>(&BytesFormat, &file).unwrap().len(),
        64 << 20
    );
}

/// The SDK test kit (round-trip, determinism, no panic on truncated, bit-flipped, lying and
/// random files, rejection of truncated files, version skew) with every compressible body
/// compressed. (`tests/kit.rs` runs it with the default settings and the allocation meter;
/// this binary has its own allocator, so the kit's allocation check is off here.)
#[test]
fn the_test_kit_passes_with_compression_on_every_body() {
    let records = || prop::collection::vec((0u8..4, "[ab]{0,8}"), 0..150);
    check_format(&PostcardFormat::DEFAULT.with_threshold(0), records());
    check_format(&JsonFormat::DEFAULT.with_threshold(0), records());
    check_format(&TextFormat::DEFAULT.with_threshold(0), "[ab ]{0,700}");
    check_format(
        &BytesFormat::DEFAULT.with_threshold(0),
        prop::collection::vec(0u8..3, 0..2000),
    );
}

// ---------------------------------------------------------------------------------------------
// Measurements (not a benchmark harness). Run with:
//   cargo test -p milonga-formats --release --test value_formats -- --ignored --nocapture measure

/// The benchmark records of `benches/src/records.rs`, shared by path (formats cannot depend on
/// the benches crate).
#[path = "../../benches/src/records.rs"]
#[allow(dead_code)]
mod bench_records;

#[test]
#[ignore = "a measurement; run in release with --nocapture"]
fn measure_raw_zstd_levels() {
    use std::time::Instant;
    let recs = bench_records::records(1000).collect::<Vec<_>>();
    let postcard = postcard::to_stdvec(&recs).unwrap();
    let json = serde_json::to_vec(&recs).unwrap();
    let tiny = postcard::to_stdvec(&bench_records::record(0)).unwrap();
    for n in [1u64, 2, 3, 4, 5, 8, 16, 64] {
        let body = postcard::to_stdvec(&bench_records::records(n).collect::<Vec<_>>()).unwrap();
        let frame = zstd::bulk::compress(&body, 3).unwrap();
        let reps = 20_000;
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(zstd::bulk::compress(&body, 3).unwrap());
        }
        let enc = t.elapsed().as_secs_f64() / reps as f64;
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(zstd::bulk::decompress(&frame, body.len()).unwrap());
        }
        let dec = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{n:>3} records: {:>6} -> {:>6} bytes (+8 length), ratio {:.2}, encode {:.1} us, decode {:.1} us",
            body.len(),
            frame.len(),
            body.len() as f64 / (frame.len() + 8) as f64,
            enc * 1e6,
            dec * 1e6
        );
    }
    for (name, body) in [
        ("postcard 1000", &postcard),
        ("json 1000", &json),
        ("postcard 1 record", &tiny),
    ] {
        println!("{name}: {} bytes", body.len());
        for level in [-1, 1, 2, 3, 5, 7, 9, 12, 19] {
            let reps = (2_000_000 / body.len()).max(5);
            let t = Instant::now();
            let mut frame = Vec::new();
            for _ in 0..reps {
                frame = zstd::bulk::compress(body, level).unwrap();
            }
            let enc = t.elapsed().as_secs_f64() / reps as f64;
            let t = Instant::now();
            for _ in 0..reps {
                let back = zstd::bulk::decompress(&frame, body.len()).unwrap();
                assert_eq!(back.len(), body.len());
            }
            let dec = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "  level {level:>3}: {:>7} bytes, ratio {:.2}, encode {:>7.1} MB/s, decode {:>7.1} MB/s",
                frame.len(),
                body.len() as f64 / frame.len() as f64,
                body.len() as f64 / enc / 1e6,
                body.len() as f64 / dec / 1e6
            );
        }
    }
}

#[test]
#[ignore = "a measurement; run in release with --nocapture"]
fn measure_value_formats() {
    use bench_records::{record, records, Record as BenchRecord};
    use std::time::Instant;

    fn run<F: Format<Vec<BenchRecord>, Output = Vec<BenchRecord>>>(
        name: &str,
        format: &F,
        value: &[BenchRecord],
        reps: usize,
    ) {
        let file = data_of(format, value.to_vec());
        let artifact = artifact_with(&file);
        let body = postcard::to_stdvec(value).unwrap().len();
        let t = Instant::now();
        for _ in 0..reps {
            let a = MemoryArtifact::new();
            format.write(value.to_vec(), &a).unwrap();
        }
        let enc = t.elapsed().as_secs_f64() / reps as f64;
        let t = Instant::now();
        for _ in 0..reps {
            let back = format.read(artifact.handle()).unwrap();
            assert_eq!(back.len(), value.len());
        }
        let dec = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "  {name:<34} data {:>7} bytes, write {:>8.1} us ({:>6.1} MB/s of postcard), \
             read {:>8.1} us ({:>6.1} MB/s)",
            file.len(),
            enc * 1e6,
            body as f64 / enc / 1e6,
            dec * 1e6,
            body as f64 / dec / 1e6,
        );
    }

    for (label, value, reps) in [
        (
            "1000 benchmark records",
            records(1000).collect::<Vec<_>>(),
            300,
        ),
        ("1 benchmark record (tiny)", vec![record(0)], 20_000),
        (
            "5 benchmark records (~560 B)",
            records(5).collect::<Vec<_>>(),
            20_000,
        ),
    ] {
        println!("{label}:");
        run(
            "PostcardFormat (default, zstd 3)",
            &PostcardFormat,
            &value,
            reps,
        );
        run(
            "PostcardFormat::uncompressed()",
            &PostcardFormat::uncompressed(),
            &value,
            reps,
        );
        run(
            "PostcardFormat zstd 1",
            &PostcardFormat::DEFAULT.with_compression(Compression::Zstd { level: 1 }),
            &value,
            reps,
        );
        run("JsonFormat (default, zstd 3)", &JsonFormat, &value, reps);
        run(
            "JsonFormat::uncompressed()",
            &JsonFormat::uncompressed(),
            &value,
            reps,
        );
    }
}
