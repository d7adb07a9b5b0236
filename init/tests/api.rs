//! The control API end to end: a fake service manager behind the real
//! server (on a current_thread runtime of its own, as in PID1), driven by
//! the real `berthctl` binary and by the client API.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use berth_init::api::{self, ConfigReport, Control, ControlError, ReloadOutcome, ServerConfig};
use berth_init::berthctl::{Client, ClientError};
use berth_init::journal::{Record, Stream, Timestamp};
use berth_init::power::Action;
use berth_init::status::{Exit, Timeline, TimelineEntry, UnitState, UnitStatus};
use berth_provision::machine::{InForce, Outcome, Status};

// ---------------------------------------------------------------- the fake

#[derive(Default)]
struct State {
    units: Vec<UnitStatus>,
    calls: Vec<String>,
    timeline: Option<Timeline>,
    provisioning: Option<Status>,
    in_force: Option<InForce>,
}

/// The document the fake keeps in force (and `config show` prints).
const IN_FORCE: &str = "#cloud-config\nhostname: web-1\n";

fn boot_status() -> Status {
    Status {
        outcome: Outcome::Rejected,
        source: Some("fw_cfg:opt/org.berth/user-data".into()),
        instance_id: None,
        sha256: None,
        probe_ms: 4,
        errors: vec!["fw_cfg:opt/org.berth/user-data:3: key users[0].shell: expected a string, found a list".into()],
        warnings: vec!["fw_cfg:opt/org.berth/user-data:7: key packages: not supported by Berth".into()],
        trial_until: None,
    }
}

fn in_force(trial_until: Option<u64>) -> InForce {
    InForce {
        source: "/root/web.yaml".into(),
        instance_id: "i-0123".into(),
        sha256: "5e".repeat(32),
        applied_at: 1_795_910_399,
        warnings: vec![],
        text: IN_FORCE.into(),
        trial_until,
    }
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn with_units() -> Fake {
        let fake = Fake::default();
        {
            let mut st = fake.0.lock().unwrap();
            st.units = vec![
                unit("network", UnitState::Active, 101, None, 800_000),
                UnitStatus {
                    description: "the KV store".into(),
                    reason: "start limit hit".into(),
                    restarts: 5,
                    ..unit("etcd", UnitState::Failed, 0, Some(Exit::Code(1)), 0)
                },
                unit("containerd", UnitState::Active, 100, Some(Exit::Signal(9)), 1_500_000),
            ];
            st.timeline = Some(boot_timeline());
            st.provisioning = Some(boot_status());
            st.in_force = Some(in_force(None));
        }
        fake
    }

    fn set_provisioning(&self, p: Option<Status>) {
        self.0.lock().unwrap().provisioning = p;
    }

    fn set_in_force(&self, f: Option<InForce>) {
        self.0.lock().unwrap().in_force = f;
    }

    fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().calls.clone()
    }

    fn find(&self, name: &str) -> Result<UnitStatus, ControlError> {
        let st = self.0.lock().unwrap();
        st.units.iter().find(|u| u.name == name).cloned().ok_or_else(|| ControlError::NoUnit(name.to_string()))
    }

    fn act(&self, what: &str, name: &str) -> Result<(), ControlError> {
        self.find(name)?;
        self.0.lock().unwrap().calls.push(format!("{what} {name}"));
        Ok(())
    }
}

impl Control for Fake {
    async fn list(&self) -> Vec<UnitStatus> {
        self.0.lock().unwrap().units.clone()
    }

    async fn status(&self, unit: &str) -> Result<UnitStatus, ControlError> {
        self.find(unit)
    }

    async fn start(&self, unit: &str) -> Result<(), ControlError> {
        self.act("start", unit)
    }

    async fn stop(&self, unit: &str) -> Result<(), ControlError> {
        self.act("stop", unit)
    }

    async fn restart(&self, unit: &str) -> Result<(), ControlError> {
        self.act("restart", unit)
    }

    async fn reload(&self) -> Result<ReloadOutcome, ControlError> {
        self.0.lock().unwrap().calls.push("reload".into());
        Ok(ReloadOutcome {
            added: vec!["router".into()],
            removed: vec![],
            changed: vec!["etcd".into()],
            errors: vec!["/etc/berth/units/bad.toml: line 3: unknown key \"exce\"".into()],
        })
    }

    async fn timeline(&self) -> Timeline {
        self.0.lock().unwrap().timeline.clone().unwrap_or(Timeline {
            initrd_start_us: 0,
            pid1_start_us: 0,
            ready_us: 0,
            units: vec![],
        })
    }

    async fn power(&self, action: Action) {
        self.0.lock().unwrap().calls.push(format!("{action:?}"));
    }

    async fn provisioning(&self) -> Option<Status> {
        self.0.lock().unwrap().provisioning.clone()
    }

    /// A document with `bad` in it is invalid; with `unit-fails`, applied
    /// with a problem; `--try` puts it on trial.
    async fn config_apply(
        &self,
        source: &str,
        bytes: Vec<u8>,
        try_for: Option<Duration>,
    ) -> Result<ConfigReport, ControlError> {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut st = self.0.lock().unwrap();
        st.calls.push(format!("apply {source} {} bytes, try {:?}", bytes.len(), try_for.map(|d| d.as_secs())));
        if text.contains("bad") {
            return Err(ControlError::Invalid(vec![
                format!("{source}:2: key hostname: expected a string, found a list"),
                format!("{source}:4: key write_files[0].permissions: \"0z44\" is not an octal mode"),
            ]));
        }
        if st.in_force.as_ref().is_some_and(|f| f.trial_until.is_some()) {
            return Err(ControlError::Refused("a configuration on trial reverts at 5: confirm it or wait".into()));
        }
        let trial_until = try_for.map(|d| 1_795_910_399 + d.as_secs());
        st.in_force = Some(InForce { source: source.into(), text, ..in_force(trial_until) });
        let mut report = ConfigReport {
            changes: vec!["hostname: web-1 -> web-2".into(), "unit user-web: added".into()],
            units_changed: vec!["user-web".into(), "etcd".into()],
            hostname: "web-2".into(),
            warnings: vec![format!("{source}:9: key packages: not supported by Berth")],
            trial_until: trial_until.unwrap_or(0),
            started: vec!["user-web".into()],
            stopped: vec![],
            restarted: vec!["etcd".into()],
            problems: vec![],
        };
        if st.in_force.as_ref().is_some_and(|f| f.text.contains("unit-fails")) {
            report.problems.push("restarting etcd: failed: exit 1".into());
        }
        Ok(report)
    }

    async fn config_confirm(&self) -> Result<(), ControlError> {
        let mut st = self.0.lock().unwrap();
        st.calls.push("confirm".into());
        match &mut st.in_force {
            Some(f) if f.trial_until.is_some() => {
                f.trial_until = None;
                Ok(())
            }
            _ => Err(ControlError::Refused("no configuration is on trial".into())),
        }
    }

    async fn config_show(&self) -> Result<Option<InForce>, ControlError> {
        Ok(self.0.lock().unwrap().in_force.clone())
    }
}

fn unit(name: &str, state: UnitState, pid: u32, last_exit: Option<Exit>, ready_after_us: u64) -> UnitStatus {
    UnitStatus { pid, since_us: 1_000_000, last_exit, ready_after_us, ..UnitStatus::new(name, state) }
}

fn entry(name: &str, started: u64, ready: u64, waited_for: &[&str]) -> TimelineEntry {
    TimelineEntry {
        name: name.into(),
        waited_from_us: 0,
        started_us: started,
        ready_us: ready,
        waited_for: waited_for.iter().map(|s| s.to_string()).collect(),
    }
}

fn boot_timeline() -> Timeline {
    Timeline {
        initrd_start_us: 700_000,
        pid1_start_us: 900_000,
        ready_us: 4_100_000,
        units: vec![
            entry("network", 1_000_000, 1_800_000, &[]),
            entry("containerd", 1_000_000, 2_500_000, &[]),
            entry("etcd", 1_800_000, 3_000_000, &["network"]),
            entry("router", 3_000_000, 4_100_000, &["etcd", "containerd"]),
            entry("sshd", 1_800_000, 1_850_000, &["network"]),
        ],
    }
}

// ---------------------------------------------------------------- the harness

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("berth-api-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

type OnHandle = Box<dyn FnOnce(&api::ServerHandle) + Send>;

/// The server on a current_thread runtime in a thread of its own, as in
/// PID1; stopped (and the thread joined) on drop.
struct TestServer {
    dir: TempDir,
    socket: PathBuf,
    logs: PathBuf,
    fake: Fake,
    /// Runs a closure on the server's handle, in its thread; dropped: stop.
    calls: Option<tokio::sync::mpsc::UnboundedSender<OnHandle>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    fn start(name: &str) -> TestServer {
        TestServer::start_with(name, |_| {})
    }

    /// `prepare` gets the socket path and the config before serving.
    fn start_with(name: &str, prepare: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = TempDir::new(name);
        let socket = dir.0.join("run/berth/control.sock");
        let logs = dir.0.join("log");
        std::fs::create_dir_all(&logs).unwrap();
        let mut config = ServerConfig::new(&socket, &logs);
        config.allowed_uids = vec![0, my_uid()];
        prepare(&mut config);
        let fake = Fake::with_units();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (calls_tx, mut calls_rx) = tokio::sync::mpsc::unbounded_channel::<OnHandle>();
        let control = fake.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                match api::serve_with(control, config) {
                    Ok(handle) => {
                        ready_tx.send(Ok(())).unwrap();
                        while let Some(f) = calls_rx.recv().await {
                            f(&handle);
                        }
                        drop(handle);
                    }
                    Err(e) => ready_tx.send(Err(e.to_string())).unwrap(),
                }
            });
        });
        ready_rx.recv().unwrap().unwrap();
        TestServer { dir, socket, logs, fake, calls: Some(calls_tx), thread: Some(thread) }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_berthctl")).arg("--socket").arg(&self.socket).args(args).output().unwrap()
    }

    fn on_handle(&self, f: impl FnOnce(&api::ServerHandle) + Send + 'static) {
        let (done_tx, done_rx) = mpsc::channel();
        let call = move |h: &api::ServerHandle| {
            f(h);
            let _ = done_tx.send(());
        };
        self.calls.as_ref().unwrap().send(Box::new(call)).unwrap();
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    fn write_log(&self, unit: &str, lines: &[(Stream, &str)]) {
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(self.logs.join(format!("{unit}.log"))).unwrap();
        for (i, (stream, text)) in lines.iter().enumerate() {
            let r = Record::new(Timestamp(1_795_910_399_000_000 + i as i64), *stream, *text);
            writeln!(f, "{}", r.to_line()).unwrap();
        }
    }

    fn client<T>(&self, f: impl AsyncFnOnce(Client) -> T) -> T {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let client = Client::connect(&self.socket).await.unwrap();
            f(client).await
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.calls.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = &self.dir;
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---------------------------------------------------------------- berthctl

#[test]
fn status_table_lists_every_unit_sorted_with_the_failed_named() {
    let s = TestServer::start("table");
    let o = s.ctl(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("UNIT        STATE   SINCE"), "{out}");
    assert!(lines[0].ends_with("PID  RESTARTS  READY-TIME  LAST-EXIT"), "{out}");
    assert!(lines[1].starts_with("containerd  active  "), "{out}");
    assert!(lines[1].contains(" 100  ") && lines[1].contains(" 1s 500ms ") && lines[1].ends_with("SIGKILL"), "{out}");
    assert!(lines[2].starts_with("etcd        failed  ") && lines[2].ends_with("exit 1"), "{out}");
    assert!(lines[2].contains(" 5 "), "{out}");
    assert!(lines[3].starts_with("network     active  ") && lines[3].contains(" 800ms "), "{out}");
    assert!(out.contains("\n3 units, 1 failed: etcd\n\nUser data: rejected\n"), "{out}");
}

#[test]
fn status_of_a_unit_shows_details_and_logs_and_exits_3_when_not_active() {
    let s = TestServer::start("details");
    let lines: Vec<String> = (0..15).map(|i| format!("etcd line {i}")).collect();
    let records: Vec<(Stream, &str)> = lines.iter().map(|l| (Stream::Stderr, l.as_str())).collect();
    s.write_log("etcd", &records);

    let o = s.ctl(&["status", "etcd"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("etcd - the KV store\n     State: failed since @1s ("), "{out}");
    assert!(out.contains("    Reason: start limit hit\n"), "{out}");
    assert!(out.contains("  Restarts: 5\n"), "{out}");
    assert!(out.contains(" Last exit: exit 1\n"), "{out}");
    assert!(!out.contains("etcd line 4\n"), "{out}");
    assert!(out.contains("Z stderr etcd line 5\n") && out.ends_with("Z stderr etcd line 14\n"), "{out}");

    let o = s.ctl(&["status", "containerd"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("       PID: 100\n"));
}

#[test]
fn start_stop_restart_reload_and_power_reach_the_manager() {
    let s = TestServer::start("actions");
    for args in [&["start", "etcd"][..], &["stop", "network"], &["restart", "containerd"], &["reboot"], &["poweroff"]] {
        let o = s.ctl(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "");
    }
    let o = s.ctl(&["reload"]);
    assert_eq!(o.status.code(), Some(1), "unit file errors make reload fail");
    assert_eq!(stdout(&o), "added: router\nchanged: etcd\n");
    assert_eq!(stderr(&o), "berthctl: /etc/berth/units/bad.toml: line 3: unknown key \"exce\"\n");
    assert_eq!(s.fake.calls(), ["start etcd", "stop network", "restart containerd", "Reboot", "Poweroff", "reload"]);
}

#[test]
fn an_unknown_unit_is_an_error_with_exit_1() {
    let s = TestServer::start("unknown");
    for args in [&["start", "nope"][..], &["stop", "nope"], &["status", "nope"], &["logs", "nope"], &["logs", "../etc"]]
    {
        let o = s.ctl(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let unit = args[1];
        assert_eq!(stderr(&o), format!("berthctl: no unit \"{unit}\"\n"), "{args:?}");
        assert_eq!(stdout(&o), "");
    }
    assert!(s.fake.calls().is_empty());
}

#[test]
fn logs_show_the_last_n_records() {
    let s = TestServer::start("logs");
    let lines: Vec<String> = (0..20).map(|i| format!("hello {i}")).collect();
    let records: Vec<(Stream, &str)> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (if i % 2 == 0 { Stream::Stdout } else { Stream::Stderr }, l.as_str()))
        .collect();
    s.write_log("containerd", &records);

    let o = s.ctl(&["logs", "containerd", "-n", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 3, "{out}");
    assert!(got[0].ends_with("Z stderr hello 17"), "{out}");
    assert!(got[2].ends_with("Z stderr hello 19"), "{out}");
    assert!(got[1].starts_with("2026-11-28T23:59:59.000018Z stdout hello 18"), "{out}");

    // The default is 10; PID1's own log is "berth", a unit without a unit.
    assert_eq!(stdout(&s.ctl(&["logs", "containerd"])).lines().count(), 10);
    s.write_log("berth", &[(Stream::Init, "booted")]);
    assert!(stdout(&s.ctl(&["logs", "berth"])).ends_with(" init booted\n"));
    // A unit that is gone still has its logs.
    s.write_log("old", &[(Stream::Stdout, "bye")]);
    assert!(stdout(&s.ctl(&["logs", "old"])).ends_with(" stdout bye\n"));
    // A loaded unit without logs yet: nothing, no error.
    let o = s.ctl(&["logs", "network"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), String::new()));
}

/// `berthctl logs etcd -f -n 1`, and its lines as they come.
fn follow_etcd(s: &TestServer) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .arg("--socket")
        .arg(&s.socket)
        .args(["logs", "etcd", "-f", "-n", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn logs_follow_prints_what_is_appended() {
    let s = TestServer::start("follow");
    s.write_log("etcd", &[(Stream::Stdout, "before 1"), (Stream::Stdout, "before 2")]);
    let (mut child, rx) = follow_etcd(&s);
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.ends_with(" stdout before 2"), "{first}");
    s.write_log("etcd", &[(Stream::Stderr, "after")]);
    let next = rx.recv_timeout(Duration::from_secs(20));
    child.kill().unwrap();
    let _ = child.wait();
    let next = next.unwrap();
    assert!(next.ends_with(" stderr after"), "{next}");
}

#[test]
fn analyze_prints_blame_and_the_critical_chain() {
    let s = TestServer::start("analyze");
    let o = s.ctl(&["analyze"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("Startup finished in 700ms (kernel) + 200ms (initrd) + 3s 200ms (userspace) = 4s 100ms\n"),
        "{out}"
    );
    let blame = concat!(
        "\nBlame (exec to ready):\n",
        "1s 500ms containerd\n",
        "1s 200ms etcd\n",
        "1s 100ms router\n",
        "   800ms network\n",
        "    50ms sshd\n",
    );
    assert!(out.contains(blame), "{out}");
    // router waited for etcd (ready @3.0s) and containerd (@2.5s): etcd.
    let chain = "router @4s 100ms +1s 100ms\n└─etcd @3s +1s 200ms\n  └─network @1s 800ms +800ms\n";
    assert!(out.contains(chain), "{out}");
}

// ---------------------------------------------------------------- the client API

#[test]
fn the_client_api_carries_every_value() {
    let s = TestServer::start("client");
    s.write_log("network", &[(Stream::Stdout, "up")]);
    let fake = s.fake.clone();
    s.client(async |c| {
        let mut units = c.list().await.unwrap();
        units.sort_by(|a, b| a.name.cmp(&b.name));
        let mut want = fake.0.lock().unwrap().units.clone();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(units, want);
        assert_eq!(c.status("etcd").await.unwrap(), want[1]);
        assert_eq!(c.timeline().await.unwrap(), boot_timeline());
        let report = c.reload().await.unwrap();
        assert_eq!(report.added, ["router"]);
        let logs = c.logs("network", 5).await.unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!((logs[0].stream, logs[0].text.as_str()), (Stream::Stdout, "up"));
        match c.start("nope").await {
            Err(ClientError::Remote { name, message }) => {
                assert_eq!(name, "NoUnit");
                assert_eq!(message, "no unit \"nope\"");
            }
            other => panic!("{other:?}"),
        }
        // FollowNext before Follow is refused, not a hang.
        assert!(matches!(c.follow_next(Duration::from_millis(10)).await, Err(ClientError::Remote { .. })));
        let backlog = c.follow("network", 0).await.unwrap();
        assert!(backlog.is_empty());
        let t0 = Instant::now();
        assert!(c.follow_next(Duration::from_millis(300)).await.unwrap().is_empty());
        assert!(t0.elapsed() >= Duration::from_millis(250));
        c.reboot().await.unwrap();
        c.power_off().await.unwrap();
    });
    assert_eq!(s.fake.calls(), ["reload", "Reboot", "Poweroff"]);
}

/// The files this process (the server runs in it) holds open under `dir`.
fn open_files_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(dir))
        .collect()
}

#[test]
fn close_logs_lets_go_of_followed_files() {
    let s = TestServer::start("close-logs");
    s.write_log("etcd", &[(Stream::Stdout, "one")]);
    s.client(async |c| {
        assert_eq!(c.follow("etcd", 5).await.unwrap().len(), 1);
        assert_eq!(open_files_under(&s.logs).len(), 1, "the follower holds etcd.log");
        s.on_handle(|h| h.close_logs());
        assert_eq!(open_files_under(&s.logs), Vec::<PathBuf>::new());
        match c.follow_next(Duration::from_millis(10)).await {
            Err(ClientError::Remote { message, .. }) => assert!(message.contains("shutting down"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(c.follow("etcd", 1).await.is_err());
        // Plain reads still work.
        assert_eq!(c.logs("etcd", 5).await.unwrap().len(), 1);
    });
}

// ---------------------------------------------------------------- the socket

#[test]
fn socket_is_0600_in_a_0700_directory_and_removed_when_the_server_stops() {
    let s = TestServer::start("perms");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&s.socket), 0o600);
    assert_eq!(mode(s.socket.parent().unwrap()), 0o700);
    let socket = s.socket.clone();
    drop(s);
    assert!(!socket.exists());
}

#[test]
fn a_stale_socket_is_replaced() {
    // A socket file left by an earlier run: bound, then its process gone.
    let s = TestServer::start_with("stale", |config| {
        std::fs::create_dir_all(config.socket.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&config.socket).unwrap());
        assert!(config.socket.exists());
        assert!(UnixStream::connect(&config.socket).is_err(), "nobody listens on it");
    });
    let o = s.ctl(&["status", "containerd"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // A plain file in the way is replaced too.
    let s2 = TestServer::start_with("stale-file", |config| {
        std::fs::create_dir_all(config.socket.parent().unwrap()).unwrap();
        std::fs::write(&config.socket, "junk").unwrap();
    });
    assert_eq!(s2.ctl(&["status"]).status.code(), Some(0));
}

#[test]
fn a_directory_at_the_socket_path_is_an_error_not_a_panic() {
    let dir = TempDir::new("dir-in-the-way");
    let socket = dir.0.join("control.sock");
    std::fs::create_dir_all(&socket).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = rt.block_on(async { api::serve(Fake::default(), &socket, dir.0.join("log")) }).unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
    // And outside a runtime: an error too.
    let err = api::serve(Fake::default(), &dir.0.join("other.sock"), dir.0.join("log")).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[test]
fn a_client_of_another_uid_is_refused() {
    // We cannot change uid here: allow only one that is not ours.
    let other = my_uid().wrapping_add(1);
    let s = TestServer::start_with("uid", |config| config.allowed_uids = vec![other]);
    let o = s.ctl(&["status"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("berthctl: cannot connect to ") && err.contains("only root may use it"), "{err}");
    assert!(s.fake.calls().is_empty());
    // The connection is closed without a word.
    let mut raw = UnixStream::connect(&s.socket).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = raw.write_all(b"\0AUTH EXTERNAL 30\r\n");
    let mut buf = Vec::new();
    let _ = raw.read_to_end(&mut buf);
    assert!(buf.is_empty(), "{buf:?}");
}

#[test]
fn garbage_stalls_and_hang_ups_do_not_stop_the_server() {
    let s = TestServer::start_with("garbage", |config| config.handshake_timeout = Duration::from_millis(300));
    // Connects and says nothing: closed after the handshake deadline.
    let mut staller = UnixStream::connect(&s.socket).unwrap();
    // Garbage instead of a handshake.
    let mut junk = UnixStream::connect(&s.socket).unwrap();
    let _ = junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // A line that never ends.
    let mut endless = UnixStream::connect(&s.socket).unwrap();
    let _ = endless.write_all(&[b'\0'; 1]);
    let _ = endless.write_all(&[b'A'; 100_000]);
    // Hangs up in the middle.
    let mut half = UnixStream::connect(&s.socket).unwrap();
    let _ = half.write_all(b"\0AUTH EXT");
    drop(half);
    // Authenticates, then sends garbage instead of D-Bus messages.
    let mut after = UnixStream::connect(&s.socket).unwrap();
    after.write_all(b"\0AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n").unwrap();
    let _ = after.write_all(&[0xff; 4096]);

    // Meanwhile another client is served.
    let o = s.ctl(&["status", "containerd"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    staller.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let _ = staller.read_to_end(&mut buf);
    assert!(buf.is_empty() && t0.elapsed() < Duration::from_secs(5), "closed after the handshake deadline");
    for sock in [&mut junk, &mut endless, &mut after] {
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        // EOF (or a reset): the server closed it.
        let _ = sock.read_to_end(&mut buf);
    }

    // And still served afterwards, from the CLI and the client API.
    let o = s.ctl(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    s.client(async |c| assert_eq!(c.list().await.unwrap().len(), 3));
}

#[test]
fn an_idle_connection_is_closed() {
    let s = TestServer::start_with("idle", |config| config.idle_timeout = Duration::from_millis(300));
    s.client(async |c| {
        assert_eq!(c.list().await.unwrap().len(), 3);
        // Busy: calls keep it open past the idle time.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            c.list().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let err = c.list().await.unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_) | ClientError::Timeout { .. }), "{err:?}");
    });
}

#[test]
fn many_clients_at_once() {
    let s = TestServer::start("many");
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_berthctl"))
                .arg("--socket")
                .arg(&s.socket)
                .arg("status")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout(&o).contains("1 failed: etcd"));
    }
}

#[test]
fn no_server_is_a_clear_error() {
    let dir = TempDir::new("none");
    let o = Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .arg("--socket")
        .arg(dir.0.join("missing.sock"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("berthctl: cannot connect to ") && err.contains("missing.sock"), "{err}");
}

#[test]
fn logs_show_a_100000_byte_line_whole() {
    let s = TestServer::start("long-line");
    // Written by the real journal, as PID1 writes a service's output.
    let j = berth_init::journal::Journal::start(berth_init::journal::LogLimits::default()).unwrap();
    j.attach(&s.logs, Duration::from_secs(20)).unwrap();
    let long = format!("START-{}-END", "x".repeat(100_000 - 10));
    j.record("etcd", Stream::Stdout, &format!("before\n{long}\nafter")).unwrap();
    assert!(j.flush(Duration::from_secs(20)));
    let o = s.ctl(&["logs", "etcd", "-n", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{}", &out[..out.len().min(300)]);
    let text = lines[0].split_once(" stdout ").map(|(_, t)| t).unwrap_or_default();
    assert_eq!((text.len(), text == long), (100_000, true), "{}", &lines[0][..lines[0].len().min(300)]);
    assert!(lines[1].ends_with("Z stdout after"), "{}", lines[1]);
}

#[test]
fn logs_follow_joins_pieces_and_shows_a_line_not_ended_within_a_second_or_two() {
    let s = TestServer::start("follow-pieces");
    s.write_log("etcd", &[(Stream::Stdout, "before")]);
    let append = |records: &[Record]| {
        let mut f = std::fs::OpenOptions::new().append(true).open(s.logs.join("etcd.log")).unwrap();
        for r in records {
            writeln!(f, "{}", r.to_line()).unwrap();
        }
    };
    let (mut child, rx) = follow_etcd(&s);
    let next = || rx.recv_timeout(Duration::from_secs(20));
    let first = next();
    let t = Timestamp(1_795_910_400_000_000);
    // A long line's pieces written a moment apart: one line.
    append(&[Record::piece(t, Stream::Stdout, "long "), Record::new(t, Stream::Stderr, "other")]);
    std::thread::sleep(Duration::from_millis(300));
    append(&[Record::new(t, Stream::Stdout, "line")]);
    let (second, third) = (next(), next());
    // A line without its end: shown, marked, after a short hold.
    append(&[Record::piece(t, Stream::Stdout, "prompt> ")]);
    let held = Instant::now();
    let fourth = next();
    let took = held.elapsed();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(first.unwrap().ends_with(" stdout before"));
    assert_eq!(second.unwrap(), "2026-11-29T00:00:00.000000Z stderr other");
    assert_eq!(third.unwrap(), "2026-11-29T00:00:00.000000Z stdout long line");
    assert_eq!(fourth.unwrap(), "2026-11-29T00:00:00.000000Z stdout+ prompt> ");
    assert!(took < Duration::from_secs(3), "the held line came after {took:?}");
}

#[test]
fn update_without_an_updater_is_a_clear_error() {
    let dir = TempDir::new("no-updater");
    let o = Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .arg("--updater-socket")
        .arg(dir.0.join("updater.sock"))
        .args(["update", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("berthctl: cannot connect to ") && err.contains("updater.sock"), "{err}");
}

// ---------------------------------------------------------------- user data

#[test]
fn status_shows_user_data_with_every_error_and_warning() {
    let s = TestServer::start("userdata-status");
    let o = s.ctl(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let section = out.split("\n\nUser data: ").nth(1).unwrap_or_else(|| panic!("{out}"));
    // etcd's section follows (berthctl::etcd's tests look at it).
    let (section, etcd) = section.split_once("\netcd: ").unwrap_or_else(|| panic!("no etcd section: {out}"));
    assert!(!etcd.is_empty(), "{out}");
    assert_eq!(
        section,
        "rejected\n\
         \x20      Source: fw_cfg:opt/org.berth/user-data\n\
         \x20 Instance-id: -\n\
         \x20      SHA256: -\n\
         \x20  Probe time: 4ms\n\
         \x20       Error: fw_cfg:opt/org.berth/user-data:3: key users[0].shell: expected a string, found a list\n\
         \x20     Warning: fw_cfg:opt/org.berth/user-data:7: key packages: not supported by Berth\n"
    );
    // Before the boot step ran: the units still show, the rest is said.
    s.fake.set_provisioning(None);
    let o = s.ctl(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.split("\netcd: ").next().unwrap().ends_with("3 units, 1 failed: etcd\n"), "{out}");
    assert_eq!(stderr(&o), "berthctl: user data: user data: the boot step has not run\n");
}

#[test]
fn config_apply_prints_the_changes_and_the_units() {
    let s = TestServer::start("config-apply");
    let doc = s.dir.0.join("web.yaml");
    std::fs::write(&doc, "#cloud-config\nhostname: web-2\n").unwrap();
    let o = s.ctl(&["config", "apply", doc.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let warning = format!("warning: {}:9: key packages: not supported by Berth\n", doc.display());
    assert_eq!(
        stdout(&o),
        format!("hostname: web-1 -> web-2\nunit user-web: added\nstarted: user-web\nrestarted: etcd\n{warning}")
    );
    assert_eq!(s.fake.calls(), [format!("apply {} 30 bytes, try None", doc.display())]);
    // The document in force, from stdin too.
    let mut child = Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .arg("--socket")
        .arg(&s.socket)
        .args(["config", "apply", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"#cloud-config\nunit-fails: 1\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(4), "applied with a problem: {}", stderr(&o));
    assert!(stdout(&o).starts_with("hostname: web-1 -> web-2\n"), "{}", stdout(&o));
    assert_eq!(stderr(&o), "berthctl: applied, but: restarting etcd: failed: exit 1\n");
    assert_eq!(s.fake.calls()[1], "apply stdin 28 bytes, try None");
}

#[test]
fn an_invalid_document_prints_every_error_and_exits_1() {
    let s = TestServer::start("config-invalid");
    let doc = s.dir.0.join("bad.yaml");
    std::fs::write(&doc, "#cloud-config\nhostname: [bad]\n").unwrap();
    let o = s.ctl(&["config", "apply", doc.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    let d = doc.display();
    assert_eq!(
        stderr(&o),
        format!(
            "{d}:2: key hostname: expected a string, found a list\n\
             {d}:4: key write_files[0].permissions: \"0z44\" is not an octal mode\n\
             berthctl: {d}: 2 errors: nothing applied\n"
        )
    );
    // Nothing applied: the document in force is the one before.
    assert!(stdout(&s.ctl(&["config", "show"])).ends_with(IN_FORCE));
    // A file that is not there: its name, exit 1, nothing sent.
    let o = s.ctl(&["config", "apply", "/nonexistent/u.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("berthctl: /nonexistent/u.yaml: "), "{}", stderr(&o));
    assert_eq!(s.fake.calls().len(), 1);
}

#[test]
fn config_try_then_confirm_and_show() {
    let s = TestServer::start("config-try");
    let doc = s.dir.0.join("net.toml");
    std::fs::write(&doc, "#berth-config\nhostname = \"web-2\"\n").unwrap();
    // --try takes whole seconds, 1 to a day.
    for bad in ["0", "86401", "1m", "-5"] {
        let o = s.ctl(&["config", "apply", doc.to_str().unwrap(), "--try", bad]);
        assert_eq!(o.status.code(), Some(2), "--try {bad}: {}", stderr(&o));
    }
    let o = s.ctl(&["config", "apply", doc.to_str().unwrap(), "--try", "90"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("\non trial: reverts at 2026-11-29T00:01:29Z (in "), "{}", stdout(&o));
    assert_eq!(s.fake.calls(), [format!("apply {} 33 bytes, try Some(90)", doc.display())]);
    let o = s.ctl(&["config", "show"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with(&format!("     Source: {}\nInstance-id: i-0123\n", doc.display())), "{out}");
    assert!(out.contains("      Trial: reverts at 2026-11-29T00:01:29Z"), "{out}");
    assert!(out.ends_with("\n\n#berth-config\nhostname = \"web-2\"\n"), "{out}");
    // Another change while one is on trial is refused.
    let o = s.ctl(&["config", "apply", doc.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("berthctl: a configuration on trial reverts"), "{}", stderr(&o));
    let o = s.ctl(&["config", "confirm"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "confirmed: the configuration on trial stays in force\n");
    assert!(stdout(&s.ctl(&["config", "show"])).contains("      Trial: none\n"));
    let o = s.ctl(&["config", "confirm"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "berthctl: no configuration is on trial\n");
    // Nothing in force at all.
    s.fake.set_in_force(None);
    let o = s.ctl(&["config", "show"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("no user data is in force"), "{}", stdout(&o));
}

#[test]
fn the_client_api_carries_user_data() {
    let s = TestServer::start("client-userdata");
    s.fake.set_in_force(Some(in_force(Some(1_795_910_490))));
    s.client(async |c| {
        assert_eq!(c.provisioning().await.unwrap(), boot_status());
        assert_eq!(c.config_show().await.unwrap(), Some(in_force(Some(1_795_910_490))));
        c.config_confirm().await.unwrap();
        let report = c.config_apply("u.yaml", b"#cloud-config\n", Some(30)).await.unwrap();
        assert_eq!(report.trial_until, 1_795_910_429);
        assert_eq!(report.units_changed, ["user-web", "etcd"]);
        assert_eq!(report.hostname, "web-2");
        match c.config_apply("u.yaml", b"bad", None).await {
            Err(ClientError::Remote { name, message }) => {
                assert_eq!(name, "Invalid");
                assert_eq!(message.lines().count(), 2, "{message}");
                assert!(message.starts_with("u.yaml:2: key hostname: "), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Too big, or too long a trial: refused before the manager sees it.
        let big = vec![b'#'; api::server::MAX_CONFIG_BYTES + 1];
        assert!(matches!(c.config_apply("big", &big, None).await, Err(ClientError::Remote { name, .. }) if name == "Refused"));
        assert!(matches!(c.config_apply("u", b"x", Some(86_401)).await, Err(ClientError::Remote { name, .. }) if name == "Refused"));
    });
    assert_eq!(s.fake.calls(), ["confirm", "apply u.yaml 14 bytes, try Some(30)", "apply u.yaml 3 bytes, try None"]);
}
