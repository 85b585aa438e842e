//! Objects in memory, for `memory://` workspaces and tests.

use std::collections::HashMap;
use std::io::{self, Cursor, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use milonga_sdk::{ContentId, Error, ReadSeek, Result, SharedBytes};

use super::{ObjectStore, ObjectWriter};

/// A content-addressed store that keeps objects in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Arc<RwLock<HashMap<ContentId, Arc<Vec<u8>>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self, id: &ContentId) -> Result<Arc<Vec<u8>>> {
        self.objects
            .read()
            .expect("poisoned")
            .get(id)
            .cloned()
            .ok_or_else(|| Error::MissingObject {
                object: id.to_hex(),
                path: "memory".into(),
            })
    }

    fn get_len(&self, id: &ContentId, len: Option<u64>) -> Result<Arc<Vec<u8>>> {
        let data = self.get(id)?;
        match len {
            Some(want) if want != data.len() as u64 => Err(Error::corrupt(
                self.describe(id),
                0,
                format!(
                    "the object has {} bytes, it was recorded with {want}",
                    data.len()
                ),
            )),
            _ => Ok(data),
        }
    }

    fn put(&self, bytes: Vec<u8>) -> (ContentId, u64) {
        let id = ContentId::of(&bytes);
        let len = bytes.len() as u64;
        self.objects
            .write()
            .expect("poisoned")
            .entry(id)
            .or_insert_with(|| Arc::new(bytes));
        (id, len)
    }
}

struct Shared(Arc<Vec<u8>>);
impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

struct MemoryObjectWriter {
    objects: Arc<RwLock<HashMap<ContentId, Arc<Vec<u8>>>>>,
    buf: Vec<u8>,
}

impl Write for MemoryObjectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for MemoryObjectWriter {
    fn commit(self: Box<Self>) -> Result<(ContentId, u64)> {
        let store = MemoryStore {
            objects: self.objects,
        };
        Ok(store.put(self.buf))
    }
}

impl ObjectStore for MemoryStore {
    fn describe(&self, id: &ContentId) -> String {
        format!("object {id} (memory)")
    }

    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(MemoryObjectWriter {
            objects: Arc::clone(&self.objects),
            buf: Vec::new(),
        }))
    }

    fn ingest(&self, path: &Path) -> Result<(ContentId, u64)> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path.display(), e))?;
        let _ = std::fs::remove_file(path);
        Ok(self.put(bytes))
    }

    fn contains(&self, id: &ContentId) -> bool {
        self.objects.read().expect("poisoned").contains_key(id)
    }

    fn open(&self, id: &ContentId, len: Option<u64>) -> Result<Box<dyn ReadSeek>> {
        Ok(Box::new(Cursor::new(Shared(self.get_len(id, len)?))))
    }

    fn bytes(&self, id: &ContentId, len: Option<u64>) -> Result<SharedBytes> {
        Ok(Arc::new(Shared(self.get_len(id, len)?)))
    }

    fn read_range(&self, id: &ContentId, len: u64, range: Range<u64>) -> Result<Vec<u8>> {
        // Memory objects cannot change behind the store's back: a bounds-checked slice.
        let data = self.get_len(id, Some(len))?;
        usize::try_from(range.start)
            .ok()
            .zip(usize::try_from(range.end).ok())
            .and_then(|(s, e)| data.get(s..e))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::OutOfRange {
                file: format!(
                    "{} (byte range {}..{})",
                    self.describe(id),
                    range.start,
                    range.end
                ),
                index: range.end,
                len,
            })
    }

    fn verify_object(&self, id: &ContentId, len: Option<u64>) -> Result<u64> {
        Ok(self.get_len(id, len)?.len() as u64)
    }

    fn quarantine(&self, id: &ContentId) -> Result<Option<String>> {
        self.objects.write().expect("poisoned").remove(id);
        Ok(None)
    }

    fn local_path(&self, id: &ContentId) -> Result<Option<PathBuf>> {
        self.get(id)?;
        Ok(None)
    }

    fn list(&self) -> Result<Vec<ContentId>> {
        let mut ids: Vec<_> = self
            .objects
            .read()
            .expect("poisoned")
            .keys()
            .copied()
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn remove(&self, id: &ContentId) -> Result<()> {
        self.objects.write().expect("poisoned").remove(id);
        Ok(())
    }
}
