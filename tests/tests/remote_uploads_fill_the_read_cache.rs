//! An object this process uploaded is in its read-through cache at once (the staged file moved
//! there, not copied), so reading it needs no download; the cache's cap still holds. Against
//! the project's local SeaweedFS server (`eval "$(scripts/s3-server.sh start)"`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::path::Path;

use milonga::remote::{ReadCache, Remote, RemoteStore};
use milonga::sdk::Error as SdkError;
use milonga::store::ObjectStore;
use milonga::ContentId;
use milonga_tests::s3::{fresh_url, pseudo_random_bytes as data};

fn store_at(url: &str, cache: &Path, cap: u64) -> RemoteStore {
    RemoteStore::new(
        Remote::from_url(url).unwrap(),
        ReadCache::open(cache, cap).unwrap(),
    )
}

/// A store on the same location and cache directory whose server never answers: anything it
/// reads comes from the cache.
fn unreachable_store(url: &str, cache: &Path, cap: u64) -> RemoteStore {
    let remote = Remote::from_url_unchecked(&format!(
        "{url}?endpoint=http://127.0.0.1:9&allow_http=true&retry_timeout=0&max_retries=0"
    ))
    .unwrap();
    RemoteStore::new(remote, ReadCache::open(cache, cap).unwrap())
}

fn put(store: &RemoteStore, bytes: &[u8]) -> ContentId {
    let mut w = store.writer().unwrap();
    for piece in bytes.chunks(64 * 1024) {
        w.write_all(piece).unwrap();
    }
    let (id, len) = w.commit().unwrap();
    assert_eq!((id, len), (ContentId::of(bytes), bytes.len() as u64));
    id
}

/// The files in the cache's staging folder.
fn staging_files(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("tmp")).map_or(0, |d| d.count())
}

#[test]
fn a_committed_object_is_read_from_the_cache_without_the_server() {
    let url = fresh_url("adopt");
    let cache = tempfile::tempdir().unwrap();
    // Multipart settings too, so that both ways up are covered.
    let store = store_at(
        &format!("{url}?multipart_threshold=6291456&part_size=5242880"),
        cache.path(),
        1 << 30,
    );
    let objects: Vec<(ContentId, Vec<u8>)> = [0usize, 1000, 300_000, 7 << 20]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let b = data(n, 1 + i as u64);
            (put(&store, &b), b)
        })
        .collect();
    // A local file ingested (same file system as the cache) is moved in as well.
    let file = cache.path().join("ingest-me");
    let ingested = data(70_000, 9);
    std::fs::write(&file, &ingested).unwrap();
    let (id, len) = store.ingest(&file).unwrap();
    assert_eq!((id, len), (ContentId::of(&ingested), 70_000));
    assert!(!file.exists());
    let mut all = objects.clone();
    all.push((id, ingested));
    // Moved, not copied: no staging file is left behind.
    assert_eq!(staging_files(cache.path()), 0);

    let offline = unreachable_store(&url, cache.path(), 1 << 30);
    // It really cannot reach the server: an object that is not cached is an error.
    let absent = ContentId::of(b"never uploaded");
    let err = offline.bytes(&absent, Some(14)).map(|_| ()).unwrap_err();
    assert!(matches!(err, SdkError::Remote { .. }), "{err}");
    for (id, bytes) in &all {
        let len = bytes.len() as u64;
        assert!(offline.cache().contains(id), "{id} is not cached");
        assert_eq!(
            (*offline.bytes(id, Some(len)).unwrap()).as_ref(),
            &bytes[..]
        );
        let mut back = Vec::new();
        offline
            .open(id, Some(len))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(&back, bytes);
        if len > 10 {
            assert_eq!(
                offline.read_range(id, len, 3..10).unwrap(),
                bytes[3..10],
                "{id}"
            );
        }
    }
}

#[test]
fn uploads_into_the_cache_keep_it_under_its_cap() {
    let url = fresh_url("adopt-cap");
    let cache = tempfile::tempdir().unwrap();
    // Room for three objects (64 KiB and a 192-byte outboard each), not four.
    let cap = 3 * (64 * 1024 + 192) + 1000;
    let store = store_at(&url, cache.path(), cap);
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(put(&store, &data(64 * 1024, 100 + i)));
        let size = store.cache().size().unwrap();
        assert!(
            size <= cap,
            "after {} uploads the cache holds {size} > {cap}",
            i + 1
        );
    }
    let cached: Vec<bool> = ids.iter().map(|id| store.cache().contains(id)).collect();
    assert_eq!(cached, [false, false, false, true, true, true]);
    // An object larger than the whole cap is uploaded but not cached (it would evict
    // everything), and evicts nothing.
    let big = data(300_000, 7);
    let big_id = put(&store, &big);
    assert!(!store.cache().contains(&big_id));
    assert!(store.cache().size().unwrap() <= cap);
    assert_eq!(staging_files(cache.path()), 0);
    let cached: Vec<bool> = ids.iter().map(|id| store.cache().contains(id)).collect();
    assert_eq!(cached, [false, false, false, true, true, true]);
    // Evicted objects are still on the server.
    let elsewhere = tempfile::tempdir().unwrap();
    let reader = store_at(&url, elsewhere.path(), 1 << 30);
    assert!(reader.contains(&ids[0]));
    assert_eq!(
        (*reader.bytes(&big_id, Some(300_000)).unwrap()).as_ref(),
        &big[..]
    );
}
