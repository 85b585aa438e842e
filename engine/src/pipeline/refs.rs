//! Reading a [`StepRef`] argument from a pipeline file: `{ type = "ref", ref = "name" }` names
//! a step of the same file, built before this one.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer};

use crate::step::{Step, StepRef};

/// The steps of the pipeline being built, by name: their type name and their `StepRef<S>`.
pub(crate) type Built = HashMap<String, (String, Arc<dyn Any + Send + Sync>)>;

thread_local! {
    static RESOLVER: RefCell<Option<Built>> = const { RefCell::new(None) };
}

/// Runs `f` with `steps` as the steps a reference may name, and gives them back.
pub(crate) fn with_resolver<T>(steps: Built, f: impl FnOnce() -> T) -> (T, Built) {
    let previous = RESOLVER.with(|r| r.borrow_mut().replace(steps));
    let out = f();
    let steps = RESOLVER.with(|r| std::mem::replace(&mut *r.borrow_mut(), previous));
    (out, steps.unwrap_or_default())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RefArg {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "ref")]
    name: String,
}

impl<'de, S: Step> Deserialize<'de> for StepRef<S> {
    /// Reads `{ "type": "ref", "ref": "name" }` while a pipeline file is being built
    /// ([`Pipeline`](crate::Pipeline)): the step of that name, which must be of type `S`.
    /// Anywhere else a step reference cannot be deserialized.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let arg = RefArg::deserialize(deserializer)?;
        if arg.kind != "ref" {
            return Err(de::Error::custom(format!(
                "a step reference is {{ type = \"ref\", ref = \"NAME\" }}, not type = {:?}",
                arg.kind
            )));
        }
        RESOLVER.with(|r| {
            let r = r.borrow();
            let Some(steps) = r.as_ref() else {
                return Err(de::Error::custom(
                    "a step reference can only be read while a pipeline file is built",
                ));
            };
            let Some((type_name, step)) = steps.get(&arg.name) else {
                return Err(de::Error::custom(format!("no step named {:?}", arg.name)));
            };
            match step.downcast_ref::<StepRef<S>>() {
                Some(step) => Ok(step.clone()),
                None => Err(de::Error::custom(format!(
                    "step {:?} is a {type_name}; this argument takes a {}",
                    arg.name,
                    S::NAME
                ))),
            }
        })
    }
}
