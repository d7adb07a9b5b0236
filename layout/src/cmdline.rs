//! The kernel command line of a slot, and what stage 0 reads from it.
//!
//! The verity root is described in dm-init's syntax (`dm-mod.create=`,
//! `dm-mod.waitfor=`, Documentation/admin-guide/device-mapper/dm-init.rst),
//! with `root=`, `rootfstype=` and `ro` as the kernel reads them. The
//! kernel itself does not act on them: it is built without CONFIG_DM_INIT,
//! and Berth's stage 0 (berth-init as the UKI's initramfs) parses them with
//! [`params`] and [`parse_dm_create`] and sets the root up, without the
//! kernel's wait for every device probe first.

use crate::disk::Slot;
use crate::guid::Guid;

/// The dm-verity geometry of one root image, as `image-build/src/verity.rs` builds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verity {
    /// Number of 4 KiB data blocks (the EROFS image, padded).
    pub data_blocks: u64,
    /// Block of the first hash block: one past the data and the verity superblock.
    pub hash_start_block: u64,
    /// The digest of the tree's top block, lowercase hex (64 digits).
    pub root_hash: String,
    /// Put before every block's bytes when hashing, lowercase hex.
    pub salt: String,
}

/// Data and hash block size, bytes.
pub const VERITY_BLOCK: u64 = 4096;

/// The hash of the root's dm-verity tree, as the kernel's crypto API names
/// it (crypto/blake2b_generic.c: unkeyed BLAKE2b, RFC 7693, with a 32-byte
/// digest). Why not SHA-256: docs/verity.md.
pub const VERITY_HASH: &str = "blake2b-256";

/// The full command line for booting `slot` from the partition `partuuid`.
pub fn kernel_cmdline(slot: Slot, partuuid: Guid, v: &Verity) -> String {
    let sectors = v.data_blocks * (VERITY_BLOCK / 512);
    let dm = format!(
        "root,,,ro,0 {sectors} verity 1 PARTUUID={partuuid} PARTUUID={partuuid} {VERITY_BLOCK} {VERITY_BLOCK} {} {} {VERITY_HASH} {} {} 1 restart_on_corruption",
        v.data_blocks, v.hash_start_block, v.root_hash, v.salt
    );
    format!(
        "console=ttyS0,115200 loglevel=4 dm-mod.create=\"{dm}\" dm-mod.waitfor=PARTUUID={partuuid} root=/dev/dm-0 rootfstype=erofs ro rootwait panic=10 berth.slot={}",
        slot.name()
    )
}

/// The slot named on a command line (`berth.slot=a`), as PID1 reads /proc/cmdline.
pub fn slot_of(cmdline: &str) -> Option<Slot> {
    cmdline.split_whitespace().find_map(|w| match w {
        "berth.slot=a" => Some(Slot::A),
        "berth.slot=b" => Some(Slot::B),
        _ => None,
    })
}

/// The kernel's parameters in order, split as the kernel splits them
/// (`next_arg` in lib/cmdline.c): at white space outside double quotes;
/// `key=value` at the first `=`; quotes around the value, or around the
/// whole parameter, are removed. A parameter without `=` has no value.
pub fn params(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_quote = false;
    let mut any = false;
    for c in cmdline.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_quote = !in_quote;
            word.push(c);
            any = true;
        } else if c.is_whitespace() && !in_quote {
            if any {
                out.push(split_param(&word));
            }
            word.clear();
            any = false;
        } else {
            word.push(c);
            any = true;
        }
    }
    out
}

fn unquote(s: &str) -> String {
    let s = s.strip_prefix('"').unwrap_or(s);
    s.strip_suffix('"').unwrap_or(s).to_string()
}

fn split_param(word: &str) -> (String, Option<String>) {
    let word = if word.starts_with('"') { unquote(word) } else { word.to_string() };
    match word.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(unquote(v))),
        None => (word, None),
    }
}

/// The value of the last `key=` on the command line (the kernel's rule for
/// a parameter given twice), or `None` when there is none.
pub fn param(cmdline: &str, key: &str) -> Option<String> {
    params(cmdline).into_iter().rev().find(|(k, v)| k == key && v.is_some()).and_then(|(_, v)| v)
}

/// Whether the bare flag `key` (`ro`, `rw`) is on the command line.
pub fn has_flag(cmdline: &str, key: &str) -> bool {
    params(cmdline).iter().any(|(k, v)| k == key && v.is_none())
}

/// dm-init's limits (include/uapi/linux/dm-ioctl.h, drivers/md/dm-init.c).
pub const DM_NAME_LEN: usize = 128;
pub const DM_UUID_LEN: usize = 129;
pub const DM_MAX_TYPE_NAME: usize = 16;
const DM_MAX_DEVICES: usize = 256;
const DM_MAX_TARGETS: usize = 256;

/// One mapped device of `dm-mod.create=`:
/// `<name>,<uuid>,<minor>,<flags>,<table>[,<table>...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmDevice {
    /// The device's name (`/dev/mapper/<name>` where udev runs), at most 127 bytes.
    pub name: String,
    /// Its UUID, possibly empty, at most 128 bytes.
    pub uuid: String,
    /// A fixed minor number, or `None` for the next free one.
    pub minor: Option<u32>,
    /// `ro` (true) or `rw`.
    pub read_only: bool,
    /// The table, one line per target, in order.
    pub targets: Vec<DmTarget>,
}

/// One table line: `<start_sector> <num_sectors> <target_type> <target_args>`,
/// sectors of 512 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmTarget {
    pub start: u64,
    pub length: u64,
    /// `verity`, `linear`...: at most 15 bytes.
    pub target_type: String,
    /// The target's own arguments, as `dmsetup table` shows them.
    pub args: String,
}

/// Why a `dm-mod.create=` value was refused: which device (1-based) and
/// which of its fields.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("dm-mod.create: device {device}: {field}: {message}")]
pub struct DmCreateError {
    pub device: usize,
    pub field: &'static str,
    pub message: String,
}

/// Parses a `dm-mod.create=` value (the quotes already removed) the way
/// dm-init does: devices separated by `;`, a device's first four fields
/// by `,`, then its table lines separated by `,`.
pub fn parse_dm_create(value: &str) -> Result<Vec<DmDevice>, DmCreateError> {
    let mut devices = Vec::new();
    for (i, entry) in value.split(';').enumerate() {
        let device = i + 1;
        let err = |field: &'static str, message: String| DmCreateError { device, field, message };
        if device > DM_MAX_DEVICES {
            return Err(err("devices", format!("more than {DM_MAX_DEVICES}")));
        }
        let mut fields = entry.splitn(5, ',');
        let mut next = |field: &'static str| {
            fields.next().ok_or_else(|| err(field, "missing (expected name,uuid,minor,flags,table)".into()))
        };
        let (name, uuid, minor, flags, table) =
            (next("name")?, next("uuid")?, next("minor")?, next("flags")?, next("table")?);
        if name.is_empty() || name.len() >= DM_NAME_LEN {
            return Err(err("name", format!("{name:?}: must be 1 to {} bytes", DM_NAME_LEN - 1)));
        }
        if uuid.len() >= DM_UUID_LEN {
            return Err(err("uuid", format!("longer than {} bytes", DM_UUID_LEN - 1)));
        }
        let minor = match minor {
            "" => None,
            m => Some(
                m.parse::<u32>()
                    .ok()
                    .filter(|m| *m < 1 << 20)
                    .ok_or_else(|| err("minor", format!("{m:?} is no minor number")))?,
            ),
        };
        let read_only = match flags {
            "ro" => true,
            "rw" => false,
            f => return Err(err("flags", format!("{f:?}: expected ro or rw"))),
        };
        let mut targets = Vec::new();
        for line in table.split(',') {
            if targets.len() == DM_MAX_TARGETS {
                return Err(err("table", format!("more than {DM_MAX_TARGETS} targets")));
            }
            let mut f = line.splitn(4, ' ');
            let mut number = |field: &'static str| -> Result<u64, DmCreateError> {
                let v = f.next().unwrap_or_default();
                v.parse().map_err(|_| err(field, format!("{v:?} is not a number of sectors in table line {line:?}")))
            };
            let (start, length) = (number("start_sector")?, number("num_sectors")?);
            let target_type = f.next().unwrap_or_default().to_string();
            if target_type.is_empty() || target_type.len() >= DM_MAX_TYPE_NAME {
                return Err(err("target_type", format!("{target_type:?} in table line {line:?}")));
            }
            let args = f.next().unwrap_or_default().to_string();
            targets.push(DmTarget { start, length, target_type, args });
        }
        devices.push(DmDevice { name: name.into(), uuid: uuid.into(), minor, read_only, targets });
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_sets_up_verity_root_and_names_slot() {
        let v = Verity { data_blocks: 100, hash_start_block: 101, root_hash: "ab".into(), salt: "cd".into() };
        let p = Guid::derive("p");
        let c = kernel_cmdline(Slot::B, p, &v);
        assert!(
            c.contains(&format!("0 800 verity 1 PARTUUID={p} PARTUUID={p} 4096 4096 100 101 blake2b-256 ab cd")),
            "{c}"
        );
        assert!(c.contains("root=/dev/dm-0"));
        assert_eq!(slot_of(&c), Some(Slot::B));
        assert_eq!(slot_of("quiet"), None);
    }

    #[test]
    fn the_kernel_splitting_keeps_quoted_values_whole() {
        let c = "console=ttyS0 dm-mod.create=\"root,,,ro,0 8 verity 1 a b\" ro \"x=1 2\" y=\"\" rootwait";
        let p = params(c);
        assert_eq!(p[1], ("dm-mod.create".into(), Some("root,,,ro,0 8 verity 1 a b".into())));
        assert_eq!(p[2], ("ro".into(), None));
        assert_eq!(p[3], ("x".into(), Some("1 2".into())));
        assert_eq!(p[4], ("y".into(), Some(String::new())));
        assert_eq!(param("a=1 a=2 b", "a").as_deref(), Some("2"), "the last one counts");
        assert!(has_flag(c, "rootwait") && !has_flag(c, "console"));
    }

    #[test]
    fn a_slots_command_line_gives_back_its_verity_device() {
        let v = Verity { data_blocks: 100, hash_start_block: 101, root_hash: "ab".into(), salt: "cd".into() };
        let p = Guid::derive("p");
        let c = kernel_cmdline(Slot::A, p, &v);
        let devices = parse_dm_create(&param(&c, "dm-mod.create").unwrap()).unwrap();
        assert_eq!(devices.len(), 1);
        let d = &devices[0];
        assert_eq!((d.name.as_str(), d.uuid.as_str(), d.minor, d.read_only), ("root", "", None, true));
        assert_eq!(d.targets.len(), 1);
        let t = &d.targets[0];
        assert_eq!((t.start, t.length, t.target_type.as_str()), (0, 800, "verity"));
        assert!(
            t.args.starts_with(&format!("1 PARTUUID={p} PARTUUID={p} 4096 4096 100 101 blake2b-256 ab cd")),
            "{}",
            t.args
        );
        assert_eq!(param(&c, "dm-mod.waitfor"), Some(format!("PARTUUID={p}")));
        assert_eq!(param(&c, "root").as_deref(), Some("/dev/dm-0"));
        assert!(has_flag(&c, "ro"));
    }

    #[test]
    fn several_devices_and_targets_parse_and_bad_fields_are_named() {
        let d = parse_dm_create("a,u,7,rw,0 8 linear /dev/x 0,8 8 linear /dev/y 0;b,,,ro,0 1 zero").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].minor, d[0].read_only, d[0].targets.len()), (Some(7), false, 2));
        assert_eq!(d[0].targets[1].args, "/dev/y 0");
        assert_eq!(d[1].targets[0].args, "");
        let e = |v: &str| parse_dm_create(v).unwrap_err();
        assert_eq!(e("a,,,rx,0 1 zero").field, "flags");
        assert_eq!(e("a,,x,ro,0 1 zero").field, "minor");
        assert_eq!(e("a,,,ro").field, "table");
        assert_eq!(e(",,,ro,0 1 zero").field, "name");
        assert_eq!(e("a,,,ro,0 one zero").field, "num_sectors");
        let two = e("a,,,ro,0 1 zero;b,,,ro,0 1 averyveryverylongtype");
        assert_eq!((two.device, two.field), (2, "target_type"));
        assert!(two.to_string().starts_with("dm-mod.create: device 2: target_type:"), "{two}");
    }
}
