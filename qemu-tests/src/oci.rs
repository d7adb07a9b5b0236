//! OCI images for the container tests, built on the host from its own
//! busybox of Debian's busybox-static package (one uncompressed layer): no registry, no network. The
//! archive is padded to whole sectors so that a VM can have it as a
//! read-only disk ([`readonly_drive`]) and the guest imports it with
//! `ctr image import --base-name berth.test/busybox /dev/vdb`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::error::{Error, Result};
use crate::http::BUSYBOX;

/// The reference the busybox image has once imported.
pub const BUSYBOX_IMAGE: &str = "berth.test/busybox:1";
/// The busybox applets linked in the image's `/bin`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "echo", "ping", "ip", "cat", "mkdir", "mount", "sleep", "nc", "md5sum", "head", "timeout", "dd", "wc",
    "mkfifo",
];

/// Runs a host command; its stdout, or an error with its output.
fn host(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| Error::Other(format!("running {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Other(format!("{what}: {e}"))
}

/// The sha256 of a file, in hex (coreutils' sha256sum).
fn sha256_file(path: &Path) -> Result<String> {
    let out = host(Command::new("sha256sum").arg(path))?;
    let hex = out.split_whitespace().next().unwrap_or_default().to_string();
    if hex.len() != 64 {
        return Err(Error::Other(format!("sha256sum said {out:?}")));
    }
    Ok(hex)
}

/// Writes a blob under `oci/blobs/sha256/` and returns its descriptor.
fn blob(oci: &Path, media_type: &str, data: &[u8]) -> Result<serde_json::Value> {
    let tmp = oci.join("blob.tmp");
    std::fs::write(&tmp, data).map_err(io("writing a blob"))?;
    let hex = sha256_file(&tmp)?;
    std::fs::rename(&tmp, oci.join("blobs/sha256").join(&hex)).map_err(io("moving a blob"))?;
    Ok(json!({ "mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len() }))
}

fn to_vec(v: &serde_json::Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Other(format!("serializing {v}: {e}")))
}

/// Builds an OCI image archive named [`BUSYBOX_IMAGE`] (one uncompressed
/// layer: `bin/busybox` and the [`BUSYBOX_APPLETS`] links; `Cmd` `/bin/sh`,
/// `PATH=/bin`) in `dir` (emptied first), padded to whole 512-byte
/// sectors. Returns the archive's path. Needs busybox-static, `tar` and
/// `sha256sum` on the host.
pub fn build_busybox_image(dir: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    let rootfs = dir.join("rootfs");
    let oci = dir.join("oci");
    for d in [&rootfs.join("bin"), &oci.join("blobs/sha256")] {
        std::fs::create_dir_all(d).map_err(io(format_args!("creating {}", d.display())))?;
    }
    // A container has no libc of its own: the host's busybox-static.
    if !Path::new(BUSYBOX).is_file() {
        return Err(Error::HostMissing {
            missing: vec![format!("{BUSYBOX} (package busybox-static)")],
            install: "apt-get install busybox-static",
        });
    }
    let bin = rootfs.join("bin");
    std::fs::copy(BUSYBOX, bin.join("busybox")).map_err(io(format_args!("copying {BUSYBOX}")))?;
    for applet in BUSYBOX_APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).map_err(io("an applet link"))?;
    }

    let tar = || {
        let mut c = Command::new("tar");
        c.args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-cf"]);
        c
    };
    let layer = dir.join("layer.tar");
    host(tar().arg(&layer).arg("-C").arg(&rootfs).arg("bin"))?;
    let layer_data = std::fs::read(&layer).map_err(io("reading the layer"))?;
    let layer_desc = blob(&oci, "application/vnd.oci.image.layer.v1.tar", &layer_data)?;
    let diff_id = layer_desc["digest"].clone();

    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    let config_desc = blob(&oci, "application/vnd.oci.image.config.v1+json", &to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    });
    let mut manifest_desc = blob(&oci, "application/vnd.oci.image.manifest.v1+json", &to_vec(&manifest)?)?;
    manifest_desc["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    manifest_desc["annotations"] = json!({ "org.opencontainers.image.ref.name": BUSYBOX_IMAGE });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    });
    std::fs::write(oci.join("index.json"), to_vec(&index)?).map_err(io("writing index.json"))?;
    std::fs::write(oci.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io("writing oci-layout"))?;

    let archive = dir.join("busybox-oci.tar");
    host(tar().arg(&archive).arg("-C").arg(&oci).args(["oci-layout", "index.json", "blobs"]))?;
    let len = std::fs::metadata(&archive).map_err(io("the archive"))?.len();
    let padded = len.div_ceil(512) * 512;
    std::fs::OpenOptions::new().write(true).open(&archive).and_then(|f| f.set_len(padded)).map_err(io("padding"))?;
    Ok(archive)
}

/// The QEMU `-drive` value that attaches `file` as a read-only raw virtio
/// disk (the guest's second disk, `vdb`).
pub fn readonly_drive(file: &Path) -> String {
    format!("file={},format=raw,if=virtio,readonly=on", file.display().to_string().replace(',', ",,"))
}
