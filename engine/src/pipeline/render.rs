//! Rendering a stored result as JSON without knowing its Rust type at the call site: the
//! format of a registered step type knows how.

use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::BoxError;
use crate::formats::{JsonFormat, PostcardFormat, Stream, StreamFormat, TextFormat};
use crate::sdk::{ArtifactHandle, Codec, Format};

/// A stored result rendered as JSON.
pub enum Rendered {
    /// A single value (a `PostcardFormat`, `JsonFormat` or `TextFormat` result).
    Value(serde_json::Value),
    /// The items of a stream or sequence, from the first one asked for, in order.
    Items(Box<dyn Iterator<Item = Result<serde_json::Value, BoxError>>>),
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rendered::Value(v) => f.debug_tuple("Value").field(v).finish(),
            Rendered::Items(_) => f.write_str("Items(..)"),
        }
    }
}

/// A format whose stored results can be rendered as JSON (by `cat` in the command line).
///
/// Implemented for [`PostcardFormat`](type@PostcardFormat) and
/// [`JsonFormat`](type@JsonFormat) of any serde value, [`TextFormat`](type@TextFormat),
/// and [`StreamFormat`] of serde items (any codec).
pub trait JsonOutput<T>: Format<T> {
    /// Reads the result stored in `artifact` and renders it; for a stream, the items of
    /// `items` only (reading only the chunks that hold them where the format can).
    ///
    /// # Errors
    /// The format's read errors; a value that cannot be represented as JSON.
    fn render(&self, artifact: ArtifactHandle, items: Range<u64>) -> Result<Rendered, BoxError>;
}

impl<T> JsonOutput<T> for PostcardFormat
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn render(&self, artifact: ArtifactHandle, _: Range<u64>) -> Result<Rendered, BoxError> {
        let value: T = Format::<T>::read(self, artifact)?;
        Ok(Rendered::Value(serde_json::to_value(&value)?))
    }
}

impl<T> JsonOutput<T> for JsonFormat
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn render(&self, artifact: ArtifactHandle, _: Range<u64>) -> Result<Rendered, BoxError> {
        let value: T = Format::<T>::read(self, artifact)?;
        Ok(Rendered::Value(serde_json::to_value(&value)?))
    }
}

impl JsonOutput<String> for TextFormat {
    fn render(&self, artifact: ArtifactHandle, _: Range<u64>) -> Result<Rendered, BoxError> {
        Ok(Rendered::Value(serde_json::Value::String(
            self.read(artifact)?,
        )))
    }
}

impl<T, C> JsonOutput<Stream<T>> for StreamFormat<T, C>
where
    T: Serialize + Send + Sync + 'static,
    C: Codec<T> + Clone + Send + Sync + 'static,
{
    fn render(&self, artifact: ArtifactHandle, items: Range<u64>) -> Result<Rendered, BoxError> {
        let reader = self.read(artifact)?;
        let end = items.end.min(reader.len()?);
        let iter = reader
            .range(items.start.min(end)..end)
            .map(|item| -> Result<_, BoxError> { Ok(serde_json::to_value(&item?)?) });
        Ok(Rendered::Items(Box::new(iter)))
    }
}
