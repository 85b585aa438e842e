//! The crash kit: a resumable format survives a crash at every point of a write.

use std::cell::Cell;
use std::fmt::{self, Debug};

use proptest::strategy::Strategy;

use super::mutate::Rng;
use super::report::{
    default_cases, fail, no_panic, run_cases, short_debug, CaseFailure, Check, Failure,
};
use crate::error::Result;
use crate::format::Format;
use crate::memory::MemoryArtifact;

/// How [`ResumeCheck`] makes a write stop: what the item iterator does after the items it
/// was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Crash {
    /// It yields an `Err(`[`Interrupted`]`)` item (the producer failed).
    Error,
    /// It unwinds (with [`std::panic::resume_unwind`], so no panic message is printed) with an
    /// [`Interrupted`] payload: the producer panicked, or the process died mid-write.
    Panic,
}

/// The error item (and panic payload) with which [`Interruptible`] stops a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("write interrupted by the crash kit")
    }
}

impl std::error::Error for Interrupted {}

/// The items [`ResumeCheck`] hands to a format's `make` closure: the given items as `Ok`, then,
/// for an interrupted write, a [`Crash`]. `Send + 'static` when the items are, so it fits any
/// lazy input type (for a stream format: `Stream::try_new(items)`).
#[derive(Debug)]
pub struct Interruptible<I> {
    items: std::vec::IntoIter<I>,
    crash: Option<Crash>,
}

impl<I> Interruptible<I> {
    /// `items`, then `crash` (if any).
    pub fn new(items: Vec<I>, crash: Option<Crash>) -> Self {
        Interruptible {
            items: items.into_iter(),
            crash,
        }
    }
}

impl<I> Iterator for Interruptible<I> {
    type Item = std::result::Result<I, Interrupted>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(item) = self.items.next() {
            return Some(Ok(item));
        }
        match self.crash.take()? {
            Crash::Error => Some(Err(Interrupted)),
            Crash::Panic => std::panic::resume_unwind(Box::new(Interrupted)),
        }
    }
}

type Make<'a, I, T> = Box<dyn Fn(Interruptible<I>) -> T + 'a>;
type Collect<'a, O, I> = Box<dyn Fn(O) -> Result<Vec<I>> + 'a>;

/// Checks that a resumable [`Format`] (one that keeps the files an interrupted write finished
/// and reports them with [`Format::durable_items`], like every format built on the chunked
/// record file) survives a crash at every point of a write.
///
/// For each generated list of items (`n` of them) it first writes them uninterrupted into a
/// [`MemoryArtifact`] and reads them back. Then, for every `j` in `0..=n` (a sample of
/// [`points`](Self::points) of them for long lists, always with `0` and `n`) and every
/// [`Crash`] kind, it:
///
/// 1. writes the first `j` items followed by the crash (so every chunk boundary is hit: the
///    interruption comes right after each chunk is sealed, and everywhere in between), and
///    expects the write to fail or unwind;
/// 2. keeps the artifact's finished files (a [`MemoryArtifact`] keeps exactly those; an
///    unfinished file writer is dropped, as a dead process loses it) and, unless
///    [`partial_must_fail(false)`](Self::partial_must_fail), checks that reading them does not
///    give a complete value: an interrupted write is never a shorter result;
/// 3. asks `durable_items` how many items survived (`d`): it must not fail, must be at most
///    `j`, and must not shrink as `j` grows;
/// 4. resumes as the engine does: writes items `d..n` into the same artifact (into a fresh one
///    when `d` is 0), reads the result and compares it with all `n` items;
/// 5. if the format is [`deterministic`](Self::deterministic) (the default), compares the
///    files, by name, with those of the uninterrupted write: same names, same bytes.
///
/// Over all the cases, at least one interruption must have left durable items (`d > 0`), or the
/// format is not resumable at all; turn that off with
/// [`require_durable(false)`](Self::require_durable), or generate lists long enough to fill a
/// chunk. Failures are [`Check::Resume`] (or [`Check::Write`] / [`Check::RoundTrip`] for the
/// uninterrupted write).
///
/// ```ignore
/// use milonga_formats::{Stream, StreamFormat};
/// use milonga_sdk::testing::ResumeCheck;
///
/// let format = StreamFormat::<u32>::new().with_chunk_size(16);
/// ResumeCheck::new(
///     &format,
///     proptest::collection::vec(any::<u32>(), 0..40),
///     Stream::try_new,
///     |reader| reader.iter().collect(),
/// )
/// .with_cases(16)
/// .assert();
/// ```
pub struct ResumeCheck<'a, I, T, F: Format<T>, S> {
    format: &'a F,
    strategy: S,
    make: Make<'a, I, T>,
    collect: Collect<'a, F::Output, I>,
    cases: u32,
    crashes: Vec<Crash>,
    points: usize,
    deterministic: bool,
    require_durable: bool,
    partial_must_fail: bool,
}

impl<'a, I, T, F, S> ResumeCheck<'a, I, T, F, S>
where
    F: Format<T>,
    S: Strategy<Value = Vec<I>>,
    I: Clone + PartialEq + Debug,
{
    /// A check of `format` with lists of items from `strategy`: `make` turns the items the kit
    /// hands out into the format's input, `collect` turns what `read` returns into the items
    /// (an error from any item is an error of the whole read).
    pub fn new(
        format: &'a F,
        strategy: S,
        make: impl Fn(Interruptible<I>) -> T + 'a,
        collect: impl Fn(F::Output) -> Result<Vec<I>> + 'a,
    ) -> Self {
        ResumeCheck {
            format,
            strategy,
            make: Box::new(make),
            collect: Box::new(collect),
            cases: default_cases(),
            crashes: vec![Crash::Error, Crash::Panic],
            points: 64,
            deterministic: true,
            require_durable: true,
            partial_must_fail: true,
        }
    }

    /// How many generated lists to check (default 32, or `PROPTEST_CASES`).
    pub fn with_cases(&mut self, cases: u32) -> &mut Self {
        self.cases = cases;
        self
    }

    /// The kinds of crash to simulate (default both).
    pub fn with_crashes(&mut self, crashes: &[Crash]) -> &mut Self {
        self.crashes = crashes.to_vec();
        self
    }

    /// At most how many interruption points per list (default 64); a list of up to `points - 1`
    /// items is interrupted after every item.
    pub fn with_points(&mut self, points: usize) -> &mut Self {
        self.points = points.max(2);
        self
    }

    /// Whether a resumed write must give the same files and bytes as an uninterrupted one
    /// (default `true`).
    pub fn with_deterministic(&mut self, deterministic: bool) -> &mut Self {
        self.deterministic = deterministic;
        self
    }

    /// Whether some interruption must leave durable items (default `true`).
    pub fn with_require_durable(&mut self, required: bool) -> &mut Self {
        self.require_durable = required;
        self
    }

    /// Whether reading the files an interrupted write left must fail (default `true`).
    pub fn with_partial_must_fail(&mut self, must_fail: bool) -> &mut Self {
        self.partial_must_fail = must_fail;
        self
    }

    /// The old name of [`with_cases`](Self::with_cases).
    #[deprecated(note = "the kit's setters are named `with_*`: use `with_cases`")]
    #[doc(hidden)]
    pub fn cases(&mut self, cases: u32) -> &mut Self {
        self.with_cases(cases)
    }

    /// The old name of [`with_crashes`](Self::with_crashes).
    #[deprecated(note = "the kit's setters are named `with_*`: use `with_crashes`")]
    #[doc(hidden)]
    pub fn crashes(&mut self, crashes: &[Crash]) -> &mut Self {
        self.with_crashes(crashes)
    }

    /// The old name of [`with_points`](Self::with_points).
    #[deprecated(note = "the kit's setters are named `with_*`: use `with_points`")]
    #[doc(hidden)]
    pub fn points(&mut self, points: usize) -> &mut Self {
        self.with_points(points)
    }

    /// The old name of [`with_deterministic`](Self::with_deterministic).
    #[deprecated(note = "the kit's setters are named `with_*`: use `with_deterministic`")]
    #[doc(hidden)]
    pub fn deterministic(&mut self, deterministic: bool) -> &mut Self {
        self.with_deterministic(deterministic)
    }

    /// The old name of [`with_require_durable`](Self::with_require_durable).
    #[deprecated(note = "the kit's setters are named `with_*`: use `with_require_durable`")]
    #[doc(hidden)]
    pub fn require_durable(&mut self, required: bool) -> &mut Self {
        self.with_require_durable(required)
    }

    /// The old name of [`with_partial_must_fail`](Self::with_partial_must_fail).
    #[deprecated(note = "the kit's setters are named `with_*`: use `with_partial_must_fail`")]
    #[doc(hidden)]
    pub fn partial_must_fail(&mut self, must_fail: bool) -> &mut Self {
        self.with_partial_must_fail(must_fail)
    }

    /// Runs the check and returns the first failure, shrunk to a short list.
    ///
    /// # Errors
    /// The [`Failure`] that shows the broken contract.
    pub fn run(&self) -> Result<(), Failure> {
        let durable_seen = Cell::new(false);
        // Not in a child process: the check keeps state across cases (`durable_seen`).
        run_cases(self.cases, false, &self.strategy, |items, seed| {
            self.case(&items, seed, &durable_seen)
        })?;
        if self.require_durable && !durable_seen.get() {
            return Err(Failure {
                check: Check::Resume,
                message: "no interrupted write left any durable items (durable_items was always \
                          0): the format is not resumable, or the generated lists never fill a \
                          chunk; generate longer lists or use smaller chunks, or \
                          require_durable(false)"
                    .into(),
                input: String::new(),
            });
        }
        Ok(())
    }

    /// Panics with the [`Failure`] report if the check fails: the form to call from a
    /// `#[test]`.
    ///
    /// # Panics
    /// When [`run`](Self::run) returns an error.
    #[track_caller]
    pub fn assert(&self) {
        if let Err(failure) = self.run() {
            panic!("{failure}");
        }
    }

    fn points_for(&self, n: usize, seed: u64) -> Vec<usize> {
        if n < self.points {
            return (0..=n).collect();
        }
        let mut rng = Rng::new(seed);
        let mut points: Vec<usize> = (0..self.points - 2).map(|_| rng.below(n + 1)).collect();
        points.extend([0, n]);
        points.sort_unstable();
        points.dedup();
        points
    }

    fn read_items(&self, artifact: &MemoryArtifact) -> std::result::Result<Result<Vec<I>>, String> {
        no_panic(|| {
            let out = self.format.read(artifact.handle())?;
            (self.collect)(out)
        })
    }

    fn case(&self, items: &[I], seed: u64, durable_seen: &Cell<bool>) -> Result<(), CaseFailure> {
        let whole = MemoryArtifact::new();
        let all = Interruptible::new(items.to_vec(), None);
        match no_panic(|| self.format.write((self.make)(all), &whole)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return fail(Check::Write, format!("write failed: {e}")),
            Err(p) => return fail(Check::Write, format!("write panicked: {p}")),
        }
        match self.read_items(&whole) {
            Ok(Ok(back)) if back == items => {}
            Ok(Ok(back)) => {
                return fail(
                    Check::RoundTrip,
                    format!("read back {} instead", short_debug(&back)),
                )
            }
            Ok(Err(e)) => return fail(Check::RoundTrip, format!("reading back failed: {e}")),
            Err(p) => return fail(Check::RoundTrip, format!("reading back panicked: {p}")),
        }
        let mut expected = whole.snapshot();
        expected.sort();
        let n = items.len();
        for &crash in &self.crashes {
            let mut last_durable = 0u64;
            for j in self.points_for(n, seed) {
                let at = format!("after a {crash:?} crash at item {j} of {n}");
                let artifact = MemoryArtifact::new();
                let input = (self.make)(Interruptible::new(items[..j].to_vec(), Some(crash)));
                if let Ok(Ok(())) = no_panic(|| self.format.write(input, &artifact)) {
                    return fail(
                        Check::Resume,
                        format!("{at}: the interrupted write returned Ok"),
                    );
                }
                if self.partial_must_fail {
                    if let Ok(Ok(got)) = self.read_items(&artifact) {
                        return fail(
                            Check::Resume,
                            format!(
                                "{at}: the files it left read as a complete value of {} items",
                                got.len()
                            ),
                        );
                    }
                }
                let durable = match no_panic(|| self.format.durable_items(&artifact)) {
                    Ok(Ok(d)) => d,
                    Ok(Err(e)) => {
                        return fail(Check::Resume, format!("{at}: durable_items failed: {e}"))
                    }
                    Err(p) => {
                        return fail(Check::Resume, format!("{at}: durable_items panicked: {p}"))
                    }
                };
                if durable > j as u64 {
                    return fail(
                        Check::Resume,
                        format!("{at}: durable_items says {durable}, only {j} were written"),
                    );
                }
                if durable < last_durable {
                    return fail(
                        Check::Resume,
                        format!(
                            "{at}: durable_items says {durable}, an earlier interruption left \
                             {last_durable}"
                        ),
                    );
                }
                last_durable = durable;
                if durable > 0 {
                    durable_seen.set(true);
                }
                let at = format!("{at}, resumed after {durable} durable items");
                // Nothing durable: a fresh start, as the engine gives a format whose leftovers
                // it cannot use.
                let artifact = if durable == 0 {
                    MemoryArtifact::new()
                } else {
                    artifact
                };
                let rest = Interruptible::new(items[durable as usize..].to_vec(), None);
                match no_panic(|| self.format.write((self.make)(rest), &artifact)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        return fail(
                            Check::Resume,
                            format!("{at}: the resumed write failed: {e}"),
                        )
                    }
                    Err(p) => {
                        return fail(
                            Check::Resume,
                            format!("{at}: the resumed write panicked: {p}"),
                        )
                    }
                }
                match self.read_items(&artifact) {
                    Ok(Ok(back)) if back == items => {}
                    Ok(Ok(back)) => {
                        return fail(
                            Check::Resume,
                            format!("{at}: read back {} instead", short_debug(&back)),
                        )
                    }
                    Ok(Err(e)) => {
                        return fail(Check::Resume, format!("{at}: reading back failed: {e}"))
                    }
                    Err(p) => {
                        return fail(Check::Resume, format!("{at}: reading back panicked: {p}"))
                    }
                }
                if self.deterministic {
                    let mut got = artifact.snapshot();
                    got.sort();
                    if got != expected {
                        let names = |f: &[(String, Vec<u8>)]| {
                            f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
                        };
                        let detail = if names(&got) == names(&expected) {
                            let differ: Vec<&str> = got
                                .iter()
                                .zip(&expected)
                                .filter(|(a, b)| a.1 != b.1)
                                .map(|(a, _)| a.0.as_str())
                                .collect();
                            format!("the bytes of {differ:?} differ")
                        } else {
                            format!(
                                "files {:?} instead of {:?}",
                                short_debug(&names(&got)),
                                short_debug(&names(&expected))
                            )
                        };
                        return fail(
                            Check::Resume,
                            format!("{at}: the files differ from an uninterrupted write: {detail}"),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
