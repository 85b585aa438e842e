//! The block layout of a version-2 sequence: `B` consecutive items per row of the `blocks`
//! table, each block one zstd frame (see `docs/FORMAT.md` §8.3, "Sequence data in blocks").
//!
//! The decompressed payload of a block of `n` items is the `n` item lengths as LEB128 varints,
//! then the `n` items' codec bytes, concatenated. The lengths are inside the frame because a
//! reader decompresses the whole frame anyway, and there they compress.

use std::ops::Range;

use milonga_sdk::Result;
use zstd::zstd_safe::CCtx;

use crate::varint::{get_varint, put_varint, MAX_VARINT_LEN};
use crate::zstd_frame::{compress_stripped, zstd_cctx, Expect, FrameDecoder, Magic};

/// The items of the block being written, not yet compressed.
#[derive(Debug, Default, Clone)]
pub(crate) struct OpenBlock {
    /// The length of each item.
    pub(crate) lens: Vec<usize>,
    /// The items' codec bytes, concatenated.
    pub(crate) data: Vec<u8>,
}

impl OpenBlock {
    /// The number of items.
    pub(crate) fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether the block holds no item.
    pub(crate) fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Adds one item's codec bytes.
    pub(crate) fn push(&mut self, raw: &[u8]) {
        self.lens.push(raw.len());
        self.data.extend_from_slice(raw);
    }

    /// Empties the block, keeping its buffers.
    pub(crate) fn clear(&mut self) {
        self.lens.clear();
        self.data.clear();
    }

    /// Appends the decompressed payload of the block to `out`: the varint lengths, then the
    /// data.
    pub(crate) fn payload_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.data.len() + self.lens.len() * 2);
        for &n in &self.lens {
            put_varint(out, n as u64);
        }
        out.extend_from_slice(&self.data);
    }
}

/// Compresses blocks.
pub(crate) struct BlockEncoder {
    cctx: CCtx<'static>,
    payload: Vec<u8>,
    out: Vec<u8>,
}

impl BlockEncoder {
    /// An encoder at `level`, with `dictionary` if not empty.
    pub(crate) fn new(level: i32, dictionary: &[u8], file: &str) -> Result<Self> {
        let cctx = zstd_cctx(level, dictionary, true, file)?;
        Ok(BlockEncoder {
            cctx,
            payload: Vec::new(),
            out: Vec::new(),
        })
    }

    /// The stored form of `block`: its zstd frame without the 4 magic bytes.
    pub(crate) fn encode(&mut self, block: &OpenBlock, file: &str) -> Result<&[u8]> {
        self.payload.clear();
        block.payload_into(&mut self.payload);
        compress_stripped(&mut self.cctx, &self.payload, &mut self.out, file)
    }
}

/// Decompresses blocks and remembers the last one, so that consecutive reads of one block
/// decompress it once.
pub(crate) struct BlockDecoder {
    frames: FrameDecoder,
    out: Vec<u8>,
    items: Vec<Range<usize>>,
    /// The block whose items are in `out`.
    cached: Option<u64>,
    /// The longest item, in codec bytes.
    max_value_len: u64,
}

impl BlockDecoder {
    /// A decoder with `dictionary` if not empty, for a file whose longest item has
    /// `max_value_len` codec bytes.
    pub(crate) fn new(dictionary: &[u8], max_value_len: u64, file: &str) -> Result<Self> {
        Ok(BlockDecoder {
            frames: FrameDecoder::with_dictionary(dictionary, file)?,
            out: Vec::new(),
            items: Vec::new(),
            cached: None,
            max_value_len,
        })
    }

    /// Whether block `block` is the one held.
    pub(crate) fn holds(&self, block: u64) -> bool {
        self.cached == Some(block)
    }

    /// Forgets the block held.
    pub(crate) fn forget(&mut self) {
        self.cached = None;
    }

    /// Decompresses `stored`, block number `block` of `n` items, and splits it into items; the
    /// error is the reason it cannot be decoded. A frame that claims more than `n` items of the
    /// file's longest length is refused before anything is allocated.
    pub(crate) fn load(
        &mut self,
        block: u64,
        stored: &[u8],
        n: usize,
    ) -> std::result::Result<(), String> {
        self.cached = None;
        self.items.clear();
        self.out.clear();
        let bound =
            (n as u64).saturating_mul(self.max_value_len.saturating_add(MAX_VARINT_LEN as u64));
        self.frames
            .decode(
                stored,
                Magic::Stripped,
                Expect::AtMost(bound),
                &mut self.out,
            )
            .map_err(|e| {
                format!(
                    "{e} ({n} items of at most {} bytes take at most {bound})",
                    self.max_value_len
                )
            })?;
        let mut pos = 0usize;
        let mut lens = Vec::with_capacity(n);
        for _ in 0..n {
            let rest = self.out.get(pos..).unwrap_or_default();
            let (len, used) = get_varint(rest).ok_or_else(|| {
                if rest.len() < MAX_VARINT_LEN && rest.iter().all(|b| b & 0x80 != 0) {
                    "block ends inside an item length".to_owned()
                } else {
                    "an item length that is not a varint of at most 64 bits".to_owned()
                }
            })?;
            pos += used;
            lens.push(len);
        }
        let mut start = pos;
        for len in lens {
            let end = usize::try_from(len)
                .ok()
                .and_then(|len| start.checked_add(len))
                .filter(|&end| end <= self.out.len())
                .ok_or_else(|| format!("item length {len} runs past the block's end"))?;
            self.items.push(start..end);
            start = end;
        }
        if start != self.out.len() {
            return Err(format!(
                "{} bytes after the block's last item",
                self.out.len() - start
            ));
        }
        self.cached = Some(block);
        Ok(())
    }

    /// Item `k` of the block held.
    pub(crate) fn item(&self, k: usize) -> Option<&[u8]> {
        self.items.get(k).and_then(|r| self.out.get(r.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_golden_payload_and_round_trip() {
        let mut block = OpenBlock::default();
        block.push(b"ab");
        block.push(b"");
        block.push(&[7u8; 130]);
        let mut payload = Vec::new();
        block.payload_into(&mut payload);
        assert_eq!(&payload[..5], &[0x02, 0x00, 0x82, 0x01, b'a']);
        let mut enc = BlockEncoder::new(3, &[], "t").unwrap();
        let stored = enc.encode(&block, "t").unwrap().to_vec();
        let mut dec = BlockDecoder::new(&[], 130, "t").unwrap();
        dec.load(5, &stored, 3).unwrap();
        assert!(dec.holds(5));
        assert_eq!(dec.item(0), Some(&b"ab"[..]));
        assert_eq!(dec.item(1), Some(&b""[..]));
        assert_eq!(dec.item(2), Some(&[7u8; 130][..]));
        assert_eq!(dec.item(3), None);
        // The wrong item count, a lower bound on lengths, or garbage: errors, not panics.
        assert!(dec.load(5, &stored, 2).is_err());
        assert!(!dec.holds(5));
        assert!(dec.load(5, &stored, 4).is_err());
        let mut small = BlockDecoder::new(&[], 10, "t").unwrap();
        assert!(small.load(0, &stored, 3).is_err());
        assert!(dec.load(0, b"\x00\x01garbage", 3).is_err());
        assert!(dec.load(0, &[], 3).is_err());
    }
}
