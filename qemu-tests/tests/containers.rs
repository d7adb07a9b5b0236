//! Containers on Berth as a user runs them: an OCI image built on the host
//! (Debian's busybox-static, one layer) is imported with `ctr`, a container
//! of it runs and prints, and one on the CNI bridge gets an address in
//! 10.88.0.0/16 and reaches the bridge's gateway (the host side, `berth0`).
//! Only addresses inside the VM are used.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_qemu::{boot_timeout, shutdown_timeout, Vm, VmConfig, GIB};
use serde_json::json;

const IMAGE: &str = "berth.test/busybox:1";
/// The gateway of the CNI network in /etc/cni/net.d/10-berth.conflist
/// (bridge berth0, subnet 10.88.0.0/16, isGateway).
const GATEWAY: &str = "10.88.0.1";

#[track_caller]
fn host(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sha256 of a file, in hex (coreutils' sha256sum).
fn sha256_file(path: &Path) -> String {
    let out = host(Command::new("sha256sum").arg(path));
    let hex = out.split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(hex.len(), 64, "sha256sum said {out:?}");
    hex
}

/// Debian's busybox-static package, from the image build's package cache.
fn busybox_deb() -> PathBuf {
    let cache = std::env::var_os("BERTH_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/berth"))
        .join("packages");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("reading the package cache {}: {e} (run `berth-image build`)", cache.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("busybox-static_") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    debs.pop().unwrap_or_else(|| {
        panic!("no busybox-static_*.deb in {} (it is pinned in image-build/packages.lock)", cache.display())
    })
}

/// Writes a blob under `oci/blobs/sha256/` and returns its descriptor.
fn blob(oci: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    let tmp = oci.join("blob.tmp");
    std::fs::write(&tmp, data).expect("writing a blob");
    let hex = sha256_file(&tmp);
    std::fs::rename(&tmp, oci.join("blobs/sha256").join(&hex)).expect("moving a blob");
    json!({ "mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len() })
}

/// Builds an OCI image archive (one uncompressed layer: bin/busybox and
/// a few applet links) in `dir`, padded to whole sectors so that it can be
/// a disk. Returns its path.
fn build_busybox_image(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    let extract = dir.join("deb");
    let rootfs = dir.join("rootfs");
    let oci = dir.join("oci");
    for d in [&extract, &rootfs.join("bin"), &oci.join("blobs/sha256")] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
    }
    host(Command::new("dpkg-deb").arg("-x").arg(busybox_deb()).arg(&extract));
    let bin = rootfs.join("bin");
    std::fs::copy(extract.join("bin/busybox"), bin.join("busybox")).expect("copying busybox");
    for applet in ["sh", "echo", "ping", "ip", "cat", "mkdir", "mount"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("an applet link");
    }

    let layer = dir.join("layer.tar");
    host(
        Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-cf"])
            .arg(&layer)
            .arg("-C")
            .arg(&rootfs)
            .arg("bin"),
    );
    let layer_data = std::fs::read(&layer).expect("reading the layer");
    let layer_desc = blob(&oci, "application/vnd.oci.image.layer.v1.tar", &layer_data);
    let diff_id = layer_desc["digest"].clone();

    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    let config_desc =
        blob(&oci, "application/vnd.oci.image.config.v1+json", &serde_json::to_vec(&config).expect("config"));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    });
    let mut manifest_desc =
        blob(&oci, "application/vnd.oci.image.manifest.v1+json", &serde_json::to_vec(&manifest).expect("manifest"));
    manifest_desc["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    manifest_desc["annotations"] = json!({ "org.opencontainers.image.ref.name": IMAGE });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    });
    std::fs::write(oci.join("index.json"), serde_json::to_vec(&index).expect("index")).expect("index.json");
    std::fs::write(oci.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");

    let archive = dir.join("busybox-oci.tar");
    host(
        Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-cf"])
            .arg(&archive)
            .arg("-C")
            .arg(&oci)
            .args(["oci-layout", "index.json", "blobs"]),
    );
    let len = std::fs::metadata(&archive).expect("the archive").len();
    let padded = len.div_ceil(512) * 512;
    std::fs::OpenOptions::new().write(true).open(&archive).and_then(|f| f.set_len(padded)).expect("padding");
    archive
}

#[track_caller]
fn run(vm: &mut Vm, cmd: &str) -> (i32, String) {
    match vm.sh(cmd) {
        Ok(o) => (o.status, o.output),
        Err(e) => panic!("guest command `{cmd}`: {e}"),
    }
}

#[test]
fn a_container_runs_and_reaches_the_host_bridge() {
    let dir = berth_qemu::vms_dir().join(format!("oci-busybox-{}", std::process::id()));
    let archive = build_busybox_image(&dir);
    let drive = format!("file={},format=raw,if=virtio,readonly=on", archive.display().to_string().replace(',', ",,"));
    let mut vm = Vm::start(VmConfig::new().name("containers").disk_size(4 * GIB).arg("-drive").arg(drive))
        .expect("starting the VM with the image disk");
    if let Err(e) = vm.wait_ready(boot_timeout()) {
        panic!("the VM did not reach the ready line: {e}");
    }
    let ctx = |vm: &Vm| vm.paths().context();

    // The image disk: the read-only virtio disk (vdb).
    let (_, disks) =
        run(&mut vm, "for d in /sys/class/block/vd?; do [ \"$(cat $d/ro)\" = 1 ] && echo ${d##*/}; done; true");
    let disk = disks.lines().next().unwrap_or_else(|| panic!("no read-only virtio disk in the guest:\n{}", ctx(&vm)));
    assert_eq!(disk, "vdb", "the image disk is not vdb");

    let (st, _) = run(&mut vm, "berthctl status containerd");
    assert_eq!(st, 0, "containerd is not active\n{}", ctx(&vm));

    let (st, out) = run(&mut vm, &format!("ctr image import --base-name berth.test/busybox /dev/{disk}"));
    assert_eq!(st, 0, "`ctr image import` failed ({st}):\n{out}\n{}", ctx(&vm));
    let (st, images) = run(&mut vm, "ctr image ls");
    assert!(
        st == 0 && images.lines().any(|l| l.split_whitespace().next() == Some(IMAGE)),
        "`ctr image ls` (exit {st}) does not list {IMAGE}:\n{images}\nimport said:\n{out}"
    );

    let (st, out) = run(&mut vm, &format!("ctr run --rm {IMAGE} c1 /bin/echo hello-from-container"));
    assert!(
        st == 0 && out.lines().any(|l| l.trim() == "hello-from-container"),
        "`ctr run ... echo` (exit {st}) did not print hello-from-container:\n{out}\n{}",
        ctx(&vm)
    );

    let cmd = format!("ctr run --rm --cni {IMAGE} c2 /bin/sh -c 'ip -4 addr; ping -c 1 -W 5 {GATEWAY}'");
    let (st, out) = run(&mut vm, &cmd);
    let (_, host_side) = run(&mut vm, "ip -4 addr show berth0; ls /etc/cni/net.d /opt/cni/bin");
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
    let (st, out) = run(&mut vm, &cmd);
    assert_eq!(st, 0, "`{cmd}` (exit {st}):\n{out}\n{}", ctx(&vm));
    let (_, mounts) = run(&mut vm, "cat /proc/self/mountinfo");
    assert!(
        mounts.lines().any(|l| l.split_whitespace().nth(4) == Some("/var/lib/prop/sub") && l.contains(" - tmpfs from-container ")),
        "the container's tmpfs under the rshared bind mount did not propagate to the host:\n{mounts}"
    );

    let (_, left) = run(&mut vm, "ctr containers ls -q");
    assert!(
        !left.contains("c1") && !left.contains("c2") && !left.contains("c3"),
        "`ctr run --rm` left containers behind:\n{left}"
    );

    vm.powerdown().expect("power button");
    vm.wait_exit(shutdown_timeout()).expect("QEMU exits after the power button");
    let _ = std::fs::remove_dir_all(&dir);
}
