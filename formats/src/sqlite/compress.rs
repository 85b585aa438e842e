//! How stored values are compressed: as they are, one zstd frame per value, or zstd blocks of
//! consecutive items (the default), with a dictionary trained on the first rows.

use milonga_sdk::{Error, Result};
use zstd::zstd_safe::{self, CCtx, CParameter, DCtx};

/// The four magic bytes every zstd frame starts with; they are not stored (each value would
/// repeat them) and are put back before decompression.
pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The most a zstd frame can expand: every block (at most 128 KiB of output) takes at least 4
/// bytes (a 3-byte header and one byte of an RLE block).
const ZSTD_MAX_RATIO: u64 = (128 << 10) / 4;

/// The most bytes the zstd frame `frame` (magic included) can decompress to, whatever its
/// header claims: a bound on allocation that does not trust anything read from the file but
/// the frame's own length.
pub(crate) fn frame_capacity(frame: &[u8]) -> u64 {
    (frame.len() as u64).saturating_mul(ZSTD_MAX_RATIO)
}

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

fn zstd_err(file: &str, what: &str, code: usize) -> Error {
    Error::Encode {
        what: format!("{file} ({what})"),
        reason: zstd_safe::get_error_name(code).to_owned(),
    }
}

/// Trains a dictionary of at most `max` bytes on `samples`; `None` when zstd finds too little to
/// learn from.
pub(crate) fn train_dictionary(samples: &[Vec<u8>], max: usize) -> Option<Vec<u8>> {
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
        let Some(cctx) = self.cctx.as_mut() else {
            return Ok(raw);
        };
        self.out.clear();
        self.out.reserve(zstd_safe::compress_bound(raw.len()));
        cctx.compress2(&mut self.out, raw)
            .map_err(|c| zstd_err(file, "zstd", c))?;
        match self.out.get(4..) {
            Some(rest) if self.out.starts_with(&ZSTD_MAGIC) => Ok(rest),
            _ => Err(Error::Encode {
                what: file.to_owned(),
                reason: "zstd produced a frame without its magic number".into(),
            }),
        }
    }
}

/// Decodes stored values.
pub(crate) struct ValueDecoder {
    dctx: Option<DCtx<'static>>,
    frame: Vec<u8>,
    out: Vec<u8>,
    max_len: u64,
}

impl ValueDecoder {
    /// A decoder for values stored as they are.
    pub(crate) fn plain() -> Self {
        ValueDecoder {
            dctx: None,
            frame: Vec::new(),
            out: Vec::new(),
            max_len: 0,
        }
    }

    /// A zstd decoder with `dictionary` if not empty; a frame that claims more than `max_len`
    /// bytes is refused before anything is allocated.
    pub(crate) fn zstd(dictionary: &[u8], max_len: u64, file: &str) -> Result<Self> {
        let dctx = zstd_dctx(dictionary, file)?;
        Ok(ValueDecoder {
            dctx: Some(dctx),
            frame: Vec::new(),
            out: Vec::new(),
            max_len,
        })
    }

    /// The codec bytes of a stored value; the error is the reason it cannot be decoded.
    pub(crate) fn decode<'a>(
        &'a mut self,
        stored: &'a [u8],
    ) -> std::result::Result<&'a [u8], String> {
        let Some(dctx) = self.dctx.as_mut() else {
            return Ok(stored);
        };
        self.frame.clear();
        self.frame.extend_from_slice(&ZSTD_MAGIC);
        self.frame.extend_from_slice(stored);
        let size = match zstd_safe::get_frame_content_size(&self.frame) {
            Ok(Some(n)) => n,
            Ok(None) => return Err("zstd frame without a content size".into()),
            Err(_) => return Err("not a zstd frame".into()),
        };
        if size > self.max_len {
            return Err(format!(
                "zstd frame claims {size} bytes, the file's largest value has {}",
                self.max_len
            ));
        }
        // `max_len` is read from the file too: bound `size` by what the frame can hold.
        let possible = frame_capacity(&self.frame);
        if size > possible {
            return Err(format!(
                "zstd frame claims {size} bytes, a frame of {} bytes holds at most {possible}",
                self.frame.len()
            ));
        }
        let size = usize::try_from(size).map_err(|_| "value too large".to_owned())?;
        self.out.clear();
        self.out.reserve(size);
        let n = dctx
            .decompress(&mut self.out, &self.frame)
            .map_err(|c| format!("zstd: {}", zstd_safe::get_error_name(c)))?;
        if n != size {
            return Err(format!("zstd frame gave {n} bytes, its header said {size}"));
        }
        Ok(&self.out)
    }
}

/// A zstd compression context at `level`, with a frame checksum if `checksum`, the content size
/// in the frame header, no dictionary id, and `dictionary` loaded if not empty.
pub(crate) fn zstd_cctx(
    level: i32,
    dictionary: &[u8],
    checksum: bool,
    file: &str,
) -> Result<CCtx<'static>> {
    let mut cctx = CCtx::try_create().ok_or_else(|| Error::Encode {
        what: file.to_owned(),
        reason: "cannot allocate a zstd context".into(),
    })?;
    for p in [
        CParameter::CompressionLevel(level),
        CParameter::ChecksumFlag(checksum),
        CParameter::ContentSizeFlag(true),
        CParameter::DictIdFlag(false),
    ] {
        cctx.set_parameter(p)
            .map_err(|c| zstd_err(file, "zstd parameter", c))?;
    }
    if !dictionary.is_empty() {
        cctx.load_dictionary(dictionary)
            .map_err(|c| zstd_err(file, "zstd dictionary", c))?;
    }
    Ok(cctx)
}

/// A zstd decompression context with `dictionary` loaded if not empty; an unusable dictionary
/// (read from the file) is `Corrupt`.
pub(crate) fn zstd_dctx(dictionary: &[u8], file: &str) -> Result<DCtx<'static>> {
    let mut dctx = DCtx::try_create()
        .ok_or_else(|| Error::corrupt(file, 0, "cannot allocate a zstd context"))?;
    if !dictionary.is_empty() {
        dctx.load_dictionary(dictionary).map_err(|c| {
            Error::corrupt(
                file,
                0,
                format!(
                    "the zstd dictionary is unusable: {}",
                    zstd_safe::get_error_name(c)
                ),
            )
        })?;
    }
    Ok(dctx)
}
