//! Listing the step records of a remote workspace (`Workspace::steps`, what `milonga steps`,
//! `verify` and `gc` start with) on the project's local S3 server, and the cost of one step's
//! transitions (lease, RUNNING, objects, COMPLETED) there.
//!
//! ```text
//! eval "$(scripts/s3-server.sh start)"
//! cargo run --release -p milonga-benches --features s3 --bin remote_steps -- 100000 200
//! ```
//!
//! The workspace gets `real` real results (computed one by one: the per-step cost), then its
//! shard objects are rewritten with copies of those records under new ids up to `records`
//! (computing 100,000 real steps would take long); the layout written is the documented one
//! (docs/FORMAT.md, "Remote metadata").

// Not a decoder: a panic here is a failing tool, not a panic on stored bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::time::Instant;

use milonga::{BoxError, Context, PostcardFormat, Step, Workspace};
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    i: u64,
}

impl Step for Row {
    const NAME: &'static str = "Row";
    type Output = u64;
    type Format = PostcardFormat;
    fn run(&self, _: &mut Context<'_>) -> Result<u64, BoxError> {
        Ok(self.i * 2)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: usize = args.get(1).map_or(100_000, |s| s.parse().unwrap());
    let real: u64 = args.get(2).map_or(200, |s| s.parse().unwrap());
    let base = std::env::var("MILONGA_TEST_S3")
        .expect("MILONGA_TEST_S3: start the server with eval \"$(scripts/s3-server.sh start)\"");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let url = format!("{}/bench-steps-{stamp}", base.trim_end_matches('/'));
    let ws = Workspace::from_url(&url).unwrap();

    let t = Instant::now();
    for i in 0..real {
        Row { i }.result(&ws).unwrap();
    }
    let per_step = t.elapsed().as_secs_f64() / real as f64;
    println!(
        "{real} real steps: {:.2} ms per step (lease, records, objects)",
        per_step * 1e3
    );

    // Copy the records into the 256 shards up to `records`.
    let remote = milonga::remote::Remote::from_url(&url).unwrap();
    let shard_key = |k: usize| format!("meta/v1/steps/{k:02x}.json");
    let mut templates: Vec<serde_json::Value> = Vec::new();
    for k in 0..256 {
        if let Some((bytes, _)) = remote.get(&shard_key(k)).unwrap() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            templates.extend(v["records"].as_object().unwrap().values().cloned());
        }
    }
    assert!(!templates.is_empty());
    let mut shards: BTreeMap<usize, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    for n in 0..records {
        let id = format!("Row-copy{n:08}");
        let shard = usize::from(blake3::hash(id.as_bytes()).as_bytes()[0]);
        let mut r = templates[n % templates.len()].clone();
        r["created_at"] = serde_json::json!(n);
        shards.entry(shard).or_default().insert(id, r);
    }
    let t = Instant::now();
    let mut bytes_total = 0usize;
    for (k, recs) in shards {
        let body = serde_json::to_vec(&serde_json::json!({ "records": recs })).unwrap();
        bytes_total += body.len();
        remote.put(&shard_key(k), body).unwrap();
    }
    println!(
        "wrote {records} records in 256 shards ({:.1} MB) in {:.2} s",
        bytes_total as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    for round in 0..3 {
        let fresh = Workspace::from_url(&url).unwrap();
        let t = Instant::now();
        let steps = fresh.steps().unwrap();
        let took = t.elapsed().as_secs_f64();
        assert_eq!(steps.len(), records);
        println!("round {round}: steps() of {records} records: {took:.2} s");
    }
    let t = Instant::now();
    let info = ws.step_info("Row-copy00000007").unwrap();
    assert!(info.is_some());
    println!(
        "step_info of one record: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}
