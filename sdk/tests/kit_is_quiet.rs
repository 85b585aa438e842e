//! Panics the kit catches are silent: a format that panics on every mutated input fails the
//! check with one report, instead of printing a message and a backtrace per input.

use std::io::Write;
use std::process::Command;

use milonga_sdk::testing::{Check, FormatCheck};
use milonga_sdk::{ArtifactHandle, ArtifactWriter, Error, Format, Result};
use proptest::prelude::*;

/// Writes the bytes; reading indexes past the end on anything but the exact bytes written.
struct Panicky;

impl Format<Vec<u8>> for Panicky {
    type Output = Vec<u8>;
    fn id(&self) -> &str {
        "test.panicky"
    }
    fn version(&self) -> u32 {
        1
    }
    fn write(&self, value: Vec<u8>, artifact: &dyn ArtifactWriter) -> Result<()> {
        let mut f = artifact.create("data")?;
        f.write_all(&(value.len() as u32).to_le_bytes())
            .and_then(|()| f.write_all(&value))
            .map_err(|e| Error::io("data", e))?;
        f.finish()?;
        Ok(())
    }
    #[allow(clippy::indexing_slicing)]
    fn read(&self, artifact: ArtifactHandle) -> Result<Vec<u8>> {
        let b = artifact.bytes("data")?;
        let b = (*b).as_ref();
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        Ok(b[4..4 + n].to_vec())
    }
}

#[test]
fn child_runs_a_failing_check() {
    if std::env::var_os("KIT_QUIET_CHILD").is_none() {
        return;
    }
    let failure = FormatCheck::new(&Panicky, proptest::collection::vec(any::<u8>(), 0..64))
        .with_only(&[Check::NoPanic])
        .with_cases(4)
        .run()
        .unwrap_err();
    assert_eq!(failure.check, Check::NoPanic);
    // The report says where the panic happened, since nothing was printed.
    assert!(failure.message.contains("kit_is_quiet.rs"), "{failure}");
    println!("CHILD DONE");
}

#[test]
fn caught_panics_print_nothing_even_with_backtraces_on() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_runs_a_failing_check",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KIT_QUIET_CHILD", "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD DONE"),
        "{stdout}\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked at") && stderr.lines().count() < 5,
        "the kit printed caught panics:\n{}",
        stderr.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}
