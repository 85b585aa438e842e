//! The SDK's own decoders through the test kit: the envelope, from bytes and from a reader.

use milonga_sdk::testing::{meter_installed, DecoderCheck};
use milonga_sdk::{Envelope, Result};
use proptest::prelude::*;

milonga_sdk::allocation_meter!();

fn envelopes() -> impl Strategy<Value = (Envelope, Vec<u8>)> {
    (
        "[a-z0-9._-]{1,40}",
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(id, v, payload)| (Envelope::new(&id, v), payload))
}

fn encode((env, payload): &(Envelope, Vec<u8>)) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    env.encode_into(&mut out)?;
    out.extend_from_slice(payload);
    Ok(out)
}

#[test]
fn envelope_decode_keeps_the_contract() {
    assert!(meter_installed());
    DecoderCheck::new(envelopes(), encode, |bytes: &[u8]| {
        Envelope::decode(bytes, "data").map(|(env, rest)| (env, rest.to_vec()))
    })
    .with_newer_version(|bytes| bytes[4] += 1)
    .with_cases(128)
    .assert();
}

#[test]
fn envelope_read_from_keeps_the_contract() {
    DecoderCheck::new(envelopes(), encode, |mut bytes: &[u8]| {
        let env = Envelope::read_from(&mut bytes, "data")?;
        Ok((env, bytes.to_vec()))
    })
    .with_newer_version(|bytes| bytes[4] += 1)
    .with_cases(128)
    .assert();
}

#[test]
fn a_header_alone_must_be_whole() {
    // Without a payload behind it, every truncation of a header is an error.
    DecoderCheck::new(
        envelopes().prop_map(|(env, _)| (env, Vec::new())),
        encode,
        |bytes: &[u8]| Envelope::decode(bytes, "data").map(|(env, rest)| (env, rest.to_vec())),
    )
    .with_truncation_must_fail(true)
    .assert();
}
