//! `berth-router`: wiring only (see the library's docs).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;
use std::time::Duration;

use berth_router::config::{RouterConfig, CONFIG_PATH};
use berth_router::daemon::{Paths, Router};
use berth_router::lease::EtcdStore;
use berth_router::nat::Iptables;
use berth_router::netlink::RtDataplane;
use berth_router::status::{State, Status};
use clap::Parser;

/// The per-host subnet router (flannel-compatible, VXLAN).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Its settings.
    #[arg(long, default_value = CONFIG_PATH)]
    config: PathBuf,
    /// The status file.
    #[arg(long, default_value = berth_router::status::STATUS_PATH)]
    status: PathBuf,
    /// Where the last subnet is remembered.
    #[arg(long, default_value = berth_layout::paths::ROUTER_STATE_DIR)]
    state_dir: PathBuf,
    /// The CNI config directory.
    #[arg(long, default_value = berth_router::cni::CNI_DIR)]
    cni_dir: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-router: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(run(args));
    std::process::ExitCode::SUCCESS
}

/// Reads the config and reaches etcd (both retried with backoff, the
/// reason in the status), then runs the router until SIGTERM or SIGINT.
async fn run(args: Args) {
    let paths = Paths { status: args.status, state_dir: args.state_dir, cni_dir: args.cni_dir };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut backoff = Duration::from_millis(500);
    let (cfg, store) = loop {
        let err = match RouterConfig::load(&args.config) {
            Ok(cfg) => match EtcdStore::connect(&cfg.etcd_endpoints, &cfg.etcd_prefix).await {
                Ok(store) => break (cfg, store),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        eprintln!("berth-router: {err}");
        let mut st = Status { state: State::Degraded, last_error: Some(err), ..Status::default() };
        if let Err(e) = st.write(&paths.status) {
            eprintln!("berth-router: writing the status: {e}");
        }
        let mut stop = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    };
    let dp = match RtDataplane::new() {
        Ok(dp) => dp,
        Err(e) => {
            eprintln!("berth-router: {e}");
            return;
        }
    };
    Router::new(cfg, paths, store, dp, Iptables::default()).run(stop).await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
