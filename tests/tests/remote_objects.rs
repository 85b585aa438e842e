//! Objects on S3-compatible storage, against the project's local SeaweedFS server
//! (`eval "$(scripts/s3-server.sh start)"`; without it these tests fail, saying so): the S3
//! client's conditional writes, the remote object store's round trips, verified ranges, damage,
//! the read-through cache's cap, clear errors, and a server restarted mid-upload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, RwLock};

use milonga::remote::{Created, ReadCache, Remote, RemoteStore, Updated};
use milonga::sdk::Error as SdkError;
use milonga::store::ObjectStore;
use milonga::ContentId;
use milonga_tests::s3::{
    bucket_url, fresh_url, pseudo_random_bytes as data, upload_across_a_restart,
};

/// The restart test takes it for writing: the others, whose requests it would interrupt, read.
static SERVER: RwLock<()> = RwLock::new(());

fn store_at(url: &str, cache: &std::path::Path, cap: u64) -> RemoteStore {
    RemoteStore::new(
        Remote::from_url(url).unwrap(),
        ReadCache::open(cache, cap).unwrap(),
    )
}

/// A store on `url` with a fresh cache directory of its own (removed when it is dropped).
struct Fresh {
    store: RemoteStore,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Fresh {
    type Target = RemoteStore;
    fn deref(&self) -> &RemoteStore {
        &self.store
    }
}

fn fresh_store(url: &str) -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    Fresh {
        store: store_at(url, dir.path(), 1 << 30),
        _dir: dir,
    }
}

fn put(store: &RemoteStore, bytes: &[u8]) -> ContentId {
    let mut w = store.writer().unwrap();
    // In pieces, as a stream writes.
    for piece in bytes.chunks(7_000) {
        w.write_all(piece).unwrap();
    }
    let (id, len) = w.commit().unwrap();
    assert_eq!(id, ContentId::of(bytes));
    assert_eq!(len, bytes.len() as u64);
    id
}

#[test]
fn the_suite_needs_the_server_environment() {
    // Run by the test below in a child process without the environment, where it must fail.
    assert!(bucket_url().starts_with("s3://"));
}

#[test]
fn without_the_server_environment_the_tests_fail_saying_how_to_start_it() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_suite_needs_the_server_environment",
            "--nocapture",
        ])
        .env_remove(milonga_tests::s3::TEST_S3_VAR)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("eval \"$(scripts/s3-server.sh start)\""),
        "{text}"
    );
}

#[test]
fn objects_round_trip_whole_and_in_verified_ranges() {
    let _s = SERVER.read().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let url = fresh_url("round-trip");
    let store = store_at(&url, cache.path(), 1 << 30);
    let sizes = [0usize, 1, 1000, 16 * 1024, 16 * 1024 + 1, 300_000];
    let mut ids = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let bytes = data(n, i as u64 + 1);
        let id = put(&store, &bytes);
        assert!(store.contains(&id));
        ids.push((id, bytes));
    }
    // A fresh store with an empty cache reads them from the server.
    let cache2 = tempfile::tempdir().unwrap();
    let fresh = store_at(&url, cache2.path(), 1 << 30);
    for (id, bytes) in &ids {
        let len = bytes.len() as u64;
        // Ranges straight from the remote, through the outboard, before anything is cached.
        for r in [
            0..0,
            0..1.min(len),
            len / 3..len / 2,
            len.saturating_sub(5)..len,
        ] {
            let got = fresh.read_range(id, len, r.clone()).unwrap();
            assert_eq!(got, bytes[r.start as usize..r.end as usize], "{id} {r:?}");
        }
        assert!(
            !fresh.cache().contains(id) || len <= 16 * 1024,
            "a range read of a large object must not download it whole"
        );
        let past = fresh.read_range(id, len, 0..len + 1).unwrap_err();
        assert!(matches!(past, SdkError::OutOfRange { .. }), "{past}");
        // Whole: downloaded into the cache, verified.
        assert_eq!((*fresh.bytes(id, Some(len)).unwrap()).as_ref(), &bytes[..]);
        assert!(fresh.cache().contains(id));
        let mut r = fresh.open(id, Some(len)).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(&back, bytes);
        let path = fresh.verified_path(id, len).unwrap().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), *bytes);
        assert_eq!(fresh.verify_object(id, Some(len)).unwrap(), len);
    }
    // Listing and removal.
    let mut want: Vec<ContentId> = ids.iter().map(|(id, _)| *id).collect();
    want.sort();
    want.dedup();
    assert_eq!(fresh.list().unwrap(), want);
    let (gone, bytes) = &ids[3];
    fresh.remove(gone).unwrap();
    assert!(!fresh.contains(gone));
    let err = fresh_store(&url)
        .bytes(gone, Some(bytes.len() as u64))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, SdkError::MissingObject { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    // Publishing existing content again is success (it is verified, not re-sent blindly).
    let (id, bytes) = &ids[5];
    assert_eq!(put(&store, bytes), *id);
    // A local file published as an object is consumed.
    let file = cache.path().join("ingest-me");
    let content = data(70_000, 77);
    std::fs::write(&file, &content).unwrap();
    let (id, len) = store.ingest(&file).unwrap();
    assert_eq!((id, len), (ContentId::of(&content), 70_000));
    assert!(!file.exists());
    assert_eq!(
        fresh.read_range(&id, len, 69_990..70_000).unwrap(),
        content[69_990..]
    );
}

#[test]
fn the_client_lists_in_pages_and_updates_only_the_version_it_read() {
    let _s = SERVER.read().unwrap();
    let remote = Remote::from_url(&fresh_url("client")).unwrap();
    assert!(remote.get("nothing").unwrap().is_none());
    assert!(remote.head("nothing").unwrap().is_none());
    let Created::Created(v1) = remote.put_if_absent("doc", &b"one"[..]).unwrap() else {
        panic!("the first create must win");
    };
    assert_eq!(
        remote.put_if_absent("doc", &b"two"[..]).unwrap(),
        Created::AlreadyExists
    );
    assert_eq!(&remote.get("doc").unwrap().unwrap().0[..], b"one");
    let Updated::Updated(v2) = remote.put_if_match("doc", &b"three"[..], &v1).unwrap() else {
        panic!("an update of the version read must win");
    };
    assert_ne!(v1, v2);
    // A writer still holding the old version loses.
    assert_eq!(
        remote.put_if_match("doc", &b"stale"[..], &v1).unwrap(),
        Updated::Conflict
    );
    assert_eq!(&remote.get("doc").unwrap().unwrap().0[..], b"three");
    assert_eq!(&remote.get_range("doc", 1..3).unwrap()[..], b"hr");
    // More keys than one page of a listing (1,000).
    let n = 1_050;
    let pool: Vec<_> = (0..8).collect();
    std::thread::scope(|s| {
        for t in &pool {
            let remote = remote.clone();
            s.spawn(move || {
                for i in (*t..n).step_by(8) {
                    remote.put(&format!("many/{i:05}"), vec![i as u8]).unwrap();
                }
            });
        }
    });
    let listed: Vec<String> = remote.list("many").map(|r| r.unwrap().key).collect();
    let want: Vec<String> = (0..n).map(|i| format!("many/{i:05}")).collect();
    assert_eq!(listed, want);
    remote.delete("doc").unwrap();
    remote.delete("doc").unwrap();
    assert!(remote.head("doc").unwrap().is_none());
}

#[test]
fn of_sixteen_concurrent_creators_exactly_one_wins() {
    let _s = SERVER.read().unwrap();
    let remote = Remote::from_url(&fresh_url("race")).unwrap();
    for round in 0..6 {
        // Even rounds: every racer writes the same bytes; odd rounds: each its own.
        let barrier = Arc::new(Barrier::new(16));
        let wins = AtomicUsize::new(0);
        let key = format!("k{round}");
        std::thread::scope(|s| {
            for t in 0..16u8 {
                let (remote, barrier, wins, key) = (remote.clone(), barrier.clone(), &wins, &key);
                s.spawn(move || {
                    let body = if round % 2 == 0 {
                        vec![7u8; 100]
                    } else {
                        vec![t; 100]
                    };
                    barrier.wait();
                    if let Created::Created(_) = remote.put_if_absent(key, body).unwrap() {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.load(Ordering::SeqCst), 1, "round {round}");
    }
    // Sixteen writers of the same object through the store all succeed, with one copy.
    let cache = tempfile::tempdir().unwrap();
    let url = fresh_url("race-store");
    let store = store_at(&url, cache.path(), 1 << 30);
    let bytes = data(100_000, 99);
    let barrier = Arc::new(Barrier::new(16));
    std::thread::scope(|s| {
        for _ in 0..16 {
            let (store, barrier, bytes) = (store.clone(), barrier.clone(), &bytes);
            s.spawn(move || {
                let mut w = store.writer().unwrap();
                w.write_all(bytes).unwrap();
                barrier.wait();
                assert_eq!(w.commit().unwrap().0, ContentId::of(bytes));
            });
        }
    });
    assert_eq!(store.list().unwrap(), vec![ContentId::of(&bytes)]);
    let fresh = fresh_store(&url);
    let id = ContentId::of(&bytes);
    assert_eq!(
        fresh.read_range(&id, 100_000, 50_000..50_010).unwrap(),
        bytes[50_000..50_010]
    );
}

#[test]
fn a_damaged_remote_object_is_a_checksum_mismatch_naming_its_url() {
    let _s = SERVER.read().unwrap();
    let url = fresh_url("damage");
    let writer = fresh_store(&url);
    let raw = Remote::from_url(&url).unwrap();
    for (n, whole) in [
        (200_000usize, true),
        (200_000, false),
        (500, true),
        (500, false),
    ] {
        let bytes = data(n, n as u64 + whole as u64);
        let id = put(&writer, &bytes);
        let key = RemoteStore::object_key(&id);
        // Overwrite the stored bytes behind the store's back: one bit, same length.
        let mut bad = bytes.clone();
        bad[n / 2] ^= 1;
        raw.put(&key, bad).unwrap();
        let reader = fresh_store(&url);
        let err = if whole {
            reader.bytes(&id, Some(n as u64)).map(|_| ()).unwrap_err()
        } else {
            let mid = n as u64 / 2;
            reader
                .read_range(&id, n as u64, mid..mid + 1)
                .map(|_| ())
                .unwrap_err()
        };
        let msg = err.to_string();
        assert!(matches!(err, SdkError::ChecksumMismatch { .. }), "{msg}");
        assert!(msg.contains(&format!("{url}/{key}")), "{msg}");
        // The damaged copy was moved aside: the next publish stores a good one.
        assert!(raw.head(&key).unwrap().is_none(), "{msg}");
        assert!(msg.contains("quarantine"), "{msg}");
        assert_eq!(put(&writer, &bytes), id);
        assert_eq!(
            (*reader.bytes(&id, Some(n as u64)).unwrap()).as_ref(),
            &bytes[..]
        );
    }
    // A damaged outboard is not a damaged object: the range is served, the outboard repaired.
    let bytes = data(100_000, 5);
    let id = put(&writer, &bytes);
    let ob_key = RemoteStore::outboard_key(&id);
    let mut ob = raw.get(&ob_key).unwrap().unwrap().0.to_vec();
    ob[3] ^= 0xff;
    raw.put(&ob_key, ob.clone()).unwrap();
    let reader = fresh_store(&url);
    assert_eq!(
        reader.read_range(&id, 100_000, 10..20).unwrap(),
        bytes[10..20]
    );
    assert_ne!(raw.get(&ob_key).unwrap().unwrap().0.to_vec(), ob);
    // A damaged cached copy is downloaded again, never trusted.
    let cached = reader.cache().store().object_path(&id);
    let mut perms = std::fs::metadata(&cached).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&cached, perms).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&cached)
        .unwrap();
    f.write_all(b"garbage").unwrap();
    drop(f);
    assert_eq!(
        (*reader.bytes(&id, Some(100_000)).unwrap()).as_ref(),
        &bytes[..]
    );
}

#[test]
fn the_read_through_cache_keeps_under_its_cap_evicting_the_least_recently_used() {
    let _s = SERVER.read().unwrap();
    let url = fresh_url("cache-cap");
    let writer = fresh_store(&url);
    let objects: Vec<(ContentId, Vec<u8>)> = (0..8)
        .map(|i| {
            let b = data(64 * 1024, 100 + i);
            (put(&writer, &b), b)
        })
        .collect();
    let cache = tempfile::tempdir().unwrap();
    // Room for three objects (64 KiB and a 192-byte outboard each), not four.
    let cap = 3 * (64 * 1024 + 192) + 1000;
    let reader = store_at(&url, cache.path(), cap);
    for (i, (id, bytes)) in objects.iter().enumerate() {
        assert_eq!(
            (*reader.bytes(id, Some(65536)).unwrap()).as_ref(),
            &bytes[..]
        );
        let size = reader.cache().size().unwrap();
        assert!(
            size <= cap,
            "after {} reads the cache holds {size} > {cap}",
            i + 1
        );
        if i == 4 {
            // Using object 2 again makes it the most recent: 3 is evicted next, not 2.
            assert!(reader.cache().contains(&objects[2].0));
            reader.bytes(&objects[2].0, Some(65536)).unwrap();
        }
    }
    let cached: Vec<bool> = objects
        .iter()
        .map(|(id, _)| reader.cache().contains(id))
        .collect();
    assert_eq!(
        cached,
        [false, false, false, false, false, true, true, true]
    );
    // Object 2 survived object 5's arrival (it had been used since 3 and 4 were), then went.
    // Another process's cache in the same directory sees the same files.
    let other = ReadCache::open(cache.path(), cap).unwrap();
    assert!(other.contains(&objects[7].0));
    assert!(other.size().unwrap() <= cap);
}

#[test]
fn bad_credentials_and_a_missing_bucket_are_immediate_errors_naming_the_url() {
    let _s = SERVER.read().unwrap();
    let url = fresh_url("errors");
    let err = Remote::from_url(&format!(
        "{url}?access_key_id=nobody&secret_access_key=wrong"
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SdkError::Remote { .. }), "{msg}");
    assert!(msg.starts_with(&url), "{msg}");
    assert!(msg.contains("bad credentials"), "{msg}");
    assert!(
        !msg.contains("wrong"),
        "the secret must not be shown: {msg}"
    );
    // Not retried: object_store says "after N retries" when it did.
    assert!(!msg.contains("retries"), "{msg}");

    let missing = "s3://milonga-no-such-bucket/some/prefix";
    let err = Remote::from_url(missing).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(missing), "{msg}");
    assert!(
        msg.contains("bucket \"milonga-no-such-bucket\" does not exist"),
        "{msg}"
    );
    assert!(!msg.contains("retries"), "{msg}");
    // Reads and writes on a handle opened without the check say the same.
    let unchecked = Remote::from_url_unchecked(missing).unwrap();
    for err in [
        unchecked.put("k", vec![1]).unwrap_err(),
        unchecked.head("k").unwrap_err(),
        unchecked.get("k").unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{missing}/k")), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
    }

    for bad in ["s3://", "gs://bucket/p", "s3://b/p?nonsense=1"] {
        let msg = Remote::from_url(bad).unwrap_err().to_string();
        assert!(msg.contains(bad.split('?').next().unwrap()), "{msg}");
    }
}

#[test]
fn uploads_survive_the_server_restarting_mid_upload() {
    // Alone: the restart would interrupt the other tests' requests.
    let _s = SERVER
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let url = fresh_url("restart");
    let store = fresh_store(&url);
    // Objects of 8 MiB, one after another, until two have gone up after the restart.
    let written = upload_across_a_restart(|i| {
        let bytes = data(8 << 20, 1000 + i);
        (put(&store, &bytes), bytes.len() as u64)
    });
    assert!(written.len() >= 3);
    let fresh = fresh_store(&url);
    for (id, len) in &written {
        assert_eq!(fresh.verify_object(id, Some(*len)).unwrap(), *len);
    }
}
