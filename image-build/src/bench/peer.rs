//! `berth-image bench --peer`: Berth against the systemd peer (Debian 12 +
//! systemd + the same containerd, runc and etcd, see [`crate::peer`]), side
//! by side in one sitting.
//!
//! Both boot under the same QEMU settings (TCG, 2 vCPUs, 1 GiB, the same
//! devices and disk size; no NIC unless `--nic`), Berth through OVMF and
//! the peer from its kernel directly, and every time is taken on the
//! kernel's clock (CLOCK_MONOTONIC / `/proc/uptime`), so firmware counts
//! for neither. Each system keeps one disk overlay: its first boot is
//! reported on its own, then the two reboot alternately, N times each
//! (steady-state reboots). Figures per boot:
//! - kernel start -> containerd and etcd ready: Berth's PID1 records when
//!   each unit became active (`berthctl status UNIT`, `active since @T`);
//!   the peer's oneshot ordered after both (Type=notify) prints the uptime;
//! - kernel start -> every unit ready: the latest of Berth's ready line
//!   (kernel + initrd + userspace) and the `active since` of [`EVERY_UNIT`] (the
//!   ready line waits for neither etcd nor the updater); the peer's
//!   `systemctl is-system-running --wait`. With `--nic` the network counts
//!   too, an IPv4 default route on both: Berth's [`NETWORK_UNIT`], the
//!   peer's network marker;
//! - PID1's resident memory (`Rss` of /proc/1/smaps_rollup, which walks
//!   the page tables; VmRSS lags by up to 64 pages per thread) and
//!   MemTotal - MemAvailable, read once both are ready;
//! - ACPI power-off (QMP `system_powerdown`) to QEMU's exit, host clock.
//!
//! Ratios (Berth / peer, of the medians) are printed only when the host was
//! quiet: the CPU used by everything but the VM under test is sampled over
//! each boot ([`busy_verdict`]).

use std::time::{Duration, Instant};

use berth_qemu::{boot_timeout, shutdown_timeout, Vm, VmConfig, GIB};

use super::{stats, Error, Stats};
use crate::context::Context;
use crate::peer::{self, Peer, CORE_READY_MARKER, NETWORK_ONLINE_MARKER, STARTUP_FINISHED_MARKER};

/// vCPUs of both VMs.
pub const CPUS: u32 = 2;
/// Memory of both VMs, MiB.
pub const MEMORY_MIB: u32 = 1024;
/// Both disks are this big (Berth's data partition grows into it).
const DISK_BYTES: u64 = 4 * GIB;

/// The host counts as busy when everything but the VM under test used more
/// than this many cores on average over a boot.
pub const BUSY_CORES: f64 = 0.25;

/// What `bench --peer` is asked to do.
pub struct PeerBenchOptions {
    /// Steady-state reboots of each system (after its first boot).
    pub boots: usize,
    pub kvm: bool,
    /// Give both VMs the same virtio NIC on QEMU's user network.
    pub nic: bool,
}

/// One measured boot of either system.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Kernel start to containerd and etcd both ready, seconds.
    pub core_ready: f64,
    /// Kernel start to every unit done starting, seconds.
    pub all_ready: f64,
    pub pid1_rss_kib: Option<u64>,
    /// MemTotal - MemAvailable, KiB.
    pub mem_used_kib: Option<u64>,
    /// ACPI power-off request to QEMU's exit, seconds (host clock).
    pub poweroff: f64,
    /// What the rest of the host did meanwhile.
    pub load: HostLoad,
}

/// The CPU the host spent on everything but the VM over a boot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostLoad {
    /// Cores used on average by all processes but the VM's QEMU.
    pub others_cores: f64,
    /// The cores the host has.
    pub cores: usize,
}

/// The counters of one moment: all CPUs from `/proc/stat` and the VM's QEMU
/// from `/proc/PID/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSnapshot {
    pub busy: u64,
    pub total: u64,
    pub vm: u64,
}

/// The aggregate `cpu` line of `/proc/stat`: (busy, total) ticks, busy
/// being everything but idle and iowait (guest time is inside user).
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    let total = busy + field(3) + field(4);
    (v.len() >= 4).then_some((busy, total))
}

/// utime + stime of a process from its `/proc/PID/stat` (fields 14 and 15;
/// the command name in parentheses may hold spaces).
pub fn parse_pid_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

impl CpuSnapshot {
    /// Now, for the VM whose QEMU is `pid` (0 ticks when it is gone).
    pub fn take(pid: Option<u32>) -> CpuSnapshot {
        let (busy, total) =
            std::fs::read_to_string("/proc/stat").ok().and_then(|t| parse_proc_stat(&t)).unwrap_or_default();
        let vm = pid
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .and_then(|t| parse_pid_stat(&t))
            .unwrap_or(0);
        CpuSnapshot { busy, total, vm }
    }

    /// The load between `self` and `later` on a host of `cores` cores.
    pub fn load_until(&self, later: &CpuSnapshot, cores: usize) -> HostLoad {
        let total = later.total.saturating_sub(self.total);
        let others = later.busy.saturating_sub(self.busy).saturating_sub(later.vm.saturating_sub(self.vm));
        let others_cores = if total == 0 { 0.0 } else { others as f64 / total as f64 * cores as f64 };
        HostLoad { others_cores, cores }
    }
}

/// The busy rule: the run's ratios mean nothing when, during any boot,
/// the rest of the host used more than [`BUSY_CORES`] cores on average
/// (TCG VMs and builds beside the bench take the CPU the guests need).
/// `Some(reason)` when busy, `None` when quiet (or nothing was sampled).
pub fn busy_verdict(loads: &[(String, HostLoad)]) -> Option<String> {
    let (worst_name, worst) = loads.iter().max_by(|a, b| a.1.others_cores.total_cmp(&b.1.others_cores))?;
    if worst.others_cores <= BUSY_CORES {
        return None;
    }
    let busy = loads.iter().filter(|(_, l)| l.others_cores > BUSY_CORES).count();
    Some(format!(
        "other processes used {:.2} of {} cores on average during {worst_name}; {busy} of {} boots above {BUSY_CORES}",
        worst.others_cores,
        worst.cores,
        loads.len()
    ))
}

/// The seconds of a `berthctl status UNIT` State line: `     State: active
/// since @15s 145ms (3s ago)` -> 15.145; `None` unless the unit is active.
pub fn parse_active_since(line: &str) -> Option<f64> {
    let rest = line.trim().strip_prefix("State:")?.trim().strip_prefix("active since @")?;
    let at = rest.split(" (").next()?.trim();
    humantime::parse_duration(at).ok().map(|d| d.as_secs_f64())
}

/// The `State:` lines of several `berthctl status UNIT` outputs, in order:
/// each unit's active-since time, `None` for one not (yet) active.
pub fn active_since_all(text: &str) -> Vec<Option<f64>> {
    text.lines().filter(|l| l.trim_start().starts_with("State:")).map(parse_active_since).collect()
}

/// A peer marker line: the seconds after `marker` and the text in
/// parentheses: `berth-peer: startup finished at 15.67 s (running)` ->
/// (15.67, "running").
pub fn parse_marker(line: &str, marker: &str) -> Option<(f64, String)> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let (secs, rest) = rest.split_once(" s")?;
    let secs: f64 = secs.trim().parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
    let state = rest.trim().strip_prefix('(').and_then(|r| r.split_once(')')).map(|(s, _)| s.trim().to_string());
    Some((secs, state.unwrap_or_default()))
}

/// MemTotal - MemAvailable in KiB from `/proc/meminfo` text.
pub fn parse_mem_used_kib(text: &str) -> Option<u64> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    field("MemTotal")?.checked_sub(field("MemAvailable")?)
}

/// A size in MiB from a line of Berth's size report (`  root tree
/// 155.68 MiB  (156 files)`, `  EROFS (lz4hc)  83.56 MiB`), found by the
/// label it starts with: the first number followed by `MiB`.
pub fn size_report_mib(report: &str, label: &str) -> Option<f64> {
    let line = report.lines().find(|l| l.trim_start().starts_with(label))?;
    let words: Vec<&str> = line.trim_start()[label.len()..].split_whitespace().collect();
    words.windows(2).find(|w| w[1] == "MiB").and_then(|w| w[0].parse().ok())
}

/// One row of the comparison: the samples of each system.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub berth: Vec<f64>,
    pub peer: Vec<f64>,
}

impl Row {
    fn new(name: &str, unit: &'static str, berth: Vec<f64>, peer: Vec<f64>) -> Row {
        Row { name: name.to_string(), unit, berth, peer }
    }
}

fn cell(s: Option<Stats>, unit: &str) -> String {
    match s {
        Some(s) if s.min == s.max => format!("{:.2} {unit}", s.median),
        Some(s) => format!("{:.2} {unit} ({:.2} to {:.2})", s.median, s.min, s.max),
        None => "n/a".to_string(),
    }
}

/// Berth / peer of the medians, when both exist and the peer's is not 0.
pub fn ratio(row: &Row) -> Option<f64> {
    let (b, p) = (stats(&row.berth)?, stats(&row.peer)?);
    (p.median > 0.0).then(|| b.median / p.median)
}

/// The rows as a Markdown table: median and range of each system, and the
/// Berth / peer ratio of the medians, or no ratio column at all when
/// `with_ratios` is false.
pub fn table(rows: &[Row], with_ratios: bool) -> String {
    let mut out = String::new();
    if with_ratios {
        out.push_str("| figure | Berth | peer | Berth / peer |\n|---|---:|---:|---:|\n");
    } else {
        out.push_str("| figure | Berth | peer |\n|---|---:|---:|\n");
    }
    for r in rows {
        let (b, p) = (cell(stats(&r.berth), r.unit), cell(stats(&r.peer), r.unit));
        if with_ratios {
            let q = ratio(r).map(|q| format!("{q:.2}")).unwrap_or_else(|| "n/a".into());
            out.push_str(&format!("| {} | {b} | {p} | {q} |\n", r.name));
        } else {
            out.push_str(&format!("| {} | {b} | {p} |\n", r.name));
        }
    }
    out
}

/// The per-boot rows of the comparison.
pub fn boot_rows(berth: &[Sample], peer: &[Sample]) -> Vec<Row> {
    let row = |name: &str, unit: &'static str, f: fn(&Sample) -> Option<f64>| {
        Row::new(name, unit, berth.iter().filter_map(f).collect(), peer.iter().filter_map(f).collect())
    };
    vec![
        row("kernel start -> containerd and etcd ready", "s", |s| Some(s.core_ready)),
        row("kernel start -> every unit ready", "s", |s| Some(s.all_ready)),
        row("PID1 RSS", "MiB", |s| s.pid1_rss_kib.map(|k| k as f64 / 1024.0)),
        row("memory in use (MemTotal - MemAvailable)", "MiB", |s| s.mem_used_kib.map(|k| k as f64 / 1024.0)),
        row("ACPI power-off -> QEMU exit", "s", |s| Some(s.poweroff)),
    ]
}

/// Sizes of both systems, MiB: (installed root tree, root compressed,
/// kernel, initramfs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sizes {
    pub tree: Option<f64>,
    pub compressed: Option<f64>,
    pub kernel: Option<f64>,
    pub initrd: Option<f64>,
}

pub fn size_rows(berth: &Sizes, peer: &Sizes) -> Vec<Row> {
    let v = |x: Option<f64>| x.into_iter().collect::<Vec<f64>>();
    vec![
        Row::new("root, installed tree", "MiB", v(berth.tree), v(peer.tree)),
        Row::new(
            "root, compressed (Berth: EROFS; peer: ext4 in qcow2 -c)",
            "MiB",
            v(berth.compressed),
            v(peer.compressed),
        ),
        Row::new("kernel", "MiB", v(berth.kernel), v(peer.kernel)),
        Row::new("initramfs", "MiB", v(berth.initrd), v(peer.initrd)),
    ]
}

/// The whole bench: builds what is missing, boots, prints the tables.
pub fn bench_peer(ctx: &Context, opts: &PeerBenchOptions) -> Result<(), Error> {
    crate::deps::ensure()?;
    if !ctx.qcow2().exists() {
        crate::build::build(ctx, &crate::build::BuildOptions::default())?;
    }
    let t = Instant::now();
    let peer = peer::build(ctx)?;
    eprintln!(
        "bench: the peer is ready in {} (key {}; {:.0} s)",
        peer.dir.display(),
        peer.key,
        t.elapsed().as_secs_f64()
    );
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    let net = if opts.nic { berth_qemu::UserNet::default().args() } else { Vec::new() };
    let base = |name: &str| {
        VmConfig::new()
            .name(name)
            .cpus(CPUS)
            .memory_mib(MEMORY_MIB)
            .kvm(opts.kvm)
            .disk_size(DISK_BYTES)
            .net(net.clone())
    };
    let mut berth_vm = Vm::start(base("bench-berth").disk(ctx.qcow2()))?;
    let berth_first = berth_boot(&mut berth_vm, cores, opts.nic)?;
    report("Berth", "first boot", &berth_first);
    let mut peer_vm = Vm::start(base("bench-peer").disk(&peer.root).direct_kernel(peer.direct_kernel()))?;
    let peer_first = peer_boot(&mut peer_vm, 1, cores, opts.nic)?;
    report("peer", "first boot", &peer_first);

    let (mut berth, mut peers) = (Vec::new(), Vec::new());
    let mut loads =
        vec![("Berth's first boot".to_string(), berth_first.load), ("the peer's first boot".into(), peer_first.load)];
    for i in 0..opts.boots {
        berth_vm.restart()?;
        let b = berth_boot(&mut berth_vm, cores, opts.nic)?;
        report("Berth", &format!("reboot {}/{}", i + 1, opts.boots), &b);
        loads.push((format!("Berth's reboot {}", i + 1), b.load));
        berth.push(b);
        peer_vm.restart()?;
        let p = peer_boot(&mut peer_vm, i + 2, cores, opts.nic)?;
        report("peer", &format!("reboot {}/{}", i + 1, opts.boots), &p);
        loads.push((format!("the peer's reboot {}", i + 1), p.load));
        peers.push(p);
    }
    drop((berth_vm, peer_vm));

    let busy = busy_verdict(&loads);
    let accel = if opts.kvm { "KVM" } else { "TCG" };
    let nic = if opts.nic { "a virtio NIC on user networking" } else { "no NIC" };
    println!(
        "Berth against the systemd peer ({accel}, {CPUS} vCPUs, {MEMORY_MIB} MiB, {nic}; peer: Debian 12, systemd {}, kernel {})",
        version_of(&peer, "systemd"),
        peer.info.kernel_version
    );
    println!();
    if opts.boots > 0 {
        println!("Steady-state reboots ({} each, alternating; median, range):", opts.boots);
        println!();
        print!("{}", table(&boot_rows(&berth, &peers), busy.is_none()));
        println!();
    }
    println!("First boot of each disk:");
    println!();
    print!(
        "{}",
        table(&boot_rows(std::slice::from_ref(&berth_first), std::slice::from_ref(&peer_first)), busy.is_none())
    );
    println!();
    println!("Sizes:");
    println!();
    print!("{}", table(&size_rows(&berth_sizes(ctx), &peer_sizes(&peer)), busy.is_none()));
    println!();
    let worst = loads.iter().map(|(_, l)| l.others_cores).fold(0.0, f64::max);
    match busy {
        Some(why) => println!("host busy during the run ({why}): no ratios"),
        None => {
            println!("host quiet during the run (the rest of the host used at most {worst:.2} cores during a boot)")
        }
    }
    Ok(())
}

fn version_of(peer: &Peer, name: &str) -> String {
    peer.info.packages.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_else(|| "?".into())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn berth_sizes(ctx: &Context) -> Sizes {
    let report = std::fs::read_to_string(ctx.out.join("size-report.txt")).unwrap_or_default();
    Sizes {
        tree: size_report_mib(&report, "root tree"),
        compressed: size_report_mib(&report, "EROFS"),
        kernel: std::fs::metadata(ctx.out.join("bzImage")).ok().map(|m| mib(m.len())),
        // Stage 0's initramfs, as each UKI carries it.
        initrd: std::fs::metadata(ctx.out.join("initrd.cpio")).ok().map(|m| mib(m.len())),
    }
}

fn peer_sizes(peer: &Peer) -> Sizes {
    Sizes {
        tree: Some(mib(peer.info.tree_bytes)),
        compressed: Some(mib(peer.info.compressed_bytes)),
        kernel: Some(mib(peer.info.kernel_bytes)),
        initrd: Some(mib(peer.info.initrd_bytes)),
    }
}

fn report(system: &str, which: &str, s: &Sample) {
    eprintln!(
        "bench: {system} {which}: containerd+etcd {:.2} s, all {:.2} s, PID1 RSS {} KiB, in use {} KiB, power-off {:.2} s (host: {:.2} other cores)",
        s.core_ready,
        s.all_ready,
        s.pid1_rss_kib.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
        s.mem_used_kib.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
        s.poweroff,
        s.load.others_cores
    );
}

/// PID1's resident KiB and the memory in use, through the VM's shell.
fn memory(vm: &mut Vm) -> (Option<u64>, Option<u64>) {
    let rss = vm.sh("grep ^Rss: /proc/1/smaps_rollup").ok().and_then(|o| crate::run::parse_rss_kib(&o.output));
    let used =
        vm.sh("grep -E '^(MemTotal|MemAvailable):' /proc/meminfo").ok().and_then(|o| parse_mem_used_kib(&o.output));
    (rss, used)
}

/// Presses the power button and times QEMU's exit.
fn power_off(vm: &mut Vm) -> Result<f64, Error> {
    let t = Instant::now();
    vm.powerdown()?;
    vm.wait_exit(shutdown_timeout())?;
    Ok(t.elapsed().as_secs_f64())
}

/// The units every Berth boot starts without a network, containerd and etcd
/// first: "every unit ready" is the latest of their `active since` times and
/// the ready line (which waits for neither etcd nor the updater, ordered
/// after both). ntp waits for the network, the router for its config,
/// ssh-keygen runs on a first boot only.
pub const EVERY_UNIT: [&str; 4] = ["containerd", "etcd", "sshd", "updater"];

/// On a VM with a NIC, "every unit ready" waits for this one too: active
/// once the machine has an IPv4 default route (DHCP answered).
pub const NETWORK_UNIT: &str = "network-online";

/// The units whose `active since` "every unit ready" takes, containerd and
/// etcd first: [`EVERY_UNIT`], and [`NETWORK_UNIT`] when the VM has a NIC.
pub fn measured_units(nic: bool) -> Vec<&'static str> {
    let mut units = EVERY_UNIT.to_vec();
    if nic {
        units.push(NETWORK_UNIT);
    }
    units
}

/// (containerd and etcd ready, every unit ready), seconds, from the
/// `active since` times of [`measured_units`] (in its order) and the ready
/// line.
pub fn ready_times(since: &[f64], ready_line: f64) -> (f64, f64) {
    // containerd and etcd come first in measured_units.
    let core = since.iter().take(2).fold(0.0, |a, b| b.max(a));
    let all = since.iter().fold(ready_line, |a, b| b.max(a));
    (core, all)
}

/// One boot of Berth (started or restarted just before); `nic`: the VM
/// has one, and the network counts in "every unit ready".
pub fn berth_boot(vm: &mut Vm, cores: usize, nic: bool) -> Result<Sample, Error> {
    let before = CpuSnapshot::take(vm.pid());
    let times = vm.wait_ready(boot_timeout())?;
    let deadline = Instant::now() + boot_timeout();
    let units = measured_units(nic);
    let query = units.iter().map(|u| format!("berthctl status {u}")).collect::<Vec<_>>().join("; ");
    let since = loop {
        let out = vm.sh(&query)?;
        let since = active_since_all(&out.output);
        if since.len() == units.len() && since.iter().all(Option::is_some) {
            break since.into_iter().flatten().collect::<Vec<f64>>();
        }
        if Instant::now() >= deadline {
            return Err(format!("not all of {} active on Berth:\n{}", units.join(", "), out.output).into());
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let (core_ready, all_ready) = ready_times(&since, times.since_kernel());
    let (pid1_rss_kib, mem_used_kib) = memory(vm);
    let load = before.load_until(&CpuSnapshot::take(vm.pid()), cores);
    let poweroff = power_off(vm)?;
    Ok(Sample { core_ready, all_ready, pid1_rss_kib, mem_used_kib, poweroff, load })
}

/// Boot number `n` (1-based) of the peer's VM (started or restarted just
/// before); `nic`: the VM has one, and the network counts in "every unit
/// ready".
fn peer_boot(vm: &mut Vm, n: usize, cores: usize, nic: bool) -> Result<Sample, Error> {
    let before = CpuSnapshot::take(vm.pid());
    let line = vm.wait_for_nth(CORE_READY_MARKER, n, boot_timeout())?;
    let (core_ready, states) =
        parse_marker(&line, CORE_READY_MARKER).ok_or_else(|| format!("the peer's marker does not parse: {line:?}"))?;
    if states.split_whitespace().any(|s| s != "active") {
        return Err(format!("containerd and etcd are not both active on the peer: {line:?}").into());
    }
    let line = vm.wait_for_nth(STARTUP_FINISHED_MARKER, n, boot_timeout())?;
    let (all_ready, state) = parse_marker(&line, STARTUP_FINISHED_MARKER)
        .ok_or_else(|| format!("the peer's marker does not parse: {line:?}"))?;
    if state != "running" {
        eprintln!("bench: the peer finished starting {state} (`systemctl --failed` in its shell says what failed)");
    }
    let all_ready = if nic {
        let line = vm.wait_for_nth(NETWORK_ONLINE_MARKER, n, boot_timeout())?;
        let (online, _) = parse_marker(&line, NETWORK_ONLINE_MARKER)
            .ok_or_else(|| format!("the peer's marker does not parse: {line:?}"))?;
        all_ready.max(online)
    } else {
        all_ready
    };
    let (pid1_rss_kib, mem_used_kib) = memory(vm);
    let load = before.load_until(&CpuSnapshot::take(vm.pid()), cores);
    let poweroff = power_off(vm)?;
    Ok(Sample { core_ready, all_ready, pid1_rss_kib, mem_used_kib, poweroff, load })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_and_pid_stat_give_ticks() {
        let stat = "cpu  100 5 50 1000 20 3 2 0 40 0\ncpu0 50 2 25 500 10 1 1 0 20 0\nintr 1 2\n";
        assert_eq!(parse_proc_stat(stat), Some((160, 1180)));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
        let pid = "4242 (qemu-system-x86 (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 700 300 0 0 20 0 5 0 1 2 3";
        assert_eq!(parse_pid_stat(pid), Some(1000));
        assert_eq!(parse_pid_stat("4242 (q) S 1"), None);
    }

    #[test]
    fn the_vm_is_left_out_of_the_host_load() {
        let a = CpuSnapshot { busy: 1000, total: 4000, vm: 500 };
        // 2 cores for 10 s (100 Hz): 2000 ticks; the VM took 1500, the rest 300.
        let b = CpuSnapshot { busy: 2800, total: 6000, vm: 2000 };
        let l = a.load_until(&b, 2);
        assert!((l.others_cores - 0.3).abs() < 1e-9, "{l:?}");
        assert_eq!(a.load_until(&a, 2).others_cores, 0.0);
        // QEMU gone at the end (0 ticks) must not count as negative.
        let gone = CpuSnapshot { busy: 2800, total: 6000, vm: 0 };
        assert!(a.load_until(&gone, 2).others_cores > 0.0);
    }

    #[test]
    fn busy_only_above_the_threshold_and_the_reason_names_the_worst_boot() {
        let l = |c: f64| HostLoad { others_cores: c, cores: 2 };
        assert_eq!(busy_verdict(&[]), None);
        assert_eq!(busy_verdict(&[("a".into(), l(0.1)), ("b".into(), l(BUSY_CORES))]), None);
        let why = busy_verdict(&[("a".into(), l(0.1)), ("boot 3".into(), l(0.9)), ("c".into(), l(0.5))]).unwrap();
        assert!(why.contains("0.90 of 2 cores") && why.contains("boot 3") && why.contains("2 of 3 boots"), "{why}");
    }

    #[test]
    fn berthctl_state_lines_give_active_since() {
        assert_eq!(parse_active_since("     State: active since @15s 145ms (3s ago)"), Some(15.145));
        // etcd after the ready line, the updater after etcd: both count.
        assert_eq!(ready_times(&[6.4, 7.1, 5.0, 8.0], 6.5), (7.1, 8.0));
        // Everything before the ready line: the ready line is every unit's.
        assert_eq!(ready_times(&[6.0, 6.2, 5.0, 5.5], 6.5), (6.2, 6.5));
        assert_eq!(parse_active_since("     State: active since @2m 3s (1s ago)"), Some(123.0));
        assert_eq!(parse_active_since("     State: starting since @5s (1s ago)"), None);
        assert_eq!(parse_active_since("     State: active"), None);
        let two = "containerd - c\n     State: active since @4s 10ms (1s ago)\n       PID: 9\n\
                   etcd - e\n     State: starting since @3s (2s ago)\n";
        assert_eq!(active_since_all(two), [Some(4.01), None]);
        // With a NIC the network is one more unit, after containerd and etcd.
        assert_eq!(measured_units(false), EVERY_UNIT);
        assert_eq!(measured_units(true)[..2], ["containerd", "etcd"]);
        assert_eq!(measured_units(true).last(), Some(&NETWORK_UNIT));
        assert_eq!(ready_times(&[6.4, 7.1, 5.0, 8.0, 9.5], 6.5), (7.1, 9.5));
    }

    #[test]
    fn peer_markers_parse() {
        let line = "[  OK  ] x\rberth-peer: containerd and etcd ready at 11.02 s (active active )";
        assert_eq!(parse_marker(line, CORE_READY_MARKER), Some((11.02, "active active".into())));
        assert_eq!(
            parse_marker("berth-peer: startup finished at 15.67 s (degraded)", STARTUP_FINISHED_MARKER),
            Some((15.67, "degraded".into()))
        );
        assert_eq!(parse_marker("berth-peer: startup finished at soon s", STARTUP_FINISHED_MARKER), None);
        assert_eq!(parse_marker("nothing", STARTUP_FINISHED_MARKER), None);
    }

    #[test]
    fn meminfo_and_size_report_figures() {
        assert_eq!(
            parse_mem_used_kib("MemTotal:        1000 kB\nMemFree: 1 kB\nMemAvailable:     600 kB\n"),
            Some(400)
        );
        assert_eq!(parse_mem_used_kib("MemTotal: 1 kB\n"), None);
        let report = "size report\n  kernel (bzImage)            3.04 MiB\n  root tree                 155.68 MiB  (156 files)\n\
                      \x20 EROFS (lz4hc)              83.56 MiB  (54% of the tree)\n";
        assert_eq!(size_report_mib(report, "root tree"), Some(155.68));
        assert_eq!(size_report_mib(report, "EROFS (lz4hc)"), Some(83.56));
        assert_eq!(size_report_mib(report, "EROFS"), Some(83.56));
        assert_eq!(size_report_mib(report, "ESP"), None);
    }

    #[test]
    fn the_table_has_ratios_only_when_asked() {
        let s = |c: f64| Sample { core_ready: c, all_ready: c + 1.0, poweroff: 0.5, ..Sample::default() };
        let rows = boot_rows(&[s(4.0), s(6.0), s(5.0)], &[s(10.0), s(12.0)]);
        let t = table(&rows, true);
        assert!(t.starts_with("| figure | Berth | peer | Berth / peer |\n"), "{t}");
        assert!(t.contains("| kernel start -> containerd and etcd ready | 5.00 s (4.00 to 6.00) | 11.00 s (10.00 to 12.00) | 0.45 |"), "{t}");
        assert!(t.contains("| ACPI power-off -> QEMU exit | 0.50 s | 0.50 s | 1.00 |"), "{t}");
        assert!(t.contains("| PID1 RSS | n/a | n/a | n/a |"), "{t}");
        let busy = table(&rows, false);
        assert!(!busy.contains("Berth / peer") && !busy.contains("0.45"), "{busy}");
        assert_eq!(ratio(&Row::new("x", "s", vec![1.0], vec![0.0])), None);
    }
}
