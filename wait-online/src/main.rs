//! `berth-wait-online`: exits 0 once the machine has an IPv4 default route
//! (see the library); 1 with the reason on stderr if it cannot tell.

use std::process::ExitCode;

fn main() -> ExitCode {
    match berth_wait_online::wait_for_default_route() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-wait-online: {e}");
            ExitCode::FAILURE
        }
    }
}
