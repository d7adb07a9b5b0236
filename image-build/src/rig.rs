//! Two releases of Berth, N (this tree's version) and N+1 (its next minor
//! version), built from this tree by this very `berth-image` and signed
//! with one key that both accept, and a VM going between them the way a
//! user's machine does: install N+1, reboot into it, roll back to N.
//! Shared by `berth-image soak` and `berth-image bench --updates`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_qemu::releases::{Release, ReleaseBuilder};
use berth_qemu::updates::{self, wait_blessed, wait_online, UpdateStatus};
use berth_qemu::{boot_timeout, Vm, VmConfig};

type Error = Box<dyn std::error::Error>;

/// Releases N and N+1.
pub struct Rig {
    pub n: Release,
    pub n1: Release,
    /// The key both are signed with (and accept).
    pub key: PathBuf,
}

/// N+1 of `n`: the next minor version (`0.1.3` -> `0.2.0`).
pub fn next_version(n: &str) -> Result<String, Error> {
    let v = semver::Version::parse(n).map_err(|e| format!("version {n:?}: {e}"))?;
    Ok(semver::Version::new(v.major, v.minor + 1, 0).to_string())
}

impl Rig {
    /// Builds N and N+1 into `root/<version>/` with the running
    /// `berth-image` (`berth-image --out DIR build --os-version V
    /// --signing-key KEY`), the key made once in `root`. Each build
    /// rebuilds (2-4 minutes with the kernel cached): a release left from
    /// an older tree would measure that tree.
    pub fn build(root: &Path) -> Result<Rig, Error> {
        let exe = std::env::current_exe().map_err(|e| format!("finding the running berth-image: {e}"))?;
        let builder = ReleaseBuilder::new(vec![exe.into_os_string()], root)?;
        let n_version = berth_layout::VERSION.to_string();
        let n1_version = next_version(&n_version)?;
        let mut built = Vec::new();
        for v in [&n_version, &n1_version] {
            let t = Instant::now();
            eprintln!("rig: building release {v} into {}", root.join(v).display());
            built.push(builder.build(v, None)?);
            eprintln!("rig: release {v} built in {:.0} s", t.elapsed().as_secs_f64());
        }
        let n1 = built.pop().ok_or("no release N+1")?;
        let n = built.pop().ok_or("no release N")?;
        Ok(Rig { n, n1, key: builder.key().to_path_buf() })
    }

    /// The file name of N+1's bundle.
    pub fn n1_bundle_name(&self) -> String {
        file_name(&self.n1.bundle)
    }

    /// A directory `dir` (emptied) holding N+1's bundle, for an HTTP server.
    pub fn www(&self, dir: &Path) -> Result<(), Error> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        std::fs::copy(&self.n1.bundle, dir.join(self.n1_bundle_name()))?;
        Ok(())
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A machine on N (the slot a fresh disk boots, `home`) that goes to N+1
/// in the other slot and back.
pub struct Machine {
    pub vm: Vm,
    /// The slot N runs from (`a` on a fresh disk).
    pub home: String,
    /// The other one, where N+1 goes.
    pub away: String,
}

/// A boot that came up: when its ready line was seen (host clock), and
/// `status` once it was blessed.
pub struct Up {
    pub ready_at: Instant,
    pub status: UpdateStatus,
}

impl Machine {
    /// Starts `cfg` (a fresh overlay of N's disk) and waits until N is up
    /// and blessed.
    pub fn start(cfg: VmConfig, n: &str) -> Result<Machine, Error> {
        let mut vm = Vm::start(cfg)?;
        let up = come_up(&mut vm, boot_timeout(), None, n).map_err(|e| format!("a fresh machine on {n}: {e}"))?;
        let home = up.status.booted.slot.clone();
        let away = if home == "a" { "b" } else { "a" }.to_string();
        Ok(Machine { vm, home, away })
    }

    /// Installs `source` (N+1) fully; returns the seconds it took in the
    /// guest (uptime around `berthctl update install`, so the admin
    /// console's latency is not in it). Fails unless it says it installed
    /// `version` into the other slot.
    pub fn install(&mut self, source: &str, version: &str) -> Result<f64, String> {
        let (status, out, secs) =
            timed(&mut self.vm, &format!("berthctl update install '{source}' 2>&1"), Duration::from_secs(1200))?;
        let expect = format!("installed {version} into slot {}", self.away);
        if status != 0 || !out.contains(&expect) {
            return Err(format!("`berthctl update install {source}` (exit {status}) did not say {expect:?}:\n{out}"));
        }
        Ok(secs)
    }

    /// Asks for a clean reboot and waits for the next boot to come up on
    /// `slot` with `version`, blessed.
    pub fn reboot_into(&mut self, slot: &str, version: &str) -> Result<Up, String> {
        updates::reboot(&mut self.vm).map_err(|e| format!("berthctl reboot: {e}"))?;
        come_up(&mut self.vm, boot_timeout(), Some(slot), version)
    }

    /// From N+1 in the other slot back to N: `berthctl update rollback`,
    /// reboot, N up and blessed on its slot again.
    pub fn roll_back(&mut self, n: &str) -> Result<Up, String> {
        let out = self.vm.sh("berthctl update rollback 2>&1").map_err(|e| format!("berthctl update rollback: {e}"))?;
        if !out.success() {
            return Err(format!("berthctl update rollback (exit {}):\n{}", out.status, out.output));
        }
        let home = self.home.clone();
        self.reboot_into(&home, n)
    }

    /// N+1 installed from `source`, booted and blessed in the other slot,
    /// then rolled back to N: the round every soak check and bench run
    /// makes. Returns the install's seconds and the N+1 boot.
    pub fn round_trip(&mut self, source: &str, n: &str, n1: &str) -> Result<(f64, Up), String> {
        let secs = self.install(source, n1)?;
        let away = self.away.clone();
        let up = self.reboot_into(&away, n1).map_err(|e| format!("booting {n1} after its install: {e}"))?;
        self.roll_back(n).map_err(|e| format!("rolling back from {n1} to {n}: {e}"))?;
        Ok((secs, up))
    }
}

/// Waits, at most `timeout` in all, for the next boot's ready line and
/// then for the bless, and checks the machine runs `version` (from
/// `slot`, when given); then for `network-online`. The error says which
/// of these failed.
pub fn come_up(vm: &mut Vm, timeout: Duration, slot: Option<&str>, version: &str) -> Result<Up, String> {
    let deadline = Instant::now() + timeout;
    vm.wait_ready(timeout).map_err(|e| format!("no ready line: {e}"))?;
    let ready_at = Instant::now();
    // The health gate waits for containerd and etcd: give it at least a
    // minute even when the boot took most of the time.
    let left = deadline.saturating_duration_since(ready_at).max(Duration::from_secs(60));
    let status = wait_blessed(vm, left).map_err(|e| format!("up but not blessed: {e}"))?;
    let on_slot = slot.is_none_or(|s| status.booted.slot == s);
    if !on_slot || status.booted.version != version {
        return Err(format!(
            "up on slot {} with {}, not {}{version}:\n{}",
            status.booted.slot,
            status.booted.version,
            slot.map(|s| format!("slot {s} with ")).unwrap_or_default(),
            status.text
        ));
    }
    // The next step may fetch from the host: wait for DHCP as a user would.
    wait_online(vm, Duration::from_secs(120)).map_err(|e| format!("up and blessed, but not online: {e}"))?;
    Ok(Up { ready_at, status })
}

/// Runs `cmd` in the guest between two readings of /proc/uptime; returns
/// its exit status, its output and the seconds between the readings
/// (1/100 s resolution).
pub fn timed(vm: &mut Vm, cmd: &str, timeout: Duration) -> Result<(i32, String, f64), String> {
    let script = format!(
        "a=$(cut -d' ' -f1 /proc/uptime); {cmd}; rc=$?; b=$(cut -d' ' -f1 /proc/uptime); echo \"{TIMED} $rc $a $b\""
    );
    let out = vm.sh_timeout(&script, timeout).map_err(|e| format!("`{cmd}`: {e}"))?;
    parse_timed(&out.output).ok_or_else(|| format!("`{cmd}`: no timing line in its output:\n{}", out.output))
}

const TIMED: &str = "@timed";

fn parse_timed(output: &str) -> Option<(i32, String, f64)> {
    let (before, last) = output.trim_end().rsplit_once('\n').unwrap_or(("", output.trim_end()));
    let mut f = last.strip_prefix(TIMED)?.split_whitespace();
    let rc = f.next()?.parse().ok()?;
    let a: f64 = f.next()?.parse().ok()?;
    let b: f64 = f.next()?.parse().ok()?;
    Some((rc, format!("{before}\n"), b - a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_plus_one_is_the_next_minor_version() {
        assert_eq!(next_version("0.1.0").unwrap(), "0.2.0");
        assert_eq!(next_version("1.4.7").unwrap(), "1.5.0");
        assert!(next_version("one").is_err());
    }

    #[test]
    fn timed_output_is_split_from_its_timing_line() {
        let (rc, out, secs) = parse_timed("installed 0.2.0 into slot b\n@timed 0 100.25 112.75\n").unwrap();
        assert_eq!((rc, out.as_str()), (0, "installed 0.2.0 into slot b\n"));
        assert!((secs - 12.5).abs() < 1e-9);
        assert_eq!(parse_timed("@timed 1 5.00 6.00").map(|t| t.0), Some(1));
        assert_eq!(parse_timed("no timing"), None);
    }
}
