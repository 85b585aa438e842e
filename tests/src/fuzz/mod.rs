//! The bodies of the fuzz targets in `fuzz/`, shared with the regression test
//! (`tests/tests/fuzz_regressions.rs`) so that every input that ever crashed a target is replayed
//! by a plain `cargo test`, without cargo-fuzz.
//!
//! Each function takes the fuzzer's bytes and panics only when a contract is broken: a decoder
//! panicked, or a value it accepted does not survive a round-trip.

mod columns;
mod store;
mod stream_store;
mod streams;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use milonga::sdk::{Envelope, Format, MemoryArtifact};
use milonga::{
    BytesFormat, JsonFormat, Manifest, PostcardFormat, SqliteDict, SqliteDictFormat,
    SqliteSequence, SqliteSequenceFormat, TextFormat,
};
use serde::{Deserialize, Serialize};

pub use columns::columns;
pub use store::{store_ops, Faults, FaultyStore};
pub use stream_store::stream_store_ops;
pub use streams::{chunk, stream_read};

/// A target: a name (the folder under `fuzz/regressions/`) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("envelope", envelope),
    ("manifest", manifest),
    ("value_postcard", value_postcard),
    ("value_json", value_json),
    ("value_text", value_text),
    ("value_bytes", value_bytes),
    ("sqlite_sequence", sqlite_sequence),
    ("store", store_ops),
    ("chunk", chunk),
    ("stream_read", stream_read),
    ("sqlite_dict", sqlite_dict),
    ("columns", columns),
    ("stream_store", stream_store_ops),
];

/// [`Envelope::decode`] and [`Envelope::read_from`] agree, and a decoded header re-encodes to
/// the bytes it came from.
pub fn envelope(data: &[u8]) {
    let decoded = Envelope::decode(data, "fuzz");
    let read = Envelope::read_from(&mut &data[..], "fuzz");
    match (&decoded, &read) {
        (Ok((a, rest)), Ok(b)) => {
            assert_eq!(a, b, "decode and read_from disagree");
            let mut again = Vec::new();
            a.encode_into(&mut again)
                .expect("a decoded envelope encodes");
            assert_eq!(again, data[..data.len() - rest.len()], "not canonical");
        }
        (Err(_), Err(_)) => {}
        _ => panic!("decode gave {decoded:?}, read_from gave {read:?}"),
    }
}

/// [`Manifest::decode`] never panics, and what it accepts re-encodes to the same bytes.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data, "fuzz") {
        assert_eq!(m.encode().expect("a decoded manifest encodes"), data);
    }
}

/// A value with every kind of serde shape, for the postcard and JSON targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FuzzRecord {
    id: u32,
    name: String,
    tags: Vec<u8>,
    score: Option<i16>,
    counts: BTreeMap<String, u64>,
    shape: Shape,
    nested: Vec<Vec<u16>>,
    flag: bool,
    wide: i128,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Dot,
    Circle(u32),
    Rect { w: u16, h: u16 },
}

/// Reads `data` as the `"data"` file of an artifact of `format`. When the first byte is odd,
/// the rest of `data` goes behind a valid envelope of the format, so that the fuzzer spends its
/// time in the payload decoder. A value that reads is written again and must read back equal.
fn value<T, F>(format: &F, data: &[u8], compare: bool)
where
    F: Format<T, Output = T>,
    T: PartialEq + std::fmt::Debug + Clone,
{
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = Vec::new();
    if mode & 1 == 1 {
        Envelope::new(format.id(), format.version())
            .encode_into(&mut file)
            .expect("valid id");
    }
    file.extend_from_slice(rest);
    let artifact = MemoryArtifact::new();
    artifact.set_file("data", file);
    if let Ok(v) = format.read(artifact.handle()) {
        let again = MemoryArtifact::new();
        format
            .write(v.clone(), &again)
            .expect("a value that was read writes");
        let back = format.read(again.handle()).expect("what was written reads");
        if compare {
            assert_eq!(back, v, "round-trip of a decoded value");
        }
    }
}

/// [`PostcardFormat`](struct@PostcardFormat) reading a [`FuzzRecord`].
pub fn value_postcard(data: &[u8]) {
    value::<FuzzRecord, _>(&PostcardFormat, data, true);
}

/// [`JsonFormat`](struct@JsonFormat) reading a [`FuzzRecord`] and, from the same bytes, any JSON value.
pub fn value_json(data: &[u8]) {
    value::<FuzzRecord, _>(&JsonFormat, data, true);
    // Floats in arbitrary JSON may come back one ulp off (no `float_roundtrip`), a documented
    // limit: only reading and writing again must work.
    value::<serde_json::Value, _>(&JsonFormat, data, false);
}

/// [`TextFormat`](struct@TextFormat).
pub fn value_text(data: &[u8]) {
    value::<String, _>(&TextFormat, data, true);
}

/// [`BytesFormat`](struct@BytesFormat).
pub fn value_bytes(data: &[u8]) {
    value::<Vec<u8>, _>(&BytesFormat, data, true);
}

type Item = (u32, String);

/// A valid sequence file of a few items, made once: the template the fuzzer patches.
fn sqlite_template() -> &'static (String, Vec<u8>) {
    static TEMPLATE: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let artifact = MemoryArtifact::new();
        let items: Vec<Item> = (0..20).map(|i| (i * 7, "x".repeat(i as usize))).collect();
        SqliteSequenceFormat::<Item>::new()
            .write(items, &artifact)
            .expect("write the template");
        artifact.snapshot().pop().expect("one file")
    })
}

/// [`SqliteSequenceFormat`] opening a file and reading it every way. When the first byte is
/// odd, the file is a valid sequence patched by the rest of the input (pairs of a `u16` offset
/// and a byte to XOR there), which reaches far deeper than random bytes; otherwise the rest of
/// the input is the whole file.
pub fn sqlite_sequence(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (name, template) = sqlite_template();
    let file = if mode & 1 == 1 {
        let mut file = template.clone();
        for patch in rest.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([patch[0], patch[1]])) % file.len();
            file[at] ^= patch[2];
        }
        file
    } else {
        rest.to_vec()
    };
    let artifact = MemoryArtifact::new();
    artifact.set_file(name, file);
    let format = SqliteSequenceFormat::<Item>::new();
    let Ok(seq) = <_ as Format<Vec<Item>>>::read(&format, artifact.handle()) else {
        return;
    };
    let seq: SqliteSequence<Item> = seq;
    let n = seq.len();
    let _ = seq.iter().take(10_000).collect::<Vec<_>>();
    for i in [0, 1, n / 2, n.saturating_sub(1)] {
        let _ = seq.get(i);
    }
    assert!(seq.get(n).is_err(), "get(len) must be out of range");
    assert!(
        seq.get(u64::MAX).is_err(),
        "get(u64::MAX) must be out of range"
    );
}

/// A valid dict file of a few entries, made once: the template the fuzzer patches.
fn sqlite_dict_template() -> &'static (String, Vec<u8>) {
    static TEMPLATE: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let artifact = MemoryArtifact::new();
        let entries: Vec<(String, Item)> = (0..20u32)
            .map(|i| (format!("key{i}"), (i * 7, "x".repeat(i as usize))))
            .collect();
        SqliteDictFormat::<String, Item>::new()
            .write(entries, &artifact)
            .expect("write the template");
        artifact.snapshot().pop().expect("one file")
    })
}

/// [`SqliteDictFormat`] opening a file and reading it every way (`len`, iteration, keys, `get`
/// and `contains` of present and absent keys). The input is read as for [`sqlite_sequence`]:
/// a patched valid dict when the first byte is odd, the whole file otherwise.
pub fn sqlite_dict(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (name, template) = sqlite_dict_template();
    let file = if mode & 1 == 1 {
        let mut file = template.clone();
        for patch in rest.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([patch[0], patch[1]])) % file.len();
            file[at] ^= patch[2];
        }
        file
    } else {
        rest.to_vec()
    };
    let artifact = MemoryArtifact::new();
    artifact.set_file(name, file);
    let format = SqliteDictFormat::<String, Item>::new();
    let Ok(dict) = <_ as Format<Vec<(String, Item)>>>::read(&format, artifact.handle()) else {
        return;
    };
    let dict: SqliteDict<String, Item> = dict;
    let _ = dict.len();
    let entries: Vec<_> = dict.iter().take(10_000).collect();
    let _ = dict.keys().take(10_000).count();
    for (k, _) in entries.iter().flatten().take(8) {
        let _ = dict.get(k);
        let _ = dict.contains(k);
    }
    for k in ["key3", "", "absent"] {
        let _ = dict.get(k);
        let _ = dict.contains(k);
    }
}
