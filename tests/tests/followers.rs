//! Followers never hang: a follower learns from the step's OS lock that no writer is alive and
//! fails with an error, whether the writer died before or after registering the step, or never
//! existed.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use milonga::{Error, Step, Workspace};
use milonga_tests::streams::Count;

/// Generous bound on how long a follower may take to give up; it only turns a hang into a
/// test failure and is never reached by a correct follower.
const HANG: Duration = Duration::from_secs(120);

/// Follows `step` to its end on another thread, waiting up to `start` for a writer to start;
/// the items read, or the first error.
fn follow_to_end(
    ws: &Workspace,
    step: Count,
    start: Option<Duration>,
) -> mpsc::Receiver<Result<u64, String>> {
    let (tx, rx) = mpsc::channel();
    let ws = ws.clone();
    std::thread::spawn(move || {
        let outcome = (|| {
            let reader = ws.follow_timeout(&step, start).map_err(|e| e.to_string())?;
            let mut n = 0;
            for item in reader.iter() {
                item.map_err(|e| e.to_string())?;
                n += 1;
            }
            Ok(n)
        })();
        let _ = tx.send(outcome);
    });
    rx
}

#[test]
fn following_a_step_nobody_runs_fails_instead_of_waiting_forever() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = Count {
        n: 5,
        delay_us: 0,
        resumable: false,
    };
    // Without a timeout: a typed error at once.
    let e = ws.follow(&step).map(|_| ()).unwrap_err();
    assert!(
        matches!(&e, Error::NoWriter { unique_id, .. } if *unique_id == step.unique_id().unwrap()),
        "{e:?}"
    );
    // With one: the reader gives up when it runs out.
    let outcome = follow_to_end(&ws, step, Some(Duration::from_millis(200)))
        .recv_timeout(HANG)
        .expect("the follower of a step nobody runs hangs");
    let error = outcome.expect_err("nothing was written, so following must fail");
    assert!(error.contains("no process"), "{error}");
}

#[test]
fn a_follower_started_before_a_writer_killed_before_registering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let n = 1_000_000;
    let step = Count {
        n,
        delay_us: 3_000,
        resumable: false,
    };
    let follower = follow_to_end(&ws, step, Some(Duration::from_millis(500)));
    let mut child = Command::new(env!("CARGO_BIN_EXE_milonga-test-stream"))
        .arg(dir.path())
        .arg(n.to_string())
        .arg("3000")
        .arg("0")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    child.kill().unwrap();
    child.wait().unwrap();
    let outcome = follower
        .recv_timeout(HANG)
        .expect("the follower of a writer that was killed hangs");
    assert!(outcome.is_err(), "{outcome:?}");
}

/// Text lines `0..n` in small compressed parts, written slowly.
#[derive(serde::Serialize)]
struct SlowLines {
    n: u32,
}

impl Step for SlowLines {
    const NAME: &'static str = "followers::SlowLines";
    type Output = milonga::Stream<String>;
    type Format = milonga::TextLinesFormat;

    fn format(&self) -> milonga::TextLinesFormat {
        milonga::TextLinesFormat::new()
            .with_part_size(256)
            .with_compression(milonga::Compression::Zstd { level: 1 })
    }

    fn run(
        &self,
        _ctx: &mut milonga::Context<'_>,
    ) -> Result<milonga::Stream<String>, milonga::BoxError> {
        Ok(milonga::Stream::new((0..self.n).map(|i| {
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            format!("line {i}")
        })))
    }
}

#[test]
fn a_lines_step_is_followed_part_by_part_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = SlowLines { n: 3000 };
    assert!(step.followable());
    let (tx, rx) = mpsc::channel();
    let (opened_tx, opened) = mpsc::channel();
    {
        let ws = ws.clone();
        let step = SlowLines { n: step.n };
        std::thread::spawn(move || {
            let outcome = (|| {
                let reader = ws
                    .follow_timeout(&step, Some(Duration::from_secs(60)))
                    .map_err(|e| e.to_string())?;
                // Opened before the writer starts: the reader follows.
                let _ = opened_tx.send(reader.is_complete());
                let mut lines = Vec::new();
                for line in reader.iter() {
                    lines.push(line.map_err(|e| e.to_string())?);
                }
                Ok::<_, String>((lines, reader.len().map_err(|e| e.to_string())?))
            })();
            let _ = tx.send(outcome);
        });
    }
    let complete_at_open = opened.recv_timeout(HANG).expect("the follower opens");
    assert!(!complete_at_open, "nothing was written yet");
    step.ensure(&ws).unwrap();
    let (lines, len) = rx
        .recv_timeout(HANG)
        .expect("the follower of a lines step hangs")
        .unwrap();
    assert_eq!(len, 3000);
    assert_eq!(
        lines,
        (0..3000).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
}
