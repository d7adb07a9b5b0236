//! Power actions and the conventions that ask for them, shared by PID1's
//! event loop, its shutdown, the control API and berth-init run as
//! `reboot`/`poweroff`/`halt`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a shutdown ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Poweroff,
    Reboot,
}

/// What PID1 does on each signal it handles besides SIGCHLD. The
/// convention is busybox's (its shell runs its own `reboot`, `poweroff` and
/// `halt` applets whatever PATH says): SIGTERM reboots, SIGUSR2 powers off,
/// SIGUSR1 halts (a halted VM is of no use, so it powers off). Ctrl-alt-del
/// arrives as SIGINT once PID1 has disabled the kernel's hard reboot;
/// SIGPWR is the UPS convention.
pub fn action_for_signal(sig: i32) -> Option<Action> {
    match sig {
        libc::SIGUSR1 | libc::SIGUSR2 | libc::SIGPWR => Some(Action::Poweroff),
        libc::SIGTERM | libc::SIGINT => Some(Action::Reboot),
        _ => None,
    }
}

/// `reboot`, `poweroff` and `halt` are links to berth-init: run under one
/// of those names it asks PID1 for that action with the matching signal.
pub fn signal_for_command(argv0: &str) -> Option<i32> {
    match argv0.rsplit('/').next().unwrap_or(argv0) {
        "reboot" => Some(libc::SIGTERM),
        "poweroff" => Some(libc::SIGUSR2),
        "halt" => Some(libc::SIGUSR1),
        _ => None,
    }
}

/// Whether shutdown has begun, shared by value: PID1 makes one, shutdown
/// raises it, and the boot steps still running in their threads hold a
/// clone and check it, so they do not mount or write behind shutdown's
/// back. Cheap to clone; every clone sees the same flag.
#[derive(Clone, Debug, Default)]
pub struct ShutdownFlag(Arc<AtomicBool>);

impl ShutdownFlag {
    /// Marks shutdown as begun, for every clone.
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`raise`](Self::raise) was called on any clone.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_poweroff_or_reboot() {
        assert_eq!(action_for_signal(libc::SIGTERM), Some(Action::Reboot));
        assert_eq!(action_for_signal(libc::SIGUSR2), Some(Action::Poweroff));
        assert_eq!(action_for_signal(libc::SIGPWR), Some(Action::Poweroff));
        assert_eq!(action_for_signal(libc::SIGINT), Some(Action::Reboot));
        assert_eq!(action_for_signal(libc::SIGUSR1), Some(Action::Poweroff));
        assert_eq!(action_for_signal(libc::SIGHUP), None);
        for (cmd, action) in
            [("/usr/sbin/reboot", Action::Reboot), ("poweroff", Action::Poweroff), ("halt", Action::Poweroff)]
        {
            assert_eq!(signal_for_command(cmd).and_then(action_for_signal), Some(action), "{cmd}");
        }
        assert_eq!(signal_for_command("berth-init"), None);
    }

    #[test]
    fn a_raised_flag_is_seen_by_every_clone() {
        let flag = ShutdownFlag::default();
        let seen_by_boot = flag.clone();
        assert!(!seen_by_boot.is_raised());
        flag.raise();
        assert!(seen_by_boot.is_raised());
    }
}
