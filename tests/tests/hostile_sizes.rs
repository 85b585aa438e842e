//! Long reads of hostile sizes are bounded: a stored file whose size on disk disagrees with its
//! record is an error before anything reads it (here: SQLite files, which SQLite reads by path
//! rather than through the verifying object reader).

use milonga::{BoxError, Context, SqliteSequenceFormat, Step, Workspace};
use milonga_tests::corrupt_object;
use serde::Serialize;

/// The numbers `0..n` as a SQLite sequence.
#[derive(Serialize)]
struct Numbers {
    n: u64,
}

impl Step for Numbers {
    const NAME: &'static str = "tests::SqliteNumbers";
    type Output = Box<dyn Iterator<Item = u64> + Send>;
    type Format = SqliteSequenceFormat<u64>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Self::Output, BoxError> {
        Ok(Box::new(0..self.n))
    }
}

#[test]
fn a_sqlite_file_longer_than_its_record_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let step = Numbers { n: 1000 };
    let ws = Workspace::open(dir.path()).unwrap();
    assert_eq!(step.result(&ws).unwrap().len(), 1000);
    let file = ws.artifact(&step.unique_id().unwrap()).unwrap().files()[0].clone();
    drop(ws);
    // A page of zeros after the end: SQLite itself would ignore it and serve the old data.
    corrupt_object(dir.path(), &file.id, |b| b.extend_from_slice(&[0; 4096]));

    let ws = Workspace::open(dir.path()).unwrap();
    let e = step
        .result(&ws)
        .map(|s| s.len())
        .expect_err("a file longer than its record must not be read");
    let text = e.to_string();
    assert!(
        text.contains(&format!("{} bytes", file.len + 4096)) && text.contains("record"),
        "{text}"
    );
}
