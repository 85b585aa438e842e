//! The engine's implementations of the SDK artifact traits.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use milonga_sdk::{
    ArtifactReader, ArtifactStatus, ArtifactWriter, Error, FileEntry, FileWriter, ReadSeek, Result,
    SharedBytes,
};

use super::db::StepState;
use super::Inner;
use crate::store::{ObjectStore, ObjectWriter};

/// An engine error as an SDK error (formats only see SDK errors): database failures become I/O
/// errors naming the database; other engine errors are kept whole as [`Error::Backend`] (and
/// become themselves again when they reach the engine).
pub(crate) fn to_sdk(e: crate::Error) -> Error {
    match e {
        crate::Error::Format(e) => e,
        crate::Error::Io { path, source } => Error::Io {
            path: path.display().to_string(),
            source,
        },
        crate::Error::Database { path, source } => Error::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(source),
        },
        other => Error::backend(other),
    }
}

/// Checks an artifact file name: 1..=1024 bytes, relative, no `.`/`..` parts, no NUL or `\`.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 1024
        && !name.starts_with('/')
        && !name.contains('\0')
        && !name.contains('\\')
        && name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    if ok {
        Ok(())
    } else {
        Err(Error::unsupported(format!(
            "invalid artifact file name {name:?}: use 1..=1024 bytes of relative path without empty, '.' or '..' parts"
        )))
    }
}

/// Where a running step's format writes its files: each finished file is an object, recorded
/// at once as partial state of the step in the metadata database.
pub(crate) struct StepArtifactWriter {
    ws: Arc<Inner>,
    unique_id: String,
    scratch: PathBuf,
    durable: Vec<FileEntry>,
    state: Arc<Mutex<WriterState>>,
}

#[derive(Default)]
struct WriterState {
    names: HashSet<String>,
    finished: Vec<FileEntry>,
}

impl StepArtifactWriter {
    pub(crate) fn new(ws: Arc<Inner>, unique_id: &str, durable: Vec<FileEntry>) -> Result<Self> {
        let scratch = ws.work_dir(unique_id).join("artifact");
        let state = WriterState {
            names: durable.iter().map(|f| f.name.clone()).collect(),
            finished: Vec::new(),
        };
        Ok(StepArtifactWriter {
            ws,
            unique_id: unique_id.to_owned(),
            scratch,
            durable,
            state: Arc::new(Mutex::new(state)),
        })
    }

    /// Forgets the durable files of the earlier attempt (the step starts over).
    pub(crate) fn discard_durable(&mut self) -> crate::Result<()> {
        self.ws.db.clear_partial(&self.unique_id)?;
        let mut st = self.state.lock().expect("poisoned");
        for f in &self.durable {
            st.names.remove(&f.name);
        }
        self.durable.clear();
        Ok(())
    }

    /// All files of the artifact: the earlier attempt's, then this attempt's, in finish order.
    pub(crate) fn all_files(&self) -> Vec<FileEntry> {
        let st = self.state.lock().expect("poisoned");
        let mut v = self.durable.clone();
        v.extend(st.finished.iter().cloned());
        v
    }

    fn reserve(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let mut st = self.state.lock().expect("poisoned");
        if !st.names.insert(name.to_owned()) {
            return Err(Error::unsupported(format!(
                "artifact file {name:?} was already written"
            )));
        }
        Ok(())
    }

    fn record(
        state: &Mutex<WriterState>,
        ws: &Inner,
        unique_id: &str,
        entry: &FileEntry,
    ) -> Result<()> {
        ws.db.add_partial(unique_id, entry).map_err(to_sdk)?;
        state.lock().expect("poisoned").finished.push(entry.clone());
        Ok(())
    }

    /// Whether `path` is a regular file (not a link) inside the step's work directory, which
    /// the artifact may move.
    fn owns(&self, path: &Path) -> bool {
        let is_file = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
        let work = self.ws.work_dir(&self.unique_id).canonicalize();
        match (is_file, work, path.canonicalize()) {
            (true, Ok(work), Ok(p)) => p.starts_with(work),
            _ => false,
        }
    }

    /// Copies a file the artifact does not own into its scratch directory.
    fn copy_to_scratch(&self, path: &Path) -> Result<tempfile::NamedTempFile> {
        let dir = self.scratch_dir()?;
        let mut copy =
            tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::io(dir.display(), e))?;
        let mut src = fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
        io::copy(&mut src, copy.as_file_mut()).map_err(|e| Error::io(path.display(), e))?;
        Ok(copy)
    }

    fn release(state: &Mutex<WriterState>, name: &str) {
        if let Ok(mut st) = state.lock() {
            st.names.remove(name);
        }
    }
}

struct StepFileWriter {
    object: Option<Box<dyn ObjectWriter>>,
    name: String,
    ws: Arc<Inner>,
    unique_id: String,
    state: Arc<Mutex<WriterState>>,
}

impl Write for StepFileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.object.as_mut() {
            Some(o) => o.write(buf),
            None => Err(io::Error::other("file already finished")),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.object.as_mut() {
            Some(o) => o.write_all(buf),
            None => Err(io::Error::other("file already finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.object.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl FileWriter for StepFileWriter {
    fn finish(mut self: Box<Self>) -> Result<FileEntry> {
        let object = self
            .object
            .take()
            .ok_or_else(|| Error::unsupported("file already finished"))?;
        let name = std::mem::take(&mut self.name);
        let result = (|| {
            // From publishing the object until the database refers to it, hold off garbage
            // collection.
            let _gc = self.ws.gc_shared().map_err(to_sdk)?;
            let (id, len) = object.commit()?;
            let entry = FileEntry {
                name: name.clone(),
                len,
                id,
            };
            StepArtifactWriter::record(&self.state, &self.ws, &self.unique_id, &entry)?;
            Ok(entry)
        })();
        if result.is_err() {
            // Nothing was published under this name: a retry may write it.
            StepArtifactWriter::release(&self.state, &name);
        }
        result
    }
}

impl Drop for StepFileWriter {
    fn drop(&mut self) {
        if self.object.is_some() && !self.name.is_empty() {
            // Never finished: release the name so that a retry can write it.
            if let Ok(mut st) = self.state.lock() {
                st.names.remove(&self.name);
            }
        }
    }
}

/// The name under which a step's artifact is handed in memory from its writer to followers in
/// the same process (see [`ArtifactWriter::live_key`]).
fn live_key(ws: &Inner, unique_id: &str) -> String {
    format!("{}#{unique_id}", ws.dir.display())
}

impl ArtifactWriter for StepArtifactWriter {
    fn live_key(&self) -> Option<String> {
        Some(live_key(&self.ws, &self.unique_id))
    }

    fn create(&self, name: &str) -> Result<Box<dyn FileWriter>> {
        self.reserve(name)?;
        let object = self.ws.store.writer()?;
        Ok(Box::new(StepFileWriter {
            object: Some(object),
            name: name.to_owned(),
            ws: Arc::clone(&self.ws),
            unique_id: self.unique_id.clone(),
            state: Arc::clone(&self.state),
        }))
    }

    fn scratch_dir(&self) -> Result<PathBuf> {
        fs::create_dir_all(&self.scratch).map_err(|e| Error::io(self.scratch.display(), e))?;
        Ok(self.scratch.clone())
    }

    /// Files in the step's work directory (its scratch directory included) belong to the
    /// artifact and are moved; any other file (or a symbolic link) is copied and left where it
    /// is.
    fn ingest(&self, name: &str, path: &Path) -> Result<FileEntry> {
        self.reserve(name)?;
        let result = (|| {
            let copy = if self.owns(path) {
                None
            } else {
                Some(self.copy_to_scratch(path)?)
            };
            let source = copy.as_ref().map_or(path, |c| c.path());
            let _gc = self.ws.gc_shared().map_err(to_sdk)?;
            let (id, len) = self.ws.store.ingest(source)?;
            let entry = FileEntry {
                name: name.to_owned(),
                len,
                id,
            };
            Self::record(&self.state, &self.ws, &self.unique_id, &entry)?;
            Ok(entry)
        })();
        if result.is_err() {
            Self::release(&self.state, name);
        }
        result
    }

    fn durable_files(&self) -> Vec<FileEntry> {
        self.durable.clone()
    }

    fn durable_bytes(&self, name: &str) -> Result<SharedBytes> {
        let entry = self
            .all_files()
            .into_iter()
            .find(|f| f.name == name)
            .ok_or_else(|| Error::MissingFile {
                file: name.to_owned(),
            })?;
        self.ws.store.bytes(&entry.id, Some(entry.len))
    }
}

/// Reads files by name from a fixed list of entries (a manifest).
pub(crate) struct StoredArtifact {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) files: Vec<FileEntry>,
    pub(crate) describe: String,
    pub(crate) materialize_dir: PathBuf,
    /// Keeps a memory workspace's temporary folder alive while the artifact is read.
    pub(crate) _tmp: Option<Arc<tempfile::TempDir>>,
}

fn entry_in(files: &[FileEntry], name: &str, describe: &str) -> Result<FileEntry> {
    files
        .iter()
        .find(|f| f.name == name)
        .cloned()
        .ok_or_else(|| Error::MissingFile {
            file: format!("{name} in {describe}"),
        })
}

fn local_path_of(store: &dyn ObjectStore, e: &FileEntry, dir: &Path) -> Result<Option<PathBuf>> {
    let (id, len) = (&e.id, e.len);
    if let Some(p) = store.verified_path(id, len)? {
        return Ok(Some(p));
    }
    // Backends without local files: materialize the verified bytes once, through a private
    // temporary file, so that concurrent readers never see a partial file.
    let path = dir.join(id.to_hex());
    if !path.exists() {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        let bytes = store.bytes(id, Some(len))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir.display(), e))?;
        tmp.write_all((*bytes).as_ref())
            .map_err(|e| Error::io(tmp.path().display(), e))?;
        if let Err(e) = tmp.persist_noclobber(&path) {
            if e.error.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(Error::io(path.display(), e.error));
            }
        }
    }
    Ok(Some(path))
}

impl ArtifactReader for StoredArtifact {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn files(&self) -> Vec<FileEntry> {
        self.files.clone()
    }

    fn entry(&self, name: &str) -> Option<FileEntry> {
        self.files.iter().find(|f| f.name == name).cloned()
    }

    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>> {
        let e = entry_in(&self.files, name, &self.describe)?;
        self.store.open(&e.id, Some(e.len))
    }

    fn bytes(&self, name: &str) -> Result<SharedBytes> {
        let e = entry_in(&self.files, name, &self.describe)?;
        self.store.bytes(&e.id, Some(e.len))
    }

    fn read_range(&self, name: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let e = entry_in(&self.files, name, &self.describe)?;
        self.store.read_range(&e.id, e.len, range)
    }

    fn local_path(&self, name: &str) -> Result<Option<PathBuf>> {
        let e = entry_in(&self.files, name, &self.describe)?;
        local_path_of(self.store.as_ref(), &e, &self.materialize_dir)
    }
}

/// An artifact that may still be being written by a running step (in this process or another):
/// its files are the step's partial files until the step completes, then its manifest's.
///
/// The step's OS lock tells whether a writer is alive. A follower that has seen a live writer
/// reports the artifact failed as soon as the lock is free and the step is not completed (the
/// writer died). One that has not seen a writer yet waits for one until its start deadline,
/// then reports that no process is writing the step: it never waits forever.
pub(crate) struct FollowedArtifact {
    pub(crate) ws: Arc<Inner>,
    pub(crate) unique_id: String,
    pub(crate) poll: Duration,
    pub(crate) view: Mutex<(Vec<FileEntry>, ArtifactStatus)>,
    /// Until when to wait for a writer that has not started yet.
    start_deadline: Instant,
    /// Whether a live writer was seen (its lock held), and why there is no writer, if none is.
    liveness: Mutex<(bool, Option<String>)>,
}

impl FollowedArtifact {
    /// Follows the step's artifact, waiting up to `start_timeout` (none: not at all) for a
    /// writer to start.
    pub(crate) fn new(
        ws: Arc<Inner>,
        unique_id: &str,
        start_timeout: Option<Duration>,
    ) -> Result<Self> {
        let this = FollowedArtifact {
            poll: ws.db.follow_poll(),
            ws,
            unique_id: unique_id.to_owned(),
            view: Mutex::new((Vec::new(), ArtifactStatus::Writing)),
            start_deadline: Instant::now() + start_timeout.unwrap_or(Duration::ZERO),
            liveness: Mutex::new((false, None)),
        };
        this.refresh()?;
        Ok(this)
    }

    /// Why no process is writing the step, once the follower has given up waiting for one.
    pub(crate) fn no_writer(&self) -> Option<String> {
        self.liveness.lock().expect("poisoned").1.clone()
    }

    fn refresh(&self) -> Result<()> {
        let completed = |i: &Option<super::StepInfo>| {
            i.as_ref().is_some_and(|i| i.state == StepState::Completed)
        };
        let mut info = self.ws.db.get(&self.unique_id).map_err(to_sdk)?;
        let mut alive = self.ws.is_locked(&self.unique_id);
        if !alive && !completed(&info) {
            // The lock is free: either the writer died, or it finished between the two reads,
            // or none has started. Read the state again: a writer that finished has recorded it
            // by now.
            info = self.ws.db.get(&self.unique_id).map_err(to_sdk)?;
            alive = self.ws.is_locked(&self.unique_id);
        }
        let mut liveness = self.liveness.lock().expect("poisoned");
        liveness.0 |= alive;
        let seen_alive = liveness.0;
        let partial = || self.ws.db.partial_files(&self.unique_id).map_err(to_sdk);
        let (files, status) = match info {
            Some(i) if i.state == StepState::Completed => {
                let m = self.ws.load_manifest_of(&i).map_err(to_sdk)?;
                (m.files, ArtifactStatus::Complete)
            }
            // A live writer: it may not have recorded its attempt yet.
            _ if alive => (partial()?, ArtifactStatus::Writing),
            Some(i) if seen_alive && i.state == StepState::Failed => (
                partial()?,
                ArtifactStatus::Failed(i.error.unwrap_or_else(|| "the step failed".into())),
            ),
            _ if seen_alive => (
                partial()?,
                ArtifactStatus::Failed("the writing process died".into()),
            ),
            // No writer seen yet: wait for one until the deadline.
            _ if Instant::now() < self.start_deadline => (partial()?, ArtifactStatus::Writing),
            i => {
                let why = match i {
                    None => "the workspace has no record of it and its lock is free".to_owned(),
                    Some(i) => match (i.state, i.error) {
                        (StepState::Failed, Some(e)) => format!("its last attempt failed: {e}"),
                        (StepState::Running, _) => format!(
                            "it is recorded RUNNING, but the process running it ({}) died",
                            i.owner.as_deref().unwrap_or("unknown")
                        ),
                        (state, _) => format!("it is {state} and its lock is free"),
                    },
                };
                liveness.1 = Some(why.clone());
                (
                    partial()?,
                    ArtifactStatus::Failed(format!(
                        "no process is writing step {}: {why}",
                        self.unique_id
                    )),
                )
            }
        };
        drop(liveness);
        *self.view.lock().expect("poisoned") = (files, status);
        Ok(())
    }

    fn current(&self) -> Vec<FileEntry> {
        self.view.lock().expect("poisoned").0.clone()
    }
}

impl ArtifactReader for FollowedArtifact {
    fn live_key(&self) -> Option<String> {
        Some(live_key(&self.ws, &self.unique_id))
    }

    fn describe(&self) -> String {
        format!("artifact of step {} (followed)", self.unique_id)
    }

    fn files(&self) -> Vec<FileEntry> {
        self.current()
    }

    fn open(&self, name: &str) -> Result<Box<dyn ReadSeek>> {
        let e = entry_in(&self.current(), name, &self.describe())?;
        self.ws.store.open(&e.id, Some(e.len))
    }

    fn bytes(&self, name: &str) -> Result<SharedBytes> {
        let e = entry_in(&self.current(), name, &self.describe())?;
        self.ws.store.bytes(&e.id, Some(e.len))
    }

    fn read_range(&self, name: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let e = entry_in(&self.current(), name, &self.describe())?;
        self.ws.store.read_range(&e.id, e.len, range)
    }

    fn local_path(&self, name: &str) -> Result<Option<PathBuf>> {
        let e = entry_in(&self.current(), name, &self.describe())?;
        local_path_of(self.ws.store.as_ref(), &e, &self.ws.materialize_dir())
    }

    fn status(&self) -> ArtifactStatus {
        self.view.lock().expect("poisoned").1.clone()
    }

    fn wait_for_change(&self, known: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.refresh()?;
            {
                let v = self.view.lock().expect("poisoned");
                if v.0.len() > known || v.1 != ArtifactStatus::Writing {
                    return Ok(());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            std::thread::sleep(self.poll.min(deadline - now));
        }
    }
}
