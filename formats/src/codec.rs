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
/// The id is `"json"`. Map key order follows the value's own serialization order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonCodec;

impl<T: Serialize + DeserializeOwned> Codec<T> for JsonCodec {
    fn id(&self) -> &str {
        "json"
    }

    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        serde_json::to_writer(out, value).map_err(|e| Error::Encode {
            what: std::any::type_name::<T>().to_owned(),
            reason: e.to_string(),
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(Error::decode)
    }
}
