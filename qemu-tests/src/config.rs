//! What VM to start: disk, size, firmware options, how the console is shown.

use std::path::{Path, PathBuf};

use crate::host::Host;
use crate::vm_paths::VmPaths;

/// A VM to start with [`crate::Vm::start`]. Builder-style:
///
/// ```no_run
/// # use berth_qemu::{VmConfig, GIB};
/// let cfg = VmConfig::new().name("data").disk_size(4 * GIB).memory_mib(2048);
/// ```
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Names the working directory (`<name>-<pid>-<n>`).
    pub name: String,
    /// The base disk image (qcow2 or raw; never written). `None`: no disk,
    /// the firmware alone (for harness self-tests).
    pub disk: Option<PathBuf>,
    /// Grow the VM's overlay to this many bytes before boot (like a user
    /// who gives the machine a bigger disk).
    pub disk_size: Option<u64>,
    /// How the disk is attached: virtio-blk (the default), NVMe or SATA.
    pub disk_bus: DiskBus,
    /// The disk's logical (and physical) sector size in bytes: 512 (the
    /// default), or 4096 for a "4Kn" disk, which needs the image built for
    /// it (`berth-4kn.qcow2`). QEMU's SATA disks take 512 only.
    pub sector_size: u32,
    pub memory_mib: u32,
    pub cpus: u32,
    /// `-accel kvm -cpu host` instead of TCG. Off by default: KVM hangs on
    /// the development machines (see QEMU.md).
    pub kvm: bool,
    /// `-no-reboot`: a guest reboot makes QEMU exit.
    pub no_reboot: bool,
    /// The consoles on this process's terminal (`berth-image run`): the
    /// serial console's output, the admin shell (which has the keyboard
    /// first) and the QEMU monitor share it; Ctrl-a c moves the keyboard to
    /// the next, Ctrl-a x quits QEMU, Ctrl-C goes to the guest. All of it is
    /// logged to `console.log` (so [`crate::Vm::wait_ready`] still works);
    /// [`crate::Vm::sh`] does not (the shell is the terminal's).
    pub serial_to_stdio: bool,
    /// Use this directory instead of a fresh one under [`crate::vms_dir`].
    /// It is kept afterwards, and an overlay and EFI variables already in
    /// it are used again: a persistent VM.
    pub work_dir: Option<PathBuf>,
    /// The network arguments. Default: user networking on a virtio NIC
    /// without an option ROM (no iPXE: OVMF boots the disk).
    pub net: Vec<String>,
    /// An i6300esb watchdog device (default on) whose expiry resets the
    /// machine (`-action watchdog=reset`, QEMU's default made explicit):
    /// PID1 arms and feeds it.
    pub watchdog: bool,
    /// A second disk, raw and read-only, on virtio-blk (the guest's next
    /// `/dev/vdX`): a "stick" carrying files ([`crate::fat_image`]).
    pub stick: Option<PathBuf>,
    /// A NoCloud seed volume ([`crate::nocloud_seed`]), raw and read-only,
    /// on virtio-blk after the stick (the guest's next `/dev/vdX`).
    pub seed: Option<PathBuf>,
    /// The seed on a SATA CD-ROM drive (the guest's `/dev/sr0`) instead of
    /// virtio-blk: how ISO seeds usually come (`-cdrom`, libvirt, Proxmox).
    pub seed_cdrom: bool,
    /// QEMU firmware configuration entries, `(name, file)`:
    /// `-fw_cfg name=NAME,file=FILE` (the guest reads them under
    /// `/sys/firmware/qemu_fw_cfg/by_name/NAME/raw`).
    pub fw_cfg: Vec<(String, PathBuf)>,
    /// `-smbios` arguments, e.g. `type=1,manufacturer=Amazon EC2` (the
    /// guest's `/sys/class/dmi/id/sys_vendor`).
    pub smbios: Vec<String>,
    /// What [`VmConfig::ssh_port`] and [`VmConfig::imds_port`] build the
    /// network arguments from.
    pub user_net: UserNet,
    /// Secure Boot on and enforced: OVMF's Secure Boot build
    /// ([`crate::OVMF_CODE_SECBOOT`], with SMM, which q35 then needs) and
    /// a copy of the variable store with Debian's snakeoil keys enrolled
    /// ([`crate::OVMF_VARS_SNAKEOIL`]) instead of the empty one. Only
    /// binaries signed with the snakeoil key start.
    pub secure_boot: bool,
    /// Boot this kernel directly (`-kernel`, `-initrd`, `-append`) instead
    /// of the firmware booting the disk: no OVMF (QEMU's default SeaBIOS
    /// loads the kernel), no EFI variables. For a system that is not Berth,
    /// e.g. the systemd peer of `berth-image bench --peer`, whose root is
    /// the whole disk.
    pub direct_kernel: Option<DirectKernel>,
    /// More QEMU arguments, appended last.
    pub extra_args: Vec<String>,
}

/// A kernel QEMU loads itself ([`VmConfig::direct_kernel`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectKernel {
    /// The kernel image (bzImage, Debian's `vmlinuz-*`).
    pub kernel: PathBuf,
    /// The initramfs, if the kernel needs one.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub append: String,
}

/// The fw_cfg entry names Berth's probe reads.
pub const FW_CFG_USER_DATA: &str = "opt/org.berth/user-data";
pub const FW_CFG_META_DATA: &str = "opt/org.berth/meta-data";
/// SMBIOS type 1 of an EC2-like machine: its DMI sys_vendor is what
/// cloud-init's ds-identify (and Berth's probe) take for EC2.
pub const EC2_SMBIOS: &str = "type=1,manufacturer=Amazon EC2,product=berth-test";

/// QEMU user networking on a virtio NIC (`net0`, no option ROM), with
/// optional host forwards. Only loopback on the host is ever reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserNet {
    /// `hostfwd=tcp:127.0.0.1:PORT-:22`: the guest's SSH on the host's port.
    pub ssh_port: Option<u16>,
    /// The NIC's QEMU device model; `None` is `virtio-net-pci`. Others a
    /// cloud or server has: `vmxnet3` (VMware), `e1000e`, `e1000` (Intel).
    pub model: Option<String>,
    /// The EC2-style metadata service: the guest network becomes
    /// 169.254.0.0/16 (QEMU refuses a guest forward to 169.254.169.254 on
    /// its default 10.0.2.0/24), DHCP gives the guest 169.254.0.15, and
    /// the guest's connections to 169.254.169.254:80 are each piped by
    /// `nc` (netcat-openbsd) to the host's 127.0.0.1:PORT
    /// ([`crate::ImdsServer`]). The host (slirp's gateway) is 169.254.0.2.
    pub imds_port: Option<u16>,
}

impl UserNet {
    /// The `-netdev` and `-device` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut netdev = "user,id=net0".to_string();
        if let Some(port) = self.imds_port {
            netdev.push_str(&format!(
                ",net=169.254.0.0/16,host=169.254.0.2,dhcpstart=169.254.0.15,\
                 guestfwd=tcp:169.254.169.254:80-cmd:nc 127.0.0.1 {port}"
            ));
        }
        if let Some(port) = self.ssh_port {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{port}-:22"));
        }
        let model = self.model.as_deref().unwrap_or("virtio-net-pci");
        vec!["-netdev".into(), netdev, "-device".into(), format!("{model},netdev=net0,romfile=")]
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig::new()
    }
}

impl VmConfig {
    /// The defaults: [`crate::settings::default_image`], 1024 MiB, 1 CPU, TCG.
    pub fn new() -> VmConfig {
        VmConfig {
            name: "vm".into(),
            disk: Some(crate::settings::default_image()),
            disk_size: None,
            disk_bus: DiskBus::Virtio,
            sector_size: 512,
            memory_mib: 1024,
            cpus: 1,
            kvm: false,
            no_reboot: false,
            serial_to_stdio: false,
            work_dir: None,
            net: default_net(),
            watchdog: true,
            stick: None,
            seed: None,
            seed_cdrom: false,
            fw_cfg: Vec::new(),
            smbios: Vec::new(),
            user_net: UserNet::default(),
            secure_boot: false,
            direct_kernel: None,
            extra_args: Vec::new(),
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    pub fn disk(mut self, base: impl AsRef<Path>) -> Self {
        self.disk = Some(base.as_ref().to_path_buf());
        self
    }

    /// No disk at all: the VM runs the firmware only.
    pub fn no_disk(mut self) -> Self {
        self.disk = None;
        self
    }

    pub fn disk_size(mut self, bytes: u64) -> Self {
        self.disk_size = Some(bytes);
        self
    }

    pub fn disk_bus(mut self, bus: DiskBus) -> Self {
        self.disk_bus = bus;
        self
    }

    /// The disk's logical and physical sector size in bytes (512 or 4096).
    pub fn sector_size(mut self, bytes: u32) -> Self {
        self.sector_size = bytes;
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    pub fn kvm(mut self, on: bool) -> Self {
        self.kvm = on;
        self
    }

    pub fn no_reboot(mut self, on: bool) -> Self {
        self.no_reboot = on;
        self
    }

    pub fn serial_to_stdio(mut self, on: bool) -> Self {
        self.serial_to_stdio = on;
        self
    }

    pub fn work_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.work_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Replaces the network arguments (empty: no NIC at all).
    pub fn net(mut self, args: Vec<String>) -> Self {
        self.net = args;
        self
    }

    pub fn watchdog(mut self, on: bool) -> Self {
        self.watchdog = on;
        self
    }

    /// Secure Boot enforced with the snakeoil keys ([`VmConfig::secure_boot`]).
    pub fn secure_boot(mut self, on: bool) -> Self {
        self.secure_boot = on;
        self
    }

    /// Boots `kernel` directly instead of through OVMF (see [`VmConfig::direct_kernel`]).
    pub fn direct_kernel(mut self, kernel: DirectKernel) -> Self {
        self.direct_kernel = Some(kernel);
        self
    }

    /// Whether the VM boots through OVMF (and so needs its own copy of the
    /// EFI variables): every VM but one with a [`VmConfig::direct_kernel`].
    pub(crate) fn uses_ovmf(&self) -> bool {
        self.direct_kernel.is_none()
    }

    /// The firmware code and the variable store the VM's copy starts from.
    pub(crate) fn firmware<'a>(&self, host: &'a Host) -> (&'a Path, &'a Path) {
        if self.secure_boot {
            (Path::new(crate::host::OVMF_CODE_SECBOOT), Path::new(crate::host::OVMF_VARS_SNAKEOIL))
        } else {
            (&host.ovmf_code, &host.ovmf_vars)
        }
    }

    /// Attaches `image` as a second, read-only virtio disk (see [`VmConfig::stick`]).
    pub fn stick(mut self, image: impl AsRef<Path>) -> Self {
        self.stick = Some(image.as_ref().to_path_buf());
        self
    }

    /// Attaches a NoCloud seed volume (see [`VmConfig::seed`]).
    pub fn seed(mut self, image: impl AsRef<Path>) -> Self {
        self.seed = Some(image.as_ref().to_path_buf());
        self
    }

    /// Attaches an ISO seed on a CD-ROM drive (see [`VmConfig::seed_cdrom`]).
    pub fn seed_cdrom(mut self, iso: impl AsRef<Path>) -> Self {
        self.seed = Some(iso.as_ref().to_path_buf());
        self.seed_cdrom = true;
        self
    }

    /// Adds a fw_cfg entry `name` with the bytes of `file`.
    pub fn fw_cfg(mut self, name: &str, file: impl AsRef<Path>) -> Self {
        self.fw_cfg.push((name.to_string(), file.as_ref().to_path_buf()));
        self
    }

    /// User data over fw_cfg ([`FW_CFG_USER_DATA`]).
    pub fn user_data(self, file: impl AsRef<Path>) -> Self {
        self.fw_cfg(FW_CFG_USER_DATA, file)
    }

    /// Meta-data over fw_cfg ([`FW_CFG_META_DATA`]).
    pub fn meta_data(self, file: impl AsRef<Path>) -> Self {
        self.fw_cfg(FW_CFG_META_DATA, file)
    }

    /// Adds one `-smbios` argument (see [`VmConfig::smbios`]).
    pub fn smbios(mut self, spec: &str) -> Self {
        self.smbios.push(spec.to_string());
        self
    }

    /// An EC2-like machine as DMI shows it ([`EC2_SMBIOS`]).
    pub fn ec2(self) -> Self {
        self.smbios(EC2_SMBIOS)
    }

    /// Forwards the host's 127.0.0.1:`port` to the guest's SSH port (user
    /// networking; replaces the network arguments, see [`UserNet`]).
    pub fn ssh_port(mut self, port: u16) -> Self {
        self.user_net.ssh_port = Some(port);
        self.net = self.user_net.args();
        self
    }

    /// The metadata-service network, served by the host's 127.0.0.1:`port`
    /// (replaces the network arguments, see [`UserNet::imds_port`]).
    pub fn imds_port(mut self, port: u16) -> Self {
        self.user_net.imds_port = Some(port);
        self.net = self.user_net.args();
        self
    }

    /// The user network's NIC as QEMU device `model` (`vmxnet3`, `e1000e`;
    /// replaces the network arguments, see [`UserNet::model`]).
    pub fn nic_model(mut self, model: &str) -> Self {
        self.user_net.model = Some(model.to_string());
        self.net = self.user_net.args();
        self
    }

    /// Appends one QEMU argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// A second NIC (virtio, the guest's `eth1`) on a virtual L2 segment
    /// that every VM given the same `segment` port shares: QEMU's socket
    /// netdev, multicast to 230.0.0.1:`segment` on the host's loopback only
    /// (`localaddr=127.0.0.1`), so traffic never leaves the host. `index`
    /// makes the MAC distinct (`52:54:00:b0:00:<index>`). Use documentation
    /// addresses (192.0.2.0/24) on it.
    pub fn segment_nic(self, segment: u16, index: u8) -> Self {
        self.arg("-netdev")
            .arg(format!("socket,id=seg0,mcast=230.0.0.1:{segment},localaddr=127.0.0.1"))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=seg0,mac=52:54:00:b0:00:{index:02x},romfile="))
    }

    /// The full QEMU command line (without the program) for this VM.
    pub(crate) fn qemu_args(&self, host: &Host, paths: &VmPaths, with_disk: bool) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        let mut a: Vec<String> = Vec::new();
        let push = |a: &mut Vec<String>, items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        if self.secure_boot {
            // The Secure Boot build keeps its variables safe from the OS
            // in SMM: the machine needs SMM and a secure flash.
            push(&mut a, &["-name", &self.name, "-M", "q35,smm=on"]);
            push(&mut a, &["-global", "driver=cfi.pflash01,property=secure,value=on"]);
        } else {
            push(&mut a, &["-name", &self.name, "-M", "q35"]);
        }
        if self.kvm {
            push(&mut a, &["-accel", "kvm", "-cpu", "host"]);
        } else {
            // systemd-boot 252 records its timestamps (LoaderTimeInitUSec,
            // LoaderTimeExecUSec) only when CPUID does not say "hypervisor",
            // since a virtualized TSC need not count from reset. Under TCG
            // the TSC is QEMU's own and does, so the emulated CPU leaves the
            // bit out and the ready line gets its firmware+loader part.
            push(&mut a, &["-accel", "tcg", "-cpu", "qemu64,-hypervisor"]);
        }
        push(&mut a, &["-m", &self.memory_mib.to_string(), "-smp", &self.cpus.to_string()]);
        if let Some(k) = &self.direct_kernel {
            // QEMU's own loader takes paths and the command line as they
            // are: no option string, so no comma doubling.
            push(&mut a, &["-kernel", &p(&k.kernel)]);
            if let Some(initrd) = &k.initrd {
                push(&mut a, &["-initrd", &p(initrd)]);
            }
            push(&mut a, &["-append", &k.append]);
        } else {
            push(
                &mut a,
                &[
                    "-drive",
                    &format!("if=pflash,format=raw,readonly=on,file={}", drive_path(self.firmware(host).0)),
                    "-drive",
                    &format!("if=pflash,format=raw,file={}", drive_path(&paths.vars)),
                ],
            );
        }
        if with_disk {
            push(
                &mut a,
                &[
                    "-drive",
                    &format!("if=none,id=disk0,format=qcow2,file={}", drive_path(&paths.overlay)),
                    "-device",
                    &self.disk_device(),
                ],
            );
            let controller = match self.disk_bus {
                DiskBus::Usb => Some("qemu-xhci,id=xhci"),
                DiskBus::VirtioScsi => Some("virtio-scsi-pci,id=scsi0"),
                _ => None,
            };
            if let Some(controller) = controller {
                // QEMU resolves the disk's bus= when the disk is realized:
                // the controller must exist by then, so it goes right
                // before the -drive (this -device is inserted there).
                let drive = a.len() - 4;
                a.splice(drive..drive, ["-device".to_string(), controller.to_string()]);
            }
        }
        if let Some(stick) = &self.stick {
            push(
                &mut a,
                &[
                    "-drive",
                    &format!("if=none,id=stick,format=raw,readonly=on,file={}", drive_path(stick)),
                    "-device",
                    "virtio-blk-pci,drive=stick",
                ],
            );
        }
        if let (Some(seed), true) = (&self.seed, self.seed_cdrom) {
            // q35's AHCI ports are ide.0 to ide.5; a SATA boot disk takes ide.0.
            push(
                &mut a,
                &[
                    "-drive",
                    &format!("if=none,id=seed,format=raw,readonly=on,media=cdrom,file={}", drive_path(seed)),
                    "-device",
                    "ide-cd,drive=seed,bus=ide.2",
                ],
            );
        } else if let Some(seed) = &self.seed {
            push(
                &mut a,
                &[
                    "-drive",
                    &format!("if=none,id=seed,format=raw,readonly=on,file={}", drive_path(seed)),
                    "-device",
                    "virtio-blk-pci,drive=seed",
                ],
            );
        }
        for (name, file) in &self.fw_cfg {
            push(&mut a, &["-fw_cfg", &format!("name={},file={}", name.replace(',', ",,"), drive_path(file))]);
        }
        for spec in &self.smbios {
            push(&mut a, &["-smbios", spec]);
        }
        if self.net.is_empty() {
            push(&mut a, &["-nic", "none"]);
        } else {
            a.extend(self.net.iter().cloned());
        }
        push(
            &mut a,
            &[
                "-qmp",
                &format!("unix:{},server=on,wait=off", p(&paths.qmp_sock)),
                "-display",
                "none",
                "-device",
                "virtio-serial-pci",
            ],
        );
        if self.serial_to_stdio {
            // One multiplexer on the terminal for the serial console, the
            // admin shell (which has the keyboard first) and the monitor;
            // Ctrl-a c moves the keyboard on. All their output is logged.
            push(
                &mut a,
                &[
                    "-chardev",
                    &format!("stdio,id=ser,mux=on,signal=off,logfile={},logappend=on", drive_path(&paths.console)),
                    "-serial",
                    "chardev:ser",
                    "-device",
                    "virtconsole,chardev=ser",
                    "-mon",
                    "chardev=ser,mode=readline",
                ],
            );
        } else {
            push(
                &mut a,
                &[
                    "-chardev",
                    &format!("file,id=ser,path={},append=on", drive_path(&paths.console)),
                    "-serial",
                    "chardev:ser",
                    "-chardev",
                    &format!("socket,id=admin,path={},server=on,wait=off", drive_path(&paths.admin_sock)),
                    "-device",
                    "virtconsole,chardev=admin",
                    "-monitor",
                    "none",
                ],
            );
        }
        // An entropy source, as clouds give one: without it the first boot
        // waits seconds for the kernel's RNG (mke2fs asks for random UUIDs).
        push(&mut a, &["-device", "virtio-rng-pci"]);
        if self.watchdog {
            push(&mut a, &["-device", "i6300esb", "-action", "watchdog=reset"]);
        }
        if self.no_reboot {
            push(&mut a, &["-no-reboot"]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// How the boot disk is attached to the VM. Each boots (the firmware has
/// a driver for each, the kernel too); the guest names the disk
/// differently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskBus {
    /// `virtio-blk-pci`: the guest sees `/dev/vda`.
    #[default]
    Virtio,
    /// An NVMe controller with one namespace: `/dev/nvme0n1`.
    Nvme,
    /// A SATA disk on the q35 machine's AHCI controller: `/dev/sda`.
    Sata,
    /// A USB stick (`usb-storage`) on an xHCI controller (`qemu-xhci`):
    /// `/dev/sda`, a SCSI disk behind USB mass storage.
    Usb,
    /// A SCSI disk on a virtio-scsi controller (GCE's and Proxmox's
    /// default): `/dev/sda`. (VMware's PVSCSI is no boot disk here:
    /// Debian's OVMF has no driver for it.)
    VirtioScsi,
}

impl DiskBus {
    /// The guest kernel's name of the whole disk.
    pub fn guest_disk(self) -> &'static str {
        match self {
            DiskBus::Virtio => "vda",
            DiskBus::Nvme => "nvme0n1",
            DiskBus::Sata | DiskBus::Usb | DiskBus::VirtioScsi => "sda",
        }
    }

    /// The guest kernel's name of partition `number` of the disk
    /// (`vda4`, `nvme0n1p4`, `sda4`).
    pub fn guest_partition(self, number: usize) -> String {
        match self {
            DiskBus::Nvme => format!("{}p{number}", self.guest_disk()),
            _ => format!("{}{number}", self.guest_disk()),
        }
    }
}

impl std::str::FromStr for DiskBus {
    type Err = String;

    /// `virtio`, `nvme`, `sata`, `usb` or `virtio-scsi`.
    fn from_str(s: &str) -> Result<DiskBus, String> {
        match s {
            "virtio" => Ok(DiskBus::Virtio),
            "nvme" => Ok(DiskBus::Nvme),
            "sata" => Ok(DiskBus::Sata),
            "usb" => Ok(DiskBus::Usb),
            "virtio-scsi" => Ok(DiskBus::VirtioScsi),
            _ => Err(format!("unknown disk bus {s:?} (virtio, nvme, sata, usb or virtio-scsi)")),
        }
    }
}

impl VmConfig {
    /// The `-device` of the boot disk (drive `disk0`), first in boot order.
    fn disk_device(&self) -> String {
        let mut d = match self.disk_bus {
            DiskBus::Virtio => "virtio-blk-pci,drive=disk0".to_string(),
            DiskBus::Nvme => "nvme,drive=disk0,serial=berth0".to_string(),
            // q35's built-in AHCI controller has six ports, ide.0 to ide.5.
            DiskBus::Sata => "ide-hd,drive=disk0,bus=ide.0".to_string(),
            // The controller goes in front of the disk (see qemu_args).
            DiskBus::Usb => "usb-storage,drive=disk0,bus=xhci.0".to_string(),
            DiskBus::VirtioScsi => "scsi-hd,drive=disk0,bus=scsi0.0".to_string(),
        };
        if self.sector_size != 512 {
            d.push_str(&format!(",logical_block_size={0},physical_block_size={0}", self.sector_size));
        }
        d.push_str(",bootindex=1");
        d
    }
}

/// The default NIC: user networking, virtio, no option ROM.
pub fn default_net() -> Vec<String> {
    vec!["-netdev".into(), "user,id=net0".into(), "-device".into(), "virtio-net-pci,netdev=net0,romfile=".into()]
}

/// A path inside a QEMU option string: commas are doubled.
fn drive_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            qemu_img: "/usr/bin/qemu-img".into(),
            ovmf_code: crate::host::OVMF_CODE.into(),
            ovmf_vars: crate::host::OVMF_VARS.into(),
        }
    }

    fn joined(cfg: &VmConfig, disk: bool) -> String {
        let paths = VmPaths::in_dir(Path::new("/vms/a,b"));
        cfg.qemu_args(&host(), &paths, disk).join(" ")
    }

    #[test]
    fn default_command_line_is_tcg_q35_ovmf_overlay_and_sockets() {
        let a = joined(&VmConfig::new(), true);
        for want in [
            "-M q35",
            "-accel tcg -cpu qemu64,-hypervisor",
            "-m 1024",
            "-smp 1",
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            "if=pflash,format=raw,file=/vms/a,,b/vars.fd",
            "format=qcow2,file=/vms/a,,b/overlay.qcow2",
            "virtio-blk-pci,drive=disk0,bootindex=1",
            "virtio-net-pci,netdev=net0,romfile=",
            "socket,id=admin,path=/vms/a,,b/admin.sock,server=on,wait=off",
            "virtconsole,chardev=admin",
            "-qmp unix:/vms/a,b/qmp.sock,server=on,wait=off",
            "file,id=ser,path=/vms/a,,b/console.log,append=on",
            "-serial chardev:ser",
            "-device i6300esb -action watchdog=reset",
            "-device virtio-rng-pci",
        ] {
            assert!(a.contains(want), "{want:?} missing from {a}");
        }
        assert!(!a.contains("-no-reboot"));
        assert!(!a.contains("kvm"));
    }

    #[test]
    fn a_direct_kernel_replaces_the_firmware_and_keeps_the_rest() {
        let k = DirectKernel {
            kernel: "/c/vmlinuz".into(),
            initrd: Some("/c/initrd.img".into()),
            append: "root=/dev/vda rw console=ttyS0,115200".into(),
        };
        let cfg = VmConfig::new().direct_kernel(k).cpus(2).net(vec![]);
        assert!(!cfg.uses_ovmf() && VmConfig::new().uses_ovmf());
        let a = cfg.qemu_args(&host(), &VmPaths::in_dir(Path::new("/vms/x")), true);
        let after = |flag: &str| a.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone());
        assert_eq!(after("-kernel").as_deref(), Some("/c/vmlinuz"));
        assert_eq!(after("-initrd").as_deref(), Some("/c/initrd.img"));
        assert_eq!(after("-append").as_deref(), Some("root=/dev/vda rw console=ttyS0,115200"));
        let j = a.join(" ");
        assert!(!j.contains("pflash") && !j.contains("vars.fd"), "{j}");
        // The same machine as Berth's otherwise: TCG CPU, disk, consoles, devices.
        for want in [
            "-M q35",
            "-accel tcg -cpu qemu64,-hypervisor",
            "-smp 2",
            "format=qcow2,file=/vms/x/overlay.qcow2",
            "virtio-blk-pci,drive=disk0,bootindex=1",
            "-nic none",
            "virtconsole,chardev=admin",
            "-device virtio-rng-pci",
        ] {
            assert!(j.contains(want), "{want:?} missing from {j}");
        }
    }

    #[test]
    fn secure_boot_takes_the_secboot_firmware_and_smm() {
        let a = joined(&VmConfig::new().secure_boot(true), true);
        for want in [
            "-M q35,smm=on",
            "-global driver=cfi.pflash01,property=secure,value=on",
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        ] {
            assert!(a.contains(want), "{want:?} missing from {a}");
        }
        assert_eq!(VmConfig::new().secure_boot(true).firmware(&host()).1, Path::new(crate::OVMF_VARS_SNAKEOIL));
        assert!(!joined(&VmConfig::new(), true).contains("smm"));
    }

    #[test]
    fn options_change_the_command_line() {
        let cfg = VmConfig::new()
            .kvm(true)
            .no_reboot(true)
            .memory_mib(2048)
            .cpus(2)
            .serial_to_stdio(true)
            .net(vec![])
            .watchdog(false)
            .arg("-S");
        let a = joined(&cfg, false);
        assert!(a.contains("-accel kvm -cpu host"), "{a}");
        assert!(a.contains("-no-reboot"), "{a}");
        assert!(a.contains("-m 2048 -smp 2"), "{a}");
        assert!(a.contains("stdio,id=ser,mux=on,signal=off,logfile="), "{a}");
        assert!(a.contains("virtconsole,chardev=ser"), "{a}");
        assert!(!a.contains("admin.sock"), "{a}");
        assert!(a.contains("-nic none"), "{a}");
        assert!(!a.contains("overlay.qcow2"), "{a}");
        assert!(!a.contains("i6300esb") && !a.contains("watchdog="), "{a}");
        assert!(a.ends_with("-S"), "{a}");
    }

    #[test]
    fn user_data_seed_smbios_and_forwards() {
        let cfg =
            VmConfig::new().user_data("/u,d").meta_data("/m").seed("/seed.img").ec2().ssh_port(2222).imds_port(8080);
        let a = cfg.qemu_args(&host(), &VmPaths::in_dir(Path::new("/vms/x")), true);
        let after =
            |flag: &str| -> Vec<String> { a.windows(2).filter(|w| w[0] == flag).map(|w| w[1].clone()).collect() };
        assert_eq!(
            after("-fw_cfg"),
            ["name=opt/org.berth/user-data,file=/u,,d", "name=opt/org.berth/meta-data,file=/m"]
        );
        assert_eq!(after("-smbios"), ["type=1,manufacturer=Amazon EC2,product=berth-test"]);
        assert!(after("-drive").contains(&"if=none,id=seed,format=raw,readonly=on,file=/seed.img".to_string()));
        assert!(after("-device").contains(&"virtio-blk-pci,drive=seed".to_string()));
        assert_eq!(
            after("-netdev"),
            ["user,id=net0,net=169.254.0.0/16,host=169.254.0.2,dhcpstart=169.254.0.15,\
              guestfwd=tcp:169.254.169.254:80-cmd:nc 127.0.0.1 8080,hostfwd=tcp:127.0.0.1:2222-:22"]
        );
        assert_eq!(after("-device").iter().filter(|d| d.starts_with("virtio-net-pci")).count(), 1);
        // The boot disk stays first: the guest's vda.
        let disk = a.iter().position(|x| x.contains("id=disk0")).unwrap();
        let seed = a.iter().position(|x| x.contains("id=seed")).unwrap();
        assert!(disk < seed);
        // Without them, nothing of it.
        let plain = joined(&VmConfig::new(), true);
        assert!(!plain.contains("fw_cfg") && !plain.contains("smbios") && !plain.contains("id=seed"), "{plain}");
        assert_eq!(UserNet::default().args(), default_net());
        let cd = joined(&VmConfig::new().seed_cdrom("/s.iso"), true);
        assert!(
            cd.contains(
                "if=none,id=seed,format=raw,readonly=on,media=cdrom,file=/s.iso -device ide-cd,drive=seed,bus=ide.2"
            ),
            "{cd}"
        );
        assert!(!cd.contains("virtio-blk-pci,drive=seed"), "{cd}");
    }

    #[test]
    fn the_disk_bus_and_sector_size_pick_the_device() {
        let dev = |cfg: VmConfig| {
            let a = cfg.qemu_args(&host(), &VmPaths::in_dir(Path::new("/vms/x")), true);
            let i = a.iter().position(|x| x.starts_with("if=none,id=disk0")).unwrap();
            assert_eq!(a[i + 1], "-device");
            a[i + 2].clone()
        };
        assert_eq!(dev(VmConfig::new()), "virtio-blk-pci,drive=disk0,bootindex=1");
        assert_eq!(
            dev(VmConfig::new().sector_size(4096)),
            "virtio-blk-pci,drive=disk0,logical_block_size=4096,physical_block_size=4096,bootindex=1"
        );
        assert_eq!(dev(VmConfig::new().disk_bus(DiskBus::Nvme)), "nvme,drive=disk0,serial=berth0,bootindex=1");
        assert_eq!(
            dev(VmConfig::new().disk_bus(DiskBus::Nvme).sector_size(4096)),
            "nvme,drive=disk0,serial=berth0,logical_block_size=4096,physical_block_size=4096,bootindex=1"
        );
        assert_eq!(dev(VmConfig::new().disk_bus(DiskBus::Sata)), "ide-hd,drive=disk0,bus=ide.0,bootindex=1");
        assert_eq!("nvme".parse::<DiskBus>(), Ok(DiskBus::Nvme));
        assert!("floppy".parse::<DiskBus>().is_err());
        assert_eq!(dev(VmConfig::new().disk_bus(DiskBus::Usb)), "usb-storage,drive=disk0,bus=xhci.0,bootindex=1");
        let usb = joined(&VmConfig::new().disk_bus(DiskBus::Usb), true);
        assert!(usb.contains("-device qemu-xhci,id=xhci -drive if=none,id=disk0"), "{usb}");
        assert_eq!(("usb".parse::<DiskBus>(), DiskBus::Usb.guest_partition(4)), (Ok(DiskBus::Usb), "sda4".into()));
        assert_eq!(
            (DiskBus::Nvme.guest_partition(2), DiskBus::Sata.guest_partition(4)),
            ("nvme0n1p2".into(), "sda4".into())
        );
    }
}
