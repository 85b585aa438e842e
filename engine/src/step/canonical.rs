//! DOCS_PLACEHOLDER

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
/// ```ignore
/// #[derive(Serialize)]
/// struct Args {
///     #[serde(serialize_with = "milonga::canonical::sorted")]
///     languages: Vec<String>, // ["en", "de"] and ["de", "en"] give the same id
/// }
/// ```
pub fn sorted<C, S>(value: &C, serializer: S) -> Result<S::Ok, S::Error>
where
    C: ?Sized,
    for<'a> &'a C: IntoIterator,
    for<'a> <&'a C as IntoIterator>::Item: Serialize,
    S: Serializer,
{
    serializer.serialize_newtype_struct(SORTED_NAME, &AsSeq(value))
}

/// Serializes a borrowed collection as a sequence of its items.
struct AsSeq<'c, C: ?Sized>(&'c C);

impl<C> Serialize for AsSeq<'_, C>
where
    C: ?Sized,
    for<'a> &'a C: IntoIterator,
    for<'a> <&'a C as IntoIterator>::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Deliberately not `collect_seq(self.0)`: the type name of the iterator, not of the
        // collection, reaches `collect_seq`, so the set detection never fires here and the
        // `SORTED_NAME` wrapper alone decides.
        serializer.collect_seq(self.0.into_iter())
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
        self.len(data.len());
        self.bytes.extend_from_slice(data);
    }

    fn append(&mut self, child: Out) {
        self.bytes.extend_from_slice(&child.bytes);
        self.refs.extend(child.refs);
    }

    fn int(&mut self, negative: bool, magnitude: u128) {
        self.byte(tag::INT);
        self.byte(u8::from(negative));
        let n = 16 - (magnitude.leading_zeros() / 8) as usize;
        self.byte(n as u8);
        self.bytes
            .extend(magnitude.to_le_bytes().iter().take(n).copied());
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

    fn serialize_i8(self, v: i8) -> Result<(), CanonicalError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), CanonicalError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), CanonicalError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), CanonicalError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i128(self, v: i128) -> Result<(), CanonicalError> {
        self.out.signed(v);
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), CanonicalError> {
        self.serialize_u128(u128::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), CanonicalError> {
        self.serialize_u128(u128::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), CanonicalError> {
        self.serialize_u128(u128::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), CanonicalError> {
        self.serialize_u128(u128::from(v))
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

    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        self.out.byte(tag::STR);
        self.out.text(v.as_bytes());
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), CanonicalError> {
        self.out.byte(tag::BYTES);
        self.out.text(v);
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

    fn serialize_map(self, _len: Option<usize>) -> Result<MapEnc<'o>, CanonicalError> {
        Ok(MapEnc {
            out: self.out,
            entries: Vec::new(),
            pending_key: None,
        })
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<StructEnc<'o>, CanonicalError> {
        Ok(StructEnc {
            out: self.out,
            fields: Vec::new(),
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
        Ok(StructEnc {
            out: self.out,
            fields: Vec::new(),
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
    /// Elements are buffered and written sorted by `end`.
    Unordered(Vec<Out>),
}

impl<'o> SeqEnc<'o> {
    fn new(out: &'o mut Out, unordered: bool) -> Self {
        let kind = if unordered {
            SeqKind::Unordered(Vec::new())
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
                items.push(encode(value, false)?);
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
            SeqKind::Unordered(mut items) => {
                items.sort_by(|a, b| a.bytes.cmp(&b.bytes));
                self.out.byte(tag::SET);
                self.out.len(items.len());
                for item in items {
                    self.out.append(item);
                }
            }
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

/// Map: entries buffered, written sorted by (key bytes, value bytes).
struct MapEnc<'o> {
    out: &'o mut Out,
    entries: Vec<(Out, Out)>,
    pending_key: Option<Out>,
}

impl ser::SerializeMap for MapEnc<'_> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        if self.pending_key.is_some() {
            return Err(CanonicalError(
                "map serialized two keys without a value between them".into(),
            ));
        }
        self.pending_key = Some(encode(key, false)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        let key = self.pending_key.take().ok_or_else(|| {
            CanonicalError("map serialized a value without a key before it".into())
        })?;
        self.entries.push((key, encode(value, false)?));
        Ok(())
    }

    fn end(self) -> Result<(), Self::Error> {
        if self.pending_key.is_some() {
            return Err(CanonicalError(
                "map serialized a key without a value after it".into(),
            ));
        }
        let mut entries = self.entries;
        entries.sort_by(|(ka, va), (kb, vb)| ka.bytes.cmp(&kb.bytes).then(va.bytes.cmp(&vb.bytes)));
        self.out.byte(tag::MAP);
        self.out.len(entries.len());
        for (key, value) in entries {
            self.out.append(key);
            self.out.append(value);
        }
        Ok(())
    }
}

/// Struct or struct-variant payload: fields buffered, written sorted by (name, value bytes).
struct StructEnc<'o> {
    out: &'o mut Out,
    fields: Vec<(&'static str, Out)>,
}

impl StructEnc<'_> {
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.fields.push((key, encode(value, false)?));
        Ok(())
    }

    fn finish(self) -> Result<(), CanonicalError> {
        let mut fields = self.fields;
        fields.sort_by(|(na, va), (nb, vb)| na.cmp(nb).then(va.bytes.cmp(&vb.bytes)));
        self.out.byte(tag::STRUCT);
        self.out.len(fields.len());
        for (name, value) in fields {
            self.out.text(name.as_bytes());
            self.out.append(value);
        }
        Ok(())
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
        U(()),
        T((u8, u8)),
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
        assert_eq!(blake3::hash(&c.bytes).to_hex().as_str(), "GOLDEN");
    }

    #[test]
    fn dump() {
        println!("{}", hex(&bytes(&outer())));
        println!("{}", blake3::hash(&bytes(&outer())).to_hex());
    }
}
