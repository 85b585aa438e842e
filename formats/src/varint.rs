//! Unsigned LEB128 varints (7 bits a byte, low bits first, at most 10 bytes for a `u64`): the
//! one implementation behind the item lengths of chunk blocks and of SQLite sequence blocks.

/// The most bytes a varint of a `u64` takes.
pub(crate) const MAX_VARINT_LEN: usize = 10;

/// Appends `v` as a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The length of `v` as a varint.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a varint from the front of `bytes`; returns the value and the number of bytes it took,
/// or `None` if it is cut short, longer than 10 bytes, or overflows a `u64`.
pub(crate) fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(MAX_VARINT_LEN) {
        let part = u64::from(b & 0x7f);
        if i == MAX_VARINT_LEN - 1 && part > 1 {
            return None;
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes() {
        let enc = |v| {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            b
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(
            enc(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn overlong_overflowing_and_cut_short_varints_are_refused() {
        assert_eq!(get_varint(&[]), None);
        assert_eq!(get_varint(&[0x80]), None);
        assert_eq!(get_varint(&[0xff; 11]), None);
        // Ten bytes whose last holds more than the one bit a u64 has left.
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
    }

    proptest! {
        #[test]
        fn every_u64_round_trips_with_its_length(v: u64, tail: Vec<u8>) {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            prop_assert_eq!(b.len(), varint_len(v));
            prop_assert!(b.len() <= MAX_VARINT_LEN);
            let n = b.len();
            prop_assert_eq!(get_varint(&b[..n - 1]), None);
            b.extend_from_slice(&tail);
            prop_assert_eq!(get_varint(&b), Some((v, n)));
        }

        #[test]
        fn any_bytes_give_a_value_or_none_never_a_panic(bytes: Vec<u8>) {
            if let Some((v, n)) = get_varint(&bytes) {
                prop_assert!(n <= MAX_VARINT_LEN && n <= bytes.len());
                prop_assert!(varint_len(v) <= n);
            }
        }
    }
}
