//! Explain: why a step's id differs from an earlier record of the same step type ("why did this
//! miss the cache?"), from the id pre-images stored in the records.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::{StepInfo, StepState, Workspace};
use crate::error::{Error, Result};
use crate::step::preimage::{Arg, Change};
use crate::step::Step;

/// How many earlier records of the same step type are compared to find the closest.
const CANDIDATES: usize = 64;

/// How deep upstream changes are followed.
const MAX_DEPTH: usize = 32;

/// Why a step's unique id differs from an earlier record of the same step type: the output of
/// [`Workspace::explain`]. `Display` prints it as an indented list; it serializes to JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Explanation {
    /// The step explained.
    pub unique_id: String,
    /// Its type name.
    pub step_type: String,
    /// The record it was compared with: the step whose result it reused (early cutoff), or the
    /// closest earlier record of the same type (fewest differences among the latest ones).
    /// `None`: no earlier record of this type has a pre-image (it never ran here before, or
    /// only with a milonga that did not store pre-images).
    pub compared_with: Option<String>,
    /// Early cutoff: the step's result was not computed but reused from this step, whose
    /// inputs had byte-identical content.
    pub reused_from: Option<String>,
    /// What differs from `compared_with`.
    pub differences: Vec<Difference>,
}

/// One difference between two id pre-images.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Difference {
    /// The step's `VERSION` changed.
    Version {
        /// Before.
        old: Option<String>,
        /// Now.
        new: Option<String>,
    },
    /// The step's format (id or version) changed.
    Format {
        /// Before (`id vN`).
        old: String,
        /// Now.
        new: String,
    },
    /// An argument changed, appeared (`old` is `None`) or disappeared (`new` is `None`).
    Argument {
        /// Where in the arguments (`field.sub[2]`).
        path: String,
        /// Before, as JSON.
        old: Option<Value>,
        /// Now, as JSON.
        new: Option<Value>,
    },
    /// An argument refers to another upstream step.
    Upstream {
        /// Where in the arguments.
        path: String,
        /// The upstream step before.
        old: String,
        /// The upstream step now.
        new: String,
        /// Whether both upstream steps have byte-identical stored results (the change made no
        /// difference to this step's input: early cutoff applies).
        same_output: bool,
        /// Why the upstream step's id differs, recursively (`None` past the depth limit or when
        /// a record is missing).
        explanation: Option<Box<Explanation>>,
    },
    /// The step is non-deterministic: its id is new in every run.
    Nondeterministic,
    /// One of the records has no stored pre-image (written before schema 2): the arguments
    /// cannot be compared.
    NoPreimage {
        /// The record without a pre-image.
        unique_id: String,
    },
}

fn decode(info: &StepInfo) -> Result<Option<Arg>> {
    let Some(bytes) = &info.preimage else {
        return Ok(None);
    };
    Arg::decode(bytes).map(Some).map_err(|reason| {
        Error::Format(milonga_sdk::Error::corrupt(
            format!("id pre-image of step {}", info.unique_id),
            0,
            reason,
        ))
    })
}

impl Workspace {
    /// Explains why the step recorded as `unique_id` has its id: compares its stored id
    /// pre-image with the closest earlier record of the same step type and says what differs
    /// (`VERSION`, format, which argument and how, which upstream step, recursively), and
    /// whether its result was reused by early cutoff.
    ///
    /// # Errors
    /// [`Error::State`] if the workspace has no record of `unique_id`; a database error; a
    /// damaged pre-image.
    pub fn explain(&self, unique_id: &str) -> Result<Explanation> {
        let info = self.step_info(unique_id)?.ok_or_else(|| Error::State {
            unique_id: unique_id.into(),
            reason: "the workspace has no record of this step".into(),
        })?;
        self.explain_info(&info)
    }

    /// Explains why `step` would miss (or hit) the cache: as [`explain`](Workspace::explain),
    /// for a step value that may never have run here.
    ///
    /// # Errors
    /// As [`Step::unique_id`]; as [`explain`](Workspace::explain).
    pub fn explain_step<S: Step>(&self, step: &S) -> Result<Explanation> {
        let ident = crate::step::identity(step)?;
        if let Some(info) = self.step_info(&ident.unique_id)? {
            return self.explain_info(&info);
        }
        let format = step.format();
        let info = StepInfo {
            unique_id: ident.unique_id,
            step_type: S::NAME.into(),
            version: S::VERSION.map(Into::into),
            state: StepState::Incomplete,
            manifest_id: None,
            format_id: milonga_sdk::Format::id(&format).into(),
            format_version: milonga_sdk::Format::version(&format),
            started_at: None,
            ended_at: None,
            error: None,
            metadata: Value::Null,
            attempts: 0,
            owner: None,
            dependencies: ident.step_refs,
            preimage: Some(ident.args),
            nondeterministic: !S::DETERMINISTIC,
            provenance: None,
            reused_from: None,
            last_access: None,
            result_size: None,
        };
        self.explain_info(&info)
    }

    fn explain_info(&self, info: &StepInfo) -> Result<Explanation> {
        let mut visited = HashSet::new();
        let other = match &info.reused_from {
            Some(r) => self.step_info(r)?,
            None => self.closest(info)?,
        };
        self.explain_pair(info, other.as_ref(), 0, &mut visited)
    }

    /// The closest earlier record of `info`'s step type: among the latest [`CANDIDATES`]
    /// records written before `info`'s, the one with the fewest
    /// differences, the latest on a tie; records without a pre-image only when no other is
    /// there.
    fn closest(&self, info: &StepInfo) -> Result<Option<StepInfo>> {
        let candidates =
            self.inner
                .db
                .earlier_of_type(&info.step_type, &info.unique_id, CANDIDATES)?;
        let mine = decode(info)?;
        let mut best: Option<(usize, StepInfo)> = None;
        for c in candidates {
            let Ok(theirs) = decode(&c) else { continue };
            let mut n = usize::from(c.version != info.version)
                + usize::from(
                    c.format_id != info.format_id || c.format_version != info.format_version,
                );
            match (&theirs, &mine) {
                (Some(a), Some(b)) => {
                    let mut changes = Vec::new();
                    a.diff(b, "", &mut changes);
                    n += changes.len();
                }
                // A record without a pre-image can only be compared by version and format:
                // any record with one is closer.
                _ => n += 1_000_000,
            }
            if best.as_ref().is_none_or(|(m, _)| n < *m) {
                best = Some((n, c));
            }
        }
        Ok(best.map(|(_, c)| c))
    }

    fn explain_pair(
        &self,
        new: &StepInfo,
        old: Option<&StepInfo>,
        depth: usize,
        visited: &mut HashSet<(String, String)>,
    ) -> Result<Explanation> {
        let mut e = Explanation {
            unique_id: new.unique_id.clone(),
            step_type: new.step_type.clone(),
            compared_with: old.map(|o| o.unique_id.clone()),
            reused_from: new.reused_from.clone(),
            differences: Vec::new(),
        };
        let Some(old) = old else { return Ok(e) };
        let d = &mut e.differences;
        if old.version != new.version {
            d.push(Difference::Version {
                old: old.version.clone(),
                new: new.version.clone(),
            });
        }
        if old.format_id != new.format_id || old.format_version != new.format_version {
            d.push(Difference::Format {
                old: format!("{} v{}", old.format_id, old.format_version),
                new: format!("{} v{}", new.format_id, new.format_version),
            });
        }
        if new.nondeterministic {
            d.push(Difference::Nondeterministic);
        }
        let (a, b) = match (decode(old)?, decode(new)?) {
            (Some(a), Some(b)) => (a, b),
            (None, _) => {
                d.push(Difference::NoPreimage {
                    unique_id: old.unique_id.clone(),
                });
                return Ok(e);
            }
            (_, None) => {
                d.push(Difference::NoPreimage {
                    unique_id: new.unique_id.clone(),
                });
                return Ok(e);
            }
        };
        let mut changes = Vec::new();
        a.diff(&b, "", &mut changes);
        for c in changes {
            match c {
                Change::Value { path, old, new } => {
                    e.differences.push(Difference::Argument { path, old, new })
                }
                Change::Upstream { path, old, new } => {
                    let up_old = self.step_info(&old)?;
                    let up_new = self.step_info(&new)?;
                    let same_output = match (&up_old, &up_new) {
                        (Some(x), Some(y)) => {
                            x.state == StepState::Completed
                                && y.state == StepState::Completed
                                && x.manifest_id.is_some()
                                && x.manifest_id == y.manifest_id
                        }
                        _ => false,
                    };
                    let explanation = match (&up_new, &up_old) {
                        (Some(y), Some(x))
                            if depth < MAX_DEPTH
                                && visited.insert((y.unique_id.clone(), x.unique_id.clone())) =>
                        {
                            Some(Box::new(self.explain_pair(
                                y,
                                Some(x),
                                depth + 1,
                                visited,
                            )?))
                        }
                        _ => None,
                    };
                    e.differences.push(Difference::Upstream {
                        path,
                        old,
                        new,
                        same_output,
                        explanation,
                    });
                }
            }
        }
        Ok(e)
    }
}

fn show(v: &Option<Value>) -> String {
    v.as_ref()
        .map_or_else(|| "(absent)".into(), Value::to_string)
}

impl Explanation {
    fn write(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        let pad = "  ".repeat(indent);
        match &self.compared_with {
            None => writeln!(
                f,
                "{pad}{}: no earlier record of step type {} to compare with (it never ran in \
                 this workspace, or only before ids' pre-images were stored)",
                self.unique_id, self.step_type
            )?,
            Some(c) => {
                writeln!(f, "{pad}{} compared with {c}:", self.unique_id)?;
                if self.differences.is_empty() {
                    writeln!(f, "{pad}  - no difference in the id pre-image")?;
                }
            }
        }
        if let Some(r) = &self.reused_from {
            writeln!(
                f,
                "{pad}  - early cutoff: result reused from {r}, whose inputs had byte-identical \
                 content (not recomputed)"
            )?;
        }
        for d in &self.differences {
            match d {
                Difference::Version { old, new } => writeln!(
                    f,
                    "{pad}  - VERSION changed: {} -> {}",
                    old.as_deref().unwrap_or("(none)"),
                    new.as_deref().unwrap_or("(none)")
                )?,
                Difference::Format { old, new } => {
                    writeln!(f, "{pad}  - format changed: {old} -> {new}")?
                }
                Difference::Argument { path, old, new } => writeln!(
                    f,
                    "{pad}  - argument {} changed: {} -> {}",
                    if path.is_empty() {
                        "(the whole value)"
                    } else {
                        path
                    },
                    show(old),
                    show(new)
                )?,
                Difference::Upstream {
                    path,
                    old,
                    new,
                    same_output,
                    explanation,
                } => {
                    writeln!(
                        f,
                        "{pad}  - upstream {path} changed: {old} -> {new}{}",
                        if *same_output {
                            " (byte-identical output: downstream results can be reused)"
                        } else {
                            ""
                        }
                    )?;
                    if let Some(x) = explanation {
                        x.write(f, indent + 2)?;
                    }
                }
                Difference::Nondeterministic => writeln!(
                    f,
                    "{pad}  - the step is non-deterministic: its id is new in every run"
                )?,
                Difference::NoPreimage { unique_id } => writeln!(
                    f,
                    "{pad}  - {unique_id} has no stored pre-image (written by an older \
                     milonga): arguments cannot be compared"
                )?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)
    }
}
