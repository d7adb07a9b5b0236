//! The files Berth writes into the peer's root: its units (the bench's
//! two markers, the admin shell), etcd's and containerd's settings, and
//! which units are enabled or disabled.

use crate::peer::{CORE_READY_MARKER, NETWORK_ONLINE_MARKER, STARTUP_FINISHED_MARKER};

/// A file the build writes into the peer's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFile {
    /// Absolute path in the root.
    pub path: &'static str,
    pub text: String,
}

/// Units the build enables (`systemctl enable` in the root).
pub const ENABLED_UNITS: &[&str] = &[
    "berth-peer-ready.service",
    "berth-peer-finished.service",
    "berth-peer-online.service",
    "berth-peer-shell.service",
    "systemd-networkd.service",
];
/// Units the build disables: networkd's wait-online would hold "startup
/// finished" for two minutes on a machine without a NIC (the headline
/// figure has none); Berth's ready line does not wait for a lease either.
pub const DISABLED_UNITS: &[&str] = &["systemd-networkd-wait-online.service"];

/// The files written into the peer's root. `containerd_config` is Berth's
/// own `/etc/containerd/config.toml`, so both run containerd alike.
pub fn root_files(containerd_config: &str) -> Vec<RootFile> {
    let f = |path: &'static str, text: &str| RootFile { path, text: text.to_string() };
    vec![
        f(
            "/etc/default/etcd",
            "# etcd as on Berth (image-build/rootfs/usr/lib/berth/units/etcd.toml): one\n\
             # member, clients on 127.0.0.1:2379, peers on 127.0.0.1:2380, data on the\n\
             # root disk (Debian's default directory).\n\
             ETCD_NAME=berth\n\
             ETCD_DATA_DIR=/var/lib/etcd/default\n\
             ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:2379\n\
             ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:2379\n\
             ETCD_LISTEN_PEER_URLS=http://127.0.0.1:2380\n\
             ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:2380\n\
             ETCD_INITIAL_CLUSTER=berth=http://127.0.0.1:2380\n\
             # A cluster of one: Berth's heartbeat and election timeout (ms).\n\
             ETCD_HEARTBEAT_INTERVAL=50\n\
             ETCD_ELECTION_TIMEOUT=250\n\
             ETCD_AUTO_COMPACTION_MODE=periodic\n\
             ETCD_AUTO_COMPACTION_RETENTION=1h\n\
             ETCD_LOGGER=zap\n\
             ETCD_LOG_OUTPUTS=stderr\n",
        ),
        f("/etc/containerd/config.toml", containerd_config),
        f(
            "/etc/systemd/system/berth-peer-ready.service",
            &format!(
                "[Unit]\n\
             Description=Bench marker: containerd and etcd are ready\n\
             After=containerd.service etcd.service\n\
             Wants=containerd.service etcd.service\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             # Both are Type=notify: ordered after them, this runs once both said READY=1.\n\
             # $$ is a literal $ for systemd (a single $ would be its own expansion).\n\
             ExecStart=/bin/sh -c 'read up idle < /proc/uptime; s=$$(systemctl is-active containerd.service etcd.service | tr \"\\\\n\" \" \"); echo \"{CORE_READY_MARKER}$$up s ($$s)\" > /dev/ttyS0'\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n"
            ),
        ),
        f(
            "/etc/systemd/system/berth-peer-finished.service",
            &format!(
                "[Unit]\n\
             Description=Bench marker: every unit done starting\n\
             \n\
             [Service]\n\
             # simple, not oneshot: its own start job ends at once, so the wait\n\
             # below does not wait for itself.\n\
             Type=simple\n\
             ExecStart=/bin/sh -c 's=$$(systemctl is-system-running --wait); read up idle < /proc/uptime; echo \"{STARTUP_FINISHED_MARKER}$$up s ($$s)\" > /dev/ttyS0'\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n"
            ),
        ),
        f(
            "/etc/systemd/system/berth-peer-online.service",
            &format!(
                "[Unit]\n\
             Description=Bench marker: the network is up (an IPv4 default route)\n\
             # Only on a VM with a NIC (eth0 before udev renames it, en* after).\n\
             ConditionPathExistsGlob=/sys/class/net/e*\n\
             \n\
             [Service]\n\
             # The network up, on events as Berth's network-online unit waits\n\
             # (that one for a default route; this for an IPv4 routable link,\n\
             # which a lease gives with its route): systemd-networkd-wait-online,\n\
             # run here rather than enabled, so that network-online.target and\n\
             # etcd's unit do not wait for a lease. No marker if it fails.\n\
             # simple: nothing waits for it.\n\
             Type=simple\n\
             ExecStart=/bin/sh -c '/lib/systemd/systemd-networkd-wait-online --ipv4 --operational-state=routable --timeout=0 --quiet && read up idle < /proc/uptime && echo \"{NETWORK_ONLINE_MARKER}$$up s (routable)\" > /dev/ttyS0'\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n"
            ),
        ),
        f(
            "/etc/systemd/system/berth-peer-shell.service",
            "[Unit]\n\
             Description=Root shell on hvc0 for the bench harness (as Berth's admin shell)\n\
             After=dev-hvc0.device\n\
             Wants=dev-hvc0.device\n\
             \n\
             [Service]\n\
             ExecStart=/bin/sh -i\n\
             StandardInput=tty-force\n\
             StandardOutput=tty\n\
             StandardError=tty\n\
             TTYPath=/dev/hvc0\n\
             # An interactive shell ignores SIGTERM: without this every\n\
             # shutdown would wait out the 90 s stop timeout.\n\
             KillSignal=SIGHUP\n\
             Restart=always\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n",
        ),
        f(
            "/etc/systemd/network/50-dhcp.network",
            "# DHCP on the first NIC, as Berth's network unit does (when the VM has one).\n\
             [Match]\n\
             Name=en* eth*\n\
             \n\
             [Network]\n\
             DHCP=ipv4\n",
        ),
        f("/etc/fstab", "/dev/vda / ext4 rw,relatime,errors=remount-ro 0 1\n"),
        f("/etc/hostname", "berth-peer\n"),
        f("/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 berth-peer\n::1 localhost ip6-localhost ip6-loopback\n"),
        // Empty: the first boot makes the machine's id, as on Debian's cloud images.
        f("/etc/machine-id", ""),
    ]
}
