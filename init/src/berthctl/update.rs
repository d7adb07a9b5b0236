//! `berthctl update ...`: the client of the updater's API
//! (`org.berth.Updater1`, see `berth_updater::daemon::api`) and what
//! berthctl prints of its answers. The rendering is pure and tested
//! without a daemon; `src/bin/berthctl.rs` only wires.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use berth_dbus::{ClientError, Peer, UPDATER};
use berth_updater::boot_entry::EntryName;
use berth_updater::daemon::wire::{WireCandidate, WireInstalled, WireSlot, WireStatus};
use zbus::export::futures_core::Stream;

/// The deadline of `status`, `rollback` and `check`.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// The deadline of an install (a slow download of a large bundle).
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// One `Progress(s step, t done, t total)` signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub step: String,
    pub done: u64,
    pub total: u64,
}

/// A connection to berth-updater.
#[derive(Clone, Debug)]
pub struct UpdateClient {
    peer: Peer,
}

impl UpdateClient {
    pub async fn connect(socket: &Path) -> Result<UpdateClient, ClientError> {
        Ok(UpdateClient { peer: Peer::connect(socket, UPDATER, TIMEOUT).await? })
    }

    pub async fn status(&self) -> Result<WireStatus, ClientError> {
        self.peer.call("Status", &(), TIMEOUT).await
    }

    pub async fn rollback(&self) -> Result<WireSlot, ClientError> {
        self.peer.call("Rollback", &(), TIMEOUT).await
    }

    /// `url` "" = the configured source.
    pub async fn check(&self, url: &str) -> Result<WireCandidate, ClientError> {
        self.peer.call("Check", &(url,), TIMEOUT).await
    }

    /// Installs from `source` (a path as the daemon sees it, or a URL);
    /// `progress` gets every Progress signal while it runs.
    pub async fn install(
        &self,
        source: &str,
        force: bool,
        mut progress: impl FnMut(Progress),
    ) -> Result<WireInstalled, ClientError> {
        let mut signals = zbus::MessageStream::from(self.peer.connection());
        let args = (source, force);
        let call = self.peer.call::<_, WireInstalled>("Install", &args, INSTALL_TIMEOUT);
        tokio::pin!(call);
        loop {
            tokio::select! {
                result = &mut call => return result,
                Some(Ok(msg)) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut signals).poll_next(cx)) => {
                    let header = msg.header();
                    let is_progress = header.message_type() == zbus::message::Type::Signal
                        && header.member().is_some_and(|m| m.as_str() == "Progress");
                    if is_progress {
                        if let Ok((step, done, total)) = msg.body().deserialize::<(String, u64, u64)>() {
                            progress(Progress { step, done, total });
                        }
                    }
                }
            }
        }
    }
}

/// The progress bar of an install on stderr (hidden when stderr is not a
/// terminal): the step, a bar, percent and MiB/s, one bar per step.
pub struct Bar {
    bar: Option<indicatif::ProgressBar>,
    step: String,
}

impl Default for Bar {
    fn default() -> Bar {
        Bar::new()
    }
}

impl Bar {
    /// The template: step, bar, percent, bytes and MiB/s.
    pub const TEMPLATE: &'static str =
        "{msg:<14} [{bar:30}] {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}";

    pub fn new() -> Bar {
        Bar { bar: None, step: String::new() }
    }

    /// Shows one Progress signal.
    pub fn show(&mut self, p: &Progress) {
        if p.step != self.step {
            if let Some(old) = self.bar.take() {
                old.finish();
            }
            let bar = indicatif::ProgressBar::new(p.total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(Self::TEMPLATE) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(p.step.clone());
            self.bar = Some(bar);
            self.step.clone_from(&p.step);
        }
        if let Some(bar) = &self.bar {
            bar.set_length(p.total);
            bar.set_position(p.done);
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

fn time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// What a boot counter in an entry's name means.
pub fn counter(entry: &str) -> String {
    match EntryName::parse(entry) {
        Err(_) => String::new(),
        Ok(n) => match (n.tries_left, n.tries_done.unwrap_or(0)) {
            (None, _) => "good".into(),
            (Some(0), 0) => "marked bad".into(),
            (Some(0), done) => format!("FAILED: spent its tries ({done} boots)"),
            (Some(left), done) => format!("on trial: {left} tries left, {done} done"),
        },
    }
}

fn slot_line(label: &str, s: &WireSlot) -> String {
    if s.entry.is_empty() {
        return format!("{label:<8}slot {}: no boot entry\n", s.slot);
    }
    format!("{label:<8}slot {}: {} ({}, {})\n", s.slot, s.version, s.entry, counter(&s.entry))
}

/// `berthctl update status`.
pub fn status(s: &WireStatus) -> String {
    let mut out = slot_line("booted", &s.booted);
    out += &slot_line("other", &s.other);
    let boot = if !s.bless_error.is_empty() {
        format!("NOT BLESSED: {}", s.bless_error)
    } else if s.blessed {
        if s.counted {
            "blessed (the health gate passed)".into()
        } else {
            "blessed".into()
        }
    } else if !s.gate.is_empty() {
        format!("not blessed yet: the health gate waits for {}", s.gate)
    } else {
        "not blessed yet".into()
    };
    out += &format!("boot    {boot}\n");
    for op in &s.last {
        let what = match (op.kind.as_str(), op.version.is_empty()) {
            ("install", false) => format!("install of {} into slot {}", op.version, op.slot),
            ("rollback", _) => format!("rollback to slot {}", op.slot),
            (kind, _) => kind.to_string(),
        };
        let outcome = if op.ok { "ok" } else { "FAILED" };
        out += &format!("last    {what}: {outcome} at {}: {}\n", time(op.time), op.message);
    }
    if s.failed.is_empty() {
        out += "failed  none\n";
    }
    for f in &s.failed {
        out += &format!("failed  {} (found {}): {}\n", f.version, time(f.time), f.why);
    }
    if !s.installing.is_empty() {
        out += &format!("now     installing from {}\n", s.installing);
    }
    if !s.reboot_lock.is_empty() {
        out += &format!("lock    {}\n", s.reboot_lock);
    }
    out
}

/// `berthctl update install`'s last line.
pub fn installed(i: &WireInstalled) -> String {
    format!(
        "installed {} into slot {} ({:.1} MiB); it boots at the next reboot\n",
        i.version,
        i.slot,
        i.bytes as f64 / (1024.0 * 1024.0)
    )
}

/// `berthctl update rollback`.
pub fn rolled_back(s: &WireSlot) -> String {
    format!("slot {} ({}) boots next; reboot to go there\n", s.slot, s.version)
}

/// `berthctl update check`.
pub fn candidate(c: &WireCandidate) -> String {
    let mut out = if c.available {
        format!(
            "{} is available ({:.1} MiB), booted {}: berthctl update install {}\n",
            c.version,
            c.size as f64 / (1024.0 * 1024.0),
            c.booted,
            c.url
        )
    } else {
        format!("up to date: {} is the newest version for this machine\n", c.booted)
    };
    if !c.failed_here.is_empty() {
        out += &format!("passed over (failed here): {}\n", c.failed_here.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_updater::daemon::wire::{WireFailed, WireOperation};

    fn slot(s: &str, v: &str, e: &str) -> WireSlot {
        WireSlot { slot: s.into(), version: v.into(), entry: e.into() }
    }

    #[test]
    fn status_after_a_fall_back_names_the_failed_version() {
        let s = WireStatus {
            booted: slot("b", "0.2.0", "berth-0.2.0.conf"),
            other: slot("a", "0.3.0", "berth-0.3.0+0-3.conf"),
            blessed: true,
            counted: false,
            last: vec![WireOperation {
                kind: "install".into(),
                version: "0.3.0".into(),
                slot: "a".into(),
                ok: true,
                message: "installed from /tmp/x.bundle".into(),
                time: 1_700_000_000,
            }],
            failed: vec![WireFailed {
                version: "0.3.0".into(),
                why: "its entry spent its tries".into(),
                time: 1_700_000_600,
            }],
            ..WireStatus::default()
        };
        let text = status(&s);
        assert!(text.contains("booted  slot b: 0.2.0 (berth-0.2.0.conf, good)"), "{text}");
        assert!(
            text.contains("other   slot a: 0.3.0 (berth-0.3.0+0-3.conf, FAILED: spent its tries (3 boots))"),
            "{text}"
        );
        assert!(text.contains("boot    blessed\n"), "{text}");
        assert!(text.contains("last    install of 0.3.0 into slot a: ok at 2023-11-14T22:13:20Z"), "{text}");
        assert!(text.contains("failed  0.3.0 (found 2023-11-14T22:23:20Z): its entry spent its tries"), "{text}");
    }

    #[test]
    fn a_failed_bless_is_loud_and_a_waiting_gate_says_what_for() {
        let mut s = WireStatus {
            booted: slot("a", "0.2.0", "berth-0.2.0+2-1.conf"),
            counted: true,
            bless_error: "blessing failed: the rename did not stick".into(),
            ..WireStatus::default()
        };
        let text = status(&s);
        assert!(text.contains("boot    NOT BLESSED: blessing failed: the rename did not stick"), "{text}");
        assert!(text.contains("on trial: 2 tries left, 1 done"), "{text}");
        assert!(text.contains("other   slot : no boot entry"), "{text}");
        assert!(text.contains("failed  none"), "{text}");
        s.bless_error.clear();
        s.gate = "check etcd: /usr/bin/etcdctl: exit status: 1".into();
        assert!(status(&s).contains("not blessed yet: the health gate waits for check etcd"), "{}", status(&s));
    }

    #[test]
    fn the_reboot_lock_line_says_who_holds_the_slot_and_is_absent_when_reboots_are_not_coordinated() {
        let mut s = WireStatus { booted: slot("a", "0.2.0", "berth-0.2.0.conf"), ..WireStatus::default() };
        assert!(!status(&s).contains("lock"), "{}", status(&s));
        s.reboot_lock =
            "waiting for a reboot slot (1 at once): held by host-2 (machine 0123, since 2026-12-01T10:00:00Z)".into();
        assert!(
            status(&s).contains("\nlock    waiting for a reboot slot (1 at once): held by host-2 (machine 0123, "),
            "{}",
            status(&s)
        );
    }

    #[test]
    fn counters() {
        assert_eq!(counter("berth-1.0.0.conf"), "good");
        assert_eq!(counter("berth-1.0.0+3.conf"), "on trial: 3 tries left, 0 done");
        assert_eq!(counter("berth-1.0.0+0.conf"), "marked bad");
        assert_eq!(counter("berth-1.0.0+0-3.conf"), "FAILED: spent its tries (3 boots)");
    }

    #[test]
    fn install_check_and_rollback_lines() {
        let i = WireInstalled { version: "0.2.0".into(), slot: "b".into(), bytes: 3 * 1024 * 1024 };
        assert_eq!(installed(&i), "installed 0.2.0 into slot b (3.0 MiB); it boots at the next reboot\n");
        let c = WireCandidate {
            available: true,
            version: "0.2.0".into(),
            url: "http://h/b.bundle".into(),
            size: 1 << 20,
            booted: "0.1.0".into(),
            failed_here: vec![],
        };
        assert!(candidate(&c)
            .contains("0.2.0 is available (1.0 MiB), booted 0.1.0: berthctl update install http://h/b.bundle"));
        let none = WireCandidate { booted: "0.1.0".into(), ..WireCandidate::default() };
        assert_eq!(candidate(&none), "up to date: 0.1.0 is the newest version for this machine\n");
        let skipped = WireCandidate { failed_here: vec!["0.3.0".into()], ..none };
        assert_eq!(
            candidate(&skipped),
            "up to date: 0.1.0 is the newest version for this machine\npassed over (failed here): 0.3.0\n"
        );
        assert_eq!(rolled_back(&slot("a", "0.1.0", "")), "slot a (0.1.0) boots next; reboot to go there\n");
    }
}
