//! berth-initrd: stage 0, `/init` of the UKI's initramfs. Sets up the
//! verified root and executes the real PID1 on it (`berth_init::initrd`).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;

use berth_init::{initrd, log, timing};

fn main() {
    let start = timing::monotonic_now();
    if std::process::id() != 1 {
        let _ = writeln!(std::io::stderr(), "berth-initrd: stage 0 of Berth's boot; it only runs as process 1");
        std::process::exit(2);
    }
    log::reserve_stdio();
    if let Err(e) = log::init_console() {
        let _ = writeln!(std::io::stderr(), "berth: console writer: {e}");
    }
    std::panic::set_hook(Box::new(log::panic_hook));
    initrd::run(start);
}
