//! The one place in PID1 that waits for children.
//!
//! Every orphan on the machine becomes a child of PID1, so PID1 must reap
//! whatever exits; and a `waitpid(-1)` reaps *any* child, so nobody else in
//! this process may wait for a specific one or it would race the reaper and
//! get ECHILD. Code that starts a child registers a waiter here, and the
//! reaper delivers that child's exit status to it.
//!
//! Spawning and reaping take the same lock: a child cannot be reaped between
//! fork and the registration of its waiter, however fast it exits.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::process::Command;
use std::sync::{mpsc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(c),
            ExitStatus::Signaled(_) => None,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// `None` for a stop or continue report: the child is still there.
    fn from_wait(status: rustix::process::WaitStatus) -> Option<ExitStatus> {
        match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => Some(ExitStatus::Exited(code)),
            (None, Some(sig)) => Some(ExitStatus::Signaled(sig)),
            (None, None) => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit status {c}"),
            ExitStatus::Signaled(s) => write!(f, "killed by signal {s}"),
        }
    }
}

type Waiter = Box<dyn FnOnce(ExitStatus) + Send>;

/// What one pass of [`Reaper::reap`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Statuses handed to registered waiters.
    pub delivered: usize,
    /// Children nobody waited for (orphans re-parented to PID1).
    pub unclaimed: usize,
    /// Whether children remain that have not exited yet.
    pub children_left: bool,
}

pub struct Reaper {
    waiters: Mutex<BTreeMap<i32, Waiter>>,
}

static GLOBAL: Reaper = Reaper::new();

impl Default for Reaper {
    fn default() -> Self {
        Self::new()
    }
}

impl Reaper {
    pub const fn new() -> Reaper {
        Reaper { waiters: Mutex::new(BTreeMap::new()) }
    }

    /// The process's reaper: there can only be one `waitpid(-1)` per process.
    pub fn global() -> &'static Reaper {
        &GLOBAL
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<i32, Waiter>> {
        // A panic elsewhere must not stop the reaping for good.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `cmd` and calls `on_exit` (from whichever thread reaps) with
    /// its status. Returns the pid.
    pub fn spawn(&self, cmd: &mut Command, on_exit: impl FnOnce(ExitStatus) + Send + 'static) -> io::Result<i32> {
        let mut waiters = self.lock();
        // std waits for the child itself only when exec fails, inside
        // spawn(); holding the lock keeps the reaper from taking that child.
        let child = cmd.spawn()?;
        let pid =
            i32::try_from(child.id()).map_err(|_| io::Error::other(format!("pid {} out of range", child.id())))?;
        waiters.insert(pid, Box::new(on_exit));
        // Dropping a std Child neither waits nor kills.
        drop(child);
        Ok(pid)
    }

    /// Starts `cmd`; the receiver gets its status.
    pub fn spawn_async(&self, cmd: &mut Command) -> io::Result<(i32, oneshot::Receiver<ExitStatus>)> {
        let (tx, rx) = oneshot::channel();
        let pid = self.spawn(cmd, move |status| {
            let _ = tx.send(status);
        })?;
        Ok((pid, rx))
    }

    /// Runs `cmd` to completion, blocking this thread until another thread
    /// reaps it (PID1's event loop does, on SIGCHLD). Never call it from
    /// the thread that reaps.
    pub fn run(&self, cmd: &mut Command) -> io::Result<ExitStatus> {
        let (tx, rx) = mpsc::channel();
        self.spawn(cmd, move |status| {
            let _ = tx.send(status);
        })?;
        rx.recv().map_err(|_| io::Error::other("the child's waiter was dropped without a status"))
    }

    /// Reaps every child that has exited, until none is left, and delivers
    /// the statuses.
    pub fn reap(&self) -> Reaped {
        let mut waiters = self.lock();
        let mut out = Reaped::default();
        loop {
            let (pid, status) = match rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => (pid.as_raw_nonzero().get(), status),
                Ok(None) => {
                    out.children_left = true;
                    break;
                }
                Err(rustix::io::Errno::INTR) => continue,
                // ECHILD: no children at all.
                Err(_) => break,
            };
            let Some(status) = ExitStatus::from_wait(status) else {
                continue;
            };
            match waiters.remove(&pid) {
                Some(waiter) => {
                    waiter(status);
                    out.delivered += 1;
                }
                None => out.unclaimed += 1,
            }
        }
        out
    }

    /// Pids with a registered waiter.
    pub fn watched(&self) -> Vec<i32> {
        self.lock().keys().copied().collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Reaps until `done` says so; tests have no SIGCHLD loop.
    pub(crate) fn pump_until(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out reaping");
            Reaper::global().reap();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs a command through the global reaper from a helper thread
    /// while this thread reaps, as PID1's event loop would.
    pub(crate) fn run_reaped(mut cmd: Command) -> io::Result<ExitStatus> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Reaper::global().run(&mut cmd));
        });
        let mut result = None;
        pump_until(|| {
            if let Ok(r) = rx.try_recv() {
                result = Some(r);
            }
            result.is_some()
        });
        result.unwrap()
    }

    #[test]
    fn each_waiter_gets_its_own_childs_status_while_others_exit() {
        let reaper = Reaper::global();
        // An unrelated child nobody registered: the reaper takes it too.
        let unrelated = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        drop(unrelated);
        let (_, mut ok) = reaper.spawn_async(&mut Command::new("true")).unwrap();
        let (_, mut three) = reaper.spawn_async(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        let (_, mut killed) = reaper.spawn_async(Command::new("sh").args(["-c", "kill -9 $$"])).unwrap();
        // Let them all exit before anyone reaps.
        std::thread::sleep(Duration::from_millis(200));
        let (mut a, mut b, mut c) = (None, None, None);
        pump_until(|| {
            a = a.or(ok.try_recv().ok());
            b = b.or(three.try_recv().ok());
            c = c.or(killed.try_recv().ok());
            a.is_some() && b.is_some() && c.is_some()
        });
        assert_eq!(a, Some(ExitStatus::Exited(0)));
        assert_eq!(b, Some(ExitStatus::Exited(3)));
        assert_eq!(c, Some(ExitStatus::Signaled(libc::SIGKILL)));
    }

    #[test]
    fn blocking_run_gets_status_from_the_reaping_thread() {
        let status = run_reaped({
            let mut c = Command::new("sh");
            c.args(["-c", "exit 5"]);
            c
        })
        .unwrap();
        assert_eq!(status, ExitStatus::Exited(5));
        assert_eq!(status.code(), Some(5));
        assert!(!status.success());
    }

    #[test]
    fn a_missing_program_is_an_error_not_a_stuck_waiter() {
        let err = Reaper::global().spawn_async(&mut Command::new("/nonexistent/berth-test")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
