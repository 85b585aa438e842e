//! Garbage collection: objects that no step refers to any more, and retention policies that
//! decide which runs and step records to keep.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::time::{Duration, SystemTime};

use milonga_sdk::ContentId;

use super::{StepInfo, StepState, Workspace};
use crate::error::{Error, Result};

/// What [`Workspace::gc_with`] keeps: runs are roots, and a step record that no run has is kept
/// unless a policy says it goes. With no policy set, only unreferenced objects go (as
/// [`Workspace::gc`]).
///
/// ```
/// # use std::time::Duration;
/// let policy = milonga::GcPolicy::new()
///     .with_keep_last_runs(10)
///     .with_max_age(Duration::from_secs(30 * 86_400))
///     .with_dry_run(true);
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcPolicy {
    /// Keep the newest `n` runs; older runs are removed (with the records of their steps that
    /// no kept run has).
    pub keep_last_runs: Option<usize>,
    /// Remove runs that started longer ago than this, and step records no run has that were
    /// last accessed (or written) longer ago.
    pub max_age: Option<Duration>,
    /// Remove step records no run has, least recently accessed first, until the results of the
    /// remaining records (artifact files, each stored object counted once) add up to at most
    /// this many bytes. Records that a run has are never removed by size: if they alone exceed
    /// it, the report says by how much.
    pub max_size: Option<u64>,
    /// Objects and staging files younger than this are kept (a writer may be about to record
    /// them). Default one hour.
    pub grace: Duration,
    /// Only report what would go; change nothing.
    pub dry_run: bool,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            keep_last_runs: None,
            max_age: None,
            max_size: None,
            grace: Duration::from_secs(3600),
            dry_run: false,
        }
    }
}

impl GcPolicy {
    /// No retention policy: only unreferenced objects older than an hour go.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`keep_last_runs`](GcPolicy::keep_last_runs).
    pub fn with_keep_last_runs(mut self, n: usize) -> Self {
        self.keep_last_runs = Some(n);
        self
    }

    /// Sets [`max_age`](GcPolicy::max_age).
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Sets [`max_size`](GcPolicy::max_size).
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// Sets [`grace`](GcPolicy::grace).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets [`dry_run`](GcPolicy::dry_run).
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// What [`Workspace::gc`] did (or, in a dry run, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct GcReport {
    /// Whether this was a dry run (nothing was changed).
    pub dry_run: bool,
    /// Runs removed by the policy, oldest first.
    pub removed_runs: Vec<String>,
    /// Step records removed by the policy.
    pub removed_steps: Vec<String>,
    /// With [`GcPolicy::max_size`]: bytes by which the kept results still exceed the limit
    /// (results of runs are never evicted by size).
    pub over_size_by: u64,
    /// Objects still referred to by a step (kept).
    pub live_objects: u64,
    /// Unreferenced objects removed.
    pub removed_objects: u64,
    /// Bytes freed by removing objects and stale staging files.
    pub freed_bytes: u64,
    /// Unreferenced objects kept because they are younger than the grace period (a writer may be
    /// about to record them).
    pub young_objects: u64,
    /// Stale staging files removed from `tmp/`: older than the grace period and at least ten
    /// minutes, and not held by a writer (writers lock their staging file until they publish it).
    pub removed_staging_files: u64,
    /// Lock files (`locks/<unique id>.lock`) removed: those of steps without a record that
    /// nobody held.
    pub removed_lock_files: u64,
}

/// A step record's time for age and access order: last access, else end, else start.
fn last_used(s: &StepInfo) -> i64 {
    s.last_access.or(s.ended_at).or(s.started_at).unwrap_or(0)
}

impl Workspace {
    /// Removes objects that no step record, manifest or partial write refers to, and staging
    /// files left by crashed writers. Objects and staging files younger than `grace` are kept,
    /// because a running writer may have committed an object it has not recorded yet.
    ///
    /// A manifest that cannot be read stops the collection with its error, before anything is
    /// removed: what it refers to cannot be known.
    ///
    /// # Errors
    /// Database and I/O errors, or a corrupt manifest.
    pub fn gc(&self, grace: Duration) -> Result<GcReport> {
        self.gc_with(&GcPolicy::new().with_grace(grace))
    }

    /// Applies the retention `policy` (which runs and step records to keep), then removes the
    /// objects nothing kept refers to, as [`gc`](Workspace::gc). Safe while other processes
    /// run steps: the collection holds the gc lock exclusively (writers hold it shared from
    /// publishing an object until their record refers to it), a step record is removed only
    /// if no run has it at that moment and it is not running, and a run registered meanwhile
    /// keeps its steps.
    ///
    /// A dry run takes no lock and changes nothing; its report lists the runs and step records
    /// that would go and counts the objects and bytes that would be freed.
    ///
    /// # Errors
    /// As [`gc`](Workspace::gc).
    pub fn gc_with(&self, policy: &GcPolicy) -> Result<GcReport> {
        let inner = &self.inner;
        if !policy.dry_run {
            inner.check_writable(|| "garbage collection".into())?;
        }
        // Writers hold this lock shared from publishing an object until the database refers to
        // it: with it held exclusively, every object is either referenced below or garbage.
        let _gc = if policy.dry_run {
            None
        } else {
            Some(inner.gc_exclusive()?)
        };
        let mut report = GcReport {
            dry_run: policy.dry_run,
            ..GcReport::default()
        };
        let now = crate::workspace::now_millis();
        let age_cutoff = policy
            .max_age
            .map(|a| now.saturating_sub(i64::try_from(a.as_millis()).unwrap_or(i64::MAX)));

        // 1. Runs to remove.
        let runs = self.runs()?;
        let mut drop_runs: Vec<String> = Vec::new();
        let keep_from = policy
            .keep_last_runs
            .map_or(0, |n| runs.len().saturating_sub(n));
        for (i, r) in runs.iter().enumerate() {
            if i < keep_from || age_cutoff.is_some_and(|c| r.started_at < c) {
                drop_runs.push(r.name.clone());
            }
        }
        let mut rooted: HashSet<String> = HashSet::new();
        let mut unrooted_by_runs: HashSet<String> = HashSet::new();
        for r in &runs {
            let steps = self.run(&r.name)?.steps;
            let ids = steps.into_iter().map(|s| s.unique_id);
            if drop_runs.contains(&r.name) {
                unrooted_by_runs.extend(ids);
            } else {
                rooted.extend(ids);
            }
        }
        unrooted_by_runs.retain(|id| !rooted.contains(id));

        // 2. Step records to remove: those only removed runs had, old unrooted ones, then the
        // least recently used unrooted ones until under the size.
        let records = inner.db.all()?;
        let mut gone: HashSet<String> = HashSet::new();
        for s in &records {
            if s.state == StepState::Running {
                continue;
            }
            let old =
                age_cutoff.is_some_and(|c| last_used(s) < c) && !rooted.contains(&s.unique_id);
            if unrooted_by_runs.contains(&s.unique_id) || old {
                gone.insert(s.unique_id.clone());
            }
        }
        // Objects each record refers to, for the size policy (a manifest that cannot be read
        // stops everything; without the size policy the sweep below reads them).
        let mut files_of: HashMap<String, Vec<(ContentId, u64)>> = HashMap::new();
        for s in records.iter().filter(|_| policy.max_size.is_some()) {
            if let Some(mid) = s.manifest_id {
                let m = inner.load_manifest(&mid).map_err(|e| Error::State {
                    unique_id: s.unique_id.clone(),
                    reason: format!(
                        "its manifest cannot be read, so garbage collection stops before \
                         removing anything: {e}"
                    ),
                })?;
                files_of.insert(
                    s.unique_id.clone(),
                    m.files.iter().map(|f| (f.id, f.len)).collect(),
                );
            }
        }
        if let Some(limit) = policy.max_size {
            let mut refs: HashMap<ContentId, (u32, u64)> = HashMap::new();
            for (id, files) in &files_of {
                if gone.contains(id) {
                    continue;
                }
                for &(f, len) in files {
                    refs.entry(f).or_insert((0, len)).0 += 1;
                }
            }
            let mut size: u64 = refs.values().map(|&(_, len)| len).sum();
            let mut candidates: Vec<&StepInfo> = records
                .iter()
                .filter(|s| {
                    s.state != StepState::Running
                        && !rooted.contains(&s.unique_id)
                        && !gone.contains(&s.unique_id)
                })
                .collect();
            candidates.sort_by_key(|s| (last_used(s), s.unique_id.clone()));
            for s in candidates {
                if size <= limit {
                    break;
                }
                gone.insert(s.unique_id.clone());
                for (f, _) in files_of.get(&s.unique_id).into_iter().flatten() {
                    if let Some(e) = refs.get_mut(f) {
                        e.0 -= 1;
                        if e.0 == 0 {
                            size -= e.1;
                        }
                    }
                }
            }
            report.over_size_by = size.saturating_sub(limit);
        }

        // 3. Apply (or, in a dry run, only list).
        report.removed_runs = drop_runs.clone();
        let mut gone: Vec<String> = gone.into_iter().collect();
        gone.sort();
        if policy.dry_run {
            report.removed_steps = gone.clone();
        } else {
            // The runs first, then every record they alone had and every record the policy
            // drops, in one pass (the runs are read once for all of them, not per record).
            let mut candidates: Vec<String> = Vec::new();
            for r in &drop_runs {
                // `None`: removed by someone else meanwhile.
                if let Some(ids) = inner.db.delete_run(r)? {
                    candidates.extend(ids);
                }
            }
            candidates.extend(gone.iter().cloned());
            candidates.sort();
            candidates.dedup();
            report.removed_steps = self.remove_all_unrooted(&candidates)?;
            report.removed_steps.sort();
        }

        // 4. Objects.
        let kept: Vec<StepInfo> = if policy.dry_run {
            let gone: HashSet<&String> = gone.iter().collect();
            records
                .into_iter()
                .filter(|s| !gone.contains(&s.unique_id))
                .collect()
        } else {
            inner.db.all()?
        };
        self.sweep(kept, policy.grace, policy.dry_run, report)
    }

    /// Removes (or in a dry run counts) the objects that the records `kept` do not refer to.
    fn sweep(
        &self,
        kept: Vec<StepInfo>,
        grace: Duration,
        dry_run: bool,
        mut report: GcReport,
    ) -> Result<GcReport> {
        let inner = &self.inner;
        let mut live: HashSet<ContentId> = HashSet::new();
        for info in kept {
            if let Some(mid) = info.manifest_id {
                live.insert(mid);
                let m = inner.load_manifest(&mid).map_err(|e| Error::State {
                    unique_id: info.unique_id.clone(),
                    reason: format!(
                        "its manifest cannot be read, so garbage collection stops before \
                         removing anything: {e}"
                    ),
                })?;
                live.extend(m.files.iter().map(|f| f.id));
            }
            live.extend(
                inner
                    .db
                    .partial_files(&info.unique_id)?
                    .iter()
                    .map(|f| f.id),
            );
        }
        let now = SystemTime::now();
        let old_enough = |path: &std::path::Path| -> bool {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= grace)
        };
        // A store without local files (remote) gives last-modified times instead.
        let ages = inner.object_ages.as_ref().map(|list| list()).transpose()?;
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let now_ms = crate::workspace::now_millis();
        for id in inner.store.list()? {
            if live.contains(&id) {
                report.live_objects += 1;
                continue;
            }
            if let Some(ages) = &ages {
                // Unknown age (written after the listing): young.
                let Some(&(modified, size)) = ages.get(&id) else {
                    report.young_objects += 1;
                    continue;
                };
                if now_ms.saturating_sub(modified) < grace_ms {
                    report.young_objects += 1;
                    continue;
                }
                if !dry_run {
                    inner.store.remove(&id)?;
                }
                report.freed_bytes += size;
                report.removed_objects += 1;
                continue;
            }
            let path = inner.store.local_path(&id)?;
            if let Some(p) = &path {
                if !old_enough(p) {
                    report.young_objects += 1;
                    continue;
                }
                report.freed_bytes += fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            }
            if !dry_run {
                inner.store.remove(&id)?;
            }
            report.removed_objects += 1;
        }
        if dry_run {
            return Ok(report);
        }
        if let Some(root) = self.root() {
            report.freed_bytes += remove_orphan_outboards(root, &old_enough)?;
            let tmp = root.join(crate::store::TMP_DIR);
            let floor = grace.max(STAGING_FLOOR);
            let old_staging = |path: &std::path::Path| -> bool {
                fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age >= floor)
            };
            if let Ok(entries) = fs::read_dir(&tmp) {
                for e in entries.flatten() {
                    let p = e.path();
                    if !(p.is_file()
                        && p.extension().is_some_and(|x| x == "tmp")
                        && old_staging(&p))
                    {
                        continue;
                    }
                    // A live writer holds its staging file's lock until it publishes it; take
                    // the lock first and remove the file while holding it.
                    let Some(_held) = unheld(&p) else { continue };
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    match fs::remove_file(&p) {
                        Ok(()) => {}
                        // Published or discarded by its writer meanwhile.
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(Error::io(p.display(), err)),
                    }
                    report.removed_staging_files += 1;
                    report.freed_bytes += len;
                }
            }
            report.removed_lock_files = self.remove_stale_locks()?;
        }
        Ok(report)
    }
}

/// Staging files younger than this are never removed, whatever the grace period: it covers the
/// instant between a writer creating its staging file and locking it, and file systems without
/// `flock`, where the lock cannot tell a live writer from a dead one.
const STAGING_FLOOR: Duration = Duration::from_secs(600);

/// Opens `path` and takes its lock exclusively if nobody holds it: the file then belongs to no
/// live writer. `None` if it is held (or vanished). Where the file system has no locks, the file
/// counts as unheld (the caller's age floor is then all that protects it).
fn unheld(path: &std::path::Path) -> Option<fs::File> {
    let f = fs::File::open(path).ok()?;
    match f.try_lock() {
        Ok(()) => Some(f),
        Err(fs::TryLockError::WouldBlock) => None,
        Err(fs::TryLockError::Error(_)) => Some(f),
    }
}

impl Workspace {
    /// Removes the lock files (`locks/<unique id>.lock`) of steps that have no record and that
    /// nobody holds; returns how many. Each is removed while holding its lock, and only if the
    /// path still names the file locked: a step locker (`Inner::lock_step`) checks after taking
    /// a lock that the path still names the file it locked, and starts over otherwise. So a
    /// locker either holds the lock of the file the path names (which cannot be removed under
    /// it: removal needs the lock) or finds its file removed and retries on a new one. With
    /// flock semantics, the lock belongs to the open file, not to the path, which is why the
    /// check is needed. The gc lock file is never removed.
    #[cfg(unix)]
    fn remove_stale_locks(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let Some(root) = self.root() else {
            return Ok(0);
        };
        let dir = root.join("locks");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
                continue;
            };
            if id == super::backend::GC_LOCK || self.inner.db.get(id)?.is_some() {
                continue;
            }
            let p = e.path();
            let Ok(f) = fs::OpenOptions::new().write(true).open(&p) else {
                continue;
            };
            if f.try_lock().is_err() {
                continue;
            }
            // Locked: nobody else holds it. Is it still the file the path names, and is the step
            // still unrecorded (a runner takes the lock before writing the record)?
            let same = match (f.metadata(), fs::metadata(&p)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same || self.inner.db.get(id)?.is_some() {
                continue;
            }
            match fs::remove_file(&p) {
                Ok(()) => removed += 1,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(p.display(), err)),
            }
        }
        Ok(removed)
    }

    /// Lock files are left in place where the inode check of [`Workspace::remove_stale_locks`]
    /// is not available.
    #[cfg(not(unix))]
    fn remove_stale_locks(&self) -> Result<u64> {
        Ok(0)
    }
}

/// Removes outboards whose object is gone (its object was quarantined or removed by hand, or
/// collected by a process that died in between) and that are older than the grace period.
/// Returns the bytes freed.
fn remove_orphan_outboards(
    root: &std::path::Path,
    old_enough: &dyn Fn(&std::path::Path) -> bool,
) -> Result<u64> {
    let objects = root.join(crate::store::OBJECTS_DIR);
    let mut freed = 0;
    let Ok(level1) = fs::read_dir(&objects) else {
        return Ok(0);
    };
    for a in level1.flatten() {
        let Ok(level2) = fs::read_dir(a.path()) else {
            continue;
        };
        for b in level2.flatten() {
            let Ok(files) = fs::read_dir(b.path()) else {
                continue;
            };
            for c in files.flatten() {
                let p = c.path();
                let name = c.file_name();
                let Some(object) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(crate::store::OUTBOARD_SUFFIX))
                else {
                    continue;
                };
                if fs::symlink_metadata(b.path().join(object)).is_err() && old_enough(&p) {
                    let len = c.metadata().map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(&p).map_err(|e| Error::io(p.display(), e))?;
                    freed += len;
                }
            }
        }
    }
    Ok(freed)
}

#[cfg(all(test, feature = "s3"))]
mod remote_tests {
    //! Remote metadata (over an in-memory [`Kv`](crate::remote::meta::Kv) that counts its
    //! reads): removing many records reads the run documents once per operation.
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use serde::Serialize;

    use crate::remote::lease::{RemoteLeases, RemoteLeasesHandle};
    use crate::remote::meta::{Kv, KvEntry, KvObject, KvVersion, MemoryKv, RemoteMeta};
    use crate::store::MemoryStore;
    use crate::{Context, Executor, GcPolicy, PostcardFormat, Step, StepRef, Workspace};

    #[derive(Serialize)]
    struct Num {
        n: u32,
    }

    impl Step for Num {
        const NAME: &'static str = "gc_test::Num";
        type Output = u32;
        type Format = PostcardFormat;
        fn run(&self, _: &mut Context<'_>) -> std::result::Result<u32, crate::BoxError> {
            Ok(self.n)
        }
    }

    /// A [`MemoryKv`] counting the reads of run documents.
    #[derive(Default)]
    struct Counting {
        kv: MemoryKv,
        run_reads: AtomicUsize,
    }

    impl Kv for Counting {
        fn describe(&self, key: &str) -> String {
            self.kv.describe(key)
        }
        fn get(&self, key: &str) -> crate::Result<Option<KvObject>> {
            if key.contains("/runs/") {
                self.run_reads.fetch_add(1, Ordering::SeqCst);
            }
            self.kv.get(key)
        }
        fn create(&self, key: &str, bytes: &[u8]) -> crate::Result<Option<KvVersion>> {
            self.kv.create(key, bytes)
        }
        fn update(
            &self,
            key: &str,
            bytes: &[u8],
            version: &KvVersion,
        ) -> crate::Result<Option<KvVersion>> {
            self.kv.update(key, bytes, version)
        }
        fn put(&self, key: &str, bytes: &[u8]) -> crate::Result<()> {
            self.kv.put(key, bytes)
        }
        fn delete(&self, key: &str) -> crate::Result<()> {
            self.kv.delete(key)
        }
        fn list(&self, prefix: &str) -> crate::Result<Vec<KvEntry>> {
            self.kv.list(prefix)
        }
    }

    fn workspace(kv: &Arc<Counting>, dir: &std::path::Path) -> Workspace {
        let kv: Arc<dyn Kv> = Arc::clone(kv) as Arc<dyn Kv>;
        let leases = RemoteLeases::new(Arc::clone(&kv), Duration::from_secs(30));
        let meta = RemoteMeta::new(kv, Arc::clone(&leases));
        Workspace::with_backend(
            "memory-kv://gc-test".into(),
            Arc::new(MemoryStore::new()),
            Box::new(meta),
            Box::new(RemoteLeasesHandle(leases)),
            dir.to_path_buf(),
            None,
        )
        .unwrap()
    }

    fn run(ws: &Workspace, name: &str, range: std::ops::Range<u32>) {
        Executor::new(ws)
            .with_run_name(name)
            .run(range.map(|n| StepRef::new(Num { n })))
            .unwrap();
    }

    #[test]
    fn removing_many_records_reads_the_runs_once_per_operation() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(Counting::default());
        let ws = workspace(&kv, dir.path());
        // Five runs; "a" alone has 0..100, "b" shares 100..110 with "a".
        run(&ws, "a", 0..110);
        run(&ws, "b", 100..130);
        for (i, name) in ["c", "d", "e"].iter().enumerate() {
            let from = 200 + 10 * i as u32;
            run(&ws, name, from..from + 10);
        }

        kv.run_reads.store(0, Ordering::SeqCst);
        let removed = ws.remove_run("a").unwrap();
        assert_eq!(removed.len(), 100);
        let reads = kv.run_reads.load(Ordering::SeqCst);
        // Deleting the run reads it and the other four; then one reading of the four left
        // for all 100 records (once per record, it was 400 more).
        assert!(reads <= 2 * 5, "{reads} run reads to remove 100 records");

        kv.run_reads.store(0, Ordering::SeqCst);
        let report = ws.gc_with(&GcPolicy::new().with_keep_last_runs(3)).unwrap();
        assert_eq!(report.removed_runs, ["b"]);
        assert_eq!(report.removed_steps.len(), 30);
        let reads = kv.run_reads.load(Ordering::SeqCst);
        // The policy reads the runs (list, then each), deleting "b" reads the rest, and the
        // removals read them once: a bounded number, whatever the number of records.
        assert!(
            reads <= 5 * 4,
            "{reads} run reads for a gc removing 30 records"
        );
        assert_eq!(ws.steps().unwrap().len(), 30);
    }
}
