//! Driving A/B updates in a guest as a user does, with `berthctl update`:
//! what `status` says, installing, rebooting into the result, and cutting
//! the power at a chosen point of an install. Shared by the update tests,
//! `berth-image soak` and `berth-image bench`.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::vm::Vm;

/// Where a power-cut test makes berth-updater stop for good during the
/// next install (read at the start of each install; on tmpfs, so a power
/// cut forgets it). Holds a step name of the install engine, e.g.
/// `rename-entry`, or `write-root@50` for half way through the root.
pub const PAUSE_FILE: &str = berth_layout::paths::UPDATER_PAUSE_FILE;

/// The points of an install where the power-cut tests cut: half way
/// through streaming the root, between the read-back and naming the
/// partition in the GPT, between that and the UKI, between the UKI and the
/// entry, and between the entry's temporary file and its rename.
pub const CUT_POINTS: [&str; 5] = ["write-root@50", "name-partition", "write-uki", "write-entry", "rename-entry"];

/// One slot as `berthctl update status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotStatus {
    /// `a` or `b`.
    pub slot: String,
    /// The version of its entry; empty when the slot has no boot entry.
    pub version: String,
    /// The entry's file name (`berth-0.1.1+2-1.conf`); empty without one.
    pub entry: String,
    /// What the counter means: `good`, `on trial: ...`, `marked bad`,
    /// `FAILED: ...`; empty without an entry.
    pub state: String,
}

/// `berthctl update status`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateStatus {
    pub booted: SlotStatus,
    pub other: SlotStatus,
    /// The `boot` line: `blessed`, `blessed (the health gate passed)`,
    /// `not blessed yet...`, `NOT BLESSED: why`.
    pub boot: String,
    /// Versions that failed here (`failed` lines).
    pub failed: Vec<String>,
    /// The whole text.
    pub text: String,
}

impl UpdateStatus {
    /// Parses the text of `berthctl update status`.
    pub fn parse(text: &str) -> Result<UpdateStatus> {
        let bad = |why: &str| Error::Parse(format!("berthctl update status: {why}:\n{text}"));
        let field = |label: &str| {
            text.lines().find_map(|l| l.strip_prefix(label).filter(|r| r.starts_with(' ')).map(str::trim))
        };
        let slot = |label: &str| -> Result<SlotStatus> {
            let rest = field(label).ok_or_else(|| bad(&format!("no `{label}` line")))?;
            let rest = rest.strip_prefix("slot ").ok_or_else(|| bad(&format!("`{label}` line names no slot")))?;
            let (slot, rest) = rest.split_once(": ").ok_or_else(|| bad(&format!("`{label}` line: no `: `")))?;
            if rest == "no boot entry" {
                return Ok(SlotStatus {
                    slot: slot.into(),
                    version: String::new(),
                    entry: String::new(),
                    state: String::new(),
                });
            }
            let (version, rest) = rest.split_once(" (").ok_or_else(|| bad(&format!("`{label}` line: no entry")))?;
            let rest = rest.strip_suffix(')').unwrap_or(rest);
            let (entry, state) = rest.split_once(", ").unwrap_or((rest, ""));
            Ok(SlotStatus { slot: slot.into(), version: version.into(), entry: entry.into(), state: state.into() })
        };
        let failed = text
            .lines()
            .filter_map(|l| l.strip_prefix("failed "))
            .map(str::trim)
            .filter(|r| *r != "none")
            .filter_map(|r| r.split_whitespace().next().map(str::to_string))
            .collect();
        Ok(UpdateStatus {
            booted: slot("booted")?,
            other: slot("other")?,
            boot: field("boot").ok_or_else(|| bad("no `boot` line"))?.to_string(),
            failed,
            text: text.to_string(),
        })
    }

    /// This boot is blessed (its entry has no counter any more).
    pub fn blessed(&self) -> bool {
        self.boot.starts_with("blessed")
    }
}

/// `berthctl update status` in the guest, parsed; panics when the command
/// fails (for tests and soaks, which stop on the first surprise).
#[track_caller]
pub fn status(vm: &mut Vm) -> UpdateStatus {
    let text = vm.sh_ok("berthctl update status");
    UpdateStatus::parse(&text).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `status` until this boot is blessed; fails with the last status
/// after `timeout`.
pub fn wait_blessed(vm: &mut Vm, timeout: Duration) -> Result<UpdateStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = vm.sh("berthctl update status")?;
        if out.success() {
            let s = UpdateStatus::parse(&out.output)?;
            if s.blessed() {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "this boot to be blessed".into(),
                    after: timeout,
                    context: format!("{}\n{}", out.output, vm.paths().context()),
                });
            }
        } else if Instant::now() >= deadline {
            return Err(Error::Other(format!("berthctl update status: {}", out.output)));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `berthctl update install SOURCE` (with `--force`); returns (exit
/// status, output). An install of 100 MiB under TCG takes a while: the
/// time limit is 10 minutes.
pub fn install(vm: &mut Vm, source: &str, force: bool) -> Result<(i32, String)> {
    let force = if force { " --force" } else { "" };
    let out = vm.sh_timeout(&format!("berthctl update install{force} '{source}' 2>&1"), Duration::from_secs(600))?;
    Ok((out.status, out.output))
}

/// Why an install failed, for a test's panic message: the console's
/// context first, then the last lines `berthctl update install` printed
/// (its progress bar's redraws and colours folded away) and the updater's
/// own log, so that an excerpt keeping only the end of a long failure
/// still shows the reason.
pub fn failed_install_report(vm: &mut Vm, output: &str) -> String {
    let log = match vm.sh("berthctl logs updater -n 30 2>&1") {
        Ok(out) => out.output,
        Err(e) => format!("(reading it failed: {e})"),
    };
    format!(
        "{}\n--- the last lines of `berthctl update install` ---\n{}\n--- the updater's log ---\n{log}",
        vm.paths().context(),
        last_printed_lines(output, 8)
    )
}

/// The last `n` non-empty lines of terminal output, a carriage return
/// ending a line as a newline does and ANSI escape sequences removed.
pub fn last_printed_lines(output: &str, n: usize) -> String {
    let plain = crate::vm_paths::strip_ansi(&output.replace('\r', "\n"));
    let lines: Vec<&str> = plain.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts an install that stops for good at `point` (see [`PAUSE_FILE`])
/// and waits until the updater says it paused there; the caller then cuts
/// the power.
///
/// The updater's log lives on /var and survives power cuts, so only lines
/// logged after this call count: a pause line of an earlier install (at
/// the same point, as a soak repeats them) is not taken for this one.
pub fn install_paused(vm: &mut Vm, source: &str, point: &str, timeout: Duration) -> Result<()> {
    checked(vm, &format!("echo '{point}' > {PAUSE_FILE}"))?;
    let lines_before = checked(vm, "berthctl logs updater -n 100000")?.lines().count();
    vm.sh_nowait(&format!("berthctl update install '{source}' > /run/install.log 2>&1 &"))?;
    let step = point.split('@').next().unwrap_or(point);
    let deadline = Instant::now() + timeout;
    loop {
        let all = checked(vm, "berthctl logs updater -n 100000")?;
        let log: String = all.lines().skip(lines_before).map(|l| format!("{l}\n")).collect();
        if log.contains(&format!("paused before {step}")) || log.contains(&format!("paused in {step}")) {
            return Ok(());
        }
        if log.contains("install failed") {
            return Err(Error::Other(format!("the install failed before pausing at {point}:\n{log}")));
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("the install to pause at {point}"),
                after: timeout,
                context: format!("{log}\n{}", vm.paths().context()),
            });
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The output of `cmd` in the guest; an error (not a panic: soaks go on
/// after one) unless it exits 0.
fn checked(vm: &mut Vm, cmd: &str) -> Result<String> {
    let out = vm.sh(cmd)?;
    if out.success() {
        Ok(out.output)
    } else {
        Err(Error::Other(format!("`{cmd}` exited with status {}:\n{}", out.status, out.output)))
    }
}

/// Waits until the unit `network-online` is active (DHCP done), as a user
/// does before fetching from the network.
pub fn wait_online(vm: &mut Vm, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (st, out) = vm.sh_status("berthctl status network-online >/dev/null 2>&1; echo $?");
        if st == 0 && out.trim() == "0" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: "network-online to be active".into(),
                after: timeout,
                context: vm.paths().context(),
            });
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Asks PID1 for a clean reboot (`berthctl reboot`) without waiting.
pub fn reboot(vm: &mut Vm) -> Result<()> {
    vm.sh_nowait("berthctl reboot")
}

/// The OS version the guest runs (os-release `VERSION_ID`).
pub fn running_version(vm: &mut Vm) -> Result<String> {
    let text = vm.read_file(berth_layout::paths::OS_RELEASE)?;
    berth_layout::os_release::version_id(&text)
        .ok_or_else(|| Error::Parse(format!("no VERSION_ID in {}:\n{text}", berth_layout::paths::OS_RELEASE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_printed_lines_fold_a_progress_bar() {
        let out = "\u{1b}[2K\rverify [=>  ] 10%\r\u{1b}[2Kwrite-root [==> ] 50%\r\u{1b}[2K\n\
                   berthctl: install of 1.2.0 into slot a stopped at write-root: broken pipe\n";
        assert_eq!(
            last_printed_lines(out, 2),
            "write-root [==> ] 50%\nberthctl: install of 1.2.0 into slot a stopped at write-root: broken pipe"
        );
        assert_eq!(last_printed_lines("", 3), "");
    }

    #[test]
    fn parses_status() {
        let text = "booted  slot b: 0.1.1 (berth-0.1.1+2-1.conf, on trial: 2 tries left, 1 done)\n\
                    other   slot a: 0.1.0 (berth-0.1.0.conf, good)\n\
                    boot    not blessed yet: the health gate waits for etcd\n\
                    last    install of 0.1.1 into slot b: ok at 2026-12-01T10:00:00Z: done\n\
                    failed  0.1.2 (found 2026-12-01T10:00:00Z): spent its tries\n";
        let s = UpdateStatus::parse(text).unwrap();
        assert_eq!(s.booted.slot, "b");
        assert_eq!(s.booted.version, "0.1.1");
        assert_eq!(s.booted.entry, "berth-0.1.1+2-1.conf");
        assert!(s.booted.state.starts_with("on trial"));
        assert_eq!(s.other.state, "good");
        assert!(!s.blessed());
        assert_eq!(s.failed, ["0.1.2"]);

        let text = "booted  slot a: 0.1.0 (berth-0.1.0.conf, good)\nother   slot b: no boot entry\nboot    blessed\nfailed  none\n";
        let s = UpdateStatus::parse(text).unwrap();
        assert!(s.blessed());
        assert_eq!(s.other.entry, "");
        assert!(s.failed.is_empty());
        assert!(UpdateStatus::parse("nonsense").is_err());
    }
}
