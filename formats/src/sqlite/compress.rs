//! How stored values are compressed: as they are, one zstd frame per value, or zstd blocks of
//! consecutive items (the default), with a dictionary trained on the first rows.

use milonga_sdk::{Error, Result};
use zstd::zstd_safe::CCtx;

use crate::zstd_frame::{compress_stripped, zstd_cctx, Expect, FrameDecoder, Magic};

/// How the values of a SQLite sequence or dict are stored.
///
/// The choice is recorded in the file, so a reader handles every option whatever it was
/// configured with. Measured on 1,000,000 ~110-byte records (`docs/FORMAT.md` §8.3), only
/// [`ZstdBlocks`](SqliteCompression::ZstdBlocks) meets every target at once (write, random
/// get, iteration speed and file size), so it is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqliteCompression {
    /// Each value is stored as the codec wrote it.
    None,
    /// Each value is a zstd frame on its own (so random access stays one row), compressed with
    /// a dictionary of at most `dictionary_bytes` trained on a sample of the first rows
    /// (`0`: no dictionary).
    Zstd {
        /// The zstd level, 1..=22.
        level: i32,
        /// The largest dictionary to train; `0` for none.
        dictionary_bytes: u32,
    },
    /// Sequences: `items_per_block` consecutive items per row, compressed together as one zstd
    /// frame with a dictionary of at most `dictionary_bytes` trained on the first blocks
    /// (`0`: no dictionary). Item `i` is in block `i / items_per_block`, so a `get` is still one
    /// row lookup; a reader keeps the last block it decompressed. Format version 2.
    ///
    /// A dict has no consecutive items: [`SqliteDictFormat`](super::SqliteDictFormat) stores
    /// each value as with [`Zstd`](SqliteCompression::Zstd) at the same level and dictionary
    /// size.
    ZstdBlocks {
        /// Items per block, 1..=65536.
        items_per_block: u32,
        /// The zstd level, 1..=22.
        level: i32,
        /// The largest dictionary to train; `0` for none.
        dictionary_bytes: u32,
    },
}

impl SqliteCompression {
    /// Per-value zstd at level 3 with a 16 KiB dictionary.
    pub const fn zstd() -> Self {
        SqliteCompression::Zstd {
            level: 3,
            dictionary_bytes: 16 * 1024,
        }
    }

    /// The default: blocks of 8 items, zstd level 3, a 16 KiB dictionary.
    pub const fn blocks() -> Self {
        SqliteCompression::ZstdBlocks {
            items_per_block: 8,
            level: 3,
            dictionary_bytes: 16 * 1024,
        }
    }

    /// The name recorded in the `meta` table.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            SqliteCompression::None => "none",
            SqliteCompression::Zstd { .. } => "zstd",
            SqliteCompression::ZstdBlocks { .. } => "zstd_blocks",
        }
    }

    /// The per-value equivalent, for files without consecutive items (dicts).
    pub(crate) fn per_value(self) -> Self {
        match self {
            SqliteCompression::ZstdBlocks {
                level,
                dictionary_bytes,
                ..
            } => SqliteCompression::Zstd {
                level,
                dictionary_bytes,
            },
            other => other,
        }
    }
}

impl Default for SqliteCompression {
    /// [`SqliteCompression::blocks`].
    fn default() -> Self {
        SqliteCompression::blocks()
    }
}

/// Values sampled to train the zstd dictionary of a file with one frame per value (a sequence
/// in rows or a dict).
pub(crate) const SAMPLE_VALUES: usize = 4096;
/// Bytes of values sampled to train the zstd dictionary of a file with one frame per value.
pub(crate) const SAMPLE_BYTES: usize = 1 << 20;

/// The first entries of a file with one zstd frame per value, kept in memory until there are
/// enough to train its dictionary on: [`SAMPLE_VALUES`] values or [`SAMPLE_BYTES`] bytes of
/// them, whichever comes first. Shared by the sequence and dict writers.
#[derive(Debug)]
pub(crate) struct Sample<T> {
    /// The entries, in the order they were written.
    pub(crate) entries: Vec<T>,
    bytes: usize,
}

impl<T> Sample<T> {
    /// An empty sample.
    pub(crate) fn new() -> Self {
        Sample {
            entries: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds an entry whose value has `value_len` bytes; returns whether the sample is full.
    pub(crate) fn push(&mut self, entry: T, value_len: usize) -> bool {
        self.entries.push(entry);
        self.bytes = self.bytes.saturating_add(value_len);
        self.entries.len() >= SAMPLE_VALUES || self.bytes >= SAMPLE_BYTES
    }

    /// Whether no entry was sampled.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Trains a dictionary of at most `max` bytes on the entries' values (`value` picks them);
    /// empty when zstd finds too little to learn from.
    pub(crate) fn train(&self, max: usize, value: impl Fn(&T) -> &[u8]) -> Vec<u8> {
        let values: Vec<&[u8]> = self.entries.iter().map(value).collect();
        train_dictionary(&values, max).unwrap_or_default()
    }
}

/// Trains a dictionary of at most `max` bytes on `samples`; `None` when zstd finds too little to
/// learn from.
pub(crate) fn train_dictionary<S: AsRef<[u8]>>(samples: &[S], max: usize) -> Option<Vec<u8>> {
    if max == 0 || samples.len() < 8 {
        return None;
    }
    zstd::dict::from_samples(samples, max).ok()
}

/// Encodes stored values.
pub(crate) struct ValueEncoder {
    cctx: Option<CCtx<'static>>,
    out: Vec<u8>,
}

impl ValueEncoder {
    /// An encoder that stores values as they are.
    pub(crate) fn plain() -> Self {
        ValueEncoder {
            cctx: None,
            out: Vec::new(),
        }
    }

    /// A zstd encoder at `level`, with `dictionary` if not empty.
    pub(crate) fn zstd(level: i32, dictionary: &[u8], file: &str) -> Result<Self> {
        let cctx = zstd_cctx(level, dictionary, false, file)?;
        Ok(ValueEncoder {
            cctx: Some(cctx),
            out: Vec::new(),
        })
    }

    /// The stored form of `raw`.
    pub(crate) fn encode<'a>(&'a mut self, raw: &'a [u8], file: &str) -> Result<&'a [u8]> {
        match self.cctx.as_mut() {
            None => Ok(raw),
            Some(cctx) => compress_stripped(cctx, raw, &mut self.out, file),
        }
    }
}

/// Decodes stored values: as they are, or as zstd frames stored without their magic number.
pub(crate) struct ValueDecoder {
    frames: Option<FrameDecoder>,
    out: Vec<u8>,
    max_len: u64,
}

impl ValueDecoder {
    /// A decoder for values stored as they are.
    pub(crate) fn plain() -> Self {
        ValueDecoder {
            frames: None,
            out: Vec::new(),
            max_len: 0,
        }
    }

    /// A zstd decoder with `dictionary` if not empty; a frame that claims more than `max_len`
    /// bytes is refused before anything is allocated.
    pub(crate) fn zstd(dictionary: &[u8], max_len: u64, file: &str) -> Result<Self> {
        Ok(ValueDecoder {
            frames: Some(FrameDecoder::with_dictionary(dictionary, file)?),
            out: Vec::new(),
            max_len,
        })
    }

    /// The codec bytes of a stored value; the error is the reason it cannot be decoded.
    pub(crate) fn decode<'a>(
        &'a mut self,
        stored: &'a [u8],
    ) -> std::result::Result<&'a [u8], String> {
        let Some(frames) = self.frames.as_mut() else {
            return Ok(stored);
        };
        self.out.clear();
        frames
            .decode(
                stored,
                Magic::Stripped,
                Expect::AtMost(self.max_len),
                &mut self.out,
            )
            .map_err(|e| format!("{e} (the file's largest value has {} bytes)", self.max_len))?;
        Ok(&self.out)
    }
}

/// Decodes stored value `stored` of item `what` (an index or key description).
pub(crate) fn decode_item<T, C: milonga_sdk::Codec<T> + ?Sized>(
    codec: &C,
    dec: &mut ValueDecoder,
    stored: &[u8],
    file: &str,
    what: &dyn std::fmt::Display,
) -> Result<T> {
    let raw = dec.decode(stored).map_err(|reason| Error::Decode {
        file: file.to_owned(),
        offset: 0,
        reason: format!("{what}: {reason}"),
    })?;
    decode_raw(codec, raw, file, what)
}

/// Decodes the codec bytes `raw` of item `what`.
pub(crate) fn decode_raw<T, C: milonga_sdk::Codec<T> + ?Sized>(
    codec: &C,
    raw: &[u8],
    file: &str,
    what: &dyn std::fmt::Display,
) -> Result<T> {
    codec.decode(raw).map_err(|e| match e {
        Error::Decode { reason, .. } => Error::Decode {
            file: file.to_owned(),
            offset: 0,
            reason: format!("{what}: {reason}"),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_full_at_its_value_count_or_its_byte_cap() {
        let mut by_count = Sample::new();
        for i in 1..SAMPLE_VALUES {
            assert!(!by_count.push(i, 1), "full after {i} values");
        }
        assert!(by_count.push(0, 1));
        // Large values fill it by bytes long before the count (the dict writer had no cap).
        let mut by_bytes = Sample::new();
        let big = vec![7u8; SAMPLE_BYTES / 4];
        for _ in 0..3 {
            assert!(!by_bytes.push(big.clone(), big.len()));
        }
        assert!(by_bytes.push(big.clone(), big.len()));
        assert_eq!(by_bytes.entries.len(), 4);
    }

    #[test]
    fn a_sample_trains_on_the_values_it_is_told_to() {
        let mut sample = Sample::new();
        for i in 0..500u32 {
            let value = format!("{{\"user\":\"name-{i}\",\"score\":{}}}", i * 7).into_bytes();
            sample.push((i.to_le_bytes().to_vec(), value.clone()), value.len());
        }
        let dict = sample.train(4096, |(_, v)| v);
        assert!(!dict.is_empty() && dict.len() <= 4096, "{}", dict.len());
        assert!(sample.train(0, |(_, v)| v).is_empty());
        assert!(Sample::<Vec<u8>>::new()
            .train(4096, Vec::as_slice)
            .is_empty());
    }
}
