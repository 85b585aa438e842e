//! # milonga-formats
//!
//! The built-in formats of milonga, written only against the public traits of
//! [`milonga_sdk`]. Users depend on the `milonga` crate, which re-exports everything here.
#![forbid(unsafe_code)]

mod codec;

pub use codec::{JsonCodec, PostcardCodec};
mod value;
pub use value::{BytesFormat, JsonFormat, PostcardFormat, TextFormat};
mod sqlite;
pub use sqlite::{
    DatasetDict, SqliteCompression, SqliteDatasetDict, SqliteDatasetDictFormat, SqliteDict,
    SqliteDictFormat, SqliteDictIter, SqliteDictKeys, SqliteIter, SqliteSequence,
    SqliteSequenceBuilder, SqliteSequenceFormat,
};
pub mod chunked;
mod stream;
pub use stream::{Stream, StreamFormat, StreamIter, StreamReader};
