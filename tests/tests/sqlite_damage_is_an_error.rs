//! A damaged or swapped SQLite artifact never gives a silently wrong answer: the file is
//! verified against its content id before SQLite reads it, so any damage is a typed error naming
//! the object, for every layout (plain values, per-value zstd, zstd blocks), and a valid
//! sequence file swapped in for another is refused.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use milonga::sdk::Error as SdkError;
use milonga::{BoxError, Context, Error, SqliteCompression, SqliteSequenceFormat, Step, Workspace};
use milonga_tests::corrupt_object;
use serde::Serialize;

#[derive(Serialize)]
struct Words {
    n: u64,
    layout: u8,
}

fn word(i: u64) -> String {
    format!("item {i} {}", "abc ".repeat((i % 7) as usize))
}

impl Step for Words {
    const NAME: &'static str = "damage::Words";
    type Output = Vec<String>;
    type Format = SqliteSequenceFormat<String>;
    fn format(&self) -> Self::Format {
        let c = match self.layout {
            0 => SqliteCompression::None,
            1 => SqliteCompression::Zstd {
                level: 3,
                dictionary_bytes: 0,
            },
            _ => SqliteCompression::default(),
        };
        SqliteSequenceFormat::new().with_compression(c)
    }
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Vec<String>, BoxError> {
        Ok((0..self.n).map(word).collect())
    }
}

/// Reads every item; `Ok` only if all were read.
fn read_all(step: &Words, root: &Path) -> Result<Vec<String>, Error> {
    let ws = Workspace::open(root)?;
    let seq = step.result(&ws)?;
    let mut out = Vec::new();
    for i in 0..seq.len() {
        out.push(seq.get(i)?);
    }
    Ok(out)
}

#[test]
fn bit_flips_in_every_layout_are_errors_never_wrong_items() {
    let mut flips = 0;
    for layout in 0..3u8 {
        let dir = tempfile::tempdir().unwrap();
        let step = Words { n: 300, layout };
        let good: Vec<String> = (0..300).map(word).collect();
        assert_eq!(read_all(&step, dir.path()).unwrap(), good);
        let (file, uid) = {
            let ws = Workspace::open(dir.path()).unwrap();
            let uid = step.unique_id().unwrap();
            (ws.artifact(&uid).unwrap().files()[0].clone(), uid)
        };
        let original = {
            let ws = Workspace::open(dir.path()).unwrap();
            (*ws.artifact(&uid).unwrap().bytes(&file.name).unwrap())
                .as_ref()
                .to_vec()
        };
        // 24 flips spread over the file (header, pages, the data itself).
        for k in 0..24u64 {
            let at = (k * 7919 + 13) % original.len() as u64;
            let path = corrupt_object(dir.path(), &file.id, |b| {
                b.clone_from(&original);
                b[at as usize] ^= 1 << (k % 8);
            });
            match read_all(&step, dir.path()) {
                Ok(items) => panic!(
                    "layout {layout}: a flip at byte {at} read {} items with success (equal to the \
                     original: {})",
                    items.len(),
                    items == good
                ),
                Err(Error::Format(SdkError::ChecksumMismatch { file, .. })) => {
                    assert!(file.contains(&file_hex(&path)), "{file}");
                }
                Err(e) => panic!("layout {layout}: flip at {at}: unexpected error {e}"),
            }
            flips += 1;
            // The read quarantined the damaged file: put the good one back for the next flip.
            std::fs::write(&path, &original).unwrap();
        }
    }
    assert_eq!(flips, 72);
}

fn file_hex(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_valid_sequence_swapped_in_for_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = Words { n: 100, layout: 2 };
    let b = Words { n: 200, layout: 2 };
    assert_eq!(read_all(&a, dir.path()).unwrap().len(), 100);
    assert_eq!(read_all(&b, dir.path()).unwrap().len(), 200);
    let ws = Workspace::open(dir.path()).unwrap();
    let fa = ws.artifact(&a.unique_id().unwrap()).unwrap().files()[0].clone();
    let fb = ws.artifact(&b.unique_id().unwrap()).unwrap().files()[0].clone();
    drop(ws);
    let b_bytes = std::fs::read(
        milonga::store::LocalStore::open(dir.path())
            .unwrap()
            .object_path(&fb.id),
    )
    .unwrap();
    corrupt_object(dir.path(), &fa.id, |bytes| bytes.clone_from(&b_bytes));
    let err = read_all(&a, dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Format(SdkError::ChecksumMismatch { .. } | SdkError::Corrupt { .. })
        ),
        "{err:?}"
    );
}
