//! A finished file opened read-only ([`ReadDb`]): its checked meta table and a pool of
//! connections, each with the decoders its values need.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use milonga_sdk::{ArtifactHandle, Error, Result};
use rusqlite::{Connection, OpenFlags};

use super::block::BlockDecoder;
use super::compress::ValueDecoder;
use super::errors::SqlResultExt;
use super::schema::{read_meta, Kind, Meta, Stored};

/// Readers keep at most this many idle connections per file.
const POOL_MAX: usize = 8;

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
