//! User data as PID1 runs it (issue 9): the [`Runner`] that
//! `berth_provision` runs its commands with (waiting through PID1's
//! reaper, with a timeout), the boot step's console lines, and the pure
//! decisions after a change (which units to restart). The event loop's
//! side (the boot thread, the trial timer, the control API's calls) is
//! [`crate::pid1::provision`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use berth_provision::host::{FsHost, Ran, Runner};
use berth_provision::machine::{self, BootFacts, BootOutcome, Outcome, Status};
use berth_provision::sources;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::power::ShutdownFlag;
use crate::reaper::{ExitStatus, Reaper};
use crate::spawn;
use crate::status::{UnitState, UnitStatus};

/// The output a command keeps: the last 64 KiB of stdout and stderr.
pub const MAX_OUTPUT: usize = 64 * 1024;
/// After the timeout's SIGKILL, how long to wait for the reaper's word.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// After the command exited, how long to wait for the end of its output
/// (something it left behind may hold the pipe open).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);
/// How often the wait looks at the exit status while output flows.
const POLL_SLICE: Duration = Duration::from_millis(50);

/// Runs commands for `berth_provision` through PID1's reaper (the one
/// owner of `waitpid`): never call it from the thread that reaps (PID1's
/// event loop); the boot thread and tokio's blocking pool are fine.
///
/// The command runs with PID1's clean environment ([`spawn::clean_command`]),
/// stdin on /dev/null, stdout and stderr into one pipe (the last
/// [`MAX_OUTPUT`] bytes are kept), in a process group of its own: at the
/// timeout the whole group gets SIGKILL.
pub struct ReaperRunner {
    reaper: &'static Reaper,
    shutdown: Option<ShutdownFlag>,
}

impl ReaperRunner {
    /// With the process's reaper; refuses to start anything once
    /// `shutdown` is raised.
    pub fn new(shutdown: Option<ShutdownFlag>) -> ReaperRunner {
        ReaperRunner { reaper: Reaper::global(), shutdown }
    }
}

/// The last `max` bytes of what was written.
struct Tail {
    buf: Vec<u8>,
    max: usize,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > 2 * self.max {
            let cut = self.buf.len() - self.max;
            self.buf.drain(..cut);
        }
    }

    fn text(mut self) -> String {
        if self.buf.len() > self.max {
            let cut = self.buf.len() - self.max;
            self.buf.drain(..cut);
        }
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// Reads what is there within `wait`; false at the end of the output (or
/// an error reading it).
fn read_some(pipe: &mut io::PipeReader, tail: &mut Tail, wait: Duration) -> bool {
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let ready = {
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => n > 0,
            Err(nix::errno::Errno::EINTR) => false,
            Err(_) => return false,
        }
    };
    if !ready {
        return true;
    }
    let mut chunk = [0u8; 8192];
    match pipe.read(&mut chunk) {
        Ok(0) => false,
        Ok(n) => {
            tail.push(chunk.get(..n).unwrap_or_default());
            true
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
        Err(_) => false,
    }
}

fn ran(status: ExitStatus, tail: Tail) -> Ran {
    Ran { code: status.code(), output: tail.text() }
}

impl Runner for ReaperRunner {
    fn run(&mut self, argv: &[String], timeout: Duration) -> io::Result<Ran> {
        if self.shutdown.as_ref().is_some_and(ShutdownFlag::is_raised) {
            return Err(io::Error::other("shutting down"));
        }
        let Some((program, args)) = argv.split_first() else {
            return Err(io::Error::other("empty command line"));
        };
        let (mut pipe, writer) = io::pipe()?;
        let (tx, rx) = mpsc::channel();
        let pid = {
            let mut cmd = spawn::clean_command(program);
            cmd.args(args).stdin(Stdio::null()).stderr(writer.try_clone()?).stdout(writer).process_group(0);
            self.reaper.spawn(&mut cmd, move |status| {
                let _ = tx.send(status);
            })?
            // The command, and with it this side's write ends, is dropped
            // here: the pipe ends when the child's do.
        };
        let mut tail = Tail { buf: Vec::new(), max: MAX_OUTPUT };
        // A timeout too long to add is no timeout.
        let deadline = Instant::now().checked_add(timeout);
        let mut open = true;
        loop {
            match rx.try_recv() {
                Ok(status) => {
                    // Its output until the pipe ends, or a little longer.
                    let grace = Instant::now() + OUTPUT_GRACE;
                    while open {
                        let left = grace.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        open = read_some(&mut pipe, &mut tail, left.min(POLL_SLICE));
                    }
                    return Ok(ran(status, tail));
                }
                Err(TryRecvError::Disconnected) => {
                    return Err(io::Error::other("the command's waiter was dropped without a status"));
                }
                Err(TryRecvError::Empty) => {}
            }
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                break;
            }
            if open {
                open = read_some(&mut pipe, &mut tail, left.min(POLL_SLICE));
            } else {
                match rx.recv_timeout(left.min(Duration::from_secs(3600))) {
                    Ok(status) => return Ok(ran(status, tail)),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(io::Error::other("the command's waiter was dropped without a status"));
                    }
                }
            }
        }
        // The timeout: the whole group goes.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let mut output = tail.text();
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(&format!("(killed after {})", humantime::format_duration(timeout)));
        // Reaped by the loop soon; its status says only "killed".
        let _ = rx.recv_timeout(KILL_WAIT);
        Ok(Ran { code: None, output })
    }
}

/// The boot step: finds user data and applies it, on a boot thread (it
/// runs tools through the reaper and may wait on the network for the
/// metadata service). Never fails: every problem is in the outcome.
/// Returns the outcome and its console lines.
pub fn provision_at_boot(shutdown: ShutdownFlag, machine_id: String) -> (BootOutcome, Vec<String>) {
    let mut runner = ReaperRunner::new(Some(shutdown.clone()));
    // Stage 0's module loader is done before any source is probed, fw_cfg
    // included: a NoCloud seed may be a CD-ROM behind a driver it loads,
    // user data may name those disks (bootcmd, mounts, fs_setup), and its
    // end sets kernel.modules_disabled, which must hold before any unit
    // starts. (Waiting only before the seed lookup broke the last two.)
    if let Some(waited) = crate::initrd::wait_for_modules(Duration::from_secs(10)) {
        if waited > Duration::from_millis(20) {
            crate::info!("user data: waited {} ms for the storage drivers' probing", waited.as_millis());
        }
    }
    let probed = sources::probe(&mut runner);
    let tried = probed.tried.clone();
    let mut host = FsHost { root: "/".into(), runner, set_kernel_hostname: true };
    let outcome = machine::at_boot(&mut host, probed, &BootFacts { machine_id, now: SystemTime::now() });
    let lines = boot_lines(&outcome, &tried);
    (outcome, lines)
}

/// The outcome's name, as the console, the API and `berthctl` say it.
pub fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::None => "none",
        Outcome::Applied => "applied",
        Outcome::Unchanged => "unchanged",
        Outcome::ChangedNotApplied => "changed-not-applied",
        Outcome::Rejected => "rejected",
        Outcome::Failed => "failed",
    }
}

/// The reverse of [`outcome_name`].
pub fn parse_outcome(s: &str) -> Option<Outcome> {
    [
        Outcome::None,
        Outcome::Applied,
        Outcome::Unchanged,
        Outcome::ChangedNotApplied,
        Outcome::Rejected,
        Outcome::Failed,
    ]
    .into_iter()
    .find(|o| outcome_name(o) == s)
}

fn summary_line(status: Option<&Status>, tried: &[String], probe_ms: u64) -> String {
    let what = match status {
        None | Some(Status { outcome: Outcome::None, .. }) => "none".to_string(),
        Some(s) => match &s.source {
            Some(src) => format!("{src} {}", outcome_name(&s.outcome)),
            None => outcome_name(&s.outcome).to_string(),
        },
    };
    let probed = if tried.is_empty() { String::new() } else { format!("probed {}, ", tried.join(", ")) };
    format!("user data: {what} ({probed}in {probe_ms} ms)")
}

/// The boot report's lines about user data: the outcome's own, or, when
/// it has none, one made from its status (the time spent probing, what was
/// tried) and every error and warning.
pub fn boot_lines(outcome: &BootOutcome, tried: &[String]) -> Vec<String> {
    if !outcome.lines.is_empty() {
        return outcome.lines.clone();
    }
    let s = &outcome.status;
    let mut lines = vec![summary_line(Some(s), tried, s.probe_ms)];
    lines.extend(s.errors.iter().map(|e| format!("user data: error: {e}")));
    lines.extend(s.warnings.iter().map(|w| format!("user data: warning: {w}")));
    lines
}

/// The status when the boot step could not run at all (its thread could
/// not start, or ended without a result): the machine comes up with its
/// defaults, and `berthctl status` says why.
pub fn failed_status(why: &str) -> Status {
    Status {
        outcome: Outcome::Failed,
        source: None,
        instance_id: None,
        sha256: None,
        probe_ms: 0,
        errors: vec![why.to_string()],
        warnings: vec![],
        trial_until: None,
    }
}

/// A unit whose process runs, so that a change of what it reads needs a
/// restart (a oneshot that is done is active without a process: it does
/// not run again).
pub fn is_running(s: &UnitStatus) -> bool {
    s.pid != 0 && matches!(s.state, UnitState::Starting | UnitState::Active | UnitState::Degraded)
}

/// The units a change names (`units_changed`) that a reload of the unit
/// files did not already take care of (it starts the added, stops the
/// removed and restarts the changed ones that run) and that run now: their
/// unit file is the same, what they read changed (a config file user data
/// wrote), so they are restarted. `units`: every loaded unit's status.
/// Sorted, each once.
pub fn units_to_restart(
    units_changed: &[String],
    reloaded: &crate::api::ReloadOutcome,
    units: &BTreeMap<String, UnitStatus>,
) -> Vec<String> {
    let handled: BTreeSet<&String> = reloaded.added.iter().chain(&reloaded.removed).chain(&reloaded.changed).collect();
    let mut out: BTreeSet<String> = BTreeSet::new();
    for name in units_changed {
        if handled.contains(name) {
            continue;
        }
        if units.get(name).is_some_and(is_running) {
            out.insert(name.clone());
        }
    }
    out.into_iter().collect()
}

/// Seconds since the epoch, 0 before it.
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// How long from `now` until `until` (seconds since the epoch); zero when
/// it is past.
pub fn until_epoch(until: u64, now: SystemTime) -> Duration {
    Duration::from_secs(until.saturating_sub(epoch_secs(now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::tests::pump_until;

    /// Runs through the global reaper on a helper thread while this one
    /// reaps, as PID1's loop would.
    fn run_reaped(argv: &[&str], timeout: Duration) -> (io::Result<Ran>, Duration) {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let (tx, rx) = mpsc::channel();
        let began = Instant::now();
        std::thread::spawn(move || {
            let r = ReaperRunner::new(None).run(&argv, timeout);
            let _ = tx.send((r, began.elapsed()));
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
    fn a_command_gives_its_code_and_its_output_interleaved() {
        let (r, _) = run_reaped(&["sh", "-c", "echo out; echo err >&2; exit 3"], Duration::from_secs(20));
        let r = r.unwrap();
        assert_eq!(r.code, Some(3));
        assert_eq!(r.output, "out\nerr\n");
        assert!(!r.success());
        let (r, _) = run_reaped(&["true"], Duration::from_secs(20));
        assert!(r.unwrap().success());
    }

    #[test]
    fn the_timeout_kills_the_whole_group_and_says_so() {
        // The child's child holds the pipe too: the group's SIGKILL ends both.
        let (r, took) =
            run_reaped(&["sh", "-c", "echo started; sleep 30 & sleep 30; echo never"], Duration::from_millis(500));
        let r = r.unwrap();
        assert_eq!(r.code, None);
        assert!(r.output.starts_with("started\n"), "{:?}", r.output);
        assert!(r.output.ends_with("(killed after 500ms)"), "{:?}", r.output);
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }

    #[test]
    fn output_is_bounded_keeping_the_end() {
        let (r, _) =
            run_reaped(&["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; echo END"], Duration::from_secs(20));
        let r = r.unwrap();
        assert_eq!(r.output.len(), MAX_OUTPUT);
        assert!(r.output.ends_with("xxEND\n"));
    }

    #[test]
    fn a_background_child_holding_the_pipe_does_not_hold_the_answer() {
        let (r, took) = run_reaped(&["sh", "-c", "sleep 5 & echo done"], Duration::from_secs(20));
        assert_eq!(r.unwrap().output, "done\n");
        assert!(took < Duration::from_secs(4), "took {took:?}");
    }

    #[test]
    fn a_timeout_too_long_to_add_is_none() {
        let (r, _) = run_reaped(&["sh", "-c", "exit 4"], Duration::MAX);
        assert_eq!(r.unwrap().code, Some(4));
    }

    #[test]
    fn what_cannot_start_is_an_error() {
        let mut runner = ReaperRunner::new(None);
        assert_eq!(
            runner.run(&["/nonexistent/berth".to_string()], Duration::from_secs(1)).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(runner.run(&[], Duration::from_secs(1)).is_err());
        let flag = ShutdownFlag::default();
        flag.raise();
        assert!(ReaperRunner::new(Some(flag)).run(&["true".to_string()], Duration::from_secs(1)).is_err());
    }

    fn status(outcome: Outcome) -> Status {
        Status { outcome, probe_ms: 3, ..failed_status("x") }
    }

    #[test]
    fn the_boot_lines_say_what_was_tried_and_every_problem() {
        let none =
            BootOutcome { status: Status { errors: vec![], ..status(Outcome::None) }, lines: vec![], hostname: None };
        let tried = vec!["fw_cfg: none".to_string(), "nocloud: none".to_string()];
        assert_eq!(boot_lines(&none, &tried), ["user data: none (probed fw_cfg: none, nocloud: none, in 3 ms)"]);
        assert_eq!(boot_lines(&none, &[]), ["user data: none (in 3 ms)"]);
        let rejected = BootOutcome {
            status: Status {
                source: Some("fw_cfg:opt/org.berth/user-data".into()),
                errors: vec!["fw_cfg:opt/org.berth/user-data:3: key users[0].shell: expected a string".into()],
                warnings: vec!["fw_cfg:opt/org.berth/user-data:9: key packages: not supported".into()],
                ..status(Outcome::Rejected)
            },
            lines: vec![],
            hostname: None,
        };
        assert_eq!(
            boot_lines(&rejected, &[]),
            [
                "user data: fw_cfg:opt/org.berth/user-data rejected (in 3 ms)",
                "user data: error: fw_cfg:opt/org.berth/user-data:3: key users[0].shell: expected a string",
                "user data: warning: fw_cfg:opt/org.berth/user-data:9: key packages: not supported",
            ]
        );
        let own = BootOutcome { lines: vec!["user data: mine".into()], ..rejected };
        assert_eq!(boot_lines(&own, &[]), ["user data: mine"]);
    }

    #[test]
    fn outcome_names_round_trip() {
        for o in [
            Outcome::None,
            Outcome::Applied,
            Outcome::Unchanged,
            Outcome::ChangedNotApplied,
            Outcome::Rejected,
            Outcome::Failed,
        ] {
            assert_eq!(parse_outcome(outcome_name(&o)), Some(o));
        }
        assert_eq!(parse_outcome("exploded"), None);
    }

    #[test]
    fn only_running_units_the_reload_left_alone_are_restarted() {
        let reloaded = crate::api::ReloadOutcome {
            added: vec!["user-runcmd".into()],
            removed: vec!["old".into()],
            changed: vec!["sshd".into()],
            errors: vec![],
        };
        let units: BTreeMap<String, UnitStatus> = [
            ("etcd", UnitState::Active, 10),
            ("containerd", UnitState::Starting, 11),
            ("ntp", UnitState::Failed, 0),
            ("sshd", UnitState::Active, 12),
            ("user-runcmd", UnitState::Waiting, 0),
            // A oneshot that is done: not run again.
            ("user-bootcmd", UnitState::Active, 0),
        ]
        .into_iter()
        .map(|(n, state, pid)| (n.to_string(), UnitStatus { pid, ..UnitStatus::new(n, state) }))
        .collect();
        let changed: Vec<String> =
            ["sshd", "user-runcmd", "old", "etcd", "ntp", "containerd", "etcd", "gone", "user-bootcmd"]
                .map(String::from)
                .to_vec();
        assert_eq!(units_to_restart(&changed, &reloaded, &units), ["containerd", "etcd"]);
    }

    #[test]
    fn trial_times() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(epoch_secs(t), 1000);
        assert_eq!(until_epoch(1090, t), Duration::from_secs(90));
        assert_eq!(until_epoch(900, t), Duration::ZERO);
    }
}
