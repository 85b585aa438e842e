//! Objects in a local directory.
//!
//! Layout under the store root (see `docs/FORMAT.md`):
//! `objects/v1/blake3/<hex[0..2]>/<hex[2..4]>/<hex[4..]>`, the BLAKE3 outboard of each object
//! of more than 16 KiB beside it as `<hex[4..]>.obao` (see [`OUTBOARD_SUFFIX`]), staged in
//! `tmp/`; damaged objects are moved to `quarantine/`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use milonga_sdk::outboard::{outboard_len, verify_range, OutboardBuilder, ReadAt};
use milonga_sdk::{ContentId, Error, ReadSeek, Result, SharedBytes};

use super::{map::map_file, ObjectStore, ObjectWriter, VerifyingReader};

/// The path of the objects folder relative to the store root; the layout version is in the path.
pub const OBJECTS_DIR: &str = "objects/v1/blake3";
/// The suffix of an outboard's file name, beside its object (`<60 hex>.obao`): BLAKE3
/// outboards with 16 KiB chunk groups, post order (see [`milonga_sdk::outboard`]). In the
/// object's own folder, so that writing it creates no folder.
pub const OUTBOARD_SUFFIX: &str = ".obao";
/// The staging folder for objects being written.
pub const TMP_DIR: &str = "tmp";
/// Where objects found damaged are moved, as `<hex>.<nanos>`.
pub const QUARANTINE_DIR: &str = "quarantine";

/// A content-addressed store in a local directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    sync: bool,
    /// Open objects of recent range reads, shared by clones of the store.
    handles: Arc<Mutex<lru::LruCache<ContentId, Arc<RangeHandle>>>>,
    /// Whole objects hashed by this store and its clones (see [`LocalStore::objects_hashed`]).
    hashed: Arc<AtomicU64>,
}

/// How many objects range reads keep open (with their outboards in memory, up to
/// [`MAX_CACHED_OUTBOARD`] each): an eighth of the process's limit of open files, between 64
/// and 2,048 (2,048 chunk files are a stream of about 2 GiB).
fn range_handles() -> usize {
    // The soft limit, from /proc (no unsafe call needed); 256 where it cannot be read.
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<u64>().ok())
        })
        .map_or(256, |soft| (soft / 8).clamp(64, 2048) as usize)
}
/// Outboards up to this size (objects up to 256 MiB) are kept in memory by an open range
/// handle; larger ones are read pair by pair from their file.
const MAX_CACHED_OUTBOARD: u64 = 1 << 20;

/// An object opened for range reads: its file (checked to be a regular file of the recorded
/// length) and its outboard. The outboard's pairs are checked against the id on every read, so
/// keeping them in memory trusts nothing; a mismatch drops the handle and the read starts over
/// from the file system.
#[derive(Debug)]
struct RangeHandle {
    file: File,
    len: u64,
    outboard: Outboard,
}

#[derive(Debug)]
enum Outboard {
    Memory(Vec<u8>),
    File(File),
}

impl milonga_sdk::outboard::ReadAt for Outboard {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Outboard::Memory(v) => v[..].read_exact_at(offset, buf),
            Outboard::File(f) => f.read_exact_at(offset, buf),
        }
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Files verified whole in this process, by object and file identity (device, inode, length,
/// modification time): a file swapped in or changed afterwards is verified again.
type FileStamp = (u64, u64, u64, i128);
fn verified_files() -> &'static Mutex<HashMap<ContentId, FileStamp>> {
    static V: OnceLock<Mutex<HashMap<ContentId, FileStamp>>> = OnceLock::new();
    V.get_or_init(|| Mutex::new(HashMap::new()))
}

fn stamp(meta: &fs::Metadata) -> FileStamp {
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    (dev, ino, meta.len(), mtime)
}

/// What kind of file system entry `meta` describes, for "not a regular file" errors.
fn kind_of(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading without following a symbolic link and without blocking on a FIFO.
fn open_nofollow(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    o.open(path)
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `root`.
    ///
    /// # Errors
    /// An I/O error creating the folders.
    pub fn open(root: &Path) -> Result<Self> {
        let objects = root.join(OBJECTS_DIR);
        let tmp = root.join(TMP_DIR);
        for d in [&objects, &tmp] {
            fs::create_dir_all(d).map_err(|e| Error::io(d.display(), e))?;
        }
        Ok(LocalStore {
            root: root.to_owned(),
            objects,
            tmp,
            sync: true,
            handles: Arc::new(Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(range_handles()).expect("at least 64"),
            ))),
            hashed: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Turns fsync off (for throwaway stores in tests and benches): commits stay atomic but are
    /// not durable across a power loss.
    pub fn without_sync(mut self) -> Self {
        self.sync = false;
        self
    }

    /// How many times this store (with its clones) has hashed a whole object since it was
    /// opened: to publish, ingest, verify, map or rebuild an outboard (range reads of objects
    /// with an outboard hash only the groups they read and are not counted). For tests and
    /// benchmarks that check that a read hashes its bytes once.
    pub fn objects_hashed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    fn hashed_one(&self) {
        self.hashed.fetch_add(1, Ordering::Relaxed);
    }

    /// Maps the file at `path` (outside the objects folder, e.g. a finished download in `tmp/`)
    /// and hashes the mapping: its id, length, outboard, the mapping (the very bytes that were
    /// hashed) and the open file.
    ///
    /// # Errors
    /// An I/O error opening or mapping the file.
    #[cfg(feature = "s3")]
    pub(crate) fn hash_file(
        &self,
        path: &Path,
    ) -> Result<(ContentId, u64, Vec<u8>, SharedBytes, File)> {
        let file = File::open(path).map_err(|e| Error::io(path.display(), e))?;
        let bytes = map_file(&file, path)?;
        self.hashed_one();
        let mut b = OutboardBuilder::new();
        b.update((*bytes).as_ref());
        let len = b.len();
        let (id, outboard) = b.finish();
        Ok((id, len, outboard, bytes, file))
    }

    /// Records that object `id`'s file is `file` (already open, its content hashed as `id` by
    /// this process): [`verified_path`](ObjectStore::verified_path) then trusts it without
    /// hashing it again while its identity (device, inode, length, modification time) stays
    /// the same. Nothing is recorded if the object's path holds another file.
    #[cfg(feature = "s3")]
    pub(crate) fn remember_verified(&self, id: &ContentId, file: &File) {
        let (Ok(held), Ok(placed)) = (file.metadata(), fs::symlink_metadata(self.object_path(id)))
        else {
            return;
        };
        let now = stamp(&held);
        if placed.file_type().is_file() && stamp(&placed) == now {
            verified_files()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(*id, now);
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn fan_out(base: &Path, id: &ContentId) -> PathBuf {
        let hex = id.to_hex();
        base.join(&hex[0..2]).join(&hex[2..4]).join(&hex[4..])
    }

    /// The path where object `id` lives.
    pub fn object_path(&self, id: &ContentId) -> PathBuf {
        Self::fan_out(&self.objects, id)
    }

    /// The path of the outboard of object `id` (objects of more than 16 KiB have one).
    pub fn outboard_path(&self, id: &ContentId) -> PathBuf {
        let mut p = Self::fan_out(&self.objects, id).into_os_string();
        p.push(OUTBOARD_SUFFIX);
        PathBuf::from(p)
    }

    fn new_tmp_path(&self) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.tmp
            .join(format!("{}-{}-{n}.tmp", std::process::id(), nanos()))
    }

    /// Writes the outboard of `id` (derived data: atomic by rename, but not fsynced; a missing
    /// or damaged outboard is rebuilt from the object when a read finds it so).
    fn write_outboard(&self, id: &ContentId, outboard: &[u8]) -> Result<()> {
        if outboard.is_empty() {
            return Ok(());
        }
        let dest = self.outboard_path(id);
        // Written in place: a torn or half-written outboard has the wrong length or fails
        // verification, and is then rebuilt from the object.
        fs::write(&dest, outboard).map_err(|e| Error::io(dest.display(), e))
    }

    /// Moves a complete, synced staging file into place under `id` (data first, then the
    /// directory entry that points to it). An existing entry under `id` is kept only if it is a
    /// regular file whose content verifies; anything else is moved aside into quarantine first.
    pub(crate) fn publish(
        &self,
        staged: &Path,
        id: &ContentId,
        len: u64,
        outboard: &[u8],
    ) -> Result<()> {
        let dest = self.object_path(id);
        let parent = dest.parent().expect("object paths have parents");
        if fs::symlink_metadata(&dest).is_ok() {
            match self.check_file(id, Some(len)).and_then(|(f, p)| {
                let bytes = map_file(&f, &p)?;
                self.hashed_one();
                let actual = ContentId::of((*bytes).as_ref());
                Ok((f, actual))
            }) {
                Ok((existing, actual)) if actual == *id => {
                    // Identical content is already stored: publishing it again is success.
                    // Refresh its modification time (garbage collection keeps recent objects)
                    // through the opened file (never a link's target), make sure its
                    // directory entry is durable, whoever created it, and that it has its
                    // outboard.
                    let _ = fs::remove_file(staged);
                    let _ = existing.set_modified(std::time::SystemTime::now());
                    if !outboard.is_empty() && !self.outboard_path(id).exists() {
                        self.write_outboard(id, outboard)?;
                    }
                    if self.sync {
                        sync_dir(parent)?;
                    }
                    return Ok(());
                }
                _ => {
                    // Damaged, of the wrong length or not a regular file: never trust it.
                    self.quarantine(id)?;
                }
            }
        }
        if !parent.exists() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent.display(), e))?;
            if self.sync {
                // Make the new fan-out folders durable.
                if let Some(grand) = parent.parent() {
                    sync_dir(grand)?;
                    if let Some(great) = grand.parent() {
                        sync_dir(great)?;
                    }
                }
            }
        }
        let mut perms = fs::metadata(staged)
            .map_err(|e| Error::io(staged.display(), e))?
            .permissions();
        perms.set_readonly(true);
        fs::set_permissions(staged, perms).map_err(|e| Error::io(staged.display(), e))?;
        fs::rename(staged, &dest).map_err(|e| Error::io(dest.display(), e))?;
        if self.sync {
            sync_dir(parent)?;
        }
        // The outboard after the object is durable, outside the commit's fsyncs: it is derived
        // data (a process that dies before writing it leaves an object whose first range read
        // or `verify` rebuilds it).
        let _ = self.write_outboard(id, outboard);
        Ok(())
    }

    /// Opens object `id`'s file and checks that it is a regular file of length `len` (where
    /// known) before anything is read from it.
    fn check_file(&self, id: &ContentId, len: Option<u64>) -> Result<(File, PathBuf)> {
        let path = self.object_path(id);
        let file = match open_nofollow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingObject {
                    object: id.to_hex(),
                    path: path.display().to_string(),
                })
            }
            Err(e) => {
                // A symbolic link (ELOOP with O_NOFOLLOW) or another entry that cannot be
                // opened as a file.
                return match fs::symlink_metadata(&path) {
                    Ok(m) if !m.file_type().is_file() => Err(self.not_regular(id, &path, &m)),
                    _ => Err(Error::io(path.display(), e)),
                };
            }
        };
        let meta = file.metadata().map_err(|e| Error::io(path.display(), e))?;
        if !meta.file_type().is_file() {
            return Err(self.not_regular(id, &path, &meta));
        }
        if let Some(want) = len {
            if meta.len() != want {
                return Err(Error::corrupt(
                    format!("object {id} ({})", path.display()),
                    meta.len().min(want),
                    format!(
                        "the file has {} bytes, the object was recorded with {want}",
                        meta.len()
                    ),
                ));
            }
        }
        Ok((file, path))
    }

    fn not_regular(&self, id: &ContentId, path: &Path, meta: &fs::Metadata) -> Error {
        Error::corrupt(
            format!("object {id} ({})", path.display()),
            0,
            format!(
                "is {}, not a regular file: objects are regular files",
                kind_of(meta)
            ),
        )
    }

    /// The outboard of `id` as stored, if it has the length a file of `len` bytes needs: in
    /// memory if it is small, else its open file.
    fn stored_outboard(&self, id: &ContentId, len: u64) -> Option<Outboard> {
        let f = open_nofollow(&self.outboard_path(id)).ok()?;
        let m = f.metadata().ok()?;
        let want = outboard_len(len);
        if !m.file_type().is_file() || m.len() != want {
            return None;
        }
        if want <= MAX_CACHED_OUTBOARD {
            let mut v = vec![0u8; want as usize];
            f.read_exact_at(0, &mut v).ok()?;
            Some(Outboard::Memory(v))
        } else {
            Some(Outboard::File(f))
        }
    }

    fn cached_handle(&self, id: &ContentId, len: u64) -> Option<Arc<RangeHandle>> {
        let mut h = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.get(id).filter(|h| h.len == len).cloned()
    }

    fn keep_handle(&self, id: &ContentId, file: File, len: u64, outboard: Outboard) {
        let handle = Arc::new(RangeHandle {
            file,
            len,
            outboard,
        });
        self.handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .put(*id, handle);
    }

    fn forget_handle(&self, id: &ContentId) {
        self.handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop(id);
    }

    /// Hashes the whole object, and on success rewrites its outboard; on a mismatch the object
    /// is quarantined and the error says where it went.
    fn rebuild_outboard(&self, id: &ContentId, file: &File, path: &Path) -> Result<Vec<u8>> {
        let bytes = map_file(file, path)?;
        self.hashed_one();
        let mut b = OutboardBuilder::new();
        b.update((*bytes).as_ref());
        let (actual, outboard) = b.finish();
        if actual != *id {
            return Err(self.damaged(id, actual));
        }
        // Best effort: on a read-only workspace the outboard is only kept in memory.
        let _ = self.write_outboard(id, &outboard);
        Ok(outboard)
    }

    /// The error for object `id` found to hash to `actual`, after moving it to quarantine.
    fn damaged(&self, id: &ContentId, actual: ContentId) -> Error {
        let moved = match self.quarantine(id) {
            Ok(Some(to)) => format!("; moved to {to}"),
            Ok(None) => String::new(),
            Err(e) => format!("; moving it to quarantine failed: {e}"),
        };
        Error::ChecksumMismatch {
            file: format!("{}{moved}", self.describe(id)),
            expected: id.to_hex(),
            actual: actual.to_hex(),
        }
    }

    fn quarantine_error(&self, id: &ContentId, e: Error) -> Error {
        match e {
            Error::ChecksumMismatch {
                file,
                expected,
                actual,
            } => {
                let moved = match self.quarantine(id) {
                    Ok(Some(to)) => format!("; moved to {to}"),
                    Ok(None) => String::new(),
                    Err(q) => format!("; moving it to quarantine failed: {q}"),
                };
                Error::ChecksumMismatch {
                    file: format!("{file}{moved}"),
                    expected,
                    actual,
                }
            }
            other => other,
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// fsyncs a directory so that the entries created in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io(dir.display(), e))?;
    f.sync_all().map_err(|e| Error::io(dir.display(), e))
}

impl ObjectStore for LocalStore {
    fn describe(&self, id: &ContentId) -> String {
        format!("object {} ({})", id, self.object_path(id).display())
    }

    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        let path = self.new_tmp_path();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(path.display(), e))?;
        // Held until the object is published: garbage collection removes only staging files
        // nobody holds (a file system without locks falls back on its age floor).
        let _ = file.try_lock();
        Ok(Box::new(StagedWriter::new(self.clone_handle(), file, path)))
    }

    fn ingest(&self, path: &Path) -> Result<(ContentId, u64)> {
        let file = File::open(path).map_err(|e| Error::io(path.display(), e))?;
        if self.sync {
            file.sync_all().map_err(|e| Error::io(path.display(), e))?;
        }
        let mut hasher = HashWriter(OutboardBuilder::new());
        self.hashed_one();
        let len = io::copy(&mut &file, &mut hasher).map_err(|e| Error::io(path.display(), e))?;
        let (id, outboard) = hasher.0.finish();
        // Move into the staging folder first when possible (same filesystem), so that publish
        // is one rename; fall back to a copy across filesystems.
        // The staging file is locked while it is in `tmp/` (garbage collection removes only
        // staging files nobody holds).
        let staged = self.new_tmp_path();
        let result = (|| {
            let _held = if fs::rename(path, &staged).is_ok() {
                File::open(&staged).inspect(|f| drop(f.try_lock())).ok()
            } else {
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&staged)
                    .map_err(|e| Error::io(staged.display(), e))?;
                let _ = out.try_lock();
                File::open(path)
                    .and_then(|mut src| io::copy(&mut src, &mut out))
                    .map_err(|e| Error::io(staged.display(), e))?;
                if self.sync {
                    out.sync_all().map_err(|e| Error::io(staged.display(), e))?;
                }
                let _ = fs::remove_file(path);
                Some(out)
            };
            self.publish(&staged, &id, len, &outboard)
        })();
        if result.is_err() {
            // Never leave a staging file behind on a failed ingest.
            let _ = fs::remove_file(&staged);
        }
        result.map(|()| (id, len))
    }

    fn contains(&self, id: &ContentId) -> bool {
        fs::symlink_metadata(self.object_path(id)).is_ok()
    }

    fn open(&self, id: &ContentId, len: Option<u64>) -> Result<Box<dyn ReadSeek>> {
        let (file, path) = self.check_file(id, len)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(path.display(), e))?
            .len();
        Ok(Box::new(VerifyingReader::new(
            io::BufReader::new(file),
            *id,
            self.describe(id),
            len,
        )))
    }

    fn bytes(&self, id: &ContentId, len: Option<u64>) -> Result<SharedBytes> {
        let (file, path) = self.check_file(id, len)?;
        let bytes = map_file(&file, &path)?;
        self.hashed_one();
        let actual = ContentId::of((*bytes).as_ref());
        if actual != *id {
            return Err(self.damaged(id, actual));
        }
        Ok(bytes)
    }

    fn read_range(&self, id: &ContentId, len: u64, range: Range<u64>) -> Result<Vec<u8>> {
        // Formatted only if there is an error to name the object in.
        let what = Described(self, id);
        if let Some(h) = self.cached_handle(id, len) {
            match verify_range(&h.file, len, &h.outboard, id, range.clone(), &what) {
                r @ (Ok(_) | Err(Error::OutOfRange { .. })) => return r,
                Err(_) => {
                    // The file may have been replaced or cut since it was opened: start over
                    // from the file system before concluding anything.
                    self.forget_handle(id);
                }
            }
        }
        let (file, path) = self.check_file(id, Some(len))?;
        if outboard_len(len) == 0 {
            let r = verify_range(&file, len, &[][..], id, range, &what)
                .map_err(|e| self.quarantine_error(id, e));
            if r.is_ok() {
                self.keep_handle(id, file, len, Outboard::Memory(Vec::new()));
            }
            return r;
        }
        let (outboard, checked) = match self.stored_outboard(id, len) {
            Some(ob) => (ob, false),
            None => {
                // Written before outboards existed (or its outboard was lost): build it now.
                let ob = self.rebuild_outboard(id, &file, &path)?;
                (Outboard::Memory(ob), true)
            }
        };
        match verify_range(&file, len, &outboard, id, range.clone(), &what) {
            Err(Error::ChecksumMismatch { .. }) if !checked => {
                // The data or the outboard is damaged: hashing the whole object tells which.
                // A damaged object is quarantined; a damaged outboard is rewritten.
                let ob = self.rebuild_outboard(id, &file, &path)?;
                let r = verify_range(&file, len, &ob[..], id, range, &what);
                if r.is_ok() {
                    self.keep_handle(id, file, len, Outboard::Memory(ob));
                }
                r
            }
            Err(Error::ChecksumMismatch { .. }) => {
                self.hashed_one();
                let actual = ContentId::of((*map_file(&file, &path)?).as_ref());
                Err(self.damaged(id, actual))
            }
            Ok(v) => {
                self.keep_handle(id, file, len, outboard);
                Ok(v)
            }
            other => other,
        }
    }

    fn verify_object(&self, id: &ContentId, len: Option<u64>) -> Result<u64> {
        let (file, path) = self.check_file(id, len)?;
        let bytes = map_file(&file, &path)?;
        let data = (*bytes).as_ref();
        self.hashed_one();
        let mut b = OutboardBuilder::new();
        b.update(data);
        let (actual, outboard) = b.finish();
        if actual != *id {
            // Reported, not moved: `Workspace::repair` decides what to quarantine.
            return Err(Error::ChecksumMismatch {
                file: self.describe(id),
                expected: id.to_hex(),
                actual: actual.to_hex(),
            });
        }
        let stored = fs::read(self.outboard_path(id)).unwrap_or_default();
        if stored != outboard {
            // Best effort: a read-only workspace verifies without storing outboards.
            let _ = self.write_outboard(id, &outboard);
        }
        Ok(data.len() as u64)
    }

    fn quarantine(&self, id: &ContentId) -> Result<Option<String>> {
        let path = self.object_path(id);
        if fs::symlink_metadata(&path).is_err() {
            return Ok(None);
        }
        self.forget_handle(id);
        let dir = self.root.join(QUARANTINE_DIR);
        fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        let to = dir.join(format!("{}.{}", id.to_hex(), nanos()));
        match fs::rename(&path, &to) {
            Ok(()) => {}
            // Another process moved it first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path.display(), e)),
        }
        let _ = fs::remove_file(self.outboard_path(id));
        verified_files()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        Ok(Some(to.display().to_string()))
    }

    fn verified_path(&self, id: &ContentId, len: u64) -> Result<Option<PathBuf>> {
        let (file, path) = self.check_file(id, Some(len))?;
        let meta = file.metadata().map_err(|e| Error::io(path.display(), e))?;
        let now = stamp(&meta);
        let known = verified_files()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .copied();
        if known != Some(now) {
            let bytes = map_file(&file, &path)?;
            self.hashed_one();
            let actual = ContentId::of((*bytes).as_ref());
            if actual != *id {
                return Err(self.damaged(id, actual));
            }
            verified_files()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(*id, now);
        }
        Ok(Some(path))
    }

    fn local_path(&self, id: &ContentId) -> Result<Option<PathBuf>> {
        let (_, path) = self.check_file(id, None)?;
        Ok(Some(path))
    }

    fn list(&self) -> Result<Vec<ContentId>> {
        let mut out = Vec::new();
        let read = |d: &Path| fs::read_dir(d).map_err(|e| Error::io(d.display(), e));
        for a in read(&self.objects)? {
            let a = a.map_err(|e| Error::io(self.objects.display(), e))?;
            if !a.path().is_dir() {
                continue;
            }
            for b in read(&a.path())? {
                let b = b.map_err(|e| Error::io(a.path().display(), e))?;
                if !b.path().is_dir() {
                    continue;
                }
                for c in read(&b.path())? {
                    let c = c.map_err(|e| Error::io(b.path().display(), e))?;
                    let hex = format!(
                        "{}{}{}",
                        a.file_name().to_string_lossy(),
                        b.file_name().to_string_lossy(),
                        c.file_name().to_string_lossy()
                    );
                    if let Some(id) = ContentId::from_hex(&hex) {
                        out.push(id);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove(&self, id: &ContentId) -> Result<()> {
        self.forget_handle(id);
        for path in [self.object_path(id), self.outboard_path(id)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path.display(), e)),
            }
        }
        Ok(())
    }
}

impl LocalStore {
    fn clone_handle(&self) -> Arc<LocalStore> {
        Arc::new(LocalStore {
            root: self.root.clone(),
            objects: self.objects.clone(),
            tmp: self.tmp.clone(),
            sync: self.sync,
            handles: Arc::clone(&self.handles),
            hashed: Arc::clone(&self.hashed),
        })
    }
}

/// An object's description ([`ObjectStore::describe`]), formatted only when displayed.
struct Described<'a>(&'a LocalStore, &'a ContentId);

impl std::fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.describe(self.1))
    }
}

/// Feeds what is copied into it to an outboard builder.
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

/// A store that publishes staged files: what [`StagedWriter::commit`] hands the staged object to.
pub(crate) trait Stage: Send + 'static {
    /// Whether the staged bytes are synced to disk before publishing.
    fn sync_staged(&self) -> bool {
        false
    }

    /// Publishes the staged file at `staged` as object `id` (it may move the file).
    fn publish_staged(
        &self,
        staged: &Path,
        id: &ContentId,
        len: u64,
        outboard: &[u8],
    ) -> Result<()>;
}

impl Stage for Arc<LocalStore> {
    fn sync_staged(&self) -> bool {
        self.sync
    }

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

/// An object being written into a local staging file, hashed (id and outboard) as it goes;
/// [`commit`](ObjectWriter::commit) publishes it through its store. Dropped uncommitted, or
/// once committed (published or not), its staging file is removed.
pub(crate) struct StagedWriter<S: Stage> {
    store: S,
    file: Option<BufWriter<File>>,
    path: PathBuf,
    hasher: OutboardBuilder,
}

impl<S: Stage> StagedWriter<S> {
    /// A writer into the new staging file `file` at `path`.
    pub(crate) fn new(store: S, file: File, path: PathBuf) -> Self {
        StagedWriter {
            store,
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            path,
            hasher: OutboardBuilder::new(),
        }
    }
}

impl<S: Stage> Write for StagedWriter<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("object writer already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or(buf));
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl<S: Stage> ObjectWriter for StagedWriter<S> {
    fn commit(mut self: Box<Self>) -> Result<(ContentId, u64)> {
        let path = std::mem::take(&mut self.path);
        let Some(file) = self.file.take() else {
            return Err(Error::io(
                path.display(),
                io::Error::other("object writer already committed"),
            ));
        };
        let hasher = std::mem::take(&mut self.hasher);
        let len = hasher.len();
        let (id, outboard) = hasher.finish();
        let result = (|| {
            let file = file
                .into_inner()
                .map_err(|e| Error::io(path.display(), e.into_error()))?;
            if self.store.sync_staged() {
                file.sync_all().map_err(|e| Error::io(path.display(), e))?;
            }
            // The staging file's lock is held (the file kept open) until it is published.
            let published = self.store.publish_staged(&path, &id, len, &outboard);
            drop(file);
            published
        })();
        // Published (a local store moved the file) or not, no staging file stays behind.
        let _ = fs::remove_file(&path);
        result.map(|()| (id, len))
    }
}

impl<S: Stage> Drop for StagedWriter<S> {
    fn drop(&mut self) {
        if self.file.take().is_some() && !self.path.as_os_str().is_empty() {
            // Not committed: discard the staged bytes.
            let _ = fs::remove_file(&self.path);
        }
    }
}
