//! Boots the built image with user data from one source and runs Berth's
//! probe inside it (the `probe` example, carried on a stick), printing what
//! the probe found and, for IMDS, what the host's metadata service saw:
//!
//!     cargo build -p berth-qemu --example probe
//!     cargo run -p berth-qemu --example user_data_probe -- fw_cfg|nocloud|nocloud-iso|nocloud-cdrom|imds|none
//!
//! This checks the kernel options (FW_CFG_SYSFS, DMIID, ISO9660), the
//! harness (fw_cfg, seed, -smbios, the metadata network) and the probe
//! together, before PID1 calls the probe itself.

use std::path::{Path, PathBuf};

use berth_qemu::{
    boot_timeout, fat_image, nocloud_seed, shutdown_timeout, ImdsServer, SeedFiles, SeedFormat, Vm, VmConfig, GIB,
};

const USER_DATA: &str = "#cloud-config\nhostname: probed\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = std::env::args().nth(1).unwrap_or_else(|| "fw_cfg".into());
    let dir = std::env::temp_dir().join(format!("berth-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let probe = berth_qemu::workspace_root().join("target/debug/examples/probe");
    let stripped = dir.join("probe");
    let st = std::process::Command::new("strip").arg("-o").arg(&stripped).arg(&probe).status()?;
    if !st.success() {
        return Err(
            format!("strip {}: {st} (build it: cargo build -p berth-qemu --example probe)", probe.display()).into()
        );
    }
    let size = std::fs::metadata(&stripped)?.len();
    let stick = dir.join("stick.img");
    fat_image(&stick, (size + (8 << 20)).div_ceil(1 << 20) * (1 << 20), &[(stripped.as_path(), "probe")])?;
    // BERTH_PROBE_PAD=N: N more bytes of user data (a YAML comment), to time big documents.
    let pad: usize = std::env::var("BERTH_PROBE_PAD").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let user_data = format!("{USER_DATA}#{}\n", "x".repeat(pad));
    let ud = dir.join("user-data");
    std::fs::write(&ud, &user_data)?;

    let mut cfg = VmConfig::new().name("probe").disk_size(4 * GIB).stick(&stick);
    let mut imds = None;
    let files = SeedFiles {
        user_data: Some(user_data.clone().into_bytes()),
        meta_data: Some(b"instance-id: seed-1\n".to_vec()),
        network_config: None,
    };
    match source.as_str() {
        "fw_cfg" => cfg = cfg.user_data(&ud),
        "nocloud" => cfg = cfg.seed(seed(&dir, SeedFormat::Vfat, &files)?),
        "nocloud-iso" => cfg = cfg.seed(seed(&dir, SeedFormat::Iso9660, &files)?),
        "nocloud-cdrom" => cfg = cfg.seed_cdrom(seed(&dir, SeedFormat::Iso9660, &files)?),
        "imds" => {
            let server = ImdsServer::start(Some(user_data.as_bytes()), "i-0123456789abcdef0")?;
            cfg = cfg.ec2().imds_port(server.port());
            imds = Some(server);
        }
        "none" => {}
        other => return Err(format!("unknown source {other}").into()),
    }
    let mut vm = Vm::start(cfg)?;
    vm.wait_for("admin shell on", boot_timeout())?;
    // As at boot, before the network unit: no dhcpcd, no address
    // (BERTH_PROBE_NO_NETWORK=1 stops the unit first).
    let stop_network = std::env::var("BERTH_PROBE_NO_NETWORK").is_ok_and(|v| v == "1");
    let prelude = if stop_network {
        "berthctl stop network; sleep 1; ip -4 addr flush dev eth0; ps | grep -c '[d]hcpcd'; ip -4 addr show eth0"
    } else {
        "true"
    };
    for cmd in [
        "cat /sys/class/dmi/id/sys_vendor; ls /sys/firmware/qemu_fw_cfg/by_name/opt 2>&1; ls /sys/class/block",
        prelude,
        "mkdir -p /run/stick && mount -t vfat -o ro /dev/vdb /run/stick && /run/stick/probe",
        "mount | grep -c /run/berth/seed; ip -4 addr show eth0 | grep inet; ps | grep '[d]hcpcd'",
    ] {
        let out = vm.sh(cmd)?;
        println!("$ {cmd}\n{}# exit {}", out.output, out.status);
    }
    if let Some(server) = &imds {
        for r in server.requests() {
            println!("imds: {} {} token={:?} valid={} -> {}", r.method, r.path, r.token, r.token_valid, r.status);
        }
    }
    vm.powerdown()?;
    vm.wait_exit(shutdown_timeout())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn seed(dir: &Path, format: SeedFormat, files: &SeedFiles) -> Result<PathBuf, berth_qemu::Error> {
    let out = dir.join(format!("seed-{format:?}.img"));
    nocloud_seed(&out, format, files)?;
    Ok(out)
}
