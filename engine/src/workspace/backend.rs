//! The workspace's backend seam: where step records, runs, provenance and partial files live
//! ([`Metadata`]) and who may run a step ([`Leases`]).
//!
//! The step logic (run, resume, follow, gc, verify, explain) exists once, above this seam. A
//! local workspace uses the SQLite database ([`Db`]) and OS file locks ([`FileLocks`]); a remote
//! one (feature `s3`) uses objects written by conditional writes and leases with fencing tokens
//! (`crate::remote::meta`, `crate::remote::lease`).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use milonga_sdk::{ContentId, FileEntry};

use super::db::{Db, NewRecord};
use super::provenance::Provenance;
use super::runs::NewRunStep;
use super::{RunStep, RunSummary, StepInfo};
use crate::error::{Error, Result};

/// A run as read back: started, ended, provenance id, steps (targets first).
pub(crate) type StoredRun = (i64, Option<i64>, Option<String>, Vec<RunStep>);

/// Step records, runs, provenance records and the partial files of artifacts being written.
///
/// Every method is safe to call from many threads and processes at once; writes are atomic
/// (a crash leaves the old record or the new one).
pub(crate) trait Metadata: Send + Sync + 'static {
    /// Whether last accesses are recorded (false for an old, read-only database).
    fn records_access(&self) -> bool;
    /// How often a follower of a step being written polls this metadata.
    fn follow_poll(&self) -> std::time::Duration {
        std::time::Duration::from_millis(20)
    }
    /// The record of `unique_id`, if any.
    fn get(&self, unique_id: &str) -> Result<Option<StepInfo>>;
    /// Which of `unique_ids` are recorded COMPLETED.
    fn completed_among(
        &self,
        unique_ids: &mut dyn Iterator<Item = &str>,
    ) -> Result<std::collections::HashSet<String>>;
    /// Every step record, ordered by unique id.
    fn all(&self) -> Result<Vec<StepInfo>>;
    /// Up to `limit` records of `step_type` other than `unique_id` written before it (all of
    /// them if it has no record), latest first.
    fn earlier_of_type(
        &self,
        step_type: &str,
        unique_id: &str,
        limit: usize,
    ) -> Result<Vec<StepInfo>>;
    /// The provenance record `id`.
    fn provenance(&self, id: &str) -> Result<Option<Provenance>>;
    /// Stores this process's provenance record (once) and returns its id.
    fn put_current_provenance(&self) -> Result<String>;
    /// Records that `info.unique_id` starts an attempt now (or, with `extra.reused`, is
    /// completed at once by an earlier step's result).
    fn mark_running(&self, info: &StepInfo, extra: &NewRecord<'_>) -> Result<()>;
    /// A completed step (other than `except`) whose content key is `key`, with its manifest.
    fn completed_with_content_key(
        &self,
        key: &str,
        except: &str,
    ) -> Result<Option<(String, ContentId)>>;
    /// Records that a step's result was read at `now`.
    fn touch(&self, unique_id: &str, now: i64) -> Result<()>;
    /// Records a failed attempt.
    fn mark_failed(&self, unique_id: &str, error: &str) -> Result<()>;
    /// Records the result (after the manifest and every object it lists are durable) and drops
    /// the partial files. A step already COMPLETED with another manifest is refused.
    fn mark_completed(&self, unique_id: &str, manifest: &ContentId, result_size: u64)
        -> Result<()>;
    /// Fills in the result sizes of completed records that have none (records written before
    /// sizes were recorded): `(unique id, manifest, size)`; how many were filled. Backends
    /// that always record sizes have nothing to fill.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    fn fill_result_sizes(&self, _sizes: &[(&str, ContentId, u64)]) -> Result<usize> {
        Ok(0)
    }
    /// Removes the record of a step; whether there was one.
    fn remove(&self, unique_id: &str) -> Result<bool>;
    /// Records a durable file of an artifact being written.
    fn add_partial(&self, unique_id: &str, entry: &FileEntry) -> Result<()>;
    /// The durable files of an artifact being written, in the order they were finished.
    fn partial_files(&self, unique_id: &str) -> Result<Vec<FileEntry>>;
    /// Forgets the durable files of an interrupted write.
    fn clear_partial(&self, unique_id: &str) -> Result<()>;
    /// Registers a run (a generated name if `name` is `None`); returns its name.
    fn insert_run(
        &self,
        name: Option<&str>,
        steps: &[NewRunStep],
        provenance_id: Option<&str>,
    ) -> Result<String>;
    /// Records that run `name` ended now.
    fn end_run(&self, name: &str) -> Result<()>;
    /// Every run, oldest first.
    fn list_runs(&self) -> Result<Vec<RunSummary>>;
    /// Run `name`.
    fn get_run(&self, name: &str) -> Result<Option<StoredRun>>;
    /// Removes run `name`; the unique ids of its steps no other run has (`None`: no such run).
    fn delete_run(&self, name: &str) -> Result<Option<Vec<String>>>;
    /// Removes the record of `unique_id` if no run has it; whether it was removed.
    fn remove_if_unrooted(&self, unique_id: &str) -> Result<bool>;
    /// For removing many records: the unique ids some run has, read once, that
    /// [`remove_if_unrooted`](Metadata::remove_if_unrooted) would otherwise read for each record.
    /// `None` (the default) where that check is atomic and cheap (SQLite: one transaction per
    /// record), so that it stays per record.
    fn rooted_ids(&self) -> Result<Option<HashSet<String>>> {
        Ok(None)
    }
}

/// A held step lock (or lease): released when dropped, or when its holder dies.
pub(crate) struct StepLock {
    _hold: Box<dyn std::any::Any + Send>,
}

impl StepLock {
    /// A lock held by `hold` (released when it is dropped).
    pub(crate) fn new(hold: impl std::any::Any + Send) -> Self {
        StepLock {
            _hold: Box::new(hold),
        }
    }
}

/// A held garbage-collection lock (shared by writers, exclusive for a collection).
pub(crate) struct GcLock {
    _hold: Option<Box<dyn std::any::Any + Send>>,
}

impl GcLock {
    /// A lock held by `hold`.
    pub(crate) fn new(hold: impl std::any::Any + Send) -> Self {
        GcLock {
            _hold: Some(Box::new(hold)),
        }
    }

    /// A backend without a gc lock (it protects new objects by their age instead).
    #[cfg(feature = "s3")]
    pub(crate) fn none() -> Self {
        GcLock { _hold: None }
    }
}

/// Who may run which step: single flight across threads, processes and machines.
pub(crate) trait Leases: Send + Sync + 'static {
    /// Takes the step's lock, waiting while another holder has it.
    fn lock_step(&self, unique_id: &str) -> Result<StepLock>;
    /// Takes the step's lock if it is free.
    fn try_lock_step(&self, unique_id: &str) -> Result<Option<StepLock>>;
    /// Whether some live holder has the step's lock now.
    fn is_locked(&self, unique_id: &str) -> bool;
    /// The gc lock, shared: held from publishing an object until the metadata refers to it.
    fn gc_shared(&self) -> Result<GcLock>;
    /// The gc lock, exclusive (a collection).
    fn gc_exclusive(&self) -> Result<GcLock>;
}

/// Checks a step id before it names a file or key: ASCII letters, digits, `-`, `_`, `.`, not
/// starting with `.`.
pub(crate) fn check_step_id(unique_id: &str) -> Result<()> {
    if unique_id.is_empty()
        || unique_id.starts_with('.')
        || !unique_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(Error::State {
            unique_id: unique_id.into(),
            reason: "not a valid step id".into(),
        });
    }
    Ok(())
}

/// The lock file name (in `locks/`) of the garbage-collection lock; step ids always contain a
/// `-`, so it cannot collide with a step's lock.
pub(crate) const GC_LOCK: &str = "gc";

/// Step locks as OS file locks in `DIR/locks/`: released when the holder dies, so a dead
/// holder never wedges a step.
pub(crate) struct FileLocks {
    /// The workspace's (or the memory workspace's temporary) directory.
    pub(crate) dir: PathBuf,
    /// Nothing may be locked (no lock files are created).
    pub(crate) read_only: bool,
}

impl FileLocks {
    fn lock_path(&self, unique_id: &str) -> Result<PathBuf> {
        check_step_id(unique_id)?;
        Ok(self.dir.join("locks").join(format!("{unique_id}.lock")))
    }

    fn lock_file(&self, name: &str) -> Result<(File, PathBuf)> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.dir.clone(),
                operation: format!("locking {name}"),
            });
        }
        let path = if name == GC_LOCK {
            self.dir.join("locks").join(format!("{GC_LOCK}.lock"))
        } else {
            self.lock_path(name)?
        };
        let dir = self.dir.join("locks");
        fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(path.display(), e))?;
        Ok((f, path))
    }
}

impl Leases for FileLocks {
    fn lock_step(&self, unique_id: &str) -> Result<StepLock> {
        loop {
            let (f, path) = self.lock_file(unique_id)?;
            f.lock().map_err(|e| Error::io(path.display(), e))?;
            if still_named(&f, &path) {
                return Ok(StepLock::new(f));
            }
        }
    }

    fn try_lock_step(&self, unique_id: &str) -> Result<Option<StepLock>> {
        loop {
            let (f, path) = self.lock_file(unique_id)?;
            match f.try_lock() {
                Ok(()) if still_named(&f, &path) => return Ok(Some(StepLock::new(f))),
                // Removed by garbage collection between the open and the lock: a new file.
                Ok(()) => continue,
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path.display(), e)),
            }
        }
    }

    /// Probes with a shared lock on a read-only handle, so that probes never create files (a
    /// read-only workspace can be probed) and never make each other look like a writer.
    fn is_locked(&self, unique_id: &str) -> bool {
        let Ok(path) = self.lock_path(unique_id) else {
            return false;
        };
        // No lock file: no step ever took the lock, so nobody holds it.
        let Ok(f) = File::open(&path) else {
            return false;
        };
        matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
    }

    fn gc_shared(&self) -> Result<GcLock> {
        let (f, path) = self.lock_file(GC_LOCK)?;
        f.lock_shared().map_err(|e| Error::io(path.display(), e))?;
        Ok(GcLock::new(f))
    }

    fn gc_exclusive(&self) -> Result<GcLock> {
        let (f, path) = self.lock_file(GC_LOCK)?;
        f.lock().map_err(|e| Error::io(path.display(), e))?;
        Ok(GcLock::new(f))
    }
}

/// The local backend: the SQLite database, delegating to its methods.
impl Metadata for Db {
    fn records_access(&self) -> bool {
        self.version >= 2
    }

    fn get(&self, unique_id: &str) -> Result<Option<StepInfo>> {
        Db::get(self, unique_id)
    }

    fn completed_among(
        &self,
        unique_ids: &mut dyn Iterator<Item = &str>,
    ) -> Result<std::collections::HashSet<String>> {
        Db::completed_among(self, unique_ids)
    }

    fn all(&self) -> Result<Vec<StepInfo>> {
        Db::all(self)
    }

    fn earlier_of_type(
        &self,
        step_type: &str,
        unique_id: &str,
        limit: usize,
    ) -> Result<Vec<StepInfo>> {
        // Earlier: inserted before this record (all records, for a step not recorded yet).
        self.select_where(
            &format!(
                "step_type = ?1 AND unique_id != ?2
                   AND rowid < coalesce((SELECT rowid FROM steps WHERE unique_id = ?2),
                                        9223372036854775807)
                 ORDER BY rowid DESC LIMIT {limit}"
            ),
            rusqlite::params![step_type, unique_id],
        )
    }

    fn provenance(&self, id: &str) -> Result<Option<Provenance>> {
        Db::provenance(self, id)
    }

    fn put_current_provenance(&self) -> Result<String> {
        Db::put_current_provenance(self)
    }

    fn mark_running(&self, info: &StepInfo, extra: &NewRecord<'_>) -> Result<()> {
        Db::mark_running(self, info, extra)
    }

    fn completed_with_content_key(
        &self,
        key: &str,
        except: &str,
    ) -> Result<Option<(String, ContentId)>> {
        Db::completed_with_content_key(self, key, except)
    }

    fn touch(&self, unique_id: &str, now: i64) -> Result<()> {
        Db::touch(self, unique_id, now)
    }

    fn mark_failed(&self, unique_id: &str, error: &str) -> Result<()> {
        Db::mark_failed(self, unique_id, error)
    }

    fn mark_completed(
        &self,
        unique_id: &str,
        manifest: &ContentId,
        result_size: u64,
    ) -> Result<()> {
        Db::mark_completed(self, unique_id, manifest, result_size)
    }

    fn fill_result_sizes(&self, sizes: &[(&str, ContentId, u64)]) -> Result<usize> {
        Db::fill_result_sizes(self, sizes)
    }

    fn remove(&self, unique_id: &str) -> Result<bool> {
        Db::remove(self, unique_id)
    }

    fn add_partial(&self, unique_id: &str, entry: &FileEntry) -> Result<()> {
        Db::add_partial(self, unique_id, entry)
    }

    fn partial_files(&self, unique_id: &str) -> Result<Vec<FileEntry>> {
        Db::partial_files(self, unique_id)
    }

    fn clear_partial(&self, unique_id: &str) -> Result<()> {
        Db::clear_partial(self, unique_id)
    }

    fn insert_run(
        &self,
        name: Option<&str>,
        steps: &[NewRunStep],
        provenance_id: Option<&str>,
    ) -> Result<String> {
        Db::insert_run(self, name, steps, provenance_id)
    }

    fn end_run(&self, name: &str) -> Result<()> {
        Db::end_run(self, name)
    }

    fn list_runs(&self) -> Result<Vec<RunSummary>> {
        Db::list_runs(self)
    }

    fn get_run(&self, name: &str) -> Result<Option<StoredRun>> {
        Db::get_run(self, name)
    }

    fn delete_run(&self, name: &str) -> Result<Option<Vec<String>>> {
        Db::delete_run(self, name)
    }

    fn remove_if_unrooted(&self, unique_id: &str) -> Result<bool> {
        Db::remove_if_unrooted(self, unique_id)
    }
}

/// Whether `path` still names the open file `f` (garbage collection removes unused step lock
/// files while holding their lock; a locker that got the lock of a removed file must start over
/// on the path's new file). See `Workspace::remove_stale_locks`.
#[cfg(unix)]
fn still_named(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Lock files are never removed where inodes cannot be compared.
#[cfg(not(unix))]
fn still_named(_f: &File, _path: &Path) -> bool {
    true
}
