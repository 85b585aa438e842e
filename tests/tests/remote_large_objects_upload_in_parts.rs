//! Objects above the remote's `multipart_threshold` go up as multipart uploads whose completion
//! is conditional (`If-None-Match: *`): against the project's local SeaweedFS server
//! (`eval "$(scripts/s3-server.sh start)"`), with a small threshold and 5 MiB parts so that
//! objects of 12 MiB exercise the path that objects beyond 5 GiB take. Round trips whole and in
//! verified ranges, a race of creators (one wins, the others verify), the server killed and
//! restarted in the middle of uploads, and no upload left open on the server afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, RwLock};

use milonga::remote::{Created, ReadCache, Remote, RemoteStore};
use milonga::store::ObjectStore;
use milonga::ContentId;
use milonga_tests::s3::{fresh_url, pseudo_random_bytes as data, upload_across_a_restart};

/// The restart test takes it for writing: the others, whose requests it would interrupt, read.
static SERVER: RwLock<()> = RwLock::new(());

/// 5 MiB parts (S3's smallest) for objects above 6 MiB.
const PARTS: &str = "multipart_threshold=6291456&part_size=5242880";

/// Twelve MiB: three parts (5, 5 and 2 MiB).
const LEN: usize = 12 << 20;

/// A fresh location, and its URL with the small multipart settings.
fn fresh(name: &str) -> (String, String) {
    let url = fresh_url(name);
    let with_parts = format!("{url}?{PARTS}");
    (url, with_parts)
}

/// A store on `url` with a cache directory of its own (removed when dropped).
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
        store: RemoteStore::new(
            Remote::from_url(url).unwrap(),
            ReadCache::open(dir.path(), 1 << 30).unwrap(),
        ),
        _dir: dir,
    }
}

fn put(store: &RemoteStore, bytes: &[u8]) -> ContentId {
    let mut w = store.writer().unwrap();
    for piece in bytes.chunks(1 << 20) {
        w.write_all(piece).unwrap();
    }
    let (id, len) = w.commit().unwrap();
    assert_eq!((id, len), (ContentId::of(bytes), bytes.len() as u64));
    id
}

/// The keys of the multipart uploads open on the server under `url`'s prefix (asked with a
/// ListMultipartUploads request signed by curl, which object_store does not offer).
fn open_uploads(url: &str) -> Vec<String> {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let (bucket, prefix) = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "--fail-with-body",
            "--aws-sigv4",
            &format!("aws:amz:{}:s3", env("AWS_REGION")),
            "--user",
            &format!(
                "{}:{}",
                env("AWS_ACCESS_KEY_ID"),
                env("AWS_SECRET_ACCESS_KEY")
            ),
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            &format!("{}/{bucket}?uploads=", env("AWS_ENDPOINT_URL")),
        ])
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && body.contains("<ListMultipartUploadsResult"),
        "listing the open uploads failed: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !body.contains("<IsTruncated>true"),
        "more open uploads than one page: {body}"
    );
    body.split("<Upload>")
        .skip(1)
        .filter_map(|u| {
            let key = u.split_once("<Key>")?.1.split_once("</Key>")?.0;
            key.starts_with(&format!("{prefix}/"))
                .then(|| key.to_owned())
        })
        .collect()
}

#[test]
fn large_objects_round_trip_whole_and_in_verified_ranges() {
    let _s = SERVER.read().unwrap();
    let (url, with_parts) = fresh("parts-round-trip");
    let writer = fresh_store(&with_parts);
    assert_eq!(writer.remote().multipart_threshold(), 6 << 20);
    assert_eq!(writer.remote().part_size_for(LEN as u64), 5 << 20);
    // Around the threshold and the part size: one PUT, one part, exact parts, a short last part.
    let sizes = [6 << 20, (6 << 20) + 1, 10 << 20, LEN];
    let objects: Vec<(ContentId, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let bytes = data(n, 10 + i as u64);
            (put(&writer, &bytes), bytes)
        })
        .collect();
    // Read back through a store with an empty cache (no multipart settings needed to read).
    let reader = fresh_store(&url);
    for (id, bytes) in &objects {
        let len = bytes.len() as u64;
        let head = reader.remote().head(&RemoteStore::object_key(id)).unwrap();
        assert_eq!(head.unwrap().size, len);
        // Ranges across part boundaries, verified through the outboard, not downloading it all.
        for r in [0..1, (5 << 20) - 3..(5 << 20) + 3, len - 100..len] {
            let got = reader.read_range(id, len, r.clone()).unwrap();
            assert_eq!(got, bytes[r.start as usize..r.end as usize], "{id} {r:?}");
        }
        assert!(!reader.cache().contains(id));
        assert_eq!((*reader.bytes(id, Some(len)).unwrap()).as_ref(), &bytes[..]);
        assert_eq!(reader.verify_object(id, Some(len)).unwrap(), len);
    }
    // Publishing an existing large object again is success (verified, nothing created).
    assert_eq!(put(&writer, &objects[3].1), objects[3].0);
    assert_eq!(open_uploads(&url), Vec::<String>::new());
}

#[test]
fn of_concurrent_multipart_creators_one_wins_and_the_others_abort_their_uploads() {
    let _s = SERVER.read().unwrap();
    let (url, with_parts) = fresh("parts-race");
    let remote = Remote::from_url(&with_parts).unwrap();
    // One after the other: the second finds the object there.
    let first = remote.put_multipart_if_absent("one", data(LEN, 5)).unwrap();
    assert!(matches!(first, Created::Created(_)), "{first:?}");
    let second = remote.put_multipart_if_absent("one", data(LEN, 6)).unwrap();
    assert_eq!(second, Created::AlreadyExists);
    let racers = 6;
    for round in 0..2u8 {
        // Round 0: every racer sends the same bytes; round 1: each its own.
        let wins = AtomicUsize::new(0);
        let barrier = Arc::new(Barrier::new(racers));
        let key = format!("race{round}");
        std::thread::scope(|s| {
            for t in 0..racers {
                let (remote, barrier, wins, key) = (remote.clone(), barrier.clone(), &wins, &key);
                s.spawn(move || {
                    let seed = if round == 0 { 1 } else { 100 + t as u64 };
                    let body = data(LEN, seed);
                    barrier.wait();
                    if let Created::Created(_) = remote.put_multipart_if_absent(key, body).unwrap()
                    {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.load(Ordering::SeqCst), 1, "round {round}");
        assert_eq!(remote.head(&key).unwrap().unwrap().size, LEN as u64);
    }
    // Through the store, every writer of the same object succeeds: one creates it, the others
    // find it there and verify it.
    let bytes = data(LEN, 7);
    let barrier = Arc::new(Barrier::new(4));
    let stores: Vec<Fresh> = (0..4).map(|_| fresh_store(&with_parts)).collect();
    std::thread::scope(|s| {
        for store in &stores {
            let (barrier, bytes) = (barrier.clone(), &bytes);
            s.spawn(move || {
                let mut w = store.writer().unwrap();
                w.write_all(bytes).unwrap();
                barrier.wait();
                assert_eq!(w.commit().unwrap().0, ContentId::of(bytes));
            });
        }
    });
    assert_eq!(stores[0].list().unwrap(), vec![ContentId::of(&bytes)]);
    // The losers aborted their uploads: nothing is left open on the server.
    assert_eq!(open_uploads(&url), Vec::<String>::new());
}

#[test]
fn multipart_settings_out_of_range_are_errors_naming_the_url() {
    let url = fresh_url("parts-options");
    for (opt, says) in [
        ("part_size=1000", "part_size=1000 is outside"),
        ("part_size=5GiB", "not a number of bytes"),
        (
            "multipart_threshold=6000000000",
            "most one S3 PUT request may carry",
        ),
    ] {
        let msg = Remote::from_url_unchecked(&format!("{url}?{opt}"))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with(&url), "{msg}");
        assert!(msg.contains(says), "{opt}: {msg}");
    }
    // Objects that would need more than 10,000 parts get larger parts (whole MiB).
    let remote = Remote::from_url_unchecked(&format!("{url}?{PARTS}")).unwrap();
    assert_eq!(remote.part_size_for(100 << 30), 11 << 20);
    assert_eq!(remote.part_size_for(1 << 30), 5 << 20);
}

#[test]
fn multipart_uploads_survive_the_server_restarting_mid_upload() {
    // Alone: the restart would interrupt the other tests' requests.
    let _s = SERVER
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (url, with_parts) = fresh("parts-restart");
    let store = fresh_store(&with_parts);
    // Multipart objects one after another, until two have gone up after the restart (the
    // second is going up when the server is killed).
    let written = upload_across_a_restart(|i| {
        let bytes = data(LEN, 1000 + i);
        (put(&store, &bytes), bytes.len() as u64)
    });
    assert!(written.len() >= 3);
    let reader = fresh_store(&url);
    for (id, len) in &written {
        assert_eq!(reader.verify_object(id, Some(*len)).unwrap(), *len);
    }
    assert_eq!(open_uploads(&url), Vec::<String>::new());
}

#[test]
fn a_multipart_upload_that_fails_is_aborted() {
    let _s = SERVER.read().unwrap();
    let (url, with_parts) = fresh("parts-abort");
    // Requests that must finish within a short time, never retried: the shortest time that lets
    // the upload start (a few bytes) but not its 5 MiB parts through fails the upload after it
    // exists. Tried from 200 ms down (a faster machine needs a shorter time).
    let mut failed_after_start = None;
    for (attempt, ms) in [200, 100, 50, 25, 12, 6, 3].into_iter().enumerate() {
        // Unchecked: the check's listing may not fit in the time either.
        let remote = Remote::from_url_unchecked(&format!(
            "{with_parts}&timeout={ms}ms&max_retries=0&retry_timeout=0"
        ))
        .unwrap();
        match remote.put_multipart_if_absent(&format!("k{attempt}"), data(LEN, attempt as u64)) {
            // Fast enough to go through: try a shorter time.
            Ok(_) => continue,
            Err(e) => {
                let err = e.to_string();
                assert!(err.starts_with(&url), "{err}");
                // A part or the completion failed (their requests name the upload); else the
                // start itself timed out.
                if err.contains("uploadId") {
                    failed_after_start = Some(err);
                    break;
                }
            }
        }
    }
    assert!(
        failed_after_start.is_some(),
        "no attempt failed after its upload started"
    );
    // The failed upload was aborted: nothing is left open on the server.
    assert_eq!(open_uploads(&url), Vec::<String>::new());
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn measure_large_object_uploads() {
    let _s = SERVER.read().unwrap();
    let mib: usize = std::env::var("MILONGA_MEASURE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let rate = |t: std::time::Instant| mib as f64 / t.elapsed().as_secs_f64();
    for (how, options) in [
        ("one PUT", "multipart_threshold=5368709120".to_owned()),
        (
            "multipart, 16 MiB parts",
            "multipart_threshold=0".to_owned(),
        ),
        (
            "multipart, 64 MiB parts",
            format!("multipart_threshold=0&part_size={}", 64 << 20),
        ),
    ] {
        let url = fresh_url("parts-measure");
        let store = fresh_store(&format!("{url}?{options}"));
        let bytes = data(mib << 20, mib as u64);
        let mut w = store.writer().unwrap();
        for piece in bytes.chunks(1 << 20) {
            w.write_all(piece).unwrap();
        }
        let t = std::time::Instant::now();
        let (id, len) = w.commit().unwrap();
        println!(
            "{how}: commit of {mib} MiB (hash done while writing): {:.1} MiB/s",
            rate(t)
        );
        let reader = fresh_store(&url);
        let t = std::time::Instant::now();
        reader.bytes(&id, Some(len)).unwrap();
        println!("{how}: download into an empty cache: {:.1} MiB/s", rate(t));
        reader.remove(&id).unwrap();
    }
}
