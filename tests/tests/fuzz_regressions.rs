//! Replays every input under `fuzz/regressions/<target>/` through the body of that fuzz target,
//! so that inputs that once crashed a target stay fixed, with a plain `cargo test`.

use std::path::{Path, PathBuf};

use milonga::sdk::testing::fuzz::replay_dir;
use milonga_tests::fuzz::{seed_inputs, TARGETS};

// The format targets' allocation limit is checked, as in the fuzz targets.
milonga::sdk::allocation_meter!();

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions")
}

#[test]
fn every_regression_input_passes_its_target() {
    let mut replayed = 0;
    for (name, body) in TARGETS {
        let dir = root().join(name);
        match replay_dir(&dir, |data| {
            body(data);
            Ok(())
        }) {
            Ok(n) => replayed += n,
            Err(failures) => panic!("{name}: {failures}"),
        }
    }
    // Each target has at least its seed input, so the replay cannot silently find nothing.
    assert!(replayed >= TARGETS.len(), "only {replayed} inputs replayed");
}

#[test]
fn every_target_has_a_regression_folder() {
    for (name, _) in TARGETS {
        assert!(
            root().join(name).is_dir(),
            "fuzz/regressions/{name} is missing"
        );
    }
}

/// The format targets start from their seeds: each seed input is in the target's folder
/// (`MILONGA_WRITE_SEEDS=1` writes them after a change of seeds).
#[test]
fn every_format_target_has_its_seed_inputs() {
    let write = std::env::var("MILONGA_WRITE_SEEDS").is_ok_and(|v| v == "1");
    let mut checked = 0;
    for (name, _) in TARGETS {
        let Some(inputs) = seed_inputs(name) else {
            continue;
        };
        for (i, input) in inputs.iter().enumerate() {
            let suffix = if i % 2 == 0 { "" } else { "-raw" };
            let path = root().join(name).join(format!("seed-{}{suffix}", i / 2));
            if write {
                std::fs::write(&path, input).expect("write a seed input");
            }
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(
                on_disk == *input,
                "{} is not the seed input (MILONGA_WRITE_SEEDS=1 rewrites it)",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 16, "only {checked} seed inputs");
}

/// The `columns` target's inputs replayed through its own fuzzer, as the guide
/// (docs/custom-formats.md §6) shows a format author doing it. Cargo runs integration tests in
/// the package's folder (`tests/`).
#[test]
fn columns_regressions_still_pass() {
    let fuzzer = milonga_tests::fuzz::columns_fuzzer();
    let replayed = fuzzer
        .replay_dir("../fuzz/regressions/columns")
        .unwrap_or_else(|failures| panic!("{failures}"));
    assert!(replayed > 0, "no inputs in fuzz/regressions/columns");
}
