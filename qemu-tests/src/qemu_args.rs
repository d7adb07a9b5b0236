//! The QEMU command line of a [`VmConfig`]: machine and accelerator,
//! firmware or a direct kernel, the boot disk on its bus, seeds, NICs,
//! the serial console, the admin shell and QMP sockets.

use std::path::Path;

use crate::config::{DiskBus, VmConfig};
use crate::host::Host;
use crate::vm_paths::VmPaths;

impl VmConfig {
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

/// A path inside a QEMU option string: commas are doubled.
fn drive_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{default_net, DirectKernel, UserNet};

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
