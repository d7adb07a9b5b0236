//! The phases of a unit's life and what a run carries through them.

use crate::status::UnitState;

/// The shell's line to a run's task: carries the one stop request.
pub(crate) trait StopSink {
    /// Asks the run to stop: `whole_group`, the whole group rather than
    /// the main process only.
    fn request_stop(&self, whole_group: bool);

    /// [`request_stop`](Self::request_stop) for a stop for good (not a
    /// restart): the unit's `exec_stop` runs first.
    fn request_final_stop(&self, whole_group: bool) {
        self.request_stop(whole_group);
    }
}

/// What to do once the current run has ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) enum Then {
    /// Per the restart policy ([`decide`](super::decide)).
    #[default]
    Decide,
    /// Stay stopped (Inactive).
    Stop,
    /// Start again, fresh start limit.
    Restart,
    /// Gone from the plan: drop the unit (`None`), or keep it as left out
    /// with this reason.
    Retire(Option<String>),
}

/// A run of the main process, from exec until its task reports it over.
#[derive(Debug)]
pub(crate) struct Run<S> {
    /// Tells this run's events from those of an earlier one.
    pub id: u64,
    pub(super) stop: S,
    pub(super) stop_sent: bool,
    /// The main process, until it has exited.
    pub(super) pid: Option<i32>,
    pub(super) then: Then,
    /// Marked degraded (shown as such while starting or running): not
    /// ready in time or failing its health checks, left running.
    pub(super) degraded: bool,
}

/// Where a unit is in its life. `S` reaches a run's task, `T` is a pending
/// restart timer (cancelled when dropped, i.e. when the phase is left).
#[derive(Debug)]
pub(crate) enum Phase<S, T> {
    /// Left out by the plan: never started (shown as failed, with why).
    LeftOut,
    /// Waiting for its gate to open.
    Waiting,
    /// Exec'd; not ready yet.
    Starting(Run<S>),
    /// Ready (shown as active).
    Running(Run<S>),
    /// Asked to stop, or its main process ended and the rest of its group
    /// is being stopped.
    Stopping(Run<S>),
    /// Failed; the timer starts it again after the backoff.
    Restarting(T),
    /// A oneshot that exited 0: its work is done (shown as active).
    Done,
    Inactive,
    Failed,
    /// A condition was not met.
    Skipped,
}

impl<S, T> Phase<S, T> {
    /// As `berthctl status` shows it.
    pub fn state(&self) -> UnitState {
        match self {
            Phase::Starting(r) | Phase::Running(r) if r.degraded => UnitState::Degraded,
            Phase::LeftOut | Phase::Failed => UnitState::Failed,
            Phase::Waiting => UnitState::Waiting,
            Phase::Starting(_) => UnitState::Starting,
            Phase::Running(_) | Phase::Done => UnitState::Active,
            Phase::Stopping(_) => UnitState::Stopping,
            Phase::Restarting(_) => UnitState::Restarting,
            Phase::Inactive => UnitState::Inactive,
            Phase::Skipped => UnitState::Skipped,
        }
    }

    pub(super) fn run(&self) -> Option<&Run<S>> {
        match self {
            Phase::Starting(r) | Phase::Running(r) | Phase::Stopping(r) => Some(r),
            _ => None,
        }
    }

    pub(super) fn run_mut(&mut self) -> Option<&mut Run<S>> {
        match self {
            Phase::Starting(r) | Phase::Running(r) | Phase::Stopping(r) => Some(r),
            _ => None,
        }
    }
}
