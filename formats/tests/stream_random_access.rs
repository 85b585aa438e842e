//! Random access to a stream reads a bounded number of bytes, whatever the stream's size: the
//! chunk's header and one block, as verified ranges; a full iteration reads each chunk once.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use milonga_formats::{Stream, StreamFormat};
use milonga_sdk::testing::MeteredArtifact;
use milonga_sdk::{Format, MemoryArtifact};

fn item(i: u64) -> String {
    format!("{i:>8} {}", "lorem ipsum dolor ".repeat((i % 5) as usize))
}

#[test]
fn a_random_get_reads_a_header_and_one_block_not_a_chunk() {
    let f = StreamFormat::<String>::new();
    let artifact = MemoryArtifact::new();
    let n = 200_000u64;
    f.write(Stream::new((0..n).map(item)), &artifact).unwrap();
    let total: u64 = milonga_sdk::ArtifactReader::files(&artifact)
        .iter()
        .map(|e| e.len)
        .sum();
    let meter = MeteredArtifact::new(artifact.handle());
    let r = f.read(meter.handle()).unwrap();
    let chunks = r.chunks().known_chunks().len();
    assert!(chunks > 3, "{chunks} chunks: the test needs several");
    let mut x = 12345u64;
    let mut worst = 0;
    for _ in 0..200 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let i = (x >> 11) % n;
        meter.reset();
        assert_eq!(r.get(i).unwrap(), item(i));
        worst = worst.max(meter.bytes_read());
    }
    // A cold lookup: the header's group and the block's groups (a 16 KiB block, stored in at
    // most 16 KiB, spans at most two groups). A whole chunk is ~64 groups.
    assert!(
        worst <= 3 * 16 * 1024,
        "a get read {worst} bytes ({total} in all)"
    );

    // Sequential reading still reads each chunk file once, whole.
    meter.reset();
    assert_eq!(r.iter().count() as u64, n);
    let read = meter.bytes_read();
    assert!(
        read >= total / 2 && read <= total * 2,
        "iteration read {read} of {total}"
    );
}
