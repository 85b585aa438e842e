//! Test kit for format authors (feature `testing`).
//!
//! Checks that any [`Format`] or [`Codec`](crate::Codec) keeps its contract, with values from
//! proptest strategies, on the in-memory backend [`MemoryArtifact`].

use crate::error::Result;
use crate::format::Format;
pub use crate::memory::MemoryArtifact;

/// Writes `value` with `format` into a fresh [`MemoryArtifact`] and returns the artifact.
///
/// # Errors
/// Whatever the format's `write` returns.
pub fn write_to_memory<T, F: Format<T>>(format: &F, value: T) -> Result<MemoryArtifact> {
    let artifact = MemoryArtifact::new();
    format.write(value, &artifact)?;
    Ok(artifact)
}

/// Writes `value` with `format` and reads it back.
///
/// # Errors
/// Whatever the format's `write` or `read` returns.
pub fn roundtrip<T, F: Format<T>>(format: &F, value: T) -> Result<F::Output> {
    let artifact = write_to_memory(format, value)?;
    format.read(artifact.handle())
}
