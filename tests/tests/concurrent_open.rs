//! Many processes opening a workspace that does not exist yet: creating it and setting up its
//! schema is safe under any number of concurrent openers.

use std::process::{Command, Stdio};

const PROCESSES: usize = 8;
const REPETITIONS: usize = 25;

#[test]
fn racing_first_opens_of_a_new_workspace_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    for rep in 0..REPETITIONS {
        let ws = dir.path().join(format!("ws-{rep}"));
        let barrier = dir.path().join(format!("barrier-{rep}"));
        std::fs::create_dir(&barrier).unwrap();
        let gate = std::fs::File::create(barrier.join("gate")).unwrap();
        gate.lock().unwrap();
        let mut children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_milonga-test-open"))
                    .env("MILONGA_TEST_BARRIER", &barrier)
                    .arg(&ws)
                    .arg("open")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn milonga-test-open")
            })
            .collect();
        // Release them together, once all have started: the race is at its tightest.
        while std::fs::read_dir(&barrier).unwrap().count() < PROCESSES + 1 {
            for c in &mut children {
                if let Some(status) = c.try_wait().unwrap() {
                    panic!("an opener exited before the start: {status}");
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(gate);
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "repetition {rep}: an opener failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 0");
        }
    }
}
