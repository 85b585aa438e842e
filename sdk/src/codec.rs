//! Item encodings.

use crate::error::Result;

/// How one item of type `T` is turned into bytes and back.
///
/// Formats that store many items (streams, sequences) use a codec per item; the codec's
/// [`id`](Codec::id) is recorded in the stored bytes so that a reader can refuse items written
/// with another codec.
///
/// # Contract
/// - `decode(encode(x)) == x` for every value `x`.
/// - Encoding is deterministic: the same value always gives the same bytes.
/// - `decode` never panics and never allocates memory driven by an unchecked length field; on
///   bad input it returns an [`Error::Decode`](crate::Error::Decode).
pub trait Codec<T>: Send + Sync {
    /// A short stable name, such as `"postcard"` or `"json"`; at most 255 bytes.
    fn id(&self) -> &str;

    /// Appends the encoding of `value` to `out`.
    ///
    /// # Errors
    /// [`Error::Encode`](crate::Error::Encode) if the value cannot be represented.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<()>;

    /// Decodes one value that occupies all of `bytes`.
    ///
    /// # Errors
    /// [`Error::Decode`](crate::Error::Decode) on bytes that are not an encoding of a `T`.
    fn decode(&self, bytes: &[u8]) -> Result<T>;

    /// Decodes into an existing value, reusing its allocations where the codec and type allow.
    /// The default replaces `slot` with [`decode`](Codec::decode).
    ///
    /// # Errors
    /// As [`decode`](Codec::decode).
    fn decode_into(&self, bytes: &[u8], slot: &mut T) -> Result<()> {
        *slot = self.decode(bytes)?;
        Ok(())
    }
}

impl<T, C: Codec<T> + ?Sized> Codec<T> for &C {
    fn id(&self) -> &str {
        (**self).id()
    }
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        (**self).encode(value, out)
    }
    fn decode(&self, bytes: &[u8]) -> Result<T> {
        (**self).decode(bytes)
    }
    fn decode_into(&self, bytes: &[u8], slot: &mut T) -> Result<()> {
        (**self).decode_into(bytes, slot)
    }
}
