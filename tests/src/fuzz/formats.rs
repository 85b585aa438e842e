//! The format targets: each built-in format (and the example `ColumnsFormat`) fuzzed with the
//! SDK's [`FormatFuzzer`] from a few seed values, with lazy outputs drained by iteration and by
//! random access. Each fuzzer is made once per process.

use std::sync::LazyLock;

use milonga::sdk::testing::fuzz::FormatFuzzer;
use milonga::{
    BytesFormat, Compression, JsonFormat, JsonLinesFormat, LinesReader, PostcardFormat, SqliteDict,
    SqliteDictFormat, SqliteSequence, SqliteSequenceFormat, Stream, StreamFormat, StreamReader,
    TextFormat, TextLinesFormat,
};

use super::columns::{Column, ColumnsFormat, Table, TableReader};
use super::FuzzRecord;

type Item = (u32, String);

fn items(n: u32) -> Vec<Item> {
    (0..n).map(|i| (i * 7, "x".repeat(i as usize))).collect()
}

static VALUE_POSTCARD: LazyLock<FormatFuzzer<FuzzRecord, PostcardFormat>> = LazyLock::new(|| {
    FormatFuzzer::new(PostcardFormat)
        .with_seeds(FuzzRecord::seeds())
        .with_arbitrary_values()
});

/// [`PostcardFormat`](type@PostcardFormat) reading a [`FuzzRecord`]: seeds, and records made
/// by `arbitrary`.
pub fn value_postcard(data: &[u8]) {
    VALUE_POSTCARD.run(data);
}

static VALUE_JSON: LazyLock<FormatFuzzer<FuzzRecord, JsonFormat>> = LazyLock::new(|| {
    FormatFuzzer::new(JsonFormat)
        .with_seeds(FuzzRecord::seeds())
        .with_arbitrary_values()
});

static VALUE_JSON_ANY: LazyLock<FormatFuzzer<serde_json::Value, JsonFormat>> =
    LazyLock::new(|| {
        FormatFuzzer::new(JsonFormat)
            .with_seeds([
                serde_json::json!({"a": [1, 2.5, null, true], "b": {"c": "d"}}),
                serde_json::json!([[[[[[[[[[1]]]]]]]]]]),
            ])
            .with_roundtrip_compare(false)
    });

/// A lazy lines reader read every way: iteration, and `len`/`get` against it.
fn lines_fuzzer<T, F>(format: F, seeds: Vec<Vec<T>>) -> FormatFuzzer<Stream<T>, F, Vec<T>>
where
    T: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static,
    F: milonga::sdk::Format<Stream<T>, Output = LinesReader<T>> + Send + Sync,
{
    let collect = |r: LinesReader<T>| r.iter().take(10_000).collect::<Result<Vec<T>, _>>();
    FormatFuzzer::lazy(format, |v: &Vec<T>| Stream::new(v.clone()), collect)
        .with_seeds(seeds)
        .with_random_access(
            |r| r.len(),
            |r, i| r.get(i),
            move |r| r.iter().take(10_000).collect(),
        )
}

type JsonLinesFuzzer =
    FormatFuzzer<Stream<FuzzRecord>, JsonLinesFormat<FuzzRecord>, Vec<FuzzRecord>>;

static JSON_LINES: LazyLock<JsonLinesFuzzer> = LazyLock::new(|| {
    // Small parts, so that a seed has several; plain text, so that edits reach the lines.
    let seeds = FuzzRecord::seeds();
    lines_fuzzer(
        JsonLinesFormat::new().with_part_size(64),
        vec![
            Vec::new(),
            seeds.clone(),
            seeds.into_iter().take(1).collect(),
        ],
    )
});

/// [`JsonFormat`](type@JsonFormat) reading a [`FuzzRecord`], and from the same input any
/// JSON value and a [`JsonLinesFormat`] stream of records.
pub fn value_json(data: &[u8]) {
    // Floats in arbitrary JSON may come back one ulp off (no `float_roundtrip`), a documented
    // limit: only reading and writing again must work.
    VALUE_JSON.run(data);
    VALUE_JSON_ANY.run(data);
    JSON_LINES.run(data);
}

static VALUE_TEXT: LazyLock<FormatFuzzer<String, TextFormat>> = LazyLock::new(|| {
    FormatFuzzer::new(TextFormat)
        .with_seeds(["".to_owned(), "héllo\nwörld".to_owned()])
        .with_arbitrary_values()
});

static TEXT_LINES: LazyLock<FormatFuzzer<Stream<String>, TextLinesFormat, Vec<String>>> =
    LazyLock::new(|| {
        // zstd parts (standard frames with a checksum), several per seed.
        let lines = |n: usize| (0..n).map(|i| "é-".repeat(i % 5)).collect::<Vec<String>>();
        lines_fuzzer(
            TextLinesFormat::new()
                .with_part_size(24)
                .with_compression(Compression::Zstd { level: 3 }),
            vec![lines(0), lines(3), lines(12)],
        )
    });

/// [`TextFormat`](type@TextFormat), and from the same input a compressed [`TextLinesFormat`]
/// stream.
pub fn value_text(data: &[u8]) {
    VALUE_TEXT.run(data);
    TEXT_LINES.run(data);
}

static VALUE_BYTES: LazyLock<FormatFuzzer<Vec<u8>, BytesFormat>> = LazyLock::new(|| {
    FormatFuzzer::new(BytesFormat)
        .with_seeds([vec![], (0..=255).collect()])
        .with_arbitrary_values()
});

/// [`BytesFormat`](type@BytesFormat).
pub fn value_bytes(data: &[u8]) {
    VALUE_BYTES.run(data);
}

type Sequence = SqliteSequenceFormat<Item>;

static SQLITE_SEQUENCE: LazyLock<FormatFuzzer<Vec<Item>, Sequence>> = LazyLock::new(|| {
    FormatFuzzer::lazy(Sequence::new(), Clone::clone, |s: SqliteSequence<Item>| {
        s.iter().take(10_000).collect()
    })
    .with_seeds([items(0), items(3), items(20)])
    .with_random_access(|s| Ok(s.len()), |s, i| s.get(i), |s| s.iter().collect())
});

/// [`SqliteSequenceFormat`]: a sequence file read every way (`len`, iteration, `get`).
pub fn sqlite_sequence(data: &[u8]) {
    SQLITE_SEQUENCE.run(data);
}

type Dict = SqliteDictFormat<String, Item>;
type Entries = Vec<(String, Item)>;

static SQLITE_DICT: LazyLock<FormatFuzzer<Entries, Dict>> = LazyLock::new(|| {
    let entries = |n: u32| -> Entries {
        items(n)
            .into_iter()
            .enumerate()
            .map(|(i, item)| (format!("key{i}"), item))
            .collect()
    };
    FormatFuzzer::lazy(Dict::new(), Clone::clone, |d: SqliteDict<String, Item>| {
        let entries: Entries = d.iter().take(10_000).collect::<Result<_, _>>()?;
        let _ = d.keys().take(10_000).count();
        for (k, _) in entries.iter().take(8) {
            d.get(k)?;
            d.contains(k)?;
        }
        for k in ["key3", "", "absent"] {
            let _ = d.get(k);
            let _ = d.contains(k);
        }
        Ok(entries)
    })
    .with_seeds([entries(0), entries(2), entries(20)])
});

/// [`SqliteDictFormat`]: a dict file read every way (`len`, iteration, keys, `get` and
/// `contains` of present and absent keys).
pub fn sqlite_dict(data: &[u8]) {
    SQLITE_DICT.run(data);
}

fn stream_format() -> StreamFormat<Vec<u8>> {
    StreamFormat::new()
        .with_chunk_size(40)
        .with_block_size(16)
        .with_workers(1)
}

type StreamFuzzer = FormatFuzzer<Stream<Vec<u8>>, StreamFormat<Vec<u8>>, Vec<Vec<u8>>>;

static STREAM_READ: LazyLock<StreamFuzzer> = LazyLock::new(|| {
    FormatFuzzer::lazy(
        stream_format(),
        |items: &Vec<Vec<u8>>| Stream::new(items.clone()),
        |r: StreamReader<Vec<u8>>| {
            let all: Vec<Vec<u8>> = r.iter().take(10_000).collect::<Result<_, _>>()?;
            let n = all.len() as u64;
            let tail: Vec<Vec<u8>> = r.range(n / 2..n).collect::<Result<_, _>>()?;
            assert_eq!(
                tail,
                all[(n / 2) as usize..],
                "range disagrees with iteration"
            );
            Ok(all)
        },
    )
    .with_seeds([
        vec![],
        vec![vec![1, 2, 3]],
        (0..30u8).map(|i| vec![i; usize::from(i % 7)]).collect(),
    ])
    .with_random_access(|r| r.len(), |r, i| r.get(i), |r| r.iter().collect())
    .with_fixup(|files| {
        for (_, file) in files {
            super::streams::fix_trailer(file);
        }
    })
});

/// [`StreamFormat`]: a stream in several chunks read every way (`len`, `get`, `range`,
/// iteration), with the chunks' checksums recomputed after the edits for half of the inputs
/// (so that the fuzzer reaches the field checks behind them).
pub fn stream_read(data: &[u8]) {
    STREAM_READ.run(data);
}

/// A table compared bit for bit, so that a NaN read from fuzzed bytes equals itself.
#[derive(Debug, Clone)]
pub struct BitTable(pub Table);

impl PartialEq for BitTable {
    fn eq(&self, other: &Self) -> bool {
        let bits = |t: &Table| -> Vec<(String, Vec<u64>)> {
            t.columns
                .iter()
                .map(|(name, c)| {
                    let v = match c {
                        Column::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
                        Column::I64(v) => v.iter().map(|&x| x as u64).collect(),
                    };
                    (name.clone(), v)
                })
                .collect()
        };
        bits(&self.0) == bits(&other.0)
    }
}

static COLUMNS: LazyLock<FormatFuzzer<Table, ColumnsFormat, BitTable>> =
    LazyLock::new(columns_fuzzer);

/// The example's `ColumnsFormat` (`examples/columns_format.rs`): a table read column by column
/// and whole; every column of a table that loads has `rows()` values.
pub fn columns(data: &[u8]) {
    COLUMNS.run(data);
}

/// The fuzzer of the `columns` target.
pub fn columns_fuzzer() -> FormatFuzzer<Table, ColumnsFormat, BitTable> {
    let make = |t: &BitTable| t.0.clone();
    FormatFuzzer::lazy(ColumnsFormat, make, |reader: TableReader| {
        let names: Vec<String> = reader.names().map(str::to_owned).collect();
        for name in &names {
            reader.column(name)?;
        }
        let table = reader.load()?;
        for (name, column) in &table.columns {
            let n = match column {
                Column::F64(v) => v.len(),
                Column::I64(v) => v.len(),
            };
            assert_eq!(n as u64, reader.rows(), "column {name:?}: {n} values");
        }
        Ok(BitTable(table))
    })
    .with_seeds([
        BitTable(Table::default()),
        BitTable(Table {
            columns: vec![
                ("t".into(), Column::I64((0..6).collect())),
                (
                    "x".into(),
                    Column::F64(vec![0.5, -1.0, 2.0, 1e9, 0.0, 3.25]),
                ),
                ("y".into(), Column::I64(vec![7; 6])),
            ],
        }),
    ])
}

/// The seed inputs of a format target (see `FormatFuzzer::seed_inputs`), by target name; `None`
/// for a target that is not a `FormatFuzzer`.
pub fn seed_inputs(target: &str) -> Option<Vec<Vec<u8>>> {
    Some(match target {
        "value_postcard" => VALUE_POSTCARD.seed_inputs(),
        "value_json" => [VALUE_JSON.seed_inputs(), JSON_LINES.seed_inputs()].concat(),
        "value_text" => [VALUE_TEXT.seed_inputs(), TEXT_LINES.seed_inputs()].concat(),
        "value_bytes" => VALUE_BYTES.seed_inputs(),
        "sqlite_sequence" => SQLITE_SEQUENCE.seed_inputs(),
        "sqlite_dict" => SQLITE_DICT.seed_inputs(),
        "stream_read" => STREAM_READ.seed_inputs(),
        "columns" => COLUMNS.seed_inputs(),
        _ => return None,
    })
}
