//! Limits and sessions as a user of a container host meets them, on one
//! boot:
//!
//! - open files: PID1 raised the system-wide ceilings (`fs.nr_open`, its
//!   own hard limit); containerd and etcd run with 1048576 open files
//!   (`/proc/<pid>/limits`), a unit that sets none with systemd's
//!   1024:524288 (dropbear), and a container still with the OCI default of
//!   1024;
//! - SSH: a real OpenSSH client logs in over a host-forwarded port with a
//!   key made here; its session, and a job started from it, outlive
//!   `berthctl restart sshd` and a `kill -9` of the listener, and the
//!   session still answers; a new login works after each.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use berth_qemu::ssh::{free_port, ssh, KeyPair};
use berth_qemu::{boot_timeout, shutdown_timeout, Vm, VmConfig, GIB};

/// The main process of a unit once it is active, from `berthctl status
/// UNIT` (exit 0 when active). The ready line does not wait for etcd
/// (only sshd, an idle unit, waits for it, at most 5 s), so right after it
/// etcd can still be starting on a slow first boot (`berthctl status`
/// exits 3 then): this waits for it, up to a minute, as a user would.
#[track_caller]
fn unit_pid(vm: &mut Vm, unit: &str) -> u32 {
    let out = berth_qemu::cluster::poll(
        vm,
        &format!("{unit} active after the ready line"),
        &format!("berthctl status {unit}"),
        Duration::from_secs(60),
        |_| true,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    out.lines()
        .find_map(|l| l.trim().strip_prefix("PID:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PID in `berthctl status {unit}`:\n{out}"))
}

/// (soft, hard) of the row of `/proc/<pid>/limits` that starts with `name`.
#[track_caller]
fn limit(vm: &mut Vm, pid: &str, name: &str) -> (String, String) {
    let text = vm.sh_ok(&format!("cat /proc/{pid}/limits"));
    limit_in(&text, name)
}

#[track_caller]
fn limit_in(text: &str, name: &str) -> (String, String) {
    let row = text
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} in\n{text}"));
    let cells: Vec<&str> = row[name.len()..].split_whitespace().collect();
    (cells[0].to_string(), cells[1].to_string())
}

fn pair(soft: &str, hard: &str) -> (String, String) {
    (soft.to_string(), hard.to_string())
}

/// A free TCP port on the host's loopback.
/// A new login runs `echo` within `limit` (the listener may be coming
/// back); panics with ssh's last words otherwise.
fn login_works(vm: &Vm, port: u16, key: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let out = ssh(port, key, "root").arg("echo login-$((6*7))").stdin(Stdio::null()).output().expect("running ssh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.lines().any(|l| l.trim() == "login-42") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no SSH login within {limit:?}: {}\nstdout: {stdout}\nstderr: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            vm.paths().context()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// An SSH session running a shell, driven through its stdin, its output
/// lines read on a thread.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Session {
    fn open(port: u16, key: &Path) -> Session {
        let mut child = ssh(port, key, "root")
            .args(["-T", "sh"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting ssh");
        let stdout = child.stdout.take().expect("ssh's stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Session { child, stdin, lines }
    }

    /// Sends a line to the session's shell and returns the first output
    /// line that starts with `prefix` (what follows it), within 30 s.
    fn ask(&mut self, line: &str, prefix: &str, vm: &Vm) -> String {
        let stdin = self.stdin.as_mut().expect("the session is open");
        let sent = stdin.write_all(format!("{line}\n").as_bytes()).and_then(|()| stdin.flush());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(e) => panic!(
                    "the SSH session did not answer `{line}` with {prefix:?} ({e}; write: {sent:?}; ssh: {:?})\n{}",
                    self.child.try_wait(),
                    vm.paths().context()
                ),
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn limits_are_generous_where_needed_and_ssh_sessions_outlive_the_listener() {
    let port = free_port().expect("a free port");
    let net = vec![
        "-netdev".to_string(),
        format!("user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22"),
        "-device".to_string(),
        "virtio-net-pci,netdev=net0,romfile=".to_string(),
    ];
    let mut vm = Vm::start(VmConfig::new().name("limits").disk_size(4 * GIB).net(net)).expect("starting the VM");
    if let Err(e) = vm.wait_ready(boot_timeout()) {
        panic!("the VM did not reach the ready line: {e}");
    }

    // ---- open files ----
    assert_eq!(vm.sh_ok("cat /proc/sys/fs/nr_open").trim(), "1073741816", "fs.nr_open is raised at boot");
    assert_eq!(vm.sh_ok("cat /proc/sys/fs/file-max").trim(), "9223372036854775807", "fs.file-max too");
    assert_eq!(limit(&mut vm, "1", "Max open files").1, "1073741816", "PID1's hard limit is fs.nr_open");
    for unit in ["containerd", "etcd"] {
        let pid = unit_pid(&mut vm, unit).to_string();
        assert_eq!(limit(&mut vm, &pid, "Max open files"), pair("1048576", "1048576"), "{unit}");
    }
    let containerd = unit_pid(&mut vm, "containerd").to_string();
    assert_eq!(limit(&mut vm, &containerd, "Max processes"), pair("unlimited", "unlimited"));
    assert_eq!(limit(&mut vm, &containerd, "Max core file size"), pair("unlimited", "unlimited"));
    let dropbear = unit_pid(&mut vm, "sshd").to_string();
    assert_eq!(limit(&mut vm, &dropbear, "Max open files"), pair("1024", "524288"), "a unit that sets none");

    // A container of a root made of the image's busybox and the libraries
    // its loader lists: the OCI default, not containerd's limits.
    vm.sh_ok(
        "r=/var/lib/limits-root; mkdir -p $r/bin && cp /usr/bin/busybox $r/bin/busybox \
         && ln -sf busybox $r/bin/sh && ln -sf busybox $r/bin/cat \
         && for l in $(/lib64/ld-linux-x86-64.so.2 --list /usr/bin/busybox | grep -o '/[^ ]*'); do \
         mkdir -p $r${l%/*} && cp -L $l $r$l || exit 1; done",
    );
    let (st, out) = vm.sh_status("ctr run --rm --rootfs /var/lib/limits-root limits1 /bin/cat /proc/self/limits");
    assert_eq!(st, 0, "`ctr run` (exit {st}):\n{out}\n{}", vm.paths().context());
    assert_eq!(limit_in(&out, "Max open files"), pair("1024", "1024"), "a container keeps the OCI default");

    // ---- SSH sessions ----
    let dir = berth_qemu::vms_dir().join(format!("limits-ssh-{}", std::process::id()));
    let KeyPair { private: key, public } = KeyPair::new(&dir, "id_ed25519").expect("a key pair");
    vm.sh_ok(&format!(
        "mkdir -p /var/root/.ssh && chmod 700 /var/root/.ssh && echo '{public}' > /var/root/.ssh/authorized_keys \
             && chmod 600 /var/root/.ssh/authorized_keys"
    ));
    login_works(&vm, port, &key, Duration::from_secs(60));
    let mut session = Session::open(port, &key);
    let shell = session.ask("echo session $$", "session ", &vm);
    let job = session.ask("sleep 600 >/dev/null 2>&1 & echo job $!", "job ", &vm);
    assert!(shell.parse::<u32>().is_ok() && job.parse::<u32>().is_ok(), "shell {shell:?}, job {job:?}");

    let still_there = |vm: &mut Vm, session: &mut Session, after: &str| {
        let (st, out) = vm.sh_status(&format!("kill -0 {shell} && kill -0 {job} && echo both-alive"));
        assert!(st == 0 && out.contains("both-alive"), "after {after}, the session or its job is gone:\n{out}");
        let answer = session.ask(&format!("kill -0 {job} && echo alive $$"), "alive ", vm);
        assert_eq!(answer, shell, "after {after}, the same session answers");
    };

    // A restart of the unit: a new listener, the session lives on.
    let listener = unit_pid(&mut vm, "sshd");
    let out = vm.sh_ok("berthctl restart sshd");
    let restarted = unit_pid(&mut vm, "sshd");
    assert_ne!(restarted, listener, "a new listener after `berthctl restart sshd`:\n{out}");
    let (st, _) = vm.sh_status(&format!("kill -0 {listener}"));
    assert_ne!(st, 0, "the old listener {listener} is gone");
    still_there(&mut vm, &mut session, "berthctl restart sshd");
    login_works(&vm, port, &key, Duration::from_secs(60));

    // The listener crashes: restarted, the session lives on.
    vm.sh_ok(&format!("kill -9 {restarted}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, out) = vm.sh_status("berthctl status sshd");
        let pid = out.lines().find_map(|l| l.trim().strip_prefix("PID:")).map(|p| p.trim().to_string());
        if st == 0 && pid.as_deref().is_some_and(|p| p != restarted.to_string() && p != "-") {
            break;
        }
        assert!(Instant::now() < deadline, "sshd is not back after kill -9 of its listener:\n{out}");
        std::thread::sleep(Duration::from_millis(500));
    }
    still_there(&mut vm, &mut session, "kill -9 of the listener");
    login_works(&vm, port, &key, Duration::from_secs(60));
    drop(session);

    vm.powerdown().expect("power button");
    vm.wait_exit(shutdown_timeout()).expect("QEMU exits after the power button");
    let _ = std::fs::remove_dir_all(&dir);
}
