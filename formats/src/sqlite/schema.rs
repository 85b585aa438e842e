//! The layout every milonga SQLite file shares: its pragmas, the `milonga_meta` table (what it
//! records and how it is read back) and the data tables (`docs/FORMAT.md` §8.3).

use std::collections::HashMap;

use milonga_sdk::{Envelope, Error, Result};
use rusqlite::Connection;

use super::errors::SqlResultExt;

/// `PRAGMA application_id` of every milonga SQLite file: `MLGS`.
pub(crate) const APPLICATION_ID: i32 = 0x4d4c_4753;
/// `PRAGMA user_version`: the layout of the `milonga_meta` table (see `docs/FORMAT.md` §8.3);
/// the data tables are told by the envelope's version and the `compression` entry.
pub(crate) const META_TABLE_VERSION: i32 = 1;
/// The codec id whose format ids carry no suffix.
pub(crate) const DEFAULT_CODEC: &str = "postcard";
/// The base format id; `+<codec>` is appended for codecs other than postcard.
pub(crate) const SEQUENCE_ID: &str = "milonga.sqlite_sequence";
/// The version of the bytes [`SqliteSequenceFormat`] writes: 2 added the block layout
/// (`compression = zstd_blocks`); version 1 files (`none`, `zstd`) are still read.
pub(crate) const SEQUENCE_VERSION: u32 = 2;
/// The artifact file a sequence is stored in.
pub(crate) const SEQUENCE_FILE: &str = "data.sqlite";
/// Rows per write transaction.
pub(crate) const WRITE_BATCH: u64 = 65_536;
/// The format id for `base` with codec `codec`: `base` for postcard, `base+codec` otherwise, so
/// that a step's id changes with its codec.
pub(crate) fn format_id(base: &str, codec: &str) -> String {
    if codec == DEFAULT_CODEC {
        base.to_owned()
    } else {
        format!("{base}+{codec}")
    }
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
    conn.pragma_update(None, "user_version", META_TABLE_VERSION)
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
    if schema != META_TABLE_VERSION {
        return Err(Error::UnsupportedVersion {
            file: file.to_owned(),
            format: "milonga sqlite schema".into(),
            found: u32::try_from(schema).unwrap_or(u32::MAX),
            supported: META_TABLE_VERSION as u32,
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
