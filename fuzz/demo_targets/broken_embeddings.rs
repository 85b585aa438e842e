//! A demonstration, not run in CI: the deliberately broken two-file lazy format of the kit's
//! tests (`sdk/tests/common/embeddings.rs`) under the SDK's `FormatFuzzer`, which finds its
//! bug within seconds. `MILONGA_DEMO_BUG=lying-count` picks the lying `u64` count, anything
//! else the out-of-bounds slice after a valid header.
//!
//! ```sh
//! RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --features demo broken_embeddings -- -max_total_time=60
//! ```
#![no_main]

use std::sync::LazyLock;

use milonga_sdk::testing::fuzz::FormatFuzzer;

#[allow(dead_code)]
#[path = "../../sdk/tests/common/embeddings.rs"]
mod embeddings;

use embeddings::{Bug, Embeddings, EmbeddingsFormat, EmbeddingsReader};

milonga_sdk::allocation_meter!();

static FUZZER: LazyLock<FormatFuzzer<Embeddings, EmbeddingsFormat>> = LazyLock::new(|| {
    let bug = match std::env::var("MILONGA_DEMO_BUG").as_deref() {
        Ok("lying-count") => Bug::LyingCount,
        _ => Bug::OutOfBoundsSlice,
    };
    FormatFuzzer::lazy(EmbeddingsFormat(bug), Clone::clone, |r: EmbeddingsReader| r.all())
        .with_seeds([
            vec![],
            vec![("a".into(), vec![1, 2, 3])],
            vec![("north".into(), vec![-1, 0, 7]), ("south".into(), vec![5, 5, 5])],
        ])
        .with_random_access(|r| Ok(r.len()), |r, i| r.get(i), |r| r.all())
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| FUZZER.run(data));
