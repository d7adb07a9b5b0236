//! Shutdown ([`SupervisorHandle::stop_all`](crate::supervisor::SupervisorHandle::stop_all)):
//! each unit is stopped once every unit that requires it or is ordered
//! after it is down, whole groups, and nothing starts afterwards.

use super::{now_us, Down, Manager};
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
