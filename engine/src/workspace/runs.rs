//! Runs: named executor invocations, their steps by name, and the roots of garbage collection.

use std::collections::HashSet;
use std::sync::Arc;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::db::{now_millis, Db};
use super::provenance::Provenance;
use super::{StepInfo, StepState, Workspace};
use crate::error::{Error, Result};
use crate::step::{ResultOf, Step};

/// One run as listed by [`Workspace::runs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunSummary {
    /// The run's name.
    pub name: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at: i64,
    /// When it ended (`None`: still running, or its process died).
    pub ended_at: Option<i64>,
    /// How many steps its graph has (stored steps only: uncacheable ones are not recorded).
    pub steps: u64,
    /// How many of them were targets.
    pub targets: u64,
    /// How many of them have a completed result now.
    pub completed: u64,
}

/// One step of a [`Run`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunStep {
    /// The name the run gives the step (targets: the name given to the executor, or the step
    /// type's short name; other steps: their short type name when it is unique in the run).
    pub name: Option<String>,
    /// The step's unique id.
    pub unique_id: String,
    /// Whether it was a target of the run.
    pub target: bool,
    /// The step's type, `None` if its record is gone (removed, or never written).
    pub step_type: Option<String>,
    /// The state of its record now, `None` if the record is gone.
    pub state: Option<StepState>,
}

/// A run: a named invocation of the [`Executor`](crate::Executor), with its steps. Fetch a
/// step's result by the step's name in the run:
///
/// ```
/// # use milonga::{Context, DynStep, Executor, PostcardFormat, Step, StepRef, Workspace};
/// # use serde::Serialize;
/// # #[derive(Serialize)] struct Square { x: u64 }
/// # impl Step for Square { const NAME: &'static str = "Square"; type Output = u64; type Format = PostcardFormat;
/// #   fn run(&self, _: &mut Context<'_>) -> Result<u64, milonga::BoxError> { Ok(self.x * self.x) } }
/// let ws = Workspace::memory()?;
/// let outcome = Executor::new(&ws)
///     .with_run_name("nightly")
///     .run_named([("nine", DynStep::new(Square { x: 3 }))])?;
/// assert_eq!(outcome.run.as_deref(), Some("nightly"));
/// let run = ws.run("nightly")?;
/// assert_eq!(*run.result::<Square>("nine")?, 9);
/// # Ok::<(), milonga::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Run {
    workspace: Workspace,
    /// The run's name.
    pub name: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at: i64,
    /// When it ended (`None`: still running, or its process died).
    pub ended_at: Option<i64>,
    /// Where, how and by what it ran.
    pub provenance: Option<Provenance>,
    /// Its steps, targets first (in the order given), then the others in graph order.
    pub steps: Vec<RunStep>,
}

impl Run {
    /// The step the run names `name`.
    pub fn step(&self, name: &str) -> Option<&RunStep> {
        self.steps.iter().find(|s| s.name.as_deref() == Some(name))
    }

    fn named(&self, name: &str) -> Result<&RunStep> {
        self.step(name).ok_or_else(|| Error::Run {
            name: self.name.clone(),
            reason: format!(
                "no step named {name:?} (named steps: {})",
                self.steps
                    .iter()
                    .filter_map(|s| s.name.as_deref())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// The record of the step the run names `name`.
    ///
    /// # Errors
    /// [`Error::Run`] if the run has no step of that name; [`Error::State`] if its record is
    /// gone; a database error.
    pub fn info(&self, name: &str) -> Result<StepInfo> {
        let step = self.named(name)?;
        self.workspace
            .step_info(&step.unique_id)?
            .ok_or_else(|| Error::State {
                unique_id: step.unique_id.clone(),
                reason: format!(
                    "step {name:?} of run {:?} has no record any more",
                    self.name
                ),
            })
    }

    /// The stored result of the step the run names `name`, read as step type `S`.
    ///
    /// # Errors
    /// [`Error::Run`] if the run has no step of that name or it is not an `S`; as
    /// [`Workspace::stored_result`].
    pub fn result<S: Step>(&self, name: &str) -> Result<Arc<ResultOf<S>>> {
        let step = self.named(name)?;
        if let Some(t) = &step.step_type {
            if t != S::NAME {
                return Err(Error::Run {
                    name: self.name.clone(),
                    reason: format!("step {name:?} is a {t}, not a {}", S::NAME),
                });
            }
        }
        self.workspace.stored_result::<S>(&step.unique_id)
    }
}

/// Words of generated run names (`adjective-noun-NN`).
const ADJECTIVES: [&str; 32] = [
    "amber", "bold", "brisk", "calm", "clever", "crisp", "daring", "eager", "fancy", "gentle",
    "golden", "happy", "humble", "jolly", "keen", "lively", "lucky", "mellow", "nimble", "noble",
    "patient", "quick", "quiet", "rapid", "rosy", "shiny", "silent", "steady", "sunny", "swift",
    "tender", "witty",
];
const NOUNS: [&str; 32] = [
    "abrazo",
    "bandoneon",
    "cadence",
    "candombe",
    "chacarera",
    "cortina",
    "embrace",
    "fiddle",
    "guitar",
    "habanera",
    "lapiz",
    "malambo",
    "march",
    "milonga",
    "ocho",
    "orchestra",
    "parada",
    "piano",
    "pivot",
    "pulse",
    "rhythm",
    "salida",
    "sandwich",
    "sentada",
    "tango",
    "tanda",
    "tempo",
    "valse",
    "viola",
    "violin",
    "waltz",
    "zamba",
];

/// A memorable run name: `adjective-noun-NN`, from `nonce`.
pub(crate) fn generated_run_name(nonce: &[u8; 32]) -> String {
    let a = ADJECTIVES[usize::from(nonce[0]) % ADJECTIVES.len()];
    let n = NOUNS[usize::from(nonce[1]) % NOUNS.len()];
    format!("{a}-{n}-{}", u16::from_le_bytes([nonce[2], nonce[3]]) % 100)
}

pub(crate) fn valid_run_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

/// A step of a run being registered: unique id, name, target.
pub(crate) type NewRunStep = (String, Option<String>, bool);

/// Registers a run under `name`, or under a generated name if `name` is `None`, through
/// `try_insert` (which returns whether the name was free and is now taken); returns the name.
/// A given name is checked first and must be free; generated names are retried until one is.
pub(crate) fn register_run(
    name: Option<&str>,
    mut try_insert: impl FnMut(&str) -> Result<bool>,
) -> Result<String> {
    if let Some(n) = name {
        if !valid_run_name(n) {
            return Err(Error::Run {
                name: n.into(),
                reason: "a run name is 1 to 200 ASCII letters, digits and - _ . :".into(),
            });
        }
    }
    let mut attempt = 0u32;
    loop {
        let candidate = match name {
            Some(n) => n.to_owned(),
            None => {
                let mut s = generated_run_name(&crate::step::scope::fresh_nonce());
                if attempt > 8 {
                    s.push_str(&format!("-{attempt}"));
                }
                s
            }
        };
        if try_insert(&candidate)? {
            return Ok(candidate);
        }
        if name.is_some() {
            return Err(Error::Run {
                name: candidate,
                reason: "a run of that name exists already (remove it with run-rm, or choose \
                         another name)"
                    .into(),
            });
        }
        attempt += 1;
    }
}

impl Db {
    /// Registers a run named `name` (or a generated name) with `steps`; returns its name.
    pub(crate) fn insert_run(
        &self,
        name: Option<&str>,
        steps: &[NewRunStep],
        provenance_id: Option<&str>,
    ) -> Result<String> {
        self.writable()?;
        register_run(name, |candidate| {
            self.with(|c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let n = tx.execute(
                    "INSERT OR IGNORE INTO runs (name, started_at, provenance_id) VALUES (?1, ?2, ?3)",
                    params![candidate, now_millis(), provenance_id],
                )?;
                if n == 0 {
                    return Ok(false);
                }
                let run_id = tx.last_insert_rowid();
                {
                    let mut st = tx.prepare_cached(
                        "INSERT OR IGNORE INTO run_steps (run_id, unique_id, name, target)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?;
                    for (id, step_name, target) in steps {
                        st.execute(params![run_id, id, step_name, target])?;
                    }
                }
                tx.commit()?;
                Ok(true)
            })
        })
    }

    /// Records that run `name` ended now.
    pub(crate) fn end_run(&self, name: &str) -> Result<()> {
        self.writable()?;
        self.with(|c| {
            c.execute(
                "UPDATE runs SET ended_at = ?2 WHERE name = ?1",
                params![name, now_millis()],
            )
        })?;
        Ok(())
    }

    /// Every run, oldest first.
    pub(crate) fn list_runs(&self) -> Result<Vec<RunSummary>> {
        if self.version < 2 {
            return Ok(Vec::new());
        }
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT r.name, r.started_at, r.ended_at,
                        (SELECT count(*) FROM run_steps rs WHERE rs.run_id = r.id),
                        (SELECT count(*) FROM run_steps rs WHERE rs.run_id = r.id AND rs.target),
                        (SELECT count(*) FROM run_steps rs JOIN steps s ON s.unique_id = rs.unique_id
                          WHERE rs.run_id = r.id AND s.state = 'COMPLETED')
                 FROM runs r ORDER BY r.id",
            )?;
            let v = st
                .query_map([], |r| {
                    Ok(RunSummary {
                        name: r.get(0)?,
                        started_at: r.get(1)?,
                        ended_at: r.get(2)?,
                        steps: r.get::<_, i64>(3)?.max(0) as u64,
                        targets: r.get::<_, i64>(4)?.max(0) as u64,
                        completed: r.get::<_, i64>(5)?.max(0) as u64,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(v)
        })
    }

    /// Run `name`: (started, ended, provenance id, steps).
    #[allow(clippy::type_complexity)]
    pub(super) fn get_run(
        &self,
        name: &str,
    ) -> Result<Option<(i64, Option<i64>, Option<String>, Vec<RunStep>)>> {
        if self.version < 2 {
            return Ok(None);
        }
        self.with(|c| {
            let Some((id, started, ended, prov)) = c
                .prepare_cached(
                    "SELECT id, started_at, ended_at, provenance_id FROM runs WHERE name = ?1",
                )?
                .query_row([name], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = c.prepare_cached(
                "SELECT rs.name, rs.unique_id, rs.target, s.step_type, s.state
                 FROM run_steps rs LEFT JOIN steps s ON s.unique_id = rs.unique_id
                 WHERE rs.run_id = ?1 ORDER BY rs.rowid",
            )?;
            let mut steps = st
                .query_map([id], |r| {
                    Ok(RunStep {
                        name: r.get(0)?,
                        unique_id: r.get(1)?,
                        target: r.get(2)?,
                        step_type: r.get(3)?,
                        state: r
                            .get::<_, Option<String>>(4)?
                            .and_then(|s| StepState::parse(&s)),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            steps.sort_by_key(|s| !s.target);
            Ok(Some((started, ended, prov, steps)))
        })
    }

    /// Removes run `name`; returns the unique ids of its steps that no other run has, or `None`
    /// if there is no such run.
    pub(super) fn delete_run(&self, name: &str) -> Result<Option<Vec<String>>> {
        self.writable()?;
        if self.version < 2 {
            return Ok(None);
        }
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(id) = tx
                .query_row("SELECT id FROM runs WHERE name = ?1", [name], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()?
            else {
                return Ok(None);
            };
            let ids = {
                let mut st = tx.prepare(
                    "SELECT unique_id FROM run_steps rs WHERE run_id = ?1 AND NOT EXISTS
                        (SELECT 1 FROM run_steps o WHERE o.unique_id = rs.unique_id AND o.run_id != ?1)",
                )?;
                let v = st
                    .query_map([id], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                v
            };
            tx.execute("DELETE FROM run_steps WHERE run_id = ?1", [id])?;
            tx.execute("DELETE FROM runs WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(Some(ids))
        })
    }

    /// Removes the record of `unique_id` if no run has it (atomically: a run registered
    /// meanwhile keeps it). Returns whether it was removed.
    pub(crate) fn remove_if_unrooted(&self, unique_id: &str) -> Result<bool> {
        self.writable()?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "DELETE FROM steps WHERE unique_id = ?1
                   AND NOT EXISTS (SELECT 1 FROM run_steps WHERE unique_id = ?1)",
                [unique_id],
            )?;
            if n > 0 {
                tx.execute("DELETE FROM step_deps WHERE unique_id = ?1", [unique_id])?;
                tx.execute(
                    "DELETE FROM partial_files WHERE unique_id = ?1",
                    [unique_id],
                )?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }
}

impl Workspace {
    /// Every run, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub fn runs(&self) -> Result<Vec<RunSummary>> {
        self.inner.db.list_runs()
    }

    /// The run named `name`, with its steps and their states.
    ///
    /// # Errors
    /// [`Error::Run`] if there is no such run; a database error.
    pub fn run(&self, name: &str) -> Result<Run> {
        let (started_at, ended_at, prov, steps) =
            self.inner.db.get_run(name)?.ok_or_else(|| Error::Run {
                name: name.into(),
                reason: "no such run in this workspace".into(),
            })?;
        let provenance = match prov {
            Some(id) => self.inner.db.provenance(&id)?,
            None => None,
        };
        Ok(Run {
            workspace: self.clone(),
            name: name.into(),
            started_at,
            ended_at,
            provenance,
            steps,
        })
    }

    /// Removes run `name`. The records of its steps that no other run has are removed too (their
    /// objects go at the next [`gc`](Workspace::gc)); every other step is left alone, and so is
    /// a step that is running (it stays, unrooted). Returns the unique ids of the removed
    /// step records.
    ///
    /// # Errors
    /// [`Error::Run`] if there is no such run; [`Error::ReadOnly`]; a database error.
    pub fn remove_run(&self, name: &str) -> Result<Vec<String>> {
        self.inner
            .check_writable(|| format!("removing run {name}"))?;
        let candidates = self.inner.db.delete_run(name)?.ok_or_else(|| Error::Run {
            name: name.into(),
            reason: "no such run in this workspace".into(),
        })?;
        self.remove_all_unrooted(&candidates)
    }

    /// Removes the records of `ids` that no run has and that are not running; returns those
    /// removed. Which steps runs have is read once for all of them where the backend would
    /// read it for each record (remote metadata: every run document); a run registered after
    /// that reading, during the removals, may lose records it lists (their steps run again).
    pub(crate) fn remove_all_unrooted(&self, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rooted = self.inner.db.rooted_ids()?;
        let mut removed = Vec::new();
        for id in ids {
            if self.remove_unrooted_given(id, rooted.as_ref())? {
                removed.push(id.clone());
            }
        }
        Ok(removed)
    }

    /// Removes a step's record if no run has it and it is not running: checked against the
    /// steps runs have already read (`rooted`), or by the backend (`None`).
    fn remove_unrooted_given(
        &self,
        unique_id: &str,
        rooted: Option<&HashSet<String>>,
    ) -> Result<bool> {
        if rooted.is_some_and(|r| r.contains(unique_id)) {
            return Ok(false);
        }
        let Some(_lock) = self.inner.try_lock_step(unique_id)? else {
            return Ok(false);
        };
        let removed = match rooted {
            Some(_) => self.inner.db.remove(unique_id)?,
            None => self.inner.db.remove_if_unrooted(unique_id)?,
        };
        if removed {
            self.inner.cache_lock().remove(unique_id);
            let _ = std::fs::remove_dir_all(self.inner.work_dir(unique_id));
        }
        Ok(removed)
    }

    /// The stored result of the step with this unique id, read as step type `S` (without the
    /// step's value: for results found through [`Workspace::steps`] or a [`Run`]). It never
    /// runs anything.
    ///
    /// # Errors
    /// [`Error::State`] if the step is unknown or not completed, or is not an `S`;
    /// [`Error::FormatMismatch`]; errors reading the result.
    pub fn stored_result<S: Step>(&self, unique_id: &str) -> Result<Arc<ResultOf<S>>> {
        let info = self.step_info(unique_id)?.ok_or_else(|| Error::State {
            unique_id: unique_id.into(),
            reason: "the workspace has no record of this step".into(),
        })?;
        if info.step_type != S::NAME {
            return Err(Error::State {
                unique_id: unique_id.into(),
                reason: format!("it is a {}, not a {}", info.step_type, S::NAME),
            });
        }
        crate::step::load_stored::<S>(self, &info)
    }
}

impl Workspace {
    /// Registers the run of `graph` (the executor calls this before running anything): every
    /// stored step of the graph, targets under the names in `named` (unique id → name) or their
    /// type's short name. Returns the run's name; `None` on a read-only workspace.
    pub(crate) fn register_run(
        &self,
        name: Option<&str>,
        graph: &crate::executor::Graph,
        named: &[(String, String)],
    ) -> Result<Option<String>> {
        if self.inner.read_only {
            return Ok(None);
        }
        let short = |n: &'static str| n.rsplit("::").next().unwrap_or(n).to_owned();
        let nodes: Vec<_> = graph
            .nodes()
            .iter()
            .filter(|n| n.step.cacheable())
            .collect();
        let mut taken: std::collections::HashSet<String> =
            named.iter().map(|(_, n)| n.clone()).collect();
        let mut count = std::collections::HashMap::<String, usize>::new();
        for n in &nodes {
            *count.entry(short(n.name)).or_default() += 1;
        }
        let mut steps: Vec<NewRunStep> = Vec::with_capacity(nodes.len());
        let mut used = std::collections::HashSet::new();
        let mut order: Vec<usize> = graph.targets().to_vec();
        order.extend((0..graph.nodes().len()).filter(|i| !graph.targets().contains(i)));
        for i in order {
            let Some(n) = graph.nodes().get(i).filter(|n| n.step.cacheable()) else {
                continue;
            };
            let given = named
                .iter()
                .find(|(id, _)| *id == n.unique_id)
                .map(|(_, name)| name.clone());
            if let Some(g) = &given {
                if !used.insert(g.clone()) {
                    return Err(Error::Run {
                        name: name.unwrap_or("(generated)").into(),
                        reason: format!("two different steps are named {g:?}"),
                    });
                }
            }
            let step_name = given.or_else(|| {
                let s = short(n.name);
                if count.get(&s) == Some(&1) && taken.insert(s.clone()) {
                    Some(s)
                } else if n.target && taken.insert(n.unique_id.clone()) {
                    Some(n.unique_id.clone())
                } else {
                    None
                }
            });
            steps.push((n.unique_id.clone(), step_name, n.target));
        }
        let provenance_id = self.inner.db.put_current_provenance()?;
        self.inner
            .db
            .insert_run(name, &steps, Some(&provenance_id))
            .map(Some)
    }

    /// Records that run `name` ended (best effort).
    pub(crate) fn end_run(&self, name: &str) {
        if let Err(e) = self.inner.db.end_run(name) {
            tracing::warn!(target: "milonga::executor", run = %name, error = %e, "the run's end was not recorded");
        }
    }
}
