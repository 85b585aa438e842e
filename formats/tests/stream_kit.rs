//! `StreamFormat` through the SDK's format test kit: round trip, random access, determinism,
//! no panics and rejection under mutation and truncation, and version skew.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use milonga_formats::{Stream, StreamFormat};
use milonga_sdk::testing::FormatCheck;
use proptest::prelude::*;

#[test]
fn stream_format_keeps_the_format_contract() {
    let f = StreamFormat::<Vec<u8>>::new()
        .with_chunk_size(64)
        .with_block_size(16)
        .with_workers(1);
    let result = FormatCheck::lazy(
        &f,
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..40),
        |v: &Vec<Vec<u8>>| Stream::new(v.clone()),
        |r| r.iter().collect(),
    )
    .with_random_access(|r| r.len(), |r, i| r.get(i), |r| r.iter().collect())
    .with_newer_version(|files, version| {
        // The files carry their layout versions (the format version is in the manifest):
        // a newer end record layout must be refused.
        let Some((_, end)) = files.iter_mut().find(|(n, _)| n == "end") else {
            return false;
        };
        end[4] = u8::try_from(version).unwrap_or(u8::MAX);
        let n = end.len();
        let sum = blake3::hash(&end[..n - 32]);
        end[n - 32..].copy_from_slice(sum.as_bytes());
        true
    })
    .with_cases(16)
    .run();
    assert!(result.is_ok(), "{}", result.unwrap_err());
}
