//! The manager task: the shell around the units' [lifecycles](super::lifecycle).
//! It owns every unit's [`UnitEntry`], answers the handles' requests,
//! turns what the runners report into transitions, and does what the
//! transitions call for: runs ([`start`]), idle units' holds ([`idle`]),
//! restart timers, clearing groups, reloads ([`reload`]) and the shutdown
//! order ([`stop_all`]).

mod idle;
mod reload;
mod start;
mod stop_all;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::lifecycle::{AfterRun, Lifecycle, Outcome, Policy, StopSink};
use super::members::{Members, Sessions};
use super::runner::{note, InstanceEvent, StopRequest};
use super::{human, Config, ReloadReport, Reply, Settle, SupervisorError};
use crate::journal::Journal;
use crate::reaper::Reaper;
use crate::status::{Timeline, TimelineEntry, UnitState, UnitStatus};
use crate::timing;
use crate::unit::{KillMode, Needs, Plan, Unit, UnitName};
use idle::IdleHold;

pub(crate) enum Request {
    List(Reply<Vec<UnitStatus>>),
    Status(String, Reply<UnitStatus>),
    Start(String, Reply<UnitStatus>),
    Stop(String, Reply<UnitStatus>),
    Restart(String, Reply<UnitStatus>),
    Reload(Box<Plan>, Reply<ReloadReport>),
    Timeline(Reply<Timeline>),
    StopAll(Reply<()>),
    StopBound(Reply<Duration>),
}

pub(crate) enum Event {
    Instance {
        unit: UnitName,
        id: u64,
        event: InstanceEvent,
    },
    RestartDue {
        unit: UnitName,
        timer: u64,
    },
    /// An idle unit's wait reached its limit: the next reconcile starts it.
    IdleLimit {
        unit: UnitName,
    },
    /// A group without a running main process was emptied (shutdown, or
    /// a unit removed by a reload).
    Cleared {
        unit: UnitName,
        result: Result<(), String>,
    },
}

/// CLOCK_MONOTONIC µs: the lifecycle's clock.
fn now_us() -> u64 {
    u64::try_from(timing::monotonic_now().as_micros()).unwrap_or(u64::MAX)
}

impl StopSink for mpsc::UnboundedSender<StopRequest> {
    fn request_stop(&self, whole_group: bool) {
        // A runner gone has nothing left to stop.
        let _ = self.send(StopRequest { whole_group, exec_stop: false });
    }

    fn request_final_stop(&self, whole_group: bool) {
        let _ = self.send(StopRequest { whole_group, exec_stop: true });
    }
}

/// A task that sends the manager an [`Event`] after a delay, aborted when
/// this is dropped: a restart's or an idle unit's limit that no longer
/// applies never fires.
pub(crate) struct DelayedEvent(AbortHandle);

impl DelayedEvent {
    fn send_after(tx: mpsc::UnboundedSender<Event>, delay: Duration, event: Event) -> DelayedEvent {
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(event);
        });
        DelayedEvent(task.abort_handle())
    }
}

impl Drop for DelayedEvent {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A pending restart: the id its [`Event::RestartDue`] carries, and its
/// task, aborted when the unit leaves Restarting (this is dropped).
pub(crate) struct RestartTimer {
    id: u64,
    _task: DelayedEvent,
}

type Life = Lifecycle<mpsc::UnboundedSender<StopRequest>, RestartTimer>;

/// A unit's progress through shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    Up,
    /// Its processes are being cleared (no main process left).
    Clearing,
    Done,
}

/// The manager's record of one unit.
struct UnitEntry {
    /// Its definition, as the next start will take it.
    unit: Arc<Unit>,
    needs: Needs,
    life: Life,
    /// Requests answered once the unit has settled.
    waiters: Vec<Reply<UnitStatus>>,
    /// Without cgroups: the sessions of its runs that may have processes.
    sessions: Sessions,
    down: Down,
    /// Set while an `idle` unit's first start is held back.
    idle_hold: Option<IdleHold>,
    /// The units that hold kept it waiting for (the timeline's `waited_for`).
    idle_waited: BTreeSet<UnitName>,
}

impl UnitEntry {
    fn new(unit: Unit, needs: Needs) -> UnitEntry {
        UnitEntry::with(unit, needs, Lifecycle::new(now_us()))
    }

    fn left_out(unit: Unit, reason: String) -> UnitEntry {
        UnitEntry::with(unit, Needs::default(), Lifecycle::left_out(reason, now_us()))
    }

    fn with(unit: Unit, needs: Needs, life: Life) -> UnitEntry {
        UnitEntry {
            unit: Arc::new(unit),
            needs,
            life,
            waiters: Vec::new(),
            sessions: Sessions::default(),
            down: Down::Up,
            idle_hold: None,
            idle_waited: BTreeSet::new(),
        }
    }

    fn policy(&self) -> Policy {
        Policy { kind: self.unit.service.kind, restart: self.unit.restart }
    }

    /// Its kill_mode stops the whole group.
    fn kill_group(&self) -> bool {
        self.unit.service.kill_mode == KillMode::Group
    }

    /// The wire's form: a time or pid that is not there is 0.
    fn status(&self) -> UnitStatus {
        let life = &self.life;
        UnitStatus {
            name: self.unit.name.to_string(),
            description: self.unit.description.clone(),
            state: life.state(),
            reason: life.reason().to_owned(),
            pid: life.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            since_us: life.since_us(),
            restarts: life.restarts(),
            last_exit: life.last_exit().cloned(),
            ready_after_us: life.ready_after_us().unwrap_or(0),
        }
    }
}

pub(crate) struct Manager {
    config: Config,
    journal: Option<&'static Journal>,
    reaper: &'static Reaper,
    units: BTreeMap<UnitName, UnitEntry>,
    requests: mpsc::UnboundedReceiver<Request>,
    requests_open: bool,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    settle: watch::Sender<Settle>,
    shutting_down: bool,
    shutdown_waiters: Vec<Reply<()>>,
    next_id: u64,
    /// When every unit first settled.
    ready_us: Option<u64>,
    /// The machine has been ready (every unit it needs settled) once:
    /// idle units are held only before.
    booted: bool,
}

impl Manager {
    pub fn new(
        config: Config,
        plan: Plan,
        journal: Option<&'static Journal>,
        reaper: &'static Reaper,
        requests: mpsc::UnboundedReceiver<Request>,
        settle: watch::Sender<Settle>,
    ) -> Manager {
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut m = Manager {
            config,
            journal,
            reaper,
            units: BTreeMap::new(),
            requests,
            requests_open: true,
            events_tx,
            events,
            settle,
            shutting_down: false,
            shutdown_waiters: Vec::new(),
            next_id: 0,
            ready_us: None,
            booted: false,
        };
        let Plan { units, mut needs, excluded, .. } = plan;
        for (name, unit) in units {
            let n = needs.remove(&name).unwrap_or_default();
            m.units.insert(name, UnitEntry::new(unit, n));
        }
        for (name, x) in excluded {
            m.units.insert(name, UnitEntry::left_out(x.unit, format!("not started: {}", x.reason)));
        }
        m
    }

    pub async fn run(mut self) {
        if let Err(e) = std::fs::create_dir_all(&self.config.notify_dir) {
            crate::journal::init_line(&format!(
                "cannot create {}: {e} (units with ready = \"notify\" will fail)",
                self.config.notify_dir.display()
            ));
        }
        self.reconcile();
        self.publish();
        loop {
            tokio::select! {
                req = self.requests.recv(), if self.requests_open => match req {
                    Some(req) => self.request(req),
                    None => self.requests_open = false,
                },
                Some(ev) = self.events.recv() => self.event(ev),
            }
            self.reconcile();
            self.publish();
        }
    }

    fn note(&self, name: &UnitName, text: &str) {
        note(self.journal, name, text);
    }

    /// A new id for a run or a restart timer.
    fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Makes the timer of a restart of `name`: [`Event::RestartDue`]
    /// after the delay.
    fn restart_timer(&mut self, name: &UnitName) -> impl FnOnce(Duration) -> RestartTimer + 'static {
        let id = self.next_id();
        let tx = self.events_tx.clone();
        let unit = name.clone();
        move |delay| RestartTimer {
            id,
            _task: DelayedEvent::send_after(tx, delay, Event::RestartDue { unit, timer: id }),
        }
    }

    // ---- requests -----------------------------------------------------------

    fn request(&mut self, req: Request) {
        match req {
            Request::List(r) => {
                let _ = r.send(Ok(self.units.values().map(UnitEntry::status).collect()));
            }
            Request::Status(name, r) => {
                let _ = r.send(self.entry_named(&name).map(|(_, e)| e.status()));
            }
            Request::Start(name, r) => self.start_request(&name, r, false),
            Request::Restart(name, r) => self.start_request(&name, r, true),
            Request::Stop(name, r) => self.stop_request(&name, r),
            Request::Reload(plan, r) => {
                let result =
                    if self.shutting_down { Err(SupervisorError::ShuttingDown) } else { Ok(self.reload(*plan)) };
                let _ = r.send(result);
            }
            Request::Timeline(r) => {
                let _ = r.send(Ok(self.timeline()));
            }
            Request::StopAll(r) => {
                self.shutdown_waiters.push(r);
                self.begin_shutdown();
            }
            Request::StopBound(r) => {
                let _ = r.send(Ok(self.stop_bound()));
            }
        }
    }

    fn entry_named(&self, name: &str) -> Result<(UnitName, &UnitEntry), SupervisorError> {
        UnitName::new(name)
            .ok()
            .and_then(|n| self.units.get_key_value(&n))
            .map(|(n, e)| (n.clone(), e))
            .ok_or_else(|| SupervisorError::NoSuchUnit(name.to_owned()))
    }

    fn start_request(&mut self, name: &str, reply: Reply<UnitStatus>, restart: bool) {
        if self.shutting_down {
            let _ = reply.send(Err(SupervisorError::ShuttingDown));
            return;
        }
        let name = match self.entry_named(name) {
            Ok((n, e)) => match e.life.left_out_reason() {
                Some(reason) => {
                    let reason = reason.to_owned();
                    let _ = reply.send(Err(SupervisorError::NotStartable { unit: n.to_string(), reason }));
                    return;
                }
                None => n,
            },
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let Some(entry) = self.units.get_mut(&name) else { return };
        entry.waiters.push(reply);
        let kill_group = entry.kill_group();
        if entry.life.start_requested(restart, kill_group, now_us()) {
            self.activate(&name, &mut BTreeSet::new());
        }
    }

    /// Puts a unit that does not run back to Waiting, fresh start limit,
    /// with the units it requires and wants that do not run either.
    fn activate(&mut self, name: &UnitName, seen: &mut BTreeSet<UnitName>) {
        if !seen.insert(name.clone()) {
            return;
        }
        let Some(entry) = self.units.get_mut(name) else { return };
        if !entry.life.activate(now_us()) {
            return;
        }
        let deps: Vec<UnitName> = entry.needs.requires.iter().chain(&entry.needs.wants).cloned().collect();
        for d in deps {
            let idle = self.units.get(&d).is_some_and(|e| {
                !e.life.is_live() && matches!(e.life.state(), UnitState::Inactive | UnitState::Failed)
            });
            if idle {
                self.activate(&d, seen);
            }
        }
    }

    fn stop_request(&mut self, name: &str, reply: Reply<UnitStatus>) {
        let name = match self.entry_named(name) {
            Ok((n, _)) => n,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let shutting_down = self.shutting_down;
        let Some(entry) = self.units.get_mut(&name) else { return };
        entry.waiters.push(reply);
        let whole_group = shutting_down || entry.kill_group();
        entry.life.stop_requested(whole_group, now_us());
    }

    // ---- events -------------------------------------------------------------

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Instance { unit, id, event } => {
                let Some(entry) = self.units.get_mut(&unit) else { return };
                if entry.life.run().is_none_or(|r| r.id != id) {
                    return;
                }
                match event {
                    InstanceEvent::Ready => self.ready(&unit),
                    InstanceEvent::Status(text) => entry.life.set_status_text(text),
                    InstanceEvent::MainExited(status) => entry.life.main_exited(status, now_us()),
                    InstanceEvent::Degraded(reason) => {
                        if entry.life.degrade(reason.clone(), now_us()) {
                            self.note(&unit, &format!("degraded: {reason}"));
                        }
                    }
                    InstanceEvent::Healthy => {
                        if entry.life.recovered(now_us()) {
                            self.note(&unit, "health check passed: active again");
                        }
                    }
                    InstanceEvent::Done(outcome) => self.run_ended(&unit, &outcome),
                }
            }
            Event::RestartDue { unit, timer } => {
                let due = self.units.get(&unit).and_then(|e| e.life.restart_timer()).is_some_and(|t| t.id == timer);
                if due && !self.shutting_down {
                    self.start_run(&unit);
                }
            }
            // The reconcile after every event starts the unit.
            Event::IdleLimit { unit } => {
                if let Some(hold) = self.units.get_mut(&unit).and_then(|e| e.idle_hold.as_mut()) {
                    hold.expire();
                }
            }
            Event::Cleared { unit, result } => {
                if let Err(e) = &result {
                    self.note(&unit, &format!("cannot empty its group: {e}"));
                }
                match self.units.get_mut(&unit) {
                    Some(e) if e.down == Down::Clearing => {
                        e.down = Down::Done;
                        self.remove_group(&unit);
                    }
                    Some(e) if e.life.is_live() => {}
                    _ => self.remove_group(&unit),
                }
                self.advance_shutdown();
            }
        }
    }

    /// Readiness reached (a run still starting).
    fn ready(&mut self, name: &UnitName) {
        let after = self.units.get_mut(name).and_then(|e| e.life.mark_ready(now_us()));
        if let Some(after) = after {
            self.note(name, &format!("ready after {}", human(after)));
        }
    }

    /// The run is over: whatever its lifecycle says follows.
    fn run_ended(&mut self, name: &UnitName, outcome: &Outcome) {
        let schedule = self.restart_timer(name);
        let shutting_down = self.shutting_down;
        let Some(entry) = self.units.get_mut(name) else { return };
        let policy = entry.policy();
        let Some((after, note)) = entry.life.run_ended(outcome, policy, shutting_down, now_us(), schedule) else {
            return;
        };
        self.note(name, &note);
        match after {
            AfterRun::Shutdown => self.advance_shutdown(),
            AfterRun::Stopped => self.remove_group(name),
            AfterRun::Restart => self.activate(name, &mut BTreeSet::new()),
            AfterRun::Retire(left_out) => self.retire(name, left_out),
            AfterRun::Decided => {}
        }
    }

    // ---- groups -------------------------------------------------------------

    fn members(&self, name: &UnitName) -> Members {
        match &self.config.cgroups {
            Some(cg) => Members::Cgroup(cg.group(name.as_str())),
            None => Members::Sessions(self.units.get(name).map(|e| e.sessions.clone()).unwrap_or_default()),
        }
    }

    fn clear_in_background(&self, name: &UnitName, members: Members, sig: nix::sys::signal::Signal, timeout: Duration) {
        let tx = self.events_tx.clone();
        let unit = name.clone();
        tokio::spawn(async move {
            let result = members.clear(sig, timeout).await;
            let _ = tx.send(Event::Cleared { unit, result });
        });
    }

    fn remove_group(&self, name: &UnitName) {
        if let Some(cg) = &self.config.cgroups {
            let g = cg.group(name.as_str());
            if g.is_empty() {
                if let Err(e) = g.remove() {
                    crate::journal::init_line(&format!("{name}: {e}"));
                }
            }
        }
    }

    // ---- reporting ----------------------------------------------------------

    fn publish(&mut self) {
        for entry in self.units.values_mut() {
            if !entry.waiters.is_empty() && entry.life.settled() {
                let status = entry.status();
                for w in entry.waiters.drain(..) {
                    let _ = w.send(Ok(status.clone()));
                }
            }
        }
        let pending: Vec<String> =
            self.units.iter().filter(|(_, e)| !e.life.settled()).map(|(n, _)| n.to_string()).collect();
        let failed: Vec<String> = self
            .units
            .iter()
            .filter(|(_, e)| e.life.state() == UnitState::Failed)
            .map(|(n, _)| n.to_string())
            .collect();
        let settled = pending.is_empty();
        if settled && self.ready_us.is_none() {
            self.ready_us = Some(now_us());
        }
        let ready = self.units.iter().all(|(n, e)| e.life.settled() || !self.needed_for_ready(n));
        self.booted |= ready;
        let not_ready = self
            .units
            .iter()
            .map(|(n, e)| (n, e.life.state()))
            .filter(|(_, state)| !matches!(state, UnitState::Active | UnitState::Skipped))
            .map(|(n, state)| (n.to_string(), state))
            .collect();
        let next = Settle { settled, failed, pending, ready, not_ready };
        self.settle.send_if_modified(|s| {
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    }

    /// Whether the machine's readiness waits for the unit: its file says
    /// so (`required_for_ready`), or another unit requires it.
    fn needed_for_ready(&self, name: &UnitName) -> bool {
        let required = |e: &UnitEntry| e.needs.requires.contains(name);
        self.units.get(name).is_some_and(|e| e.unit.dependencies.required_for_ready)
            || self.units.values().any(required)
    }

    /// The wire's form: a time that is not there is 0.
    fn timeline(&self) -> Timeline {
        let units = self
            .units
            .iter()
            .filter(|(_, e)| e.life.left_out_reason().is_none())
            .map(|(name, e)| (name, e, e.life.first_start()))
            .map(|(name, e, first)| TimelineEntry {
                name: name.to_string(),
                waited_from_us: first.waited_from_us.unwrap_or(0),
                started_us: first.started_us.unwrap_or(0),
                ready_us: first.ready_us.unwrap_or(0),
                waited_for: e
                    .needs
                    .waits_for()
                    .into_iter()
                    .chain(&e.idle_waited)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(|n| n.to_string())
                    .collect(),
            })
            .collect();
        Timeline {
            initrd_start_us: self.config.initrd_start_us,
            pid1_start_us: self.config.pid1_start_us,
            ready_us: self.ready_us.unwrap_or(0),
            units,
        }
    }
}
