//! The dependency graph: which units start, in what order, and what each
//! one waits for. Pure: loaded units in, a [`Plan`] out; ties broken by
//! name, so the same files always give the same plan.
//!
//! - `requires X`: X must be ready before this starts, and if X fails this
//!   does not start. A `requires` naming no unit leaves this unit out (it
//!   could never start correctly); so does one naming a masked unit or one
//!   whose file has errors.
//! - `after X`: ordering only. This waits until X has settled (ready,
//!   failed or skipped), whatever the outcome. An `after` naming no unit is
//!   reported and the edge dropped; naming a masked or invalid unit, the
//!   edge is dropped silently (masking is deliberate, the invalid file has
//!   its own error).
//! - `wants X`: X is started along with this unit, nothing more: no
//!   ordering (add `after` for that), no failure propagation. A missing X is
//!   reported and the edge dropped.
//!
//! Cycles are looked for over `requires` and `after` edges. Every unit of a
//! cycle is left out and the cycle is reported in full, `a -> b -> c -> a`,
//! with the file and line of each edge. Then every unit that requires a
//! left-out unit, directly or through others, is left out too, with the
//! chain as its reason. Everything else is scheduled.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::PathBuf;

use super::error::{Cycle, CycleStep, ErrorKind, UnitError};
use super::format::{Dependency, Unit};
use super::load::Loaded;
use super::name::{Relation, UnitName};

/// What starts, in what order, and why the rest does not.
#[derive(Debug, Default)]
pub struct Plan {
    /// The units that will be started.
    pub units: BTreeMap<UnitName, Unit>,
    /// For every unit in `units`: what it waits for and what waits for it.
    pub needs: BTreeMap<UnitName, Needs>,
    /// Start order: every unit of a layer only waits for units of earlier
    /// layers, so a layer can start in parallel. The supervisor should rather
    /// start each unit as soon as [`Needs::gate`] says so; the layers are
    /// the same order, coarser (for `berthctl` and tests).
    pub layers: Vec<Vec<UnitName>>,
    /// Stop order: every unit of a layer is waited for only by units of
    /// earlier layers. Units nothing waits for stop first.
    pub shutdown: Vec<Vec<UnitName>>,
    /// Units left out, each with why.
    pub excluded: BTreeMap<UnitName, Excluded>,
    /// Masked units and the file that masks each.
    pub masked: BTreeMap<UnitName, PathBuf>,
    /// Units whose file could not be read or parsed (the loader's
    /// [`Loaded::invalid`]; the errors are in `errors`): in neither `units`
    /// nor `excluded`, as there is no definition to start. A reload keeps
    /// such a unit as it runs rather than taking it for removed.
    pub invalid: BTreeSet<UnitName>,
    /// Every problem: the loader's, then missing dependencies and cycles.
    pub errors: Vec<UnitError>,
}

/// A unit's edges, limited to units that will start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Must be ready (or skipped) before this starts; a failure means this
    /// never starts.
    pub requires: BTreeSet<UnitName>,
    /// Must have settled before this starts (not repeated from `requires`).
    pub after: BTreeSet<UnitName>,
    /// Started along with this one; not waited for.
    pub wants: BTreeSet<UnitName>,
    /// Units that require or are after this one: they stop before it.
    pub dependents: BTreeSet<UnitName>,
}

/// A dependency's state, as the supervisor knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not settled yet: waiting, starting.
    Pending,
    Ready,
    /// Its conditions did not hold: it had nothing to do. Like systemd, that
    /// satisfies `requires`.
    Skipped,
    /// Failed to start or become ready, or gave up restarting.
    Failed,
}

/// Whether a unit may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Start,
    Wait,
    /// A required unit failed: this one will not start.
    Never {
        dependency: UnitName,
    },
}

impl Needs {
    /// Every unit this one waits for before it starts.
    pub fn waits_for(&self) -> BTreeSet<&UnitName> {
        self.requires.iter().chain(&self.after).collect()
    }

    /// May the unit start, given its dependencies' states?
    pub fn gate(&self, state: impl Fn(&UnitName) -> State) -> Gate {
        let mut wait = false;
        for d in &self.requires {
            match state(d) {
                State::Failed => return Gate::Never { dependency: d.clone() },
                State::Pending => wait = true,
                State::Ready | State::Skipped => {}
            }
        }
        if self.after.iter().any(|d| state(d) == State::Pending) {
            wait = true;
        }
        if wait {
            Gate::Wait
        } else {
            Gate::Start
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Excluded {
    pub unit: Unit,
    pub reason: Exclusion,
}

/// Why a unit is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// It requires a unit that does not exist.
    MissingDependency { dependency: UnitName },
    /// It requires a masked unit.
    RequiresMasked { dependency: UnitName },
    /// It requires a unit whose file has errors.
    RequiresInvalid { dependency: UnitName },
    /// It is in a dependency cycle (the cycle found through the cycle's
    /// first unit, first unit repeated at the end).
    Cycle { cycle: Vec<UnitName> },
    /// It requires `chain[0]`, which requires `chain[1]`, ..., and the last
    /// of the chain is left out for `root`.
    RequiresExcluded { chain: Vec<UnitName>, root: Box<Exclusion> },
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::MissingDependency { dependency } => {
                write!(f, "requires {dependency}, which does not exist")
            }
            Exclusion::RequiresMasked { dependency } => {
                write!(f, "requires {dependency}, which is masked")
            }
            Exclusion::RequiresInvalid { dependency } => {
                write!(f, "requires {dependency}, whose unit file has errors")
            }
            Exclusion::Cycle { cycle } => {
                f.write_str("in dependency cycle ")?;
                write_chain(f, cycle)
            }
            Exclusion::RequiresExcluded { chain, root } => {
                f.write_str("requires ")?;
                write_chain(f, chain)?;
                match chain.last() {
                    Some(last) => write!(f, "; {last} is left out: {root}"),
                    None => write!(f, "; {root}"),
                }
            }
        }
    }
}

fn write_chain(f: &mut fmt::Formatter<'_>, names: &[UnitName]) -> fmt::Result {
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            f.write_str(" -> ")?;
        }
        write!(f, "{n}")?;
    }
    Ok(())
}

/// An ordering edge (requires or after) between two loaded units.
struct Edge<'a> {
    to: &'a UnitName,
    relation: Relation,
    dep: &'a Dependency,
}

/// Build the plan from what the loader found.
pub fn plan(loaded: Loaded) -> Plan {
    let Loaded { units, masked, invalid, mut errors } = loaded;
    let mut reasons: BTreeMap<UnitName, Exclusion> = BTreeMap::new();
    let mut needs: BTreeMap<UnitName, Needs> = BTreeMap::new();
    let mut edges: BTreeMap<&UnitName, Vec<Edge<'_>>> = BTreeMap::new();

    for (name, unit) in &units {
        let n = needs.entry(name.clone()).or_default();
        let out = edges.entry(name).or_default();
        for (relation, dep) in unit.dependencies.all() {
            if let Some((to, _)) = units.get_key_value(&dep.name) {
                match relation {
                    Relation::Requires => {
                        n.requires.insert(to.clone());
                    }
                    Relation::After => {
                        n.after.insert(to.clone());
                    }
                    Relation::Wants => {
                        n.wants.insert(to.clone());
                    }
                }
                if relation != Relation::Wants {
                    out.push(Edge { to, relation, dep });
                }
                continue;
            }
            let dependency = dep.name.clone();
            let reason = if masked.contains_key(&dep.name) {
                Exclusion::RequiresMasked { dependency }
            } else if invalid.contains(&dep.name) {
                Exclusion::RequiresInvalid { dependency }
            } else {
                errors.push(UnitError {
                    at: dep.at.clone(),
                    kind: ErrorKind::MissingDependency { unit: name.clone(), dependency: dependency.clone(), relation },
                });
                Exclusion::MissingDependency { dependency }
            };
            if relation == Relation::Requires {
                reasons.entry(name.clone()).or_insert(reason);
            }
        }
    }
    for n in needs.values_mut() {
        let required = n.requires.clone();
        n.after.retain(|a| !required.contains(a));
    }

    // Cycles.
    for cycle in find_cycles(&edges) {
        let names: Vec<UnitName> = cycle
            .steps
            .first()
            .map(|s| s.from.clone())
            .into_iter()
            .chain(cycle.steps.iter().map(|s| s.to.clone()))
            .collect();
        for m in &cycle.members {
            reasons.entry(m.clone()).or_insert_with(|| Exclusion::Cycle { cycle: names.clone() });
        }
        let at = cycle.steps.first().map(|s| s.at.clone());
        if let Some(at) = at {
            errors.push(UnitError { at, kind: ErrorKind::Cycle(cycle) });
        }
    }

    // What requires a left-out unit is left out too, breadth first so each
    // gets the shortest chain.
    let mut required_by: BTreeMap<&UnitName, BTreeSet<&UnitName>> = BTreeMap::new();
    for (name, n) in &needs {
        for r in &n.requires {
            required_by.entry(r).or_default().insert(name);
        }
    }
    let mut queue: VecDeque<UnitName> = reasons.keys().cloned().collect();
    while let Some(gone) = queue.pop_front() {
        let Some(dependents) = required_by.get(&gone) else { continue };
        for &d in dependents {
            if reasons.contains_key(d) {
                continue;
            }
            let reason = match reasons.get(&gone) {
                Some(Exclusion::RequiresExcluded { chain, root }) => Exclusion::RequiresExcluded {
                    chain: std::iter::once(gone.clone()).chain(chain.iter().cloned()).collect(),
                    root: root.clone(),
                },
                Some(other) => Exclusion::RequiresExcluded { chain: vec![gone.clone()], root: Box::new(other.clone()) },
                None => continue,
            };
            reasons.insert(d.clone(), reason);
            queue.push_back(d.clone());
        }
    }

    drop(edges);
    let mut plan = Plan { masked, invalid, errors, ..Plan::default() };
    for (name, unit) in units {
        match reasons.remove(&name) {
            Some(reason) => {
                needs.remove(&name);
                plan.excluded.insert(name, Excluded { unit, reason });
            }
            None => {
                plan.units.insert(name, unit);
            }
        }
    }
    // Edges to left-out units: `after` and `wants` lose them (such a unit
    // has settled: it never starts); no `requires` remains by construction.
    for n in needs.values_mut() {
        let scheduled = |u: &UnitName| plan.units.contains_key(u);
        n.requires.retain(scheduled);
        n.after.retain(scheduled);
        n.wants.retain(scheduled);
    }
    let waits: Vec<(UnitName, Vec<UnitName>)> =
        needs.iter().map(|(name, n)| (name.clone(), n.waits_for().into_iter().cloned().collect())).collect();
    for (name, waits_for) in waits {
        for w in waits_for {
            if let Some(n) = needs.get_mut(&w) {
                n.dependents.insert(name.clone());
            }
        }
    }
    plan.layers = layers(&needs, |n| n.waits_for());
    plan.shutdown = layers(&needs, |n| n.dependents.iter().collect());
    plan.needs = needs;
    plan
}

/// Kahn's algorithm in rounds: each round takes every unit whose
/// predecessors were all taken in earlier rounds.
fn layers(needs: &BTreeMap<UnitName, Needs>, before: impl Fn(&Needs) -> BTreeSet<&UnitName>) -> Vec<Vec<UnitName>> {
    let mut done: BTreeSet<&UnitName> = BTreeSet::new();
    let mut out = Vec::new();
    while done.len() < needs.len() {
        let layer: Vec<&UnitName> = needs
            .iter()
            .filter(|(name, n)| !done.contains(name) && before(n).iter().all(|p| done.contains(p)))
            .map(|(name, _)| name)
            .collect();
        if layer.is_empty() {
            // Cannot happen: cycles were left out. Never loop forever.
            break;
        }
        done.extend(layer.iter().copied());
        out.push(layer.into_iter().cloned().collect());
    }
    out
}

/// Every cycle over the ordering edges: one per strongly connected
/// component with more than one unit (or a unit with an edge to itself),
/// the cycle being the shortest one through the component's first unit.
fn find_cycles(edges: &BTreeMap<&UnitName, Vec<Edge<'_>>>) -> Vec<Cycle> {
    // Unit files are tens, not thousands: reachability by a search from
    // every unit is simple and fast enough.
    let reach: BTreeMap<&UnitName, BTreeSet<&UnitName>> = edges
        .keys()
        .map(|&start| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![start];
            while let Some(u) = stack.pop() {
                for e in edges.get(u).map(Vec::as_slice).unwrap_or_default() {
                    if seen.insert(e.to) {
                        stack.push(e.to);
                    }
                }
            }
            (start, seen)
        })
        .collect();
    let reaches = |a: &UnitName, b: &UnitName| reach.get(a).is_some_and(|r| r.contains(b));

    let mut assigned: BTreeSet<&UnitName> = BTreeSet::new();
    let mut cycles = Vec::new();
    for (&start, reachable) in &reach {
        if assigned.contains(start) || !reachable.contains(start) {
            continue;
        }
        let members: BTreeSet<&UnitName> = reachable.iter().copied().filter(|&v| reaches(v, start)).collect();
        assigned.extend(members.iter().copied());
        // `start` is the component's smallest name: components are found in
        // name order and each is taken whole the first time.
        if let Some(steps) = shortest_cycle(edges, start, &members) {
            cycles.push(Cycle { steps, members: members.into_iter().cloned().collect() });
        }
    }
    cycles
}

/// Breadth-first from `start` back to itself, within `members`, edges taken
/// by target name (requires before after when both lead to it).
fn shortest_cycle(
    edges: &BTreeMap<&UnitName, Vec<Edge<'_>>>,
    start: &UnitName,
    members: &BTreeSet<&UnitName>,
) -> Option<Vec<CycleStep>> {
    let sorted = |u: &UnitName| {
        let mut out: Vec<&Edge<'_>> =
            edges.get(u).map(|v| v.iter().filter(|e| members.contains(e.to)).collect()).unwrap_or_default();
        out.sort_by(|a, b| (a.to, a.relation).cmp(&(b.to, b.relation)));
        out
    };
    // node -> (the node before it, the edge from there)
    let mut parent: BTreeMap<&UnitName, (&UnitName, &Edge<'_>)> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    let mut closing: Option<(&UnitName, &Edge<'_>)> = None;
    'search: while let Some(u) = queue.pop_front() {
        for e in sorted(u) {
            if e.to == start {
                closing = Some((u, e));
                break 'search;
            }
            if !parent.contains_key(e.to) {
                parent.insert(e.to, (u, e));
                queue.push_back(e.to);
            }
        }
    }
    let (mut at, last) = closing?;
    let step = |from: &UnitName, e: &Edge<'_>| CycleStep {
        from: from.clone(),
        to: e.to.clone(),
        relation: e.relation,
        at: e.dep.at.clone(),
    };
    let mut steps = vec![step(at, last)];
    while at != start {
        let (prev, e) = parent.get(at)?;
        steps.push(step(prev, e));
        at = prev;
    }
    steps.reverse();
    Some(steps)
}
