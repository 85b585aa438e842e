//! Objects in a local directory.
//!
//! Layout under the store root (see `docs/FORMAT.md`):
//! `objects/v1/blake3/<hex[0..2]>/<hex[2..4]>/<hex[4..]>`, staged in `tmp/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use milonga_sdk::{ContentId, Error, ReadSeek, Result, SharedBytes};

use super::{map::map_file, verify_bytes, ObjectStore, ObjectWriter, VerifyingReader};

/// The path of the objects folder relative to the store root; the layout version is in the path.
pub const OBJECTS_DIR: &str = "objects/v1/blake3";
/// The staging folder for objects being written.
pub const TMP_DIR: &str = "tmp";

/// A content-addressed store in a local directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    sync: bool,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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
        })
    }

    /// Turns fsync off (for throwaway stores in tests and benches): commits stay atomic but are
    /// not durable across a power loss.
    pub fn without_sync(mut self) -> Self {
        self.sync = false;
        self
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path where object `id` lives.
    pub fn object_path(&self, id: &ContentId) -> PathBuf {
        let hex = id.to_hex();
        self.objects
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(&hex[4..])
    }

    fn new_tmp_path(&self) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.tmp
            .join(format!("{}-{}-{n}.tmp", std::process::id(), nanos()))
    }

    /// Moves a complete, synced staging file into place under `id` (data first, then the
    /// directory entry that points to it).
    fn publish(&self, staged: &Path, id: &ContentId) -> Result<()> {
        let dest = self.object_path(id);
        let parent = dest.parent().expect("object paths have parents");
        if dest.exists() {
            // Identical content is already stored: publishing it again is success. Refresh its
            // modification time (garbage collection keeps recent objects) and make sure its
            // directory entry is durable, whoever created it.
            let _ = fs::remove_file(staged);
            if let Ok(f) = File::open(&dest) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            if self.sync {
                sync_dir(parent)?;
            }
            return Ok(());
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
        Ok(())
    }

    fn open_file(&self, id: &ContentId) -> Result<(File, PathBuf)> {
        let path = self.object_path(id);
        match File::open(&path) {
            Ok(f) => Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::MissingObject {
                object: id.to_hex(),
                path: path.display().to_string(),
            }),
            Err(e) => Err(Error::io(path.display(), e)),
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
        Ok(Box::new(LocalObjectWriter {
            store: self.clone_handle(),
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            path,
            hasher: blake3::Hasher::new(),
            len: 0,
        }))
    }

    fn ingest(&self, path: &Path) -> Result<(ContentId, u64)> {
        let file = File::open(path).map_err(|e| Error::io(path.display(), e))?;
        if self.sync {
            file.sync_all().map_err(|e| Error::io(path.display(), e))?;
        }
        let mut hasher = blake3::Hasher::new();
        let len = io::copy(&mut &file, &mut hasher).map_err(|e| Error::io(path.display(), e))?;
        let id = ContentId(*hasher.finalize().as_bytes());
        // Move into the staging folder first when possible (same filesystem), so that publish
        // is one rename; fall back to a copy across filesystems.
        let staged = self.new_tmp_path();
        let result = (|| {
            if fs::rename(path, &staged).is_err() {
                fs::copy(path, &staged).map_err(|e| Error::io(staged.display(), e))?;
                if self.sync {
                    File::open(&staged)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| Error::io(staged.display(), e))?;
                }
                let _ = fs::remove_file(path);
            }
            self.publish(&staged, &id)
        })();
        if result.is_err() {
            // Never leave a staging file behind on a failed ingest.
            let _ = fs::remove_file(&staged);
        }
        result.map(|()| (id, len))
    }

    fn contains(&self, id: &ContentId) -> bool {
        self.object_path(id).exists()
    }

    fn open(&self, id: &ContentId) -> Result<Box<dyn ReadSeek>> {
        let (file, path) = self.open_file(id)?;
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

    fn bytes(&self, id: &ContentId) -> Result<SharedBytes> {
        let (file, path) = self.open_file(id)?;
        let bytes = map_file(&file, &path)?;
        verify_bytes((*bytes).as_ref(), id, &self.describe(id))?;
        Ok(bytes)
    }

    fn local_path(&self, id: &ContentId) -> Result<Option<PathBuf>> {
        let (_, path) = self.open_file(id)?;
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
        let path = self.object_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path.display(), e)),
        }
    }
}

impl LocalStore {
    fn clone_handle(&self) -> Arc<LocalStore> {
        Arc::new(LocalStore {
            root: self.root.clone(),
            objects: self.objects.clone(),
            tmp: self.tmp.clone(),
            sync: self.sync,
        })
    }
}

struct LocalObjectWriter {
    store: Arc<LocalStore>,
    file: Option<BufWriter<File>>,
    path: PathBuf,
    hasher: blake3::Hasher,
    len: u64,
}

impl Write for LocalObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("object writer already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl ObjectWriter for LocalObjectWriter {
    fn commit(mut self: Box<Self>) -> Result<(ContentId, u64)> {
        let file = self.file.take().expect("commit consumes the writer");
        let path = std::mem::take(&mut self.path);
        let id = ContentId(*self.hasher.finalize().as_bytes());
        let result = (|| {
            let file = file
                .into_inner()
                .map_err(|e| Error::io(path.display(), e.into_error()))?;
            if self.store.sync {
                file.sync_all().map_err(|e| Error::io(path.display(), e))?;
            }
            drop(file);
            self.store.publish(&path, &id)
        })();
        if result.is_err() {
            // A failed commit publishes nothing and leaves no staging file behind.
            let _ = fs::remove_file(&path);
        }
        result.map(|()| (id, self.len))
    }
}

impl Drop for LocalObjectWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() && !self.path.as_os_str().is_empty() {
            // Not committed: discard the staged bytes.
            let _ = fs::remove_file(&self.path);
        }
    }
}
