//! Test kit for format authors (feature `testing`).
//!
//! Whatever checks the built-in formats get, a custom format gets with one line. With values
//! from your own proptest [`Strategy`] (`any::<MyType>()` for a
//! type that implements `Arbitrary`), the kit checks the contracts of [`Format`]
//! and [`Codec`]:
//!
//! | check | what must hold |
//! |---|---|
//! | [`Check::RoundTrip`] | reading what was written gives an equal value |
//! | [`Check::RandomAccess`] | a lazy output's items read by index equal the same items read in order |
//! | [`Check::Determinism`] | the same value gives the same files, bytes and content ids |
//! | [`Check::NoPanic`] | truncated, bit-flipped, lying-length, random and missing files never panic |
//! | [`Check::Rejection`] | truncated and missing files are errors |
//! | [`Check::Allocation`] | no decode allocates memory driven by an unchecked length field |
//! | [`Check::VersionSkew`] | a payload from version `version() + 1` gives [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion) |
//! | [`Check::Resume`] | a resumable format, interrupted after any item and resumed, gives the uninterrupted result |
//! | [`Check::ReadBudget`] | a lazy output's `get(i)` reads at most a set number of bytes of stored files ([`MeteredArtifact`]) |
//!
//! ```
//! # use milonga_sdk::{ArtifactHandle, ArtifactWriter, Error, Format, Result};
//! # use std::io::Write;
//! /// `u16`s behind an envelope: a `u32` count, then the values, little-endian.
//! struct MyFormat;
//! # impl Format<Vec<u16>> for MyFormat {
//! #     type Output = Vec<u16>;
//! #     fn id(&self) -> &str { "example.u16s" }
//! #     fn version(&self) -> u32 { 1 }
//! #     fn write(&self, value: Vec<u16>, artifact: &dyn ArtifactWriter) -> Result<()> {
//! #         let mut out = Vec::new();
//! #         milonga_sdk::Envelope::new(self.id(), self.version()).encode_into(&mut out)?;
//! #         out.extend_from_slice(&(value.len() as u32).to_le_bytes());
//! #         for v in value { out.extend_from_slice(&v.to_le_bytes()); }
//! #         let mut file = artifact.create("data")?;
//! #         file.write_all(&out).map_err(|e| Error::io("data", e))?;
//! #         file.finish()?;
//! #         Ok(())
//! #     }
//! #     fn read(&self, artifact: ArtifactHandle) -> Result<Vec<u16>> {
//! #         let bytes = artifact.bytes("data")?;
//! #         let (_, p) = milonga_sdk::open_envelope((*bytes).as_ref(), self.id(), self.version(), "data")?;
//! #         let (count, items) = p.split_first_chunk::<4>()
//! #             .ok_or_else(|| Error::corrupt("data", 0, "no count"))?;
//! #         if u64::from(u32::from_le_bytes(*count)) * 2 != items.len() as u64 {
//! #             return Err(Error::corrupt("data", 0, "the count does not match the length"));
//! #         }
//! #         Ok(items.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
//! #     }
//! # }
//! use milonga_sdk::testing::{check_format, Check, FormatCheck};
//! use proptest::prelude::*;
//!
//! // In a #[test]: every check, panicking with a report on the first failure.
//! check_format(&MyFormat, proptest::collection::vec(any::<u16>(), 0..100));
//!
//! // Some checks, tuned, with the failure returned for inspection.
//! let result = FormatCheck::new(&MyFormat, proptest::collection::vec(any::<u16>(), 0..100))
//!     .with_only(&[Check::RoundTrip, Check::Rejection])
//!     .with_cases(8)
//!     .with_mutations(100)
//!     .run();
//! assert!(result.is_ok(), "{}", result.unwrap_err());
//! ```
//!
//! The entry points:
//! - [`check_format`] (every check), [`check_roundtrip`], [`check_determinism`],
//!   [`check_rejection`], [`check_version_skew`]: one line each, for a format whose output is
//!   the value; [`check_lazy_format`] for a lazy output (a stream, a sequence);
//! - [`FormatCheck`]: the builder behind them, with the random-access check, custom version
//!   rewriting, case counts, and a [`run`](FormatCheck::run) that returns the [`Failure`];
//! - [`check_codec`] and [`DecoderCheck::codec`] for a [`Codec`];
//!   [`check_decoder`] and [`DecoderCheck`] for any pair of encode/decode functions (headers,
//!   indexes, manifests);
//! - [`check_resume`] and [`ResumeCheck`]: the crash kit for resumable formats (a stream, any
//!   format built on the chunked record file): a crash at every chunk boundary, then resume;
//! - [`format_tests!`](crate::format_tests): one `#[test]` per check, for a format;
//! - [`allocation_meter!`](crate::allocation_meter): turns on the allocation check and the
//!   allocation cap in a test binary or fuzz target (see [`meter_installed`]). Without it, the
//!   kit cannot see allocations: the SDK forbids `unsafe` code and installs nothing global;
//! - [`fuzz`]: structure-aware fuzzing of a format ([`fuzz::FormatFuzzer`]), seed corpora, and
//!   the replay of a folder of crashes.
//!
//! Every check writes to and reads from a [`MemoryArtifact`], which does not verify content
//! hashes, so the format's decoder sees every bad byte. Panics are caught, silently, and
//! reported as failures with their message and location; a failing case is shrunk by proptest
//! to a small value, and the mutation that broke it is replayed from the seed printed in the
//! report. The number of cases defaults to 32 (or `PROPTEST_CASES`).
//!
//! Each check runs in a child process (the current test binary, filtered to the current test;
//! see [`FormatCheck::with_isolation`]), so that what cannot be caught in a process, an abort, is a
//! reported failure too: a decode that asks for more than the allocation cap (1 GiB, refused by
//! the meter of [`allocation_meter!`](crate::allocation_meter)), or for more than the system
//! gives, or that overflows its stack, fails the check with the generated value, the mutation
//! seed and (for a refused allocation) the mutation and the input's files, written under
//! `target/milonga-kit/`. The test binary itself never aborts.
//!
//! For fuzzing with cargo-fuzz, [`fuzz`] has the same idea driven by a fuzzer's bytes:
//! [`FormatFuzzer`](fuzz::FormatFuzzer) edits valid artifacts (lying lengths included), drains
//! lazy outputs, and replays a folder of crashes under `cargo test`.
//!
//! Limits: the allocation meter sees allocations on the checking thread only (not on
//! background threads a format starts, nor memory that C libraries such as SQLite or zstd take
//! from `malloc`); such an abort is still reported by the child process, with the case it was
//! in but without the mutation.

mod alloc;
mod decoder;
mod format;
pub mod fuzz;
mod isolate;
mod mutate;
mod options;
mod reads;
mod report;
mod resume;

use std::fmt::Debug;

use proptest::strategy::Strategy;

pub use alloc::{
    allocation_refused, meter_installed, record_allocation, AllocationLimit, DEFAULT_ALLOCATION_CAP,
};
pub use decoder::DecoderCheck;
pub use format::{Files, FormatCheck};
pub use reads::MeteredArtifact;
pub use report::{Check, Failure};
pub use resume::{Crash, Interrupted, Interruptible, ResumeCheck};

use crate::codec::Codec;
use crate::error::Result;
use crate::format::Format;
pub use crate::memory::MemoryArtifact;

/// Writes `value` with `format` into a fresh [`MemoryArtifact`] and returns the artifact.
///
/// # Errors
/// Whatever the format's `write` returns.
pub fn write_to_memory<T, F: Format<T>>(format: &F, value: T) -> Result<MemoryArtifact> {
    let artifact = MemoryArtifact::new();
    format.write(value, &artifact)?;
    Ok(artifact)
}

/// Writes `value` with `format` and reads it back.
///
/// # Errors
/// Whatever the format's `write` or `read` returns.
pub fn roundtrip<T, F: Format<T>>(format: &F, value: T) -> Result<F::Output> {
    let artifact = write_to_memory(format, value)?;
    format.read(artifact.handle())
}

/// Runs every check of [`FormatCheck`] on `format` with values from `strategy`.
///
/// # Panics
/// With a report of the first broken contract.
#[track_caller]
pub fn check_format<T, F, S>(format: &F, strategy: S)
where
    F: Format<T, Output = T>,
    S: Strategy<Value = T>,
    T: Clone + PartialEq + Debug,
{
    FormatCheck::new(format, strategy).assert();
}

/// Runs every check of [`FormatCheck`] on a format with a lazy output: `make` turns a
/// generated value into what is written, `collect` turns what is read into a value to compare
/// (see [`FormatCheck::lazy`]).
///
/// # Panics
/// With a report of the first broken contract.
#[track_caller]
pub fn check_lazy_format<'a, T, F, S>(
    format: &'a F,
    strategy: S,
    make: impl Fn(&S::Value) -> T + 'a,
    collect: impl Fn(F::Output) -> Result<S::Value> + 'a,
) where
    F: Format<T>,
    S: Strategy,
    S::Value: PartialEq + Debug,
{
    FormatCheck::lazy(format, strategy, make, collect).assert();
}

/// Checks only that reading what `format` wrote gives an equal value.
///
/// # Panics
/// With a report of the first failure.
#[track_caller]
pub fn check_roundtrip<T, F, S>(format: &F, strategy: S)
where
    F: Format<T, Output = T>,
    S: Strategy<Value = T>,
    T: Clone + PartialEq + Debug,
{
    FormatCheck::new(format, strategy)
        .with_only(&[Check::RoundTrip])
        .assert();
}

/// Checks only that `format` writes the same bytes and content ids for the same value.
///
/// # Panics
/// With a report of the first failure.
#[track_caller]
pub fn check_determinism<T, F, S>(format: &F, strategy: S)
where
    F: Format<T, Output = T>,
    S: Strategy<Value = T>,
    T: Clone + PartialEq + Debug,
{
    FormatCheck::new(format, strategy)
        .with_only(&[Check::Determinism])
        .assert();
}

/// Checks only that `format` reads bad files (truncated, mutated, random, missing) without a
/// panic or an unbounded allocation, and refuses truncated and missing files.
///
/// # Panics
/// With a report of the first failure.
#[track_caller]
pub fn check_rejection<T, F, S>(format: &F, strategy: S)
where
    F: Format<T, Output = T>,
    S: Strategy<Value = T>,
    T: Clone + PartialEq + Debug,
{
    FormatCheck::new(format, strategy)
        .with_only(&[Check::NoPanic, Check::Rejection, Check::Allocation])
        .assert();
}

/// Checks only that `format` refuses a payload of `version() + 1` with `UnsupportedVersion`.
///
/// # Panics
/// With a report of the first failure.
#[track_caller]
pub fn check_version_skew<T, F, S>(format: &F, strategy: S)
where
    F: Format<T, Output = T>,
    S: Strategy<Value = T>,
    T: Clone + PartialEq + Debug,
{
    FormatCheck::new(format, strategy)
        .with_only(&[Check::VersionSkew])
        .assert();
}

/// Runs every check of [`DecoderCheck::codec`] on `codec` with values from `strategy`:
/// round-trip, determinism, appending encode, `decode_into`, and no panic or unbounded
/// allocation on bad bytes.
///
/// # Panics
/// With a report of the first broken contract.
#[track_caller]
pub fn check_codec<T, C, S>(codec: &C, strategy: S)
where
    C: Codec<T> + ?Sized,
    S: Strategy<Value = T>,
    T: PartialEq + Debug,
{
    DecoderCheck::codec(codec, strategy).assert();
}

/// Runs every check of [`DecoderCheck`] on a pair of functions.
///
/// # Panics
/// With a report of the first broken contract.
#[track_caller]
pub fn check_decoder<S>(
    strategy: S,
    encode: impl Fn(&S::Value) -> Result<Vec<u8>>,
    decode: impl Fn(&[u8]) -> Result<S::Value>,
) where
    S: Strategy,
    S::Value: PartialEq + Debug,
{
    DecoderCheck::new(strategy, encode, decode).assert();
}

/// Runs the crash kit ([`ResumeCheck`]) on a resumable format with lists of items from
/// `strategy`: every write interrupted after every item (so at every chunk boundary) by an
/// error and by a panic, resumed after `durable_items`, must read back all the items and give
/// the same files as an uninterrupted write. `make` turns the kit's [`Interruptible`] items
/// into the format's input (for a stream format: `Stream::try_new`), `collect` turns what is
/// read into the items.
///
/// # Panics
/// With a report of the first broken contract.
#[track_caller]
pub fn check_resume<'a, I, T, F, S>(
    format: &'a F,
    strategy: S,
    make: impl Fn(Interruptible<I>) -> T + 'a,
    collect: impl Fn(F::Output) -> Result<Vec<I>> + 'a,
) where
    F: Format<T>,
    S: Strategy<Value = Vec<I>>,
    I: Clone + PartialEq + Debug,
{
    ResumeCheck::new(format, strategy, make, collect).assert();
}

/// Generates a module of `#[test]`s, one per check, for a format whose output is the value:
///
/// ```ignore
/// milonga_sdk::format_tests!(u64_format, U64Format, proptest::prelude::any::<u64>());
/// ```
///
/// makes `u64_format::{roundtrip, determinism, rejection, version_skew}`, so that each check
/// passes or fails on its own and they run in parallel.
///
/// For a format with a lazy output (a stream, a sequence, an index), say `lazy` and how to
/// make what is written from a generated value and how to collect what is read back into one
/// (as [`check_lazy_format`]); this adds `no_panic`:
///
/// ```ignore
/// milonga_sdk::format_tests!(
///     my_sequence,
///     lazy MySequenceFormat,
///     proptest::collection::vec(any::<u64>(), 0..500),
///     make = Clone::clone,
///     collect = |out: MySequence| (0..out.len()).map(|i| out.get(i)).collect(),
/// );
/// ```
#[macro_export]
macro_rules! format_tests {
    ($name:ident, lazy $format:expr, $strategy:expr, make = $make:expr, collect = $collect:expr $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn check(check: $crate::testing::Check) {
                $crate::testing::FormatCheck::lazy(&$format, $strategy, $make, $collect)
                    .with_only(&[check])
                    .assert();
            }

            #[test]
            fn roundtrip() {
                check($crate::testing::Check::RoundTrip);
            }

            #[test]
            fn determinism() {
                check($crate::testing::Check::Determinism);
            }

            #[test]
            fn rejection() {
                check($crate::testing::Check::Rejection);
            }

            #[test]
            fn no_panic() {
                check($crate::testing::Check::NoPanic);
            }

            #[test]
            fn version_skew() {
                check($crate::testing::Check::VersionSkew);
            }
        }
    };
    ($name:ident, $format:expr, $strategy:expr $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn roundtrip() {
                $crate::testing::check_roundtrip(&$format, $strategy);
            }

            #[test]
            fn determinism() {
                $crate::testing::check_determinism(&$format, $strategy);
            }

            #[test]
            fn rejection() {
                $crate::testing::check_rejection(&$format, $strategy);
            }

            #[test]
            fn version_skew() {
                $crate::testing::check_version_skew(&$format, $strategy);
            }
        }
    };
}
