//! [`SeqWriter`]: writes the rows of a sequence file, shared by
//! [`SqliteSequenceFormat`](super::SqliteSequenceFormat) and
//! [`SqliteSequenceBuilder`](super::SqliteSequenceBuilder), in either layout: one row per item
//! (`items`, compression `none` or `zstd`) or blocks of items (`blocks`, `zstd_blocks`).

use std::path::Path;

use milonga_sdk::{Codec, Envelope, Error, Result};
use rusqlite::Connection;

use super::block::{BlockEncoder, OpenBlock};
use super::compress::{train_dictionary, Sample, SqliteCompression, ValueEncoder};
use super::errors::SqlResultExt;
use super::schema::{create_schema, seal, set_meta, Kind, Meta, Stored, MAX_BLOCK_ITEMS};

/// Items sampled to train the dictionary of a file in blocks: training takes ~50 ms on 1024
/// ~110-byte items and ~110 ms on 4096, for a file 1% smaller.
const BLOCK_SAMPLE_ITEMS: u64 = 1024;
/// Bytes sampled to train the dictionary of a file in blocks.
const BLOCK_SAMPLE_BYTES: usize = 256 << 10;
/// The zstd level used when a builder resumes a compressed file and was given no level.
const DEFAULT_LEVEL: i32 = 3;

/// One row per item in `items` (format version 1's only layout).
struct RowLayout {
    level: i32,
    dictionary_bytes: usize,
    enc: ValueEncoder,
    /// Values waiting for the zstd dictionary to be trained.
    samples: Option<Sample<Vec<u8>>>,
}

/// Blocks of `per_block` items in `blocks`.
struct BlockLayout {
    per_block: u64,
    level: i32,
    dictionary_bytes: usize,
    /// `None` while the dictionary is not decided.
    enc: Option<BlockEncoder>,
    /// Full blocks waiting for the dictionary.
    waiting: Vec<OpenBlock>,
    waiting_bytes: usize,
    /// The block being filled.
    open: OpenBlock,
    /// Blocks written to `blocks`.
    written: u64,
    /// Whether items are also written to the `pending` table until their block is written (a
    /// builder's crash safety).
    spill: bool,
}

impl RowLayout {
    /// Values stored as they are.
    fn plain() -> Self {
        RowLayout {
            level: DEFAULT_LEVEL,
            dictionary_bytes: 0,
            enc: ValueEncoder::plain(),
            samples: None,
        }
    }
}

enum Layout {
    Rows(RowLayout),
    Blocks(BlockLayout),
}

/// Writes the rows of a sequence file.
pub(crate) struct SeqWriter {
    pub(crate) conn: Connection,
    pub(crate) file: String,
    layout: Layout,
    raw: Vec<u8>,
    /// Items written, committed or not.
    pub(crate) len: u64,
    max_value_len: u64,
    in_tx: bool,
    /// SQLite rolled back the write transaction after an error: the writer refuses to go on.
    broken: bool,
}

fn sql_index(file: &str, i: u64) -> Result<i64> {
    i64::try_from(i).map_err(|_| Error::unsupported(format!("{file}: more than 2^63 items")))
}

fn max_plus_one(conn: &Connection, file: &str, sql: &str) -> Result<u64> {
    let max: Option<i64> = conn.query_row(sql, [], |r| r.get(0)).in_db(file)?;
    match max {
        None => Ok(0),
        Some(m) => Ok(u64::try_from(m)
            .map_err(|_| Error::corrupt(file, 0, "negative row index"))?
            .saturating_add(1)),
    }
}

impl SeqWriter {
    /// Creates the schema of a new sequence file in `conn`; with `spill` (a builder), items of a
    /// block not yet written wait in a `pending` table.
    pub(crate) fn create(
        conn: Connection,
        file: String,
        envelope: &Envelope,
        codec: &str,
        compression: SqliteCompression,
        spill: bool,
    ) -> Result<Self> {
        let kind = match compression {
            SqliteCompression::ZstdBlocks { .. } => Kind::Blocks,
            SqliteCompression::None | SqliteCompression::Zstd { .. } => Kind::Sequence,
        };
        conn.execute_batch("BEGIN").in_db(&file)?;
        create_schema(&conn, &file, kind, envelope, codec, compression.name())?;
        let layout = match compression {
            SqliteCompression::None => Layout::Rows(RowLayout::plain()),
            SqliteCompression::Zstd {
                level,
                dictionary_bytes: 0,
            } => Layout::Rows(RowLayout {
                enc: ValueEncoder::zstd(level, &[], &file)?,
                ..RowLayout::plain()
            }),
            SqliteCompression::Zstd {
                level,
                dictionary_bytes,
            } => Layout::Rows(RowLayout {
                level,
                dictionary_bytes: dictionary_bytes as usize,
                samples: Some(Sample::new()),
                ..RowLayout::plain()
            }),
            SqliteCompression::ZstdBlocks {
                items_per_block,
                level,
                dictionary_bytes,
            } => {
                let per_block = u64::from(items_per_block);
                if !(1..=MAX_BLOCK_ITEMS).contains(&per_block) {
                    return Err(Error::unsupported(format!(
                        "{file}: {per_block} items per block (1..={MAX_BLOCK_ITEMS})"
                    )));
                }
                set_meta(
                    &conn,
                    &file,
                    "block_items",
                    per_block.to_le_bytes().to_vec(),
                )?;
                if spill {
                    conn.execute_batch(
                        "CREATE TABLE pending (i INTEGER PRIMARY KEY, v BLOB NOT NULL)",
                    )
                    .in_db(&file)?;
                }
                let mut blocks = BlockLayout {
                    per_block,
                    level,
                    dictionary_bytes: dictionary_bytes as usize,
                    enc: None,
                    waiting: Vec::new(),
                    waiting_bytes: 0,
                    open: OpenBlock::default(),
                    written: 0,
                    spill,
                };
                if dictionary_bytes == 0 {
                    set_meta(&conn, &file, "zstd_dict", Vec::new())?;
                    blocks.enc = Some(BlockEncoder::new(level, &[], &file)?);
                }
                Layout::Blocks(blocks)
            }
        };
        conn.execute_batch("COMMIT").in_db(&file)?;
        Ok(SeqWriter {
            conn,
            file,
            layout,
            raw: Vec::new(),
            len: 0,
            max_value_len: 0,
            in_tx: false,
            broken: false,
        })
    }

    /// Continues an existing sequence file described by `meta` (finished or not). The file's
    /// layout wins over `compression`, which only supplies the zstd level.
    pub(crate) fn resume(
        conn: Connection,
        file: String,
        meta: &Meta,
        compression: SqliteCompression,
    ) -> Result<Self> {
        let (level, dictionary_bytes) = match compression {
            SqliteCompression::Zstd {
                level,
                dictionary_bytes,
            }
            | SqliteCompression::ZstdBlocks {
                level,
                dictionary_bytes,
                ..
            } => (level, dictionary_bytes as usize),
            SqliteCompression::None => (DEFAULT_LEVEL, 0),
        };
        let mut w = SeqWriter {
            conn,
            file,
            layout: Layout::Rows(RowLayout::plain()),
            raw: Vec::new(),
            len: 0,
            max_value_len: meta.max_value_len,
            in_tx: false,
            broken: false,
        };
        match meta.stored {
            Stored::Plain | Stored::Zstd => {
                w.len = max_plus_one(&w.conn, &w.file, "SELECT MAX(i) FROM items")?;
                if let (Stored::Zstd, false) = (meta.stored, meta.finished) {
                    let base = RowLayout {
                        level,
                        dictionary_bytes,
                        ..RowLayout::plain()
                    };
                    let rows = match &meta.dictionary {
                        Some(d) => RowLayout {
                            enc: ValueEncoder::zstd(level, d, &w.file)?,
                            ..base
                        },
                        None if w.len == 0 && dictionary_bytes > 0 => RowLayout {
                            samples: Some(Sample::new()),
                            ..base
                        },
                        None => RowLayout {
                            enc: ValueEncoder::zstd(level, &[], &w.file)?,
                            ..base
                        },
                    };
                    w.layout = Layout::Rows(rows);
                }
            }
            Stored::Blocks { items } => {
                let written = max_plus_one(&w.conn, &w.file, "SELECT MAX(b) FROM blocks")?;
                let mut blocks = BlockLayout {
                    per_block: items,
                    level,
                    dictionary_bytes,
                    enc: None,
                    waiting: Vec::new(),
                    waiting_bytes: 0,
                    open: OpenBlock::default(),
                    written,
                    spill: !meta.finished,
                };
                if meta.finished {
                    w.len = meta.len.unwrap_or(0);
                    w.layout = Layout::Blocks(blocks);
                    return Ok(w);
                }
                if let Some(d) = &meta.dictionary {
                    blocks.enc = Some(BlockEncoder::new(level, d, &w.file)?);
                }
                w.len = written.saturating_mul(items);
                w.layout = Layout::Blocks(blocks);
                // The items of blocks not written yet: back into memory, in order.
                let mut pending = Vec::new();
                {
                    let mut stmt = w
                        .conn
                        .prepare("SELECT i, v FROM pending ORDER BY i")
                        .in_db(&w.file)?;
                    let mut rows = stmt.query([]).in_db(&w.file)?;
                    while let Some(row) = rows.next().in_db(&w.file)? {
                        let i: i64 = row.get(0).in_db(&w.file)?;
                        let v: Vec<u8> = row.get(1).in_db(&w.file)?;
                        pending.push((i, v));
                    }
                }
                for (i, v) in pending {
                    if u64::try_from(i).ok() != Some(w.len) {
                        return Err(Error::corrupt(
                            &w.file,
                            0,
                            format!("pending item {i}, expected item {}", w.len),
                        ));
                    }
                    w.len += 1;
                    w.add_to_block(&v, false)?;
                }
                if w.in_tx {
                    // Blocks completed by the replay (a dictionary decided after a crash).
                    w.commit()?;
                }
            }
        }
        Ok(w)
    }

    fn begin(&mut self) -> Result<()> {
        self.check_usable()?;
        if !self.in_tx {
            self.conn.execute_batch("BEGIN").in_db(&self.file)?;
            self.in_tx = true;
        }
        Ok(())
    }

    /// Refuses to go on after SQLite rolled back the write transaction on its own: the items
    /// held in memory no longer match the file.
    fn check_usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Io {
                path: self.file.clone(),
                source: std::io::Error::other(
                    "an earlier write failed and SQLite rolled back the uncommitted items; \
                     open the file again to resume after the committed ones",
                ),
            });
        }
        Ok(())
    }

    /// After a failed statement: notes whether SQLite rolled back the whole transaction (it may
    /// on a full disk or an I/O error), which makes the writer unusable.
    fn note_failure(&mut self) {
        if self.in_tx && self.conn.is_autocommit() {
            self.in_tx = false;
            self.broken = true;
        }
    }

    /// Runs `f` inside a savepoint of the write transaction, rolled back if `f` fails: a failed
    /// step leaves the file as it was before it, so that the items in memory still match it.
    fn atomic<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        self.begin()?;
        self.conn
            .execute_batch("SAVEPOINT milonga_step")
            .in_db(&self.file)?;
        match f(self) {
            Ok(r) => {
                self.conn
                    .execute_batch("RELEASE milonga_step")
                    .in_db(&self.file)?;
                Ok(r)
            }
            Err(e) => {
                let _ = self
                    .conn
                    .execute_batch("ROLLBACK TO milonga_step; RELEASE milonga_step");
                self.note_failure();
                Err(e)
            }
        }
    }

    /// Appends one item. On an error the item is not counted unless it was kept (in memory
    /// and in the transaction), so that `len` always says how many items the file will hold.
    pub(crate) fn push<T, C: Codec<T> + ?Sized>(&mut self, codec: &C, item: &T) -> Result<()> {
        self.check_usable()?;
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
        let r = match &self.layout {
            Layout::Rows(_) => self.push_row(index, &raw),
            Layout::Blocks(_) => self.add_to_block(&raw, true),
        };
        self.raw = raw;
        r
    }

    /// Adds item `index` (the last counted in `len`) to the row layout; uncounts it if it was
    /// not kept.
    fn push_row(&mut self, index: u64, raw: &[u8]) -> Result<()> {
        let Layout::Rows(rows) = &mut self.layout else {
            return Ok(());
        };
        if let Some(samples) = rows.samples.as_mut() {
            // Kept in memory: a failed flush is retried by the next push or commit.
            if samples.push(raw.to_vec(), raw.len()) {
                self.flush_samples()?;
            }
            Ok(())
        } else {
            let r = self.insert_row(index, raw);
            if r.is_err() {
                self.note_failure();
                self.len = index;
            }
            r
        }
    }

    fn insert_row(&mut self, index: u64, raw: &[u8]) -> Result<()> {
        self.begin()?;
        let Layout::Rows(rows) = &mut self.layout else {
            return Ok(());
        };
        let stored = rows.enc.encode(raw, &self.file)?;
        let i = sql_index(&self.file, index)?;
        self.conn
            .prepare_cached("INSERT INTO items (i, v) VALUES (?1, ?2)")
            .in_db(&self.file)?
            .execute(rusqlite::params![i, stored])
            .in_db(&self.file)?;
        Ok(())
    }

    /// Trains the dictionary on the sampled values and writes them (row layout), all or
    /// nothing: on an error the samples stay in memory for the next try.
    fn flush_samples(&mut self) -> Result<()> {
        let Layout::Rows(rows) = &mut self.layout else {
            return Ok(());
        };
        let Some(samples) = rows.samples.take() else {
            return Ok(());
        };
        let (level, max) = (rows.level, rows.dictionary_bytes);
        let r = self.atomic(|w| {
            let dict = samples.train(max, Vec::as_slice);
            set_meta(&w.conn, &w.file, "zstd_dict", dict.clone())?;
            if let Layout::Rows(rows) = &mut w.layout {
                rows.enc = ValueEncoder::zstd(level, &dict, &w.file)?;
            }
            let first = w.len - samples.entries.len() as u64;
            for (k, raw) in samples.entries.iter().enumerate() {
                w.insert_row(first + k as u64, raw)?;
            }
            Ok(())
        });
        if r.is_err() {
            if let Layout::Rows(rows) = &mut self.layout {
                rows.samples = Some(samples);
            }
        }
        r
    }

    /// Adds the codec bytes of the last item counted in `len` to the open block, writing it to
    /// `pending` first when `spill` says so and `to_pending` (not when replaying `pending`).
    /// The item is uncounted if it was not kept; once it is in the open block, an error in
    /// writing the full block leaves the block in memory, written by the next push.
    fn add_to_block(&mut self, raw: &[u8], to_pending: bool) -> Result<()> {
        let Layout::Blocks(b) = &self.layout else {
            return Ok(());
        };
        let r = if (b.open.len() as u64) < b.per_block {
            self.insert_pending(raw, to_pending)
        } else {
            // A full block left by a failed write is written before the block gets more; if
            // that fails again, the item is not kept.
            self.atomic(|w| {
                w.insert_pending(raw, to_pending)?;
                w.complete_block()
            })
        };
        if let Err(e) = r {
            self.note_failure();
            self.len -= 1;
            return Err(e);
        }
        if let Layout::Blocks(b) = &mut self.layout {
            b.open.push(raw);
        }
        self.complete_block()
    }

    /// Writes the last item counted in `len` to `pending` when `spill` and `to_pending` say so.
    fn insert_pending(&mut self, raw: &[u8], to_pending: bool) -> Result<()> {
        if !matches!(&self.layout, Layout::Blocks(b) if b.spill && to_pending) {
            return Ok(());
        }
        self.begin()?;
        let i = sql_index(&self.file, self.len - 1)?;
        self.conn
            .prepare_cached("INSERT INTO pending (i, v) VALUES (?1, ?2)")
            .in_db(&self.file)?
            .execute(rusqlite::params![i, raw])
            .in_db(&self.file)?;
        Ok(())
    }

    /// Writes the open block if it is full (or moves it to the blocks waiting for the
    /// dictionary).
    fn complete_block(&mut self) -> Result<()> {
        let Layout::Blocks(b) = &mut self.layout else {
            return Ok(());
        };
        if (b.open.len() as u64) < b.per_block {
            return Ok(());
        }
        if b.enc.is_some() {
            let block = std::mem::take(&mut b.open);
            let r = self.atomic(|w| w.write_block(&block));
            if let Layout::Blocks(b) = &mut self.layout {
                b.open = block;
                if r.is_ok() {
                    b.open.clear();
                }
            }
            return r;
        }
        let block = std::mem::take(&mut b.open);
        b.waiting_bytes += block.data.len();
        b.waiting.push(block);
        let sampled = b.waiting.len() as u64 * b.per_block;
        if sampled >= BLOCK_SAMPLE_ITEMS || b.waiting_bytes >= BLOCK_SAMPLE_BYTES {
            self.decide_dictionary()?;
        }
        Ok(())
    }

    /// Compresses `block` as the next row of `blocks`.
    fn write_block(&mut self, block: &OpenBlock) -> Result<()> {
        self.begin()?;
        let Layout::Blocks(b) = &mut self.layout else {
            return Ok(());
        };
        let Some(enc) = b.enc.as_mut() else {
            return Err(Error::Encode {
                what: self.file.clone(),
                reason: "a block was written before the dictionary was decided".into(),
            });
        };
        let stored = enc.encode(block, &self.file)?;
        let n = sql_index(&self.file, b.written)?;
        self.conn
            .prepare_cached("INSERT INTO blocks (b, v) VALUES (?1, ?2)")
            .in_db(&self.file)?
            .execute(rusqlite::params![n, stored])
            .in_db(&self.file)?;
        let written = b.written + 1;
        if b.spill {
            let done = sql_index(&self.file, written.saturating_mul(b.per_block))?;
            self.conn
                .prepare_cached("DELETE FROM pending WHERE i < ?1")
                .in_db(&self.file)?
                .execute([done])
                .in_db(&self.file)?;
        }
        if let Layout::Blocks(b) = &mut self.layout {
            b.written = written;
        }
        Ok(())
    }

    /// Trains the dictionary on the items of the waiting blocks (and the open one), records it
    /// and writes the waiting blocks, all or nothing: on an error the blocks keep waiting.
    fn decide_dictionary(&mut self) -> Result<()> {
        let Layout::Blocks(b) = &mut self.layout else {
            return Ok(());
        };
        if b.enc.is_some() {
            return Ok(());
        }
        let mut samples = Vec::new();
        for block in b.waiting.iter().chain(std::iter::once(&b.open)) {
            let mut start = 0usize;
            for &n in &block.lens {
                if let Some(item) = block.data.get(start..start + n) {
                    samples.push(item.to_vec());
                }
                start += n;
            }
        }
        let (level, max) = (b.level, b.dictionary_bytes);
        let written = b.written;
        let waiting = std::mem::take(&mut b.waiting);
        let r = self.atomic(|w| {
            let dict = train_dictionary(&samples, max).unwrap_or_default();
            set_meta(&w.conn, &w.file, "zstd_dict", dict.clone())?;
            let enc = BlockEncoder::new(level, &dict, &w.file)?;
            if let Layout::Blocks(b) = &mut w.layout {
                b.enc = Some(enc);
            }
            for block in &waiting {
                w.write_block(block)?;
            }
            Ok(())
        });
        if let Layout::Blocks(b) = &mut self.layout {
            if r.is_ok() {
                b.waiting_bytes = 0;
            } else {
                b.enc = None;
                b.written = written;
                b.waiting = waiting;
            }
        }
        r
    }

    /// Whether items wait in an open transaction (or for the dictionary).
    pub(crate) fn pending(&self) -> bool {
        self.in_tx
            || match &self.layout {
                Layout::Rows(rows) => rows.samples.as_ref().is_some_and(|s| !s.is_empty()),
                Layout::Blocks(_) => false,
            }
    }

    /// Commits every item pushed so far (a block layout keeps the open block's items in
    /// `pending`, so nothing waits in memory).
    pub(crate) fn commit(&mut self) -> Result<()> {
        self.check_usable()?;
        if let Layout::Rows(rows) = &self.layout {
            if rows.samples.as_ref().is_some_and(|s| !s.is_empty()) {
                self.flush_samples()?;
            }
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

    /// Commits and seals the file: writes the last blocks, records its length and forbids
    /// further writes.
    pub(crate) fn seal(&mut self) -> Result<()> {
        let kind = match &self.layout {
            Layout::Rows(rows) => {
                if rows.samples.is_some() {
                    // Never trained: record the decision so the file is complete.
                    self.flush_samples()?;
                }
                Kind::Sequence
            }
            Layout::Blocks(_) => {
                self.decide_dictionary()?;
                if let Layout::Blocks(b) = &mut self.layout {
                    let open = std::mem::take(&mut b.open);
                    if !open.is_empty() {
                        self.write_block(&open)?;
                    }
                }
                if let Layout::Blocks(b) = &mut self.layout {
                    if b.spill {
                        self.begin()?;
                        self.conn
                            .execute_batch("DROP TABLE pending")
                            .in_db(&self.file)?;
                        if let Layout::Blocks(b) = &mut self.layout {
                            b.spill = false;
                        }
                    }
                }
                Kind::Blocks
            }
        };
        self.begin()?;
        set_meta(
            &self.conn,
            &self.file,
            "max_value_len",
            self.max_value_len.to_le_bytes().to_vec(),
        )?;
        seal(&self.conn, &self.file, kind, self.len)?;
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
