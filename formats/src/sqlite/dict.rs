//! [`SqliteDictFormat`]: a map stored as one SQLite table keyed by the canonical bytes of its
//! keys, read back as a lazy [`SqliteDict`].

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use milonga_sdk::{ArtifactHandle, ArtifactWriter, Codec, Envelope, Error, Format, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::compress::{decode_item, Sample, SqliteCompression, ValueEncoder};
use super::errors::SqlResultExt;
use super::pool::ReadDb;
use super::schema::{create_schema, format_id, seal, set_meta, Kind, WRITE_BATCH};
use super::writer::{open_bulk, remove_db};
use crate::codec::PostcardCodec;

const DICT_ID: &str = "milonga.sqlite_dict";
const DICT_VERSION: u32 = 1;
const DICT_FILE: &str = "data.sqlite";
const READ_BATCH: i64 = 1024;

/// The canonical bytes of a key: its postcard encoding.
fn key_bytes<Q: Serialize + ?Sized>(key: &Q, file: &str) -> Result<Vec<u8>> {
    postcard::to_stdvec(key).map_err(|e| Error::Encode {
        what: format!("a key of {file}"),
        reason: e.to_string(),
    })
}

fn decode_key<K: Serialize + DeserializeOwned>(bytes: &[u8], file: &str) -> Result<K> {
    Codec::<K>::decode(&PostcardCodec, bytes).map_err(|e| match e {
        Error::Decode { reason, .. } => Error::Decode {
            file: file.to_owned(),
            offset: 0,
            reason: format!("key {bytes:02x?}: {reason}"),
        },
        other => other,
    })
}

/// A map with serde keys stored as a SQLite database (`data.sqlite`), read back as a lazy
/// [`SqliteDict`].
///
/// Keys are stored as their postcard bytes (for a `String`: a varint length, then the UTF-8
/// bytes), so any serde key works and equal keys are equal bytes; values go through the codec
/// `C`. A later duplicate key replaces an earlier one. The file's bytes do not depend on the
/// order of the input: the table is rebuilt in key order before it is published.
///
/// ```
/// use milonga_formats::SqliteDictFormat;
/// use milonga_sdk::{Format, MemoryArtifact};
///
/// let format = SqliteDictFormat::<String, u32>::new();
/// let artifact = MemoryArtifact::new();
/// format.write(vec![("a".to_string(), 1), ("b".to_string(), 2)], &artifact).unwrap();
/// let dict = Format::<Vec<(String, u32)>>::read(&format, artifact.handle()).unwrap();
/// assert_eq!(dict.get("b").unwrap(), Some(2));
/// assert!(!dict.contains("c").unwrap());
/// ```
pub struct SqliteDictFormat<K, V, C = PostcardCodec> {
    codec: Arc<C>,
    compression: SqliteCompression,
    id: String,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<K, V, C> fmt::Debug for SqliteDictFormat<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDictFormat")
            .field("id", &self.id)
            .field("compression", &self.compression)
            .finish()
    }
}

impl<K, V> SqliteDictFormat<K, V, PostcardCodec>
where
    PostcardCodec: Codec<V>,
{
    /// Values as postcard, uncompressed.
    pub fn new() -> Self {
        Self::with_codec(PostcardCodec)
    }
}

impl<K, V> Default for SqliteDictFormat<K, V, PostcardCodec>
where
    PostcardCodec: Codec<V>,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V, C: Codec<V>> SqliteDictFormat<K, V, C> {
    /// Values encoded with `codec`. The format id is `milonga.sqlite_dict`, followed by
    /// `+<codec id>` for codecs other than postcard.
    pub fn with_codec(codec: C) -> Self {
        let id = format_id(DICT_ID, codec.id());
        SqliteDictFormat {
            codec: Arc::new(codec),
            compression: SqliteCompression::None,
            id,
            _kv: PhantomData,
        }
    }

    /// Sets how values are compressed (readers handle every option).
    #[must_use]
    pub fn with_compression(mut self, compression: SqliteCompression) -> Self {
        self.compression = compression.per_value();
        self
    }
}

impl<K, V, C, I> Format<I> for SqliteDictFormat<K, V, C>
where
    K: Serialize + DeserializeOwned + 'static,
    V: 'static,
    C: Codec<V> + 'static,
    I: IntoIterator<Item = (K, V)>,
{
    type Output = SqliteDict<K, V, C>;

    fn id(&self) -> &str {
        &self.id
    }

    fn version(&self) -> u32 {
        DICT_VERSION
    }

    fn write(&self, value: I, artifact: &dyn ArtifactWriter) -> Result<()> {
        let dir = artifact.scratch_dir()?;
        let staging = dir.join("milonga-dict.staging.sqlite");
        let path = dir.join("milonga-dict.sqlite");
        let file = staging.display().to_string();
        let conn = open_bulk(&staging, &file)?;
        remove_db(&path)?;
        conn.execute_batch("BEGIN").in_db(&file)?;
        create_schema(
            &conn,
            &file,
            Kind::Dict,
            &Envelope::new(&self.id, DICT_VERSION),
            self.codec.id(),
            self.compression.name(),
        )?;
        let (level, dict_bytes) = match self.compression {
            SqliteCompression::Zstd {
                level,
                dictionary_bytes,
            } => (Some(level), dictionary_bytes as usize),
            // `compression()` maps blocks to per-value zstd.
            SqliteCompression::None | SqliteCompression::ZstdBlocks { .. } => (None, 0),
        };
        let mut enc = ValueEncoder::plain();
        let mut samples: Option<Sample<(Vec<u8>, Vec<u8>)>> = None;
        match level {
            Some(_) if dict_bytes > 0 => samples = Some(Sample::new()),
            Some(l) => enc = ValueEncoder::zstd(l, &[], &file)?,
            None => {}
        }
        let mut max_value_len = 0u64;
        let mut n = 0u64;
        let insert = |enc: &mut ValueEncoder, k: &[u8], raw: &[u8]| -> Result<()> {
            let stored = enc.encode(raw, &file)?;
            conn.prepare_cached("INSERT OR REPLACE INTO entries (k, v) VALUES (?1, ?2)")
                .in_db(&file)?
                .execute(rusqlite::params![k, stored])
                .in_db(&file)?;
            Ok(())
        };
        let flush = |enc: &mut ValueEncoder, samples: Sample<(Vec<u8>, Vec<u8>)>| -> Result<()> {
            let dict = samples.train(dict_bytes, |(_, v)| v);
            set_meta(&conn, &file, "zstd_dict", dict.clone())?;
            *enc = ValueEncoder::zstd(level.unwrap_or(3), &dict, &file)?;
            for (k, v) in &samples.entries {
                insert(enc, k, v)?;
            }
            Ok(())
        };
        let mut raw = Vec::new();
        for (key, value) in value {
            let k = key_bytes(&key, &file)?;
            raw.clear();
            self.codec.encode(&value, &mut raw)?;
            max_value_len = max_value_len.max(raw.len() as u64);
            n += 1;
            if let Some(s) = samples.as_mut() {
                let len = raw.len();
                if s.push((k, raw.clone()), len) {
                    if let Some(full) = samples.take() {
                        flush(&mut enc, full)?;
                    }
                }
            } else {
                insert(&mut enc, &k, &raw)?;
            }
            if n.is_multiple_of(WRITE_BATCH) {
                conn.execute_batch("COMMIT; BEGIN").in_db(&file)?;
            }
        }
        if let Some(s) = samples.take() {
            flush(&mut enc, s)?;
        }
        let len: i64 = conn
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
            .in_db(&file)?;
        set_meta(
            &conn,
            &file,
            "max_value_len",
            max_value_len.to_le_bytes().to_vec(),
        )?;
        seal(&conn, &file, Kind::Dict, u64::try_from(len).unwrap_or(0))?;
        conn.execute_batch("COMMIT").in_db(&file)?;
        // Rebuild in key order: the bytes no longer depend on the order of the input.
        conn.execute("VACUUM INTO ?1", [path.display().to_string()])
            .in_db(&file)?;
        conn.close().map_err(|(_, e)| e).in_db(&file)?;
        remove_db(&staging)?;
        artifact.ingest(DICT_FILE, &path)?;
        Ok(())
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<Self::Output> {
        let db = ReadDb::open(
            artifact,
            DICT_FILE,
            Kind::Dict,
            &self.id,
            DICT_VERSION,
            self.codec.id(),
        )?;
        let len = db.meta().len.unwrap_or(0);
        Ok(SqliteDict {
            db,
            codec: Arc::clone(&self.codec),
            len,
            _kv: PhantomData,
        })
    }
}

/// A stored map, read lazily: each lookup is one indexed query.
///
/// Iteration ([`keys`](SqliteDict::keys), [`iter`](SqliteDict::iter)) is in the order of the
/// keys' postcard bytes (for strings shorter than 128 bytes: by length, then bytewise).
pub struct SqliteDict<K, V, C = PostcardCodec> {
    db: Arc<ReadDb>,
    codec: Arc<C>,
    len: u64,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<K, V, C> Clone for SqliteDict<K, V, C> {
    fn clone(&self) -> Self {
        SqliteDict {
            db: Arc::clone(&self.db),
            codec: Arc::clone(&self.codec),
            len: self.len,
            _kv: PhantomData,
        }
    }
}

impl<K, V, C> fmt::Debug for SqliteDict<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDict")
            .field("file", &self.db.file)
            .field("len", &self.len)
            .finish()
    }
}

impl<K, V, C> SqliteDict<K, V, C>
where
    K: Serialize + DeserializeOwned,
    C: Codec<V>,
{
    /// The number of entries.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value for `key` (any borrowed form whose postcard bytes equal the key's, such as
    /// `&str` for `String`).
    ///
    /// # Errors
    /// [`Error::Decode`] if the stored value does not decode; SQLite or I/O errors.
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let file = &self.db.file;
        let k = key_bytes(key, file)?;
        self.db.with(|slot| {
            let mut stmt = slot
                .conn
                .prepare_cached("SELECT v FROM entries WHERE k = ?1")
                .in_db(file)?;
            let mut rows = stmt.query([&k]).in_db(file)?;
            let Some(row) = rows.next().in_db(file)? else {
                return Ok(None);
            };
            let stored = row.get_ref(0).in_db(file)?.as_blob().map_err(|_| {
                Error::corrupt(file, 0, format!("value of key {k:02x?} is not a BLOB"))
            })?;
            decode_item(
                &*self.codec,
                &mut slot.dec,
                stored,
                file,
                &format_args!("key {k:02x?}"),
            )
            .map(Some)
        })
    }

    /// Whether `key` has a value.
    ///
    /// # Errors
    /// SQLite or I/O errors.
    pub fn contains<Q>(&self, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let file = &self.db.file;
        let k = key_bytes(key, file)?;
        self.db.with(|slot| {
            let mut stmt = slot
                .conn
                .prepare_cached("SELECT 1 FROM entries WHERE k = ?1")
                .in_db(file)?;
            let mut rows = stmt.query([&k]).in_db(file)?;
            Ok(rows.next().in_db(file)?.is_some())
        })
    }

    /// The keys, in stored order.
    pub fn keys(&self) -> SqliteDictKeys<K, V, C> {
        SqliteDictKeys(self.iter_inner(false))
    }

    /// The entries, in stored order.
    pub fn iter(&self) -> SqliteDictIter<K, V, C> {
        self.iter_inner(true)
    }

    fn iter_inner(&self, values: bool) -> SqliteDictIter<K, V, C> {
        SqliteDictIter {
            dict: self.clone(),
            after: None,
            values,
            buf: VecDeque::new(),
            failed: None,
            done: false,
        }
    }
}

/// An iterator over the entries of a [`SqliteDict`], yielding `Result<(K, V)>`.
pub struct SqliteDictIter<K, V, C = PostcardCodec> {
    dict: SqliteDict<K, V, C>,
    after: Option<Vec<u8>>,
    values: bool,
    buf: VecDeque<(K, Option<V>)>,
    failed: Option<Error>,
    done: bool,
}

impl<K, V, C> fmt::Debug for SqliteDictIter<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDictIter")
            .field("file", &self.dict.db.file)
            .finish()
    }
}

impl<K, V, C> SqliteDictIter<K, V, C>
where
    K: Serialize + DeserializeOwned,
    C: Codec<V>,
{
    fn fill(&mut self) {
        let dict = &self.dict;
        let file = &dict.db.file;
        let buf = &mut self.buf;
        let after = &mut self.after;
        let values = self.values;
        let r = dict.db.with(|slot| {
            let sql = match (after.is_some(), values) {
                (false, true) => "SELECT k, v FROM entries ORDER BY k LIMIT ?2",
                (true, true) => "SELECT k, v FROM entries WHERE k > ?1 ORDER BY k LIMIT ?2",
                (false, false) => "SELECT k FROM entries ORDER BY k LIMIT ?2",
                (true, false) => "SELECT k FROM entries WHERE k > ?1 ORDER BY k LIMIT ?2",
            };
            let mut stmt = slot.conn.prepare_cached(sql).in_db(file)?;
            if let Some(a) = after.as_ref() {
                stmt.raw_bind_parameter(1, a).in_db(file)?;
            }
            stmt.raw_bind_parameter(2, READ_BATCH).in_db(file)?;
            let mut rows = stmt.raw_query();
            let mut n = 0;
            while let Some(row) = rows.next().in_db(file)? {
                let k = row
                    .get_ref(0)
                    .in_db(file)?
                    .as_blob()
                    .map_err(|_| Error::corrupt(file, 0, "a key is not a BLOB"))?;
                let key: K = decode_key(k, file)?;
                let value = if values {
                    let stored = row.get_ref(1).in_db(file)?.as_blob().map_err(|_| {
                        Error::corrupt(file, 0, format!("value of key {k:02x?} is not a BLOB"))
                    })?;
                    Some(decode_item(
                        &*dict.codec,
                        &mut slot.dec,
                        stored,
                        file,
                        &format_args!("key {k:02x?}"),
                    )?)
                } else {
                    None
                };
                // SQLite trusts its B-tree: an edited page can repeat a key or put one out of
                // order without SQLite noticing. Keys must come strictly increasing.
                if after.as_deref().is_some_and(|prev| k <= prev) {
                    return Err(Error::corrupt(
                        file,
                        0,
                        format!("key {k:02x?} repeats or is out of order: the file is damaged"),
                    ));
                }
                *after = Some(k.to_vec());
                buf.push_back((key, value));
                n += 1;
            }
            Ok(n)
        });
        match r {
            Ok(0) => self.done = true,
            Ok(_) => {}
            Err(e) => self.failed = Some(e),
        }
    }

    fn next_entry(&mut self) -> Option<Result<(K, Option<V>)>> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Some(Ok(e));
            }
            if let Some(e) = self.failed.take() {
                self.done = true;
                return Some(Err(e));
            }
            if self.done {
                return None;
            }
            self.fill();
        }
    }
}

impl<K, V, C> Iterator for SqliteDictIter<K, V, C>
where
    K: Serialize + DeserializeOwned,
    C: Codec<V>,
{
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_entry()? {
            Ok((k, Some(v))) => Some(Ok((k, v))),
            Ok((_, None)) => Some(Err(Error::unsupported("a keys-only scan has no values"))),
            Err(e) => Some(Err(e)),
        }
    }
}

/// An iterator over the keys of a [`SqliteDict`], yielding `Result<K>`.
pub struct SqliteDictKeys<K, V, C = PostcardCodec>(SqliteDictIter<K, V, C>);

impl<K, V, C> fmt::Debug for SqliteDictKeys<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<K, V, C> Iterator for SqliteDictKeys<K, V, C>
where
    K: Serialize + DeserializeOwned,
    C: Codec<V>,
{
    type Item = Result<K>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.0.next_entry()?.map(|(k, _)| k))
    }
}
