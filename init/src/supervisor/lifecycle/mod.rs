//! A unit's life: its [`Phase`] (one enum, each phase carrying what only
//! exists in it), the named transitions between phases, and [`decide`],
//! the pure function that says what follows a run that ended on its own.
//! Nothing here spawns, sleeps or waits: the manager (the shell) does
//! that and calls these transitions with the time (CLOCK_MONOTONIC µs).
//!
//! ```text
//!            gate: every `requires` ready/skipped, every `after` settled
//! Waiting ---------------------------------------------------------> conditions
//!    |  a `requires` failed -> Failed ("dependency X failed")          |      |
//!    |                                           not met -> Skipped <--+      | met: exec
//!    v                                                                        v
//!                  READY=1 / TCP connect / exec'd            (mark_ready)
//!               Starting ------------------------------------------------> Running (active)
//!                  |  exit, start_timeout, spawn error    exit, health check  |
//!                  +----------------------+----------------------------------+
//!                                         v
//!        (main process gone, rest of its group being stopped: Stopping)
//!                                         v  (run_ended: decide)
//!   a oneshot that exited 0: Done (active)
//!   policy says restart, fewer than start_limit starts in start_limit_interval?
//!        yes -> Restarting (reason: "restart in 400ms after: exit status 1")
//!               -> after Restart::backoff(starts in the window) -> Starting
//!        no  -> Failed (reason: the start limit, or the failure)
//!   (a long-running unit that exits 0 after it was ready and is not
//!    `policy = "always"`: Inactive)
//!
//! Starting/Running --(not ready in time, or health checks failing, with
//!   health.on_failure = "degrade": degrade)--> same phase, shown Degraded,
//!   still running; READY=1 / a passing check (mark_ready, recovered) -> Running
//! stop / restart / reload / shutdown (request_stop): -> Stopping -> Inactive (or the next start)
//! left out by the plan: LeftOut (failed), never started
//! ```
//!
//! The backoff's attempt number is the number of starts within
//! start_limit_interval, so it starts again from `backoff_initial` once a
//! unit has run for that long. A failure of a `requires` after the
//! dependent has started does not stop the dependent (no BindsTo).

mod decision;
mod phase;

use std::time::Duration;

pub(crate) use decision::{decide, exit_of, Cause, Decision, Outcome, Policy, StartHistory};
pub(crate) use phase::{Phase, Run, StopSink, Then};

use super::human;
use crate::reaper::ExitStatus;
use crate::status::{Exit, UnitState};
use crate::unit::State;

/// What the shell does once a run has ended, besides journalling `note`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AfterRun {
    /// Stopped for shutdown: on with the shutdown.
    Shutdown,
    /// Stopped on request: its empty group can go.
    Stopped,
    /// Waiting again (fresh start limit): what it requires goes too.
    Restart,
    /// Retired (left out, or to be dropped when `None`): what its group
    /// still holds is cleared.
    Retire(Option<String>),
    /// Decided; nothing more to do.
    Decided,
}

/// One unit's life: its phase and what outlives a phase. Times are
/// CLOCK_MONOTONIC µs; `None`: not (yet).
#[derive(Debug)]
pub(crate) struct Lifecycle<S, T> {
    phase: Phase<S, T>,
    /// Why it is where it is ("waiting for a, b", "restart in 200ms after:
    /// exit status 3"); empty: nothing to say.
    reason: String,
    /// The service's own `STATUS=` (kept while starting or active).
    status_text: String,
    /// When it entered its current state.
    since_us: u64,
    /// Starts attempted (the first one included).
    starts: u32,
    last_exit: Option<Exit>,
    history: StartHistory,
    /// The last run's exec.
    exec_us: Option<u64>,
    /// The last run's time from exec to ready.
    ready_after_us: Option<u64>,
    first: FirstStart,
}

/// The timeline of a unit's first start (CLOCK_MONOTONIC µs; `None`: not
/// yet): its wait over (if it waited for anything), its exec, ready.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FirstStart {
    pub waited_from_us: Option<u64>,
    pub started_us: Option<u64>,
    pub ready_us: Option<u64>,
}

impl<S: StopSink, T> Lifecycle<S, T> {
    /// A unit of the plan: waiting for its gate.
    pub fn new(now_us: u64) -> Self {
        Lifecycle {
            phase: Phase::Waiting,
            reason: String::new(),
            status_text: String::new(),
            since_us: now_us,
            starts: 0,
            last_exit: None,
            history: StartHistory::default(),
            exec_us: None,
            ready_after_us: None,
            first: FirstStart::default(),
        }
    }

    /// A unit the plan left out, with why.
    pub fn left_out(reason: String, now_us: u64) -> Self {
        Lifecycle { phase: Phase::LeftOut, reason, ..Lifecycle::new(now_us) }
    }

    // ---- what it is ---------------------------------------------------------

    pub fn state(&self) -> UnitState {
        self.phase.state()
    }

    /// Active, failed, skipped, inactive or degraded: nothing is under way.
    pub fn settled(&self) -> bool {
        matches!(
            self.state(),
            UnitState::Active | UnitState::Failed | UnitState::Skipped | UnitState::Inactive | UnitState::Degraded
        )
    }

    /// As the dependency gate of its dependents sees it.
    pub fn gate_state(&self) -> State {
        match self.state() {
            UnitState::Active => State::Ready,
            UnitState::Skipped => State::Skipped,
            UnitState::Failed => State::Failed,
            UnitState::Inactive
            | UnitState::Waiting
            | UnitState::Starting
            | UnitState::Restarting
            | UnitState::Stopping
            | UnitState::Degraded => State::Pending,
        }
    }

    /// The current run, if one is under way.
    pub fn run(&self) -> Option<&Run<S>> {
        self.phase.run()
    }

    pub fn is_live(&self) -> bool {
        self.phase.run().is_some()
    }

    /// Why the plan left it out, if it did.
    pub fn left_out_reason(&self) -> Option<&str> {
        matches!(self.phase, Phase::LeftOut).then_some(self.reason.as_str())
    }

    /// Being stopped because a reload removed it.
    pub fn is_retiring(&self) -> bool {
        self.run().is_some_and(|r| matches!(r.then, Then::Retire(_)))
    }

    pub fn restart_timer(&self) -> Option<&T> {
        match &self.phase {
            Phase::Restarting(t) => Some(t),
            _ => None,
        }
    }

    /// Its reason, else the service's own status text.
    pub fn reason(&self) -> &str {
        if self.reason.is_empty() {
            &self.status_text
        } else {
            &self.reason
        }
    }

    /// The running main process.
    pub fn pid(&self) -> Option<i32> {
        self.run().and_then(|r| r.pid)
    }

    pub fn since_us(&self) -> u64 {
        self.since_us
    }

    /// Starts after the first.
    pub fn restarts(&self) -> u32 {
        self.starts.saturating_sub(1)
    }

    pub fn last_exit(&self) -> Option<&Exit> {
        self.last_exit.as_ref()
    }

    pub fn ready_after_us(&self) -> Option<u64> {
        self.ready_after_us
    }

    pub fn first_start(&self) -> FirstStart {
        self.first
    }

    // ---- transitions --------------------------------------------------------

    fn enter(&mut self, phase: Phase<S, T>, reason: impl Into<String>, now_us: u64) {
        let before = self.phase.state();
        self.phase = phase;
        self.entered(before, reason, now_us);
    }

    /// Bookkeeping of a phase change from a phase shown as `before`.
    fn entered(&mut self, before: UnitState, reason: impl Into<String>, now_us: u64) {
        let state = self.phase.state();
        if state != before {
            self.since_us = now_us;
            if !matches!(state, UnitState::Starting | UnitState::Active) {
                self.status_text.clear();
            }
        }
        self.reason = reason.into();
    }

    /// Back to Waiting with a fresh start limit, unless it runs or is left
    /// out (false).
    pub fn activate(&mut self, now_us: u64) -> bool {
        if matches!(self.phase, Phase::LeftOut) || self.is_live() {
            return false;
        }
        self.history.clear();
        self.enter(Phase::Waiting, "", now_us);
        true
    }

    /// While waiting: for what.
    pub fn waiting_for(&mut self, reason: String) {
        if matches!(self.phase, Phase::Waiting) {
            self.reason = reason;
        }
    }

    /// A `requires` failed: it will not start. Returns the reason.
    pub fn dependency_failed(&mut self, dependency: &str, now_us: u64) -> String {
        let reason = format!("dependency {dependency} failed");
        self.enter(Phase::Failed, reason.clone(), now_us);
        reason
    }

    /// Its gate opened; `waited`: it had something to wait for.
    pub fn gate_opened(&mut self, waited: bool, now_us: u64) {
        if waited && self.first.waited_from_us.is_none() {
            self.first.waited_from_us = Some(now_us);
        }
    }

    /// A condition was not met.
    pub fn skip(&mut self, unmet: String, now_us: u64) {
        self.enter(Phase::Skipped, unmet, now_us);
    }

    /// A start is attempted (it counts for the start limit even if the
    /// exec fails).
    pub fn start_attempt(&mut self, now_us: u64) {
        self.starts = self.starts.saturating_add(1);
        self.history.record(now_us);
        self.status_text.clear();
    }

    /// The main process `pid` was exec'd at `exec_us`; run `id` is reached
    /// through `stop`.
    pub fn started(&mut self, id: u64, stop: S, pid: i32, exec_us: u64, now_us: u64) {
        self.exec_us = Some(exec_us);
        self.first.started_us.get_or_insert(exec_us);
        self.ready_after_us = None;
        let run = Run { id, stop, stop_sent: false, pid: Some(pid), then: Then::Decide, degraded: false };
        self.enter(Phase::Starting(run), "", now_us);
    }

    /// Readiness reached: Starting becomes Running. Returns how long after
    /// exec; `None` when it was not starting (nothing changes).
    pub fn mark_ready(&mut self, now_us: u64) -> Option<Duration> {
        if !matches!(self.phase, Phase::Starting(_)) {
            return None;
        }
        let (before, mut run) = self.take_run()?;
        run.degraded = false;
        self.phase = Phase::Running(run);
        self.entered(before, "", now_us);
        Some(self.became_ready(now_us))
    }

    /// Not ready within its start timeout, or failing its health checks,
    /// where a restart would not help (`health.on_failure = "degrade"`):
    /// marked degraded with `reason` and left running. False (nothing
    /// changes) without a run that is starting or running.
    pub fn degrade(&mut self, reason: String, now_us: u64) -> bool {
        let before = self.phase.state();
        match &mut self.phase {
            Phase::Starting(run) | Phase::Running(run) => run.degraded = true,
            _ => return false,
        }
        self.entered(before, reason, now_us);
        true
    }

    /// A degraded unit that had been ready passed a health check: active
    /// again. False when it was not degraded and running.
    pub fn recovered(&mut self, now_us: u64) -> bool {
        let before = self.phase.state();
        match &mut self.phase {
            Phase::Running(run) if run.degraded => run.degraded = false,
            _ => return false,
        }
        self.entered(before, "", now_us);
        true
    }

    fn became_ready(&mut self, now_us: u64) -> Duration {
        let after = now_us.saturating_sub(self.exec_us.unwrap_or(now_us));
        self.ready_after_us = Some(after);
        self.first.ready_us.get_or_insert(now_us);
        Duration::from_micros(after)
    }

    /// `STATUS=` from the service.
    pub fn set_status_text(&mut self, text: String) {
        self.status_text = text;
    }

    /// Takes the run out of its phase, with how the phase was shown; the
    /// phase is Inactive until the caller sets the next one.
    fn take_run(&mut self) -> Option<(UnitState, Run<S>)> {
        let before = self.phase.state();
        match std::mem::replace(&mut self.phase, Phase::Inactive) {
            Phase::Starting(run) | Phase::Running(run) | Phase::Stopping(run) => Some((before, run)),
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// Moves the run to Stopping with `reason`; false without a run.
    fn enter_stopping(&mut self, reason: &str, now_us: u64) -> bool {
        let Some((before, run)) = self.take_run() else { return false };
        self.phase = Phase::Stopping(run);
        self.entered(before, reason, now_us);
        true
    }

    /// The main process ended on its own; the rest of its group is being
    /// stopped before the run is over.
    pub fn main_exited(&mut self, status: Option<ExitStatus>, now_us: u64) {
        if let Some(run) = self.phase.run_mut() {
            run.pid = None;
        }
        self.last_exit = status.map(exit_of);
        if matches!(self.phase, Phase::Starting(_) | Phase::Running(_)) {
            self.enter_stopping("its main process ended: stopping the rest of its group", now_us);
        }
    }

    /// Asks the run to stop (once: a later request finds it asked, and the
    /// first request's `whole_group` holds) and marks it Stopping with
    /// `reason`. False: no run.
    pub fn request_stop(&mut self, whole_group: bool, reason: &str, now_us: u64) -> bool {
        let Some(run) = self.phase.run_mut() else { return false };
        if !run.stop_sent {
            run.stop_sent = true;
            if run.then == Then::Restart {
                run.stop.request_stop(whole_group);
            } else {
                run.stop.request_final_stop(whole_group);
            }
        }
        self.enter_stopping(reason, now_us)
    }

    fn set_then(&mut self, then: Then) {
        if let Some(run) = self.phase.run_mut() {
            run.then = then;
        }
    }

    /// `start` (or `restart`) asked for a unit that is not left out. A run
    /// on its way to stopping for good (or, `restart`, any run) is stopped
    /// to start again. True: it is idle and is to be activated.
    pub fn start_requested(&mut self, restart: bool, kill_group: bool, now_us: u64) -> bool {
        if let Some(run) = self.run() {
            // A unit on its way out of the plan (reload) is not restarted.
            let again = match run.then {
                Then::Decide => restart,
                Then::Stop => true,
                Then::Restart | Then::Retire(_) => false,
            };
            if again {
                self.set_then(Then::Restart);
                self.request_stop(kill_group, "restarting", now_us);
            }
            return false;
        }
        matches!(self.state(), UnitState::Inactive | UnitState::Failed | UnitState::Skipped)
            || (restart && matches!(self.state(), UnitState::Active | UnitState::Restarting))
    }

    /// `stop` asked: a run is stopped for good (one being removed stays
    /// removed); anything else becomes Inactive at once. A left-out unit
    /// stays as it is.
    pub fn stop_requested(&mut self, whole_group: bool, now_us: u64) {
        if matches!(self.phase, Phase::LeftOut) {
            return;
        }
        if self.is_live() {
            if !self.is_retiring() {
                self.set_then(Then::Stop);
            }
            self.request_stop(whole_group, "stopping", now_us);
        } else {
            self.enter(Phase::Inactive, "stopped", now_us);
        }
    }

    /// A reload removed it. A run is stopped (whole group) and the unit
    /// retired once it is over; without a run (false) the shell retires it
    /// at once.
    pub fn removed(&mut self, left_out: Option<String>, now_us: u64) -> bool {
        if !self.is_live() {
            return false;
        }
        self.set_then(Then::Retire(left_out));
        self.request_stop(true, "removed from the units", now_us)
    }

    /// A reload kept it; `changed`: with a new definition. A run being
    /// removed is started again once over; a run of a changed unit is
    /// stopped to start with the new definition. True: not running and
    /// changed, to be activated.
    pub fn kept(&mut self, changed: bool, kill_group: bool, now_us: u64) -> bool {
        match self.run().map(|r| r.then.clone()) {
            Some(Then::Retire(_)) => self.set_then(Then::Restart),
            Some(then) if changed && then != Then::Stop => {
                self.set_then(Then::Restart);
                self.request_stop(kill_group, "restarting with its new definition", now_us);
            }
            Some(_) => {}
            None => return changed && self.state() != UnitState::Inactive,
        }
        false
    }

    /// Gone from the plan and not running: left out with a reason, or
    /// Inactive ("removed") for the shell to drop.
    pub fn retire(&mut self, left_out: Option<String>, now_us: u64) {
        match left_out {
            Some(r) => self.enter(Phase::LeftOut, r, now_us),
            None => self.enter(Phase::Inactive, "removed", now_us),
        }
    }

    /// Shutdown began: what waits to start (or restart) will not.
    pub fn shutdown_begun(&mut self, now_us: u64) {
        if matches!(self.phase, Phase::Waiting | Phase::Restarting(_)) {
            self.enter(Phase::Inactive, "not started: shutdown", now_us);
        }
    }

    /// Shutdown: nothing of it runs any more.
    pub fn stopped_for_shutdown(&mut self, now_us: u64) {
        if !matches!(self.phase, Phase::LeftOut | Phase::Inactive) {
            self.enter(Phase::Inactive, "stopped (shutdown)", now_us);
        }
    }

    /// The run is over. Enters what follows (the run's [`Then`], or for
    /// one that ended on its own the [`decide`]d phase; `schedule` makes
    /// the restart timer) and returns what the shell does next and what
    /// to journal; `None` when no run was under way.
    pub fn run_ended(
        &mut self,
        outcome: &Outcome,
        policy: Policy,
        shutting_down: bool,
        now_us: u64,
        schedule: impl FnOnce(Duration) -> T,
    ) -> Option<(AfterRun, String)> {
        let (before, run) = self.take_run()?;
        if let Some(s) = outcome.exit {
            self.last_exit = Some(exit_of(s));
        }
        let what = outcome.describe(policy.kind);
        let (phase, reason, after, note) = match run.then {
            _ if shutting_down => (
                Phase::Inactive,
                "stopped (shutdown)".into(),
                AfterRun::Shutdown,
                format!("stopped for shutdown: {what}"),
            ),
            Then::Stop => (Phase::Inactive, "stopped".into(), AfterRun::Stopped, format!("stopped: {what}")),
            Then::Restart => {
                self.history.clear();
                (Phase::Waiting, String::new(), AfterRun::Restart, format!("stopped for a restart: {what}"))
            }
            Then::Retire(left_out) => {
                let note = format!("stopped: removed from the units: {what}");
                match left_out {
                    Some(r) => (Phase::LeftOut, r.clone(), AfterRun::Retire(Some(r)), note),
                    None => (Phase::Inactive, "removed".into(), AfterRun::Retire(None), note),
                }
            }
            Then::Decide => return Some((AfterRun::Decided, self.apply(before, outcome, policy, now_us, schedule))),
        };
        self.phase = phase;
        self.entered(before, reason, now_us);
        Some((after, note))
    }

    /// The exec failed: decided as a run that ended at once. Returns what
    /// to journal.
    pub fn spawn_failed(
        &mut self,
        error: String,
        policy: Policy,
        now_us: u64,
        schedule: impl FnOnce(Duration) -> T,
    ) -> [String; 2] {
        let outcome = Outcome { exit: None, cause: Cause::SpawnFailed(error), was_ready: false };
        let before = self.phase.state();
        [outcome.describe(policy.kind), self.apply(before, &outcome, policy, now_us, schedule)]
    }

    /// Enters the [`decide`]d phase (the phase was shown as `before`);
    /// returns what to journal.
    fn apply(
        &mut self,
        before: UnitState,
        outcome: &Outcome,
        policy: Policy,
        now_us: u64,
        schedule: impl FnOnce(Duration) -> T,
    ) -> String {
        let decision = decide(policy.kind, &policy.restart, outcome, &self.history, now_us);
        self.history.forget_older(policy.restart.start_limit_interval, now_us);
        let (phase, reason, note) = match decision {
            Decision::Done => {
                let after = self.became_ready(now_us);
                (Phase::Done, String::new(), format!("done: exit status 0 after {}", human(after)))
            }
            Decision::Inactive(what) => (Phase::Inactive, what.clone(), what),
            Decision::Failed(why) => (Phase::Failed, why.clone(), format!("failed: {why}")),
            Decision::Restart { delay, reason } => (Phase::Restarting(schedule(delay)), reason.clone(), reason),
        };
        self.phase = phase;
        self.entered(before, reason, now_us);
        note
    }
}

#[cfg(test)]
mod tests;
