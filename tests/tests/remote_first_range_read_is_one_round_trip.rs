//! The first range read of a remote object (a stream's `get(i)` reading a chunk's header)
//! fetches the object's outboard and the groups that cover the range at the same time: one
//! round trip, not two one after the other; later ranges of the object are one request each.
//! The bytes are verified all the same. Against the project's local SeaweedFS server
//! (`eval "$(scripts/s3-server.sh start)"`):
//! `cargo test -p milonga-tests --all-features --test remote_first_range_read_is_one_round_trip`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;

use milonga::remote::{ReadCache, ReadRequests, Remote, RemoteStore};
use milonga::sdk::Error as SdkError;
use milonga::store::ObjectStore;
use milonga::ContentId;
use milonga_tests::s3::{fresh_url, pseudo_random_bytes as data};

fn store_at(url: &str) -> (RemoteStore, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let store = RemoteStore::new(
        Remote::from_url(url).unwrap(),
        ReadCache::open(cache.path(), 1 << 30).unwrap(),
    );
    (store, cache)
}

fn delta(after: ReadRequests, before: ReadRequests) -> (u64, u64) {
    (
        after.requests - before.requests,
        after.round_trips - before.round_trips,
    )
}

#[test]
fn the_first_range_read_fetches_the_outboard_and_the_groups_together() {
    let url = fresh_url("one-round-trip");
    let bytes = data(1 << 20, 11);
    let len = bytes.len() as u64;
    let id = {
        let (writer, _cache) = store_at(&url);
        let mut w = writer.writer().unwrap();
        w.write_all(&bytes).unwrap();
        w.commit().unwrap().0
    };
    let (reader, _cache) = store_at(&url);
    // A header-like read (the first 16 KiB group), then a block further on.
    let before = reader.read_requests();
    assert_eq!(
        reader.read_range(&id, len, 0..16 * 1024).unwrap(),
        bytes[..16 * 1024]
    );
    assert_eq!(
        delta(reader.read_requests(), before),
        (2, 1),
        "(requests, round trips) of the first range read"
    );
    let before = reader.read_requests();
    assert_eq!(
        reader.read_range(&id, len, 500_000..520_000).unwrap(),
        bytes[500_000..520_000]
    );
    assert_eq!(delta(reader.read_requests(), before), (1, 1));
    // Nothing was downloaded whole.
    assert!(!reader.cache().contains(&id));
}

#[test]
fn a_first_range_read_still_refuses_damaged_bytes() {
    let url = fresh_url("one-round-trip-damaged");
    let bytes = data(300_000, 12);
    let len = bytes.len() as u64;
    let (writer, _cache) = store_at(&url);
    let id = {
        let mut w = writer.writer().unwrap();
        w.write_all(&bytes).unwrap();
        w.commit().unwrap().0
    };
    // The object replaced on the server by other bytes of the same length.
    let mut bad = bytes.clone();
    bad[20_000] ^= 0x40;
    let key = RemoteStore::object_key(&id);
    writer.remote().put(&key, bad).unwrap();
    let (reader, _cache) = store_at(&url);
    let err = reader.read_range(&id, len, 16_384..32_768).unwrap_err();
    assert!(
        matches!(err, SdkError::ChecksumMismatch { .. }),
        "damaged bytes were not refused: {err}"
    );
    assert!(err.to_string().contains(&id.to_hex()), "{err}");
    // An undamaged range of an absent object is an error naming it too.
    let absent = ContentId::of(b"never stored");
    let (other, _c) = store_at(&url);
    let err = other.read_range(&absent, 100_000, 0..10).unwrap_err();
    assert!(matches!(err, SdkError::MissingObject { .. }), "{err}");
}
