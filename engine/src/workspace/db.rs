//! The workspace's metadata database (SQLite).
//!
//! One record per step, the dependency edges between steps, and the durable files of artifacts
//! still being written (the partial state that resume and tail-follow read). Schema in
//! `docs/FORMAT.md`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use milonga_sdk::{ContentId, FileEntry};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::provenance::Provenance;
use crate::error::{Error, Result};

/// The schema version this build writes and reads (and upgrades older ones to).
pub const METADATA_SCHEMA_VERSION: i64 = 3;

/// Schema 1 (the first release). A new database is created as schema 1 and upgraded by the same
/// migrations as an old one, so that a new and an upgraded database cannot differ.
const SCHEMA_V1: &str = r#"
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    unique_id      TEXT PRIMARY KEY NOT NULL,
    step_type      TEXT NOT NULL,
    version        TEXT,
    state          TEXT NOT NULL CHECK (state IN ('INCOMPLETE', 'RUNNING', 'COMPLETED', 'FAILED')),
    manifest_id    TEXT,
    format_id      TEXT NOT NULL,
    format_version INTEGER NOT NULL,
    started_at     INTEGER,
    ended_at       INTEGER,
    error          TEXT,
    metadata       TEXT NOT NULL DEFAULT '{}',
    attempts       INTEGER NOT NULL DEFAULT 0,
    owner          TEXT
);
CREATE TABLE IF NOT EXISTS step_deps (
    unique_id TEXT NOT NULL,
    dep_id    TEXT NOT NULL,
    PRIMARY KEY (unique_id, dep_id)
);
CREATE TABLE IF NOT EXISTS partial_files (
    unique_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    name      TEXT NOT NULL,
    object_id TEXT NOT NULL,
    len       INTEGER NOT NULL,
    PRIMARY KEY (unique_id, seq),
    UNIQUE (unique_id, name)
);
"#;

/// Schema 1 → 2: the id pre-image, provenance, early cutoff and last access of every step; runs.
const MIGRATE_1_TO_2: &str = r#"
ALTER TABLE steps ADD COLUMN args BLOB;
ALTER TABLE steps ADD COLUMN nondeterministic INTEGER NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN provenance_id TEXT;
ALTER TABLE steps ADD COLUMN content_key TEXT;
ALTER TABLE steps ADD COLUMN reused_from TEXT;
ALTER TABLE steps ADD COLUMN last_access INTEGER;
CREATE INDEX IF NOT EXISTS steps_by_type ON steps (step_type);
CREATE INDEX IF NOT EXISTS steps_by_content_key ON steps (content_key)
    WHERE content_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS provenance (
    id   TEXT PRIMARY KEY NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    provenance_id TEXT
);
CREATE TABLE IF NOT EXISTS run_steps (
    run_id    INTEGER NOT NULL,
    unique_id TEXT NOT NULL,
    name      TEXT,
    target    INTEGER NOT NULL,
    PRIMARY KEY (run_id, unique_id),
    UNIQUE (run_id, name)
);
CREATE INDEX IF NOT EXISTS run_steps_by_step ON run_steps (unique_id);
"#;

/// Schema 2 → 3: the total size of a completed step's result, so that listing steps reads no
/// manifest. Written at completion; records completed before the upgrade get it lazily (see
/// [`Db::fill_result_sizes`]): filling it here would read every manifest while holding the
/// database's write lock, inside whichever `Workspace::open` happens to upgrade, and the
/// database layer does not read the object store.
const MIGRATE_2_TO_3: &str = r#"
ALTER TABLE steps ADD COLUMN result_size INTEGER;
"#;

/// The columns of a step record, as read by [`read_row`], for a database of `version`: columns an
/// older database (read-only, not upgraded) lacks read as NULL.
fn step_columns(version: i64) -> &'static str {
    if version >= 3 {
        "unique_id, step_type, version, state, manifest_id, format_id, format_version,
         started_at, ended_at, error, metadata, attempts, owner,
         args, nondeterministic, provenance_id, reused_from, last_access, result_size"
    } else if version == 2 {
        "unique_id, step_type, version, state, manifest_id, format_id, format_version,
         started_at, ended_at, error, metadata, attempts, owner,
         args, nondeterministic, provenance_id, reused_from, last_access, NULL"
    } else {
        "unique_id, step_type, version, state, manifest_id, format_id, format_version,
         started_at, ended_at, error, metadata, attempts, owner,
         NULL, 0, NULL, NULL, NULL, NULL"
    }
}

/// The state of a step's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepState {
    /// Known but never finished (a recorded attempt that died, or never started).
    Incomplete,
    /// A process is running it (or was, and died: the step lock tells which).
    Running,
    /// Its result is durable and its manifest recorded.
    Completed,
    /// Its last attempt failed; the error text says why.
    Failed,
}

impl StepState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Incomplete => "INCOMPLETE",
            StepState::Running => "RUNNING",
            StepState::Completed => "COMPLETED",
            StepState::Failed => "FAILED",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "INCOMPLETE" => StepState::Incomplete,
            "RUNNING" => StepState::Running,
            "COMPLETED" => StepState::Completed,
            "FAILED" => StepState::Failed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for StepState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the workspace records about one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    /// The step's unique id.
    pub unique_id: String,
    /// The step's type name (`Step::NAME`).
    pub step_type: String,
    /// The step's `VERSION`, if any.
    pub version: Option<String>,
    /// Its state.
    pub state: StepState,
    /// The content id of the result's manifest, once completed.
    pub manifest_id: Option<ContentId>,
    /// The id of the format that writes the result.
    pub format_id: String,
    /// The format's version.
    pub format_version: u32,
    /// When the last attempt started, in milliseconds since the Unix epoch.
    pub started_at: Option<i64>,
    /// When the last attempt ended, in milliseconds since the Unix epoch.
    pub ended_at: Option<i64>,
    /// The error text of a failed attempt.
    pub error: Option<String>,
    /// Free-form metadata (JSON).
    pub metadata: serde_json::Value,
    /// How many times the step was started.
    pub attempts: u32,
    /// Who runs or ran the last attempt (`pid@host`).
    pub owner: Option<String>,
    /// Unique ids of the steps this one takes as inputs.
    pub dependencies: Vec<String>,
    /// The canonical encoding of the step's arguments: the part of its id pre-image that is not
    /// in the other fields (see [`StepInfo::arguments`]). `None` in records written before
    /// schema 2.
    pub preimage: Option<Vec<u8>>,
    /// Whether the step is non-deterministic (its id also hashed a per-run nonce).
    pub nondeterministic: bool,
    /// Where, how and by what the last attempt ran. `None` in records written before schema 2.
    /// Shared: the records one process wrote all point to one provenance record.
    pub provenance: Option<Arc<Provenance>>,
    /// Early cutoff: the result was not computed but reused from this earlier step, whose inputs
    /// had byte-identical content.
    pub reused_from: Option<String>,
    /// When the result was last read or written, in milliseconds since the Unix epoch (updated
    /// at most once per [`Workspace::set_access_granularity`](crate::Workspace::set_access_granularity)).
    pub last_access: Option<i64>,
    /// The total size in bytes of the result's files (the sum of its manifest's file lengths),
    /// recorded at completion. `None` without a result, and for results completed before
    /// schema 3 until a listing fills it in.
    pub result_size: Option<u64>,
}

impl StepInfo {
    /// The step's arguments as readable JSON, rendered from the stored id pre-image (step
    /// references appear as `{"$ref": "<upstream unique id>"}`); `None` for records written
    /// before schema 2.
    ///
    /// # Errors
    /// A pre-image that does not decode (a damaged record).
    pub fn arguments(&self) -> Result<Option<serde_json::Value>> {
        let Some(bytes) = &self.preimage else {
            return Ok(None);
        };
        let args = crate::step::preimage::Arg::decode(bytes).map_err(|reason| {
            Error::Format(milonga_sdk::Error::corrupt(
                format!("id pre-image of step {}", self.unique_id),
                0,
                reason,
            ))
        })?;
        Ok(Some(args.to_json()))
    }
}

/// The metadata database of a workspace.
pub(crate) struct Db {
    conn: Mutex<Connection>,
    pub(crate) path: PathBuf,
    read_only: bool,
    /// The schema version of the database (older than [`METADATA_SCHEMA_VERSION`] only when read-only).
    pub(crate) version: i64,
    /// Provenance records already read, by id (they never change).
    provenance_cache: Mutex<std::collections::HashMap<String, Arc<Provenance>>>,
    /// The id of this process's provenance record, once stored.
    current_provenance: std::sync::OnceLock<String>,
}

/// What a schema-2 step record holds beyond [`StepInfo`]'s fields.
#[derive(Default)]
pub(crate) struct NewRecord<'a> {
    /// The id of the process's provenance record.
    pub(crate) provenance_id: Option<&'a str>,
    /// The content key of the step's pre-image (inputs by content), for early cutoff.
    pub(crate) content_key: Option<&'a str>,
    /// Early cutoff: the earlier step whose result is reused, and its manifest.
    pub(crate) reused: Option<(&'a str, &'a ContentId)>,
}

/// How long a database operation waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn not_a_database(path: &Path, e: rusqlite::Error) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            Error::Format(milonga_sdk::Error::corrupt(
                path.display(),
                0,
                "not a SQLite database",
            ))
        }
        e => Error::db(path, e),
    }
}

/// A `file:` URI opening `path` as an immutable database (no locks, no journal, no `-shm`).
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

/// Checks the schema version of the database behind `conn`; returns it, or `None` for a blank
/// database (no tables: a new workspace).
fn check_schema(conn: &Connection, path: &Path) -> Result<Option<i64>> {
    let bad = |reason: String| Error::BadSchema {
        path: path.to_owned(),
        reason,
    };
    let tables: Vec<String> = (|| {
        let mut st = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
        let v = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(v)
    })()
    .map_err(|e| not_a_database(path, e))?;
    if tables.is_empty() {
        return Ok(None);
    }
    if !tables.iter().any(|t| t == "schema_version") {
        return Err(bad(format!(
            "no schema version (table schema_version is missing beside {}): not a milonga \
             database, or a damaged one",
            tables.join(", ")
        )));
    }
    let versions: Vec<rusqlite::types::Value> = (|| {
        let mut st = conn.prepare("SELECT version FROM schema_version")?;
        let v = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    })()
    .map_err(|e| not_a_database(path, e))?;
    let mut found = None;
    for v in versions {
        match v {
            rusqlite::types::Value::Integer(n) => found = Some(found.map_or(n, |f: i64| f.max(n))),
            other => {
                return Err(bad(format!(
                    "the schema version is {other:?}, not an integer: not written by milonga"
                )))
            }
        }
    }
    match found {
        None => Err(bad(
            "no schema version (table schema_version is empty)".into()
        )),
        Some(found) if found > METADATA_SCHEMA_VERSION => Err(Error::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported: METADATA_SCHEMA_VERSION,
        }),
        Some(found) if found < 1 => Err(bad(format!("invalid schema version {found}"))),
        Some(found) => Ok(Some(found)),
    }
}

/// Upgrades the database behind `conn` to [`METADATA_SCHEMA_VERSION`] in place, in one transaction that
/// re-reads the version first (another process may have upgraded it meanwhile). A crash leaves
/// the old schema or the new one.
fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let err = |e| Error::db(path, e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
    let result = (|| {
        let version: i64 = conn
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .map_err(err)?;
        if version < METADATA_SCHEMA_VERSION {
            tracing::info!(target: "milonga::workspace", db = %path.display(), "upgrading the metadata database from schema {version} to {METADATA_SCHEMA_VERSION}");
        }
        if version < 2 {
            conn.execute_batch(MIGRATE_1_TO_2).map_err(err)?;
        }
        if version < 3 {
            conn.execute_batch(MIGRATE_2_TO_3).map_err(err)?;
        }
        if version < METADATA_SCHEMA_VERSION {
            conn.execute(
                "UPDATE schema_version SET version = ?1",
                [METADATA_SCHEMA_VERSION],
            )
            .map_err(err)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Opens (creating if needed) the database at `path`, or an in-memory one for `None`.
    ///
    /// Any number of processes may open and create the same database at once: a step of the
    /// set-up that finds the database busy (SQLite does not always wait for a lock, for
    /// example when switching to WAL) starts the set-up over, until [`BUSY_TIMEOUT`].
    ///
    /// `read_only` opens an existing database without writing anything to it.
    pub(crate) fn open(path: Option<&Path>, read_only: bool) -> Result<Db> {
        let shown = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(":memory:"));
        let deadline = Instant::now() + BUSY_TIMEOUT;
        let mut attempt: u32 = 0;
        loop {
            let result = if read_only {
                path.map_or_else(
                    || {
                        Err(Error::db(
                            &shown,
                            rusqlite::Error::InvalidPath(shown.clone()),
                        ))
                    },
                    Self::set_up_read_only,
                )
            } else {
                Self::set_up(path, &shown)
            };
            match result {
                Err(Error::Database { source, .. })
                    if is_busy(&source) && Instant::now() < deadline =>
                {
                    // Back off a little more each time, spread by the process id.
                    attempt = attempt.saturating_add(1);
                    let ms = 5 + u64::from(attempt.min(20)) * 5 + u64::from(std::process::id() % 7);
                    std::thread::sleep(Duration::from_millis(ms));
                }
                Err(e) => return Err(e),
                Ok((conn, version)) => {
                    return Ok(Db {
                        conn: Mutex::new(conn),
                        path: shown,
                        read_only,
                        version,
                        provenance_cache: Mutex::default(),
                        current_provenance: std::sync::OnceLock::new(),
                    })
                }
            }
        }
    }

    fn set_up(path: Option<&Path>, shown: &Path) -> Result<(Connection, i64)> {
        let err = |e| Error::db(shown, e);
        let conn = match path {
            Some(p) => Connection::open(p).map_err(err)?,
            None => Connection::open_in_memory().map_err(err)?,
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // Check what the file is, and its schema version, before writing anything to it.
        let blank = check_schema(&conn, shown)?;
        if path.is_some() {
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .map_err(|e| not_a_database(shown, e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                conn.pragma_update(None, "journal_mode", "WAL")
                    .map_err(|e| not_a_database(shown, e))?;
            }
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(|e| not_a_database(shown, e))?;
        }
        if blank.is_none() {
            // Idempotent, in one transaction: concurrent creators all end with one schema and
            // one version row (schema 1, upgraded below like any schema-1 database).
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA_V1}
                 INSERT INTO schema_version (version)
                    SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
                 COMMIT;"
            ))
            .map_err(err)?;
        }
        // Another creator may have won with a version of its own.
        let version = check_schema(&conn, shown)?.unwrap_or(1);
        if version < METADATA_SCHEMA_VERSION {
            migrate(&conn, shown)?;
        }
        Ok((conn, METADATA_SCHEMA_VERSION))
    }

    fn set_up_read_only(path: &Path) -> Result<(Connection, i64)> {
        let err = |e| Error::db(path, e);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let plain = Connection::open_with_flags(path, flags).and_then(|c| {
            c.busy_timeout(BUSY_TIMEOUT)?;
            c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(c)
        });
        let conn = match plain {
            Ok(c) => c,
            Err(e) if is_busy(&e) => return Err(err(e)),
            // A WAL database needs its `-shm` file, which a reader without write access cannot
            // create: read the file as immutable instead.
            Err(_) => Connection::open_with_flags(immutable_uri(path), flags).map_err(err)?,
        };
        match check_schema(&conn, path)? {
            None => Err(Error::NotAWorkspace {
                path: path.parent().unwrap_or(path).to_owned(),
                reason: format!("{} is empty (and read-only)", path.display()),
            }),
            // An older schema is read as it is (it cannot be upgraded without writing).
            Some(version) => Ok((conn, version)),
        }
    }

    /// Refuses writes to a database opened read-only (the workspace checks first; this is the
    /// last line).
    pub(super) fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
                operation: "writing the metadata database".into(),
            });
        }
        Ok(())
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|e| Error::db(&self.path, e))
    }

    /// The record of `unique_id`, if any.
    pub(crate) fn get(&self, unique_id: &str) -> Result<Option<StepInfo>> {
        let cols = step_columns(self.version);
        let row = self.with(|c| {
            c.prepare_cached(&format!("SELECT {cols} FROM steps WHERE unique_id = ?1"))?
                .query_row([unique_id], read_row)
                .optional()
        })?;
        match row {
            None => Ok(None),
            Some(raw) => {
                let deps = self.deps(unique_id)?;
                Ok(Some(self.finish_row(raw, deps)?))
            }
        }
    }

    /// Which of `unique_ids` are recorded COMPLETED (one statement, one lock: for the executor,
    /// which checks a whole graph at once).
    pub(crate) fn completed_among<'a>(
        &self,
        unique_ids: impl Iterator<Item = &'a str>,
    ) -> Result<std::collections::HashSet<String>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT 1 FROM steps WHERE unique_id = ?1 AND state = 'COMPLETED'",
            )?;
            let mut done = std::collections::HashSet::new();
            for id in unique_ids {
                if st.exists([id])? {
                    done.insert(id.to_owned());
                }
            }
            Ok(done)
        })
    }

    /// Every step record.
    pub(crate) fn all(&self) -> Result<Vec<StepInfo>> {
        // The records and every dependency edge in two queries of one read transaction: a
        // query per record costs a statement and a shared lock each, seconds for 100,000
        // records.
        let cols = step_columns(self.version);
        let (rows, mut deps) = self.with(|c| {
            let tx = c.transaction()?;
            let rows = {
                let mut st = tx.prepare(&format!("SELECT {cols} FROM steps ORDER BY unique_id"))?;
                let rows = st
                    .query_map([], read_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows
            };
            let mut deps: std::collections::HashMap<String, Vec<String>> =
                std::collections::HashMap::new();
            {
                let mut st = tx.prepare(
                    "SELECT unique_id, dep_id FROM step_deps ORDER BY unique_id, dep_id",
                )?;
                let mut q = st.query([])?;
                while let Some(r) = q.next()? {
                    deps.entry(r.get(0)?).or_default().push(r.get(1)?);
                }
            }
            tx.finish()?;
            Ok((rows, deps))
        })?;
        rows.into_iter()
            .map(|raw| {
                let d = deps.remove(&raw.unique_id).unwrap_or_default();
                self.finish_row(raw, d)
            })
            .collect()
    }

    /// The step records matching the SQL condition `condition` (over table `steps`), with `params`.
    pub(crate) fn select_where(
        &self,
        condition: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<StepInfo>> {
        let cols = step_columns(self.version);
        let rows = self.with(|c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {cols} FROM steps WHERE {condition}"))?;
            let rows = st
                .query_map(params, read_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|raw| {
                let deps = self.deps(&raw.unique_id)?;
                self.finish_row(raw, deps)
            })
            .collect()
    }

    fn deps(&self, unique_id: &str) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT dep_id FROM step_deps WHERE unique_id = ?1 ORDER BY dep_id",
            )?;
            let v = st
                .query_map([unique_id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(v)
        })
    }

    fn finish_row(&self, raw: RawRow, dependencies: Vec<String>) -> Result<StepInfo> {
        let bad = |what: &str| {
            Error::Format(milonga_sdk::Error::corrupt(
                self.path.display(),
                0,
                format!("step {}: invalid {what}", raw.unique_id),
            ))
        };
        let state = StepState::parse(&raw.state).ok_or_else(|| bad("state"))?;
        let manifest_id = match &raw.manifest_id {
            None => None,
            Some(h) => Some(ContentId::from_hex(h).ok_or_else(|| bad("manifest id"))?),
        };
        let metadata = serde_json::from_str(&raw.metadata).map_err(|_| bad("metadata JSON"))?;
        let result_size = match raw.result_size {
            None => None,
            Some(n) => Some(u64::try_from(n).map_err(|_| bad("result size"))?),
        };
        let provenance = match &raw.provenance_id {
            None => None,
            Some(id) => self.shared_provenance(id)?,
        };
        Ok(StepInfo {
            format_version: u32::try_from(raw.format_version).map_err(|_| bad("format version"))?,
            unique_id: raw.unique_id,
            step_type: raw.step_type,
            version: raw.version,
            state,
            manifest_id,
            format_id: raw.format_id,
            started_at: raw.started_at,
            ended_at: raw.ended_at,
            error: raw.error,
            metadata,
            attempts: u32::try_from(raw.attempts).unwrap_or(0),
            owner: raw.owner,
            dependencies,
            preimage: raw.args,
            nondeterministic: raw.nondeterministic != 0,
            provenance,
            reused_from: raw.reused_from,
            last_access: raw.last_access,
            result_size,
        })
    }

    /// The provenance record `id` (cached: records never change).
    pub(crate) fn provenance(&self, id: &str) -> Result<Option<Provenance>> {
        Ok(self.shared_provenance(id)?.map(|p| (*p).clone()))
    }

    /// The provenance record `id`, shared with every record that points to it (a listing of
    /// 100,000 records clones one `Arc`, not 100,000 records).
    pub(crate) fn shared_provenance(&self, id: &str) -> Result<Option<Arc<Provenance>>> {
        if let Some(p) = self
            .provenance_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(Some(Arc::clone(p)));
        }
        if self.version < 2 {
            return Ok(None);
        }
        let json: Option<String> = self.with(|c| {
            c.prepare_cached("SELECT json FROM provenance WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()
        })?;
        let Some(json) = json else { return Ok(None) };
        let p: Arc<Provenance> = serde_json::from_str(&json).map(Arc::new).map_err(|e| {
            Error::Format(milonga_sdk::Error::corrupt(
                self.path.display(),
                0,
                format!("provenance record {id}: invalid JSON: {e}"),
            ))
        })?;
        self.provenance_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Arc::clone(&p));
        Ok(Some(p))
    }

    /// Stores this process's provenance record (once per database handle) and returns its id.
    pub(crate) fn put_current_provenance(&self) -> Result<String> {
        if let Some(id) = self.current_provenance.get() {
            return Ok(id.clone());
        }
        let id = self.put_provenance(Provenance::current())?;
        Ok(self.current_provenance.get_or_init(|| id).clone())
    }

    /// Stores a provenance record (once; the id is a hash of its JSON) and returns its id.
    pub(crate) fn put_provenance(&self, p: &Provenance) -> Result<String> {
        self.writable()?;
        let json = serde_json::to_string(p).map_err(|e| Error::State {
            unique_id: String::new(),
            reason: format!("cannot encode provenance: {e}"),
        })?;
        let id = blake3::hash(json.as_bytes()).to_hex()[..32].to_owned();
        if self
            .provenance_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
        {
            return Ok(id);
        }
        self.with(|c| {
            c.prepare_cached("INSERT OR IGNORE INTO provenance (id, json) VALUES (?1, ?2)")?
                .execute(params![id, json])
        })?;
        self.provenance_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Arc::new(p.clone()));
        Ok(id)
    }

    /// Records that `info.unique_id` starts an attempt now (state RUNNING), with its
    /// dependencies.
    ///
    /// `extra` carries what schema 2 adds: the provenance record's id and the content key (for
    /// early cutoff). With `reused_from` set, the record is written COMPLETED at once, pointing
    /// at `manifest` (the reused result).
    pub(crate) fn mark_running(&self, info: &StepInfo, extra: &NewRecord<'_>) -> Result<()> {
        self.writable()?;
        let state = if extra.reused.is_some() {
            "COMPLETED"
        } else {
            "RUNNING"
        };
        let manifest = extra.reused.map(|(_, m)| m.to_hex());
        let ended = extra.reused.map(|_| now_millis());
        self.with(|c| {
            let tx = c.transaction()?;
            tx.prepare_cached(
                "INSERT INTO steps (unique_id, step_type, version, state, format_id, format_version,
                                    started_at, ended_at, error, metadata, attempts, owner,
                                    args, nondeterministic, provenance_id, content_key,
                                    reused_from, last_access, manifest_id, result_size)
                 VALUES (?1, ?2, ?3, ?9, ?4, ?5, ?6, ?16, NULL, ?7, 1, ?8, ?10, ?11, ?12, ?13,
                         ?14, ?6, ?15,
                         (SELECT result_size FROM steps
                          WHERE ?14 IS NOT NULL AND unique_id = ?14 AND manifest_id = ?15))
                 ON CONFLICT (unique_id) DO UPDATE SET
                    step_type = excluded.step_type, version = excluded.version,
                    state = excluded.state, manifest_id = excluded.manifest_id,
                    format_id = excluded.format_id,
                    format_version = excluded.format_version, started_at = excluded.started_at,
                    ended_at = excluded.ended_at, error = NULL, metadata = excluded.metadata,
                    attempts = steps.attempts + 1, owner = excluded.owner, args = excluded.args,
                    nondeterministic = excluded.nondeterministic,
                    provenance_id = excluded.provenance_id, content_key = excluded.content_key,
                    reused_from = excluded.reused_from, last_access = excluded.last_access,
                    result_size = excluded.result_size",
            )?
            .execute(params![
                    info.unique_id,
                    info.step_type,
                    info.version,
                    info.format_id,
                    info.format_version,
                    info.started_at,
                    info.metadata.to_string(),
                    info.owner,
                    state,
                    info.preimage,
                    info.nondeterministic,
                    extra.provenance_id,
                    extra.content_key,
                    extra.reused.map(|(id, _)| id),
                    manifest,
                    ended,
                ])?;
            tx.execute(
                "DELETE FROM step_deps WHERE unique_id = ?1",
                [&info.unique_id],
            )?;
            for d in &info.dependencies {
                tx.execute(
                    "INSERT OR IGNORE INTO step_deps (unique_id, dep_id) VALUES (?1, ?2)",
                    params![info.unique_id, d],
                )?;
            }
            tx.commit()
        })
    }

    /// A completed step (other than `except`) whose content key is `key`, with its manifest.
    pub(crate) fn completed_with_content_key(
        &self,
        key: &str,
        except: &str,
    ) -> Result<Option<(String, ContentId)>> {
        if self.version < 2 {
            return Ok(None);
        }
        let row: Option<(String, Option<String>)> = self.with(|c| {
            c.prepare_cached(
                "SELECT unique_id, manifest_id FROM steps
                 WHERE content_key = ?1 AND state = 'COMPLETED' AND unique_id != ?2
                 ORDER BY ended_at DESC LIMIT 1",
            )?
            .query_row(params![key, except], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
        })?;
        Ok(row.and_then(|(id, m)| Some((id, ContentId::from_hex(&m?)?))))
    }

    /// Records the result sizes of records completed before schema 3 (lazy migration): each
    /// `(unique_id, manifest, size)` is written only if the record still points at that
    /// manifest and has no size yet, in one transaction. Returns how many records were filled.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) fn fill_result_sizes(&self, sizes: &[(&str, ContentId, u64)]) -> Result<usize> {
        self.writable()?;
        if self.version < 3 || sizes.is_empty() {
            return Ok(0);
        }
        self.with(|c| {
            let tx = c.transaction()?;
            let mut filled = 0;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE steps SET result_size = ?3
                     WHERE unique_id = ?1 AND manifest_id = ?2 AND result_size IS NULL",
                )?;
                for (id, manifest, size) in sizes {
                    let size = i64::try_from(*size).unwrap_or(i64::MAX);
                    filled += st.execute(params![id, manifest.to_hex(), size])?;
                }
            }
            tx.commit()?;
            Ok(filled)
        })
    }

    /// Records that a step's result was read at `now`.
    pub(crate) fn touch(&self, unique_id: &str, now: i64) -> Result<()> {
        self.writable()?;
        self.with(|c| {
            c.prepare_cached("UPDATE steps SET last_access = ?2 WHERE unique_id = ?1")?
                .execute(params![unique_id, now])
        })?;
        Ok(())
    }

    /// Records a failed attempt.
    pub(crate) fn mark_failed(&self, unique_id: &str, error: &str) -> Result<()> {
        self.writable()?;
        self.with(|c| {
            c.execute(
                "UPDATE steps SET state = 'FAILED', ended_at = ?2, error = ?3 WHERE unique_id = ?1",
                params![unique_id, now_millis(), error],
            )
        })?;
        Ok(())
    }

    /// Records the result: COMPLETED with its manifest and the total size of its files
    /// (`result_size`, the manifest's `total_len`), and drops the partial-file rows, in one
    /// transaction. Called only after the manifest object is durable.
    pub(crate) fn mark_completed(
        &self,
        unique_id: &str,
        manifest: &ContentId,
        result_size: u64,
    ) -> Result<()> {
        self.writable()?;
        let size = i64::try_from(result_size).unwrap_or(i64::MAX);
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE steps SET state = 'COMPLETED', manifest_id = ?2, ended_at = ?3, error = NULL,
                        last_access = ?3, result_size = ?4
                 WHERE unique_id = ?1",
                params![unique_id, manifest.to_hex(), now_millis(), size],
            )?;
            if n != 1 {
                return Err(rusqlite::Error::QueryReturnedNoRows);
            }
            tx.execute(
                "DELETE FROM partial_files WHERE unique_id = ?1",
                [unique_id],
            )?;
            tx.commit()
        })
    }

    /// Removes the record of a step (its objects become garbage).
    pub(crate) fn remove(&self, unique_id: &str) -> Result<bool> {
        self.writable()?;
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM steps WHERE unique_id = ?1", [unique_id])?;
            tx.execute("DELETE FROM step_deps WHERE unique_id = ?1", [unique_id])?;
            tx.execute(
                "DELETE FROM partial_files WHERE unique_id = ?1",
                [unique_id],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    /// Records a durable file of an artifact being written.
    pub(crate) fn add_partial(&self, unique_id: &str, entry: &FileEntry) -> Result<()> {
        self.writable()?;
        self.with(|c| {
            c.execute(
                "INSERT INTO partial_files (unique_id, seq, name, object_id, len)
                 VALUES (?1, (SELECT coalesce(max(seq) + 1, 0) FROM partial_files WHERE unique_id = ?1),
                         ?2, ?3, ?4)",
                params![unique_id, entry.name, entry.id.to_hex(), entry.len as i64],
            )
        })?;
        Ok(())
    }

    /// The durable files of an artifact being written, in the order they were finished.
    pub(crate) fn partial_files(&self, unique_id: &str) -> Result<Vec<FileEntry>> {
        let rows = self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT name, object_id, len FROM partial_files WHERE unique_id = ?1 ORDER BY seq",
            )?;
            let v = st
                .query_map([unique_id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(v)
        })?;
        rows.into_iter()
            .map(|(name, id, len)| {
                let id = ContentId::from_hex(&id).ok_or_else(|| {
                    Error::Format(milonga_sdk::Error::corrupt(
                        self.path.display(),
                        0,
                        format!("partial file {name} of {unique_id}: invalid object id"),
                    ))
                })?;
                Ok(FileEntry {
                    name,
                    len: len as u64,
                    id,
                })
            })
            .collect()
    }

    /// Forgets the durable files of an interrupted write (a step that does not resume starts
    /// over).
    pub(crate) fn clear_partial(&self, unique_id: &str) -> Result<()> {
        self.writable()?;
        self.with(|c| {
            c.execute(
                "DELETE FROM partial_files WHERE unique_id = ?1",
                [unique_id],
            )
        })?;
        Ok(())
    }
}

/// A step row as stored, before validation.
struct RawRow {
    unique_id: String,
    step_type: String,
    version: Option<String>,
    state: String,
    manifest_id: Option<String>,
    format_id: String,
    format_version: i64,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    error: Option<String>,
    metadata: String,
    attempts: i64,
    owner: Option<String>,
    args: Option<Vec<u8>>,
    nondeterministic: i64,
    provenance_id: Option<String>,
    reused_from: Option<String>,
    last_access: Option<i64>,
    result_size: Option<i64>,
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        unique_id: r.get(0)?,
        step_type: r.get(1)?,
        version: r.get(2)?,
        state: r.get(3)?,
        manifest_id: r.get(4)?,
        format_id: r.get(5)?,
        format_version: r.get(6)?,
        started_at: r.get(7)?,
        ended_at: r.get(8)?,
        error: r.get(9)?,
        metadata: r.get(10)?,
        attempts: r.get(11)?,
        owner: r.get(12)?,
        args: r.get(13)?,
        nondeterministic: r.get(14)?,
        provenance_id: r.get(15)?,
        reused_from: r.get(16)?,
        last_access: r.get(17)?,
        result_size: r.get(18)?,
    })
}
