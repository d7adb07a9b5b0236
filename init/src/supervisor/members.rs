//! A unit's processes as a whole: its cgroup, or without cgroups (the
//! manager run unprivileged) the sessions its runs were started in. With
//! cgroups nothing escapes; without, a process that calls setsid() itself
//! does.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::cgroup::Group;

/// How often a group is looked at while waiting for it to empty.
pub(crate) const POLL: Duration = Duration::from_millis(20);
/// How long the kernel gets to tear a group down after SIGKILL.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(5);

/// `now + d`, without the panic of `+` for a duration too long to add (a
/// unit file may say "1000000h"): such a deadline is 30 years away.
pub(crate) fn deadline_in(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).or_else(|| now.checked_add(Duration::from_secs(30 * 365 * 86_400))).unwrap_or(now)
}

/// Without cgroups: the process groups (one session per run, its id the
/// run's main pid) that may still have members, shared by the manager and
/// the runners. A group seen empty is dropped for good at once: its id
/// may then be reused by an unrelated process, which must never be
/// signalled (the kernel does not reuse an id while a group still has it).
#[derive(Clone, Debug, Default)]
pub(crate) struct Sessions(Arc<Mutex<Vec<i32>>>);

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Vec<i32>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn push(&self, pgid: i32) {
        self.lock().push(pgid);
    }

    /// The groups that still have members.
    fn live(&self) -> Vec<i32> {
        let mut groups = self.lock();
        groups.retain(|&p| kill(Pid::from_raw(-p), None) != Err(Errno::ESRCH));
        groups.clone()
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Members {
    Cgroup(Group),
    Sessions(Sessions),
}

impl Members {
    pub fn signal(&self, sig: Signal) {
        match self {
            Members::Cgroup(g) => {
                let _ = g.signal(sig);
            }
            Members::Sessions(s) => {
                for p in s.live() {
                    let _ = kill(Pid::from_raw(-p), sig);
                }
            }
        }
    }

    /// SIGKILL to all of them.
    pub fn kill(&self) -> Result<(), String> {
        match self {
            Members::Cgroup(g) => g.kill().map_err(|e| e.to_string()),
            Members::Sessions(_) => {
                self.signal(Signal::SIGKILL);
                Ok(())
            }
        }
    }

    /// The processes left that have not ended (zombies, which the reaper
    /// takes soon, aside). Without cgroups: those of the runs' sessions.
    pub fn live_pids(&self) -> Vec<i32> {
        let pids = match self {
            Members::Cgroup(g) => g.pids().unwrap_or_default(),
            Members::Sessions(s) => in_sessions(&s.live()),
        };
        pids.into_iter().filter(|&p| proc_stat(p).is_some_and(|st| st.state != 'Z')).collect()
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Members::Cgroup(g) => g.is_empty(),
            Members::Sessions(s) => s.live().is_empty(),
        }
    }

    /// Waits until no process is left or `deadline`; true when empty.
    pub async fn wait_empty(&self, deadline: Instant) -> bool {
        loop {
            if self.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Stops every process: `sig`, up to `timeout` for them to go, then
    /// SIGKILL and up to [`KILL_WAIT`]. `Err` says what is left.
    pub async fn clear(&self, sig: Signal, timeout: Duration) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        self.signal(sig);
        // A stopped process only sees the signal once continued.
        self.signal(Signal::SIGCONT);
        if self.wait_empty(deadline_in(timeout)).await {
            return Ok(());
        }
        self.kill()?;
        if self.wait_empty(deadline_in(KILL_WAIT)).await {
            Ok(())
        } else {
            Err(format!("processes are left {} s after SIGKILL", KILL_WAIT.as_secs()))
        }
    }
}

/// What `/proc/<pid>/stat` says of a process that this module needs.
struct ProcStat {
    state: char,
    session: i32,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses (which may hold anything):
    // state, ppid, pgrp, session.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let session = fields.nth(2)?.parse().ok()?;
    Some(ProcStat { state, session })
}

/// Every process whose session is one of `sessions`.
fn in_sessions(sessions: &[i32]) -> Vec<i32> {
    if sessions.is_empty() {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&p| proc_stat(p).is_some_and(|st| sessions.contains(&st.session)))
        .collect()
}

/// A process as the journal names it: `pid 812: /usr/sbin/food --port 80`
/// (its command line, else its name, at most 80 characters).
pub(crate) fn describe_process(pid: i32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut text = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_owned();
    if text.is_empty() {
        text = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned();
    }
    if text.chars().count() > 80 {
        text = text.chars().take(77).collect::<String>() + "...";
    }
    format!("pid {pid}: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_found_by_session_and_named_by_their_command_line() {
        let me = i32::try_from(std::process::id()).unwrap();
        let st = proc_stat(me).unwrap();
        assert_ne!(st.state, 'Z');
        assert!(in_sessions(&[st.session]).contains(&me));
        assert!(in_sessions(&[]).is_empty());
        let named = describe_process(me);
        assert!(named.starts_with(&format!("pid {me}: ")), "{named}");
        assert!(named.chars().count() <= 80 + format!("pid {me}: ").len(), "{named}");
    }
}
