//! The manager task: every unit's state, the dependency gate, restart
//! decisions, requests from handles, shutdown ordering.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::accounts::{self, Credentials};
use super::exec::{self, Launch};
use super::members::{deadline_in, Members, Sessions};
use super::runner::{note, Cause, HealthRun, InstanceEvent, MainExit, Outcome, Runner, StopRequest};
use super::{human, Config, ReloadReport, Reply, Settle, SupervisorError};
use crate::journal::{Journal, Stream};
use crate::notify::NotifySocket;
use crate::reaper::{ExitStatus, Reaper};
use crate::status::{Exit, Timeline, TimelineEntry, UnitState, UnitStatus};
use crate::timing;
use crate::unit::{Gate, KillMode, Kind, Needs, Plan, Ready, RestartPolicy, State, Unit, UnitName};

pub(crate) enum Request {
    List(Reply<Vec<UnitStatus>>),
    Status(String, Reply<UnitStatus>),
    Start(String, Reply<UnitStatus>),
    Stop(String, Reply<UnitStatus>),
    Restart(String, Reply<UnitStatus>),
    Reload(Box<Plan>, Reply<ReloadReport>),
    Timeline(Reply<Timeline>),
    StopAll(Reply<()>),
}

pub(crate) enum Event {
    Instance {
        unit: UnitName,
        id: u64,
        event: InstanceEvent,
    },
    RestartDue {
        unit: UnitName,
        timer: u64,
    },
    /// A group without a running main process was emptied (shutdown, or
    /// a unit removed by a reload).
    Cleared {
        unit: UnitName,
        result: Result<(), String>,
    },
}

fn now_us() -> u64 {
    u64::try_from(timing::monotonic_now().as_micros()).unwrap_or(u64::MAX)
}

fn exit_of(s: ExitStatus) -> Exit {
    match s {
        ExitStatus::Exited(c) => Exit::Code(c),
        ExitStatus::Signaled(s) => Exit::Signal(s),
    }
}

/// What to do once the current run has ended.
#[derive(Debug, Default)]
enum Next {
    /// Per the restart policy.
    #[default]
    Decide,
    /// Stay stopped (Inactive).
    Stop,
    /// Start again, fresh start limit.
    Restart,
    /// Gone from the plan: drop the unit, or keep it as left out (reason).
    Retire(Option<String>),
}

/// A unit's progress through shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    Up,
    /// Its processes are being cleared (no main process left).
    Clearing,
    Done,
}

struct Live {
    id: u64,
    stop: mpsc::UnboundedSender<StopRequest>,
    stop_sent: bool,
}

struct Slot {
    unit: Arc<Unit>,
    needs: Needs,
    /// Left out by the plan: never started, and why.
    excluded: Option<String>,
    state: UnitState,
    reason: String,
    /// The service's own `STATUS=`.
    status_text: String,
    since_us: u64,
    pid: i32,
    restarts: u32,
    ever_started: bool,
    last_exit: Option<Exit>,
    ready_after_us: u64,
    exec_us: u64,
    /// Timeline of the first start: wait over, exec, ready.
    waited_from_us: u64,
    started_us: u64,
    ready_us: u64,
    /// Start times within start_limit_interval.
    starts: VecDeque<Instant>,
    live: Option<Live>,
    timer: Option<(u64, AbortHandle)>,
    next: Next,
    /// Requests answered once the unit has settled.
    waiters: Vec<Reply<UnitStatus>>,
    /// Without cgroups: the sessions of its runs that may have processes.
    sessions: Sessions,
    down: Down,
}

impl Slot {
    fn new(unit: Unit, needs: Needs, excluded: Option<String>) -> Slot {
        let state = if excluded.is_some() { UnitState::Failed } else { UnitState::Waiting };
        Slot {
            unit: Arc::new(unit),
            needs,
            reason: excluded.clone().unwrap_or_default(),
            excluded,
            state,
            status_text: String::new(),
            since_us: now_us(),
            pid: 0,
            restarts: 0,
            ever_started: false,
            last_exit: None,
            ready_after_us: 0,
            exec_us: 0,
            waited_from_us: 0,
            started_us: 0,
            ready_us: 0,
            starts: VecDeque::new(),
            live: None,
            timer: None,
            next: Next::Decide,
            waiters: Vec::new(),
            sessions: Sessions::default(),
            down: Down::Up,
        }
    }

    fn set(&mut self, state: UnitState, reason: impl Into<String>) {
        if state != self.state {
            self.since_us = now_us();
            self.state = state;
            if !matches!(state, UnitState::Starting | UnitState::Active) {
                self.status_text.clear();
            }
        }
        self.reason = reason.into();
    }

    fn settled(&self) -> bool {
        matches!(self.state, UnitState::Active | UnitState::Failed | UnitState::Skipped | UnitState::Inactive)
    }

    fn cancel_timer(&mut self) {
        if let Some((_, t)) = self.timer.take() {
            t.abort();
        }
    }

    fn status(&self) -> UnitStatus {
        UnitStatus {
            name: self.unit.name.to_string(),
            description: self.unit.description.clone(),
            state: self.state,
            reason: if self.reason.is_empty() { self.status_text.clone() } else { self.reason.clone() },
            pid: u32::try_from(self.pid).unwrap_or(0),
            since_us: self.since_us,
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            ready_after_us: self.ready_after_us,
        }
    }

    fn gate_state(&self) -> State {
        match self.state {
            UnitState::Active => State::Ready,
            UnitState::Skipped => State::Skipped,
            UnitState::Failed => State::Failed,
            UnitState::Inactive
            | UnitState::Waiting
            | UnitState::Starting
            | UnitState::Restarting
            | UnitState::Stopping => State::Pending,
        }
    }
}

/// Two definitions that differ only in where their dependencies were
/// written (lines moved) are the same unit: no restart on reload.
fn same_definition(a: &Unit, b: &Unit) -> bool {
    let deps = |u: &Unit| -> Vec<(crate::unit::Relation, UnitName)> {
        u.dependencies.all().map(|(r, d)| (r, d.name.clone())).collect()
    };
    a.description == b.description
        && a.service == b.service
        && a.restart == b.restart
        && a.limits == b.limits
        && a.health == b.health
        && a.conditions == b.conditions
        && deps(a) == deps(b)
}

fn describe(o: &Outcome, kind: Kind) -> String {
    let exit = |o: &Outcome| match o.exit {
        Some(s) => s.to_string(),
        None => "ended (status unknown)".to_owned(),
    };
    match &o.cause {
        Cause::Exited if o.was_ready || kind == Kind::Oneshot => exit(o),
        Cause::Exited => format!("{} before it was ready", exit(o)),
        Cause::StartTimeout(d) => format!("not ready within {}", human(*d)),
        Cause::HealthFailed(r) => r.clone(),
        Cause::Stopped => "stopped".to_owned(),
        Cause::SpawnFailed(e) => format!("cannot start: {e}"),
    }
}

pub(crate) struct Manager {
    config: Config,
    journal: Option<&'static Journal>,
    reaper: &'static Reaper,
    slots: BTreeMap<UnitName, Slot>,
    requests: mpsc::UnboundedReceiver<Request>,
    requests_open: bool,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    settle: watch::Sender<Settle>,
    shutting_down: bool,
    shutdown_waiters: Vec<Reply<()>>,
    next_id: u64,
    /// When every unit first settled.
    ready_us: u64,
}

impl Manager {
    pub fn new(
        config: Config,
        plan: Plan,
        journal: Option<&'static Journal>,
        reaper: &'static Reaper,
        requests: mpsc::UnboundedReceiver<Request>,
        settle: watch::Sender<Settle>,
    ) -> Manager {
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut m = Manager {
            config,
            journal,
            reaper,
            slots: BTreeMap::new(),
            requests,
            requests_open: true,
            events_tx,
            events,
            settle,
            shutting_down: false,
            shutdown_waiters: Vec::new(),
            next_id: 0,
            ready_us: 0,
        };
        m.take_plan(plan);
        m
    }

    fn take_plan(&mut self, plan: Plan) {
        let Plan { units, mut needs, excluded, .. } = plan;
        for (name, unit) in units {
            let n = needs.remove(&name).unwrap_or_default();
            self.slots.insert(name, Slot::new(unit, n, None));
        }
        for (name, x) in excluded {
            let reason = format!("not started: {}", x.reason);
            self.slots.insert(name, Slot::new(x.unit, Needs::default(), Some(reason)));
        }
    }

    pub async fn run(mut self) {
        if let Err(e) = std::fs::create_dir_all(&self.config.notify_dir) {
            crate::journal::init_line(&format!(
                "cannot create {}: {e} (units with ready = \"notify\" will fail)",
                self.config.notify_dir.display()
            ));
        }
        self.reconcile();
        self.publish();
        loop {
            tokio::select! {
                req = self.requests.recv(), if self.requests_open => match req {
                    Some(req) => self.request(req),
                    None => self.requests_open = false,
                },
                Some(ev) = self.events.recv() => self.event(ev),
            }
            self.reconcile();
            self.publish();
        }
    }

    fn note(&self, name: &UnitName, text: &str) {
        note(self.journal, name, text);
    }

    // ---- requests -----------------------------------------------------------

    fn request(&mut self, req: Request) {
        match req {
            Request::List(r) => {
                let _ = r.send(Ok(self.slots.values().map(Slot::status).collect()));
            }
            Request::Status(name, r) => {
                let _ = r.send(self.slot_named(&name).map(|(_, s)| s.status()));
            }
            Request::Start(name, r) => self.start_request(&name, r, false),
            Request::Restart(name, r) => self.start_request(&name, r, true),
            Request::Stop(name, r) => self.stop_request(&name, r),
            Request::Reload(plan, r) => {
                let result =
                    if self.shutting_down { Err(SupervisorError::ShuttingDown) } else { Ok(self.reload(*plan)) };
                let _ = r.send(result);
            }
            Request::Timeline(r) => {
                let _ = r.send(Ok(self.timeline()));
            }
            Request::StopAll(r) => {
                self.shutdown_waiters.push(r);
                self.begin_shutdown();
            }
        }
    }

    fn slot_named(&self, name: &str) -> Result<(UnitName, &Slot), SupervisorError> {
        UnitName::new(name)
            .ok()
            .and_then(|n| self.slots.get_key_value(&n))
            .map(|(n, s)| (n.clone(), s))
            .ok_or_else(|| SupervisorError::NoSuchUnit(name.to_owned()))
    }

    fn start_request(&mut self, name: &str, reply: Reply<UnitStatus>, restart: bool) {
        if self.shutting_down {
            let _ = reply.send(Err(SupervisorError::ShuttingDown));
            return;
        }
        let name = match self.slot_named(name) {
            Ok((n, s)) => match &s.excluded {
                Some(reason) => {
                    let _ =
                        reply.send(Err(SupervisorError::NotStartable { unit: n.to_string(), reason: reason.clone() }));
                    return;
                }
                None => n,
            },
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let Some(slot) = self.slots.get_mut(&name) else { return };
        slot.waiters.push(reply);
        if let Some(live) = &mut slot.live {
            // A unit on its way out of the plan (reload) is not restarted.
            if matches!(slot.next, Next::Decide | Next::Stop) && (restart || matches!(slot.next, Next::Stop)) {
                slot.next = Next::Restart;
                if !live.stop_sent {
                    live.stop_sent = true;
                    let _ = live.stop.send(StopRequest { whole_group: slot.unit.service.kill_mode == KillMode::Group });
                    slot.set(UnitState::Stopping, "restarting");
                }
            }
            return;
        }
        let idle = matches!(slot.state, UnitState::Inactive | UnitState::Failed | UnitState::Skipped)
            || (restart && matches!(slot.state, UnitState::Active | UnitState::Restarting));
        if idle {
            self.activate(&name, &mut BTreeSet::new());
        }
    }

    /// Puts a unit that does not run back to Waiting, fresh start limit,
    /// with the units it requires and wants that do not run either.
    fn activate(&mut self, name: &UnitName, seen: &mut BTreeSet<UnitName>) {
        if !seen.insert(name.clone()) {
            return;
        }
        let Some(slot) = self.slots.get_mut(name) else { return };
        if slot.excluded.is_some() || slot.live.is_some() {
            return;
        }
        slot.cancel_timer();
        slot.starts.clear();
        slot.set(UnitState::Waiting, "");
        let deps: Vec<UnitName> = slot.needs.requires.iter().chain(&slot.needs.wants).cloned().collect();
        for d in deps {
            let idle = self
                .slots
                .get(&d)
                .is_some_and(|s| s.live.is_none() && matches!(s.state, UnitState::Inactive | UnitState::Failed));
            if idle {
                self.activate(&d, seen);
            }
        }
    }

    fn stop_request(&mut self, name: &str, reply: Reply<UnitStatus>) {
        let name = match self.slot_named(name) {
            Ok((n, _)) => n,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let Some(slot) = self.slots.get_mut(&name) else { return };
        slot.waiters.push(reply);
        if slot.excluded.is_some() {
            return;
        }
        let whole_group = self.shutting_down || slot.unit.service.kill_mode == KillMode::Group;
        match &mut slot.live {
            Some(live) => {
                if !matches!(slot.next, Next::Retire(_)) {
                    slot.next = Next::Stop;
                }
                if !live.stop_sent {
                    live.stop_sent = true;
                    let _ = live.stop.send(StopRequest { whole_group });
                    slot.set(UnitState::Stopping, "stopping");
                }
            }
            None => {
                slot.cancel_timer();
                slot.set(UnitState::Inactive, "stopped");
            }
        }
    }

    // ---- events -------------------------------------------------------------

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Instance { unit, id, event } => {
                let current = self.slots.get(&unit).and_then(|s| s.live.as_ref()).is_some_and(|l| l.id == id);
                if !current {
                    return;
                }
                match event {
                    InstanceEvent::Ready => self.ready(&unit),
                    InstanceEvent::Status(text) => {
                        if let Some(s) = self.slots.get_mut(&unit) {
                            s.status_text = text;
                        }
                    }
                    InstanceEvent::MainExited(status) => {
                        if let Some(s) = self.slots.get_mut(&unit) {
                            s.pid = 0;
                            s.last_exit = status.map(exit_of);
                            if matches!(s.state, UnitState::Starting | UnitState::Active) {
                                s.set(UnitState::Stopping, "its main process ended: stopping the rest of its group");
                            }
                        }
                    }
                    InstanceEvent::Done(outcome) => self.run_ended(&unit, outcome),
                }
            }
            Event::RestartDue { unit, timer } => {
                let due = self.slots.get(&unit).is_some_and(|s| {
                    s.timer.as_ref().is_some_and(|(t, _)| *t == timer) && s.state == UnitState::Restarting
                });
                if due && !self.shutting_down {
                    if let Some(s) = self.slots.get_mut(&unit) {
                        s.timer = None;
                    }
                    self.start_run(&unit);
                }
            }
            Event::Cleared { unit, result } => {
                if let Err(e) = &result {
                    self.note(&unit, &format!("cannot empty its group: {e}"));
                }
                match self.slots.get_mut(&unit) {
                    Some(s) if s.down == Down::Clearing => {
                        s.down = Down::Done;
                        self.remove_group(&unit);
                    }
                    Some(s) if s.live.is_some() => {}
                    _ => self.remove_group(&unit),
                }
                self.advance_shutdown();
            }
        }
    }

    fn ready(&mut self, name: &UnitName) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        if slot.state != UnitState::Starting {
            return;
        }
        let now = now_us();
        slot.ready_after_us = now.saturating_sub(slot.exec_us);
        if slot.ready_us == 0 {
            slot.ready_us = now;
        }
        slot.set(UnitState::Active, "");
        let text = format!("ready after {}", human(Duration::from_micros(slot.ready_after_us)));
        self.note(name, &text);
    }

    fn run_ended(&mut self, name: &UnitName, outcome: Outcome) {
        let shutting_down = self.shutting_down;
        let Some(slot) = self.slots.get_mut(name) else { return };
        slot.live = None;
        slot.pid = 0;
        if let Some(s) = outcome.exit {
            slot.last_exit = Some(exit_of(s));
        }
        let what = describe(&outcome, slot.unit.service.kind);
        let next = std::mem::take(&mut slot.next);
        if shutting_down {
            slot.set(UnitState::Inactive, "stopped (shutdown)");
            self.note(name, &format!("stopped for shutdown: {what}"));
            self.advance_shutdown();
            return;
        }
        match next {
            Next::Stop => {
                slot.set(UnitState::Inactive, "stopped");
                self.note(name, &format!("stopped: {what}"));
                self.remove_group(name);
            }
            Next::Restart => {
                self.note(name, &format!("stopped for a restart: {what}"));
                self.activate(name, &mut BTreeSet::new());
            }
            Next::Retire(reason) => {
                self.note(name, &format!("stopped: removed from the units: {what}"));
                self.retire(name, reason);
            }
            Next::Decide => self.decide(name, outcome, what),
        }
    }

    /// A run ended on its own (or was ended by a timeout or failed health
    /// checks): active, inactive, restarting or failed?
    fn decide(&mut self, name: &UnitName, outcome: Outcome, what: String) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        let svc = &slot.unit.service;
        let clean_exit = outcome.cause == Cause::Exited && outcome.exit.is_some_and(ExitStatus::success);
        if svc.kind == Kind::Oneshot && clean_exit {
            let now = now_us();
            slot.ready_after_us = now.saturating_sub(slot.exec_us);
            if slot.ready_us == 0 {
                slot.ready_us = now;
            }
            slot.set(UnitState::Active, "");
            let text = format!("done: exit status 0 after {}", human(Duration::from_micros(slot.ready_after_us)));
            self.note(name, &text);
            return;
        }
        let policy = slot.unit.restart.policy;
        let failure = !(clean_exit && outcome.was_ready);
        if !failure && policy != RestartPolicy::Always {
            slot.set(UnitState::Inactive, what.clone());
            self.note(name, &what);
            return;
        }
        if failure && policy == RestartPolicy::Never {
            slot.set(UnitState::Failed, what.clone());
            self.note(name, &format!("failed: {what}"));
            return;
        }
        let restart = slot.unit.restart;
        let now = Instant::now();
        while slot.starts.front().is_some_and(|t| now.duration_since(*t) >= restart.start_limit_interval) {
            slot.starts.pop_front();
        }
        let n = u32::try_from(slot.starts.len()).unwrap_or(u32::MAX);
        if n >= restart.start_limit {
            let reason =
                format!("start limit hit: {n} starts within {}; last: {what}", human(restart.start_limit_interval));
            slot.set(UnitState::Failed, reason.clone());
            self.note(name, &format!("failed: {reason}"));
            return;
        }
        let delay = restart.backoff(n.max(1));
        let reason = format!("restart in {} after: {what}", human(delay));
        slot.set(UnitState::Restarting, reason.clone());
        self.note(name, &reason);
        self.schedule_restart(name, delay);
    }

    fn schedule_restart(&mut self, name: &UnitName, delay: Duration) {
        self.next_id = self.next_id.wrapping_add(1);
        let timer = self.next_id;
        let tx = self.events_tx.clone();
        let unit = name.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Event::RestartDue { unit, timer });
        });
        if let Some(slot) = self.slots.get_mut(name) {
            slot.cancel_timer();
            slot.timer = Some((timer, task.abort_handle()));
        }
    }

    // ---- starting -----------------------------------------------------------

    /// Starts every waiting unit whose gate opens, until nothing changes
    /// (a skipped unit can open another's gate at once).
    fn reconcile(&mut self) {
        if self.shutting_down {
            return;
        }
        loop {
            let mut changed = false;
            let waiting: Vec<UnitName> =
                self.slots.iter().filter(|(_, s)| s.state == UnitState::Waiting).map(|(n, _)| n.clone()).collect();
            for name in waiting {
                let Some(slot) = self.slots.get(&name) else { continue };
                let gate = slot.needs.gate(|d| self.slots.get(d).map_or(State::Skipped, Slot::gate_state));
                match gate {
                    Gate::Start => {
                        self.begin(&name);
                        changed = true;
                    }
                    Gate::Never { dependency } => {
                        let reason = format!("dependency {dependency} failed");
                        self.note(&name, &format!("not started: {reason}"));
                        if let Some(s) = self.slots.get_mut(&name) {
                            s.set(UnitState::Failed, reason);
                        }
                        changed = true;
                    }
                    Gate::Wait => {
                        let pending: Vec<String> = slot
                            .needs
                            .waits_for()
                            .into_iter()
                            .filter(|d| self.slots.get(*d).is_some_and(|s| s.gate_state() == State::Pending))
                            .map(|d| d.to_string())
                            .collect();
                        let reason = format!("waiting for {}", pending.join(", "));
                        if let Some(s) = self.slots.get_mut(&name) {
                            s.reason = reason;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// The gate opened: conditions, then the first start.
    fn begin(&mut self, name: &UnitName) {
        let first_boot = self.config.first_boot;
        let Some(slot) = self.slots.get_mut(name) else { return };
        if slot.waited_from_us == 0 && !slot.needs.waits_for().is_empty() {
            slot.waited_from_us = now_us();
        }
        if let Err(unmet) = slot.unit.conditions.check(first_boot, |p| p.exists()) {
            slot.set(UnitState::Skipped, unmet.clone());
            self.note(name, &format!("skipped: {unmet}"));
            return;
        }
        self.start_run(name);
    }

    /// Everything a run needs that can fail before exec.
    fn prepare(&mut self, name: &UnitName) -> Result<Prepared, String> {
        let Some(slot) = self.slots.get(name) else { return Err("no such unit".into()) };
        let unit = Arc::clone(&slot.unit);
        let svc = &unit.service;
        let credentials = if svc.user.is_none() && svc.group.is_none() {
            Credentials::ROOT
        } else {
            let passwd = std::fs::read_to_string(&self.config.passwd).unwrap_or_default();
            let group = std::fs::read_to_string(&self.config.group).unwrap_or_default();
            accounts::resolve(svc.user.as_ref(), svc.group.as_ref(), &passwd, &group)?
        };
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
        Ok(Prepared { unit, credentials, members, procs, cgroup, notify, stdout, stderr })
    }

    /// Execs a run of the unit and hands it to a runner task.
    fn start_run(&mut self, name: &UnitName) {
        let prepared = self.prepare(name);
        let Some(slot) = self.slots.get_mut(name) else { return };
        slot.cancel_timer();
        if slot.ever_started {
            slot.restarts = slot.restarts.saturating_add(1);
        }
        slot.ever_started = true;
        slot.starts.push_back(Instant::now());
        slot.status_text.clear();
        let p = match prepared {
            Ok(p) => p,
            Err(e) => return self.spawn_failed(name, e),
        };
        let svc = &p.unit.service;
        let program = svc.exec.first().cloned().unwrap_or_default();
        let cmd = exec::command(Launch {
            argv: &svc.exec,
            environment: &svc.environment,
            working_directory: svc.working_directory.as_deref(),
            credentials: &p.credentials,
            notify_socket: p.notify.as_ref().map(NotifySocket::path),
            cgroup_procs: p.procs,
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
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        let Some(slot) = self.slots.get_mut(name) else { return };
        let members = match p.members {
            Members::Sessions(_) => {
                slot.sessions.push(pid);
                Members::Sessions(slot.sessions.clone())
            }
            m => m,
        };
        slot.pid = pid;
        slot.exec_us = exec_us;
        if slot.started_us == 0 {
            slot.started_us = exec_us;
        }
        slot.ready_after_us = 0;
        slot.live = Some(Live { id, stop: stop_tx, stop_sent: false });
        let ready_at_exec = svc.ready == Ready::Started;
        slot.set(UnitState::Starting, "");
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
        };
        tokio::spawn(runner.run());
        self.note(name, &format!("started {program} (pid {pid})"));
        if ready_at_exec {
            self.ready(name);
        }
    }

    fn spawn_failed(&mut self, name: &UnitName, error: String) {
        let outcome = Outcome { exit: None, cause: Cause::SpawnFailed(error), was_ready: false };
        let what = describe(&outcome, Kind::LongRunning);
        self.note(name, &what);
        self.decide(name, outcome, what);
    }

    // ---- reload -------------------------------------------------------------

    fn reload(&mut self, plan: Plan) -> ReloadReport {
        let Plan { units, mut needs, excluded, .. } = plan;
        let mut excluded: BTreeMap<UnitName, (Unit, String)> =
            excluded.into_iter().map(|(n, x)| (n, (x.unit, format!("not started: {}", x.reason)))).collect();
        let mut report = ReloadReport::default();
        let gone: Vec<UnitName> = self.slots.keys().filter(|n| !units.contains_key(*n)).cloned().collect();
        for name in gone {
            let reason = excluded.get(&name).map(|(_, r)| r.clone());
            let Some(slot) = self.slots.get_mut(&name) else { continue };
            if slot.excluded.is_some() {
                // Still (or no longer) left out: just take the new reason.
                match excluded.remove(&name) {
                    Some((unit, r)) => {
                        slot.unit = Arc::new(unit);
                        slot.set(UnitState::Failed, r.clone());
                        slot.excluded = Some(r);
                    }
                    None => {
                        self.slots.remove(&name);
                    }
                }
                continue;
            }
            report.removed.push(name.to_string());
            match &mut slot.live {
                Some(live) => {
                    slot.next = Next::Retire(reason);
                    if !live.stop_sent {
                        live.stop_sent = true;
                        let _ = live.stop.send(StopRequest { whole_group: true });
                    }
                    slot.set(UnitState::Stopping, "removed from the units");
                }
                None => self.retire(&name, reason),
            }
            excluded.remove(&name);
        }
        for (name, unit) in units {
            let n = needs.remove(&name).unwrap_or_default();
            let Some(slot) = self.slots.get_mut(&name) else {
                report.added.push(name.to_string());
                self.slots.insert(name, Slot::new(unit, n, None));
                continue;
            };
            if slot.excluded.is_some() {
                report.added.push(name.to_string());
                let waiters = std::mem::take(&mut slot.waiters);
                *slot = Slot::new(unit, n, None);
                slot.waiters = waiters;
                continue;
            }
            slot.needs = n;
            let changed = !same_definition(&slot.unit, &unit);
            if changed {
                report.changed.push(name.to_string());
                // The running process keeps the definition it was started
                // with; the next start takes this one.
                slot.unit = Arc::new(unit);
            }
            // Removed by an earlier reload and still stopping: it is back.
            let returning = matches!(slot.next, Next::Retire(_));
            if returning {
                report.added.push(name.to_string());
            }
            match &mut slot.live {
                Some(_) if returning => slot.next = Next::Restart,
                Some(live) if changed && !matches!(slot.next, Next::Stop) => {
                    slot.next = Next::Restart;
                    if !live.stop_sent {
                        live.stop_sent = true;
                        let _ =
                            live.stop.send(StopRequest { whole_group: slot.unit.service.kill_mode == KillMode::Group });
                    }
                    slot.set(UnitState::Stopping, "restarting with its new definition");
                }
                Some(_) => {}
                None => {
                    if changed && slot.state != UnitState::Inactive {
                        self.activate(&name, &mut BTreeSet::new());
                    }
                }
            }
        }
        for (name, (unit, reason)) in excluded {
            self.slots.entry(name).or_insert_with(|| Slot::new(unit, Needs::default(), Some(reason)));
        }
        report
    }

    /// A unit gone from the plan and not running: what its group still
    /// holds is cleared; it is dropped, or kept as left out.
    fn retire(&mut self, name: &UnitName, reason: Option<String>) {
        let members = self.members(name);
        let Some(slot) = self.slots.get_mut(name) else { return };
        slot.cancel_timer();
        let (sig, timeout) = (slot.unit.service.stop_signal, slot.unit.service.stop_timeout);
        match reason {
            Some(r) => {
                slot.excluded = Some(r.clone());
                slot.needs = Needs::default();
                slot.set(UnitState::Failed, r);
            }
            None => {
                let waiters = std::mem::take(&mut slot.waiters);
                let status = UnitStatus { state: UnitState::Inactive, reason: "removed".into(), ..slot.status() };
                for w in waiters {
                    let _ = w.send(Ok(status.clone()));
                }
                self.slots.remove(name);
            }
        }
        if members.is_empty() {
            self.remove_group(name);
        } else {
            self.clear_in_background(name, members, sig, timeout);
        }
    }

    fn members(&self, name: &UnitName) -> Members {
        match &self.config.cgroups {
            Some(cg) => Members::Cgroup(cg.group(name.as_str())),
            None => Members::Sessions(self.slots.get(name).map(|s| s.sessions.clone()).unwrap_or_default()),
        }
    }

    fn clear_in_background(&self, name: &UnitName, members: Members, sig: nix::sys::signal::Signal, timeout: Duration) {
        let tx = self.events_tx.clone();
        let unit = name.clone();
        tokio::spawn(async move {
            let result = members.clear(sig, timeout).await;
            let _ = tx.send(Event::Cleared { unit, result });
        });
    }

    fn remove_group(&self, name: &UnitName) {
        if let Some(cg) = &self.config.cgroups {
            let g = cg.group(name.as_str());
            if g.is_empty() {
                if let Err(e) = g.remove() {
                    crate::journal::init_line(&format!("{name}: {e}"));
                }
            }
        }
    }

    // ---- shutdown -----------------------------------------------------------

    fn begin_shutdown(&mut self) {
        if !self.shutting_down {
            self.shutting_down = true;
            for slot in self.slots.values_mut() {
                slot.cancel_timer();
                if slot.live.is_none() && matches!(slot.state, UnitState::Waiting | UnitState::Restarting) {
                    slot.set(UnitState::Inactive, "not started: shutdown");
                }
            }
        }
        self.advance_shutdown();
    }

    /// Stops every unit whose dependents have all stopped, until nothing
    /// changes; answers stop_all once all are down.
    fn advance_shutdown(&mut self) {
        if !self.shutting_down {
            return;
        }
        loop {
            let mut changed = false;
            let names: Vec<UnitName> = self.slots.keys().cloned().collect();
            for name in names {
                let Some(slot) = self.slots.get(&name) else { continue };
                if slot.down != Down::Up {
                    continue;
                }
                let dependents_down =
                    slot.needs.dependents.iter().all(|d| self.slots.get(d).is_none_or(|s| s.down == Down::Done));
                if !dependents_down {
                    continue;
                }
                let members = self.members(&name);
                let Some(slot) = self.slots.get_mut(&name) else { continue };
                if let Some(live) = &mut slot.live {
                    if !live.stop_sent {
                        live.stop_sent = true;
                        let _ = live.stop.send(StopRequest { whole_group: true });
                        slot.set(UnitState::Stopping, "shutdown");
                    }
                    continue;
                }
                if members.is_empty() {
                    slot.down = Down::Done;
                    if slot.excluded.is_none() && slot.state != UnitState::Inactive {
                        slot.set(UnitState::Inactive, "stopped (shutdown)");
                    }
                    self.remove_group(&name);
                } else {
                    slot.down = Down::Clearing;
                    let (sig, timeout) = (slot.unit.service.stop_signal, slot.unit.service.stop_timeout);
                    self.note(&name, "shutdown: stopping what is left in its group");
                    self.clear_in_background(&name, members, sig, timeout);
                }
                changed = true;
            }
            if !changed {
                break;
            }
        }
        if self.slots.values().all(|s| s.down == Down::Done) {
            for w in self.shutdown_waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
        }
    }

    // ---- reporting ----------------------------------------------------------

    fn publish(&mut self) {
        for slot in self.slots.values_mut() {
            if !slot.waiters.is_empty() && slot.settled() {
                let status = slot.status();
                for w in slot.waiters.drain(..) {
                    let _ = w.send(Ok(status.clone()));
                }
            }
        }
        let pending: Vec<String> =
            self.slots.iter().filter(|(_, s)| !s.settled()).map(|(n, _)| n.to_string()).collect();
        let failed: Vec<String> =
            self.slots.iter().filter(|(_, s)| s.state == UnitState::Failed).map(|(n, _)| n.to_string()).collect();
        let settled = pending.is_empty();
        if settled && self.ready_us == 0 {
            self.ready_us = now_us();
        }
        let next = Settle { settled, failed, pending };
        self.settle.send_if_modified(|s| {
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    }

    fn timeline(&self) -> Timeline {
        let units = self
            .slots
            .iter()
            .filter(|(_, s)| s.excluded.is_none())
            .map(|(name, s)| TimelineEntry {
                name: name.to_string(),
                waited_from_us: s.waited_from_us,
                started_us: s.started_us,
                ready_us: s.ready_us,
                waited_for: s.needs.waits_for().into_iter().map(|n| n.to_string()).collect(),
            })
            .collect();
        Timeline { pid1_start_us: self.config.pid1_start_us, ready_us: self.ready_us, units }
    }
}

struct Prepared {
    unit: Arc<Unit>,
    credentials: Credentials,
    members: Members,
    procs: Option<std::fs::File>,
    cgroup: Option<crate::cgroup::Group>,
    notify: Option<NotifySocket>,
    stdout: Stdio,
    stderr: Stdio,
}
