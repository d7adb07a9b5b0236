//! Boots a throwaway VM of the built image, runs each argument as a command
//! in the admin shell, prints what it said, and powers the VM off:
//!
//!     cargo run -p berth-qemu --example guest -- 'cat /proc/cmdline' 'mount'
//!
//! `BERTH_QEMU_ARGS` appends QEMU arguments (space-separated);
//! `BERTH_GUEST_SETTLE=N` waits N seconds after the admin shell came up.

use berth_qemu::{boot_timeout, shutdown_timeout, Vm, VmConfig, GIB};

fn main() -> Result<(), berth_qemu::Error> {
    let mut cfg = VmConfig::new().name("guest").disk_size(4 * GIB);
    if let Ok(extra) = std::env::var("BERTH_QEMU_ARGS") {
        for a in extra.split_whitespace() {
            cfg = cfg.arg(a);
        }
    }
    let mut vm = Vm::start(cfg)?;
    // The admin shell runs before the services are ready, so this also
    // looks into a boot that never gets there.
    vm.wait_for("admin shell on", boot_timeout())?;
    if let Ok(secs) = std::env::var("BERTH_GUEST_SETTLE") {
        std::thread::sleep(std::time::Duration::from_secs(secs.parse().unwrap_or(0)));
    }
    for cmd in std::env::args().skip(1) {
        let out = vm.sh(&cmd)?;
        println!("$ {cmd}\n{}# exit {}", out.output, out.status);
    }
    vm.powerdown()?;
    vm.wait_exit(shutdown_timeout())?;
    Ok(())
}
