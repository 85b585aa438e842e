//! The in-memory cache of results: a repeated `result()` in one process does not deserialize
//! again.

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// A cached, type-erased result handle.
pub(crate) type Cached = Arc<dyn Any + Send + Sync>;

/// A bounded LRU of results, limited by entries and by the stored size of the results.
pub(crate) struct MemoryCache {
    lru: lru::LruCache<String, (Cached, u64)>,
    bytes: u64,
    max_bytes: u64,
}

/// Default limits of the in-memory result cache.
pub const DEFAULT_RESULT_CACHE_ENTRIES: usize = 256;
/// Default byte limit (stored size of the cached results) of the in-memory result cache.
pub const DEFAULT_RESULT_CACHE_BYTES: u64 = 512 * 1024 * 1024;

impl MemoryCache {
    pub(crate) fn new(max_entries: usize, max_bytes: u64) -> Self {
        MemoryCache {
            lru: lru::LruCache::new(NonZeroUsize::new(max_entries.max(1)).expect("max(1)")),
            bytes: 0,
            max_bytes,
        }
    }

    pub(crate) fn get(&mut self, key: &str) -> Option<Cached> {
        self.lru.get(key).map(|(v, _)| Arc::clone(v))
    }

    /// Inserts a result whose stored size is `size`; results larger than the byte limit are not
    /// kept.
    pub(crate) fn insert(&mut self, key: String, value: Cached, size: u64) {
        if size > self.max_bytes || self.lru.cap().get() == 0 {
            return;
        }
        // `push` returns the replaced entry of the same key or the one evicted for the entry
        // limit; either way its size leaves the total.
        if let Some((_, (_, old))) = self.lru.push(key, (value, size)) {
            self.bytes -= old;
        }
        self.bytes += size;
        while self.bytes > self.max_bytes {
            match self.lru.pop_lru() {
                Some((_, (_, s))) => self.bytes -= s,
                None => break,
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if let Some((_, s)) = self.lru.pop(key) {
            self.bytes -= s;
        }
    }

    pub(crate) fn set_limits(&mut self, max_entries: usize, max_bytes: u64) {
        self.lru
            .resize(NonZeroUsize::new(max_entries.max(1)).expect("max(1)"));
        self.max_bytes = max_bytes;
        self.bytes = self.lru.iter().map(|(_, (_, s))| *s).sum();
        while self.bytes > self.max_bytes {
            match self.lru.pop_lru() {
                Some((_, (_, s))) => self.bytes -= s,
                None => break,
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lru.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_entries_and_bytes() {
        let mut c = MemoryCache::new(2, 100);
        c.insert("a".into(), Arc::new(1u8), 10);
        c.insert("b".into(), Arc::new(2u8), 10);
        c.insert("c".into(), Arc::new(3u8), 10);
        assert_eq!(c.len(), 2);
        assert!(c.get("a").is_none());
        c.insert("big".into(), Arc::new(4u8), 95);
        assert!(c.get("big").is_some());
        assert_eq!(c.len(), 1, "byte limit evicts the older entries");
        c.insert("huge".into(), Arc::new(5u8), 1000);
        assert!(c.get("huge").is_none(), "larger than the limit: not kept");
    }
}
