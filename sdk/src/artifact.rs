//! Artifact I/O: the named files a format writes and reads.
//!
//! The engine implements these traits for each backend (a local directory, memory, object
//! storage); formats only see the traits, so a format works with every backend.

use std::fmt;
use std::io::{Read, Seek, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;

/// The blake3 hash of a file's content: its content id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId(pub [u8; 32]);

impl ContentId {
    /// The content id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ContentId(*blake3_hash(bytes).as_bytes())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses exactly 64 lower-case hex digits (the form [`to_hex`](Self::to_hex) writes).
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ContentId(out))
    }
}

fn blake3_hash(bytes: &[u8]) -> blake3::Hash {
    blake3::hash(bytes)
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", self.to_hex())
    }
}

/// One finished file of an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// The file's name within the artifact.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// The blake3 hash of its content.
    pub id: ContentId,
}

/// A streaming writer for one file of an artifact.
///
/// Dropping it without calling [`finish`](FileWriter::finish) discards what was written.
pub trait FileWriter: Write + Send {
    /// Makes the file durable and content-addressed, and returns its entry.
    ///
    /// # Errors
    /// I/O errors while flushing, syncing or publishing.
    fn finish(self: Box<Self>) -> Result<FileEntry>;
}

/// Where a format writes the files of one artifact.
///
/// Each file is finished on its own: once [`FileWriter::finish`] returns, the file is durable,
/// even if the process dies before the artifact is complete. That is what lets a long write be
/// resumed (see [`durable_files`](ArtifactWriter::durable_files)).
pub trait ArtifactWriter: Send + Sync {
    /// Starts a new file named `name` (unique within the artifact; `/` separates folders).
    ///
    /// # Errors
    /// An invalid or already finished name, or an I/O error.
    fn create(&self, name: &str) -> Result<Box<dyn FileWriter>>;

    /// A local directory that belongs to this artifact while it is being written, for tools that
    /// need real paths (SQLite, external programs). It survives a crash of the writer, so a
    /// resumable format can continue from what it finds there. Files in it are published with
    /// [`ingest`](ArtifactWriter::ingest).
    ///
    /// # Errors
    /// An I/O error creating the directory.
    fn scratch_dir(&self) -> Result<PathBuf>;

    /// Publishes the local file at `path` as the artifact file `name`. A file the artifact owns
    /// (in its [`scratch_dir`](ArtifactWriter::scratch_dir), or the engine's step work
    /// directory) is moved, not copied, where the backend allows, and must not be written to
    /// afterwards. The engine's writer copies any other path (a file elsewhere, a symbolic
    /// link) and leaves it in place; [`MemoryArtifact`](crate::MemoryArtifact), a test double,
    /// reads the file and removes it.
    ///
    /// # Errors
    /// An invalid or already finished name, or an I/O error.
    fn ingest(&self, name: &str, path: &Path) -> Result<FileEntry>;

    /// Files that an earlier, interrupted write of the same artifact finished durably, in the
    /// order they were finished. Empty on a first attempt.
    fn durable_files(&self) -> Vec<FileEntry>;

    /// The verified content of a durable file (one listed by
    /// [`durable_files`](ArtifactWriter::durable_files) or finished in this attempt).
    ///
    /// # Errors
    /// [`Error::MissingFile`](crate::Error::MissingFile),
    /// [`Error::ChecksumMismatch`](crate::Error::ChecksumMismatch) or an I/O error.
    fn durable_bytes(&self, name: &str) -> Result<SharedBytes>;

    /// A name for this artifact that a reader following it *in the same process* also
    /// reports ([`ArtifactReader::live_key`]), so that a format may hand what it writes to
    /// such readers in memory as well as writing it (they then skip reading back, checking and
    /// decompressing it). `None` (the default): readers always read the files.
    fn live_key(&self) -> Option<String> {
        None
    }
}

/// A seekable reader over one file of an artifact whose every byte is verified before it is
/// returned: it reads through [`ArtifactReader::read_range`] in windows of
/// [`window`](RangeReader::with_window) bytes (64 KiB by default), so random access reads and
/// hashes only the groups it touches.
///
/// ```
/// use std::io::{Read, Seek, SeekFrom, Write};
/// use milonga_sdk::{ArtifactWriter, MemoryArtifact, RangeReader};
///
/// let artifact = MemoryArtifact::new();
/// let mut f = artifact.create("data").unwrap();
/// f.write_all(&[7u8; 100_000]).unwrap();
/// f.finish().unwrap();
/// let mut r = RangeReader::open(artifact.handle(), "data").unwrap();
/// r.seek(SeekFrom::Start(99_990)).unwrap();
/// let mut tail = Vec::new();
/// r.read_to_end(&mut tail).unwrap();
/// assert_eq!(tail, [7u8; 10]);
/// ```
pub struct RangeReader {
    artifact: ArtifactHandle,
    name: String,
    len: u64,
    pos: u64,
    window: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeReader")
            .field("name", &self.name)
            .field("len", &self.len)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl RangeReader {
    /// A reader over file `name` of `artifact`.
    ///
    /// # Errors
    /// [`Error::MissingFile`](crate::Error::MissingFile) if the artifact has no such file.
    pub fn open(artifact: ArtifactHandle, name: &str) -> Result<Self> {
        let entry = artifact
            .entry(name)
            .ok_or_else(|| crate::Error::MissingFile {
                file: format!("{name} in {}", artifact.describe()),
            })?;
        Ok(RangeReader {
            artifact,
            name: name.to_owned(),
            len: entry.len,
            pos: 0,
            window: 64 * 1024,
            buf: Vec::new(),
            buf_start: 0,
        })
    }

    /// Sets how many bytes one underlying verified read fetches (rounded up to whole 16 KiB
    /// groups; at least one group).
    pub fn with_window(mut self, bytes: u64) -> Self {
        let g = crate::outboard::GROUP_BYTES;
        self.window = bytes.div_ceil(g).max(1) * g;
        self
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos >= buf_end {
            let g = crate::outboard::GROUP_BYTES;
            let start = self.pos / g * g;
            let end = (start + self.window).min(self.len);
            self.buf = self.artifact.read_range(&self.name, start..end)?;
            self.buf_start = start;
        }
        let at = (self.pos - self.buf_start) as usize;
        let avail = self.buf.get(at..).unwrap_or_default();
        let n = avail.len().min(out.len());
        let (Some(dst), Some(src)) = (out.get_mut(..n), avail.get(..n)) else {
            return Ok(0);
        };
        dst.copy_from_slice(src);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        self.pos = new;
        Ok(new)
    }
}

/// A seekable reader over one file.
pub trait ReadSeek: Read + Seek + Send {}
impl<R: Read + Seek + Send> ReadSeek for R {}

/// The whole content of a file, shared: a memory map where the backend is local.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// How a format reads the files of one stored artifact.
pub trait ArtifactReader: Send + Sync {
    /// A human-readable name for the artifact, used in error messages.
    fn describe(&self) -> String;

    /// The artifact's files, in the order they were finished.
    fn files(&self) -> Vec<FileEntry>;

    /// The entry of the file named `name`, if it exists.
    fn entry(&self, name: &str) -> Option<FileEntry> {
        self.files().into_iter().find(|f| f.name == name)
    }

    /// Opens `name` for reading. Reading it sequentially to the end verifies its content hash
    /// and reports a mismatch as an error from `read`; after a seek, use
    /// [`bytes`](ArtifactReader::bytes) where verification matters.
    ///
    /// # Errors
    /// [`Error::MissingFile`](crate::Error::MissingFile) or an I/O error.
    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>>;

    /// The whole content of `name`, verified against its content hash before it is returned;
    /// a memory map where the backend is local.
    ///
    /// # Errors
    /// [`Error::MissingFile`](crate::Error::MissingFile),
    /// [`Error::ChecksumMismatch`](crate::Error::ChecksumMismatch) or an I/O error.
    fn bytes(&self, name: &str) -> Result<SharedBytes>;

    /// The bytes of `range` of file `name`, verified against the file's content id before they
    /// are returned. Backends with outboards (the engine's) read and hash only the 16 KiB groups
    /// that cover the range (see [`outboard`](crate::outboard)), so a lazy format can look up a
    /// small part of a large file cheaply. The default reads the whole file with
    /// [`bytes`](ArtifactReader::bytes) and slices it.
    ///
    /// # Errors
    /// [`Error::OutOfRange`](crate::Error::OutOfRange) for a range past the end of the file,
    /// [`Error::MissingFile`](crate::Error::MissingFile),
    /// [`Error::ChecksumMismatch`](crate::Error::ChecksumMismatch) or an I/O error.
    fn read_range(&self, name: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let bytes = self.bytes(name)?;
        crate::outboard::slice_range((*bytes).as_ref(), range, name)
    }

    /// A local path to the immutable file `name`, where the backend has one (for tools that
    /// need a path, such as SQLite). The file must only be opened read-only. The engine
    /// verifies its content against its content id before returning the path, once per
    /// process for the same unchanged file, so that a damaged or swapped file is an error
    /// rather than a silently wrong answer. `None` on backends without local files.
    ///
    /// # Errors
    /// [`Error::MissingFile`](crate::Error::MissingFile) or an I/O error.
    fn local_path(&self, name: &str) -> Result<Option<PathBuf>>;

    /// Whether the artifact is complete, still being written, or was abandoned by a writer
    /// that failed. Artifacts returned for finished steps are always complete; an artifact
    /// opened to follow a step that is still running is not (see
    /// [`wait_for_change`](ArtifactReader::wait_for_change)).
    fn status(&self) -> ArtifactStatus {
        ArtifactStatus::Complete
    }

    /// For an artifact that is still being written: blocks until it has more than `known`
    /// files, its [`status`](ArtifactReader::status) is no longer
    /// [`Writing`](ArtifactStatus::Writing), or `timeout` passes, whichever comes first. Then
    /// [`files`](ArtifactReader::files) and `status` show the new state. Returns at once for a
    /// complete artifact.
    ///
    /// # Errors
    /// An I/O or database error while polling the writer's progress.
    fn wait_for_change(&self, known: usize, timeout: Duration) -> Result<()> {
        let _ = (known, timeout);
        Ok(())
    }

    /// For an artifact followed while it is written: the writer's
    /// [`ArtifactWriter::live_key`], so that a format can receive what a writer in this process
    /// hands over in memory. `None` (the default) for complete artifacts.
    fn live_key(&self) -> Option<String> {
        None
    }
}

/// The state of an artifact as seen by a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArtifactStatus {
    /// Every file is written; the list of files is final.
    Complete,
    /// A writer is still adding files; the files listed so far are durable.
    Writing,
    /// The writer failed or died; the files listed so far are all there will be. The text says
    /// why.
    Failed(String),
}

/// A shared handle on a stored artifact, kept alive by lazy results that read from it.
pub type ArtifactHandle = Arc<dyn ArtifactReader>;

#[cfg(test)]
mod tests {
    use super::ContentId;

    #[test]
    fn hex_ids_are_exactly_64_lower_case_digits() {
        let id = ContentId::of(b"milonga");
        assert_eq!(ContentId::from_hex(&id.to_hex()), Some(id));
        let upper = id.to_hex().to_uppercase();
        assert_eq!(ContentId::from_hex(&upper), None);
        let plus = format!("+f{}", &id.to_hex()[2..]);
        assert_eq!(ContentId::from_hex(&plus), None);
        assert_eq!(ContentId::from_hex(&id.to_hex()[1..]), None);
    }
}
