//! Following a stream that another thread is still writing.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use milonga_formats::{Stream, StreamFormat};
use milonga_sdk::{
    ArtifactReader, ArtifactStatus, Error, FileEntry, Format, MemoryArtifact, ReadSeek, Result,
    SharedBytes,
};

/// A `MemoryArtifact` seen by a reader while a writer fills it: `Writing` until `done` is set,
/// `Failed` once `failed` holds a reason.
#[derive(Clone, Default)]
struct Followed {
    inner: MemoryArtifact,
    done: Arc<AtomicBool>,
    failed: Arc<Mutex<Option<String>>>,
}

impl ArtifactReader for Followed {
    fn describe(&self) -> String {
        "followed test artifact".into()
    }
    fn files(&self) -> Vec<FileEntry> {
        self.inner.files()
    }
    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>> {
        self.inner.open(name)
    }
    fn bytes(&self, name: &str) -> Result<SharedBytes> {
        self.inner.bytes(name)
    }
    fn local_path(&self, name: &str) -> Result<Option<PathBuf>> {
        self.inner.local_path(name)
    }
    fn status(&self) -> ArtifactStatus {
        if let Some(why) = self.failed.lock().unwrap().clone() {
            ArtifactStatus::Failed(why)
        } else if self.done.load(Ordering::SeqCst) {
            ArtifactStatus::Complete
        } else {
            ArtifactStatus::Writing
        }
    }
    fn wait_for_change(&self, known: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.inner.files().len() <= known
            && self.status() == ArtifactStatus::Writing
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

fn slow_items(n: u64) -> impl Iterator<Item = u64> + Send {
    (0..n).inspect(|i| {
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

fn format() -> StreamFormat<u64> {
    StreamFormat::new().with_chunk_size(200).with_block_size(40)
}

#[test]
fn reader_follows_a_stream_until_the_writer_completes() {
    let art = Followed::default();
    let n = 3000u64;
    let writer = {
        let art = art.clone();
        std::thread::spawn(move || {
            format()
                .write(Stream::new(slow_items(n)), &art.inner)
                .unwrap();
            art.done.store(true, Ordering::SeqCst);
        })
    };
    // Open while nothing (or little) is written yet.
    let reader = format().read(Arc::new(art.clone())).unwrap();
    assert!(!reader.is_complete() || writer.is_finished());
    // A random get past what is committed waits for it.
    assert_eq!(reader.get(n - 1).unwrap(), n - 1);
    let seen: Vec<u64> = reader.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
    assert_eq!(reader.len().unwrap(), n);
    assert!(reader.is_complete());
    writer.join().unwrap();
}

#[test]
fn iteration_started_early_sees_every_item() {
    let art = Followed::default();
    let n = 2000u64;
    let reader = format().read(Arc::new(art.clone())).unwrap();
    assert_eq!(reader.committed_len(), 0);
    let consumer = {
        let reader = reader.clone();
        std::thread::spawn(move || reader.iter().collect::<Result<Vec<u64>, _>>())
    };
    std::thread::sleep(Duration::from_millis(20));
    format()
        .write(Stream::new(slow_items(n)), &art.inner)
        .unwrap();
    art.done.store(true, Ordering::SeqCst);
    assert_eq!(
        consumer.join().unwrap().unwrap(),
        (0..n).collect::<Vec<_>>()
    );
}

#[test]
fn a_failed_writer_is_an_error_not_a_short_stream() {
    let art = Followed::default();
    let k = 1234u64;
    let consumer = {
        let reader = format().read(Arc::new(art.clone())).unwrap();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            for item in reader.iter() {
                match item {
                    Ok(v) => got.push(v),
                    Err(e) => return (got, Some(e)),
                }
            }
            (got, None)
        })
    };
    let items = slow_items(k)
        .map(Ok)
        .chain(std::iter::once(Err("out of disk")));
    let r = format().write(Stream::try_new(items), &art.inner);
    assert!(r.is_err());
    *art.failed.lock().unwrap() = Some("the step failed: out of disk".into());
    let (got, err) = consumer.join().unwrap();
    // Every item of every durable chunk was yielded, in order, before the error.
    let durable = format().durable_items(&art.inner).unwrap();
    assert!(
        matches!(&err, Some(Error::WriterDied { reason, items, .. })
            if reason.contains("out of disk") && *items == durable),
        "{err:?}"
    );
    assert!(durable > 0 && durable <= k);
    assert_eq!(got, (0..durable).collect::<Vec<_>>());
    // Asking for the length or an item past the durable prefix fails the same way.
    let reader = format().read(Arc::new(art.clone())).unwrap();
    assert!(matches!(reader.len(), Err(Error::WriterDied { items, .. }) if items == durable));
    assert!(matches!(reader.get(durable), Err(Error::WriterDied { .. })));
    assert_eq!(reader.get(durable - 1).unwrap(), durable - 1);
}

#[test]
fn a_writer_that_completes_without_an_end_record_is_truncation() {
    let art = Followed::default();
    let items = (0..500u64).map(Ok).chain(std::iter::once(Err("boom")));
    assert!(format().write(Stream::try_new(items), &art.inner).is_err());
    // A backend that (wrongly) reports the artifact complete: the missing end record is
    // reported, never taken for a shorter stream.
    art.done.store(true, Ordering::SeqCst);
    let err = format().read(Arc::new(art.clone())).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file, reason, .. } if file == "end" && reason.contains("truncated")),
        "{err}"
    );
}

#[test]
fn dropping_a_following_iterator_stops_its_thread() {
    let art = Followed::default();
    let reader = format().read(Arc::new(art.clone())).unwrap();
    let mut it = reader.iter();
    let waiter = std::thread::spawn(move || {
        // Nothing is ever written; drop the iterator after it started waiting.
        std::thread::sleep(Duration::from_millis(30));
        drop(reader);
    });
    format().write(Stream::new(0..10u64), &art.inner).unwrap();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    drop(it);
    waiter.join().unwrap();
    art.done.store(true, Ordering::SeqCst);
}
