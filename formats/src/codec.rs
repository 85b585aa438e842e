//! Built-in item codecs.

use milonga_sdk::{Codec, Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Items as [postcard](https://docs.rs/postcard): compact, fast, not self-describing.
///
/// The id is `"postcard"`. Postcard's wire format is specified and stable (postcard 1.x).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostcardCodec;

impl<T: Serialize + DeserializeOwned> Codec<T> for PostcardCodec {
    fn id(&self) -> &str {
        "postcard"
    }

    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        let buf = std::mem::take(out);
        *out = postcard::to_extend(value, buf).map_err(|e| Error::Encode {
            what: std::any::type_name::<T>().to_owned(),
            reason: e.to_string(),
        })?;
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<T> {
        let (value, rest) = postcard::take_from_bytes(bytes).map_err(Error::decode)?;
        if !rest.is_empty() {
            return Err(Error::decode(format!(
                "{} trailing bytes after the value",
                rest.len()
            )));
        }
        Ok(value)
    }
}

/// Items as JSON (`serde_json`): self-describing and readable by other tools.
///
/// The id is `"json"`. Encoding is deterministic, as the [`Codec`] contract requires: the
/// entries of every map (a `HashMap` too) are written sorted by key, as the keys of
/// [`JsonFormat`](type@crate::JsonFormat) objects are (by the bytes of the key as a JSON
/// string; integer and boolean keys become strings, as serde_json writes them). Struct fields
/// keep their declaration order, so every value without a map gives the bytes it always gave,
/// and a map's bytes are those of one of the orders the codec could write before: data written
/// earlier reads the same, and no id or version changed.
///
/// ```
/// use std::collections::HashMap;
/// use milonga_formats::JsonCodec;
/// use milonga_sdk::Codec;
///
/// let scores = HashMap::from([("b".to_owned(), 2), ("a".to_owned(), 1), ("c".to_owned(), 3)]);
/// let mut out = Vec::new();
/// JsonCodec.encode(&scores, &mut out)?;
/// assert_eq!(out, br#"{"a":1,"b":2,"c":3}"#);
/// # Ok::<(), milonga_sdk::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonCodec;

impl<T: Serialize + DeserializeOwned> Codec<T> for JsonCodec {
    fn id(&self) -> &str {
        "json"
    }

    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        serde_json::to_writer(out, &crate::sorted_json::Sorted(value)).map_err(|e| Error::Encode {
            what: std::any::type_name::<T>().to_owned(),
            reason: e.to_string(),
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(Error::decode)
    }
}
