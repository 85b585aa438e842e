//! Running a step and caching its result.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use milonga_sdk::{ArtifactWriter, Format, MemoryArtifact};

use super::scope::{self, Flight, Scope};
use super::{id, Context, Fresh, ResultOf, Step, StepRef};
use crate::error::{Error, Result, SharedError};
use crate::manifest::Manifest;
use crate::workspace::{
    now_millis, NewRecord, Provenance, StepArtifactWriter, StepInfo, StepState, Workspace,
};

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
    let p = Provenance::current();
    format!("{}@{}", p.pid, p.host)
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

/// The stored result of a completed step read as `S` with its default format (for results
/// fetched by unique id or by run, without the step's value).
pub(crate) fn load_stored<S: Step>(ws: &Workspace, info: &StepInfo) -> Result<Arc<ResultOf<S>>> {
    if let Some(v) = cached::<S>(ws, &info.unique_id) {
        return Ok(v);
    }
    if info.state == StepState::Completed {
        ws.inner.touch(info);
    }
    load::<S>(ws, info, &S::Format::default())
}

fn cached<S: Step>(ws: &Workspace, unique_id: &str) -> Option<Arc<ResultOf<S>>> {
    let hit = ws.inner.cache_lock().get(unique_id)?;
    hit.downcast::<ResultOf<S>>().ok()
}

pub(crate) fn result<S: Step>(step: &S, ws: &Workspace) -> Result<Arc<ResultOf<S>>> {
    let scope = Scope::current_or_new();
    let _entered = scope.enter();
    value(step, ws, &scope, None)
}

/// The result of `step` in the run of `scope`; `unique_id` when the caller knows it.
pub(crate) fn value<S: Step>(
    step: &S,
    ws: &Workspace,
    scope: &Arc<Scope>,
    unique_id: Option<String>,
) -> Result<Arc<ResultOf<S>>> {
    let (value, _) = resolve(step, ws, scope, unique_id, true)?;
    value.ok_or_else(|| Error::State {
        unique_id: String::new(),
        reason: "no value was read".into(),
    })
}

/// Computes and stores `step` if it is missing, without reading its result back.
pub(crate) fn ensure<S: Step>(
    step: &S,
    ws: &Workspace,
    scope: &Arc<Scope>,
    unique_id: Option<String>,
) -> Result<Fresh> {
    Ok(resolve(step, ws, scope, unique_id, false)?.1)
}

/// [`Context::input`]: the input's result, or a reader following it if the executor is
/// computing it right now and it can be followed.
pub(crate) fn input<S: Step>(
    input: &StepRef<S>,
    ws: &Workspace,
    scope: &Arc<Scope>,
    followed: &Mutex<Vec<(String, Arc<Flight>)>>,
) -> Result<Arc<ResultOf<S>>> {
    let _entered = scope.enter();
    let unique_id = input.unique_id()?;
    if input.step().followable() {
        if let Some(flight) = scope.flight(&unique_id) {
            let artifact = ws.follow_artifact(&unique_id)?;
            let reader = input.step().format().read(artifact)?;
            followed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((unique_id, flight));
            return Ok(Arc::new(reader));
        }
    }
    value(input.step(), ws, scope, Some(unique_id))
}

/// The step's result if it is in memory or stored (and `read`), or just whether it is.
fn stored<S: Step>(
    ws: &Workspace,
    unique_id: &str,
    format: &S::Format,
    read: bool,
) -> Result<Option<Option<Arc<ResultOf<S>>>>> {
    // Only a value may come from the memory cache: making sure the result is *stored* (the
    // executor's `ensure`) asks the database, because another process may have removed the
    // record (a garbage collection) since this process cached the value.
    if read {
        if let Some(v) = cached::<S>(ws, unique_id) {
            return Ok(Some(Some(v)));
        }
    }
    if let Some(info) = ws.inner.db.get(unique_id)? {
        if info.state == StepState::Completed {
            ws.inner.touch(&info);
            if !read {
                return Ok(Some(None));
            }
            return load::<S>(ws, &info, format).map(|v| Some(Some(v)));
        }
    }
    Ok(None)
}

/// The seed of a step's randomness: derived from its unique id.
fn seed_of(unique_id: &str) -> u64 {
    let h = blake3::hash(unique_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

fn resolve<S: Step>(
    step: &S,
    ws: &Workspace,
    scope: &Arc<Scope>,
    unique_id: Option<String>,
    read: bool,
) -> Result<(Option<Arc<ResultOf<S>>>, Fresh)> {
    let unique_id = match unique_id {
        Some(id) => id,
        None => id::unique_id(step)?.0,
    };
    if !S::CACHEABLE {
        let (v, fresh) = uncacheable(step, ws, scope, &unique_id)?;
        return Ok((Some(v), fresh));
    }
    let format = step.format();
    if !scope.wants_refresh(&unique_id) {
        if let Some(v) = stored::<S>(ws, &unique_id, &format, read)? {
            tracing::debug!(target: "milonga::step", step = %unique_id, "cache hit");
            return Ok((v, Fresh::Loaded));
        }
    }

    ws.inner
        .check_writable(|| format!("running step {unique_id} (it has no result yet)"))?;
    // Single flight: one process runs the step, the others wait here and then read its result.
    // While another process (or thread) holds the lock, it is writing the step: an executor
    // is told, so that consumers of a stream may follow that writer instead of waiting for it.
    let _lock = match ws.inner.try_lock_step(&unique_id)? {
        Some(lock) => lock,
        None => {
            scope.started(&unique_id);
            let lock = ws.inner.lock_step(&unique_id)?;
            if stored::<S>(ws, &unique_id, &format, false)?.is_none() {
                // The writer we may have been followed died (or failed) before completing: what
                // followers read came from it, so their results must not count, even though
                // the step is now computed again below.
                let why = ws
                    .inner
                    .db
                    .get(&unique_id)?
                    .and_then(|i| i.owner)
                    .map_or_else(
                        || "the process writing it stopped before completing".to_owned(),
                        |o| format!("the process writing it ({o}) stopped before completing"),
                    );
                scope.fail_flight(&unique_id, why);
            }
            lock
        }
    };
    let refreshing = scope.take_refresh(&unique_id);
    if refreshing {
        ws.inner.cache_lock().remove(&unique_id);
    } else if let Some(v) = stored::<S>(ws, &unique_id, &format, read)? {
        tracing::debug!(target: "milonga::step", step = %unique_id, "cache hit after waiting");
        return Ok((v, Fresh::Loaded));
    }

    let ident = id::identity(step)?;
    let deps = ident.step_refs.clone();
    let seed = seed_of(&unique_id);
    let mut metadata = step.metadata();
    if !S::DETERMINISTIC {
        if let Some(m) = metadata.as_object_mut() {
            m.insert("rng_seed".into(), seed.into());
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
        metadata,
        attempts: 1,
        owner: Some(owner()),
        dependencies: deps,
        preimage: Some(ident.args.clone()),
        nondeterministic: !S::DETERMINISTIC,
        provenance: None,
        reused_from: None,
        last_access: None,
        result_size: None,
    };
    let provenance_id = ws.inner.db.put_current_provenance()?;
    // Early cutoff: inputs by content. A deterministic step whose inputs are all stored gets a
    // content key; a completed step with the same key ran the same code on byte-identical
    // inputs, and its result stands for this one's (unless this step is being refreshed).
    let content_key = if S::DETERMINISTIC && !ident.step_refs.is_empty() {
        id::content_key(&ident.header, &ident.args, &mut |dep| {
            let d = ws.inner.db.get(dep).ok()??;
            (d.state == StepState::Completed)
                .then_some(d.manifest_id)?
                .map(|m| m.to_hex())
        })
    } else {
        None
    };
    let mut extra = NewRecord {
        provenance_id: Some(&provenance_id),
        content_key: content_key.as_deref(),
        reused: None,
    };
    if let (Some(key), false) = (&content_key, refreshing) {
        // Held from finding the earlier result until this record refers to its manifest, so
        // that a collection cannot remove it in between.
        let _gc = ws.inner.gc_shared()?;
        if let Some((earlier, manifest)) =
            ws.inner.db.completed_with_content_key(key, &unique_id)?
        {
            if ws.inner.load_manifest(&manifest).is_ok() {
                extra.reused = Some((&earlier, &manifest));
                ws.inner.db.clear_partial(&unique_id)?;
                ws.inner.db.mark_running(&info, &extra)?;
                tracing::info!(target: "milonga::step", step = %unique_id, reused = %earlier,
                    "early cutoff: inputs identical in content to an earlier step's, result reused");
                drop(_gc);
                if !read {
                    return Ok((None, Fresh::Loaded));
                }
                let info = ws.inner.db.get(&unique_id)?.ok_or_else(|| Error::State {
                    unique_id: unique_id.clone(),
                    reason: "the record vanished after completion".into(),
                })?;
                return Ok((Some(load::<S>(ws, &info, &format)?), Fresh::Loaded));
            }
        }
    }
    ws.inner.db.mark_running(&info, &extra)?;
    scope.started(&unique_id);
    tracing::info!(target: "milonga::step", step = %unique_id, "step started");
    let started = std::time::Instant::now();

    if let Err(e) = run_and_store(step, ws, scope, &unique_id, &format, seed) {
        let message = match &e {
            Error::StepFailed { message, .. } => message.clone(),
            other => other.to_string(),
        };
        tracing::warn!(target: "milonga::step", step = %unique_id, error = %message, "step failed");
        record_failure(ws, &unique_id, &message)?;
        return Err(match e {
            e @ Error::StepFailed { .. } => e,
            other => Error::step_failed_by(unique_id, Arc::new(other)),
        });
    }
    tracing::info!(
        target: "milonga::step",
        step = %unique_id,
        seconds = started.elapsed().as_secs_f64(),
        "step finished"
    );
    if !read {
        return Ok((None, Fresh::Computed));
    }
    let info = ws.inner.db.get(&unique_id)?.ok_or_else(|| Error::State {
        unique_id: unique_id.clone(),
        reason: "the record vanished after completion".into(),
    })?;
    Ok((Some(load::<S>(ws, &info, &format)?), Fresh::Computed))
}

/// An uncacheable step: computed at most once per run, in memory, never stored.
fn uncacheable<S: Step>(
    step: &S,
    ws: &Workspace,
    scope: &Arc<Scope>,
    unique_id: &str,
) -> Result<(Arc<ResultOf<S>>, Fresh)> {
    let slot = scope.memo(unique_id);
    let mut ran = false;
    let memo = slot.get_or_init(|| {
        ran = true;
        let started = std::time::Instant::now();
        tracing::info!(target: "milonga::step", step = %unique_id, "step started (in memory)");
        let memo = compute_in_memory(step, ws, scope, unique_id)
            .map(|v| (v as Arc<dyn Any + Send + Sync>, started.elapsed()))
            .map_err(|e| match e {
                Error::StepFailed {
                    message, source, ..
                } => (message, source),
                other => (other.to_string(), Some(Arc::new(other) as SharedError)),
            });
        match &memo {
            Ok((_, took)) => tracing::info!(
                target: "milonga::step",
                step = %unique_id,
                seconds = took.as_secs_f64(),
                "step finished (in memory)"
            ),
            Err((error, _)) => {
                tracing::warn!(target: "milonga::step", step = %unique_id, %error, "step failed")
            }
        }
        memo
    });
    let fresh = if ran { Fresh::Computed } else { Fresh::Loaded };
    match memo {
        Ok((v, _)) => {
            let v = Arc::clone(v)
                .downcast::<ResultOf<S>>()
                .map_err(|_| Error::State {
                    unique_id: unique_id.to_owned(),
                    reason: "two different steps have this id".into(),
                })?;
            Ok((v, fresh))
        }
        Err((message, source)) => Err(Error::StepFailed {
            unique_id: unique_id.to_owned(),
            message: message.clone(),
            source: source.clone(),
        }),
    }
}

fn compute_in_memory<S: Step>(
    step: &S,
    ws: &Workspace,
    scope: &Arc<Scope>,
    unique_id: &str,
) -> Result<Arc<ResultOf<S>>> {
    let failed = |message: String| Error::step_failed(unique_id, message);
    let failed_by = |source: SharedError| Error::step_failed_by(unique_id, source);
    let work_dir = std::env::temp_dir().join(format!(
        "milonga-uncacheable-{}-{}",
        std::process::id(),
        bs58::encode(&scope::fresh_nonce()[..12]).into_string()
    ));
    let mut ctx = Context::new(
        ws,
        unique_id,
        work_dir.clone(),
        0,
        scope,
        seed_of(unique_id),
    );
    scope.add_progress(unique_id, ctx.progress.clone());
    let output = catch_unwind(AssertUnwindSafe(|| step.run(&mut ctx)));
    scope.remove_progress(unique_id);
    let _ = std::fs::remove_dir_all(&work_dir);
    let output = match output {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(failed_by(e.into())),
        Err(p) => return Err(failed(panic_text(p.as_ref()))),
    };
    wait_for_followed(&ctx, unique_id)?;
    let boxed: Box<dyn Any> = Box::new(output);
    match boxed.downcast::<ResultOf<S>>() {
        Ok(v) => Ok(Arc::new(*v)),
        Err(boxed) => {
            // Another format than `Unstored`: through the format, in memory.
            let output = *boxed
                .downcast::<S::Output>()
                .map_err(|_| failed("the output has an unexpected type".into()))?;
            let format = step.format();
            let artifact = MemoryArtifact::new();
            match catch_unwind(AssertUnwindSafe(|| format.write(output, &artifact))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(failed_by(Arc::new(e))),
                Err(p) => return Err(failed(panic_text(p.as_ref()))),
            }
            Ok(Arc::new(format.read(artifact.handle())?))
        }
    }
}

/// Waits until every input the step followed while it was written has completed; an error if
/// one failed.
fn wait_for_followed(ctx: &Context<'_>, unique_id: &str) -> Result<()> {
    let followed = std::mem::take(&mut *ctx.followed.lock().unwrap_or_else(|p| p.into_inner()));
    for (input, flight) in followed {
        if let Err(e) = flight.wait() {
            return Err(Error::step_failed(
                unique_id,
                format!("input {input} failed: {e}"),
            ));
        }
    }
    Ok(())
}

/// Records a failed attempt as FAILED. If the metadata database cannot record it (most likely a
/// full disk, which is often why the step failed), frees the step's work files and tries again;
/// if that fails too, the error is the step's own, with a note, not the database's.
fn record_failure(ws: &Workspace, unique_id: &str, message: &str) -> Result<()> {
    let Err(db_error) = ws.inner.db.mark_failed(unique_id, message) else {
        return Ok(());
    };
    let _ = std::fs::remove_dir_all(ws.inner.work_dir(unique_id));
    ws.inner.db.mark_failed(unique_id, message).map_err(|_| {
        Error::step_failed(
            unique_id,
            format!("{message} (recording the failure failed too: {db_error})"),
        )
    })
}

fn run_and_store<S: Step>(
    step: &S,
    ws: &Workspace,
    scope: &Arc<Scope>,
    unique_id: &str,
    format: &S::Format,
    seed: u64,
) -> Result<()> {
    let failed = |message: String| Error::step_failed(unique_id, message);
    let failed_by = |source: SharedError| Error::step_failed_by(unique_id, source);
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
    let mut ctx = Context::new(
        ws,
        unique_id,
        ws.inner.work_dir(unique_id).join("run"),
        durable_items,
        scope,
        seed,
    );
    scope.add_progress(unique_id, ctx.progress.clone());
    let _progress = RemoveProgress(scope, unique_id);
    let output = match catch_unwind(AssertUnwindSafe(|| step.run(&mut ctx))) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(failed_by(e.into())),
        Err(p) => return Err(failed(panic_text(p.as_ref()))),
    };
    // Keep an earlier attempt's files only for a format that resumes after them and a step
    // that asked to resume; otherwise they are discarded and the value is written whole.
    if (durable_items == 0 || !ctx.resumed) && !writer.durable_files().is_empty() {
        writer.discard_durable()?;
    }
    match catch_unwind(AssertUnwindSafe(|| format.write(output, &writer))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(failed_by(Arc::new(e))),
        Err(p) => return Err(failed(panic_text(p.as_ref()))),
    }
    // A result made from an input that was still being written counts only if that input
    // completed.
    wait_for_followed(&ctx, unique_id)?;
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
        ws.inner
            .db
            .mark_completed(unique_id, &manifest_id, manifest.total_len())?;
    }
    // The work directory (scratch files, checkpoints) is not needed once the result is stored.
    let _ = std::fs::remove_dir_all(ws.inner.work_dir(unique_id));
    Ok(())
}

/// Forgets a running step's progress handle when dropped.
struct RemoveProgress<'a>(&'a Scope, &'a str);

impl Drop for RemoveProgress<'_> {
    fn drop(&mut self) {
        self.0.remove_progress(self.1);
    }
}

impl<'a> Context<'a> {
    fn new(
        workspace: &'a Workspace,
        unique_id: &'a str,
        work_dir: std::path::PathBuf,
        durable_items: u64,
        scope: &Arc<Scope>,
        seed: u64,
    ) -> Self {
        Context {
            workspace,
            unique_id,
            work_dir,
            durable_items,
            resumed: false,
            scope: Arc::clone(scope),
            followed: Mutex::new(Vec::new()),
            progress: super::Progress::new(),
            seed,
        }
    }
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
