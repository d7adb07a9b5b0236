//! `berth-image test`: the whole test suite, from a bare Debian machine:
//! host packages, the image, then every unit and QEMU test of the workspace.

use std::path::Path;
use std::process::Command;

use crate::build;
use crate::context::Context;

type Error = Box<dyn std::error::Error>;

/// What one run of the suite writes under `target/` from a clean clone, in
/// GiB: the test and lint builds, the update tests' five image versions, the
/// QEMU guests' disks. Measured on a CI run of 2026-12-02: 10.5 GiB at the
/// peak, 8.4 GiB left at the end (with full debug info it left 35 GiB, 29 of
/// them the test build's; see the dev profile in Cargo.toml).
const SUITE_WRITES_GIB: u64 = 12;

/// Builds the image, then runs `cargo test --workspace` against it with two
/// tests (so at most two QEMU guests) at a time.
///
/// Errors: the image build's, or cargo test's exit status.
pub fn run(ctx: &Context, cargo_test_args: &[String]) -> Result<(), Error> {
    warn_if_short_of_space(&ctx.repo.join("target"));
    let report = build::build(ctx, &build::BuildOptions::default())?;
    println!("{report}");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Two QEMU guests at a time: each TCG guest keeps one of the two cores busy.
    let status = Command::new(cargo)
        .current_dir(&ctx.repo)
        .env("BERTH_IMAGE_DIR", &ctx.out)
        .args(["test", "--workspace"])
        .args(cargo_test_args)
        .args(["--", "--test-threads=2"])
        .status()
        .map_err(|e| format!("running cargo test: {e}"))?;
    if !status.success() {
        return Err(format!("cargo test failed ({status})").into());
    }
    Ok(())
}

/// Warns, before an hour of work, when the file system holding `target`
/// has less free space than the suite writes: a full disk otherwise shows up
/// late, as an odd failure of whatever writes next (in one CI run: qemu-img
/// converting an update test's image). A warning, not an error: a re-run
/// over an existing `target/` needs less.
fn warn_if_short_of_space(target: &Path) {
    let dir = if target.is_dir() { target } else { target.parent().unwrap_or(Path::new("/")) };
    match rustix::fs::statvfs(dir) {
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            if free < SUITE_WRITES_GIB << 30 {
                eprintln!(
                    "test: warning: {:.1} GiB free on the file system of {}; a run from a clean clone writes \
                     about {SUITE_WRITES_GIB} GiB there, and a full disk fails whichever test writes next",
                    free as f64 / (1u64 << 30) as f64,
                    dir.display()
                );
            }
        }
        Err(e) => eprintln!("test: warning: cannot read the free space of {}: {e}", dir.display()),
    }
}
