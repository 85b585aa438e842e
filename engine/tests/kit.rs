//! The engine's decoders through the SDK test kit, with the allocation meter on.

use milonga::sdk::testing::{meter_installed, DecoderCheck};
use milonga::{ContentId, FileEntry, Manifest};
use proptest::prelude::*;

milonga_sdk::allocation_meter!();

fn manifests() -> impl Strategy<Value = Manifest> {
    (
        "[a-z0-9.+_-]{1,40}",
        any::<u32>(),
        proptest::collection::vec(
            ("[a-z0-9/._-]{0,24}", any::<u64>(), any::<[u8; 32]>()),
            0..6,
        ),
    )
        .prop_map(|(format_id, format_version, files)| Manifest {
            format_id,
            format_version,
            files: files
                .into_iter()
                .map(|(name, len, id)| FileEntry {
                    name,
                    len,
                    id: ContentId(id),
                })
                .collect(),
        })
}

#[test]
fn manifest_decode_keeps_the_contract() {
    assert!(meter_installed());
    DecoderCheck::new(
        manifests(),
        |m: &Manifest| m.encode(),
        |bytes: &[u8]| Manifest::decode(bytes, "manifest"),
    )
    // Nothing may follow the last file, and every field is fixed-size or length-prefixed.
    .with_truncation_must_fail(true)
    // Byte 4 is the manifest layout version.
    .with_newer_version(|bytes| bytes[4] += 1)
    .with_cases(128)
    .assert();
}
