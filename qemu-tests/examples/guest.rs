//! Boots a throwaway VM of the built image, runs each argument as a command
//! in the admin shell, prints what it said, and powers the VM off:
//!
//!     cargo run -p berth-qemu --example guest -- 'cat /proc/cmdline' 'mount'
//!
//! `BERTH_QEMU_ARGS` appends QEMU arguments (space-separated).

use berth_qemu::{boot_timeout, shutdown_timeout, Vm, VmConfig, GIB};

fn main() -> Result<(), berth_qemu::Error> {
    let mut cfg = VmConfig::new().name("guest").disk_size(4 * GIB);
    if let Ok(extra) = std::env::var("BERTH_QEMU_ARGS") {
        for a in extra.split_whitespace() {
            cfg = cfg.arg(a);
        }
    }
    let mut vm = Vm::start(cfg)?;
    let report = vm.wait_ready(boot_timeout())?;
    println!("# ready in {:.3} s", report.total);
    for cmd in std::env::args().skip(1) {
        let out = vm.sh(&cmd)?;
        println!("$ {cmd}\n{}# exit {}", out.output, out.status);
    }
    vm.powerdown()?;
    vm.wait_exit(shutdown_timeout())?;
    Ok(())
}
