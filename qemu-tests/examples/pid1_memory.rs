//! Boots a throwaway VM of an image (the built one, or the path given),
//! waits for the ready line (and `BERTH_MEM_SETTLE` seconds more, default
//! 20, so the services finish starting), then prints where PID1's resident
//! memory is: VmRSS and its split, the threads, every mapping with its
//! Rss, anonymous and dirty KiB (from /proc/1/smaps), PID1's page faults
//! and CPU time, `berthctl analyze`, the Rss again after those calls, and what the
//! console said during the power-off:
//!
//!     cargo run -p berth-qemu --example pid1_memory [-- IMAGE.qcow2]

use std::path::PathBuf;
use std::time::Duration;

use berth_qemu::{boot_timeout, shutdown_timeout, Vm, VmConfig, GIB};

/// One line per mapping: Rss, Anonymous, Private_Dirty (KiB), the range and the name.
const SMAPS: &str = r#"awk '/^[0-9a-f]+-[0-9a-f]+ /{if(r!="")printf "%6d %6d %6d  %s %s %s\n",rss,anon,pd,r,p,n; r=$1;p=$2;n=$6;rss=0;anon=0;pd=0} /^Rss:/{rss=$2} /^Anonymous:/{anon=$2} /^Private_Dirty:/{pd=$2} END{printf "%6d %6d %6d  %s %s %s\n",rss,anon,pd,r,p,n}' /proc/1/smaps"#;

/// PID1's faults and CPU time (clock ticks) from /proc/1/stat; its comm has no spaces.
const STAT: &str = r#"awk '{print "minflt", $10, "majflt", $12, "utime", $14, "stime", $15}' /proc/1/stat"#;

fn main() -> Result<(), berth_qemu::Error> {
    let mut cfg = VmConfig::new().name("pid1-memory").disk_size(4 * GIB);
    if let Some(image) = std::env::args().nth(1) {
        cfg = cfg.disk(PathBuf::from(image));
    }
    let mut vm = Vm::start(cfg)?;
    let times = vm.wait_ready(boot_timeout())?;
    println!("ready in {:.3} s (kernel {:.3} s, userspace {:.3} s)", times.total, times.kernel, times.userspace);
    let settle = std::env::var("BERTH_MEM_SETTLE").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    std::thread::sleep(Duration::from_secs(settle));
    let cmds = [
        "grep -E 'VmRSS|RssAnon|RssFile|RssShmem|VmData|VmStk|Threads' /proc/1/status",
        STAT,
        "cat /proc/1/smaps_rollup",
        "for t in /proc/1/task/*; do echo \"${t##*/} $(cat $t/comm)\"; done",
        "echo '   Rss   Anon PrivDirty  mapping'",
        SMAPS,
        "berthctl status",
        "berthctl analyze",
        "berthctl logs etcd | tail -3",
        // After the control API has served the calls above.
        "grep -E '^Rss|^Anonymous' /proc/1/smaps_rollup",
        STAT,
    ];
    for cmd in cmds {
        let out = vm.sh(cmd)?;
        println!("$ {cmd}\n{}", out.output);
    }
    let before = vm.console_text().len();
    let t = std::time::Instant::now();
    vm.powerdown()?;
    vm.wait_exit(shutdown_timeout())?;
    println!("power-off took {:.3} s; the console meanwhile:", t.elapsed().as_secs_f64());
    print!("{}", vm.console_text().get(before..).unwrap_or_default());
    Ok(())
}
