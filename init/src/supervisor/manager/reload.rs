//! A new plan taken while running: new units start, removed ones stop
//! (whole group) and are dropped or kept as left out, changed ones restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{now_us, Manager, UnitEntry};
use crate::supervisor::ReloadReport;
use crate::unit::{Needs, Plan, Relation, Unit, UnitName};

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
        let Plan { units, mut needs, excluded, .. } = plan;
        let mut excluded: BTreeMap<UnitName, (Unit, String)> =
            excluded.into_iter().map(|(n, x)| (n, (x.unit, format!("not started: {}", x.reason)))).collect();
        let mut report = ReloadReport::default();
        let now = now_us();
        let gone: Vec<UnitName> = self.units.keys().filter(|n| !units.contains_key(*n)).cloned().collect();
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
        report
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
