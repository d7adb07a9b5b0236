//! The admin shell on the hypervisor console.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::reaper::{ExitStatus, Reaper};
use crate::spawn;

/// A shell that exits at once (no one on the console, a broken profile)
/// must not turn PID1 into a fork loop.
pub const RESPAWN_INTERVAL: Duration = Duration::from_secs(1);

/// When the next shell may start, given when the last one did.
pub fn next_start(last_start: Option<Instant>, now: Instant) -> Instant {
    match last_start {
        Some(last) => now.max(last + RESPAWN_INTERVAL),
        None => now,
    }
}

/// Starts `shell` on `console`; the receiver gets its exit status.
pub fn start(reaper: &Reaper, console: &Path, shell: &str) -> io::Result<(i32, oneshot::Receiver<ExitStatus>)> {
    let tty = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(console)?;
    let mut cmd = spawn::shell_command(shell, &tty)?;
    reaper.spawn_async(&mut cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respawn_waits_a_second_after_the_last_start() {
        let t0 = Instant::now();
        assert_eq!(next_start(None, t0), t0);
        assert_eq!(next_start(Some(t0), t0 + Duration::from_millis(100)), t0 + RESPAWN_INTERVAL);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(next_start(Some(t0), later), later);
    }
}
