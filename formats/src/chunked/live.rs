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
use std::time::{Duration, Instant};

use super::chunk::RawBlock;

/// How many bytes of recent chunks a live stream keeps for its followers.
pub(crate) const WINDOW_BYTES: usize = 4 << 20;

/// How long a writer whose window is full waits for a follower to take its oldest chunk before
/// dropping it (the follower then reads from the files, and is not waited for again).
pub(crate) const FOLLOWER_WAIT: Duration = Duration::from_millis(250);

/// One sealed chunk: its blocks of items, uncompressed, shared with the writer's compression
/// job (nothing is copied).
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) seq: u64,
    pub(crate) first_item: u64,
    pub(crate) item_count: u32,
    pub(crate) blocks: Arc<[RawBlock]>,
}

impl Segment {
    pub(crate) fn end_item(&self) -> u64 {
        self.first_item + u64::from(self.item_count)
    }

    fn bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.data.len()).sum()
    }
}

#[derive(Default)]
struct State {
    segments: VecDeque<Arc<Segment>>,
    bytes: usize,
    /// `Ok(item count)` once the end record is written; the writer's error if it failed.
    end: Option<Result<u64, String>>,
    /// The next item of each follower taking chunks from memory, by follower number.
    followers: HashMap<u64, u64>,
    next_follower: u64,
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
    /// The item's chunk is no longer (or never was) kept: read it from the files, up to the
    /// first item of the oldest chunk kept (given).
    Behind(u64),
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

    /// Publishes a sealed chunk. Beyond the window, the oldest chunk is dropped once every
    /// follower has taken it; a follower that takes none for [`FOLLOWER_WAIT`] is left behind
    /// (it reads from the files) so that a stalled follower never stalls the writer for long.
    pub(crate) fn push(&self, segment: Segment) {
        let mut st = self.lock();
        if st.end.is_some() {
            return;
        }
        st.bytes += segment.bytes();
        st.segments.push_back(Arc::new(segment));
        self.changed.notify_all();
        let mut deadline: Option<Instant> = None;
        while st.bytes > WINDOW_BYTES && st.segments.len() > 1 {
            let Some(front_end) = st.segments.front().map(|s| s.end_item()) else {
                break;
            };
            let waiting_for = st.followers.values().any(|&next| next < front_end);
            if waiting_for {
                let now = Instant::now();
                let until = *deadline.get_or_insert(now + FOLLOWER_WAIT);
                if now < until {
                    st = self
                        .changed
                        .wait_timeout(st, until - now)
                        .map_or_else(|p| p.into_inner().0, |(g, _)| g);
                    continue;
                }
                // Stalled: stop waiting for the followers that still need the oldest chunk.
                st.followers.retain(|_, next| *next >= front_end);
            }
            if let Some(old) = st.segments.pop_front() {
                st.bytes -= old.bytes();
            }
            deadline = None;
        }
    }

    /// Registers a follower about to read from item `item`; its number.
    pub(crate) fn join(&self, item: u64) -> u64 {
        let mut st = self.lock();
        let id = st.next_follower;
        st.next_follower += 1;
        st.followers.insert(id, item);
        id
    }

    /// A follower that reads the chunks before `item` from the files asks the writer to keep
    /// the chunks from `item` on for it (for a while: see [`Live::push`]).
    pub(crate) fn reserve(&self, follower: u64, item: u64) {
        self.lock().followers.insert(follower, item);
    }

    /// A follower that stops taking chunks from memory.
    pub(crate) fn leave(&self, follower: u64) {
        self.lock().followers.remove(&follower);
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

    /// The chunk holding item `item`, waiting for it while the writer goes on; `follower`
    /// has taken everything before `item`.
    pub(crate) fn at(&self, follower: u64, item: u64) -> Next {
        let mut st = self.lock();
        st.followers.insert(follower, item);
        self.changed.notify_all();
        loop {
            let found = st
                .segments
                .iter()
                .find(|s| s.first_item <= item && item < s.end_item())
                .cloned();
            if let Some(s) = found {
                return Next::Segment(s);
            }
            if let Some(oldest) = st.segments.front().map(|s| s.first_item) {
                if item < oldest {
                    return Next::Behind(oldest);
                }
            }
            match &st.end {
                Some(Ok(total)) if item >= *total => return Next::End,
                // Ended, yet the item is neither kept nor past the end: it was dropped.
                Some(Ok(total)) => return Next::Behind(*total),
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
