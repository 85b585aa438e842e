//! The test kit itself: a correct format passes every check, and each kind of broken format is
//! caught by the check that names its bug.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use milonga_sdk::testing::{
    check_format, meter_installed, Check, DecoderCheck, Failure, FormatCheck,
};
use milonga_sdk::{
    open_envelope, ArtifactHandle, ArtifactWriter, Codec, Envelope, Error, Format, Result,
};
use proptest::prelude::*;

milonga_sdk::allocation_meter!();

/// The bug a [`Toy`] format has.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bug {
    None,
    /// Slices the payload without checking its length: panics on a truncated file.
    PanicsOnTruncation,
    /// Writes a counter into every file.
    NonDeterministic,
    /// Decodes the envelope but never looks at the version.
    IgnoresVersion,
    /// Trusts the length field: reads as many bytes as there are, even fewer than it says.
    AcceptsTruncation,
    /// Preallocates what the length field says before checking it.
    TrustsLength,
    /// Drops the last byte when reading.
    LosesData,
}

/// `Vec<u8>` as: envelope ("toy", version 1), `u64` length, bytes.
struct Toy(Bug);

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Format<Vec<u8>> for Toy {
    type Output = Vec<u8>;

    fn id(&self) -> &str {
        "toy"
    }

    fn version(&self) -> u32 {
        1
    }

    fn write(&self, value: Vec<u8>, artifact: &dyn ArtifactWriter) -> Result<()> {
        let mut out = Vec::new();
        Envelope::new(self.id(), self.version()).encode_into(&mut out)?;
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(&value);
        if self.0 == Bug::NonDeterministic {
            out.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        }
        let mut file = artifact.create("data")?;
        file.write_all(&out).map_err(|e| Error::io("data", e))?;
        file.finish()?;
        Ok(())
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<Vec<u8>> {
        let bytes = artifact.bytes("data")?;
        let all = (*bytes).as_ref();
        let payload = if self.0 == Bug::IgnoresVersion {
            Envelope::decode(all, "data")?.1
        } else {
            open_envelope(all, self.id(), self.version(), "data")?.1
        };
        let (len, rest) = match self.0 {
            Bug::PanicsOnTruncation => {
                let len = u64::from_le_bytes(payload[..8].try_into().unwrap());
                (len, &payload[8..])
            }
            _ => {
                let (head, rest) = payload
                    .split_first_chunk::<8>()
                    .ok_or_else(|| Error::corrupt("data", 0, "no length"))?;
                (u64::from_le_bytes(*head), rest)
            }
        };
        match self.0 {
            Bug::NonDeterministic => Ok(rest[..rest.len().saturating_sub(8)].to_vec()),
            Bug::AcceptsTruncation => Ok(rest[..rest.len().min(len as usize)].to_vec()),
            Bug::TrustsLength => {
                // Capped so that the test process does not abort on an impossible request.
                let mut v = Vec::with_capacity((len as usize).min(1 << 30));
                if len != rest.len() as u64 {
                    return Err(Error::corrupt("data", 0, "length mismatch"));
                }
                v.extend_from_slice(rest);
                Ok(v)
            }
            _ => {
                if len != rest.len() as u64 {
                    return Err(Error::corrupt("data", 0, "length mismatch"));
                }
                let mut v = rest.to_vec();
                if self.0 == Bug::LosesData {
                    v.pop();
                }
                Ok(v)
            }
        }
    }
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

fn failure_of(bug: Bug) -> Failure {
    FormatCheck::new(&Toy(bug), bytes())
        .with_cases(16)
        .run()
        .expect_err("the kit must catch the bug")
}

#[test]
fn the_meter_is_installed_here() {
    assert!(meter_installed());
}

#[test]
fn a_correct_format_passes_every_check() {
    check_format(&Toy(Bug::None), bytes());
}

#[test]
fn panic_on_truncated_input_is_caught() {
    let f = failure_of(Bug::PanicsOnTruncation);
    assert_eq!(f.check, Check::NoPanic, "{f}");
    assert!(f.message.contains("panicked"), "{f}");
}

#[test]
fn the_one_line_check_panics_with_the_report() {
    let caught = catch_unwind(AssertUnwindSafe(|| {
        check_format(&Toy(Bug::PanicsOnTruncation), bytes());
    }));
    let payload = caught.expect_err("check_format must panic on a broken format");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("no-panic check failed"), "{message}");
    assert!(message.contains("generated value"), "{message}");
}

#[test]
fn non_deterministic_writes_are_caught() {
    let f = failure_of(Bug::NonDeterministic);
    assert_eq!(f.check, Check::Determinism, "{f}");
}

#[test]
fn ignoring_the_version_is_caught() {
    let f = failure_of(Bug::IgnoresVersion);
    assert_eq!(f.check, Check::VersionSkew, "{f}");
    assert!(f.message.contains("version 2"), "{f}");
}

#[test]
fn accepting_a_truncated_file_is_caught() {
    let f = failure_of(Bug::AcceptsTruncation);
    assert_eq!(f.check, Check::Rejection, "{f}");
    assert!(f.message.contains("truncated"), "{f}");
}

#[test]
fn accepting_a_truncated_file_passes_when_allowed() {
    let r = FormatCheck::new(&Toy(Bug::AcceptsTruncation), bytes())
        .with_cases(8)
        .with_truncation_must_fail(false)
        .run();
    assert!(r.is_ok(), "{}", r.unwrap_err());
}

#[test]
fn allocation_driven_by_a_length_field_is_caught() {
    let f = failure_of(Bug::TrustsLength);
    assert_eq!(f.check, Check::Allocation, "{f}");
}

#[test]
fn losing_data_is_caught_and_shrunk() {
    let f = failure_of(Bug::LosesData);
    assert_eq!(f.check, Check::RoundTrip, "{f}");
    // Shrinking finds a one-byte value.
    assert!(f.input.starts_with("[0]"), "{f}");
}

#[test]
fn skipped_checks_do_not_run() {
    let r = FormatCheck::new(&Toy(Bug::IgnoresVersion), bytes())
        .with_cases(8)
        .with_skipped(Check::VersionSkew)
        .run();
    assert!(r.is_ok(), "{}", r.unwrap_err());
}

/// `Vec<u32>` read back as a lazy sequence; `Shifted` reads index `i` as item `i + 1`.
struct Seq {
    shifted: bool,
}

struct SeqOutput {
    items: Vec<u32>,
    shifted: bool,
}

impl SeqOutput {
    fn get(&self, i: u64) -> Result<u32> {
        let i = if self.shifted { i + 1 } else { i };
        let i = usize::try_from(i).map_err(|_| Error::Unsupported("index".into()))?;
        self.items.get(i).copied().ok_or(Error::OutOfRange {
            file: "data".into(),
            index: i as u64,
            len: self.items.len() as u64,
        })
    }
}

impl Format<Vec<u32>> for Seq {
    type Output = SeqOutput;
    fn id(&self) -> &str {
        // The files are Toy's.
        "toy"
    }
    fn version(&self) -> u32 {
        1
    }
    fn write(&self, value: Vec<u32>, artifact: &dyn ArtifactWriter) -> Result<()> {
        let bytes: Vec<u8> = value.iter().flat_map(|v| v.to_le_bytes()).collect();
        Toy(Bug::None).write(bytes, artifact)
    }
    fn read(&self, artifact: ArtifactHandle) -> Result<SeqOutput> {
        let bytes = Toy(Bug::None).read(artifact)?;
        if bytes.len() % 4 != 0 {
            return Err(Error::corrupt("data", 0, "not a whole number of items"));
        }
        Ok(SeqOutput {
            items: bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            shifted: self.shifted,
        })
    }
}

fn seq_check(shifted: bool) -> std::result::Result<(), Failure> {
    let format = Seq { shifted };
    let result = FormatCheck::lazy(
        &format,
        proptest::collection::vec(any::<u32>(), 1..40),
        |v: &Vec<u32>| v.clone(),
        |out: SeqOutput| Ok(out.items),
    )
    .with_random_access(
        |out| Ok(out.items.len() as u64),
        |out, i| out.get(i),
        |out| Ok(out.items.clone()),
    )
    .with_cases(16)
    .with_truncation_must_fail(false)
    .run();
    result
}

#[test]
fn random_access_that_agrees_passes() {
    let r = seq_check(false);
    assert!(r.is_ok(), "{}", r.unwrap_err());
}

#[test]
fn random_access_that_disagrees_is_caught() {
    let f = seq_check(true).unwrap_err();
    assert_eq!(f.check, Check::RandomAccess, "{f}");
}

/// A codec of `u16` as two bytes that indexes without checking.
struct PanickyCodec;

impl Codec<u16> for PanickyCodec {
    fn id(&self) -> &str {
        "panicky"
    }
    fn encode(&self, value: &u16, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&value.to_le_bytes());
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<u16> {
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }
}

/// The same codec, written carefully, but whose `encode` replaces the buffer.
struct OverwritingCodec;

impl Codec<u16> for OverwritingCodec {
    fn id(&self) -> &str {
        "overwriting"
    }
    fn encode(&self, value: &u16, out: &mut Vec<u8>) -> Result<()> {
        *out = value.to_le_bytes().to_vec();
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<u16> {
        let raw: [u8; 2] = bytes
            .try_into()
            .map_err(|_| Error::decode("expected 2 bytes"))?;
        Ok(u16::from_le_bytes(raw))
    }
}

#[test]
fn codec_panics_are_caught() {
    let f = DecoderCheck::codec(&PanickyCodec, any::<u16>())
        .with_cases(8)
        .run()
        .unwrap_err();
    assert_eq!(f.check, Check::NoPanic, "{f}");
}

#[test]
fn codec_that_does_not_append_is_caught() {
    let f = DecoderCheck::codec(&OverwritingCodec, any::<u16>())
        .with_cases(8)
        .run()
        .unwrap_err();
    assert_eq!(f.check, Check::RoundTrip, "{f}");
    assert!(f.message.contains("append"), "{f}");
}

#[test]
fn decoder_version_skew_is_checked() {
    // The envelope decoder refuses a newer layout version...
    let envelope = |bytes: &[u8]| Envelope::decode(bytes, "h").map(|(e, _)| e);
    let encode = |e: &Envelope| {
        let mut out = Vec::new();
        e.encode_into(&mut out)?;
        Ok(out)
    };
    let strategy = ("[a-z]{1,8}", any::<u32>()).prop_map(|(id, v)| Envelope::new(&id, v));
    let r = DecoderCheck::new(strategy.clone(), encode, envelope)
        .with_newer_version(|b| b[4] += 1)
        .with_truncation_must_fail(true)
        .with_cases(16)
        .run();
    assert!(r.is_ok(), "{}", r.unwrap_err());
    // ...but not a newer format version, which is the format's business, not the envelope's.
    let f = DecoderCheck::new(strategy, encode, envelope)
        .with_newer_version(|b| {
            let at = b.len() - 4;
            b[at] = b[at].wrapping_add(1);
        })
        .with_only(&[Check::VersionSkew])
        .with_cases(4)
        .run()
        .unwrap_err();
    assert_eq!(f.check, Check::VersionSkew, "{f}");
}
