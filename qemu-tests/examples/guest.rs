//! Boots a throwaway VM of the built image, runs each argument as a command
//! in the admin shell, prints what it said, and powers the VM off:
//!
//!     cargo run -p berth-qemu --example guest -- 'cat /proc/cmdline' 'mount'
//!
//! `BERTH_QEMU_ARGS` appends QEMU arguments (space-separated);
//! `BERTH_GUEST_SETTLE=N` waits N seconds after the admin shell came up.
//! `BERTH_APPEND='initcall_debug ...'` boots the image's kernel directly
//! (QEMU's `-kernel`, no firmware) with the image's command line
//! (`cmdline.txt`) and these words after it: how to look at the kernel's
//! own boot, e.g. `dmesg | grep initcall` for its slowest initcalls.

use berth_qemu::{boot_timeout, shutdown_timeout, with_debug_env, Vm, VmConfig, GIB};

fn main() -> Result<(), berth_qemu::Error> {
    let cfg = VmConfig::new().name("guest").disk_size(4 * GIB);
    let cfg = with_debug_env(cfg)?;
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
