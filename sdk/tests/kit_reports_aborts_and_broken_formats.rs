//! A deliberately broken lazy format (a lying `u64` count; an out-of-bounds slice after a valid
//! header) is caught by the kit's one-line checks and by the fuzz module, each with a
//! reproducer, and a lying count that makes the reader ask for terabytes is a reported failure
//! of the check (run in a child process), not the end of this test binary.

mod common;

use common::embeddings::{Bug, Embeddings, EmbeddingsFormat, EmbeddingsReader};
use milonga_sdk::testing::fuzz::{encode_files, FormatFuzzer};
use milonga_sdk::testing::{check_lazy_format, AllocationLimit, Check, FormatCheck};
use proptest::prelude::*;

milonga_sdk::allocation_meter!();

fn embeddings() -> impl Strategy<Value = Embeddings> {
    proptest::collection::vec(
        ("[a-z]{0,6}", proptest::collection::vec(any::<i16>(), 3)),
        0..6,
    )
}

fn check(
    bug: Bug,
) -> FormatCheck<'static, Embeddings, EmbeddingsFormat, impl Strategy<Value = Embeddings>> {
    static FORMATS: [EmbeddingsFormat; 3] = [
        EmbeddingsFormat(Bug::None),
        EmbeddingsFormat(Bug::LyingCount),
        EmbeddingsFormat(Bug::OutOfBoundsSlice),
    ];
    let format = match bug {
        Bug::None => &FORMATS[0],
        Bug::LyingCount => &FORMATS[1],
        Bug::OutOfBoundsSlice => &FORMATS[2],
    };
    let mut check = FormatCheck::lazy(format, embeddings(), Clone::clone, |r: EmbeddingsReader| {
        r.all()
    });
    check.with_random_access(
        |r: &EmbeddingsReader| Ok(r.len()),
        |r: &EmbeddingsReader, i| r.get(i),
        |r: &EmbeddingsReader| r.all(),
    );
    check
}

fn fuzzer(bug: Bug) -> FormatFuzzer<Embeddings, EmbeddingsFormat> {
    FormatFuzzer::lazy(
        EmbeddingsFormat(bug),
        Clone::clone,
        |r: EmbeddingsReader| r.all(),
    )
    .with_seeds([
        vec![],
        vec![("a".into(), vec![1, 2, 3])],
        vec![
            ("north".into(), vec![-1, 0, 7]),
            ("south".into(), vec![5, 5, 5]),
        ],
    ])
    .with_random_access(|r| Ok(r.len()), |r, i| r.get(i), |r| r.all())
}

#[test]
fn the_correct_format_passes_the_kit_and_the_fuzzer() {
    check_lazy_format(
        &EmbeddingsFormat(Bug::None),
        embeddings(),
        Clone::clone,
        |r| r.all(),
    );
    check(Bug::None).with_cases(8).assert();
    let fuzz = fuzzer(Bug::None);
    let mut rng = 0x1234_5678u64;
    for _ in 0..3000 {
        let input = random_input(&mut rng);
        if let Err(f) = fuzz.check(&input) {
            panic!("the correct format failed: {f}");
        }
    }
}

#[test]
fn a_lying_u64_count_is_a_reported_failure_with_the_input_not_an_abort() {
    // Only the allocation check, with a limit no request reaches: the one failure left is the
    // request the allocator refuses (a count of 2^40 or more names), which aborts the process
    // that makes it. The check runs in a child process; this one reads its report.
    let failure = check(Bug::LyingCount)
        .with_only(&[Check::Allocation])
        .with_allocation_limit(AllocationLimit {
            base: usize::MAX / 4,
            per_input_byte: 0,
        })
        .with_mutations(200)
        .run()
        .expect_err("the lying count must be caught");
    eprintln!("{failure}");
    assert_eq!(failure.check, Check::Allocation, "{failure}");
    assert!(failure.message.contains("refused"), "{failure}");
    assert!(
        failure.message.contains("\"names\""),
        "names the file: {failure}"
    );
    assert!(
        failure.input.contains("mutation seed"),
        "gives the seed: {failure}"
    );
    // The reproducer: the files of the artifact, written under the target directory.
    let written: Vec<&str> = failure
        .message
        .split(" written to ")
        .skip(1)
        .map(|rest| rest.split(';').next().unwrap_or(rest).trim())
        .collect();
    assert!(!written.is_empty(), "no reproducer file: {failure}");
    let names = written
        .iter()
        .find(|p| p.contains("names"))
        .expect("the names file is written");
    let bytes = std::fs::read(names).expect("the reproducer exists");
    assert!(bytes.starts_with(&milonga_sdk::ENVELOPE_MAGIC), "{bytes:?}");
}

#[test]
fn the_default_checks_catch_the_lying_count() {
    let failure = check(Bug::LyingCount)
        .run()
        .expect_err("the lying count must be caught");
    // Which lie comes first decides how it shows: a request over the limit, one over the cap
    // (refused, in the child), or a capacity overflow.
    assert!(
        matches!(failure.check, Check::Allocation | Check::NoPanic),
        "{failure}"
    );
    assert!(failure.input.contains("mutation seed"), "{failure}");
}

#[test]
fn an_out_of_bounds_slice_after_a_valid_header_is_caught_by_the_kit() {
    let failure = check(Bug::OutOfBoundsSlice)
        .run()
        .expect_err("the unchecked slice must be caught");
    assert!(
        matches!(failure.check, Check::NoPanic | Check::Rejection),
        "{failure}"
    );
    assert!(failure.input.contains("mutation seed"), "{failure}");
}

#[test]
fn the_fuzzer_finds_the_out_of_bounds_slice() {
    let fuzz = fuzzer(Bug::OutOfBoundsSlice);
    let mut rng = 7u64;
    let found = (0..20_000).find_map(|_| {
        let input = random_input(&mut rng);
        fuzz.check(&input).err().map(|f| (input, f))
    });
    let (input, failure) = found.expect("found within 20,000 random inputs");
    assert_eq!(failure.check, Check::NoPanic, "{failure}");
    assert!(failure.message.contains("out of range"), "{failure}");
    assert!(
        failure.input.contains("seed"),
        "says how the artifact was made: {failure}"
    );
    // The input reproduces it.
    assert!(fuzz.check(&input).is_err());
    assert!(fuzz.files_of(&input).is_some());
}

#[test]
fn a_replayed_lying_count_is_a_reported_failure_naming_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let fuzz = fuzzer(Bug::LyingCount);
    // Seed 1, then one edit: the 64-bit word just after the envelope of file 0 ("names", the
    // count) set to the lie 2^40.
    let lie = [1u8, 1, 3, 0, 0, 2, 0, 3];
    let (files, how) = fuzz.files_of(&lie).expect("an artifact");
    assert!(how.contains("0x10000000000"), "{how}");
    assert_eq!(files[0].0, "names");
    std::fs::write(dir.path().join("crash-lying-count"), lie).unwrap();
    std::fs::write(dir.path().join("seed-raw"), encode_files(&fuzz.seeds()[2])).unwrap();
    let failures = fuzz.replay_dir(dir.path()).expect_err("the lie must fail");
    let text = failures.to_string();
    eprintln!("{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(
        text.contains("crash-lying-count"),
        "names the input: {text}"
    );
    // The correct format replays the same folder.
    assert_eq!(fuzzer(Bug::None).replay_dir(dir.path()), Ok(2));
}

#[test]
fn seed_corpus_inputs_make_the_seeds() {
    let fuzz = fuzzer(Bug::None);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(fuzz.write_seed_corpus(dir.path()).unwrap(), 6);
    for (i, seed) in fuzz.seeds().iter().enumerate() {
        for name in [format!("seed-{i}"), format!("seed-{i}-raw")] {
            let input = std::fs::read(dir.path().join(&name)).unwrap();
            let (files, _) = fuzz.files_of(&input).expect("an artifact");
            assert_eq!(&files, seed, "{name}");
        }
    }
    assert_eq!(fuzz.replay_dir(dir.path()), Ok(6));
}

/// A random fuzz input: mostly a seed with a few edits.
fn random_input(state: &mut u64) -> Vec<u8> {
    let mut next = || {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let len = 2 + (next() % 40) as usize;
    (0..len).map(|_| next() as u8).collect()
}

/// A format that aborts the process on any file it cannot read (a stand-in for a stack
/// overflow or an allocation the system refuses): the kit reports the child's death with the
/// case it was in.
struct Aborts;

impl milonga_sdk::Format<Vec<u8>> for Aborts {
    type Output = Vec<u8>;

    fn id(&self) -> &str {
        "example.aborts"
    }

    fn version(&self) -> u32 {
        1
    }

    fn write(
        &self,
        value: Vec<u8>,
        artifact: &dyn milonga_sdk::ArtifactWriter,
    ) -> milonga_sdk::Result<()> {
        use std::io::Write;
        let mut out = Vec::new();
        milonga_sdk::Envelope::new(self.id(), 1).encode_into(&mut out)?;
        out.extend_from_slice(&value);
        let mut file = artifact.create("data")?;
        file.write_all(&out)
            .map_err(|e| milonga_sdk::Error::io("data", e))?;
        file.finish()?;
        Ok(())
    }

    fn read(&self, artifact: milonga_sdk::ArtifactHandle) -> milonga_sdk::Result<Vec<u8>> {
        let bytes = artifact.bytes("data")?;
        match milonga_sdk::open_envelope((*bytes).as_ref(), self.id(), 1, "data") {
            Ok((_, payload)) => Ok(payload.to_vec()),
            Err(_) => std::process::abort(),
        }
    }
}

#[test]
fn a_process_abort_in_a_check_is_reported_with_its_case() {
    let failure = FormatCheck::new(&Aborts, proptest::collection::vec(any::<u8>(), 0..8))
        .with_cases(4)
        .run()
        .expect_err("the abort must be reported");
    assert_eq!(failure.check, Check::NoPanic, "{failure}");
    assert!(failure.message.contains("child process"), "{failure}");
    assert!(
        failure.message.contains("SIGABRT") || failure.message.contains("signal"),
        "{failure}"
    );
    assert!(
        failure.input.contains("mutation seed"),
        "the case: {failure}"
    );
}
