//! One run of a unit's main process, from exec to its end, as a task of
//! its own: it owns the process's exit status (from the reaper), its
//! notification socket, the readiness probe, the health checks and the stop
//! sequence, and reports to the manager what happened.

use std::future::{pending, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};

use super::accounts::Credentials;
use super::exec::{self, Launch};
use super::lifecycle::{Cause, Outcome};
use super::members::{deadline_in, describe_process, Members, KILL_WAIT};
use super::{human, Event};
use crate::cgroup::Group;
use crate::journal::{Journal, Stream};
use crate::notify::{Message, NotifySocket};
use crate::reaper::{ExitStatus, Reaper};
use crate::unit::{Health, HealthAction, HealthCheck, KillMode, Kind, Ready, Unit, UnitName};

/// Between TCP readiness probes.
const TCP_PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// One readiness probe's connect may take this long.
const TCP_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

pub(crate) enum InstanceEvent {
    /// Readiness reached (not sent for oneshots: their exit says it).
    Ready,
    /// `STATUS=` from the service.
    Status(String),
    /// The main process ended on its own and the rest of its group is
    /// being stopped (kill_mode group) before the run is over.
    MainExited(Option<ExitStatus>),
    /// The run is over: the main process is gone, and so are the rest of
    /// its group when that was asked for.
    Done(Outcome),
    /// Not ready within start_timeout, or failing its health checks, and
    /// left running (`health.on_failure = "degrade"`), with why.
    Degraded(String),
    /// A health check passed after the unit was degraded by failed ones.
    Healthy,
}

/// What the manager asks of a running instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StopRequest {
    /// Signal the whole group (shutdown, kill_mode group) rather than
    /// the main process only (kill_mode main).
    pub whole_group: bool,
    /// A stop for good (not a restart): the unit's exec_stop runs first.
    pub exec_stop: bool,
}

/// The main process's exit status, awaited at most once from the reaper
/// and kept.
pub(crate) struct MainExit {
    rx: oneshot::Receiver<ExitStatus>,
    done: Option<Option<ExitStatus>>,
}

impl MainExit {
    pub fn new(rx: oneshot::Receiver<ExitStatus>) -> MainExit {
        MainExit { rx, done: None }
    }

    /// Cancel-safe.
    async fn wait(&mut self) -> Option<ExitStatus> {
        if let Some(d) = self.done {
            return d;
        }
        let status = (&mut self.rx).await.ok();
        self.done = Some(status);
        status
    }

    /// Whether the process has certainly ended (its pid may be reused).
    fn ended(&mut self) -> bool {
        if self.done.is_none() {
            match self.rx.try_recv() {
                Ok(s) => self.done = Some(Some(s)),
                Err(oneshot::error::TryRecvError::Closed) => self.done = Some(None),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        self.done.is_some()
    }
}

/// What a health check needs to run.
pub(crate) struct HealthRun {
    pub health: Health,
    pub unit: Arc<Unit>,
    pub credentials: Credentials,
    pub cgroup: Option<Group>,
    pub reaper: &'static Reaper,
    pub journal: Option<&'static Journal>,
}

pub(crate) struct Runner {
    pub name: UnitName,
    pub unit: Arc<Unit>,
    pub id: u64,
    pub pid: i32,
    pub exit: MainExit,
    pub notify: Option<NotifySocket>,
    pub members: Members,
    /// Ready from the start (`ready = "started"`).
    pub ready: bool,
    pub start_deadline: Instant,
    pub health: Option<HealthRun>,
    pub journal: Option<&'static Journal>,
    pub events: mpsc::UnboundedSender<Event>,
    pub stop_rx: mpsc::UnboundedReceiver<StopRequest>,
    /// For exec_stop, which runs as the service does.
    pub credentials: Credentials,
    pub reaper: &'static Reaper,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Polls the future if there is one, else never completes.
async fn maybe<T>(f: &mut Option<BoxFuture<T>>) -> T {
    match f {
        Some(f) => f.await,
        None => pending().await,
    }
}

async fn recv_notify(sock: Option<&NotifySocket>) -> Vec<Message> {
    match sock {
        Some(s) => match s.recv().await {
            Ok(m) => m,
            Err(_) => {
                // Not expected on a bound datagram socket; do not spin.
                sleep(Duration::from_millis(100)).await;
                Vec::new()
            }
        },
        None => pending().await,
    }
}

async fn tcp_ready(addr: SocketAddr) {
    loop {
        if let Ok(Ok(_)) = timeout(TCP_PROBE_TIMEOUT, TcpStream::connect(addr)).await {
            return;
        }
        sleep(TCP_PROBE_INTERVAL).await;
    }
}

pub(crate) fn note(journal: Option<&'static Journal>, unit: &UnitName, text: &str) {
    if let Some(j) = journal {
        let _ = j.record(unit.as_str(), Stream::Init, text);
    }
}

impl Runner {
    pub async fn run(mut self) {
        let outcome = self.supervise().await;
        let _ = self.events.send(Event::Instance {
            unit: self.name.clone(),
            id: self.id,
            event: InstanceEvent::Done(outcome),
        });
    }

    fn send(&self, event: InstanceEvent) {
        let _ = self.events.send(Event::Instance { unit: self.name.clone(), id: self.id, event });
    }

    fn note(&self, text: &str) {
        note(self.journal, &self.name, text);
    }

    fn became_ready(&mut self) -> Option<BoxFuture<String>> {
        self.ready = true;
        self.send(InstanceEvent::Ready);
        self.health_loop()
    }

    fn health_loop(&mut self) -> Option<BoxFuture<String>> {
        let (events, unit, id) = (self.events.clone(), self.name.clone(), self.id);
        let report = move |event| {
            let _ = events.send(Event::Instance { unit: unit.clone(), id, event });
        };
        self.health.take().map(|h| Box::pin(health_loop(self.name.clone(), h, report)) as BoxFuture<String>)
    }

    async fn supervise(&mut self) -> Outcome {
        let mut readiness: Option<BoxFuture<()>> = match self.unit.service.ready {
            Ready::Tcp(addr) if !self.ready => Some(Box::pin(tcp_ready(addr))),
            _ => None,
        };
        let mut health = if self.ready { self.health_loop() } else { None };
        let restart_kill = self.unit.service.kill_mode == KillMode::Group;
        let degrade = self.unit.health.as_ref().is_some_and(|h| h.on_failure == HealthAction::Degrade);
        // Not ready in time and degraded: no more start deadline.
        let mut start_degraded = false;
        loop {
            tokio::select! {
                status = self.exit.wait() => {
                    // A health check running in the group is not something
                    // the service left behind.
                    drop(health);
                    return self.exited(status).await;
                }
                req = self.stop_rx.recv() => {
                    // The manager gone (None) is treated as a shutdown.
                    let whole = req.is_none_or(|r| r.whole_group);
                    if req.is_none_or(|r| r.exec_stop) {
                        self.exec_stop().await;
                    }
                    return self.terminate(whole, Cause::Stopped).await;
                }
                messages = recv_notify(self.notify.as_ref()) => {
                    for m in messages {
                        match m {
                            Message::Ready if !self.ready => {
                                health = self.became_ready();
                            }
                            Message::Status(s) => self.send(InstanceEvent::Status(s)),
                            Message::Stopping => self.note("the service says it is stopping (STOPPING=1)"),
                            Message::MainPid(p) if i32::try_from(p).ok() != Some(self.pid) => self.note(&format!(
                                "MAINPID={p} ignored: the process Berth started ({}) stays the main one",
                                self.pid
                            )),
                            _ => {}
                        }
                    }
                }
                () = maybe(&mut readiness) => {
                    readiness = None;
                    health = self.became_ready();
                }
                () = sleep_until(self.start_deadline), if !self.ready && !start_degraded => {
                    let limit = self.unit.service.start_timeout;
                    if degrade {
                        start_degraded = true;
                        self.send(InstanceEvent::Degraded(format!(
                            "not ready within start_timeout {}; not restarted ({LEFT_RUNNING}), \
                             it becomes active once ready",
                            human(limit)
                        )));
                        continue;
                    }
                    self.note(&format!("not ready within start_timeout {}: stopping it", human(limit)));
                    return self.terminate(restart_kill, Cause::StartTimeout(limit)).await;
                }
                reason = maybe(&mut health) => {
                    self.note(&format!("{reason}: stopping it"));
                    return self.terminate(restart_kill, Cause::HealthFailed(reason)).await;
                }
            }
        }
    }

    /// The main process ended on its own. Under kill_mode group what it
    /// left behind goes too (politely first); under kill_mode main it stays.
    /// Exit 0 with processes left: the program put itself in the
    /// background ([`Cause::Daemonized`]).
    async fn exited(&mut self, status: Option<ExitStatus>) -> Outcome {
        let svc = &self.unit.service;
        let kill_group = svc.kill_mode == KillMode::Group;
        let left = if status == Some(ExitStatus::Exited(0)) { self.members.live_pids() } else { Vec::new() };
        let daemonized = (!left.is_empty()).then(|| left_in_background(&left, svc.kind, kill_group));
        if svc.kill_mode == KillMode::Group && !self.members.is_empty() {
            self.send(InstanceEvent::MainExited(status));
            self.note("the main process ended: stopping the rest of its group");
            if let Err(e) = self.members.clear(svc.stop_signal, svc.stop_timeout).await {
                self.note(&format!("cannot empty its group: {e}"));
            }
        }
        let cause = daemonized.map_or(Cause::Exited, Cause::Daemonized);
        Outcome { exit: status, cause, was_ready: self.ready }
    }

    /// The unit's `exec_stop`, if it has one, before a stop for good: run
    /// as the service is (its cgroup, user, environment and working
    /// directory) with `MAINPID` and `STOP_TIMEOUT_USEC` (its time, in
    /// microseconds) added, its output in the unit's log; its process group
    /// is killed if it has not exited within stop_timeout.
    async fn exec_stop(&mut self) {
        let svc = &self.unit.service;
        let Some(argv) = svc.exec_stop.as_deref() else { return };
        let limit = svc.stop_timeout;
        let mut environment = svc.environment.clone();
        environment.insert("MAINPID".into(), self.pid.to_string());
        environment.insert("STOP_TIMEOUT_USEC".into(), limit.as_micros().to_string());
        let program = argv.first().map(String::as_str).unwrap_or_default();
        let procs = match &self.members {
            Members::Cgroup(g) => match g.procs_file() {
                Ok(f) => Some(f),
                Err(e) => return self.note(&format!("exec_stop {program}: not run: {e}")),
            },
            Members::Sessions(_) => None,
        };
        let pipe = |stream| self.journal.and_then(|j| j.pipe(self.name.as_str(), stream).ok()).map(|(w, _)| w);
        let (stdout, stderr) = (pipe(Stream::Stdout), pipe(Stream::Stderr));
        let cmd = exec::command(Launch {
            argv,
            environment: &environment,
            working_directory: svc.working_directory.as_deref(),
            state_directory: &svc.state_directory,
            credentials: &self.credentials,
            notify_socket: None,
            cgroup_procs: procs,
            limits: &self.unit.limits,
            stdout: stdout.map_or_else(Stdio::null, Stdio::from),
            stderr: stderr.map_or_else(Stdio::null, Stdio::from),
        });
        let spawned = cmd.and_then(|mut cmd| self.reaper.spawn_async(&mut cmd));
        let (pid, rx) = match spawned {
            Ok(x) => x,
            Err(e) => return self.note(&format!("exec_stop {program}: cannot start: {e}")),
        };
        self.note(&format!("exec_stop: started {program} (pid {pid}), up to {}", human(limit)));
        let mut guard = KillOnDrop(Some(pid));
        let result = timeout(limit, rx).await;
        if let Ok(Ok(_)) = result {
            guard.0 = None;
        }
        drop(guard);
        match result {
            Ok(Ok(status)) => self.note(&format!("exec_stop {program}: {status}")),
            Ok(Err(_)) => self.note(&format!("exec_stop {program}: its exit status was lost")),
            Err(_) => self.note(&format!("exec_stop {program}: still running after {}: killed", human(limit))),
        }
    }

    /// The stop sequence: stop_signal to the main process or the whole
    /// group; up to stop_timeout for the main process to exit (and the
    /// group to empty); then SIGKILL to the same, and up to KILL_WAIT.
    async fn terminate(&mut self, whole_group: bool, cause: Cause) -> Outcome {
        let svc = &self.unit.service;
        let (sig, limit) = (svc.stop_signal, svc.stop_timeout);
        self.signal_main(sig);
        self.signal_main(Signal::SIGCONT);
        if whole_group {
            self.members.signal(sig);
            self.members.signal(Signal::SIGCONT);
        }
        let deadline = deadline_in(limit);
        let mut status = timeout_at(deadline, self.exit.wait()).await.ok();
        let clean = status.is_some() && (!whole_group || self.members.wait_empty(deadline).await);
        if !clean {
            let what = if whole_group { "its group" } else { "the main process" };
            self.note(&format!("still running {} after {}: SIGKILL to {what}", human(limit), sig.as_str()));
            self.signal_main(Signal::SIGKILL);
            if whole_group {
                if let Err(e) = self.members.kill() {
                    self.note(&format!("cannot kill its group: {e}"));
                }
            }
            let deadline = deadline_in(KILL_WAIT);
            if status.is_none() {
                status = timeout_at(deadline, self.exit.wait()).await.ok();
            }
            if whole_group && !self.members.wait_empty(deadline).await {
                self.note(&format!("processes are left {} s after SIGKILL", KILL_WAIT.as_secs()));
            }
        }
        Outcome { exit: status.flatten(), cause, was_ready: self.ready }
    }

    fn signal_main(&mut self, sig: Signal) {
        if !self.exit.ended() {
            let _ = kill(Pid::from_raw(self.pid), sig);
        }
    }
}

/// What a main process that exited 0 left running (`pids`), why that is a
/// failure, what to do, and what happens to them (`stopped`: kill_mode
/// group), for [`Cause::Daemonized`].
fn left_in_background(pids: &[i32], kind: Kind, stopped: bool) -> String {
    let mut named: Vec<String> = pids.iter().take(3).map(|&p| describe_process(p)).collect();
    if pids.len() > 3 {
        named.push(format!("and {} more", pids.len() - 3));
    }
    let what = match pids.len() {
        1 => "1 process".to_owned(),
        n => format!("{n} processes"),
    };
    let advice = match kind {
        Kind::LongRunning => {
            "run it in the foreground (often an option such as -F, -f, -n, --foreground or --nodaemon) so that \
             Berth supervises it"
        }
        Kind::Oneshot => {
            "a oneshot must finish its work: run a daemon as a long-running unit of its own, in the foreground"
        }
    };
    let fate = if stopped {
        "what it left is stopped"
    } else {
        "kill_mode = \"main\": what it left keeps running, and the unit is not restarted, so that no second \
         copy starts beside it"
    };
    format!(
        "it left {what} running ({}): the program put itself in the background, which Berth cannot supervise; \
         {advice}; {fate}",
        named.join(", ")
    )
}

/// Why a degraded unit was not restarted, as its reason says.
const LEFT_RUNNING: &str = "health.on_failure = \"degrade\"";

/// Runs the checks every interval from readiness on. Once `failures`
/// checks in a row failed: returns why (`on_failure = "restart"`), or
/// reports the unit [degraded](InstanceEvent::Degraded) and goes on
/// checking, reporting it [healthy](InstanceEvent::Healthy) again once a
/// check passes (`"degrade"`).
async fn health_loop(name: UnitName, h: HealthRun, report: impl Fn(InstanceEvent)) -> String {
    let mut failed = 0u32;
    let mut degraded = false;
    loop {
        sleep(h.health.interval).await;
        match check_once(&h).await {
            Ok(()) => {
                failed = 0;
                if degraded {
                    degraded = false;
                    report(InstanceEvent::Healthy);
                }
            }
            Err(e) => {
                failed = failed.saturating_add(1);
                if degraded {
                    continue;
                }
                note(h.journal, &name, &format!("health check failed ({failed} of {}): {e}", h.health.failures));
                if failed >= h.health.failures {
                    let why = format!("health check failed {failed} times in a row: {e}");
                    if h.health.on_failure == HealthAction::Restart {
                        return why;
                    }
                    degraded = true;
                    report(InstanceEvent::Degraded(format!("{why}; not restarted ({LEFT_RUNNING})")));
                }
            }
        }
    }
}

/// Kills a health check's process group unless it ended.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
    }
}

async fn check_once(h: &HealthRun) -> Result<(), String> {
    let limit = h.health.timeout;
    match &h.health.check {
        HealthCheck::Tcp(addr) => match timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("connect to {addr}: {e}")),
            Err(_) => Err(format!("connect to {addr}: no answer within {}", human(limit))),
        },
        HealthCheck::Command(argv) => {
            let procs = match &h.cgroup {
                Some(g) => Some(g.procs_file().map_err(|e| e.to_string())?),
                None => None,
            };
            let svc = &h.unit.service;
            let mut cmd = exec::command(Launch {
                argv,
                environment: &svc.environment,
                working_directory: svc.working_directory.as_deref(),
                state_directory: &svc.state_directory,
                credentials: &h.credentials,
                notify_socket: None,
                cgroup_procs: procs,
                limits: &h.unit.limits,
                stdout: Stdio::null(),
                stderr: Stdio::null(),
            })
            .map_err(|e| e.to_string())?;
            let program = argv.first().map(String::as_str).unwrap_or_default();
            let spawned = h.reaper.spawn_async(&mut cmd);
            drop(cmd);
            let (pid, rx) = spawned.map_err(|e| format!("cannot run {program}: {e}"))?;
            let mut guard = KillOnDrop(Some(pid));
            let result = timeout(limit, rx).await;
            if let Ok(Ok(_)) = result {
                guard.0 = None;
            }
            match result {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(format!("{program}: {status}")),
                Ok(Err(_)) => Err(format!("{program}: its exit status was lost")),
                Err(_) => Err(format!("{program}: no answer within {}", human(limit))),
            }
        }
    }
}
