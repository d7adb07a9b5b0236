//! Boots a throwaway VM of the built image (2 vCPUs, 1 GiB), powers it off
//! once it is ready, boots the same disk again (a steady-state reboot: the
//! first boot's work on /var is done, the page cache is cold), prints that
//! boot's times, then runs each argument in the admin shell:
//!
//!     cargo run -p berth-qemu --example reboot -- 'berthctl analyze'
//!
//! `BERTH_IMAGE_DIR` picks another build's disk, so two builds can be
//! compared boot by boot.

use std::time::Duration;

use berth_qemu::{boot_timeout, shutdown_timeout, Vm, VmConfig, GIB};

fn main() -> Result<(), berth_qemu::Error> {
    let mut vm = Vm::start(VmConfig::new().name("reboot").cpus(2).memory_mib(1024).disk_size(4 * GIB))?;
    vm.wait_ready(boot_timeout())?;
    // What the first boot started in the background (ssh host keys) finishes.
    std::thread::sleep(Duration::from_secs(5));
    vm.powerdown()?;
    vm.wait_exit(shutdown_timeout())?;
    vm.restart()?;
    let times = vm.wait_ready(boot_timeout())?;
    println!("reboot: {times:?}");
    for cmd in std::env::args().skip(1) {
        let out = vm.sh(&cmd)?;
        println!("$ {cmd}\n{}# exit {}", out.output, out.status);
    }
    vm.powerdown()?;
    vm.wait_exit(shutdown_timeout())?;
    Ok(())
}
