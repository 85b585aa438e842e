//! # milonga-formats
//!
//! The built-in formats of milonga, written only against the public traits of
//! [`milonga_sdk`] (so a custom format can do everything these do). Users depend on the
//! `milonga` crate, which re-exports everything here.
//!
//! | format | stores | read back as |
//! |---|---|---|
//! | [`PostcardFormat`](type@PostcardFormat) (the default) | any serde value | the value |
//! | [`JsonFormat`](type@JsonFormat) | any serde value, as JSON | the value |
//! | [`TextFormat`](type@TextFormat), [`BytesFormat`](type@BytesFormat) | a `String`, a `Vec<u8>` | the value |
//! | [`StreamFormat`] | a [`Stream`] of items, in compressed chunks | a lazy [`StreamReader`] |
//! | [`JsonLinesFormat`], [`TextLinesFormat`] | a [`Stream`] as plain `.jsonl` / text-lines files (optionally `.zst`) | a lazy [`LinesReader`] |
//! | [`SqliteSequenceFormat`] | any iterator (or a resumable [`SqliteSequenceBuilder`]) | a random-access [`SqliteSequence`] |
//! | [`SqliteDictFormat`] | key/value pairs | a [`SqliteDict`] |
//! | [`SqliteDatasetDictFormat`] | named splits plus metadata | a [`SqliteDatasetDict`] |
//!
//! Every format puts its id and version in the bytes it writes, refuses files from another
//! format or a newer version with a typed error, and never panics on corrupt input. The bytes
//! are specified in `docs/FORMAT.md` §8. [`chunked`] is the chunked record file that streams
//! are built on, public for custom formats.
//!
//! ```
//! use milonga_formats::{PostcardFormat, Stream, StreamFormat};
//! use milonga_sdk::{Format, MemoryArtifact};
//!
//! // A value, written and read back.
//! let artifact = MemoryArtifact::new();
//! PostcardFormat.write(vec![1u32, 2, 3], &artifact)?;
//! let back: Vec<u32> = PostcardFormat.read(artifact.handle())?;
//! assert_eq!(back, [1, 2, 3]);
//!
//! // A stream: written item by item, read lazily.
//! let artifact = MemoryArtifact::new();
//! let format = StreamFormat::<u64>::new();
//! format.write(Stream::new(0..100_000u64), &artifact)?;
//! let reader = format.read(artifact.handle())?;
//! assert_eq!(reader.len()?, 100_000);
//! assert_eq!(reader.get(4_321)?, 4_321);
//! assert_eq!(reader.iter().filter_map(Result::ok).sum::<u64>(), (0..100_000u64).sum::<u64>());
//! # Ok::<(), milonga_sdk::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod chunked;
mod codec;
mod lines;
mod sorted_json;
mod sqlite;
mod stream;
mod value;
mod varint;
mod zstd_frame;

/// How a format compresses what it writes: one setting shared by the single-value formats,
/// [`StreamFormat`] (its chunks' blocks) and the lines formats (their parts). The SQLite
/// formats take a [`SqliteCompression`], which adds dictionaries and blocks of rows.
pub use chunked::Compression;
pub use codec::{JsonCodec, PostcardCodec};
pub use lines::{JsonLinesFormat, LinesIter, LinesReader, TextLinesFormat};
pub use sqlite::{
    DatasetDict, SqliteCompression, SqliteDatasetDict, SqliteDatasetDictFormat, SqliteDict,
    SqliteDictFormat, SqliteDictIter, SqliteDictKeys, SqliteIter, SqliteSequence,
    SqliteSequenceBuilder, SqliteSequenceFormat,
};
pub use stream::{Stream, StreamFormat, StreamIter, StreamReader};
pub use value::{value_encoding, BytesFormat, JsonFormat, PostcardFormat, TextFormat, ValueFormat};

/// The fuzz entry point of the bounded zstd decoder, for the repository's fuzz targets (not a
/// stable API).
#[doc(hidden)]
pub use zstd_frame::fuzz_frame as fuzz_zstd_frame;
