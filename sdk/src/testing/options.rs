//! Settings shared by the format, codec and decoder checks.

use super::alloc::{AllocationLimit, DEFAULT_ALLOCATION_CAP};
use super::mutate::Plan;
use super::report::{default_cases, Check};

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) cases: u32,
    pub(crate) mutations: usize,
    pub(crate) all_cuts_up_to: usize,
    pub(crate) sampled_cuts: usize,
    pub(crate) truncation_is_err: bool,
    pub(crate) allocation: AllocationLimit,
    pub(crate) allocation_cap: usize,
    pub(crate) isolate: bool,
    pub(crate) skipped: Vec<Check>,
}

impl Options {
    pub(crate) fn new(truncation_is_err: bool) -> Self {
        Options {
            cases: default_cases(),
            mutations: 24,
            all_cuts_up_to: 96,
            sampled_cuts: 24,
            truncation_is_err,
            allocation: AllocationLimit::default(),
            allocation_cap: DEFAULT_ALLOCATION_CAP,
            isolate: true,
            skipped: Vec::new(),
        }
    }

    pub(crate) fn runs(&self, check: Check) -> bool {
        !self.skipped.contains(&check)
    }

    pub(crate) fn only(&mut self, checks: &[Check]) {
        self.skipped = [
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
        ]
        .into_iter()
        .filter(|c| *c != Check::Write && !checks.contains(c))
        .collect();
    }

    pub(crate) fn plan(&self) -> Plan {
        Plan {
            all_cuts_up_to: self.all_cuts_up_to,
            sampled_cuts: self.sampled_cuts,
            mutations: self.mutations,
            truncation_is_err: self.truncation_is_err,
        }
    }

    /// Whether any check that reads mutated bytes is on.
    pub(crate) fn mutates(&self) -> bool {
        self.runs(Check::NoPanic) || self.runs(Check::Rejection) || self.runs(Check::Allocation)
    }
}

/// Implements the setters shared by every check builder (a type with an `options: Options`
/// field).
macro_rules! option_setters {
    () => {
        /// How many generated values to check (default 32, or `PROPTEST_CASES`).
        pub fn with_cases(&mut self, cases: u32) -> &mut Self {
            self.options.cases = cases;
            self
        }

        /// How many random mutations (bit flips, lying length fields, random bytes) to try per
        /// generated value and file, besides the truncations (default 24).
        pub fn with_mutations(&mut self, mutations: usize) -> &mut Self {
            self.options.mutations = mutations;
            self
        }

        /// Inputs up to `all_up_to` bytes are cut at every length; longer ones at `sampled`
        /// random lengths (defaults 96 and 24).
        pub fn with_truncations(&mut self, all_up_to: usize, sampled: usize) -> &mut Self {
            self.options.all_cuts_up_to = all_up_to;
            self.options.sampled_cuts = sampled;
            self
        }

        /// Whether a truncated input must give an error ([`Check::Rejection`]), or may decode
        /// to some value as long as it does not panic.
        pub fn with_truncation_must_fail(&mut self, must_fail: bool) -> &mut Self {
            self.options.truncation_is_err = must_fail;
            self
        }

        /// The largest single allocation a decode may make (checked when a meter is
        /// installed, see [`allocation_meter!`](crate::allocation_meter)).
        pub fn with_allocation_limit(
            &mut self,
            limit: $crate::testing::AllocationLimit,
        ) -> &mut Self {
            self.options.allocation = limit;
            self
        }

        /// The largest single allocation the metering allocator lets a decode make (default
        /// [`DEFAULT_ALLOCATION_CAP`](crate::testing::DEFAULT_ALLOCATION_CAP), 1 GiB): a bigger
        /// request is refused and aborts the process, which the kit reports as a
        /// [`Check::Allocation`](crate::testing::Check::Allocation) failure with the input when
        /// the check runs in a child process (see [`with_isolation`](Self::with_isolation)). Requests between
        /// the [`with_allocation_limit`](Self::with_allocation_limit) and the cap are passed on and fail
        /// the check in-process, with a shrunk value.
        pub fn with_allocation_cap(&mut self, bytes: usize) -> &mut Self {
            self.options.allocation_cap = bytes;
            self
        }

        /// Whether to run the check in a child process (default `true`): the current test
        /// binary, filtered to the current test, so that a process abort (a lying `u64` count
        /// that asks for petabytes, a stack overflow) is a reported failure with the input and
        /// seed instead of the end of the test binary. Needs the standard test harness, which
        /// names each test's thread after the test; elsewhere (a doctest, a `main`) the check
        /// runs in-process. `MILONGA_KIT_ISOLATE=0` turns it off everywhere.
        pub fn with_isolation(&mut self, isolate: bool) -> &mut Self {
            self.options.isolate = isolate;
            self
        }

        /// Skips one check.
        pub fn with_skipped(&mut self, check: $crate::testing::Check) -> &mut Self {
            if !self.options.skipped.contains(&check) {
                self.options.skipped.push(check);
            }
            self
        }

        /// Runs only these checks (writing and reading a valid value always runs).
        pub fn with_only(&mut self, checks: &[$crate::testing::Check]) -> &mut Self {
            self.options.only(checks);
            self
        }

        /// The old name of [`with_cases`](Self::with_cases).
        #[deprecated(note = "the kit's setters are named `with_*`: use `with_cases`")]
        #[doc(hidden)]
        pub fn cases(&mut self, cases: u32) -> &mut Self {
            self.with_cases(cases)
        }

        /// The old name of [`with_mutations`](Self::with_mutations).
        #[deprecated(note = "the kit's setters are named `with_*`: use `with_mutations`")]
        #[doc(hidden)]
        pub fn mutations(&mut self, mutations: usize) -> &mut Self {
            self.with_mutations(mutations)
        }

        /// The old name of [`with_truncations`](Self::with_truncations).
        #[deprecated(note = "the kit's setters are named `with_*`: use `with_truncations`")]
        #[doc(hidden)]
        pub fn truncations(&mut self, all_up_to: usize, sampled: usize) -> &mut Self {
            self.with_truncations(all_up_to, sampled)
        }

        /// The old name of [`with_truncation_must_fail`](Self::with_truncation_must_fail).
        #[deprecated(
            note = "the kit's setters are named `with_*`: use `with_truncation_must_fail`"
        )]
        #[doc(hidden)]
        pub fn truncation_must_fail(&mut self, must_fail: bool) -> &mut Self {
            self.with_truncation_must_fail(must_fail)
        }

        /// The old name of [`with_allocation_limit`](Self::with_allocation_limit).
        #[deprecated(note = "the kit's setters are named `with_*`: use `with_allocation_limit`")]
        #[doc(hidden)]
        pub fn allocation_limit(&mut self, limit: $crate::testing::AllocationLimit) -> &mut Self {
            self.with_allocation_limit(limit)
        }

        /// The old name of [`with_allocation_cap`](Self::with_allocation_cap).
        #[deprecated(note = "the kit's setters are named `with_*`: use `with_allocation_cap`")]
        #[doc(hidden)]
        pub fn allocation_cap(&mut self, bytes: usize) -> &mut Self {
            self.with_allocation_cap(bytes)
        }

        /// The old name of [`with_isolation`](Self::with_isolation).
        #[deprecated(note = "the kit's setters are named `with_*`: use `with_isolation`")]
        #[doc(hidden)]
        pub fn isolate(&mut self, isolate: bool) -> &mut Self {
            self.with_isolation(isolate)
        }

        /// The old name of [`with_skipped`](Self::with_skipped).
        #[deprecated(note = "the kit's setters are named `with_*`: use `with_skipped`")]
        #[doc(hidden)]
        pub fn skip(&mut self, check: $crate::testing::Check) -> &mut Self {
            self.with_skipped(check)
        }

        /// The old name of [`with_only`](Self::with_only).
        #[deprecated(note = "the kit's setters are named `with_*`: use `with_only`")]
        #[doc(hidden)]
        pub fn only(&mut self, checks: &[$crate::testing::Check]) -> &mut Self {
            self.with_only(checks)
        }

        /// Panics with the [`Failure`](crate::testing::Failure) report if a check fails: the
        /// form to call from a `#[test]`.
        ///
        /// # Panics
        /// When [`run`](Self::run) returns an error.
        #[track_caller]
        pub fn assert(&self) {
            if let Err(failure) = self.run() {
                panic!("{failure}");
            }
        }
    };
}

pub(crate) use option_setters;
