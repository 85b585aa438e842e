//! Checks for a whole [`Format`]: written to and read from a [`MemoryArtifact`].

use std::fmt::Debug;

use proptest::strategy::Strategy;

use super::alloc::{metered_capped, with_context, Context};
use super::decoder::describe_result;
use super::mutate::{mutants, with_envelope_version, Expect, Rng};
use super::options::{option_setters, Options};
use super::reads::MeteredArtifact;
use super::report::{fail, no_panic, run_cases, short_debug, CaseFailure, Check, Failure};
use crate::artifact::{ArtifactReader, FileEntry};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::memory::MemoryArtifact;

/// The files of an artifact: names and bytes, in the order they were finished.
pub type Files = Vec<(String, Vec<u8>)>;

type Make<'a, V, T> = Box<dyn Fn(&V) -> T + 'a>;
type Collect<'a, O, V> = Box<dyn Fn(O) -> Result<V> + 'a>;
type Access<'a, O> = Box<
    dyn Fn(&O, &mut Rng, bool, Option<(&MeteredArtifact, u64)>) -> Result<(), (Check, String)> + 'a,
>;
type Bump<'a> = Box<dyn Fn(&mut Files, u32) -> bool + 'a>;

/// Checks that a [`Format`] keeps its contract, with values from a proptest [`Strategy`]:
///
/// - [`Check::RoundTrip`]: reading what was written gives an equal value (for a lazy output,
///   after the `collect` closure turned it into a comparable value);
/// - [`Check::RandomAccess`], where [`with_random_access`](Self::with_random_access) gives accessors:
///   every index read directly equals the same item read sequentially, and indices past the end
///   are errors;
/// - [`Check::Determinism`]: writing the same value twice gives the same files, bytes and
///   content ids;
/// - [`Check::NoPanic`], [`Check::Rejection`], [`Check::Allocation`]: every file truncated,
///   bit-flipped, with lying length fields, replaced by random bytes (keeping its envelope or
///   not), or missing, never makes `read` (or `collect`, or the random-access accessors) panic
///   or allocate beyond the limit; truncated and missing files are errors (unless
///   [`truncation_must_fail(false)`](Self::truncation_must_fail));
/// - [`Check::VersionSkew`]: each file that starts with the format's [`Envelope`] at
///   `version()`, rewritten to `version() + 1`, makes reading fail with
///   [`Error::UnsupportedVersion`]. A format whose version lives elsewhere says how to bump it
///   with [`with_newer_version`](Self::with_newer_version).
///
/// The artifact is a [`MemoryArtifact`], which does not verify content hashes: the format's own
/// decoder sees every bad byte, as it would if a backend's verification were bypassed.
///
/// ```
/// use milonga_sdk::testing::{check_format, FormatCheck};
/// use milonga_sdk::{ArtifactHandle, ArtifactWriter, Error, Format, Result};
/// use proptest::prelude::*;
/// use std::io::Write;
///
/// /// A `u64` as 8 little-endian bytes behind an envelope.
/// struct U64Format;
///
/// impl Format<u64> for U64Format {
///     type Output = u64;
///     fn id(&self) -> &str { "example.u64" }
///     fn version(&self) -> u32 { 1 }
///     fn write(&self, value: u64, artifact: &dyn ArtifactWriter) -> Result<()> {
///         let mut file = artifact.create("value")?;
///         milonga_sdk::Envelope::new(self.id(), self.version()).write_to(&mut file, "value")?;
///         file.write_all(&value.to_le_bytes()).map_err(|e| Error::io("value", e))?;
///         file.finish()?;
///         Ok(())
///     }
///     fn read(&self, artifact: ArtifactHandle) -> Result<u64> {
///         let bytes = artifact.bytes("value")?;
///         let (_, payload) =
///             milonga_sdk::open_envelope((*bytes).as_ref(), self.id(), self.version(), "value")?;
///         let raw: [u8; 8] = payload
///             .try_into()
///             .map_err(|_| Error::corrupt("value", 0, "expected 8 bytes"))?;
///         Ok(u64::from_le_bytes(raw))
///     }
/// }
///
/// // Every check, in one line:
/// check_format(&U64Format, any::<u64>());
///
/// // Or chosen and tuned, with the failure to inspect:
/// let result = FormatCheck::new(&U64Format, 0..1000u64).with_cases(8).with_mutations(64).run();
/// assert!(result.is_ok(), "{}", result.unwrap_err());
/// ```
pub struct FormatCheck<'a, T, F: Format<T>, S: Strategy> {
    format: &'a F,
    strategy: S,
    make: Make<'a, S::Value, T>,
    collect: Collect<'a, F::Output, S::Value>,
    access: Option<Access<'a, F::Output>>,
    bump: Option<Bump<'a>>,
    read_budget: Option<u64>,
    options: Options,
}

impl<'a, T, F, S> FormatCheck<'a, T, F, S>
where
    F: Format<T, Output = T>,
    S: Strategy<Value = T>,
    T: Clone + PartialEq + Debug + 'a,
{
    /// A check of a format whose output is the value itself.
    pub fn new(format: &'a F, strategy: S) -> Self {
        FormatCheck::lazy(format, strategy, T::clone, Ok)
    }
}

impl<'a, T, F, S> FormatCheck<'a, T, F, S>
where
    F: Format<T>,
    S: Strategy,
    S::Value: PartialEq + Debug,
{
    /// A check of a format whose output is a lazy handle (a stream, a sequence) or otherwise
    /// not comparable with what was written. The strategy generates a comparable value `v`;
    /// `make(&v)` is what is written (for example `v.clone().into_iter()`), and `collect` turns
    /// what `read` returns back into a value to compare with `v` (for example by collecting a
    /// stream into a `Vec`; an error from any item is an error of the whole read).
    pub fn lazy(
        format: &'a F,
        strategy: S,
        make: impl Fn(&S::Value) -> T + 'a,
        collect: impl Fn(F::Output) -> Result<S::Value> + 'a,
    ) -> Self {
        FormatCheck {
            format,
            strategy,
            make: Box::new(make),
            collect: Box::new(collect),
            access: None,
            bump: None,
            read_budget: None,
            options: Options::new(true),
        }
    }

    /// Adds the random-access check, for outputs that can be read both ways: `len` gives the
    /// number of items, `get` one item by index, `sequential` every item in order (for example
    /// by iterating). Each index read with `get` (in shuffled order) must equal the same item
    /// from `sequential`; `get(len)` and `get(u64::MAX)` must be errors. On corrupt files the
    /// three accessors must not panic.
    pub fn with_random_access<I: PartialEq + Debug>(
        &mut self,
        len: impl Fn(&F::Output) -> Result<u64> + 'a,
        get: impl Fn(&F::Output, u64) -> Result<I> + 'a,
        sequential: impl Fn(&F::Output) -> Result<Vec<I>> + 'a,
    ) -> &mut Self {
        self.access = Some(Box::new(move |out, rng, strict, meter| {
            random_access_case(out, rng, strict, meter, &len, &get, &sequential)
        }));
        self
    }

    /// The old name of [`with_random_access`](Self::with_random_access).
    #[deprecated(note = "the kit's setters are named `with_*`: use `with_random_access`")]
    #[doc(hidden)]
    pub fn random_access<I: PartialEq + Debug>(
        &mut self,
        len: impl Fn(&F::Output) -> Result<u64> + 'a,
        get: impl Fn(&F::Output, u64) -> Result<I> + 'a,
        sequential: impl Fn(&F::Output) -> Result<Vec<I>> + 'a,
    ) -> &mut Self {
        self.with_random_access(len, get, sequential)
    }

    /// Turns on the read-budget check ([`Check::ReadBudget`]) of the random-access check: each
    /// `get(i)` on the valid artifact may read at most `bytes` bytes of stored files, as a
    /// verifying backend counts them (see [`MeteredArtifact`]): the groups of a range read, the
    /// whole file for `bytes()`. A lazy format whose lookups read whole files fails it once its
    /// files are bigger than the budget.
    pub fn with_read_budget(&mut self, bytes: u64) -> &mut Self {
        self.read_budget = Some(bytes);
        self
    }

    /// The old name of [`with_read_budget`](Self::with_read_budget).
    #[deprecated(note = "the kit's setters are named `with_*`: use `with_read_budget`")]
    #[doc(hidden)]
    pub fn reads_per_get_at_most(&mut self, bytes: u64) -> &mut Self {
        self.with_read_budget(bytes)
    }

    /// How to turn the files of a valid artifact into files of version `version` (the
    /// format's version plus one), for a format whose version is not (only) in an
    /// [`Envelope`] at the start of a file. Return `false` if nothing could be rewritten.
    /// Reading the rewritten files must fail with [`Error::UnsupportedVersion`].
    pub fn with_newer_version(&mut self, bump: impl Fn(&mut Files, u32) -> bool + 'a) -> &mut Self {
        self.bump = Some(Box::new(bump));
        self
    }

    /// The old name of [`with_newer_version`](Self::with_newer_version).
    #[deprecated(note = "the kit's setters are named `with_*`: use `with_newer_version`")]
    #[doc(hidden)]
    pub fn newer_version(&mut self, bump: impl Fn(&mut Files, u32) -> bool + 'a) -> &mut Self {
        self.with_newer_version(bump)
    }

    option_setters!();

    /// Runs the checks and returns the first failure, shrunk to a small generated value.
    ///
    /// # Errors
    /// The [`Failure`] that shows the broken contract.
    pub fn run(&self) -> Result<(), Failure> {
        run_cases(
            self.options.cases,
            self.options.isolate,
            &self.strategy,
            |value, seed| self.case(&value, seed),
        )
    }

    fn write(&self, value: &S::Value) -> Result<(Files, Vec<FileEntry>), CaseFailure> {
        let artifact = MemoryArtifact::new();
        match no_panic(|| self.format.write((self.make)(value), &artifact)) {
            Ok(Ok(())) => Ok((artifact.snapshot(), ArtifactReader::files(&artifact))),
            Ok(Err(e)) => fail(Check::Write, format!("write failed: {e}")),
            Err(p) => fail(Check::Write, format!("write panicked: {p}")),
        }
    }

    fn case(&self, value: &S::Value, seed: u64) -> Result<(), CaseFailure> {
        let o = &self.options;
        let mut rng = Rng::new(seed);
        let (files, entries) = self.write(value)?;
        if o.runs(Check::Determinism) {
            let (again, again_entries) = self.write(value)?;
            if again != files {
                return fail(Check::Determinism, diff_files(&files, &again));
            }
            if again_entries != entries {
                return fail(
                    Check::Determinism,
                    format!("the file entries differ: {entries:?} then {again_entries:?}"),
                );
            }
        }
        if o.runs(Check::RoundTrip) || o.runs(Check::RandomAccess) {
            match self.read_guarded(&files, "the written artifact", &mut rng, true)? {
                Ok(back) if back == *value => {}
                Ok(back) if o.runs(Check::RoundTrip) => {
                    return fail(
                        Check::RoundTrip,
                        format!("read back {} instead", short_debug(&back)),
                    )
                }
                Err(e) if o.runs(Check::RoundTrip) => {
                    return fail(Check::RoundTrip, format!("reading back failed: {e}"))
                }
                _ => {}
            }
        }
        if o.mutates() {
            for (i, (name, good)) in files.iter().enumerate() {
                let mut bad = files.clone();
                for m in mutants(good, seed ^ i as u64, o.plan()) {
                    let what = format!("file {name:?} {}", m.what);
                    bad[i].1 = m.bytes;
                    let r = self.read_guarded(&bad, &what, &mut rng, false)?;
                    self.expect(m.expect, &what, r)?;
                }
                let mut missing = files.clone();
                missing.remove(i);
                let what = format!("file {name:?} missing");
                let r = self.read_guarded(&missing, &what, &mut rng, false)?;
                self.expect(Expect::Err, &what, r)?;
            }
        }
        if o.runs(Check::VersionSkew) {
            self.version_skew(&files, &mut rng)?;
        }
        Ok(())
    }

    fn expect(&self, expect: Expect, what: &str, r: Result<S::Value>) -> Result<(), CaseFailure> {
        match (expect, r) {
            (Expect::Err, Ok(v))
                if self.options.truncation_is_err && self.options.runs(Check::Rejection) =>
            {
                fail(
                    Check::Rejection,
                    format!("{what}: read {} instead of an error", short_debug(&v)),
                )
            }
            _ => Ok(()),
        }
    }

    fn version_skew(&self, files: &Files, rng: &mut Rng) -> Result<(), CaseFailure> {
        let id = self.format.id();
        let version = self.format.version();
        let Some(newer) = version.checked_add(1) else {
            return Ok(());
        };
        let mut variants: Vec<(String, Files)> = Vec::new();
        for (i, (name, bytes)) in files.iter().enumerate() {
            let at_version = Envelope::decode(bytes, name)
                .is_ok_and(|(env, _)| env.format_id == id && env.format_version == version);
            if let Some(rewritten) = at_version
                .then(|| with_envelope_version(bytes, id, newer))
                .flatten()
            {
                let mut v = files.clone();
                v[i].1 = rewritten;
                variants.push((format!("the envelope of {name:?}"), v));
            }
        }
        if let Some(bump) = &self.bump {
            let mut v = files.clone();
            if bump(&mut v, newer) {
                variants.push(("the files rewritten by with_newer_version".into(), v));
            }
        }
        if variants.is_empty() {
            return fail(
                Check::VersionSkew,
                format!(
                    "no file starts with an envelope of {id:?} at version {version}, so the kit \
                     cannot make a newer payload: tell it how with with_newer_version(..), or \
                     skip(Check::VersionSkew)"
                ),
            );
        }
        for (what, v) in variants {
            let what = format!("{what} set to version {newer}");
            match self.read_guarded(&v, &what, rng, false)? {
                Err(Error::UnsupportedVersion { .. }) => {}
                other => {
                    return fail(
                        Check::VersionSkew,
                        format!(
                            "{what}: read gave {} instead of UnsupportedVersion",
                            describe_result(&other)
                        ),
                    )
                }
            }
        }
        Ok(())
    }

    /// Reads `files` (and collects the output, after the random-access check where there is
    /// one) with panics caught and allocations metered. `strict`: the files are valid, so the
    /// random-access check compares; otherwise it only must not panic.
    fn read_guarded(
        &self,
        files: &Files,
        what: &str,
        rng: &mut Rng,
        strict: bool,
    ) -> Result<Result<S::Value>, CaseFailure> {
        let artifact = MemoryArtifact::new();
        for (name, bytes) in files {
            artifact.set_file(name, bytes.clone());
        }
        let meter = MeteredArtifact::new(artifact.handle());
        let budget = self
            .read_budget
            .filter(|_| strict && self.options.runs(Check::ReadBudget));
        let input_len: usize = files.iter().map(|(_, b)| b.len()).sum();
        let mut access_failure = None;
        let context = Context {
            what: what.to_owned(),
            files: files.clone(),
        };
        let (r, largest) = with_context(context, || {
            metered_capped(self.options.allocation_cap, || {
                no_panic(|| {
                    let out = self.format.read(meter.handle())?;
                    if let Some(access) = &self.access {
                        if let Err(m) = access(&out, rng, strict, budget.map(|b| (&meter, b))) {
                            access_failure = Some(m);
                        }
                    }
                    (self.collect)(out)
                })
            })
        });
        let o = &self.options;
        let limit = o.allocation.for_input(input_len);
        if largest > limit && o.runs(Check::Allocation) {
            return fail(
                Check::Allocation,
                format!(
                    "reading {what} ({input_len} bytes in all) allocated {largest} bytes at once \
                     (limit {limit})"
                ),
            );
        }
        let r = match r {
            Ok(r) => r,
            Err(p) if o.runs(Check::NoPanic) || strict => {
                let check = if strict {
                    Check::RoundTrip
                } else {
                    Check::NoPanic
                };
                return fail(check, format!("reading {what} panicked: {p}"));
            }
            Err(p) => Err(Error::decode(format!("panicked: {p}"))),
        };
        if let Some((check, m)) = access_failure {
            if o.runs(check) {
                return fail(check, format!("{what}: {m}"));
            }
        }
        Ok(r)
    }
}

fn random_access_case<O, I: PartialEq + Debug>(
    out: &O,
    rng: &mut Rng,
    strict: bool,
    meter: Option<(&MeteredArtifact, u64)>,
    len: &dyn Fn(&O) -> Result<u64>,
    get: &dyn Fn(&O, u64) -> Result<I>,
    sequential: &dyn Fn(&O) -> Result<Vec<I>>,
) -> Result<(), (Check, String)> {
    let check = if strict {
        Check::RandomAccess
    } else {
        Check::NoPanic
    };
    let guarded = |f: &dyn Fn() -> Result<(), String>| -> Result<(), (Check, String)> {
        no_panic(f)
            .unwrap_or_else(|p| Err(format!("an accessor panicked: {p}")))
            .map_err(|m| (check, m))
    };
    if let Some((meter, budget)) = meter {
        // Before anything is cached by sequential reads: each lookup on its own.
        let n = len(out).unwrap_or(0);
        let probes: Vec<u64> = if n == 0 {
            Vec::new()
        } else {
            [n - 1, 0, n / 2, rng.next_u64() % n, rng.next_u64() % n].into()
        };
        for i in probes {
            meter.reset();
            let r = no_panic(|| get(out, i).map(|_| ()));
            let used = meter.bytes_read();
            if let Ok(Ok(())) = r {
                if used > budget {
                    return Err((
                        Check::ReadBudget,
                        format!(
                            "get({i}) read {used} bytes of stored files (budget {budget}; the \
                             files hold {} bytes)",
                            meter.files().iter().map(|f| f.len).sum::<u64>()
                        ),
                    ));
                }
            }
        }
    }
    if !strict {
        // Corrupt files: the accessors may fail, but must not panic.
        return guarded(&|| {
            let n = len(out).unwrap_or(0);
            let _ = sequential(out);
            for i in [0, 1, n / 2, n.saturating_sub(1), n, u64::MAX] {
                let _ = get(out, i);
            }
            Ok(())
        });
    }
    let mut order: Vec<u64> = Vec::new();
    guarded(&|| {
        let seq = sequential(out).map_err(|e| format!("sequential read failed: {e}"))?;
        let n = len(out).map_err(|e| format!("len failed: {e}"))?;
        if n != seq.len() as u64 {
            return Err(format!(
                "len() says {n} items, a sequential read gave {}",
                seq.len()
            ));
        }
        Ok(())
    })?;
    let n = len(out).unwrap_or(0);
    if n <= 128 {
        order.extend((0..n).rev());
    } else {
        order.extend([0, n - 1, n / 2]);
        order.extend((0..64).map(|_| rng.next_u64() % n));
    }
    // Shuffle, so that a cursor that only works forwards is caught.
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    guarded(&|| {
        let seq = sequential(out).map_err(|e| format!("sequential read failed: {e}"))?;
        for &i in &order {
            let item = get(out, i).map_err(|e| format!("get({i}) failed: {e}"))?;
            let expected = usize::try_from(i).ok().and_then(|i| seq.get(i));
            if expected != Some(&item) {
                return Err(format!(
                    "get({i}) gave {}, the sequential read has {}",
                    short_debug(&item),
                    short_debug(&expected)
                ));
            }
        }
        for past in [n, u64::MAX] {
            if let Ok(item) = get(out, past) {
                return Err(format!(
                    "get({past}) past the end ({n} items) gave {}",
                    short_debug(&item)
                ));
            }
        }
        let again = sequential(out).map_err(|e| format!("a second sequential read failed: {e}"))?;
        if again != seq {
            return Err("a second sequential read gave other items".into());
        }
        Ok(())
    })
}

fn diff_files(a: &Files, b: &Files) -> String {
    let names = |f: &Files| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if names(a) != names(b) {
        return format!(
            "writing the same value twice gave different files: {:?} then {:?}",
            names(a),
            names(b)
        );
    }
    for ((name, x), (_, y)) in a.iter().zip(b) {
        if x != y {
            let at = x
                .iter()
                .zip(y)
                .position(|(p, q)| p != q)
                .unwrap_or(x.len().min(y.len()));
            return format!(
                "writing the same value twice gave different bytes in {name:?} (first \
                 difference at byte {at}; lengths {} and {})",
                x.len(),
                y.len()
            );
        }
    }
    "writing the same value twice gave different files".into()
}
