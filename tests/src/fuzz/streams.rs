//! The chunk decoder target (`chunk`): one chunk file of the chunked record file, and the
//! bounded zstd frame decoder. (A whole stream artifact is fuzzed through `StreamFormat` in
//! `formats::stream_read`.)

use std::sync::OnceLock;

use milonga::chunked::raw::{ChunkEncoder, ChunkInfo, Decompressor, RawBlock};
use milonga::chunked::{Compression, Items};

/// Applies the patches in `patches` (3 bytes each: a `u16` offset, a byte to XOR there) to
/// `file`.
fn patch(file: &mut [u8], patches: &[u8]) {
    if file.is_empty() {
        return;
    }
    for p in patches.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([p[0], p[1]])) % file.len();
        file[at] ^= p[2];
    }
}

/// Recomputes the blake3 trailer (the last 32 bytes) of a chunk or end file, so that a patched
/// file gets past the checksum into the field checks behind it.
pub(crate) fn fix_trailer(file: &mut [u8]) {
    if let Some(body) = file.len().checked_sub(32) {
        let sum = blake3::hash(&file[..body]);
        file[body..].copy_from_slice(sum.as_bytes());
    }
}

/// Two valid chunks of the same items: zstd and uncompressed, several blocks each.
fn chunk_templates() -> &'static [Vec<u8>; 2] {
    static T: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    T.get_or_init(|| {
        let blocks: Vec<RawBlock> = (0..4u8)
            .map(|b| {
                let mut block = RawBlock::default();
                for i in 0..(b + 1) {
                    block.push(&vec![b.wrapping_mul(31) ^ i; usize::from(i) * 3]);
                }
                block
            })
            .collect();
        let make = |c| {
            ChunkEncoder::new("postcard", c)
                .expect("encoder")
                .encode(1000, &blocks)
                .expect("encode the template")
        };
        [
            make(Compression::Zstd { level: 3 }),
            make(Compression::None),
        ]
    })
}

/// Everything a reader learns from a chunk file: header fields and the items of each block.
type Decoded = (String, Compression, u64, Vec<Vec<Vec<u8>>>);

fn decode_chunk(bytes: &[u8]) -> Option<Decoded> {
    let info = ChunkInfo::parse(bytes, "fuzz").ok()?;
    // Every item index maps to a block, and no index past the end does.
    for i in [0, info.item_count / 2, info.item_count.saturating_sub(1)] {
        assert!(info.block_of(i).is_some(), "item {i} has no block");
    }
    assert!(info.block_of(info.item_count).is_none());
    let mut dctx = Decompressor::new();
    let mut all = Vec::new();
    let whole = info.decompress_all(bytes, "fuzz", &mut all, &mut dctx);
    let mut blocks = Vec::new();
    let mut joined = Vec::new();
    let mut ok = true;
    for (b, entry) in info.blocks.iter().enumerate() {
        let mut payload = Vec::new();
        if info
            .decompress_block(bytes, b, "fuzz", &mut payload, &mut dctx)
            .is_err()
        {
            ok = false;
            continue;
        }
        joined.extend_from_slice(&payload);
        let mut items = Items::new(&payload, u64::from(entry.item_count));
        let mut block = Vec::new();
        loop {
            match items.next_item() {
                Ok(Some(item)) => block.push(item.to_vec()),
                Ok(None) => break,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        blocks.push(block);
    }
    if ok {
        whole.expect("every block decompresses, but decompress_all fails");
        assert_eq!(all, joined, "decompress_all differs from the blocks");
    }
    ok.then_some((info.codec_id, info.compression, info.first_item, blocks))
}

/// [`ChunkInfo::parse`] and the block decoders on a chunk file. When the first byte is odd, the
/// file is a valid chunk (bit 1 picks zstd or uncompressed) patched by the rest of the input,
/// with its checksum recomputed when bit 2 is set (so that the fuzzer reaches the header and
/// block checks behind it); otherwise the rest of the input is the whole file. A chunk that
/// decodes completely is encoded again from its items and must decode to the same items.
///
/// The same input also goes to the bounded zstd decoder on its own
/// ([`milonga::fuzz_zstd_frame`]: its first byte picks the case there), which every compressed
/// format decodes with.
pub fn chunk(data: &[u8]) {
    milonga::fuzz_zstd_frame(data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode & 1 == 1 {
        let mut file = chunk_templates()[usize::from(mode >> 1 & 1)].clone();
        patch(&mut file, rest);
        if mode & 4 == 4 {
            fix_trailer(&mut file);
        }
        file
    } else {
        rest.to_vec()
    };
    let Some((codec, compression, first, blocks)) = decode_chunk(&file) else {
        return;
    };
    let raw: Vec<RawBlock> = blocks
        .iter()
        .map(|items| {
            let mut b = RawBlock::default();
            for item in items {
                b.push(item);
            }
            b
        })
        .collect();
    // A zstd level the header allows but zstd refuses cannot be written again: fine.
    let Ok(mut enc) = ChunkEncoder::new(&codec, compression) else {
        return;
    };
    let again = enc.encode(first, &raw).expect("a decoded chunk encodes");
    let back = decode_chunk(&again).expect("a re-encoded chunk decodes");
    assert_eq!(
        back,
        (codec, compression, first, blocks),
        "round-trip of a decoded chunk"
    );
}
