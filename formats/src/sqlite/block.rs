//! The block layout of a version-2 sequence: `B` consecutive items per row of the `blocks`
//! table, each block one zstd frame (see `docs/FORMAT.md` §8.3, "Sequence data in blocks").
//!
//! The decompressed payload of a block of `n` items is the `n` item lengths as LEB128 varints,
//! then the `n` items' codec bytes, concatenated. The lengths are inside the frame because a
//! reader decompresses the whole frame anyway, and there they compress.

use std::ops::Range;

use milonga_sdk::{Error, Result};
use zstd::zstd_safe::{self, CCtx, DCtx};

use super::compress::{frame_capacity, zstd_cctx, zstd_dctx, ZSTD_MAGIC};

/// The most bytes a LEB128 varint of a `u64` takes.
const MAX_VARINT: u64 = 10;

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*pos`, advancing it.
fn read_varint(buf: &[u8], pos: &mut usize) -> std::result::Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err("block ends inside an item length".into());
        };
        *pos += 1;
        let bits = u64::from(b & 0x7f);
        if shift == 63 && bits > 1 {
            return Err("item length overflows 64 bits".into());
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("item length longer than 10 bytes".into())
}

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
            push_varint(out, n as u64);
        }
        out.extend_from_slice(&self.data);
    }
}

fn zstd_err(file: &str, what: &str, code: usize) -> Error {
    Error::Encode {
        what: format!("{file} ({what})"),
        reason: zstd_safe::get_error_name(code).to_owned(),
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
        self.out.clear();
        self.out
            .reserve(zstd_safe::compress_bound(self.payload.len()));
        self.cctx
            .compress2(&mut self.out, &self.payload)
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

/// Decompresses blocks and remembers the last one, so that consecutive reads of one block
/// decompress it once.
pub(crate) struct BlockDecoder {
    dctx: DCtx<'static>,
    frame: Vec<u8>,
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
        let dctx = zstd_dctx(dictionary, file)?;
        Ok(BlockDecoder {
            dctx,
            frame: Vec::new(),
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
        self.frame.clear();
        self.frame.extend_from_slice(&ZSTD_MAGIC);
        self.frame.extend_from_slice(stored);
        let size = match zstd_safe::get_frame_content_size(&self.frame) {
            Ok(Some(size)) => size,
            Ok(None) => return Err("zstd frame without a content size".into()),
            Err(_) => return Err("not a zstd frame".into()),
        };
        let bound = (n as u64).saturating_mul(self.max_value_len.saturating_add(MAX_VARINT));
        if size > bound {
            return Err(format!(
                "zstd frame claims {size} bytes, {n} items of at most {} bytes take at most {bound}",
                self.max_value_len
            ));
        }
        // `max_value_len` is read from the file too: bound `size` by what the frame can hold.
        let possible = frame_capacity(&self.frame);
        if size > possible {
            return Err(format!(
                "zstd frame claims {size} bytes, a frame of {} bytes holds at most {possible}",
                self.frame.len()
            ));
        }
        let size = usize::try_from(size).map_err(|_| "block too large".to_owned())?;
        self.out.clear();
        self.out.reserve(size);
        let got = self
            .dctx
            .decompress(&mut self.out, &self.frame)
            .map_err(|c| format!("zstd: {}", zstd_safe::get_error_name(c)))?;
        if got != size {
            return Err(format!(
                "zstd frame gave {got} bytes, its header said {size}"
            ));
        }
        let mut pos = 0usize;
        let mut lens = Vec::with_capacity(n);
        for _ in 0..n {
            lens.push(read_varint(&self.out, &mut pos)?);
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
    fn varints_round_trip_and_refuse_overflow() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            push_varint(&mut b, v);
            let mut pos = 0;
            assert_eq!(read_varint(&b, &mut pos), Ok(v));
            assert_eq!(pos, b.len());
        }
        let mut pos = 0;
        assert!(read_varint(&[0xff; 11], &mut pos).is_err());
        let mut pos = 0;
        assert!(read_varint(&[0x80], &mut pos).is_err());
    }

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
