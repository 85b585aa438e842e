//! The workspace: an object store, a metadata database, step locks and a result cache.

mod artifact;
mod backend;
mod cache;
mod db;
mod explain;
mod gc;
mod provenance;
mod remote;
mod runs;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use milonga_sdk::{ArtifactHandle, ContentId};

pub use cache::{DEFAULT_RESULT_CACHE_BYTES, DEFAULT_RESULT_CACHE_ENTRIES};
pub use db::{StepInfo, StepState, METADATA_SCHEMA_VERSION};
pub use explain::{Difference, Explanation};
pub use gc::{GcPolicy, GcReport};
#[cfg(feature = "s3")]
pub(crate) use provenance::host_name;
pub use provenance::Provenance;
pub use remote::CACHE_DIR_ENV;
pub use runs::{Run, RunStep, RunSummary};

pub(crate) use artifact::{FollowedArtifact, StepArtifactWriter, StoredArtifact};
#[cfg(feature = "s3")]
pub(crate) use backend::{check_step_id, StoredRun};
pub(crate) use backend::{FileLocks, GcLock, Leases, Metadata, StepLock};
pub(crate) use cache::MemoryCache;
pub(crate) use db::{now_millis, NewRecord};
#[cfg(feature = "s3")]
pub(crate) use runs::{register_run, NewRunStep};

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::store::{LocalStore, MemoryStore, ObjectStore};
use db::Db;

/// The name of the metadata database file in a local workspace.
pub const DATABASE_FILE: &str = "milonga.sqlite";

/// How long [`Workspace::follow_artifact`] waits for a writer to start when none is alive yet.
/// [`Workspace::follow`] does not wait unless given a timeout.
pub const FOLLOW_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A place where step results are cached: content-addressed objects, a metadata database with
/// one record per step, per-step locks and an in-memory cache of results.
///
/// Cloning is cheap; clones share everything. Lazy results keep what they need alive, so they
/// stay valid after the workspace handle is dropped.
///
/// ```
/// # fn main() -> milonga::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let ws = milonga::Workspace::open(dir.path())?;
/// assert!(ws.steps()?.is_empty());
/// let same = milonga::Workspace::from_url(&format!("file://{}", dir.path().display()))?;
/// assert_eq!(same.root(), ws.root());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Workspace {
    pub(crate) inner: Arc<Inner>,
}

/// Lists every object of a store with its last-modified time and size (see
/// `Inner::object_ages`).
pub(crate) type ObjectAges =
    Box<dyn Fn() -> Result<std::collections::HashMap<ContentId, (i64, u64)>> + Send + Sync>;

pub(crate) struct Inner {
    url: String,
    root: Option<PathBuf>,
    /// Holds `work/`, `locks/` and materialized files: the root, or a temporary folder.
    pub(crate) dir: PathBuf,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) db: Box<dyn Metadata>,
    /// Who runs which step: OS file locks (local) or leases (remote).
    pub(crate) leases: Box<dyn Leases>,
    /// For a store without local files whose objects have a last-modified time (remote): the
    /// time (milliseconds since the Unix epoch) and size of every object, for the grace period
    /// of garbage collection.
    pub(crate) object_ages: Option<ObjectAges>,
    pub(crate) cache: Mutex<MemoryCache>,
    /// A memory workspace's temporary folder, shared with the lazy results that read from it
    /// (they must not hold `Inner` itself: the cache would then own a cycle).
    pub(crate) tmp: Option<Arc<tempfile::TempDir>>,
    /// Opened read-only: nothing may be written.
    pub(crate) read_only: bool,
    /// A step's last access is recorded when it is older than this (milliseconds).
    access_granularity: std::sync::atomic::AtomicI64,
}

/// By default a step's last access is recorded at most once an hour (like `relatime`), so that
/// reading a result rarely writes the database.
pub const DEFAULT_ACCESS_GRANULARITY: Duration = Duration::from_secs(3600);

/// Whether this process may write the workspace at `root`: its database (if any) opens for
/// writing and a file can be created in the directory (an unnamed temporary file, gone at
/// once). Root passes both except on a read-only mount.
fn writable(root: &Path, db: &Path) -> bool {
    let db_ok = match OpenOptions::new().write(true).open(db) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    db_ok && tempfile::tempfile_in(root).is_ok()
}

/// Checks that `root` is a directory with a metadata database, telling a missing database from
/// one that cannot be looked at.
fn check_database_file(root: &Path) -> Result<()> {
    if fs::metadata(root).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::NotAWorkspace {
            path: root.to_owned(),
            reason: "it is a file, not a workspace directory".into(),
        });
    }
    let db = root.join(DATABASE_FILE);
    match fs::metadata(&db) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::NotAWorkspace {
            path: root.to_owned(),
            reason: format!("{DATABASE_FILE} is not a regular file"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotAWorkspace {
            path: root.to_owned(),
            reason: format!("no {DATABASE_FILE}"),
        }),
        Err(e) => Err(Error::io(db.display(), e)),
    }
}

fn granularity_default() -> std::sync::atomic::AtomicI64 {
    std::sync::atomic::AtomicI64::new(DEFAULT_ACCESS_GRANULARITY.as_millis() as i64)
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("url", &self.inner.url)
            .finish()
    }
}

impl Workspace {
    /// Opens the local workspace in directory `path`, creating it if needed.
    ///
    /// A workspace this process may not write (a read-only mount, a directory or database
    /// without write permission for this user) is opened read-only, as by
    /// [`open_read_only`](Workspace::open_read_only).
    ///
    /// Any number of processes may open (and create) the same workspace at once.
    ///
    /// # Errors
    /// [`Error::NotAWorkspace`] if `path` is a regular file; [`Error::Io`]; a database that is
    /// not SQLite ([`milonga_sdk::Error::Corrupt`]), was written by a newer milonga
    /// ([`Error::SchemaTooNew`]) or has a schema milonga did not write ([`Error::BadSchema`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Workspace> {
        Self::open_local(path.as_ref(), false)
    }

    /// Opens the existing local workspace in directory `path` read-only: every cached result,
    /// record and object can be read and verified, nothing is changed (no lock files, no
    /// database changes; SQLite may create its empty `-wal` and `-shm` files beside the
    /// database where the directory is writable), and anything that would write (running a missing step, `remove_step`,
    /// `gc`) fails with [`Error::ReadOnly`]. For caches shared on read-only mounts or in
    /// directories other users may not write.
    ///
    /// The metadata database is read through SQLite's read-only mode; where that cannot work
    /// (no write access to its `-shm` file) it is read as an immutable file, which is exact
    /// when no writer has the workspace open.
    ///
    /// # Errors
    /// [`Error::NotAWorkspace`] if `path` is not a directory with a metadata database;
    /// otherwise as [`Workspace::open`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Workspace> {
        Self::open_local(path.as_ref(), true)
    }

    fn open_local(root: &Path, read_only: bool) -> Result<Workspace> {
        match fs::metadata(root) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::NotAWorkspace {
                    path: root.to_owned(),
                    reason: "it is a file, not a workspace directory".into(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !read_only => {
                fs::create_dir_all(root).map_err(|e| Error::io(root.display(), e))?;
            }
            Err(e) => return Err(Error::io(root.display(), e)),
        }
        let root = root
            .canonicalize()
            .map_err(|e| Error::io(root.display(), e))?;
        let db_path = root.join(DATABASE_FILE);
        let read_only = read_only || !writable(&root, &db_path);
        if read_only {
            check_database_file(&root)?;
        }
        let db = Db::open(Some(&db_path), read_only)?;
        let store = LocalStore::open(&root)?;
        Ok(Workspace {
            inner: Arc::new(Inner {
                url: format!("file://{}", root.display()),
                root: Some(root.clone()),
                leases: Box::new(FileLocks {
                    dir: root.clone(),
                    read_only,
                }),
                dir: root,
                store: Arc::new(store),
                db: Box::new(db),
                cache: Mutex::new(MemoryCache::new(
                    DEFAULT_RESULT_CACHE_ENTRIES,
                    DEFAULT_RESULT_CACHE_BYTES,
                )),
                tmp: None,
                read_only,
                access_granularity: granularity_default(),
                object_ages: None,
            }),
        })
    }

    /// Opens the local workspace in directory `path`, which must exist and have a metadata
    /// database (for tools that inspect a workspace and must not create one on a typo).
    ///
    /// # Errors
    /// [`Error::NotAWorkspace`] if `path` is not a workspace; [`Error::Io`] if it cannot be
    /// looked at (permission denied); otherwise as [`Workspace::open`].
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Workspace> {
        let root = path.as_ref();
        check_database_file(root)?;
        Self::open(root)
    }

    /// A workspace that lives in memory (objects and metadata) and disappears with its last
    /// handle. Tools that need real paths get them in a private temporary folder.
    ///
    /// # Errors
    /// An I/O error creating the temporary folder.
    pub fn memory() -> Result<Workspace> {
        let tmp = tempfile::Builder::new()
            .prefix("milonga-memory-")
            .tempdir()
            .map_err(|e| Error::io("temporary folder", e))?;
        Ok(Workspace {
            inner: Arc::new(Inner {
                url: "memory://".into(),
                root: None,
                dir: tmp.path().to_owned(),
                leases: Box::new(FileLocks {
                    dir: tmp.path().to_owned(),
                    read_only: false,
                }),
                store: Arc::new(MemoryStore::new()),
                db: Box::new(Db::open(None, false)?),
                cache: Mutex::new(MemoryCache::new(
                    DEFAULT_RESULT_CACHE_ENTRIES,
                    DEFAULT_RESULT_CACHE_BYTES,
                )),
                tmp: Some(Arc::new(tmp)),
                read_only: false,
                access_granularity: granularity_default(),
                object_ages: None,
            }),
        })
    }

    /// A workspace over a custom object store (for example a fault-injecting one in tests or
    /// fuzzing), with its metadata in memory and its work folders in a private temporary
    /// directory.
    ///
    /// # Errors
    /// An I/O error creating the temporary folder.
    pub fn with_store(store: Arc<dyn ObjectStore>) -> Result<Workspace> {
        let ws = Self::memory()?;
        let mut inner = Arc::into_inner(ws.inner).expect("a new workspace has one handle");
        inner.store = store;
        inner.url = "custom://".into();
        Ok(Workspace {
            inner: Arc::new(inner),
        })
    }

    /// A workspace over the given backend: objects in `store`, metadata in `db`, single flight
    /// through `leases`; work folders and materialized files in `dir` (created if needed).
    #[cfg(feature = "s3")]
    pub(crate) fn with_backend(
        url: String,
        store: Arc<dyn ObjectStore>,
        db: Box<dyn Metadata>,
        leases: Box<dyn Leases>,
        dir: PathBuf,
        object_ages: Option<ObjectAges>,
    ) -> Result<Workspace> {
        fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        Ok(Workspace {
            inner: Arc::new(Inner {
                url,
                root: None,
                dir,
                store,
                db,
                leases,
                cache: Mutex::new(MemoryCache::new(
                    DEFAULT_RESULT_CACHE_ENTRIES,
                    DEFAULT_RESULT_CACHE_BYTES,
                )),
                tmp: None,
                read_only: false,
                access_granularity: granularity_default(),
                object_ages,
            }),
        })
    }

    /// Opens a workspace from a URL: a plain path, `file://PATH` (or `local://PATH`),
    /// `memory://`, or `s3://BUCKET/PREFIX` (feature `s3`): a remote workspace on
    /// S3-compatible storage, with endpoint, region and credentials from the usual `AWS_*`
    /// environment variables, shared by every machine that opens it (step records, runs and
    /// leases are objects under the prefix: docs/FORMAT.md, "Remote metadata"). A remote
    /// workspace keeps per-machine state (work folders, materialized files) under
    /// [`CACHE_DIR_ENV`].
    ///
    /// # Errors
    /// [`Error::UnknownScheme`] for any other scheme; [`Error::FeatureDisabled`] for `s3://`
    /// without feature `s3`; or as [`Workspace::open`].
    pub fn from_url(url: &str) -> Result<Workspace> {
        if url == "memory://" || url == "memory:" {
            return Self::memory();
        }
        for scheme in ["file://", "local://"] {
            if let Some(path) = url.strip_prefix(scheme) {
                if path.is_empty() {
                    return Err(Error::UnknownScheme { url: url.into() });
                }
                return Self::open(path);
            }
        }
        if url.starts_with("s3://") {
            #[cfg(feature = "s3")]
            return remote::open_s3(url);
            #[cfg(not(feature = "s3"))]
            return Err(Error::FeatureDisabled {
                url: url.into(),
                feature: "s3",
            });
        }
        if let Some((scheme, _)) = url.split_once("://") {
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+')
            {
                return Err(Error::UnknownScheme { url: url.into() });
            }
        }
        if url.is_empty() {
            return Err(Error::UnknownScheme { url: url.into() });
        }
        Self::open(url)
    }

    /// The workspace's URL (`file:///…`, `memory://` or `s3://bucket/prefix`).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The workspace's directory, for local workspaces.
    pub fn root(&self) -> Option<&Path> {
        self.inner.root.as_deref()
    }

    /// Whether the workspace was opened read-only (explicitly, or because this process may
    /// not write it): cached results can be read, nothing can be computed or removed.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// The record of the step with this unique id, if the workspace knows it.
    ///
    /// A record left `RUNNING` by a process that died (its step lock is free) is reported as
    /// `INCOMPLETE`, with an error text that says so; the next `result()` runs the step again.
    ///
    /// # Errors
    /// A database error.
    pub fn step_info(&self, unique_id: &str) -> Result<Option<StepInfo>> {
        Ok(self
            .inner
            .db
            .get(unique_id)?
            .map(|info| self.inner.effective(info)))
    }

    /// Every step record.
    ///
    /// # Errors
    /// A database error.
    pub fn steps(&self) -> Result<Vec<StepInfo>> {
        Ok(self
            .inner
            .db
            .all()?
            .into_iter()
            .map(|info| self.inner.effective(info))
            .collect())
    }

    /// Forgets a step's result, so that the next `result()` runs it again. Its objects stay
    /// until garbage collection. Returns whether the step was known.
    ///
    /// # Errors
    /// A database error.
    pub fn remove_step(&self, unique_id: &str) -> Result<bool> {
        self.inner
            .check_writable(|| format!("removing step {unique_id}"))?;
        let Some(_lock) = self.inner.try_lock_step(unique_id)? else {
            return Err(Error::State {
                unique_id: unique_id.into(),
                reason: "the step is running; remove it when it has finished".into(),
            });
        };
        self.inner.cache_lock().remove(unique_id);
        let removed = self.inner.db.remove(unique_id)?;
        let _ = fs::remove_dir_all(self.inner.work_dir(unique_id));
        Ok(removed)
    }

    /// Sets how stale a step's recorded last access (used by
    /// [`GcPolicy::max_size`](crate::GcPolicy::max_size)) may get before a read records it again
    /// (default [`DEFAULT_ACCESS_GRANULARITY`]; zero records every read from the workspace).
    /// Results read from this process's memory cache do not count as accesses.
    pub fn set_access_granularity(&self, granularity: Duration) {
        self.inner.access_granularity.store(
            i64::try_from(granularity.as_millis()).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Sets the limits of the in-memory result cache: at most `max_entries` results whose
    /// stored size adds up to at most `max_bytes`.
    pub fn set_cache_limits(&self, max_entries: usize, max_bytes: u64) {
        self.inner.cache_lock().set_limits(max_entries, max_bytes);
    }

    /// The stored artifact of a completed step, as a reader handle.
    ///
    /// # Errors
    /// [`Error::State`] if the step is not completed; errors reading its manifest.
    pub fn artifact(&self, unique_id: &str) -> Result<ArtifactHandle> {
        let info = self.step_info(unique_id)?.ok_or_else(|| Error::State {
            unique_id: unique_id.into(),
            reason: "the workspace has no record of this step".into(),
        })?;
        self.inner.stored_artifact(&info)
    }

    /// Follows the artifact of a step that may still be running, here or in another process:
    /// the handle lists the files committed so far and reports whether the writer is still
    /// writing, finished or failed (see [`milonga_sdk::ArtifactReader::wait_for_change`]).
    ///
    /// This low-level handle is for callers that know a writer is about to start (an executor
    /// that has scheduled the producer): with no writer alive yet, it waits up to
    /// [`FOLLOW_START_TIMEOUT`] for one to take the step's lock, then reports the artifact
    /// failed. A writer seen alive and then gone is reported at once. Use
    /// [`follow_artifact_timeout`](Workspace::follow_artifact_timeout) to choose the wait
    /// (`None`: fail at once when no writer is alive).
    ///
    /// # Errors
    /// A database error.
    pub fn follow_artifact(&self, unique_id: &str) -> Result<ArtifactHandle> {
        self.follow_artifact_timeout(unique_id, Some(FOLLOW_START_TIMEOUT))
    }

    /// As [`follow_artifact`](Workspace::follow_artifact), waiting up to `start_timeout` for a
    /// writer to start if none is running yet (none: not at all). Once a writer was seen, the
    /// handle reports failure as soon as it dies.
    ///
    /// # Errors
    /// A database error.
    pub fn follow_artifact_timeout(
        &self,
        unique_id: &str,
        start_timeout: Option<Duration>,
    ) -> Result<ArtifactHandle> {
        Ok(Arc::new(self.followed(unique_id, start_timeout)?))
    }

    pub(crate) fn followed(
        &self,
        unique_id: &str,
        start_timeout: Option<Duration>,
    ) -> Result<FollowedArtifact> {
        Ok(FollowedArtifact::new(
            Arc::clone(&self.inner),
            unique_id,
            start_timeout,
        )?)
    }

    /// Reads every object the workspace refers to and checks its content against its id;
    /// also checks that every manifest decodes and every file it lists is present.
    ///
    /// # Errors
    /// A database or I/O error that stops the check itself; problems found are in the report.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with_progress(&mut |_, _| {})
    }

    /// As [`verify`](Workspace::verify), calling `progress(objects_checked, bytes_checked)` after
    /// each object (for a progress bar).
    ///
    /// # Errors
    /// As [`verify`](Workspace::verify).
    pub fn verify_with_progress(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        self.check(progress, false)
    }

    /// As [`verify`](Workspace::verify), and repairs what it finds: every damaged object (wrong
    /// content, wrong length, not a regular file) is moved into the quarantine folder, and every
    /// step whose result refers to a damaged or missing object is forgotten, so that the next
    /// `result()` computes it again (and a fresh copy of the object replaces the damaged one).
    /// Steps that are running are left alone (reported, not reset).
    ///
    /// # Errors
    /// As [`verify`](Workspace::verify).
    pub fn repair(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        self.check(progress, true)
    }

    fn check(&self, progress: &mut dyn FnMut(u64, u64), repair: bool) -> Result<VerifyReport> {
        if repair {
            self.inner.check_writable(|| "repair".into())?;
        }
        let mut report = VerifyReport::default();
        for info in self.steps()? {
            let Some(mid) = info.manifest_id else {
                if info.state == StepState::Completed {
                    report.problems.push(Problem {
                        unique_id: info.unique_id.clone(),
                        error: "recorded COMPLETED without a manifest".into(),
                    });
                    if repair {
                        self.reset_step(&info.unique_id, &mut report)?;
                    }
                }
                continue;
            };
            report.objects_checked += 1;
            let mut damaged = Vec::new();
            match self.inner.load_manifest(&mid) {
                Ok(manifest) => {
                    for f in &manifest.files {
                        report.objects_checked += 1;
                        report.bytes_checked += f.len;
                        if let Err(e) = self.inner.store.verify_object(&f.id, Some(f.len)) {
                            report.problems.push(Problem {
                                unique_id: info.unique_id.clone(),
                                error: format!("file {}: {e}", f.name),
                            });
                            damaged.push((f.id, e));
                        }
                        progress(report.objects_checked, report.bytes_checked);
                    }
                }
                Err(e) => {
                    report.problems.push(Problem {
                        unique_id: info.unique_id.clone(),
                        error: e.to_string(),
                    });
                    if let Error::Format(sdk) = e {
                        damaged.push((mid, sdk));
                    }
                }
            }
            if repair && !damaged.is_empty() {
                for (id, e) in &damaged {
                    // Damaged content, a wrong length or not a regular file is moved aside; a
                    // missing object has nothing to move (a manifest that read back but does
                    // not decode is damaged too).
                    if !matches!(e, milonga_sdk::Error::MissingObject { .. }) {
                        if let Some(to) = self.inner.store.quarantine(id)? {
                            report.quarantined.push(to);
                        }
                    }
                }
                self.reset_step(&info.unique_id, &mut report)?;
            }
        }
        Ok(report)
    }

    /// Forgets a damaged step's result (repair); a running step is left alone.
    fn reset_step(&self, unique_id: &str, report: &mut VerifyReport) -> Result<()> {
        match self.remove_step(unique_id) {
            Ok(_) => report.reset_steps.push(unique_id.to_owned()),
            Err(Error::State { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// The outcome of [`Workspace::verify`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Objects read and checked (manifests and files).
    pub objects_checked: u64,
    /// Bytes of artifact files checked.
    pub bytes_checked: u64,
    /// What was found wrong.
    pub problems: Vec<Problem>,
    /// Where damaged objects were moved ([`Workspace::repair`] only).
    pub quarantined: Vec<String>,
    /// Steps whose results were forgotten because they referred to damaged or missing objects
    /// ([`Workspace::repair`] only); their next `result()` computes them again.
    pub reset_steps: Vec<String>,
}

/// One problem found by [`Workspace::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The step whose result is affected.
    pub unique_id: String,
    /// What is wrong, naming the object.
    pub error: String,
}

impl Inner {
    pub(crate) fn cache_lock(&self) -> std::sync::MutexGuard<'_, MemoryCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a read of a completed step if its last access is older than the granularity
    /// (best effort: a read never fails because its access could not be recorded).
    pub(crate) fn touch(&self, info: &StepInfo) {
        if self.read_only || !self.db.records_access() {
            return;
        }
        let now = now_millis();
        let granularity = self
            .access_granularity
            .load(std::sync::atomic::Ordering::Relaxed);
        if info
            .last_access
            .is_some_and(|t| now.saturating_sub(t) < granularity)
        {
            return;
        }
        if let Err(e) = self.db.touch(&info.unique_id, now) {
            tracing::debug!(target: "milonga::workspace", step = %info.unique_id, error = %e, "last access not recorded");
        }
    }

    pub(crate) fn work_dir(&self, unique_id: &str) -> PathBuf {
        self.dir.join("work").join(unique_id)
    }

    pub(crate) fn materialize_dir(&self) -> PathBuf {
        self.dir.join("tmp").join("materialized")
    }

    /// Fails with [`Error::ReadOnly`] on a read-only workspace.
    pub(crate) fn check_writable(&self, operation: impl FnOnce() -> String) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.dir.clone(),
                operation: operation(),
            });
        }
        Ok(())
    }

    /// Takes the step's lock (a lease on a remote workspace), waiting while another process
    /// or thread holds it.
    pub(crate) fn lock_step(&self, unique_id: &str) -> Result<StepLock> {
        self.check_writable(|| format!("locking {unique_id}"))?;
        self.leases.lock_step(unique_id)
    }

    /// Takes the step's lock if it is free.
    pub(crate) fn try_lock_step(&self, unique_id: &str) -> Result<Option<StepLock>> {
        self.check_writable(|| format!("locking {unique_id}"))?;
        self.leases.try_lock_step(unique_id)
    }

    /// Takes the workspace's garbage-collection lock shared: held by writers from the moment
    /// they publish an object until the metadata refers to it, so that a collection (which
    /// holds it exclusively) never sees an object that is about to be referenced. A remote
    /// workspace has no such lock: its collection keeps young objects instead.
    pub(crate) fn gc_shared(&self) -> Result<GcLock> {
        self.check_writable(|| "locking gc".into())?;
        self.leases.gc_shared()
    }

    /// Takes the garbage-collection lock exclusively (see [`Inner::gc_shared`]).
    pub(crate) fn gc_exclusive(&self) -> Result<GcLock> {
        self.check_writable(|| "locking gc".into())?;
        self.leases.gc_exclusive()
    }

    /// The state to report for a record: `RUNNING` with a free lock means the runner died.
    fn effective(&self, mut info: StepInfo) -> StepInfo {
        if info.state == StepState::Running && !self.is_locked(&info.unique_id) {
            info.state = StepState::Incomplete;
            info.error = Some(format!(
                "the process running it ({}) died",
                info.owner.as_deref().unwrap_or("unknown")
            ));
        }
        info
    }

    /// Whether some process (or thread) holds the step's lock (or a live lease) now.
    pub(crate) fn is_locked(&self, unique_id: &str) -> bool {
        self.leases.is_locked(unique_id)
    }

    pub(crate) fn load_manifest(&self, id: &ContentId) -> Result<Manifest> {
        let bytes = self.store.bytes(id, None)?;
        Ok(Manifest::decode(
            (*bytes).as_ref(),
            &self.store.describe(id),
        )?)
    }

    pub(crate) fn load_manifest_of(&self, info: &StepInfo) -> Result<Manifest> {
        let id = info.manifest_id.ok_or_else(|| Error::State {
            unique_id: info.unique_id.clone(),
            reason: format!("state {} has no manifest", info.state),
        })?;
        self.load_manifest(&id)
    }

    pub(crate) fn stored_artifact(&self, info: &StepInfo) -> Result<ArtifactHandle> {
        if info.state != StepState::Completed {
            return Err(Error::State {
                unique_id: info.unique_id.clone(),
                reason: format!("not completed (state {})", info.state),
            });
        }
        let manifest = self.load_manifest_of(info)?;
        Ok(Arc::new(StoredArtifact {
            store: Arc::clone(&self.store),
            files: manifest.files,
            describe: format!("result of step {}", info.unique_id),
            materialize_dir: self.materialize_dir(),
            _tmp: self.tmp.clone(),
        }))
    }

    /// Writes `manifest` as an object (durably) and returns its id.
    pub(crate) fn write_manifest(&self, manifest: &Manifest) -> Result<ContentId> {
        let bytes = manifest.encode()?;
        let mut w = self.store.writer()?;
        std::io::Write::write_all(&mut w, &bytes).map_err(|e| Error::io("manifest", e))?;
        Ok(w.commit()?.0)
    }
}
