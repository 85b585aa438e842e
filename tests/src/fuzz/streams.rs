//! The stream decoder targets: one chunk file (`chunk`) and a whole stream artifact read through
//! `StreamFormat` (`stream_read`).

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use milonga::chunked::raw::{ChunkEncoder, ChunkInfo, Decompressor, RawBlock};
use milonga::chunked::{Compression, Items};
use milonga::sdk::{Format, MemoryArtifact};
use milonga::{Stream, StreamFormat};

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
fn fix_trailer(file: &mut [u8]) {
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
pub fn chunk(data: &[u8]) {
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

/// A valid stream of 30 items in several chunks (zstd), as files: the template the fuzzer
/// patches.
fn stream_template() -> &'static Vec<(String, Vec<u8>)> {
    static T: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    T.get_or_init(|| {
        let artifact = MemoryArtifact::new();
        let items: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i; usize::from(i % 7)]).collect();
        stream_format()
            .write(Stream::new(items), &artifact)
            .expect("write the template");
        artifact.snapshot()
    })
}

fn stream_format() -> StreamFormat<Vec<u8>> {
    StreamFormat::new()
        .with_chunk_size(40)
        .with_block_size(16)
        .with_workers(1)
}

/// A file of the fuzzer's own: a name (mostly one the stream uses) and bytes.
#[derive(Debug, Arbitrary)]
struct FuzzFile {
    name: Name,
    bytes: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Name {
    End,
    Chunk { seq: u8, first: u8, count: u8 },
    Other(String),
}

/// [`StreamFormat`] opening an artifact and reading it every way (`len`, `get`, `range`,
/// iteration). When the first byte is odd, the artifact is a valid stream whose files are
/// patched (4 bytes each: a file number, a `u16` offset, a byte to XOR), with their checksums
/// recomputed when bit 1 is set and one file dropped when bit 2 is set; otherwise the input
/// is a list of arbitrary files. Whenever the reader gives every item, it must agree with
/// itself: `len` is the number of items, `get(i)` is item `i`, and past the end is an error.
pub fn stream_read(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let artifact = MemoryArtifact::new();
    if mode & 1 == 1 {
        let mut files = stream_template().clone();
        for p in rest.chunks_exact(4) {
            let n = files.len();
            let (_, file) = &mut files[usize::from(p[0]) % n];
            patch(file, &p[1..]);
        }
        if mode & 2 == 2 {
            for (_, file) in &mut files {
                fix_trailer(file);
            }
        }
        if mode & 4 == 4 && !files.is_empty() {
            files.remove(usize::from(mode >> 3) % files.len());
        }
        for (name, bytes) in files {
            artifact.set_file(&name, bytes);
        }
    } else {
        let mut u = Unstructured::new(rest);
        let Ok(files) = Vec::<FuzzFile>::arbitrary(&mut u) else {
            return;
        };
        for f in files.into_iter().take(16) {
            let name = match f.name {
                Name::End => "end".to_owned(),
                Name::Chunk { seq, first, count } => {
                    format!("chunks/{:010}-{:020}-{:010}", seq % 8, first, count % 16)
                }
                Name::Other(s) => s,
            };
            artifact.set_file(&name, f.bytes);
        }
    }
    let Ok(reader) = stream_format().read(artifact.handle()) else {
        return;
    };
    let len = reader.len();
    let items: Vec<_> = reader.iter().take(10_000).collect();
    let all: Option<Vec<Vec<u8>>> = items.into_iter().collect::<Result<_, _>>().ok();
    if let (Ok(n), Some(all)) = (&len, &all) {
        assert_eq!(*n, all.len() as u64, "len() disagrees with iteration");
        for i in [0, n / 2, n.saturating_sub(1)] {
            if i < *n {
                let got = reader.get(i).expect("get an item that iteration read");
                assert_eq!(got, all[i as usize], "get({i}) disagrees with iteration");
            }
        }
        let tail: Result<Vec<_>, _> = reader.range(n / 2..*n).collect();
        assert_eq!(
            tail.expect("a range of items that iteration read"),
            all[(n / 2) as usize..],
            "range disagrees with iteration"
        );
        assert!(reader.get(*n).is_err(), "get(len) must be an error");
    } else {
        for i in [0, 1, 7, 29] {
            let _ = reader.get(i);
        }
        let _ = reader.range(3..9).count();
    }
    assert!(
        reader.get(u64::MAX).is_err(),
        "get(u64::MAX) must be an error"
    );
}
