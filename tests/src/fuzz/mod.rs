//! The bodies of the fuzz targets in `fuzz/`, shared with the regression test
//! (`tests/tests/fuzz_regressions.rs`) so that every input that ever crashed a target is replayed
//! by a plain `cargo test`, without cargo-fuzz.
//!
//! Each function takes the fuzzer's bytes and panics only when a contract is broken: a decoder
//! panicked, or a value it accepted does not survive a round-trip.
//!
//! The format targets (`formats.rs`) are the SDK's `FormatFuzzer`, configured; what is left
//! here is specific to the engine: the envelope and manifest decoders, the chunk decoder, and
//! the stateful store and stream-store targets.

mod columns;
mod formats;
mod store;
mod stream_store;
mod streams;

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use milonga::sdk::Envelope;
use milonga::Manifest;
use serde::{Deserialize, Serialize};

pub use columns::{Column, ColumnsFormat, Table, TableReader};
pub use formats::{
    columns, columns_fuzzer, seed_inputs, sqlite_dict, sqlite_sequence, stream_read, value_bytes,
    value_json, value_postcard, value_text, BitTable,
};
pub use store::{store_ops, Faults, FaultyStore};
pub use stream_store::stream_store_ops;
pub use streams::chunk;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Arbitrary)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Arbitrary)]
enum Shape {
    Dot,
    Circle(u32),
    Rect { w: u16, h: u16 },
}

impl FuzzRecord {
    /// A few records of different shapes: the seeds of the targets.
    pub fn seeds() -> Vec<FuzzRecord> {
        let empty = FuzzRecord {
            id: 0,
            name: String::new(),
            tags: vec![],
            score: None,
            counts: BTreeMap::new(),
            shape: Shape::Dot,
            nested: vec![],
            flag: false,
            wide: 0,
        };
        let full = FuzzRecord {
            id: u32::MAX,
            name: "ñandú".into(),
            tags: vec![1, 2, 3, 255],
            score: Some(-7),
            counts: [("a".to_owned(), 1), ("bb".to_owned(), u64::MAX)].into(),
            shape: Shape::Rect { w: 3, h: 4 },
            nested: vec![vec![], vec![1, 2], vec![u16::MAX]],
            flag: true,
            wide: i128::from(i64::MIN),
        };
        let circle = FuzzRecord {
            shape: Shape::Circle(9),
            ..empty.clone()
        };
        vec![empty, full, circle]
    }
}
