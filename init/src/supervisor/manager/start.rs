//! Starting units: the dependency gate, conditions, and a run's exec
//! handed to its runner task.

use std::cmp::Reverse;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver, SendError, Sender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::{mpsc, oneshot};

use super::{now_us, Manager};
use crate::journal::Stream;
use crate::notify::NotifySocket;
use crate::reaper::{ExitStatus, Reaper};
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
    /// (a skipped unit, or one ready once started, can open another's gate
    /// at once). The units whose gates open in one pass are exec'd together.
    pub(super) fn reconcile(&mut self) {
        if self.shutting_down {
            return;
        }
        loop {
            let mut changed = false;
            // The units of a pass are exec'd together, SPAWNS_AT_ONCE at a
            // time, and each spawn lasts until its exec is done (from a cold
            // page cache, a tenth of a second or more under emulation, spent
            // mostly waiting for the disk). So the order of a pass says which
            // units go in its first execs: those the machine's readiness
            // waits for first (network, etcd, containerd), then units that
            // others wait for; ties by name, as the plan's order. A unit
            // ordered after one of the pass (containerd after network)
            // starts in the next pass, once the pass's execs are done.
            let mut opened = Vec::new();
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
                            opened.push(name);
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
            let starting: Vec<UnitName> = opened.into_iter().filter(|name| self.begin(name)).collect();
            self.start_runs(&starting);
            if !changed {
                for (name, waits_for) in holds {
                    self.hold_idle(&name, waits_for);
                }
                break;
            }
        }
    }

    /// The gate opened: conditions. Whether the first run is to start.
    fn begin(&mut self, name: &UnitName) -> bool {
        let first_boot = self.config.first_boot;
        let now = now_us();
        let Some(entry) = self.units.get_mut(name) else { return false };
        entry.idle_hold = None;
        let waited = !entry.needs.waits_for().is_empty();
        entry.life.gate_opened(waited, now);
        if let Err(unmet) = entry.unit.conditions.check(first_boot, |p| p.exists()) {
            entry.life.skip(unmet.clone(), now);
            self.note(name, &format!("skipped: {unmet}"));
            return false;
        }
        true
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
                let made = g.create().map_err(|e| e.to_string())?;
                g.apply(&unit.limits, made)?;
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
        self.start_runs(std::slice::from_ref(name));
    }

    /// Execs a run of each unit, all at once, and hands each to its runner
    /// task. Each spawn lasts until its child's exec is done (a program's
    /// first pages, from a cold page cache: a tenth of a second or more
    /// under emulation, mostly waiting for the disk); one after the other,
    /// a unit would wait for the execs of every unit before it in the pass.
    fn start_runs(&mut self, names: &[UnitName]) {
        // A chunk at a time: each run set up holds its log pipes and its
        // cgroup's procs file open until it is spawned, and PID1 keeps the
        // kernel's 1024 open files.
        for chunk in names.chunks(SPAWNS_AT_ONCE) {
            let (launches, cmds): (Vec<Launching>, Vec<Command>) =
                chunk.iter().filter_map(|name| self.launching(name)).unzip();
            let spawned = spawn_together(cmds, self.reaper);
            for (launch, (exec_us, result)) in launches.into_iter().zip(spawned) {
                self.launched(launch, exec_us, result);
            }
        }
    }

    /// A run's setup and its command, or the failure noted.
    fn launching(&mut self, name: &UnitName) -> Option<(Launching, Command)> {
        let setup = self.prepare(name);
        let entry = self.units.get_mut(name)?;
        entry.life.start_attempt(now_us());
        let p = match setup {
            Ok(p) => p,
            Err(e) => {
                self.spawn_failed(name, e);
                return None;
            }
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
        match cmd {
            Ok(cmd) => Some((
                Launching {
                    name: name.clone(),
                    program,
                    unit: p.unit,
                    credentials: p.credentials,
                    members: p.members,
                    cgroup: p.cgroup,
                    notify: p.notify,
                },
                cmd,
            )),
            Err(e) => {
                self.spawn_failed(name, format!("{program}: {e}"));
                None
            }
        }
    }

    /// The spawn is over: a runner task for the run, or the failure noted.
    fn launched(&mut self, l: Launching, exec_us: u64, spawned: io::Result<(i32, oneshot::Receiver<ExitStatus>)>) {
        let name = &l.name;
        let (pid, rx) = match spawned {
            Ok(x) => x,
            Err(e) => return self.spawn_failed(name, format!("{}: {e}", l.program)),
        };
        let id = self.next_id();
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        let Some(entry) = self.units.get_mut(name) else { return };
        let members = match l.members {
            Members::Sessions(_) => {
                entry.sessions.push(pid);
                Members::Sessions(entry.sessions.clone())
            }
            m => m,
        };
        entry.life.started(id, stop_tx, pid, exec_us, now_us());
        let ready_at_exec = l.unit.service.ready == Ready::Started;
        let health = l.unit.health.clone().map(|health| HealthRun {
            health,
            unit: Arc::clone(&l.unit),
            credentials: l.credentials.clone(),
            cgroup: l.cgroup.clone(),
            reaper: self.reaper,
            journal: self.journal,
        });
        let runner = Runner {
            name: name.clone(),
            unit: Arc::clone(&l.unit),
            id,
            pid,
            exit: MainExit::new(rx),
            notify: l.notify,
            members,
            ready: ready_at_exec,
            start_deadline: deadline_in(l.unit.service.start_timeout),
            health,
            journal: self.journal,
            events: self.events_tx.clone(),
            stop_rx,
            credentials: l.credentials,
            reaper: self.reaper,
        };
        tokio::spawn(runner.run());
        self.note(name, &format!("started {} (pid {pid})", l.program));
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

/// A run set up, its command (spawned apart) not yet spawned.
struct Launching {
    name: UnitName,
    program: String,
    unit: Arc<Unit>,
    credentials: Credentials,
    members: Members,
    cgroup: Option<crate::cgroup::Group>,
    notify: Option<NotifySocket>,
}

type Spawned = (u64, io::Result<(i32, oneshot::Receiver<ExitStatus>)>);

/// At most this many spawns at once (the supervisor thread and
/// [`SPAWN_THREADS`] helpers): a pass can open the gates of hundreds of
/// units, and the machine has only so many CPUs to exec them on.
const SPAWNS_AT_ONCE: usize = SPAWN_THREADS + 1;

/// The helper threads that spawn beside the supervisor thread.
const SPAWN_THREADS: usize = 3;

/// Their stacks: a spawn needs little (std's fork and exec, and the child's
/// pre-exec closure on a copy of this stack).
const SPAWN_THREAD_STACK: usize = 256 * 1024;

/// A spawn handed to a helper thread: the command's index, the command,
/// the reaper that is to wait for the child, and where the result goes.
type SpawnJob = (usize, Command, &'static Reaper, Sender<(usize, Spawned)>);

/// The helper threads' queue; `None` when none of them could be started.
///
/// They live as long as PID1: Linux takes the *thread* that forked a
/// child for its parent, and a program that asked for a parent-death
/// signal (`prctl(PR_SET_PDEATHSIG)`: `setpriv --pdeathsig`, `bwrap
/// --die-with-parent`, `tini -p`) gets it when that thread exits. Helpers
/// that ended after their spawns killed such units at once (found in
/// review on 2026-12-03; `init/tests/supervisor.rs` starts 8 of them in
/// one pass).
fn spawn_threads() -> Option<&'static Mutex<Sender<SpawnJob>>> {
    static QUEUE: OnceLock<Option<Mutex<Sender<SpawnJob>>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = channel::<SpawnJob>();
            let rx = Arc::new(Mutex::new(rx));
            let started = (0..SPAWN_THREADS)
                .filter(|i| {
                    let rx = Arc::clone(&rx);
                    std::thread::Builder::new()
                        .name(format!("spawn-{i}"))
                        .stack_size(SPAWN_THREAD_STACK)
                        .spawn(move || spawn_thread(&rx))
                        .is_ok()
                })
                .count();
            (started > 0).then(|| Mutex::new(tx))
        })
        .as_ref()
}

/// A helper thread's loop. It never returns while PID1 holds the queue's
/// sender (a static), and a spawn that panics is reported as an error, not
/// the end of the thread.
fn spawn_thread(jobs: &Mutex<Receiver<SpawnJob>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((i, mut cmd, reaper, results)) = job else { return };
        let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spawn_one(&mut cmd, reaper)))
            .unwrap_or_else(|_| (now_us(), Err(io::Error::other("its spawn panicked"))));
        // The supervisor gone (only in tests) leaves the result to no one.
        let _ = results.send((i, spawned));
    }
}

/// One spawn, and the time its fork began.
fn spawn_one(cmd: &mut Command, reaper: &'static Reaper) -> Spawned {
    // Taken before the fork: exec follows within a millisecond, and
    // ready_after is never shorter than the service really took.
    let exec_us = now_us();
    (exec_us, reaper.spawn_async(cmd))
}

/// Spawns every command, up to [`SPAWNS_AT_ONCE`] at a time (this thread
/// and the helper threads), and returns, in the commands' order, the time
/// each fork began (microseconds, as [`now_us`]) and its result. Without
/// helper threads this thread spawns them all, one after another.
fn spawn_together(cmds: Vec<Command>, reaper: &'static Reaper) -> Vec<Spawned> {
    let count = cmds.len();
    let mut results: Vec<Option<Spawned>> = (0..count).map(|_| None).collect();
    let mut own: Vec<(usize, Command)> = Vec::new();
    let (tx, rx) = channel();
    let mut handed = 0;
    let queue = if count > 1 { spawn_threads() } else { None };
    for (i, cmd) in cmds.into_iter().enumerate() {
        // Every SPAWNS_AT_ONCE-th command is this thread's, the rest the
        // helpers': all of them busy at once, in the commands' order.
        let to_helpers = queue.filter(|_| i % SPAWNS_AT_ONCE != 0);
        match to_helpers {
            Some(q) => match q.lock().unwrap_or_else(PoisonError::into_inner).send((i, cmd, reaper, tx.clone())) {
                Ok(()) => handed += 1,
                Err(SendError((i, cmd, _, _))) => own.push((i, cmd)),
            },
            None => own.push((i, cmd)),
        }
    }
    drop(tx);
    for (i, mut cmd) in own {
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(spawn_one(&mut cmd, reaper));
        }
    }
    // The helpers' results: each sends one; a helper gone drops its sender.
    while handed > 0 {
        let Ok((i, spawned)) = rx.recv() else { break };
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(spawned);
        }
        handed -= 1;
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| (now_us(), Err(io::Error::other("its spawn did not finish")))))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    use super::*;
    use crate::reaper::tests::pump_until;

    /// A command whose child sleeps 1 s between fork and exec.
    fn slow_exec() -> Command {
        let mut cmd = Command::new("true");
        // SAFETY: the closure only calls nanosleep, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                std::thread::sleep(Duration::from_secs(1));
                Ok(())
            })
        };
        cmd
    }

    #[test]
    fn the_units_of_one_pass_are_execd_together_not_one_after_another() {
        let cmds = vec![slow_exec(), slow_exec(), slow_exec()];
        let started = std::time::Instant::now();
        let spawned = spawn_together(cmds, Reaper::global());
        // Each spawn lasts until its child's exec, a second after its fork:
        // one after the other, the three would take 3 s.
        let took = started.elapsed();
        assert!(took < Duration::from_millis(2500), "the spawns took {took:?}");
        let mut exits: Vec<_> = spawned.into_iter().map(|(_, r)| r.unwrap().1).collect();
        let mut statuses = vec![None; exits.len()];
        pump_until(|| {
            for (s, rx) in statuses.iter_mut().zip(exits.iter_mut()) {
                *s = s.or(rx.try_recv().ok());
            }
            statuses.iter().all(Option::is_some)
        });
        assert!(statuses.iter().all(|s| *s == Some(ExitStatus::Exited(0))));
    }

    #[test]
    fn a_failed_exec_among_several_is_that_commands_error_only() {
        let cmds = vec![slow_exec(), Command::new("/nonexistent/berth-test"), slow_exec()];
        let spawned = spawn_together(cmds, Reaper::global());
        let kinds: Vec<Option<io::ErrorKind>> =
            spawned.iter().map(|(_, r)| r.as_ref().err().map(io::Error::kind)).collect();
        assert_eq!(kinds, [None, Some(io::ErrorKind::NotFound), None]);
        let mut exits: Vec<_> = spawned.into_iter().filter_map(|(_, r)| r.ok()).map(|(_, rx)| rx).collect();
        let mut done = 0;
        pump_until(|| {
            done += exits.iter_mut().map(|rx| usize::from(rx.try_recv().is_ok())).sum::<usize>();
            done == 2
        });
    }

    #[test]
    fn more_commands_than_spawn_threads_each_get_their_own_result_in_order() {
        let cmds: Vec<Command> = (0..SPAWNS_AT_ONCE as i32 * 2 + 3)
            .map(|i| {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("exit {i}")]);
                c
            })
            .collect();
        let spawned = spawn_together(cmds, Reaper::global());
        let mut exits: Vec<_> = spawned.into_iter().map(|(_, r)| r.unwrap().1).collect();
        let mut statuses = vec![None; exits.len()];
        pump_until(|| {
            for (s, rx) in statuses.iter_mut().zip(exits.iter_mut()) {
                *s = s.or(rx.try_recv().ok());
            }
            statuses.iter().all(Option::is_some)
        });
        let expected: Vec<_> = (0..statuses.len() as i32).map(|i| Some(ExitStatus::Exited(i))).collect();
        assert_eq!(statuses, expected);
    }
}
