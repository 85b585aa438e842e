//! The `Format` trait.

use crate::artifact::{ArtifactHandle, ArtifactWriter};
use crate::error::Result;

/// How a value of type `T` is stored as an artifact (a set of named files) and read back.
///
/// A step's result is written with its format once, and read back with the same format in any
/// later process. `read` may return the whole value or a lazy handle over the stored files (an
/// iterator, a random-access sequence): that is the [`Output`](Format::Output) type.
///
/// # Contract
/// - [`id`](Format::id) is stable forever; [`version`](Format::version) is bumped whenever the
///   bytes the format writes change. Both enter the id of every step that uses the format.
/// - Reading what `write` wrote gives back an equal value.
/// - Writing is deterministic: the same value gives the same files with the same bytes.
/// - `read` never panics on any bytes; corrupt, truncated or foreign files give an
///   [`Error`](crate::Error) that names the file. It refuses files written by a newer version
///   with [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion), and never allocates
///   memory driven by an unchecked length field.
/// - Each file is written through [`ArtifactWriter::create`] or
///   [`ArtifactWriter::ingest`]; a format keeps no other state.
pub trait Format<T>: Send + Sync + 'static {
    /// What [`read`](Format::read) returns: `T` itself, or a lazy handle.
    type Output: Send + Sync + 'static;

    /// The format's stable id, for example `"milonga.postcard"`; 1..=255 bytes of UTF-8.
    fn id(&self) -> &str;

    /// The version of the bytes this format writes. It reads every version up to this one.
    fn version(&self) -> u32;

    /// Writes `value` into `artifact`.
    ///
    /// # Errors
    /// Encoding or I/O errors; an error leaves nothing published as the step's result.
    fn write(&self, value: T, artifact: &dyn ArtifactWriter) -> Result<()>;

    /// Reads a value back from `artifact`, which stays alive as long as the returned handle
    /// needs it.
    ///
    /// # Errors
    /// As described in the trait's contract.
    fn read(&self, artifact: ArtifactHandle) -> Result<Self::Output>;

    /// How many items of the value are already durable in `artifact` from an earlier,
    /// interrupted write (see [`ArtifactWriter::durable_files`]). A format that can resume
    /// (a stream of items) returns the count, and its next [`write`](Format::write) continues
    /// after them with the remaining items only; the default, `0`, means the format always
    /// writes the whole value.
    ///
    /// # Errors
    /// Corrupt or unreadable durable files.
    fn durable_items(&self, artifact: &dyn ArtifactWriter) -> Result<u64> {
        let _ = artifact;
        Ok(0)
    }
}
