//! Serializes a value with every map's entries sorted by key, whatever order the map iterates
//! in, so that [`JsonCodec`](crate::JsonCodec) writes the same bytes for the same value in every
//! process (a `HashMap` iterates in a different order each time). Everything else keeps the
//! value's own order: struct fields stay in declaration order, sequences in theirs, so every
//! value that already serialized deterministically gives exactly the bytes it gave before.
//!
//! A map's keys are serialized as serde_json writes object keys (strings, or numbers and
//! booleans as strings) and sorted by the bytes of that string, as the keys of
//! [`JsonFormat`](type@crate::JsonFormat) objects are; its values are serialized (sorted in
//! turn) to JSON text first, then written in key order.

use serde::ser::{
    self, Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant,
    SerializeTuple, SerializeTupleStruct, SerializeTupleVariant, Serializer,
};
use serde_json::value::RawValue;

/// `value`, serialized with sorted maps.
pub(crate) struct Sorted<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Serialize + ?Sized> Serialize for Sorted<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Sorting(serializer))
    }
}

/// A serializer that passes everything to `S`, with sorted maps.
struct Sorting<S>(S);

/// A compound serializer of `S` whose elements are serialized with sorted maps.
struct Each<C>(C);

/// One map entry as serde_json writes an object key: `{"<key>":null}`.
struct KeyOnly<'a, K: ?Sized>(&'a K);

impl<K: Serialize + ?Sized> Serialize for KeyOnly<'_, K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(&Sorted(self.0), &())?;
        map.end()
    }
}

/// The entries of a map, buffered to be written in key order.
struct SortedMap<M> {
    inner: M,
    entries: Vec<(String, Box<RawValue>)>,
    key: Option<String>,
}

fn custom<E: ser::Error>(e: impl std::fmt::Display) -> E {
    E::custom(e)
}

/// The object key serde_json writes for `key`, unescaped.
fn key_string<K: Serialize + ?Sized, E: ser::Error>(key: &K) -> Result<String, E> {
    let text = serde_json::to_vec(&KeyOnly(key)).map_err(custom)?;
    let quoted = text
        .strip_prefix(b"{")
        .and_then(|t| t.strip_suffix(b":null}"))
        .ok_or_else(|| E::custom("a map key serde_json does not write as an object key"))?;
    serde_json::from_slice(quoted).map_err(custom)
}

impl<M: SerializeMap> SerializeMap for SortedMap<M> {
    type Ok = M::Ok;
    type Error = M::Error;

    fn serialize_key<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<(), M::Error> {
        self.key = Some(key_string(key)?);
        Ok(())
    }

    fn serialize_value<V: Serialize + ?Sized>(&mut self, value: &V) -> Result<(), M::Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| ser::Error::custom("a map value without its key"))?;
        let text = serde_json::to_string(&Sorted(value)).map_err(custom)?;
        self.entries
            .push((key, RawValue::from_string(text).map_err(custom)?));
        Ok(())
    }

    fn end(mut self) -> Result<M::Ok, M::Error> {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in &self.entries {
            self.inner.serialize_entry(key, value)?;
        }
        self.inner.end()
    }
}

macro_rules! each {
    ($trait:ident, $method:ident $(, $key:ident: $kty:ty)?) => {
        impl<C: $trait> $trait for Each<C> {
            type Ok = C::Ok;
            type Error = C::Error;

            fn $method<T: Serialize + ?Sized>(
                &mut self,
                $($key: $kty,)?
                value: &T,
            ) -> Result<(), C::Error> {
                self.0.$method($($key,)? &Sorted(value))
            }

            fn end(self) -> Result<C::Ok, C::Error> {
                self.0.end()
            }
        }
    };
}

each!(SerializeSeq, serialize_element);
each!(SerializeTuple, serialize_element);
each!(SerializeTupleStruct, serialize_field);
each!(SerializeTupleVariant, serialize_field);
each!(SerializeStruct, serialize_field, key: &'static str);
each!(SerializeStructVariant, serialize_field, key: &'static str);

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method(self, $($arg: $ty),*) -> Result<S::Ok, S::Error> {
                self.0.$method($($arg),*)
            }
        )*
    };
}

impl<S: Serializer> Serializer for Sorting<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Each<S::SerializeSeq>;
    type SerializeTuple = Each<S::SerializeTuple>;
    type SerializeTupleStruct = Each<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Each<S::SerializeTupleVariant>;
    type SerializeMap = SortedMap<S::SerializeMap>;
    type SerializeStruct = Each<S::SerializeStruct>;
    type SerializeStructVariant = Each<S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Sorted(value))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Sorted(value))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Sorted(value))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Each)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Each)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Each)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Each)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Ok(SortedMap {
            inner: self.0.serialize_map(len)?,
            entries: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            key: None,
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Each)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Each)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Serialize;

    use super::Sorted;

    fn json<T: Serialize>(v: &T) -> String {
        serde_json::to_string(&Sorted(v)).unwrap()
    }

    #[derive(Serialize)]
    struct Record {
        zeta: u32,
        alpha: HashMap<String, Vec<HashMap<u32, bool>>>,
        tag: Tag,
    }

    #[derive(Serialize)]
    enum Tag {
        Named { z: u8, a: HashMap<bool, u8> },
    }

    #[test]
    fn maps_are_sorted_at_every_depth_and_structs_keep_their_order() {
        let inner: HashMap<u32, bool> = (0..50).map(|i| (i * 7 % 50, i % 2 == 0)).collect();
        let alpha: HashMap<String, Vec<HashMap<u32, bool>>> = ["b", "a", "é", "A", "\"q"]
            .into_iter()
            .map(|k| (k.to_owned(), vec![inner.clone()]))
            .collect();
        let r = Record {
            zeta: 1,
            alpha,
            tag: Tag::Named {
                z: 2,
                a: HashMap::from([(true, 1), (false, 0)]),
            },
        };
        let text = json(&r);
        // Struct fields in declaration order; map keys sorted as strings (numbers too).
        assert!(
            text.starts_with("{\"zeta\":1,\"alpha\":{\"\\\"q\":[{\"0\":true,\"1\":"),
            "{text}"
        );
        assert!(
            text.ends_with("\"tag\":{\"Named\":{\"z\":2,\"a\":{\"false\":0,\"true\":1}}}}"),
            "{text}"
        );
        let keys: Vec<String> = serde_json::from_str::<serde_json::Value>(&text).unwrap()["alpha"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["\"q", "A", "a", "b", "é"]);
        // Equal maps, built in different orders, give equal text.
        let mut pairs: Vec<(u32, bool)> = inner.iter().map(|(k, v)| (*k, *v)).collect();
        pairs.reverse();
        let rebuilt: HashMap<u32, bool> = pairs.into_iter().collect();
        assert_eq!(json(&inner), json(&rebuilt));
    }

    #[test]
    fn values_without_maps_keep_their_bytes() {
        let v = (
            1u8,
            "x",
            vec![Some(2.5f64), None],
            BTreeMap::from([("k", [1, 2])]),
        );
        assert_eq!(json(&v), serde_json::to_string(&v).unwrap());
    }

    #[test]
    fn keys_serde_json_refuses_are_errors() {
        let m = HashMap::from([(vec![1u8], 1)]);
        assert!(serde_json::to_string(&Sorted(&m)).is_err());
    }
}
