//! Canonical encoding of step arguments for step unique_ids (scheme [`SCHEME`] = `milonga.id.v1`).
//!
//! [`canonical`] turns any `T: Serialize` into a canonical, type-tagged byte stream: equal argument
//! values give equal bytes in every process, on every platform and in every release, whatever the
//! iteration order of their maps and sets, the width of their integers or the declaration order of
//! their struct fields. The step id hashes these bytes (together with [`SCHEME`] and the step's
//! name, version and format); the bytes are never decoded. The encoding is a prefix code (every
//! value's length follows from its tag and length fields), so a sequence of values can never be
//! re-split into a different sequence of values.
//!
//! # Encoding (`milonga.id.v1`, pinned forever)
//!
//! `len` is a `u64` little-endian (8 bytes). `name` is `len` + UTF-8 bytes. All sorting compares
//! byte strings lexicographically (shorter prefix first).
//!
//! | Tag    | Value                                           | Bytes after the tag                                              |
//! |--------|-------------------------------------------------|------------------------------------------------------------------|
//! | `0x00` | unit: `()`, unit struct                         | —                                                                |
//! | `0x01` | `None`                                          | —                                                                |
//! | `0x02` | `Some(v)`                                       | v                                                                |
//! | `0x03` | `bool`                                          | `0x00` false / `0x01` true                                       |
//! | `0x04` | every integer type, `i8` … `i128`, `u8` … `u128`, `isize`, `usize` | sign (`0x00` ≥ 0, `0x01` < 0), n: one byte 0..=16, n bytes of the magnitude little-endian without trailing zero bytes (0 → n = 0) |
//! | `0x05` | `f32` (widened), `f64`                          | 8 bytes: IEEE-754 bits little-endian; `-0.0` written as `0.0`, every NaN as `0x7FF8000000000000` |
//! | `0x06` | `char`                                          | Unicode scalar value, `u32` little-endian                        |
//! | `0x07` | string                                          | `len` + UTF-8 bytes                                              |
//! | `0x08` | byte string (`serialize_bytes`, e.g. `serde_bytes`) | `len` + bytes                                                |
//! | `0x09` | sequence: `Vec`, slice, array, `VecDeque`, tuple, tuple struct, tuple-variant payload | `len` (count) + elements in order          |
//! | `0x0A` | set: `HashSet`, `BTreeSet`, `BinaryHeap`, hashbrown `HashSet`, [`sorted`] fields | `len` (count) + elements sorted by their bytes (duplicates kept) |
//! | `0x0B` | map: every `serialize_map` (`HashMap`, `BTreeMap`, `IndexMap`, `#[serde(flatten)]` structs) | `len` (count) + (key, value) pairs sorted by key bytes, then value bytes |
//! | `0x0C` | struct, struct-variant payload                  | `len` (field count) + (field `name`, value) pairs sorted by name (then value bytes) |
//! | `0x0D` | enum variant                                    | variant `name` + payload: `0x00` for a unit variant, the value for a newtype variant, a `0x09` sequence for a tuple variant, a `0x0C` struct for a struct variant |
//! | `0x0E` | step reference (newtype struct [`STEP_REF_NAME`]) | `len` + UTF-8 unique_id of the referenced step                 |
//!
//! What is *not* encoded: struct, tuple-struct, newtype-struct and enum type names (a newtype struct
//! is its inner value), variant indexes, skipped fields, the Rust field declaration order, map and
//! set iteration order. What *is* encoded: field names and variant names as serde sees them (so a
//! `#[serde(rename = "old")]` keeps ids when a Rust field is renamed), and the order of sequences.
//! The serializer reports `is_human_readable() == false`, so types with two serde forms (IP
//! addresses, UUIDs, ...) use their compact form.
//!
//! ## Worked examples
//!
//! | Value                                   | Canonical bytes (hex)                                     |
//! |-----------------------------------------|-----------------------------------------------------------|
//! | `()`                                    | `00`                                                      |
//! | `Some(())` / `None`                     | `02 00` / `01`                                            |
//! | `true`                                  | `03 01`                                                   |
//! | `1u8`, `1i32`, `1u64`, `1u128`          | `04 00 01 01`                                             |
//! | `-300i64`                               | `04 01 02 2c01`                                           |
//! | `1.5f32`, `1.5f64`                      | `05 000000000000f83f`                                     |
//! | `'a'`                                   | `06 61000000`                                             |
//! | `"ab"`                                  | `07 0200000000000000 6162`                                |
//! | `vec![1u8, 2]`, `[1u8, 2]`, `(1u8, 2u8)` | `09 0200000000000000 04000101 04000102`                  |
//! | `BTreeSet::from([2u8, 1])`              | `0a 0200000000000000 04000101 04000102`                   |
//! | `HashMap::from([("b", 1u8), ("a", 2u8)])` | `0b 0200000000000000 07 0100000000000000 61 04000102 07 0100000000000000 62 04000101` |
//! | `struct AB { a: u32, b: String }` as `AB { a: 1, b: "x".into() }` | `0c 0200000000000000 0100000000000000 61 04000101 0100000000000000 62 07 0100000000000000 78` |
//! | `E::D { y: 2, x: 1 }`                   | `0d 0100000000000000 44 0c 0200000000000000 0100000000000000 78 04000101 0100000000000000 79 04000102` |
//! | step reference to `Up-abc`              | `0e 0600000000000000 55702d616263`                        |
//!
//! ## Leaving arguments out of the id
//!
//! A field that serde does not serialize is not part of the id. This is milonga's
//! `SKIP_ID_ARGUMENTS`:
//!
//! ```
//! # use serde::Serialize;
//! #[derive(Serialize)]
//! struct Train {
//!     lr: f64,
//!     #[serde(skip_serializing)] // never part of the id
//!     workers: usize,
//!     #[serde(skip_serializing_if = "Option::is_none")] // part of the id only when set
//!     notes: Option<String>,
//! }
//! ```
//!
//! `Train { lr: 0.1, workers: 4, notes: None }` has exactly the bytes of a struct with the single
//! field `lr: 0.1`. The `skip_serializing_if` form also lets a new argument be added to a step
//! without changing the ids of existing results, as long as the new argument is at its default.
//!
//! ## Unordered collections
//!
//! Maps are always sorted, whatever their type. Sets cannot be told apart from sequences by their
//! serde calls (both use `collect_seq`), so the serializer inspects
//! `std::any::type_name::<I>()` of the collection handed to `collect_seq`: if the outer type's last
//! path segment is `HashSet`, `BTreeSet` or `BinaryHeap`, the collection is encoded as a set. The
//! type name is used only for this decision and is never hashed. Any other collection whose order
//! does not matter (an `IndexSet`, a `Vec` used as a bag) can be marked with
//! `#[serde(serialize_with = "sorted")]` (see [`sorted`]).
//!
//! ## Values that intentionally encode alike
//!
//! `()` and a unit struct; a newtype struct and its inner value; a `Vec`, a slice, an array, a
//! `VecDeque`, a tuple and a tuple struct with the same elements; `E::A` and `F::A(())`;
//! `E::C(1, 2)` and `F::C((1, 2))`; a `HashSet`, `BTreeSet` and `BinaryHeap` with the same
//! elements; any two maps with the same entries; integers of different widths with the same value;
//! an `f32` and its widening to `f64`; `0.0` and `-0.0`; all NaNs; `String`, `&str`, `PathBuf`
//! with the same text; `Box<T>`, `&T`, `Rc<T>` and `T`.
//!
//! Kept distinct: `None`, `Some(())` and `()`; `()` and an empty struct `S {}`; `char` and a
//! one-character string; a string and a step reference with the same text; a byte string and a
//! sequence of `u8` (a plain `Vec<u8>` is a sequence of integers); integers and floats; a struct
//! and a map with the same keys; a set and a sequence; `bool` and integers.

use std::collections::HashSet;

use serde::ser::{self, Serialize, Serializer};

/// Name of the canonical encoding scheme; part of every step-id hash. Changing the encoding means a new scheme name.
pub const SCHEME: &str = "milonga.id.v1";

/// A value serialized as `serialize_newtype_struct(STEP_REF_NAME, &unique_id_string)` is a reference to another step.
///
/// The canonical encoding writes it as a step-ref tag followed by the id (see the module
/// documentation) and records the id in [`Canonical::step_refs`]. Every other serializer sees an
/// ordinary newtype struct, which serde formats usually make transparent (the bare string).
pub const STEP_REF_NAME: &str = "$milonga::StepRef";

/// Newtype-struct name used by [`sorted`] to mark a sequence whose order does not matter.
const SORTED_NAME: &str = "$milonga::Sorted";

/// One-byte type tags of the `milonga.id.v1` scheme. Pinned forever.
mod tag {
    pub const UNIT: u8 = 0x00;
    pub const NONE: u8 = 0x01;
    pub const SOME: u8 = 0x02;
    pub const BOOL: u8 = 0x03;
    pub const INT: u8 = 0x04;
    pub const FLOAT: u8 = 0x05;
    pub const CHAR: u8 = 0x06;
    pub const STR: u8 = 0x07;
    pub const BYTES: u8 = 0x08;
    pub const SEQ: u8 = 0x09;
    pub const SET: u8 = 0x0A;
    pub const MAP: u8 = 0x0B;
    pub const STRUCT: u8 = 0x0C;
    pub const VARIANT: u8 = 0x0D;
    pub const STEP_REF: u8 = 0x0E;
}

/// The canonical encoding of a value: the bytes that enter the step-id hash, and the steps the
/// value refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// The canonical, type-tagged byte stream (scheme [`SCHEME`]).
    pub bytes: Vec<u8>,
    /// unique_ids of referenced steps, in the order they appear in [`Canonical::bytes`]
    /// (first-seen order), deduplicated.
    pub step_refs: Vec<String>,
}

/// The step's arguments could not be canonicalized: a `Serialize` implementation reported an
/// error, or a step reference did not carry a string id.
#[derive(Debug, thiserror::Error)]
#[error("cannot canonicalize the step's arguments: {0}")]
pub struct CanonicalError(pub String);

impl ser::Error for CanonicalError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        CanonicalError(msg.to_string())
    }
}

/// Encodes `value` in the canonical `milonga.id.v1` encoding (see the module documentation).
///
/// Equal values give equal bytes regardless of map and set iteration order, integer width or the
/// declaration order of struct fields. The only errors are those raised by `value`'s own
/// `Serialize` implementation and malformed step references.
pub fn canonical<T: Serialize + ?Sized>(value: &T) -> Result<Canonical, CanonicalError> {
    let out = encode(value, false)?;
    let mut seen = HashSet::new();
    let step_refs = out
        .refs
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect();
    Ok(Canonical {
        bytes: out.bytes,
        step_refs,
    })
}

/// `#[serde(serialize_with = "sorted")]` helper for collections whose order does not matter
/// but which the canonical encoding cannot recognise by itself (for example `IndexSet`, or a
/// `Vec` used as a bag).
///
/// In the canonical encoding the collection is encoded as a *set* (elements sorted by their
/// canonical bytes, duplicates kept). Every other serializer sees a newtype struct around an
/// ordinary sequence, which serde formats usually make transparent, so the stored form of the
/// arguments does not change.
///
/// ```
/// use milonga::canonical::{canonical, sorted};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Args {
///     #[serde(serialize_with = "sorted")]
///     languages: Vec<&'static str>,
/// }
///
/// let a = canonical(&Args { languages: vec!["en", "de"] })?;
/// let b = canonical(&Args { languages: vec!["de", "en"] })?;
/// assert_eq!(a, b);
/// # Ok::<(), milonga::canonical::CanonicalError>(())
/// ```
pub fn sorted<'c, C, S>(value: &'c C, serializer: S) -> Result<S::Ok, S::Error>
where
    C: ?Sized,
    &'c C: IntoIterator,
    <&'c C as IntoIterator>::Item: Serialize,
    S: Serializer,
{
    serializer.serialize_newtype_struct(SORTED_NAME, &AsSeq(value))
}

/// Serializes a borrowed collection as a sequence of its items.
struct AsSeq<'c, C: ?Sized>(&'c C);

impl<'c, C> Serialize for AsSeq<'c, C>
where
    C: ?Sized,
    &'c C: IntoIterator,
    <&'c C as IntoIterator>::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0)
    }
}

/// Whether `collect_seq` was called with a collection whose iteration order is not part of its
/// value. `type_name` is only used for this decision; it is never hashed.
fn is_unordered_collection(type_name: &str) -> bool {
    let mut name = type_name.trim_start();
    loop {
        if let Some(rest) = name.strip_prefix('&') {
            name = rest.trim_start();
        } else if let Some(rest) = name.strip_prefix("mut ") {
            name = rest.trim_start();
        } else {
            break;
        }
    }
    let outer = name.split('<').next().unwrap_or_default();
    if !outer
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == ':')
    {
        // A slice, array, tuple, pointer, closure, ... never an unordered collection itself.
        return false;
    }
    let last = outer.rsplit("::").next().unwrap_or_default();
    matches!(last, "HashSet" | "BTreeSet" | "BinaryHeap")
}

/// An encoding under construction: bytes plus the step ids they reference, in byte order.
#[derive(Default)]
struct Out {
    bytes: Vec<u8>,
    refs: Vec<String>,
}

impl Out {
    fn byte(&mut self, b: u8) {
        self.bytes.push(b);
    }

    fn len(&mut self, n: usize) {
        // usize is at most 64 bits on every supported platform.
        self.bytes.extend_from_slice(&(n as u64).to_le_bytes());
    }

    fn text(&mut self, data: &[u8]) {
        self.bytes.reserve(8 + data.len());
        self.len(data.len());
        self.bytes.extend_from_slice(data);
    }

    /// A tag followed by a text (`len` + bytes).
    #[inline]
    fn tagged_text(&mut self, tag: u8, data: &[u8]) {
        self.bytes.reserve(9 + data.len());
        let mut head = [tag; 9];
        if let Some(h) = head.get_mut(1..) {
            h.copy_from_slice(&(data.len() as u64).to_le_bytes());
        }
        self.bytes.extend_from_slice(&head);
        self.bytes.extend_from_slice(data);
    }

    fn int(&mut self, negative: bool, magnitude: u128) {
        match u64::try_from(magnitude) {
            Ok(m) => self.int64(negative, m),
            Err(_) => {
                let n = 16 - (magnitude.leading_zeros() / 8) as usize;
                self.int_le(negative, n, magnitude.to_le_bytes());
            }
        }
    }

    /// [`Out::int`] for magnitudes of up to 64 bits (the same bytes, less work).
    #[inline]
    fn int64(&mut self, negative: bool, magnitude: u64) {
        let n = 8 - (magnitude.leading_zeros() / 8) as usize;
        self.int_le(negative, n, magnitude.to_le_bytes());
    }

    /// An integer whose magnitude is the first `n` of the little-endian bytes `le`: written as
    /// fixed-size copies (cheaper than one of variable length), then cut back.
    #[inline]
    fn int_le<const W: usize>(&mut self, negative: bool, n: usize, le: [u8; W]) {
        let mut block = [0u8; 19];
        if let Some(h) = block.get_mut(..3) {
            h.copy_from_slice(&[tag::INT, u8::from(negative), n as u8]);
        }
        if let Some(m) = block.get_mut(3..3 + W) {
            m.copy_from_slice(&le);
        }
        let keep = self.bytes.len() + 3 + n;
        self.bytes.extend_from_slice(&block);
        self.bytes.truncate(keep);
    }

    fn signed(&mut self, v: i128) {
        self.int(v < 0, v.unsigned_abs());
    }

    fn float(&mut self, v: f64) {
        let bits = if v.is_nan() {
            CANONICAL_NAN
        } else if v == 0.0 {
            0 // -0.0 is written as 0.0
        } else {
            v.to_bits()
        };
        self.byte(tag::FLOAT);
        self.bytes.extend_from_slice(&bits.to_le_bytes());
    }
}

/// One entry of a map, set or struct, written in place into the parent's buffer: its bytes are
/// `start..end`, made of a key `start..mid` and a value `mid..end` (a set element is all key);
/// the step references met inside it are `refs_start..refs_end` of [`Out::refs`].
///
/// Offsets are `u32` (an encoding over 4 GiB is refused) to keep entries small: a large map's
/// entries are read back in random order when it is sorted.
#[derive(Clone, Copy)]
struct Entry {
    /// The first 16 bytes of what orders the entry (see [`Keyed`]), taken when the entry is
    /// closed, while its bytes are at hand.
    hi: u64,
    lo: u64,
    start: u32,
    mid: u32,
    end: u32,
    refs_start: u32,
    refs_end: u32,
    /// For a struct field, the index of its name in [`Entries::names`] (fields are ordered by
    /// name rather than by their encoded bytes, whose length comes first); [`NO_NAME`] for map
    /// entries and set elements.
    name: u32,
}

/// [`Entry::name`] of an entry that is not a struct field.
const NO_NAME: u32 = u32::MAX;

/// The entries of one map, set or struct, written in place after its header, and put in
/// canonical order (struct field name, or key bytes; then value bytes) by [`Entries::finish`].
/// Writing entries in place and moving them only when they are out of order costs no
/// allocation per entry.
struct Entries {
    /// Where the 8-byte count of the header is.
    count_at: usize,
    entries: Vec<Entry>,
    /// The names of a struct's fields.
    names: Vec<&'static str>,
    /// Where the entry being written started (bytes, refs), and where its key ended.
    open: Option<(usize, usize, Option<usize>)>,
    /// An offset did not fit in 32 bits.
    too_large: bool,
}

impl Entries {
    /// Writes the header (`tag` and a count filled in by `finish`).
    fn start(out: &mut Out, tag: u8) -> Self {
        out.byte(tag);
        let count_at = out.bytes.len();
        out.len(0);
        Entries {
            count_at,
            entries: Vec::new(),
            names: Vec::new(),
            open: None,
            too_large: false,
        }
    }

    /// Starts an entry at the current end of `out`.
    #[inline]
    fn begin(&mut self, out: &Out) {
        self.open = Some((out.bytes.len(), out.refs.len(), None));
    }

    /// Marks the end of the open entry's key.
    #[inline]
    fn key_done(&mut self, out: &Out) {
        if let Some((_, _, mid)) = &mut self.open {
            *mid = Some(out.bytes.len());
        }
    }

    /// Closes the open entry.
    #[inline]
    fn end(&mut self, out: &Out, name: Option<&'static str>) {
        let Some((start, refs_start, mid)) = self.open.take() else {
            return;
        };
        let end = out.bytes.len();
        let mid = mid.unwrap_or(end);
        let (name, (hi, lo)) = match name {
            Some(n) => {
                self.names.push(n);
                (self.names.len() - 1, prefix(n.as_bytes(), 0, n.len()))
            }
            None => (NO_NAME as usize, prefix(&out.bytes, start, mid - start)),
        };
        // start <= mid <= end and refs_start <= refs_end: the larger of each fitting is enough.
        let refs_end = out.refs.len();
        if u32::try_from(end).is_err() || u32::try_from(refs_end).is_err() {
            self.too_large = true;
            return;
        }
        self.entries.push(Entry {
            hi,
            lo,
            start: start as u32,
            mid: mid as u32,
            end: end as u32,
            refs_start: refs_start as u32,
            refs_end: refs_end as u32,
            name: name as u32,
        });
    }

    /// Fills in the count and puts the entries in canonical order.
    fn finish(self, out: &mut Out) -> Result<(), CanonicalError> {
        let Entries {
            count_at,
            entries,
            names,
            too_large,
            ..
        } = self;
        if too_large {
            return Err(CanonicalError(
                "the arguments' canonical encoding is larger than 4 GiB".into(),
            ));
        }
        if let Some(slot) = out.bytes.get_mut(count_at..count_at + 8) {
            slot.copy_from_slice(&(entries.len() as u64).to_le_bytes());
        }
        let bytes = &out.bytes;
        let slice = |a: u32, b: u32| bytes.get(a as usize..b as usize).unwrap_or_default();
        // What orders an entry: a struct field's name, a map key's or set element's bytes.
        let key = |e: &Entry| match names.get(e.name as usize) {
            Some(name) => name.as_bytes(),
            None => slice(e.start, e.mid),
        };
        let order = |x: &Entry, y: &Entry| {
            key(x)
                .cmp(key(y))
                .then_with(|| slice(x.mid, x.end).cmp(slice(y.mid, y.end)))
        };
        let in_order = |x: &Entry, y: &Entry| match (x.hi, x.lo).cmp(&(y.hi, y.lo)) {
            std::cmp::Ordering::Equal => order(x, y) != std::cmp::Ordering::Greater,
            o => o == std::cmp::Ordering::Less,
        };
        if entries.windows(2).all(|w| in_order(&w[0], &w[1])) {
            return Ok(());
        }
        // Sort (16-byte key prefix, index) triples: most entries differ within the prefix, and
        // the triples are small to move. Entries that compare equal have equal bytes (and
        // references), so their order among themselves does not matter.
        let mut bufs = SORT_BUFFERS.with(std::cell::Cell::take);
        let SortBuffers {
            keyed,
            tmp,
            bytes: sorted,
        } = &mut bufs;
        keyed.clear();
        keyed.extend(entries.iter().map(|e| Keyed {
            hi: e.hi,
            lo: e.lo,
            start: e.start,
            len: e.end.saturating_sub(e.start),
        }));
        // An entry by its start (entries are written in order, each at least one byte long).
        let entry = |k: &Keyed| {
            entries
                .binary_search_by_key(&k.start, |e| e.start)
                .ok()
                .and_then(|i| entries.get(i))
        };
        // By prefix first (a radix sort), then the runs of equal prefixes by the whole order.
        radix_sort(keyed, tmp);
        let full = |a: &Keyed, b: &Keyed| match (entry(a), entry(b)) {
            (Some(x), Some(y)) => order(x, y),
            _ => std::cmp::Ordering::Equal,
        };
        if keyed
            .windows(2)
            .any(|w| (w[0].hi, w[0].lo) == (w[1].hi, w[1].lo))
        {
            for same in keyed.chunk_by_mut(|a, b| (a.hi, a.lo) == (b.hi, b.lo)) {
                if same.len() > 1 {
                    same.sort_unstable_by(full);
                }
            }
        }
        // The entries lie back to back after the header, in the order they were written. Copy
        // them in order into the spare buffer, after a copy of what precedes them if that is
        // the shorter (then the buffers trade places), else alone, and then back. Entries of up
        // to BLOCK bytes (most of them) are copied as one fixed-size block, which needs BLOCK
        // bytes of slack after both buffers' ends.
        let total = out.bytes.len();
        let first = count_at + 8;
        let body = total.saturating_sub(first);
        let trade = first <= body;
        sorted.clear();
        sorted.reserve(if trade { first } else { 0 } + body + BLOCK);
        if trade {
            sorted.extend_from_slice(out.bytes.get(..first).unwrap_or_default());
        }
        out.bytes.resize(total + BLOCK, 0);
        let src = &out.bytes;
        for k in keyed.iter() {
            let (start, len) = (k.start as usize, k.len as usize);
            let block: Option<&[u8; BLOCK]> = match len <= BLOCK {
                true => src
                    .get(start..start + BLOCK)
                    .and_then(|s| s.try_into().ok()),
                false => None,
            };
            if let Some(block) = block {
                // A fixed-size copy, then cut back to the entry's length (within capacity).
                let keep = sorted.len() + len;
                sorted.extend_from_slice(block);
                sorted.truncate(keep);
            } else {
                sorted.extend_from_slice(src.get(start..start + len).unwrap_or_default());
            }
        }
        out.bytes.truncate(total);
        let refs_first = entries
            .first()
            .map_or(out.refs.len(), |e| e.refs_start as usize);
        if refs_first < out.refs.len() {
            let mut refs = Vec::with_capacity(out.refs.len() - refs_first);
            for e in keyed.iter().filter_map(entry) {
                refs.extend(
                    out.refs
                        .get(e.refs_start as usize..e.refs_end as usize)
                        .unwrap_or_default()
                        .iter()
                        .cloned(),
                );
            }
            out.refs.truncate(refs_first);
            out.refs.extend(refs);
        }
        if trade {
            std::mem::swap(&mut out.bytes, sorted);
        } else if let Some(region) = out.bytes.get_mut(first..) {
            if region.len() == sorted.len() {
                region.copy_from_slice(sorted);
            }
        }
        // A very large map's buffers are not kept.
        if sorted.capacity() <= SCRATCH_KEEP
            && keyed.capacity() <= SCRATCH_KEEP / std::mem::size_of::<Keyed>()
        {
            SORT_BUFFERS.with(|b| b.set(bufs));
        }
        Ok(())
    }
}

/// Entries of up to this many bytes are moved as one fixed-size block when sorted.
const BLOCK: usize = 32;

/// A key's first 16 bytes as two big-endian words (so that comparing words compares bytes; a
/// key shorter than 16 bytes is padded with zeros), and where its entry's bytes are (what the
/// copy into order needs, without a lookup per entry).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Keyed {
    hi: u64,
    lo: u64,
    start: u32,
    len: u32,
}

/// The first 16 bytes of the `len`-byte key at `at` in `buf`, as in [`Keyed`]. Read as one
/// 16-byte word and masked when the buffer holds 16 bytes there, else copied byte by byte.
fn prefix(buf: &[u8], at: usize, len: usize) -> (u64, u64) {
    let word = |w: Option<&[u8]>| {
        w.and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_be_bytes)
    };
    let Some(w) = buf.get(at..at + 16) else {
        let mut head = [0u8; 16];
        let n = len.min(16);
        if let (Some(h), Some(k)) = (head.get_mut(..n), buf.get(at..at + n)) {
            h.copy_from_slice(k);
        }
        return (word(head.get(..8)), word(head.get(8..)));
    };
    let (hi, lo) = (word(w.get(..8)), word(w.get(8..)));
    // Keep the first `len` bytes (the shifts are at most 56).
    match len {
        16.. => (hi, lo),
        8.. => (hi, lo & !(u64::MAX >> (8 * (len - 8)))),
        _ => (hi & !(u64::MAX >> (8 * len)), 0),
    }
}

/// The buffers [`Entries::finish`] sorts and copies with, kept between calls.
#[derive(Default)]
struct SortBuffers {
    keyed: Vec<Keyed>,
    tmp: Vec<Keyed>,
    bytes: Vec<u8>,
}

thread_local! {
    static SORT_BUFFERS: std::cell::Cell<SortBuffers> = std::cell::Cell::new(SortBuffers::default());
}

/// The largest scratch buffer kept for the next call (bytes).
const SCRATCH_KEEP: usize = 1 << 20;

/// Sorts keys by prefix, stably: a least-significant-digit-first radix sort over the prefix's
/// bytes that skips the bytes all prefixes share (for keys of one type, the tag and most of the
/// length). Small inputs, and inputs whose prefixes vary in more bytes than a comparison sort
/// needs rounds, use a comparison sort. `tmp` is scratch space.
fn radix_sort(keys: &mut Vec<Keyed>, tmp: &mut Vec<Keyed>) {
    let n = keys.len();
    if n < 64 {
        keys.sort_unstable();
        return;
    }
    let (mut all_hi, mut all_lo, mut any_hi, mut any_lo) = (u64::MAX, u64::MAX, 0, 0);
    for k in keys.iter() {
        (all_hi, all_lo) = (all_hi & k.hi, all_lo & k.lo);
        (any_hi, any_lo) = (any_hi | k.hi, any_lo | k.lo);
    }
    // A byte is the same in every prefix exactly where the AND and the OR of them agree.
    let (vary_hi, vary_lo) = (all_hi ^ any_hi, all_lo ^ any_lo);
    let varies = |w: u64, shift: u32| (w >> shift) & 0xFF != 0;
    let passes = (0..64)
        .step_by(8)
        .map(|s| usize::from(varies(vary_hi, s)) + usize::from(varies(vary_lo, s)))
        .sum::<usize>();
    if passes as u32 > n.ilog2() {
        keys.sort_unstable();
        return;
    }
    if tmp.len() < n {
        tmp.resize(n, Keyed::default());
    } else {
        tmp.truncate(n);
    }
    // Least significant byte first: the low word's bytes, then the high word's.
    for shift in (0..64).step_by(8) {
        if varies(vary_lo, shift) {
            radix_pass(keys, tmp, |k| (k.lo >> shift) as u8);
        }
    }
    for shift in (0..64).step_by(8) {
        if varies(vary_hi, shift) {
            radix_pass(keys, tmp, |k| (k.hi >> shift) as u8);
        }
    }
}

/// One stable counting-sort pass of `keys` by `digit`, through `tmp` (of the same length).
#[inline(always)]
fn radix_pass<T: Copy>(keys: &mut Vec<T>, tmp: &mut Vec<T>, digit: impl Fn(&T) -> u8) {
    let mut at = [0u32; 256];
    for k in keys.iter() {
        if let Some(c) = at.get_mut(usize::from(digit(k))) {
            *c += 1;
        }
    }
    let mut sum = 0;
    for c in at.iter_mut() {
        let count = *c;
        *c = sum;
        sum += count;
    }
    for k in keys.iter() {
        if let Some(pos) = at.get_mut(usize::from(digit(k))) {
            if let Some(slot) = tmp.get_mut(*pos as usize) {
                *slot = *k;
            }
            *pos += 1;
        }
    }
    std::mem::swap(keys, tmp);
}

/// The one NaN of the encoding (the quiet NaN with an empty payload and a clear sign bit).
const CANONICAL_NAN: u64 = 0x7FF8_0000_0000_0000;

/// Encodes `value` into a fresh buffer; `unordered` marks a sequence as a set.
fn encode<T: Serialize + ?Sized>(value: &T, unordered: bool) -> Result<Out, CanonicalError> {
    let mut out = Out::default();
    value.serialize(Enc {
        out: &mut out,
        unordered,
    })?;
    Ok(out)
}

/// The canonical serializer. `unordered` is set only for the value directly inside a
/// [`sorted`] wrapper and makes a sequence a set.
struct Enc<'o> {
    out: &'o mut Out,
    unordered: bool,
}

impl<'o> Serializer for Enc<'o> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = SeqEnc<'o>;
    type SerializeTuple = SeqEnc<'o>;
    type SerializeTupleStruct = SeqEnc<'o>;
    type SerializeTupleVariant = SeqEnc<'o>;
    type SerializeMap = MapEnc<'o>;
    type SerializeStruct = StructEnc<'o>;
    type SerializeStructVariant = StructEnc<'o>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<(), CanonicalError> {
        self.out.byte(tag::BOOL);
        self.out.byte(u8::from(v));
        Ok(())
    }

    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), CanonicalError> {
        self.out.int64(v < 0, v.unsigned_abs().into());
        Ok(())
    }

    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), CanonicalError> {
        self.out.int64(v < 0, v.unsigned_abs().into());
        Ok(())
    }

    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), CanonicalError> {
        self.out.int64(v < 0, v.unsigned_abs().into());
        Ok(())
    }

    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), CanonicalError> {
        self.out.int64(v < 0, v.unsigned_abs());
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), CanonicalError> {
        self.out.signed(v);
        Ok(())
    }

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), CanonicalError> {
        self.out.int64(false, v.into());
        Ok(())
    }

    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), CanonicalError> {
        self.out.int64(false, v.into());
        Ok(())
    }

    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), CanonicalError> {
        self.out.int64(false, v.into());
        Ok(())
    }

    #[inline]
    fn serialize_u64(self, v: u64) -> Result<(), CanonicalError> {
        self.out.int64(false, v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), CanonicalError> {
        self.out.int(false, v);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), CanonicalError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<(), CanonicalError> {
        self.out.float(v);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        self.out.byte(tag::CHAR);
        self.out
            .bytes
            .extend_from_slice(&u32::from(v).to_le_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        self.out.tagged_text(tag::STR, v.as_bytes());
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), CanonicalError> {
        self.out.tagged_text(tag::BYTES, v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), CanonicalError> {
        self.out.byte(tag::NONE);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        self.out.byte(tag::SOME);
        value.serialize(Enc {
            out: self.out,
            unordered: false,
        })
    }

    fn serialize_unit(self) -> Result<(), CanonicalError> {
        self.out.byte(tag::UNIT);
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CanonicalError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        self.out.byte(tag::VARIANT);
        self.out.text(variant.as_bytes());
        self.out.byte(tag::UNIT);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        if name == STEP_REF_NAME {
            let inner = encode(value, false)?;
            let id = match inner.bytes.split_first() {
                Some((&tag::STR, rest)) => rest.get(8..).unwrap_or_default(),
                _ => {
                    return Err(CanonicalError(format!(
                        "a step reference ({STEP_REF_NAME}) must serialize as a string id"
                    )))
                }
            };
            let id = String::from_utf8(id.to_vec())
                .map_err(|e| CanonicalError(format!("step reference id is not UTF-8: {e}")))?;
            self.out.byte(tag::STEP_REF);
            self.out.text(id.as_bytes());
            self.out.refs.push(id);
            Ok(())
        } else {
            value.serialize(Enc {
                out: self.out,
                unordered: name == SORTED_NAME,
            })
        }
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.out.byte(tag::VARIANT);
        self.out.text(variant.as_bytes());
        value.serialize(Enc {
            out: self.out,
            unordered: false,
        })
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<SeqEnc<'o>, CanonicalError> {
        Ok(SeqEnc::new(self.out, self.unordered))
    }

    fn serialize_tuple(self, _len: usize) -> Result<SeqEnc<'o>, CanonicalError> {
        Ok(SeqEnc::new(self.out, self.unordered))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<SeqEnc<'o>, CanonicalError> {
        Ok(SeqEnc::new(self.out, self.unordered))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<SeqEnc<'o>, CanonicalError> {
        self.out.byte(tag::VARIANT);
        self.out.text(variant.as_bytes());
        Ok(SeqEnc::new(self.out, false))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<MapEnc<'o>, CanonicalError> {
        let mut entries = Entries::start(self.out, tag::MAP);
        if let Some(n) = len {
            entries.entries.reserve(n);
            // A guess (a short key and a small value per entry) that saves regrowing the
            // buffer many times for a large map.
            self.out.bytes.reserve(n.saturating_mul(24));
        }
        Ok(MapEnc {
            out: self.out,
            entries,
            pending_key: false,
        })
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<StructEnc<'o>, CanonicalError> {
        let fields = Entries::start(self.out, tag::STRUCT);
        Ok(StructEnc {
            out: self.out,
            fields,
        })
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<StructEnc<'o>, CanonicalError> {
        self.out.byte(tag::VARIANT);
        self.out.text(variant.as_bytes());
        let fields = Entries::start(self.out, tag::STRUCT);
        Ok(StructEnc {
            out: self.out,
            fields,
        })
    }

    fn collect_seq<I>(self, iter: I) -> Result<(), CanonicalError>
    where
        I: IntoIterator,
        <I as IntoIterator>::Item: Serialize,
    {
        let unordered = self.unordered || is_unordered_collection(std::any::type_name::<I>());
        let mut seq = SeqEnc::new(self.out, unordered);
        for item in iter {
            ser::SerializeSeq::serialize_element(&mut seq, &item)?;
        }
        ser::SerializeSeq::end(seq)
    }
}

/// Sequence, tuple, tuple struct and tuple variant payload; or a set when `unordered`.
struct SeqEnc<'o> {
    out: &'o mut Out,
    kind: SeqKind,
}

enum SeqKind {
    /// Elements are written in place; the count at `count_at` is filled in by `end`.
    Ordered { count_at: usize, count: u64 },
    /// Elements are written in place and put in order by `end`.
    Unordered(Entries),
}

impl<'o> SeqEnc<'o> {
    fn new(out: &'o mut Out, unordered: bool) -> Self {
        let kind = if unordered {
            SeqKind::Unordered(Entries::start(out, tag::SET))
        } else {
            out.byte(tag::SEQ);
            let count_at = out.bytes.len();
            out.len(0);
            SeqKind::Ordered { count_at, count: 0 }
        };
        SeqEnc { out, kind }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        match &mut self.kind {
            SeqKind::Ordered { count, .. } => {
                *count += 1;
                value.serialize(Enc {
                    out: self.out,
                    unordered: false,
                })
            }
            SeqKind::Unordered(items) => {
                items.begin(self.out);
                value.serialize(Enc {
                    out: self.out,
                    unordered: false,
                })?;
                items.end(self.out, None);
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<(), CanonicalError> {
        match self.kind {
            SeqKind::Ordered { count_at, count } => {
                if let Some(slot) = self.out.bytes.get_mut(count_at..count_at + 8) {
                    slot.copy_from_slice(&count.to_le_bytes());
                }
            }
            SeqKind::Unordered(items) => items.finish(self.out)?,
        }
        Ok(())
    }
}

impl ser::SerializeSeq for SeqEnc<'_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Self::Error> {
        self.finish()
    }
}

impl ser::SerializeTuple for SeqEnc<'_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Self::Error> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for SeqEnc<'_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Self::Error> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for SeqEnc<'_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Self::Error> {
        self.finish()
    }
}

/// Map: entries written in place, put in order (key bytes, value bytes) by `end`.
struct MapEnc<'o> {
    out: &'o mut Out,
    entries: Entries,
    /// A key has been written and its value not yet.
    pending_key: bool,
}

impl ser::SerializeMap for MapEnc<'_> {
    type Ok = ();
    type Error = CanonicalError;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        if self.pending_key {
            return Err(CanonicalError(
                "map serialized two keys without a value between them".into(),
            ));
        }
        self.entries.begin(self.out);
        key.serialize(Enc {
            out: self.out,
            unordered: false,
        })?;
        self.entries.key_done(self.out);
        self.pending_key = true;
        Ok(())
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        if !self.pending_key {
            return Err(CanonicalError(
                "map serialized a value without a key before it".into(),
            ));
        }
        value.serialize(Enc {
            out: self.out,
            unordered: false,
        })?;
        self.entries.end(self.out, None);
        self.pending_key = false;
        Ok(())
    }

    fn end(self) -> Result<(), Self::Error> {
        if self.pending_key {
            return Err(CanonicalError(
                "map serialized a key without a value after it".into(),
            ));
        }
        self.entries.finish(self.out)
    }
}

/// Struct or struct-variant payload: fields written in place (name, value), put in order
/// (name, value bytes) by `end`.
struct StructEnc<'o> {
    out: &'o mut Out,
    fields: Entries,
}

impl StructEnc<'_> {
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.fields.begin(self.out);
        self.out.text(key.as_bytes());
        self.fields.key_done(self.out);
        value.serialize(Enc {
            out: self.out,
            unordered: false,
        })?;
        self.fields.end(self.out, Some(key));
        Ok(())
    }

    fn finish(self) -> Result<(), CanonicalError> {
        self.fields.finish(self.out)
    }
}

impl ser::SerializeStruct for StructEnc<'_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        self.field(key, value)
    }

    fn end(self) -> Result<(), Self::Error> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for StructEnc<'_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        self.field(key, value)
    }

    fn end(self) -> Result<(), Self::Error> {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};

    use proptest::prelude::*;
    use serde::Serialize;

    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn enc<T: Serialize + ?Sized>(v: &T) -> Canonical {
        match canonical(v) {
            Ok(c) => c,
            Err(e) => panic!("canonical() failed: {e}"),
        }
    }

    fn bytes<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        enc(v).bytes
    }

    fn hx<T: Serialize + ?Sized>(v: &T) -> String {
        hex(&bytes(v))
    }

    /// Hex with spaces and `_` ignored, so golden strings can be laid out readably.
    fn h(s: &str) -> String {
        s.chars()
            .filter(|c| !c.is_whitespace() && *c != '_')
            .collect()
    }

    /// A reference to another step, as the engine's step wrapper serializes it.
    struct Ref(&'static str);

    impl Serialize for Ref {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_newtype_struct(STEP_REF_NAME, self.0)
        }
    }

    /// Bytes serialized with `serialize_bytes` (what `serde_bytes` does).
    struct Bytes(&'static [u8]);

    impl Serialize for Bytes {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    #[derive(Serialize)]
    struct Unit;

    #[derive(Serialize)]
    struct Empty {}

    #[derive(Serialize)]
    struct Wrap(u64);

    #[derive(Serialize)]
    struct Pair(u8, u8);

    #[derive(Serialize)]
    enum E {
        A,
        B(u8),
        C(u8, u8),
        D { y: u8, x: u8 },
    }

    /// Same variant names as [`E`], other payload shapes.
    #[derive(Serialize)]
    enum F {
        A(()),
        C((u8, u8)),
    }

    #[derive(Serialize)]
    struct AB {
        a: u32,
        b: String,
    }

    #[derive(Serialize)]
    struct BA {
        b: String,
        a: u32,
    }

    // ---- golden bytes: pinned forever for scheme milonga.id.v1 -------------------------------

    #[test]
    fn golden_scalars() {
        assert_eq!(SCHEME, "milonga.id.v1");
        assert_eq!(STEP_REF_NAME, "$milonga::StepRef");
        assert_eq!(hx(&()), "00");
        assert_eq!(hx(&None::<u8>), "01");
        assert_eq!(hx(&Some(())), "0200");
        assert_eq!(hx(&false), "0300");
        assert_eq!(hx(&true), "0301");
        assert_eq!(hx(&0u8), "040000");
        assert_eq!(hx(&1u8), "04000101");
        assert_eq!(hx(&-1i32), "04010101");
        assert_eq!(hx(&256u16), "0400020001");
        assert_eq!(hx(&-300i64), h("04 01 02 2c01"));
        assert_eq!(hx(&u128::MAX), format!("040010{}", "ff".repeat(16)));
        assert_eq!(hx(&i128::MIN), format!("040110{}80", "00".repeat(15)));
        assert_eq!(hx(&1.5f64), "05000000000000f83f");
        assert_eq!(hx(&0.0f64), "050000000000000000");
        assert_eq!(hx(&f64::NAN), "05000000000000f87f");
        assert_eq!(hx(&'a'), "0661000000");
        assert_eq!(hx("ab"), h("07 0200000000000000 6162"));
        assert_eq!(hx(&Bytes(b"ab")), h("08 0200000000000000 6162"));
    }

    #[test]
    fn golden_compounds() {
        assert_eq!(
            hx(&vec![1u8, 2]),
            h("09 0200000000000000 04000101 04000102")
        );
        assert_eq!(hx(&(1u8, 2u8)), hx(&vec![1u8, 2]));
        assert_eq!(
            hx(&BTreeSet::from([2u8, 1])),
            h("0a 0200000000000000 04000101 04000102")
        );
        assert_eq!(
            hx(&HashMap::from([("b", 1u8), ("a", 2u8)])),
            h("0b 0200000000000000
               07 0100000000000000 61   04000102
               07 0100000000000000 62   04000101")
        );
        assert_eq!(
            hx(&AB {
                a: 1,
                b: "x".into()
            }),
            h("0c 0200000000000000
               0100000000000000 61   04000101
               0100000000000000 62   07 0100000000000000 78")
        );
        assert_eq!(hx(&Empty {}), h("0c 0000000000000000"));
        assert_eq!(hx(&Unit), "00");
        assert_eq!(hx(&Wrap(1)), "04000101");
        assert_eq!(hx(&E::A), h("0d 0100000000000000 41 00"));
        assert_eq!(hx(&E::B(1)), h("0d 0100000000000000 42 04000101"));
        assert_eq!(
            hx(&E::C(1, 2)),
            h("0d 0100000000000000 43 09 0200000000000000 04000101 04000102")
        );
        assert_eq!(
            hx(&E::D { y: 2, x: 1 }),
            h("0d 0100000000000000 44 0c 0200000000000000
               0100000000000000 78 04000101
               0100000000000000 79 04000102")
        );
        assert_eq!(hx(&Ref("Up-abc")), h("0e 0600000000000000 55702d616263"));
    }

    #[derive(Serialize)]
    struct Inner {
        name: String,
        weights: Vec<f32>,
    }

    #[derive(Serialize)]
    struct Outer {
        upstream: Ref,
        seed: u64,
        inner: Option<Inner>,
        tags: HashSet<String>,
        table: HashMap<String, BTreeMap<u8, bool>>,
        mode: E,
        #[serde(skip_serializing)]
        _threads: usize,
    }

    fn outer() -> Outer {
        Outer {
            upstream: Ref("Produce-001-5KJvsngHeMpm88rD"),
            seed: 42,
            inner: Some(Inner {
                name: "bert".into(),
                weights: vec![0.5, -0.0, 2.0],
            }),
            tags: HashSet::from(["en".to_string(), "de".to_string()]),
            table: HashMap::from([
                ("z".to_string(), BTreeMap::from([(1, true), (0, false)])),
                ("a".to_string(), BTreeMap::new()),
            ]),
            mode: E::D { x: 3, y: 4 },
            _threads: 8,
        }
    }

    #[test]
    fn golden_blake3_of_nested_struct() {
        let c = enc(&outer());
        assert_eq!(
            c.step_refs,
            vec!["Produce-001-5KJvsngHeMpm88rD".to_string()]
        );
        assert_eq!(
            blake3::hash(&c.bytes).to_hex().as_str(),
            "97e33f84dfab94dc17b6a566de3b8de5afb25ed00ef1e1e496c78c2b68212197"
        );
    }

    #[test]
    fn hash_set_and_btree_set_agree() {
        let mut hs = HashSet::with_capacity(100);
        for x in [5u32, 1, 9, 3] {
            hs.insert(x);
        }
        let bs = BTreeSet::from([3u32, 9, 1, 5]);
        assert_eq!(bytes(&hs), bytes(&bs));
        let heap = BinaryHeap::from(vec![9u32, 1, 5, 3]);
        assert_eq!(bytes(&heap), bytes(&bs));
        // Through references and options too.
        assert_eq!(bytes(&Some(&hs)), bytes(&Some(&bs)));
        // A set is not a sequence.
        assert_ne!(bytes(&bs), bytes(&vec![1u32, 3, 5, 9]));
    }

    #[test]
    fn set_detection_by_type_name() {
        assert!(is_unordered_collection(
            "&std::collections::hash::set::HashSet<u8, std::hash::random::RandomState>"
        ));
        assert!(is_unordered_collection(
            "&alloc::collections::btree::set::BTreeSet<alloc::vec::Vec<u8>>"
        ));
        assert!(is_unordered_collection(
            "&hashbrown::set::HashSet<u8, foldhash::fast::RandomState, hashbrown::raw::Global>"
        ));
        assert!(is_unordered_collection("&mut BTreeSet<u8>"));
        assert!(!is_unordered_collection(
            "&[std::collections::hash::set::HashSet<u8>]"
        ));
        assert!(!is_unordered_collection(
            "&alloc::vec::Vec<std::collections::hash::set::HashSet<u8>>"
        ));
        assert!(!is_unordered_collection("&indexmap::set::IndexSet<u8>"));
        assert!(!is_unordered_collection("&my::NotAHashSet<u8>"));
        assert!(!is_unordered_collection(
            "std::collections::hash::set::Iter<'_, u8>"
        ));
        // The real type names seen by collect_seq.
        fn name_of<T: Serialize>(_: &T) -> &'static str {
            std::any::type_name::<&T>()
        }
        assert!(is_unordered_collection(name_of(&HashSet::<u8>::new())));
        assert!(is_unordered_collection(name_of(&BTreeSet::<u8>::new())));
        assert!(!is_unordered_collection(name_of(&Vec::<u8>::new())));
        assert!(!is_unordered_collection(name_of(&VecDeque::<u8>::new())));
    }

    #[test]
    fn sequence_order_matters() {
        assert_ne!(bytes(&vec![1u8, 2]), bytes(&vec![2u8, 1]));
        assert_ne!(bytes(&(1u8, 2u8)), bytes(&(2u8, 1u8)));
        assert_eq!(bytes(&VecDeque::from([1u8, 2])), bytes(&vec![1u8, 2]));
    }

    #[test]
    fn struct_field_order_does_not_matter() {
        let ab = AB {
            a: 7,
            b: "x".into(),
        };
        let ba = BA {
            b: "x".into(),
            a: 7,
        };
        assert_eq!(bytes(&ab), bytes(&ba));
        // The struct's name is not hashed: only field names and values.
        #[derive(Serialize)]
        struct Renamed {
            b: String,
            a: u32,
        }
        assert_eq!(
            bytes(&ab),
            bytes(&Renamed {
                a: 7,
                b: "x".into()
            })
        );
        // But field names are.
        #[derive(Serialize)]
        struct Other {
            a: u32,
            c: String,
        }
        assert_ne!(
            bytes(&ab),
            bytes(&Other {
                a: 7,
                c: "x".into()
            })
        );
    }

    #[test]
    fn floats() {
        assert_eq!(bytes(&0.0f64), bytes(&-0.0f64));
        assert_eq!(bytes(&0.0f32), bytes(&-0.0f64));
        let nans = [
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7FF0_0000_0000_0001),
            f64::from_bits(0xFFF8_DEAD_BEEF_0001),
            f64::INFINITY - f64::INFINITY,
            f64::from(f32::NAN),
        ];
        for n in nans {
            assert_eq!(bytes(&n), bytes(&f64::NAN));
        }
        assert_eq!(bytes(&f32::NAN), bytes(&f64::NAN));
        assert_eq!(bytes(&1.5f32), bytes(&1.5f64));
        assert_eq!(bytes(&0.1f32), bytes(&f64::from(0.1f32)));
        assert_ne!(bytes(&0.1f32), bytes(&0.1f64));
        assert_ne!(bytes(&f64::INFINITY), bytes(&f64::NEG_INFINITY));
        assert_ne!(bytes(&f64::INFINITY), bytes(&f64::NAN));
        assert_ne!(bytes(&1.0f64), bytes(&1u8));
    }

    #[test]
    fn integer_widths() {
        let one = bytes(&1u8);
        assert_eq!(bytes(&1u16), one);
        assert_eq!(bytes(&1u32), one);
        assert_eq!(bytes(&1u64), one);
        assert_eq!(bytes(&1u128), one);
        assert_eq!(bytes(&1usize), one);
        assert_eq!(bytes(&1i8), one);
        assert_eq!(bytes(&1i32), one);
        assert_eq!(bytes(&1i128), one);
        assert_eq!(bytes(&-1i8), bytes(&-1i128));
        assert_ne!(bytes(&-1i8), one);
        assert_eq!(bytes(&0i64), bytes(&0u8));
        assert_eq!(bytes(&u64::MAX), bytes(&u128::from(u64::MAX)));
        assert_ne!(bytes(&i128::MIN), bytes(&i128::MAX));
        assert_ne!(bytes(&u128::MAX), bytes(&i128::MAX));
    }

    #[test]
    fn skipped_fields_are_absent() {
        #[derive(Serialize)]
        struct WithSkips {
            lr: f64,
            #[serde(skip_serializing)]
            _workers: usize,
            #[serde(skip_serializing_if = "Option::is_none")]
            note: Option<String>,
        }
        #[derive(Serialize)]
        struct Plain {
            lr: f64,
        }
        let a = WithSkips {
            lr: 0.1,
            _workers: 4,
            note: None,
        };
        let b = WithSkips {
            lr: 0.1,
            _workers: 64,
            note: None,
        };
        assert_eq!(bytes(&a), bytes(&b));
        assert_eq!(bytes(&a), bytes(&Plain { lr: 0.1 }));
        let c = WithSkips {
            lr: 0.1,
            _workers: 4,
            note: Some("x".into()),
        };
        assert_ne!(bytes(&a), bytes(&c));
    }

    #[test]
    fn step_refs_collected_in_byte_order_and_deduplicated() {
        #[derive(Serialize)]
        struct Args {
            z: Ref,
            a: Vec<Ref>,
            m: HashMap<&'static str, Ref>,
        }
        let args = Args {
            z: Ref("Z-1"),
            a: vec![Ref("B-1"), Ref("Z-1"), Ref("B-1")],
            m: HashMap::from([("k2", Ref("C-1")), ("k1", Ref("D-1"))]),
        };
        let c = enc(&args);
        assert_eq!(c.step_refs, ["B-1", "Z-1", "D-1", "C-1"]);
        // Map iteration order never changes the list.
        for cap in [0, 1, 7, 100] {
            let mut m = HashMap::with_capacity(cap);
            m.insert("k1", Ref("D-1"));
            m.insert("k2", Ref("C-1"));
            assert_eq!(enc(&m).step_refs, ["D-1", "C-1"]);
        }
        // A reference is not the same as its id string.
        assert_ne!(bytes(&Ref("X-1")), bytes("X-1"));
        assert!(enc(&"X-1").step_refs.is_empty());
    }

    #[test]
    fn distinct_values_give_distinct_bytes() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (bytes(&["ab", "c"]), bytes(&["a", "bc"])),
            (bytes(&Some(())), bytes(&None::<()>)),
            (bytes(&Some(None::<u8>)), bytes(&None::<Option<u8>>)),
            (bytes(&()), bytes(&Empty {})),
            (bytes(&()), bytes(&None::<()>)),
            (bytes("a"), bytes(&'a')),
            (bytes("1"), bytes(&1u8)),
            (bytes(&Vec::<u8>::new()), bytes(&None::<u8>)),
            (bytes(&vec![1u8, 2]), bytes(&Bytes(&[1, 2]))),
            (bytes(&Bytes(b"ab")), bytes("ab")),
            (
                bytes(&AB {
                    a: 1,
                    b: "x".into(),
                }),
                bytes(&BTreeMap::from([("a", "1"), ("b", "x")])),
            ),
            (bytes(&E::A), bytes("A")),
            (bytes(&E::A), bytes(&E::B(0))),
            (bytes(&E::B(1)), bytes(&1u8)),
            (
                bytes(&vec![vec![1u8], vec![]]),
                bytes(&vec![vec![], vec![1u8]]),
            ),
            (bytes(&vec![(); 2]), bytes(&vec![(); 3])),
            (bytes(&true), bytes(&1u8)),
            (bytes(&0u8), bytes(&-0.0f64)),
            (
                bytes(&BTreeMap::from([(1u8, 2u8)])),
                bytes(&BTreeMap::from([(2u8, 1u8)])),
            ),
        ];
        for (i, (a, b)) in pairs.iter().enumerate() {
            assert_ne!(a, b, "pair {i} collides");
        }
    }

    #[test]
    fn intentional_collisions() {
        // Documented in the module docs: these are the same value for the id.
        assert_eq!(bytes(&Unit), bytes(&()));
        assert_eq!(bytes(&Wrap(3)), bytes(&3u64));
        assert_eq!(bytes(&Pair(1, 2)), bytes(&(1u8, 2u8)));
        assert_eq!(bytes(&[1u8, 2]), bytes(&vec![1u8, 2]));
        assert_eq!(bytes(&E::A), bytes(&F::A(())));
        assert_eq!(bytes(&E::C(1, 2)), bytes(&F::C((1, 2))));
        assert_eq!(bytes(&"x".to_string()), bytes("x"));
        assert_eq!(bytes(&Box::new(1u8)), bytes(&1u8));
        assert_eq!(bytes(&std::path::PathBuf::from("a/b")), bytes("a/b"));
    }

    #[test]
    fn keys_sharing_more_than_sixteen_bytes_are_ordered_by_the_whole_key() {
        // Entries are sorted on their first 16 bytes, then on the whole key: keys alike in
        // their first 16 bytes (tag, length and 7 text bytes) must still be canonical.
        let keys: Vec<String> = (0..300)
            .map(|i| format!("shared-prefix-{:03}-{}", (i * 7919) % 300, i % 3))
            .collect();
        let btree: BTreeMap<String, u32> = keys.iter().map(|k| (k.clone(), 1)).collect();
        let mut rev = keys.clone();
        rev.reverse();
        let hash: HashMap<String, u32> = rev.iter().map(|k| (k.clone(), 1)).collect();
        assert_eq!(bytes(&btree), bytes(&hash));
        // The entries are in key-byte order: equal-length keys in text order.
        let c = bytes(&hash);
        let pos = |k: &str| {
            c.windows(k.len())
                .position(|w| w == k.as_bytes())
                .expect("key in the bytes")
        };
        let mut ordered = keys.clone();
        ordered.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
        assert!(ordered.windows(2).all(|w| pos(&w[0]) < pos(&w[1])));
        // A bag with duplicates and shared prefixes: every order gives the same bytes.
        #[derive(Serialize)]
        struct Bag(#[serde(serialize_with = "sorted")] Vec<String>);
        let mut bag: Vec<String> = keys.iter().chain(keys.iter().take(50)).cloned().collect();
        let a = bytes(&Bag(bag.clone()));
        bag.reverse();
        assert_eq!(a, bytes(&Bag(bag.clone())));
        bag.sort();
        assert_eq!(a, bytes(&Bag(bag)));
    }

    #[test]
    fn sorted_helper() {
        #[derive(Serialize)]
        struct Args {
            #[serde(serialize_with = "sorted")]
            langs: Vec<&'static str>,
        }
        let a = Args {
            langs: vec!["en", "de", "fr"],
        };
        let b = Args {
            langs: vec!["fr", "en", "de"],
        };
        assert_eq!(bytes(&a), bytes(&b));
        #[derive(Serialize)]
        struct SetArgs {
            langs: BTreeSet<&'static str>,
        }
        assert_eq!(
            bytes(&a),
            bytes(&SetArgs {
                langs: BTreeSet::from(["de", "en", "fr"])
            })
        );
        // Other serializers see the plain sequence.
        assert_eq!(
            serde_json::to_string(&a).ok().as_deref(),
            Some(r#"{"langs":["en","de","fr"]}"#)
        );
    }

    #[test]
    fn errors_not_panics() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(ser::Error::custom("nope"))
            }
        }
        let e = canonical(&vec![Fails]).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("cannot canonicalize the step's arguments: nope")
        );
        assert!(canonical(&HashMap::from([(1u8, Fails)])).is_err());

        struct BadRef;
        impl Serialize for BadRef {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_newtype_struct(STEP_REF_NAME, &42u8)
            }
        }
        assert!(canonical(&BadRef).is_err());

        struct ValueFirst;
        impl Serialize for ValueFirst {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(None)?;
                m.serialize_value(&1u8)?;
                m.end()
            }
        }
        assert!(canonical(&ValueFirst).is_err());

        struct KeyOnly;
        impl Serialize for KeyOnly {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(None)?;
                m.serialize_key(&1u8)?;
                m.end()
            }
        }
        assert!(canonical(&KeyOnly).is_err());
    }

    // ---- properties -----------------------------------------------------------------------

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-c]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]{0,2}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The canonical bytes of a map or set, built the plain way: every entry encoded on its own,
    /// the entries sorted by (key bytes, value bytes), then concatenated after the header.
    fn reference(tag: u8, mut entries: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<u8> {
        entries.sort();
        let mut out = vec![tag];
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (k, v) in entries {
            out.extend_from_slice(&k);
            out.extend_from_slice(&v);
        }
        out
    }

    proptest! {
        #[test]
        fn large_maps_and_sets_match_the_plain_sort(
            entries in prop::collection::hash_map("[a-c]{0,20}", any::<i64>(), 0..400),
            ints in prop::collection::vec(any::<u64>().prop_map(|x| x >> (x % 64)), 0..400),
        ) {
            let plain: Vec<(Vec<u8>, Vec<u8>)> =
                entries.iter().map(|(k, v)| (bytes(k), bytes(v))).collect();
            prop_assert_eq!(bytes(&entries), reference(tag::MAP, plain));
            let set: HashSet<u64> = ints.iter().copied().collect();
            let plain: Vec<(Vec<u8>, Vec<u8>)> =
                set.iter().map(|x| (bytes(x), Vec::new())).collect();
            prop_assert_eq!(bytes(&set), reference(tag::SET, plain));
        }

        /// Keys of one shape (a few varying bytes, the radix sort's fast case), structs inside
        /// sets (fields ordered by name), and keys alike in their first 16 bytes (ties).
        #[test]
        fn maps_of_keys_alike_match_the_plain_sort(
            entries in prop::collection::hash_map("k[0-9]{1,3}", any::<u8>(), 64..600),
            small in prop::collection::hash_set(any::<u16>(), 64..600),
            long in prop::collection::hash_map("same-sixteen-bytes-[0-9]{0,2}", any::<bool>(), 0..120),
        ) {
            let plain: Vec<(Vec<u8>, Vec<u8>)> =
                entries.iter().map(|(k, v)| (bytes(k), bytes(v))).collect();
            prop_assert_eq!(bytes(&entries), reference(tag::MAP, plain));
            let plain: Vec<(Vec<u8>, Vec<u8>)> =
                small.iter().map(|x| (bytes(x), Vec::new())).collect();
            prop_assert_eq!(bytes(&small), reference(tag::SET, plain));
            let plain: Vec<(Vec<u8>, Vec<u8>)> =
                long.iter().map(|(k, v)| (bytes(k), bytes(v))).collect();
            prop_assert_eq!(bytes(&long), reference(tag::MAP, plain));
        }

        #[test]
        fn hash_map_order_and_capacity_never_matter(
            entries in prop::collection::btree_map("[a-z]{0,4}", any::<i64>(), 0..40),
            cap_a in 0usize..64,
            cap_b in 0usize..64,
        ) {
            let mut a = HashMap::with_capacity(cap_a);
            for (k, v) in &entries {
                a.insert(k.clone(), *v);
            }
            let mut b = HashMap::with_capacity(cap_b);
            for (k, v) in entries.iter().rev() {
                b.insert(k.clone(), *v);
            }
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(bytes(&a), bytes(&b));
            prop_assert_eq!(bytes(&a), bytes(&entries));
        }

        #[test]
        fn nested_unordered_collections_are_canonical(
            entries in prop::collection::btree_map(
                "[a-z]{0,3}",
                prop::collection::btree_set(any::<u16>(), 0..8),
                0..10,
            ),
            cap in 0usize..32,
        ) {
            let mut hashed: HashMap<String, HashSet<u16>> = HashMap::with_capacity(cap);
            for (k, set) in entries.iter().rev() {
                let mut hs = HashSet::with_capacity(cap);
                for x in set.iter().rev() {
                    hs.insert(*x);
                }
                hashed.insert(k.clone(), hs);
            }
            prop_assert_eq!(bytes(&hashed), bytes(&entries));
            // Sets of collections, and unordered collections of sets.
            let bs: BTreeSet<Vec<u16>> =
                entries.values().map(|s| s.iter().copied().collect()).collect();
            let hs: HashSet<Vec<u16>> = bs.iter().rev().cloned().collect();
            prop_assert_eq!(bytes(&hs), bytes(&bs));
            let vs: Vec<HashSet<u16>> =
                entries.values().map(|s| s.iter().rev().copied().collect()).collect();
            let vb: Vec<&BTreeSet<u16>> = entries.values().collect();
            prop_assert_eq!(bytes(&vs), bytes(&vb));
        }

        #[test]
        fn hash_set_equals_btree_set(xs in prop::collection::vec(any::<i32>(), 0..50)) {
            let hs: HashSet<i32> = xs.iter().copied().collect();
            let bs: BTreeSet<i32> = xs.iter().rev().copied().collect();
            prop_assert_eq!(bytes(&hs), bytes(&bs));
        }

        #[test]
        fn integer_width_never_matters(v in any::<i64>()) {
            let b = bytes(&v);
            prop_assert_eq!(&b, &bytes(&i128::from(v)));
            if let Ok(u) = u64::try_from(v) {
                prop_assert_eq!(&b, &bytes(&u));
                prop_assert_eq!(&b, &bytes(&u128::from(u)));
            }
            if let Ok(x) = i32::try_from(v) {
                prop_assert_eq!(&b, &bytes(&x));
            }
            if let Ok(x) = i16::try_from(v) {
                prop_assert_eq!(&b, &bytes(&x));
            }
            if let Ok(x) = u8::try_from(v) {
                prop_assert_eq!(&b, &bytes(&x));
            }
        }

        #[test]
        fn distinct_integers_distinct_bytes(a in any::<i128>(), b in any::<i128>()) {
            prop_assert_eq!(a == b, bytes(&a) == bytes(&b));
        }

        #[test]
        fn f32_widens_to_f64(v in any::<f32>()) {
            prop_assert_eq!(bytes(&v), bytes(&f64::from(v)));
        }

        #[test]
        fn string_sequences_are_injective(
            a in prop::collection::vec("[ab]{0,3}", 0..4),
            b in prop::collection::vec("[ab]{0,3}", 0..4),
        ) {
            prop_assert_eq!(a == b, bytes(&a) == bytes(&b));
        }

        #[test]
        fn equal_json_values_iff_equal_bytes(a in json_value(), b in json_value()) {
            prop_assert_eq!(a == b, bytes(&a) == bytes(&b));
            prop_assert_eq!(bytes(&a), bytes(&a.clone()));
        }
    }
}
