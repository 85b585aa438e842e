//! Sequential reading of a stream loads the next chunk files while it decompresses one: on a
//! remote workspace a load is a download, and downloading one chunk at a time would make a full
//! read wait for every request's latency in turn.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use milonga_formats::{Stream, StreamFormat};
use milonga_sdk::{
    ArtifactReader, Error, FileEntry, Format, MemoryArtifact, ReadSeek, Result, SharedBytes,
};

fn format() -> StreamFormat<String> {
    StreamFormat::new()
        .with_chunk_size(2000)
        .with_block_size(300)
}

fn items() -> Vec<String> {
    (0..1000).map(|i| format!("item number {i}")).collect()
}

fn chunk_names(a: &MemoryArtifact) -> Vec<String> {
    let mut names: Vec<String> = a
        .snapshot()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("chunks/"))
        .collect();
    names.sort();
    names
}

/// Which chunk files were asked for whole, in order, and a gate: the load of `gated` waits
/// (up to a generous time) until the load of `waits_for` has begun.
struct Gated {
    inner: MemoryArtifact,
    gated: String,
    waits_for: String,
    state: Mutex<(Vec<String>, Option<bool>)>,
    changed: Condvar,
}

impl ArtifactReader for Gated {
    fn describe(&self) -> String {
        "gated artifact".into()
    }
    fn files(&self) -> Vec<FileEntry> {
        self.inner.files()
    }
    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>> {
        self.inner.open(name)
    }
    fn bytes(&self, name: &str) -> Result<SharedBytes> {
        let mut st = self.state.lock().unwrap();
        st.0.push(name.to_owned());
        self.changed.notify_all();
        if name == self.gated {
            // Without loads ahead, the next chunk is asked for only after this one is
            // returned: the wait runs out and the overlap is recorded as missing.
            let (st2, _) = self
                .changed
                .wait_timeout_while(st, Duration::from_secs(30), |s| {
                    !s.0.contains(&self.waits_for)
                })
                .unwrap();
            st = st2;
            let overlapped = st.0.contains(&self.waits_for);
            st.1 = Some(overlapped);
        }
        drop(st);
        self.inner.bytes(name)
    }
    fn local_path(&self, name: &str) -> Result<Option<PathBuf>> {
        self.inner.local_path(name)
    }
}

#[test]
fn sequential_reading_loads_the_next_chunks_while_one_is_decoded() {
    let artifact = MemoryArtifact::new();
    format().write(Stream::new(items()), &artifact).unwrap();
    let names = chunk_names(&artifact);
    assert!(names.len() >= 5, "{names:?}");
    let gated = Arc::new(Gated {
        inner: artifact,
        gated: names[1].clone(),
        waits_for: names[2].clone(),
        state: Mutex::new((Vec::new(), None)),
        changed: Condvar::new(),
    });
    let reader = format().read(gated.clone()).unwrap();
    let got: Vec<String> = reader.iter().collect::<Result<_>>().unwrap();
    assert_eq!(got, items(), "items in order, none lost or repeated");
    let st = gated.state.lock().unwrap();
    assert_eq!(
        st.1,
        Some(true),
        "chunk 2 was not asked for while chunk 1 was loading: {:?}",
        st.0
    );
    // Every chunk was loaded exactly once.
    for n in &names {
        assert_eq!(
            st.0.iter().filter(|x| *x == n).count(),
            1,
            "{n}: {:?}",
            st.0
        );
    }
}

/// Fails the load of one chunk file that its listing still shows (a download that fails).
struct FailingLoad {
    inner: MemoryArtifact,
    victim: String,
}

impl ArtifactReader for FailingLoad {
    fn describe(&self) -> String {
        "artifact with a chunk that fails to load".into()
    }
    fn files(&self) -> Vec<FileEntry> {
        self.inner.files()
    }
    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>> {
        self.inner.open(name)
    }
    fn bytes(&self, name: &str) -> Result<SharedBytes> {
        if name == self.victim {
            return Err(Error::MissingFile { file: name.into() });
        }
        self.inner.bytes(name)
    }
    fn local_path(&self, name: &str) -> Result<Option<PathBuf>> {
        self.inner.local_path(name)
    }
}

#[test]
fn a_chunk_that_fails_to_load_ahead_is_reported_after_the_items_before_it() {
    let artifact = MemoryArtifact::new();
    format().write(Stream::new(items()), &artifact).unwrap();
    let names = chunk_names(&artifact);
    let victim = names[3].clone();
    let first_of_victim = format()
        .read(artifact.handle())
        .unwrap()
        .chunks()
        .chunk(3)
        .unwrap()
        .unwrap()
        .entry
        .first_item;
    assert!(first_of_victim > 0);
    let reader = format()
        .read(Arc::new(FailingLoad {
            inner: artifact,
            victim: victim.clone(),
        }))
        .unwrap();
    let mut yielded = Vec::new();
    let mut err = None;
    for item in reader.iter() {
        match item {
            Ok(s) => yielded.push(s),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert_eq!(
        yielded,
        items()[..first_of_victim as usize],
        "every item before the chunk, in order"
    );
    let err = err.expect("an error");
    assert!(
        matches!(&err, Error::MissingFile { file } if file.starts_with(victim.as_str()) && file.contains("items ")),
        "{err}"
    );
}
