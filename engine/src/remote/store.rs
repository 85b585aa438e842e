//! Objects on S3-compatible storage: [`RemoteStore`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use milonga_sdk::outboard::{outboard_len, verify_range, OutboardBuilder, ReadAt, GROUP_BYTES};
use milonga_sdk::{ContentId, Error, ReadSeek, Result, SharedBytes};
use object_store::PutPayload;

use super::cache::ReadCache;
use super::client::{Created, ObjectInfo, Remote};
use crate::store::{
    map_file, ObjectStore, ObjectWriter, Stage, StagedWriter, OBJECTS_DIR, OUTBOARD_SUFFIX,
};

/// Where damaged objects are moved, under the remote's prefix, as `<hex>.<nanos>`.
pub const REMOTE_QUARANTINE_DIR: &str = "quarantine";

/// Objects larger than this are looked for (HEAD) before they are uploaded, so that content
/// already stored is not sent again.
const HEAD_FIRST_BYTES: u64 = 1 << 20;

/// Outboards kept in memory for range reads, in bytes (an outboard is 0.39 % of its object).
const OUTBOARD_MEMORY: u64 = 64 << 20;

/// A content-addressed store on S3-compatible object storage, with a local read-through cache.
///
/// Layout under the remote's prefix (see `docs/FORMAT.md`, "Remote objects"):
/// `objects/v1/blake3/<hex[0..2]>/<hex[2..4]>/<hex[4..]>` for the object and `<...>.obao` beside
/// it for its outboard (objects of more than 16 KiB), the local layout; damaged objects are
/// moved to `quarantine/<hex>.<nanos>`.
#[derive(Clone)]
pub struct RemoteStore {
    remote: Remote,
    cache: Arc<ReadCache>,
    outboards: Arc<Mutex<Outboards>>,
    reads: Arc<ReadCounters>,
}

/// What a [`RemoteStore`] (with its clones) has asked of the server to read objects: whole
/// downloads, ranged GETs and outboards. See [`RemoteStore::read_requests`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadRequests {
    /// Requests sent.
    pub requests: u64,
    /// Times a read waited for the server: requests sent together (at the same time, none
    /// needing another's answer) count once.
    pub round_trips: u64,
}

#[derive(Default)]
struct ReadCounters {
    requests: AtomicU64,
    round_trips: AtomicU64,
}

impl ReadCounters {
    fn add(&self, requests: u64) {
        self.requests.fetch_add(requests, Ordering::Relaxed);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore")
            .field("remote", &self.remote.url())
            .field("cache", &self.cache.dir())
            .finish_non_exhaustive()
    }
}

/// Outboards fetched for range reads, least recently used first out, bounded in bytes.
struct Outboards {
    lru: lru::LruCache<ContentId, Arc<Vec<u8>>>,
    bytes: u64,
}

impl Outboards {
    fn get(&mut self, id: &ContentId) -> Option<Arc<Vec<u8>>> {
        self.lru.get(id).cloned()
    }

    fn put(&mut self, id: ContentId, ob: Arc<Vec<u8>>) {
        self.bytes += ob.len() as u64;
        if let Some(old) = self.lru.put(id, ob) {
            self.bytes -= old.len() as u64;
        }
        while self.bytes > OUTBOARD_MEMORY {
            match self.lru.pop_lru() {
                Some((_, old)) => self.bytes -= old.len() as u64,
                None => break,
            }
        }
    }

    fn forget(&mut self, id: &ContentId) {
        if let Some(old) = self.lru.pop(id) {
            self.bytes -= old.len() as u64;
        }
    }
}

impl RemoteStore {
    /// A store on `remote` whose downloads go through `cache`.
    pub fn new(remote: Remote, cache: ReadCache) -> RemoteStore {
        RemoteStore {
            remote,
            cache: Arc::new(cache),
            outboards: Arc::new(Mutex::new(Outboards {
                lru: lru::LruCache::new(NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN)),
                bytes: 0,
            })),
            reads: Arc::default(),
        }
    }

    /// The requests this store (with its clones) has sent to read objects since it was made,
    /// and the round trips they took (for tests and benchmarks: the first range read of an
    /// object fetches its outboard and its bytes at the same time, one round trip).
    pub fn read_requests(&self) -> ReadRequests {
        ReadRequests {
            requests: self.reads.requests.load(Ordering::Relaxed),
            round_trips: self.reads.round_trips.load(Ordering::Relaxed),
        }
    }

    /// Opens the store at `url` (`s3://bucket/prefix`, see [`Remote::from_url`]) with the
    /// default read-through cache ([`ReadCache::default_dir`], [`ReadCache::default_cap`]).
    ///
    /// # Errors
    /// As [`Remote::from_url`], or an I/O error opening the cache.
    pub fn from_url(url: &str) -> Result<RemoteStore> {
        let remote = Remote::from_url(url)?;
        let cache = ReadCache::open(&ReadCache::default_dir(), ReadCache::default_cap())?;
        Ok(RemoteStore::new(remote, cache))
    }

    /// The remote location.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The read-through cache.
    pub fn cache(&self) -> &ReadCache {
        &self.cache
    }

    /// The key of object `id`, relative to the remote's prefix.
    pub fn object_key(id: &ContentId) -> String {
        let hex = id.to_hex();
        format!("{OBJECTS_DIR}/{}/{}/{}", &hex[0..2], &hex[2..4], &hex[4..])
    }

    /// The key of the outboard of object `id`.
    pub fn outboard_key(id: &ContentId) -> String {
        format!("{}{OUTBOARD_SUFFIX}", Self::object_key(id))
    }

    fn mismatch(&self, id: &ContentId, actual: &ContentId, moved: String) -> Error {
        Error::ChecksumMismatch {
            file: format!("{}{moved}", self.describe(id)),
            expected: id.to_hex(),
            actual: actual.to_hex(),
        }
    }

    /// The error for a remote object found to hash to `actual`, after moving it to quarantine.
    fn damaged(&self, id: &ContentId, actual: &ContentId) -> Error {
        let moved = match self.quarantine(id) {
            Ok(Some(to)) => format!("; moved to {to}"),
            Ok(None) => String::new(),
            Err(e) => format!("; moving it to quarantine failed: {e}"),
        };
        self.mismatch(id, actual, moved)
    }

    /// Downloads object `id` into a temporary file of the cache and hashes it into the cache.
    /// Returns the id the content has (`None` if there is no such object), its length and the
    /// mapping that was hashed.
    fn download(
        &self,
        id: &ContentId,
        len: Option<u64>,
    ) -> Result<Option<(ContentId, u64, SharedBytes)>> {
        let key = Self::object_key(id);
        let tmp = self.cache.tmp_path();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(tmp.display(), e))?;
        let result = (|| {
            let mut out = BufWriter::with_capacity(1 << 20, file);
            self.reads.add(1);
            let Some(info) = self.remote.get_to(&key, &mut out, &tmp.display())? else {
                return Ok(None);
            };
            out.flush().map_err(|e| Error::io(tmp.display(), e))?;
            drop(out);
            if let Some(want) = len {
                if info.size != want {
                    return Err(Error::corrupt(
                        self.describe(id),
                        info.size.min(want),
                        format!(
                            "the remote object has {} bytes, the object was recorded with {want}",
                            info.size
                        ),
                    ));
                }
            }
            self.cache.insert_verified(&tmp).map(Some)
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    /// Makes sure object `id` is in the cache, verified (downloading it if needed), and
    /// records its use. Returns the verified mapping of a download (`None` if the object was
    /// cached already).
    fn ensure_cached(&self, id: &ContentId, len: Option<u64>) -> Result<Option<SharedBytes>> {
        if self.cache.contains(id) {
            self.cache.touch(id);
            return Ok(None);
        }
        match self.download(id, len)? {
            None => Err(Error::MissingObject {
                object: id.to_hex(),
                path: self.remote.url_of(&Self::object_key(id)),
            }),
            Some((actual, _, _)) if actual != *id => {
                let _ = self.cache.remove(&actual);
                Err(self.damaged(id, &actual))
            }
            Some((_, _, bytes)) => Ok(Some(bytes)),
        }
    }

    /// Runs `f` on the cached copy of `id`; a cached copy found damaged (which the local store
    /// quarantines) is downloaded again, once. After a download, `fresh` may answer from the
    /// mapping the download hashed instead (so that the read does not hash the file again).
    fn with_cached<T>(
        &self,
        id: &ContentId,
        len: Option<u64>,
        f: impl Fn(&ReadCache) -> Result<T>,
        fresh: impl Fn(SharedBytes) -> Option<T>,
    ) -> Result<T> {
        if let Some(t) = self.ensure_cached(id, len)?.and_then(&fresh) {
            return Ok(t);
        }
        match f(&self.cache) {
            Err(
                Error::ChecksumMismatch { .. }
                | Error::MissingObject { .. }
                | Error::Corrupt { .. },
            ) => {
                let _ = self.cache.remove(id);
                if let Some(t) = self.ensure_cached(id, len)?.and_then(&fresh) {
                    return Ok(t);
                }
                f(&self.cache)
            }
            other => other,
        }
    }

    /// The outboard of `id` (recorded length `len`): from memory, else from the remote. `None`
    /// if the remote has none of the right length.
    fn outboard(&self, id: &ContentId, len: u64) -> Result<Option<Arc<Vec<u8>>>> {
        match self.memory_outboard(id, len) {
            Some(ob) => Ok(Some(ob)),
            None => self.fetch_outboard(id, len),
        }
    }

    /// The outboard of `id` (recorded length `len`) if it is in memory (or empty).
    fn memory_outboard(&self, id: &ContentId, len: u64) -> Option<Arc<Vec<u8>>> {
        let want = outboard_len(len);
        if want == 0 {
            return Some(Arc::new(Vec::new()));
        }
        self.lock_outboards()
            .get(id)
            .filter(|ob| ob.len() as u64 == want)
    }

    /// The outboard of `id` (recorded length `len`) from the remote, then kept in memory.
    /// `None` if the remote has none of the right length.
    fn fetch_outboard(&self, id: &ContentId, len: u64) -> Result<Option<Arc<Vec<u8>>>> {
        let want = outboard_len(len);
        let Some((bytes, _)) = self.remote.get(&Self::outboard_key(id))? else {
            return Ok(None);
        };
        if bytes.len() as u64 != want {
            return Ok(None);
        }
        let ob = Arc::new(bytes.to_vec());
        self.lock_outboards().put(*id, Arc::clone(&ob));
        Ok(Some(ob))
    }

    fn lock_outboards(&self) -> std::sync::MutexGuard<'_, Outboards> {
        self.outboards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Uploads the outboard of `id` (derived data: overwritten, never trusted without checking
    /// against the id).
    fn put_outboard(&self, id: &ContentId, outboard: &[u8]) -> Result<()> {
        if outboard.is_empty() {
            return Ok(());
        }
        self.remote
            .put(&Self::outboard_key(id), Bytes::copy_from_slice(outboard))
            .map(|_| ())
    }

    /// Fetches the remote object `id` and hashes it as it arrives (nothing is kept): its id,
    /// length and outboard, or `None` if there is none.
    fn fetch_and_hash(&self, id: &ContentId) -> Result<Option<(ContentId, u64, Vec<u8>)>> {
        let mut h = HashWriter(OutboardBuilder::new());
        let what = format!("the hash of {}", self.describe(id));
        let Some(info) = self.remote.get_to(&Self::object_key(id), &mut h, &what)? else {
            return Ok(None);
        };
        let (actual, outboard) = h.0.finish();
        Ok(Some((actual, info.size, outboard)))
    }

    /// Publishes the staged file `path` (hashed as `id`, `len` bytes, outboard `outboard`):
    /// creates the remote object only if absent (one conditional PUT, or a multipart upload
    /// with a conditional completion above the remote's `multipart_threshold`); an existing
    /// one is success once it is fetched and hashes to `id`, and is replaced (after
    /// quarantine) if it does not. Once published, the staged file is moved into the
    /// read-through cache (see [`ReadCache::adopt`]).
    fn publish(&self, path: &Path, id: &ContentId, len: u64, outboard: &[u8]) -> Result<()> {
        let key = Self::object_key(id);
        // The staged file is mapped, not read into memory; the mapping is the upload's payload
        // (kept for retries; a multipart upload sends slices of it).
        let file = File::open(path).map_err(|e| Error::io(path.display(), e))?;
        let mapped = Bytes::from_owner(Mapped(map_file(&file, path)?));
        drop(file);
        let multipart = len > self.remote.multipart_threshold();
        let mut exists = len > HEAD_FIRST_BYTES && self.remote.head(&key)?.is_some();
        for _ in 0..3 {
            if !exists {
                let created = if multipart {
                    self.remote.put_multipart_if_absent(&key, mapped.clone())?
                } else {
                    self.remote
                        .put_payload_if_absent(&key, PutPayload::from_bytes(mapped.clone()))?
                };
                match created {
                    Created::Created(_) => {
                        // The outboard after the object: a missing outboard is rebuilt by the
                        // first range read that needs it.
                        let _ = self.put_outboard(id, outboard);
                        drop(mapped);
                        self.adopt(path, id, len, outboard);
                        return Ok(());
                    }
                    Created::AlreadyExists => {}
                }
            }
            // Another writer (or an earlier attempt of this one) stored it: success only once
            // the stored bytes hash to the id.
            match self.fetch_and_hash(id)? {
                Some((actual, _, _)) if actual == *id => {
                    if self.outboard(id, len)?.is_none() {
                        let _ = self.put_outboard(id, outboard);
                    }
                    drop(mapped);
                    self.adopt(path, id, len, outboard);
                    return Ok(());
                }
                Some(_) => {
                    // Damaged: move it aside and create it afresh.
                    self.quarantine(id)?;
                    exists = false;
                }
                // Removed since (garbage collection): create it.
                None => exists = false,
            }
        }
        Err(Error::Remote {
            url: self.remote.url_of(&key),
            reason: "the object kept changing while it was being published (three attempts)"
                .to_owned(),
        })
    }

    /// Moves the published staged file into the read-through cache, so that this process's
    /// first read of the object does not download it. Best effort: a file the cache cannot
    /// take by a rename (another file system, larger than the cap) stays where it is, for
    /// the caller to remove.
    fn adopt(&self, path: &Path, id: &ContentId, len: u64, outboard: &[u8]) {
        let _ = self.cache.adopt(path, id, len, outboard);
    }

    /// Bytes `range` of object `id` straight from the remote: the outboard (fetched once and
    /// kept in memory) and the 16 KiB groups covering the range, verified before they are
    /// returned. `None` if the object has no usable outboard. When the outboard is not in
    /// memory it is fetched at the same time as the groups (one round trip, not two).
    fn remote_range(&self, id: &ContentId, len: u64, range: Range<u64>) -> Result<Option<Vec<u8>>> {
        let what = self.describe(id);
        if range.start > range.end || range.end > len {
            return Err(Error::OutOfRange {
                file: format!("{what} (byte range {}..{})", range.start, range.end),
                index: range.end,
                len,
            });
        }
        if range.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let start = range.start / GROUP_BYTES * GROUP_BYTES;
        let end = range
            .end
            .div_ceil(GROUP_BYTES)
            .saturating_mul(GROUP_BYTES)
            .min(len);
        let key = Self::object_key(id);
        let (outboard, span) = match self.memory_outboard(id, len) {
            Some(ob) => {
                self.reads.add(1);
                (Ok(Some(ob)), self.remote.get_range(&key, start..end))
            }
            None => {
                // The outboard on a thread of its own while this one fetches the groups: both
                // requests are in flight together.
                self.reads.add(2);
                std::thread::scope(|s| {
                    let ob = s.spawn(|| self.fetch_outboard(id, len));
                    let span = self.remote.get_range(&key, start..end);
                    let ob = ob.join().unwrap_or_else(|_| {
                        Err(Error::Remote {
                            url: self.remote.url_of(&Self::outboard_key(id)),
                            reason: "fetching the outboard panicked".to_owned(),
                        })
                    });
                    (ob, span)
                })
            }
        };
        let Some(outboard) = outboard? else {
            return Ok(None);
        };
        let span = span.map_err(|e| match e {
            // The object is shorter than recorded.
            Error::OutOfRange { .. } => Error::corrupt(
                &what,
                start,
                format!("the remote object is shorter than its recorded {len} bytes"),
            ),
            Error::MissingObject { .. } => Error::MissingObject {
                object: id.to_hex(),
                path: self.remote.url_of(&key),
            },
            other => other,
        })?;
        let data = Span { start, bytes: span };
        verify_range(&data, len, &outboard[..], id, range, &what).map(Some)
    }
}

/// A fetched run of an object's bytes, read at object offsets.
struct Span {
    start: u64,
    bytes: Bytes,
}

impl ReadAt for Span {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let from = offset
            .checked_sub(self.start)
            .and_then(|o| usize::try_from(o).ok());
        let part = from.and_then(|f| self.bytes.get(f..f.checked_add(buf.len())?));
        match part {
            Some(p) => {
                buf.copy_from_slice(p);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "outside the fetched range",
            )),
        }
    }
}

/// A memory map as the owner of an upload's bytes.
struct Mapped(SharedBytes);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// Feeds what is written into it to an outboard builder.
struct HashWriter(OutboardBuilder);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl ObjectStore for RemoteStore {
    fn describe(&self, id: &ContentId) -> String {
        format!(
            "object {id} ({})",
            self.remote.url_of(&Self::object_key(id))
        )
    }

    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        let path = self.cache.tmp_path();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(path.display(), e))?;
        Ok(Box::new(StagedWriter::new(self.clone(), file, path)))
    }

    fn ingest(&self, path: &Path) -> Result<(ContentId, u64)> {
        let file = File::open(path).map_err(|e| Error::io(path.display(), e))?;
        let mut h = HashWriter(OutboardBuilder::new());
        let len = io::copy(&mut &file, &mut h).map_err(|e| Error::io(path.display(), e))?;
        let (id, outboard) = h.0.finish();
        self.publish(path, &id, len, &outboard)?;
        let _ = fs::remove_file(path);
        Ok((id, len))
    }

    fn contains(&self, id: &ContentId) -> bool {
        matches!(self.remote.head(&Self::object_key(id)), Ok(Some(_)))
    }

    fn open(&self, id: &ContentId, len: Option<u64>) -> Result<Box<dyn ReadSeek>> {
        self.with_cached(id, len, |c| c.store().open(id, len), |_| None)
    }

    fn bytes(&self, id: &ContentId, len: Option<u64>) -> Result<SharedBytes> {
        // A download's own mapping, hashed as it was cached: not hashed a second time.
        self.with_cached(id, len, |c| c.store().bytes(id, len), Some)
    }

    fn read_range(&self, id: &ContentId, len: u64, range: Range<u64>) -> Result<Vec<u8>> {
        if self.cache.contains(id) {
            // A damaged cached copy (which the cache quarantines) is read from the remote.
            if let r @ (Ok(_) | Err(Error::OutOfRange { .. })) =
                self.cache.store().read_range(id, len, range.clone())
            {
                self.cache.touch(id);
                return r;
            }
        }
        match self.remote_range(id, len, range.clone()) {
            Ok(Some(v)) => return Ok(v),
            Ok(None) | Err(Error::ChecksumMismatch { .. }) => {
                // No outboard, or the data or the outboard is damaged: fetching the whole
                // object tells which (a damaged object is quarantined; the outboard is
                // uploaded again from the verified copy).
                self.lock_outboards().forget(id);
            }
            Err(e) => return Err(e),
        }
        self.ensure_cached(id, Some(len))?;
        if let Ok(ob) = fs::read(self.cache.store().outboard_path(id)) {
            let _ = self.put_outboard(id, &ob);
        }
        self.cache.store().read_range(id, len, range)
    }

    fn verify_object(&self, id: &ContentId, len: Option<u64>) -> Result<u64> {
        let Some((actual, size, outboard)) = self.fetch_and_hash(id)? else {
            return Err(Error::MissingObject {
                object: id.to_hex(),
                path: self.remote.url_of(&Self::object_key(id)),
            });
        };
        if let Some(want) = len {
            if size != want {
                return Err(Error::corrupt(
                    self.describe(id),
                    size.min(want),
                    format!(
                        "the remote object has {size} bytes, the object was recorded with {want}"
                    ),
                ));
            }
        }
        if actual != *id {
            // Reported, not moved: `Workspace::repair` decides what to quarantine.
            return Err(self.mismatch(id, &actual, String::new()));
        }
        self.lock_outboards().forget(id);
        let stored = match self.outboard(id, size)? {
            Some(ob) => *ob == outboard,
            None => false,
        };
        if !stored {
            self.put_outboard(id, &outboard)?;
        }
        Ok(size)
    }

    fn quarantine(&self, id: &ContentId) -> Result<Option<String>> {
        let key = Self::object_key(id);
        self.lock_outboards().forget(id);
        let _ = self.cache.remove(id);
        // Kept for inspection under quarantine/ (a copy on the server: S3 has no rename), then
        // deleted from its place.
        let to = format!("{REMOTE_QUARANTINE_DIR}/{}.{}", id.to_hex(), nanos());
        match self.remote.copy(&key, &to) {
            Ok(()) => {}
            // Moved by another process first.
            Err(Error::MissingObject { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        self.remote.delete(&key)?;
        self.remote.delete(&Self::outboard_key(id))?;
        Ok(Some(self.remote.url_of(&to)))
    }

    fn verified_path(&self, id: &ContentId, len: u64) -> Result<Option<PathBuf>> {
        self.with_cached(
            id,
            Some(len),
            |c| c.store().verified_path(id, len),
            |_| None,
        )
    }

    fn local_path(&self, id: &ContentId) -> Result<Option<PathBuf>> {
        self.ensure_cached(id, None)?;
        self.cache.store().local_path(id)
    }

    fn list(&self) -> Result<Vec<ContentId>> {
        let mut out = Vec::new();
        self.for_each_object(|id, _| out.push(id))?;
        out.sort();
        Ok(out)
    }

    fn remove(&self, id: &ContentId) -> Result<()> {
        self.lock_outboards().forget(id);
        self.remote.delete(&Self::object_key(id))?;
        self.remote.delete(&Self::outboard_key(id))?;
        let _ = self.cache.remove(id);
        Ok(())
    }
}

impl RemoteStore {
    /// Calls `f` with every stored object (not outboards) and its listing entry (size, last
    /// modification), page by page.
    ///
    /// # Errors
    /// A failed listing.
    pub(crate) fn for_each_object(&self, mut f: impl FnMut(ContentId, &ObjectInfo)) -> Result<()> {
        for info in self.remote.list(OBJECTS_DIR) {
            let info = info?;
            let Some(rest) = info.key.strip_prefix(OBJECTS_DIR) else {
                continue;
            };
            if rest.ends_with(OUTBOARD_SUFFIX) {
                continue;
            }
            let hex: String = rest.chars().filter(|c| *c != '/').collect();
            if let Some(id) = ContentId::from_hex(&hex) {
                f(id, &info);
            }
        }
        Ok(())
    }
}

impl Stage for RemoteStore {
    fn publish_staged(
        &self,
        staged: &Path,
        id: &ContentId,
        len: u64,
        outboard: &[u8],
    ) -> Result<()> {
        self.publish(staged, id, len, outboard)
    }
}
