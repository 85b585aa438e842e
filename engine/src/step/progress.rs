//! Progress of a running step, reported by the step and shown by the executor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The progress of a running step: how many items it has processed and, when known, how many
/// there are. A step gets its handle from [`Context::progress`](crate::Context::progress) and
/// updates it as it goes; the [`Executor`](crate::Executor) shows the progress of every running
/// step (when standard error is a terminal). Updates are cheap atomic operations.
///
/// Clones share the same counters.
#[derive(Clone, Debug)]
pub struct Progress {
    inner: Arc<Counters>,
}

#[derive(Debug)]
struct Counters {
    /// `u64::MAX` when unknown.
    length: AtomicU64,
    position: AtomicU64,
    started: Instant,
}

const UNKNOWN: u64 = u64::MAX;

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A new handle at position 0, length unknown.
    pub fn new() -> Self {
        Progress {
            inner: Arc::new(Counters {
                length: AtomicU64::new(UNKNOWN),
                position: AtomicU64::new(0),
                started: Instant::now(),
            }),
        }
    }

    /// Sets the total number of items, when known.
    pub fn set_length(&self, length: u64) {
        self.inner
            .length
            .store(length.min(UNKNOWN - 1), Ordering::Relaxed);
    }

    /// Adds `items` to the number of items processed.
    pub fn inc(&self, items: u64) {
        self.inner.position.fetch_add(items, Ordering::Relaxed);
    }

    /// Sets the number of items processed.
    pub fn set_position(&self, items: u64) {
        self.inner.position.store(items, Ordering::Relaxed);
    }

    /// The number of items processed so far.
    pub fn position(&self) -> u64 {
        self.inner.position.load(Ordering::Relaxed)
    }

    /// The total number of items, if the step said.
    pub fn length(&self) -> Option<u64> {
        match self.inner.length.load(Ordering::Relaxed) {
            UNKNOWN => None,
            n => Some(n),
        }
    }

    /// When the handle was created (the step started).
    pub(crate) fn started(&self) -> Instant {
        self.inner.started
    }

    /// Items per second since the handle was created.
    pub fn rate(&self) -> f64 {
        let secs = self.inner.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.position() as f64 / secs
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_length() {
        let p = Progress::new();
        assert_eq!(p.length(), None);
        p.inc(3);
        p.clone().inc(4);
        assert_eq!(p.position(), 7);
        p.set_length(10);
        assert_eq!(p.length(), Some(10));
        p.set_position(2);
        assert_eq!(p.position(), 2);
    }
}
