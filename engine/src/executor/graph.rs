//! The step graph: every step the targets need, found from their `StepRef` arguments without
//! running anything, one node per unique id, in topological order.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::step::scope::Scope;
use crate::step::DynStep;

/// One step of a [`Graph`].
#[derive(Debug, Clone)]
pub struct Node {
    /// The step's unique id.
    pub unique_id: String,
    /// The step's type name.
    pub name: &'static str,
    /// Positions in [`Graph::nodes`] of the steps this one takes as inputs (all earlier).
    pub dependencies: Vec<usize>,
    /// Whether the step is one of the targets the graph was built from.
    pub target: bool,
    /// The step itself.
    pub step: DynStep,
}

/// The steps that one or more target steps need, deduplicated by unique id, in topological
/// order (every step after its inputs).
///
/// ```
/// # use milonga::{Context, PostcardFormat, Step, StepRef};
/// # use serde::Serialize;
/// # #[derive(Serialize)] struct One;
/// # impl Step for One { const NAME: &'static str = "One"; type Output = u8; type Format = PostcardFormat;
/// #   fn run(&self, _: &mut Context<'_>) -> Result<u8, milonga::BoxError> { Ok(1) } }
/// # #[derive(Serialize)] struct Add { a: StepRef<One>, b: StepRef<One> }
/// # impl Step for Add { const NAME: &'static str = "Add"; type Output = u8; type Format = PostcardFormat;
/// #   fn run(&self, c: &mut Context<'_>) -> Result<u8, milonga::BoxError> { Ok(*c.input(&self.a)? + *c.input(&self.b)?) } }
/// let one = StepRef::new(One);
/// let add = StepRef::new(Add { a: one.clone(), b: one.clone() });
/// let graph = milonga::Graph::new([add.erased()])?;
/// assert_eq!(graph.nodes().len(), 2);                     // `One` once
/// assert_eq!(graph.nodes()[0].name, "One");
/// assert_eq!(graph.nodes()[1].dependencies, [0]);
/// # Ok::<(), milonga::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Graph {
    nodes: Vec<Node>,
    index: HashMap<String, usize>,
    targets: Vec<usize>,
}

struct Frame {
    unique_id: String,
    step: DynStep,
    deps: Vec<(String, DynStep)>,
    next: usize,
}

impl Graph {
    /// The graph of `targets` and everything they need.
    ///
    /// Ids of non-deterministic steps are those of the current run (a fresh run if none is
    /// active): build the graph a run executes inside that run ([`Executor::run`] does).
    ///
    /// [`Executor::run`]: crate::Executor::run
    ///
    /// # Errors
    /// As [`Step::unique_id`](crate::Step::unique_id).
    pub fn new<I>(targets: I) -> Result<Graph>
    where
        I: IntoIterator,
        I::Item: Into<DynStep>,
    {
        let scope = Scope::current_or_new();
        let _entered = scope.enter();
        Self::build(targets.into_iter().map(Into::into))
    }

    pub(crate) fn build(targets: impl Iterator<Item = DynStep>) -> Result<Graph> {
        let mut graph = Graph {
            nodes: Vec::new(),
            index: HashMap::new(),
            targets: Vec::new(),
        };
        let mut on_stack = HashSet::new();
        for target in targets {
            let (unique_id, deps) = target.describe()?;
            if let Some(&i) = graph.index.get(&unique_id) {
                graph.mark_target(i);
                continue;
            }
            on_stack.insert(unique_id.clone());
            let mut stack = vec![Frame {
                unique_id,
                step: target,
                deps,
                next: 0,
            }];
            // Depth-first, iteratively (a long chain must not overflow the stack); a node is
            // added once all its inputs are.
            while let Some(top) = stack.last_mut() {
                if let Some((dep_id, dep)) = top.deps.get(top.next).cloned() {
                    top.next += 1;
                    if graph.index.contains_key(&dep_id) {
                        continue;
                    }
                    if !on_stack.insert(dep_id.clone()) {
                        return Err(Error::InvalidStep {
                            name: dep.name().into(),
                            reason: format!("step {dep_id} depends on itself"),
                        });
                    }
                    let (_, deps) = dep.describe()?;
                    stack.push(Frame {
                        unique_id: dep_id,
                        step: dep,
                        deps,
                        next: 0,
                    });
                } else if let Some(frame) = stack.pop() {
                    on_stack.remove(&frame.unique_id);
                    let dependencies = frame
                        .deps
                        .iter()
                        .filter_map(|(id, _)| graph.index.get(id).copied())
                        .collect();
                    let i = graph.nodes.len();
                    graph.index.insert(frame.unique_id.clone(), i);
                    graph.nodes.push(Node {
                        unique_id: frame.unique_id,
                        name: frame.step.name(),
                        dependencies,
                        target: false,
                        step: frame.step,
                    });
                }
            }
            let i = graph.nodes.len() - 1;
            graph.mark_target(i);
        }
        Ok(graph)
    }

    fn mark_target(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i) {
            if !node.target {
                node.target = true;
                self.targets.push(i);
            }
        }
    }

    /// Every node, each after its inputs.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node of the step with this unique id.
    pub fn get(&self, unique_id: &str) -> Option<&Node> {
        self.index.get(unique_id).and_then(|&i| self.nodes.get(i))
    }

    /// The position of the step with this unique id in [`nodes`](Graph::nodes).
    pub fn position(&self, unique_id: &str) -> Option<usize> {
        self.index.get(unique_id).copied()
    }

    /// Positions of the target nodes, in the order given (duplicates removed).
    pub fn targets(&self) -> &[usize] {
        &self.targets
    }

    /// For each node, the positions of the nodes that take it as input.
    pub fn dependents(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for &d in &node.dependencies {
                if let Some(v) = out.get_mut(d) {
                    v.push(i);
                }
            }
        }
        out
    }
}
