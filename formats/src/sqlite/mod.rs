//! SQLite-backed random-access formats: [`SqliteSequenceFormat`], [`SqliteDictFormat`] and
//! [`SqliteDatasetDictFormat`], plus the resumable [`SqliteSequenceBuilder`].
//!
//! Every file is one SQLite database with `application_id` `0x4D4C4753` (`MLGS`), a
//! `milonga_meta` table (envelope, codec, compression, length) and one data table. The layout
//! is specified in `docs/FORMAT.md` §8.3.

mod block;
mod builder;
mod compress;
mod dataset;
mod dict;
mod sequence;
mod writer;

pub use builder::SqliteSequenceBuilder;
pub use compress::SqliteCompression;
pub use dataset::{DatasetDict, SqliteDatasetDict, SqliteDatasetDictFormat};
pub use dict::{SqliteDict, SqliteDictFormat, SqliteDictIter, SqliteDictKeys};
pub use sequence::{SqliteIter, SqliteSequence, SqliteSequenceFormat};

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use milonga_sdk::{ArtifactHandle, Envelope, Error, Result};
use rusqlite::{ffi, Connection, OpenFlags};

use block::BlockDecoder;
use compress::ValueDecoder;

/// `PRAGMA application_id` of every milonga SQLite file: `MLGS`.
pub(crate) const APPLICATION_ID: i32 = 0x4d4c_4753;
/// `PRAGMA user_version`: the layout of the `milonga_meta` table (see `docs/FORMAT.md` §8.3);
/// the data tables are told by the envelope's version and the `compression` entry.
pub(crate) const SCHEMA_VERSION: i32 = 1;
/// The codec id whose format ids carry no suffix.
pub(crate) const DEFAULT_CODEC: &str = "postcard";
/// Readers keep at most this many idle connections per file.
const POOL_MAX: usize = 8;

/// The format id for `base` with codec `codec`: `base` for postcard, `base+codec` otherwise, so
/// that a step's id changes with its codec.
pub(crate) fn format_id(base: &str, codec: &str) -> String {
    if codec == DEFAULT_CODEC {
        base.to_owned()
    } else {
        format!("{base}+{codec}")
    }
}

/// Maps a SQLite error on `file` to an SDK error that names it.
pub(crate) fn sql_err(file: &str, e: rusqlite::Error) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(err, msg) => {
            let msg = msg.unwrap_or_else(|| err.to_string());
            let io_kind = match err.code {
                ffi::ErrorCode::NotADatabase | ffi::ErrorCode::DatabaseCorrupt => {
                    return Error::corrupt(file, 0, format!("not a valid SQLite database: {msg}"))
                }
                // The SQL is fixed: a table or column it names is missing only from a file
                // that is not laid out as milonga writes them.
                ffi::ErrorCode::Unknown
                    if msg.starts_with("no such table") || msg.starts_with("no such column") =>
                {
                    return Error::corrupt(
                        file,
                        0,
                        format!("not laid out as a milonga SQLite file: {msg}"),
                    )
                }
                ffi::ErrorCode::ConstraintViolation => {
                    return Error::Unsupported(format!("{file}: {msg}"))
                }
                ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked => {
                    io::ErrorKind::ResourceBusy
                }
                ffi::ErrorCode::PermissionDenied | ffi::ErrorCode::ReadOnly => {
                    io::ErrorKind::PermissionDenied
                }
                ffi::ErrorCode::CannotOpen => io::ErrorKind::NotFound,
                ffi::ErrorCode::DiskFull => io::ErrorKind::StorageFull,
                _ => io::ErrorKind::Other,
            };
            Error::Io {
                path: file.to_owned(),
                source: io::Error::new(io_kind, format!("SQLite: {msg}")),
            }
        }
        other => Error::corrupt(file, 0, format!("unexpected SQLite content: {other}")),
    }
}

/// Extension to add the file name to SQLite results.
pub(crate) trait SqlResultExt<T> {
    fn in_db(self, file: &str) -> Result<T>;
}

impl<T> SqlResultExt<T> for rusqlite::Result<T> {
    fn in_db(self, file: &str) -> Result<T> {
        self.map_err(|e| sql_err(file, e))
    }
}

/// A `file:` URI for `path`, opened as an immutable database (no locks, no journal).
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Opens `path` read-only as an immutable database.
pub(crate) fn open_immutable(path: &Path, file: &str) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(immutable_uri(path), flags).in_db(file)?;
    conn.pragma_update(None, "query_only", 1).in_db(file)?;
    Ok(conn)
}

/// The table that holds the data of a file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// `items (i INTEGER PRIMARY KEY, v BLOB NOT NULL)`.
    Sequence,
    /// `entries (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID`.
    Dict,
    /// A version-2 sequence in blocks: `blocks (b INTEGER PRIMARY KEY, v BLOB NOT NULL)`.
    Blocks,
}

impl Kind {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Kind::Sequence => "items",
            Kind::Dict => "entries",
            Kind::Blocks => "blocks",
        }
    }

    fn create_sql(self) -> &'static str {
        match self {
            Kind::Sequence => "CREATE TABLE items (i INTEGER PRIMARY KEY, v BLOB NOT NULL)",
            Kind::Dict => {
                "CREATE TABLE entries (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID"
            }
            Kind::Blocks => "CREATE TABLE blocks (b INTEGER PRIMARY KEY, v BLOB NOT NULL)",
        }
    }
}

/// Creates the tables of a new file and records the envelope, codec and compression.
pub(crate) fn create_schema(
    conn: &Connection,
    file: &str,
    kind: Kind,
    envelope: &Envelope,
    codec: &str,
    compression: &str,
) -> Result<()> {
    let mut env = Vec::new();
    envelope.encode_into(&mut env)?;
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .in_db(file)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .in_db(file)?;
    conn.execute_batch(
        "CREATE TABLE milonga_meta (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID",
    )
    .in_db(file)?;
    conn.execute_batch(kind.create_sql()).in_db(file)?;
    set_meta(conn, file, "envelope", env)?;
    set_meta(conn, file, "codec", codec.as_bytes().to_vec())?;
    set_meta(conn, file, "compression", compression.as_bytes().to_vec())?;
    set_meta(conn, file, "state", b"building".to_vec())?;
    Ok(())
}

/// Sets one `milonga_meta` row (values are stored as BLOBs; integers as 8 bytes little-endian).
pub(crate) fn set_meta(conn: &Connection, file: &str, key: &str, value: Vec<u8>) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO milonga_meta (key, value) VALUES (?1, ?2)")
        .in_db(file)?
        .execute(rusqlite::params![key, value])
        .in_db(file)?;
    Ok(())
}

/// Marks a file finished: records its length and forbids further writes with triggers.
pub(crate) fn seal(conn: &Connection, file: &str, kind: Kind, len: u64) -> Result<()> {
    set_meta(conn, file, "len", len.to_le_bytes().to_vec())?;
    set_meta(conn, file, "state", b"finished".to_vec())?;
    for table in [kind.table(), "milonga_meta"] {
        for op in ["INSERT", "UPDATE", "DELETE"] {
            conn.execute_batch(&format!(
                "CREATE TRIGGER milonga_immutable_{table}_{op} BEFORE {op} ON {table} \
                 BEGIN SELECT RAISE(ABORT, 'milonga: a finished artifact is immutable'); END"
            ))
            .in_db(file)?;
        }
    }
    Ok(())
}

/// How a file's values are stored, as its `compression` entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// `none`: codec bytes, one row per value.
    Plain,
    /// `zstd`: one zstd frame per value.
    Zstd,
    /// `zstd_blocks`: `items` consecutive items per row of `blocks`, one zstd frame each.
    Blocks {
        /// Items per block.
        items: u64,
    },
}

/// The largest `block_items` a reader accepts.
pub(crate) const MAX_BLOCK_ITEMS: u64 = 1 << 16;

/// What a file's `milonga_meta` table says.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    /// The format version in the envelope.
    pub(crate) version: u32,
    /// How values are stored.
    pub(crate) stored: Stored,
    /// The zstd dictionary: `None` while a builder has not decided yet.
    pub(crate) dictionary: Option<Vec<u8>>,
    /// The recorded length (finished files only).
    pub(crate) len: Option<u64>,
    /// The longest value in codec bytes.
    pub(crate) max_value_len: u64,
    /// Whether the file was sealed.
    pub(crate) finished: bool,
}

fn meta_u64(file: &str, key: &str, v: &[u8]) -> Result<u64> {
    let raw: [u8; 8] = v
        .try_into()
        .map_err(|_| Error::corrupt(file, 0, format!("meta {key:?} is not 8 bytes")))?;
    Ok(u64::from_le_bytes(raw))
}

/// Checks that `conn` is a milonga file written by `format_id` (at most `supported`) with
/// `codec`, and reads its meta table.
pub(crate) fn read_meta(
    conn: &Connection,
    file: &str,
    format_id: &str,
    supported: u32,
    codec: &str,
) -> Result<Meta> {
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .in_db(file)?;
    if app != APPLICATION_ID {
        return Err(Error::WrongFormat {
            file: file.to_owned(),
            expected: format_id.to_owned(),
            found: format!("a SQLite database with application_id {app:#x}, not a milonga file"),
        });
    }
    let schema: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .in_db(file)?;
    if schema != SCHEMA_VERSION {
        return Err(Error::UnsupportedVersion {
            file: file.to_owned(),
            format: "milonga sqlite schema".into(),
            found: u32::try_from(schema).unwrap_or(u32::MAX),
            supported: SCHEMA_VERSION as u32,
        });
    }
    let mut rows: HashMap<String, Vec<u8>> = HashMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT key, value FROM milonga_meta")
            .in_db(file)?;
        let mut q = stmt.query([]).in_db(file)?;
        while let Some(row) = q.next().in_db(file)? {
            let key: String = row.get(0).in_db(file)?;
            let value: Vec<u8> = match row.get_ref(1).in_db(file)? {
                rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
                rusqlite::types::ValueRef::Text(t) => t.to_vec(),
                _ => {
                    return Err(Error::corrupt(
                        file,
                        0,
                        format!("meta {key:?} is not a BLOB"),
                    ))
                }
            };
            rows.insert(key, value);
        }
    }
    let need = |key: &str| {
        rows.get(key)
            .ok_or_else(|| Error::corrupt(file, 0, format!("meta table has no {key:?}")))
    };
    let (env, _) = Envelope::decode(need("envelope")?, file)?;
    let version = env.expect(format_id, supported, file)?;
    let found_codec = String::from_utf8_lossy(need("codec")?).into_owned();
    if found_codec != codec {
        return Err(Error::WrongFormat {
            file: file.to_owned(),
            expected: format!("{format_id} with codec {codec}"),
            found: format!("{} with codec {found_codec}", env.format_id),
        });
    }
    let stored = match need("compression")?.as_slice() {
        b"none" => Stored::Plain,
        b"zstd" => Stored::Zstd,
        b"zstd_blocks" if version >= 2 => {
            let items = meta_u64(file, "block_items", need("block_items")?)?;
            if !(1..=MAX_BLOCK_ITEMS).contains(&items) {
                return Err(Error::corrupt(
                    file,
                    0,
                    format!("block_items {items} is not in 1..={MAX_BLOCK_ITEMS}"),
                ));
            }
            Stored::Blocks { items }
        }
        b"zstd_blocks" => {
            return Err(Error::corrupt(
                file,
                0,
                format!("compression \"zstd_blocks\" in a version {version} file (needs 2)"),
            ))
        }
        other => {
            return Err(Error::corrupt(
                file,
                0,
                format!("unknown compression {:?}", String::from_utf8_lossy(other)),
            ))
        }
    };
    let finished = match need("state")?.as_slice() {
        b"building" => false,
        b"finished" => true,
        other => {
            return Err(Error::corrupt(
                file,
                0,
                format!("unknown state {:?}", String::from_utf8_lossy(other)),
            ))
        }
    };
    let len = match rows.get("len") {
        Some(v) => Some(meta_u64(file, "len", v)?),
        None => None,
    };
    let max_value_len = match rows.get("max_value_len") {
        Some(v) => meta_u64(file, "max_value_len", v)?,
        None => 0,
    };
    Ok(Meta {
        version,
        stored,
        dictionary: rows.get("zstd_dict").cloned(),
        len,
        max_value_len,
        finished,
    })
}

/// A decoder for the values of a file described by `meta`.
pub(crate) fn decoder_for(meta: &Meta, file: &str) -> Result<ValueDecoder> {
    match meta.stored {
        Stored::Zstd => ValueDecoder::zstd(
            meta.dictionary.as_deref().unwrap_or_default(),
            meta.max_value_len,
            file,
        ),
        Stored::Plain | Stored::Blocks { .. } => Ok(ValueDecoder::plain()),
    }
}

/// A connection with the decoders that go with it.
pub(crate) struct Slot {
    pub(crate) conn: Connection,
    /// Decodes values stored one per row.
    pub(crate) dec: ValueDecoder,
    /// Decodes (and holds the last of) the blocks of a file in blocks.
    pub(crate) blocks: Option<BlockDecoder>,
}

impl Slot {
    fn new(conn: Connection, meta: &Meta, file: &str) -> Result<Slot> {
        let blocks = match meta.stored {
            Stored::Blocks { .. } => Some(BlockDecoder::new(
                meta.dictionary.as_deref().unwrap_or_default(),
                meta.max_value_len,
                file,
            )?),
            Stored::Plain | Stored::Zstd => None,
        };
        Ok(Slot {
            conn,
            dec: decoder_for(meta, file)?,
            blocks,
        })
    }
}

/// A finished file opened read-only, shared by every view on it.
pub(crate) struct ReadDb {
    /// The artifact file name with the artifact's description, for errors.
    pub(crate) file: String,
    path: PathBuf,
    meta: Meta,
    pool: Mutex<Vec<Slot>>,
    /// A copy made for a backend without local files, removed on drop.
    temp: Option<PathBuf>,
    _artifact: ArtifactHandle,
}

impl std::fmt::Debug for ReadDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadDb").field("file", &self.file).finish()
    }
}

impl Drop for ReadDb {
    fn drop(&mut self) {
        if let Some(p) = &self.temp {
            if let Ok(mut pool) = self.pool.lock() {
                pool.clear();
            }
            let _ = std::fs::remove_file(p);
        }
    }
}

static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Copies artifact file `name` to a temporary local file (for backends without local paths).
fn materialize(artifact: &ArtifactHandle, name: &str, file: &str) -> Result<PathBuf> {
    let n = TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("milonga-sqlite-{}-{n}.sqlite", std::process::id()));
    let mut src = artifact.open(name)?;
    let mut dst = std::fs::File::create(&path).map_err(|e| Error::io(path.display(), e))?;
    let copied = io::copy(&mut src, &mut dst).map_err(|e| Error::io(file, e));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Checks, before SQLite reads it, that the local file behind artifact file `name` is a regular
/// file (not a FIFO, device or link) of exactly the length its record says: SQLite would
/// otherwise read what it finds (a longer file's tail, a FIFO that blocks).
fn check_recorded_size(
    artifact: &ArtifactHandle,
    name: &str,
    path: &Path,
    file: &str,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(file, e))?;
    if !meta.file_type().is_file() {
        return Err(Error::corrupt(
            file,
            0,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if let Some(entry) = artifact.entry(name) {
        if meta.len() != entry.len {
            return Err(Error::corrupt(
                file,
                0,
                format!(
                    "{} is {} bytes, but its record says {}",
                    path.display(),
                    meta.len(),
                    entry.len
                ),
            ));
        }
    }
    Ok(())
}

impl ReadDb {
    /// Opens artifact file `name` and checks its meta table against `format_id`, `supported`
    /// and `codec`, and its data table against the recorded length.
    pub(crate) fn open(
        artifact: ArtifactHandle,
        name: &str,
        kind: Kind,
        format_id: &str,
        supported: u32,
        codec: &str,
    ) -> Result<Arc<ReadDb>> {
        let file = format!("{}: {name}", artifact.describe());
        let (path, temp) = match artifact.local_path(name)? {
            Some(p) => (p, None),
            None => {
                let p = materialize(&artifact, name, &file)?;
                (p.clone(), Some(p))
            }
        };
        check_recorded_size(&artifact, name, &path, &file)?;
        let db = ReadDb {
            meta: Meta {
                version: 0,
                stored: Stored::Plain,
                dictionary: None,
                len: None,
                max_value_len: 0,
                finished: false,
            },
            file,
            path,
            pool: Mutex::new(Vec::new()),
            temp,
            _artifact: artifact,
        };
        let conn = open_immutable(&db.path, &db.file)?;
        let meta = read_meta(&conn, &db.file, format_id, supported, codec)?;
        if !meta.finished {
            return Err(Error::corrupt(
                &db.file,
                0,
                "the file was never finished (state is \"building\")",
            ));
        }
        let Some(len) = meta.len else {
            return Err(Error::corrupt(
                &db.file,
                0,
                "finished file without a length",
            ));
        };
        let found: u64 = match (kind, meta.stored) {
            (Kind::Sequence | Kind::Blocks, Stored::Blocks { items }) => {
                let max: Option<i64> = conn
                    .query_row("SELECT MAX(b) FROM blocks", [], |r| r.get(0))
                    .in_db(&db.file)?;
                let blocks = max.map_or(0, |m| {
                    u64::try_from(m).map_or(u64::MAX, |m| m.saturating_add(1))
                });
                // Every block but the last is full; the last holds 1..=items.
                if blocks != len.div_ceil(items) {
                    return Err(Error::corrupt(
                        &db.file,
                        0,
                        format!(
                            "meta says {len} items in blocks of {items}, the table has {blocks} blocks"
                        ),
                    ));
                }
                len
            }
            (Kind::Dict, Stored::Blocks { .. }) => {
                return Err(Error::corrupt(
                    &db.file,
                    0,
                    "a dict cannot be stored in blocks",
                ))
            }
            (Kind::Sequence | Kind::Blocks, _) => {
                let max: Option<i64> = conn
                    .query_row("SELECT MAX(i) FROM items", [], |r| r.get(0))
                    .in_db(&db.file)?;
                max.map_or(0, |m| {
                    u64::try_from(m).map_or(u64::MAX, |m| m.saturating_add(1))
                })
            }
            // A dict's COUNT(*) is O(n); its length is checked by a full scan only.
            (Kind::Dict, _) => {
                conn.prepare_cached("SELECT v FROM entries WHERE k = ?1")
                    .in_db(&db.file)?;
                len
            }
        };
        if found != len {
            return Err(Error::corrupt(
                &db.file,
                0,
                format!("meta says {len} items, the table ends after {found}"),
            ));
        }
        let slot = Slot::new(conn, &meta, &db.file)?;
        let mut db = db;
        db.meta = meta;
        db.pool.lock().unwrap_or_else(|e| e.into_inner()).push(slot);
        Ok(Arc::new(db))
    }

    /// The file's meta table.
    pub(crate) fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Runs `f` with a pooled connection (opening another one if all are busy).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Slot) -> Result<R>) -> Result<R> {
        let slot = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut slot = match slot {
            Some(s) => s,
            None => Slot::new(
                open_immutable(&self.path, &self.file)?,
                &self.meta,
                &self.file,
            )?,
        };
        let r = f(&mut slot);
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(slot);
        }
        r
    }
}

/// Decodes stored value `stored` of item `what` (an index or key description).
pub(crate) fn decode_item<T, C: milonga_sdk::Codec<T> + ?Sized>(
    codec: &C,
    dec: &mut ValueDecoder,
    stored: &[u8],
    file: &str,
    what: &dyn std::fmt::Display,
) -> Result<T> {
    let raw = dec.decode(stored).map_err(|reason| Error::Decode {
        file: file.to_owned(),
        offset: 0,
        reason: format!("{what}: {reason}"),
    })?;
    decode_raw(codec, raw, file, what)
}

/// Decodes the codec bytes `raw` of item `what`.
pub(crate) fn decode_raw<T, C: milonga_sdk::Codec<T> + ?Sized>(
    codec: &C,
    raw: &[u8],
    file: &str,
    what: &dyn std::fmt::Display,
) -> Result<T> {
    codec.decode(raw).map_err(|e| match e {
        Error::Decode { reason, .. } => Error::Decode {
            file: file.to_owned(),
            offset: 0,
            reason: format!("{what}: {reason}"),
        },
        other => other,
    })
}
