//! Where things live in the image and at run time.

/// PID1. `/sbin/init` links here.
pub const INIT: &str = "/usr/bin/berth-init";
/// Berth's own binaries go here.
pub const BIN_DIR: &str = "/usr/bin";
/// The data partition is mounted here.
pub const DATA_MOUNT: &str = "/var";
/// The writable half of the /etc overlay, on the data partition.
pub const ETC_UPPER: &str = "/var/lib/berth/etc/upper";
pub const ETC_WORK: &str = "/var/lib/berth/etc/work";
/// root's home, on the data partition (`/root` links here; /etc/passwd
/// names it), and its `.ssh`, where `authorized_keys` says who may log in
/// as root over SSH. PID1 makes both (mode 0700) with the partition's
/// other directories.
pub const ROOT_HOME: &str = "/var/root";
pub const ROOT_SSH_DIR: &str = "/var/root/.ssh";
/// Where PID1 keeps its own state on the data partition.
pub const STATE_DIR: &str = "/var/lib/berth";
/// Identifies the build: `VERSION_ID=`, `BERTH_SLOT=` and friends.
pub const OS_RELEASE: &str = "/usr/lib/os-release";
/// The console that carries a root shell under a hypervisor (virtio
/// console). Whoever holds the hypervisor console holds the machine; on bare
/// metal the device does not exist and no shell runs.
pub const ADMIN_CONSOLE: &str = "/dev/hvc0";
/// The shell run on the admin console.
pub const SHELL: &str = "/usr/bin/sh";
/// Units that come with the image (read-only root).
pub const IMAGE_UNIT_DIR: &str = "/usr/lib/berth/units";
/// The programs of the daemons the boot waits for (the image's units with
/// `ready = "notify"`) and the libraries they map, one absolute path a
/// line (`#` starts a comment line), in the order PID1 reads them into the
/// page cache at idle priority during early boot; written by the image
/// build from the image's units (image-build/src/readahead.rs).
pub const BOOT_READAHEAD: &str = "/usr/lib/berth/boot-readahead.list";
/// Unit additions and overrides: the administrator's and user data's.
pub const ETC_UNIT_DIR: &str = "/etc/berth/units";
/// Service logs and PID1's own log (`berth.log`).
pub const LOG_DIR: &str = "/var/log/berth";
/// PID1's control API (D-Bus, peer to peer; root only): `berthctl` talks
/// to it. Its directory is 0700, the socket 0600.
pub const CONTROL_SOCKET: &str = "/run/berth/control.sock";
/// PID1's runtime directory: the control socket and the units' notify sockets.
pub const RUN_DIR: &str = "/run/berth";
/// The units' sd_notify sockets, one per unit (inside [`RUN_DIR`]).
pub const NOTIFY_DIR: &str = "/run/berth/notify";
/// The public keys an update bundle may be signed with, one PEM file
/// (`*.pem`, SPKI ed25519) each; several, so keys can be rotated.
pub const UPDATE_KEYS_DIR: &str = "/usr/lib/berth/update-keys";
/// berth-updater's control API (D-Bus, peer to peer; root only), which
/// `berthctl update` talks to. Same rules as [`CONTROL_SOCKET`].
pub const UPDATER_SOCKET: &str = "/run/berth/updater.sock";
/// The updater's settings as the image ships them (health gate, deadline,
/// automatic mode); [`UPDATER_CONFIG`] overrides them key by key.
pub const UPDATER_DEFAULT_CONFIG: &str = "/usr/lib/berth/updater.toml";
/// The administrator's (and user data's) updater settings.
pub const UPDATER_CONFIG: &str = "/etc/berth/updater.toml";
/// The updater's record of installs, rollbacks and versions that failed
/// here (on the data partition, so it survives updates and rollbacks).
pub const UPDATER_STATE_DIR: &str = "/var/lib/berth/updater";
/// Created by berth-updater once this boot is blessed (its counter removed
/// from the entry on the ESP). PID1 reboots a counted boot that has not
/// got it by the health gate's deadline.
pub const BOOT_BLESSED: &str = "/run/berth/boot-blessed";
/// Where berth-updater mounts the ESP while it changes it (and only then).
pub const ESP_MOUNT: &str = "/run/berth/esp";
/// Power-cut tests only: a point where berth-updater's next install stops
/// for good (a step name such as `rename-entry`, or `write-root@50`), read
/// at the start of each install. On tmpfs, so a power cut forgets it.
pub const UPDATER_PAUSE_FILE: &str = "/run/berth/updater-pause";
/// User data's state (berth-provision): the record of what is in force
/// (`record.json`), the documents in force (`user-data`, `meta-data`,
/// `network-config`), and while an apply runs or a `--try` waits for its
/// confirm, the previous contents of every path it changed (`backup/`).
pub const PROVISION_DIR: &str = "/var/lib/berth/provision";

/// The router's settings (contract: every key optional; user data's
/// `router:` key writes it). Its unit runs only when it exists.
pub const ROUTER_CONFIG: &str = "/etc/berth/router.toml";
/// The router's status (JSON, written atomically); `berthctl status router` reads it.
pub const ROUTER_STATUS: &str = "/run/berth/router/status.json";
/// The router's state (the last subnet it leased).
pub const ROUTER_STATE_DIR: &str = "/var/lib/berth/router";
