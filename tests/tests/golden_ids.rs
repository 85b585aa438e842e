//! Golden step ids: these exact strings are part of milonga's stability promise. An id may
//! only change with a new id scheme (`milonga::ID_SCHEME`) and a note in docs/FORMAT.md.
//!
//! The steps here use formats with a pinned id and version, so that the ids depend on the id
//! scheme alone (bumping a built-in format's version rightly changes the ids of the steps that
//! use it).

use std::collections::{BTreeMap, HashMap, HashSet};

use milonga::sdk::{ArtifactHandle, ArtifactWriter, Format, Result as SdkResult};
use milonga::{BoxError, Context, PostcardFormat, Step, StepRef};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A format whose id and version never change: postcard bytes under a fixed name.
#[derive(Default)]
struct Pinned<const V: u32>;

impl<T, const V: u32> Format<T> for Pinned<V>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Output = T;
    fn id(&self) -> &str {
        "golden.pinned"
    }
    fn version(&self) -> u32 {
        V
    }
    fn write(&self, value: T, artifact: &dyn ArtifactWriter) -> SdkResult<()> {
        PostcardFormat::default().write(value, artifact)
    }
    fn read(&self, artifact: ArtifactHandle) -> SdkResult<T> {
        PostcardFormat::default().read(artifact)
    }
}

#[derive(Serialize)]
struct Tokenize {
    corpus: String,
    lowercase: bool,
    max_len: Option<u32>,
}

impl Step for Tokenize {
    const NAME: &'static str = "golden::Tokenize";
    const VERSION: Option<&'static str> = Some("3");
    type Output = Vec<String>;
    type Format = Pinned<1>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<Vec<String>, BoxError> {
        Ok(vec![])
    }
}

#[derive(Serialize)]
enum Optimizer {
    Sgd { lr: f64 },
    Adam { lr: f64, betas: (f64, f64) },
}

#[derive(Serialize)]
struct Train {
    tokens: StepRef<Tokenize>,
    optimizer: Optimizer,
    epochs: u16,
    tags: HashSet<String>,
    weights: HashMap<String, f32>,
    schedule: BTreeMap<u32, f64>,
}

impl Step for Train {
    const NAME: &'static str = "Train";
    type Output = f64;
    type Format = Pinned<2>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<f64, BoxError> {
        Ok(0.0)
    }
}

#[derive(Serialize)]
struct Nothing;

impl Step for Nothing {
    const NAME: &'static str = "Nothing";
    type Output = ();
    type Format = Pinned<1>;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

fn tokenize() -> Tokenize {
    Tokenize {
        corpus: "wikitext-103".into(),
        lowercase: true,
        max_len: Some(512),
    }
}

fn train(optimizer: Optimizer) -> Train {
    Train {
        tokens: tokenize().into(),
        optimizer,
        epochs: 3,
        tags: ["baseline", "small"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        weights: [("a".to_string(), 0.5f32), ("b".to_string(), -0.0)]
            .into_iter()
            .collect(),
        schedule: [(0, 1e-3), (1000, 1e-4)].into_iter().collect(),
    }
}

#[test]
fn golden_ids_never_change() {
    let ids = [
        Nothing.unique_id().unwrap(),
        tokenize().unique_id().unwrap(),
        train(Optimizer::Sgd { lr: 0.1 }).unique_id().unwrap(),
        train(Optimizer::Adam {
            lr: 3e-4,
            betas: (0.9, 0.999),
        })
        .unique_id()
        .unwrap(),
    ];
    let golden = [
        "Nothing-GJKKGXd8ZitdPosyYzw6hZj8n5hNzD2FV",
        "Tokenize-3-HTXgrRDfmmNVEER5AhTGARiNW4StiWeRU",
        "Train-Ai2L42wzMTpTWtQ4zkY7NCCUUMEXs9GY1",
        "Train-72fFABjDGC3tutYdFoLQhuC3kMJuMRxFs",
    ];
    assert_eq!(ids, golden);
}
