//! The probe over a fake machine: files (sysfs, devices) in a map, seeds
//! that appear when mounted, canned HTTP answers, a clock that never sleeps.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::system::{Method, Request, Response, System};
use super::*;
use crate::host::{Ran, Runner};

type Handler = Box<dyn FnMut(&Request) -> io::Result<Response>>;

struct Fake {
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// What a device holds once mounted: file name -> bytes.
    seeds: BTreeMap<PathBuf, BTreeMap<String, Vec<u8>>>,
    mounts: Vec<(PathBuf, String, PathBuf)>,
    unmounts: Vec<PathBuf>,
    http: Option<Handler>,
    requests: Vec<Request>,
    slept: Vec<Duration>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            files: BTreeMap::new(),
            seeds: BTreeMap::new(),
            mounts: Vec::new(),
            unmounts: Vec::new(),
            http: None,
            requests: Vec::new(),
            slept: Vec::new(),
        }
    }

    fn file(mut self, path: &str, bytes: &[u8]) -> Fake {
        self.files.insert(PathBuf::from(path), bytes.to_vec());
        self
    }

    /// A QEMU machine: DMI says QEMU, a root disk with partitions.
    fn qemu() -> Fake {
        Fake::new()
            .file("/sys/class/dmi/id/sys_vendor", b"QEMU\n")
            .file("/sys/class/dmi/id/product_name", b"Standard PC (Q35 + ICH9, 2009)\n")
            .file("/sys/class/dmi/id/bios_vendor", b"EFI Development Kit II / OVMF\n")
            .file("/sys/class/block/vda/size", b"4194304\n")
            .file("/sys/class/block/vda1/size", b"131072\n")
            .file("/dev/vda", &[0u8; 4096])
            .file("/dev/vda1", &esp_sector())
            // q35's empty CD-ROM drive: never opened.
            .file("/sys/class/block/sr0/size", b"2097151\n")
            .file("/sys/class/net/lo/type", b"772\n")
            .file("/sys/class/net/eth0/type", b"1\n")
    }

    fn ec2(self) -> Fake {
        self.file("/sys/class/dmi/id/sys_vendor", b"Amazon EC2\n")
    }

    fn fw_cfg(self, user_data: Option<&[u8]>, meta_data: Option<&[u8]>) -> Fake {
        let mut f = self.file("/sys/firmware/qemu_fw_cfg/rev", b"3\n");
        if let Some(u) = user_data {
            f = f.file("/sys/firmware/qemu_fw_cfg/by_name/opt/org.berth/user-data/raw", u);
        }
        if let Some(m) = meta_data {
            f = f.file("/sys/firmware/qemu_fw_cfg/by_name/opt/org.berth/meta-data/raw", m);
        }
        f
    }

    /// A seed device `name` whose superblock is `superblock` at `offset`.
    fn seed(mut self, name: &str, superblock: &[u8], offset: usize, files: &[(&str, &[u8])]) -> Fake {
        let mut dev = vec![0u8; offset + superblock.len()];
        if let Some(s) = dev.get_mut(offset..) {
            s.copy_from_slice(superblock);
        }
        self = self.file(&format!("/sys/class/block/{name}/size"), b"2048\n").file(&format!("/dev/{name}"), &dev);
        self.seeds.insert(
            PathBuf::from(format!("/dev/{name}")),
            files.iter().map(|(n, b)| (n.to_string(), b.to_vec())).collect(),
        );
        self
    }

    fn serve(mut self, h: impl FnMut(&Request) -> io::Result<Response> + 'static) -> Fake {
        self.http = Some(Box::new(h));
        self
    }
}

impl System for Fake {
    fn read_file(&self, path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
        match self.files.get(path) {
            Some(b) if b.len() as u64 > limit => Err(io::Error::other("too long")),
            other => Ok(other.cloned()),
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Option<Vec<String>>> {
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|p| p.strip_prefix(path).ok())
            .filter_map(|rest| rest.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        names.dedup();
        Ok((!names.is_empty()).then_some(names))
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        assert_ne!(path, Path::new("/dev/sr0"), "an empty drive is not opened");
        let b = self.files.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let start = (offset as usize).min(b.len());
        Ok(b[start..(start + len).min(b.len())].to_vec())
    }

    fn mount_ro(&mut self, device: &Path, fstype: &str, target: &Path) -> io::Result<()> {
        let seed = self.seeds.get(device).cloned().ok_or_else(|| io::Error::other("not a seed"))?;
        self.mounts.push((device.to_path_buf(), fstype.to_string(), target.to_path_buf()));
        for (name, bytes) in seed {
            self.files.insert(target.join(name), bytes);
        }
        Ok(())
    }

    fn unmount(&mut self, target: &Path) -> io::Result<()> {
        self.files.retain(|p, _| !p.starts_with(target));
        self.unmounts.push(target.to_path_buf());
        Ok(())
    }

    fn http(&mut self, request: &Request) -> io::Result<Response> {
        self.requests.push(request.clone());
        match self.http.as_mut() {
            Some(h) => h(request),
            None => panic!("no network expected, got {request:?}"),
        }
    }

    fn sleep(&mut self, duration: Duration) {
        self.slept.push(duration);
    }
}

#[derive(Default)]
struct FakeRunner {
    ran: Vec<Vec<String>>,
}

impl Runner for FakeRunner {
    fn run(&mut self, argv: &[String], _timeout: Duration) -> io::Result<Ran> {
        self.ran.push(argv.to_vec());
        Ok(Ran { code: Some(0), output: String::new() })
    }
}

fn esp_sector() -> Vec<u8> {
    let mut s = vec![0u8; 512];
    s[11..13].copy_from_slice(&512u16.to_le_bytes());
    s[66] = 0x29;
    s[71..82].copy_from_slice(b"ESP        ");
    s[82..90].copy_from_slice(b"FAT32   ");
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// A FAT16 boot sector as mkfs.vfat writes it, with `label`.
pub(super) fn fat16(label: &str) -> Vec<u8> {
    let mut s = vec![0u8; 512];
    s[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
    s[11..13].copy_from_slice(&512u16.to_le_bytes());
    s[22..24].copy_from_slice(&8u16.to_le_bytes());
    s[38] = 0x29;
    s[43..54].copy_from_slice(format!("{label:<11}").as_bytes());
    s[54..62].copy_from_slice(b"FAT16   ");
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

fn iso(label: &str) -> Vec<u8> {
    let mut pvd = vec![b' '; 2048];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[40..40 + label.len()].copy_from_slice(label.as_bytes());
    pvd
}

fn run(mut sys: Fake) -> (Probed, Fake, FakeRunner) {
    let mut runner = FakeRunner::default();
    let probed = probe_with(&mut sys, &mut runner, &imds::Options::default());
    (probed, sys, runner)
}

fn ok(status: u16, body: &str) -> io::Result<Response> {
    Ok(Response { status, body: body.as_bytes().to_vec() })
}

/// An IMDSv2 server: token "T", user data (or 404), instance id.
fn imds_v2(user_data: Option<&'static str>) -> impl FnMut(&Request) -> io::Result<Response> {
    move |r: &Request| {
        let path = r.url.trim_start_matches("http://169.254.169.254");
        if r.method == Method::Put {
            assert_eq!(path, "/latest/api/token");
            assert!(r.headers.iter().any(|(n, _)| n == imds::TOKEN_TTL_HEADER));
            return ok(200, "T");
        }
        if !r.headers.contains(&(imds::TOKEN_HEADER.to_string(), "T".to_string())) {
            return ok(401, "");
        }
        match path {
            "/latest/user-data" => user_data.map_or_else(|| ok(404, ""), |u| ok(200, u)),
            "/latest/meta-data/instance-id" => ok(200, "i-0123456789abcdef0\n"),
            "/latest/meta-data/local-hostname" => ok(200, "ip-10-0-0-1.ec2.internal"),
            _ => ok(404, ""),
        }
    }
}

#[test]
fn no_source_is_immediate_and_quiet() {
    let (p, sys, runner) = run(Fake::qemu());
    assert_eq!(p.found, None);
    assert_eq!(
        p.tried,
        [
            "fw_cfg: no device",
            "nocloud: none (2 block devices)",
            "imds: skipped (DMI: QEMU Standard PC (Q35 + ICH9, 2009))"
        ]
    );
    assert!(sys.requests.is_empty() && sys.slept.is_empty() && sys.mounts.is_empty());
    assert!(runner.ran.is_empty(), "no dhcpcd off EC2");
    assert!(p.probe_time < Duration::from_secs(1));
}

#[test]
fn fw_cfg_user_and_meta_data() {
    let (p, _, _) = run(Fake::qemu().fw_cfg(Some(b"#cloud-config\n"), Some(b"instance-id: a\n")));
    let f = p.found.unwrap();
    assert_eq!(f.kind, Kind::FwCfg);
    assert_eq!(f.origin, "fw_cfg:opt/org.berth/user-data");
    assert_eq!(f.user_data.as_deref(), Some(&b"#cloud-config\n"[..]));
    assert_eq!(f.meta_data.as_deref(), Some(&b"instance-id: a\n"[..]));
    assert_eq!(p.tried, ["fw_cfg: opt/org.berth/user-data (user-data 14 bytes, meta-data 15 bytes)"]);
}

#[test]
fn fw_cfg_without_berth_entries_goes_on() {
    let (p, _, _) = run(Fake::qemu().fw_cfg(None, None));
    assert_eq!(p.found, None);
    assert_eq!(p.tried.first().map(String::as_str), Some("fw_cfg: none"));
}

#[test]
fn fw_cfg_meta_data_only() {
    let (p, _, _) = run(Fake::qemu().fw_cfg(None, Some(b"instance-id: b\n")));
    let f = p.found.unwrap();
    assert_eq!(f.origin, "fw_cfg:opt/org.berth/meta-data");
    assert_eq!(f.user_data, None);
}

#[test]
fn nocloud_vfat_seed_is_mounted_read_and_unmounted() {
    let files: &[(&str, &[u8])] =
        &[("user-data", b"#cloud-config\n"), ("meta-data", b"instance-id: n\n"), ("network-config", b"version: 2\n")];
    let (p, sys, _) = run(Fake::qemu().seed("vdb", &fat16("CIDATA"), 0, files));
    let f = p.found.unwrap();
    assert_eq!(f.kind, Kind::NoCloud);
    assert_eq!(f.origin, "nocloud:/dev/vdb:user-data");
    assert_eq!(f.network_config.as_deref(), Some(&b"version: 2\n"[..]));
    assert_eq!(sys.mounts, [(PathBuf::from("/dev/vdb"), "vfat".to_string(), PathBuf::from(nocloud::SEED_MOUNT))]);
    assert_eq!(sys.unmounts, [PathBuf::from(nocloud::SEED_MOUNT)]);
    assert_eq!(p.tried[1], "nocloud: /dev/vdb (CIDATA, vfat): user-data 14 bytes, meta-data 15 bytes");
}

#[test]
fn nocloud_iso_seed_lowercase_label() {
    let files: &[(&str, &[u8])] = &[("meta-data", b"instance-id: iso\n")];
    let (p, sys, _) = run(Fake::qemu().seed("vdb", &iso("cidata"), nocloud::ISO_PVD_OFFSET as usize, files));
    let f = p.found.unwrap();
    assert_eq!(f.user_data, None);
    assert_eq!(f.meta_data.as_deref(), Some(&b"instance-id: iso\n"[..]));
    assert_eq!(sys.mounts[0].1, "iso9660");
}

#[test]
fn a_volume_with_another_label_is_not_a_seed() {
    let (p, sys, _) = run(Fake::qemu().seed("vdb", &fat16("STICK"), 0, &[("user-data", b"x")]));
    assert_eq!(p.found, None);
    assert_eq!(p.tried[1], "nocloud: none (3 block devices)");
    assert!(sys.mounts.is_empty());
}

#[test]
fn an_empty_seed_goes_on_to_the_next_source() {
    let (p, sys, _) = run(Fake::qemu().seed("vdb", &fat16("CIDATA"), 0, &[]));
    assert_eq!(p.found, None);
    assert_eq!(p.tried[1], "nocloud: /dev/vdb (CIDATA, vfat): no user-data or meta-data");
    assert_eq!(sys.unmounts.len(), 1);
}

#[test]
fn fw_cfg_comes_before_nocloud() {
    let sys = Fake::qemu().fw_cfg(Some(b"a"), None).seed("vdb", &fat16("CIDATA"), 0, &[("user-data", b"b")]);
    let (p, sys, _) = run(sys);
    assert_eq!(p.found.unwrap().kind, Kind::FwCfg);
    assert!(sys.mounts.is_empty());
}

#[test]
fn imds_v2_on_ec2() {
    let (p, sys, runner) = run(Fake::qemu().ec2().serve(imds_v2(Some("#cloud-config\nhostname: x\n"))));
    let f = p.found.unwrap();
    assert_eq!(f.kind, Kind::Imds);
    assert_eq!(f.origin, "imds:http://169.254.169.254/latest/user-data");
    assert_eq!(f.user_data.as_deref(), Some(&b"#cloud-config\nhostname: x\n"[..]));
    assert_eq!(
        String::from_utf8(f.meta_data.unwrap()).unwrap(),
        "instance-id: \"i-0123456789abcdef0\"\nlocal-hostname: \"ip-10-0-0-1.ec2.internal\"\n"
    );
    assert_eq!(runner.ran, [imds::dhcp_argv(&imds::Options::default(), "eth0")]);
    assert_eq!(sys.requests.len(), 4, "token, user-data, instance-id, local-hostname");
    assert!(sys.slept.is_empty());
    assert!(
        p.tried[2].starts_with("imds: http://169.254.169.254 (DMI sys_vendor \"Amazon EC2\"; dhcp eth0: ok)"),
        "{:?}",
        p.tried
    );
}

#[test]
fn imds_without_user_data_gives_meta_data() {
    let (p, _, _) = run(Fake::qemu().ec2().serve(imds_v2(None)));
    let f = p.found.unwrap();
    assert_eq!(f.user_data, None);
    assert!(f.meta_data.is_some());
}

#[test]
fn imds_retries_are_bounded() {
    let sys = Fake::qemu().ec2().serve(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
    let (p, sys, _) = run(sys);
    assert_eq!(p.found, None);
    assert_eq!(sys.requests.len(), 3);
    assert_eq!(sys.slept, [Duration::from_millis(250), Duration::from_millis(500)]);
    assert!(
        p.tried[2].contains("error: PUT http://169.254.169.254/latest/api/token: timed out (after 3 attempts)"),
        "{:?}",
        p.tried
    );
}

#[test]
fn imds_5xx_is_retried_then_answers() {
    let mut n = 0;
    let mut inner = imds_v2(Some("u"));
    let sys = Fake::qemu().ec2().serve(move |r| {
        n += 1;
        if n == 1 {
            ok(503, "")
        } else {
            inner(r)
        }
    });
    let (p, sys, _) = run(sys);
    assert_eq!(p.found.unwrap().user_data.as_deref(), Some(&b"u"[..]));
    assert_eq!(sys.slept.len(), 1);
}

#[test]
fn imds_v1_when_tokens_are_refused() {
    let sys = Fake::qemu().ec2().serve(|r| {
        if r.method == Method::Put {
            return ok(405, "");
        }
        assert!(r.headers.is_empty(), "no token header in IMDSv1");
        match r.url.as_str() {
            "http://169.254.169.254/latest/meta-data/instance-id" => ok(200, "i-1"),
            _ => ok(404, ""),
        }
    });
    let (p, _, _) = run(sys);
    assert_eq!(p.found.unwrap().meta_data.as_deref(), Some(&b"instance-id: \"i-1\"\n"[..]));
}

#[test]
fn imds_without_instance_id_is_an_error() {
    let sys = Fake::qemu().ec2().serve(|r| if r.method == Method::Put { ok(200, "T") } else { ok(404, "") });
    let (p, _, _) = run(sys);
    assert_eq!(p.found, None);
    assert!(p.tried[2].contains("no instance id"), "{:?}", p.tried);
}

#[test]
fn the_interface_is_eth0_or_the_first_nic() {
    assert_eq!(imds::interface(&Fake::qemu()), "eth0");
    let other = Fake::new().file("/sys/class/net/lo/type", b"").file("/sys/class/net/ens3/type", b"");
    assert_eq!(imds::interface(&other), "ens3");
    assert_eq!(imds::interface(&Fake::new()), "eth0");
}
