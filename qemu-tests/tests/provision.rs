//! User data as users give it (issue 9): the same image made into different
//! machines by a native TOML document over QEMU's fw_cfg, a `#cloud-config`
//! on a NoCloud seed volume, and the EC2-style metadata service; what runs
//! once per instance and what every boot; a document that changed under
//! the same instance-id; an invalid document; and changing the
//! configuration of a running machine with `berthctl config apply`
//! (`--try` reverting without a confirm); time sync from the NTP server
//! `ntp:` names, on a machine whose clock starts 25 years wrong, and
//! `ntp: {enabled: false}` leaving it off.
//!
//! Every assertion is what a user sees: the hostname, an SSH login with the
//! key from user data, files with their modes and owners, a unit that ran,
//! the console and `berthctl status`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use berth_qemu::ntp::NtpServer;
use berth_qemu::ssh::{free_port, ssh_run, KeyPair};
use berth_qemu::{boot_timeout, nocloud_seed, ImdsServer, SeedFiles, SeedFormat, Vm, VmConfig, GIB, TOKEN_HEADER};

/// The test's scratch directory on the host.
fn scratch(name: &str) -> PathBuf {
    let dir = berth_qemu::vms_dir().join(format!("provision-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the scratch directory");
    dir
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// Boots to the ready line.
fn start(cfg: VmConfig) -> Vm {
    let mut vm = Vm::start(cfg).expect("starting the VM");
    if let Err(e) = vm.wait_ready(boot_timeout()) {
        panic!("the VM did not reach the ready line: {e}");
    }
    vm
}

/// The console lines of the last boot that mention user data.
fn user_data_lines(vm: &Vm) -> String {
    let text = vm.console_text();
    let last_boot = text.rfind("Linux version").map(|i| &text[i..]).unwrap_or(&text);
    last_boot.lines().filter(|l| l.contains("user data")).collect::<Vec<_>>().join("\n")
}

/// Waits until `cmd` prints `want` (trimmed) in the guest.
fn wait_output(vm: &mut Vm, cmd: &str, want: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let (_, out) = vm.sh_status(cmd);
        if out.trim() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{cmd}` printed {:?}, not {want:?}, for {limit:?}\n{}",
            out.trim(),
            vm.paths().context()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `stat -c '%a %U:%G'` of a path in the guest.
fn mode_owner(vm: &mut Vm, path: &str) -> String {
    vm.sh_ok(&format!("stat -c '%a %U:%G' {path}")).trim().to_string()
}

fn hostname(vm: &mut Vm) -> String {
    vm.sh_ok("hostname").trim().to_string()
}

/// Reboots from inside and waits for the next ready line.
fn reboot(vm: &mut Vm) {
    vm.sh_nowait("berthctl reboot").expect("berthctl reboot");
    if let Err(e) = vm.wait_ready(boot_timeout()) {
        panic!("no ready line after the reboot: {e}");
    }
}

/// Powers off and starts QEMU again (so fw_cfg entries are read anew).
fn power_cycle(vm: &mut Vm) {
    vm.powerdown().expect("powerdown");
    vm.wait_exit(Duration::from_secs(120)).expect("QEMU exits after the power-off");
    vm.restart().expect("starting QEMU again");
    if let Err(e) = vm.wait_ready(boot_timeout()) {
        panic!("no ready line after the power cycle: {e}");
    }
}

/// The native document of the fw_cfg test; `name` is its hostname.
fn native_document(name: &str, key: &str) -> String {
    format!(
        r##"#berth-config
hostname = "{name}"
bootcmd = ["mkdir -p /var/lib/prov-test && echo boot >> /var/lib/prov-test/bootcmd.log"]
runcmd = ["echo run >> /var/lib/prov-test/runcmd.log"]

[ntp]
enabled = false

[[users]]
name = "alice"
groups = ["ops"]
shell = "/usr/bin/sh"
ssh_authorized_keys = ["{key}"]

[[write_files]]
path = "/etc/prov-test/plain.conf"
content = "plain text\n"
permissions = "0640"
owner = "alice:ops"
defer = true

[[write_files]]
path = "/var/lib/prov-test/b64.txt"
encoding = "b64"
content = "{b64}"
permissions = "0600"

[[write_files]]
path = "/var/lib/prov-test/gz.txt"
encoding = "gz+b64"
content = "{gz}"

[units.add]
hello = '''
description = "says the hostname it saw"
[service]
exec = ["/usr/bin/sh", "-c", "echo v1 $(hostname) > /run/hello"]
kind = "oneshot"
'''
"##,
        b64 = b64(b"hello from b64\n"),
        gz = b64(&gzip(b"hello from gzip\n")),
    )
}

/// Native TOML over fw_cfg: applied before the units start, once per
/// instance vs every boot, a changed document under the same instance-id,
/// a new instance-id; then `berthctl config apply` and `--try`.
#[test]
fn native_user_data_over_fw_cfg_and_config_apply() {
    let dir = scratch("fw-cfg");
    let keys = KeyPair::new(&dir, "alice").expect("a key pair");
    let (user_data, meta_data) = (dir.join("user-data"), dir.join("meta-data"));
    write(&user_data, &native_document("toml-node", &keys.public));
    write(&meta_data, "instance-id: i-1\n");
    let port = free_port().expect("a free port");
    let cfg = VmConfig::new()
        .name("prov-fw-cfg")
        .disk_size(4 * GIB)
        .user_data(&user_data)
        .meta_data(&meta_data)
        .ssh_port(port);
    let mut vm = start(cfg);

    // ---- first boot: applied, and the units saw it ----
    let lines = user_data_lines(&vm);
    assert!(lines.contains("fw_cfg") && lines.contains("applied") && lines.contains("i-1"), "console:\n{lines}");
    assert_eq!(hostname(&mut vm), "toml-node");
    wait_output(&mut vm, "cat /run/hello", "v1 toml-node", Duration::from_secs(60));
    let login =
        ssh_run(&vm, port, &keys.private, "alice", "id -un; id -Gn", Duration::from_secs(90)).expect("alice logs in");
    let mut login = login.lines();
    assert_eq!(login.next(), Some("alice"));
    assert!(login.next().is_some_and(|g| g.split_whitespace().any(|g| g == "ops")), "alice is in ops");
    assert_eq!(mode_owner(&mut vm, "/etc/prov-test/plain.conf"), "640 alice:ops");
    assert_eq!(vm.sh_ok("cat /etc/prov-test/plain.conf"), "plain text\n");
    assert_eq!(mode_owner(&mut vm, "/var/lib/prov-test/b64.txt"), "600 root:root");
    assert_eq!(vm.sh_ok("cat /var/lib/prov-test/b64.txt"), "hello from b64\n");
    assert_eq!(mode_owner(&mut vm, "/var/lib/prov-test/gz.txt"), "644 root:root");
    assert_eq!(vm.sh_ok("cat /var/lib/prov-test/gz.txt"), "hello from gzip\n");
    wait_output(&mut vm, "wc -l < /var/lib/prov-test/runcmd.log", "1", Duration::from_secs(120));
    assert_eq!(vm.sh_ok("wc -l < /var/lib/prov-test/bootcmd.log").trim(), "1");
    // `ntp: enabled = false`: the image's time sync is masked, not running.
    assert_eq!(vm.sh_ok("wc -c < /etc/berth/units/ntp.toml").trim(), "0", "ntp.toml is an empty mask");
    let (st, out) = vm.sh_status("berthctl status ntp");
    assert!(st != 0 && out.contains("no unit"), "ntp is not a unit when disabled (exit {st}):\n{out}");
    assert_ne!(vm.sh_status("pidof chronyd").0, 0, "chronyd runs although ntp is disabled");

    // ---- the same document again: runcmd not again, bootcmd again ----
    reboot(&mut vm);
    assert!(user_data_lines(&vm).contains("unchanged"), "console:\n{}", user_data_lines(&vm));
    assert_eq!(vm.sh_ok("wc -l < /var/lib/prov-test/bootcmd.log").trim(), "2", "bootcmd runs every boot");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(vm.sh_ok("wc -l < /var/lib/prov-test/runcmd.log").trim(), "1", "runcmd runs once per instance");
    assert_eq!(hostname(&mut vm), "toml-node");

    // ---- a changed document, the same instance-id: said, not applied ----
    write(&user_data, &native_document("toml-node-2", &keys.public));
    power_cycle(&mut vm);
    let lines = user_data_lines(&vm);
    assert!(
        lines.contains("changed") && lines.contains("not applied") && lines.contains("berthctl config apply"),
        "console:\n{lines}"
    );
    assert_eq!(hostname(&mut vm), "toml-node", "the document in force stays");

    // ---- a new instance-id: applied, runcmd again ----
    write(&meta_data, "instance-id: i-2\n");
    power_cycle(&mut vm);
    assert!(user_data_lines(&vm).contains("applied"), "console:\n{}", user_data_lines(&vm));
    assert_eq!(hostname(&mut vm), "toml-node-2");
    wait_output(&mut vm, "wc -l < /var/lib/prov-test/runcmd.log", "2", Duration::from_secs(120));

    // ---- config apply: the hostname and a unit change without a reboot ----
    let changed = native_document("applied-node", &keys.public).replace("echo v1", "echo v2");
    vm.write_file("/tmp/changed.toml", &changed);
    let (st, out) = vm.sh_status("berthctl config apply /tmp/changed.toml");
    assert_eq!(st, 0, "config apply:\n{out}");
    assert!(
        out.contains("applied-node") && out.contains("hello"),
        "the report names the hostname and the unit:\n{out}"
    );
    assert_eq!(hostname(&mut vm), "applied-node");
    wait_output(&mut vm, "cat /run/hello", "v2 applied-node", Duration::from_secs(60));
    let shown = vm.sh_ok("berthctl config show");
    assert!(shown.contains("hostname = \"applied-node\""), "config show:\n{shown}");

    // An invalid change: refused whole, named by line and key.
    vm.write_file(
        "/tmp/bad.toml",
        "#berth-config\nhostname = \"ok-name\"\n\n[[write_files]]\npath = \"relative/path\"\ncontent = \"x\"\n",
    );
    let (st, out) = vm.sh_status("berthctl config apply /tmp/bad.toml");
    assert_ne!(st, 0, "an invalid document is refused:\n{out}");
    assert!(
        out.contains("/tmp/bad.toml:5") && out.contains("write_files[0].path"),
        "the error names line and key:\n{out}"
    );
    assert_eq!(hostname(&mut vm), "applied-node", "nothing of it applied");

    // ---- --try without a confirm reverts ----
    vm.write_file("/tmp/trial.toml", &native_document("trial-node", &keys.public));
    let (st, out) = vm.sh_status("berthctl config apply --try 20 /tmp/trial.toml");
    assert_eq!(st, 0, "config apply --try:\n{out}");
    assert_eq!(hostname(&mut vm), "trial-node");
    let status = vm.sh_ok("berthctl status");
    assert!(status.contains("trial"), "berthctl status shows the trial:\n{status}");
    wait_output(&mut vm, "hostname", "applied-node", Duration::from_secs(90));
    vm.wait_for("reverted", Duration::from_secs(10)).expect("the console says the trial was reverted");
    let shown = vm.sh_ok("berthctl config show");
    assert!(shown.contains("hostname = \"applied-node\""), "config show after the revert:\n{shown}");
}

/// The Unix time of 2001-01-01T00:00:00Z, where the test's guest clock starts.
const RTC_2001: i64 = 978_307_200;

/// The guest's clock less the host's, in whole seconds (the host's read
/// halfway through the round trip of `date +%s` on the admin shell).
fn clock_offset(vm: &mut Vm) -> i64 {
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let before = now();
    let guest = vm.sh_ok("date +%s");
    let host = (before + now()) / 2.0;
    let guest: f64 = guest.trim().parse().unwrap_or_else(|_| panic!("`date +%s` printed {guest:?}"));
    (guest - host).round() as i64
}

/// `#cloud-config` on a NoCloud seed (vfat, CIDATA): the same kinds of
/// keys, root's key from the top-level ssh_authorized_keys, `!!binary`;
/// and `ntp:` naming the host's NTP server on a machine whose RTC says
/// 2001: chronyd steps the clock to the host's.
#[test]
fn cloud_config_on_a_nocloud_seed() {
    let dir = scratch("nocloud");
    let keys = KeyPair::new(&dir, "bob").expect("a key pair");
    let ntp = NtpServer::start(&dir.join("ntp")).expect("an NTP server on the host's 127.0.0.1:123");
    let user_data = format!(
        r#"#cloud-config
hostname: seed-node
ssh_authorized_keys:
  - {key}
users:
  - default
  - name: bob
    groups: [ops, wheel]
    shell: /usr/bin/sh
    ssh_authorized_keys: [{key}]
write_files:
  - path: /etc/seed-test/owned.conf
    content: |
      owned by bob
    permissions: '0600'
    owner: bob:bob
    defer: true
  - path: /var/lib/seed-test/binary.txt
    content: !!binary |
      {bin}
  - path: /var/lib/seed-test/gz.txt
    encoding: gzip
    content: !!binary |
      {gz}
    permissions: '0755'
packages: [htop]
ntp:
  servers: [{ntp_server}]
berth:
  units:
    add:
      seeded: |
        description = "a unit from the seed"
        [service]
        exec = ["/usr/bin/sh", "-c", "echo seeded > /run/seeded"]
        kind = "oneshot"
"#,
        key = keys.public,
        ntp_server = ntp.guest_address(),
        bin = b64(b"binary content\n"),
        gz = b64(&gzip(b"gzip content\n")),
    );
    let seed = dir.join("seed.img");
    let files = SeedFiles {
        user_data: Some(user_data.into_bytes()),
        meta_data: Some(b"instance-id: nc-1\nlocal-hostname: ignored-name\n".to_vec()),
        network_config: None,
    };
    nocloud_seed(&seed, SeedFormat::Vfat, &files).expect("the seed image");
    let port = free_port().expect("a free port");
    // The machine's RTC (and so its clock at boot) says 2001.
    let cfg = VmConfig::new().name("prov-nocloud").disk_size(4 * GIB).seed(&seed).ssh_port(port);
    let mut vm = start(cfg.arg("-rtc").arg("base=2001-01-01T00:00:00"));

    let lines = user_data_lines(&vm);
    assert!(lines.contains("nocloud") && lines.contains("applied") && lines.contains("nc-1"), "console:\n{lines}");
    assert!(lines.contains("packages"), "the unsupported key is named on the console:\n{lines}");
    assert_eq!(hostname(&mut vm), "seed-node");
    let who = ssh_run(&vm, port, &keys.private, "bob", "id -un", Duration::from_secs(90)).expect("bob logs in");
    assert_eq!(who.trim(), "bob");
    let who = ssh_run(&vm, port, &keys.private, "root", "id -un", Duration::from_secs(30)).expect("root logs in");
    assert_eq!(who.trim(), "root");
    assert_eq!(mode_owner(&mut vm, "/etc/seed-test/owned.conf"), "600 bob:bob");
    assert_eq!(vm.sh_ok("cat /var/lib/seed-test/binary.txt"), "binary content\n");
    assert_eq!(vm.sh_ok("cat /var/lib/seed-test/gz.txt"), "gzip content\n");
    assert_eq!(mode_owner(&mut vm, "/var/lib/seed-test/gz.txt"), "755 root:root");
    wait_output(&mut vm, "cat /run/seeded", "seeded", Duration::from_secs(60));
    let status = vm.sh_ok("berthctl status");
    assert!(status.contains("packages"), "the warning is in berthctl status:\n{status}");

    // ---- time sync: chronyd, with the server user data names, steps the
    // clock from 2001 to the host's ----
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let mut offset = clock_offset(&mut vm);
    while offset.abs() > 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        offset = clock_offset(&mut vm);
    }
    assert!(
        offset.abs() <= 5,
        "the guest's clock is {offset} s off the host's after 180 s (it started in 2001)\n\
         berthctl status ntp:\n{}\nberthctl logs ntp:\n{}\nthe host's NTP server:\n{}",
        vm.sh_status("berthctl status ntp").1,
        vm.sh_status("berthctl logs ntp").1,
        ntp.log()
    );
    eprintln!(
        "the guest's clock is {offset} s off the host's, {} s after the checks began",
        started.elapsed().as_secs()
    );
    let tracking = vm.sh_ok("chronyc -n tracking");
    assert!(tracking.contains("(10.0.2.2)"), "chronyc tracking names another reference:\n{tracking}");
    let sources = vm.sh_ok("chronyc -n sources");
    assert!(
        sources.lines().any(|l| l.starts_with("^*") && l.contains("10.0.2.2")),
        "10.0.2.2 is not the selected source:\n{sources}"
    );
    // chronyd stepped the clock (makestep) by the 25 years the RTC was behind.
    let logs = vm.sh_ok("berthctl logs ntp");
    let stepped: f64 = logs
        .lines()
        .find_map(|l| l.split("System clock wrong by ").nth(1)?.split_whitespace().next()?.parse::<f64>().ok())
        .map(f64::abs)
        .unwrap_or_else(|| panic!("no `System clock wrong by` in chronyd's log:\n{logs}"));
    let behind = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64) - RTC_2001;
    assert!(
        (stepped - behind as f64).abs() < 3600.0,
        "chronyd stepped the clock by {stepped} s, not the ~{behind} s the RTC was behind:\n{logs}"
    );
}

/// The EC2-style metadata service (IMDSv2), asked only because DMI says
/// EC2: a token first, then the user data with it.
#[test]
fn user_data_from_the_metadata_service() {
    let imds = ImdsServer::start(
        Some(b"#cloud-config\nhostname: imds-node\nruncmd:\n  - echo from-imds > /var/lib/imds-ran\n"),
        "i-0abc123",
    )
    .expect("the metadata service");
    let mut vm = start(VmConfig::new().name("prov-imds").disk_size(4 * GIB).ec2().imds_port(imds.port()));
    let lines = user_data_lines(&vm);
    assert!(lines.contains("imds") && lines.contains("applied") && lines.contains("i-0abc123"), "console:\n{lines}");
    assert_eq!(hostname(&mut vm), "imds-node");
    wait_output(&mut vm, "cat /var/lib/imds-ran", "from-imds", Duration::from_secs(120));
    assert!(imds.tokens_issued() >= 1, "IMDSv2: a token was asked for: {:?}", imds.requests());
    assert!(
        imds.gets_with_token("/latest/user-data") >= 1,
        "user data read with the token ({TOKEN_HEADER}): {:?}",
        imds.requests()
    );
}

/// An invalid document: the machine comes up with its defaults, reachable,
/// and the error (line and key) is in `berthctl status`. It comes on a
/// NoCloud ISO in a CD-ROM drive, as cloud-localds, libvirt and Proxmox
/// give it: a drive behind AHCI, whose driver stage 0 loads while the
/// root is set up, so the seed is only found if PID1 waits for that
/// driver's probing to finish.
#[test]
fn an_invalid_document_leaves_the_defaults_and_says_why() {
    let dir = scratch("invalid");
    let bad = "#berth-config\nhostname = \"never-set\"\n\n[[write_files]]\npath = \"/etc/x\"\npermissions = \"0999\"\ncontent = \"x\"\n";
    let seed = dir.join("seed.iso");
    let files = SeedFiles {
        user_data: Some(bad.as_bytes().to_vec()),
        meta_data: Some(b"instance-id: cd-1\n".to_vec()),
        network_config: None,
    };
    nocloud_seed(&seed, SeedFormat::Iso9660, &files).expect("the seed ISO");
    let mut vm = start(VmConfig::new().name("prov-invalid").disk_size(4 * GIB).seed_cdrom(&seed));
    let lines = user_data_lines(&vm);
    assert!(lines.contains("nocloud:/dev/sr0"), "the seed on the CD-ROM is found:\n{lines}");
    assert!(lines.contains("rejected"), "console:\n{lines}");
    let host = hostname(&mut vm);
    assert!(host.starts_with("berth-"), "the default hostname, not {host:?}");
    assert_eq!(vm.sh_status("test -e /etc/x").0, 1, "nothing of the document is applied");
    let (_, status) = vm.sh_status("berthctl status");
    assert!(
        status.contains("rejected") && status.contains(":6: key write_files[0].permissions"),
        "berthctl status names the error's line and key:\n{status}"
    );
    for unit in ["sshd", "containerd"] {
        let (_, s) = vm.sh_status(&format!("berthctl status {unit}"));
        assert!(s.contains("active"), "{unit} runs:\n{s}");
    }
}
