//! The stateful stream target: streaming steps written through `StreamFormat` into a workspace
//! over a [`FaultyStore`], with I/O failures injected into any chunk, end record or manifest
//! write and producers that fail or panic mid-stream; then resumed, and checked against a model.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use milonga::store::MemoryStore;
use milonga::{BoxError, Context, Step, Stream, StreamFormat, Workspace};
use serde::Serialize;

use super::store::{Faults, FaultyStore};

/// The item number the last run of a [`FuzzStream`] resumed from.
static RESUMED_FROM: AtomicU64 = AtomicU64::new(0);

/// A streaming step over items fixed by the fuzzer; its run can fail or panic after an item.
#[derive(Serialize)]
struct FuzzStream {
    slot: u8,
    #[serde(serialize_with = "items_ser")]
    items: Arc<Vec<Vec<u8>>>,
    #[serde(skip)]
    chunk_size: usize,
    #[serde(skip)]
    crash: Option<Crash>,
}

fn items_ser<S: serde::Serializer>(items: &Arc<Vec<Vec<u8>>>, s: S) -> Result<S::Ok, S::Error> {
    items.as_slice().serialize(s)
}

#[derive(Debug, Clone, Copy, Arbitrary)]
struct Crash {
    /// After how many items of the stream (counted from its start).
    at: u8,
    /// Panic instead of yielding an error.
    panic: bool,
}

impl Step for FuzzStream {
    const NAME: &'static str = "fuzz::Stream";
    type Output = Stream<Vec<u8>>;
    type Format = StreamFormat<Vec<u8>>;

    fn format(&self) -> StreamFormat<Vec<u8>> {
        StreamFormat::new()
            .with_chunk_size(self.chunk_size)
            .with_block_size(8)
            .with_workers(1)
    }

    fn run(&self, ctx: &mut Context<'_>) -> Result<Stream<Vec<u8>>, BoxError> {
        let start = ctx.resume_from();
        RESUMED_FROM.store(start, Ordering::SeqCst);
        let items = Arc::clone(&self.items);
        let crash = self.crash;
        let n = items.len();
        let start = usize::try_from(start)?.min(n);
        Ok(Stream::try_new((start..=n).filter_map(move |i| {
            if crash.is_some_and(|c| usize::from(c.at) == i) {
                if crash.is_some_and(|c| c.panic) {
                    // Unwinds without the panic hook, which libFuzzer turns into an abort.
                    std::panic::resume_unwind(Box::new(format!(
                        "fuzz: the producer panics at item {i}"
                    )));
                }
                return Some(Err(format!("fuzz: the producer fails at item {i}")));
            }
            items.get(i).cloned().map(Ok)
        })))
    }
}

/// Where to inject an I/O failure: the store writer number `writer` (0 = the first file the
/// write creates: chunks in order, then the end record, then the manifest).
#[derive(Debug, Clone, Copy, Arbitrary)]
struct Fault {
    writer: u8,
    kind: FaultKind,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum FaultKind {
    WriteFailsAfter(u16),
    ShortWrites(u8),
    CommitFails,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Runs (or resumes) the stream of `slot`; its items are fixed by the first write to it.
    Write {
        slot: u8,
        items: Vec<Vec<u8>>,
        chunk: u8,
        fault: Option<Fault>,
        crash: Option<Crash>,
    },
    /// Reads a completed stream again.
    Read { slot: u8, index: u16 },
}

/// What the model knows about a stream step.
struct Slot {
    items: Arc<Vec<Vec<u8>>>,
    chunk_size: usize,
    completed: bool,
    /// Items the runs so far produced at most (durable items cannot be more).
    produced: u64,
}

/// Decodes a list of operations and runs them on a workspace over a [`FaultyStore`] of a
/// [`MemoryStore`], checking after each one that
/// - a run without a crash or fault completes, and its stream has exactly the step's items
///   (read in order, by index and by range);
/// - a run whose producer failed or panicked fails, and so may one with an injected fault;
///   a failed run leaves no result visible (`contains` is false), and the next run resumes
///   after at most the items produced before, and completes with exactly the step's items;
/// - a completed stream reads the same every time.
pub fn stream_store_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let ws = Workspace::with_store(store.clone()).expect("workspace");
    let mut model: BTreeMap<u8, Slot> = BTreeMap::new();
    let trace = std::env::var_os("MILONGA_FUZZ_TRACE").is_some();
    let mut steps = 0;
    while !u.is_empty() && steps < 24 {
        steps += 1;
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        if trace {
            eprintln!("op {steps}: {op:?}");
        }
        match op {
            Op::Write {
                slot,
                items,
                chunk,
                fault,
                crash,
            } => write(
                &ws,
                &store,
                &mut model,
                slot % 4,
                items,
                chunk,
                fault,
                crash,
            ),
            Op::Read { slot, index } => {
                if let Some(s) = model.get(&(slot % 4)) {
                    if s.completed {
                        check_stream(&ws, slot % 4, s, Some(index));
                    }
                }
            }
        }
    }
}

fn step_of(slot: u8, s: &Slot, crash: Option<Crash>) -> FuzzStream {
    FuzzStream {
        slot,
        items: Arc::clone(&s.items),
        chunk_size: s.chunk_size,
        crash,
    }
}

#[allow(clippy::too_many_arguments)]
fn write(
    ws: &Workspace,
    store: &FaultyStore<MemoryStore>,
    model: &mut BTreeMap<u8, Slot>,
    slot: u8,
    items: Vec<Vec<u8>>,
    chunk: u8,
    fault: Option<Fault>,
    crash: Option<Crash>,
) {
    let s = model.entry(slot).or_insert_with(|| Slot {
        items: Arc::new(items.into_iter().take(64).collect()),
        chunk_size: usize::from(chunk % 64) + 1,
        completed: false,
        produced: 0,
    });
    let n = s.items.len();
    // A crash anywhere from before the first item to after the last one.
    let crash = crash.map(|c| Crash {
        at: (usize::from(c.at) % (n + 1)) as u8,
        ..c
    });
    if let Some(f) = fault {
        store.inject(Faults {
            write_fails_after: match f.kind {
                FaultKind::WriteFailsAfter(b) => Some(usize::from(b)),
                _ => None,
            },
            short_writes: match f.kind {
                FaultKind::ShortWrites(b) => Some(usize::from(b)),
                _ => None,
            },
            commit_fails: matches!(f.kind, FaultKind::CommitFails),
            skip_writers: usize::from(f.writer % 8),
            ..Faults::default()
        });
    }
    let step = step_of(slot, s, crash);
    let was_completed = s.completed;
    RESUMED_FROM.store(u64::MAX, Ordering::SeqCst);
    let r = step.result(ws);
    let fault_hit = fault.is_some() && !store.pending();
    store.inject(Faults::default());
    let ran = RESUMED_FROM.load(Ordering::SeqCst);
    if std::env::var_os("MILONGA_FUZZ_TRACE").is_some() {
        let outcome = r.as_ref().map(|_| ()).map_err(ToString::to_string);
        eprintln!("  ran from item {ran} of {n}, fault hit: {fault_hit}, result: {outcome:?}");
    }
    if was_completed {
        assert_eq!(ran, u64::MAX, "a completed step ran again");
        r.expect("a completed stream reads");
        check_stream(ws, slot, s, None);
        return;
    }
    assert_ne!(ran, u64::MAX, "the step did not run: {:?}", r.err());
    assert!(
        ran <= s.produced,
        "resumed from item {ran}, but at most {} items were produced before",
        s.produced
    );
    // Whether the producer stops before its last item (counted from the stream's start).
    let crashes =
        crash.is_some_and(|c| usize::from(c.at) >= ran as usize && usize::from(c.at) <= n);
    s.produced = s.produced.max(match crash {
        Some(c) if crashes => u64::from(c.at),
        _ => n as u64,
    });
    match r {
        Ok(_) => {
            assert!(
                !crashes,
                "a run whose producer failed at {crash:?} succeeded"
            );
            s.completed = true;
            check_stream(ws, slot, s, None);
        }
        Err(e) => {
            assert!(
                crashes || fault_hit,
                "a run without a crash or a fault failed: {e}"
            );
            assert!(
                !ws.contains(&step).expect("contains"),
                "a failed run left a visible result"
            );
        }
    }
}

fn check_stream(ws: &Workspace, slot: u8, s: &Slot, index: Option<u16>) {
    let step = step_of(slot, s, None);
    assert!(
        ws.contains(&step).expect("contains"),
        "a completed stream is not visible"
    );
    let reader = step.result(ws).expect("a completed stream reads");
    let items: Vec<Vec<u8>> = reader
        .iter()
        .collect::<Result<_, _>>()
        .expect("a completed stream iterates");
    assert_eq!(items, *s.items, "the stream's items differ from the model");
    let n = s.items.len() as u64;
    assert_eq!(reader.len().expect("len"), n);
    if let Some(i) = index.map(u64::from).filter(|i| *i < n.max(1) * 2) {
        if i < n {
            assert_eq!(reader.get(i).expect("get"), s.items[i as usize]);
            let tail: Vec<Vec<u8>> = reader.range(i..n).collect::<Result<_, _>>().expect("range");
            assert_eq!(tail, s.items[i as usize..]);
        } else {
            assert!(reader.get(i).is_err(), "get past the end");
        }
    }
}
