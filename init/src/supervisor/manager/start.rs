//! Starting units: the dependency gate, conditions, and a run's exec
//! handed to its runner task.

use std::cmp::Reverse;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{now_us, Manager};
use crate::journal::Stream;
use crate::notify::NotifySocket;
use crate::supervisor::accounts::{self, Credentials};
use crate::supervisor::exec::{self, Launch};
use crate::supervisor::members::{deadline_in, Members, Sessions};
use crate::supervisor::runner::{HealthRun, MainExit, Runner};
use crate::supervisor::state_directory;
use crate::unit::{Gate, Ready, State, Unit, UnitName, STATE_ROOT};

/// Everything a run needs that can fail before exec.
struct RunSetup {
    unit: Arc<Unit>,
    credentials: Credentials,
    members: Members,
    procs: Option<std::fs::File>,
    cgroup: Option<crate::cgroup::Group>,
    notify: Option<NotifySocket>,
    stdout: Stdio,
    stderr: Stdio,
}

impl Manager {
    /// Starts every waiting unit whose gate opens, until nothing changes
    /// (a skipped unit can open another's gate at once).
    pub(super) fn reconcile(&mut self) {
        if self.shutting_down {
            return;
        }
        loop {
            let mut changed = false;
            // Each spawn lasts until its exec is done, so the order of a
            // pass is the order of the boot's chains: the units the
            // machine's readiness waits for first (network, then
            // containerd, ahead of root-home's mkdir), then among those and
            // among the rest, units that others wait for (etcd, which only
            // the router waits for, would hold up network and containerd
            // behind its exec). The gate is read as the pass reaches each
            // unit, so containerd starts in the pass that started network.
            // Ties by name, as the plan's order.
            let mut waiting: Vec<(Reverse<bool>, Reverse<usize>, UnitName)> = self
                .units
                .iter()
                .filter(|(_, e)| e.life.state() == crate::status::UnitState::Waiting)
                .map(|(n, e)| (Reverse(self.needed_for_ready(n)), Reverse(e.needs.dependents.len()), n.clone()))
                .collect();
            waiting.sort();
            let waiting: Vec<UnitName> = waiting.into_iter().map(|(_, _, n)| n).collect();
            // Idle units are held only once a pass changes nothing: a unit
            // skipped later in a pass may be what one was held for.
            let mut holds: Vec<(UnitName, Vec<UnitName>)> = Vec::new();
            for name in waiting {
                let Some(entry) = self.units.get(&name) else { continue };
                let gate_state = |d: &UnitName| self.units.get(d).map_or(State::Skipped, |e| e.life.gate_state());
                match entry.needs.gate(gate_state) {
                    Gate::Start => {
                        let idle: Vec<UnitName> = self.idle_waits_for(&name).into_iter().cloned().collect();
                        if idle.is_empty() {
                            self.begin(&name);
                            changed = true;
                        } else {
                            holds.push((name.clone(), idle));
                        }
                    }
                    Gate::Never { dependency } => {
                        if let Some(e) = self.units.get_mut(&name) {
                            let reason = e.life.dependency_failed(dependency.as_str(), now_us());
                            self.note(&name, &format!("not started: {reason}"));
                        }
                        changed = true;
                    }
                    Gate::Wait => {
                        let pending: Vec<String> = entry
                            .needs
                            .waits_for()
                            .into_iter()
                            .filter(|d| self.units.get(*d).is_some_and(|e| e.life.gate_state() == State::Pending))
                            .map(|d| d.to_string())
                            .collect();
                        if let Some(e) = self.units.get_mut(&name) {
                            e.life.waiting_for(format!("waiting for {}", pending.join(", ")));
                        }
                    }
                }
            }
            if !changed {
                for (name, waits_for) in holds {
                    self.hold_idle(&name, waits_for);
                }
                break;
            }
        }
    }

    /// The gate opened: conditions, then the first start.
    fn begin(&mut self, name: &UnitName) {
        let first_boot = self.config.first_boot;
        let now = now_us();
        let Some(entry) = self.units.get_mut(name) else { return };
        entry.idle_hold = None;
        let waited = !entry.needs.waits_for().is_empty();
        entry.life.gate_opened(waited, now);
        if let Err(unmet) = entry.unit.conditions.check(first_boot, |p| p.exists()) {
            entry.life.skip(unmet.clone(), now);
            self.note(name, &format!("skipped: {unmet}"));
            return;
        }
        self.start_run(name);
    }

    /// Everything a run needs that can fail before exec.
    fn prepare(&mut self, name: &UnitName) -> Result<RunSetup, String> {
        let Some(entry) = self.units.get(name) else { return Err("no such unit".into()) };
        let unit = Arc::clone(&entry.unit);
        let svc = &unit.service;
        let credentials = if svc.user.is_none() && svc.group.is_none() {
            Credentials::ROOT
        } else {
            let passwd = accounts::read_database(&self.config.passwd)?;
            let group = accounts::read_database(&self.config.group)?;
            accounts::resolve(svc.user.as_ref(), svc.group.as_ref(), &passwd, &group)?
        };
        state_directory::prepare(
            Path::new(STATE_ROOT),
            &svc.state_directory,
            svc.state_directory_mode,
            credentials.uid,
            credentials.gid,
        )?;
        let (members, procs, cgroup) = match &self.config.cgroups {
            Some(cg) => {
                let g = cg.group(name.as_str());
                g.create().map_err(|e| e.to_string())?;
                g.apply(&unit.limits)?;
                let procs = g.procs_file().map_err(|e| e.to_string())?;
                (Members::Cgroup(g.clone()), Some(procs), Some(g))
            }
            None => {
                if !unit.limits.cgroup_settings().is_empty() {
                    self.note(name, "limits not applied: the service manager runs without cgroups");
                }
                (Members::Sessions(Sessions::default()), None, None)
            }
        };
        let notify = match svc.ready {
            Ready::Notify => {
                let sock = NotifySocket::bind(&self.config.notify_dir, name.as_str()).map_err(|e| e.to_string())?;
                if !credentials.is_root() {
                    sock.allow(credentials.uid, credentials.gid).map_err(|e| e.to_string())?;
                }
                Some(sock)
            }
            _ => None,
        };
        let (stdout, stderr) = match self.journal {
            Some(j) => {
                let (out, _) = j.pipe(name.as_str(), Stream::Stdout).map_err(|e| format!("log pipe: {e}"))?;
                let (err, _) = j.pipe(name.as_str(), Stream::Stderr).map_err(|e| format!("log pipe: {e}"))?;
                (Stdio::from(out), Stdio::from(err))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        Ok(RunSetup { unit, credentials, members, procs, cgroup, notify, stdout, stderr })
    }

    /// Execs a run of the unit and hands it to a runner task.
    pub(super) fn start_run(&mut self, name: &UnitName) {
        let setup = self.prepare(name);
        let Some(entry) = self.units.get_mut(name) else { return };
        entry.life.start_attempt(now_us());
        let p = match setup {
            Ok(p) => p,
            Err(e) => return self.spawn_failed(name, e),
        };
        let svc = &p.unit.service;
        let program = svc.exec.first().cloned().unwrap_or_default();
        let cmd = exec::command(Launch {
            argv: &svc.exec,
            environment: &svc.environment,
            working_directory: svc.working_directory.as_deref(),
            state_directory: &svc.state_directory,
            credentials: &p.credentials,
            notify_socket: p.notify.as_ref().map(NotifySocket::path),
            cgroup_procs: p.procs,
            limits: &p.unit.limits,
            stdout: p.stdout,
            stderr: p.stderr,
        });
        // Taken before the fork: exec follows within a millisecond, and
        // ready_after is never shorter than the service really took.
        let exec_us = now_us();
        let spawned = cmd.and_then(|mut cmd| self.reaper.spawn_async(&mut cmd));
        let (pid, rx) = match spawned {
            Ok(x) => x,
            Err(e) => return self.spawn_failed(name, format!("{program}: {e}")),
        };
        let id = self.next_id();
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        let Some(entry) = self.units.get_mut(name) else { return };
        let members = match p.members {
            Members::Sessions(_) => {
                entry.sessions.push(pid);
                Members::Sessions(entry.sessions.clone())
            }
            m => m,
        };
        entry.life.started(id, stop_tx, pid, exec_us, now_us());
        let ready_at_exec = svc.ready == Ready::Started;
        let health = p.unit.health.clone().map(|health| HealthRun {
            health,
            unit: Arc::clone(&p.unit),
            credentials: p.credentials.clone(),
            cgroup: p.cgroup.clone(),
            reaper: self.reaper,
            journal: self.journal,
        });
        let runner = Runner {
            name: name.clone(),
            unit: Arc::clone(&p.unit),
            id,
            pid,
            exit: MainExit::new(rx),
            notify: p.notify,
            members,
            ready: ready_at_exec,
            start_deadline: deadline_in(svc.start_timeout),
            health,
            journal: self.journal,
            events: self.events_tx.clone(),
            stop_rx,
            credentials: p.credentials.clone(),
            reaper: self.reaper,
        };
        tokio::spawn(runner.run());
        self.note(name, &format!("started {program} (pid {pid})"));
        if ready_at_exec {
            self.ready(name);
        }
    }

    /// The exec (or what comes before it) failed.
    fn spawn_failed(&mut self, name: &UnitName, error: String) {
        let schedule = self.restart_timer(name);
        let Some(entry) = self.units.get_mut(name) else { return };
        let policy = entry.policy();
        let notes = entry.life.spawn_failed(error, policy, now_us(), schedule);
        for text in notes {
            self.note(name, &text);
        }
    }
}
