//! # milonga-sdk
//!
//! The contracts of [milonga](https://docs.rs/milonga) formats: what a format author implements
//! and what the engine provides.
//!
//! - [`Format`]: how a value is stored as an artifact (a set of named files) and read back,
//!   possibly as a lazy handle.
//! - [`ArtifactWriter`] / [`ArtifactReader`]: the named, streaming, content-addressed files an
//!   artifact is made of. The engine implements them for each backend.
//! - [`Codec`]: how one item is encoded, for formats that store many items.
//! - [`Envelope`]: the header that names the format and version in front of a payload.
//! - [`Error`]: one structured error type for all of it.
//! - `testing` (feature `testing`): an in-memory artifact, property checks for formats, and
//!   `testing::fuzz`, structure-aware fuzzing of a format for cargo-fuzz.
//!
//! ```
//! use milonga_sdk::{ArtifactHandle, ArtifactWriter, Envelope, Error, Format, Result};
//! use std::io::Write;
//!
//! /// Stores a `u64` as 8 little-endian bytes behind an envelope.
//! struct U64Format;
//!
//! impl Format<u64> for U64Format {
//!     type Output = u64;
//!     fn id(&self) -> &str { "example.u64" }
//!     fn version(&self) -> u32 { 1 }
//!     fn write(&self, value: u64, artifact: &dyn ArtifactWriter) -> Result<()> {
//!         let mut file = artifact.create("value")?;
//!         Envelope::new(self.id(), self.version()).write_to(&mut file, "value")?;
//!         file.write_all(&value.to_le_bytes()).map_err(|e| Error::io("value", e))?;
//!         file.finish()?;
//!         Ok(())
//!     }
//!     fn read(&self, artifact: ArtifactHandle) -> Result<u64> {
//!         let bytes = artifact.bytes("value")?;
//!         let (_, payload) =
//!             milonga_sdk::open_envelope((*bytes).as_ref(), self.id(), self.version(), "value")?;
//!         let raw: [u8; 8] = payload
//!             .try_into()
//!             .map_err(|_| Error::corrupt("value", 0, "expected 8 bytes"))?;
//!         Ok(u64::from_le_bytes(raw))
//!     }
//! }
//! # let artifact = milonga_sdk::MemoryArtifact::new();
//! # U64Format.write(42, &artifact).unwrap();
//! # assert_eq!(U64Format.read(artifact.handle()).unwrap(), 42);
//! ```
#![forbid(unsafe_code)]
// The decoder lints (`unwrap_used`, `expect_used`, `indexing_slicing`) come from
// `[workspace.lints.clippy]` and apply to the whole crate.

mod artifact;
mod codec;
mod envelope;
mod error;
mod format;
mod memory;
pub mod outboard;

// The test kit runs formats under test and reports their failures; it decodes no stored bytes
// itself, so the decoder lints (`[workspace.lints.clippy]`) do not apply to it.
#[cfg(feature = "testing")]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
pub mod testing;

pub use artifact::{
    ArtifactHandle, ArtifactReader, ArtifactStatus, ArtifactWriter, ContentId, FileEntry,
    FileWriter, RangeReader, ReadSeek, SharedBytes,
};
pub use codec::Codec;
pub use envelope::{
    open_envelope, Envelope, LAYOUT_VERSION as ENVELOPE_LAYOUT_VERSION, MAGIC as ENVELOPE_MAGIC,
};
pub use error::{BoxError, Error, Result};
pub use format::Format;
pub use memory::MemoryArtifact;
