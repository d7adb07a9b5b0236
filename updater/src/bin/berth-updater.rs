//! berth-updater: the A/B update daemon (a unit in the image). Wiring only:
//! the settings, the real machine and PID1, the D-Bus API on
//! UPDATER_SOCKET, the start-up gate and bless, the automatic mode. See
//! `berth_updater::daemon`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use berth_dbus::PeerConfig;
use berth_layout::paths::{
    BOOT_BLESSED, CONTROL_SOCKET, UPDATER_CONFIG, UPDATER_DEFAULT_CONFIG, UPDATER_PAUSE_FILE, UPDATER_SOCKET,
    UPDATER_STATE_DIR, UPDATE_KEYS_DIR,
};
use berth_updater::config;
use berth_updater::config::RebootStrategy;
use berth_updater::daemon::etcd_lock::{EtcdRebootLock, MACHINE_ID};
use berth_updater::daemon::real::{RealMachine, RealPid1};
use berth_updater::daemon::{api, Daemon, LockRetry, RebootLock, Settings};

fn settings() -> Result<Settings, String> {
    // Broken settings must not stop the bless: the image's file, or the
    // built-in values, and the errors said.
    let (config, errors) = config::load_or_fallback(Path::new(UPDATER_DEFAULT_CONFIG), Path::new(UPDATER_CONFIG));
    for e in errors {
        eprintln!("berth-updater: settings: {e}");
    }
    Ok(Settings {
        config,
        keys_dir: PathBuf::from(UPDATE_KEYS_DIR),
        state_dir: PathBuf::from(UPDATER_STATE_DIR),
        blessed_marker: PathBuf::from(BOOT_BLESSED),
        arch: std::env::consts::ARCH.to_string(),
        pause_file: Some(PathBuf::from(UPDATER_PAUSE_FILE)),
    })
}

/// The etcd reboot lock when `[reboot_lock] strategy = "etcd-lock"`.
/// Without a machine-id there is no holder name: said, and reboots are
/// not coordinated.
fn reboot_lock(settings: &Settings) -> Option<(std::sync::Arc<dyn RebootLock>, LockRetry)> {
    let c = &settings.config.reboot_lock;
    if c.strategy == RebootStrategy::Off {
        return None;
    }
    let machine_id = match std::fs::read_to_string(MACHINE_ID) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        Ok(_) | Err(_) => {
            eprintln!("berth-updater: reboot lock: {MACHINE_ID} is missing or empty: reboots are not coordinated");
            return None;
        }
    };
    let hostname =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    eprintln!(
        "berth-updater: reboot lock: etcd-lock at {} ({} at once, lease {})",
        c.endpoints.join(","),
        c.max,
        humantime::format_duration(c.ttl)
    );
    let lock = EtcdRebootLock::new(c, &machine_id, &hostname, &settings.state_dir);
    Some((std::sync::Arc::new(lock), LockRetry::default()))
}

async fn run(settings: Settings) -> Result<(), String> {
    let pid1 = RealPid1 { socket: PathBuf::from(CONTROL_SOCKET), timeout: Duration::from_secs(30) };
    let auto = settings.config.auto.enabled;
    let lock = reboot_lock(&settings);
    let daemon = Daemon::with_reboot_lock(RealMachine, pid1, settings, lock);
    let _server = api::serve(std::sync::Arc::clone(&daemon), PeerConfig::new(UPDATER_SOCKET))
        .map_err(|e| format!("{UPDATER_SOCKET}: {e}"))?;
    let background = std::sync::Arc::clone(&daemon);
    tokio::spawn(async move {
        background.start().await;
        if auto {
            background.auto_loop().await;
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM: {e}"))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = settings().and_then(|settings| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        rt.block_on(run(settings))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-updater: {e}");
            ExitCode::FAILURE
        }
    }
}
