//! The read-through cache of remote objects: a local object store in a directory, with a size
//! cap and least-recently-used eviction.
//!
//! The cache is a [`LocalStore`]: objects are published by an atomic rename of a fully written
//! temporary file (safe when several processes share the directory), content-addressed, and
//! verified on use like any local object (a damaged cache file is quarantined and downloaded
//! again, never trusted). Use is recorded in each object file's access time, set explicitly
//! whenever the cache serves it; eviction removes the objects used longest ago until the
//! directory is under its cap. Objects are immutable, so one cache directory can serve every
//! remote location.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use milonga_sdk::{ContentId, Error, Result, SharedBytes};

use crate::store::{LocalStore, ObjectStore, OBJECTS_DIR, OUTBOARD_SUFFIX, QUARANTINE_DIR};

/// The default size cap of the read-through cache: 1 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

/// [`ReadCache::approx`] before the directory was scanned.
const UNSCANNED: u64 = u64::MAX;

/// A local directory of verified copies of remote objects, bounded in size.
#[derive(Debug)]
pub struct ReadCache {
    store: LocalStore,
    cap: u64,
    /// Bytes this process believes the directory holds: set by every full scan, raised by every
    /// insertion. Other processes' insertions are seen at the next scan. Unknown
    /// ([`UNSCANNED`]) until the first insertion needs it: opening the cache, and reading from
    /// it, never scan the directory (a large cache holds many thousands of files).
    approx: AtomicU64,
    evicting: Mutex<()>,
}

impl ReadCache {
    /// Opens (creating it if needed) the cache in `dir`, holding at most about `cap` bytes.
    ///
    /// # Errors
    /// An I/O error creating the directory.
    pub fn open(dir: &Path, cap: u64) -> Result<ReadCache> {
        let store = LocalStore::open(dir)?.without_sync();
        let cache = ReadCache {
            store,
            cap,
            approx: AtomicU64::new(UNSCANNED),
            evicting: Mutex::new(()),
        };
        Ok(cache)
    }

    /// The default cache directory: `$MILONGA_CACHE_DIR`, else `$XDG_CACHE_HOME/milonga`, else
    /// `~/.cache/milonga`, else `milonga-cache` in the temporary directory.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("MILONGA_CACHE_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("milonga");
        }
        if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(h).join(".cache").join("milonga");
        }
        std::env::temp_dir().join("milonga-cache")
    }

    /// The default size cap: `$MILONGA_CACHE_BYTES` if it is a number, else
    /// [`DEFAULT_CACHE_BYTES`].
    pub fn default_cap() -> u64 {
        std::env::var("MILONGA_CACHE_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_CACHE_BYTES)
    }

    /// The local store holding the cached objects.
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// The directory of the cache.
    pub fn dir(&self) -> &Path {
        self.store.root()
    }

    /// The size cap in bytes.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// A fresh temporary path inside the cache directory (same file system as the objects, so
    /// that publishing it is a rename), whose folder exists.
    pub(crate) fn tmp_path(&self) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self.store.root().join(crate::store::TMP_DIR);
        // Made again if someone emptied the cache directory meanwhile (opening the file names
        // the path if this fails).
        let _ = fs::create_dir_all(&dir);
        dir.join(format!("{}-{nanos}-{n}.download", std::process::id()))
    }

    /// Whether object `id` is in the cache.
    pub fn contains(&self, id: &ContentId) -> bool {
        self.store.contains(id)
    }

    /// Records a use of object `id` (its position in the eviction order).
    pub fn touch(&self, id: &ContentId) {
        if let Ok(f) = fs::File::open(self.store.object_path(id)) {
            let _ = f.set_times(fs::FileTimes::new().set_accessed(SystemTime::now()));
        }
    }

    /// Publishes the downloaded file at `path` into the cache (hashing it: the id returned is
    /// the content's, which the caller compares with the one it asked for), then evicts the
    /// least recently used objects other than this one while the cache is over its cap.
    ///
    /// # Errors
    /// An I/O error.
    pub fn insert(&self, path: &Path) -> Result<(ContentId, u64)> {
        self.scan_once()?;
        let (id, len) = self.store.ingest(path)?;
        self.touch(&id);
        let total = self.approx.fetch_add(len, Ordering::Relaxed) + len;
        if total > self.cap {
            self.evict(Some(&id))?;
        }
        Ok((id, len))
    }

    /// Takes the file at `path`, whose content the caller hashed as `id` (`len` bytes, with
    /// outboard `outboard`) while writing or uploading it, into the cache by a rename (never a
    /// copy), then evicts the least recently used other objects while the cache is over its cap.
    /// Returns whether the object is now cached. The file stays where it is when it is on
    /// another file system, or when the object with its outboard is larger than the cap (it
    /// would evict everything else). Like every cached object it is verified on use.
    ///
    /// # Errors
    /// An I/O error publishing the file or scanning the directory.
    pub(crate) fn adopt(
        &self,
        path: &Path,
        id: &ContentId,
        len: u64,
        outboard: &[u8],
    ) -> Result<bool> {
        let bytes = len.saturating_add(outboard.len() as u64);
        if bytes > self.cap {
            return Ok(false);
        }
        if self.contains(id) {
            self.touch(id);
            return Ok(true);
        }
        self.scan_once()?;
        // Into the cache's own folder first: a file on another file system stays untouched.
        let tmp = self.tmp_path();
        if fs::rename(path, &tmp).is_err() {
            return Ok(false);
        }
        if let Err(e) = self.store.publish(&tmp, id, len, outboard) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.touch(id);
        let total = self.approx.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > self.cap {
            self.evict(Some(id))?;
        }
        Ok(true)
    }

    /// Publishes the downloaded file at `path` into the cache like [`insert`](Self::insert),
    /// hashing it once: the file is mapped, the mapping hashed, and the mapping returned with
    /// the id the content has (which the caller compares with the one it asked for), so that
    /// the bytes handed out are the bytes that were hashed and the read that downloaded them
    /// need not hash the cached file again. The file is then known verified to
    /// [`LocalStore`]'s `verified_path` while it stays the same file. An object too large for
    /// the cap goes through [`insert`](Self::insert) (hashed again).
    ///
    /// # Errors
    /// An I/O error.
    pub(crate) fn insert_verified(&self, path: &Path) -> Result<(ContentId, u64, SharedBytes)> {
        let (id, len, outboard, bytes, file) = self.store.hash_file(path)?;
        if self.adopt(path, &id, len, &outboard)? {
            self.store.remember_verified(&id, &file);
            return Ok((id, len, bytes));
        }
        let (again, len) = self.insert(path)?;
        if again != id {
            return Err(Error::corrupt(
                path.display(),
                0,
                format!("the file changed while it was cached: it hashed to {id}, then to {again}"),
            ));
        }
        Ok((id, len, bytes))
    }

    /// Removes object `id` from the cache.
    ///
    /// # Errors
    /// An I/O error.
    pub fn remove(&self, id: &ContentId) -> Result<()> {
        self.store.remove(id)
    }

    /// The bytes the cache directory holds now (objects, outboards and quarantined files).
    ///
    /// # Errors
    /// An I/O error scanning the directory.
    pub fn size(&self) -> Result<u64> {
        let quarantined: u64 = self.quarantined()?.iter().map(|(_, b)| b).sum();
        Ok(self.scan()?.iter().map(|e| e.bytes).sum::<u64>() + quarantined)
    }

    /// Removes the least recently used objects (never `keep`) until the cache holds at most its
    /// cap, and every quarantined file. Returns the bytes freed.
    ///
    /// # Errors
    /// An I/O error scanning the directory (removing a file another process removed first is
    /// not one).
    pub fn evict(&self, keep: Option<&ContentId>) -> Result<u64> {
        let _one = self
            .evicting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut freed = 0;
        for (path, bytes) in self.quarantined()? {
            if fs::remove_file(&path).is_ok() {
                freed += bytes;
            }
        }
        let mut entries = self.scan()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        entries.sort_by_key(|e| e.used);
        for e in entries {
            if total <= self.cap {
                break;
            }
            if Some(&e.id) == keep {
                continue;
            }
            self.store.remove(&e.id)?;
            total -= e.bytes;
            freed += e.bytes;
        }
        self.approx.store(total, Ordering::Relaxed);
        Ok(freed)
    }

    /// Learns the bytes the directory holds, by a scan, if no scan has yet (before the first
    /// insertion of this handle). An insertion by another thread during the scan may be
    /// counted twice: an overestimate, which only brings the next eviction scan (which counts
    /// exactly) forward.
    fn scan_once(&self) -> Result<()> {
        if self.approx.load(Ordering::Relaxed) != UNSCANNED {
            return Ok(());
        }
        let _one = self
            .evicting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.approx.load(Ordering::Relaxed) == UNSCANNED {
            let total: u64 = self.scan()?.iter().map(|e| e.bytes).sum();
            self.approx.store(total, Ordering::Relaxed);
        }
        Ok(())
    }

    fn quarantined(&self) -> Result<Vec<(PathBuf, u64)>> {
        let dir = self.store.root().join(QUARANTINE_DIR);
        let Ok(read) = fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in read {
            let e = e.map_err(|e| Error::io(dir.display(), e))?;
            if let Ok(m) = e.metadata() {
                out.push((e.path(), m.len()));
            }
        }
        Ok(out)
    }

    /// Every cached object with its size (with its outboard) and last use.
    fn scan(&self) -> Result<Vec<Entry>> {
        let objects = self.store.root().join(OBJECTS_DIR);
        let mut out = Vec::new();
        for a in read_dir(&objects)? {
            for b in read_dir(&a)? {
                for c in read_dir(&b)? {
                    let name = c
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if name.ends_with(OUTBOARD_SUFFIX) {
                        continue;
                    }
                    let hex = format!(
                        "{}{}{name}",
                        a.file_name()
                            .map(|n| n.to_string_lossy())
                            .unwrap_or_default(),
                        b.file_name()
                            .map(|n| n.to_string_lossy())
                            .unwrap_or_default(),
                    );
                    let Some(id) = ContentId::from_hex(&hex) else {
                        continue;
                    };
                    // Removed by another process since the listing: skip it.
                    let Ok(meta) = fs::symlink_metadata(&c) else {
                        continue;
                    };
                    let outboard =
                        fs::metadata(self.store.outboard_path(&id)).map_or(0, |m| m.len());
                    let used = meta
                        .accessed()
                        .or_else(|_| meta.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push(Entry {
                        id,
                        bytes: meta.len() + outboard,
                        used,
                    });
                }
            }
        }
        Ok(out)
    }
}

struct Entry {
    id: ContentId,
    bytes: u64,
    used: SystemTime,
}

/// The entries of folder `dir` (none if it does not exist or is not a folder).
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    match fs::read_dir(dir) {
        Ok(r) => Ok(r.filter_map(|e| e.ok().map(|e| e.path())).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(dir.display(), e)),
    }
}

#[cfg(test)]
mod tests {
    // Test code: a panic is a failed test.
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn file(dir: &Path, name: &str, len: usize, seed: u8) -> PathBuf {
        let path = dir.join(name);
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        fs::write(&path, bytes).unwrap();
        path
    }

    /// A measurement, not a check: how long opening a cache of many objects takes, and the
    /// first insertion (which scans). `cargo test -p milonga --features s3 --release --lib
    /// remote::cache -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement"]
    fn measure_opening_a_large_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let n: u32 = std::env::var("OBJECTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        {
            let cache = ReadCache::open(&dir, u64::MAX - 1).unwrap();
            for i in 0..n {
                let path = tmp.path().join("f");
                fs::write(&path, i.to_le_bytes()).unwrap();
                cache.insert(&path).unwrap();
            }
        }
        for round in 0..3 {
            let t = std::time::Instant::now();
            let cache = ReadCache::open(&dir, u64::MAX - 1).unwrap();
            let opened = t.elapsed();
            let path = file(tmp.path(), "x", 10, round);
            let t = std::time::Instant::now();
            cache.insert(&path).unwrap();
            println!(
                "{n} objects: open {:.3} ms, first insertion {:.3} ms",
                opened.as_secs_f64() * 1e3,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }

    /// Opening does not scan; the first insertion of a new handle still counts what earlier
    /// handles left, so the cap holds across processes and restarts.
    #[test]
    fn a_reopened_cache_keeps_its_cap_at_the_first_insertion() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let cap = 3 << 20;
        let first = {
            let cache = ReadCache::open(&dir, cap).unwrap();
            let (a, _) = cache.insert(&file(tmp.path(), "a", 1 << 20, 1)).unwrap();
            let (b, _) = cache.insert(&file(tmp.path(), "b", 1 << 20, 2)).unwrap();
            assert!(cache.contains(&a) && cache.contains(&b));
            a
        };
        let cache = ReadCache::open(&dir, cap).unwrap();
        assert_eq!(cache.approx.load(Ordering::Relaxed), UNSCANNED);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (c, _) = cache.insert(&file(tmp.path(), "c", 1536 << 10, 3)).unwrap();
        // 1 + 1 + 1.5 MiB (and outboards) is over the 3 MiB cap: the oldest went.
        assert!(cache.contains(&c));
        assert!(
            !cache.contains(&first),
            "the least recently used object stays"
        );
        assert!(cache.size().unwrap() <= cap);
    }
}
