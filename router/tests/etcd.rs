//! The router against a real etcd (`berth_cluster::testing::EtcdServer`,
//! Debian's /usr/bin/etcd): concurrent leases, a restart keeps its subnet,
//! a revoked lease disappears, flannel's layout as etcdctl shows it, and
//! an etcd restart that leaves the routes alone. The kernel is the fake one.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_cluster::testing::EtcdServer;
use berth_router::config::RouterConfig;
use berth_router::daemon::{Paths, Router};
use berth_router::ipnet::Ipv4Net;
use berth_router::lease::{EtcdStore, Store};
use berth_router::nat::FakeNat;
use berth_router::netlink::FakeDataplane;
use berth_router::plan::Mac;
use berth_router::status::{State, Status};
use tokio::sync::watch;

const PREFIX: &str = "/coreos.com/network";

struct Host {
    dp: FakeDataplane,
    paths: Paths,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A fresh state directory, removed when the returned guard drops.
fn dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("berth-router-etcd-{name}-")).tempdir().unwrap()
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10 + n)
}

async fn start_in(etcd: &EtcdServer, n: u8, d: &std::path::Path) -> Host {
    let cfg = RouterConfig {
        etcd_endpoints: vec![etcd.endpoint()],
        lease_ttl: Duration::from_secs(5),
        reconcile_interval: Duration::from_millis(500),
        ..RouterConfig::default()
    };
    let store = EtcdStore::connect(&cfg.etcd_endpoints, PREFIX).await.unwrap();
    let paths = Paths { status: d.join("status.json"), state_dir: d.join("state"), cni_dir: d.join("cni") };
    let dp = FakeDataplane::new(ip(n), Mac([2, 0, 0, 0, 0, n]));
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(Router::new(cfg, paths.clone(), store, dp.clone(), FakeNat::default()).run(rx));
    Host { dp, paths, stop, task }
}

impl Host {
    fn status(&self) -> Status {
        Status::read(&self.paths.status).unwrap_or_default()
    }

    async fn running(&self) -> Ipv4Net {
        until("running with a subnet", Duration::from_secs(10), || {
            self.status().state == State::Running && self.status().subnet.is_some()
        })
        .await;
        self.status().subnet.unwrap().parse().unwrap()
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("router did not stop").unwrap();
    }
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn etcdctl_get_prefix(etcd: &EtcdServer, key: &str) -> String {
    let out = Command::new("etcdctl").args(["--endpoints", &etcd.endpoint(), "get", "--prefix", key]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_lease_distinct_subnets_and_a_revoked_one_disappears() {
    let etcd = EtcdServer::start().unwrap();
    let (da, db) = (dir("two-a"), dir("two-b"));
    let (a, b) = tokio::join!(start_in(&etcd, 1, da.path()), start_in(&etcd, 2, db.path()));
    let (sa, sb) = tokio::join!(a.running(), b.running());
    assert_ne!(sa, sb);
    until("A routes to B", Duration::from_secs(2), || a.dp.route_dsts().contains(&sb)).await;
    until("B routes to A", Duration::from_secs(2), || b.dp.route_dsts().contains(&sa)).await;

    // flannel's layout, as etcdctl shows it.
    let text = etcdctl_get_prefix(&etcd, PREFIX);
    assert!(
        text.contains(r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}"#),
        "{text}"
    );
    let key_a = format!("{PREFIX}/subnets/{}", sa.key_form());
    assert!(text.contains(&key_a), "{text}");
    assert!(
        text.contains(
            r#"{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}"#
        ),
        "{text}"
    );
    // The key is attached to the lease the status names.
    let store = EtcdStore::connect(&[etcd.endpoint()], PREFIX).await.unwrap();
    let listing = store.list().await.unwrap();
    let la = listing.leases.iter().find(|l| l.subnet == sa).unwrap();
    assert_eq!(format!("{:x}", la.lease_id), a.status().lease_id.unwrap());

    // A stops cleanly: its lease is revoked, its key gone, B drops its routes.
    a.stop().await;
    assert!(!etcdctl_get_prefix(&etcd, &key_a).contains(&key_a), "the key outlived the revoke");
    until("B drops A", Duration::from_secs(1), || b.dp.route_dsts().is_empty()).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_router_gets_its_previous_subnet() {
    let etcd = EtcdServer::start().unwrap();
    let (da, db) = (dir("restart-a"), dir("restart-b"));
    let a = start_in(&etcd, 1, da.path()).await;
    let sa = a.running().await;
    a.stop().await;
    // Another host comes meanwhile; the subnet is free again.
    let b = start_in(&etcd, 2, db.path()).await;
    let sb = b.running().await;
    assert_ne!(sa, sb);
    let a = start_in(&etcd, 1, da.path()).await;
    assert_eq!(a.running().await, sa, "after a clean stop");
    // A crash (no revoke): the key with its PublicIP is still there, and
    // the new run takes it over at once instead of waiting out the TTL.
    a.task.abort();
    let _ = a.task.await;
    let a = start_in(&etcd, 1, da.path()).await;
    assert_eq!(a.running().await, sa, "after a crash");
    let store = EtcdStore::connect(&[etcd.endpoint()], PREFIX).await.unwrap();
    assert_eq!(store.list().await.unwrap().leases.len(), 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_leaves_the_routes_alone() {
    let mut etcd = EtcdServer::start().unwrap();
    let (da, db) = (dir("down-a"), dir("down-b"));
    let a = start_in(&etcd, 1, da.path()).await;
    a.running().await;
    let b = start_in(&etcd, 2, db.path()).await;
    let sb = b.running().await;
    until("A routes to B", Duration::from_secs(2), || a.dp.route_dsts().contains(&sb)).await;
    etcd.kill();
    until("A degraded", Duration::from_secs(10), || a.status().state == State::Degraded).await;
    assert!(a.dp.route_dsts().contains(&sb), "routes torn down while etcd was away");
    etcd.restart().unwrap();
    until("A running again", Duration::from_secs(15), || a.status().state == State::Running).await;
    until("B running again", Duration::from_secs(15), || b.status().state == State::Running).await;
    assert!(a.dp.route_dsts().contains(&sb));
    a.stop().await;
    b.stop().await;
}
