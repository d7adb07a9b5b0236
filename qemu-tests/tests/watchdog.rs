//! The hardware watchdog and the boot deadline (issue 8, "Deadline and
//! watchdog"): PID1 arms QEMU's i6300esb from early boot and feeds it, and
//! reboots a counted boot (systemd-boot's boot counting) that is not
//! blessed by `gate.deadline`, so the entry spends its tries; an entry
//! already out of tries, booted because nothing better is left, stays up.
//!
//! One VM, five boots: the first checks the watchdog and sets the stage
//! (the entry re-armed with 3 tries, a 20 s deadline in /etc); three boots
//! are then rebooted by PID1 alone, the counter going down each time; the
//! fifth is the entry at +0, which systemd-boot still boots (it is the only
//! one) and PID1 leaves up.

use std::time::{Duration, Instant};

use berth_layout::console::SHUTDOWN_DONE;
use berth_layout::paths::UPDATER_CONFIG;
use berth_qemu::{boot_timeout, shutdown_timeout, tail, Vm, VmConfig};

/// PID1's line when it reboots an unblessed counted boot (20 s deadline).
const NOT_BLESSED: &str =
    "berth: boot not blessed within 20s (health gate did not pass): rebooting; systemd-boot counts this try";
/// PID1's line for an entry that has no try left.
const STAYING_UP: &str = "has no tries left and systemd-boot had no better entry: staying up";
const ESP_DIR: &str = "/run/esp-test";

fn entries(vm: &mut Vm) -> Vec<String> {
    let esp = vm.config().disk_bus.guest_partition(1);
    vm.sh_ok(&format!("mkdir -p {ESP_DIR} && mount -t vfat /dev/{esp} {ESP_DIR}"));
    vm.list_dir(&format!("{ESP_DIR}/loader/entries")).expect("listing the ESP's entries")
}

fn counted_line(version: &str, counter: &str) -> String {
    format!("berth: boot counted (\\loader\\entries\\berth-{version}{counter}.conf): not blessed within")
}

/// Waits until the boot after the last clean shutdown printed its ready
/// line (the admin shell of that boot is then up).
fn wait_ready_after_last_shutdown(vm: &mut Vm, timeout: Duration) {
    let until = Instant::now() + timeout;
    loop {
        let text = vm.console_text();
        let from = text.rfind(SHUTDOWN_DONE).unwrap_or(0);
        if text[from..].contains("berth: ready in ") {
            return;
        }
        assert!(vm.is_running(), "QEMU exited:\n{}", tail(&text, 40));
        assert!(Instant::now() < until, "no ready line after the last shutdown:\n{}", tail(&text, 40));
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_watchdog_is_armed_and_an_unblessed_counted_boot_spends_its_tries() {
    let cfg = VmConfig::new().name("watchdog");
    assert!(cfg.watchdog && !cfg.no_reboot, "an i6300esb, and guest reboots that reboot (not exit)");
    let mut vm = Vm::start(cfg).expect("starting the VM");
    vm.wait_ready(boot_timeout()).expect("booting to ready");

    // The watchdog: armed by PID1 from boot phase one, with its identity
    // and a 60 s timeout, and held open by PID1 (busy for anyone else).
    let armed = vm.wait_for("berth: watchdog: ", Duration::from_secs(5)).expect("PID1's watchdog line");
    assert!(armed.ends_with("/dev/watchdog0 (i6300ESB timer) armed, timeout 60 s"), "{armed}");
    let sys = "/sys/class/watchdog/watchdog0";
    assert_eq!(vm.read_file(&format!("{sys}/identity")).expect("identity").trim(), "i6300ESB timer");
    assert_eq!(vm.read_file(&format!("{sys}/state")).expect("state").trim(), "active");
    assert_eq!(vm.read_file(&format!("{sys}/timeout")).expect("timeout").trim(), "60");
    let other = vm.sh("echo > /dev/watchdog0").expect("opening the watchdog from the shell");
    assert!(other.status != 0 && other.output.contains("busy"), "only PID1 holds the watchdog: {}", other.output);
    // Fed: longer than its timeout later the same boot is still up and the
    // watchdog still armed.
    std::thread::sleep(Duration::from_secs(65));
    assert_eq!(vm.read_file(&format!("{sys}/state")).expect("state").trim(), "active");
    assert_eq!(vm.ready_count(), 1, "the machine was reset:\n{}", tail(&vm.console_text(), 30));

    // The image's entry is blessed (a fresh disk has nothing to fall back
    // to): this first boot is not counted, and PID1 arms no deadline.
    let names = entries(&mut vm);
    assert_eq!(names.len(), 1, "one entry: {names:?}");
    let version = names[0]
        .strip_prefix("berth-")
        .and_then(|n| n.strip_suffix(".conf"))
        .filter(|v| !v.contains('+'))
        .unwrap_or_else(|| panic!("the image's entry is blessed: {names:?}"))
        .to_string();
    let first = vm.console_text();
    assert!(!first.contains("berth: boot counted"), "{}", tail(&first, 60));

    // Arm the entry with 3 tries and set a 20 s deadline; no
    // berth-updater blesses these boots.
    vm.sh_ok(&format!(
        "mv {ESP_DIR}/loader/entries/{} {ESP_DIR}/loader/entries/berth-{version}+3.conf && umount {ESP_DIR} && \
         mkdir -p /etc/berth && printf '[gate]\\ndeadline = \"20s\"\\n' > {UPDATER_CONFIG} && sync",
        names[0]
    ));
    vm.sh_nowait("reboot").expect("typing reboot");

    // Three boots, each rebooted by PID1 at the deadline, the counter going
    // down each time (systemd-boot renames before it boots the entry).
    for (n, counter) in [(1, "+2-1"), (2, "+1-2"), (3, "+0-3")] {
        let why = format!("boot {} ({counter}) rebooted by PID1", n + 1);
        let fail = |e: berth_qemu::Error| panic!("{why}: {e}");
        vm.wait_for(&counted_line(&version, counter), boot_timeout()).unwrap_or_else(fail);
        vm.wait_for_nth(NOT_BLESSED, n, Duration::from_secs(60)).unwrap_or_else(fail);
        vm.wait_for_nth(SHUTDOWN_DONE, n + 1, shutdown_timeout()).unwrap_or_else(fail);
    }

    // The fifth boot: the entry at +0, the only one, still booted by
    // systemd-boot (renamed +0-4); PID1 says it is not blessed and stays.
    vm.wait_for(&counted_line(&version, "+0-4"), boot_timeout()).expect("the +0 entry boots");
    let stay = vm.wait_for(STAYING_UP, Duration::from_secs(60)).expect("PID1 leaves the last entry up");
    assert!(stay.contains("not blessed within 20s"), "{stay}");
    wait_ready_after_last_shutdown(&mut vm, boot_timeout());
    std::thread::sleep(Duration::from_secs(5));
    let console = vm.console_text();
    assert_eq!(console.matches(NOT_BLESSED).count(), 3, "{}", tail(&console, 40));
    assert_eq!(console.matches(SHUTDOWN_DONE).count(), 4, "the test's reboot and PID1's three");
    assert_eq!(entries(&mut vm), [format!("berth-{version}+0-4.conf")]);
    vm.sh_ok(&format!("umount {ESP_DIR}"));
    assert_eq!(vm.read_file("/sys/class/watchdog/watchdog0/state").expect("state").trim(), "active");

    vm.powerdown().expect("pressing the power button");
    let st = vm.wait_exit(shutdown_timeout()).expect("QEMU exits after the power button");
    assert!(st.success(), "QEMU exited with {st}");
    let console = vm.console_text();
    assert!(console.contains("berth: watchdog: /dev/watchdog0 disarmed"), "{}", tail(&console, 20));
}
