//! Regressions found in review: ranges at every block and chunk boundary, multi-segment chunks,
//! resealed damage through every read path, concurrent followers with listings of different
//! ages, the read-ahead thread of a dropped follower, and errors that name the chunk file and the
//! item that is actually broken.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use milonga_formats::chunked::raw::EndRecord;
use milonga_formats::chunked::Compression;
use milonga_formats::{Stream, StreamFormat};
use milonga_sdk::{
    ArtifactReader, ArtifactStatus, ContentId, Error, FileEntry, Format, MemoryArtifact, ReadSeek,
    SharedBytes,
};
use proptest::prelude::*;

fn fmt(chunk: usize, block: usize, c: Compression) -> StreamFormat<Vec<u8>> {
    StreamFormat::new()
        .with_chunk_size(chunk)
        .with_block_size(block)
        .with_compression(c)
        .with_workers(2)
}

fn chunk_names(a: &MemoryArtifact) -> Vec<String> {
    a.snapshot()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("chunks/"))
        .collect()
}

fn reseal_end(a: &MemoryArtifact) {
    let mut end = EndRecord::decode(&a.file("end").unwrap(), "end").unwrap();
    for (c, name) in end.chunks.iter_mut().zip(chunk_names(a)) {
        let bytes = a.file(&name).unwrap();
        c.len = bytes.len() as u64;
        c.id = ContentId::of(&bytes);
    }
    a.set_file("end", EndRecord::new(end.chunks).encode());
}

#[test]
fn every_range_at_every_boundary() {
    for c in [Compression::None, Compression::Zstd { level: 1 }] {
        let items: Vec<Vec<u8>> = (0..60u8).map(|i| vec![i; (i % 7) as usize]).collect();
        let f = fmt(40, 9, c);
        let a = MemoryArtifact::new();
        f.write(Stream::new(items.clone()), &a).unwrap();
        let r = f.read(a.handle()).unwrap();
        let n = items.len() as u64;
        for s in 0..=n {
            for e in s..=n {
                let got: Vec<Vec<u8>> = r.range(s..e).collect::<Result<_, _>>().unwrap();
                assert_eq!(&got[..], &items[s as usize..e as usize], "{s}..{e}");
            }
        }
    }
}

#[test]
fn multi_segment_chunks() {
    let items: Vec<Vec<u8>> = (0..3000u32).map(|i| vec![(i % 251) as u8; 1000]).collect();
    let f = fmt(2 << 20, 16 << 10, Compression::Zstd { level: 1 });
    let a = MemoryArtifact::new();
    f.write(Stream::new(items.clone()), &a).unwrap();
    let r = f.read(a.handle()).unwrap();
    let n = items.len() as u64;
    for s in [
        0u64, 1, 15, 16, 17, 255, 256, 257, 270, 2000, 2096, 2097, 2999,
    ] {
        let got: Vec<Vec<u8>> = r.range(s..n).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len() as u64, n - s);
        assert!(got == items[s as usize..], "{s}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn resealed_damage_never_panics_the_reader(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        which in any::<prop::sample::Index>(),
        zstd in any::<bool>(),
    ) {
        let c = if zstd { Compression::Zstd { level: 1 } } else { Compression::None };
        let items: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; (i % 13) as usize]).collect();
        let f = fmt(300, 50, c);
        let a = MemoryArtifact::new();
        f.write(Stream::new(items), &a).unwrap();
        let names = chunk_names(&a);
        let name = &names[which.index(names.len())];
        let mut b = a.file(name).unwrap();
        for (at, v) in flips {
            let i = at.index(b.len());
            b[i] = v;
        }
        let n = b.len();
        let sum = blake3::hash(&b[..n - 32]);
        b[n - 32..].copy_from_slice(sum.as_bytes());
        a.set_file(name, b);
        reseal_end(&a);
        if let Ok(r) = f.read(a.handle()) {
            for it in r.iter() { if it.is_err() { break; } }
            for i in 0..210 { let _ = r.get(i); }
            for s in [0u64, 7, 33, 100, 150] {
                for it in r.range(s..s + 40) { if it.is_err() { break; } }
            }
        }
    }
}

/// Writing until `done`; its listing is taken, then returned after a pause (as a slow backend
/// query would), so that concurrent readers see snapshots of different ages.
#[derive(Clone, Default)]
struct Slow {
    inner: MemoryArtifact,
    done: Arc<AtomicBool>,
}

impl ArtifactReader for Slow {
    fn describe(&self) -> String {
        "slow followed artifact".into()
    }
    fn files(&self) -> Vec<FileEntry> {
        let f = self.inner.files();
        std::thread::sleep(Duration::from_millis(2));
        f
    }
    fn open(&self, name: &str) -> milonga_sdk::Result<Box<dyn ReadSeek>> {
        self.inner.open(name)
    }
    fn bytes(&self, name: &str) -> milonga_sdk::Result<SharedBytes> {
        self.inner.bytes(name)
    }
    fn local_path(&self, name: &str) -> milonga_sdk::Result<Option<PathBuf>> {
        self.inner.local_path(name)
    }
    fn status(&self) -> ArtifactStatus {
        if self.done.load(Ordering::SeqCst) {
            ArtifactStatus::Complete
        } else {
            ArtifactStatus::Writing
        }
    }
    fn wait_for_change(&self, known: usize, timeout: Duration) -> milonga_sdk::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.inner.files().len() <= known
            && self.status() == ArtifactStatus::Writing
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }
}

fn u64_format() -> StreamFormat<u64> {
    StreamFormat::new().with_chunk_size(60).with_block_size(20)
}

#[test]
fn concurrent_followers_with_stale_listings_agree() {
    let art = Slow::default();
    let n = 3000u64;
    let reader = u64_format().read(Arc::new(art.clone())).unwrap();
    let followers: Vec<_> = (0..4)
        .map(|k| {
            let reader = reader.clone();
            std::thread::spawn(move || -> milonga_sdk::Result<()> {
                if k % 2 == 0 {
                    let got: Vec<u64> = reader.iter().collect::<Result<_, _>>()?;
                    assert_eq!(got, (0..n).collect::<Vec<_>>());
                } else {
                    for i in (0..n).step_by(7) {
                        assert_eq!(reader.get(i)?, i);
                    }
                }
                Ok(())
            })
        })
        .collect();
    let slow = (0..n).inspect(|i| {
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_micros(300));
        }
    });
    u64_format().write(Stream::new(slow), &art.inner).unwrap();
    art.done.store(true, Ordering::SeqCst);
    for f in followers {
        f.join().unwrap().unwrap();
    }
}

#[test]
fn dropped_follower_releases_the_artifact() {
    let art = Slow::default();
    u64_format()
        .write(Stream::new(0..100u64), &art.inner)
        .unwrap();
    // The artifact never leaves `Writing`: the read-ahead thread waits for a chunk that never
    // comes, and must still stop once the iterator is dropped.
    let handle: milonga_sdk::ArtifactHandle = Arc::new(art.clone());
    let reader = u64_format().read(Arc::clone(&handle)).unwrap();
    let mut it = reader.iter();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    std::thread::sleep(Duration::from_millis(50));
    drop(it);
    drop(reader);
    let t = Instant::now();
    while Arc::strong_count(&handle) > 1 && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        Arc::strong_count(&handle),
        1,
        "the read-ahead thread still holds the artifact"
    );
}

/// One uncompressed chunk of one block of 10 items of 5 bytes each (length prefix 4, then
/// postcard's length 3 and three bytes); the length prefix of item 3 (payload byte 15) is made
/// to claim 127 bytes and the checksums are resealed.
fn broken_item_3() -> MemoryArtifact {
    let items: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 3]).collect();
    let f = fmt(1 << 20, 1 << 20, Compression::None);
    let a = MemoryArtifact::new();
    f.write(Stream::new(items), &a).unwrap();
    let name = chunk_names(&a)[0].clone();
    let mut b = a.file(&name).unwrap();
    let payload = 40 + "postcard".len() + 12;
    assert_eq!(b[payload + 15], 4);
    b[payload + 15] = 0x7f;
    let n = b.len();
    let sum = blake3::hash(&b[..n - 32]);
    b[n - 32..].copy_from_slice(sum.as_bytes());
    a.set_file(&name, b);
    reseal_end(&a);
    a
}

#[test]
fn a_broken_item_is_named_whichever_way_it_is_reached() {
    let a = broken_item_3();
    let r = fmt(1 << 20, 1 << 20, Compression::None)
        .read(a.handle())
        .unwrap();
    let from_start = r.iter().find_map(Result::err).unwrap().to_string();
    let skipped = r.range(7..10).find_map(Result::err).unwrap().to_string();
    let got = r.get(7).unwrap_err().to_string();
    for e in [&from_start, &skipped, &got] {
        assert!(e.contains("item 3") && e.contains("byte 15"), "{e}");
    }
}

#[test]
fn an_item_that_does_not_decode_names_its_chunk_file() {
    // Item 3 of an uncompressed stream of strings gets an invalid UTF-8 byte: the chunk's
    // structure is intact, only the codec refuses the item.
    let f: StreamFormat<String> = StreamFormat::new()
        .with_chunk_size(40)
        .with_block_size(1 << 20)
        .with_compression(Compression::None);
    let a = MemoryArtifact::new();
    let items: Vec<String> = (0..20).map(|i| format!("item{i:02}")).collect();
    f.write(Stream::new(items), &a).unwrap();
    let name = chunk_names(&a)[0].clone();
    let mut b = a.file(&name).unwrap();
    let at = b.windows(6).position(|w| w == b"item03").unwrap();
    b[at] = 0xff;
    let n = b.len();
    let sum = blake3::hash(&b[..n - 32]);
    b[n - 32..].copy_from_slice(sum.as_bytes());
    a.set_file(&name, b);
    reseal_end(&a);
    let r = f.read(a.handle()).unwrap();
    let errs = [
        r.get(3).unwrap_err(),
        r.iter().find_map(Result::err).unwrap(),
        r.range(2..5).find_map(Result::err).unwrap(),
    ];
    for e in errs {
        assert!(
            matches!(&e, Error::Decode { file, .. } if file.contains(&name) && file.contains("item 3")),
            "{e:?}"
        );
    }
}

#[test]
fn a_stored_length_past_2_pow_64_is_truncation_at_the_files_length() {
    let f = fmt(1 << 20, 64, Compression::Zstd { level: 1 });
    let a = MemoryArtifact::new();
    f.write(Stream::new(vec![vec![1u8; 10]; 20]), &a).unwrap();
    let name = chunk_names(&a)[0].clone();
    let mut b = a.file(&name).unwrap();
    // The header then describes a file longer than any: this one is shorter than it says.
    b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = milonga_formats::chunked::raw::ChunkInfo::parse(&b, &name).unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { offset, .. } if *offset == b.len() as u64),
        "{e:?}"
    );
}

/// Writing forever; counts listings.
#[derive(Clone, Default)]
struct Counting {
    inner: MemoryArtifact,
    listings: Arc<std::sync::atomic::AtomicUsize>,
}

impl ArtifactReader for Counting {
    fn describe(&self) -> String {
        "counting artifact".into()
    }
    fn files(&self) -> Vec<FileEntry> {
        self.listings.fetch_add(1, Ordering::SeqCst);
        self.inner.files()
    }
    fn open(&self, name: &str) -> milonga_sdk::Result<Box<dyn ReadSeek>> {
        self.inner.open(name)
    }
    fn bytes(&self, name: &str) -> milonga_sdk::Result<SharedBytes> {
        self.inner.bytes(name)
    }
    fn local_path(&self, name: &str) -> milonga_sdk::Result<Option<PathBuf>> {
        self.inner.local_path(name)
    }
    fn status(&self) -> ArtifactStatus {
        ArtifactStatus::Writing
    }
    fn wait_for_change(&self, _: usize, _: Duration) -> milonga_sdk::Result<()> {
        std::thread::sleep(Duration::from_millis(1));
        Ok(())
    }
}

#[test]
fn a_finished_range_stops_following_the_writer() {
    let art = Counting::default();
    u64_format()
        .write(Stream::new(0..100u64), &art.inner)
        .unwrap();
    let r = u64_format().read(Arc::new(art.clone())).unwrap();
    let mut it = r.range(0..10);
    let got: Vec<u64> = it.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(20));
    let before = art.listings.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    let after = art.listings.load(Ordering::SeqCst);
    // The iterator is finished but alive: its read-ahead must not keep polling the writer.
    assert_eq!(
        before, after,
        "the read-ahead thread still follows the writer"
    );
    drop(it);
}
