//! A full disk: a step that runs out of space ends FAILED with the real error (naming the file
//! that could not be written), leaves its work files cleaned or resumable, and a re-run succeeds
//! once space is back. The builder of a SQLite sequence needs little more than the data's size.
//!
//! Needs root (to mount a small tmpfs); skipped with a message otherwise.
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;

use milonga::{
    BoxError, Context, SqliteSequenceBuilder, SqliteSequenceFormat, Step, StepState, Stream,
    StreamFormat, Workspace,
};
use serde::Serialize;

const MIB: u64 = 1024 * 1024;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Option<Tmpfs> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("SKIPPED: mounting a small tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Incompressible item `i`.
fn blob(i: u64, size: usize) -> Vec<u8> {
    let mut out = vec![0; size];
    blake3::Hasher::new()
        .update(&i.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// `n` incompressible items of `size` bytes, built resumably in the work directory.
#[derive(Serialize)]
struct Blobs {
    n: u64,
    size: usize,
}

impl Step for Blobs {
    const NAME: &'static str = "tests::Blobs";
    type Output = SqliteSequenceBuilder<Vec<u8>>;
    type Format = SqliteSequenceFormat<Vec<u8>>;
    fn run(&self, ctx: &mut Context<'_>) -> Result<Self::Output, BoxError> {
        let path = ctx.work_dir()?.join("blobs.sqlite");
        let mut b = SqliteSequenceBuilder::<Vec<u8>>::open(&path)?;
        for i in b.len()..self.n {
            b.append(&blob(i, self.size))?;
        }
        Ok(b)
    }
}

/// The same items as a stream (each chunk an object), resuming after the durable chunks.
#[derive(Serialize)]
struct StreamedBlobs {
    n: u64,
    size: usize,
}

impl Step for StreamedBlobs {
    const NAME: &'static str = "tests::StreamedBlobs";
    type Output = Stream<Vec<u8>>;
    type Format = StreamFormat<Vec<u8>>;
    fn run(&self, ctx: &mut Context<'_>) -> Result<Self::Output, BoxError> {
        let (start, size) = (ctx.resume_from(), self.size);
        Ok(Stream::new((start..self.n).map(move |i| blob(i, size))))
    }
}

fn fill(path: &Path, bytes: u64) -> PathBuf {
    let chunk = vec![0x5a; MIB as usize];
    let mut f = std::fs::File::create(path).unwrap();
    for _ in 0..bytes / MIB {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    f.sync_all().unwrap();
    path.to_owned()
}

#[test]
fn a_full_disk_fails_the_step_and_a_rerun_succeeds_once_space_is_back() {
    let Some(fs) = Tmpfs::mount(24) else {
        return;
    };
    let ws = Workspace::open(fs.path().join("ws")).unwrap();
    // 12 MiB of data, with 6 MiB free.
    let step = Blobs {
        n: 6 * 1024,
        size: 2048,
    };
    let id = step.unique_id().unwrap();
    let _keep = fill(&fs.path().join("filler-1"), 6 * MIB);
    let filler = fill(&fs.path().join("filler-2"), 12 * MIB);

    let e = step.result(&ws).expect_err("12 MiB do not fit in 6");
    let text = e.to_string();
    assert!(!text.contains("metadata database"), "{text}");
    assert!(
        text.contains("blobs.sqlite"),
        "the error names the file: {text}"
    );
    let info = ws.step_info(&id).unwrap().unwrap();
    assert_eq!(info.state, StepState::Failed, "{info:?}");

    // About 18 MiB free now: enough for the data and a bounded overhead, not for twice the data.
    std::fs::remove_file(filler).unwrap();
    let seq = step
        .result(&ws)
        .expect("the re-run succeeds once space is back");
    assert_eq!(seq.len(), step.n);
    assert_eq!(seq.get(step.n - 1).unwrap(), blob(step.n - 1, step.size));
    assert!(
        !ws.root().unwrap().join("work").join(&id).exists(),
        "work files are removed after success"
    );
    drop(seq);
    drop(ws);
}

#[test]
fn a_stream_that_fills_the_disk_fails_and_resumes_once_space_is_back() {
    let Some(fs) = Tmpfs::mount(24) else {
        return;
    };
    let ws = Workspace::open(fs.path().join("ws")).unwrap();
    let step = StreamedBlobs {
        n: 6 * 1024,
        size: 2048,
    };
    let id = step.unique_id().unwrap();
    let _keep = fill(&fs.path().join("filler-1"), 6 * MIB);
    let filler = fill(&fs.path().join("filler-2"), 12 * MIB);

    let e = step.result(&ws).expect_err("12 MiB do not fit in 6");
    let text = e.to_string();
    assert!(!text.contains("metadata database"), "{text}");
    assert!(
        text.contains(&fs.path().display().to_string()),
        "the error names the file: {text}"
    );
    let info = ws.step_info(&id).unwrap().unwrap();
    assert_eq!(info.state, StepState::Failed, "{info:?}");

    std::fs::remove_file(filler).unwrap();
    let reader = step
        .result(&ws)
        .expect("the re-run succeeds once space is back");
    assert_eq!(reader.len().unwrap(), step.n);
    assert_eq!(reader.get(step.n - 1).unwrap(), blob(step.n - 1, step.size));
    assert!(ws.verify().unwrap().problems.is_empty());
    drop(reader);
    drop(ws);
}
