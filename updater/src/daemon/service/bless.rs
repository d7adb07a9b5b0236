//! The bless of a counted boot (systemd's Automatic Boot Assessment): at
//! start, the health gate (PID1 ready with no failed unit, then every
//! `[[gate.check]]` of the settings), then the boot counter removed from
//! the booted entry and read back from the ESP, with the reboot lock's slot
//! re-attached meanwhile and released once blessed.

use super::{blocking, lock, now, say, Bless, Daemon, Machine, Pid1, BLESS_ATTEMPTS};
use crate::config::Check;
use crate::daemon::history::{Kind, Operation};
use std::time::Duration;

impl<M: Machine, P: Pid1> Daemon<M, P> {
    /// Once at start: notes the versions that failed here, then, on a
    /// counted boot, waits for the health gate and blesses; an uncounted
    /// boot is blessed already. Returns when this boot is blessed or the
    /// bless failed for good.
    ///
    /// With a reboot lock: meanwhile re-attaches the slot taken before the
    /// reboot (keeping its lease alive through the gate), and releases it
    /// once this boot is blessed. A boot whose bless fails keeps the slot:
    /// PID1's deadline reboots it into the other slot, which releases it.
    pub async fn start(&self) -> Bless {
        let Some((reboot_lock, retry)) = self.reboot_lock.clone() else { return self.bless_this_boot().await };
        let (bless, held) = tokio::join!(self.bless_this_boot(), self.resume_lock(&*reboot_lock, retry));
        if bless == Bless::Done {
            if held {
                self.set_lock("this boot is blessed: releasing the reboot slot");
            }
            self.release_lock(&*reboot_lock, retry, "this boot is blessed").await;
        }
        bless
    }

    async fn bless_this_boot(&self) -> Bless {
        let state = match self.load().await {
            Ok(s) => s,
            Err(e) => {
                let why = format!("the A/B state cannot be loaded: {e}");
                say(format_args!("BLESS FAILED: {why}"));
                lock(&self.live).bless = Bless::Failed(why.clone());
                return Bless::Failed(why);
            }
        };
        let boot_id = self.machine.boot_id();
        let changed = lock(&self.history).note_boot(&state, &boot_id, now());
        if changed {
            self.remember(|_| {}).await;
            for f in &lock(&self.history).failed {
                say(format_args!("version {} failed here: {}", f.version, f.why));
            }
        }
        let counted = state.boot_count_path().is_some();
        lock(&self.live).counted = counted;
        if !counted {
            return self.blessed();
        }
        self.gate().await;
        let mut last = String::new();
        for attempt in 1..=BLESS_ATTEMPTS {
            match self.bless_once().await {
                Ok(version) => {
                    say(format_args!("boot blessed: version {version} is good"));
                    self.remember(|h| {
                        let slot = state.booted().name().to_string();
                        let message = "the health gate passed".to_string();
                        h.record(Operation { kind: Kind::Bless, version, slot, ok: true, message, time: now() })
                    })
                    .await;
                    return self.blessed();
                }
                Err(e) => {
                    say(format_args!("BLESS FAILED (attempt {attempt} of {BLESS_ATTEMPTS}): {e}"));
                    last = e;
                    tokio::time::sleep(self.settings.config.gate.retry).await;
                }
            }
        }
        let why = format!("blessing failed: {last}");
        lock(&self.live).bless = Bless::Failed(why.clone());
        self.remember(|h| {
            let (version, slot) = (String::new(), state.booted().name().to_string());
            h.record(Operation { kind: Kind::Bless, version, slot, ok: false, message: why.clone(), time: now() })
        })
        .await;
        Bless::Failed(why)
    }

    fn blessed(&self) -> Bless {
        lock(&self.live).bless = Bless::Done;
        if let Err(e) = std::fs::write(&self.settings.blessed_marker, b"") {
            say(format_args!("{}: {e}", self.settings.blessed_marker.display()));
        }
        Bless::Done
    }

    /// Blesses, applies, and reads the state back from the ESP: the booted
    /// entry must have lost its counter.
    async fn bless_once(&self) -> Result<String, String> {
        let mut state = self.load().await?;
        if state.booted_entry().is_some_and(|e| e.is_blessed()) {
            return Ok(state.booted_entry().map(|e| e.name.version.clone()).unwrap_or_default());
        }
        state.bless().map_err(|e| e.to_string())?;
        self.apply(state).await?;
        let back = self.load().await.map_err(|e| format!("reading the entries back: {e}"))?;
        match back.booted_entry() {
            Some(e) if e.is_blessed() => Ok(e.name.version.clone()),
            Some(e) => Err(format!("the rename did not stick: the ESP still has {}", e.file_name())),
            None => Err("the booted entry is gone from the ESP".into()),
        }
    }

    /// Waits until PID1 is ready with no failed unit and every check
    /// passes, in rounds every `gate.retry`. Never gives up: PID1's
    /// deadline reboots a boot that is not blessed in time.
    async fn gate(&self) {
        let gate = self.settings.config.gate.clone();
        let mut said = String::new();
        loop {
            let waiting = self.gate_round(&gate.checks).await;
            let Some(what) = waiting else { return };
            if what != said {
                say(format_args!("health gate: waiting for {what}"));
                said.clone_from(&what);
            }
            lock(&self.live).bless = Bless::Waiting(what);
            tokio::time::sleep(gate.retry).await;
        }
    }

    /// One round: `None` when everything passed, else what failed.
    async fn gate_round(&self, checks: &[Check]) -> Option<String> {
        match self.pid1.readiness().await {
            Err(e) => return Some(format!("PID1 ({e})")),
            Ok(r) if !r.ready => return Some("PID1's ready line".into()),
            Ok(r) if !r.failed.is_empty() => return Some(format!("failed units: {}", r.failed.join(", "))),
            Ok(_) => {}
        }
        for check in checks {
            let c = check.clone();
            if let Err(e) = blocking(move || run_check(&c)).await {
                return Some(format!("check {}: {e}", check.name));
            }
        }
        None
    }
}

/// Runs one gate check under its timeout: `Ok` when it exits 0.
pub fn run_check(check: &Check) -> Result<(), String> {
    let (program, args) = check.exec.split_first().ok_or("no command")?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let deadline = std::time::Instant::now() + check.timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{program}: {status}")),
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program}: no answer within {}", humantime::format_duration(check.timeout)));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{program}: {e}")),
        }
    }
}
