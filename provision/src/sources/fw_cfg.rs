//! QEMU's firmware configuration device, through the kernel's
//! CONFIG_FW_CFG_SYSFS: `-fw_cfg name=opt/org.berth/user-data,file=PATH`
//! appears as `/sys/firmware/qemu_fw_cfg/by_name/opt/org.berth/user-data/raw`.
//! Names under `opt/` are for users; `org.berth` is Berth's reverse-DNS
//! prefix, as QEMU's documentation asks.

use std::path::Path;

use super::system::System;
use super::{Found, Kind, MAX_DOCUMENT};

/// The device's directory: absent when QEMU (or the kernel) has no fw_cfg.
pub const FW_CFG_DIR: &str = "/sys/firmware/qemu_fw_cfg";
/// Berth's entries, by name.
pub const BY_NAME: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.berth";
/// The entry names, as given to `-fw_cfg name=...`.
pub const USER_DATA: &str = "opt/org.berth/user-data";
pub const META_DATA: &str = "opt/org.berth/meta-data";

/// What the device gave: `Ok(None)` when there is no device or no Berth
/// entry (the text for the console says which); errors name the entry.
pub fn read(sys: &dyn System) -> Result<(Option<Found>, &'static str), String> {
    if sys.list_dir(Path::new(FW_CFG_DIR)).ok().flatten().is_none() {
        return Ok((None, "no device"));
    }
    let entry = |name: &str| {
        let path = Path::new(BY_NAME).join(name).join("raw");
        sys.read_file(&path, MAX_DOCUMENT).map_err(|e| format!("fw_cfg:opt/org.berth/{name}: {e}"))
    };
    let user_data = entry("user-data")?;
    let meta_data = entry("meta-data")?;
    if user_data.is_none() && meta_data.is_none() {
        return Ok((None, "none"));
    }
    let origin = if user_data.is_some() { USER_DATA } else { META_DATA };
    Ok((
        Some(Found {
            kind: Kind::FwCfg,
            origin: format!("fw_cfg:{origin}"),
            user_data,
            meta_data,
            network_config: None,
        }),
        "found",
    ))
}
