//! [`SqliteSequenceFormat`]: a list stored as one SQLite table, read back as a lazy
//! random-access [`SqliteSequence`].

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use milonga_sdk::{ArtifactHandle, ArtifactWriter, Codec, Envelope, Error, Format, Result};

use super::block::BlockDecoder;
use super::builder::SqliteSequenceBuilder;
use super::compress::{decode_item, decode_raw, SqliteCompression};
use super::errors::SqlResultExt;
use super::pool::ReadDb;
use super::schema::{
    format_id, Kind, Stored, SEQUENCE_FILE, SEQUENCE_ID, SEQUENCE_VERSION, WRITE_BATCH,
};
use super::writer::{open_bulk, SeqWriter};
use crate::codec::PostcardCodec;

/// Rows (or items, in blocks) fetched per step of an iteration.
const READ_BATCH_ROWS: u64 = 1024;
/// Stored bytes fetched per step of an iteration (at least one row).
const READ_BATCH_BYTES: usize = 1 << 20;

/// A list stored as a SQLite database (`data.sqlite`), read back as a lazy [`SqliteSequence`].
///
/// It writes any `IntoIterator<Item = T>` (a `Vec<T>`, a generator-like iterator) item by item,
/// in batched transactions, without collecting it; and a finished [`SqliteSequenceBuilder`]
/// without copying its rows. Items are encoded with the codec `C` (postcard by default) and
/// compressed in blocks of 8 consecutive items by default ([`SqliteCompression`]).
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
    /// Items as postcard, compressed in blocks ([`SqliteCompression::blocks`]).
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
    pub fn with_compression(mut self, compression: SqliteCompression) -> Self {
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
            false,
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
/// indexed lookup (in the block layout, of the item's block, which is decompressed unless it is
/// the block this connection read last); [`iter`](SqliteSequence::iter) is a range scan. Clones
/// and slices share one read-only connection pool, so a handle can be used from several threads;
/// the handle keeps its artifact alive.
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
        match self.db.meta().stored {
            Stored::Blocks { items } => self.get_in_block(abs, items),
            Stored::Plain | Stored::Zstd => self.get_row(abs),
        }
    }

    /// Item `abs` of a file with one row per item.
    fn get_row(&self, abs: u64) -> Result<T> {
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

    /// Item `abs` of a file in blocks of `items`: from the slot's last block if it is the
    /// right one, else one row lookup and one decompression.
    fn get_in_block(&self, abs: u64, items: u64) -> Result<T> {
        let file = &self.db.file;
        let total = self.db.meta().len.unwrap_or(0);
        let block = abs / items;
        let k =
            usize::try_from(abs % items).map_err(|_| Error::corrupt(file, 0, "block too large"))?;
        self.db.with(|slot| {
            let Some(dec) = slot.blocks.as_mut() else {
                return Err(Error::corrupt(file, 0, "no block decoder"));
            };
            if !dec.holds(block) {
                load_block(&slot.conn, dec, file, block, items, total)?;
            }
            let raw = dec.item(k).ok_or_else(|| {
                Error::corrupt(file, 0, format!("item {abs} is missing from block {block}"))
            })?;
            decode_raw(&*self.codec, raw, file, &format_args!("item {abs}"))
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

/// The number of items in block `block` of a file of `total` items in blocks of `items`.
fn block_len(block: u64, items: u64, total: u64) -> u64 {
    total.saturating_sub(block.saturating_mul(items)).min(items)
}

/// Reads and decompresses block `block` into `dec`.
fn load_block(
    conn: &rusqlite::Connection,
    dec: &mut BlockDecoder,
    file: &str,
    block: u64,
    items: u64,
    total: u64,
) -> Result<()> {
    let key = i64::try_from(block).map_err(|_| Error::corrupt(file, 0, "block past 2^63"))?;
    let mut stmt = conn
        .prepare_cached("SELECT v FROM blocks WHERE b = ?1")
        .in_db(file)?;
    let mut rows = stmt.query([key]).in_db(file)?;
    let Some(row) = rows.next().in_db(file)? else {
        dec.forget();
        return Err(Error::corrupt(file, 0, format!("block {block} is missing")));
    };
    let stored = row
        .get_ref(0)
        .in_db(file)?
        .as_blob()
        .map_err(|_| Error::corrupt(file, 0, format!("block {block} is not a BLOB")))?;
    decode_block(dec, file, block, stored, items, total)
}

/// Decompresses `stored`, block `block`, into `dec`.
fn decode_block(
    dec: &mut BlockDecoder,
    file: &str,
    block: u64,
    stored: &[u8],
    items: u64,
    total: u64,
) -> Result<()> {
    let n = block_len(block, items, total);
    let first = block.saturating_mul(items);
    let count = usize::try_from(n).map_err(|_| Error::corrupt(file, 0, "block too large"))?;
    dec.load(block, stored, count)
        .map_err(|reason| Error::Decode {
            file: file.to_owned(),
            offset: 0,
            reason: format!("block {block} (items {first}..{}): {reason}", first + n),
        })
}

impl<T, C: Codec<T>> SqliteIter<T, C> {
    /// Fetches and decodes the next batch of rows into `buf`.
    fn fill(&mut self) {
        match self.seq.db.meta().stored {
            Stored::Blocks { items } => self.fill_blocks(items),
            Stored::Plain | Stored::Zstd => self.fill_rows(),
        }
    }

    /// Fetches and decodes the next blocks into `buf`: one range scan over `blocks`.
    fn fill_blocks(&mut self, items: u64) {
        let seq = &self.seq;
        let file = &seq.db.file;
        let total = seq.db.meta().len.unwrap_or(0);
        let from = self.next;
        let end = self.end;
        let first_block = from / items;
        let last_block = (end - 1) / items + 1;
        let to_block = last_block.min(first_block.saturating_add((READ_BATCH_ROWS / items).max(1)));
        let buf = &mut self.buf;
        let mut next = from;
        let r = seq.db.with(|slot| {
            let Some(dec) = slot.blocks.as_mut() else {
                return Err(Error::corrupt(file, 0, "no block decoder"));
            };
            let (Ok(a), Ok(b)) = (i64::try_from(first_block), i64::try_from(to_block)) else {
                return Err(Error::corrupt(file, 0, "block past 2^63"));
            };
            let mut stmt = slot
                .conn
                .prepare_cached("SELECT b, v FROM blocks WHERE b >= ?1 AND b < ?2 ORDER BY b")
                .in_db(file)?;
            let mut rows = stmt.query([a, b]).in_db(file)?;
            let mut expect = first_block;
            while expect < to_block {
                let Some(row) = rows.next().in_db(file)? else {
                    break;
                };
                let got: i64 = row.get(0).in_db(file)?;
                if u64::try_from(got).ok() != Some(expect) {
                    break;
                }
                let stored = row.get_ref(1).in_db(file)?.as_blob().map_err(|_| {
                    Error::corrupt(file, 0, format!("block {expect} is not a BLOB"))
                })?;
                decode_block(dec, file, expect, stored, items, total)?;
                let base = expect.saturating_mul(items);
                let stop = end.min(base + block_len(expect, items, total));
                while next < stop {
                    let k = usize::try_from(next - base)
                        .map_err(|_| Error::corrupt(file, 0, "block too large"))?;
                    let raw = dec.item(k).ok_or_else(|| {
                        Error::corrupt(file, 0, format!("item {next} is missing"))
                    })?;
                    buf.push_back(decode_raw(
                        &*seq.codec,
                        raw,
                        file,
                        &format_args!("item {next}"),
                    )?);
                    next += 1;
                }
                expect += 1;
            }
            if expect < to_block {
                dec.forget();
                return Err(Error::corrupt(
                    file,
                    0,
                    format!("block {expect} is missing"),
                ));
            }
            Ok(())
        });
        self.next = next;
        if let Err(e) = r {
            self.failed = Some(e);
        }
    }

    /// Fetches and decodes the next batch of rows into `buf` (one row per item).
    fn fill_rows(&mut self) {
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
