//! Whether the machine is on an EC2-like cloud, from SMBIOS/DMI (the
//! kernel's `/sys/class/dmi/id`, CONFIG_DMIID) the way cloud-init's
//! `ds-identify` decides (its `ec2_identify`): only then is the metadata
//! service at 169.254.169.254 asked, so other machines never wait for it.

use std::path::Path;

use super::system::System;

/// The kernel's DMI identification.
pub const DMI_DIR: &str = "/sys/class/dmi/id";
/// Xen's UUID (older EC2 instance types).
pub const HYPERVISOR_UUID: &str = "/sys/hypervisor/uuid";

/// The DMI fields the decision reads; empty when absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dmi {
    pub sys_vendor: String,
    pub product_name: String,
    pub product_uuid: String,
    pub product_serial: String,
    pub bios_vendor: String,
    pub chassis_asset_tag: String,
    pub hypervisor_uuid: String,
}

impl Dmi {
    /// Reads the fields (unreadable ones stay empty).
    pub fn read(sys: &dyn System) -> Dmi {
        let field = |path: &Path| {
            sys.read_file(path, 4096)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .unwrap_or_default()
        };
        let dmi = |name: &str| field(&Path::new(DMI_DIR).join(name));
        Dmi {
            sys_vendor: dmi("sys_vendor"),
            product_name: dmi("product_name"),
            product_uuid: dmi("product_uuid"),
            product_serial: dmi("product_serial"),
            bios_vendor: dmi("bios_vendor"),
            chassis_asset_tag: dmi("chassis_asset_tag"),
            hypervisor_uuid: field(Path::new(HYPERVISOR_UUID)),
        }
    }

    /// `Ok(reason)` when the machine is EC2-like (`DMI sys_vendor "Amazon
    /// EC2"`), else `Err(what it is)` for the console (`DMI: QEMU Standard
    /// PC (Q35 + ICH9, 2009)`).
    ///
    /// EC2-like, as ds-identify has it: a Xen hypervisor UUID or a product
    /// UUID starting with `ec2` (case-insensitive; the serial, when
    /// readable, must then be the same, as on AWS), sys_vendor or
    /// bios_vendor `Amazon EC2` (Nitro), a serial ending in
    /// `.brightbox.com`, product_name `Alibaba Cloud ECS`, an asset tag
    /// ending in `.zstack.io`, sys_vendor `e24cloud`.
    pub fn ec2_like(&self) -> Result<String, String> {
        let starts_ec2 = |s: &str| s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("ec2"));
        if starts_ec2(&self.hypervisor_uuid) {
            return Ok(format!("hypervisor uuid {}", self.hypervisor_uuid));
        }
        if starts_ec2(&self.product_uuid)
            && (self.product_serial.is_empty() || self.product_serial.eq_ignore_ascii_case(&self.product_uuid))
        {
            return Ok(format!("DMI product_uuid {}", self.product_uuid));
        }
        for (field, value) in [("sys_vendor", &self.sys_vendor), ("bios_vendor", &self.bios_vendor)] {
            if value == "Amazon EC2" {
                return Ok(format!("DMI {field} \"{value}\""));
            }
        }
        if self.product_serial.ends_with(".brightbox.com") {
            return Ok(format!("DMI product_serial {}", self.product_serial));
        }
        if self.product_name == "Alibaba Cloud ECS" {
            return Ok(format!("DMI product_name \"{}\"", self.product_name));
        }
        if self.chassis_asset_tag.ends_with(".zstack.io") {
            return Ok(format!("DMI chassis_asset_tag {}", self.chassis_asset_tag));
        }
        if self.sys_vendor == "e24cloud" {
            return Ok("DMI sys_vendor e24cloud".to_string());
        }
        let what = [self.sys_vendor.as_str(), self.product_name.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Err(if what.is_empty() { "no DMI".to_string() } else { format!("DMI: {what}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dmi(sys_vendor: &str, product_uuid: &str, bios_vendor: &str) -> Dmi {
        Dmi {
            sys_vendor: sys_vendor.into(),
            product_uuid: product_uuid.into(),
            bios_vendor: bios_vendor.into(),
            ..Dmi::default()
        }
    }

    #[test]
    fn qemu_is_not_ec2() {
        let d = Dmi {
            product_name: "Standard PC (Q35 + ICH9, 2009)".into(),
            ..dmi("QEMU", "6f1c...", "EFI Development Kit II / OVMF")
        };
        assert_eq!(d.ec2_like(), Err("DMI: QEMU Standard PC (Q35 + ICH9, 2009)".into()));
        assert_eq!(Dmi::default().ec2_like(), Err("no DMI".into()));
    }

    #[test]
    fn ec2_by_vendor_or_uuid() {
        assert!(dmi("Amazon EC2", "", "").ec2_like().is_ok());
        assert!(dmi("", "", "Amazon EC2").ec2_like().is_ok());
        assert!(dmi("Xen", "EC2E1916-9099-7CAF-FD21-012345ABCDEF", "").ec2_like().is_ok());
        assert!(dmi("Xen", "ec2e1916-9099-7caf-fd21-012345abcdef", "").ec2_like().is_ok());
        let mismatched = Dmi { product_serial: "other".into(), ..dmi("Xen", "ec2e1916", "") };
        assert!(mismatched.ec2_like().is_err());
        let hv = Dmi { hypervisor_uuid: "ec2abcd".into(), ..Dmi::default() };
        assert!(hv.ec2_like().is_ok());
        assert!(dmi("Amazon", "", "").ec2_like().is_err());
    }

    #[test]
    fn other_ec2_like_clouds() {
        assert!(Dmi { product_name: "Alibaba Cloud ECS".into(), ..Dmi::default() }.ec2_like().is_ok());
        assert!(Dmi { chassis_asset_tag: "123.zstack.io".into(), ..Dmi::default() }.ec2_like().is_ok());
        assert!(Dmi { product_serial: "srv-1.brightbox.com".into(), ..Dmi::default() }.ec2_like().is_ok());
        assert!(dmi("e24cloud", "", "").ec2_like().is_ok());
    }
}
