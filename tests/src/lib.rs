//! Steps shared by the integration tests and the `milonga-test-step` helper binary (which runs
//! them in separate processes).
// Test and tool code, not a decoder: a panic here is a failed test or a tool's error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[cfg(feature = "s3")]
pub mod s3;
pub mod streams;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::Mutex;

pub mod fuzz;

use milonga::{BoxError, Context, PostcardFormat, Step, StepRef};
use serde::Serialize;

static RUNS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// Counts one run of `what`, in this process and, when `MILONGA_TEST_LOG` names a file, in that
/// file (one line per run) so that runs in other processes can be counted too.
pub fn count_run(what: &str) {
    *RUNS.lock().unwrap().entry(what.to_owned()).or_default() += 1;
    if let Ok(path) = std::env::var("MILONGA_TEST_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open run log");
        writeln!(f, "{what}").expect("write run log");
    }
}

/// Rewrites the bytes of object `id` in the local workspace at `root` with `change` (objects are
/// read-only files: this makes the file writable first), to simulate corruption on disk.
/// Returns the object's path.
pub fn corrupt_object(
    root: &std::path::Path,
    id: &milonga::ContentId,
    change: impl FnOnce(&mut Vec<u8>),
) -> std::path::PathBuf {
    let path = milonga::store::LocalStore::open(root)
        .expect("open the store")
        .object_path(id);
    let mut perms = std::fs::metadata(&path).expect("stat").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).expect("chmod");
    let mut bytes = std::fs::read(&path).expect("read the object");
    change(&mut bytes);
    std::fs::write(&path, bytes).expect("rewrite the object");
    path
}

/// Runs `sql` on the metadata database of the (closed) local workspace at `root`, to simulate
/// a database written by someone else. Returns the database's path.
pub fn tamper_database(root: &std::path::Path, sql: &str) -> std::path::PathBuf {
    let path = root
        .canonicalize()
        .expect("canonical workspace path")
        .join(milonga::DATABASE_FILE);
    let conn = rusqlite::Connection::open(&path).expect("open the database");
    conn.execute_batch(sql).expect("tamper with the database");
    path
}

/// Keeps the run counts of this test process still while held: a test that compares [`runs`]
/// before and after takes it, and so does every test of its file that runs the same steps, so
/// that no other test's runs land in between (tests of one file run in parallel threads of one
/// process, and the counts are per process).
pub fn counting() -> std::sync::MutexGuard<'static, ()> {
    static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    COUNTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How many times `what` ran in this process.
pub fn runs(what: &str) -> usize {
    RUNS.lock().unwrap().get(what).copied().unwrap_or(0)
}

/// x², version 1.
#[derive(Serialize)]
pub struct Square {
    /// The number.
    pub x: u64,
    /// Milliseconds to sleep in `run` (left out of the id).
    #[serde(skip)]
    pub sleep_ms: u64,
}

impl Step for Square {
    const NAME: &'static str = "Square";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        count_run(&format!("Square({})", self.x));
        std::thread::sleep(std::time::Duration::from_millis(self.sleep_ms));
        Ok(self.x * self.x)
    }
}

/// The same step after its code changed: `VERSION` bumped.
#[derive(Serialize)]
pub struct SquareV2 {
    /// The number.
    pub x: u64,
}

impl Step for SquareV2 {
    const NAME: &'static str = "Square";
    const VERSION: Option<&'static str> = Some("2");
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        count_run(&format!("SquareV2({})", self.x));
        Ok(self.x * self.x)
    }
}

/// First step of a chain: the numbers `0..n`.
#[derive(Serialize)]
pub struct Numbers {
    /// How many.
    pub n: u32,
}

impl Step for Numbers {
    const NAME: &'static str = "chain::Numbers";
    type Output = Vec<u32>;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Vec<u32>, BoxError> {
        count_run("Numbers");
        Ok((0..self.n).collect())
    }
}

/// Second step: each number times `factor`.
#[derive(Serialize)]
pub struct Scale {
    /// Input.
    pub numbers: StepRef<Numbers>,
    /// Multiplier.
    pub factor: u32,
}

impl Step for Scale {
    const NAME: &'static str = "chain::Scale";
    type Output = Vec<u32>;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<Vec<u32>, BoxError> {
        count_run("Scale");
        Ok(ctx
            .input(&self.numbers)?
            .iter()
            .map(|n| n * self.factor)
            .collect())
    }
}

/// Third step: the sum plus `offset`.
#[derive(Serialize)]
pub struct Total {
    /// Input.
    pub scaled: StepRef<Scale>,
    /// Added to the sum.
    pub offset: u64,
}

impl Step for Total {
    const NAME: &'static str = "chain::Total";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        count_run("Total");
        Ok(ctx
            .input(&self.scaled)?
            .iter()
            .map(|&n| u64::from(n))
            .sum::<u64>()
            + self.offset)
    }
}

/// A step whose arguments are a map and a set.
#[derive(Serialize)]
pub struct WithCollections {
    /// A map argument.
    pub map: HashMap<String, u32>,
    /// A set argument.
    pub set: HashSet<i64>,
}

impl Step for WithCollections {
    const NAME: &'static str = "WithCollections";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<u64, BoxError> {
        Ok(self.map.values().map(|&v| u64::from(v)).sum::<u64>() + self.set.len() as u64)
    }
}
