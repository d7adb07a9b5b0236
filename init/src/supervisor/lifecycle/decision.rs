//! The run's outcome and [`decide`]: what follows a run that ended on
//! its own, from the restart policy, the outcome, the start history and
//! the time. Pure: no clock, no processes.

use std::collections::VecDeque;
use std::time::Duration;

use super::super::human;
use crate::reaper::ExitStatus;
use crate::status::Exit;
use crate::unit::{Kind, Restart, RestartPolicy};

/// How a run of a unit's main process ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// How the main process ended; `None` when it never started or its
    /// status was lost.
    pub exit: Option<ExitStatus>,
    pub cause: Cause,
    /// It had become ready during this run.
    pub was_ready: bool,
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The main process ended on its own.
    Exited,
    /// Not ready within start_timeout; stopped.
    StartTimeout(Duration),
    /// Too many failed health checks in a row; stopped.
    HealthFailed(String),
    /// Stopped on request.
    Stopped,
    /// Could not be started at all.
    SpawnFailed(String),
    /// The main process exited 0 on its own but left processes of the
    /// unit running: the program put itself in the background. Says what
    /// it left ("it left 1 process running (...): ..."). Never restarted.
    Daemonized(String),
}

impl Outcome {
    /// The main process exited on its own with status 0.
    fn clean_exit(&self) -> bool {
        self.cause == Cause::Exited && self.exit.is_some_and(ExitStatus::success)
    }

    /// What happened, as reasons and the journal say it: "exit status 1
    /// before it was ready", "not ready within 5s".
    pub fn describe(&self, kind: Kind) -> String {
        let exit = || match self.exit {
            Some(s) => s.to_string(),
            None => "ended (status unknown)".to_owned(),
        };
        match &self.cause {
            Cause::Exited if self.was_ready || kind == Kind::Oneshot => exit(),
            Cause::Exited => format!("{} before it was ready", exit()),
            Cause::StartTimeout(d) => format!("not ready within {}", human(*d)),
            Cause::HealthFailed(r) => r.clone(),
            Cause::Stopped => "stopped".to_owned(),
            Cause::SpawnFailed(e) => format!("cannot start: {e}"),
            Cause::Daemonized(left) => format!("{}, but {left}", exit()),
        }
    }
}

pub(crate) fn exit_of(s: ExitStatus) -> Exit {
    match s {
        ExitStatus::Exited(c) => Exit::Code(c),
        ExitStatus::Signaled(s) => Exit::Signal(s),
    }
}

/// What of a unit's definition [`decide`] reads: its kind and `[restart]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub kind: Kind,
    pub restart: Restart,
}

/// Start times (CLOCK_MONOTONIC µs) of a unit's recent starts.
#[derive(Debug, Default, Clone)]
pub(crate) struct StartHistory(VecDeque<u64>);

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl StartHistory {
    pub fn record(&mut self, now_us: u64) {
        self.0.push_back(now_us);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// How many starts were less than `interval` before `now_us`.
    pub fn within(&self, interval: Duration, now_us: u64) -> u32 {
        let n = self.0.iter().filter(|&&t| now_us.saturating_sub(t) < micros(interval)).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Forgets the starts `interval` or more before `now_us`.
    pub fn forget_older(&mut self, interval: Duration, now_us: u64) {
        self.0.retain(|&t| now_us.saturating_sub(t) < micros(interval));
    }
}

/// What follows a run that ended on its own (or by a timeout, failed
/// health checks or a spawn error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A oneshot exited 0: active, its work done.
    Done,
    /// Stays stopped, with why.
    Inactive(String),
    /// Gives up, with why.
    Failed(String),
    /// Starts again after `delay`.
    Restart { delay: Duration, reason: String },
}

/// What follows a run: from the unit's `kind`, its `[restart]` table, how
/// the run ended and the starts within start_limit_interval before `now_us`.
pub(crate) fn decide(
    kind: Kind,
    restart: &Restart,
    outcome: &Outcome,
    history: &StartHistory,
    now_us: u64,
) -> Decision {
    let what = outcome.describe(kind);
    // A restart would start a second copy beside the first one's
    // processes, or the same failure again: neither helps.
    if let Cause::Daemonized(_) = outcome.cause {
        return Decision::Failed(what);
    }
    let clean_exit = outcome.clean_exit();
    if kind == Kind::Oneshot && clean_exit {
        return Decision::Done;
    }
    let failure = !(clean_exit && outcome.was_ready);
    if !failure && restart.policy != RestartPolicy::Always {
        return Decision::Inactive(what);
    }
    if failure && restart.policy == RestartPolicy::Never {
        return Decision::Failed(what);
    }
    let n = history.within(restart.start_limit_interval, now_us);
    if n >= restart.start_limit {
        let interval = human(restart.start_limit_interval);
        return Decision::Failed(format!("start limit hit: {n} starts within {interval}; last: {what}"));
    }
    let delay = restart.backoff(n.max(1));
    Decision::Restart { delay, reason: format!("restart in {} after: {what}", human(delay)) }
}
