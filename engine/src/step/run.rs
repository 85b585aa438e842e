//! Running a step and caching its result.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use milonga_sdk::{ArtifactWriter, Format};

use super::{id, Context, ResultOf, Step};
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::workspace::{now_millis, StepArtifactWriter, StepInfo, StepState, Workspace};

fn panic_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".into()
    }
}

fn owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{}@{host}", std::process::id())
}

/// Loads a completed step's result through its format, checking that the stored format is the
/// one the step uses now.
fn load<S: Step>(ws: &Workspace, info: &StepInfo, format: &S::Format) -> Result<Arc<ResultOf<S>>> {
    if info.format_id != format.id() || info.format_version > format.version() {
        return Err(Error::FormatMismatch {
            unique_id: info.unique_id.clone(),
            stored: format!("{} v{}", info.format_id, info.format_version),
            expected: format!("{} v{}", format.id(), format.version()),
        });
    }
    let artifact = ws.inner.stored_artifact(info)?;
    let size: u64 = artifact.files().iter().map(|f| f.len).sum();
    let value = Arc::new(format.read(artifact)?);
    let cached: Arc<dyn Any + Send + Sync> = value.clone();
    ws.inner
        .cache_lock()
        .insert(info.unique_id.clone(), cached, size);
    Ok(value)
}

fn cached<S: Step>(ws: &Workspace, unique_id: &str) -> Option<Arc<ResultOf<S>>> {
    let hit = ws.inner.cache_lock().get(unique_id)?;
    hit.downcast::<ResultOf<S>>().ok()
}

pub(crate) fn result<S: Step>(step: &S, ws: &Workspace) -> Result<Arc<ResultOf<S>>> {
    let (unique_id, deps) = id::unique_id(step)?;
    if let Some(v) = cached::<S>(ws, &unique_id) {
        return Ok(v);
    }
    let format = step.format();
    if let Some(info) = ws.inner.db.get(&unique_id)? {
        if info.state == StepState::Completed {
            return load::<S>(ws, &info, &format);
        }
    }

    ws.inner
        .check_writable(|| format!("running step {unique_id} (it has no result yet)"))?;
    // Single flight: one process runs the step, the others wait here and then read its result.
    let _lock = ws.inner.lock_step(&unique_id)?;
    if let Some(v) = cached::<S>(ws, &unique_id) {
        return Ok(v);
    }
    if let Some(info) = ws.inner.db.get(&unique_id)? {
        if info.state == StepState::Completed {
            return load::<S>(ws, &info, &format);
        }
    }

    let info = StepInfo {
        unique_id: unique_id.clone(),
        step_type: S::NAME.into(),
        version: S::VERSION.map(Into::into),
        state: StepState::Running,
        manifest_id: None,
        format_id: format.id().into(),
        format_version: format.version(),
        started_at: Some(now_millis()),
        ended_at: None,
        error: None,
        metadata: step.metadata(),
        attempts: 1,
        owner: Some(owner()),
        dependencies: deps,
    };
    ws.inner.db.mark_running(&info)?;

    match run_and_store(step, ws, &unique_id, &format) {
        Ok(()) => {}
        Err(e) => {
            let message = match &e {
                Error::StepFailed { message, .. } => message.clone(),
                other => other.to_string(),
            };
            record_failure(ws, &unique_id, &message)?;
            return Err(match e {
                e @ Error::StepFailed { .. } => e,
                other => Error::StepFailed {
                    unique_id,
                    message: other.to_string(),
                },
            });
        }
    }
    let info = ws.inner.db.get(&unique_id)?.ok_or_else(|| Error::State {
        unique_id: unique_id.clone(),
        reason: "the record vanished after completion".into(),
    })?;
    load::<S>(ws, &info, &format)
}

/// Records a failed attempt as FAILED. If the metadata database cannot record it (most likely a
/// full disk, which is often why the step failed), frees the step's work files and tries again;
/// if that fails too, the error is the step's own, with a note, not the database's.
fn record_failure(ws: &Workspace, unique_id: &str, message: &str) -> Result<()> {
    let Err(db_error) = ws.inner.db.mark_failed(unique_id, message) else {
        return Ok(());
    };
    let _ = std::fs::remove_dir_all(ws.inner.work_dir(unique_id));
    ws.inner
        .db
        .mark_failed(unique_id, message)
        .map_err(|_| Error::StepFailed {
            unique_id: unique_id.to_owned(),
            message: format!("{message} (recording the failure failed too: {db_error})"),
        })
}

fn run_and_store<S: Step>(
    step: &S,
    ws: &Workspace,
    unique_id: &str,
    format: &S::Format,
) -> Result<()> {
    let failed = |message: String| Error::StepFailed {
        unique_id: unique_id.to_owned(),
        message,
    };
    let durable = ws.inner.db.partial_files(unique_id)?;
    let mut writer = StepArtifactWriter::new(Arc::clone(&ws.inner), unique_id, durable)?;
    let durable_items = if writer.durable_files().is_empty() {
        0
    } else {
        match format.durable_items(&writer) {
            Ok(n) => n,
            Err(_) => {
                // Unusable leftovers of an earlier attempt: start over.
                writer.discard_durable()?;
                0
            }
        }
    };
    let mut ctx = Context {
        workspace: ws,
        unique_id,
        work_dir: ws.inner.work_dir(unique_id).join("run"),
        durable_items,
        resumed: false,
    };
    let output = match catch_unwind(AssertUnwindSafe(|| step.run(&mut ctx))) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(p) => return Err(failed(panic_text(p.as_ref()))),
    };
    // Keep an earlier attempt's files only for a format that resumes after them and a step
    // that asked to resume; otherwise they are discarded and the value is written whole.
    if (durable_items == 0 || !ctx.resumed) && !writer.durable_files().is_empty() {
        writer.discard_durable()?;
    }
    match catch_unwind(AssertUnwindSafe(|| format.write(output, &writer))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(p) => return Err(failed(panic_text(p.as_ref()))),
    }
    // Data first, then what points to it: every file is a durable object by now; the manifest
    // object next; only then the record says COMPLETED.
    let manifest = Manifest {
        format_id: format.id().into(),
        format_version: format.version(),
        files: writer.all_files(),
    };
    {
        let _gc = ws.inner.gc_shared()?;
        let manifest_id = ws.inner.write_manifest(&manifest)?;
        ws.inner.db.mark_completed(unique_id, &manifest_id)?;
    }
    // The work directory (scratch files, checkpoints) is not needed once the result is stored.
    let _ = std::fs::remove_dir_all(ws.inner.work_dir(unique_id));
    Ok(())
}

impl Workspace {
    /// Opens the result of `step` while it may still be running, in this process or another:
    /// for a format that can follow (a stream), the returned handle yields what is committed so
    /// far, then waits for more until the writer completes, and reports an error if the writer
    /// fails or dies. For a completed step this is the same as reading its result. It never runs
    /// the step.
    ///
    /// A follower never waits forever: it learns from the step's OS lock whether a writer is
    /// alive. If none is when `follow` is called (nobody runs the step, or its writer died),
    /// it fails with [`Error::NoWriter`]; to start following before the writer has started,
    /// use [`follow_timeout`](Workspace::follow_timeout). A writer that dies while followed
    /// ends the stream with an error, never a short stream.
    ///
    /// # Errors
    /// [`Error::NoWriter`]; as [`Step::unique_id`]; errors from the format's `read`.
    pub fn follow<S: Step>(&self, step: &S) -> Result<ResultOf<S>> {
        self.follow_timeout(step, None)
    }

    /// As [`follow`](Workspace::follow), waiting up to `start_timeout` for a writer to start
    /// if none is running yet (`None`: not at all). The wait happens lazily, in the reader:
    /// this call returns at once, and the reader reports an error naming the step if no writer
    /// has started by then.
    ///
    /// # Errors
    /// As [`follow`](Workspace::follow).
    pub fn follow_timeout<S: Step>(
        &self,
        step: &S,
        start_timeout: Option<std::time::Duration>,
    ) -> Result<ResultOf<S>> {
        let (unique_id, _) = id::unique_id(step)?;
        let followed = self.followed(&unique_id, start_timeout)?;
        if let Some(reason) = followed.no_writer() {
            return Err(Error::NoWriter { unique_id, reason });
        }
        Ok(step.format().read(Arc::new(followed))?)
    }

    /// Whether the workspace has a completed result for `step`, without loading it.
    ///
    /// # Errors
    /// As [`Step::unique_id`], or a database error.
    pub fn contains<S: Step>(&self, step: &S) -> Result<bool> {
        let (unique_id, _) = id::unique_id(step)?;
        Ok(matches!(
            self.inner.db.get(&unique_id)?,
            Some(StepInfo {
                state: StepState::Completed,
                ..
            })
        ))
    }
}
