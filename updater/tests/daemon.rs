//! The daemon's logic against a fake machine (the ESP's entries in memory,
//! an install engine that stages) and a fake PID1, and its D-Bus API over a
//! socket in a temp dir.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_dbus::{ClientError, Peer, PeerConfig, UPDATER};
use berth_layout::disk::Slot;
use berth_updater::boot_entry::entry_text;
use berth_updater::bundle::KeyRing;
use berth_updater::bundle::{generate_dev_keypair, public_key_pem};
use berth_updater::config::{Check, Config};
use berth_updater::daemon::api;
use berth_updater::daemon::history::{History, Kind, Store};
use berth_updater::daemon::lock::{LockFuture, Waiting};
use berth_updater::daemon::wire::{WireInstalled, WireStatus};
use berth_updater::daemon::{Bless, Daemon, LockRetry, Machine, Pid1, Readiness, RebootLock, Settings};
use berth_updater::install::{InstallContext, Installed, Progress, Step};
use berth_updater::state::{AbState, FileOp};

// ------------------------------------------------------------ the fakes

fn efi(s: &str) -> Vec<u8> {
    let mut b = vec![7, 0, 0, 0];
    for u in s.encode_utf16().chain([0]) {
        b.extend_from_slice(&u.to_le_bytes());
    }
    b
}

fn opts(slot: Slot) -> String {
    format!("root=/dev/dm-0 dm-mod.waitfor=PARTUUID=uuid-{0} berth.slot={0}", slot.name())
}

#[derive(Default)]
struct Disk {
    /// The ESP's entries: file name, text.
    entries: Vec<(String, String)>,
    booted: Option<Slot>,
    /// LoaderBootCountPath's file name, when counted.
    counted: Option<String>,
    boot_id: String,
    /// Renames do not reach the ESP (a failing bless).
    renames_lost: bool,
    /// An install waits until this is false.
    hold: bool,
    installs: u32,
}

#[derive(Clone, Default)]
struct FakeMachine(Arc<Mutex<Disk>>);

impl FakeMachine {
    fn new(entries: &[(&str, Slot)], booted: Slot, counted: Option<&str>) -> FakeMachine {
        let m = FakeMachine::default();
        {
            let mut d = m.0.lock().unwrap();
            d.entries =
                entries.iter().map(|(f, s)| (f.to_string(), entry_text(&version_of(f), *s, &opts(*s)))).collect();
            d.booted = Some(booted);
            d.counted = counted.map(str::to_string);
            d.boot_id = "boot-1".into();
        }
        m
    }

    fn files(&self) -> Vec<String> {
        let mut f: Vec<String> = self.0.lock().unwrap().entries.iter().map(|e| e.0.clone()).collect();
        f.sort();
        f
    }

    /// A reboot into `slot` (systemd-boot's counting is the test's job).
    fn reboot(&self, slot: Slot, counted: Option<&str>, entries: &[(&str, Slot)]) {
        let booted = self.0.lock().unwrap().boot_id.clone();
        let fresh = FakeMachine::new(entries, slot, counted);
        let mut d = fresh.0.lock().unwrap();
        d.boot_id = format!("{booted}+");
        let mut mine = self.0.lock().unwrap();
        mine.entries = std::mem::take(&mut d.entries);
        mine.booted = d.booted;
        mine.counted = d.counted.take();
        mine.boot_id = d.boot_id.clone();
    }

    fn apply_plan(d: &mut Disk, plan: &[FileOp]) {
        for op in plan {
            match op {
                FileOp::Remove { file } => d.entries.retain(|e| &e.0 != file),
                FileOp::Rename { from, to } => {
                    if !d.renames_lost {
                        for e in d.entries.iter_mut().filter(|e| &e.0 == from) {
                            e.0 = to.clone();
                        }
                    }
                }
                FileOp::WritePayload { .. } => {}
                FileOp::Write { file, contents } => d.entries.push((file.clone(), contents.clone())),
            }
        }
    }
}

impl Machine for FakeMachine {
    fn load(&self) -> Result<AbState, String> {
        let d = self.0.lock().unwrap();
        let slot = d.booted.unwrap();
        let cmdline = opts(slot);
        // The variable stays for the whole boot, as systemd-boot set it.
        let bcp = d.counted.as_ref().map(|f| efi(&format!("\\loader\\entries\\{f}")));
        AbState::load(&d.entries, &cmdline, bcp.as_deref(), None).map_err(|e| e.to_string())
    }

    fn apply(&self, state: &AbState) -> Result<(), String> {
        FakeMachine::apply_plan(&mut self.0.lock().unwrap(), &state.plan());
        Ok(())
    }

    fn install(
        &self,
        source: &str,
        _retries: u32,
        _keys: &KeyRing,
        ctx: &InstallContext,
        mut state: AbState,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Installed, String> {
        // The fake bundle is its version.
        let version = std::fs::read_to_string(source).map_err(|e| e.to_string())?.trim().to_string();
        if ctx.failed_versions.contains(&version) && !ctx.force {
            return Err(format!("version {version} failed here before; --force to install it anyway"));
        }
        while self.0.lock().unwrap().hold {
            std::thread::sleep(Duration::from_millis(10));
        }
        let slot = state.booted().other();
        state.stage(&version, slot).map_err(|e| e.to_string())?;
        for done in [0, 512, 1024] {
            progress(Progress { step: Step::WriteRoot, done, total: 1024 });
        }
        progress(Progress { step: Step::Done, done: 1, total: 1 });
        let mut d = self.0.lock().unwrap();
        FakeMachine::apply_plan(&mut d, &state.plan());
        d.installs += 1;
        Ok(Installed { version, slot, entry_file: String::new(), bytes: 1024, elapsed: Duration::ZERO })
    }

    fn boot_id(&self) -> String {
        self.0.lock().unwrap().boot_id.clone()
    }
}

#[derive(Clone, Default)]
struct FakePid1 {
    ready: Arc<AtomicBool>,
    failed: Arc<Mutex<Vec<String>>>,
    reboots: Arc<AtomicU32>,
    /// PID1 refuses to reboot.
    refuse_reboot: Arc<AtomicBool>,
}

impl Pid1 for FakePid1 {
    async fn readiness(&self) -> Result<Readiness, String> {
        Ok(Readiness { ready: self.ready.load(Ordering::SeqCst), failed: self.failed.lock().unwrap().clone() })
    }

    async fn reboot(&self) -> Result<(), String> {
        if self.refuse_reboot.load(Ordering::SeqCst) {
            return Err("PID1 refused: a shutdown is already running".into());
        }
        self.reboots.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("berth-updater-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(dir: &Path, checks: Vec<Check>) -> Settings {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = generate_dev_keypair();
    std::fs::write(keys.join("dev.pem"), public_key_pem(&key.verifying_key()).unwrap()).unwrap();
    let mut config = Config::default();
    config.gate.retry = Duration::from_millis(20);
    config.gate.checks = checks;
    Settings {
        config,
        keys_dir: keys,
        state_dir: dir.join("state"),
        blessed_marker: dir.join("boot-blessed"),
        arch: "x86_64".into(),
        pause_file: None,
    }
}

fn check(name: &str, script: &str, timeout: Duration) -> Check {
    Check { name: name.into(), exec: vec!["/bin/sh".into(), "-c".into(), script.into()], timeout }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn bundle(dir: &Path, version: &str) -> String {
    let p = dir.join(format!("berth-{version}.bundle"));
    std::fs::write(&p, version).unwrap();
    p.display().to_string()
}

// ---------------------------------------------------------- gate, bless

#[test]
fn a_counted_boot_is_blessed_once_pid1_is_ready_and_the_checks_pass_and_read_back() {
    let dir = TempDir::new("gate-pass");
    let flag = dir.0.join("healthy");
    let machine = FakeMachine::new(
        &[("berth-0.1.0.conf", Slot::A), ("berth-0.2.0+2-1.conf", Slot::B)],
        Slot::B,
        Some("berth-0.2.0+2-1.conf"),
    );
    let pid1 = FakePid1::default();
    let s = settings(&dir.0, vec![check("flag", &format!("test -e {}", flag.display()), Duration::from_secs(5))]);
    let marker = s.blessed_marker.clone();
    let daemon = Daemon::new(machine.clone(), pid1.clone(), s);
    rt().block_on(async {
        let d = Arc::clone(&daemon);
        let start = tokio::spawn(async move { d.start().await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Not ready: nothing blessed, status says what the gate waits for.
        assert!(matches!(daemon.bless_state(), Bless::Waiting(w) if w.contains("ready line")));
        assert!(!marker.exists());
        pid1.ready.store(true, Ordering::SeqCst);
        pid1.failed.lock().unwrap().push("containerd".into());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(matches!(daemon.bless_state(), Bless::Waiting(w) if w.contains("failed units: containerd")));
        pid1.failed.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let st = daemon.status().await.unwrap();
        assert!(!st.blessed && st.gate.contains("check flag"), "{st:?}");
        assert_eq!(machine.files(), ["berth-0.1.0.conf", "berth-0.2.0+2-1.conf"]);
        std::fs::write(&flag, "").unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), start).await.unwrap().unwrap(), Bless::Done);
    });
    assert_eq!(machine.files(), ["berth-0.1.0.conf", "berth-0.2.0.conf"]);
    assert!(marker.exists());
    let h = daemon.history();
    let last = h.operations.last().unwrap();
    assert!(last.kind == Kind::Bless && last.ok && last.version == "0.2.0", "{last:?}");
}

#[test]
fn a_check_that_hangs_is_cut_at_its_timeout_and_the_gate_keeps_trying() {
    let dir = TempDir::new("gate-timeout");
    let machine = FakeMachine::new(&[("berth-0.2.0+3.conf", Slot::A)], Slot::A, Some("berth-0.2.0+3.conf"));
    let pid1 = FakePid1::default();
    pid1.ready.store(true, Ordering::SeqCst);
    let s = settings(&dir.0, vec![check("slow", "sleep 30", Duration::from_millis(100))]);
    let daemon = Daemon::new(machine.clone(), pid1, s);
    rt().block_on(async {
        let d = Arc::clone(&daemon);
        let t0 = std::time::Instant::now();
        let start = tokio::spawn(async move { d.start().await });
        tokio::time::sleep(Duration::from_millis(600)).await;
        let st = daemon.status().await.unwrap();
        assert!(st.gate.contains("check slow") && st.gate.contains("no answer within 100ms"), "{st:?}");
        assert!(!st.blessed && t0.elapsed() < Duration::from_secs(5));
        start.abort();
    });
    assert_eq!(machine.files(), ["berth-0.2.0+3.conf"], "never blessed while the gate fails");
}

#[test]
fn a_bless_that_does_not_stick_is_loud_in_status_and_no_marker_is_made() {
    let dir = TempDir::new("bless-lost");
    let machine = FakeMachine::new(&[("berth-0.2.0+2-1.conf", Slot::A)], Slot::A, Some("berth-0.2.0+2-1.conf"));
    machine.0.lock().unwrap().renames_lost = true;
    let pid1 = FakePid1::default();
    pid1.ready.store(true, Ordering::SeqCst);
    let s = settings(&dir.0, vec![]);
    let marker = s.blessed_marker.clone();
    let daemon = Daemon::new(machine, pid1, s);
    let st: WireStatus = rt().block_on(async {
        let b = daemon.start().await;
        assert!(matches!(&b, Bless::Failed(w) if w.contains("did not stick")), "{b:?}");
        daemon.status().await.unwrap()
    });
    assert!(!st.blessed && st.bless_error.contains("the rename did not stick: the ESP still has berth-0.2.0+2-1.conf"));
    assert!(!marker.exists());
    assert!(!daemon.history().operations.last().unwrap().ok);
}

#[test]
fn an_uncounted_boot_is_blessed_at_once() {
    let dir = TempDir::new("uncounted");
    let machine = FakeMachine::new(&[("berth-0.1.0.conf", Slot::A)], Slot::A, None);
    let s = settings(&dir.0, vec![check("never", "exit 1", Duration::from_secs(1))]);
    let marker = s.blessed_marker.clone();
    let daemon = Daemon::new(machine, FakePid1::default(), s);
    assert_eq!(rt().block_on(daemon.start()), Bless::Done);
    assert!(marker.exists());
}

// ------------------------------------------------- history, failed versions

#[test]
fn the_history_is_written_atomically_and_survives_a_restart() {
    let dir = TempDir::new("history");
    let machine = FakeMachine::new(&[("berth-0.1.0.conf", Slot::A)], Slot::A, None);
    let s = settings(&dir.0, vec![]);
    let src = bundle(&dir.0, "0.2.0");
    let daemon = Daemon::new(machine.clone(), FakePid1::default(), s.clone());
    rt().block_on(async {
        daemon.install(&src, false, |_| {}).await.unwrap();
    });
    let store = Store::new(&s.state_dir);
    // No temporary file left behind, and the file reads back.
    let names: Vec<_> = std::fs::read_dir(&s.state_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["history.json"]);
    let h = store.load().unwrap();
    assert_eq!(h.operations.len(), 1);
    assert_eq!(h.staged.as_ref().unwrap().version, "0.2.0");
    // A new daemon (a restart) sees it.
    let again = Daemon::new(machine, FakePid1::default(), s);
    assert_eq!(again.history(), h);
    let st = rt().block_on(again.status()).unwrap();
    assert_eq!(st.last[0].version, "0.2.0");
    assert!(st.last[0].ok);
    assert_eq!(st.other.entry, "berth-0.2.0+3.conf");
}

#[test]
fn a_version_that_spent_its_tries_or_is_not_running_after_a_reboot_is_failed_and_skipped() {
    let dir = TempDir::new("failed");
    let machine = FakeMachine::new(&[("berth-0.1.0.conf", Slot::A)], Slot::A, None);
    let s = settings(&dir.0, vec![]);
    let src = bundle(&dir.0, "0.2.0");
    let daemon = Daemon::new(machine.clone(), FakePid1::default(), s.clone());
    rt().block_on(async { daemon.install(&src, false, |_| {}).await.unwrap() });
    // It spent its tries; systemd-boot fell back to slot a.
    machine.reboot(Slot::A, None, &[("berth-0.1.0.conf", Slot::A), ("berth-0.2.0+0-3.conf", Slot::B)]);
    let daemon = Daemon::new(machine.clone(), FakePid1::default(), s.clone());
    rt().block_on(async {
        daemon.start().await;
        let st = daemon.status().await.unwrap();
        assert_eq!(st.failed.len(), 1, "{st:?}");
        assert_eq!(st.failed[0].version, "0.2.0");
        // Not installed again without --force; with it, it is.
        let err = daemon.install(&src, false, |_| {}).await.unwrap_err();
        assert!(err.to_string().contains("failed here"), "{err}");
    });
    assert!(Store::new(&s.state_dir).load().unwrap().has_failed("0.2.0"));

    // A staged version not running after a reboot (no counter left to see).
    let mut h = History::default();
    let state = FakeMachine::new(&[("berth-0.1.0.conf", Slot::A)], Slot::A, None).load().unwrap();
    h.staged =
        Some(berth_updater::daemon::history::Staged { version: "0.3.0".into(), slot: "b".into(), boot_id: "x".into() });
    assert!(!h.note_boot(&state, "x", 1), "the same boot: not rebooted yet");
    assert!(h.note_boot(&state, "y", 2));
    assert!(h.has_failed("0.3.0") && h.staged.is_none());
}

/// Publishes `versions` in `dir` as `berth-image publish` does (signed
/// metadata, a bundle file each), signed with a key added to `keys`.
fn publish(dir: &Path, keys: &Path, versions: &[&str]) {
    use berth_updater::publish::{self, Metadata, Release};
    let key = generate_dev_keypair();
    std::fs::write(keys.join("publisher.pem"), public_key_pem(&key.verifying_key()).unwrap()).unwrap();
    let releases = versions
        .iter()
        .map(|v| {
            let file = bundle(dir, v);
            Release {
                version: v.to_string(),
                bundle: Path::new(&file).file_name().unwrap().to_string_lossy().into_owned(),
                size: v.len() as u64,
                sha256: "0".repeat(64),
                architecture: "x86_64".into(),
                min_from_version: "0.1.0".into(),
            }
        })
        .collect();
    let meta = Metadata::new(releases, std::time::SystemTime::now(), Duration::from_secs(3600));
    let (json, sig) = publish::sign(&meta, &key).unwrap();
    std::fs::write(dir.join(publish::METADATA_FILE), json).unwrap();
    std::fs::write(dir.join(publish::SIGNATURE_FILE), sig).unwrap();
}

#[test]
fn automatic_mode_never_installs_a_failed_version() {
    let dir = TempDir::new("auto");
    let site = dir.0.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let machine = FakeMachine::new(&[("berth-0.1.0.conf", Slot::A)], Slot::A, None);
    let mut s = settings(&dir.0, vec![]);
    s.config.auto.source = Some(site.display().to_string());
    s.config.auto.reboot = berth_updater::config::RebootPolicy::Immediately;
    publish(&site, &s.keys_dir, &["0.2.0"]);
    let mut h = History::default();
    h.failed.push(berth_updater::daemon::history::Failed { version: "0.2.0".into(), why: "x".into(), time: 0 });
    Store::new(&s.state_dir).save(&h).unwrap();
    let pid1 = FakePid1::default();
    let daemon = Daemon::new(machine.clone(), pid1.clone(), s.clone());
    rt().block_on(async {
        // Not blessed yet: nothing happens.
        assert!(daemon.auto_round().await.unwrap().contains("not blessed"));
        daemon.start().await;
        // 0.2.0 failed here: check offers nothing, nothing is installed.
        let c = daemon.check(None).await.unwrap();
        assert!(!c.available, "{c:?}");
        assert_eq!(daemon.auto_round().await.unwrap(), "up to date (0.1.0)");
    });
    assert_eq!(machine.0.lock().unwrap().installs, 0);
    assert_eq!(pid1.reboots.load(Ordering::SeqCst), 0);

    // A newer good version is installed, and the machine reboots into it.
    publish(&site, &s.keys_dir, &["0.2.0", "0.3.0"]);
    rt().block_on(async {
        let c = daemon.check(None).await.unwrap();
        assert_eq!((c.available, c.version.as_str()), (true, "0.3.0"));
        assert!(c.url.ends_with("/berth-0.3.0.bundle"), "{c:?}");
        let what = daemon.auto_round().await.unwrap();
        assert!(what.contains("installed 0.3.0 into slot b; rebooting"), "{what}");
    });
    assert_eq!(machine.files(), ["berth-0.1.0.conf", "berth-0.3.0+3.conf"]);
    assert_eq!(pid1.reboots.load(Ordering::SeqCst), 1);
}

// --------------------------------------------------------- install, rollback

#[test]
fn one_install_at_a_time_and_rollback_goes_back_and_forth() {
    let dir = TempDir::new("one-at-a-time");
    let machine = FakeMachine::new(&[("berth-0.1.0.conf", Slot::A)], Slot::A, None);
    let s = settings(&dir.0, vec![]);
    let src = bundle(&dir.0, "0.2.0");
    let daemon = Daemon::new(machine.clone(), FakePid1::default(), s);
    machine.0.lock().unwrap().hold = true;
    rt().block_on(async {
        let d = Arc::clone(&daemon);
        let s2 = src.clone();
        let first = tokio::spawn(async move { d.install(&s2, false, |_| {}).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let err = daemon.install(&src, false, |_| {}).await.unwrap_err();
        assert!(err.to_string().starts_with("an install is already running"), "{err}");
        // Status answers while it runs, and names it.
        assert_eq!(daemon.status().await.unwrap().installing, src);
        machine.0.lock().unwrap().hold = false;
        let i = first.await.unwrap().unwrap();
        assert_eq!((i.version.as_str(), i.slot), ("0.2.0", Slot::B));
    });
    assert_eq!(machine.0.lock().unwrap().installs, 1);
    // Booted into b and blessed; then back to a, and to b again.
    machine.reboot(Slot::B, None, &[("berth-0.1.0.conf", Slot::A), ("berth-0.2.0.conf", Slot::B)]);
    rt().block_on(async {
        let r = daemon.rollback().await.unwrap();
        assert_eq!((r.slot.as_str(), r.version.as_str()), ("a", "0.1.0"));
    });
    assert_eq!(machine.files(), ["berth-0.1.0.conf", "berth-0.2.0+0.conf"]);
    machine.reboot(Slot::A, None, &[("berth-0.1.0.conf", Slot::A), ("berth-0.2.0+0.conf", Slot::B)]);
    rt().block_on(async {
        let r = daemon.rollback().await.unwrap();
        assert_eq!(r.slot, "b");
    });
    assert_eq!(machine.files(), ["berth-0.1.0+0.conf", "berth-0.2.0+3.conf"]);
    let last = daemon.history().last_change().cloned().unwrap();
    assert!(last.kind == Kind::Rollback && last.ok && last.slot == "b");
}

// ------------------------------------------------------------- the API

fn my_uid(dir: &Path) -> u32 {
    std::fs::metadata(dir).unwrap().uid()
}

#[test]
fn the_api_over_a_socket_streams_progress_refuses_others_and_reports_errors() {
    let dir = TempDir::new("api");
    let machine = FakeMachine::new(&[("berth-0.1.0.conf", Slot::A)], Slot::A, None);
    let s = settings(&dir.0, vec![]);
    let src = bundle(&dir.0, "0.2.0");
    let daemon = Daemon::new(machine.clone(), FakePid1::default(), s);
    let socket = dir.0.join("run/berth/updater.sock");
    let mut config = PeerConfig::new(&socket);
    config.allowed_uids = vec![0, my_uid(&dir.0)];
    rt().block_on(async {
        let _server = api::serve(Arc::clone(&daemon), config.clone()).unwrap();
        let peer = Peer::connect(&socket, UPDATER, Duration::from_secs(10)).await.unwrap();
        let st: WireStatus = peer.call("Status", &(), Duration::from_secs(10)).await.unwrap();
        assert_eq!((st.booted.slot.as_str(), st.booted.version.as_str()), ("a", "0.1.0"));

        // Install, watching the signals on the same connection.
        let mut signals = zbus::MessageStream::from(peer.connection());
        let args = (src.as_str(), false);
        let i: WireInstalled = peer.call("Install", &args, Duration::from_secs(10)).await.unwrap();
        assert_eq!((i.version.as_str(), i.slot.as_str(), i.bytes), ("0.2.0", "b", 1024));
        let mut steps = Vec::new();
        use zbus::export::futures_core::Stream;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(
            Duration::from_millis(200),
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut signals).poll_next(cx)),
        )
        .await
        {
            if msg.header().member().is_some_and(|m| m.as_str() == "Progress") {
                let (step, done, total): (String, u64, u64) = msg.body().deserialize().unwrap();
                steps.push((step, done, total));
            }
        }
        assert!(steps.contains(&("write-root".into(), 0, 1024)), "{steps:?}");
        assert!(steps.contains(&("done".into(), 1, 1)), "{steps:?}");

        // Errors come back with their name and text.
        let same = bundle(&dir.0, "0.1.0");
        let err = peer.call::<_, WireInstalled>("Install", &(same.as_str(), false), Duration::from_secs(10)).await;
        match err {
            Err(ClientError::Remote { name, message }) => {
                assert_eq!(name, "Refused");
                assert_eq!(message, "version 0.1.0 is the booted version");
            }
            other => panic!("{other:?}"),
        }
        let err =
            peer.call::<_, berth_updater::daemon::wire::WireCandidate>("Check", &("",), Duration::from_secs(10)).await;
        assert!(
            matches!(&err, Err(ClientError::Remote { message, .. }) if message.contains("no update source")),
            "{err:?}"
        );

        // The socket's rules are the control API's.
        let mode =
            |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777;
        assert_eq!(mode(&socket), 0o600);
        assert_eq!(mode(socket.parent().unwrap()), 0o700);
        drop(_server);
        assert!(!socket.exists());

        // Another uid is refused.
        config.allowed_uids = vec![my_uid(&dir.0).wrapping_add(1)];
        let _server = api::serve(Arc::clone(&daemon), config).unwrap();
        let err = Peer::connect(&socket, UPDATER, Duration::from_secs(10)).await.unwrap_err();
        assert!(err.to_string().contains("only root may use it"), "{err}");
    });
}

fn version_of(file: &str) -> String {
    berth_updater::boot_entry::EntryName::parse(file).unwrap().version
}

// ------------------------------------------------------- reboot lock

/// A reboot semaphore in memory: what the daemon asked of it, in order; an
/// acquire fails (etcd unreachable) while `failures` is above zero, and
/// waits while `busy` (another host holds the slot).
#[derive(Clone, Default)]
struct FakeLock {
    calls: Arc<Mutex<Vec<String>>>,
    failures: Arc<AtomicU32>,
    busy: Arc<AtomicBool>,
    /// A slot saved before the reboot.
    saved: Arc<AtomicBool>,
}

impl FakeLock {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl RebootLock for FakeLock {
    fn acquire<'a>(&'a self, waiting: Waiting<'a>) -> LockFuture<'a, ()> {
        Box::pin(async move {
            self.calls.lock().unwrap().push("acquire".into());
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err("etcd at http://127.0.0.1:2379: connecting: connection refused".into());
            }
            while self.busy.load(Ordering::SeqCst) {
                waiting("waiting for a reboot slot (1 at once): held by host-2".into());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.saved.store(true, Ordering::SeqCst);
            Ok(())
        })
    }

    fn resume(&self) -> LockFuture<'_, bool> {
        Box::pin(async move {
            self.calls.lock().unwrap().push("resume".into());
            Ok(self.saved.load(Ordering::SeqCst))
        })
    }

    fn release(&self) -> LockFuture<'_, bool> {
        Box::pin(async move {
            self.calls.lock().unwrap().push("release".into());
            Ok(self.saved.swap(false, Ordering::SeqCst))
        })
    }
}

fn fast_retry() -> LockRetry {
    LockRetry { first: Duration::from_millis(20), max: Duration::from_millis(40), tries: 3 }
}

/// An automatic-mode daemon (reboot immediately) with 0.2.0 published.
fn auto_daemon(dir: &Path, lock: &FakeLock, pid1: &FakePid1) -> Arc<Daemon<FakeMachine, FakePid1>> {
    let site = dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let machine = FakeMachine::new(&[("berth-0.1.0.conf", Slot::A)], Slot::A, None);
    let mut s = settings(dir, vec![]);
    s.config.auto.source = Some(site.display().to_string());
    s.config.auto.reboot = berth_updater::config::RebootPolicy::Immediately;
    publish(&site, &s.keys_dir, &["0.2.0"]);
    let lock: Arc<dyn RebootLock> = Arc::new(lock.clone());
    Daemon::with_reboot_lock(machine, pid1.clone(), s, Some((lock, fast_retry())))
}

#[test]
fn with_etcd_unreachable_the_host_does_not_reboot_and_says_so_until_it_takes_a_slot() {
    let dir = TempDir::new("lock-unreachable");
    let (lock, pid1) = (FakeLock::default(), FakePid1::default());
    lock.failures.store(u32::MAX, Ordering::SeqCst);
    let daemon = auto_daemon(&dir.0, &lock, &pid1);
    rt().block_on(async {
        daemon.start().await;
        let d = Arc::clone(&daemon);
        let round = tokio::spawn(async move { d.auto_round().await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pid1.reboots.load(Ordering::SeqCst), 0, "rebooted without a slot");
        let st = daemon.status().await.unwrap();
        assert!(
            st.reboot_lock.starts_with("no reboot slot: etcd at http://127.0.0.1:2379: connecting: connection refused; not rebooting, trying again in "),
            "{st:?}"
        );
        assert!(lock.calls().iter().filter(|c| *c == "acquire").count() >= 3, "no retries: {:?}", lock.calls());
        // etcd is back.
        lock.failures.store(0, Ordering::SeqCst);
        let what = tokio::time::timeout(Duration::from_secs(5), round).await.unwrap().unwrap().unwrap();
        assert!(what.ends_with("; rebooting"), "{what}");
        assert_eq!(daemon.status().await.unwrap().reboot_lock, "holding a reboot slot: rebooting");
    });
    assert_eq!(pid1.reboots.load(Ordering::SeqCst), 1);
}

#[test]
fn a_host_waits_for_the_slot_another_holds_and_says_who_holds_it() {
    let dir = TempDir::new("lock-busy");
    let (lock, pid1) = (FakeLock::default(), FakePid1::default());
    lock.busy.store(true, Ordering::SeqCst);
    let daemon = auto_daemon(&dir.0, &lock, &pid1);
    rt().block_on(async {
        daemon.start().await;
        let d = Arc::clone(&daemon);
        let round = tokio::spawn(async move { d.auto_round().await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(pid1.reboots.load(Ordering::SeqCst), 0, "rebooted while another host held the slot");
        let st = daemon.status().await.unwrap();
        assert_eq!(st.reboot_lock, "waiting for a reboot slot (1 at once): held by host-2");
        lock.busy.store(false, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), round).await.unwrap().unwrap().unwrap();
    });
    assert_eq!(pid1.reboots.load(Ordering::SeqCst), 1);
}

#[test]
fn a_reboot_that_fails_after_taking_the_slot_gives_it_back() {
    let dir = TempDir::new("lock-reboot-fails");
    let (lock, pid1) = (FakeLock::default(), FakePid1::default());
    pid1.refuse_reboot.store(true, Ordering::SeqCst);
    let daemon = auto_daemon(&dir.0, &lock, &pid1);
    rt().block_on(async {
        daemon.start().await;
        let e = daemon.auto_round().await.unwrap_err();
        assert!(e.to_string().contains("PID1 refused"), "{e}");
        let st = daemon.status().await.unwrap();
        assert_eq!(st.reboot_lock, "no reboot slot held (released: the reboot failed)");
    });
    // start: resume (nothing saved), then the round: acquire, release.
    assert_eq!(lock.calls(), ["resume", "release", "acquire", "release"]);
    assert!(!lock.saved.load(Ordering::SeqCst), "the slot is still held");
}

#[test]
fn the_slot_taken_before_the_reboot_is_held_through_the_gate_and_released_once_blessed() {
    let dir = TempDir::new("lock-bless");
    let flag = dir.0.join("healthy");
    let machine = FakeMachine::new(
        &[("berth-0.1.0.conf", Slot::A), ("berth-0.2.0+2-1.conf", Slot::B)],
        Slot::B,
        Some("berth-0.2.0+2-1.conf"),
    );
    let pid1 = FakePid1::default();
    pid1.ready.store(true, Ordering::SeqCst);
    let lock = FakeLock::default();
    lock.saved.store(true, Ordering::SeqCst);
    let s = settings(&dir.0, vec![check("flag", &format!("test -e {}", flag.display()), Duration::from_secs(5))]);
    let shared: Arc<dyn RebootLock> = Arc::new(lock.clone());
    let daemon = Daemon::with_reboot_lock(machine, pid1, s, Some((shared, fast_retry())));
    rt().block_on(async {
        let d = Arc::clone(&daemon);
        let start = tokio::spawn(async move { d.start().await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The gate waits: the slot is held, not released.
        assert_eq!(lock.calls(), ["resume"]);
        let st = daemon.status().await.unwrap();
        assert_eq!(st.reboot_lock, "holding the reboot slot taken before the reboot until this boot is blessed");
        std::fs::write(&flag, "").unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), start).await.unwrap().unwrap(), Bless::Done);
        let st = daemon.status().await.unwrap();
        assert_eq!(st.reboot_lock, "no reboot slot held (released: this boot is blessed)");
    });
    assert_eq!(lock.calls(), ["resume", "release"]);
    assert!(!lock.saved.load(Ordering::SeqCst));
}

#[test]
fn a_boot_whose_bless_fails_keeps_the_slot() {
    let dir = TempDir::new("lock-bless-fails");
    let machine = FakeMachine::new(
        &[("berth-0.1.0.conf", Slot::A), ("berth-0.2.0+2-1.conf", Slot::B)],
        Slot::B,
        Some("berth-0.2.0+2-1.conf"),
    );
    machine.0.lock().unwrap().renames_lost = true;
    let pid1 = FakePid1::default();
    pid1.ready.store(true, Ordering::SeqCst);
    let lock = FakeLock::default();
    lock.saved.store(true, Ordering::SeqCst);
    let shared: Arc<dyn RebootLock> = Arc::new(lock.clone());
    let daemon = Daemon::with_reboot_lock(machine, pid1, settings(&dir.0, vec![]), Some((shared, fast_retry())));
    let bless = rt().block_on(async { tokio::time::timeout(Duration::from_secs(10), daemon.start()).await.unwrap() });
    assert!(matches!(bless, Bless::Failed(_)), "{bless:?}");
    assert_eq!(lock.calls(), ["resume"], "a boot that is not good released its slot");
    assert!(lock.saved.load(Ordering::SeqCst));
}
