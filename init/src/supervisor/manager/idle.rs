//! Idle units (systemd's `Type=idle`): an idle unit's first start at boot
//! waits, once its own dependencies allow it, until the boot's other
//! daemons (the units the machine's readiness waits for, and every
//! long-running unit) have settled, for at most
//! [`Config::idle_limit`](crate::supervisor::Config::idle_limit).

use std::collections::BTreeSet;

use super::{human, now_us, DelayedEvent, Event, Manager};
use crate::unit::UnitName;

/// An idle unit held back: whether its limit is up, and the task that
/// sends [`Event::IdleLimit`] then, aborted when the hold ends (this is
/// dropped).
pub(super) struct IdleHold {
    expired: bool,
    _limit: DelayedEvent,
}

impl IdleHold {
    /// Its limit is up: the next reconcile starts the unit.
    pub(super) fn expire(&mut self) {
        self.expired = true;
    }
}

impl Manager {
    /// What an `idle` unit's first start still waits for: every other unit
    /// that has not settled and that the machine's readiness waits for or
    /// that is long-running (a daemon nothing needs, as etcd: systemd's
    /// `Type=idle` waits for all of the boot's jobs), leaving out idle
    /// units, oneshots nothing needs for readiness (they may wait for the
    /// world outside: a lease, a route) and units that wait for this one
    /// (directly or through others). Empty when the unit is not idle, has
    /// started before, the machine has been ready once, or the unit has
    /// waited `idle_limit`.
    pub(super) fn idle_waits_for(&self, name: &UnitName) -> Vec<&UnitName> {
        let Some(entry) = self.units.get(name) else { return Vec::new() };
        let expired = entry.idle_hold.as_ref().is_some_and(|h| h.expired);
        if !entry.unit.dependencies.idle || entry.life.first_start().started_us.is_some() || self.booted || expired {
            return Vec::new();
        }
        self.units
            .iter()
            .filter(|(n, e)| *n != name && !e.unit.dependencies.idle && !e.life.settled())
            .filter(|(n, e)| {
                (self.needed_for_ready(n) || e.unit.service.kind == berth_units::Kind::LongRunning)
                    && !self.waits_on(n, name)
            })
            .map(|(n, _)| n)
            .collect()
    }

    /// Whether `unit` waits for `other` before it starts, directly or
    /// through the units it waits for.
    fn waits_on(&self, unit: &UnitName, other: &UnitName) -> bool {
        let mut seen = BTreeSet::new();
        let mut next = vec![unit];
        while let Some(n) = next.pop() {
            let Some(e) = self.units.get(n) else { continue };
            for d in e.needs.waits_for() {
                if d == other {
                    return true;
                }
                if seen.insert(d) {
                    next.push(d);
                }
            }
        }
        false
    }

    /// Holds an idle unit back for `waits_for` (its reason says so) and,
    /// the first time, sets off its limit and marks when its wait began.
    pub(super) fn hold_idle(&mut self, name: &UnitName, waits_for: Vec<UnitName>) {
        let limit = self.config.idle_limit;
        let tx = self.events_tx.clone();
        let Some(entry) = self.units.get_mut(name) else { return };
        if entry.idle_hold.is_none() {
            let event = Event::IdleLimit { unit: name.clone() };
            entry.idle_hold = Some(IdleHold { expired: false, _limit: DelayedEvent::send_after(tx, limit, event) });
            entry.life.gate_opened(true, now_us());
        }
        let list = waits_for.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
        entry.life.waiting_for(format!("waiting for the boot's units: {list} (idle, at most {})", human(limit)));
        entry.idle_waited.extend(waits_for);
    }
}
