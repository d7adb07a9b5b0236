//! The supervisor with real child processes, on the host: the manager runs
//! as an ordinary process (a child subreaper), on a current_thread tokio
//! runtime as in PID1, with the global reaper driven by SIGCHLD.
//!
//! Tests that need cgroups (the whole group killed, nothing left) use a
//! fresh group under the host's cgroup2 mount and FAIL when there is none
//! or it is not writable: they never pass without testing.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use berth_init::cgroup::{self, Cgroups};
use berth_init::journal::{self, Journal};
use berth_init::reaper::Reaper;
use berth_init::status::{Exit, Timeline, TimelineEntry, UnitState, UnitStatus};
use berth_init::supervisor::{self, Config, Supervisor, SupervisorHandle};
use berth_init::unit;

const PY: &str = "/usr/bin/python3";

/// A Python snippet that sends `READY=1` on $NOTIFY_SOCKET after `delay`
/// seconds, then sleeps.
fn notify_after(delay: f64) -> String {
    format!(
        r#"["{PY}", "-c", "import os, socket, time; time.sleep({delay}); s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.connect(os.environ['NOTIFY_SOCKET']); s.send(b'STATUS=up\\nREADY=1'); time.sleep(30)"]"#
    )
}

/// `exec` for a shell script (TOML literal string: no escapes).
fn sh(script: &str) -> String {
    format!("[\"/bin/sh\", \"-c\", '''{script}''']")
}

fn reaper() -> &'static Reaper {
    static SUBREAPER: Once = Once::new();
    SUBREAPER.call_once(|| supervisor::become_subreaper().unwrap());
    Reaper::global()
}

fn journal_root() -> PathBuf {
    std::env::temp_dir().join(format!("berth-sup-logs-{}", std::process::id()))
}

/// Logs of earlier runs of this test binary whose process is gone.
fn remove_stale_logs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("berth-sup-logs-") {
            if !std::path::Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn journal() -> &'static Journal {
    static J: OnceLock<&'static Journal> = OnceLock::new();
    J.get_or_init(|| {
        remove_stale_logs();
        let j: &'static Journal = Box::leak(Box::new(Journal::start(journal::LogLimits::default()).unwrap()));
        j.attach(journal_root(), Duration::from_secs(5)).unwrap();
        j
    })
}

/// One test's directories (units, notify sockets, scratch files) and,
/// when asked for, its cgroup subtree; all removed at the end.
struct Env {
    dir: PathBuf,
    cgroups: Option<Cgroups>,
}

impl Env {
    fn new(name: &str) -> Env {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("berth-sup-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("units")).unwrap();
        Env { dir, cgroups: None }
    }

    /// With a cgroup subtree of its own; fails the test when the host has
    /// no writable cgroup2.
    fn with_cgroups(name: &str) -> Env {
        let mut env = Env::new(name);
        let Some(mount) = cgroup::cgroup2_mount() else {
            panic!("this test needs cgroup v2: no cgroup2 filesystem is mounted (see /proc/self/mounts)");
        };
        assert!(
            cgroup::is_cgroup2(&mount),
            "this test needs cgroup v2: {} is not a cgroup2 filesystem",
            mount.display()
        );
        let root = mount.join(format!("berth-test-{}", env.dir.file_name().unwrap().to_string_lossy()));
        env.cgroups = Some(Cgroups::setup(&root).unwrap_or_else(|e| {
            panic!("this test needs a writable cgroup v2 ({}): {e}; run it as root", root.display())
        }));
        env
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn unit(&self, name: &str, toml: &str) {
        std::fs::write(self.dir.join("units").join(format!("{name}.toml")), toml).unwrap();
    }

    fn remove_unit(&self, name: &str) {
        std::fs::remove_file(self.dir.join("units").join(format!("{name}.toml"))).unwrap();
    }

    fn plan(&self) -> unit::Plan {
        let plan = unit::plan(unit::load(&[&self.dir.join("units")]));
        assert!(plan.errors.is_empty(), "{:?}", plan.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>());
        assert!(plan.excluded.is_empty(), "{:?}", plan.excluded);
        plan
    }

    fn config(&self) -> Config {
        Config {
            cgroups: self.cgroups.clone(),
            notify_dir: self.dir.join("notify"),
            first_boot: false,
            ..Config::default()
        }
    }

    fn start(&self) -> SupervisorHandle {
        Supervisor::spawn(self.config(), self.plan(), Some(journal()), reaper())
    }

    fn group(&self, unit: &str) -> cgroup::Group {
        self.cgroups.as_ref().unwrap().group(unit)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(cg) = &self.cgroups {
            // A failed test must not leave processes or groups behind.
            let _ = cgroup::Group::at(cg.root()).kill();
            let deadline = Instant::now() + Duration::from_secs(5);
            while cg.remove().is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `test` on a current_thread runtime, as PID1 does, with the reaper
/// driven by SIGCHLD; at most 30 s.
fn run<F: Future<Output = ()>>(test: F) {
    let reaper = reaper();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        tokio::spawn(supervisor::reap_on_sigchld(reaper, Duration::from_millis(50)));
        tokio::time::timeout(Duration::from_secs(30), test).await.expect("test timed out");
    });
}

/// Polls the unit's status until `done` holds; fails after `limit`.
async fn wait_for(
    h: &SupervisorHandle,
    name: &str,
    limit: Duration,
    mut done: impl FnMut(&UnitStatus) -> bool,
) -> UnitStatus {
    let deadline = Instant::now() + limit;
    loop {
        let s = h.status(name).await.unwrap();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{name}: condition not reached within {limit:?}; last status {s:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The unit's entry in the boot timeline; fails the test when it has none.
fn timeline_entry(t: &Timeline, name: &str) -> TimelineEntry {
    t.units.iter().find(|u| u.name == name).unwrap_or_else(|| panic!("{name} is not in the timeline: {t:#?}")).clone()
}

async fn wait_state(h: &SupervisorHandle, name: &str, state: UnitState) -> UnitStatus {
    wait_for(h, name, Duration::from_secs(10), |s| s.state == state).await
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes; the reaper takes it soon.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

async fn wait_gone(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still alive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_pid(path: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(t) = std::fs::read_to_string(path) {
            if let Ok(pid) = t.trim().parse() {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no pid in {path}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The unit's journal lines of `stream`, waiting until one contains `want`.
async fn log_lines(unit: &str, want: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        journal().flush(Duration::from_secs(1));
        let lines: Vec<String> = journal::tail(&journal_root(), unit, 100)
            .unwrap()
            .into_iter()
            .map(|r| format!("{} {}", r.stream, r.text))
            .collect();
        if lines.iter().any(|l| l.contains(want)) {
            return lines;
        }
        assert!(Instant::now() < deadline, "{unit}: no log line with {want:?} in {lines:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- start order and readiness ------------------------------------------------

#[test]
fn independent_units_start_in_parallel_and_a_dependent_waits_for_ready() {
    let env = Env::new("parallel");
    let notify = notify_after(0.3);
    env.unit("par-a", &format!("[service]\nexec = {notify}\nready = \"notify\"\n"));
    env.unit("par-b", &format!("[service]\nexec = {notify}\nready = \"notify\"\n"));
    env.unit("par-c", &format!("[service]\nexec = {}\n[dependencies]\nrequires = [\"par-a\"]\n", sh("exec sleep 30")));
    run(async {
        let h = env.start();
        let settle = h.wait_settled().await.unwrap();
        assert!(settle.failed.is_empty(), "{settle:?}");
        let statuses = h.list().await.unwrap();
        for s in &statuses {
            assert_eq!(s.state, UnitState::Active, "{s:#?}");
            assert!(s.pid > 0);
        }
        let a = h.status("par-a").await.unwrap();
        assert!(a.ready_after_us >= 300_000, "READY=1 came 300 ms after exec: {a:#?}");
        assert_eq!(a.reason, "up", "STATUS= shows while active");

        let t = h.timeline().await.unwrap();
        let entry = |n: &str| timeline_entry(&t, n);
        let (a, b, c) = (entry("par-a"), entry("par-b"), entry("par-c"));
        // Both were exec'd before either was ready.
        assert!(a.started_us > 0 && b.started_us > 0);
        assert!(a.started_us < b.ready_us && b.started_us < a.ready_us, "{a:#?} {b:#?}");
        // The dependent waited for its requirement's READY=1.
        assert!(c.waited_from_us >= a.ready_us, "{a:#?} {c:#?}");
        assert!(c.started_us >= a.ready_us, "{a:#?} {c:#?}");
        assert_eq!(c.waited_for, vec!["par-a".to_string()]);
        assert_eq!((a.waited_from_us, a.waited_for.len()), (0, 0));
        for e in [&a, &b, &c] {
            assert!(e.started_us <= e.ready_us, "{e:#?}");
        }
        assert!(t.ready_us >= c.ready_us, "ready once every unit settled: {t:#?}");
        let lines = log_lines("par-a", "ready after").await;
        assert!(lines.iter().any(|l| l.starts_with("init started /usr/bin/python3")), "{lines:#?}");

        h.stop_all().await.unwrap();
        for s in h.list().await.unwrap() {
            assert_eq!((s.state, s.pid), (UnitState::Inactive, 0), "{s:#?}");
        }
        assert!(h.start("par-a").await.is_err(), "nothing starts after shutdown");
    });
}

/// PID1 execs the units of one pass together, four at a time (the
/// supervisor thread and three spawn threads), so with more than four the
/// order of a pass decides which wait for the others' execs: units that
/// others wait for go in the first four, though their names sort last.
#[test]
fn units_that_others_wait_for_are_spawned_first() {
    let env = Env::new("order");
    let sleep = sh("exec sleep 30");
    for n in 1..=4 {
        env.unit(&format!("order-alone-{n}"), &format!("[service]\nexec = {sleep}\n"));
    }
    env.unit("order-needed", &format!("[service]\nexec = {sleep}\n"));
    env.unit("order-dependent", &format!("[service]\nexec = {sleep}\n[dependencies]\nafter = [\"order-needed\"]\n"));
    run(async {
        let h = env.start();
        h.wait_settled().await.unwrap();
        let t = h.timeline().await.unwrap();
        let entry = |n: &str| timeline_entry(&t, n);
        let (last, needed) = (entry("order-alone-4"), entry("order-needed"));
        assert!(needed.started_us > 0 && needed.started_us < last.started_us, "{needed:#?} {last:#?}");
        for s in h.list().await.unwrap() {
            assert_eq!(s.state, UnitState::Active, "{s:#?}");
        }
        h.stop_all().await.unwrap();
    });
}

/// Of the units one pass can start, those the machine's readiness waits
/// for go in its first four execs, ahead of units that others wait for.
#[test]
fn units_the_ready_line_waits_for_are_spawned_first() {
    let env = Env::new("prio");
    let sleep = sh("exec sleep 30");
    env.unit("prio-ready", &format!("[service]\nexec = {sleep}\n[dependencies]\nrequired_for_ready = true\n"));
    for n in 1..=4 {
        env.unit(&format!("prio-helper-{n}"), &format!("[service]\nexec = {sleep}\n"));
        env.unit(
            &format!("prio-user-{n}"),
            &format!("[service]\nexec = {sleep}\n[dependencies]\nafter = [\"prio-helper-{n}\"]\n"),
        );
    }
    run(async {
        let h = env.start();
        h.wait_settled().await.unwrap();
        let t = h.timeline().await.unwrap();
        let entry = |n: &str| timeline_entry(&t, n);
        let (ready, last) = (entry("prio-ready"), entry("prio-helper-4"));
        assert!(ready.started_us > 0 && ready.started_us < last.started_us, "{ready:#?} {last:#?}");
        h.stop_all().await.unwrap();
    });
}

/// An `idle` unit (systemd's `Type=idle`) starts only once the boot's
/// other daemons have settled, not beside them: the units the machine's
/// readiness waits for and every long-running unit (the image's etcd,
/// which nothing needs for readiness), but not a oneshot nothing needs
/// (the image's `network-online`, which waits for the world outside) or a
/// unit that waits for it.
#[test]
fn an_idle_unit_starts_once_the_boots_daemons_have_settled() {
    let env = Env::new("idle");
    let sleep = sh("exec sleep 30");
    env.unit(
        "idle-runtime",
        &format!(
            "[service]\nexec = {}\nready = \"notify\"\n[dependencies]\nrequired_for_ready = true\n",
            notify_after(0.4)
        ),
    );
    env.unit("idle-kv", &format!("[service]\nexec = {}\nready = \"notify\"\n", notify_after(1.2)));
    // A oneshot nothing needs for readiness, waiting for the outside world.
    env.unit("idle-online", &format!("[service]\nexec = {sleep}\nkind = \"oneshot\"\n"));
    env.unit(
        "idle-sshd",
        &format!("[service]\nexec = {sleep}\n[dependencies]\nidle = true\nrequired_for_ready = true\n"),
    );
    // Needed for readiness, but after the idle unit: never waited for.
    env.unit(
        "idle-after",
        &format!("[service]\nexec = {sleep}\n[dependencies]\nafter = [\"idle-sshd\"]\nrequired_for_ready = true\n"),
    );
    run(async {
        let h = env.start();
        let held = wait_for(&h, "idle-sshd", Duration::from_secs(5), |s| s.reason.starts_with("waiting")).await;
        assert_eq!(held.state, UnitState::Waiting, "{held:#?}");
        assert!(held.reason.starts_with("waiting for the boot's units: idle-"), "{held:#?}");
        wait_state(&h, "idle-sshd", UnitState::Active).await;
        wait_state(&h, "idle-after", UnitState::Active).await;
        let t = h.timeline().await.unwrap();
        let entry = |n: &str| timeline_entry(&t, n);
        let (runtime, kv, sshd) = (entry("idle-runtime"), entry("idle-kv"), entry("idle-sshd"));
        assert!(sshd.started_us >= runtime.ready_us, "{runtime:#?} {sshd:#?}");
        assert!(kv.ready_us > 0 && sshd.started_us >= kv.ready_us, "held for idle-kv: {kv:#?} {sshd:#?}");
        assert_eq!(
            sshd.waited_for,
            vec!["idle-kv".to_string(), "idle-runtime".to_string()],
            "the timeline names what held it, and not the oneshot"
        );
        assert_eq!(h.status("idle-online").await.unwrap().state, UnitState::Starting, "the oneshot still runs");
        h.stop_all().await.unwrap();
    });
}

/// An idle unit waits at most its limit: a required runtime that never
/// becomes ready (a hung start) holds it back no longer than that.
#[test]
fn an_idle_unit_waits_no_longer_than_its_limit() {
    let env = Env::new("idle-limit");
    let sleep = sh("exec sleep 30");
    env.unit(
        "hung",
        &format!("[service]\nexec = {sleep}\nready = \"notify\"\n[dependencies]\nrequired_for_ready = true\n"),
    );
    env.unit("idle-late", &format!("[service]\nexec = {sleep}\n[dependencies]\nidle = true\n"));
    run(async {
        let config = Config { idle_limit: Duration::from_millis(600), ..env.config() };
        let h = Supervisor::spawn(config, env.plan(), Some(journal()), reaper());
        let s = wait_state(&h, "idle-late", UnitState::Active).await;
        assert_eq!(h.status("hung").await.unwrap().state, UnitState::Starting);
        let t = h.timeline().await.unwrap();
        let entry = |n: &str| timeline_entry(&t, n);
        let (hung, idle) = (entry("hung"), entry("idle-late"));
        let held_us = idle.started_us.saturating_sub(hung.started_us);
        assert!(held_us >= 550_000, "started {held_us} us after the hung unit, before its 600 ms limit: {s:#?}");
        h.stop_all().await.unwrap();
    });
}

/// Units started together in one pass whose programs ask for a
/// parent-death signal (`prctl(PR_SET_PDEATHSIG)`: `setpriv --pdeathsig`,
/// `bwrap --die-with-parent`, `tini -p`) all run to their end. Linux sends
/// that signal when the *thread* that forked the process exits; forked on
/// short-lived helper threads, as units once were, about half of them were
/// killed at once.
#[test]
fn units_that_ask_for_a_parent_death_signal_are_not_sent_it() {
    let env = Env::new("pdeathsig");
    let names: Vec<String> = (0..8).map(|i| format!("pdeath-{i}")).collect();
    for name in &names {
        env.unit(
            name,
            "[service]\nexec = [\"/usr/bin/setpriv\", \"--pdeathsig\", \"KILL\", \"--\", \"/bin/sleep\", \"0.3\"]\nkind = \"oneshot\"\n",
        );
    }
    run(async {
        let h = env.start();
        let settle = h.wait_settled().await.unwrap();
        assert!(settle.failed.is_empty(), "{settle:?}");
        for name in &names {
            let s = h.status(name).await.unwrap();
            assert_eq!((s.state, s.last_exit.clone()), (UnitState::Active, Some(Exit::Code(0))), "{s:#?}");
        }
        h.stop_all().await.unwrap();
    });
}

#[test]
fn tcp_readiness_waits_for_the_port() {
    let env = Env::new("tcp");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listener = format!(
        r#"["{PY}", "-c", "import socket, time; time.sleep(0.4); s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(30)"]"#
    );
    env.unit("tcp-srv", &format!("[service]\nexec = {listener}\nready = {{ tcp = \"127.0.0.1:{port}\" }}\n"));
    env.unit(
        "tcp-client",
        &format!("[service]\nexec = {}\n[dependencies]\nrequires = [\"tcp-srv\"]\n", sh("exec sleep 30")),
    );
    run(async {
        let h = env.start();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(h.status("tcp-srv").await.unwrap().state, UnitState::Starting);
        let client = h.status("tcp-client").await.unwrap();
        assert_eq!(client.state, UnitState::Waiting);
        assert_eq!(client.reason, "waiting for tcp-srv");
        h.wait_settled().await.unwrap();
        let srv = h.status("tcp-srv").await.unwrap();
        assert_eq!(srv.state, UnitState::Active);
        assert!(srv.ready_after_us >= 400_000, "{srv:#?}");
        let t = h.timeline().await.unwrap();
        let entry = |n: &str| timeline_entry(&t, n);
        assert!(entry("tcp-client").started_us >= entry("tcp-srv").ready_us);
        h.stop_all().await.unwrap();
    });
}

#[test]
fn oneshots_exit_0_is_active_and_a_failure_fails_what_requires_it() {
    let env = Env::new("oneshot");
    env.unit(
        "one-ok",
        &format!("[service]\nexec = {}\nkind = \"oneshot\"\n", sh("echo out-line; echo err-line >&2; sleep 0.1")),
    );
    env.unit("one-bad", &format!("[service]\nexec = {}\nkind = \"oneshot\"\n", sh("exit 1")));
    env.unit(
        "one-req",
        &format!("[service]\nexec = {}\n[dependencies]\nrequires = [\"one-bad\"]\n", sh("exec sleep 30")),
    );
    env.unit(
        "one-after",
        &format!("[service]\nexec = {}\n[dependencies]\nafter = [\"one-bad\"]\n", sh("exec sleep 30")),
    );
    run(async {
        let h = env.start();
        let settle = h.wait_settled().await.unwrap();
        assert_eq!(settle.failed, vec!["one-bad".to_string(), "one-req".to_string()]);
        let ok = h.status("one-ok").await.unwrap();
        assert_eq!((ok.state, ok.pid, ok.last_exit.clone()), (UnitState::Active, 0, Some(Exit::Code(0))));
        assert!(ok.ready_after_us >= 100_000, "{ok:#?}");
        let bad = h.status("one-bad").await.unwrap();
        assert_eq!((bad.state, bad.last_exit.clone()), (UnitState::Failed, Some(Exit::Code(1))));
        assert_eq!(bad.reason, "exit status 1");
        let req = h.status("one-req").await.unwrap();
        assert_eq!((req.state, req.reason.as_str(), req.pid), (UnitState::Failed, "dependency one-bad failed", 0));
        let t = h.timeline().await.unwrap();
        assert_eq!(t.units.iter().find(|u| u.name == "one-req").unwrap().started_us, 0, "never started");
        // `after` is ordering only: it started anyway.
        assert_eq!(h.status("one-after").await.unwrap().state, UnitState::Active);

        // Output goes to the unit's journal, by stream.
        let lines = log_lines("one-ok", "err-line").await;
        assert!(lines.contains(&"stdout out-line".to_string()), "{lines:#?}");
        assert!(lines.contains(&"stderr err-line".to_string()), "{lines:#?}");
        h.stop_all().await.unwrap();
    });
}

#[test]
fn skipped_units_do_not_block_their_dependents() {
    let env = Env::new("skip");
    env.unit(
        "skip-cond",
        &format!(
            "[service]\nexec = {}\n[conditions]\npath_exists = \"{}\"\n",
            sh("exec sleep 30"),
            env.path("missing")
        ),
    );
    env.unit("skip-first", &format!("[service]\nexec = {}\n[conditions]\nfirst_boot = true\n", sh("exec sleep 30")));
    env.unit(
        "skip-dep",
        &format!(
            "[service]\nexec = {}\n[dependencies]\nrequires = [\"skip-cond\", \"skip-first\"]\n",
            sh("exec sleep 30")
        ),
    );
    run(async {
        // The manager on a thread of its own, as PID1 may run it.
        let h = Supervisor::spawn_thread(env.config(), env.plan(), Some(journal()), reaper()).unwrap();
        h.wait_settled().await.unwrap();
        let cond = h.status("skip-cond").await.unwrap();
        assert_eq!(cond.state, UnitState::Skipped);
        assert!(cond.reason.contains("does not exist"), "{cond:#?}");
        let first = h.status("skip-first").await.unwrap();
        assert_eq!(
            (first.state, first.reason.as_str()),
            (UnitState::Skipped, "conditions.first_boot: not the first boot")
        );
        let dep = h.status("skip-dep").await.unwrap();
        assert_eq!(dep.state, UnitState::Active);
        // Shutdown as PID1's synchronous path does it: this thread blocks
        // (and reaps) while the manager's thread stops the units.
        assert!(h.stop_all_blocking(reaper(), Duration::from_secs(10), Duration::MAX, &mut || {}).unwrap());
        assert!(!alive(dep.pid));
        assert_eq!(h.status("skip-dep").await.unwrap().state, UnitState::Inactive);
    });
}

/// PID1's shutdown feeds its hardware watchdog from the loop that waits for
/// the units to stop: a unit that ignores SIGTERM keeps it waiting its
/// whole stop_timeout (minutes, for containerd), longer than the
/// watchdog's shutdown timeout, and it must be fed all along.
#[test]
fn stop_all_blocking_ticks_every_period_while_it_waits() {
    let env = Env::new("fed");
    env.unit("stubborn", &format!("[service]\nexec = {}\nstop_timeout = \"3s\"\n", sh("trap '' TERM; sleep 30")));
    run(async {
        let h = Supervisor::spawn_thread(env.config(), env.plan(), Some(journal()), reaper()).unwrap();
        let running = wait_state(&h, "stubborn", UnitState::Active).await;
        // The trap is set once the shell runs its sleep.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut calls = Vec::<Instant>::new();
        let period = Duration::from_secs(1);
        let begin = Instant::now();
        let done =
            h.stop_all_blocking(reaper(), Duration::from_secs(10), period, &mut || calls.push(Instant::now())).unwrap();
        let end = Instant::now();
        assert!(done);
        assert!(end - begin >= Duration::from_secs(3), "SIGTERM was ignored: it waited stop_timeout");
        assert!(!alive(running.pid));
        assert!(calls.len() >= 2, "fed {} times in {:?}", calls.len(), end - begin);
        // Never a period (and the loop's 20 ms poll, and a loaded machine's
        // slack) without a call, from the start to the end of the wait.
        let times: Vec<Instant> = std::iter::once(begin).chain(calls).chain(std::iter::once(end)).collect();
        for w in times.windows(2) {
            assert!(w[1] - w[0] <= period + Duration::from_millis(500), "a gap of {:?}", w[1] - w[0]);
        }
    });
}

// ---- restarts -------------------------------------------------------------------

#[test]
fn a_crash_loop_backs_off_and_ends_failed_at_the_start_limit() {
    let env = Env::new("crash");
    env.unit(
        "crash",
        &format!(
            "[service]\nexec = {}\n[restart]\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\nstart_limit = 4\n",
            sh("exit 3")
        ),
    );
    run(async {
        let h = env.start();
        let begin = Instant::now();
        let mut reasons: Vec<String> = Vec::new();
        let failed = wait_for(&h, "crash", Duration::from_secs(10), |s| {
            if s.state == UnitState::Restarting && reasons.last() != Some(&s.reason) {
                reasons.push(s.reason.clone());
            }
            s.state == UnitState::Failed
        })
        .await;
        let took = begin.elapsed();
        assert_eq!(
            reasons,
            vec![
                "restart in 100ms after: exit status 3",
                "restart in 200ms after: exit status 3",
                "restart in 400ms after: exit status 3",
            ],
            "the backoff doubles and shows in the reason"
        );
        assert!(took >= Duration::from_millis(700), "{took:?}");
        assert_eq!(failed.restarts, 3);
        assert_eq!(failed.last_exit, Some(Exit::Code(3)));
        assert_eq!(failed.reason, "start limit hit: 4 starts within 1m; last: exit status 3");
        // It stays failed: no more starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(h.status("crash").await.unwrap().restarts, 3);
        assert_eq!(h.wait_settled().await.unwrap().failed, vec!["crash".to_string()]);
        h.stop_all().await.unwrap();
    });
}

#[test]
fn a_killed_main_process_is_restarted_and_ready_again() {
    let env = Env::new("kill9");
    env.unit("kill9", &format!("[service]\nexec = {}\nready = \"notify\"\n", notify_after(0.0)));
    env.unit(
        "kill9-never",
        &format!(
            "[service]\nexec = {}\nready = \"notify\"\nstart_timeout = \"300ms\"\nstop_timeout = \"200ms\"\n[restart]\npolicy = \"never\"\n",
            sh("exec sleep 30")
        ),
    );
    run(async {
        let h = env.start();
        let first = wait_state(&h, "kill9", UnitState::Active).await;
        // SAFETY: kill of a child we started.
        assert_eq!(unsafe { libc::kill(first.pid as i32, libc::SIGKILL) }, 0);
        let again =
            wait_for(&h, "kill9", Duration::from_secs(10), |s| s.state == UnitState::Active && s.pid != first.pid)
                .await;
        assert_eq!(again.restarts, 1);
        assert_eq!(again.last_exit, Some(Exit::Signal(libc::SIGKILL)));
        assert!(!alive(first.pid));

        // Never ready within start_timeout: stopped, and (policy never) failed.
        let never = wait_state(&h, "kill9-never", UnitState::Failed).await;
        assert_eq!(never.reason, "not ready within 300ms");
        assert_eq!(never.last_exit, Some(Exit::Signal(libc::SIGTERM)));

        // Stop and start by hand.
        let stopped = h.stop("kill9").await.unwrap();
        assert_eq!((stopped.state, stopped.pid, stopped.reason.as_str()), (UnitState::Inactive, 0, "stopped"));
        assert!(!alive(again.pid));
        let started = h.start("kill9").await.unwrap();
        assert_eq!((started.state, started.restarts), (UnitState::Active, 2));
        let restarted = h.restart("kill9").await.unwrap();
        assert_eq!((restarted.state, restarted.restarts), (UnitState::Active, 3));
        assert_ne!(restarted.pid, started.pid);
        h.stop_all().await.unwrap();
    });
}

#[test]
fn a_failing_health_check_restarts_the_unit() {
    let env = Env::new("health");
    let (ran, healthy) = (env.path("ran"), env.path("healthy"));
    // Healthy from its second run on.
    let script = format!("if [ -e {ran} ]; then touch {healthy}; else touch {ran}; fi; exec sleep 30");
    env.unit(
        "health",
        &format!(
            "[service]\nexec = {}\n[health]\ncheck = {{ command = [\"/bin/sh\", \"-c\", \"test -e {healthy}\"] }}\ninterval = \"100ms\"\nfailures = 2\n",
            sh(&script)
        ),
    );
    run(async {
        let h = env.start();
        let first = wait_state(&h, "health", UnitState::Active).await;
        let again =
            wait_for(&h, "health", Duration::from_secs(10), |s| s.state == UnitState::Active && s.pid != first.pid)
                .await;
        assert_eq!(again.restarts, 1);
        assert!(!alive(first.pid));
        let lines = log_lines("health", "health check failed 2 times in a row").await;
        assert!(lines.iter().any(|l| l.contains("health check failed (1 of 2)")), "{lines:#?}");
        // Healthy now: it stays up.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let later = h.status("health").await.unwrap();
        assert_eq!((later.state, later.pid, later.restarts), (UnitState::Active, again.pid, 1));
        h.stop_all().await.unwrap();
    });
}

// ---- stopping ---------------------------------------------------------------------

/// A main process and a grandchild, both ignoring SIGTERM.
fn stubborn(env: &Env, name: &str) {
    let pidfile = env.path(&format!("{name}.grandchild"));
    env.unit(
        name,
        &format!(
            "[service]\nexec = {}\nstop_timeout = \"300ms\"\n",
            sh(&format!("trap '' TERM; sleep 30 & echo $! > {pidfile}; sleep 30"))
        ),
    );
}

async fn stop_stubborn(env: &Env, h: &SupervisorHandle, name: &str) {
    let running = wait_state(h, name, UnitState::Active).await;
    let grandchild = read_pid(&env.path(&format!("{name}.grandchild"))).await;
    assert!(alive(grandchild));
    let begin = Instant::now();
    let stopped = h.stop(name).await.unwrap();
    let took = begin.elapsed();
    assert!(took >= Duration::from_millis(300), "SIGTERM was ignored: it waited stop_timeout ({took:?})");
    assert!(took < Duration::from_millis(2300), "then killed at once ({took:?})");
    assert_eq!((stopped.state, stopped.last_exit), (UnitState::Inactive, Some(Exit::Signal(libc::SIGKILL))));
    wait_gone(running.pid, Duration::from_secs(1)).await;
    wait_gone(grandchild, Duration::from_secs(1)).await;
}

#[test]
fn stop_kills_the_whole_cgroup_after_stop_timeout() {
    let env = Env::with_cgroups("stopgroup");
    stubborn(&env, "stubborn");
    run(async {
        let h = env.start();
        let main = wait_state(&h, "stubborn", UnitState::Active).await.pid as i32;
        let grandchild = read_pid(&env.path("stubborn.grandchild")).await as i32;
        let group = env.group("stubborn");
        let pids = group.pids().unwrap();
        assert!(pids.contains(&main) && pids.contains(&grandchild), "both are in the unit's group: {pids:?}");
        stop_stubborn(&env, &h, "stubborn").await;
        assert!(group.is_empty(), "nothing of the group survives: {:?}", group.pids());
        h.stop_all().await.unwrap();
        assert!(!group.path().exists(), "the group is removed once stopped");
    });
}

#[test]
fn stop_kills_the_whole_session_without_cgroups() {
    let env = Env::new("stopsession");
    stubborn(&env, "stubborn-nocg");
    run(async {
        let h = env.start();
        stop_stubborn(&env, &h, "stubborn-nocg").await;
        h.stop_all().await.unwrap();
    });
}

#[test]
fn what_a_dead_main_process_leaves_in_its_group_is_stopped_before_the_restart() {
    let env = Env::with_cgroups("leftover");
    let pidfile = env.path("orphan");
    env.unit(
        "leftover",
        &format!(
            "[service]\nexec = {}\nstop_timeout = \"300ms\"\n[restart]\npolicy = \"never\"\n",
            sh(&format!("trap '' TERM; sleep 30 & echo $! > {pidfile}; sleep 0.2; exit 4"))
        ),
    );
    run(async {
        let h = env.start();
        let orphan = read_pid(&pidfile).await;
        // The main process is gone, the orphan (ignoring SIGTERM) is not yet.
        let stopping = wait_state(&h, "leftover", UnitState::Stopping).await;
        assert_eq!(stopping.pid, 0);
        assert_eq!(stopping.last_exit, Some(Exit::Code(4)));
        assert!(stopping.reason.contains("stopping the rest of its group"), "{stopping:#?}");
        let failed = wait_state(&h, "leftover", UnitState::Failed).await;
        assert_eq!((failed.reason.as_str(), failed.last_exit), ("exit status 4", Some(Exit::Code(4))));
        wait_gone(orphan, Duration::from_secs(1)).await;
        assert!(env.group("leftover").is_empty());
        h.stop_all().await.unwrap();
    });
}

#[test]
fn kill_mode_main_restart_keeps_the_grandchild_and_stop_all_kills_it() {
    let env = Env::with_cgroups("killmain");
    let pidfile = env.path("shim");
    env.unit(
        "containerd-like",
        &format!(
            "[service]\nexec = {}\nkill_mode = \"main\"\nstop_timeout = \"300ms\"\n[restart]\npolicy = \"always\"\n",
            sh(&format!("sleep 30 & echo $! > {pidfile}; exec sleep 30"))
        ),
    );
    run(async {
        let h = env.start();
        let first = wait_state(&h, "containerd-like", UnitState::Active).await;
        let shim = read_pid(&pidfile).await;
        std::fs::remove_file(&pidfile).unwrap();
        let again = h.restart("containerd-like").await.unwrap();
        assert_eq!(again.state, UnitState::Active);
        assert_ne!(again.pid, first.pid);
        wait_gone(first.pid, Duration::from_secs(1)).await;
        let shim2 = read_pid(&pidfile).await;
        assert!(alive(shim), "a restart under kill_mode main leaves the other processes running");
        let pids = env.group("containerd-like").pids().unwrap();
        assert!(pids.contains(&(shim as i32)) && pids.contains(&(again.pid as i32)), "{pids:?}");

        // Killing the main process: restarted (policy always), shims stay.
        // SAFETY: kill of a child we started.
        assert_eq!(unsafe { libc::kill(again.pid as i32, libc::SIGKILL) }, 0);
        let third = wait_for(&h, "containerd-like", Duration::from_secs(10), |s| {
            s.state == UnitState::Active && s.pid != again.pid
        })
        .await;
        assert!(alive(shim) && alive(shim2));

        h.stop_all().await.unwrap();
        for pid in [shim, shim2, third.pid] {
            wait_gone(pid, Duration::from_secs(1)).await;
        }
        assert!(env.group("containerd-like").is_empty());
        assert!(!env.group("containerd-like").path().exists());
    });
}

/// A unit `name` (with `deps`, lines of `[dependencies]`) that, on
/// SIGTERM, writes to `log` when it begins and ends stopping, taking
/// 300 ms in between: an overlap would show. Its child is started before
/// the trap is set, so that it cannot catch SIGTERM itself between fork
/// and exec. It touches `<name>.up` once the trap is set (see [`wait_up`]).
fn stop_logging_unit(env: &Env, log: &str, name: &str, deps: &str) {
    let up = env.path(&format!("{name}.up"));
    let script = format!(
        "sleep 30 & trap 'echo {name}-begin >> {log}; sleep 0.3; echo {name}-end >> {log}; exit 0' TERM; touch {up}; wait"
    );
    env.unit(name, &format!("[service]\nexec = {}\nstop_timeout = \"3s\"\n[dependencies]\n{deps}\n", sh(&script)));
}

/// Waits (at most 5 s) until a [`stop_logging_unit`] has set its trap.
async fn wait_up(env: &Env, name: &str) {
    let up = env.dir.join(format!("{name}.up"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !up.exists() {
        assert!(Instant::now() < deadline, "{name} did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Where each of `want` is in the lines of `log`.
fn log_positions(log: &str) -> impl Fn(&str) -> usize {
    let text = std::fs::read_to_string(log).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    move |l: &str| lines.iter().position(|x| x == l).unwrap_or_else(|| panic!("no {l} in {lines:?}"))
}

#[test]
fn stop_all_stops_dependents_first() {
    let env = Env::with_cgroups("order");
    let log = env.path("order.log");
    stop_logging_unit(&env, &log, "ord-base", "");
    stop_logging_unit(&env, &log, "ord-mid", "requires = [\"ord-base\"]");
    stop_logging_unit(&env, &log, "ord-top", "after = [\"ord-mid\"]");
    stop_logging_unit(&env, &log, "ord-solo", "");
    run(async {
        let h = env.start();
        h.wait_settled().await.unwrap();
        for name in ["ord-base", "ord-mid", "ord-top", "ord-solo"] {
            wait_up(&env, name).await;
        }
        h.stop_all().await.unwrap();
        let at = log_positions(&log);
        assert!(at("ord-top-end") < at("ord-mid-begin"), "{}", std::fs::read_to_string(&log).unwrap());
        assert!(at("ord-mid-end") < at("ord-base-begin"), "{}", std::fs::read_to_string(&log).unwrap());
        // Unrelated units stop in parallel with the first layer.
        assert!(at("ord-solo-begin") < at("ord-mid-begin"), "{}", std::fs::read_to_string(&log).unwrap());
        for s in h.list().await.unwrap() {
            assert_eq!(s.state, UnitState::Inactive, "{s:#?}");
            assert_eq!(s.last_exit, Some(Exit::Code(0)), "each stopped on its own within its timeout: {s:#?}");
        }
    });
}

// ---- identity, reload ------------------------------------------------------------

#[test]
fn a_unit_runs_as_its_user_in_its_cgroup() {
    let env = Env::with_cgroups("user");
    env.unit(
        "as-nobody",
        &format!(
            "[service]\nexec = {}\nkind = \"oneshot\"\nuser = \"nobody\"\nworking_directory = \"/tmp\"\nenvironment = {{ GREETING = \"hi\" }}\n",
            sh("echo id=$(id -u):$(id -g) cwd=$(pwd) home=$HOME greeting=$GREETING; cat /proc/self/cgroup")
        ),
    );
    run(async {
        let h = env.start();
        let s = wait_state(&h, "as-nobody", UnitState::Active).await;
        assert_eq!(s.last_exit, Some(Exit::Code(0)));
        // The last line it writes.
        let lines = log_lines("as-nobody", "0::/").await;
        assert!(
            lines.contains(&"stdout id=65534:65534 cwd=/tmp home=/nonexistent greeting=hi".to_string()),
            "{lines:#?}"
        );
        let group = env.group("as-nobody");
        let mount = cgroup::cgroup2_mount().unwrap();
        let rel = group.path().strip_prefix(&mount).unwrap().display().to_string();
        assert!(lines.iter().any(|l| l == &format!("stdout 0::/{rel}")), "in {rel}: {lines:#?}");
        h.stop_all().await.unwrap();
    });
}

#[test]
fn reload_starts_new_units_stops_removed_ones_and_restarts_changed_ones() {
    let env = Env::new("reload");
    let body = |v: &str| format!("[service]\nexec = {}\nenvironment = {{ V = \"{v}\" }}\n", sh("exec sleep 30"));
    env.unit("rl-keep", &body("1"));
    env.unit("rl-change", &body("1"));
    env.unit("rl-gone", &body("1"));
    run(async {
        let h = env.start();
        h.wait_settled().await.unwrap();
        let keep = h.status("rl-keep").await.unwrap();
        let change = h.status("rl-change").await.unwrap();
        let gone = h.status("rl-gone").await.unwrap();
        env.unit("rl-change", &body("2"));
        env.remove_unit("rl-gone");
        env.unit("rl-new", &body("1"));
        let report = h.reload(env.plan()).await.unwrap();
        assert_eq!(report.added, vec!["rl-new".to_string()]);
        assert_eq!(report.removed, vec!["rl-gone".to_string()]);
        assert_eq!(report.changed, vec!["rl-change".to_string()]);
        let changed =
            wait_for(&h, "rl-change", Duration::from_secs(10), |s| s.state == UnitState::Active && s.pid != change.pid)
                .await;
        assert_eq!(changed.restarts, 1);
        wait_state(&h, "rl-new", UnitState::Active).await;
        wait_gone(gone.pid, Duration::from_secs(5)).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.status("rl-gone").await.is_ok() {
            assert!(Instant::now() < deadline, "rl-gone is still listed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(h.status("rl-keep").await.unwrap().pid, keep.pid, "unchanged units are left alone");
        h.stop_all().await.unwrap();
    });
}

#[test]
fn reload_keeps_a_running_unit_whose_file_no_longer_loads_and_what_requires_it() {
    let env = Env::new("reload-invalid");
    let sleeper = format!("[service]\nexec = {}\n", sh("exec sleep 30"));
    env.unit("rl-keep", &sleeper);
    env.unit("rl-dep", &format!("{sleeper}[dependencies]\nrequires = [\"rl-keep\"]\n"));
    run(async {
        let h = env.start();
        h.wait_settled().await.unwrap();
        let keep = h.status("rl-keep").await.unwrap();
        let dep = h.status("rl-dep").await.unwrap();
        assert_eq!((keep.state, dep.state), (UnitState::Active, UnitState::Active));
        // A typo: an unknown key.
        env.unit("rl-keep", "[service]\nexce = [\"/bin/true\"]\n");
        let plan = unit::plan(unit::load(&[&env.dir.join("units")]));
        let errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
        assert!(
            errors.iter().any(|e| e.contains("rl-keep.toml:2") && e.contains("exce")),
            "the error names the file, line and key: {errors:?}"
        );
        let report = h.reload(plan).await.unwrap();
        assert!(report.removed.is_empty(), "{report:?}");
        assert!(report.added.is_empty() && report.changed.is_empty(), "{report:?}");
        // Nothing is stopped: give a wrongly sent stop the time to land.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = h.status("rl-keep").await.unwrap();
        assert_eq!((now.state, now.pid, now.restarts), (UnitState::Active, keep.pid, 0), "{now:#?}");
        let now = h.status("rl-dep").await.unwrap();
        assert_eq!((now.state, now.pid, now.restarts), (UnitState::Active, dep.pid, 0), "{now:#?}");
        // Fixed, it is an ordinary unit again: unchanged, left alone.
        env.unit("rl-keep", &sleeper);
        let report = h.reload(env.plan()).await.unwrap();
        assert_eq!(report, Default::default());
        assert_eq!(h.status("rl-keep").await.unwrap().pid, keep.pid);
        h.stop_all().await.unwrap();
    });
}

#[test]
fn reload_stops_a_unit_whose_file_no_longer_loads_once_what_it_requires_is_removed() {
    let env = Env::new("reload-invalid-gone");
    let sleeper = format!("[service]\nexec = {}\n", sh("exec sleep 30"));
    env.unit("rg-base", &sleeper);
    env.unit("rg-keep", &format!("{sleeper}[dependencies]\nrequires = [\"rg-base\"]\n"));
    env.unit("rg-dep", &format!("{sleeper}[dependencies]\nrequires = [\"rg-keep\"]\n"));
    run(async {
        let h = env.start();
        h.wait_settled().await.unwrap();
        let pids: Vec<u32> = {
            let mut v = Vec::new();
            for n in ["rg-base", "rg-keep", "rg-dep"] {
                let s = h.status(n).await.unwrap();
                assert_eq!(s.state, UnitState::Active, "{s:#?}");
                v.push(s.pid);
            }
            v
        };
        // A typo in rg-keep, and what its running definition requires is
        // gone: it cannot run as it is, whatever its file meant.
        env.unit("rg-keep", "[service]\nexce = [\"/bin/true\"]\n");
        env.remove_unit("rg-base");
        let plan = unit::plan(unit::load(&[&env.dir.join("units")]));
        let mut report = h.reload(plan).await.unwrap();
        report.removed.sort();
        assert_eq!(report.removed, ["rg-base", "rg-dep", "rg-keep"], "{report:?}");
        for pid in pids {
            wait_gone(pid, Duration::from_secs(5)).await;
        }
        h.stop_all().await.unwrap();
    });
}

#[test]
fn a_unit_added_after_one_whose_file_no_longer_loads_stops_before_it() {
    let env = Env::with_cgroups("reload-invalid-after");
    let log = env.path("order.log");
    stop_logging_unit(&env, &log, "ra-keep", "");
    run(async {
        let h = env.start();
        h.wait_settled().await.unwrap();
        wait_up(&env, "ra-keep").await;
        // ra-keep's file breaks while a unit ordered after it is added: the
        // plan has no edge to a unit it could not load, the supervisor
        // keeps it from the running definition.
        env.unit("ra-keep", "[service]\nexce = [\"/bin/true\"]\n");
        stop_logging_unit(&env, &log, "ra-late", "after = [\"ra-keep\"]");
        let plan = unit::plan(unit::load(&[&env.dir.join("units")]));
        let report = h.reload(plan).await.unwrap();
        assert_eq!(report.added, ["ra-late"], "{report:?}");
        wait_up(&env, "ra-late").await;
        h.stop_all().await.unwrap();
        let at = log_positions(&log);
        assert!(at("ra-late-end") < at("ra-keep-begin"), "{}", std::fs::read_to_string(&log).unwrap());
    });
}

#[test]
fn reload_keeps_a_done_oneshot_whose_file_no_longer_loads_and_the_running_unit_requiring_it() {
    // As ssh-keygen (a oneshot, done or skipped) and sshd (requires it).
    let env = Env::new("reload-invalid-done");
    env.unit("rd-keygen", &format!("[service]\nexec = {}\nkind = \"oneshot\"\n", sh("exit 0")));
    env.unit(
        "rd-daemon",
        &format!("[service]\nexec = {}\n[dependencies]\nrequires = [\"rd-keygen\"]\n", sh("exec sleep 30")),
    );
    run(async {
        let h = env.start();
        h.wait_settled().await.unwrap();
        let daemon = wait_state(&h, "rd-daemon", UnitState::Active).await;
        env.unit("rd-keygen", "[service]\nexce = [\"/bin/true\"]\n");
        let plan = unit::plan(unit::load(&[&env.dir.join("units")]));
        let report = h.reload(plan).await.unwrap();
        assert!(report.removed.is_empty(), "{report:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = h.status("rd-daemon").await.unwrap();
        assert_eq!((now.state, now.pid), (UnitState::Active, daemon.pid), "{now:#?}");
        assert!(h.status("rd-keygen").await.is_ok());
        h.stop_all().await.unwrap();
    });
}

#[test]
fn a_held_unit_keeps_stopping_after_what_its_running_definition_waits_for() {
    let env = Env::with_cgroups("reload-invalid-cycle");
    let log = env.path("order.log");
    stop_logging_unit(&env, &log, "rc-base", "");
    stop_logging_unit(&env, &log, "rc-keep", "after = [\"rc-base\"]");
    run(async {
        let h = env.start();
        h.wait_settled().await.unwrap();
        wait_up(&env, "rc-base").await;
        wait_up(&env, "rc-keep").await;
        // rc-keep's file breaks and rc-base's new file orders it after
        // rc-keep: the running order stands (rc-keep stops first), and
        // the two do not wait for each other at shutdown.
        env.unit("rc-keep", "[service]\nexce = [\"/bin/true\"]\n");
        stop_logging_unit(&env, &log, "rc-base", "after = [\"rc-keep\"]");
        std::fs::remove_file(env.dir.join("rc-base.up")).unwrap();
        let plan = unit::plan(unit::load(&[&env.dir.join("units")]));
        let report = h.reload(plan).await.unwrap();
        assert_eq!((report.changed, report.removed), (vec!["rc-base".to_string()], vec![]));
        // rc-base restarts with its new definition; only the shutdown counts.
        wait_up(&env, "rc-base").await;
        std::fs::write(&log, "").unwrap();
        let t0 = Instant::now();
        h.stop_all().await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5), "shutdown took {:?}", t0.elapsed());
        let at = log_positions(&log);
        assert!(at("rc-keep-end") < at("rc-base-begin"), "{}", std::fs::read_to_string(&log).unwrap());
    });
}

#[test]
fn reload_does_not_keep_a_failed_unit_whose_file_no_longer_loads() {
    let env = Env::new("reload-invalid-failed");
    env.unit("rf-failed", &format!("[service]\nexec = {}\n[restart]\npolicy = \"never\"\n", sh("exit 3")));
    run(async {
        let h = env.start();
        wait_state(&h, "rf-failed", UnitState::Failed).await;
        // Nothing runs to keep: the broken file is all there is, and the
        // unit is gone until it is fixed (its error names the file).
        env.unit("rf-failed", "[service]\nexce = [\"/bin/true\"]\n");
        let plan = unit::plan(unit::load(&[&env.dir.join("units")]));
        h.reload(plan).await.unwrap();
        assert!(h.status("rf-failed").await.is_err(), "{:#?}", h.status("rf-failed").await);
        h.stop_all().await.unwrap();
    });
}

#[test]
fn a_fifo_in_place_of_etc_passwd_fails_the_unit_naming_it() {
    let env = Env::new("passwd-fifo");
    let fifo = env.dir.join("passwd");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    env.unit(
        "pw-user",
        &format!("[service]\nexec = {}\nuser = \"nobody\"\n[restart]\npolicy = \"never\"\n", sh("exec sleep 30")),
    );
    run(async {
        // Opening a FIFO for reading blocks until a writer comes: PID1
        // must refuse it, not hang its supervisor.
        let config = Config { passwd: fifo.clone(), ..env.config() };
        let h = Supervisor::spawn(config, env.plan(), Some(journal()), reaper());
        let s = wait_state(&h, "pw-user", UnitState::Failed).await;
        assert!(s.reason.contains(&fifo.display().to_string()) && s.reason.contains("FIFO"), "{s:#?}");
        h.stop_all().await.unwrap();
    });
}

#[test]
fn notify_socket_is_per_unit_and_removed_after() {
    let env = Env::new("sock");
    env.unit("sock-unit", &format!("[service]\nexec = {}\nready = \"notify\"\n", notify_after(0.0)));
    run(async {
        let h = env.start();
        wait_state(&h, "sock-unit", UnitState::Active).await;
        let sock = env.dir.join("notify").join("sock-unit.sock");
        assert!(sock.exists());
        h.stop("sock-unit").await.unwrap();
        assert!(!sock.exists(), "the socket goes with the run");
        h.stop_all().await.unwrap();
    });
}

// ---- resource limits ----------------------------------------------------------------

/// A limit of `/proc/<pid>/limits` (its row starts with `name`, e.g. "Max
/// open files"), as (soft, hard).
fn proc_limit(pid: u32, name: &str) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name:?} in\n{text}"));
    let cells: Vec<&str> = row[name.len()..].split_whitespace().collect();
    (cells[0].to_string(), cells[1].to_string())
}

fn pair(soft: impl ToString, hard: impl ToString) -> (String, String) {
    (soft.to_string(), hard.to_string())
}

/// Whether this process may raise hard limits (CAP_SYS_RESOURCE: root on
/// a host; a container's root may lack it, PID1 never does), and its own
/// hard limit of open files.
fn may_raise_hard_limits() -> (bool, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    let caps = u64::from_str_radix(eff, 16).unwrap();
    let (_, hard) = proc_limit(std::process::id(), "Max open files");
    (caps & (1 << 24) != 0, hard.parse().unwrap())
}

#[test]
fn a_units_processes_get_its_resource_limits() {
    let env = Env::new("rlimits");
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open").unwrap().trim().parse().unwrap();
    // With CAP_SYS_RESOURCE the unit's hard limit is raised above this
    // process's own, for a unit that runs as nobody: set before the
    // identity changes. Without it, only up to this process's own.
    let (privileged, own_hard) = may_raise_hard_limits();
    let hard = if privileged { nr_open } else { own_hard };
    let sleeper = sh("exec sleep 30");
    env.unit(
        "lim-set",
        &format!(
            "[service]\nexec = {sleeper}\nuser = \"nobody\"\n[limits]\nnofile = \"4096:{hard}\"\ncore = \"infinity\"\n\
             memlock = \"1M\"\nnproc = \"512:1024\"\nstack = \"16M:infinity\"\n"
        ),
    );
    env.unit("lim-default", &format!("[service]\nexec = {sleeper}\n"));
    env.unit("lim-infinity", &format!("[service]\nexec = {sleeper}\n[limits]\nnofile = \"infinity\"\n"));
    let too_many = nr_open + 64;
    env.unit(
        "lim-too-many",
        &format!("[service]\nexec = {sleeper}\n[limits]\nnofile = {too_many}\n[restart]\npolicy = \"never\"\n"),
    );
    run(async {
        let h = env.start();
        h.wait_settled().await.unwrap();
        // Raised above PID1's own hard limit although it runs as nobody:
        // set before the identity changes.
        let set = h.status("lim-set").await.unwrap();
        assert_eq!(set.state, UnitState::Active, "{set:#?}");
        assert_eq!(proc_limit(set.pid, "Max open files"), pair(4096, hard));
        assert_eq!(proc_limit(set.pid, "Max core file size"), pair("unlimited", "unlimited"));
        assert_eq!(proc_limit(set.pid, "Max locked memory"), pair(1 << 20, 1 << 20));
        assert_eq!(proc_limit(set.pid, "Max processes"), pair(512, 1024));
        assert_eq!(proc_limit(set.pid, "Max stack size"), pair(16 << 20, "unlimited"));

        // Nothing set: systemd's default for open files.
        let default = h.status("lim-default").await.unwrap();
        let default_hard = if privileged { 524_288 } else { own_hard.min(524_288) };
        assert_eq!(proc_limit(default.pid, "Max open files"), pair(1024, default_hard));
        if privileged {
            let inf = h.status("lim-infinity").await.unwrap();
            assert_eq!(proc_limit(inf.pid, "Max open files"), pair(nr_open, nr_open), "infinity is fs.nr_open");
        } else {
            let inf = h.status("lim-infinity").await.unwrap();
            assert_eq!(inf.state, UnitState::Failed, "nr_open is above this process's hard limit: {inf:#?}");
            assert!(inf.reason.contains("(no CAP_SYS_RESOURCE)"), "{inf:#?}");
        }

        let failed = h.status("lim-too-many").await.unwrap();
        assert_eq!(failed.state, UnitState::Failed, "{failed:#?}");
        assert!(
            failed.reason.contains(&format!(
                "limits.nofile: {too_many} open files are more than the kernel allows (fs.nr_open = {nr_open})"
            )),
            "{failed:#?}"
        );
        h.stop_all().await.unwrap();
    });
}

// ---- programs that put themselves in the background -----------------------------------

/// A unit whose program starts a daemon (`setsid sleep 600 &`, its pid
/// written to the file returned) and exits 0, restarted whenever it ends.
fn daemonizer(env: &Env, name: &str, service: &str) -> String {
    let pidfile = env.path(&format!("{name}.daemon"));
    let script = sh(&format!("setsid sleep 600 & echo $! > {pidfile}; exit 0"));
    env.unit(
        name,
        &format!(
            "[service]\nexec = {script}\nstop_timeout = \"300ms\"\n{service}\n[restart]\npolicy = \"always\"\nbackoff_initial = \"50ms\"\n"
        ),
    );
    pidfile
}

/// The unit failed, at once and for good, saying the program put itself
/// in the background and how to keep it in the foreground.
async fn failed_as_background(h: &SupervisorHandle, name: &str, daemon: u32) -> UnitStatus {
    let s = wait_for(h, name, Duration::from_secs(10), |s| s.state == UnitState::Failed || s.restarts > 0).await;
    assert_eq!((s.state, s.restarts, s.last_exit.clone()), (UnitState::Failed, 0, Some(Exit::Code(0))), "{s:#?}");
    for part in [
        format!("exit status 0, but it left 1 process running (pid {daemon}"),
        "the program put itself in the background".to_string(),
        "in the foreground".to_string(),
    ] {
        assert!(s.reason.contains(&part), "{part:?} not in the reason: {s:#?}");
    }
    let lines = log_lines(name, "put itself in the background").await;
    assert!(lines.iter().any(|l| l.starts_with("init failed: exit status 0, but it left")), "{lines:#?}");
    s
}

#[test]
fn a_program_that_daemonizes_fails_loudly_and_never_runs_twice() {
    let env = Env::with_cgroups("daemonize");
    let group_pidfile = daemonizer(&env, "bg-group", "");
    let main_pidfile = daemonizer(&env, "bg-main", "kill_mode = \"main\"");
    let oneshot_pidfile = env.path("bg-oneshot.daemon");
    env.unit(
        "bg-oneshot",
        &format!(
            "[service]\nexec = {}\nkind = \"oneshot\"\nstop_timeout = \"300ms\"\n",
            sh(&format!("setsid sleep 600 & echo $! > {oneshot_pidfile}; exit 0"))
        ),
    );
    // A program in the foreground that exits 0 leaves nothing: inactive.
    env.unit("fg-exit0", &format!("[service]\nexec = {}\n", sh("sleep 0.1; exit 0")));
    run(async {
        let h = env.start();
        // kill_mode group: its daemon is stopped with the rest of the group.
        let daemon = read_pid(&group_pidfile).await;
        let s = failed_as_background(&h, "bg-group", daemon).await;
        assert!(s.reason.contains("what it left is stopped"), "{s:#?}");
        wait_gone(daemon, Duration::from_secs(2)).await;
        assert!(env.group("bg-group").is_empty());

        // kill_mode main: its daemon is left running, and no second copy
        // is started beside it (policy always would restart it at once).
        let daemon = read_pid(&main_pidfile).await;
        let s = failed_as_background(&h, "bg-main", daemon).await;
        assert!(s.reason.contains("what it left keeps running"), "{s:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let later = h.status("bg-main").await.unwrap();
        assert_eq!((later.state, later.restarts), (UnitState::Failed, 0), "{later:#?}");
        assert!(alive(daemon));
        assert_eq!(env.group("bg-main").pids().unwrap(), vec![daemon as i32], "one copy, the first");

        let daemon = read_pid(&oneshot_pidfile).await;
        let s = failed_as_background(&h, "bg-oneshot", daemon).await;
        assert!(s.reason.contains("a oneshot must finish its work"), "{s:#?}");
        assert!(s.reason.contains("what it left is stopped"), "{s:#?}");
        wait_gone(daemon, Duration::from_secs(2)).await;

        let fg = wait_state(&h, "fg-exit0", UnitState::Inactive).await;
        assert_eq!(fg.reason, "exit status 0", "{fg:#?}");

        h.stop_all().await.unwrap();
        let main_daemon = read_pid(&main_pidfile).await;
        wait_gone(main_daemon, Duration::from_secs(2)).await;
    });
}

// ---- readiness of the machine, degraded units (issue 7, fault 2) -------------------

#[test]
fn a_never_ready_unit_nothing_requires_does_not_hold_the_ready_signal() {
    let env = Env::new("ready-signal");
    // Nothing requires `never`, and its file does not mark it needed.
    env.unit(
        "never",
        &format!("[service]\nexec = {}\nready = \"notify\"\nstart_timeout = \"20s\"\n", sh("exec sleep 30")),
    );
    // `dep` is needed because `user` requires it; `marked` by its own file.
    env.unit("dep", &format!("[service]\nexec = {}\nready = \"notify\"\n", notify_after(0.5)));
    env.unit("user", &format!("[service]\nexec = {}\n[dependencies]\nrequires = [\"dep\"]\n", sh("exec sleep 30")));
    env.unit(
        "marked",
        &format!(
            "[service]\nexec = {}\nready = \"notify\"\n[dependencies]\nrequired_for_ready = true\n",
            notify_after(0.3)
        ),
    );
    run(async {
        let h = env.start();
        let mut rx = h.settled();
        let begin = Instant::now();
        let s = rx.wait_for(|s| s.ready).await.unwrap().clone();
        let took = begin.elapsed();
        assert!(took >= Duration::from_millis(500), "ready before `dep`, which `user` requires ({took:?}): {s:#?}");
        assert!(took < Duration::from_secs(5), "the ready signal waited for `never` ({took:?})");
        assert!(!s.settled, "`never` is still starting: {s:#?}");
        assert_eq!(s.not_ready, [("never".to_owned(), UnitState::Starting)], "{s:#?}");
        for unit in ["dep", "user", "marked"] {
            assert_eq!(h.status(unit).await.unwrap().state, UnitState::Active, "{unit}");
        }
        h.stop_all().await.unwrap();
    });
}

/// A unit whose health check passes while `healthy` exists, checked every
/// 100 ms, degraded (not restarted) after 2 failures in a row.
fn degrading_unit(env: &Env, name: &str, healthy: &str) {
    env.unit(
        name,
        &format!(
            "[service]\nexec = {}\n[health]\ncheck = {{ command = [\"/bin/sh\", \"-c\", \"test -e {healthy}\"] }}\n\
             interval = \"100ms\"\nfailures = 2\non_failure = \"degrade\"\n",
            sh("exec sleep 30")
        ),
    );
}

#[test]
fn a_degrade_health_policy_keeps_the_process_running_and_says_why() {
    let env = Env::new("degrade");
    let healthy = env.path("healthy");
    degrading_unit(&env, "kv", &healthy);
    run(async {
        let h = env.start();
        let first = wait_state(&h, "kv", UnitState::Active).await;
        let degraded = wait_state(&h, "kv", UnitState::Degraded).await;
        assert_eq!((degraded.pid, degraded.restarts), (first.pid, 0), "{degraded:#?}");
        assert!(alive(first.pid));
        assert!(degraded.reason.contains("health check failed 2 times in a row"), "{degraded:#?}");
        assert!(degraded.reason.contains("not restarted"), "{degraded:#?}");
        // Degraded is settled: nothing is under way.
        assert!(h.settled().borrow().settled);
        // Failing on, it stays as it is.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let later = h.status("kv").await.unwrap();
        assert_eq!((later.state, later.pid, later.restarts), (UnitState::Degraded, first.pid, 0), "{later:#?}");
        // A passing check makes it active again.
        std::fs::write(&healthy, "").unwrap();
        let back = wait_state(&h, "kv", UnitState::Active).await;
        assert_eq!((back.pid, back.restarts, back.reason.as_str()), (first.pid, 0, ""), "{back:#?}");
        log_lines("kv", "health check passed: active again").await;
        h.stop_all().await.unwrap();
    });
}

#[test]
fn a_degrade_unit_not_ready_in_time_is_left_running_and_becomes_active_once_ready() {
    let env = Env::new("degrade-start");
    env.unit(
        "slow",
        &format!(
            "[service]\nexec = {}\nready = \"notify\"\nstart_timeout = \"300ms\"\n\
             [health]\ncheck = {{ command = [\"/bin/true\"] }}\non_failure = \"degrade\"\n",
            notify_after(1.5)
        ),
    );
    run(async {
        let h = env.start();
        let started = wait_state(&h, "slow", UnitState::Starting).await;
        let degraded = wait_state(&h, "slow", UnitState::Degraded).await;
        assert_eq!((degraded.pid, degraded.restarts), (started.pid, 0), "{degraded:#?}");
        assert!(degraded.reason.contains("not ready within start_timeout 300ms"), "{degraded:#?}");
        let ready = wait_state(&h, "slow", UnitState::Active).await;
        assert_eq!((ready.pid, ready.restarts), (started.pid, 0), "{ready:#?}");
        h.stop_all().await.unwrap();
    });
}

// ---- exec_stop (issue 7, fault 1) ---------------------------------------------------

#[test]
fn exec_stop_runs_before_the_stop_signal_on_a_stop_for_good_and_not_on_a_restart() {
    let env = Env::with_cgroups("exec-stop");
    let log = env.path("exec-stop.log");
    let up = env.path("up");
    // The main process notes SIGTERM (once: it gets it twice, as the main
    // process and as a member of its group); exec_stop notes what it was given
    // and takes 200 ms, as a graceful stop of what the unit carries would.
    let main = format!("sleep 30 & trap 'trap \"\" TERM; echo term >> {log}; exit 0' TERM; touch {up}; wait");
    let stop = format!("echo exec-stop $MAINPID $STOP_TIMEOUT_USEC >> {log}; sleep 0.2; echo exec-stop-done >> {log}");
    env.unit(
        "carrier",
        &format!(
            "[service]\nexec = {}\nexec_stop = [\"/bin/sh\", \"-c\", '''{stop}''']\nstop_timeout = \"3s\"\n",
            sh(&main)
        ),
    );
    let wait_up = || async {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::path::Path::new(&up).exists() {
            assert!(Instant::now() < deadline, "the main process did not start");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::fs::remove_file(&up).unwrap();
    };
    let lines = || std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_owned).collect::<Vec<_>>();
    run(async {
        let h = env.start();
        let first = wait_state(&h, "carrier", UnitState::Active).await;
        wait_up().await;
        // A restart: straight to the stop signal.
        h.restart("carrier").await.unwrap();
        assert_eq!(lines(), ["term"]);
        wait_up().await;
        let second = h.status("carrier").await.unwrap();
        assert_ne!(second.pid, first.pid);
        // A stop for good: exec_stop first, with MAINPID and its time.
        h.stop("carrier").await.unwrap();
        assert_eq!(
            lines(),
            ["term".to_owned(), format!("exec-stop {} 3000000", second.pid), "exec-stop-done".into(), "term".into()]
        );
        // Shutdown too.
        h.start("carrier").await.unwrap();
        wait_up().await;
        let third = h.status("carrier").await.unwrap();
        h.stop_all().await.unwrap();
        let all = lines();
        assert_eq!(all[4..], [format!("exec-stop {} 3000000", third.pid), "exec-stop-done".into(), "term".into()]);
        let log = log_lines("carrier", "exec_stop /bin/sh: exit status 0").await;
        assert!(log.iter().any(|l| l.contains("exec_stop: started /bin/sh")), "{log:#?}");
    });
}

#[test]
fn exec_stop_is_bounded_by_stop_timeout_and_the_stop_bound_counts_it() {
    let env = Env::with_cgroups("exec-stop-hang");
    env.unit(
        "hang",
        &format!(
            "[service]\nexec = {}\nexec_stop = [\"/bin/sh\", \"-c\", \"exec sleep 30\"]\nstop_timeout = \"400ms\"\n",
            sh("exec sleep 30")
        ),
    );
    env.unit("after-hang", &format!("[service]\nexec = {}\n[dependencies]\nafter = [\"hang\"]\n", sh("exec sleep 30")));
    run(async {
        let h = env.start();
        h.wait_settled().await.unwrap();
        // Dependents first: after-hang's 10 s, then hang's 400 ms for
        // exec_stop and 400 ms for SIGTERM; each 5 s more for SIGKILL.
        let bound = h.stop_bound().await.unwrap();
        assert_eq!(bound, Duration::from_millis(10_000 + 5_000 + 800 + 5_000));
        let begin = Instant::now();
        let stopped = h.stop("hang").await.unwrap();
        let took = begin.elapsed();
        assert!(took >= Duration::from_millis(400), "exec_stop was not waited for ({took:?})");
        assert!(took < Duration::from_millis(2_000), "exec_stop was not cut at stop_timeout ({took:?})");
        assert_eq!(stopped.state, UnitState::Inactive);
        assert!(env.group("hang").is_empty(), "{:?}", env.group("hang").pids());
        log_lines("hang", "exec_stop /bin/sh: still running after 400ms: killed").await;
        h.stop_all().await.unwrap();
    });
}

// ---- user data: a change reloads and restarts what it touched -----------------

#[test]
fn a_config_change_reloads_the_units_and_restarts_what_it_touched() {
    use berth_init::pid1::provision::{after_change, Place};
    use berth_init::power::ShutdownFlag;
    use berth_provision::machine::ChangeReport;

    let env = Env::new("userdata");
    let sleeper = |description: &str| {
        format!(
            "description = \"{description}\"\n[service]\nexec = [\"/bin/sleep\", \"30\"]\nstop_timeout = \"200ms\"\n"
        )
    };
    // Reads a file user data writes: its unit file stays the same.
    env.unit("reads", &sleeper("reads a config file"));
    env.unit("removed", &sleeper("removed by the change"));
    env.unit("edited", &sleeper("before"));
    env.unit("untouched", &sleeper("not named by the change"));
    env.unit("done", "[service]\nexec = [\"/bin/true\"]\nkind = \"oneshot\"\n");
    run(async {
        let h = env.start();
        let mut before = std::collections::BTreeMap::new();
        for name in ["reads", "removed", "edited", "untouched", "done"] {
            before.insert(name, wait_state(&h, name, UnitState::Active).await.pid);
        }
        env.remove_unit("removed");
        env.unit("added", &sleeper("new"));
        env.unit("edited", &sleeper("after"));
        let changed = ChangeReport {
            changes: vec!["wrote /etc/reads.conf (0644 root:root)".into()],
            units_changed: ["reads", "removed", "added", "edited", "done"].map(String::from).to_vec(),
            hostname: Some("not-set-in-tests".into()),
            warnings: vec!["w".into()],
            trial_until: Some(7),
        };
        let place = Place {
            root: env.dir.clone(),
            unit_dirs: vec![env.dir.join("units")],
            set_hostname: false,
            shutdown: ShutdownFlag::default(),
        };
        let r = after_change(&h, changed, &place).await;
        assert_eq!(r.started, ["added"]);
        assert_eq!(r.stopped, ["removed"]);
        assert_eq!(r.restarted, ["edited", "reads"]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!((r.hostname.as_str(), r.trial_until, r.warnings.len()), ("not-set-in-tests", 7, 1));
        for name in ["reads", "edited"] {
            let s = wait_for(&h, name, Duration::from_secs(10), |s| s.state == UnitState::Active && s.pid != 0).await;
            assert_ne!(s.pid, before[name], "{name} was not restarted");
            assert!(!alive(before[name]), "{name}'s old process still runs");
        }
        assert_eq!(h.status("untouched").await.unwrap().pid, before["untouched"]);
        assert_eq!(h.status("done").await.unwrap().restarts, 0, "a oneshot that is done does not run again");
        wait_state(&h, "added", UnitState::Active).await;
        wait_gone(before["removed"], Duration::from_secs(5)).await;
        h.stop_all().await.unwrap();
    });
}

/// `config apply`, `--try` with its revert, `confirm` and `show` end to
/// end: berth-provision's machine on a temp root, the real supervisor.
/// Needs the bodies of `berth_provision::machine` (H2's branch): ignored
/// until they are merged; run with `--ignored`.
#[test]
fn config_apply_try_revert_and_confirm_change_files_and_units() {
    use berth_init::api::ControlError;
    use berth_init::pid1::provision::{Place, Provisioning, TrialTimer};
    use berth_init::power::ShutdownFlag;
    use berth_provision::machine::Outcome;

    let env = Env::new("config-apply");
    let root = env.dir.join("root");
    std::fs::create_dir_all(root.join("etc/berth/units")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    env.unit("base", "[service]\nexec = [\"/bin/sleep\", \"30\"]\nstop_timeout = \"200ms\"\n");
    let place = Place {
        root: root.clone(),
        unit_dirs: vec![env.dir.join("units"), root.join("etc/berth/units")],
        set_hostname: false,
        shutdown: ShutdownFlag::default(),
    };
    let (p, mut timer) = Provisioning::new(place);
    let doc = |host: &str, unit: &str| {
        format!(
            "#cloud-config\nhostname: {host}\nwrite_files:\n  - path: /etc/app.conf\n    content: \"{host}\\n\"\n\
             berth:\n  units:\n    add:\n      {unit}: |\n        [service]\n        exec = [\"/bin/sleep\", \"30\"]\n        stop_timeout = \"200ms\"\n"
        )
    };
    run(async {
        let h = env.start();
        wait_state(&h, "base", UnitState::Active).await;

        let a = doc("node-a", "web");
        let r = p.apply(&h, "a.yaml".into(), a.clone().into_bytes(), None).await.unwrap();
        assert!(r.changes.iter().any(|c| c.contains("node-a")), "{r:#?}");
        assert_eq!(r.started, ["web"], "{r:#?}");
        assert!(r.problems.is_empty(), "{r:#?}");
        assert_eq!(std::fs::read_to_string(root.join("etc/app.conf")).unwrap(), "node-a\n");
        wait_state(&h, "web", UnitState::Active).await;
        let shown = p.show().await.unwrap().expect("a document in force");
        assert_eq!((shown.source.as_str(), shown.text.as_str(), shown.trial_until), ("a.yaml", a.as_str(), None));
        let st = p.status().expect("a status after a change");
        assert_eq!((st.outcome, st.source.as_deref()), (Outcome::Applied, Some("a.yaml")));

        // Invalid: every error, nothing applied.
        let bad = "#cloud-config\nhostname: [x]\nwrite_files:\n  - path: relative\n    content: x\n";
        match p.apply(&h, "bad.yaml".into(), bad.as_bytes().to_vec(), None).await {
            Err(ControlError::Invalid(errors)) => {
                assert!(errors.len() >= 2, "{errors:?}");
                assert!(errors.iter().all(|e| e.starts_with("bad.yaml:")), "{errors:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_to_string(root.join("etc/app.conf")).unwrap(), "node-a\n");

        // On trial: another change waits, the timer is armed, the revert puts A back.
        let b = doc("node-b", "api");
        let r = p.apply(&h, "b.yaml".into(), b.clone().into_bytes(), Some(Duration::from_secs(60))).await.unwrap();
        assert_ne!(r.trial_until, 0);
        assert_eq!((r.started.as_slice(), r.stopped.as_slice()), (&["api".to_string()][..], &["web".to_string()][..]));
        assert_eq!(timer.try_recv(), Ok(TrialTimer::Arm(r.trial_until)));
        assert_eq!(p.status().unwrap().trial_until, Some(r.trial_until));
        assert!(matches!(
            p.apply(&h, "c.yaml".into(), doc("node-c", "web").into_bytes(), None).await,
            Err(ControlError::Refused(_))
        ));
        p.revert(&h).await;
        assert_eq!(std::fs::read_to_string(root.join("etc/app.conf")).unwrap(), "node-a\n");
        wait_state(&h, "web", UnitState::Active).await;
        // Removed: being stopped (the reload answers at once), then gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.status("api").await.is_ok_and(|s| s.pid != 0) {
            assert!(Instant::now() < deadline, "api still runs after the revert");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(p.show().await.unwrap().unwrap().source, "a.yaml");
        assert_eq!(p.status().unwrap().trial_until, None);

        // On trial, confirmed: it stays.
        p.apply(&h, "b.yaml".into(), b.into_bytes(), Some(Duration::from_secs(60))).await.unwrap();
        p.confirm().await.unwrap();
        assert_eq!(timer.try_recv().ok().map(|_| ()), Some(()));
        assert_eq!(timer.try_recv(), Ok(TrialTimer::Disarm));
        let shown = p.show().await.unwrap().unwrap();
        assert_eq!((shown.source.as_str(), shown.trial_until), ("b.yaml", None));
        assert!(matches!(p.confirm().await, Err(ControlError::Refused(_))));
        // A revert with nothing on trial does nothing.
        p.revert(&h).await;
        assert_eq!(std::fs::read_to_string(root.join("etc/app.conf")).unwrap(), "node-b\n");
        h.stop_all().await.unwrap();
    });
}
