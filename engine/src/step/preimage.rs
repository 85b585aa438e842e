//! Reading a step's id pre-image back: the canonical encoding of its arguments (scheme
//! `milonga.id.v1`, specified in [`canonical`](super::canonical)) decoded into a tree, rendered
//! as JSON, compared with another, and re-encoded with step references replaced (early cutoff).
//!
//! The bytes come from the metadata database, so they are untrusted: decoding never panics and
//! never allocates more than the input's length.

use serde_json::{json, Map, Value};

/// Tags of `milonga.id.v1` (the table in [`canonical`](super::canonical)).
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

/// Deepest nesting decoded (a hostile pre-image must not overflow the stack).
const MAX_DEPTH: usize = 128;

/// One decoded value of a pre-image.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Unit,
    None,
    Some(Box<Arg>),
    Bool(bool),
    Int { negative: bool, magnitude: u128 },
    Float(f64),
    Char(char),
    Str(String),
    Bytes(Vec<u8>),
    Seq(Vec<Arg>),
    Set(Vec<Arg>),
    Map(Vec<(Arg, Arg)>),
    Struct(Vec<(String, Arg)>),
    Variant(String, Box<Arg>),
    StepRef(String),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        let s = self.bytes.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn len(&mut self) -> Result<usize, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        let n = u64::from_le_bytes(b);
        // Every element takes at least one byte: a count above what is left is a lie.
        let left = self.bytes.len() - self.pos;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| format!("length {n} at byte {} exceeds the data", self.pos - 8))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.len()?;
        let at = self.pos;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| format!("invalid UTF-8 at byte {at}"))
    }

    fn value(&mut self, depth: usize) -> Result<Arg, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        let at = self.pos;
        let t = self.byte()?;
        Ok(match t {
            tag::UNIT => Arg::Unit,
            tag::NONE => Arg::None,
            tag::SOME => Arg::Some(Box::new(self.value(depth + 1)?)),
            tag::BOOL => match self.byte()? {
                0 => Arg::Bool(false),
                1 => Arg::Bool(true),
                b => return Err(format!("invalid bool {b} at byte {}", at + 1)),
            },
            tag::INT => {
                let negative = match self.byte()? {
                    0 => false,
                    1 => true,
                    b => return Err(format!("invalid sign {b} at byte {}", at + 1)),
                };
                let n = usize::from(self.byte()?);
                if n > 16 {
                    return Err(format!("integer of {n} bytes at byte {at}"));
                }
                let mut b = [0u8; 16];
                b[..n].copy_from_slice(self.take(n)?);
                Arg::Int {
                    negative,
                    magnitude: u128::from_le_bytes(b),
                }
            }
            tag::FLOAT => {
                let mut b = [0u8; 8];
                b.copy_from_slice(self.take(8)?);
                Arg::Float(f64::from_le_bytes(b))
            }
            tag::CHAR => {
                let mut b = [0u8; 4];
                b.copy_from_slice(self.take(4)?);
                Arg::Char(
                    char::from_u32(u32::from_le_bytes(b))
                        .ok_or_else(|| format!("invalid char at byte {at}"))?,
                )
            }
            tag::STR => Arg::Str(self.string()?),
            tag::BYTES => {
                let n = self.len()?;
                Arg::Bytes(self.take(n)?.to_vec())
            }
            tag::SEQ | tag::SET => {
                let n = self.len()?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(depth + 1)?);
                }
                if t == tag::SEQ {
                    Arg::Seq(v)
                } else {
                    Arg::Set(v)
                }
            }
            tag::MAP => {
                let n = self.len()?;
                let mut v = Vec::with_capacity(n / 2);
                for _ in 0..n {
                    let k = self.value(depth + 1)?;
                    v.push((k, self.value(depth + 1)?));
                }
                Arg::Map(v)
            }
            tag::STRUCT => {
                let n = self.len()?;
                let mut v = Vec::with_capacity(n / 2);
                for _ in 0..n {
                    let k = self.string()?;
                    v.push((k, self.value(depth + 1)?));
                }
                Arg::Struct(v)
            }
            tag::VARIANT => {
                let name = self.string()?;
                Arg::Variant(name, Box::new(self.value(depth + 1)?))
            }
            tag::STEP_REF => Arg::StepRef(self.string()?),
            other => return Err(format!("unknown tag 0x{other:02x} at byte {at}")),
        })
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

impl Arg {
    /// Decodes a whole pre-image (one value, nothing after it).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Arg, String> {
        let mut r = Reader { bytes, pos: 0 };
        let v = r.value(0)?;
        if r.pos != bytes.len() {
            return Err(format!("{} bytes after the value", bytes.len() - r.pos));
        }
        Ok(v)
    }

    /// Encodes the value back, each step reference replaced by what `by_ref` gives for its id
    /// (`None` stops: the value cannot be encoded).
    pub(crate) fn encode_with(
        &self,
        out: &mut Vec<u8>,
        by_ref: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Option<()> {
        match self {
            Arg::Unit => out.push(tag::UNIT),
            Arg::None => out.push(tag::NONE),
            Arg::Some(v) => {
                out.push(tag::SOME);
                v.encode_with(out, by_ref)?;
            }
            Arg::Bool(b) => out.extend_from_slice(&[tag::BOOL, u8::from(*b)]),
            Arg::Int {
                negative,
                magnitude,
            } => {
                let b = magnitude.to_le_bytes();
                let n = 16 - (magnitude.leading_zeros() / 8) as usize;
                out.extend_from_slice(&[tag::INT, u8::from(*negative), n as u8]);
                out.extend_from_slice(b.get(..n)?);
            }
            Arg::Float(f) => {
                out.push(tag::FLOAT);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Arg::Char(c) => {
                out.push(tag::CHAR);
                out.extend_from_slice(&u32::from(*c).to_le_bytes());
            }
            Arg::Str(s) => {
                out.push(tag::STR);
                put_str(out, s);
            }
            Arg::Bytes(b) => {
                out.push(tag::BYTES);
                put_len(out, b.len());
                out.extend_from_slice(b);
            }
            Arg::Seq(v) | Arg::Set(v) => {
                out.push(if matches!(self, Arg::Seq(_)) {
                    tag::SEQ
                } else {
                    tag::SET
                });
                put_len(out, v.len());
                for x in v {
                    x.encode_with(out, by_ref)?;
                }
            }
            Arg::Map(v) => {
                out.push(tag::MAP);
                put_len(out, v.len());
                for (k, x) in v {
                    k.encode_with(out, by_ref)?;
                    x.encode_with(out, by_ref)?;
                }
            }
            Arg::Struct(v) => {
                out.push(tag::STRUCT);
                put_len(out, v.len());
                for (k, x) in v {
                    put_str(out, k);
                    x.encode_with(out, by_ref)?;
                }
            }
            Arg::Variant(name, v) => {
                out.push(tag::VARIANT);
                put_str(out, name);
                v.encode_with(out, by_ref)?;
            }
            Arg::StepRef(id) => {
                out.push(tag::STEP_REF);
                put_str(out, &by_ref(id)?);
            }
        }
        Some(())
    }

    /// The value as readable JSON: structs and maps with string keys as objects, other maps as
    /// lists of `[key, value]`, step references as `{"$ref": id}`, byte strings as
    /// `{"$bytes": hex}`, integers beyond 64 bits and non-finite floats as strings, a unit enum
    /// variant as its name and any other as `{name: payload}`.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Arg::Unit | Arg::None => Value::Null,
            Arg::Some(v) => v.to_json(),
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Int {
                negative,
                magnitude,
            } => {
                if *negative {
                    match i64::try_from(*magnitude) {
                        Ok(m) => json!(-m),
                        Err(_) if *magnitude == 1u128 << 63 => json!(i64::MIN),
                        Err(_) => Value::String(format!("-{magnitude}")),
                    }
                } else {
                    match u64::try_from(*magnitude) {
                        Ok(m) => json!(m),
                        Err(_) => Value::String(magnitude.to_string()),
                    }
                }
            }
            Arg::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(f.to_string())),
            Arg::Char(c) => Value::String(c.to_string()),
            Arg::Str(s) => Value::String(s.clone()),
            Arg::Bytes(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                json!({ "$bytes": hex })
            }
            Arg::Seq(v) | Arg::Set(v) => Value::Array(v.iter().map(Arg::to_json).collect()),
            Arg::Map(v) => {
                if v.iter().all(|(k, _)| matches!(k, Arg::Str(_))) {
                    let mut m = Map::new();
                    for (k, x) in v {
                        if let Arg::Str(k) = k {
                            m.insert(k.clone(), x.to_json());
                        }
                    }
                    Value::Object(m)
                } else {
                    Value::Array(
                        v.iter()
                            .map(|(k, x)| Value::Array(vec![k.to_json(), x.to_json()]))
                            .collect(),
                    )
                }
            }
            Arg::Struct(v) => Value::Object(
                v.iter()
                    .map(|(k, x)| (k.clone(), x.to_json()))
                    .collect::<Map<_, _>>(),
            ),
            Arg::Variant(name, v) => match **v {
                Arg::Unit => Value::String(name.clone()),
                ref payload => json!({ name.clone(): payload.to_json() }),
            },
            Arg::StepRef(id) => json!({ "$ref": id }),
        }
    }

    /// The differences between `old` (self) and `new`, as (path, old, new) leaves; `None` for a
    /// side where the value is absent. A step reference that differs is reported as a
    /// [`Change::Upstream`].
    pub(crate) fn diff(&self, new: &Arg, path: &str, out: &mut Vec<Change>) {
        let child = |k: &str| {
            if path.is_empty() {
                k.to_owned()
            } else {
                format!("{path}.{k}")
            }
        };
        match (self, new) {
            (a, b) if a == b => {}
            (Arg::StepRef(a), Arg::StepRef(b)) => out.push(Change::Upstream {
                path: path.to_owned(),
                old: a.clone(),
                new: b.clone(),
            }),
            (Arg::Some(a), Arg::Some(b)) => a.diff(b, path, out),
            (Arg::Struct(a), Arg::Struct(b)) => {
                for (k, x) in a {
                    match b.iter().find(|(kb, _)| kb == k) {
                        Some((_, y)) => x.diff(y, &child(k), out),
                        None => out.push(Change::Value {
                            path: child(k),
                            old: Some(x.to_json()),
                            new: None,
                        }),
                    }
                }
                for (k, y) in b {
                    if !a.iter().any(|(ka, _)| ka == k) {
                        out.push(Change::Value {
                            path: child(k),
                            old: None,
                            new: Some(y.to_json()),
                        });
                    }
                }
            }
            (Arg::Map(a), Arg::Map(b)) => {
                let key = |k: &Arg| match k {
                    Arg::Str(s) => s.clone(),
                    other => other.to_json().to_string(),
                };
                for (k, x) in a {
                    match b.iter().find(|(kb, _)| kb == k) {
                        Some((_, y)) => x.diff(y, &child(&key(k)), out),
                        None => out.push(Change::Value {
                            path: child(&key(k)),
                            old: Some(x.to_json()),
                            new: None,
                        }),
                    }
                }
                for (k, y) in b {
                    if !a.iter().any(|(ka, _)| ka == k) {
                        out.push(Change::Value {
                            path: child(&key(k)),
                            old: None,
                            new: Some(y.to_json()),
                        });
                    }
                }
            }
            (Arg::Seq(a), Arg::Seq(b)) if a.len() == b.len() => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    x.diff(y, &format!("{path}[{i}]"), out);
                }
            }
            (Arg::Variant(na, a), Arg::Variant(nb, b)) if na == nb => a.diff(b, &child(na), out),
            (a, b) => out.push(Change::Value {
                path: path.to_owned(),
                old: Some(a.to_json()),
                new: Some(b.to_json()),
            }),
        }
    }
}

/// One difference found by [`Arg::diff`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// An argument value that differs (or exists on one side only).
    Value {
        path: String,
        old: Option<Value>,
        new: Option<Value>,
    },
    /// A step reference to another upstream step.
    Upstream {
        path: String,
        old: String,
        new: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::canonical;
    use serde::Serialize;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    enum Mode {
        Fast,
        Slow { steps: u8 },
    }

    #[derive(Serialize)]
    struct Args {
        name: &'static str,
        lr: f64,
        big: u128,
        neg: i64,
        tags: Vec<&'static str>,
        weights: BTreeMap<&'static str, i32>,
        pairs: BTreeMap<u8, bool>,
        mode: Mode,
        other: Mode,
        maybe: Option<char>,
        #[serde(with = "serde_bytes_compat")]
        raw: Vec<u8>,
    }

    mod serde_bytes_compat {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }

    fn args() -> Args {
        Args {
            name: "x",
            lr: 0.5,
            big: u128::MAX,
            neg: -300,
            tags: vec!["a", "b"],
            weights: BTreeMap::from([("w", 3)]),
            pairs: BTreeMap::from([(1, true)]),
            mode: Mode::Fast,
            other: Mode::Slow { steps: 2 },
            maybe: Some('z'),
            raw: vec![0xab, 0x01],
        }
    }

    #[test]
    fn decodes_and_reencodes_every_kind_of_value_to_the_same_bytes() {
        let c = canonical(&args()).unwrap();
        let a = Arg::decode(&c.bytes).unwrap();
        let mut again = Vec::new();
        a.encode_with(&mut again, &mut |id| Some(id.to_owned()))
            .unwrap();
        assert_eq!(again, c.bytes);
        assert_eq!(
            a.to_json(),
            json!({
                "name": "x", "lr": 0.5, "big": u128::MAX.to_string(), "neg": -300,
                "tags": ["a", "b"], "weights": {"w": 3}, "pairs": [[1, true]],
                "mode": "Fast", "other": {"Slow": {"steps": 2}}, "maybe": "z",
                "raw": {"$bytes": "ab01"},
            })
        );
    }

    #[test]
    fn any_bytes_decode_to_a_value_or_an_error() {
        let c = canonical(&args()).unwrap();
        for cut in 0..c.bytes.len() {
            assert!(Arg::decode(&c.bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = vec![tag::SEQ];
        lying.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(Arg::decode(&lying).unwrap_err().contains("exceeds"));
        let deep = vec![tag::SOME; 10_000];
        assert!(Arg::decode(&deep).unwrap_err().contains("deeper"));
        assert!(Arg::decode(&[0x7f]).unwrap_err().contains("unknown tag"));
    }

    proptest::proptest! {
        /// Any bytes (random, or a valid pre-image with bytes changed) decode to a value or an
        /// error, never a panic.
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(
            random in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..256),
            edits in proptest::collection::vec((proptest::arbitrary::any::<usize>(), proptest::arbitrary::any::<u8>()), 0..4),
        ) {
            let _ = Arg::decode(&random);
            let mut bytes = canonical(&args()).unwrap().bytes;
            for (i, b) in edits {
                let n = bytes.len();
                bytes[i % n] = b;
            }
            if let Ok(v) = Arg::decode(&bytes) {
                // A decoded value renders and re-encodes without panicking too.
                let _ = v.to_json();
                let mut again = Vec::new();
                proptest::prop_assert!(v.encode_with(&mut again, &mut |id| Some(id.to_owned())).is_some());
            }
        }
    }

    #[test]
    fn diff_names_the_changed_leaf() {
        let old = Arg::decode(&canonical(&args()).unwrap().bytes).unwrap();
        let mut changed = args();
        changed.lr = 0.25;
        changed.weights.insert("v", 1);
        let new = Arg::decode(&canonical(&changed).unwrap().bytes).unwrap();
        let mut out = Vec::new();
        old.diff(&new, "", &mut out);
        assert_eq!(
            out,
            vec![
                Change::Value {
                    path: "lr".into(),
                    old: Some(json!(0.5)),
                    new: Some(json!(0.25))
                },
                Change::Value {
                    path: "weights.v".into(),
                    old: None,
                    new: Some(json!(1))
                },
            ]
        );
    }
}
