//! The benchmark records shared by the criterion benches, the machine probe and the
//! `milonga-compare` side of the comparison harness.
//!
//! This is a bit-exact copy of the generator in `benches/compare/tango_side.py` (see its module
//! docstring for the recipe), so that milonga and ai2-tango are measured on the same data and
//! the readers' checks (`count`, `text_bytes`, `score_sum`, `get_id_sum`) can be compared
//! across systems. The golden tests below pin values computed by the Python generator.

use serde::{Deserialize, Serialize};

/// The 64 words texts are made of (index = top 6 bits of an LCG output).
pub const WORDS: [&str; 64] = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "cache",
    "step",
    "stream",
    "format",
    "record",
    "workspace",
    "pipeline",
    "result",
    "storage",
    "engine",
    "python",
    "rust",
    "tango",
    "milonga",
    "sequence",
    "hash",
];

/// Knuth's MMIX LCG multiplier.
pub const LCG_MUL: u64 = 6364136223846793005;
/// Knuth's MMIX LCG increment.
pub const LCG_INC: u64 = 1442695040888963407;
/// Minimum length in bytes of a record's text.
pub const TEXT_MIN: usize = 100;
/// Number of random gets in the random-access workload.
pub const GETS: usize = 10_000;
/// Seed of the LCG that draws the random-get indices.
pub const GET_SEED: u64 = 0x853C_49E6_748F_EA9B;
/// Length of the list argument whose `unique_id` cost is measured (workload `hit`, phase `id`).
pub const ID_LIST_LEN: usize = 1_000;
/// Number of records of the small cached result of workload `hit`.
pub const HIT_N: u64 = 1_000;

/// One benchmark record: `{id, text, score}` (~115 bytes with postcard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record's index, `0..N`.
    pub id: u64,
    /// 100 to ~110 bytes of lowercase ASCII words separated by single spaces.
    pub text: String,
    /// A float in `[0, 1)` with 53 random bits.
    pub score: f64,
}

/// The splitmix64 finalizer of `i`: the seed of record `i`'s LCG.
pub fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline]
fn lcg_next(s: &mut u64) -> u64 {
    *s = s.wrapping_mul(LCG_MUL).wrapping_add(LCG_INC);
    *s
}

/// Benchmark record number `i`, generated from `i` alone.
pub fn record(i: u64) -> Record {
    let mut s = splitmix64(i);
    let mut text = String::with_capacity(TEXT_MIN + 16);
    while text.len() < TEXT_MIN {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(WORDS[(lcg_next(&mut s) >> 58) as usize]);
    }
    let score = (lcg_next(&mut s) >> 11) as f64 / 9_007_199_254_740_992.0;
    Record { id: i, text, score }
}

/// Records `0..n`, lazily.
pub fn records(n: u64) -> impl Iterator<Item = Record> {
    (0..n).map(record)
}

/// The [`GETS`] random indices in `0..n` used by the random-access workload.
pub fn random_indices(n: u64) -> Vec<u64> {
    assert!(n > 0, "random_indices needs n > 0");
    let mut s = GET_SEED;
    (0..GETS).map(|_| (lcg_next(&mut s) >> 33) % n).collect()
}

/// The readers' checks, compared across systems by `benches/compare/run.py`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// Number of items seen.
    pub count: u64,
    /// Sum of the text lengths in bytes.
    pub text_bytes: u64,
    /// Sum of the scores, in order, with plain `f64` addition.
    pub score_sum: f64,
}

impl Checks {
    /// Accounts for one record.
    pub fn add(&mut self, r: &Record) {
        self.count += 1;
        self.text_bytes += r.text.len() as u64;
        self.score_sum += r.score;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_records_match_the_python_generator() {
        assert_eq!(splitmix64(0), 16294208416658607535);
        assert_eq!(splitmix64(1), 10451216379200822465);
        let r = record(0);
        assert_eq!(
            r.text,
            "are be were so who were to one python step rust he hash you all who to as engine \
             can it their tango on"
        );
        assert_eq!(r.score, f64::from_bits(0x3FED_D7F0_B2E4_AFFC)); // 0x1.dd7f0b2e4affcp-1
        let r = record(999_999);
        assert_eq!(
            r.text,
            "at that no of which they be not in will from storage sequence have result \
             workspace that it that has"
        );
        assert_eq!(r.score, 0x1412ad559d6c04_u64 as f64 / 2f64.powi(55)); // 0x1.412ad559d6c04p-3
        assert_eq!(record(12345).text.len(), 102);
    }

    #[test]
    fn golden_aggregates_match_the_python_generator() {
        let mut c = Checks::default();
        records(10_000).for_each(|r| c.add(&r));
        assert_eq!(c.count, 10_000);
        assert_eq!(c.text_bytes, 1_022_131);
        assert_eq!(c.score_sum, 0x13a916e20542e8_u64 as f64 / 2f64.powi(40)); // 0x1.3a916e20542e8p+12
        assert_eq!(random_indices(10_000).iter().sum::<u64>(), 49_940_075);
        let idx = random_indices(1_000_000);
        assert_eq!(idx.iter().sum::<u64>(), 4_990_990_075);
        assert_eq!(&idx[..3], &[493_502, 198_397, 527_989]);
    }
}
