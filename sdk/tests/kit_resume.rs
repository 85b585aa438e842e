//! The crash kit itself: a correct resumable format passes, and each kind of broken resume is
//! caught.

use std::io::Write;

use milonga_sdk::testing::{check_resume, Check, Crash, Interruptible, ResumeCheck};
use milonga_sdk::{ArtifactHandle, ArtifactWriter, Error, Format, Result};
use proptest::prelude::*;

/// The bug a [`Chunks`] format has.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bug {
    None,
    /// `durable_items` counts one item too many once a chunk is durable.
    OffByOne,
    /// A resumed write numbers its chunks from 0 again.
    Renumbers,
    /// `durable_items` is always 0: nothing is ever resumed.
    NeverDurable,
    /// Reading does not need the end file: an interrupted write reads as a shorter value.
    ShowsPartial,
    /// A resumed write names its chunks differently: it reads back fine, but its files differ
    /// from an uninterrupted write's.
    RenamesResumed,
}

/// Bytes, three per chunk file `chunk/{k:04}`, then an `end` file with the item count.
struct Chunks(Bug);

const PER_CHUNK: usize = 3;

type Input = Interruptible<u8>;

fn io(name: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(name, e)
}

impl Chunks {
    fn chunk_files(artifact: &dyn ArtifactWriter) -> usize {
        artifact
            .durable_files()
            .iter()
            .filter(|f| f.name.starts_with("chunk/"))
            .count()
    }

    fn put(&self, artifact: &dyn ArtifactWriter, name: &str, bytes: &[u8]) -> Result<()> {
        let mut file = artifact.create(name)?;
        file.write_all(bytes).map_err(io(name))?;
        file.finish()?;
        Ok(())
    }
}

impl Format<Input> for Chunks {
    type Output = Vec<u8>;

    fn id(&self) -> &str {
        "toy.chunks"
    }

    fn version(&self) -> u32 {
        1
    }

    fn write(&self, items: Input, artifact: &dyn ArtifactWriter) -> Result<()> {
        let durable = Self::chunk_files(artifact);
        let mut seq = if self.0 == Bug::Renumbers { 0 } else { durable };
        let mut total = durable * PER_CHUNK;
        let mut chunk = Vec::new();
        for item in items {
            chunk.push(item.map_err(Error::source_failed)?);
            if chunk.len() == PER_CHUNK {
                let mark = if self.0 == Bug::RenamesResumed && durable > 0 {
                    "r"
                } else {
                    ""
                };
                self.put(artifact, &format!("chunk/{seq:04}{mark}"), &chunk)?;
                total += PER_CHUNK;
                seq += 1;
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            total += chunk.len();
            self.put(artifact, &format!("chunk/{seq:04}"), &chunk)?;
        }
        self.put(artifact, "end", &(total as u64).to_le_bytes())
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<Vec<u8>> {
        let want = match artifact.bytes("end") {
            Ok(end) => {
                let raw: [u8; 8] = (*end)
                    .as_ref()
                    .try_into()
                    .map_err(|_| Error::corrupt("end", 0, "expected 8 bytes"))?;
                Some(u64::from_le_bytes(raw))
            }
            Err(_) if self.0 == Bug::ShowsPartial => None,
            Err(e) => return Err(e),
        };
        let mut names: Vec<String> = artifact
            .files()
            .into_iter()
            .map(|f| f.name)
            .filter(|n| n.starts_with("chunk/"))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            out.extend_from_slice((*artifact.bytes(&name)?).as_ref());
        }
        if want.is_some_and(|w| w != out.len() as u64) {
            return Err(Error::corrupt(
                "end",
                0,
                "the count does not match the chunks",
            ));
        }
        Ok(out)
    }

    fn durable_items(&self, artifact: &dyn ArtifactWriter) -> Result<u64> {
        let chunks = Self::chunk_files(artifact);
        Ok(match self.0 {
            Bug::NeverDurable => 0,
            Bug::OffByOne if chunks > 0 => (chunks * PER_CHUNK + 1) as u64,
            _ => (chunks * PER_CHUNK) as u64,
        })
    }
}

fn items() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..12)
}

fn run(bug: Bug) -> std::result::Result<(), milonga_sdk::testing::Failure> {
    ResumeCheck::new(&Chunks(bug), items(), |i| i, Ok)
        .with_cases(16)
        .run()
}

#[test]
fn a_correct_resumable_format_passes() {
    check_resume(&Chunks(Bug::None), items(), |i| i, Ok);
}

#[test]
fn miscounted_durable_items_are_caught() {
    let f = run(Bug::OffByOne).unwrap_err();
    assert_eq!(f.check, Check::Resume, "{f}");
    assert!(f.message.contains("durable"), "{f}");
}

#[test]
fn a_resume_that_overwrites_the_durable_chunks_is_caught() {
    let f = run(Bug::Renumbers).unwrap_err();
    assert_eq!(f.check, Check::Resume, "{f}");
    assert!(f.message.contains("resumed write failed"), "{f}");
}

#[test]
fn a_format_that_never_resumes_is_caught_unless_allowed() {
    let f = run(Bug::NeverDurable).unwrap_err();
    assert_eq!(f.check, Check::Resume, "{f}");
    assert!(f.message.contains("not resumable"), "{f}");
    ResumeCheck::new(&Chunks(Bug::NeverDurable), items(), |i| i, Ok)
        .with_require_durable(false)
        .with_cases(8)
        .assert();
}

#[test]
fn a_partial_write_read_as_a_result_is_caught() {
    let f = run(Bug::ShowsPartial).unwrap_err();
    assert_eq!(f.check, Check::Resume, "{f}");
    assert!(f.message.contains("complete value"), "{f}");
}

#[test]
fn resumed_files_that_differ_are_caught_unless_not_deterministic() {
    let f = run(Bug::RenamesResumed).unwrap_err();
    assert_eq!(f.check, Check::Resume, "{f}");
    assert!(f.message.contains("differ"), "{f}");
    ResumeCheck::new(&Chunks(Bug::RenamesResumed), items(), |i| i, Ok)
        .with_deterministic(false)
        .with_cases(16)
        .assert();
}

#[test]
fn each_crash_kind_alone_passes() {
    for crash in [Crash::Error, Crash::Panic] {
        ResumeCheck::new(&Chunks(Bug::None), items(), |i| i, Ok)
            .with_crashes(&[crash])
            .with_points(4)
            .with_cases(8)
            .assert();
    }
}
