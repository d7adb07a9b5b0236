//! The service manager's own costs, on the host with real processes (the
//! manager runs as an ordinary process, as in its tests):
//!
//! - start, supervise and stop 200 trivial units: time to all ready, the
//!   manager's RSS while they run, time to stop them all; against a
//!   baseline in the same process that spawns and kills the same 200
//!   processes with no manager;
//! - the manager's own delay between a unit becoming ready and the exec of
//!   the unit that requires it, over a chain of 20 units.
//!
//! `cargo bench -p berth-init --bench supervisor`. Figures, not assertions.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_init::reaper::Reaper;
use berth_init::supervisor::{self, Config, Supervisor};
use berth_init::unit;

const UNITS: usize = 200;
const CHAIN: usize = 20;
const RUNS: usize = 5;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn write_units(dir: &Path, n: usize, chain: bool) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let deps =
            if chain && i > 0 { format!("[dependencies]\nrequires = [\"u{:03}\"]\n", i - 1) } else { String::new() };
        std::fs::write(
            dir.join(format!("u{i:03}.toml")),
            format!("[service]\nexec = [\"/bin/sleep\", \"1000\"]\nstop_timeout = \"5s\"\n{deps}"),
        )
        .unwrap();
    }
}

struct Run {
    ready: f64,
    stop: f64,
    rss_kib: u64,
    handoff_us: Vec<f64>,
}

fn run_manager(dir: &Path, notify: &Path, n: usize) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let reaper = Reaper::global();
        tokio::spawn(supervisor::reap_on_sigchld(reaper, Duration::from_millis(200)));
        let plan = unit::plan(unit::load(&[dir]));
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        let config = Config { notify_dir: notify.to_path_buf(), ..Config::default() };
        let t = Instant::now();
        let handle = Supervisor::spawn(config, plan, None, reaper);
        let settle = handle.wait_settled().await.unwrap();
        let ready = t.elapsed().as_secs_f64();
        assert!(settle.failed.is_empty(), "{:?}", settle.failed);
        let rss_kib = rss_kib();
        let timeline = handle.timeline().await.unwrap();
        let by_name: std::collections::HashMap<&str, _> = timeline.units.iter().map(|u| (u.name.as_str(), u)).collect();
        let mut handoff_us = Vec::new();
        for u in &timeline.units {
            for dep in &u.waited_for {
                if let Some(d) = by_name.get(dep.as_str()) {
                    handoff_us.push(u.started_us.saturating_sub(d.ready_us) as f64);
                }
            }
        }
        assert_eq!(handle.list().await.unwrap().len(), n);
        let t = Instant::now();
        handle.stop_all().await.unwrap();
        let stop = t.elapsed().as_secs_f64();
        Run { ready, stop, rss_kib, handoff_us }
    })
}

/// The same processes with no manager: spawn them all, then kill and wait.
fn run_baseline(n: usize) -> (f64, f64) {
    let t = Instant::now();
    let mut children: Vec<Child> = (0..n)
        .map(|_| Command::new("/bin/sleep").arg("1000").stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap())
        .collect();
    let start = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for c in &mut children {
        let _ = c.kill();
    }
    for c in &mut children {
        let _ = c.wait();
    }
    (start, t.elapsed().as_secs_f64())
}

fn main() {
    let base = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    let (flat, chain, notify) = (base.join("flat"), base.join("chain"), base.join("notify"));
    write_units(&flat, UNITS, false);
    write_units(&chain, CHAIN, true);
    let rss_before = rss_kib();

    let (mut b_start, mut b_stop) = (Vec::new(), Vec::new());
    let (mut ready, mut stop, mut rss, mut handoff) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (s, k) = run_baseline(UNITS);
        b_start.push(s);
        b_stop.push(k);
        let r = run_manager(&flat, &notify, UNITS);
        ready.push(r.ready);
        stop.push(r.stop);
        rss.push(r.rss_kib as f64);
        let c = run_manager(&chain, &notify, CHAIN);
        handoff.extend(c.handoff_us);
    }
    let (bs, bk) = (median(&mut b_start), median(&mut b_stop));
    let (r, s) = (median(&mut ready), median(&mut stop));
    println!("service manager, {UNITS} trivial units (`sleep 1000`), median of {RUNS} runs");
    println!(
        "  start to all ready   {:>8.1} ms   (baseline: spawn only {:>7.1} ms; ratio {:.1}x)",
        r * 1e3,
        bs * 1e3,
        r / bs
    );
    println!(
        "  stop all             {:>8.1} ms   (baseline: kill + wait {:>7.1} ms; ratio {:.1}x)",
        s * 1e3,
        bk * 1e3,
        s / bk
    );
    println!("  manager RSS running  {:>8.0} KiB  (process before: {rss_before} KiB)", median(&mut rss));
    println!("ready -> dependent exec (chain of {CHAIN}, {} hand-offs)", handoff.len());
    let n = handoff.len();
    println!(
        "  median {:.0} us, min {:.0} us, max {:.0} us",
        median(&mut handoff),
        handoff.first().copied().unwrap_or(0.0),
        handoff.get(n.saturating_sub(1)).copied().unwrap_or(0.0)
    );
    let _ = std::fs::remove_dir_all(&base);
}
