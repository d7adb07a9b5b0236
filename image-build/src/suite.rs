//! `berth-image test`: the whole test suite, from a bare Debian machine:
//! host packages, the image, then every unit and QEMU test of the workspace.

use std::process::Command;

use crate::build;
use crate::context::Context;

type Error = Box<dyn std::error::Error>;

pub fn run(ctx: &Context, cargo_test_args: &[String]) -> Result<(), Error> {
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
