//! What a check found: [`Failure`], and the proptest runner that produces it.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt::{self, Debug};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};

/// The property a [`Failure`] broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Check {
    /// Writing (or encoding) a generated value failed or panicked.
    Write,
    /// Reading back what was written failed, panicked or gave another value.
    RoundTrip,
    /// Random access to a lazy output disagreed with reading it sequentially.
    RandomAccess,
    /// The same value gave different bytes or content ids.
    Determinism,
    /// Decoding bad bytes panicked.
    NoPanic,
    /// Bad bytes that must be refused (a truncated or missing file) decoded without an error.
    Rejection,
    /// A decode made a single allocation bigger than the [`AllocationLimit`](super::AllocationLimit).
    Allocation,
    /// A payload from a newer format version was not refused with `UnsupportedVersion`.
    VersionSkew,
    /// A write interrupted by a crash and resumed did not give the uninterrupted result (see
    /// [`ResumeCheck`](super::ResumeCheck)).
    Resume,
    /// A random-access lookup read more bytes of stored files than its budget (see
    /// [`FormatCheck::with_read_budget`](super::FormatCheck::with_read_budget)).
    ReadBudget,
}

impl Check {
    pub(crate) const ALL: [Check; 10] = [
        Check::Write,
        Check::RoundTrip,
        Check::RandomAccess,
        Check::Determinism,
        Check::NoPanic,
        Check::Rejection,
        Check::Allocation,
        Check::VersionSkew,
        Check::Resume,
        Check::ReadBudget,
    ];

    /// A short name, as printed in reports.
    pub fn name(self) -> &'static str {
        match self {
            Check::Write => "write",
            Check::RoundTrip => "round-trip",
            Check::RandomAccess => "random-access",
            Check::Determinism => "determinism",
            Check::NoPanic => "no-panic",
            Check::Rejection => "rejection",
            Check::Allocation => "allocation",
            Check::VersionSkew => "version-skew",
            Check::Resume => "resume",
            Check::ReadBudget => "read-budget",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A broken contract, with the smallest generated value proptest found that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The property that does not hold.
    pub check: Check,
    /// What happened, including the mutation of the bytes where there was one.
    pub message: String,
    /// The generated value (`Debug`), after shrinking, with the mutation seed; for a check that
    /// died in its child process, the case it was in; for
    /// [`FormatFuzzer`](super::fuzz::FormatFuzzer), how the artifact was made from the fuzz
    /// input (the seed and each edit) and the input's first bytes.
    pub input: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} check failed: {}", self.check, self.message)?;
        if !self.input.is_empty() {
            write!(f, "\n  generated value: {}", self.input)?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// A failed check inside one test case, before proptest adds the input.
pub(crate) struct CaseFailure {
    pub(crate) check: Check,
    pub(crate) message: String,
}

pub(crate) fn fail<T>(check: Check, message: impl Into<String>) -> Result<T, CaseFailure> {
    Err(CaseFailure {
        check,
        message: message.into(),
    })
}

thread_local! {
    /// How deep this thread is in [`no_panic`]: its panics are expected and reported by the
    /// kit, not printed.
    static QUIET: Cell<u32> = const { Cell::new(0) };
    /// Where the last quiet panic happened, for the report.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that keeps panics caught by the kit silent: a failing format
/// that panics on thousands of mutated inputs must not print thousands of messages and
/// backtraces. Panics elsewhere go to the hook that was installed before.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) > 0 {
                let at = info
                    .location()
                    .map(|l| format!(" (at {}:{})", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(at));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into `Err` with the panic's message and where it happened. The
/// panic is not printed: the kit reports it if it breaks a check.
pub(crate) fn no_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install_quiet_hook();
    QUIET.with(|q| q.set(q.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(q.get().saturating_sub(1)));
    r.map_err(|payload| {
        let at = LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_default();
        format!("{}{at}", panic_message(payload))
    })
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// `Debug` of `v`, cut to a readable length.
pub(crate) fn short_debug(v: &dyn Debug) -> String {
    let s = format!("{v:?}");
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!(
            "{}… ({} more bytes of Debug output)",
            &s[..end],
            s.len() - end
        )
    } else {
        s
    }
}

/// The number of cases when neither the caller nor `PROPTEST_CASES` says otherwise.
pub(crate) fn default_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
}

/// Runs `case` on values of `strategy` (paired with a seed for the byte mutations) and maps
/// proptest's result to a [`Failure`]. With `isolate`, in a child process where the test
/// harness allows it (see [`isolate`](super::isolate)), so that a process abort in a case is a
/// failure too.
pub(crate) fn run_cases<S: Strategy>(
    cases: u32,
    isolate: bool,
    strategy: S,
    case: impl Fn(S::Value, u64) -> Result<(), CaseFailure>,
) -> Result<(), Failure> {
    super::isolate::isolated(isolate, |report| run_here(cases, strategy, case, report))
}

fn run_here<S: Strategy>(
    cases: u32,
    strategy: S,
    case: impl Fn(S::Value, u64) -> Result<(), CaseFailure>,
    report: Option<&std::path::Path>,
) -> Result<(), Failure> {
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = (strategy, proptest::num::u64::ANY);
    let result = runner.run(&strategy, |(value, seed)| {
        if let Some(report) = report {
            super::isolate::note_case(
                report,
                &format!("{} (mutation seed {seed})", short_debug(&value)),
            );
        }
        case(value, seed).map_err(|f| TestCaseError::fail(format!("[{}] {}", f.check, f.message)))
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, (value, seed))) => {
            let reason = reason.message().to_owned();
            let (check, message) = Check::ALL
                .iter()
                .find_map(|c| {
                    reason
                        .strip_prefix(&format!("[{c}] "))
                        .map(|m| (*c, m.to_owned()))
                })
                // proptest caught a panic outside the kit's own guards.
                .unwrap_or((Check::Write, reason));
            Err(Failure {
                check,
                message,
                input: format!("{} (mutation seed {seed})", short_debug(&value)),
            })
        }
        Err(TestError::Abort(reason)) => Err(Failure {
            check: Check::Write,
            message: format!("proptest gave up: {}", reason.message()),
            input: String::new(),
        }),
    }
}
