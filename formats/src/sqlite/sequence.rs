//! [`SqliteSequenceFormat`]: a list stored as one SQLite table, read back as a lazy
//! random-access [`SqliteSequence`].

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use milonga_sdk::{ArtifactHandle, ArtifactWriter, Codec, Envelope, Error, Format, Result};
use rusqlite::Connection;

use super::builder::SqliteSequenceBuilder;
use super::compress::{train_dictionary, SqliteCompression, ValueEncoder};
use super::{
    create_schema, decode_item, format_id, seal, set_meta, Kind, Meta, ReadDb, SqlResultExt,
};
use crate::codec::PostcardCodec;

/// The base format id; `+<codec>` is appended for codecs other than postcard.
pub(crate) const SEQUENCE_ID: &str = "milonga.sqlite_sequence";
/// The version of the bytes [`SqliteSequenceFormat`] writes.
pub(crate) const SEQUENCE_VERSION: u32 = 1;
/// The artifact file a sequence is stored in.
pub(crate) const SEQUENCE_FILE: &str = "data.sqlite";
/// Rows per write transaction.
pub(crate) const WRITE_BATCH: u64 = 65_536;
/// Rows sampled to train a zstd dictionary.
const SAMPLE_ROWS: usize = 4096;
/// Bytes sampled to train a zstd dictionary.
const SAMPLE_BYTES: usize = 1 << 20;
/// Rows fetched per step of an iteration.
const READ_BATCH_ROWS: u64 = 1024;
/// Stored bytes fetched per step of an iteration (at least one row).
const READ_BATCH_BYTES: usize = 1 << 20;

/// Writes the rows of a sequence file: shared by [`SqliteSequenceFormat`] and
/// [`SqliteSequenceBuilder`].
pub(crate) struct SeqWriter {
    pub(crate) conn: Connection,
    pub(crate) file: String,
    level: i32,
    dictionary_bytes: usize,
    enc: ValueEncoder,
    raw: Vec<u8>,
    /// Encoded values waiting for the zstd dictionary to be trained.
    samples: Option<Vec<Vec<u8>>>,
    sample_bytes: usize,
    /// Items written, committed or not.
    pub(crate) len: u64,
    max_value_len: u64,
    in_tx: bool,
}

impl SeqWriter {
    /// Creates the schema of a new sequence file in `conn`.
    pub(crate) fn create(
        conn: Connection,
        file: String,
        envelope: &Envelope,
        codec: &str,
        compression: SqliteCompression,
    ) -> Result<Self> {
        conn.execute_batch("BEGIN").in_db(&file)?;
        create_schema(
            &conn,
            &file,
            Kind::Sequence,
            envelope,
            codec,
            compression.name(),
        )?;
        conn.execute_batch("COMMIT").in_db(&file)?;
        let (level, dictionary_bytes) = match compression {
            SqliteCompression::Zstd {
                level,
                dictionary_bytes,
            } => (level, dictionary_bytes as usize),
            SqliteCompression::None => (0, 0),
        };
        let mut w = SeqWriter {
            conn,
            file,
            level,
            dictionary_bytes,
            enc: ValueEncoder::plain(),
            raw: Vec::new(),
            samples: None,
            sample_bytes: 0,
            len: 0,
            max_value_len: 0,
            in_tx: false,
        };
        if let SqliteCompression::Zstd { .. } = compression {
            if dictionary_bytes > 0 {
                w.samples = Some(Vec::new());
            } else {
                w.enc = ValueEncoder::zstd(level, &[], &w.file)?;
            }
        }
        Ok(w)
    }

    /// Continues an existing, unfinished sequence file of `len` items described by `meta`.
    pub(crate) fn resume(
        conn: Connection,
        file: String,
        meta: &Meta,
        len: u64,
        compression: SqliteCompression,
    ) -> Result<Self> {
        let (level, dictionary_bytes) = match compression {
            SqliteCompression::Zstd {
                level,
                dictionary_bytes,
            } => (level, dictionary_bytes as usize),
            SqliteCompression::None => (3, 0),
        };
        let mut w = SeqWriter {
            conn,
            file,
            level,
            dictionary_bytes,
            enc: ValueEncoder::plain(),
            raw: Vec::new(),
            samples: None,
            sample_bytes: 0,
            len,
            max_value_len: meta.max_value_len,
            in_tx: false,
        };
        if meta.zstd {
            match &meta.dictionary {
                Some(d) => w.enc = ValueEncoder::zstd(level, d, &w.file)?,
                None if len == 0 && dictionary_bytes > 0 => w.samples = Some(Vec::new()),
                None => w.enc = ValueEncoder::zstd(level, &[], &w.file)?,
            }
        }
        Ok(w)
    }

    fn begin(&mut self) -> Result<()> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN").in_db(&self.file)?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn insert(&mut self, index: u64, raw: &[u8]) -> Result<()> {
        self.begin()?;
        let stored = self.enc.encode(raw, &self.file)?;
        let i = i64::try_from(index)
            .map_err(|_| Error::Unsupported(format!("{}: more than 2^63 items", self.file)))?;
        self.conn
            .prepare_cached("INSERT INTO items (i, v) VALUES (?1, ?2)")
            .in_db(&self.file)?
            .execute(rusqlite::params![i, stored])
            .in_db(&self.file)?;
        Ok(())
    }

    /// Appends one item.
    pub(crate) fn push<T, C: Codec<T> + ?Sized>(&mut self, codec: &C, item: &T) -> Result<()> {
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        let r = codec.encode(item, &mut raw);
        if let Err(e) = r {
            self.raw = raw;
            return Err(e);
        }
        self.max_value_len = self.max_value_len.max(raw.len() as u64);
        let index = self.len;
        self.len += 1;
        let r = if let Some(samples) = self.samples.as_mut() {
            self.sample_bytes += raw.len();
            samples.push(raw.clone());
            if samples.len() >= SAMPLE_ROWS || self.sample_bytes >= SAMPLE_BYTES {
                self.flush_samples()
            } else {
                Ok(())
            }
        } else {
            self.insert(index, &raw)
        };
        self.raw = raw;
        r
    }

    /// Trains the dictionary on the sampled values and writes them.
    fn flush_samples(&mut self) -> Result<()> {
        let Some(samples) = self.samples.take() else {
            return Ok(());
        };
        self.begin()?;
        let dict = train_dictionary(&samples, self.dictionary_bytes).unwrap_or_default();
        set_meta(&self.conn, &self.file, "zstd_dict", dict.clone())?;
        self.enc = ValueEncoder::zstd(self.level, &dict, &self.file)?;
        let first = self.len - samples.len() as u64;
        for (k, raw) in samples.iter().enumerate() {
            self.insert(first + k as u64, raw)?;
        }
        Ok(())
    }

    /// Whether rows are waiting in an open transaction (or for the dictionary).
    pub(crate) fn pending(&self) -> bool {
        self.in_tx || self.samples.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// Commits every item pushed so far.
    pub(crate) fn commit(&mut self) -> Result<()> {
        if self.samples.as_ref().is_some_and(|s| !s.is_empty()) {
            self.flush_samples()?;
        }
        if self.in_tx {
            set_meta(
                &self.conn,
                &self.file,
                "max_value_len",
                self.max_value_len.to_le_bytes().to_vec(),
            )?;
            self.conn.execute_batch("COMMIT").in_db(&self.file)?;
            self.in_tx = false;
        }
        Ok(())
    }

    /// Commits and seals the file: records its length and forbids further writes.
    pub(crate) fn seal(&mut self) -> Result<()> {
        if self.samples.is_some() {
            // Never trained: record the decision (no dictionary) so the file is complete.
            self.flush_samples()?;
        }
        self.begin()?;
        set_meta(
            &self.conn,
            &self.file,
            "max_value_len",
            self.max_value_len.to_le_bytes().to_vec(),
        )?;
        seal(&self.conn, &self.file, Kind::Sequence, self.len)?;
        self.conn.execute_batch("COMMIT").in_db(&self.file)?;
        self.in_tx = false;
        Ok(())
    }

    /// Closes the connection, reporting errors.
    pub(crate) fn close(self) -> Result<()> {
        let file = self.file;
        self.conn.close().map_err(|(_, e)| e).in_db(&file)
    }
}

/// Removes `path` and the journal files SQLite may have left beside it.
pub(crate) fn remove_db(path: &Path) -> Result<()> {
    remove_files(path, &["", "-journal", "-wal", "-shm"])
}

/// Removes the journal files SQLite may have left beside `path`.
pub(crate) fn remove_sidecars(path: &Path) -> Result<()> {
    remove_files(path, &["-journal", "-wal", "-shm"])
}

fn remove_files(path: &Path, suffixes: &[&str]) -> Result<()> {
    for suffix in suffixes {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(Path::new(&p).display(), e)),
        }
    }
    Ok(())
}

/// Opens a new file for a one-shot write: no journal, no fsync (the artifact's ingest makes the
/// finished file durable), exclusive lock.
pub(crate) fn open_bulk(path: &Path, file: &str) -> Result<Connection> {
    remove_db(path)?;
    let conn = Connection::open(path).in_db(file)?;
    conn.execute_batch(
        "PRAGMA page_size = 4096; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
         PRAGMA locking_mode = EXCLUSIVE; PRAGMA cache_size = -65536;",
    )
    .in_db(file)?;
    Ok(conn)
}

/// A list stored as a SQLite database (`data.sqlite`), read back as a lazy [`SqliteSequence`].
///
/// It writes any `IntoIterator<Item = T>` (a `Vec<T>`, a generator-like iterator) item by item,
/// in batched transactions, without collecting it; and a finished [`SqliteSequenceBuilder`]
/// without copying its rows. Items are encoded with the codec `C` (postcard by default) and
/// optionally compressed ([`SqliteCompression`]).
///
/// ```
/// use milonga_formats::SqliteSequenceFormat;
/// use milonga_sdk::{Format, MemoryArtifact};
///
/// let format = SqliteSequenceFormat::<String>::new();
/// let artifact = MemoryArtifact::new();
/// format.write((0..1000).map(|i| format!("item {i}")), &artifact).unwrap();
/// let seq = Format::<Vec<String>>::read(&format, artifact.handle()).unwrap();
/// assert_eq!(seq.len(), 1000);
/// assert_eq!(seq.get(7).unwrap(), "item 7");
/// let tail = seq.slice(990..).unwrap();
/// assert_eq!(tail.iter().count(), 10);
/// ```
pub struct SqliteSequenceFormat<T, C = PostcardCodec> {
    codec: Arc<C>,
    compression: SqliteCompression,
    id: String,
    _item: PhantomData<fn() -> T>,
}

impl<T, C> Clone for SqliteSequenceFormat<T, C> {
    fn clone(&self) -> Self {
        SqliteSequenceFormat {
            codec: Arc::clone(&self.codec),
            compression: self.compression,
            id: self.id.clone(),
            _item: PhantomData,
        }
    }
}

impl<T, C> fmt::Debug for SqliteSequenceFormat<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSequenceFormat")
            .field("id", &self.id)
            .field("compression", &self.compression)
            .finish()
    }
}

impl<T> SqliteSequenceFormat<T, PostcardCodec>
where
    PostcardCodec: Codec<T>,
{
    /// Items as postcard, uncompressed.
    pub fn new() -> Self {
        Self::with_codec(PostcardCodec)
    }
}

impl<T> Default for SqliteSequenceFormat<T, PostcardCodec>
where
    PostcardCodec: Codec<T>,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<T, C: Codec<T>> SqliteSequenceFormat<T, C> {
    /// Items encoded with `codec`. The format id is `milonga.sqlite_sequence`, followed by
    /// `+<codec id>` for codecs other than postcard.
    pub fn with_codec(codec: C) -> Self {
        let id = format_id(SEQUENCE_ID, codec.id());
        SqliteSequenceFormat {
            codec: Arc::new(codec),
            compression: SqliteCompression::default(),
            id,
            _item: PhantomData,
        }
    }

    /// Sets how values are compressed (readers handle every option).
    #[must_use]
    pub fn compression(mut self, compression: SqliteCompression) -> Self {
        self.compression = compression;
        self
    }

    /// A resumable builder for a sequence of this format at `path` (see
    /// [`SqliteSequenceBuilder`]).
    ///
    /// # Errors
    /// As [`SqliteSequenceBuilder::open_with`].
    pub fn builder(&self, path: impl AsRef<Path>) -> Result<SqliteSequenceBuilder<T, C>> {
        SqliteSequenceBuilder::open_shared(path.as_ref(), Arc::clone(&self.codec), self.compression)
    }

    /// Writes `items` as artifact file `name` (used by the dataset dict for its splits).
    pub(crate) fn write_file<I: IntoIterator<Item = T>>(
        &self,
        items: I,
        artifact: &dyn ArtifactWriter,
        name: &str,
    ) -> Result<()> {
        let dir = artifact.scratch_dir()?;
        let path = dir.join(format!("{}.building", name.replace('/', "_")));
        let file = path.display().to_string();
        let conn = open_bulk(&path, &file)?;
        let mut w = SeqWriter::create(
            conn,
            file.clone(),
            &Envelope::new(&self.id, SEQUENCE_VERSION),
            self.codec.id(),
            self.compression,
        )?;
        let r = (|| {
            for item in items {
                w.push(&*self.codec, &item)?;
                if w.len.is_multiple_of(WRITE_BATCH) {
                    w.commit()?;
                }
            }
            w.commit()?;
            w.seal()
        })();
        let closed = w.close();
        r.and(closed)?;
        artifact.ingest(name, &path)?;
        Ok(())
    }

    /// Opens artifact file `name` as a sequence of this format.
    pub(crate) fn open_file(
        &self,
        artifact: ArtifactHandle,
        name: &str,
    ) -> Result<SqliteSequence<T, C>> {
        let db = ReadDb::open(
            artifact,
            name,
            Kind::Sequence,
            &self.id,
            SEQUENCE_VERSION,
            self.codec.id(),
        )?;
        let len = db.meta().len.unwrap_or(0);
        Ok(SqliteSequence {
            db,
            codec: Arc::clone(&self.codec),
            start: 0,
            len,
            _item: PhantomData,
        })
    }
}

impl<T, C, I> Format<I> for SqliteSequenceFormat<T, C>
where
    T: 'static,
    C: Codec<T> + 'static,
    I: IntoIterator<Item = T>,
{
    type Output = SqliteSequence<T, C>;

    fn id(&self) -> &str {
        &self.id
    }

    fn version(&self) -> u32 {
        SEQUENCE_VERSION
    }

    fn write(&self, value: I, artifact: &dyn ArtifactWriter) -> Result<()> {
        self.write_file(value, artifact, SEQUENCE_FILE)
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<Self::Output> {
        self.open_file(artifact, SEQUENCE_FILE)
    }
}

impl<T, C> Format<SqliteSequenceBuilder<T, C>> for SqliteSequenceFormat<T, C>
where
    T: 'static,
    C: Codec<T> + 'static,
{
    type Output = SqliteSequence<T, C>;

    fn id(&self) -> &str {
        &self.id
    }

    fn version(&self) -> u32 {
        SEQUENCE_VERSION
    }

    /// Publishes the builder's file as the artifact, moving it where the backend allows.
    fn write(
        &self,
        value: SqliteSequenceBuilder<T, C>,
        artifact: &dyn ArtifactWriter,
    ) -> Result<()> {
        if value.codec_id() != self.codec.id() {
            return Err(Error::WrongFormat {
                file: value.path().display().to_string(),
                expected: self.id.clone(),
                found: format!("a builder with codec {}", value.codec_id()),
            });
        }
        value.finish_as(artifact, SEQUENCE_FILE)?;
        Ok(())
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<Self::Output> {
        self.open_file(artifact, SEQUENCE_FILE)
    }
}

/// A stored sequence (or a slice of one), read lazily: nothing is loaded until asked for.
///
/// Opening checks the file's meta table and length (O(1)); [`get`](SqliteSequence::get) is one
/// indexed lookup; [`iter`](SqliteSequence::iter) is a range scan. Clones and slices share one
/// read-only connection pool, so a handle can be used from several threads; the handle keeps
/// its artifact alive.
pub struct SqliteSequence<T, C = PostcardCodec> {
    db: Arc<ReadDb>,
    codec: Arc<C>,
    start: u64,
    len: u64,
    _item: PhantomData<fn() -> T>,
}

impl<T, C> Clone for SqliteSequence<T, C> {
    fn clone(&self) -> Self {
        SqliteSequence {
            db: Arc::clone(&self.db),
            codec: Arc::clone(&self.codec),
            start: self.start,
            len: self.len,
            _item: PhantomData,
        }
    }
}

impl<T, C> fmt::Debug for SqliteSequence<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSequence")
            .field("file", &self.db.file)
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

/// Resolves `range` against a length, or an [`Error::OutOfRange`] naming `file`.
fn resolve(range: impl RangeBounds<u64>, len: u64, file: &str) -> Result<(u64, u64)> {
    let oor = |index| Error::OutOfRange {
        file: file.to_owned(),
        index,
        len,
    };
    let a = match range.start_bound() {
        Bound::Included(&a) => a,
        Bound::Excluded(&a) => a.checked_add(1).ok_or_else(|| oor(a))?,
        Bound::Unbounded => 0,
    };
    let b = match range.end_bound() {
        Bound::Included(&b) => b.checked_add(1).ok_or_else(|| oor(b))?,
        Bound::Excluded(&b) => b,
        Bound::Unbounded => len,
    };
    if b > len {
        return Err(oor(b));
    }
    if a > b {
        return Err(oor(a));
    }
    Ok((a, b))
}

impl<T, C: Codec<T>> SqliteSequence<T, C> {
    /// The number of items.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file this sequence reads, as used in errors.
    pub fn file(&self) -> &str {
        &self.db.file
    }

    /// The format version the file was written with.
    pub fn format_version(&self) -> u32 {
        self.db.meta().version
    }

    /// Item `index`.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] past the end; [`Error::Decode`] or [`Error::Corrupt`] if the row is
    /// missing or does not decode; I/O errors.
    pub fn get(&self, index: u64) -> Result<T> {
        if index >= self.len {
            return Err(Error::OutOfRange {
                file: self.db.file.clone(),
                index,
                len: self.len,
            });
        }
        let abs = self.start + index;
        let file = &self.db.file;
        let key = i64::try_from(abs).map_err(|_| Error::corrupt(file, 0, "index past 2^63"))?;
        self.db.with(|slot| {
            let mut stmt = slot
                .conn
                .prepare_cached("SELECT v FROM items WHERE i = ?1")
                .in_db(file)?;
            let mut rows = stmt.query([key]).in_db(file)?;
            let Some(row) = rows.next().in_db(file)? else {
                return Err(Error::corrupt(file, 0, format!("item {abs} is missing")));
            };
            let stored = row
                .get_ref(0)
                .in_db(file)?
                .as_blob()
                .map_err(|_| Error::corrupt(file, 0, format!("item {abs} is not a BLOB")))?;
            decode_item(
                &*self.codec,
                &mut slot.dec,
                stored,
                file,
                &format_args!("item {abs}"),
            )
        })
    }

    /// Items `range` (for example `10..20` or `5..`), in order, read with one range scan.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] if the range does not fit; otherwise as [`get`](Self::get).
    pub fn get_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<T>> {
        let view = self.slice(range)?;
        let mut out = Vec::with_capacity(usize::try_from(view.len.min(1 << 16)).unwrap_or(0));
        for item in view.iter() {
            out.push(item?);
        }
        Ok(out)
    }

    /// A lazy view of items `range`, with the same API; nothing is read.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] if the range does not fit.
    pub fn slice(&self, range: impl RangeBounds<u64>) -> Result<SqliteSequence<T, C>> {
        let (a, b) = resolve(range, self.len, &self.db.file)?;
        Ok(SqliteSequence {
            db: Arc::clone(&self.db),
            codec: Arc::clone(&self.codec),
            start: self.start + a,
            len: b - a,
            _item: PhantomData,
        })
    }

    /// Iterates over the items in order: a range scan fetching up to 1024 rows (or 1 MiB) per
    /// step with one prepared statement, never a query per item.
    pub fn iter(&self) -> SqliteIter<T, C> {
        SqliteIter {
            seq: self.clone(),
            next: self.start,
            end: self.start + self.len,
            buf: VecDeque::new(),
            failed: None,
            done: false,
        }
    }
}

impl<T, C: Codec<T>> IntoIterator for &SqliteSequence<T, C> {
    type Item = Result<T>;
    type IntoIter = SqliteIter<T, C>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// An iterator over a [`SqliteSequence`], yielding `Result<T>`; it stops after an error.
pub struct SqliteIter<T, C = PostcardCodec> {
    seq: SqliteSequence<T, C>,
    next: u64,
    end: u64,
    buf: VecDeque<T>,
    failed: Option<Error>,
    done: bool,
}

impl<T, C> fmt::Debug for SqliteIter<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteIter")
            .field("file", &self.seq.db.file)
            .field("next", &self.next)
            .field("end", &self.end)
            .finish()
    }
}

impl<T, C: Codec<T>> SqliteIter<T, C> {
    /// Fetches and decodes the next batch of rows into `buf`.
    fn fill(&mut self) {
        let seq = &self.seq;
        let file = &seq.db.file;
        let from = self.next;
        let to = self.end.min(from.saturating_add(READ_BATCH_ROWS));
        let buf = &mut self.buf;
        let mut expect = from;
        let r = seq.db.with(|slot| {
            let (Ok(a), Ok(b)) = (i64::try_from(from), i64::try_from(to)) else {
                return Err(Error::corrupt(file, 0, "index past 2^63"));
            };
            let mut stmt = slot
                .conn
                .prepare_cached("SELECT i, v FROM items WHERE i >= ?1 AND i < ?2 ORDER BY i")
                .in_db(file)?;
            let mut rows = stmt.query([a, b]).in_db(file)?;
            let mut bytes = 0usize;
            while let Some(row) = rows.next().in_db(file)? {
                let i: i64 = row.get(0).in_db(file)?;
                if u64::try_from(i).ok() != Some(expect) {
                    return Err(Error::corrupt(file, 0, format!("item {expect} is missing")));
                }
                let stored =
                    row.get_ref(1).in_db(file)?.as_blob().map_err(|_| {
                        Error::corrupt(file, 0, format!("item {expect} is not a BLOB"))
                    })?;
                bytes += stored.len();
                let item = decode_item(
                    &*seq.codec,
                    &mut slot.dec,
                    stored,
                    file,
                    &format_args!("item {expect}"),
                )?;
                buf.push_back(item);
                expect += 1;
                if bytes >= READ_BATCH_BYTES {
                    break;
                }
            }
            if expect == from {
                return Err(Error::corrupt(file, 0, format!("item {expect} is missing")));
            }
            Ok(())
        });
        self.next = expect;
        if let Err(e) = r {
            self.failed = Some(e);
        }
    }
}

impl<T, C: Codec<T>> Iterator for SqliteIter<T, C> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if let Some(item) = self.buf.pop_front() {
            return Some(Ok(item));
        }
        if self.done {
            return None;
        }
        if let Some(e) = self.failed.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.next >= self.end {
            self.done = true;
            return None;
        }
        self.fill();
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            return (0, Some(0));
        }
        let left = usize::try_from(self.end - self.next)
            .unwrap_or(usize::MAX)
            .saturating_add(self.buf.len());
        (left, Some(left.saturating_add(1)))
    }
}
