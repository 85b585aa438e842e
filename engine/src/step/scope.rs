//! What one run shares among the steps it computes: the nonce of non-deterministic ids, the
//! steps to refresh, the in-memory results of uncacheable steps, the streams being written
//! (for pipelining), the progress of running steps, and who to tell when a step starts.
//!
//! A run is one [`Executor::run`](crate::Executor::run), or one top-level
//! [`Step::result`](crate::Step::result) call (and everything it computes on the way). The scope
//! is active on the threads that work for the run (a thread-local), so that ids and inputs
//! computed there agree.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::progress::Progress;

/// A result kept in memory for the run: an uncacheable step's value, or its error text, and how
/// long it took.
/// An in-memory step's value and how long it took, or its failure (the message and the step's
/// error).
pub(crate) type Memo = std::result::Result<
    (Arc<dyn Any + Send + Sync>, Duration),
    (String, Option<crate::SharedError>),
>;

/// A step being computed by the executor, which consumers may follow before it finishes.
#[derive(Default)]
pub(crate) struct Flight {
    done: Mutex<Option<std::result::Result<(), String>>>,
    cv: Condvar,
}

impl Flight {
    /// Whether the step has finished (successfully or not).
    pub(crate) fn is_done(&self) -> bool {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Records the end of the step and wakes those waiting for it. The first outcome recorded
    /// stands: a flight that failed (its writer died while followed) stays failed even if the
    /// step is then computed again.
    pub(crate) fn finish(&self, outcome: std::result::Result<(), String>) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if done.is_none() {
            *done = Some(outcome);
        }
        drop(done);
        self.cv.notify_all();
    }

    /// Waits for the step to finish; its error text if it failed.
    pub(crate) fn wait(&self) -> std::result::Result<(), String> {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(outcome) = done.as_ref() {
                return outcome.clone();
            }
            done = self.cv.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Shared state of one run.
pub(crate) struct Scope {
    /// Mixed into the ids of non-deterministic steps: a fresh value per run.
    pub(crate) nonce: [u8; 32],
    /// Unique ids to compute again even if they are stored.
    refresh: Mutex<HashSet<String>>,
    /// Refreshed ids already recomputed in this run (each is recomputed once).
    refreshed: Mutex<HashSet<String>>,
    /// Results of uncacheable steps, computed at most once per run.
    memo: Mutex<HashMap<String, Arc<OnceLock<Memo>>>>,
    /// Steps the executor is computing now whose result consumers may follow.
    flights: Mutex<HashMap<String, Arc<Flight>>>,
    /// Progress of the steps running now.
    progress: Mutex<HashMap<String, Progress>>,
    /// Told the unique id of every step that starts running (after its record says RUNNING).
    on_start: Option<crossbeam_channel::Sender<String>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Scope>>> = const { RefCell::new(None) };
}

/// Makes a scope current on this thread until dropped (then the previous one is again).
pub(crate) struct Entered {
    previous: Option<Arc<Scope>>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// A fresh random value: no two calls in any process return the same one.
pub(crate) fn fresh_nonce() -> [u8; 32] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(b"milonga.nonce");
    h.update(&std::process::id().to_le_bytes());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    let local = 0u8;
    h.update(&(std::ptr::addr_of!(local) as usize).to_le_bytes());
    *h.finalize().as_bytes()
}

impl Scope {
    /// A scope for a new run.
    pub(crate) fn new(
        refresh: HashSet<String>,
        on_start: Option<crossbeam_channel::Sender<String>>,
    ) -> Arc<Scope> {
        Arc::new(Scope {
            nonce: fresh_nonce(),
            refresh: Mutex::new(refresh),
            refreshed: Mutex::new(HashSet::new()),
            memo: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            on_start,
        })
    }

    /// The scope active on this thread, if any.
    pub(crate) fn current() -> Option<Arc<Scope>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// The scope active on this thread, or a new one for a run of its own.
    pub(crate) fn current_or_new() -> Arc<Scope> {
        Self::current().unwrap_or_else(|| Scope::new(HashSet::new(), None))
    }

    /// Makes this scope current on this thread until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> Entered {
        let previous = CURRENT.with(|c| c.borrow_mut().replace(Arc::clone(self)));
        Entered { previous }
    }

    /// Whether `unique_id` must be computed again now: it is to be refreshed and has not been
    /// yet in this run. Marks it refreshed.
    pub(crate) fn take_refresh(&self, unique_id: &str) -> bool {
        self.refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(unique_id)
            && self
                .refreshed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(unique_id.to_owned())
    }

    /// Whether `unique_id` is to be refreshed in this run and has not been yet.
    pub(crate) fn wants_refresh(&self, unique_id: &str) -> bool {
        self.refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(unique_id)
            && !self
                .refreshed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(unique_id)
    }

    /// Adds a unique id to compute again in this run.
    pub(crate) fn add_refresh(&self, unique_id: String) {
        self.refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(unique_id);
    }

    /// The in-memory slot of an uncacheable step's result.
    pub(crate) fn memo(&self, unique_id: &str) -> Arc<OnceLock<Memo>> {
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(memo.entry(unique_id.to_owned()).or_default())
    }

    /// The uncacheable step's result if it was computed in this run.
    pub(crate) fn memo_if_any(&self, unique_id: &str) -> Option<Memo> {
        let memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        memo.get(unique_id).and_then(|m| m.get().cloned())
    }

    /// Registers a step the executor starts computing, whose result consumers may follow.
    pub(crate) fn start_flight(&self, unique_id: &str) -> Arc<Flight> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(flights.entry(unique_id.to_owned()).or_default())
    }

    /// The flight of a step that is still being computed, if any.
    pub(crate) fn flight(&self, unique_id: &str) -> Option<Arc<Flight>> {
        let flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.get(unique_id).filter(|f| !f.is_done()).cloned()
    }

    /// Ends the flight of `unique_id` (if the executor started one) with an error: what its
    /// followers read came from a writer that is gone.
    pub(crate) fn fail_flight(&self, unique_id: &str, message: String) {
        if let Some(f) = self.flight(unique_id) {
            f.finish(Err(message));
        }
    }

    /// Tells the executor (if any) that a step started running (here, or in another process
    /// that holds its lock).
    pub(crate) fn started(&self, unique_id: &str) {
        if let Some(tx) = &self.on_start {
            let _ = tx.send(unique_id.to_owned());
        }
    }

    /// Registers the progress handle of a step that starts running.
    pub(crate) fn add_progress(&self, unique_id: &str, progress: Progress) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(unique_id.to_owned(), progress);
    }

    /// Forgets the progress handle of a step that finished.
    pub(crate) fn remove_progress(&self, unique_id: &str) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(unique_id);
    }

    /// The progress handles of the steps running now.
    pub(crate) fn running(&self) -> Vec<(String, Progress)> {
        let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = progress
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by_key(|(id, p)| (p.started(), id.clone()));
        all
    }
}
