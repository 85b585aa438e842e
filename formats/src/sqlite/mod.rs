//! SQLite-backed random-access formats: [`SqliteSequenceFormat`], [`SqliteDictFormat`] and
//! [`SqliteDatasetDictFormat`], plus the resumable [`SqliteSequenceBuilder`].
//!
//! Every file is one SQLite database with `application_id` `0x4D4C4753` (`MLGS`), a
//! `milonga_meta` table (envelope, codec, compression, length) and one data table. The layout
//! is specified in `docs/FORMAT.md` §8.3.

mod block;
mod builder;
mod compress;
mod dataset;
mod dict;
mod errors;
mod pool;
mod schema;
mod sequence;
mod writer;

pub use builder::SqliteSequenceBuilder;
pub use compress::SqliteCompression;
pub use dataset::{DatasetDict, SqliteDatasetDict, SqliteDatasetDictFormat};
pub use dict::{SqliteDict, SqliteDictFormat, SqliteDictIter, SqliteDictKeys};
pub use sequence::{SqliteIter, SqliteSequence, SqliteSequenceFormat};
