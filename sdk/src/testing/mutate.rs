//! Bad bytes made from good ones: truncations, bit flips, lying length fields, random bytes.

use crate::envelope::Envelope;

/// A small deterministic generator (SplitMix64), so that a failing case replays from its seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// What a decoder must do with a mutated input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Any result but a panic (the mutation may still be a valid encoding).
    NoPanic,
    /// An error: the input is truncated and the caller said truncation is always detectable.
    Err,
}

/// One mutated version of a byte string.
pub(crate) struct Mutant {
    pub(crate) bytes: Vec<u8>,
    pub(crate) what: String,
    pub(crate) expect: Expect,
}

/// How many mutants of each kind to make.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Cut at every length for inputs up to this size; otherwise at sampled lengths.
    pub(crate) all_cuts_up_to: usize,
    /// Sampled cuts for longer inputs.
    pub(crate) sampled_cuts: usize,
    /// Random mutations (bit flips, overwrites with large numbers, insertions, random bytes).
    pub(crate) mutations: usize,
    /// Whether every truncation must be an error.
    pub(crate) truncation_is_err: bool,
}

/// Values that length and count fields love to be trusted with.
const LIES: [u64; 8] = [
    u64::MAX,
    u32::MAX as u64,
    i32::MAX as u64,
    1 << 40,
    1 << 31,
    1 << 24,
    0xFFFF,
    0,
];

/// Every mutant of `good` that `plan` asks for, made lazily.
pub(crate) fn mutants(good: &[u8], seed: u64, plan: Plan) -> impl Iterator<Item = Mutant> + '_ {
    let len = good.len();
    let cut_expect = if plan.truncation_is_err {
        Expect::Err
    } else {
        Expect::NoPanic
    };
    let cuts: Vec<usize> = if len <= plan.all_cuts_up_to {
        (0..len).collect()
    } else {
        let mut rng = Rng::new(seed ^ 0x5EED);
        let mut cuts = vec![0, 1, len / 2, len - 1];
        if let Ok((env, _)) = Envelope::decode(good, "") {
            let end = env.encoded_len();
            cuts.extend(
                [end.saturating_sub(1), end, end + 1]
                    .iter()
                    .filter(|&&c| c < len),
            );
        }
        cuts.extend((0..plan.sampled_cuts).map(|_| rng.below(len)));
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    };
    let truncations = cuts.into_iter().map(move |cut| Mutant {
        bytes: good[..cut].to_vec(),
        what: format!("truncated to {cut} of {len} bytes"),
        expect: cut_expect,
    });
    let mut rng = Rng::new(seed);
    let random = (0..plan.mutations).map(move |i| random_mutant(good, i, &mut rng));
    truncations.chain(random)
}

fn random_mutant(good: &[u8], i: usize, rng: &mut Rng) -> Mutant {
    let len = good.len();
    let mut bytes = good.to_vec();
    let what = match (i % 6, len) {
        (_, 0) | (5, _) => {
            let n = rng.below(2 * len + 16);
            bytes = rng.bytes(n);
            format!("replaced by {n} random bytes")
        }
        (0 | 1, _) => {
            let flips = 1 + rng.below(3);
            let mut at = Vec::new();
            for _ in 0..flips {
                let pos = rng.below(len);
                let bit = rng.below(8);
                bytes[pos] ^= 1 << bit;
                at.push(format!("bit {bit} of byte {pos}"));
            }
            format!("flipped {}", at.join(", "))
        }
        (2 | 3, _) => {
            let lie = LIES[rng.below(LIES.len())];
            let width = [1usize, 2, 4, 8][rng.below(4)].min(len);
            let pos = rng.below(len - width + 1);
            bytes[pos..pos + width].copy_from_slice(&lie.to_le_bytes()[..width]);
            format!("overwrote {width} bytes at {pos} with {lie:#x} (little-endian)")
        }
        _ => match Envelope::decode(good, "") {
            // Keep a valid envelope, so the payload decoder itself sees the random bytes.
            Ok((env, rest)) if !rest.is_empty() || rng.below(2) == 0 => {
                let head = env.encoded_len();
                let n = rng.below(2 * rest.len() + 16);
                bytes.truncate(head);
                bytes.extend(rng.bytes(n));
                format!("kept the {head}-byte envelope, then {n} random bytes")
            }
            _ => {
                let n = 1 + rng.below(8);
                let pos = rng.below(len + 1);
                let extra = rng.bytes(n);
                bytes.splice(pos..pos, extra);
                format!("inserted {n} random bytes at {pos}")
            }
        },
    };
    Mutant {
        bytes,
        what,
        expect: Expect::NoPanic,
    }
}

/// `bytes` with the version of its envelope set to `version`, if it starts with an envelope of
/// `format_id`.
pub(crate) fn with_envelope_version(
    bytes: &[u8],
    format_id: &str,
    version: u32,
) -> Option<Vec<u8>> {
    let (env, rest) = Envelope::decode(bytes, "").ok()?;
    if env.format_id != format_id {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    Envelope::new(format_id, version)
        .encode_into(&mut out)
        .ok()?;
    out.extend_from_slice(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_inputs_are_cut_everywhere() {
        let plan = Plan {
            all_cuts_up_to: 8,
            sampled_cuts: 0,
            mutations: 0,
            truncation_is_err: true,
        };
        let cuts: Vec<_> = mutants(b"abcd", 1, plan).map(|m| m.bytes).collect();
        assert_eq!(
            cuts,
            vec![b"".to_vec(), b"a".to_vec(), b"ab".to_vec(), b"abc".to_vec()]
        );
    }

    #[test]
    fn mutants_replay_from_their_seed() {
        let plan = Plan {
            all_cuts_up_to: 0,
            sampled_cuts: 4,
            mutations: 12,
            truncation_is_err: false,
        };
        let good: Vec<u8> = (0..100).collect();
        let a: Vec<_> = mutants(&good, 7, plan).map(|m| (m.bytes, m.what)).collect();
        let b: Vec<_> = mutants(&good, 7, plan).map(|m| (m.bytes, m.what)).collect();
        assert_eq!(a, b);
        assert!(a.iter().any(|(bytes, _)| bytes != &good));
    }

    #[test]
    fn version_rewrite_keeps_the_payload() {
        let mut good = Vec::new();
        Envelope::new("f", 1).encode_into(&mut good).unwrap();
        good.extend_from_slice(b"payload");
        let newer = with_envelope_version(&good, "f", 2).unwrap();
        let (env, rest) = Envelope::decode(&newer, "").unwrap();
        assert_eq!((env.format_version, rest), (2, &b"payload"[..]));
        assert!(with_envelope_version(&good, "g", 2).is_none());
    }
}
