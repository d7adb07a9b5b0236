//! The harness itself, against the firmware alone (no image needed): QEMU
//! starts with OVMF and no disk, the serial console is captured, QMP
//! answers, `quit` ends QEMU and `restart` brings it back on the same
//! working directory.

use std::time::Duration;

use berth_qemu::{Vm, VmConfig};

#[test]
fn firmware_only_vm_logs_its_console_and_obeys_qmp() {
    let mut vm = Vm::start(VmConfig::new().name("harness").no_disk().net(vec![]).memory_mib(256))
        .expect("starting QEMU with OVMF");
    assert_eq!(vm.status().expect("query-status"), "running");
    // OVMF's boot manager reports on the serial console.
    let line = vm.wait_for("BdsDxe", Duration::from_secs(120)).expect("OVMF's boot manager on the console");
    assert!(line.contains("BdsDxe"), "{line}");
    let st = vm.quit().expect("QMP quit");
    assert!(st.success(), "QEMU exited with {st}");
    assert!(!vm.is_running());
    assert!(vm.sh("true").is_err(), "no shell once QEMU is gone");

    // A power cycle keeps the working directory and appends to the log.
    let before = vm.console_text().matches("BdsDxe").count();
    vm.restart().expect("restart");
    vm.wait_for_nth("BdsDxe", before + 1, Duration::from_secs(120)).expect("the firmware again after restart");
    let after = vm.console_text().matches("BdsDxe").count();
    assert!(after > before, "wait_for_nth returned before line {} came ({after} so far)", before + 1);
    vm.power_cut().expect("power cut");
    assert!(!vm.is_running());
    let dir = vm.dir().to_path_buf();
    drop(vm);
    assert!(!dir.exists(), "the working directory is removed after success");
}

#[test]
fn a_missing_image_is_an_error_that_says_how_to_build_it() {
    let err =
        Vm::start(VmConfig::new().disk("/nonexistent/berth.qcow2")).err().expect("no VM without an image").to_string();
    assert!(
        err.contains("no image at /nonexistent/berth.qcow2")
            && err.contains("cargo run --release -p berth-image -- build"),
        "{err}"
    );
}
