//! The stream decoders through the SDK test kit, with the allocation meter on: the chunk file
//! (header, block table, blocks, items), the end record (chunk index), `StreamFormat` with
//! another codec and no compression (random access included; `stream_kit.rs` covers the
//! defaults), and the crash kit (`ResumeCheck`) on `StreamFormat`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use milonga_formats::chunked::raw::{ChunkEncoder, ChunkInfo, Decompressor, EndRecord, RawBlock};
use milonga_formats::chunked::{
    Compression, IndexEntry, Items, CHUNK_LAYOUT_VERSION, END_LAYOUT_VERSION,
};
use milonga_formats::{JsonCodec, Stream, StreamFormat};
use milonga_sdk::testing::{check_resume, meter_installed, Crash, DecoderCheck, ResumeCheck};
use milonga_sdk::{ContentId, Error, Result};
use proptest::prelude::*;

milonga_sdk::allocation_meter!();

#[test]
fn the_allocation_meter_is_on() {
    assert!(meter_installed());
}

/// Rewrites the layout version byte (offset 4) and the blake3 trailer, so that the version
/// check, not the checksum, is what refuses the bytes.
fn bump_layout(bytes: &mut [u8], version: u8) {
    bytes[4] = version;
    let n = bytes.len();
    let sum = blake3::hash(&bytes[..n - 32]);
    bytes[n - 32..].copy_from_slice(sum.as_bytes());
}

/// A chunk as the encoder takes it: codec id, compression, first item, blocks of items.
type ChunkValue = (String, Compression, u64, Vec<Vec<Vec<u8>>>);

fn chunk_value() -> impl Strategy<Value = ChunkValue> {
    let compression = prop_oneof![
        Just(Compression::None),
        (-3i32..=9).prop_map(|level| Compression::Zstd { level }),
    ];
    let item = proptest::collection::vec(any::<u8>(), 0..40);
    let block = proptest::collection::vec(item, 1..8);
    (
        "[a-z.+]{1,16}",
        compression,
        0..u64::MAX / 2,
        proptest::collection::vec(block, 1..5),
    )
}

fn encode_chunk((codec, compression, first, blocks): &ChunkValue) -> Result<Vec<u8>> {
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
    ChunkEncoder::new(codec, *compression)?.encode(*first, &raw)
}

/// Parses the header, then decompresses each block (and the whole payload, which must be the
/// blocks back to back) and splits it into items.
fn decode_chunk(bytes: &[u8]) -> Result<ChunkValue> {
    let info = ChunkInfo::parse(bytes, "chunk")?;
    let mut dctx = Decompressor::new();
    let mut all = Vec::new();
    info.decompress_all(bytes, "chunk", &mut all, &mut dctx)?;
    let mut blocks = Vec::with_capacity(info.blocks.len());
    let mut joined = Vec::new();
    for (b, entry) in info.blocks.iter().enumerate() {
        let mut payload = Vec::new();
        info.decompress_block(bytes, b, "chunk", &mut payload, &mut dctx)?;
        joined.extend_from_slice(&payload);
        let mut items = Items::new(&payload, u64::from(entry.item_count));
        let mut block = Vec::new();
        while let Some(item) = items
            .next_item()
            .map_err(|r| Error::corrupt("chunk", 0, r))?
        {
            block.push(item.to_vec());
        }
        blocks.push(block);
    }
    if joined != all {
        return Err(Error::corrupt("chunk", 0, "decompress_all disagrees"));
    }
    let mut whole = Items::new(&all, u64::from(info.item_count));
    whole
        .skip_items(u64::from(info.item_count))
        .and_then(|()| whole.next_item().map(|_| ()))
        .map_err(|r| Error::corrupt("chunk", 0, r))?;
    Ok((info.codec_id, info.compression, info.first_item, blocks))
}

#[test]
fn chunk_file_through_the_decoder_kit() {
    DecoderCheck::new(chunk_value(), encode_chunk, decode_chunk)
        // The blake3 trailer covers every byte: any cut is an error.
        .with_truncation_must_fail(true)
        .with_newer_version(|b| bump_layout(b, CHUNK_LAYOUT_VERSION + 1))
        .with_cases(48)
        .assert();
}

fn end_record() -> impl Strategy<Value = EndRecord> {
    proptest::collection::vec((1u32..5000, any::<u64>(), any::<[u8; 32]>()), 0..20).prop_map(
        |entries| {
            let mut first_item = 0u64;
            let chunks = entries
                .into_iter()
                .map(|(item_count, len, id)| {
                    let e = IndexEntry {
                        first_item,
                        item_count,
                        len,
                        id: ContentId(id),
                    };
                    first_item += u64::from(item_count);
                    e
                })
                .collect();
            EndRecord::new(chunks)
        },
    )
}

#[test]
fn end_record_and_chunk_index_through_the_decoder_kit() {
    DecoderCheck::new(
        end_record(),
        |r: &EndRecord| Ok(r.encode()),
        |b: &[u8]| EndRecord::decode(b, "end"),
    )
    .with_truncation_must_fail(true)
    .with_newer_version(|b| bump_layout(b, END_LAYOUT_VERSION + 1))
    .with_cases(48)
    .assert();
}

/// Items with every serde shape the JSON codec sees: the format with a non-default codec and
/// uncompressed blocks (the mutations then reach the item decoder directly).
type JsonItem = (u32, String, Option<i16>);

#[test]
fn stream_format_with_json_items_and_no_compression() {
    let format = StreamFormat::<JsonItem, JsonCodec>::with_codec(JsonCodec)
        .with_chunk_size(80)
        .with_block_size(24)
        .with_compression(Compression::None)
        .with_workers(1);
    milonga_sdk::testing::FormatCheck::lazy(
        &format,
        proptest::collection::vec((any::<u32>(), ".{0,6}", any::<Option<i16>>()), 0..30),
        |v: &Vec<JsonItem>| Stream::new(v.clone()),
        |r| r.iter().collect(),
    )
    .with_random_access(|r| r.len(), |r, i| r.get(i), |r| r.iter().collect())
    .with_newer_version(|files, version| {
        let Some((_, end)) = files.iter_mut().find(|(n, _)| n == "end") else {
            return false;
        };
        bump_layout(end, u8::try_from(version).unwrap_or(u8::MAX));
        true
    })
    .with_cases(12)
    .assert();
}

/// The crash kit on the built-in stream format: a crash (an `Err` item, or a panic) after every
/// item, hence after every sealed chunk, then a resume, must give the same items and the same
/// chunk files and end record as a write in one go.
#[test]
fn stream_format_survives_a_crash_at_every_chunk_boundary() {
    let format = StreamFormat::<Vec<u8>>::new()
        .with_chunk_size(40)
        .with_block_size(16)
        .with_workers(2);
    check_resume(
        &format,
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..40),
        Stream::try_new,
        |r| r.iter().collect(),
    );
}

#[test]
fn stream_format_with_json_items_and_one_item_per_chunk_resumes() {
    let format = StreamFormat::<JsonItem, JsonCodec>::with_codec(JsonCodec)
        .with_chunk_size(1)
        .with_compression(Compression::None)
        .with_workers(1);
    ResumeCheck::new(
        &format,
        proptest::collection::vec((any::<u32>(), ".{0,6}", any::<Option<i16>>()), 0..12),
        Stream::try_new,
        |r| r.iter().collect(),
    )
    .with_crashes(&[Crash::Error, Crash::Panic])
    .with_cases(12)
    .assert();
}

/// A producer that panics mid-stream used to leave the compression workers waiting on an open
/// queue, so the write never returned (the crash kit hung on its first `Crash::Panic`). The panic
/// must come out of `write`, with the chunks sealed before it durable.
#[test]
fn a_panicking_producer_does_not_hang_the_writer() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let format = StreamFormat::<u64>::new()
            .with_chunk_size(8)
            .with_workers(2);
        let artifact = milonga_sdk::MemoryArtifact::new();
        let items = (0..100u64).inspect(|&i| {
            if i == 50 {
                std::panic::resume_unwind(Box::new("producer panic"));
            }
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            milonga_sdk::Format::write(&format, Stream::new(items), &artifact)
        }));
        let durable = milonga_sdk::Format::durable_items(&format, &artifact).unwrap();
        tx.send((r.is_err(), durable)).unwrap();
    });
    let (panicked, durable) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the write hung after its producer panicked");
    assert!(panicked);
    assert!(durable > 0 && durable <= 50, "{durable} durable items");
}
