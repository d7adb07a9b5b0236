//! User data in PID1's loop (issue 9): the state the control API shows
//! (`berthctl status`), and `berthctl config apply|confirm|show` with the
//! trial's revert. Each change runs `berth_provision::machine` on tokio's
//! blocking pool (it writes files and runs commands, waiting through the
//! reaper that this loop serves), then the units are reloaded and what the
//! change touched is restarted. One change at a time.
//!
//! The boot step itself runs on a boot thread ([`super::early_boot`],
//! [`crate::provision::provision_at_boot`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use berth_provision::host::FsHost;
use berth_provision::machine::{self, ChangeError, ChangeReport, InForce, Outcome, Status};
use tokio::sync::mpsc;

use crate::api::{ConfigReport, ControlError, ReloadOutcome};
use crate::info;
use crate::power::ShutdownFlag;
use crate::provision::{is_running, units_to_restart, ReaperRunner};
use crate::status::{UnitState, UnitStatus};
use crate::supervisor::SupervisorHandle;
use crate::unit;

/// How long after a failed revert it is tried again.
const REVERT_RETRY: Duration = Duration::from_secs(60);

/// What the control API asks of the loop's trial timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialTimer {
    /// Revert at this time (seconds since the epoch) unless confirmed.
    Arm(u64),
    /// Confirmed (or reverted): nothing to revert.
    Disarm,
}

/// User data's state, shared by PID1's loop and the control API.
pub struct Provisioning {
    /// `None` until the boot step has run.
    status: Mutex<Option<Status>>,
    /// One change (apply, confirm, revert) at a time.
    busy: tokio::sync::Mutex<()>,
    timer: mpsc::UnboundedSender<TrialTimer>,
    /// Where changes go: `/` and the machine's hostname in PID1.
    place: Place,
}

/// Where changes go.
#[derive(Clone, Debug)]
pub struct Place {
    /// The root `berth_provision` writes under.
    pub root: PathBuf,
    /// The unit directories reloaded after a change.
    pub unit_dirs: Vec<PathBuf>,
    /// Whether the kernel's hostname is set (only on the machine itself).
    pub set_hostname: bool,
    pub shutdown: ShutdownFlag,
}

impl Place {
    /// The machine PID1 runs: `/`, its unit directories, its hostname.
    pub fn machine(shutdown: ShutdownFlag) -> Place {
        Place {
            root: "/".into(),
            unit_dirs: unit::UNIT_DIRS.iter().map(PathBuf::from).collect(),
            set_hostname: true,
            shutdown,
        }
    }

    /// The host `berth_provision` changes.
    fn host(&self) -> FsHost<ReaperRunner> {
        FsHost {
            root: self.root.clone(),
            runner: ReaperRunner::new(Some(self.shutdown.clone())),
            set_kernel_hostname: self.set_hostname,
        }
    }
}

/// Runs `f` on the blocking pool; a panic in it (a bug) is an error.
async fn blocking<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ControlError::Failed(format!("{what} failed unexpectedly: {e}")))
}

fn change_error(e: ChangeError) -> ControlError {
    match e {
        ChangeError::Invalid(diags) => ControlError::Invalid(diags.iter().map(ToString::to_string).collect()),
        e @ (ChangeError::TrialPending { .. } | ChangeError::NoTrial) => ControlError::Refused(e.to_string()),
        ChangeError::Apply(m) => ControlError::Failed(m),
    }
}

/// The report's line for the console: `config: applied /root/u.yaml: 3
/// changes; restarted etcd; on trial for 90 s`.
fn console_line(what: &str, r: &ConfigReport) -> String {
    let mut line = format!("config: {what}: {} change{}", r.changes.len(), if r.changes.len() == 1 { "" } else { "s" });
    for (verb, names) in [("started", &r.started), ("stopped", &r.stopped), ("restarted", &r.restarted)] {
        if !names.is_empty() {
            line.push_str(&format!("; {verb} {}", names.join(", ")));
        }
    }
    if r.trial_until != 0 {
        let left = crate::provision::until_epoch(r.trial_until, SystemTime::now());
        line.push_str(&format!("; on trial for {} s (berthctl config confirm)", left.as_secs()));
    }
    line
}

impl Provisioning {
    /// The loop keeps the receiver and arms its timer from it.
    pub fn new(place: Place) -> (Provisioning, mpsc::UnboundedReceiver<TrialTimer>) {
        let (timer, rx) = mpsc::unbounded_channel();
        (Provisioning { status: Mutex::new(None), busy: tokio::sync::Mutex::new(()), timer, place }, rx)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Status>> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn status(&self) -> Option<Status> {
        self.lock().clone()
    }

    /// The boot step's outcome (or why it did not run).
    pub fn set_status(&self, status: Status) {
        *self.lock() = Some(status);
    }

    /// After a change: the record in force is what the status says now
    /// (the boot's errors were about a document no longer in force), and
    /// `trial_until` the trial's end.
    async fn refresh(&self, trial_until: Option<u64>) {
        let place = self.place.clone();
        let shown = blocking("reading the record", move || machine::show(&place.host())).await.ok().flatten();
        let mut guard = self.lock();
        let probe_ms = guard.as_ref().map_or(0, |s| s.probe_ms);
        *guard = Some(match shown {
            Some(f) => Status {
                outcome: Outcome::Applied,
                source: Some(f.source),
                instance_id: Some(f.instance_id),
                sha256: Some(f.sha256),
                probe_ms,
                errors: vec![],
                warnings: f.warnings,
                trial_until: f.trial_until,
            },
            None => match guard.take() {
                Some(s) => s,
                None => crate::provision::failed_status("user data: no record after a change"),
            },
        });
        if let Some(s) = guard.as_mut() {
            s.trial_until = trial_until;
        }
    }

    /// `berthctl config apply`: validates and applies, then reloads the
    /// units and restarts what the change touched. An invalid document
    /// changes nothing.
    pub async fn apply(
        &self,
        units: &SupervisorHandle,
        source: String,
        bytes: Vec<u8>,
        try_for: Option<Duration>,
    ) -> Result<ConfigReport, ControlError> {
        let _one = self.busy.lock().await;
        let place = self.place.clone();
        let name = source.clone();
        let changed = blocking("applying the configuration", move || {
            machine::change(&mut place.host(), &name, &bytes, try_for, SystemTime::now())
        })
        .await?
        .map_err(|e| {
            if let ChangeError::Invalid(d) = &e {
                info!("config: {source}: invalid ({} errors), nothing applied", d.len());
            }
            change_error(e)
        })?;
        let trial_until = changed.trial_until;
        if let Some(until) = trial_until {
            let _ = self.timer.send(TrialTimer::Arm(until));
        }
        let report = after_change(units, changed, &self.place).await;
        self.refresh(trial_until).await;
        info!("{}", console_line(&format!("applied {source}"), &report));
        for p in &report.problems {
            info!("config: {p}");
        }
        Ok(report)
    }

    /// `berthctl config confirm`.
    pub async fn confirm(&self) -> Result<(), ControlError> {
        let _one = self.busy.lock().await;
        let place = self.place.clone();
        blocking("confirming the configuration", move || machine::confirm(&mut place.host()))
            .await?
            .map_err(change_error)?;
        let _ = self.timer.send(TrialTimer::Disarm);
        self.refresh(None).await;
        info!("config: the configuration on trial is confirmed");
        Ok(())
    }

    /// `berthctl config show`.
    pub async fn show(&self) -> Result<Option<InForce>, ControlError> {
        let place = self.place.clone();
        blocking("reading the record", move || machine::show(&place.host())).await
    }

    /// The trial's time ran out (the loop's timer): the last known good
    /// configuration goes back, and the units with it. Nothing on trial
    /// any more (confirmed meanwhile) is not an error.
    pub async fn revert(&self, units: &SupervisorHandle) {
        let _one = self.busy.lock().await;
        let place = self.place.clone();
        let reverted = blocking("reverting the trial", move || machine::revert(&mut place.host())).await;
        match reverted {
            Ok(Ok(changed)) => {
                let report = after_change(units, changed, &self.place).await;
                self.refresh(None).await;
                info!("{}", console_line("no confirm within the trial: reverted", &report));
                for p in &report.problems {
                    info!("config: {p}");
                }
            }
            Ok(Err(ChangeError::NoTrial)) => {}
            Ok(Err(e)) => self.revert_again(&e),
            Err(e) => self.revert_again(&e),
        }
    }

    /// A revert that failed is tried again, and said each time: the trial
    /// is what could lock the user out.
    fn revert_again(&self, e: &dyn std::fmt::Display) {
        info!("config: reverting the trial failed: {e}; trying again in {} s", REVERT_RETRY.as_secs());
        let again = crate::provision::epoch_secs(SystemTime::now()).saturating_add(REVERT_RETRY.as_secs());
        let _ = self.timer.send(TrialTimer::Arm(again));
    }
}

/// Reads the unit files again and applies them: new units start, removed
/// (or masked) ones stop, changed ones restart if they ran; then the
/// running units the change touched whose unit file stayed the same are
/// restarted (what they read changed), and the hostname is set (when
/// `place` says so).
pub async fn after_change(units: &SupervisorHandle, changed: ChangeReport, place: &Place) -> ConfigReport {
    let mut report = ConfigReport {
        changes: changed.changes,
        units_changed: changed.units_changed,
        hostname: changed.hostname.unwrap_or_default(),
        warnings: changed.warnings,
        trial_until: changed.trial_until.unwrap_or(0),
        ..ConfigReport::default()
    };
    if place.set_hostname && !report.hostname.is_empty() {
        if let Err(e) = nix::unistd::sethostname(&report.hostname) {
            report.problems.push(format!("hostname {}: {e}", report.hostname));
        }
    }
    let before: BTreeMap<String, UnitStatus> =
        units.list().await.unwrap_or_default().into_iter().map(|s| (s.name.clone(), s)).collect();
    let dirs = place.unit_dirs.clone();
    let reloaded = match blocking("reading the unit files", move || {
        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        unit::plan(unit::load(&dirs))
    })
    .await
    {
        Ok(plan) => {
            let errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
            match units.reload(plan).await {
                Ok(r) => ReloadOutcome { added: r.added, removed: r.removed, changed: r.changed, errors },
                Err(e) => {
                    report.problems.push(format!("reloading the units: {e}"));
                    ReloadOutcome { errors, ..ReloadOutcome::default() }
                }
            }
        }
        Err(e) => {
            report.problems.push(e.to_string());
            ReloadOutcome::default()
        }
    };
    report.problems.extend(reloaded.errors.iter().map(|e| format!("units: {e}")));
    let restart = units_to_restart(&report.units_changed, &reloaded, &before);
    let restarts: Vec<_> = restart
        .iter()
        .map(|name| {
            let (h, name) = (units.clone(), name.clone());
            (name.clone(), tokio::spawn(async move { h.restart(&name).await }))
        })
        .collect();
    report.started = reloaded.added.clone();
    report.stopped = reloaded.removed.clone();
    report.restarted = reloaded.changed.iter().filter(|n| before.get(*n).is_some_and(is_running)).cloned().collect();
    for (name, task) in restarts {
        match task.await {
            Ok(Ok(s)) if s.state == UnitState::Failed => {
                report.problems.push(format!("restarting {name}: failed: {}", s.reason));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => report.problems.push(format!("restarting {name}: {e}")),
            Err(e) => report.problems.push(format!("restarting {name}: {e}")),
        }
        report.restarted.push(name);
    }
    report.restarted.sort();
    report.restarted.dedup();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_provision::diag::{Diagnostic, Place};

    #[test]
    fn change_errors_map_to_what_berthctl_shows() {
        let invalid = ChangeError::Invalid(vec![
            Diagnostic::new(Place::new("u.yaml", 3, "users[0].shell"), "expected a string"),
            Diagnostic::new(Place::new("u.yaml", 7, "write_files[1].permissions"), "not an octal mode"),
        ]);
        assert_eq!(
            change_error(invalid),
            ControlError::Invalid(vec![
                "u.yaml:3: key users[0].shell: expected a string".into(),
                "u.yaml:7: key write_files[1].permissions: not an octal mode".into(),
            ])
        );
        assert!(matches!(change_error(ChangeError::NoTrial), ControlError::Refused(_)));
        assert!(matches!(change_error(ChangeError::TrialPending { until: 5 }), ControlError::Refused(_)));
        assert_eq!(change_error(ChangeError::Apply("disk full".into())), ControlError::Failed("disk full".into()));
    }

    #[test]
    fn the_console_line_names_what_happened_to_the_units() {
        let r = ConfigReport {
            changes: vec!["hostname: a -> b".into()],
            started: vec!["web".into()],
            restarted: vec!["etcd".into(), "sshd".into()],
            ..ConfigReport::default()
        };
        assert_eq!(
            console_line("applied u.yaml", &r),
            "config: applied u.yaml: 1 change; started web; restarted etcd, sshd"
        );
        let none = ConfigReport::default();
        assert_eq!(console_line("reverted", &none), "config: reverted: 0 changes");
    }
}
