//! A new plan taken while running: new units start, removed ones stop
//! (whole group) and are dropped or kept as left out, changed ones restart.
//!
//! A unit whose file no longer loads (a typo: the plan's `invalid`) is not
//! removed: it keeps the definition it has and its run, as do the units
//! left out only because they require it. The plan's errors say what is
//! wrong with the file; the unit's log says it was kept.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{now_us, Manager, UnitEntry};
use crate::status::UnitState;
use crate::supervisor::ReloadReport;
use crate::unit::{Excluded, Exclusion, Needs, Plan, Relation, Unit, UnitName};

/// Two definitions that differ only in where their dependencies were
/// written (lines moved), or in `required_for_ready` and `idle` (which say
/// when others wait for the unit or it for them, not how it runs), are
/// the same unit: no restart on reload.
fn same_definition(a: &Unit, b: &Unit) -> bool {
    let deps =
        |u: &Unit| -> Vec<(Relation, UnitName)> { u.dependencies.all().map(|(r, d)| (r, d.name.clone())).collect() };
    a.description == b.description
        && a.service == b.service
        && a.restart == b.restart
        && a.limits == b.limits
        && a.health == b.health
        && a.conditions == b.conditions
        && deps(a) == deps(b)
}

impl Manager {
    pub(super) fn reload(&mut self, plan: Plan) -> ReloadReport {
        let Plan { units, mut needs, excluded, invalid, .. } = plan;
        let held = self.held(&units, &excluded, &invalid);
        let mut excluded: BTreeMap<UnitName, (Unit, String)> = excluded
            .into_iter()
            .filter(|(n, _)| !held.contains_key(n))
            .map(|(n, x)| (n, (x.unit, format!("not started: {}", x.reason))))
            .collect();
        let mut report = ReloadReport::default();
        let now = now_us();
        for (name, why) in &held {
            self.note(name, &format!("kept as it is, with the definition it has: {why}"));
        }
        let gone: Vec<UnitName> =
            self.units.keys().filter(|n| !units.contains_key(*n) && !held.contains_key(*n)).cloned().collect();
        for name in gone {
            let left_out = excluded.get(&name).map(|(_, r)| r.clone());
            let Some(entry) = self.units.get_mut(&name) else { continue };
            if entry.life.left_out_reason().is_some() {
                // Still (or no longer) left out: just take the new reason.
                match excluded.remove(&name) {
                    Some((unit, r)) => {
                        entry.unit = Arc::new(unit);
                        entry.life.retire(Some(r), now);
                    }
                    None => {
                        self.units.remove(&name);
                    }
                }
                continue;
            }
            report.removed.push(name.to_string());
            if !entry.life.removed(left_out.clone(), now) {
                self.retire(&name, left_out);
            }
            excluded.remove(&name);
        }
        for (name, unit) in units {
            let n = needs.remove(&name).unwrap_or_default();
            let Some(entry) = self.units.get_mut(&name) else {
                report.added.push(name.to_string());
                self.units.insert(name, UnitEntry::new(unit, n));
                continue;
            };
            if entry.life.left_out_reason().is_some() {
                report.added.push(name.to_string());
                let waiters = std::mem::take(&mut entry.waiters);
                *entry = UnitEntry::new(unit, n);
                entry.waiters = waiters;
                continue;
            }
            entry.needs = n;
            let changed = !same_definition(&entry.unit, &unit);
            if changed {
                report.changed.push(name.to_string());
            }
            // The running process keeps the definition it was started with;
            // the next start, and the flags of an unchanged one, take this.
            entry.unit = Arc::new(unit);
            // Removed by an earlier reload and still stopping: it is back.
            if entry.life.is_retiring() {
                report.added.push(name.to_string());
            }
            let kill_group = entry.kill_group();
            if entry.life.kept(changed, kill_group, now) {
                self.activate(&name, &mut BTreeSet::new());
            }
        }
        for (name, (unit, reason)) in excluded {
            self.units.entry(name).or_insert_with(|| UnitEntry::left_out(unit, reason));
        }
        // A held unit keeps its edges; the units it waits for, taken from
        // the new plan, learn again that it stops before them, and it
        // learns which units now wait for it: the plan has no edge to a
        // unit it could not load.
        for name in held.keys() {
            let waits: Vec<UnitName> =
                self.units.get(name).map(|e| e.needs.waits_for().into_iter().cloned().collect()).unwrap_or_default();
            for w in waits {
                if let Some(e) = self.units.get_mut(&w) {
                    e.needs.dependents.insert(name.clone());
                }
            }
            // What the held unit itself waits for stays its dependency, not
            // its dependent, whatever that unit's new file says: the two
            // would otherwise wait for each other at shutdown.
            let own: BTreeSet<UnitName> =
                self.units.get(name).map(|e| e.needs.waits_for().into_iter().cloned().collect()).unwrap_or_default();
            let dependents: BTreeSet<UnitName> = self
                .units
                .iter()
                .filter(|(n, e)| {
                    *n != name
                        && !own.contains(*n)
                        && e.life.left_out_reason().is_none()
                        && (e.needs.waits_for().contains(name)
                            || e.unit
                                .dependencies
                                .all()
                                .any(|(r, d)| matches!(r, Relation::Requires | Relation::After) && d.name == *name))
                })
                .map(|(n, _)| n.clone())
                .collect();
            if let Some(e) = self.units.get_mut(name) {
                e.needs.dependents = dependents;
            }
        }
        report
    }

    /// The units a reload leaves exactly as they are, each with why: a
    /// unit (not failed, not left out, not being removed) whose file no
    /// longer loads (in `invalid`), and one the plan
    /// leaves out only because it requires such a unit, directly or through
    /// others held too. Their running definitions are all there is to go
    /// by: the broken file says nothing. So a unit is held only while every
    /// unit its running definition requires stays (in the plan or held): a
    /// requirement removed in the same reload stops it, as it would a unit
    /// whose file loads.
    fn held(
        &self,
        units: &BTreeMap<UnitName, Unit>,
        excluded: &BTreeMap<UnitName, Excluded>,
        invalid: &BTreeSet<UnitName>,
    ) -> BTreeMap<UnitName, String> {
        // Not only running units: a oneshot that is done or a unit skipped
        // by its condition (ssh-keygen after the first boot) is what running
        // units (sshd) require, and they would be stopped with it. A failed
        // one has nothing to keep.
        let running = |n: &UnitName| {
            self.units.get(n).is_some_and(|e| {
                e.life.left_out_reason().is_none() && !e.life.is_retiring() && e.life.state() != UnitState::Failed
            })
        };
        // What each candidate needs held for it to be held: the unit whose
        // file does not load that it was left out for (none for such a
        // unit itself), and the units it requires, by its new definition
        // and by its running one.
        struct Candidate<'a> {
            why: String,
            root: Option<&'a UnitName>,
            requires: BTreeSet<&'a UnitName>,
        }
        let running_requires = |n: &UnitName| -> BTreeSet<&UnitName> {
            self.units.get(n).map(|e| e.needs.requires.iter().collect()).unwrap_or_default()
        };
        let mut candidates: BTreeMap<&UnitName, Candidate<'_>> = invalid
            .iter()
            .filter(|n| running(n))
            .map(|n| {
                let why = "its unit file does not load (see the errors)".to_string();
                (n, Candidate { why, root: None, requires: running_requires(n) })
            })
            .collect();
        for (n, x) in excluded.iter().filter(|(n, _)| running(n)) {
            let root = match &x.reason {
                Exclusion::RequiresInvalid { dependency } => dependency,
                Exclusion::RequiresExcluded { root, .. } => match root.as_ref() {
                    Exclusion::RequiresInvalid { dependency } => dependency,
                    _ => continue,
                },
                _ => continue,
            };
            let mut requires = running_requires(n);
            requires.extend(x.unit.dependencies.all().filter(|(r, _)| *r == Relation::Requires).map(|(_, d)| &d.name));
            candidates.insert(n, Candidate { why: x.reason.to_string(), root: Some(root), requires });
        }
        // Drop every candidate whose root or requirement is not there, until
        // nothing changes (requires chains are short and acyclic).
        loop {
            let gone: Vec<&UnitName> = candidates
                .iter()
                .filter(|(_, c)| {
                    c.root.is_some_and(|r| !candidates.contains_key(r))
                        || c.requires.iter().any(|d| !units.contains_key(*d) && !candidates.contains_key(*d))
                })
                .map(|(n, _)| *n)
                .collect();
            if gone.is_empty() {
                break;
            }
            for n in gone {
                candidates.remove(n);
            }
        }
        candidates.into_iter().map(|(n, c)| (n.clone(), c.why)).collect()
    }

    /// A unit gone from the plan and not running: it is kept as left out
    /// (`Some` reason) or dropped, and what its group still holds is
    /// cleared.
    pub(super) fn retire(&mut self, name: &UnitName, left_out: Option<String>) {
        let members = self.members(name);
        let Some(entry) = self.units.get_mut(name) else { return };
        let (sig, timeout) = (entry.unit.service.stop_signal, entry.unit.service.stop_timeout);
        let dropped = left_out.is_none();
        entry.life.retire(left_out, now_us());
        if dropped {
            let status = entry.status();
            for w in entry.waiters.drain(..) {
                let _ = w.send(Ok(status.clone()));
            }
            self.units.remove(name);
        } else {
            entry.needs = Needs::default();
        }
        if members.is_empty() {
            self.remove_group(name);
        } else {
            self.clear_in_background(name, members, sig, timeout);
        }
    }
}
