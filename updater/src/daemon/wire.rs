//! The values of `org.berth.Updater1` on the wire (zvariant structs), used
//! by the daemon and by `berthctl update`. D-Bus has no optional values:
//! "" and 0 stand for "none".

use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

use super::history::{Failed, Operation};

/// One slot: `(sss)`: its name (`a`, `b`), the version in it and its
/// entry's file name with the boot counter (`berth-0.2.0+2-1.conf`); the
/// version and file are "" when the slot has no entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireSlot {
    pub slot: String,
    pub version: String,
    pub entry: String,
}

/// An operation: `(sssbst)`: kind (`install`, `rollback`, `bless`),
/// version, slot, whether it succeeded, its message, seconds since the
/// epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireOperation {
    pub kind: String,
    pub version: String,
    pub slot: String,
    pub ok: bool,
    pub message: String,
    pub time: u64,
}

/// A version that failed here: `(sst)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireFailed {
    pub version: String,
    pub why: String,
    pub time: u64,
}

/// The answer of `Status()`: `((sss)(sss)bsbsa(sssbst)a(sst)ss)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireStatus {
    pub booted: WireSlot,
    pub other: WireSlot,
    /// Whether this boot is blessed (an uncounted boot is).
    pub blessed: bool,
    /// Why blessing failed ("" when it did not); while the health gate
    /// waits: what it waits for, in `gate`.
    pub bless_error: String,
    /// Whether this boot is counted (`LoaderBootCountPath` set at boot).
    pub counted: bool,
    /// What the health gate waits for ("" when it passed or is not run).
    pub gate: String,
    /// The last install or rollback: zero or one.
    pub last: Vec<WireOperation>,
    pub failed: Vec<WireFailed>,
    /// The source of the install running now ("" when none).
    pub installing: String,
    /// What the reboot lock (`[reboot_lock] strategy = "etcd-lock"`) is
    /// doing: waiting for a slot and who holds them, holding one, etcd
    /// unreachable; "" when reboots are not coordinated.
    pub reboot_lock: String,
}

/// The answer of `Install(s source, b force)`: `(sst)`: version, slot,
/// bytes written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireInstalled {
    pub version: String,
    pub slot: String,
    pub bytes: u64,
}

/// The answer of `Check(s url)`: `(bsstsas)`: whether there is a candidate,
/// its version, bundle URL, size, the booted version, and the newer
/// published versions passed over because they failed here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireCandidate {
    pub available: bool,
    pub version: String,
    pub url: String,
    pub size: u64,
    pub booted: String,
    pub failed_here: Vec<String>,
}

impl From<&Operation> for WireOperation {
    fn from(o: &Operation) -> WireOperation {
        WireOperation {
            kind: o.kind.as_str().to_string(),
            version: o.version.clone(),
            slot: o.slot.clone(),
            ok: o.ok,
            message: o.message.clone(),
            time: o.time,
        }
    }
}

impl From<&Failed> for WireFailed {
    fn from(f: &Failed) -> WireFailed {
        WireFailed { version: f.version.clone(), why: f.why.clone(), time: f.time }
    }
}
