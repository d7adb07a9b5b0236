//! Containers on Berth as a user runs them: an OCI image built on the host
//! (Debian's busybox-static, one layer) is imported with `ctr`, a container
//! of it runs and prints, and one on the CNI bridge gets an address in
//! 10.88.0.0/16 and reaches the bridge's gateway (the host side, `berth0`).
//! Only addresses inside the VM are used.

use berth_qemu::oci::{self, BUSYBOX_IMAGE as IMAGE};
use berth_qemu::{boot_timeout, shutdown_timeout, Vm, VmConfig, GIB};

/// The gateway of the CNI network in /etc/cni/net.d/10-berth.conflist
/// (bridge berth0, subnet 10.88.0.0/16, isGateway).
const GATEWAY: &str = "10.88.0.1";

#[test]
fn a_container_runs_and_reaches_the_host_bridge() {
    let dir = berth_qemu::vms_dir().join(format!("oci-busybox-{}", std::process::id()));
    let archive = oci::build_busybox_image(&dir).unwrap_or_else(|e| panic!("building the OCI image: {e}"));
    let drive = oci::readonly_drive(&archive);
    let mut vm = Vm::start(VmConfig::new().name("containers").disk_size(4 * GIB).arg("-drive").arg(drive))
        .expect("starting the VM with the image disk");
    if let Err(e) = vm.wait_ready(boot_timeout()) {
        panic!("the VM did not reach the ready line: {e}");
    }
    let ctx = |vm: &Vm| vm.paths().context();

    // The image disk: the read-only virtio disk (vdb).
    let (_, disks) =
        vm.sh_status("for d in /sys/class/block/vd?; do [ \"$(cat $d/ro)\" = 1 ] && echo ${d##*/}; done; true");
    let disk = disks.lines().next().unwrap_or_else(|| panic!("no read-only virtio disk in the guest:\n{}", ctx(&vm)));
    assert_eq!(disk, "vdb", "the image disk is not vdb");

    let (st, _) = vm.sh_status("berthctl status containerd");
    assert_eq!(st, 0, "containerd is not active\n{}", ctx(&vm));

    let (st, out) = vm.sh_status(&format!("ctr image import --base-name berth.test/busybox /dev/{disk}"));
    assert_eq!(st, 0, "`ctr image import` failed ({st}):\n{out}\n{}", ctx(&vm));
    let (st, images) = vm.sh_status("ctr image ls");
    assert!(
        st == 0 && images.lines().any(|l| l.split_whitespace().next() == Some(IMAGE)),
        "`ctr image ls` (exit {st}) does not list {IMAGE}:\n{images}\nimport said:\n{out}"
    );

    let (st, out) = vm.sh_status(&format!("ctr run --rm {IMAGE} c1 /bin/echo hello-from-container"));
    assert!(
        st == 0 && out.lines().any(|l| l.trim() == "hello-from-container"),
        "`ctr run ... echo` (exit {st}) did not print hello-from-container:\n{out}\n{}",
        ctx(&vm)
    );

    let cmd = format!("ctr run --rm --cni {IMAGE} c2 /bin/sh -c 'ip -4 addr; ping -c 1 -W 5 {GATEWAY}'");
    let (st, out) = vm.sh_status(&cmd);
    let (_, host_side) = vm.sh_status("ip -4 addr show berth0; ls /etc/cni/net.d /opt/cni/bin");
    let report = format!("`{cmd}` (exit {st}):\n{out}\nguest side:\n{host_side}\n{}", ctx(&vm));
    let addr = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("inet "))
        .find(|a| a.starts_with("10.88."))
        .unwrap_or_else(|| panic!("the container has no 10.88.x.x address:\n{report}"));
    assert!(!addr.starts_with("10.88.0.1/"), "the container got the gateway's address {addr}:\n{report}");
    assert!(
        out.contains("1 packets received") && out.contains(", 0% packet loss"),
        "the container's ping to {GATEWAY} failed:\n{report}"
    );
    assert_eq!(st, 0, "the container exited {st}:\n{report}");
    eprintln!("`{cmd}`:\n{out}");
    assert!(host_side.contains("inet 10.88.0.1/16"), "berth0 does not hold {GATEWAY}/16:\n{report}");

    // A container on the host's network: ctr bind-mounts the host's
    // /etc/hosts and /etc/resolv.conf into it, so both must exist, and it
    // sees the host's interfaces (the CNI bridge among them).
    let cmd = format!("ctr run --rm --net-host {IMAGE} c-host /bin/sh -c 'cat /etc/hosts; ip -o link'");
    let (st, out) = vm.sh_status(&cmd);
    assert!(
        st == 0 && out.contains("localhost") && out.contains("berth0"),
        "`{cmd}` (exit {st}) did not run on the host's network:\n{out}\n{}",
        ctx(&vm)
    );

    // A privileged container's mount under an `rshared` bind mount shows on
    // the host (the mount tree is shared from early boot). The container's
    // root is made rshared too, as containerd's CRI does for a Kubernetes
    // Bidirectional mount: runc otherwise makes it rslave, and nothing
    // would propagate back whatever the host's mounts are.
    let cmd = format!(
        "mkdir -p /var/lib/prop && ctr run --rm --privileged --rootfs-propagation rshared \
         --mount type=bind,src=/var/lib/prop,dst=/prop,options=rbind:rshared {IMAGE} c3 \
         /bin/sh -c 'mkdir -p /prop/sub && mount -t tmpfs -o size=1m from-container /prop/sub'"
    );
    let (st, out) = vm.sh_status(&cmd);
    assert_eq!(st, 0, "`{cmd}` (exit {st}):\n{out}\n{}", ctx(&vm));
    let (_, mounts) = vm.sh_status("cat /proc/self/mountinfo");
    assert!(
        mounts.lines().any(|l| l.split_whitespace().nth(4) == Some("/var/lib/prop/sub") && l.contains(" - tmpfs from-container ")),
        "the container's tmpfs under the rshared bind mount did not propagate to the host:\n{mounts}"
    );

    let (_, left) = vm.sh_status("ctr containers ls -q");
    assert!(
        !left.contains("c1") && !left.contains("c2") && !left.contains("c3"),
        "`ctr run --rm` left containers behind:\n{left}"
    );

    vm.powerdown().expect("power button");
    vm.wait_exit(shutdown_timeout()).expect("QEMU exits after the power button");
    let _ = std::fs::remove_dir_all(&dir);
}
