//! The content-addressed object store.
//!
//! An object is immutable bytes addressed by their blake3 hash ([`ContentId`]). Objects are
//! written through a hashing [`ObjectWriter`] and published by [`ObjectWriter::commit`];
//! publishing an object that already exists is success once the existing file verifies, so
//! identical content is stored once and a damaged copy is replaced. Every read verifies the
//! content against its id: whole objects by hashing them, byte ranges through the object's
//! BLAKE3 outboard ([`milonga_sdk::outboard`]), hashing only the 16 KiB groups that cover the
//! range. An object found damaged is moved aside into a quarantine folder.

mod local;
// The one place `unsafe` is allowed in the workspace: the memory map (see its SAFETY comment).
#[allow(unsafe_code)]
mod map;
mod memory;
mod verify;

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use milonga_sdk::{ContentId, ReadSeek, Result, SharedBytes};

pub use local::{LocalStore, OBJECTS_DIR, OUTBOARD_SUFFIX, QUARANTINE_DIR, TMP_DIR};
#[cfg(feature = "s3")]
pub(crate) use local::{Stage, StagedWriter};
#[cfg(feature = "s3")]
pub(crate) use map::map_file;
pub use memory::MemoryStore;
pub(crate) use verify::VerifyingReader;

/// A place where objects live: a local directory, memory, or remote storage.
pub trait ObjectStore: Send + Sync + 'static {
    /// A human-readable location of object `id`, for error messages (a path or URL).
    fn describe(&self, id: &ContentId) -> String;

    /// Starts writing a new object.
    ///
    /// # Errors
    /// An I/O error creating the staging file.
    fn writer(&self) -> Result<Box<dyn ObjectWriter>>;

    /// Publishes the local file at `path` as an object, moving it where the backend allows,
    /// and returns its id and length. `path` is consumed.
    ///
    /// # Errors
    /// An I/O error reading, syncing or moving the file.
    fn ingest(&self, path: &Path) -> Result<(ContentId, u64)>;

    /// Whether object `id` is stored.
    fn contains(&self, id: &ContentId) -> bool;

    /// Opens object `id` for reading. Reading to the end verifies the content. `len` is the
    /// recorded length, where known: an object of another length is refused before it is read.
    ///
    /// # Errors
    /// [`Error::MissingObject`](milonga_sdk::Error::MissingObject), a file that is not a
    /// regular file or has the wrong length ([`Error::Corrupt`](milonga_sdk::Error::Corrupt)),
    /// or an I/O error.
    fn open(&self, id: &ContentId, len: Option<u64>) -> Result<Box<dyn ReadSeek>>;

    /// The whole object, verified (a memory map on local stores). `len` as for
    /// [`open`](ObjectStore::open).
    ///
    /// # Errors
    /// As [`open`](ObjectStore::open), or
    /// [`Error::ChecksumMismatch`](milonga_sdk::Error::ChecksumMismatch) (the object is then
    /// quarantined where the backend can).
    fn bytes(&self, id: &ContentId, len: Option<u64>) -> Result<SharedBytes>;

    /// The bytes of `range` of object `id` (recorded length `len`), verified against `id`
    /// through its outboard before they are returned: only the groups covering the range are
    /// read and hashed. An object without an outboard (written before outboards existed) gets
    /// one on first use.
    ///
    /// # Errors
    /// As [`bytes`](ObjectStore::bytes), and
    /// [`Error::OutOfRange`](milonga_sdk::Error::OutOfRange) for a range past `len`.
    fn read_range(&self, id: &ContentId, len: u64, range: Range<u64>) -> Result<Vec<u8>>;

    /// Checks object `id` whole (regular file, length, content) and makes sure its outboard is
    /// present and right, rebuilding it if not. Returns the object's length. Unlike a read, it
    /// does not quarantine what it finds damaged (see [`quarantine`](ObjectStore::quarantine)).
    ///
    /// # Errors
    /// As [`bytes`](ObjectStore::bytes).
    fn verify_object(&self, id: &ContentId, len: Option<u64>) -> Result<u64>;

    /// Moves object `id` aside (it was found damaged), so that the next publish of the same
    /// content stores a fresh copy. Returns where it went, if the backend keeps it.
    ///
    /// # Errors
    /// An I/O error moving it.
    fn quarantine(&self, id: &ContentId) -> Result<Option<String>>;

    /// A local path to object `id` whose content was verified against the id (at most once per
    /// process for the same file, while it is unchanged), for tools that read the file
    /// themselves, such as SQLite. `None` on backends without local files.
    ///
    /// # Errors
    /// As [`bytes`](ObjectStore::bytes).
    fn verified_path(&self, id: &ContentId, len: u64) -> Result<Option<PathBuf>> {
        self.bytes(id, Some(len))?;
        self.local_path(id)
    }

    /// A local path to the immutable object file, where the backend has one.
    ///
    /// # Errors
    /// A missing object or an I/O error.
    fn local_path(&self, id: &ContentId) -> Result<Option<PathBuf>>;

    /// Every stored object id.
    ///
    /// # Errors
    /// An I/O error listing the store.
    fn list(&self) -> Result<Vec<ContentId>>;

    /// Removes object `id` and its outboard (garbage collection). Removing a missing object is
    /// success.
    ///
    /// # Errors
    /// An I/O error.
    fn remove(&self, id: &ContentId) -> Result<()>;
}

/// A streaming writer for one object: hashes while writing, publishes on [`commit`](Self::commit).
/// Dropping it without committing discards the staged bytes.
pub trait ObjectWriter: Write + Send {
    /// Makes the object durable under its content id and returns the id and length.
    ///
    /// # Errors
    /// An I/O error syncing or publishing.
    fn commit(self: Box<Self>) -> Result<(ContentId, u64)>;
}
