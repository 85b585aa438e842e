//! Checks for byte-level decoders and [`Codec`]s.

use std::fmt::Debug;

use proptest::strategy::Strategy;

use super::alloc::{metered_capped, with_context, Context};
use super::mutate::{mutants, Expect};
use super::options::{option_setters, Options};
use super::report::{fail, no_panic, run_cases, short_debug, CaseFailure, Check, Failure};
use crate::artifact::ContentId;
use crate::codec::Codec;
use crate::error::{Error, Result};

type Encode<'a, V> = Box<dyn Fn(&V) -> Result<Vec<u8>> + 'a>;
type Decode<'a, V> = Box<dyn Fn(&[u8]) -> Result<V> + 'a>;
type Extra<'a, V> = Box<dyn Fn(&V, &[u8]) -> Result<(), String> + 'a>;
type Newer<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;

/// Checks a pair of functions `encode: &V → bytes` and `decode: bytes → V` (a header, an
/// index, a manifest: any decoder that is not a whole [`Format`](crate::Format)):
///
/// - round-trip: `decode(encode(v)) == v`;
/// - determinism: `encode(v)` gives the same bytes (and content id) every time;
/// - rejection: truncated, bit-flipped, lying-length and random bytes never panic and never
///   allocate beyond the [`AllocationLimit`](super::AllocationLimit); with
///   [`truncation_must_fail`](Self::truncation_must_fail), every truncation is an error;
/// - version skew, where [`with_newer_version`](Self::with_newer_version) says how to make the bytes of
///   a newer layout: they give [`Error::UnsupportedVersion`].
///
/// ```
/// use milonga_sdk::testing::DecoderCheck;
/// use milonga_sdk::{Envelope, Error};
/// use proptest::prelude::*;
///
/// DecoderCheck::new(
///     ("[a-z.]{1,20}", any::<u32>()),
///     |(id, v): &(String, u32)| {
///         let mut out = Vec::new();
///         Envelope::new(id, *v).encode_into(&mut out)?;
///         Ok(out)
///     },
///     |bytes: &[u8]| {
///         let (env, rest) = Envelope::decode(bytes, "header")?;
///         if !rest.is_empty() {
///             return Err(Error::corrupt("header", 0, "trailing bytes"));
///         }
///         Ok((env.format_id, env.format_version))
///     },
/// )
/// .with_truncation_must_fail(true)
/// .with_newer_version(|bytes| bytes[4] += 1) // the envelope layout version
/// .with_cases(16)
/// .assert();
/// ```
pub struct DecoderCheck<'a, S: Strategy> {
    strategy: S,
    encode: Encode<'a, S::Value>,
    decode: Decode<'a, S::Value>,
    extra: Option<Extra<'a, S::Value>>,
    newer: Option<Newer<'a>>,
    options: Options,
}

impl<'a, S> DecoderCheck<'a, S>
where
    S: Strategy,
    S::Value: PartialEq + Debug,
{
    /// A check of `encode` and `decode` with values from `strategy`. Truncations only need to
    /// not panic unless [`truncation_must_fail`](Self::truncation_must_fail) is set.
    pub fn new(
        strategy: S,
        encode: impl Fn(&S::Value) -> Result<Vec<u8>> + 'a,
        decode: impl Fn(&[u8]) -> Result<S::Value> + 'a,
    ) -> Self {
        DecoderCheck {
            strategy,
            encode: Box::new(encode),
            decode: Box::new(decode),
            extra: None,
            newer: None,
            options: Options::new(false),
        }
    }

    /// How to turn valid bytes into bytes of a newer layout version (for example: increment
    /// the version byte); the decoder must refuse them with [`Error::UnsupportedVersion`].
    pub fn with_newer_version(&mut self, bump: impl Fn(&mut Vec<u8>) + 'a) -> &mut Self {
        self.newer = Some(Box::new(bump));
        self
    }

    /// The old name of [`with_newer_version`](Self::with_newer_version).
    #[deprecated(note = "the kit's setters are named `with_*`: use `with_newer_version`")]
    #[doc(hidden)]
    pub fn newer_version(&mut self, bump: impl Fn(&mut Vec<u8>) + 'a) -> &mut Self {
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

    fn case(&self, value: &S::Value, seed: u64) -> Result<(), CaseFailure> {
        let o = &self.options;
        let good = match no_panic(|| (self.encode)(value)) {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return fail(Check::Write, format!("encoding failed: {e}")),
            Err(p) => return fail(Check::Write, format!("encoding panicked: {p}")),
        };
        if o.runs(Check::Determinism) {
            let again = no_panic(|| (self.encode)(value));
            if !matches!(&again, Ok(Ok(b)) if *b == good) {
                return fail(
                    Check::Determinism,
                    format!(
                        "encoding the same value twice gave different bytes: {} then {}",
                        hex_summary(&good),
                        match &again {
                            Ok(Ok(b)) => hex_summary(b),
                            Ok(Err(e)) => format!("an error: {e}"),
                            Err(p) => format!("a panic: {p}"),
                        }
                    ),
                );
            }
            let ids = (ContentId::of(&good), again.ok().and_then(|r| r.ok()));
            if ids.1.map(|b| ContentId::of(&b)) != Some(ids.0) {
                return fail(Check::Determinism, "the content ids differ");
            }
        }
        if o.runs(Check::RoundTrip) {
            match self.decode_guarded(&good, "the valid encoding")? {
                Ok(back) if back == *value => {}
                Ok(back) => {
                    return fail(
                        Check::RoundTrip,
                        format!("decoded {} instead", short_debug(&back)),
                    )
                }
                Err(e) => return fail(Check::RoundTrip, format!("decoding failed: {e}")),
            }
            if let Some(extra) = &self.extra {
                if let Err(m) = no_panic(|| extra(value, &good)).unwrap_or_else(Err) {
                    return fail(Check::RoundTrip, m);
                }
            }
        }
        if o.mutates() {
            for m in mutants(&good, seed, o.plan()) {
                let what = format!("bytes {}", m.what);
                let r = self.decode_guarded(&m.bytes, &what)?;
                if m.expect == Expect::Err && o.runs(Check::Rejection) {
                    if let Ok(v) = r {
                        return fail(
                            Check::Rejection,
                            format!("{what}: decoded to {} instead of an error", short_debug(&v)),
                        );
                    }
                }
            }
        }
        if let (Some(bump), true) = (&self.newer, o.runs(Check::VersionSkew)) {
            let mut newer = good.clone();
            bump(&mut newer);
            match self.decode_guarded(&newer, "bytes of a newer version")? {
                Err(Error::UnsupportedVersion { .. }) => {}
                other => {
                    return fail(
                        Check::VersionSkew,
                        format!(
                            "bytes of a newer version gave {} instead of UnsupportedVersion",
                            describe_result(&other)
                        ),
                    )
                }
            }
        }
        Ok(())
    }

    /// Decodes `bytes` with panics caught and allocations metered.
    fn decode_guarded(&self, bytes: &[u8], what: &str) -> Result<Result<S::Value>, CaseFailure> {
        let context = Context {
            what: what.to_owned(),
            files: vec![("bytes".to_owned(), bytes.to_vec())],
        };
        let (r, largest) = with_context(context, || {
            metered_capped(self.options.allocation_cap, || {
                no_panic(|| (self.decode)(bytes))
            })
        });
        let limit = self.options.allocation.for_input(bytes.len());
        if largest > limit && self.options.runs(Check::Allocation) {
            return fail(
                Check::Allocation,
                format!(
                    "decoding {what} ({} bytes) allocated {largest} bytes at once (limit {limit})",
                    bytes.len()
                ),
            );
        }
        match r {
            Ok(r) => Ok(r),
            Err(p) if self.options.runs(Check::NoPanic) => {
                fail(Check::NoPanic, format!("decoding {what} panicked: {p}"))
            }
            Err(p) => Ok(Err(Error::decode(format!("panicked: {p}")))),
        }
    }
}

impl<'a, S> DecoderCheck<'a, S>
where
    S: Strategy + 'a,
    S::Value: PartialEq + Debug,
{
    /// The checks of a [`Codec`]: those of [`DecoderCheck`] on `codec.encode` and
    /// `codec.decode`, plus: `encode` appends to a non-empty buffer without touching what is
    /// there, and `decode_into` gives the same value as `decode`.
    pub fn codec<C: Codec<S::Value> + ?Sized>(codec: &'a C, strategy: S) -> Self {
        let mut check = DecoderCheck::new(
            strategy,
            move |v: &S::Value| {
                let mut out = Vec::new();
                codec.encode(v, &mut out)?;
                Ok(out)
            },
            move |bytes: &[u8]| codec.decode(bytes),
        );
        check.extra = Some(Box::new(move |v: &S::Value, good: &[u8]| {
            let prefix = b"\x00prefix\xff";
            let mut out = prefix.to_vec();
            codec
                .encode(v, &mut out)
                .map_err(|e| format!("encoding after a prefix failed: {e}"))?;
            if out.get(..prefix.len()) != Some(&prefix[..]) || out.get(prefix.len()..) != Some(good)
            {
                return Err("encode into a non-empty buffer did not append the same bytes".into());
            }
            let mut slot = codec
                .decode(good)
                .map_err(|e| format!("decoding failed: {e}"))?;
            codec
                .decode_into(good, &mut slot)
                .map_err(|e| format!("decode_into failed: {e}"))?;
            if slot != *v {
                return Err(format!("decode_into gave {}", short_debug(&slot)));
            }
            Ok(())
        }));
        check
    }
}

fn hex_summary(b: &[u8]) -> String {
    let head: String = b.iter().take(32).map(|x| format!("{x:02x}")).collect();
    if b.len() > 32 {
        format!("{head}… ({} bytes)", b.len())
    } else {
        format!("{head} ({} bytes)", b.len())
    }
}

pub(crate) fn describe_result<V: Debug>(r: &Result<V>) -> String {
    match r {
        Ok(v) => format!("Ok({})", short_debug(v)),
        Err(e) => format!("Err({e})"),
    }
}
