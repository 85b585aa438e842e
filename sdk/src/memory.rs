//! An in-memory artifact backend.
//!
//! [`MemoryArtifact`] lets a format be written and read back without an engine: in unit tests,
//! examples and the test kit.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::artifact::{
    ArtifactHandle, ArtifactReader, ArtifactWriter, ContentId, FileEntry, FileWriter, ReadSeek,
    SharedBytes,
};
use crate::error::{Error, Result};

#[derive(Default)]
struct Files {
    order: Vec<String>,
    data: BTreeMap<String, Arc<Vec<u8>>>,
}

/// An artifact kept in memory: both the writer and, once written, the reader.
///
/// Clones share the same files. Its scratch directory is a temporary directory removed when the
/// last clone is dropped.
#[derive(Clone, Default)]
pub struct MemoryArtifact {
    files: Arc<Mutex<Files>>,
    scratch: Arc<Mutex<Option<tempfile::TempDir>>>,
}

impl MemoryArtifact {
    /// An empty artifact.
    pub fn new() -> Self {
        Self::default()
    }

    /// The files, also after a panic in another thread that held the lock (every change to
    /// them is a single insert, so they are never half updated).
    fn lock_files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes of file `name`, if it was finished.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        let files = self.lock_files();
        files.data.get(name).map(|d| d.as_ref().clone())
    }

    /// Replaces the bytes of a finished file (to simulate corruption); the recorded entry's hash
    /// is updated too, as a backend without verification would see it.
    pub fn set_file(&self, name: &str, bytes: Vec<u8>) {
        let mut files = self.lock_files();
        if !files.data.contains_key(name) {
            files.order.push(name.to_owned());
        }
        files.data.insert(name.to_owned(), Arc::new(bytes));
    }

    /// All finished files and their bytes, in the order they were finished.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let files = self.lock_files();
        files
            .order
            .iter()
            .filter_map(|n| Some((n.clone(), files.data.get(n)?.as_ref().clone())))
            .collect()
    }

    /// This artifact as a reader handle.
    pub fn handle(&self) -> ArtifactHandle {
        Arc::new(self.clone())
    }

    fn publish(&self, name: &str, bytes: Vec<u8>) -> Result<FileEntry> {
        let mut files = self.lock_files();
        if files.data.contains_key(name) {
            return Err(Error::unsupported(format!(
                "file {name:?} was already finished in this artifact"
            )));
        }
        let entry = FileEntry {
            name: name.to_owned(),
            len: bytes.len() as u64,
            id: ContentId::of(&bytes),
        };
        files.order.push(name.to_owned());
        files.data.insert(name.to_owned(), Arc::new(bytes));
        Ok(entry)
    }

    fn get(&self, name: &str) -> Result<Arc<Vec<u8>>> {
        let files = self.lock_files();
        files
            .data
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingFile {
                file: name.to_owned(),
            })
    }
}

struct MemoryFileWriter {
    artifact: MemoryArtifact,
    name: String,
    buf: Vec<u8>,
}

impl Write for MemoryFileWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl FileWriter for MemoryFileWriter {
    fn finish(self: Box<Self>) -> Result<FileEntry> {
        let this = *self;
        this.artifact.publish(&this.name, this.buf)
    }
}

impl ArtifactWriter for MemoryArtifact {
    fn create(&self, name: &str) -> Result<Box<dyn FileWriter>> {
        Ok(Box::new(MemoryFileWriter {
            artifact: self.clone(),
            name: name.to_owned(),
            buf: Vec::new(),
        }))
    }

    fn scratch_dir(&self) -> Result<PathBuf> {
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if scratch.is_none() {
            *scratch = Some(tempfile::tempdir().map_err(|e| Error::io("scratch directory", e))?);
        }
        match scratch.as_ref() {
            Some(dir) => Ok(dir.path().to_owned()),
            None => Err(Error::io(
                "scratch directory",
                std::io::Error::other("no scratch directory"),
            )),
        }
    }

    fn ingest(&self, name: &str, path: &Path) -> Result<FileEntry> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path.display(), e))?;
        let entry = self.publish(name, bytes)?;
        let _ = std::fs::remove_file(path);
        Ok(entry)
    }

    fn durable_files(&self) -> Vec<FileEntry> {
        ArtifactReader::files(self)
    }

    fn durable_bytes(&self, name: &str) -> Result<SharedBytes> {
        ArtifactReader::bytes(self, name)
    }
}

struct SharedVec(Arc<Vec<u8>>);
impl AsRef<[u8]> for SharedVec {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl ArtifactReader for MemoryArtifact {
    fn describe(&self) -> String {
        "in-memory test artifact".into()
    }

    fn files(&self) -> Vec<FileEntry> {
        let files = self.lock_files();
        files
            .order
            .iter()
            .filter_map(|n| {
                let d = files.data.get(n)?;
                Some(FileEntry {
                    name: n.clone(),
                    len: d.len() as u64,
                    id: ContentId::of(d),
                })
            })
            .collect()
    }

    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>> {
        Ok(Box::new(Cursor::new(SharedVec(self.get(name)?))))
    }

    fn bytes(&self, name: &str) -> Result<SharedBytes> {
        Ok(Arc::new(SharedVec(self.get(name)?)))
    }

    fn read_range(&self, name: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        crate::outboard::slice_range(&self.get(name)?, range, name)
    }

    fn local_path(&self, name: &str) -> Result<Option<PathBuf>> {
        let data = self.get(name)?;
        let dir = self.scratch_dir()?.join("read");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        let path = dir.join(ContentId::of(&data).to_hex());
        if !path.exists() {
            // Write a private temporary file and rename it into place, so that concurrent
            // readers never see a partial file.
            let mut tmp =
                tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::io(dir.display(), e))?;
            tmp.write_all(data.as_slice())
                .map_err(|e| Error::io(tmp.path().display(), e))?;
            if let Err(e) = tmp.persist_noclobber(&path) {
                if e.error.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(Error::io(path.display(), e.error));
                }
            }
        }
        Ok(Some(path))
    }
}
