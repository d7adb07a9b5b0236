//! Boots a throwaway VM of the built image (2 vCPUs, 1 GiB), powers it off
//! once it is ready, boots the same disk again (a steady-state reboot: the
//! first boot's work on /var is done, the page cache is cold), prints that
//! boot's times, then runs each argument in the admin shell:
//!
//!     cargo run -p berth-qemu --example reboot -- 'berthctl analyze'
//!
//! `BERTH_IMAGE_DIR` picks another build's disk, so two builds can be
//! compared boot by boot. `BERTH_QEMU_ARGS` and `BERTH_APPEND` work as in
//! the `guest` example (a QEMU monitor socket to sample the vCPUs from; a
//! direct kernel boot with `nokaslr`, so those samples map onto the
//! kernel build's System.map). `BERTH_SHOW_CONSOLE=1` prints the serial
//! console's last 80 lines once the reboot is ready (PID1's early-boot
//! lines; their times are in /var/log/berth/berth.log).
//! `BERTH_FIRST_BOOT` is a command run in the admin shell of the first
//! boot before it powers off (a unit written to /etc/berth/units that the
//! measured reboot then runs: a sampler of /proc/stat, say).
//! `BERTH_NO_NIC=1` boots without a NIC, as `berth-image bench` does.

use std::time::Duration;

use berth_qemu::{boot_timeout, shutdown_timeout, with_debug_env, Vm, VmConfig, GIB};

fn main() -> Result<(), berth_qemu::Error> {
    let cfg = VmConfig::new().name("reboot").cpus(2).memory_mib(1024).disk_size(4 * GIB);
    let cfg = if std::env::var_os("BERTH_NO_NIC").is_some() { cfg.net(Vec::new()) } else { cfg };
    let cfg = with_debug_env(cfg)?;
    let mut vm = Vm::start(cfg)?;
    vm.wait_ready(boot_timeout())?;
    // What the first boot started in the background (ssh host keys) finishes.
    std::thread::sleep(Duration::from_secs(5));
    if let Ok(cmd) = std::env::var("BERTH_FIRST_BOOT") {
        let out = vm.sh(&cmd)?;
        println!("first boot $ {cmd}\n{}# exit {}", out.output, out.status);
    }
    vm.powerdown()?;
    vm.wait_exit(shutdown_timeout())?;
    vm.restart()?;
    let times = vm.wait_ready(boot_timeout())?;
    println!("reboot: {times:?}");
    if std::env::var_os("BERTH_SHOW_CONSOLE").is_some() {
        println!("{}", berth_qemu::tail(&vm.console_text(), 80));
    }
    for cmd in std::env::args().skip(1) {
        let out = vm.sh(&cmd)?;
        println!("$ {cmd}\n{}# exit {}", out.output, out.status);
    }
    vm.powerdown()?;
    vm.wait_exit(shutdown_timeout())?;
    Ok(())
}
