//! The content-addressed object store.
//!
//! An object is immutable bytes addressed by their blake3 hash ([`ContentId`]). Objects are
//! written through a hashing [`ObjectWriter`] and published by [`ObjectWriter::commit`];
//! publishing an object that already exists is success, so identical content is stored once.
//! Every read verifies the content against its id.

mod local;
mod map;
mod memory;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};

use milonga_sdk::{ContentId, ReadSeek, Result, SharedBytes};

pub use local::{LocalStore, OBJECTS_DIR, TMP_DIR};
pub use memory::MemoryStore;
pub(crate) use verify::{verify_bytes, VerifyingReader};

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

    /// Opens object `id` for reading. Reading to the end verifies the content.
    ///
    /// # Errors
    /// [`Error::MissingObject`](milonga_sdk::Error::MissingObject), or an I/O error.
    fn open(&self, id: &ContentId) -> Result<Box<dyn ReadSeek>>;

    /// The whole object, verified (a memory map on local stores).
    ///
    /// # Errors
    /// A missing object, an I/O error, or
    /// [`Error::ChecksumMismatch`](milonga_sdk::Error::ChecksumMismatch).
    fn bytes(&self, id: &ContentId) -> Result<SharedBytes>;

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

    /// Removes object `id` (garbage collection). Removing a missing object is success.
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
