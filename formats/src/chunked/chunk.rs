//! One chunk file: a self-checking header, a block table and independently compressed blocks of
//! length-prefixed items. The byte layout is specified in `docs/FORMAT.md` §8.2.

use milonga_sdk::{Error, Result};

use crate::varint::{get_varint, put_varint};
use crate::zstd_frame::{frame_capacity, Expect, FrameDecoder, Magic};

/// The four magic bytes at the start of every chunk file, `MLGC`.
pub const CHUNK_MAGIC: [u8; 4] = *b"MLGC";
/// The chunk layout version this build writes and reads.
pub const CHUNK_LAYOUT_VERSION: u8 = 1;
/// The largest uncompressed payload of one chunk (and so the largest item), 1 GiB. Writers refuse
/// bigger chunks and readers refuse headers that claim more, before allocating anything.
pub const MAX_CHUNK_PAYLOAD: u64 = 1 << 30;
/// Length of the fixed part of the chunk header, before the codec id.
pub(crate) const FIXED_HEADER_LEN: usize = 40;
/// Length of one block table entry.
pub(crate) const BLOCK_ENTRY_LEN: usize = 12;
/// Length of the checksum trailer.
pub(crate) const CHECKSUM_LEN: usize = 32;
/// How the blocks of a chunk are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Blocks are stored as they are (kind `0`).
    None,
    /// Each block is one zstd frame (kind `1`) compressed at `level` (zstd's levels, 1..=22, or a
    /// negative "fast" level).
    Zstd {
        /// The zstd compression level.
        level: i32,
    },
}

impl Compression {
    /// The default: zstd at level 3. On the issue-3 workload (1M records of ~111 bytes, 16 KiB
    /// blocks) it stores 6% less than level 1 (ratio 3.35 vs 3.16) for ~15–30% less write
    /// throughput, which stays above 1.3M items/s on two cores; level 6 gains only 1.5% more
    /// at half the speed.
    pub const DEFAULT: Compression = Compression::Zstd { level: 3 };

    fn kind(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd { .. } => 1,
        }
    }

    fn level_byte(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd { level } => level.clamp(-128, 127) as i8 as u8,
        }
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression::DEFAULT
    }
}

/// One block's entry in the chunk's block table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry {
    /// How many items the block holds (at least 1).
    pub item_count: u32,
    /// Length of the block's payload once decompressed.
    pub uncompressed_len: u32,
    /// Length of the block as stored in the file.
    pub stored_len: u32,
}

/// A block of items before compression: their length-prefixed encodings, back to back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawBlock {
    /// How many items `data` holds.
    pub item_count: u32,
    /// Each item as a LEB128 length followed by its encoded bytes.
    pub data: Vec<u8>,
}

impl RawBlock {
    /// Appends one encoded item (its length prefix, then its bytes).
    pub fn push(&mut self, item: &[u8]) {
        put_varint(&mut self.data, item.len() as u64);
        self.data.extend_from_slice(item);
        self.item_count += 1;
    }
}

/// The decoded, checked header of a chunk file: everything needed to find and decompress its
/// blocks. Produced by [`ChunkInfo::parse`], which verifies the checksum first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    /// How the blocks are compressed (for zstd, the level recorded by the writer).
    pub compression: Compression,
    /// The codec the items were encoded with.
    pub codec_id: String,
    /// Items in the chunk.
    pub item_count: u32,
    /// Number of the chunk's first item within the stream.
    pub first_item: u64,
    /// Sum of the blocks' uncompressed lengths.
    pub uncompressed_len: u64,
    /// The block table.
    pub blocks: Vec<BlockEntry>,
    /// Byte offset of each block's stored bytes within the file (same order as `blocks`).
    pub block_offsets: Vec<usize>,
    /// Index of the first item of each block within the chunk (same order as `blocks`).
    pub block_first_items: Vec<u32>,
}

/// Little-endian field reader over a byte slice that reports truncation as corruption.
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    pub(crate) pos: usize,
    file: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8], file: &'a str) -> Self {
        Fields {
            bytes,
            pos: 0,
            file,
        }
    }
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end.and_then(|e| self.bytes.get(self.pos..e).map(|s| (e, s))) {
            Some((e, s)) => {
                self.pos = e;
                Ok(s)
            }
            None => Err(Error::corrupt(
                self.file,
                self.bytes.len() as u64,
                format!(
                    "truncated: {what} needs {n} bytes at offset {}, the file has {}",
                    self.pos,
                    self.bytes.len()
                ),
            )),
        }
    }
    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
}

/// Checks the trailing blake3 checksum of a framed file (chunk or end record): the last 32 bytes
/// must be the hash of everything before them.
pub(crate) fn check_trailer(bytes: &[u8], file: &str, min_len: usize) -> Result<()> {
    if bytes.len() < min_len {
        return Err(Error::corrupt(
            file,
            bytes.len() as u64,
            format!(
                "truncated: {} bytes, the smallest valid file has {min_len}",
                bytes.len()
            ),
        ));
    }
    let split = bytes.len() - CHECKSUM_LEN;
    let (body, trailer) = bytes.split_at(split);
    let actual = blake3::hash(body);
    if actual.as_bytes() != trailer {
        return Err(Error::ChecksumMismatch {
            file: file.to_owned(),
            expected: hex(trailer),
            actual: actual.to_hex().to_string(),
        });
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ChunkInfo {
    /// Decodes and checks the chunk file `bytes` (named `file` in errors): magic, layout version,
    /// every length against the file's length (before anything is allocated), and the checksum
    /// trailer over the whole file. Blocks are not decompressed yet.
    ///
    /// # Errors
    /// [`Error::Corrupt`] with the offset of the first bad field (a truncated file is corrupt at
    /// its end), [`Error::UnsupportedVersion`] for a newer layout version, and
    /// [`Error::ChecksumMismatch`] if the trailer does not match.
    pub fn parse(bytes: &[u8], file: &str) -> Result<ChunkInfo> {
        let info = Self::parse_header(bytes, bytes.len() as u64, file)?;
        check_trailer(bytes, file, FIXED_HEADER_LEN + CHECKSUM_LEN)?;
        Ok(info)
    }

    /// The length of the header (fixed fields, codec id and block table) of a chunk file that
    /// starts with `prefix`, from its first [`FIXED_HEADER_LEN`] bytes; `None` if `prefix` is
    /// shorter than that.
    pub(crate) fn header_len(prefix: &[u8]) -> Option<u64> {
        if prefix.len() < FIXED_HEADER_LEN {
            return None;
        }
        let id_len = u64::from(*prefix.get(7)?);
        let blocks: [u8; 4] = prefix.get(12..16)?.try_into().ok()?;
        let blocks = u64::from(u32::from_le_bytes(blocks));
        Some(FIXED_HEADER_LEN as u64 + id_len + blocks * BLOCK_ENTRY_LEN as u64)
    }

    /// Decodes and checks the header of a chunk file of `file_len` bytes from `head`, its first
    /// bytes up to at least the end of the block table (see [`parse`](Self::parse)), without
    /// the checksum trailer: for readers that verify the file's bytes otherwise (verified range
    /// reads against its content id).
    ///
    /// # Errors
    /// As [`parse`](Self::parse), except for the trailer.
    pub fn parse_header(head: &[u8], file_len: u64, file: &str) -> Result<ChunkInfo> {
        let mut f = Fields {
            bytes: head,
            pos: 0,
            file,
        };
        let magic: [u8; 4] = f.array("magic")?;
        if magic != CHUNK_MAGIC {
            return Err(Error::corrupt(
                file,
                0,
                format!("not a milonga chunk (magic {magic:02x?}, expected {CHUNK_MAGIC:02x?})"),
            ));
        }
        let version = f.u8("layout version")?;
        if version == 0 {
            return Err(Error::corrupt(file, 4, "chunk layout version 0"));
        }
        if version > CHUNK_LAYOUT_VERSION {
            return Err(Error::UnsupportedVersion {
                file: file.to_owned(),
                format: "milonga chunk layout".into(),
                found: u32::from(version),
                supported: u32::from(CHUNK_LAYOUT_VERSION),
            });
        }
        let kind = f.u8("compression kind")?;
        let level = f.u8("compression level")? as i8;
        let compression = match kind {
            0 => Compression::None,
            1 => Compression::Zstd {
                level: i32::from(level),
            },
            k => {
                return Err(Error::corrupt(
                    file,
                    5,
                    format!("unknown compression kind {k}"),
                ))
            }
        };
        let id_len = usize::from(f.u8("codec id length")?);
        if id_len == 0 {
            return Err(Error::corrupt(file, 7, "empty codec id"));
        }
        let item_count = f.u32("item count")?;
        if item_count == 0 {
            return Err(Error::corrupt(file, 8, "a chunk holds at least one item"));
        }
        let block_count = f.u32("block count")?;
        if block_count == 0 {
            return Err(Error::corrupt(file, 12, "a chunk holds at least one block"));
        }
        let first_item = f.u64("first item")?;
        if first_item.checked_add(u64::from(item_count)).is_none() {
            return Err(Error::corrupt(file, 16, "item numbers overflow a u64"));
        }
        let uncompressed_len = f.u64("uncompressed length")?;
        if uncompressed_len > MAX_CHUNK_PAYLOAD {
            return Err(Error::corrupt(
                file,
                24,
                format!("uncompressed length {uncompressed_len} exceeds the 1 GiB limit"),
            ));
        }
        if u64::from(item_count) > uncompressed_len {
            return Err(Error::corrupt(
                file,
                8,
                format!("{item_count} items cannot fit in {uncompressed_len} bytes"),
            ));
        }
        let stored_len = f.u64("stored length")?;
        // Every length against the file's length before anything is allocated.
        let expected_len = (FIXED_HEADER_LEN as u64)
            .checked_add(id_len as u64)
            .and_then(|v| v.checked_add(u64::from(block_count) * BLOCK_ENTRY_LEN as u64))
            .and_then(|v| v.checked_add(stored_len))
            .and_then(|v| v.checked_add(CHECKSUM_LEN as u64));
        if expected_len != Some(file_len) {
            // A header whose lengths overflow describes a file longer than any: this one is
            // truncated too.
            let (offset, what) = if expected_len.is_none_or(|e| e > file_len) {
                (file_len, "truncated")
            } else {
                (32, "length mismatch")
            };
            return Err(Error::corrupt(
                file,
                offset,
                format!(
                    "{what}: the header describes a file of {} bytes, the file has {}",
                    expected_len.map_or_else(|| "more than 2^64".to_owned(), |e| e.to_string()),
                    file_len
                ),
            ));
        }
        let codec_id = std::str::from_utf8(f.take(id_len, "codec id")?)
            .map_err(|e| Error::corrupt(file, 40, format!("codec id is not UTF-8: {e}")))?
            .to_owned();
        let n = block_count as usize;
        let mut blocks = Vec::with_capacity(n);
        let mut block_offsets = Vec::with_capacity(n);
        let mut block_first_items = Vec::with_capacity(n);
        let mut offset = FIXED_HEADER_LEN + id_len + n * BLOCK_ENTRY_LEN;
        let (mut items, mut unc, mut stored) = (0u64, 0u64, 0u64);
        for i in 0..n {
            let at = f.pos as u64;
            let b = BlockEntry {
                item_count: f.u32("block item count")?,
                uncompressed_len: f.u32("block uncompressed length")?,
                stored_len: f.u32("block stored length")?,
            };
            let bad =
                |reason: String| Err(Error::corrupt(file, at, format!("block {i}: {reason}")));
            if b.item_count == 0 || b.item_count > b.uncompressed_len {
                return bad(format!(
                    "{} items in {} bytes",
                    b.item_count, b.uncompressed_len
                ));
            }
            match compression {
                Compression::None if b.stored_len != b.uncompressed_len => {
                    return bad("an uncompressed block must be stored as it is".into())
                }
                Compression::Zstd { .. }
                    if u64::from(b.uncompressed_len) > frame_capacity(b.stored_len as usize) =>
                {
                    return bad(format!(
                        "{} stored bytes cannot expand to {}",
                        b.stored_len, b.uncompressed_len
                    ))
                }
                _ => {}
            }
            block_first_items.push(items as u32);
            block_offsets.push(offset);
            offset += b.stored_len as usize;
            items += u64::from(b.item_count);
            unc += u64::from(b.uncompressed_len);
            stored += u64::from(b.stored_len);
            blocks.push(b);
        }
        if items != u64::from(item_count) || unc != uncompressed_len || stored != stored_len {
            return Err(Error::corrupt(
                file,
                (FIXED_HEADER_LEN + id_len) as u64,
                format!(
                    "block table sums ({items} items, {unc} bytes, {stored} stored) disagree \
                     with the header ({item_count}, {uncompressed_len}, {stored_len})"
                ),
            ));
        }
        Ok(ChunkInfo {
            compression,
            codec_id,
            item_count,
            first_item,
            uncompressed_len,
            blocks,
            block_offsets,
            block_first_items,
        })
    }

    /// The block holding item `index` (counted from the chunk's first item), with the index of
    /// the block's first item.
    pub fn block_of(&self, index: u32) -> Option<(usize, u32)> {
        if index >= self.item_count {
            return None;
        }
        let b = self
            .block_first_items
            .partition_point(|&first| first <= index)
            .checked_sub(1)?;
        Some((b, *self.block_first_items.get(b)?))
    }

    /// Appends the decompressed payload of block `block` of `bytes` (the file this info was
    /// parsed from) to `out`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `file` and the block's offset if it does not decompress to
    /// exactly its recorded length.
    pub fn decompress_block(
        &self,
        bytes: &[u8],
        block: usize,
        file: &str,
        out: &mut Vec<u8>,
        dctx: &mut Decompressor,
    ) -> Result<()> {
        let at = self.block_range(block, file)?;
        let stored = bytes
            .get(at.start as usize..at.end as usize)
            .ok_or_else(|| Error::corrupt(file, at.start, "block past the end of the file"))?;
        self.decompress_stored(stored, block, file, out, dctx)
    }

    /// The byte range of block `block`'s stored bytes within the chunk file.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if there is no such block.
    pub fn block_range(&self, block: usize, file: &str) -> Result<std::ops::Range<u64>> {
        match (self.blocks.get(block), self.block_offsets.get(block)) {
            (Some(b), Some(&at)) => Ok(at as u64..at as u64 + u64::from(b.stored_len)),
            _ => Err(Error::corrupt(file, 0, format!("no block {block}"))),
        }
    }

    /// Appends the decompressed payload of block `block`, given its `stored` bytes (read from
    /// [`block_range`](Self::block_range) of the file), to `out`.
    ///
    /// # Errors
    /// As [`decompress_block`](Self::decompress_block).
    pub fn decompress_stored(
        &self,
        stored: &[u8],
        block: usize,
        file: &str,
        out: &mut Vec<u8>,
        dctx: &mut Decompressor,
    ) -> Result<()> {
        let (Some(b), Some(&at)) = (self.blocks.get(block), self.block_offsets.get(block)) else {
            return Err(Error::corrupt(file, 0, format!("no block {block}")));
        };
        if stored.len() != b.stored_len as usize {
            return Err(Error::corrupt(
                file,
                at as u64,
                format!(
                    "block {block}: {} stored bytes, expected {}",
                    stored.len(),
                    b.stored_len
                ),
            ));
        }
        match self.compression {
            Compression::None => out.extend_from_slice(stored),
            Compression::Zstd { .. } => {
                dctx.0
                    .decode(
                        stored,
                        Magic::Stored,
                        Expect::Exactly(u64::from(b.uncompressed_len)),
                        out,
                    )
                    .map_err(|e| Error::corrupt(file, at as u64, format!("block {block}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Appends the decompressed payload of every block to `out` (the chunk's items, back to
    /// back).
    ///
    /// # Errors
    /// As [`decompress_block`](ChunkInfo::decompress_block).
    pub fn decompress_all(
        &self,
        bytes: &[u8],
        file: &str,
        out: &mut Vec<u8>,
        dctx: &mut Decompressor,
    ) -> Result<()> {
        out.reserve(self.uncompressed_len as usize);
        for b in 0..self.blocks.len() {
            self.decompress_block(bytes, b, file, out, dctx)?;
        }
        Ok(())
    }
}

/// A reusable zstd decompression context.
pub struct Decompressor(FrameDecoder);

impl Decompressor {
    /// A new context (allocated on first use).
    pub fn new() -> Self {
        Decompressor(FrameDecoder::new())
    }
}

impl Default for Decompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decompressor")
    }
}

/// Turns raw blocks into chunk files: compresses each block and frames the result.
pub struct ChunkEncoder {
    compression: Compression,
    codec_id: String,
    cctx: Option<zstd::bulk::Compressor<'static>>,
}

impl ChunkEncoder {
    /// An encoder for chunks of items encoded with `codec_id`, compressed with `compression`.
    ///
    /// # Errors
    /// [`Error::Encode`] for an empty or too long codec id, or a zstd level zstd refuses.
    pub fn new(codec_id: &str, compression: Compression) -> Result<Self> {
        if codec_id.is_empty() || codec_id.len() > 255 {
            return Err(Error::Encode {
                what: "chunk".into(),
                reason: format!("codec id must be 1..=255 bytes, got {}", codec_id.len()),
            });
        }
        let cctx = match compression {
            Compression::None => None,
            Compression::Zstd { level } => {
                if !zstd::compression_level_range().contains(&level) {
                    return Err(Error::Encode {
                        what: "chunk".into(),
                        reason: format!("zstd level {level} is out of range"),
                    });
                }
                let c = zstd::bulk::Compressor::new(level).map_err(|e| Error::Encode {
                    what: "chunk".into(),
                    reason: format!("zstd: {e}"),
                })?;
                // zstd's defaults: no frame checksum (the chunk has one), the content size in
                // the frame header.
                Some(c)
            }
        };
        Ok(ChunkEncoder {
            compression,
            codec_id: codec_id.to_owned(),
            cctx,
        })
    }

    /// Encodes the chunk whose first item is item `first_item` of the stream and whose items
    /// are those of `blocks`, in order; returns the chunk file's bytes.
    ///
    /// # Errors
    /// [`Error::Encode`] if there are no items, a block is empty or too big, or the chunk's
    /// payload exceeds [`MAX_CHUNK_PAYLOAD`].
    pub fn encode(&mut self, first_item: u64, blocks: &[RawBlock]) -> Result<Vec<u8>> {
        let err = |reason: String| Error::Encode {
            what: format!("chunk at item {first_item}"),
            reason,
        };
        let mut item_count: u64 = 0;
        let mut unc: u64 = 0;
        for b in blocks {
            if b.item_count == 0 || b.data.len() > u32::MAX as usize {
                return Err(err(format!(
                    "a block must hold 1 to 2^32-1 bytes of items, got {} items in {} bytes",
                    b.item_count,
                    b.data.len()
                )));
            }
            item_count += u64::from(b.item_count);
            unc += b.data.len() as u64;
        }
        if blocks.is_empty() || item_count > u64::from(u32::MAX) || unc > MAX_CHUNK_PAYLOAD {
            return Err(err(format!(
                "a chunk holds 1 to 2^32-1 items and at most 1 GiB, got {item_count} items in \
                 {unc} bytes"
            )));
        }
        let mut stored_blocks: Vec<Vec<u8>> = Vec::new();
        if let Some(c) = &mut self.cctx {
            for b in blocks {
                stored_blocks.push(c.compress(&b.data).map_err(|e| err(format!("zstd: {e}")))?);
            }
        }
        let stored_len = |i: usize, b: &RawBlock| -> usize {
            stored_blocks.get(i).map_or(b.data.len(), Vec::len)
        };
        let total_stored: usize = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| stored_len(i, b))
            .sum();
        let mut out = Vec::with_capacity(
            FIXED_HEADER_LEN
                + self.codec_id.len()
                + blocks.len() * BLOCK_ENTRY_LEN
                + total_stored
                + CHECKSUM_LEN,
        );
        out.extend_from_slice(&CHUNK_MAGIC);
        out.push(CHUNK_LAYOUT_VERSION);
        out.push(self.compression.kind());
        out.push(self.compression.level_byte());
        out.push(self.codec_id.len() as u8);
        out.extend_from_slice(&(item_count as u32).to_le_bytes());
        out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
        out.extend_from_slice(&first_item.to_le_bytes());
        out.extend_from_slice(&unc.to_le_bytes());
        out.extend_from_slice(&(total_stored as u64).to_le_bytes());
        out.extend_from_slice(self.codec_id.as_bytes());
        for (i, b) in blocks.iter().enumerate() {
            out.extend_from_slice(&b.item_count.to_le_bytes());
            out.extend_from_slice(&(b.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(stored_len(i, b) as u32).to_le_bytes());
        }
        for (i, b) in blocks.iter().enumerate() {
            match stored_blocks.get(i) {
                Some(s) => out.extend_from_slice(s),
                None => out.extend_from_slice(&b.data),
            }
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        Ok(out)
    }
}

impl std::fmt::Debug for ChunkEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkEncoder")
            .field("compression", &self.compression)
            .field("codec_id", &self.codec_id)
            .finish()
    }
}

/// Iterates the length-prefixed items of a decompressed payload (one block, or a whole chunk's
/// blocks back to back), checking that exactly `expected` items fill it.
#[derive(Debug, Clone)]
pub struct Items<'a> {
    payload: &'a [u8],
    pos: usize,
    yielded: u64,
    expected: u64,
}

impl<'a> Items<'a> {
    /// Items of `payload`, which must hold exactly `expected` of them.
    pub fn new(payload: &'a [u8], expected: u64) -> Self {
        Items {
            payload,
            pos: 0,
            yielded: 0,
            expected,
        }
    }

    /// Byte offset of the next item's length prefix within the payload.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// How many items were yielded so far.
    pub fn yielded(&self) -> u64 {
        self.yielded
    }

    /// The next item's encoded bytes; `Ok(None)` once exactly the expected items were read and
    /// nothing is left. The error says what is wrong; callers add the file and item number.
    ///
    /// # Errors
    /// An [`ItemsError`]: a truncated length or item, trailing bytes, too few items.
    #[allow(clippy::should_implement_trait)]
    pub fn next_item(&mut self) -> std::result::Result<Option<&'a [u8]>, ItemsError> {
        let rest = self.payload.get(self.pos..).unwrap_or_default();
        if self.yielded == self.expected {
            if rest.is_empty() {
                return Ok(None);
            }
            return Err(ItemsError::TrailingBytes {
                extra: rest.len() as u64,
                expected: self.expected,
            });
        }
        if rest.is_empty() {
            return Err(ItemsError::TooFewItems {
                read: self.yielded,
                expected: self.expected,
            });
        }
        let (len, n) = get_varint(rest).ok_or(ItemsError::BadLength { item: self.yielded })?;
        let body = rest.get(n..).unwrap_or_default();
        if len > body.len() as u64 {
            return Err(ItemsError::ItemPastEnd {
                len,
                remaining: body.len() as u64,
            });
        }
        let (item, _) = body.split_at(len as usize);
        self.pos += n + item.len();
        self.yielded += 1;
        Ok(Some(item))
    }

    /// Skips `n` items without returning them.
    ///
    /// # Errors
    /// As [`next_item`](Items::next_item), or if fewer than `n` items remain.
    pub fn skip_items(&mut self, n: u64) -> std::result::Result<(), ItemsError> {
        for _ in 0..n {
            if self.next_item()?.is_none() {
                return Err(ItemsError::SkippedPastEnd {
                    expected: self.expected,
                });
            }
        }
        Ok(())
    }
}

/// What is wrong with a payload's items ([`Items::next_item`]); the caller names the file and
/// item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ItemsError {
    /// Bytes follow the last of the expected items.
    #[error("{extra} bytes after the last of {expected} items")]
    TrailingBytes {
        /// How many bytes are left over.
        extra: u64,
        /// How many items the payload holds.
        expected: u64,
    },
    /// The payload ends before the expected number of items.
    #[error("the payload ends after {read} of {expected} items")]
    TooFewItems {
        /// The items read.
        read: u64,
        /// The items expected.
        expected: u64,
    },
    /// An item's length prefix is not a valid varint.
    #[error("a malformed item length (item {item} of the payload)")]
    BadLength {
        /// The item's index within the payload.
        item: u64,
    },
    /// An item's length goes past the payload's end.
    #[error("an item length of {len} bytes, only {remaining} remain")]
    ItemPastEnd {
        /// The length the prefix claims.
        len: u64,
        /// The bytes left in the payload.
        remaining: u64,
    },
    /// [`Items::skip_items`] was asked to skip past the last item.
    #[error("skipped past the last of {expected} items")]
    SkippedPastEnd {
        /// How many items the payload holds.
        expected: u64,
    },
}
