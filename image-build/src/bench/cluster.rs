//! `berth-image bench --cluster`: the router's figures on three hosts
//! under QEMU (the cluster of `qemu-tests/tests/cluster.rs`: one virtual
//! segment, a three-member etcd, the router on every host, lease TTL
//! [`LEASE_TTL_S`]).
//!
//! - Throughput: a container on host 1 sends [`TRANSFER_MIB`] MiB to a
//!   container on host 3 over the overlay (VXLAN, no port mapping), against
//!   the same busybox `nc` between the two hosts' own addresses on the same
//!   segment (both ends in host-network containers, so only the path
//!   differs). The receiver times the transfer from its first byte to the
//!   sender's close with the guest's clock. Runs alternate between the two
//!   paths; the figure is the median of the per-run ratios.
//! - Convergence: host 1 records, on its own clock, every etcd event under
//!   the subnet prefix (`etcdctl watch`) and every route, neighbour and FDB
//!   change (`ip monitor`, `bridge monitor`). Host 2's router is stopped
//!   cleanly (its lease revoked) and started again, `runs` times; then host
//!   2 is powered off (its lease expires after the TTL) and booted again.
//!   For each, the figure is the time from the etcd event (or the router's
//!   first change, when the separate `etcdctl watch` prints later) to the
//!   last of host 1's route, neighbour and FDB changes for host 2; the
//!   host's clock also gives command (or power-off) to host 1 converged, by
//!   polling every 0.2 s through the serial console.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_qemu::cluster::{
    self, addr, container_addr, endpoints, lease_of, start_host, Lease, Roles, LEASE_TTL_S, SUBNETS,
};
use berth_qemu::oci::{self, BUSYBOX_IMAGE as IMAGE};
use berth_qemu::{boot_timeout, ssh::free_port, workspace_root, Vm};

use super::{row, stats, Error};
use crate::context::Context;
use crate::run::RunOptions;

/// MiB per transfer: large enough that TCP's slow start and the socket
/// buffers are a small part of it.
pub const TRANSFER_MIB: u64 = 16;
/// The receivers' ports: the overlay's and the segment's.
const OVERLAY_PORT: u16 = 5001;
const SEGMENT_PORT: u16 = 5002;
/// Host 1's log of stamped events (guest clock, `/proc/uptime`).
const EVENTS: &str = "/run/bench-events";

/// The path a transfer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// Container to container over the router's VXLAN.
    Overlay,
    /// Host to host over the segment's own addresses.
    Segment,
}

/// The shell loop of a receiver: for each connection, the guest's uptime
/// at its first byte and at its end, and the bytes after the first, one
/// line per transfer in /tmp/log (the image has no /tmp, so it makes one).
/// Its stdin is a FIFO held open so busybox `nc` never sees end of input
/// (it quits on it).
fn receiver(port: u16) -> String {
    format!(
        "mkdir -p /tmp; mkfifo /tmp/idle; exec 3<>/tmp/idle; while true; do nc -l -p {port} <&3 | \
         {{ dd bs=1 count=1 of=/dev/null 2>/dev/null; read a _ </proc/uptime; n=$(wc -c); \
         read b _ </proc/uptime; echo \"$a $b $n\" >> /tmp/log; }}; done"
    )
}

/// The receiver's transfers: `(seconds, bytes)` per line of its log.
fn parse_transfers(log: &str) -> Vec<(f64, u64)> {
    log.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let a: f64 = f.next()?.parse().ok()?;
            let b: f64 = f.next()?.parse().ok()?;
            let n: u64 = f.next()?.parse().ok()?;
            Some((b - a, n + 1))
        })
        .collect()
}

/// One stamped line of host 1's event log: `<uptime> <source> <text>`.
#[derive(Debug, PartialEq)]
struct Event<'a> {
    at: f64,
    source: &'a str,
    text: &'a str,
}

fn parse_events(log: &str) -> Vec<Event<'_>> {
    log.lines()
        .filter_map(|l| {
            let (at, rest) = l.split_once(' ')?;
            let (source, text) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(Event { at: at.parse().ok()?, source, text })
        })
        .collect()
}

/// Whether a join or a leave is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Join,
    Leave,
}

/// `ip monitor` text without the `[ROUTE]`-style banner it puts before
/// each line when it watches several kinds of objects.
fn without_banner(text: &str) -> &str {
    match text.strip_prefix('[').and_then(|t| t.split_once(']')) {
        Some((_, rest)) => rest.trim_start(),
        None => text,
    }
}

/// The router's reaction on the host that logged `events`, in seconds:
/// from the first sign of `change` for the peer holding `lease` after
/// `since` (etcd's event for its key, a `PUT` for a join and a `DELETE`
/// for a leave, or the first change the router made for it: `etcdctl
/// watch` is a watcher of its own and can print after the router acted)
/// to the last of the route, neighbour and FDB changes for that peer
/// (`Deleted ...` lines for a leave), which must all be there. `None`
/// until they are.
fn reaction(events: &[Event<'_>], since: f64, lease: &Lease, public_ip: &str, change: Change) -> Option<f64> {
    let kind = match change {
        Change::Join => "PUT",
        Change::Leave => "DELETE",
    };
    let key = format!("{SUBNETS}{}", lease.key);
    let recent: Vec<&Event> = events.iter().filter(|e| e.at >= since).collect();
    let etcd: Vec<&&Event> = recent.iter().filter(|e| e.source == "etcd").collect();
    let event_at = etcd.windows(2).find(|w| w[0].text == kind && w[1].text == key).map(|w| w[0].at)?;
    let peer_ip = lease.subnet.split('/').next()?;
    let (route, neighbour, fdb) = (format!("{} ", lease.subnet), format!("{peer_ip} dev "), format!("dst {public_ip}"));
    // The times of the changes this way of one kind of entry for the peer;
    // `matches` sees the line without `Deleted `.
    let changes = |source: &str, matches: &dyn Fn(&str) -> bool| -> Vec<f64> {
        recent
            .iter()
            .filter(|e| e.source == source)
            .filter_map(|e| {
                let text = without_banner(e.text);
                let (deleted, entry) = match text.strip_prefix("Deleted ") {
                    Some(rest) => (true, rest),
                    None => (false, text),
                };
                (deleted == (change == Change::Leave) && matches(entry)).then_some(e.at)
            })
            .collect()
    };
    let kinds = [
        changes("net", &|t| t.starts_with(&route)),
        changes("net", &|t| t.starts_with(&neighbour)),
        changes("fdb", &|t| t.contains(&fdb)),
    ];
    let first = kinds.iter().filter_map(|k| k.first().copied()).fold(event_at, f64::min);
    let last = kinds.iter().map(|k| k.last().copied()).collect::<Option<Vec<f64>>>()?;
    Some(last.into_iter().fold(first, f64::max) - first)
}

/// The guest's uptime in seconds.
fn uptime(vm: &mut Vm) -> Result<f64, Error> {
    let out = vm.sh("cut -d' ' -f1 /proc/uptime")?;
    out.trimmed().parse().map_err(|_| format!("/proc/uptime: {}", out.output).into())
}

/// Runs `cmd` in `vm`; an error with its output unless it exits 0.
fn run(vm: &mut Vm, cmd: &str) -> Result<String, Error> {
    let out = vm.sh_timeout(cmd, Duration::from_secs(300))?;
    if out.success() {
        Ok(out.output)
    } else {
        Err(format!("`{cmd}` (exit {}):\n{}", out.status, out.output).into())
    }
}

/// Whether host 1 has a route, a neighbour and an FDB entry for `lease`.
fn programmed(out: &str, lease: &Lease) -> bool {
    out.contains(&lease.subnet) && out.contains(&lease.vtep_mac)
}

const ENTRIES: &str = "ip route show && ip neigh show && bridge fdb show";

/// Polls host 1 until its entries for `lease` are gone; seconds since
/// `t0` on the host's clock.
fn until_gone(vm1: &mut Vm, lease: &Lease, t0: Instant, limit: Duration) -> Result<f64, Error> {
    cluster::poll(vm1, "host 2's entries gone from host 1", ENTRIES, limit, |o| !programmed(o, lease))?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Polls host 1 until etcd holds a lease of host 2 and host 1 has its
/// entries (a VTEP made anew may have a new MAC); seconds since `t0` on
/// the host's clock, and the lease.
fn until_joined(vm1: &mut Vm, t0: Instant, limit: Duration) -> Result<(f64, Lease), Error> {
    let deadline = t0 + limit;
    loop {
        if let Some(lease) = lease_of(vm1, &addr(2))? {
            let out = vm1.sh(ENTRIES)?;
            if out.success() && programmed(&out.output, &lease) {
                return Ok((t0.elapsed().as_secs_f64(), lease));
            }
        }
        if Instant::now() > deadline {
            let out = vm1.sh(ENTRIES)?;
            return Err(format!("host 2 did not join within {limit:?}; host 1 has:\n{}", out.output).into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until host 1's log holds the whole reaction to `change` after
/// `since`; its seconds.
fn logged_reaction(vm: &mut Vm, since: f64, lease: &Lease, change: Change) -> Result<f64, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = run(vm, &format!("cat {EVENTS}"))?;
        if let Some(s) = reaction(&parse_events(&log), since, lease, &addr(2), change) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            return Err(format!(
                "host 1's event log has no complete {change:?} of {} after {since}:\n{}",
                lease.key,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Starts the three hosts and waits for etcd and the routers.
fn form(ctx: &Context, opts: &RunOptions, dir: &Path, drive: &str) -> Result<Vec<Vm>, Error> {
    let segment = free_port()?;
    let roles = Roles { router: true, updates_from: None };
    let mut vms = Vec::new();
    for i in 1..=3u8 {
        let base = opts.vm(ctx, &format!("bench-cluster-{i}"));
        vms.push(start_host(base, dir, i, &roles, segment, (i != 2).then_some(drive))?);
    }
    for vm in vms.iter_mut() {
        vm.wait_ready_through_failures(boot_timeout() * 2)?;
    }
    let cmd = format!("etcdctl --endpoints {} endpoint health 2>&1", endpoints());
    cluster::poll(&mut vms[0], "etcd healthy on three members", &cmd, Duration::from_secs(300), |o| {
        o.matches("is healthy").count() == 3
    })?;
    let cmd = format!("etcdctl get --prefix --keys-only {SUBNETS}");
    cluster::poll(&mut vms[0], "three subnet leases", &cmd, Duration::from_secs(180), |o| {
        o.lines().filter(|l| l.starts_with(SUBNETS)).count() == 3
    })?;
    Ok(vms)
}

/// The figures; see the module's documentation.
pub fn bench_cluster(ctx: &Context, opts: &RunOptions, runs: usize) -> Result<(), Error> {
    crate::deps::ensure()?;
    if !ctx.qcow2().exists() {
        crate::build::build(ctx, &crate::build::BuildOptions::default())?;
    }
    let dir = workspace_root().join("target").join("berth-bench").join("cluster");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let archive = oci::build_busybox_image(&dir.join("oci"))?;
    let drive = oci::readonly_drive(&archive);
    let t = Instant::now();
    let mut vms = form(ctx, opts, &dir, &drive)?;
    eprintln!("bench: three hosts, etcd and routers up in {:.0} s", t.elapsed().as_secs_f64());
    let [vm1, vm2, vm3] = &mut vms[..] else { return Err("three hosts".into()) };
    let peers = run(vm1, "ip route show dev flannel.1; ip neigh show dev flannel.1; bridge fdb show dev flannel.1")?;
    eprintln!("bench: host 1's VXLAN peers:\n{peers}");

    // Receivers on host 3, one per path; senders on host 1.
    for vm in [&mut *vm1, &mut *vm3] {
        run(vm, "ctr image import --base-name berth.test/busybox /dev/vdb >/dev/null")?;
    }
    let recv = |port| format!("/bin/sh -c '{}'", receiver(port));
    run(vm3, &format!("ctr run -d --cni {IMAGE} recv-overlay {}", recv(OVERLAY_PORT)))?;
    run(vm3, &format!("ctr run -d --net-host {IMAGE} recv-segment {}", recv(SEGMENT_PORT)))?;
    let overlay_addr = container_addr(vm3, "recv-overlay")?;
    let segment_addr = addr(3);
    let count = TRANSFER_MIB * 16;
    let (mut overlay, mut segment, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for r in 1..=runs {
        // Alternate which path goes first, so a drift in the machine's
        // load does not favour one.
        let order = if r % 2 == 1 { [Via::Overlay, Via::Segment] } else { [Via::Segment, Via::Overlay] };
        let mut this = [0.0; 2];
        for path in order {
            let (net, to, port, receiver) = match path {
                Via::Overlay => ("--cni", overlay_addr.as_str(), OVERLAY_PORT, "recv-overlay"),
                Via::Segment => ("--net-host", segment_addr.as_str(), SEGMENT_PORT, "recv-segment"),
            };
            let send = format!(
                "ctr run --rm {net} {IMAGE} send-{r} /bin/sh -c \
                 'dd if=/dev/zero bs=64k count={count} 2>/dev/null | nc {to} {port}'"
            );
            run(vm1, &send)?;
            let log = cluster::poll(
                vm3,
                "the receiver's log",
                &format!("ctr task exec --exec-id log-{r} {receiver} cat /tmp/log"),
                Duration::from_secs(120),
                |o| parse_transfers(o).len() >= r,
            )?;
            let (secs, bytes) = parse_transfers(&log)[r - 1];
            if bytes != count * 65536 {
                return Err(format!("{receiver} got {bytes} bytes of {}", count * 65536).into());
            }
            let mib_s = bytes as f64 / (1024.0 * 1024.0) / secs;
            eprintln!("bench: run {r}/{runs}: {path:?} {mib_s:.1} MiB/s ({secs:.2} s)");
            match path {
                Via::Overlay => this[0] = mib_s,
                Via::Segment => this[1] = mib_s,
            }
        }
        overlay.push(this[0]);
        segment.push(this[1]);
        ratio.push(this[0] / this[1]);
    }

    // Host 1 logs etcd events and netlink changes on its own clock.
    let stamp = |source: &str| format!("while read l; do read u _ </proc/uptime; echo \"$u {source} $l\"; done");
    run(
        vm1,
        &format!(
            "(etcdctl watch --prefix {SUBNETS} | {e} >> {EVENTS} &) ; (ip -o monitor route neigh | {n} >> {EVENTS} &) ; \
             (bridge monitor fdb | {f} >> {EVENTS} &) ; sleep 1",
            e = stamp("etcd"),
            n = stamp("net"),
            f = stamp("fdb"),
        ),
    )?;
    let mut lease = lease_of(vm1, &addr(2))?.ok_or("host 2 holds no lease")?;
    let limit = Duration::from_secs(LEASE_TTL_S + 60);
    let (mut leave, mut leave_e2e, mut join, mut join_e2e) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 1..=runs {
        let since = uptime(vm1)?;
        let t0 = Instant::now();
        run(vm2, "berthctl stop router")?;
        leave_e2e.push(until_gone(vm1, &lease, t0, limit)?);
        leave.push(logged_reaction(vm1, since, &lease, Change::Leave)?);
        let since = uptime(vm1)?;
        let t0 = Instant::now();
        run(vm2, "berthctl start router")?;
        let (secs, joined) = until_joined(vm1, t0, limit)?;
        lease = joined;
        join_e2e.push(secs);
        join.push(logged_reaction(vm1, since, &lease, Change::Join)?);
        eprintln!(
            "bench: router restart {r}/{runs}: leave {:.3} s (stop -> gone {:.2} s), join {:.3} s (start -> there {:.2} s)",
            leave[r - 1],
            leave_e2e[r - 1],
            join[r - 1],
            join_e2e[r - 1]
        );
    }
    // A host that dies: its lease runs out.
    let since = uptime(vm1)?;
    let t0 = Instant::now();
    vm2.quit()?;
    let dead_e2e = until_gone(vm1, &lease, t0, limit)?;
    let dead = logged_reaction(vm1, since, &lease, Change::Leave)?;
    let since = uptime(vm1)?;
    vm2.restart()?;
    vm2.wait_ready_through_failures(boot_timeout() * 2)?;
    let (_, lease) = until_joined(vm1, Instant::now(), Duration::from_secs(300))?;
    let back = logged_reaction(vm1, since, &lease, Change::Join)?;
    for vm in vms.iter_mut() {
        let _ = vm.quit();
    }

    println!("cluster (3 hosts, {}, {runs} runs, median and range)", if opts.kvm { "KVM" } else { "TCG" });
    row("container->container", "MiB/s", &overlay);
    println!("      (busybox nc, {TRANSFER_MIB} MiB, host 1 to host 3 over the router's VXLAN, CNI containers)");
    row("host->host", "MiB/s", &segment);
    println!("      (the same between host-network containers, the hosts' own addresses on the segment)");
    row("container / host", "", &ratio);
    row("join: reaction", "s", &join);
    println!("      (host 1, its clock: the lease's PUT in etcd or the router's first change for it -> the last of");
    println!("       its route, neighbour and FDB entry programmed)");
    row("join: end to end", "s", &join_e2e);
    println!("      (`berthctl start router` on host 2 -> host 1 has the entries; host clock, polled)");
    row("leave: reaction", "s", &leave);
    println!("      (host 1: the lease's DELETE in etcd or the first removal -> the last of the three removed)");
    row("leave: end to end", "s", &leave_e2e);
    println!("      (`berthctl stop router` on host 2, lease revoked -> host 1 without the entries)");
    println!("  host 2 powered off: entries gone on host 1 after {dead_e2e:.2} s (lease TTL {LEASE_TTL_S} s), reaction {dead:.3} s");
    println!("  host 2 booted again: reaction to its lease {back:.3} s");
    if let Some(s) = stats(&ratio) {
        println!("  overlay throughput is {:.0}% of the segment's (median of per-run ratios)", 100.0 * s.median);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease { key: "10.244.7.0-24".into(), subnet: "10.244.7.0/24".into(), vtep_mac: "aa:bb:cc:dd:ee:ff".into() }
    }

    #[test]
    fn transfers_count_the_first_byte_too() {
        let log = "10.50 12.50 33554431\ngarbage\n20.00 21.00 99\n";
        assert_eq!(parse_transfers(log), vec![(2.0, 33554432), (1.0, 100)]);
    }

    const JOIN: &str = "\
100.00 etcd PUT
100.00 etcd /coreos.com/network/subnets/10.244.7.0-24
100.00 etcd {\"PublicIP\":\"192.0.2.12\"}
100.01 fdb aa:bb:cc:dd:ee:ff dev flannel.1 dst 192.0.2.12 self permanent
100.02 net 10.244.7.0 dev flannel.1 lladdr aa:bb:cc:dd:ee:ff PERMANENT
100.05 net 10.244.7.0/24 via 10.244.7.0 dev flannel.1 onlink
";

    #[test]
    fn a_join_ends_at_the_last_of_route_neighbour_and_fdb() {
        let events = parse_events(JOIN);
        let s = reaction(&events, 99.0, &lease(), "192.0.2.12", Change::Join).unwrap();
        assert!((s - 0.05).abs() < 1e-9, "{s}");
        // Before the log holds all three, there is no figure.
        let partial: Vec<&str> = JOIN.lines().take(5).collect();
        let partial = partial.join("\n");
        assert_eq!(reaction(&parse_events(&partial), 99.0, &lease(), "192.0.2.12", Change::Join), None);
        // Nor for an event before `since`.
        assert_eq!(reaction(&events, 100.5, &lease(), "192.0.2.12", Change::Join), None);
    }

    #[test]
    fn a_leave_counts_only_deletions() {
        let log = format!(
            "{JOIN}\
200.00 etcd DELETE
200.00 etcd /coreos.com/network/subnets/10.244.7.0-24
200.10 net Deleted 10.244.7.0/24 via 10.244.7.0 dev flannel.1 onlink
200.20 net [NEIGH]Deleted 10.244.7.0 dev flannel.1 lladdr aa:bb:cc:dd:ee:ff PERMANENT
"
        );
        let events = parse_events(&log);
        // The FDB entry is still there: not converged.
        assert_eq!(reaction(&events, 150.0, &lease(), "192.0.2.12", Change::Leave), None);
        let log = format!("{log}200.30 fdb Deleted aa:bb:cc:dd:ee:ff dev flannel.1 dst 192.0.2.12 self permanent\n");
        let s = reaction(&parse_events(&log), 150.0, &lease(), "192.0.2.12", Change::Leave).unwrap();
        assert!((s - 0.30).abs() < 1e-9, "{s}");
    }

    #[test]
    fn a_router_faster_than_the_watcher_counts_from_its_first_change() {
        let log = "\
248.86 net Deleted 10.244.7.0/24 via 10.244.7.0 dev flannel.1 proto static onlink
248.89 net Deleted 10.244.7.0 dev flannel.1 FAILED
248.92 etcd DELETE
248.92 etcd /coreos.com/network/subnets/10.244.7.0-24
248.97 fdb Deleted aa:bb:cc:dd:ee:ff dev flannel.1 dst 192.0.2.12 self permanent
";
        let s = reaction(&parse_events(log), 240.0, &lease(), "192.0.2.12", Change::Leave).unwrap();
        assert!((s - 0.11).abs() < 1e-9, "{s}");
    }
}
