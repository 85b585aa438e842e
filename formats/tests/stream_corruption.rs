//! Truncated, corrupted, missing, reordered and inconsistent stream files: every one is a typed
//! error that names the chunk file (whose name carries its first item) or the end record.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use milonga_formats::chunked::raw::{ChunkInfo, EndRecord};
use milonga_formats::chunked::IndexEntry;
use milonga_formats::{JsonCodec, Stream, StreamFormat};
use milonga_sdk::{
    ArtifactReader, ContentId, Error, FileEntry, Format, MemoryArtifact, ReadSeek, Result,
    SharedBytes,
};

fn format() -> StreamFormat<String> {
    StreamFormat::new()
        .with_chunk_size(2000)
        .with_block_size(300)
}

fn items() -> Vec<String> {
    (0..1000)
        .map(|i| format!("item number {i} {}", "x".repeat(i % 17)))
        .collect()
}

/// A written stream with several chunks.
fn written() -> MemoryArtifact {
    let artifact = MemoryArtifact::new();
    format().write(Stream::new(items()), &artifact).unwrap();
    artifact
}

fn chunk_names(a: &MemoryArtifact) -> Vec<String> {
    a.snapshot()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("chunks/"))
        .collect()
}

/// Rewrites the end record so that it agrees with the (tampered) chunk files: only the chunks'
/// own checks can then find the problem.
fn reseal_end(a: &MemoryArtifact) {
    let mut end = EndRecord::decode(&a.file("end").unwrap(), "end").unwrap();
    for (c, name) in end.chunks.iter_mut().zip(chunk_names(a)) {
        let bytes = a.file(&name).unwrap();
        c.len = bytes.len() as u64;
        c.id = ContentId::of(&bytes);
    }
    a.set_file("end", EndRecord::new(end.chunks).encode());
}

/// Reads everything: open, then every item in order, then every item by index.
fn read_all(handle: milonga_sdk::ArtifactHandle) -> Result<()> {
    let r = format().read(handle)?;
    for item in r.iter() {
        item?;
    }
    for i in 0..r.len()? {
        r.get(i)?;
    }
    Ok(())
}

/// Hides some files of a `MemoryArtifact`, as a backend that lost them would.
struct Hiding {
    inner: MemoryArtifact,
    hidden: BTreeSet<String>,
}

impl ArtifactReader for Hiding {
    fn describe(&self) -> String {
        "artifact with missing files".into()
    }
    fn files(&self) -> Vec<FileEntry> {
        let mut f = self.inner.files();
        f.retain(|e| !self.hidden.contains(&e.name));
        f
    }
    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>> {
        self.inner.open(name)
    }
    fn bytes(&self, name: &str) -> Result<SharedBytes> {
        if self.hidden.contains(name) {
            return Err(Error::MissingFile { file: name.into() });
        }
        self.inner.bytes(name)
    }
    fn local_path(&self, name: &str) -> Result<Option<PathBuf>> {
        self.inner.local_path(name)
    }
}

#[test]
fn intact_stream_reads() {
    let a = written();
    assert!(chunk_names(&a).len() >= 5);
    read_all(a.handle()).unwrap();
}

#[test]
fn every_truncation_of_a_chunk_is_refused_with_its_offset() {
    let a = written();
    let name = &chunk_names(&a)[1];
    let bytes = a.file(name).unwrap();
    for cut in 0..bytes.len() {
        match ChunkInfo::parse(&bytes[..cut], name) {
            Err(Error::Corrupt { file, offset, .. }) => {
                assert_eq!(&file, name);
                assert_eq!(offset, cut as u64, "a cut file is corrupt at its end");
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // Through the format: the listing changed (as a backend without verification reports it)
    // so the end record no longer matches the chunk.
    a.set_file(name, bytes[..bytes.len() - 7].to_vec());
    let err = read_all(a.handle()).unwrap_err();
    assert!(
        matches!(&err, Error::ChecksumMismatch { file, .. } if file.starts_with(name.as_str()) && file.contains("items 82..")),
        "{err}"
    );
    // With the end record resealed to match, the chunk's own framing refuses it.
    reseal_end(&a);
    let err = read_all(a.handle()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file, .. } if file == name),
        "{err}"
    );
}

#[test]
fn every_flipped_byte_of_a_chunk_is_detected() {
    let a = written();
    let name = &chunk_names(&a)[2];
    let bytes = a.file(name).unwrap();
    for at in 0..bytes.len() {
        let mut b = bytes.clone();
        b[at] ^= 0x20;
        let r = ChunkInfo::parse(&b, name);
        assert!(
            matches!(
                r,
                Err(Error::Corrupt { .. }
                    | Error::ChecksumMismatch { .. }
                    | Error::UnsupportedVersion { .. })
            ),
            "flip at {at}: {r:?}"
        );
    }
    // Through the format, with a consistent end record: the checksum names the chunk.
    let mut b = bytes.clone();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    a.set_file(name, b);
    reseal_end(&a);
    let err = read_all(a.handle()).unwrap_err();
    assert!(
        matches!(&err, Error::ChecksumMismatch { file, .. } if file == name),
        "{err}"
    );
}

#[test]
fn a_missing_chunk_file_is_named_with_its_items() {
    let a = written();
    let names = chunk_names(&a);
    for victim in [&names[0], &names[3], names.last().unwrap()] {
        let h = Hiding {
            inner: a.clone(),
            hidden: [victim.clone()].into(),
        };
        let err = read_all(Arc::new(h)).unwrap_err();
        assert!(
            matches!(&err, Error::MissingFile { file } if file.starts_with(victim.as_str()) && file.contains("items ")),
            "{err}"
        );
    }
}

#[test]
fn a_missing_end_record_is_truncation_not_a_shorter_stream() {
    let a = written();
    let names = chunk_names(&a);
    // Without its end record, and also without its last chunks: never a valid shorter stream.
    for hidden in [
        vec!["end".to_owned()],
        vec!["end".to_owned(), names.last().unwrap().clone()],
    ] {
        let h = Hiding {
            inner: a.clone(),
            hidden: hidden.into_iter().collect(),
        };
        let err = read_all(Arc::new(h)).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { file, reason, .. } if file == "end" && reason.contains("truncated")),
            "{err}"
        );
    }
}

#[test]
fn an_end_record_that_disagrees_with_the_chunks_is_refused() {
    let a = written();
    let good = a.file("end").unwrap();
    let end = EndRecord::decode(&good, "end").unwrap();

    // A different item count (re-checksummed): inconsistent with its own index.
    let mut bytes = end.encode();
    bytes[8..16].copy_from_slice(&(end.item_count + 1).to_le_bytes());
    let n = bytes.len();
    let sum = blake3::hash(&bytes[..n - 32]);
    bytes[n - 32..].copy_from_slice(sum.as_bytes());
    a.set_file("end", bytes);
    let err = read_all(a.handle()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file, offset: 8, .. } if file == "end"),
        "{err}"
    );

    // A different stream hash.
    let mut bytes = end.encode();
    bytes[24] ^= 1;
    let sum = blake3::hash(&bytes[..n - 32]);
    bytes[n - 32..].copy_from_slice(sum.as_bytes());
    a.set_file("end", bytes);
    let err = read_all(a.handle()).unwrap_err();
    assert!(
        matches!(&err, Error::ChecksumMismatch { file, .. } if file.starts_with("end")),
        "{err}"
    );

    // An index that leaves out the last chunk: the stray chunk file is reported.
    let mut short = end.chunks.clone();
    short.pop();
    a.set_file("end", EndRecord::new(short).encode());
    let err = read_all(a.handle()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file, reason, .. } if file == "end" && reason.contains("not in the end record")),
        "{err}"
    );

    // An index whose entry points at another file.
    let mut other = end.chunks.clone();
    other[1].id = ContentId([7; 32]);
    a.set_file("end", EndRecord::new(other).encode());
    let err = read_all(a.handle()).unwrap_err();
    assert!(
        matches!(&err, Error::ChecksumMismatch { file, .. } if file.contains("chunk 1")),
        "{err}"
    );

    // Every truncation and flipped byte of the end record itself.
    for cut in 0..good.len() {
        assert!(EndRecord::decode(&good[..cut], "end").is_err());
    }
    for at in 0..good.len() {
        let mut b = good.clone();
        b[at] ^= 4;
        assert!(EndRecord::decode(&b, "end").is_err(), "flip at {at}");
    }
}

#[test]
fn chunks_out_of_order_are_refused_with_their_items() {
    let a = written();
    let names = chunk_names(&a);
    let (one, two) = (a.file(&names[1]).unwrap(), a.file(&names[2]).unwrap());
    a.set_file(&names[1], two);
    a.set_file(&names[2], one);
    reseal_end(&a);
    let err = read_all(a.handle()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file, reason, .. } if file == &names[1] && reason.contains("out of place")),
        "{err}"
    );
    // Random access to the swapped chunk reports the same.
    let r = format().read(a.handle()).unwrap();
    let first_of_two: u64 = names[2].split('-').nth(1).unwrap().parse().unwrap();
    assert!(matches!(r.get(first_of_two), Err(Error::Corrupt { .. })));
}

#[test]
fn a_newer_layout_version_is_unsupported_not_corrupt() {
    let a = written();
    let name = &chunk_names(&a)[0];
    let mut b = a.file(name).unwrap();
    b[4] = 2;
    let n = b.len();
    let sum = blake3::hash(&b[..n - 32]);
    b[n - 32..].copy_from_slice(sum.as_bytes());
    assert!(matches!(
        ChunkInfo::parse(&b, name),
        Err(Error::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        })
    ));
    let mut e = a.file("end").unwrap();
    e[4] = 9;
    assert!(matches!(
        EndRecord::decode(&e, "end"),
        Err(Error::UnsupportedVersion { found: 9, .. })
    ));
}

#[test]
fn reading_with_another_codec_is_wrong_format() {
    let a = written();
    let r = StreamFormat::<String, _>::with_codec(JsonCodec)
        .read(a.handle())
        .unwrap();
    assert!(matches!(r.get(0), Err(Error::WrongFormat { .. })));
    assert!(matches!(
        r.iter().next(),
        Some(Err(Error::WrongFormat { .. }))
    ));
}

#[test]
fn a_lying_length_field_is_refused_before_allocating() {
    let a = written();
    let name = &chunk_names(&a)[0];
    let mut b = a.file(name).unwrap();
    // Uncompressed length claims 1 TiB.
    b[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(
        ChunkInfo::parse(&b, name),
        Err(Error::Corrupt { offset: 24, .. })
    ));
    // An end record claiming 2^60 chunks.
    let mut e = a.file("end").unwrap();
    e[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(
        EndRecord::decode(&e, "end"),
        Err(Error::Corrupt { .. })
    ));
    let _ = IndexEntry {
        first_item: 0,
        item_count: 1,
        len: 0,
        id: ContentId([0; 32]),
    };
}

mod never_panics {
    use super::*;
    use milonga_formats::chunked::raw::Decompressor;
    use proptest::prelude::*;

    /// Parses `bytes` as a chunk and, if it passes, decompresses and walks its items.
    fn decode_everything(bytes: &[u8]) {
        if let Ok(info) = ChunkInfo::parse(bytes, "c") {
            let mut out = Vec::new();
            if info
                .decompress_all(bytes, "c", &mut out, &mut Decompressor::new())
                .is_ok()
            {
                let mut items =
                    milonga_formats::chunked::Items::new(&out, u64::from(info.item_count));
                while let Ok(Some(_)) = items.next_item() {}
            }
        }
        let _ = EndRecord::decode(bytes, "end");
    }

    proptest! {
        #[test]
        fn any_bytes_are_an_error_or_a_value(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            decode_everything(&bytes);
        }

        #[test]
        fn mutated_chunks_are_an_error_or_a_value(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            reseal in any::<bool>(),
        ) {
            let a = written();
            let name = chunk_names(&a)[0].clone();
            let mut b = a.file(&name).unwrap();
            for (at, v) in flips {
                let i = at.index(b.len());
                b[i] = v;
            }
            if reseal {
                // A valid checksum over the damage: only the structural checks remain.
                let n = b.len();
                let sum = blake3::hash(&b[..n - 32]);
                b[n - 32..].copy_from_slice(sum.as_bytes());
            }
            decode_everything(&b);
        }
    }
}
