//! Chunked record files: the building block of [`StreamFormat`](crate::StreamFormat), public so
//! that custom formats can store long sequences of items the same way.
//!
//! A stream is a set of artifact files under a [`StreamLayout`] prefix:
//!
//! - **chunk files** `chunks/{seq}-{first item}-{item count}`, each a self-checking header
//!   (magic, layout version, codec id, compression, item count, first item number, lengths), a
//!   block table, independently compressed blocks of length-prefixed encoded items, and a blake3
//!   checksum trailer over everything before it; a reader refuses a bad chunk before it allocates
//!   or decompresses anything;
//! - the **end record** `end`, written last: the item count, the chunk index (first item, count,
//!   length and content id of every chunk) and a whole-stream hash over the chunks' content ids. A stream without it is unfinished or cut short, never a shorter stream.
//!
//! Every byte is specified in `docs/FORMAT.md` §8.2.
//!
//! Writing ([`write_chunked`]) seals a chunk whenever its items reach the target size; chunks are
//! compressed on background threads and each is finished as its own durable artifact file, so an
//! interrupted write can be resumed after its last durable chunk ([`ResumePoint`]). Reading
//! ([`ChunkedReader`]) finds item `i` through the index, decompresses only the block holding it,
//! reads ahead sequentially on a background thread, and follows a stream still being written.

mod chunk;
mod end;
mod live;
mod reader;
mod writer;

pub use chunk::{
    Compression, Items, ItemsError, CHUNK_LAYOUT_VERSION, CHUNK_MAGIC, MAX_CHUNK_PAYLOAD,
};
pub use end::{IndexEntry, StreamLayout, END_LAYOUT_VERSION, END_MAGIC};
pub(crate) use reader::item_file;
pub use reader::{
    ChunkedReader, DecodedChunk, DecodedChunks, KnownChunk, Payload, DEFAULT_CHUNK_CACHE_BYTES,
    SEGMENT_BYTES,
};
pub use writer::{write_chunked, ChunkOptions, ChunkSink, ResumePoint};

/// The pieces under the public API: the chunk encoder and parser, raw blocks, the end record
/// and a loaded chunk file. Public only for this repository's fuzz targets, tests and benches,
/// which take chunks apart byte by byte; not a stable API, and not needed by a custom format
/// (which writes with [`write_chunked`] and reads with [`ChunkedReader`]).
#[doc(hidden)]
pub mod raw {
    pub use super::chunk::{BlockEntry, ChunkEncoder, ChunkInfo, Decompressor, RawBlock};
    pub use super::end::{stream_hash, EndRecord};
    pub use super::reader::LoadedChunk;
}
