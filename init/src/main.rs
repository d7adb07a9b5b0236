//! berth-init: wires the pieces of the lib together as PID1.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use berth_init::pid1::Pid1;
use berth_init::{info, log, timing};

fn main() {
    // First: the kernel's share of the boot time is the clock right now.
    let start = timing::monotonic_now();
    if std::process::id() != 1 {
        let argv0 = std::env::args().next().unwrap_or_default();
        if let Some(sig) = berth_init::power::signal_for_command(&argv0) {
            let sent = nix::sys::signal::Signal::try_from(sig)
                .and_then(|sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), sig));
            if let Err(e) = sent {
                let _ = writeln!(std::io::stderr(), "{argv0}: {e}");
                std::process::exit(1);
            }
            return;
        }
        // Run by hand it would mount over /dev and power the machine off.
        let _ = writeln!(std::io::stderr(), "berth-init: this is PID1 of Berth; it only runs as process 1");
        std::process::exit(2);
    }
    // Before any other thread exists, or it has an arena of its own.
    let one_arena = berth_init::memory::one_malloc_arena();
    log::reserve_stdio();
    if let Err(e) = log::init_console() {
        let _ = writeln!(std::io::stderr(), "berth: console writer: {e}");
    }
    std::panic::set_hook(Box::new(log::panic_hook));
    if !one_arena {
        info!("memory: malloc refused M_ARENA_MAX=1; each thread keeps an arena");
    }
    // The kernel then sends SIGINT on ctrl-alt-del instead of rebooting on
    // the spot with the filesystems mounted.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        info!("cannot disable ctrl-alt-del reboot: {e}");
    }
    let mut pid1 = Pid1::new(start);
    loop {
        // A panic is a bug, but PID1 exiting would panic the kernel: log it
        // and go back into the loop with the state kept in `pid1`.
        match catch_unwind(AssertUnwindSafe(|| pid1.run())) {
            Ok(()) => info!("event loop ended; restarting it"),
            Err(_) => info!("BUG: recovered from a panic in the event loop; restarting it"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
