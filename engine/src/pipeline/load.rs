//! Reading a pipeline file: the steps, their order, and the errors that point into the file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{PipelineError, PipelineErrorKind};
use super::refs;
use super::registry::Registry;
use crate::step::DynStep;

/// One step of a pipeline file.
#[derive(Debug, Clone)]
pub struct PipelineStep {
    /// Its name in the file.
    pub name: String,
    /// The registered type name it was built from.
    pub type_name: String,
    /// The step, for the [`Executor`](crate::Executor).
    pub step: DynStep,
}

/// The steps of a pipeline file, built from the types of a [`Registry`].
///
/// ```
/// # use milonga::{BoxError, Context, Executor, Pipeline, PostcardFormat, Registry, Step, StepRef, Workspace};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Count { upto: u64 }
/// # impl Step for Count { const NAME: &'static str = "Count"; type Output = Vec<u64>; type Format = PostcardFormat;
/// #   fn run(&self, _: &mut Context<'_>) -> Result<Vec<u64>, BoxError> { Ok((0..self.upto).collect()) } }
/// #[derive(Serialize, Deserialize)]
/// struct Sum { numbers: StepRef<Count> }
/// # impl Step for Sum { const NAME: &'static str = "Sum"; type Output = u64; type Format = PostcardFormat;
/// #   fn run(&self, c: &mut Context<'_>) -> Result<u64, BoxError> { Ok(c.input(&self.numbers)?.iter().sum()) } }
///
/// let mut registry = Registry::new();
/// registry.register::<Count>().register::<Sum>();
/// let pipeline = Pipeline::from_toml(r#"
///     [steps.numbers]
///     type = "Count"
///     upto = 10
///
///     [steps.total]
///     type = "Sum"
///     numbers = { type = "ref", ref = "numbers" }
/// "#, "pipeline.toml", &registry)?;
/// let ws = Workspace::memory()?;
/// let outcome = Executor::new(&ws).run(pipeline.targets(&[])?)?;
/// assert!(outcome.is_success());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Pipeline {
    file: PathBuf,
    steps: Vec<PipelineStep>,
}

/// The arguments of one declared step, as the file gave them.
enum Args<'a> {
    Toml(Spanned<DeValue<'a>>),
    Json(serde_json::Value),
}

/// One step as declared, before it is built.
struct Decl<'a> {
    name: String,
    /// Where the step's declaration starts (byte offset).
    at: usize,
    type_name: String,
    /// Where its `type` value is.
    type_at: usize,
    /// The steps it refers to, with where each reference is.
    refs: Vec<(String, usize)>,
    args: Args<'a>,
}

/// 1-based line and column of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

fn table_get<'t, 'a>(table: &'t DeTable<'a>, key: &str) -> Option<&'t Spanned<DeValue<'a>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

/// The step references (`{ type = "ref", ref = "NAME" }`) anywhere in a TOML value.
fn toml_refs(value: &Spanned<DeValue<'_>>, out: &mut Vec<(String, usize)>) {
    match value.get_ref() {
        DeValue::Table(t) => {
            let kind = table_get(t, "type").and_then(|v| v.get_ref().as_str());
            let target = table_get(t, "ref").and_then(|v| v.get_ref().as_str());
            if let (Some("ref"), Some(target)) = (kind, target) {
                out.push((target.to_owned(), value.span().start));
                return;
            }
            for (_, v) in t.iter() {
                toml_refs(v, out);
            }
        }
        DeValue::Array(a) => {
            for v in a.iter() {
                toml_refs(v, out);
            }
        }
        _ => {}
    }
}

/// The step references anywhere in a JSON value.
fn json_refs(value: &serde_json::Value, at: usize, out: &mut Vec<(String, usize)>) {
    match value {
        serde_json::Value::Object(m) => {
            if let (Some("ref"), Some(target)) = (
                m.get("type").and_then(|v| v.as_str()),
                m.get("ref").and_then(|v| v.as_str()),
            ) {
                out.push((target.to_owned(), at));
                return;
            }
            for v in m.values() {
                json_refs(v, at, out);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                json_refs(v, at, out);
            }
        }
        _ => {}
    }
}

impl Pipeline {
    /// Reads and builds the pipeline in `path`: JSON when the name ends in `.json`, TOML
    /// otherwise.
    ///
    /// # Errors
    /// The file cannot be read, or one of the errors of [`from_toml`](Pipeline::from_toml).
    pub fn from_file(path: impl AsRef<Path>, registry: &Registry) -> Result<Self, PipelineError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError {
            file: path.to_owned(),
            position: None,
            kind: PipelineErrorKind::Io(e),
        })?;
        if path.extension().is_some_and(|e| e == "json") {
            Self::from_json(&text, path, registry)
        } else {
            Self::from_toml(&text, path, registry)
        }
    }

    /// Builds the pipeline in TOML `text`; `file` names it in errors.
    ///
    /// # Errors
    /// A [`PipelineError`] with the line and column of the problem: invalid TOML, a step
    /// without a `type` or with an unknown one, arguments that do not fit the type, a reference
    /// to a step the file does not have, steps that refer to each other in a cycle.
    pub fn from_toml(
        text: &str,
        file: impl Into<PathBuf>,
        registry: &Registry,
    ) -> Result<Self, PipelineError> {
        let file = file.into();
        let err = |at: Option<usize>, kind| PipelineError {
            file: file.clone(),
            position: at.map(|at| line_col(text, at)),
            kind,
        };
        let doc = DeTable::parse(text).map_err(|e| {
            err(
                e.span().map(|s| s.start),
                PipelineErrorKind::Syntax(e.message().trim().to_owned()),
            )
        })?;
        let mut decls = Vec::new();
        for (key, value) in doc.get_ref().iter() {
            if key.get_ref().as_ref() != "steps" {
                return Err(err(
                    Some(key.span().start),
                    PipelineErrorKind::Syntax(format!(
                        "unknown key {:?}: a pipeline file has a `steps` table only",
                        key.get_ref()
                    )),
                ));
            }
            let DeValue::Table(steps) = value.get_ref() else {
                return Err(err(
                    Some(value.span().start),
                    PipelineErrorKind::Syntax("`steps` must be a table of steps".into()),
                ));
            };
            for (name, decl) in steps.iter() {
                let name_s = name.get_ref().to_string();
                let DeValue::Table(table) = decl.get_ref() else {
                    return Err(err(
                        Some(decl.span().start),
                        PipelineErrorKind::Syntax(format!(
                            "step {name_s:?} must be a table with a `type`"
                        )),
                    ));
                };
                let Some(ty) = table_get(table, "type") else {
                    return Err(err(
                        Some(name.span().start),
                        PipelineErrorKind::Syntax(format!("step {name_s:?} has no `type`")),
                    ));
                };
                let Some(type_name) = ty.get_ref().as_str() else {
                    return Err(err(
                        Some(ty.span().start),
                        PipelineErrorKind::Syntax(format!(
                            "step {name_s:?}: `type` must be a string"
                        )),
                    ));
                };
                let mut args = DeTable::new();
                for (k, v) in table.iter() {
                    if k.get_ref().as_ref() != "type" {
                        args.insert(k.clone(), v.clone());
                    }
                }
                let args = Spanned::new(decl.span(), DeValue::Table(args));
                let mut found = Vec::new();
                toml_refs(&args, &mut found);
                decls.push(Decl {
                    name: name_s,
                    at: name.span().start,
                    type_name: type_name.to_owned(),
                    type_at: ty.span().start,
                    refs: found,
                    args: Args::Toml(args),
                });
            }
        }
        build(decls, text, file, registry)
    }

    /// Builds the pipeline in JSON `text` (`{"steps": {"name": {"type": "T", …}}}`); `file`
    /// names it in errors, which point at the step's declaration.
    ///
    /// # Errors
    /// As [`from_toml`](Pipeline::from_toml).
    pub fn from_json(
        text: &str,
        file: impl Into<PathBuf>,
        registry: &Registry,
    ) -> Result<Self, PipelineError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct JsonFile<'a> {
            #[serde(borrow)]
            steps: BTreeMap<String, &'a serde_json::value::RawValue>,
        }
        let file = file.into();
        let parsed: JsonFile<'_> = serde_json::from_str(text).map_err(|e| PipelineError {
            file: file.clone(),
            position: (e.line() > 0).then(|| (e.line(), e.column())),
            kind: PipelineErrorKind::Syntax(e.to_string()),
        })?;
        let mut decls = Vec::new();
        for (name, raw) in parsed.steps {
            let at = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
            let syntax = |m: String| PipelineError {
                file: file.clone(),
                position: Some(line_col(text, at)),
                kind: PipelineErrorKind::Syntax(m),
            };
            let value: serde_json::Value =
                serde_json::from_str(raw.get()).map_err(|e| syntax(e.to_string()))?;
            let serde_json::Value::Object(mut map) = value else {
                return Err(syntax(format!(
                    "step {name:?} must be an object with a \"type\""
                )));
            };
            let Some(ty) = map.remove("type") else {
                return Err(syntax(format!("step {name:?} has no \"type\"")));
            };
            let Some(type_name) = ty.as_str() else {
                return Err(syntax(format!("step {name:?}: \"type\" must be a string")));
            };
            let args = serde_json::Value::Object(map);
            let mut found = Vec::new();
            json_refs(&args, at, &mut found);
            decls.push(Decl {
                name,
                at,
                type_name: type_name.to_owned(),
                type_at: at,
                refs: found,
                args: Args::Json(args),
            });
        }
        build(decls, text, file, registry)
    }

    /// The file the pipeline was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The steps, in the order of the file.
    pub fn steps(&self) -> &[PipelineStep] {
        &self.steps
    }

    /// The step named `name` in the file.
    pub fn step(&self, name: &str) -> Option<&PipelineStep> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The steps to run: those named (with everything they need, which the executor adds), or
    /// every step of the file when `names` is empty.
    ///
    /// # Errors
    /// [`PipelineErrorKind::UnknownTarget`] for a name that is not a step of the file.
    pub fn targets(&self, names: &[String]) -> Result<Vec<DynStep>, PipelineError> {
        if names.is_empty() {
            return Ok(self.steps.iter().map(|s| s.step.clone()).collect());
        }
        names
            .iter()
            .map(|n| {
                self.step(n)
                    .map(|s| s.step.clone())
                    .ok_or_else(|| PipelineError {
                        file: self.file.clone(),
                        position: None,
                        kind: PipelineErrorKind::UnknownTarget(n.clone()),
                    })
            })
            .collect()
    }
}

/// Orders the declared steps so that every step comes after those it refers to, checks the
/// references, and builds each step from its arguments.
fn build(
    mut decls: Vec<Decl<'_>>,
    text: &str,
    file: PathBuf,
    registry: &Registry,
) -> Result<Pipeline, PipelineError> {
    decls.sort_by_key(|d| d.at);
    let err = |at: usize, kind| PipelineError {
        file: file.clone(),
        position: Some(line_col(text, at)),
        kind,
    };
    let index: HashMap<&str, usize> = decls
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.as_str(), i))
        .collect();
    // Types and dangling references first, in file order.
    for d in &decls {
        if !registry.contains(&d.type_name) {
            return Err(err(
                d.type_at,
                PipelineErrorKind::UnknownType {
                    step: d.name.clone(),
                    type_name: d.type_name.clone(),
                    known: registry.type_names().map(str::to_owned).collect(),
                },
            ));
        }
        for (target, at) in &d.refs {
            if !index.contains_key(target.as_str()) {
                return Err(err(
                    *at,
                    PipelineErrorKind::DanglingRef {
                        step: d.name.clone(),
                        target: target.clone(),
                    },
                ));
            }
        }
    }
    // Depth-first order; a reference to a step on the current path closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; decls.len()];
    let mut order = Vec::with_capacity(decls.len());
    for root in 0..decls.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // (step, next reference to follow)
        let mut stack = vec![(root, 0usize)];
        mark[root] = Mark::OnPath;
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            let Some((target, at)) = decls[i].refs.get(*next) else {
                mark[i] = Mark::Done;
                order.push(i);
                stack.pop();
                continue;
            };
            *next += 1;
            let j = index[target.as_str()];
            match mark[j] {
                Mark::Done => {}
                Mark::New => {
                    mark[j] = Mark::OnPath;
                    stack.push((j, 0));
                }
                Mark::OnPath => {
                    let from = stack.iter().position(|&(k, _)| k == j).unwrap_or(0);
                    let mut steps: Vec<String> = stack
                        .get(from..)
                        .unwrap_or_default()
                        .iter()
                        .map(|&(k, _)| decls[k].name.clone())
                        .collect();
                    steps.push(decls[j].name.clone());
                    return Err(err(*at, PipelineErrorKind::Cycle { steps }));
                }
            }
        }
    }
    // Build in that order: a step's references resolve to the steps built before it.
    let mut built: refs::Built = HashMap::new();
    let mut erased: HashMap<usize, DynStep> = HashMap::new();
    let mut decls: Vec<Option<Decl<'_>>> = decls.into_iter().map(Some).collect();
    for &i in &order {
        let Some(d) = decls[i].take() else { continue };
        let (result, back) = refs::with_resolver(std::mem::take(&mut built), || match d.args {
            Args::Toml(args) => registry
                .build_toml(&d.type_name, args.into())
                .map(|r| r.map_err(|e| (e.span().map(|s| s.start), e.message().to_owned()))),
            Args::Json(args) => registry
                .build_json(&d.type_name, args)
                .map(|r| r.map_err(|e| (None, e.to_string()))),
        });
        built = back;
        let b = match result {
            Some(Ok(b)) => b,
            Some(Err((at, message))) => {
                return Err(err(
                    at.unwrap_or(d.at),
                    PipelineErrorKind::BadArguments {
                        step: d.name.clone(),
                        message: message.trim().to_owned(),
                    },
                ))
            }
            None => continue,
        };
        built.insert(d.name.clone(), (d.type_name.clone(), b.typed));
        erased.insert(i, b.erased);
        decls[i] = Some(Decl {
            args: Args::Json(serde_json::Value::Null),
            ..d
        });
    }
    let steps = decls
        .into_iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let d = d?;
            Some(PipelineStep {
                name: d.name,
                type_name: d.type_name,
                step: erased.remove(&i)?,
            })
        })
        .collect();
    Ok(Pipeline { file, steps })
}
