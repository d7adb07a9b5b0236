//! What VM to start: disk, size, firmware options, how the console is shown.

use std::path::{Path, PathBuf};

use crate::host::Host;

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

/// The default NIC: user networking, virtio, no option ROM.
pub fn default_net() -> Vec<String> {
    vec!["-netdev".into(), "user,id=net0".into(), "-device".into(), "virtio-net-pci,netdev=net0,romfile=".into()]
}
