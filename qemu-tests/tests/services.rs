//! The service manager in PID1 as a user meets it: the container host's
//! services (etcd, containerd, ...) come up and answer; a killed service is
//! restarted; a crashing unit ends `failed` once its start limit is hit;
//! units added under /etc/berth/units start on `berthctl reload` (and
//! `berthctl logs` shows a 100,000-byte line whole and a last line without
//! a newline at once, while the unit runs); and
//! `berthctl poweroff` stops units in reverse dependency order and leaves
//! the data file system clean. A restart of the network during one of
//! dhcpcd's hook scripts is a clean stop and start.

use std::time::{Duration, Instant};

use berth_layout::console::SHUTDOWN_DONE;
use berth_qemu::{boot_timeout, shutdown_timeout, Vm, VmConfig, GIB};

const ETCDCTL: &str = "etcdctl --endpoints http://127.0.0.1:2379";

/// A VM on a disk big enough for etcd's and containerd's data, up to the
/// ready line (every unit the machine needs settled), then until the units
/// nothing needs (so the ready line does not wait for them) are active too:
/// etcd, network-online (DHCP answered) and ntp (started after it).
fn boot(name: &str) -> Vm {
    let mut vm = Vm::start(VmConfig::new().name(name).disk_size(4 * GIB)).expect("starting the VM");
    if let Err(e) = vm.wait_ready(boot_timeout()) {
        panic!("the VM did not reach the ready line: {e}");
    }
    for unit in ["etcd", "network-online", "ntp"] {
        wait_active(&mut vm, unit, Duration::from_secs(120));
    }
    vm
}

/// The console tail (and QEMU's log), for failure messages.
fn ctx(vm: &Vm) -> String {
    vm.paths().context()
}

/// One row of `berthctl status`.
#[derive(Debug, Clone)]
struct Row {
    unit: String,
    state: String,
    pid: Option<u32>,
    restarts: u32,
    ready: String,
    line: String,
}

/// Parses the `berthctl status` table. The columns are left-aligned under
/// the header (SINCE holds spaces: `3min 2s ago`), so cells are cut at the
/// header's column starts.
fn parse_table(text: &str) -> Vec<Row> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("UNIT"));
    let Some(header) = lines.next() else { panic!("no header line in `berthctl status`:\n{text}") };
    let names = ["UNIT", "STATE", "SINCE", "PID", "RESTARTS", "READY-TIME", "LAST-EXIT"];
    let starts: Vec<usize> = names
        .iter()
        .map(|n| header.find(n).unwrap_or_else(|| panic!("no column {n} in the header {header:?}:\n{text}")))
        .collect();
    let mut rows = Vec::new();
    for line in lines.take_while(|l| !l.trim().is_empty()) {
        let cell = |i: usize| -> String {
            let from = starts[i].min(line.len());
            let to = starts.get(i + 1).copied().unwrap_or(line.len()).min(line.len());
            line.get(from..to).unwrap_or("").trim().to_string()
        };
        rows.push(Row {
            unit: cell(0),
            state: cell(1),
            pid: cell(3).parse().ok(),
            restarts: cell(4).parse().unwrap_or_else(|_| panic!("RESTARTS of {line:?} is not a number:\n{text}")),
            ready: cell(5),
            line: line.to_string(),
        });
    }
    rows
}

/// `berthctl status` as (exit status, text, rows).
fn status_table(vm: &mut Vm) -> (i32, String, Vec<Row>) {
    let (st, out) = vm.sh_status("berthctl status");
    let rows = parse_table(&out);
    (st, out, rows)
}

fn row<'a>(rows: &'a [Row], unit: &str, text: &str) -> &'a Row {
    rows.iter().find(|r| r.unit == unit).unwrap_or_else(|| panic!("no unit {unit} in `berthctl status`:\n{text}"))
}

/// Polls `berthctl status UNIT` until it exits 0 (active).
fn wait_active(vm: &mut Vm, unit: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (st, out) = vm.sh_status(&format!("berthctl status {unit}"));
        if st == 0 {
            return out;
        }
        if Instant::now() >= deadline {
            let (_, all) = vm.sh_status("berthctl status");
            panic!(
                "{unit} is not active after {timeout:?}; `berthctl status {unit}` (exit {st}):\n{out}\n\
                 `berthctl status`:\n{all}\n{}",
                ctx(vm)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A fault found in use: a power-off or restart that met one of dhcpcd's
/// hook scripts took 10 s, dhcpcd ignoring SIGTERM until PID1's SIGKILL
/// at stop_timeout (dhcpcd 9.4.1's privilege separation drops a signal
/// that comes while its manager waits for the privileged helper). Here a
/// hook is made to run for 1 s (an enter-hook on RECONFIGURE, which
/// `dhcpcd -n` triggers), and the network is restarted during it: dhcpcd
/// must act on the SIGTERM itself (it logs `received SIGTERM`, PID1 kills
/// nothing), and the unit comes back with its route.
fn network_stops_while_dhcpcd_runs_a_hook(vm: &mut Vm) {
    let out = vm.sh_ok(
        "printf 'if [ \"$reason\" = RECONFIGURE ]; then sleep 1; fi\\n' > /etc/dhcpcd.enter-hook; \
         dhcpcd -n eth0 2>&1; sleep 0.3; ps -o pid,args | grep '[d]hcpcd-run-hooks'; \
         berthctl restart network; rm /etc/dhcpcd.enter-hook",
    );
    assert!(out.contains("dhcpcd-run-hooks"), "no dhcpcd hook was running when the network was restarted:\n{out}");
    wait_active(vm, "network", Duration::from_secs(60));
    let log = vm.sh_ok("berthctl logs network -n 200");
    // `dhcpcd -n` is a SIGHUP; what follows it is this restart.
    let Some(hup) = log.rfind("received SIGHUP") else { panic!("dhcpcd never got the SIGHUP of `dhcpcd -n`:\n{log}") };
    let after = &log[hup..];
    assert!(
        after.contains("received SIGTERM") && after.contains("dhcpcd exited"),
        "dhcpcd did not stop on SIGTERM when it came during a hook:\n{after}"
    );
    assert!(!after.contains("SIGKILL"), "PID1 had to SIGKILL dhcpcd:\n{after}");
    let route = vm.sh_ok(
        "i=0; until ip -4 route show default | grep -q via; do i=$((i+1)); [ $i -gt 100 ] && break; sleep 0.2; done; \
         ip -4 route show default",
    );
    assert!(route.contains("via"), "no IPv4 default route after the network's restart:\n{route}");
}

/// A fault found in use: the network unit ran dhcpcd on eth0 only if eth0
/// existed when the unit's turn came, so a NIC that registered later (a
/// USB adapter, Hyper-V's asynchronous netvsc) or came back after its
/// driver was rebound got no lease. Here the NIC's driver is unbound (eth0
/// goes away) and bound again 4 s later: the unit waits for eth0, not
/// failed, and the lease and default route come back.
fn network_follows_its_nic_away_and_back(vm: &mut Vm) {
    let away = vm.sh_ok(
        "d=$(basename $(readlink /sys/class/net/eth0/device)); echo $d > /sys/bus/virtio/drivers/virtio_net/unbind; \
         sleep 4; echo \"links: $(ls /sys/class/net | tr '\\n' ' ')\"; berthctl status network; \
         echo $d > /sys/bus/virtio/drivers/virtio_net/bind",
    );
    let links = away.lines().find(|l| l.starts_with("links:")).unwrap_or_default();
    assert!(!links.contains("eth0"), "eth0 did not go away with its driver:\n{away}");
    assert!(away.contains("State: active"), "the network unit did not wait for eth0 while it was away:\n{away}");
    let route = vm.sh_ok(
        "i=0; until ip -4 route show default | grep -q via; do i=$((i+1)); [ $i -gt 150 ] && break; sleep 0.2; done; \
         ip -4 route show default; berthctl status network; berthctl logs network -n 200",
    );
    assert!(route.contains("default via") && route.contains("eth0"), "no default route once eth0 was back:\n{route}");
    assert!(route.contains("State: active"), "the network unit is not active once eth0 was back:\n{route}");
    // dhcpcd exits when its interface goes ("removing interface"); the
    // restarted unit waited for eth0 instead of restarting dhcpcd to its
    // start limit.
    let waited = route.find("waiting for network interface eth0");
    let appeared = route.find("eth0 appeared");
    assert!(
        waited.is_some() && appeared.is_some() && waited < appeared,
        "the unit did not wait for eth0 to come back:\n{route}"
    );
}

/// `etcdctl endpoint health` until it says healthy, or panics after `timeout`.
fn wait_etcd_healthy(vm: &mut Vm, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (st, out) = vm.sh_status(&format!("{ETCDCTL} endpoint health"));
        if st == 0 && out.contains("is healthy") {
            return;
        }
        if Instant::now() >= deadline {
            let (_, status) = vm.sh_status("berthctl status etcd");
            panic!(
                "etcd is not healthy after {timeout:?}: `etcdctl endpoint health` (exit {st}):\n{out}\n\
                 `berthctl status etcd`:\n{status}\n{}",
                ctx(vm)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A duration as PID1 prints it (humantime's form, to the millisecond:
/// `200ms`, `1s 600ms`, `2m`), in ms. Parsed by hand: berth-qemu does not
/// depend on humantime.
fn parse_human_ms(s: &str) -> Option<u64> {
    let mut total: Option<u64> = None;
    for token in s.split_whitespace() {
        let (n, unit) = token.split_at(token.find(|c: char| !c.is_ascii_digit())?);
        let per = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = Some(total.unwrap_or(0).checked_add(n.parse::<u64>().ok()?.checked_mul(per)?)?);
    }
    total
}

#[test]
fn container_host_services_are_up() {
    let mut vm = boot("services-up");

    let (st, text, rows) = status_table(&mut vm);
    assert_eq!(st, 0, "`berthctl status` exited {st}:\n{text}");
    for unit in ["network", "network-online", "containerd", "etcd", "ntp", "ssh-keygen", "sshd"] {
        row(&rows, unit, &text);
    }
    // The router runs only on a cluster host (with /etc/berth/router.toml,
    // which user data's `router:` writes): on this single machine its
    // condition is false and it is skipped, which is not a failure.
    let router = row(&rows, "router", &text);
    assert_eq!(router.state, "skipped", "the router ran on a machine without router settings:\n{text}");
    let bad: Vec<&Row> = rows
        .iter()
        .filter(|r| r.unit != "router")
        .filter(|r| r.state != "active" || r.ready == "-" || r.ready.is_empty())
        .collect();
    assert!(
        bad.is_empty(),
        "after the ready line (and etcd's start) every unit should be active with a READY-TIME; these are not:\n{}\n\n\
         `berthctl status`:\n{text}\n{}",
        bad.iter().map(|r| r.line.as_str()).collect::<Vec<_>>().join("\n"),
        ctx(&vm)
    );
    assert!(!text.contains("failed:"), "`berthctl status` names failed units:\n{text}");
    assert!(text.contains("none failed"), "`berthctl status` does not say `none failed`:\n{text}");

    // containerd answers its clients.
    let (st, out) = vm.sh_status("ctr version");
    assert!(st == 0 && out.contains("Server:"), "`ctr version` (exit {st}) has no Server: section:\n{out}");

    // etcd answers and stores.
    let (st, out) = vm.sh_status(&format!("{ETCDCTL} endpoint health"));
    assert!(st == 0 && out.contains("is healthy"), "`etcdctl endpoint health` (exit {st}):\n{out}");
    let put = vm.sh_ok(&format!("{ETCDCTL} put k v"));
    assert_eq!(put.trim(), "OK", "`etcdctl put k v` said:\n{put}");
    let get = vm.sh_ok(&format!("{ETCDCTL} get k"));
    assert_eq!(get.lines().collect::<Vec<_>>(), ["k", "v"], "`etcdctl get k` said:\n{get}");
    // Its data directory is PID1's work (state_directory): etcd's own,
    // 0700, named in its environment; the loopback is up from early boot.
    let dir = vm.sh_ok("stat -c '%U:%G %a' /var/lib/etcd");
    assert_eq!(dir.trim(), "etcd:etcd 700", "/var/lib/etcd");
    let env = vm.sh_ok("tr '\\0' '\\n' < /proc/$(pidof etcd)/environ | grep ^STATE_DIRECTORY=");
    assert_eq!(env.trim(), "STATE_DIRECTORY=/var/lib/etcd");
    let lo = vm.sh_ok("ip -4 addr show dev lo");
    assert!(lo.contains("inet 127.0.0.1/8") && lo.contains("UP"), "`ip -4 addr show dev lo`:\n{lo}");

    let analyze = vm.sh_ok("berthctl analyze");
    assert!(
        analyze.contains("etcd") && analyze.contains("containerd"),
        "`berthctl analyze` names neither etcd nor containerd:\n{analyze}"
    );
    eprintln!("`berthctl status`:\n{text}\n`berthctl analyze`:\n{analyze}");
    assert!(analyze.contains("Startup finished"), "`berthctl analyze` says the boot is not finished:\n{analyze}");
    assert!(analyze.contains("(initrd)"), "`berthctl analyze` gives stage 0 no share:\n{analyze}");

    // DNS from the lease (QEMU's user network answers at 10.0.2.3), written
    // by dhcpcd's resolv.conf hook.
    let resolv = vm.sh_ok("cat /etc/resolv.conf");
    assert!(
        resolv.contains("nameserver 10.0.2.3") && resolv.contains("dhcpcd"),
        "/etc/resolv.conf has not the lease's name server:\n{resolv}"
    );

    network_stops_while_dhcpcd_runs_a_hook(&mut vm);
    network_follows_its_nic_away_and_back(&mut vm);

    vm.powerdown().expect("power button");
    vm.wait_exit(shutdown_timeout()).expect("QEMU exits after the power button");
}

const CRASHER: &str = r#"description = "exits 1 at once"
[service]
exec = ["/usr/bin/sh", "-c", "exit 1"]
[restart]
policy = "always"
backoff_initial = "200ms"
start_limit = 4
start_limit_interval = "60s"
"#;

const HELLO: &str = r#"description = "says hello and sleeps"
[service]
exec = ["/usr/bin/sh", "-c", "echo hello-from-unit; exec sleep 1000"]
"#;

/// Waits for a line on the FIFO /run/longline-go, then prints a
/// 100,000-byte line (`START-x...x-END`) and `LAST-WORDS` without a
/// newline, and keeps running (its output pipe open).
const LONGLINE: &str = r#"description = "one long line, then last words without a newline"
[service]
exec = ["/usr/bin/sh", "-c", "mkfifo /run/longline-go && read go < /run/longline-go; printf 'START-%99990s-END\nLAST-WORDS' '' | tr ' ' x; exec sleep 1000"]
"#;

/// Shell: starts longline's output, then runs `berthctl logs longline`
/// until it shows LAST-WORDS; prints `took CENTISECONDS`, then per line of
/// the unit's output lines its stream field, text length, first and last
/// bytes.
const LONGLINE_CHECK: &str = "now() { cut -d' ' -f1 /proc/uptime | tr -d .; }; \
     i=0; until [ -p /run/longline-go ]; do i=$((i+1)); [ $i -gt 60 ] && exit 8; sleep 1; done; \
     echo go > /run/longline-go; t0=$(now); \
     until berthctl logs longline | grep -q 'LAST-WORDS$'; do \
       [ $(( $(now) - t0 )) -gt 3000 ] && { echo 'never shown'; berthctl logs longline | cut -c1-120; exit 9; }; \
     done; echo \"took $(( $(now) - t0 ))\"; \
     berthctl logs longline | awk '$2 ~ /^stdout/ { t = substr($0, length($1) + length($2) + 3); \
       print $2, length(t), substr(t, 1, 8), substr(t, length(t) - 3) }'";

#[test]
fn etcd_is_restarted_after_kill_and_a_crashing_unit_ends_failed() {
    let mut vm = boot("services-restart");

    // ---- kill -9 etcd: the supervisor brings it back -------------------
    let (_, text, rows) = status_table(&mut vm);
    let before = row(&rows, "etcd", &text).clone();
    assert_eq!(before.state, "active", "etcd is not active after boot:\n{text}");
    let old_pid = before.pid.unwrap_or_else(|| panic!("etcd has no PID in `berthctl status`:\n{text}"));
    let pidof = vm.sh_ok("pidof etcd");
    assert!(
        pidof.split_whitespace().any(|p| p == old_pid.to_string()),
        "`berthctl status` says etcd is pid {old_pid}, pidof says {pidof}"
    );
    vm.sh_ok(&format!("kill -9 {old_pid}"));
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(120);
    let back = loop {
        let (_, text, rows) = status_table(&mut vm);
        let r = row(&rows, "etcd", &text).clone();
        if r.state == "active" && r.restarts > before.restarts && r.pid.is_some_and(|p| p != old_pid) {
            break r;
        }
        if Instant::now() >= deadline {
            let (_, details) = vm.sh_status("berthctl status etcd");
            panic!(
                "etcd is not back within 120 s of `kill -9 {old_pid}` (want active, RESTARTS > {}, a new PID); \
                 last `berthctl status`:\n{text}\n`berthctl status etcd`:\n{details}\n{}",
                before.restarts,
                ctx(&vm)
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!("etcd back after {:?}: {}", killed.elapsed(), back.line);
    assert!(back.restarts >= 1);
    wait_etcd_healthy(&mut vm, Duration::from_secs(30));
    let details = vm.sh_ok("berthctl status etcd");
    assert!(details.contains("SIGKILL"), "`berthctl status etcd` does not show the SIGKILL as last exit:\n{details}");

    // ---- new units on reload: one crash-loops, one says hello ----------
    vm.write_file("/etc/berth/units/crasher.toml", CRASHER);
    vm.write_file("/etc/berth/units/hello.toml", HELLO);
    vm.write_file("/etc/berth/units/longline.toml", LONGLINE);
    // Reload, then watch crasher's state from inside the guest as fast as
    // berthctl answers, until it is failed (or ~2 minutes of tries).
    let watch = "berthctl reload || exit 10; i=0; while [ $i -lt 300 ]; do \
                 s=$(berthctl status crasher 2>&1 | grep -m1 'State:'); echo \"$s\"; \
                 case \"$s\" in *failed*) exit 0;; esac; i=$((i+1)); done; exit 11";
    let (st, seen) = match vm.sh_timeout(watch, Duration::from_secs(240)) {
        Ok(o) => (o.status, o.output),
        Err(e) => panic!("watching crasher after `berthctl reload`: {e}"),
    };
    let (cst, crasher) = vm.sh_status("berthctl status crasher");
    let (_, all) = vm.sh_status("berthctl status");
    let log = vm.read_file("/var/log/berth/crasher.log").unwrap_or_else(|e| format!("(no log: {e})"));
    let report = format!(
        "states seen after reload:\n{seen}\n`berthctl status crasher` (exit {cst}):\n{crasher}\n\
         `berthctl status`:\n{all}\n/var/log/berth/crasher.log:\n{log}\n{}",
        ctx(&vm)
    );
    assert_ne!(st, 10, "`berthctl reload` failed:\n{report}");
    assert_eq!(st, 0, "crasher never showed `failed` after the reload:\n{report}");
    assert_eq!(cst, 3, "`berthctl status crasher` of a failed unit should exit 3:\n{report}");
    assert!(crasher.contains("State: failed"), "crasher is not failed:\n{report}");
    assert!(crasher.contains("start limit"), "crasher's status does not mention the start limit:\n{report}");
    let restarts: u32 = crasher
        .lines()
        .find_map(|l| l.trim().strip_prefix("Restarts:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Restarts: line in crasher's status:\n{report}"));
    assert!(restarts >= 3, "crasher restarted {restarts} times, want >= 3:\n{report}");
    let saw_restarting = seen.contains("restarting");
    // PID1's records of the failures: `init restart in 200ms after: ...`.
    let delays: Vec<u64> = log
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("init"))
        .filter_map(|l| l.split_once("restart in ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(" after:").and_then(|(delay, _)| parse_human_ms(delay)))
        .collect();
    let backoff_grows = delays.len() >= 2 && delays.windows(2).all(|w| w[1] > w[0]);
    eprintln!("crasher: restarting seen: {saw_restarting}; backoff delays in its log (ms): {delays:?}");
    assert!(
        saw_restarting || backoff_grows,
        "no `restarting` state was seen and the log shows no growing backoff (delays {delays:?}):\n{report}"
    );

    // The good unit of the same reload runs and its output is logged.
    wait_active(&mut vm, "hello", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, logs) = vm.sh_status("berthctl logs hello -n 5");
        if st == 0 && logs.contains("hello-from-unit") {
            break;
        }
        if Instant::now() >= deadline {
            panic!("`berthctl logs hello -n 5` (exit {st}) does not show hello-from-unit:\n{logs}\n{}", ctx(&vm));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // ---- a long line and a last line without a newline, unit running ----
    wait_active(&mut vm, "longline", Duration::from_secs(60));
    let (st, seen) = match vm.sh_timeout(LONGLINE_CHECK, Duration::from_secs(120)) {
        Ok(o) => (o.status, o.output),
        Err(e) => panic!("watching `berthctl logs longline`: {e}"),
    };
    assert_eq!(st, 0, "`berthctl logs longline` never showed LAST-WORDS while the unit runs:\n{seen}\n{}", ctx(&vm));
    let took_cs: u64 = seen
        .lines()
        .find_map(|l| l.strip_prefix("took "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `took` line:\n{seen}"));
    eprintln!("longline: LAST-WORDS shown {} ms after the unit wrote it", took_cs * 10);
    // About a second (the journal writes a waiting line after 0.5 s), with
    // room for berthctl's own time under emulation.
    assert!(took_cs <= 500, "LAST-WORDS took {} ms to show in `berthctl logs`:\n{seen}", took_cs * 10);
    let shown: Vec<&str> = seen.lines().skip_while(|l| !l.starts_with("took ")).skip(1).collect();
    assert_eq!(
        shown,
        ["stdout 100000 START-xx -END", "stdout+ 10 LAST-WOR ORDS"],
        "`berthctl logs longline` should show the long line whole and LAST-WORDS as a line not ended yet:\n{seen}"
    );
    assert_eq!(vm.sh_status("berthctl status longline").0, 0, "longline still runs");

    // etcd and the rest are unharmed by all this.
    let (_, text, rows) = status_table(&mut vm);
    for unit in ["etcd", "containerd", "sshd", "network"] {
        assert_eq!(row(&rows, unit, &text).state, "active", "{unit} is not active at the end:\n{text}");
    }

    vm.powerdown().expect("power button");
    vm.wait_exit(shutdown_timeout()).expect("QEMU exits after the power button");
}

/// A long-running unit that logs `NAME-up`, and `NAME-stopping` on SIGTERM.
fn trap_unit(name: &str, requires: &[&str]) -> String {
    let script = format!("trap 'echo {name}-stopping; exit 0' TERM; echo {name}-up; while :; do sleep 1; done");
    let mut unit = format!(
        "description = \"test unit {name}\"\n[service]\nexec = [\"/usr/bin/sh\", \"-c\", \"{}\"]\n",
        script.replace('\\', "\\\\").replace('"', "\\\"")
    );
    if !requires.is_empty() {
        let list: Vec<String> = requires.iter().map(|r| format!("\"{r}\"")).collect();
        unit.push_str(&format!("[dependencies]\nrequires = [{}]\n", list.join(", ")));
    }
    unit
}

/// The timestamp (first field) of the first log line whose text is `stdout WHAT`.
fn stamp_of<'a>(log: &'a str, what: &str) -> Option<&'a str> {
    log.lines().find_map(|l| {
        let mut f = l.splitn(3, ' ');
        let (ts, stream, text) = (f.next()?, f.next()?, f.next()?);
        (stream == "stdout" && text.trim() == what).then_some(ts)
    })
}

#[test]
fn poweroff_stops_units_in_reverse_order_and_fs_is_clean() {
    let mut vm = boot("services-poweroff");

    vm.write_file("/etc/berth/units/first.toml", &trap_unit("first", &[]));
    vm.write_file("/etc/berth/units/second.toml", &trap_unit("second", &["first"]));
    vm.sh_ok("berthctl reload");
    wait_active(&mut vm, "first", Duration::from_secs(60));
    wait_active(&mut vm, "second", Duration::from_secs(60));
    // Both scripts have set their trap (they print -up after it).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let first = vm.read_file("/var/log/berth/first.log").unwrap_or_default();
        let second = vm.read_file("/var/log/berth/second.log").unwrap_or_default();
        if stamp_of(&first, "first-up").is_some() && stamp_of(&second, "second-up").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            panic!("first/second never logged their -up line:\nfirst.log:\n{first}\nsecond.log:\n{second}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    let shutdowns_before = vm.console_text().matches(SHUTDOWN_DONE).count();
    vm.sh_nowait("berthctl poweroff").expect("typing berthctl poweroff");
    match vm.wait_exit(shutdown_timeout()) {
        Ok(st) => assert!(st.success(), "QEMU exited with {st} after `berthctl poweroff`\n{}", ctx(&vm)),
        Err(e) => panic!("the VM did not power off after `berthctl poweroff`: {e}"),
    }
    let console = vm.console_text();
    assert_eq!(
        console.matches(SHUTDOWN_DONE).count(),
        shutdowns_before + 1,
        "no `{SHUTDOWN_DONE}` on the console after `berthctl poweroff`\n{}",
        ctx(&vm)
    );
    let first_boot_len = console.len();

    vm.restart().expect("starting the VM again");
    if let Err(e) = vm.wait_ready(boot_timeout()) {
        panic!("the second boot did not reach the ready line: {e}");
    }
    let second_boot = vm.console_text().get(first_boot_len..).unwrap_or("").to_string();
    let first = vm.read_file("/var/log/berth/first.log").expect("/var/log/berth/first.log");
    let second = vm.read_file("/var/log/berth/second.log").expect("/var/log/berth/second.log");
    let logs = format!("first.log:\n{first}\nsecond.log:\n{second}");
    let first_stop =
        stamp_of(&first, "first-stopping").unwrap_or_else(|| panic!("first never logged first-stopping:\n{logs}"));
    let second_stop =
        stamp_of(&second, "second-stopping").unwrap_or_else(|| panic!("second never logged second-stopping:\n{logs}"));
    eprintln!("second-stopping at {second_stop}, first-stopping at {first_stop}");
    // RFC 3339 UTC stamps of one fixed width compare as text.
    assert_eq!(first_stop.len(), second_stop.len(), "timestamps of different shapes:\n{logs}");
    assert!(
        second_stop <= first_stop,
        "second (which requires first) stopped at {second_stop}, after first at {first_stop}: \
         shutdown is not in reverse dependency order\n{logs}"
    );
    assert!(
        second_boot.contains("mounted /dev/vda4 on /var (clean)"),
        "the second boot does not report a clean data file system (want `mounted /dev/vda4 on /var (clean)`):\n\
         --- console of the second boot ---\n{}",
        berth_qemu::tail(&second_boot, 60)
    );

    vm.powerdown().expect("power button");
    vm.wait_exit(shutdown_timeout()).expect("QEMU exits after the power button");
}

#[test]
fn human_durations_parse() {
    assert_eq!(parse_human_ms("200ms"), Some(200));
    assert_eq!(parse_human_ms("1s 600ms"), Some(1600));
    assert_eq!(parse_human_ms("2s"), Some(2000));
    assert_eq!(parse_human_ms("1m"), Some(60_000));
    assert_eq!(parse_human_ms("1m 30s"), Some(90_000));
    assert_eq!(parse_human_ms("1.6s"), None);
    assert_eq!(parse_human_ms("ms"), None);
    assert_eq!(parse_human_ms(""), None);
}
