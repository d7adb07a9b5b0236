//! Broken images, for the update tests only (`berth-image build --variant`):
//! versions that must fail in the new slot and end in the old one.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use clap::ValueEnum;

use crate::error::{io_at, IoError};

/// A deliberately broken image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// The health gate never passes: the image's default updater settings
    /// get one more `[[gate.check]]` that always fails, so the boot is
    /// never blessed and PID1 reboots at the gate's deadline.
    GateFails,
    /// The kernel panics at once: `/sbin/init` is a script that exits 1,
    /// so the kernel panics "Attempted to kill init" and reboots after
    /// `panic=10` (the command line's).
    Panic,
}

/// The check the `gate-fails` variant appends to the default settings.
pub const FAILING_CHECK: &str = "
# Test variant gate-fails (berth-image build --variant gate-fails): a check
# that never passes, so no boot of this image is ever blessed.
[[gate.check]]
name = \"test-variant-gate-fails\"
exec = [\"/usr/bin/false\"]
timeout = \"10s\"
";

/// `/sbin/init` of the `panic` variant. A script, not a link to busybox:
/// busybox called as `init` runs its own init applet and would boot.
pub const PANIC_INIT: &str = "#!/usr/bin/sh
# Test variant panic (berth-image build --variant panic): PID1 exits at
# once, the kernel panics (\"Attempted to kill init\") and reboots.
echo 'berth: test variant panic: /sbin/init exits 1'
exit 1
";

/// Changes the root tree at `root` into the variant's.
pub fn apply(variant: Variant, root: &Path) -> Result<(), IoError> {
    match variant {
        Variant::GateFails => {
            let path = root.join(berth_layout::paths::UPDATER_DEFAULT_CONFIG.trim_start_matches('/'));
            let mut text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
            text.push_str(FAILING_CHECK);
            std::fs::write(&path, text).map_err(io_at(&path))
        }
        Variant::Panic => {
            // /sbin is a link to usr/sbin; init there is a link to berth-init.
            let path = root.join("usr/sbin/init");
            std::fs::remove_file(&path).map_err(io_at(&path))?;
            std::fs::write(&path, PANIC_INIT).map_err(io_at(&path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(io_at(&path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_settings() -> String {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(repo.join("rootfs/usr/lib/berth/updater.toml")).unwrap()
    }

    fn checks(text: &str) -> Vec<(String, Vec<String>)> {
        let v: toml::Value = toml::from_str(text).unwrap();
        v["gate"]["check"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let exec = c["exec"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
                (c["name"].as_str().unwrap().to_string(), exec)
            })
            .collect()
    }

    /// The image's defaults are those of the issue: 5 min deadline, 2 s
    /// retry, containerd and etcd checked (on the etcd unit's endpoint),
    /// automatic mode off, 5 download resumes.
    #[test]
    fn the_image_default_settings() {
        let text = image_settings();
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["gate"]["deadline"].as_str(), Some("5m"));
        assert_eq!(v["gate"]["retry"].as_str(), Some("2s"));
        assert_eq!(v["auto"]["enabled"].as_bool(), Some(false));
        assert_eq!(v["fetch"]["retries"].as_integer(), Some(5));
        let c = checks(&text);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], ("containerd".to_string(), vec!["/usr/bin/ctr".to_string(), "version".into()]));
        assert_eq!(c[1].0, "etcd");
        let unit =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rootfs/usr/lib/berth/units/etcd.toml"))
                .unwrap();
        let endpoint = c[1].1.iter().find(|a| a.starts_with("http://")).unwrap();
        assert!(unit.contains(&format!("--advertise-client-urls\", \"{endpoint}\"")), "etcd unit serves {endpoint}");
    }

    #[test]
    fn gate_fails_adds_a_failing_check_and_panic_replaces_init() {
        let root = std::env::temp_dir().join(format!("berth-variant-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cfg = root.join("usr/lib/berth/updater.toml");
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        std::fs::write(&cfg, image_settings()).unwrap();
        apply(Variant::GateFails, &root).unwrap();
        let c = checks(&std::fs::read_to_string(&cfg).unwrap());
        assert_eq!(c.len(), 3, "the default checks stay, one is added");
        assert_eq!(c[2].1, ["/usr/bin/false"]);
        let status = std::process::Command::new(&c[2].1[0]).status().unwrap();
        assert!(!status.success(), "the added check fails");

        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::os::unix::fs::symlink("../bin/berth-init", root.join("usr/sbin/init")).unwrap();
        apply(Variant::Panic, &root).unwrap();
        let init = root.join("usr/sbin/init");
        assert!(!init.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(init.metadata().unwrap().permissions().mode() & 0o777, 0o755);
        // Run with the host's sh in place of the image's: it exits 1.
        let script = std::fs::read_to_string(&init).unwrap();
        assert!(script.starts_with("#!/usr/bin/sh\n"));
        let status = std::process::Command::new("sh").arg(&init).status().unwrap();
        assert_eq!(status.code(), Some(1));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
