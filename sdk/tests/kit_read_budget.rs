//! The kit's read-budget check: a lazy format whose lookups read verified ranges passes; one
//! whose lookups read whole files is caught once its files outgrow the budget.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::ops::Range;

use milonga_sdk::testing::{Check, FormatCheck, MeteredArtifact};
use milonga_sdk::{
    open_envelope, ArtifactHandle, ArtifactWriter, Envelope, Error, Format, MemoryArtifact, Result,
};
use proptest::prelude::*;

/// `u64`s, 8 bytes each after an envelope, read back lazily.
struct FixedU64s {
    /// Whether `get` reads a verified range (lazy) or the whole file (not lazy).
    ranged: bool,
}

/// The lazy output: the artifact, where the values start, how many there are.
struct U64s {
    artifact: ArtifactHandle,
    start: u64,
    len: u64,
    ranged: bool,
}

impl U64s {
    fn get(&self, i: u64) -> Result<u64> {
        if i >= self.len {
            return Err(Error::OutOfRange {
                file: "values".into(),
                index: i,
                len: self.len,
            });
        }
        let at = self.start + 8 * i;
        let bytes = if self.ranged {
            // Only the 16 KiB group holding these 8 bytes is read and verified.
            self.artifact.read_range("values", at..at + 8)?
        } else {
            let all = self.artifact.bytes("values")?;
            (*all).as_ref()[range(at..at + 8)].to_vec()
        };
        let raw: [u8; 8] = bytes
            .try_into()
            .map_err(|_| Error::corrupt("values", at, "short value"))?;
        Ok(u64::from_le_bytes(raw))
    }
}

fn range(r: Range<u64>) -> Range<usize> {
    r.start as usize..r.end as usize
}

impl Format<Vec<u64>> for FixedU64s {
    type Output = U64s;
    fn id(&self) -> &str {
        "example.fixed_u64s"
    }
    fn version(&self) -> u32 {
        1
    }
    fn write(&self, value: Vec<u64>, artifact: &dyn ArtifactWriter) -> Result<()> {
        let mut f = artifact.create("values")?;
        Envelope::new(self.id(), self.version()).write_to(&mut f, "values")?;
        // The count, so that a file cut at a value boundary is not a shorter list.
        f.write_all(&(value.len() as u64).to_le_bytes())
            .map_err(|e| Error::io("values", e))?;
        for v in value {
            f.write_all(&v.to_le_bytes())
                .map_err(|e| Error::io("values", e))?;
        }
        f.finish()?;
        Ok(())
    }
    fn read(&self, artifact: ArtifactHandle) -> Result<U64s> {
        let entry = artifact.entry("values").ok_or_else(|| Error::MissingFile {
            file: "values".into(),
        })?;
        // The envelope is short: read (and verify) only the start of the file.
        let head = artifact.read_range("values", 0..entry.len.min(1024))?;
        let (_, rest) = open_envelope(&head, self.id(), self.version(), "values")?;
        let count: [u8; 8] = rest
            .get(..8)
            .and_then(|c| c.try_into().ok())
            .ok_or_else(|| Error::corrupt("values", head.len() as u64, "no count"))?;
        let count = u64::from_le_bytes(count);
        let start = (head.len() - rest.len()) as u64 + 8;
        if count.checked_mul(8) != Some(entry.len - start) {
            return Err(Error::corrupt(
                "values",
                start,
                format!("{count} values do not fill {} bytes", entry.len - start),
            ));
        }
        Ok(U64s {
            artifact,
            start,
            len: count,
            ranged: self.ranged,
        })
    }
}

fn check(
    format: &FixedU64s,
    budget: u64,
    values: std::ops::Range<usize>,
) -> std::result::Result<(), milonga_sdk::testing::Failure> {
    FormatCheck::lazy(
        format,
        proptest::collection::vec(any::<u64>(), values),
        Clone::clone,
        |out: U64s| (0..out.len).map(|i| out.get(i)).collect(),
    )
    .with_random_access(
        |out: &U64s| Ok(out.len),
        |out: &U64s, i| out.get(i),
        |out: &U64s| (0..out.len).map(|i| out.get(i)).collect(),
    )
    .with_read_budget(budget)
    .with_only(&[Check::RoundTrip, Check::RandomAccess, Check::ReadBudget])
    .with_cases(8)
    .run()
}

#[test]
fn a_lazy_format_on_verified_ranges_keeps_its_read_budget() {
    // One get reads one group (two where a value straddles a group boundary).
    check(&FixedU64s { ranged: true }, 2 * 16 * 1024, 0..6_000).unwrap();
}

#[test]
fn a_format_whose_lookups_read_whole_files_fails_the_read_budget() {
    // Every case holds more than the budget (at least 40,000 bytes of values), so that reading
    // a whole file on a lookup exceeds it whatever the cases drawn.
    let failure = check(&FixedU64s { ranged: false }, 2 * 16 * 1024, 5_000..6_000).unwrap_err();
    assert_eq!(failure.check, Check::ReadBudget, "{failure}");
    assert!(failure.to_string().contains("read"), "{failure}");
}

#[test]
fn the_meter_counts_groups_for_ranges_and_files_for_bytes() {
    let artifact = MemoryArtifact::new();
    FixedU64s { ranged: true }
        .write((0..100_000).collect(), &artifact)
        .unwrap();
    let meter = MeteredArtifact::new(artifact.handle());
    let seq = FixedU64s { ranged: true }.read(meter.handle()).unwrap();
    meter.reset();
    assert_eq!(seq.get(77_777).unwrap(), 77_777);
    assert_eq!(meter.bytes_read(), 16 * 1024);
    let whole = FixedU64s { ranged: false }.read(meter.handle()).unwrap();
    meter.reset();
    assert_eq!(whole.get(5).unwrap(), 5);
    assert!(meter.bytes_read() > 800_000);
}

// The one-line checks exist for lazy formats too.
milonga_sdk::format_tests!(
    fixed_u64s,
    lazy FixedU64s { ranged: true },
    proptest::collection::vec(any::<u64>(), 0..300),
    make = Clone::clone,
    collect = |out: U64s| (0..out.len).map(|i| out.get(i)).collect(),
);
