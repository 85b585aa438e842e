//! Verified byte ranges of stored objects: every range of any object reads back verified
//! through the object's outboard; a flipped bit fails every range that covers it; objects
//! without an outboard (written before outboards existed) get one on first use; a damaged
//! outboard is told apart from a damaged object.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fs;

use milonga::sdk::Error;
use milonga::store::{LocalStore, ObjectStore};
use milonga::ContentId;
use proptest::prelude::*;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect()
}

fn put(store: &LocalStore, bytes: &[u8]) -> (ContentId, u64) {
    let mut w = store.writer().unwrap();
    // Several writes, so that groups are split across calls.
    for piece in bytes.chunks(7001) {
        std::io::Write::write_all(&mut w, piece).unwrap();
    }
    w.commit().unwrap()
}

fn flip(store: &LocalStore, id: &ContentId, at: u64, bit: u8) {
    let path = store.object_path(id);
    let mut perms = fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&path, perms).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[at as usize] ^= 1 << bit;
    fs::write(&path, bytes).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_range_of_an_object_reads_back_verified(
        len in 0usize..300_000,
        ranges in proptest::collection::vec((0u64..300_001, 0u64..300_001), 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap().without_sync();
        let d = data(len, 9);
        let (id, n) = put(&store, &d);
        prop_assert_eq!(id, ContentId::of(&d));
        prop_assert_eq!(n, len as u64);
        let ob = fs::metadata(store.outboard_path(&id)).map(|m| m.len()).unwrap_or(0);
        prop_assert_eq!(ob, milonga::sdk::outboard::outboard_len(n));
        for (a, b) in ranges {
            let (s, e) = (a.min(b).min(n), a.max(b).min(n));
            let got = store.read_range(&id, n, s..e).unwrap();
            prop_assert_eq!(&got[..], &d[s as usize..e as usize]);
        }
        // Past the end: a typed error.
        let past = store.read_range(&id, n, n..n + 1);
        prop_assert!(matches!(past, Err(Error::OutOfRange { .. })), "{:?}", past.map(|v| v.len()));
    }

    #[test]
    fn a_flipped_bit_fails_every_range_read_that_covers_it(
        len in 1usize..200_000,
        at in 0usize..200_000,
        bit in 0u8..8,
        a in 0u64..200_001,
        b in 0u64..200_001,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap().without_sync();
        let d = data(len, 10);
        let (id, n) = put(&store, &d);
        let at = (at % len) as u64;
        let (s, e) = (a.min(b).min(n), a.max(b).min(n));
        flip(&store, &id, at, bit);
        let g = at / 16384;
        let covered = s < e && s / 16384 <= g && g <= (e - 1) / 16384;
        let got = store.read_range(&id, n, s..e);
        if covered {
            let Err(Error::ChecksumMismatch { file, .. }) = got else {
                return Err(TestCaseError::fail(format!("expected a mismatch, got {:?}", got.map(|v| v.len()))));
            };
            // The damaged object was moved aside, and the error says where.
            prop_assert!(file.contains("quarantine"), "{}", file);
            prop_assert!(!store.object_path(&id).exists());
        } else {
            prop_assert_eq!(&got.unwrap()[..], &d[s as usize..e as usize]);
        }
    }
}

#[test]
fn objects_without_an_outboard_get_one_on_first_range_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let d = data(1_000_000, 1);
    let (id, n) = put(&store, &d);
    let ob_path = store.outboard_path(&id);
    let outboard = fs::read(&ob_path).unwrap();
    fs::remove_file(&ob_path).unwrap();
    let got = store.read_range(&id, n, 500_000..500_100).unwrap();
    assert_eq!(got, &d[500_000..500_100]);
    assert_eq!(
        fs::read(&ob_path).unwrap(),
        outboard,
        "rebuilt byte for byte"
    );
}

#[test]
fn a_damaged_outboard_is_rebuilt_and_the_object_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let d = data(400_000, 2);
    let (id, n) = put(&store, &d);
    let ob_path = store.outboard_path(&id);
    let good = fs::read(&ob_path).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40; // the root's right child
    fs::write(&ob_path, &bad).unwrap();
    let got = store.read_range(&id, n, 390_000..399_999).unwrap();
    assert_eq!(got, &d[390_000..399_999]);
    assert_eq!(fs::read(&ob_path).unwrap(), good);
    assert!(
        store.object_path(&id).exists(),
        "a good object is never quarantined"
    );
    // A truncated outboard too (seen by a new store: this one keeps the object open).
    fs::write(&ob_path, &good[..good.len() - 64]).unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.read_range(&id, n, 0..10).unwrap(), &d[..10]);
    assert_eq!(fs::read(&ob_path).unwrap(), good);
}

#[test]
fn verify_builds_missing_outboards() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let d = data(100_000, 3);
    let (id, n) = put(&store, &d);
    let ob_path = store.outboard_path(&id);
    fs::remove_file(&ob_path).unwrap();
    assert_eq!(store.verify_object(&id, Some(n)).unwrap(), n);
    assert_eq!(
        fs::metadata(&ob_path).unwrap().len(),
        milonga::sdk::outboard::outboard_len(n)
    );
}

#[test]
fn gc_removes_outboards_with_objects_and_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let ws = milonga::Workspace::open(dir.path()).unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let (id, _) = put(&store, &data(100_000, 4));
    let ob_path = store.outboard_path(&id);
    assert!(ob_path.exists());
    // An orphan outboard: its object is gone.
    let (id2, _) = put(&store, &data(100_000, 5));
    fs::remove_file(store.object_path(&id2)).unwrap();
    let r = ws.gc(std::time::Duration::ZERO).unwrap();
    assert_eq!(r.removed_objects, 1);
    assert!(!ob_path.exists());
    assert!(!store.outboard_path(&id2).exists());
}

#[test]
fn damage_after_a_read_is_found_by_the_next_read_of_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let d = data(300_000, 6);
    let (id, n) = put(&store, &d);
    // The store keeps the object open after this read.
    assert_eq!(
        store.read_range(&id, n, 200_000..200_010).unwrap(),
        &d[200_000..200_010]
    );
    flip(&store, &id, 200_005, 3);
    let got = store.read_range(&id, n, 200_000..200_010);
    assert!(
        matches!(got, Err(Error::ChecksumMismatch { .. })),
        "{:?}",
        got.map(|v| v.len())
    );
    assert!(!store.object_path(&id).exists(), "quarantined");
}

#[test]
fn an_object_cut_short_after_a_read_is_a_typed_error_on_the_next_range_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let d = data(300_000, 7);
    let (id, n) = put(&store, &d);
    // The store keeps the object open after this read; the cut below shortens that same file.
    assert_eq!(
        store.read_range(&id, n, 100_000..250_000).unwrap(),
        &d[100_000..250_000]
    );
    let path = store.object_path(&id);
    let mut perms = fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&path, perms).unwrap();
    fs::write(&path, &d[..120_000]).unwrap();
    let got = store.read_range(&id, n, 100_000..250_000);
    match &got {
        Err(Error::Corrupt { file, .. }) | Err(Error::ChecksumMismatch { file, .. }) => {
            assert!(file.contains(&id.to_hex()), "{file}")
        }
        other => panic!("{:?}", other.as_ref().map(Vec::len)),
    }
    // A range the shortened file still holds is refused too: the length is wrong.
    assert!(store.read_range(&id, n, 0..10).is_err());
}
