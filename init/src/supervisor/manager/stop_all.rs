//! Shutdown ([`SupervisorHandle::stop_all`](crate::supervisor::SupervisorHandle::stop_all)):
//! each unit is stopped once every unit that requires it or is ordered
//! after it is down, whole groups, and nothing starts afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{now_us, Down, Manager};
use crate::supervisor::members::KILL_WAIT;
use crate::unit::UnitName;

impl Manager {
    pub(super) fn begin_shutdown(&mut self) {
        if !self.shutting_down {
            self.shutting_down = true;
            let now = now_us();
            for entry in self.units.values_mut() {
                entry.life.shutdown_begun(now);
            }
        }
        self.advance_shutdown();
    }

    /// Stops every unit whose dependents have all stopped, until nothing
    /// changes; answers stop_all once all are down.
    pub(super) fn advance_shutdown(&mut self) {
        if !self.shutting_down {
            return;
        }
        loop {
            let mut changed = false;
            let names: Vec<UnitName> = self.units.keys().cloned().collect();
            for name in names {
                let Some(entry) = self.units.get(&name) else { continue };
                if entry.down != Down::Up {
                    continue;
                }
                let dependents_down =
                    entry.needs.dependents.iter().all(|d| self.units.get(d).is_none_or(|e| e.down == Down::Done));
                if !dependents_down {
                    continue;
                }
                let members = self.members(&name);
                let Some(entry) = self.units.get_mut(&name) else { continue };
                if entry.life.request_stop(true, "shutdown", now_us()) {
                    continue;
                }
                if members.is_empty() {
                    entry.down = Down::Done;
                    entry.life.stopped_for_shutdown(now_us());
                    self.remove_group(&name);
                } else {
                    entry.down = Down::Clearing;
                    let (sig, timeout) = (entry.unit.service.stop_signal, entry.unit.service.stop_timeout);
                    self.note(&name, "shutdown: stopping what is left in its group");
                    self.clear_in_background(&name, members, sig, timeout);
                }
                changed = true;
            }
            if !changed {
                break;
            }
        }
        if self.units.values().all(|e| e.down == Down::Done) {
            for w in self.shutdown_waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
        }
    }
}

impl Manager {
    /// The longest the shutdown may take: for each unit, once its
    /// dependents are down, its `exec_stop` and then its stop signal get
    /// `stop_timeout` each, and SIGKILL [`KILL_WAIT`]; the longest chain of
    /// dependents decides.
    pub(super) fn stop_bound(&self) -> Duration {
        let mut done: BTreeMap<UnitName, Duration> = BTreeMap::new();
        self.units.keys().map(|name| self.down_by(name, &mut done, &mut BTreeSet::new())).max().unwrap_or_default()
    }

    /// How long after shutdown began `name` is down at the latest.
    fn down_by(
        &self,
        name: &UnitName,
        done: &mut BTreeMap<UnitName, Duration>,
        visiting: &mut BTreeSet<UnitName>,
    ) -> Duration {
        if let Some(d) = done.get(name) {
            return *d;
        }
        let Some(entry) = self.units.get(name) else { return Duration::ZERO };
        // The plan has no cycles; should one slip in, it is cut here.
        if !visiting.insert(name.clone()) {
            return Duration::ZERO;
        }
        let dependents =
            entry.needs.dependents.iter().map(|d| self.down_by(d, done, visiting)).max().unwrap_or_default();
        let svc = &entry.unit.service;
        let own = match svc.exec_stop {
            Some(_) => svc.stop_timeout.saturating_mul(2),
            None => svc.stop_timeout,
        };
        let by = dependents.saturating_add(own).saturating_add(KILL_WAIT);
        visiting.remove(name);
        done.insert(name.clone(), by);
        by
    }
}
