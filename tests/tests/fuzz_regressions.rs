//! Replays every input under `fuzz/regressions/<target>/` through the body of that fuzz target,
//! so that inputs that once crashed a target stay fixed, with a plain `cargo test`.

use std::path::Path;

use milonga_tests::fuzz::TARGETS;

#[test]
fn every_regression_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut replayed = 0;
    for (name, body) in TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.expect("dir entry").path()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).expect("read regression input");
            let r = std::panic::catch_unwind(|| body(&data));
            assert!(r.is_ok(), "{name}: {} fails again", path.display());
            replayed += 1;
        }
    }
    // Each target has at least its seed input, so the replay cannot silently find nothing.
    assert!(replayed >= TARGETS.len(), "only {replayed} inputs replayed");
}

#[test]
fn every_target_has_a_regression_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    for (name, _) in TARGETS {
        assert!(
            root.join(name).is_dir(),
            "fuzz/regressions/{name} is missing"
        );
    }
}
