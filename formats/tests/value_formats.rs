//! The single-value formats: golden bytes, round-trips, and every kind of bad input.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use milonga_formats::{BytesFormat, JsonFormat, PostcardFormat, TextFormat};
use milonga_sdk::testing::{roundtrip, write_to_memory};
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
// Golden bytes: these are the on-disk layouts of version 1 and must never change.

#[test]
fn postcard_golden_bytes() {
    let bytes = data_of(&PostcardFormat, record());
    assert_eq!(
        bytes,
        b"MLGE\x01\x10milonga.postcard\x01\x00\x00\x00\
          \xac\x02\
          \x02ab\
          \x02\x01\x02\
          \x01\x03"
            .to_vec()
    );
    assert_eq!(
        data_of(&PostcardFormat, 7u8),
        b"MLGE\x01\x10milonga.postcard\x01\x00\x00\x00\x07".to_vec()
    );
}

#[test]
fn json_golden_bytes_sort_object_keys() {
    let doc = Doc {
        z: 7,
        counts: HashMap::from([("b".to_owned(), 2), ("a".to_owned(), 1)]),
    };
    assert_eq!(
        data_of(&JsonFormat, doc),
        b"MLGE\x01\x0cmilonga.json\x01\x00\x00\x00{\"counts\":{\"a\":1,\"b\":2},\"z\":7}\n"
            .to_vec()
    );
    assert_eq!(
        data_of(&JsonFormat, record()),
        b"MLGE\x01\x0cmilonga.json\x01\x00\x00\x00\
          {\"id\":300,\"name\":\"ab\",\"score\":-2,\"tags\":[1,2]}\n"
            .to_vec()
    );
    assert_eq!(
        data_of(&JsonFormat, 0.1f64),
        b"MLGE\x01\x0cmilonga.json\x01\x00\x00\x000.1\n".to_vec()
    );
}

#[test]
fn json_integer_keys_sort_as_strings_and_hand_edited_json_reads() {
    let map = HashMap::from([(9u32, true), (10, false)]);
    let bytes = data_of(&JsonFormat, map.clone());
    assert!(bytes.ends_with(b"{\"10\":false,\"9\":true}\n"));
    let mut edited = envelope(JsonFormat::ID, 1);
    edited.extend_from_slice(b"{ \"9\": true,\n  \"10\": false }\n\n");
    assert_eq!(
        read_bytes::<HashMap<u32, bool>, _>(&JsonFormat, &edited).unwrap(),
        map
    );
}

#[test]
fn text_golden_bytes() {
    assert_eq!(
        data_of(&TextFormat, "h\u{e9}llo".to_owned()),
        b"MLGE\x01\x0cmilonga.text\x01\x00\x00\x00\
          \x06\x00\x00\x00\x00\x00\x00\x00\
          h\xc3\xa9llo"
            .to_vec()
    );
    assert_eq!(
        data_of(&TextFormat, String::new()),
        b"MLGE\x01\x0cmilonga.text\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec()
    );
}

#[test]
fn bytes_golden_bytes() {
    assert_eq!(
        data_of(&BytesFormat, vec![0x00, 0xff, 0x10]),
        b"MLGE\x01\x0dmilonga.bytes\x01\x00\x00\x00\
          \x03\x00\x00\x00\x00\x00\x00\x00\
          \x00\xff\x10"
            .to_vec()
    );
}

#[test]
fn ids_versions_and_file_name() {
    assert_eq!(
        <PostcardFormat as Format<u8>>::id(&PostcardFormat),
        "milonga.postcard"
    );
    assert_eq!(<JsonFormat as Format<u8>>::id(&JsonFormat), "milonga.json");
    assert_eq!(Format::<String>::id(&TextFormat), "milonga.text");
    assert_eq!(Format::<Vec<u8>>::id(&BytesFormat), "milonga.bytes");
    assert_eq!(<PostcardFormat as Format<u8>>::version(&PostcardFormat), 1);
    assert_eq!(<JsonFormat as Format<u8>>::version(&JsonFormat), 1);
    assert_eq!(Format::<String>::version(&TextFormat), 1);
    assert_eq!(Format::<Vec<u8>>::version(&BytesFormat), 1);
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

    #[test]
    fn writing_is_deterministic(value in wide()) {
        prop_assert_eq!(
            data_of(&PostcardFormat, value.clone()),
            data_of(&PostcardFormat, value.clone())
        );
        prop_assert_eq!(data_of(&JsonFormat, value.clone()), data_of(&JsonFormat, value.clone()));
        prop_assert_eq!(data_of(&TextFormat, value.c.clone()), data_of(&TextFormat, value.c));
        prop_assert_eq!(data_of(&BytesFormat, value.d.clone()), data_of(&BytesFormat, value.d));
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
    fn arbitrary_payloads_never_panic(payload in prop::collection::vec(any::<u8>(), 0..256)) {
        let with = |id: &str| {
            let mut bytes = envelope(id, 1);
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
        for id in [TextFormat::ID, BytesFormat::ID] {
            let mut bytes = envelope(id, 1);
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
        if name.starts_with("json") {
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
        let mut bytes = envelope(id, 2);
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
            .unwrap_or_else(|| panic!("{id} version 2 must be refused"));
        assert_names_data(&err);
        assert!(
            matches!(&err, Error::UnsupportedVersion { format, found: 2, supported: 1, .. }
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
    let bytes = data_of(&PostcardFormat, "x".to_owned());
    let err = read_bytes::<Record, _>(&PostcardFormat, &bytes).unwrap_err();
    assert!(matches!(err, Error::Decode { offset: 26, .. }), "{err:?}");
    assert_names_data(&err);

    let bytes = data_of(&JsonFormat, "x".to_owned());
    let err = read_bytes::<Record, _>(&JsonFormat, &bytes).unwrap_err();
    assert!(matches!(err, Error::Decode { offset: 22, .. }), "{err:?}");
    assert_names_data(&err);
}

#[test]
fn invalid_utf8_text_is_corrupt_at_the_bad_byte() {
    let mut bytes = envelope(TextFormat::ID, 1);
    bytes.extend_from_slice(&4u64.to_le_bytes());
    bytes.extend_from_slice(b"ab\xffc");
    let err = read_bytes::<String, _>(&TextFormat, &bytes).unwrap_err();
    // 22 bytes of envelope, 8 of length, then "ab".
    assert!(matches!(err, Error::Corrupt { offset: 32, .. }), "{err:?}");
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
        let mut bytes = envelope(PostcardFormat::ID, 1);
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
    let mut bytes = envelope(BytesFormat::ID, 1);
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(b"abc");
    let err = read_bytes::<Vec<u8>, _>(&BytesFormat, &bytes).unwrap_err();
    // 23 bytes of envelope, 8 of length, 3 present.
    assert!(matches!(err, Error::Corrupt { offset: 34, .. }), "{err:?}");
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
    let big = "x".repeat(100_000);
    for budget in [0, 10, 30, 50_000] {
        let artifact = FailingArtifact { budget };
        let errs = [
            PostcardFormat.write(big.clone(), &artifact),
            JsonFormat.write(big.clone(), &artifact),
            TextFormat.write(big.clone(), &artifact),
            BytesFormat.write(big.clone().into_bytes(), &artifact),
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
