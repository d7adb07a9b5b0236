//! The one place in PID1 that waits for children.
//!
//! Every orphan on the machine becomes a child of PID1, so PID1 must reap
//! whatever exits; and a `waitpid(-1)` reaps *any* child, so nobody else in
//! this process may wait for a specific one or it would race the reaper and
//! get ECHILD. Code that starts a child registers a waiter here, and the
//! reaper delivers that child's exit status to it.
//!
//! Spawning and reaping exclude each other: a child cannot be reaped between
//! fork and the registration of its waiter, however fast it exits. Spawns
//! do not exclude each other: a spawn lasts until the child's exec is done
//! (std waits for it, to report a failed exec as an error), which from a
//! cold page cache can take a tenth of a second, and the service manager
//! starts the units that become startable together at once. A pass asked
//! for while spawns run is left to the last of them (see [`SpawnGate`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::process::Command;
use std::sync::{mpsc, Condvar, Mutex, MutexGuard, PoisonError};

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
    /// Keeps spawns and reaping passes apart.
    gate: SpawnGate,
    waiters: Mutex<BTreeMap<i32, Waiter>>,
}

/// Lets any number of spawns run together, or one reaping pass alone,
/// and never makes a reaping pass wait.
///
/// A spawn waits only for a pass that is running (a few `waitpid`s). A
/// pass asked for while spawns are in progress is not waited for: it is
/// noted, and the last spawn to finish runs it; one asked for while a pass
/// runs makes that pass go round once more. So PID1's event loop never
/// blocks behind a pass of spawns, and a pending pass never holds up the
/// next unit's spawn behind the execs before it (what a writer-preferring
/// `RwLock` does).
struct SpawnGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

struct GateState {
    spawns: usize,
    reaping: bool,
    /// A pass was asked for that could not run at once.
    wanted: bool,
}

impl SpawnGate {
    const fn new() -> SpawnGate {
        SpawnGate { state: Mutex::new(GateState { spawns: 0, reaping: false, wanted: false }), changed: Condvar::new() }
    }

    fn state(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enter_spawn(&self) {
        let mut state = self.state();
        while state.reaping {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.spawns += 1;
    }

    /// True when this was the last spawn and a pass was asked for
    /// meanwhile: the caller now holds the pass and must run it.
    fn leave_spawn(&self) -> bool {
        let mut state = self.state();
        state.spawns = state.spawns.saturating_sub(1);
        if state.spawns == 0 && state.wanted {
            state.wanted = false;
            state.reaping = true;
            return true;
        }
        false
    }

    /// True when the caller holds the pass; false when it was left to the
    /// spawns in progress or to the pass running.
    fn enter_reap(&self) -> bool {
        let mut state = self.state();
        if state.reaping || state.spawns > 0 {
            state.wanted = true;
            return false;
        }
        state.reaping = true;
        true
    }

    /// True when another pass was asked for meanwhile: the caller still
    /// holds the pass and must go round again.
    fn leave_reap(&self) -> bool {
        let mut state = self.state();
        if state.wanted {
            state.wanted = false;
            return true;
        }
        state.reaping = false;
        drop(state);
        self.changed.notify_all();
        false
    }
}

/// A spawn in progress; dropping it ends it, and runs the reaping pass
/// that was left to it.
struct SpawnPass<'a> {
    reaper: &'a Reaper,
}

impl Drop for SpawnPass<'_> {
    fn drop(&mut self) {
        if self.reaper.gate.leave_spawn() {
            self.reaper.reap_held();
        }
    }
}

static GLOBAL: Reaper = Reaper::new();

impl Default for Reaper {
    fn default() -> Self {
        Self::new()
    }
}

impl Reaper {
    pub const fn new() -> Reaper {
        Reaper { gate: SpawnGate::new(), waiters: Mutex::new(BTreeMap::new()) }
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
        // std waits for the child itself only when exec fails, inside
        // spawn(); until the waiter is registered, the reaper must not run
        // or it could take that child, or this one before it has a waiter.
        self.gate.enter_spawn();
        let _spawning = SpawnPass { reaper: self };
        let child = cmd.spawn()?;
        let pid =
            i32::try_from(child.id()).map_err(|_| io::Error::other(format!("pid {} out of range", child.id())))?;
        self.lock().insert(pid, Box::new(on_exit));
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
    /// the statuses. While spawns are in progress it returns at once (with
    /// `children_left`) and the last of them reaps when it is done.
    pub fn reap(&self) -> Reaped {
        if !self.gate.enter_reap() {
            return Reaped { children_left: true, ..Reaped::default() };
        }
        self.reap_held()
    }

    /// The reaping pass, the gate's pass held: round again as long as
    /// another was asked for meanwhile, then let go of it.
    fn reap_held(&self) -> Reaped {
        let mut out = Reaped::default();
        loop {
            let pass = self.reap_once();
            out.delivered += pass.delivered;
            out.unclaimed += pass.unclaimed;
            out.children_left = pass.children_left;
            if !self.gate.leave_reap() {
                return out;
            }
        }
    }

    fn reap_once(&self) -> Reaped {
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

    /// Spawns, on a thread, a child that sleeps `secs` between fork and
    /// exec, and returns once the child is past its fork: the spawn then
    /// lasts `secs` more. The thread's result is the spawn's.
    fn spawn_slow_exec(secs: u64) -> std::thread::JoinHandle<io::Result<(i32, oneshot::Receiver<ExitStatus>)>> {
        use std::io::{Read, Write};
        use std::os::unix::process::CommandExt;
        let (read, write) = nix::unistd::pipe().unwrap();
        let write = std::fs::File::from(write);
        let mut cmd = Command::new("true");
        // SAFETY: the closure only calls write and nanosleep, which are
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                (&write).write_all(b"f")?;
                std::thread::sleep(Duration::from_secs(secs));
                Ok(())
            })
        };
        let thread = std::thread::spawn(move || Reaper::global().spawn_async(&mut cmd));
        let mut forked = [0u8; 1];
        std::fs::File::from(read).read_exact(&mut forked).unwrap();
        thread
    }

    #[test]
    fn a_spawn_waiting_for_its_childs_exec_does_not_hold_up_another() {
        let slow = spawn_slow_exec(2);
        let (_, mut quick) = Reaper::global().spawn_async(&mut Command::new("true")).unwrap();
        assert!(!slow.is_finished(), "the second spawn waited for the first one's exec");
        let (_, mut slow_rx) = slow.join().unwrap().unwrap();
        let (mut a, mut b) = (None, None);
        pump_until(|| {
            a = a.or(quick.try_recv().ok());
            b = b.or(slow_rx.try_recv().ok());
            a.is_some() && b.is_some()
        });
        assert_eq!((a, b), (Some(ExitStatus::Exited(0)), Some(ExitStatus::Exited(0))));
    }

    #[test]
    fn a_reaping_pass_during_a_spawn_returns_at_once_and_the_spawn_reaps_after() {
        let slow = spawn_slow_exec(2);
        // A child that exits while the slow spawn is still in progress.
        let (_, mut quick) = Reaper::global().spawn_async(&mut Command::new("true")).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let asked = Instant::now();
        let reaped = Reaper::global().reap();
        assert!(asked.elapsed() < Duration::from_secs(1), "the pass waited {:?} for the spawn", asked.elapsed());
        assert!(reaped.children_left);
        assert!(!slow.is_finished());
        // This test reaps no more: the slow spawn does once it is done (or
        // another test's pass, running beside this one).
        let (_, mut slow_rx) = slow.join().unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut status = None;
        while status.is_none() && Instant::now() < deadline {
            status = quick.try_recv().ok();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(status, Some(ExitStatus::Exited(0)));
        pump_until(|| slow_rx.try_recv().is_ok());
    }

    #[test]
    fn a_missing_program_is_an_error_not_a_stuck_waiter() {
        let err = Reaper::global().spawn_async(&mut Command::new("/nonexistent/berth-test")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
