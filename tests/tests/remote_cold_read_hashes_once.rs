//! A cold read of a remote object hashes the downloaded bytes once: the download is hashed as
//! it goes into the read-through cache, and the read hands out that verified mapping instead of
//! mapping and hashing the cached file again. Later reads still verify the cached file, and a
//! cached file replaced behind the store's back is caught. Against the project's local
//! SeaweedFS server (`eval "$(scripts/s3-server.sh start)"`):
//! `cargo test -p milonga-tests --all-features --test remote_cold_read_hashes_once`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::path::Path;

use milonga::remote::{ReadCache, Remote, RemoteStore};
use milonga::store::ObjectStore;
use milonga::ContentId;
use milonga_tests::s3::{fresh_url, pseudo_random_bytes as data};

fn store_at(url: &str, cache: &Path) -> RemoteStore {
    RemoteStore::new(
        Remote::from_url(url).unwrap(),
        ReadCache::open(cache, 1 << 30).unwrap(),
    )
}

/// Uploads `bytes` through a store of its own (its cache is not the reader's).
fn upload(url: &str, bytes: &[u8]) -> ContentId {
    let cache = tempfile::tempdir().unwrap();
    let writer = store_at(url, cache.path());
    let mut w = writer.writer().unwrap();
    w.write_all(bytes).unwrap();
    let (id, len) = w.commit().unwrap();
    assert_eq!((id, len), (ContentId::of(bytes), bytes.len() as u64));
    id
}

#[test]
fn a_cold_bytes_read_hashes_the_download_once() {
    let url = fresh_url("hash-once");
    let objects: Vec<Vec<u8>> = [0usize, 5_000, 300_000, 3 << 20]
        .iter()
        .enumerate()
        .map(|(i, &n)| data(n, 40 + i as u64))
        .collect();
    let ids: Vec<ContentId> = objects.iter().map(|b| upload(&url, b)).collect();
    let cache = tempfile::tempdir().unwrap();
    let reader = store_at(&url, cache.path());
    let hashed = || reader.cache().store().objects_hashed();
    for (id, bytes) in ids.iter().zip(&objects) {
        let len = bytes.len() as u64;
        assert!(!reader.cache().contains(id));
        let before = hashed();
        let got = reader.bytes(id, Some(len)).unwrap();
        assert_eq!((*got).as_ref(), &bytes[..]);
        assert_eq!(
            hashed() - before,
            1,
            "a cold read of {len} bytes hashed the object more than once"
        );
        assert!(reader.cache().contains(id));
        // A later read maps the cached file and verifies it: once.
        let before = hashed();
        assert_eq!((*reader.bytes(id, Some(len)).unwrap()).as_ref(), &bytes[..]);
        assert_eq!(hashed() - before, 1, "a warm read of {len} bytes");
    }
}

#[test]
fn a_cold_verified_path_hashes_the_download_once_and_a_replaced_file_is_hashed_again() {
    let url = fresh_url("hash-once-path");
    let bytes = data(200_000, 7);
    let id = upload(&url, &bytes);
    let len = bytes.len() as u64;
    let cache = tempfile::tempdir().unwrap();
    let reader = store_at(&url, cache.path());
    let hashed = || reader.cache().store().objects_hashed();

    let before = hashed();
    let path = reader.verified_path(&id, len).unwrap().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(hashed() - before, 1, "a cold verified_path");
    // The same file again: known verified in this process.
    let before = hashed();
    assert_eq!(reader.verified_path(&id, len).unwrap().unwrap(), path);
    assert_eq!(hashed() - before, 0, "the same file, verified already");

    // Replaced behind the store's back by another file of the same length: hashed again,
    // found damaged, downloaded again.
    let mut other = bytes.clone();
    other[100_000] ^= 1;
    let swap = cache.path().join("swap");
    std::fs::write(&swap, &other).unwrap();
    std::fs::rename(&swap, &path).unwrap();
    let before = hashed();
    let again = reader.verified_path(&id, len).unwrap().unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), bytes);
    assert!(
        hashed() - before >= 2,
        "the replaced file and the new download are both hashed"
    );
    // And `bytes` of a replaced file too.
    std::fs::write(&swap, &other).unwrap();
    std::fs::rename(&swap, &again).unwrap();
    assert_eq!(
        (*reader.bytes(&id, Some(len)).unwrap()).as_ref(),
        &bytes[..]
    );
}
