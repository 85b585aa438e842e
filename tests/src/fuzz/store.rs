//! The stateful store target: random operations on a [`LocalStore`] behind a fault-injecting
//! [`FaultyStore`], checked against an in-memory model.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arbitrary::{Arbitrary, Unstructured};
use milonga::sdk::{ContentId, Error, ReadSeek, Result, SharedBytes};
use milonga::store::{LocalStore, ObjectStore, ObjectWriter};

/// Failures to inject into the next operations of a [`FaultyStore`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    /// The next writer's `write` fails once this many bytes went through.
    pub write_fails_after: Option<usize>,
    /// The next writer accepts at most this many bytes per `write` call (short writes).
    pub short_writes: Option<usize>,
    /// The next writer's `commit` fails before publishing.
    pub commit_fails: bool,
    /// The next `ingest` fails before doing anything.
    pub ingest_fails: bool,
    /// The faults are for a later writer: this many writers are created without faults first
    /// (`ingest` ignores this field).
    pub skip_writers: usize,
}

/// An [`ObjectStore`] that forwards to `inner` but fails the operations [`Faults`] names, the
/// way a full disk or a dying device would: a failed write or commit never reaches the inner
/// store's publish step.
pub struct FaultyStore<S> {
    inner: S,
    faults: Mutex<Faults>,
}

impl<S: ObjectStore> FaultyStore<S> {
    /// Wraps `inner` with no faults planned.
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            faults: Mutex::new(Faults::default()),
        }
    }

    /// Plans the faults of the next operation.
    pub fn inject(&self, faults: Faults) {
        *self.faults.lock().expect("poisoned") = faults;
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Whether planned faults are still waiting for their operation.
    pub fn pending(&self) -> bool {
        let f = self.faults.lock().expect("poisoned");
        f.write_fails_after.is_some()
            || f.short_writes.is_some()
            || f.commit_fails
            || f.ingest_fails
    }

    fn take(&self) -> Faults {
        std::mem::take(&mut *self.faults.lock().expect("poisoned"))
    }

    /// The faults for a new writer: none while writers are still to be skipped.
    fn take_for_writer(&self) -> Faults {
        let mut f = self.faults.lock().expect("poisoned");
        if f.skip_writers > 0 {
            f.skip_writers -= 1;
            return Faults::default();
        }
        std::mem::take(&mut *f)
    }
}

struct FaultyWriter {
    inner: Box<dyn ObjectWriter>,
    written: usize,
    faults: Faults,
}

impl Write for FaultyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut n = buf.len();
        if let Some(max) = self.faults.short_writes {
            n = n.min(max.max(1));
        }
        if let Some(limit) = self.faults.write_fails_after {
            if self.written + n > limit {
                return Err(io::Error::other("injected: no space left on device"));
            }
        }
        let n = self.inner.write(&buf[..n])?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl ObjectWriter for FaultyWriter {
    fn commit(self: Box<Self>) -> Result<(ContentId, u64)> {
        if self.faults.commit_fails {
            // The inner writer is dropped uncommitted: it must discard its staged bytes.
            return Err(Error::io(
                "injected commit",
                io::Error::other("injected: fsync failed"),
            ));
        }
        self.inner.commit()
    }
}

impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    fn describe(&self, id: &ContentId) -> String {
        self.inner.describe(id)
    }
    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(FaultyWriter {
            inner: self.inner.writer()?,
            written: 0,
            faults: self.take_for_writer(),
        }))
    }
    fn ingest(&self, path: &Path) -> Result<(ContentId, u64)> {
        if self.take().ingest_fails {
            return Err(Error::io(
                path.display(),
                io::Error::other("injected: ingest failed"),
            ));
        }
        self.inner.ingest(path)
    }
    fn contains(&self, id: &ContentId) -> bool {
        self.inner.contains(id)
    }
    fn open(&self, id: &ContentId, len: Option<u64>) -> Result<Box<dyn ReadSeek>> {
        self.inner.open(id, len)
    }
    fn bytes(&self, id: &ContentId, len: Option<u64>) -> Result<SharedBytes> {
        self.inner.bytes(id, len)
    }
    fn read_range(&self, id: &ContentId, len: u64, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        self.inner.read_range(id, len, range)
    }
    fn verify_object(&self, id: &ContentId, len: Option<u64>) -> Result<u64> {
        self.inner.verify_object(id, len)
    }
    fn quarantine(&self, id: &ContentId) -> Result<Option<String>> {
        self.inner.quarantine(id)
    }
    fn local_path(&self, id: &ContentId) -> Result<Option<PathBuf>> {
        self.inner.local_path(id)
    }
    fn list(&self) -> Result<Vec<ContentId>> {
        self.inner.list()
    }
    fn remove(&self, id: &ContentId) -> Result<()> {
        self.inner.remove(id)
    }
}

/// One operation of the stateful target.
#[derive(Debug, Arbitrary)]
enum Op {
    /// Writes an object in chunks of `chunk` bytes, with faults.
    Put {
        data: Vec<u8>,
        chunk: u8,
        fail_after: Option<u16>,
        short: Option<u8>,
        commit_fails: bool,
    },
    /// Writes the content of a stored object again (which must succeed and change nothing).
    Overwrite { pick: u8 },
    /// Publishes a local file.
    Ingest { data: Vec<u8>, fails: bool },
    /// Reads a stored object both ways.
    Get { pick: u8 },
    /// Changes a stored object's file behind the store's back.
    Corrupt { pick: u8, at: u16, how: Corruption },
    /// Removes a stored object.
    Remove { pick: u8 },
    /// Reads an object that was never stored.
    GetMissing { seed: u8 },
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Corruption {
    FlipBit(u8),
    Truncate,
    Append(u8),
}

/// The model: what every committed object holds, and which ones were corrupted.
#[derive(Default)]
struct Model {
    objects: BTreeMap<ContentId, Vec<u8>>,
    corrupt: BTreeSet<ContentId>,
}

impl Model {
    fn pick(&self, pick: u8) -> Option<ContentId> {
        let n = self.objects.len();
        (n > 0).then(|| {
            *self
                .objects
                .keys()
                .nth(usize::from(pick) % n)
                .expect("in range")
        })
    }
}

/// The stateful target: decodes a list of operations from `data` and runs them on a fresh
/// [`LocalStore`] (fsync off) behind a [`FaultyStore`], checking after each one that
/// - every committed object is listed, reads back equal through `bytes` and `open`, unless it
///   was corrupted, in which case both report [`Error::ChecksumMismatch`];
/// - a failed write, commit or ingest leaves nothing new visible and no staging file behind;
/// - writing existing content again succeeds with the same id.
pub fn store_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FaultyStore::new(
        LocalStore::open(&dir.path().join("store"))
            .expect("open store")
            .without_sync(),
    );
    let mut model = Model::default();
    let mut steps = 0;
    // MILONGA_FUZZ_TRACE=1 prints the operations, to read a crashing input.
    let trace = std::env::var_os("MILONGA_FUZZ_TRACE").is_some();
    while !u.is_empty() && steps < 64 {
        steps += 1;
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        if trace {
            eprintln!("op {steps}: {op:?}");
        }
        apply(&store, &mut model, dir.path(), op);
        check_model(&store, &model);
    }
}

fn put(store: &FaultyStore<LocalStore>, data: &[u8], chunk: usize) -> Result<(ContentId, u64)> {
    let mut w = store.writer()?;
    for piece in data.chunks(chunk.max(1)) {
        w.write_all(piece).map_err(|e| Error::io("fuzz put", e))?;
    }
    w.commit()
}

fn apply(store: &FaultyStore<LocalStore>, model: &mut Model, dir: &Path, op: Op) {
    match op {
        Op::Put {
            data,
            chunk,
            fail_after,
            short,
            commit_fails,
        } => {
            let faults = Faults {
                write_fails_after: fail_after.map(usize::from),
                short_writes: short.map(usize::from),
                commit_fails,
                ..Faults::default()
            };
            store.inject(faults);
            let id = ContentId::of(&data);
            let should_fail =
                commit_fails || fail_after.is_some_and(|limit| data.len() > usize::from(limit));
            let existed = model.objects.contains_key(&id);
            match put(store, &data, usize::from(chunk)) {
                Ok((got, len)) => {
                    assert!(
                        !should_fail,
                        "a put with injected faults {faults:?} succeeded"
                    );
                    assert_eq!((got, len), (id, data.len() as u64));
                    model.objects.insert(id, data);
                    // Publishing over a damaged copy replaces it.
                    model.corrupt.remove(&id);
                }
                Err(e) => {
                    assert!(should_fail, "a put without injected faults failed: {e}");
                    assert_eq!(
                        store.contains(&id),
                        existed,
                        "a failed put changed visibility"
                    );
                }
            }
        }
        Op::Overwrite { pick } => {
            if let Some(id) = model.pick(pick) {
                let data = model.objects[&id].clone();
                let (got, len) = put(store, &data, 4096).expect("writing existing content");
                assert_eq!((got, len), (id, data.len() as u64));
                // Writing the content again never trusts the existing file: a corrupted copy is
                // quarantined and replaced, so the object heals.
                model.corrupt.remove(&id);
                check_object(store, model, &id);
            }
        }
        Op::Ingest { data, fails } => {
            let path = dir.join("ingest.tmp");
            std::fs::write(&path, &data).expect("write local file");
            let id = ContentId::of(&data);
            let existed = model.objects.contains_key(&id);
            store.inject(Faults {
                ingest_fails: fails,
                ..Faults::default()
            });
            match store.ingest(&path) {
                Ok((got, len)) => {
                    assert!(!fails, "an ingest with an injected fault succeeded");
                    assert_eq!((got, len), (id, data.len() as u64));
                    model.objects.insert(id, data);
                    model.corrupt.remove(&id);
                }
                Err(e) => {
                    assert!(fails, "an ingest without injected faults failed: {e}");
                    assert_eq!(
                        store.contains(&id),
                        existed,
                        "a failed ingest changed visibility"
                    );
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        Op::Get { pick } => {
            if let Some(id) = model.pick(pick) {
                check_object(store, model, &id);
            }
        }
        Op::Corrupt { pick, at, how } => {
            if let Some(id) = model.pick(pick) {
                let path = store.inner().object_path(&id);
                let mut bytes = std::fs::read(&path).expect("read object file");
                match how {
                    Corruption::FlipBit(bit) if !bytes.is_empty() => {
                        let at = usize::from(at) % bytes.len();
                        bytes[at] ^= 1 << (bit % 8);
                    }
                    Corruption::Truncate if !bytes.is_empty() => {
                        bytes.truncate(usize::from(at) % bytes.len());
                    }
                    _ => bytes.push(match how {
                        Corruption::Append(b) => b,
                        _ => 0,
                    }),
                }
                let mut perms = std::fs::metadata(&path).expect("stat").permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perms.set_readonly(false);
                std::fs::set_permissions(&path, perms).expect("chmod");
                std::fs::write(&path, &bytes).expect("corrupt object file");
                // A second corruption can restore the content (append a byte, then cut it).
                if bytes == model.objects[&id] {
                    model.corrupt.remove(&id);
                } else {
                    model.corrupt.insert(id);
                }
            }
        }
        Op::Remove { pick } => {
            if let Some(id) = model.pick(pick) {
                store.remove(&id).expect("remove");
                model.objects.remove(&id);
                model.corrupt.remove(&id);
                assert!(!store.contains(&id));
                store
                    .remove(&id)
                    .expect("removing a missing object is success");
            }
        }
        Op::GetMissing { seed } => {
            let id = ContentId::of(&[seed, 0xA5, 0x5A, 0xFF, 0x00, 0x17]);
            if !model.objects.contains_key(&id) {
                assert!(matches!(
                    store.bytes(&id, None),
                    Err(Error::MissingObject { .. })
                ));
                assert!(matches!(
                    store.open(&id, None),
                    Err(Error::MissingObject { .. })
                ));
            }
        }
    }
}

fn check_object(store: &FaultyStore<LocalStore>, model: &mut Model, id: &ContentId) {
    let expected = model.objects[id].clone();
    let mut streamed = Vec::new();
    let read = store.open(id, None).and_then(|mut r| {
        r.read_to_end(&mut streamed)
            .map_err(|e| Error::io("fuzz read", e))
    });
    let len = expected.len() as u64;
    let range = store.read_range(id, len, len / 3..(len / 2 + 1).min(len));
    let bytes = store.bytes(id, None);
    if model.corrupt.contains(id) {
        assert!(
            matches!(read, Err(Error::ChecksumMismatch { .. })),
            "reading a corrupted object to the end gave {read:?}"
        );
        // The range read (a wrong length is refused before reading; damaged content found
        // through the outboard is quarantined) or the whole read (which hashes everything)
        // finds the damage, and the object is moved aside.
        match &range {
            // The damage may lie outside the groups the range covers: then the range is right.
            Ok(r) => {
                let (s, e) = ((len / 3) as usize, (len / 2 + 1).min(len) as usize);
                assert_eq!(r[..], expected[s..e], "a range read gave wrong bytes");
            }
            Err(e) => assert!(
                matches!(e, Error::ChecksumMismatch { .. } | Error::Corrupt { .. }),
                "a range read of a corrupted object gave {e:?}"
            ),
        }
        assert!(
            matches!(
                bytes,
                Err(Error::ChecksumMismatch { .. } | Error::MissingObject { .. })
            ),
            "bytes() of a corrupted object gave {:?}",
            bytes.map(|b| (*b).as_ref().len())
        );
        if let Err(Error::ChecksumMismatch { file, .. }) = &bytes {
            assert!(file.contains("quarantine"), "{file}");
        }
        assert!(
            !store.contains(id),
            "a damaged object stays after a read found it"
        );
        model.objects.remove(id);
        model.corrupt.remove(id);
    } else {
        let range = range.expect("a range of a committed object");
        let (s, e) = ((len / 3) as usize, (len / 2 + 1).min(len) as usize);
        assert_eq!(range, expected[s..e]);
        let bytes = bytes.expect("bytes() of a committed object");
        assert_eq!((*bytes).as_ref(), expected.as_slice());
        read.expect("reading a committed object");
        assert_eq!(streamed, expected);
    }
}

fn check_model(store: &FaultyStore<LocalStore>, model: &Model) {
    let listed: Vec<ContentId> = store.list().expect("list");
    let expected: Vec<ContentId> = model.objects.keys().copied().collect();
    assert_eq!(listed, expected, "listed objects differ from the model");
    for id in model.objects.keys() {
        assert!(store.contains(id));
    }
    let staging = store.inner().root().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .expect("read staging dir")
        .collect();
    assert!(left.is_empty(), "staging files left behind: {left:?}");
}
