//! User data on the host: `berth-image check-config FILE` validates a
//! document with the code the machine runs ([`berth_provision::check`]),
//! and `berth-image run --user-data FILE --seed ...` hands one to the VM
//! the way a cloud would: QEMU fw_cfg, a NoCloud seed volume, or an
//! EC2-style metadata service on the host.

use std::path::{Path, PathBuf};

use berth_provision::{check, Checked};
use berth_qemu::{nocloud_seed, ImdsServer, SeedFiles, SeedFormat, VmConfig};

type Error = Box<dyn std::error::Error>;

/// The outcome of `check-config`: the text to print and the exit code.
pub struct Report {
    pub text: String,
    /// `false`: rejected (exit 1).
    pub accepted: bool,
}

/// Checks `path`'s bytes; the diagnostics name the path as given.
pub fn check_config(path: &Path) -> Result<Report, Error> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(report(&path.display().to_string(), &check(&path.display().to_string(), &bytes)))
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Every error and warning, one a line (`error: SOURCE:LINE: key K:
/// message`), then a summary line.
pub fn report(source: &str, checked: &Checked) -> Report {
    let mut text = String::new();
    match checked {
        Ok(doc) => {
            for w in &doc.warnings {
                text.push_str(&format!("warning: {w}\n"));
            }
            let format = match doc.format {
                berth_provision::Format::CloudConfig => "#cloud-config",
                berth_provision::Format::Native => "#berth-config",
            };
            text.push_str(&format!(
                "{source}: accepted ({format}, {}, sha256 {})\n",
                plural(doc.warnings.len(), "warning"),
                doc.sha256
            ));
            Report { text, accepted: true }
        }
        Err(rejected) => {
            for e in &rejected.errors {
                text.push_str(&format!("error: {e}\n"));
            }
            for w in &rejected.warnings {
                text.push_str(&format!("warning: {w}\n"));
            }
            text.push_str(&format!(
                "{source}: rejected ({}, {}): nothing of it would be applied\n",
                plural(rejected.errors.len(), "error"),
                plural(rejected.warnings.len(), "warning")
            ));
            Report { text, accepted: false }
        }
    }
}

/// How `run` gives the VM its user data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Seed {
    /// QEMU fw_cfg entries opt/org.berth/user-data and opt/org.berth/meta-data.
    #[default]
    #[value(name = "fw_cfg", alias = "fw-cfg")]
    FwCfg,
    /// A NoCloud seed: a vfat volume labelled CIDATA on a second virtio disk.
    Nocloud,
    /// A NoCloud seed as an iso9660 volume labelled cidata (cloud-localds'
    /// kind) on a second virtio disk.
    NocloudIso,
    /// An EC2-style metadata service (IMDSv2) on the host, the VM's DMI
    /// saying "Amazon EC2", its network 169.254.0.0/16.
    Imds,
}

/// `run`'s user-data options.
#[derive(Clone, Debug, Default)]
pub struct UserData {
    pub user_data: Option<PathBuf>,
    pub meta_data: Option<PathBuf>,
    pub seed: Seed,
}

/// The instance id given when `--meta-data` is not (cloud-localds' default).
pub const DEFAULT_INSTANCE_ID: &str = "iid-local01";

/// What attaching left running: the metadata service lives as long as the VM.
pub struct Attached {
    pub config: VmConfig,
    pub imds: Option<ImdsServer>,
}

/// Adds the user data to `config`; seed images go into `dir`. Prints
/// what check-config says about the document (the VM gets it either way:
/// how the machine handles a bad document is worth seeing too).
pub fn attach(config: VmConfig, opts: &UserData, dir: &Path) -> Result<Attached, Error> {
    let Some(user_data) = &opts.user_data else {
        if opts.meta_data.is_some() {
            return Err("--meta-data needs --user-data".into());
        }
        return Ok(Attached { config, imds: None });
    };
    let r = check_config(user_data)?;
    eprint!("{}", r.text);
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
    let ud = read(user_data)?;
    let md = opts.meta_data.as_deref().map(read).transpose()?;
    std::fs::create_dir_all(dir)?;
    let seed = |format| -> Result<Attached, Error> {
        let out = dir.join(if format == SeedFormat::Vfat { "seed.img" } else { "seed.iso" });
        let meta = md.clone().unwrap_or_else(|| format!("instance-id: {DEFAULT_INSTANCE_ID}\n").into_bytes());
        let files = SeedFiles { user_data: Some(ud.clone()), meta_data: Some(meta), network_config: None };
        nocloud_seed(&out, format, &files)?;
        eprintln!("run: user data on a NoCloud seed {}", out.display());
        Ok(Attached { config: config.clone().seed(&out), imds: None })
    };
    match opts.seed {
        Seed::FwCfg => {
            let mut config = config.user_data(user_data);
            if let Some(m) = &opts.meta_data {
                config = config.meta_data(m);
            }
            eprintln!("run: user data over fw_cfg (opt/org.berth/user-data)");
            Ok(Attached { config, imds: None })
        }
        Seed::Nocloud => seed(SeedFormat::Vfat),
        Seed::NocloudIso => seed(SeedFormat::Iso9660),
        Seed::Imds => {
            let instance_id = md.as_deref().and_then(instance_id).unwrap_or_else(|| DEFAULT_INSTANCE_ID.to_string());
            let server = ImdsServer::start(Some(&ud), &instance_id)?;
            eprintln!("run: user data from a metadata service on {} (instance-id {instance_id})", server.url());
            Ok(Attached { config: config.ec2().imds_port(server.port()), imds: Some(server) })
        }
    }
}

/// `instance-id: X` from a meta-data file (a plain line scan: the
/// machine's reader is the judge of the rest).
fn instance_id(meta: &[u8]) -> Option<String> {
    String::from_utf8_lossy(meta).lines().find_map(|l| {
        let v = l.strip_prefix("instance-id:")?.trim().trim_matches(|c| c == '"' || c == '\'');
        (!v.is_empty()).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_provision::{Diagnostic, Place, Rejected};

    #[test]
    fn a_rejected_document_lists_every_error_and_warning() {
        let d = |line, key: &str, m: &str| Diagnostic::new(Place::new("u.yaml", line, key), m);
        let checked: Checked = Err(Rejected {
            source: "u.yaml".into(),
            errors: vec![d(3, "users[0].shell", "expected a string"), d(7, "write_files[0].path", "relative path")],
            warnings: vec![d(9, "packages", "not supported by Berth")],
            sha256: "00".into(),
        });
        let r = report("u.yaml", &checked);
        assert!(!r.accepted);
        assert_eq!(
            r.text,
            "error: u.yaml:3: key users[0].shell: expected a string\n\
             error: u.yaml:7: key write_files[0].path: relative path\n\
             warning: u.yaml:9: key packages: not supported by Berth\n\
             u.yaml: rejected (2 errors, 1 warning): nothing of it would be applied\n"
        );
    }

    #[test]
    fn instance_ids_are_read_from_meta_data() {
        assert_eq!(instance_id(b"local-hostname: a\ninstance-id: i-1\n").as_deref(), Some("i-1"));
        assert_eq!(instance_id(b"instance-id: \"q\"\n").as_deref(), Some("q"));
        assert_eq!(instance_id(b"nothing: here\n"), None);
    }

    #[test]
    fn seeds_attach_as_asked() {
        let dir = std::env::temp_dir().join(format!("berth-attach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ud = dir.join("user-data");
        std::fs::write(&ud, "#cloud-config\nhostname: a\n").unwrap();
        let opts = |seed| UserData { user_data: Some(ud.clone()), meta_data: None, seed };
        let a = attach(VmConfig::new(), &opts(Seed::FwCfg), &dir).unwrap();
        assert_eq!(a.config.fw_cfg, [(berth_qemu::FW_CFG_USER_DATA.to_string(), ud.clone())]);
        let a = attach(VmConfig::new(), &opts(Seed::Nocloud), &dir).unwrap();
        assert_eq!(a.config.seed, Some(dir.join("seed.img")));
        assert!(a.config.fw_cfg.is_empty());
        let none = attach(VmConfig::new(), &UserData::default(), &dir).unwrap();
        assert!(none.config.seed.is_none() && none.config.fw_cfg.is_empty() && none.imds.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
