//! Round trips, random access and resume of `StreamFormat` on the in-memory backend.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use milonga_formats::chunked::{ChunkOptions, Compression};
use milonga_formats::{JsonCodec, Stream, StreamFormat};
use milonga_sdk::{Error, Format, MemoryArtifact};
use proptest::prelude::*;

fn format(
    chunk: usize,
    block: usize,
    compression: Compression,
    workers: usize,
) -> StreamFormat<Vec<u8>> {
    let mut o = ChunkOptions::default();
    o.chunk_size = chunk;
    o.block_size = block;
    o.compression = compression;
    o.workers = workers;
    o.queue = 1;
    StreamFormat::new().with_options(o)
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Zstd { level: 1 }),
        Just(Compression::Zstd { level: 3 })
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip_and_random_access_equal_sequential_read(
        items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..200),
        chunk in 1usize..2000,
        block in 1usize..600,
        compression in compression(),
        workers in 1usize..4,
    ) {
        let f = format(chunk, block, compression, workers);
        let artifact = MemoryArtifact::new();
        f.write(Stream::new(items.clone()), &artifact).unwrap();
        let r = f.read(artifact.handle()).unwrap();
        prop_assert!(r.is_complete());
        prop_assert_eq!(r.len().unwrap(), items.len() as u64);
        let seq: Vec<Vec<u8>> = r.iter().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(&seq, &items);
        for (i, item) in items.iter().enumerate() {
            prop_assert_eq!(&r.get(i as u64).unwrap(), item);
        }
        let past_end = matches!(r.get(items.len() as u64), Err(Error::OutOfRange { .. }));
        prop_assert!(past_end);
        let n = items.len() as u64;
        for (a, b) in [(0, n), (n / 3, n / 2), (n / 2, n), (n, n)] {
            let part: Vec<Vec<u8>> = r.range(a..b).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(&part[..], &items[a as usize..b as usize]);
        }
        // Past the end is an error, not a short range.
        let past: Vec<_> = r.range(0..n + 1).collect();
        let short = matches!(past.last(), Some(Err(Error::OutOfRange { .. })));
        prop_assert!(short);
        // Buffer-reusing paths.
        let mut it = r.iter();
        let mut slot = Vec::new();
        let mut i = 0;
        while it.read_into(&mut slot).unwrap() {
            prop_assert_eq!(&slot, &items[i]);
            i += 1;
        }
        prop_assert_eq!(i, items.len());
        let mut it = r.iter();
        let mut raw = 0;
        while let Some(bytes) = it.next_raw().unwrap() {
            prop_assert_eq!(postcard::from_bytes::<Vec<u8>>(bytes).unwrap(), items[raw].clone());
            raw += 1;
        }
        prop_assert_eq!(raw, items.len());
    }

    #[test]
    fn resumed_write_equals_uninterrupted_write(
        items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..150),
        fail_at in 0usize..160,
        chunk in 1usize..800,
        block in 1usize..300,
    ) {
        let f = format(chunk, block, Compression::Zstd { level: 1 }, 2);
        let whole = MemoryArtifact::new();
        f.write(Stream::new(items.clone()), &whole).unwrap();

        let artifact = MemoryArtifact::new();
        let k = fail_at.min(items.len());
        let first: Vec<Result<Vec<u8>, String>> = items[..k]
            .iter()
            .cloned()
            .map(Ok)
            .chain(std::iter::once(Err("producer died".to_owned())))
            .collect();
        let r = f.write(Stream::try_new(first), &artifact);
        let died = matches!(r, Err(Error::Source(ref m)) if m.to_string() == "producer died");
        prop_assert!(died, "{:?}", r);
        let durable = f.durable_items(&artifact).unwrap();
        prop_assert!(durable <= k as u64);
        // Nothing readable as a complete stream yet.
        prop_assert!(f.read(artifact.handle()).is_err());
        f.write(Stream::new(items[durable as usize..].to_vec()), &artifact).unwrap();
        let back: Vec<Vec<u8>> = f.read(artifact.handle()).unwrap().iter().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(&back, &items);
        let mut a = artifact.snapshot();
        let mut b = whole.snapshot();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b, "same chunks and end record as an uninterrupted write");
    }
}

#[test]
fn empty_stream_has_only_an_end_record() {
    let f = StreamFormat::<u32>::new();
    let artifact = MemoryArtifact::new();
    f.write(Stream::empty(), &artifact).unwrap();
    let names: Vec<String> = artifact.snapshot().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["end"]);
    let r = f.read(artifact.handle()).unwrap();
    assert_eq!(r.len().unwrap(), 0);
    assert!(r.is_empty().unwrap());
    assert_eq!(r.iter().count(), 0);
    assert!(matches!(
        r.get(0),
        Err(Error::OutOfRange {
            index: 0,
            len: 0,
            ..
        })
    ));
}

#[test]
fn items_larger_than_a_chunk_get_a_chunk_each() {
    let items: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 5000]).collect();
    let f = format(1000, 100, Compression::Zstd { level: 1 }, 2);
    let artifact = MemoryArtifact::new();
    f.write(Stream::new(items.clone()), &artifact).unwrap();
    let r = f.read(artifact.handle()).unwrap();
    assert_eq!(r.chunks().known_chunks().len(), 5);
    assert_eq!(r.iter().collect::<Result<Vec<_>, _>>().unwrap(), items);
    assert_eq!(r.get(3).unwrap(), items[3]);
}

#[test]
fn a_finished_stream_is_not_written_twice() {
    let f = format(100, 50, Compression::Zstd { level: 1 }, 1);
    let artifact = MemoryArtifact::new();
    let items: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 10]).collect();
    f.write(Stream::new(items.clone()), &artifact).unwrap();
    let before = artifact.snapshot();
    assert_eq!(f.durable_items(&artifact).unwrap(), 50);
    f.write(Stream::empty(), &artifact).unwrap();
    assert_eq!(artifact.snapshot(), before);
    assert!(matches!(
        f.write(Stream::new(vec![vec![1u8]]), &artifact),
        Err(Error::Encode { .. })
    ));
}

#[test]
fn resume_with_another_codec_is_refused() {
    let f = format(100, 50, Compression::Zstd { level: 1 }, 1);
    let artifact = MemoryArtifact::new();
    let items: Vec<Result<Vec<u8>, String>> = (0..50u8)
        .map(|i| Ok(vec![i; 10]))
        .chain([Err("stop".to_owned())])
        .collect();
    assert!(f.write(Stream::try_new(items), &artifact).is_err());
    assert!(f.durable_items(&artifact).unwrap() > 0);
    let json = StreamFormat::<Vec<u8>, _>::with_codec(JsonCodec);
    assert!(matches!(
        json.durable_items(&artifact),
        Err(Error::WrongFormat { .. })
    ));
}

#[test]
fn json_codec_and_uncompressed_chunks_roundtrip() {
    let f = StreamFormat::<String, _>::with_codec(JsonCodec)
        .with_compression(Compression::None)
        .with_chunk_size(64);
    let items: Vec<String> = (0..100).map(|i| format!("item {i}")).collect();
    let artifact = MemoryArtifact::new();
    f.write(Stream::new(items.clone()), &artifact).unwrap();
    let r = f.read(artifact.handle()).unwrap();
    assert_eq!(r.iter().collect::<Result<Vec<_>, _>>().unwrap(), items);
    let mut slot = String::new();
    r.get_into(42, &mut slot).unwrap();
    assert_eq!(slot, "item 42");
}

#[test]
fn bad_options_are_refused_before_writing() {
    let artifact = MemoryArtifact::new();
    let f = StreamFormat::<u8>::new().with_compression(Compression::Zstd { level: 99 });
    assert!(matches!(
        f.write(Stream::new(vec![1u8]), &artifact),
        Err(Error::Encode { .. })
    ));
    let f = StreamFormat::<u8>::new().with_chunk_size(0);
    assert!(matches!(
        f.write(Stream::new(vec![1u8]), &artifact),
        Err(Error::Encode { .. })
    ));
    assert!(artifact.snapshot().is_empty());
}

#[test]
fn golden_uncompressed_chunk() {
    let f = StreamFormat::<u8>::new().with_compression(Compression::None);
    let artifact = MemoryArtifact::new();
    f.write(Stream::new(vec![1u8, 2]), &artifact).unwrap();
    let name = "chunks/0000000000-00000000000000000000-0000000002";
    let bytes = artifact.file(name).unwrap();
    let mut expected: Vec<u8> = vec![
        0x4d, 0x4c, 0x47, 0x43, 1, 0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0,
        0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0,
    ];
    expected.extend_from_slice(b"postcard");
    expected.extend_from_slice(&[2, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 1, 1, 1, 2]);
    expected.extend_from_slice(blake3::hash(&expected).as_bytes());
    assert_eq!(bytes, expected);
    let end = artifact.file("end").unwrap();
    assert_eq!(&end[..8], &[0x4d, 0x4c, 0x47, 0x53, 1, 0, 0, 0]);
    assert_eq!(end.len(), 88 + 56);
}
