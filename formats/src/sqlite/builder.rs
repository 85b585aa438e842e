//! [`SqliteSequenceBuilder`]: a sequence file built item by item inside a step, resumable after a
//! crash, published as the artifact without a copy.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use milonga_sdk::{ArtifactWriter, Codec, Envelope, Error, FileEntry, Result};
use rusqlite::{Connection, OpenFlags};

use super::compress::SqliteCompression;
use super::errors::SqlResultExt;
use super::schema::{format_id, read_meta, SEQUENCE_FILE, SEQUENCE_ID, SEQUENCE_VERSION};
use super::writer::{remove_sidecars, SeqWriter};
use crate::codec::PostcardCodec;

/// Rows per transaction unless [`with_commit_every`](SqliteSequenceBuilder::with_commit_every)
/// says otherwise.
const DEFAULT_COMMIT_EVERY: u64 = 10_000;

/// A mutable, crash-safe sequence file for long work inside a step's `run`.
///
/// Keep it in the step's work directory: after a crash, [`open`](Self::open) on the same path
/// finds every committed item and [`len`](Self::len) says where to resume (Tango's
/// `SqliteSparseSequence` pattern). Items are committed every 10,000 appends (see
/// [`with_commit_every`](Self::with_commit_every)), by [`commit`](Self::commit), and on drop; a
/// process kill loses at most the uncommitted ones. The file uses a rollback journal
/// (`journal_mode = TRUNCATE`) with `synchronous = FULL` while it is built, and is locked: a
/// second builder on the same file gets an [`Error::Io`] of kind `ResourceBusy`.
///
/// Space: items are appended, and appended pages are never journaled, so the builder needs the
/// file's own size plus a journal of the pages a commit changes (the pages of the block being
/// filled and a few index pages: about one block, not the data again). `finish` publishes the
/// file by a rename where the backend allows, so finishing needs no second copy. On a full disk
/// every call fails with the error naming the file; the committed items stay, and opening the
/// file again resumes after them.
///
/// In the block layout (the default), the items of the block being filled wait uncompressed in
/// a `pending` table until the block is full; a commit makes them durable like any other, so
/// after a crash `len()` is exactly the number of committed items, a partial block included.
///
/// [`finish`](Self::finish) seals the file (length recorded, further writes refused by triggers)
/// and publishes it as the artifact file `data.sqlite`: a move where the backend allows. A
/// builder can also be the value of a step whose format is [`super::SqliteSequenceFormat`].
///
/// ```
/// use milonga_formats::{SqliteSequenceBuilder, SqliteSequenceFormat};
/// use milonga_sdk::{Format, MemoryArtifact};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("tokens.sqlite");
/// let mut b = SqliteSequenceBuilder::<u32>::open(&path).unwrap();
/// b.extend(0..100u32).unwrap();
/// drop(b); // a crash here keeps what was committed
/// let mut b = SqliteSequenceBuilder::<u32>::open(&path).unwrap();
/// let done = b.len();
/// b.extend(done as u32..150).unwrap();
/// let artifact = MemoryArtifact::new();
/// b.finish(&artifact).unwrap();
/// let seq = Format::<Vec<u32>>::read(&SqliteSequenceFormat::<u32>::new(), artifact.handle()).unwrap();
/// assert_eq!(seq.len(), 150);
/// ```
pub struct SqliteSequenceBuilder<T, C = PostcardCodec> {
    w: Option<SeqWriter>,
    path: PathBuf,
    codec: Arc<C>,
    /// The file was sealed by an earlier `finish` that did not get to publish it.
    sealed: bool,
    commit_every: u64,
    since_commit: u64,
    _item: PhantomData<fn() -> T>,
}

impl<T, C> fmt::Debug for SqliteSequenceBuilder<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSequenceBuilder")
            .field("path", &self.path)
            .field("len", &self.w.as_ref().map(|w| w.len))
            .field("sealed", &self.sealed)
            .finish()
    }
}

impl<T> SqliteSequenceBuilder<T, PostcardCodec>
where
    PostcardCodec: Codec<T>,
{
    /// Opens the builder at `path`, creating the file if it does not exist; items as postcard,
    /// compressed in blocks ([`SqliteCompression::blocks`]).
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, PostcardCodec, SqliteCompression::default())
    }
}

fn is_blank(conn: &Connection, file: &str) -> Result<bool> {
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))
        .in_db(file)?;
    Ok(n == 0)
}

impl<T, C: Codec<T>> SqliteSequenceBuilder<T, C> {
    /// Opens the builder at `path` with `codec` and `compression`, creating the file if it does
    /// not exist. An existing file keeps the compression it was created with.
    ///
    /// A file that an earlier [`finish`](Self::finish) sealed but did not publish (a crash in
    /// between) opens too: appending to it is refused, `finish` publishes it.
    ///
    /// # Errors
    /// [`Error::WrongFormat`] for a file of another format or codec; [`Error::Corrupt`] for a
    /// file that is not SQLite; [`Error::Io`] (kind `ResourceBusy`) while another builder holds
    /// the file; I/O errors.
    pub fn open_with(
        path: impl AsRef<Path>,
        codec: C,
        compression: SqliteCompression,
    ) -> Result<Self> {
        Self::open_shared(path.as_ref(), Arc::new(codec), compression)
    }

    pub(crate) fn open_shared(
        path: &Path,
        codec: Arc<C>,
        compression: SqliteCompression,
    ) -> Result<Self> {
        let file = path.display().to_string();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).in_db(&file)?;
        conn.execute_batch("PRAGMA busy_timeout = 0; PRAGMA locking_mode = EXCLUSIVE;")
            .in_db(&file)?;
        let id = format_id(SEQUENCE_ID, codec.id());
        let (w, sealed) = if is_blank(&conn, &file)? {
            conn.execute_batch(
                "PRAGMA page_size = 4096; PRAGMA journal_mode = TRUNCATE; PRAGMA synchronous = FULL;",
            )
            .in_db(&file)?;
            let w = SeqWriter::create(
                conn,
                file,
                &Envelope::new(&id, SEQUENCE_VERSION),
                codec.id(),
                compression,
                true,
            )?;
            (w, false)
        } else {
            let meta = read_meta(&conn, &file, &id, SEQUENCE_VERSION, codec.id())?;
            // A version 1 file (one row per item) is continued in its own layout.
            if !(1..=SEQUENCE_VERSION).contains(&meta.version) {
                return Err(Error::UnsupportedVersion {
                    file,
                    format: id,
                    found: meta.version,
                    supported: SEQUENCE_VERSION,
                });
            }
            if !meta.finished {
                // A file from an older milonga may be in WAL mode: this folds its WAL back in.
                conn.execute_batch("PRAGMA journal_mode = TRUNCATE; PRAGMA synchronous = FULL;")
                    .in_db(&file)?;
                // Take the write lock now, so that a second builder fails at open.
                conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
                    .in_db(&file)?;
            }
            let sealed = meta.finished;
            (SeqWriter::resume(conn, file, &meta, compression)?, sealed)
        };
        Ok(SqliteSequenceBuilder {
            w: Some(w),
            path: path.to_owned(),
            codec,
            sealed,
            commit_every: DEFAULT_COMMIT_EVERY,
            since_commit: 0,
            _item: PhantomData,
        })
    }

    fn writer(&mut self) -> Result<&mut SeqWriter> {
        if self.sealed {
            return Err(Error::unsupported(format!(
                "{}: the sequence was finished and is immutable",
                self.path.display()
            )));
        }
        self.w.as_mut().ok_or_else(|| {
            Error::unsupported(format!("{}: the builder was finished", self.path.display()))
        })
    }

    /// The file the builder writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The codec's id.
    pub(crate) fn codec_id(&self) -> &str {
        self.codec.id()
    }

    /// The number of items, committed or not.
    pub fn len(&self) -> u64 {
        self.w.as_ref().map_or(0, |w| w.len)
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the file was already sealed by an earlier [`finish`](Self::finish).
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Commits automatically every `rows` appends (at least 1; default 10,000).
    pub fn with_commit_every(&mut self, rows: u64) -> &mut Self {
        self.commit_every = rows.max(1);
        self
    }

    /// Appends one item.
    ///
    /// # Errors
    /// Encoding or SQLite errors; [`Error::Unsupported`] on a sealed file. After an error
    /// [`len`](Self::len) still says how many items the file holds: an item whose own write
    /// failed is not counted (append it again), while one that completed a block whose
    /// compressed write failed is kept in that block, which the next append or
    /// [`finish`](Self::finish) writes. If SQLite rolled back the uncommitted items itself (it
    /// may on a full disk), every later call fails: open the file again to resume after the
    /// committed items.
    pub fn append(&mut self, item: &T) -> Result<()> {
        let codec = Arc::clone(&self.codec);
        self.writer()?.push(&*codec, item)?;
        self.since_commit += 1;
        if self.since_commit >= self.commit_every {
            self.commit()?;
        }
        Ok(())
    }

    /// Appends every item of `items` (owned or borrowed).
    ///
    /// # Errors
    /// As [`append`](Self::append); the items before the failing one stay appended.
    pub fn extend<I>(&mut self, items: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        for item in items {
            self.append(item.borrow())?;
        }
        Ok(())
    }

    /// Makes every appended item durable (fsynced).
    ///
    /// # Errors
    /// SQLite or I/O errors.
    pub fn commit(&mut self) -> Result<()> {
        self.since_commit = 0;
        match self.w.as_mut() {
            Some(w) if !self.sealed => w.commit(),
            _ => Ok(()),
        }
    }

    /// Seals the file and publishes it as the artifact file `data.sqlite`.
    ///
    /// # Errors
    /// As [`finish_as`](Self::finish_as).
    pub fn finish(self, artifact: &dyn ArtifactWriter) -> Result<FileEntry> {
        self.finish_as(artifact, SEQUENCE_FILE)
    }

    /// Seals the file (length recorded, writes refused by triggers, journal folded back into
    /// the file) and publishes it as artifact file `name`, a move where the backend allows.
    ///
    /// # Errors
    /// SQLite or I/O errors, or what the artifact's `ingest` returns.
    pub fn finish_as(mut self, artifact: &dyn ArtifactWriter, name: &str) -> Result<FileEntry> {
        let Some(mut w) = self.w.take() else {
            return Err(Error::unsupported(format!(
                "{}: the builder was finished",
                self.path.display()
            )));
        };
        if !self.sealed {
            w.commit()?;
            w.seal()?;
        }
        w.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
            .in_db(&w.file)?;
        w.close()?;
        remove_sidecars(&self.path)?;
        artifact.ingest(name, &self.path)
    }
}

impl<T, C> Drop for SqliteSequenceBuilder<T, C> {
    fn drop(&mut self) {
        if let Some(w) = self.w.as_mut() {
            if !self.sealed && w.pending() {
                let _ = w.commit();
            }
        }
    }
}
