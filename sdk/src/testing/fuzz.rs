//! Structure-aware fuzzing of any [`Format`] (feature `testing`).
//!
//! A fuzzer that puts its bytes straight into an artifact spends its time failing the
//! envelope: random bytes rarely start with a valid header. [`FormatFuzzer`] instead starts
//! from **valid artifacts** (written from seed values you give, or from a value the fuzzer's
//! bytes make through [`arbitrary`]) and lets the fuzzer's bytes **edit** them: bit flips,
//! truncations, insertions, removals, splices from another file, dropped files, and **lying
//! length fields** (a little-endian `u16`/`u32`/`u64` overwritten with a huge value or its
//! neighbour, off by one). Then it reads the artifact, drains a lazy output by iteration and by
//! random access, and checks read → write → read. It never lets a lying length take the
//! machine down: with [`allocation_meter!`](crate::allocation_meter) installed, a decode that
//! makes one allocation over the [`AllocationLimit`] fails, and one over the cap (1 GiB) is
//! refused, which aborts with a message naming the input (a crash libFuzzer saves).
//!
//! A cargo-fuzz target is a few lines:
//!
//! ```ignore
//! #![no_main]
//! use std::sync::LazyLock;
//! use milonga_sdk::testing::fuzz::FormatFuzzer;
//!
//! milonga_sdk::allocation_meter!();
//!
//! static FUZZER: LazyLock<FormatFuzzer<Vec<u16>, MyFormat>> = LazyLock::new(|| {
//!     FormatFuzzer::new(MyFormat).with_seeds([vec![], vec![1, 2, 3], (0..300).collect()])
//! });
//!
//! libfuzzer_sys::fuzz_target!(|data: &[u8]| FUZZER.run(data));
//! ```
//!
//! and the same fuzzer replays a folder of crashes under plain `cargo test`
//! ([`FormatFuzzer::replay_dir`]), and writes a seed corpus for libFuzzer
//! ([`FormatFuzzer::write_seed_corpus`]).
//!
//! # The input
//!
//! The first byte picks how the artifact is made: `0` (mod 4): the rest of the input is a list
//! of files in the raw encoding of [`encode_files`]; `3`: a value is made from the input with
//! `arbitrary` (when [`with_arbitrary_values`](FormatFuzzer::with_arbitrary_values) is on) and
//! written; otherwise the next byte picks a seed. The rest of the input is a list of edits to
//! the files, and bit 2 of the first byte applies the [`with_fixup`](FormatFuzzer::with_fixup)
//! hook after them (to recompute a checksum, so that the fuzzer reaches the checks behind it).

use std::fmt::{self, Debug, Write as _};
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};

use super::alloc::{
    metered_capped, with_context, AllocationLimit, Context, DEFAULT_ALLOCATION_CAP,
};
use super::format::Files;
use super::report::{no_panic, short_debug, Check, Failure};
use crate::envelope::Envelope;
use crate::error::Result;
use crate::format::Format;
use crate::memory::MemoryArtifact;

type Make<T, V> = Box<dyn Fn(&V) -> T + Send + Sync>;
type Collect<O, V> = Box<dyn Fn(O) -> Result<V> + Send + Sync>;
type Access<O> = Box<dyn Fn(&O, u64) -> std::result::Result<(), String> + Send + Sync>;
type FromInput<V> = Box<dyn Fn(&mut Unstructured<'_>) -> arbitrary::Result<V> + Send + Sync>;
type Fixup = Box<dyn Fn(&mut Files) + Send + Sync>;

/// The most edits one input applies.
const MAX_EDITS: usize = 32;

/// Values that length and count fields love to be trusted with.
const LIES: [u64; 10] = [
    u64::MAX,
    u64::MAX / 2,
    1 << 56,
    1 << 40,
    u32::MAX as u64,
    i32::MAX as u64,
    1 << 24,
    0xFFFF,
    0x8000,
    0,
];

/// Fuzzes a [`Format`] from valid artifacts edited by the fuzzer's bytes; see the
/// [module documentation](self).
///
/// `T` is what the format writes, `F` the format, `V` a comparable value (for a format whose
/// output is the value, `V` is `T`): `make(&v)` is what is written, `collect(output)` turns what
/// is read back into a `V`.
pub struct FormatFuzzer<T, F: Format<T>, V = T> {
    format: F,
    make: Make<T, V>,
    collect: Collect<F::Output, V>,
    access: Option<Access<F::Output>>,
    seeds: Vec<Files>,
    from_input: Option<FromInput<V>>,
    fixup: Option<Fixup>,
    compare: bool,
    limit: AllocationLimit,
    cap: usize,
}

impl<T, F> FormatFuzzer<T, F, T>
where
    F: Format<T, Output = T>,
    T: Clone + PartialEq + Debug + 'static,
{
    /// A fuzzer of a format whose output is the value itself.
    pub fn new(format: F) -> Self {
        FormatFuzzer::lazy(format, T::clone, Ok)
    }
}

impl<T, F, V> FormatFuzzer<T, F, V>
where
    F: Format<T>,
    V: PartialEq + Debug,
{
    /// A fuzzer of a format whose output is a lazy handle (a stream, a sequence, a table
    /// reader): `make(&v)` is what is written for a value `v`, and `collect` reads an output
    /// completely into a value (an error from any item is an error of the whole read).
    pub fn lazy(
        format: F,
        make: impl Fn(&V) -> T + Send + Sync + 'static,
        collect: impl Fn(F::Output) -> Result<V> + Send + Sync + 'static,
    ) -> Self {
        FormatFuzzer {
            format,
            make: Box::new(make),
            collect: Box::new(collect),
            access: None,
            seeds: Vec::new(),
            from_input: None,
            fixup: None,
            compare: true,
            limit: AllocationLimit::default(),
            cap: DEFAULT_ALLOCATION_CAP,
        }
    }

    /// Adds a seed: the artifact `value` is written to, which the fuzzer's edits start from.
    ///
    /// # Panics
    /// If the format cannot write `value` (a seed must be valid).
    pub fn with_seed(mut self, value: V) -> Self {
        let artifact = MemoryArtifact::new();
        if let Err(e) = self.format.write((self.make)(&value), &artifact) {
            panic!(
                "FormatFuzzer: the seed {} does not write: {e}",
                short_debug(&value)
            );
        }
        self.seeds.push(artifact.snapshot());
        self
    }

    /// Adds a seed for each value (see [`with_seed`](Self::with_seed)). A few small values of
    /// different shapes (empty, one item, many) are better than one big one.
    ///
    /// # Panics
    /// If the format cannot write one of the values.
    pub fn with_seeds(self, values: impl IntoIterator<Item = V>) -> Self {
        values.into_iter().fold(self, Self::with_seed)
    }

    /// Also makes values from the fuzzer's bytes with [`arbitrary`] (first byte `3` mod 4), and
    /// edits the artifact they write. A value the format refuses to write is skipped.
    pub fn with_arbitrary_values(mut self) -> Self
    where
        V: for<'a> Arbitrary<'a> + 'static,
    {
        self.from_input = Some(Box::new(|u: &mut Unstructured<'_>| V::arbitrary(u)));
        self
    }

    /// Drains the output by random access too: `len` gives the number of items, `get` one item
    /// by index, `sequential` every item in order (by iterating). When all three succeed, they
    /// must agree: `len` is the number of items, `get(i)` (when it is not an error) is item
    /// `i`, and `get(len)` and `get(u64::MAX)` are errors. On bad bytes each may fail, but must
    /// not panic.
    pub fn with_random_access<I: PartialEq + Debug>(
        mut self,
        len: impl Fn(&F::Output) -> Result<u64> + Send + Sync + 'static,
        get: impl Fn(&F::Output, u64) -> Result<I> + Send + Sync + 'static,
        sequential: impl Fn(&F::Output) -> Result<Vec<I>> + Send + Sync + 'static,
    ) -> Self {
        self.access = Some(Box::new(move |out, salt| {
            random_access(out, salt, &len, &get, &sequential)
        }));
        self
    }

    /// A repair applied after the edits of inputs whose first byte has bit 2 set: recompute
    /// what the format protects with a checksum, so that the fuzzer reaches the checks behind
    /// it (inputs without the bit test the checksum itself).
    pub fn with_fixup(mut self, fixup: impl Fn(&mut Files) + Send + Sync + 'static) -> Self {
        self.fixup = Some(Box::new(fixup));
        self
    }

    /// Whether a value that reads, written again and read back, must be equal to itself
    /// (default `true`). Turn it off for values whose equality is not exact (floats that a text
    /// format prints to the nearest 17 digits); writing and reading again must still work.
    pub fn with_roundtrip_compare(mut self, compare: bool) -> Self {
        self.compare = compare;
        self
    }

    /// The largest single allocation a read may make, when a meter is installed (default: 4
    /// MiB plus 64 bytes per byte of input). Over it, [`check`](Self::check) fails with
    /// [`Check::Allocation`].
    pub fn with_allocation_limit(mut self, limit: AllocationLimit) -> Self {
        self.limit = limit;
        self
    }

    /// The largest single allocation the meter lets a read make at all (default 1 GiB): a
    /// bigger request is refused, which aborts the process with a message (a libFuzzer crash
    /// with the input saved), instead of swapping or asking the system for petabytes.
    pub fn with_allocation_cap(mut self, bytes: usize) -> Self {
        self.cap = bytes;
        self
    }

    /// The seeds' artifacts, in the order they were added.
    pub fn seeds(&self) -> &[Files] {
        &self.seeds
    }

    /// Runs one fuzz input, as a fuzz target does: panics when a contract is broken (a panic
    /// in the reader propagates where it happened, for libFuzzer's stack trace).
    ///
    /// # Panics
    /// When reading the artifact the input makes panics, allocates more than the limit, gives
    /// a lazy output that disagrees with itself, or gives a value that does not survive being
    /// written and read again.
    pub fn run(&self, data: &[u8]) {
        if let Err(failure) = self.exec(data, false) {
            panic!("{failure}");
        }
    }

    /// Runs one fuzz input and returns what broke, with panics caught (and silent).
    ///
    /// # Errors
    /// The [`Failure`]: which check, what happened, and how the artifact was made.
    pub fn check(&self, data: &[u8]) -> std::result::Result<(), Failure> {
        self.exec(data, true)
    }

    /// The files an input makes and how (seed, edits), without reading them: to see what a
    /// crashing input is. `None` for an input that makes no artifact.
    pub fn files_of(&self, data: &[u8]) -> Option<(Files, String)> {
        self.build(data).ok().flatten()
    }

    /// Inputs that make each seed unedited, in both encodings (a seed number, and its files in
    /// the raw encoding): a starting corpus.
    pub fn seed_inputs(&self) -> Vec<Vec<u8>> {
        let mut inputs = Vec::new();
        for (i, files) in self.seeds.iter().enumerate().take(256) {
            inputs.push(vec![1, i as u8]);
            inputs.push(encode_files(files));
        }
        inputs
    }

    /// Writes [`seed_inputs`](Self::seed_inputs) to `dir` (created if needed) as
    /// `seed-<n>` and `seed-<n>-raw`, and returns how many files it wrote.
    ///
    /// # Errors
    /// An I/O error, with the path.
    pub fn write_seed_corpus(&self, dir: impl AsRef<Path>) -> Result<usize> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir.display().to_string(), e))?;
        let inputs = self.seed_inputs();
        for (i, input) in inputs.iter().enumerate() {
            let suffix = if i % 2 == 0 { "" } else { "-raw" };
            let path = dir.join(format!("seed-{}{suffix}", i / 2));
            std::fs::write(&path, input)
                .map_err(|e| crate::Error::io(path.display().to_string(), e))?;
        }
        Ok(inputs.len())
    }

    /// Replays every file in `dir` (sorted by name) through [`check`](Self::check): the
    /// regression test for inputs that once crashed the fuzz target. Returns how many it
    /// replayed. Called from a `#[test]`, it replays in a child process (as the kit's checks
    /// do, see [`FormatCheck::with_isolation`](super::FormatCheck::with_isolation)), so that an input that
    /// still makes the reader ask for petabytes is a reported failure naming the file, not
    /// the end of the test binary.
    ///
    /// # Errors
    /// Every input that fails, with its path and the failure; or the directory's I/O error.
    pub fn replay_dir(&self, dir: impl AsRef<Path>) -> std::result::Result<usize, ReplayFailures> {
        replay_dir(dir, |data| {
            self.check(data).map_err(|f| f.to_string().into())
        })
    }

    /// Makes the files of an input: `Ok(None)` when the input makes no artifact, `Err` when
    /// writing a value made from the input panicked.
    fn build(&self, data: &[u8]) -> std::result::Result<Option<(Files, String)>, Failure> {
        let Some((&mode, rest)) = data.split_first() else {
            return Ok(None);
        };
        let source = mode & 3;
        if source == 0 || (self.seeds.is_empty() && self.from_input.is_none()) {
            return Ok(Some((
                decode_files(rest),
                "the files of the input".to_owned(),
            )));
        }
        let mut u = Unstructured::new(rest);
        let from_input = self
            .from_input
            .as_ref()
            .filter(|_| source == 3 || self.seeds.is_empty());
        let (mut files, mut how) = match from_input {
            Some(from_input) => {
                let Ok(value) = from_input(&mut u) else {
                    return Ok(None);
                };
                let artifact = MemoryArtifact::new();
                let written = match no_panic(|| self.format.write((self.make)(&value), &artifact)) {
                    Ok(w) => w,
                    Err(p) => {
                        return Err(Failure {
                            check: Check::Write,
                            message: format!("writing a value made by arbitrary panicked: {p}"),
                            input: short_debug(&value),
                        })
                    }
                };
                if written.is_err() {
                    return Ok(None);
                }
                (
                    artifact.snapshot(),
                    format!("the files of {}", short_debug(&value)),
                )
            }
            _ => {
                let pick = usize::from(u.arbitrary::<u8>().unwrap_or(0)) % self.seeds.len();
                (self.seeds[pick].clone(), format!("seed {pick}"))
            }
        };
        let mut edits = Vec::new();
        while !u.is_empty() && edits.len() < MAX_EDITS {
            match Edit::parse(&mut u) {
                Ok(e) => edits.push(e),
                Err(_) => break,
            }
        }
        for e in &edits {
            if let Some(what) = e.apply(&mut files) {
                let _ = write!(how, "; {what}");
            }
        }
        if mode & 4 == 4 {
            if let Some(fixup) = &self.fixup {
                fixup(&mut files);
                how.push_str("; fixed up");
            }
        }
        Ok(Some((files, how)))
    }

    fn exec(&self, data: &[u8], catch: bool) -> std::result::Result<(), Failure> {
        let (files, how) = match self.build(data) {
            Ok(Some(built)) => built,
            Ok(None) => return Ok(()),
            Err(f) => return Err(f),
        };
        let input_len: usize = files.iter().map(|(_, b)| b.len()).sum();
        let failure = |check, message: String| Failure {
            check,
            message,
            input: format!("{how} ({} input bytes: {})", data.len(), hex_head(data)),
        };
        let salt = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let artifact = MemoryArtifact::new();
        for (name, bytes) in &files {
            artifact.set_file(name, bytes.clone());
        }
        let read = || -> std::result::Result<Result<V>, String> {
            let out = match self.format.read(artifact.handle()) {
                Ok(out) => out,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(access) = &self.access {
                access(&out, salt)?;
            }
            Ok((self.collect)(out))
        };
        let context = Context {
            what: format!("the artifact made from the fuzz input: {how}"),
            files: Vec::new(),
        };
        let (r, largest) = with_context(context, || {
            metered_capped(self.cap, || {
                if catch {
                    no_panic(read).map_err(|p| (Check::NoPanic, format!("reading panicked: {p}")))
                } else {
                    Ok(read())
                }
            })
        });
        let limit = self.limit.for_input(input_len);
        if largest > limit {
            return Err(failure(
                Check::Allocation,
                format!(
                    "reading {input_len} bytes of files allocated {largest} bytes at once \
                     (limit {limit}): a length field was trusted"
                ),
            ));
        }
        let value = match r {
            Err((check, m)) => return Err(failure(check, m)),
            Ok(Err(m)) => return Err(failure(Check::RandomAccess, m)),
            Ok(Ok(Err(_))) => return Ok(()),
            Ok(Ok(Ok(value))) => value,
        };
        // What was read must survive being written and read again.
        let again = MemoryArtifact::new();
        let wrote = self.guard(catch, || self.format.write((self.make)(&value), &again));
        match wrote {
            Ok(Ok(())) => {}
            // A value the format refuses to write (it reads more than it writes): fine.
            Ok(Err(_)) => return Ok(()),
            Err(p) => {
                return Err(failure(
                    Check::Write,
                    format!(
                        "writing the value that was read ({}) panicked: {p}",
                        short_debug(&value)
                    ),
                ))
            }
        }
        let back = self.guard(catch, || (self.collect)(self.format.read(again.handle())?));
        match back {
            Ok(Ok(back)) if !self.compare || back == value => Ok(()),
            Ok(Ok(back)) => Err(failure(
                Check::RoundTrip,
                format!(
                    "read {}, which written and read again gave {}",
                    short_debug(&value),
                    short_debug(&back)
                ),
            )),
            Ok(Err(e)) => Err(failure(
                Check::RoundTrip,
                format!(
                    "read {}, which was written but did not read back: {e}",
                    short_debug(&value)
                ),
            )),
            Err(p) => Err(failure(
                Check::RoundTrip,
                format!(
                    "read {}, which was written, but reading it again panicked: {p}",
                    short_debug(&value)
                ),
            )),
        }
    }

    /// Runs `f`, with panics caught when `catch`.
    fn guard<R>(&self, catch: bool, f: impl FnOnce() -> R) -> std::result::Result<R, String> {
        if catch {
            no_panic(f)
        } else {
            Ok(f())
        }
    }
}

fn random_access<O, I: PartialEq + Debug>(
    out: &O,
    salt: u64,
    len: &dyn Fn(&O) -> Result<u64>,
    get: &dyn Fn(&O, u64) -> Result<I>,
    sequential: &dyn Fn(&O) -> Result<Vec<I>>,
) -> std::result::Result<(), String> {
    let n = len(out);
    let seq = sequential(out);
    let probe = |n: u64| {
        let mut at = vec![0, 1, n / 2, n.saturating_sub(1), n, u64::MAX];
        if n > 0 {
            at.extend([salt % n, (salt >> 32) % n]);
        }
        at
    };
    let (Ok(n), Ok(seq)) = (n, seq) else {
        // Bad bytes: the accessors may fail, only not panic (or allocate beyond the limit).
        let n = len(out).unwrap_or(16);
        for i in probe(n) {
            let _ = get(out, i);
        }
        return Ok(());
    };
    if n != seq.len() as u64 {
        return Err(format!(
            "len() says {n} items, iterating gave {} items",
            seq.len()
        ));
    }
    for i in probe(n) {
        match (
            get(out, i),
            usize::try_from(i).ok().and_then(|i| seq.get(i)),
        ) {
            (Ok(item), Some(expected)) if item != *expected => {
                return Err(format!(
                    "get({i}) gave {}, iterating gave {}",
                    short_debug(&item),
                    short_debug(expected)
                ))
            }
            (Ok(item), None) => {
                return Err(format!(
                    "get({i}) past the end ({n} items) gave {}",
                    short_debug(&item)
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// One change to the files of an artifact, parsed from fuzzer bytes.
#[derive(Debug, Clone, Copy)]
enum Edit {
    /// XOR a byte.
    Flip { file: u8, at: u32, xor: u8 },
    /// Keep the first `at % (len + 1)` bytes.
    Truncate { file: u8, at: u32 },
    /// Overwrite a little-endian word with a lie.
    Lie {
        file: u8,
        at: Place,
        width: u8,
        lie: Lie,
    },
    /// Insert `len` copies of a byte.
    Insert {
        file: u8,
        at: u32,
        byte: u8,
        len: u8,
    },
    /// Remove up to `len` bytes.
    Remove { file: u8, at: u32, len: u16 },
    /// Copy up to `len` bytes of one file into another (or the same) at a position.
    Splice {
        file: u8,
        at: u32,
        from: u8,
        from_at: u32,
        len: u16,
    },
    /// Remove a file.
    Drop { file: u8 },
}

/// Where a lie goes: anywhere, or a few bytes after the envelope (where headers keep their
/// counts).
#[derive(Debug, Clone, Copy)]
enum Place {
    Anywhere(u32),
    AfterEnvelope(u8),
}

#[derive(Debug, Clone, Copy)]
enum Lie {
    Huge(u8),
    PlusOne,
    MinusOne,
    Value(u64),
}

impl Edit {
    fn parse(u: &mut Unstructured<'_>) -> arbitrary::Result<Edit> {
        let tag: u8 = u.arbitrary()?;
        let file: u8 = u.arbitrary()?;
        Ok(match tag % 8 {
            0 => Edit::Flip {
                file,
                at: u.arbitrary()?,
                xor: u.arbitrary::<u8>()?.max(1),
            },
            1 => Edit::Truncate {
                file,
                at: u.arbitrary()?,
            },
            2 | 3 => {
                let at = if tag % 8 == 2 {
                    Place::Anywhere(u.arbitrary()?)
                } else {
                    Place::AfterEnvelope(u.arbitrary()?)
                };
                let width = [2, 4, 8][usize::from(u.arbitrary::<u8>()? % 3)];
                let lie = match u.arbitrary::<u8>()? % 4 {
                    0 => Lie::Huge(u.arbitrary()?),
                    1 => Lie::PlusOne,
                    2 => Lie::MinusOne,
                    _ => Lie::Value(u.arbitrary()?),
                };
                Edit::Lie {
                    file,
                    at,
                    width,
                    lie,
                }
            }
            4 => Edit::Insert {
                file,
                at: u.arbitrary()?,
                byte: u.arbitrary()?,
                len: u.arbitrary::<u8>()? % 32,
            },
            5 => Edit::Remove {
                file,
                at: u.arbitrary()?,
                len: u.arbitrary()?,
            },
            6 => Edit::Splice {
                file,
                at: u.arbitrary()?,
                from: u.arbitrary()?,
                from_at: u.arbitrary()?,
                len: u.arbitrary()?,
            },
            _ => Edit::Drop { file },
        })
    }

    /// Applies the edit and says what it did (`None` when there was nothing to edit).
    fn apply(self, files: &mut Files) -> Option<String> {
        let n = files.len();
        if n == 0 {
            return None;
        }
        let pick = |f: u8| usize::from(f) % n;
        let pos = |at: u32, len: usize| -> usize {
            if len == 0 {
                0
            } else {
                at as usize % len
            }
        };
        match self {
            Edit::Flip { file, at, xor } => {
                let (name, bytes) = &mut files[pick(file)];
                let len = bytes.len();
                let at = pos(at, len);
                let b = bytes.get_mut(at)?;
                *b ^= xor;
                Some(format!("{name:?}: byte {at} ^= {xor:#04x}"))
            }
            Edit::Truncate { file, at } => {
                let (name, bytes) = &mut files[pick(file)];
                let keep = at as usize % (bytes.len() + 1);
                let was = bytes.len();
                bytes.truncate(keep);
                Some(format!("{name:?}: cut to {keep} of {was} bytes"))
            }
            Edit::Lie {
                file,
                at,
                width,
                lie,
            } => {
                let (name, bytes) = &mut files[pick(file)];
                let width = usize::from(width);
                if bytes.len() < width {
                    return None;
                }
                let room = bytes.len() - width + 1;
                let at = match at {
                    Place::Anywhere(a) => a as usize % room,
                    Place::AfterEnvelope(k) => {
                        let start = Envelope::decode(bytes, "")
                            .map(|(e, _)| e.encoded_len())
                            .unwrap_or(0);
                        (start + usize::from(k)) % room
                    }
                };
                let mut word = [0u8; 8];
                word[..width].copy_from_slice(&bytes[at..at + width]);
                let old = u64::from_le_bytes(word);
                let new = match lie {
                    Lie::Huge(i) => LIES[usize::from(i) % LIES.len()],
                    Lie::PlusOne => old.wrapping_add(1),
                    Lie::MinusOne => old.wrapping_sub(1),
                    Lie::Value(v) => v,
                };
                let new = if width == 8 {
                    new
                } else {
                    new & ((1u64 << (8 * width)) - 1)
                };
                bytes[at..at + width].copy_from_slice(&new.to_le_bytes()[..width]);
                Some(format!(
                    "{name:?}: the {}-bit word at {at} set to {new:#x} (was {old:#x})",
                    width * 8
                ))
            }
            Edit::Insert {
                file,
                at,
                byte,
                len,
            } => {
                let (name, bytes) = &mut files[pick(file)];
                let at = pos(at, bytes.len() + 1);
                bytes.splice(at..at, std::iter::repeat_n(byte, usize::from(len)));
                Some(format!(
                    "{name:?}: {len} bytes {byte:#04x} inserted at {at}"
                ))
            }
            Edit::Remove { file, at, len } => {
                let (name, bytes) = &mut files[pick(file)];
                let at = pos(at, bytes.len());
                let end = (at + usize::from(len)).min(bytes.len());
                bytes.drain(at..end);
                Some(format!("{name:?}: bytes {at}..{end} removed"))
            }
            Edit::Splice {
                file,
                at,
                from,
                from_at,
                len,
            } => {
                let (from_name, src) = &files[pick(from)];
                let from_name = from_name.clone();
                let start = pos(from_at, src.len());
                let end = (start + usize::from(len)).min(src.len());
                let piece = src[start..end].to_vec();
                let (name, bytes) = &mut files[pick(file)];
                let at = pos(at, bytes.len() + 1);
                bytes.splice(at..at, piece);
                Some(format!(
                    "{name:?}: bytes {start}..{end} of {from_name:?} inserted at {at}"
                ))
            }
            Edit::Drop { file } => {
                let (name, _) = files.remove(pick(file));
                Some(format!("{name:?} removed"))
            }
        }
    }
}

/// The raw encoding of a list of files, as a fuzz input (first byte `0`): for each file, a
/// `u8` name length, the name, a `u32` little-endian length and the bytes.
pub fn encode_files(files: &Files) -> Vec<u8> {
    let mut out = vec![0];
    for (name, bytes) in files {
        let name = &name.as_bytes()[..name.len().min(255)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&bytes[..bytes.len().min(u32::MAX as usize)]);
    }
    out
}

/// Reads files in the raw encoding (without the first byte), forgiving: lengths past the end
/// are cut to what is there.
fn decode_files(mut rest: &[u8]) -> Files {
    let mut files = Vec::new();
    while let Some((&name_len, tail)) = rest.split_first() {
        let name_len = usize::from(name_len).min(tail.len());
        let (name, tail) = tail.split_at(name_len);
        let mut len = [0u8; 4];
        let have = tail.len().min(4);
        len[..have].copy_from_slice(&tail[..have]);
        let tail = &tail[have..];
        let len = (u32::from_le_bytes(len) as usize).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        files.push((String::from_utf8_lossy(name).into_owned(), bytes.to_vec()));
        rest = tail;
        if files.len() >= 64 {
            break;
        }
    }
    files
}

fn hex_head(data: &[u8]) -> String {
    let mut s: String = data.iter().take(64).map(|b| format!("{b:02x}")).collect();
    if data.len() > 64 {
        s.push('…');
    }
    s
}

/// The inputs of a folder that failed on replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayFailures {
    /// Each failing input (or the folder, when it could not be read) and what happened.
    pub failures: Vec<(PathBuf, String)>,
}

impl fmt::Display for ReplayFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} input(s) fail:", self.failures.len())?;
        for (path, message) in &self.failures {
            write!(f, "\n- {}: {message}", path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ReplayFailures {}

/// Replays every file in `dir` (sorted by name) through `body`, which fails by returning an
/// error or by panicking (caught, and silent); returns how many files it replayed. For fuzz
/// targets that are not a [`FormatFuzzer`]; a [`FormatFuzzer`] has
/// [`replay_dir`](FormatFuzzer::replay_dir).
///
/// Called from a `#[test]`, it replays in a child process (as the kit's checks do, see
/// [`FormatCheck::with_isolation`](super::FormatCheck::with_isolation)), so that an input that makes the
/// process abort (an allocation refused by the meter of
/// [`allocation_meter!`](crate::allocation_meter), a stack overflow) is a reported failure
/// naming the file, not the end of the test binary.
///
/// # Errors
/// Every file that fails, with its path and message; or the folder's I/O error.
pub fn replay_dir(
    dir: impl AsRef<Path>,
    body: impl Fn(&[u8]) -> std::result::Result<(), crate::BoxError>,
) -> std::result::Result<usize, ReplayFailures> {
    let dir = dir.as_ref();
    let mut replayed = None;
    let result =
        super::isolate::isolated(true, |report| match replay_dir_noting(dir, report, &body) {
            Ok(n) => {
                replayed = Some(n);
                Ok(())
            }
            Err(failures) => Err(Failure {
                check: Check::NoPanic,
                message: failures.to_string(),
                input: String::new(),
            }),
        });
    match (result, replayed) {
        (Ok(()), Some(n)) => Ok(n),
        // The replay ran in a child: count here.
        (Ok(()), None) => Ok(input_files(dir)?.len()),
        (Err(f), _) => Err(ReplayFailures {
            failures: vec![(dir.to_owned(), f.to_string())],
        }),
    }
}

/// The files in `dir`, sorted.
fn input_files(dir: &Path) -> std::result::Result<Vec<PathBuf>, ReplayFailures> {
    let one = |message: String| ReplayFailures {
        failures: vec![(dir.to_owned(), message)],
    };
    let entries = std::fs::read_dir(dir).map_err(|e| one(e.to_string()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| one(e.to_string()))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            paths.push(entry.path());
        }
    }
    paths.sort();
    Ok(paths)
}

/// [`replay_dir`], noting each file for the parent when running in a child.
fn replay_dir_noting(
    dir: &Path,
    report: Option<&Path>,
    body: impl Fn(&[u8]) -> std::result::Result<(), crate::BoxError>,
) -> std::result::Result<usize, ReplayFailures> {
    let paths = input_files(dir)?;
    let mut failures = Vec::new();
    for path in &paths {
        if let Some(report) = report {
            super::isolate::note_case(report, &format!("the input {}", path.display()));
        }
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) => {
                failures.push((path.clone(), e.to_string()));
                continue;
            }
        };
        match no_panic(|| body(&data)) {
            Ok(Ok(())) => {}
            Ok(Err(m)) => failures.push((path.clone(), m.to_string())),
            Err(p) => failures.push((path.clone(), format!("panicked: {p}"))),
        }
    }
    if failures.is_empty() {
        Ok(paths.len())
    } else {
        Err(ReplayFailures { failures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_files_round_trip() {
        let files: Files = vec![("a".into(), vec![1, 2, 3]), ("dir/b".into(), vec![])];
        let encoded = encode_files(&files);
        assert_eq!(encoded[0], 0);
        assert_eq!(decode_files(&encoded[1..]), files);
    }

    #[test]
    fn a_lie_after_the_envelope_overwrites_the_first_payload_word() {
        let mut bytes = Vec::new();
        Envelope::new("f", 1).encode_into(&mut bytes).unwrap();
        let start = bytes.len();
        bytes.extend_from_slice(&5u64.to_le_bytes());
        let mut files: Files = vec![("data".into(), bytes)];
        let edit = Edit::Lie {
            file: 0,
            at: Place::AfterEnvelope(0),
            width: 8,
            lie: Lie::Huge(0),
        };
        let what = edit.apply(&mut files).expect("applied");
        assert_eq!(&files[0].1[start..], &u64::MAX.to_le_bytes());
        assert!(what.contains("0xffffffffffffffff"), "{what}");
        let plus = Edit::Lie {
            file: 0,
            at: Place::AfterEnvelope(0),
            width: 8,
            lie: Lie::PlusOne,
        };
        plus.apply(&mut files).expect("applied");
        assert_eq!(&files[0].1[start..], &0u64.to_le_bytes());
    }

    #[test]
    fn edits_never_panic_on_any_files() {
        let mut rng = super::super::mutate::Rng::new(3);
        for _ in 0..2000 {
            let bytes = rng.bytes(24);
            let mut u = Unstructured::new(&bytes);
            let Ok(edit) = Edit::parse(&mut u) else {
                continue;
            };
            let n = rng.below(12);
            let mut files: Files = vec![("a".into(), rng.bytes(n)), ("b".into(), Vec::new())];
            let _ = edit.apply(&mut files);
        }
    }
}
