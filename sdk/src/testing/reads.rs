//! The byte-read meter: how many bytes of stored files a read touches.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::artifact::{ArtifactHandle, ArtifactReader, ArtifactStatus, FileEntry, ReadSeek};
use crate::error::Result;
use crate::outboard::GROUP_BYTES;
use crate::SharedBytes;

/// An artifact reader that counts the bytes a verifying backend would read and hash to answer
/// each call: the whole file for [`bytes`](ArtifactReader::bytes) and
/// [`local_path`](ArtifactReader::local_path), the 16 KiB groups that cover the range for
/// [`read_range`](ArtifactReader::read_range), the bytes read through
/// [`open`](ArtifactReader::open). A lazy format whose random access is really lazy reads a
/// bounded number of bytes per lookup, whatever the size of its files.
///
/// ```
/// use std::io::Write;
/// use milonga_sdk::testing::MeteredArtifact;
/// use milonga_sdk::{ArtifactReader, ArtifactWriter, MemoryArtifact};
///
/// let artifact = MemoryArtifact::new();
/// let mut f = artifact.create("data").unwrap();
/// f.write_all(&vec![1u8; 1 << 20]).unwrap();
/// f.finish().unwrap();
/// let meter = MeteredArtifact::new(artifact.handle());
/// meter.read_range("data", 500_000..500_010).unwrap();
/// assert_eq!(meter.bytes_read(), 16 * 1024); // one group
/// meter.bytes("data").unwrap();
/// assert_eq!(meter.bytes_read(), 16 * 1024 + (1 << 20));
/// ```
#[derive(Clone)]
pub struct MeteredArtifact {
    inner: ArtifactHandle,
    read: Arc<AtomicU64>,
}

impl std::fmt::Debug for MeteredArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredArtifact")
            .field("artifact", &self.inner.describe())
            .field("bytes_read", &self.bytes_read())
            .finish()
    }
}

impl MeteredArtifact {
    /// Meters reads of `inner`.
    pub fn new(inner: ArtifactHandle) -> Self {
        MeteredArtifact {
            inner,
            read: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Sets the count back to zero.
    pub fn reset(&self) {
        self.read.store(0, Ordering::Relaxed);
    }

    /// This metered artifact as a reader handle (shares the count).
    pub fn handle(&self) -> ArtifactHandle {
        Arc::new(self.clone())
    }

    fn add(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }

    fn len_of(&self, name: &str) -> u64 {
        self.inner.entry(name).map_or(0, |e| e.len)
    }
}

/// Bytes of the 16 KiB groups of a file of `len` bytes that cover `range`.
fn covered(range: &Range<u64>, len: u64) -> u64 {
    if range.start >= range.end {
        return 0;
    }
    let start = range.start / GROUP_BYTES * GROUP_BYTES;
    let end = range.end.div_ceil(GROUP_BYTES) * GROUP_BYTES;
    end.min(len.max(range.end)).saturating_sub(start)
}

struct CountingReader {
    inner: Box<dyn ReadSeek>,
    read: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Seek for CountingReader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl ArtifactReader for MeteredArtifact {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn files(&self) -> Vec<FileEntry> {
        self.inner.files()
    }

    fn entry(&self, name: &str) -> Option<FileEntry> {
        self.inner.entry(name)
    }

    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>> {
        Ok(Box::new(CountingReader {
            inner: self.inner.open(name)?,
            read: Arc::clone(&self.read),
        }))
    }

    fn bytes(&self, name: &str) -> Result<SharedBytes> {
        let b = self.inner.bytes(name)?;
        self.add((*b).as_ref().len() as u64);
        Ok(b)
    }

    fn read_range(&self, name: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let out = self.inner.read_range(name, range.clone())?;
        self.add(covered(&range, self.len_of(name)));
        Ok(out)
    }

    fn local_path(&self, name: &str) -> Result<Option<PathBuf>> {
        let p = self.inner.local_path(name)?;
        self.add(self.len_of(name));
        Ok(p)
    }

    fn status(&self) -> ArtifactStatus {
        self.inner.status()
    }

    fn wait_for_change(&self, known: usize, timeout: Duration) -> Result<()> {
        self.inner.wait_for_change(known, timeout)
    }
}
