//! Clean shutdown, shared by every way to ask for one (signals, the power
//! button): stop every process, flush, unmount, and only then power off or
//! reboot, so the data partition is unmounted cleanly and the next boot
//! mounts it without a check.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_layout::console::SHUTDOWN_DONE;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::Signal;

use crate::boot::watchdog::Watchdog;
use crate::log::PREFIX;
use crate::mountinfo;
use crate::power::{Action, ShutdownFlag};
use crate::reaper::Reaper;

/// How long services get to exit after SIGTERM.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long to reap after SIGKILL (the kernel still has to tear them down).
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// sync(2) can hang on a dead disk; shutdown goes on without it.
pub const SYNC_LIMIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// The machine as shutdown sees it; the fake in the tests has a clock.
pub trait ShutdownOps {
    /// Marks shutdown as started, for the boot steps still running.
    fn begin(&mut self);
    fn log(&mut self, line: String);
    fn kill_all(&mut self, sig: Signal);
    /// SIGHUP to the process group `pgid` (a session PID1 started).
    fn hangup(&mut self, pgid: i32);
    /// Reaps what exited; true while children remain.
    fn reap(&mut self) -> bool;
    fn now(&self) -> Instant;
    fn sleep(&mut self, d: Duration);
    /// sync(2), given up on after `limit`; false if it did not finish.
    fn sync(&mut self, limit: Duration) -> bool;
    /// /proc/self/mounts.
    fn mounts(&mut self) -> String;
    fn umount(&mut self, target: &str) -> nix::Result<()>;
    fn remount_ro(&mut self, target: &str) -> nix::Result<()>;
    fn detach(&mut self, target: &str) -> nix::Result<()>;
    fn flush_console(&mut self);
    /// Feeds the hardware watchdog (at each step: PID1's loop, which fed
    /// it, is busy here).
    fn feed_watchdog(&mut self);
    /// The last word to the watchdog, just before the final lines and
    /// reboot(2): left armed (fed, shutdown timeout) for a reboot, so a
    /// hung firmware or loader still resets; disarmed for a poweroff.
    fn watchdog_before_reboot(&mut self, action: Action);
    /// Only returns on failure.
    fn reboot(&mut self, action: Action) -> Errno;
}

/// What to unmount, innermost first: everything but the root and the
/// kernel's API filesystems (which hold no data and stay until the end).
pub fn unmount_plan(mounts: &str) -> Vec<String> {
    let keep = |t: &str| {
        t == "/"
            || ["/proc", "/sys", "/dev"]
                .iter()
                .any(|k| t == *k || t.strip_prefix(k).is_some_and(|r| r.starts_with('/')))
    };
    let mut plan: Vec<String> = Vec::new();
    for m in mountinfo::parse(mounts).into_iter().rev() {
        if !keep(&m.target) && !plan.contains(&m.target) {
            plan.push(m.target);
        }
    }
    plan
}

/// Waits until no children are left or `limit` passes. True if none left.
fn wait_for_children(ops: &mut dyn ShutdownOps, limit: Duration) -> bool {
    let start = ops.now();
    loop {
        if !ops.reap() {
            return true;
        }
        if ops.now().duration_since(start) >= limit {
            return false;
        }
        ops.sleep(POLL);
    }
}

fn unmount(ops: &mut dyn ShutdownOps, target: &str) {
    match ops.umount(target) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => return,
        Err(e) => ops.log(format!("{PREFIX}unmounting {target}: {e}")),
    }
    // Still in use: read-only is as good as unmounted for its
    // consistency (the journal is flushed and the filesystem marked clean).
    match ops.remount_ro(target) {
        Ok(()) => {
            ops.log(format!("{PREFIX}{target} busy: remounted read-only"));
            return;
        }
        Err(e) => ops.log(format!("{PREFIX}remounting {target} read-only: {e}")),
    }
    if let Err(e) = ops.detach(target) {
        ops.log(format!("{PREFIX}detaching {target}: {e}"));
    } else {
        ops.log(format!("{PREFIX}{target} detached; it may not be clean"));
    }
}

/// Runs the whole shutdown. Returns only if the final reboot call failed.
/// `sessions` are the terminal sessions PID1 started (the admin shell):
/// an interactive shell ignores SIGTERM and would hold shutdown up for the
/// whole grace period; a hangup is what ends it.
pub fn run(ops: &mut dyn ShutdownOps, action: Action, reason: &str, sessions: &[i32]) -> Errno {
    ops.begin();
    ops.log(format!("{PREFIX}shutting down ({reason})"));
    for pgid in sessions {
        ops.hangup(*pgid);
    }
    ops.feed_watchdog();
    ops.kill_all(Signal::SIGTERM);
    if !wait_for_children(ops, TERM_GRACE) {
        ops.log(format!("{PREFIX}processes left after {} s: sending SIGKILL", TERM_GRACE.as_secs()));
        ops.kill_all(Signal::SIGKILL);
        wait_for_children(ops, KILL_GRACE);
    }
    ops.feed_watchdog();
    if !ops.sync(SYNC_LIMIT) {
        ops.log(format!("{PREFIX}sync did not finish in {} s; going on", SYNC_LIMIT.as_secs()));
    }
    let mounts = ops.mounts();
    for target in unmount_plan(&mounts) {
        ops.feed_watchdog();
        unmount(ops, &target);
    }
    ops.feed_watchdog();
    ops.sync(SYNC_LIMIT);
    ops.watchdog_before_reboot(action);
    ops.log(SHUTDOWN_DONE.to_string());
    ops.flush_console();
    ops.reboot(action)
}

/// The real machine.
pub struct RealOps {
    /// Raised by [`ShutdownOps::begin`].
    pub flag: ShutdownFlag,
    /// The hardware watchdog, if there is one (already on its shutdown
    /// timeout: [`Watchdog::shutdown_begins`]).
    pub watchdog: Option<Watchdog>,
}

impl ShutdownOps for RealOps {
    fn begin(&mut self) {
        self.flag.raise();
    }

    fn log(&mut self, line: String) {
        crate::log::line(line);
    }

    fn kill_all(&mut self, sig: Signal) {
        // kill(-1) reaches every process but PID1 itself.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), sig);
    }

    fn hangup(&mut self, pgid: i32) {
        let group = nix::unistd::Pid::from_raw(-pgid);
        let _ = nix::sys::signal::kill(group, Signal::SIGHUP);
        // A stopped job would sit on the hangup until continued.
        let _ = nix::sys::signal::kill(group, Signal::SIGCONT);
    }

    fn reap(&mut self) -> bool {
        Reaper::global().reap().children_left
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn sync(&mut self, limit: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new().name("sync".into()).spawn(move || {
            nix::unistd::sync();
            let _ = tx.send(());
        });
        spawned.is_ok() && rx.recv_timeout(limit).is_ok()
    }

    fn mounts(&mut self) -> String {
        std::fs::read_to_string("/proc/self/mounts").unwrap_or_default()
    }

    fn umount(&mut self, target: &str) -> nix::Result<()> {
        nix::mount::umount2(target, MntFlags::empty())
    }

    fn remount_ro(&mut self, target: &str) -> nix::Result<()> {
        nix::mount::mount(None::<&str>, target, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
    }

    fn detach(&mut self, target: &str) -> nix::Result<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
    }

    fn flush_console(&mut self) {
        crate::log::flush(Duration::from_secs(2));
    }

    fn feed_watchdog(&mut self) {
        if let Some(w) = &mut self.watchdog {
            w.feed();
        }
    }

    fn watchdog_before_reboot(&mut self, action: Action) {
        if let Some(w) = self.watchdog.take() {
            crate::log::line(format!("{PREFIX}{}", w.before_reboot(action)));
        }
    }

    fn reboot(&mut self, action: Action) -> Errno {
        let mode = match action {
            Action::Poweroff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
            Action::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
        };
        match nix::sys::reboot::reboot(mode) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Records calls; a virtual clock; children that exit after a given
    /// time or only when killed.
    struct Fake {
        calls: Vec<String>,
        start: Instant,
        elapsed: Duration,
        /// Children exit this long after SIGTERM (None: they ignore it).
        exit_after_term: Option<Duration>,
        term_at: Option<Duration>,
        killed: bool,
        mounts: String,
        umount_errors: BTreeMap<String, Errno>,
        remount_errors: BTreeMap<String, Errno>,
    }

    impl Fake {
        fn new(exit_after_term: Option<Duration>) -> Fake {
            Fake {
                calls: Vec::new(),
                start: Instant::now(),
                elapsed: Duration::ZERO,
                exit_after_term,
                term_at: None,
                killed: false,
                mounts: [
                    "/dev/dm-0 / erofs ro 0 0",
                    "proc /proc proc rw 0 0",
                    "sysfs /sys sysfs rw 0 0",
                    "devtmpfs /dev devtmpfs rw 0 0",
                    "devpts /dev/pts devpts rw 0 0",
                    "tmpfs /run tmpfs rw 0 0",
                    "tmpfs /tmp tmpfs rw 0 0",
                    "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0",
                    "/dev/vda4 /var ext4 rw,noatime 0 0",
                    "overlay /etc overlay rw 0 0",
                    "overlay /var/lib/containerd/x overlay rw 0 0",
                ]
                .join("\n"),
                umount_errors: BTreeMap::new(),
                remount_errors: BTreeMap::new(),
            }
        }
        fn pos(&self, call: &str) -> usize {
            self.calls.iter().position(|c| c == call).unwrap_or_else(|| panic!("no {call:?} in {:#?}", self.calls))
        }
    }

    impl ShutdownOps for Fake {
        fn begin(&mut self) {}
        fn log(&mut self, line: String) {
            self.calls.push(format!("log {line}"));
        }
        fn kill_all(&mut self, sig: Signal) {
            self.calls.push(format!("kill {sig}"));
            match sig {
                Signal::SIGTERM => self.term_at = Some(self.elapsed),
                _ => self.killed = true,
            }
        }
        fn hangup(&mut self, pgid: i32) {
            self.calls.push(format!("hangup {pgid}"));
        }
        fn reap(&mut self) -> bool {
            let exited = self.killed
                || matches!((self.term_at, self.exit_after_term),
                    (Some(t), Some(d)) if self.elapsed >= t + d);
            !exited
        }
        fn now(&self) -> Instant {
            self.start + self.elapsed
        }
        fn sleep(&mut self, d: Duration) {
            self.elapsed += d;
        }
        fn sync(&mut self, _: Duration) -> bool {
            self.calls.push("sync".into());
            true
        }
        fn mounts(&mut self) -> String {
            self.mounts.clone()
        }
        fn umount(&mut self, t: &str) -> nix::Result<()> {
            self.calls.push(format!("umount {t}"));
            self.umount_errors.get(t).map_or(Ok(()), |e| Err(*e))
        }
        fn remount_ro(&mut self, t: &str) -> nix::Result<()> {
            self.calls.push(format!("remount-ro {t}"));
            self.remount_errors.get(t).map_or(Ok(()), |e| Err(*e))
        }
        fn detach(&mut self, t: &str) -> nix::Result<()> {
            self.calls.push(format!("detach {t}"));
            Ok(())
        }
        fn flush_console(&mut self) {
            self.calls.push("flush".into());
        }
        fn feed_watchdog(&mut self) {
            self.calls.push("feed".into());
        }
        fn watchdog_before_reboot(&mut self, action: Action) {
            self.calls.push(format!("watchdog {action:?}"));
        }
        fn reboot(&mut self, action: Action) -> Errno {
            self.calls.push(format!("reboot {action:?}"));
            Errno::EPERM
        }
    }

    #[test]
    fn unmounts_data_innermost_first_and_leaves_api_filesystems() {
        let f = Fake::new(None);
        assert_eq!(unmount_plan(&f.mounts), ["/var/lib/containerd/x", "/etc", "/var", "/tmp", "/run"]);
    }

    #[test]
    fn processes_that_exit_on_sigterm_are_not_killed() {
        let mut f = Fake::new(Some(Duration::from_secs(1)));
        let err = run(&mut f, Action::Poweroff, "SIGUSR2", &[42]);
        assert_eq!(err, Errno::EPERM);
        assert_eq!(f.calls[0], "log berth: shutting down (SIGUSR2)");
        assert!(!f.calls.contains(&"kill SIGKILL".to_string()));
        assert!(f.elapsed >= Duration::from_secs(1) && f.elapsed < TERM_GRACE);
        let order = [
            f.pos("hangup 42"),
            f.pos("kill SIGTERM"),
            f.pos("sync"),
            f.pos("umount /etc"),
            f.pos("umount /var"),
            f.calls.iter().rposition(|c| c == "sync").unwrap(),
            f.pos("watchdog Poweroff"),
            f.pos(&format!("log {SHUTDOWN_DONE}")),
            f.pos("flush"),
            f.pos("reboot Poweroff"),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{:#?}", f.calls);
    }

    #[test]
    fn stragglers_get_sigkill_after_the_grace_period() {
        let mut f = Fake::new(None);
        run(&mut f, Action::Reboot, "SIGINT", &[]);
        assert!(f.pos("kill SIGTERM") < f.pos("kill SIGKILL"));
        assert!(f.elapsed >= TERM_GRACE);
        assert!(f.pos("kill SIGKILL") < f.pos("umount /var"));
        assert_eq!(f.calls.last().unwrap(), "reboot Reboot");
    }

    #[test]
    fn the_watchdog_is_fed_at_each_step_until_just_before_reboot() {
        let mut f = Fake::new(None);
        run(&mut f, Action::Reboot, "SIGTERM", &[]);
        let feeds: Vec<usize> = (0..f.calls.len()).filter(|&i| f.calls[i] == "feed").collect();
        assert!(feeds.len() >= 4, "{:#?}", f.calls);
        assert!(feeds[0] < f.pos("kill SIGTERM"), "fed before the grace periods");
        assert!(f.pos("kill SIGKILL") < feeds[1] && feeds[1] < f.pos("sync"), "fed after them");
        let last_feed = *feeds.last().unwrap();
        assert!(f.pos("umount /run") < last_feed, "fed after the unmounts");
        let last = &f.calls[last_feed..];
        assert_eq!(last[1..], ["sync", "watchdog Reboot", &format!("log {SHUTDOWN_DONE}"), "flush", "reboot Reboot"]);
    }

    #[test]
    fn a_busy_filesystem_is_remounted_read_only_and_detached_as_last_resort() {
        let mut f = Fake::new(Some(Duration::ZERO));
        f.umount_errors.insert("/var".into(), Errno::EBUSY);
        f.umount_errors.insert("/etc".into(), Errno::EBUSY);
        f.remount_errors.insert("/etc".into(), Errno::EBUSY);
        run(&mut f, Action::Poweroff, "power button", &[]);
        assert!(f.calls.contains(&"remount-ro /var".to_string()));
        assert!(!f.calls.contains(&"detach /var".to_string()));
        assert!(f.pos("remount-ro /etc") < f.pos("detach /etc"));
        assert!(f.pos("detach /etc") < f.pos("umount /var"));
    }
}
