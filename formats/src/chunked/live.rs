//! Chunks handed from a writer to the readers that follow it in the same process.
//!
//! A stream being written and read at the same time in one process (a pipelined consumer)
//! would otherwise read every chunk back from its file, verify it and decompress it: work the
//! writer has just undone. When the writer's artifact has a
//! [`live_key`](milonga_sdk::ArtifactWriter::live_key), [`write_chunked`](super::write_chunked)
//! also publishes each sealed chunk's uncompressed items here, and a follower whose artifact
//! reports the same key takes them from memory.
//!
//! What a follower gets this way is exactly what the writer commits (the same blocks, before
//! compression), and it learns the end of the stream only once the end record is written: a
//! writer that fails or panics ends the live stream with an error, never a short one. Memory is
//! bounded: the last [`WINDOW_BYTES`] of chunks are kept; a follower that falls behind them
//! (or starts after them) reads the rest from the files, as any reader does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};

/// How many bytes of recent chunks a live stream keeps for its followers.
pub(crate) const WINDOW_BYTES: usize = 4 << 20;

/// One sealed chunk: its items, uncompressed, length-prefixed, back to back.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) seq: u64,
    pub(crate) first_item: u64,
    pub(crate) item_count: u32,
    pub(crate) payload: Vec<u8>,
}

impl Segment {
    fn end_item(&self) -> u64 {
        self.first_item + u64::from(self.item_count)
    }
}

#[derive(Default)]
struct State {
    segments: VecDeque<Arc<Segment>>,
    bytes: usize,
    /// `Ok(item count)` once the end record is written; the writer's error if it failed.
    end: Option<Result<u64, String>>,
}

/// A stream being written in this process, as its followers see it.
#[derive(Default)]
pub(crate) struct Live {
    state: Mutex<State>,
    changed: Condvar,
}

/// What a follower finds at an item.
pub(crate) enum Next {
    /// The chunk holding the item.
    Segment(Arc<Segment>),
    /// The stream ended before the item.
    End,
    /// The writer failed.
    Failed(String),
    /// The item's chunk is no longer (or never was) kept: read it from the files.
    Behind,
}

fn registry() -> &'static Mutex<HashMap<String, Weak<Live>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<Live>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Starts publishing the stream `key` (replacing an earlier writer's), and forgets streams that
/// nobody holds any more.
pub(crate) fn publish(key: String) -> Arc<Live> {
    let live = Arc::new(Live::default());
    let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(key, Arc::downgrade(&live));
    live
}

/// The stream `key` if a writer in this process is publishing it (or did and a follower still
/// holds it).
pub(crate) fn find(key: &str) -> Option<Arc<Live>> {
    let map = registry().lock().unwrap_or_else(|p| p.into_inner());
    map.get(key).and_then(Weak::upgrade)
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a sealed chunk, dropping the oldest ones beyond the window.
    pub(crate) fn push(&self, segment: Segment) {
        let mut st = self.lock();
        if st.end.is_some() {
            return;
        }
        st.bytes += segment.payload.len();
        st.segments.push_back(Arc::new(segment));
        while st.bytes > WINDOW_BYTES && st.segments.len() > 1 {
            if let Some(old) = st.segments.pop_front() {
                st.bytes -= old.payload.len();
            }
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Ends the stream (the first end recorded stands).
    pub(crate) fn end(&self, end: Result<u64, String>) {
        let mut st = self.lock();
        if st.end.is_none() {
            st.end = Some(end);
        }
        drop(st);
        self.changed.notify_all();
    }

    /// The chunk holding item `item`, waiting for it while the writer goes on.
    pub(crate) fn at(&self, item: u64) -> Next {
        let mut st = self.lock();
        loop {
            let found = st
                .segments
                .iter()
                .find(|s| s.first_item <= item && item < s.end_item())
                .cloned();
            if let Some(s) = found {
                return Next::Segment(s);
            }
            if st.segments.front().is_some_and(|s| item < s.first_item) {
                return Next::Behind;
            }
            match &st.end {
                Some(Ok(total)) if item >= *total => return Next::End,
                // Ended, yet the item is neither kept nor past the end: it was dropped.
                Some(Ok(_)) => return Next::Behind,
                Some(Err(e)) => return Next::Failed(e.clone()),
                None => {}
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The writer's side: ends the live stream with an error if the write stops before
/// [`LiveWriter::finish`] (an error or a panic of the producer, a failed background stage).
pub(crate) struct LiveWriter(pub(crate) Option<Arc<Live>>);

impl LiveWriter {
    /// Publishes a sealed chunk.
    pub(crate) fn push(&self, segment: impl FnOnce() -> Segment) {
        if let Some(live) = &self.0 {
            live.push(segment());
        }
    }

    /// The write failed: followers fail with `why` once they have read what was sealed.
    pub(crate) fn fail(&self, why: String) {
        if let Some(live) = &self.0 {
            live.end(Err(why));
        }
    }

    /// The end record is written: followers may end after `total` items.
    pub(crate) fn finish(mut self, total: u64) {
        if let Some(live) = self.0.take() {
            live.end(Ok(total));
        }
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        if let Some(live) = self.0.take() {
            live.end(Err("the stream's writer stopped before the end".into()));
        }
    }
}
