//! Every Rust block of the format author's guide (`docs/custom-formats.md`) is an excerpt of a
//! file that CI builds, named in an `<!-- excerpt: PATH -->` line above the block, so the code
//! the guide shows compiles. Other blocks say what they are (`toml`, `sh`, `text`).

// Not a decoder: a panic here is a failing test or tool, not a panic on stored bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

/// Folders whose files CI compiles: examples and tests by `cargo test`, fuzz targets by
/// `fuzz/run.sh --ci`.
const BUILT: &[&str] = &[
    "examples/",
    "sdk/src/",
    "sdk/tests/",
    "formats/src/",
    "engine/src/",
    "tests/src/",
    "tests/tests/",
    "fuzz/fuzz_targets/",
];

/// The lines that matter for matching: trimmed, not blank, doc comments left out (an excerpt
/// may skip them).
fn lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("///") && !l.starts_with("//!"))
        .collect()
}

/// The Rust blocks of `guide` with the file each one names: `(line, source, code)`; other
/// blocks are checked for a language tag.
fn rust_blocks(guide: &str) -> Vec<(usize, Result<String, String>, String)> {
    let mut blocks = Vec::new();
    let all: Vec<&str> = guide.lines().collect();
    let mut i = 0;
    while i < all.len() {
        let Some(tag) = all[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let start = i;
        let end = (i + 1..all.len())
            .find(|&j| all[j].trim_start().starts_with("```"))
            .unwrap_or_else(|| panic!("the block at line {} is not closed", start + 1));
        match tag.trim() {
            "toml" | "sh" | "text" | "console" => {}
            "rust" => {
                let marker = all[..start]
                    .iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .and_then(|l| l.trim().strip_prefix("<!-- excerpt:"))
                    .and_then(|l| l.strip_suffix("-->"))
                    .map(|p| p.trim().to_owned())
                    .ok_or_else(|| "no <!-- excerpt: PATH --> line above it".to_owned());
                blocks.push((start + 1, marker, all[start + 1..end].join("\n")));
            }
            other => panic!(
                "the block at line {} is tagged {other:?}: use rust (an excerpt of a built \
                 file), toml, sh or text",
                start + 1
            ),
        }
        i = end + 1;
    }
    blocks
}

#[test]
fn every_rust_block_of_the_guide_is_an_excerpt_of_a_built_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guide = std::fs::read_to_string(root.join("docs/custom-formats.md")).unwrap();
    let blocks = rust_blocks(&guide);
    assert!(blocks.len() >= 6, "only {} Rust blocks", blocks.len());
    for (line, source, code) in blocks {
        let source = source.unwrap_or_else(|e| panic!("the block at line {line}: {e}"));
        assert!(
            BUILT.iter().any(|dir| source.starts_with(dir)),
            "the block at line {line} comes from {source}, which CI does not build"
        );
        let file = std::fs::read_to_string(root.join(&source))
            .unwrap_or_else(|e| panic!("the block at line {line}: {source}: {e}"));
        let (want, have) = (lines(&code), lines(&file));
        assert!(!want.is_empty(), "the block at line {line} is empty");
        assert!(
            have.windows(want.len()).any(|w| w == want.as_slice()),
            "the block at line {line} is not in {source} (as contiguous lines, doc comments \
             aside): update one or the other"
        );
    }
}

#[test]
fn the_dependency_lines_of_the_guide_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let engine = std::fs::read_to_string(root.join("engine/Cargo.toml")).unwrap();
    assert!(
        engine.contains("testing = [\"milonga-sdk/testing\""),
        "milonga has no testing feature passing through to the SDK's"
    );
    let guide = std::fs::read_to_string(root.join("docs/custom-formats.md")).unwrap();
    assert!(guide.contains("features = [\"testing\"]"));
}

#[test]
fn the_checker_refuses_drift() {
    let guide = "<!-- excerpt: x.rs -->\n```rust\nfn a() {}\n```\n```rust\nlet b = 1;\n```\n";
    let blocks = rust_blocks(guide);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].1.as_deref(), Ok("x.rs"));
    assert!(blocks[1].1.is_err(), "a block without a marker");
    let file = "/// doc\nfn a() {}\n";
    assert!(lines(file)
        .windows(1)
        .any(|w| w == lines("fn a() {}").as_slice()));
    assert!(!lines(file)
        .windows(1)
        .any(|w| w == lines("fn b() {}").as_slice()));
}
