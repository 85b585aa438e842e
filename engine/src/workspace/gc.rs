//! Garbage collection: objects that no step refers to any more.

use std::collections::HashSet;
use std::fs;
use std::time::{Duration, SystemTime};

use milonga_sdk::ContentId;

use super::Workspace;
use crate::error::{Error, Result};

/// What [`Workspace::gc`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Objects still referred to by a step (kept).
    pub live_objects: u64,
    /// Unreferenced objects removed.
    pub removed_objects: u64,
    /// Bytes freed by removing objects and stale staging files.
    pub freed_bytes: u64,
    /// Unreferenced objects kept because they are younger than the grace period (a writer may be
    /// about to record them).
    pub young_objects: u64,
    /// Stale staging files removed from `tmp/`.
    pub removed_staging_files: u64,
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
        let inner = &self.inner;
        inner.check_writable(|| "garbage collection".into())?;
        // Writers hold this lock shared from publishing an object until the database refers to
        // it: with it held exclusively, every object is either referenced below or garbage.
        let _gc = inner.gc_exclusive()?;
        let mut live: HashSet<ContentId> = HashSet::new();
        for info in inner.db.all()? {
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
        let mut report = GcReport::default();
        for id in inner.store.list()? {
            if live.contains(&id) {
                report.live_objects += 1;
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
            inner.store.remove(&id)?;
            report.removed_objects += 1;
        }
        if let Some(root) = self.root() {
            report.freed_bytes += remove_orphan_outboards(root, &old_enough)?;
            let tmp = root.join(crate::store::TMP_DIR);
            if let Ok(entries) = fs::read_dir(&tmp) {
                for e in entries.flatten() {
                    let p = e.path();
                    if p.is_file() && p.extension().is_some_and(|x| x == "tmp") && old_enough(&p) {
                        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                        fs::remove_file(&p).map_err(|err| Error::io(p.display(), err))?;
                        report.removed_staging_files += 1;
                        report.freed_bytes += len;
                    }
                }
            }
        }
        Ok(report)
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
