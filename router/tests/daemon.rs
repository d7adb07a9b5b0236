//! The router's loop against the in-memory etcd ([`MemStore`]) and the
//! fake kernel ([`FakeDataplane`]): joins, leaves, an etcd outage, a lost
//! lease, conflicts, stale entries, bad network configs.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use berth_router::config::RouterConfig;
use berth_router::daemon::{Paths, Router};
use berth_router::ipnet::Ipv4Net;
use berth_router::lease::{LeaseAttrs, MemStore, Store, VxlanData};
use berth_router::nat::FakeNat;
use berth_router::netlink::FakeDataplane;
use berth_router::plan::{Mac, Route};
use berth_router::status::{State, Status};
use tokio::sync::watch;

const PREFIX: &str = "/coreos.com/network";

struct Host {
    dp: FakeDataplane,
    nat: FakeNat,
    paths: Paths,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The state directory, removed when the host is dropped.
    _dir: tempfile::TempDir,
}

/// A fresh state directory, removed when the returned guard drops.
fn dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("berth-router-test-{name}-")).tempdir().unwrap()
}

fn cfg() -> RouterConfig {
    RouterConfig {
        lease_ttl: Duration::from_secs(3),
        reconcile_interval: Duration::from_millis(300),
        ..RouterConfig::default()
    }
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10 + n)
}

fn start_in(store: &MemStore, n: u8, dir: tempfile::TempDir, dp: FakeDataplane, cfg: RouterConfig) -> Host {
    let d = dir.path();
    let paths = Paths { status: d.join("status.json"), state_dir: d.join("state"), cni_dir: d.join("cni") };
    let nat = FakeNat::default();
    let (stop, rx) = watch::channel(false);
    let router = Router::new(cfg, paths.clone(), store.clone(), dp.clone(), nat.clone());
    let task = tokio::spawn(router.run(rx));
    let _ = n;
    Host { dp, nat, paths, stop, task, _dir: dir }
}

fn start(store: &MemStore, n: u8, name: &str) -> Host {
    start_in(store, n, dir(name), FakeDataplane::new(ip(n), Mac([2, 0, 0, 0, 0, n])), cfg())
}

impl Host {
    fn status(&self) -> Status {
        Status::read(&self.paths.status).unwrap_or_default()
    }

    fn subnet(&self) -> Option<Ipv4Net> {
        self.status().subnet.and_then(|s| s.parse().ok())
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("router did not stop").unwrap();
    }
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn running(h: &Host) -> Ipv4Net {
    until("running with a subnet", Duration::from_secs(5), || {
        h.status().state == State::Running && h.subnet().is_some()
    })
    .await;
    h.subnet().unwrap()
}

#[tokio::test]
async fn hosts_join_and_leave_within_a_second() {
    let store = MemStore::new(PREFIX);
    let a = start(&store, 1, "join-a");
    let sa = running(&a).await;
    let b = start(&store, 2, "join-b");
    let sb = running(&b).await;
    assert_ne!(sa, sb);
    // A learns of B by the watch, B of A by its first list.
    until("A routes to B", Duration::from_secs(1), || a.dp.route_dsts().contains(&sb)).await;
    until("B routes to A", Duration::from_secs(1), || b.dp.route_dsts().contains(&sa)).await;
    let k = a.dp.with(|s| s.kernel.clone());
    assert!(k.routes.contains(&Route { dst: sb, gateway: sb.addr() }));
    assert!(k.neighbours.iter().any(|n| n.ip == sb.addr() && n.mac == Mac([2, 0, 0, 0, 0, 2])));
    assert!(k.fdb.iter().any(|f| f.mac == Mac([2, 0, 0, 0, 0, 2]) && f.dst == ip(2)));
    // The host side: vtep address, bridge, CNI config, NAT.
    let vx = a.dp.with(|s| s.vxlan.clone()).unwrap();
    assert_eq!((vx.name.as_str(), vx.mtu, vx.address), ("flannel.1", 1450, Some(sa.addr())));
    assert_eq!(a.dp.with(|s| s.bridge.clone()).unwrap().1, sa.hosts().next().unwrap());
    let cni = std::fs::read_to_string(a.paths.cni_dir.join("05-berth-router.conflist")).unwrap();
    assert!(cni.contains(&sa.to_string()), "{cni}");
    assert!(a.nat.calls.lock().unwrap().contains(&"10.244.0.0/16".parse().unwrap()));
    let st = a.status();
    assert_eq!(st.peers.len(), 1);
    assert_eq!(st.peers[0].public_ip, "192.0.2.12");
    assert!(st.last_convergence.is_some());
    // B stops cleanly: its lease is revoked and A drops it at once.
    b.stop().await;
    until("A drops B", Duration::from_secs(1), || {
        a.dp.with(|s| s.kernel.routes.is_empty() && s.kernel.neighbours.is_empty() && s.kernel.fdb.is_empty())
    })
    .await;
    assert_eq!(store.list().await.unwrap().leases.len(), 1);
    a.stop().await;
    assert!(store.list().await.unwrap().leases.is_empty(), "a clean stop revokes the lease");
}

#[tokio::test]
async fn an_etcd_outage_keeps_the_routes() {
    let store = MemStore::new(PREFIX);
    let a = start(&store, 1, "outage-a");
    running(&a).await;
    let b = start(&store, 2, "outage-b");
    let sb = running(&b).await;
    until("A routes to B", Duration::from_secs(1), || a.dp.route_dsts().contains(&sb)).await;
    store.set_down(true);
    until("A degraded", Duration::from_secs(2), || a.status().state == State::Degraded).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.dp.route_dsts().contains(&sb), "routes torn down while etcd was away");
    assert!(a.status().last_error.unwrap_or_default().contains("etcd"), "{:?}", a.status());
    store.set_down(false);
    until("A running again", Duration::from_secs(3), || a.status().state == State::Running).await;
    assert!(a.dp.route_dsts().contains(&sb));
    // The watch is back: a leave is seen again.
    b.stop().await;
    until("A drops B", Duration::from_secs(1), || a.dp.route_dsts().is_empty()).await;
    a.stop().await;
}

#[tokio::test]
async fn a_lost_lease_is_taken_again_with_the_same_subnet() {
    let store = MemStore::new(PREFIX);
    let a = start(&store, 1, "lost-a");
    let sa = running(&a).await;
    let b = start(&store, 2, "lost-b");
    running(&b).await;
    until("B routes to A", Duration::from_secs(1), || b.dp.route_dsts().contains(&sa)).await;
    let old = a.status().lease_id.unwrap();
    let old_id = i64::from_str_radix(&old, 16).unwrap();
    store.expire(old_id);
    until("A leased again", Duration::from_secs(3), || a.status().lease_id.is_some_and(|l| l != old)).await;
    assert_eq!(a.subnet(), Some(sa));
    until("B routes to A again", Duration::from_secs(1), || b.dp.route_dsts().contains(&sa)).await;
    assert!(store.list().await.unwrap().leases.iter().any(|l| l.subnet == sa && l.attrs.public_ip == ip(1)));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_subnet_held_by_another_host_is_not_taken() {
    let store = MemStore::new(PREFIX);
    // Host 9 holds 10.244.5.0/24; host 1 remembers that subnet from an earlier life.
    let taken: Ipv4Net = "10.244.5.0/24".parse().unwrap();
    let lease = store.grant(30).await.unwrap();
    let attrs = LeaseAttrs {
        public_ip: ip(9),
        backend_type: "vxlan".into(),
        backend_data: VxlanData { vni: 1, vtep_mac: "02:00:00:00:00:09".into() },
    };
    assert!(store.create_lease(taken, &attrs, lease, None).await.unwrap());
    let d1 = dir("conflict-1");
    let d2 = dir("conflict-2");
    for d in [d1.path(), d2.path()] {
        std::fs::create_dir_all(d.join("state")).unwrap();
        std::fs::write(d.join("state/subnet"), "10.244.5.0/24\n").unwrap();
    }
    // Two hosts that both remember it start at the same time.
    let a = start_in(&store, 1, d1, FakeDataplane::new(ip(1), Mac([2, 0, 0, 0, 0, 1])), cfg());
    let b = start_in(&store, 2, d2, FakeDataplane::new(ip(2), Mac([2, 0, 0, 0, 0, 2])), cfg());
    let (sa, sb) = (running(&a).await, running(&b).await);
    assert_ne!(sa, taken);
    assert_ne!(sb, taken);
    assert_ne!(sa, sb);
    until("A routes to host 9 and B", Duration::from_secs(1), || {
        a.dp.route_dsts() == [taken, sb].into_iter().collect()
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn stale_kernel_entries_are_removed() {
    let store = MemStore::new(PREFIX);
    let dp = FakeDataplane::new(ip(1), Mac([2, 0, 0, 0, 0, 1]));
    let stale: Ipv4Net = "10.244.77.0/24".parse().unwrap();
    dp.with(|s| {
        s.kernel.routes.insert(Route { dst: stale, gateway: stale.addr() });
        s.kernel.neighbours.insert(berth_router::plan::Neighbour { ip: stale.addr(), mac: Mac([2, 0, 0, 0, 0, 77]) });
    });
    let a = start_in(&store, 1, dir("stale-a"), dp.clone(), cfg());
    running(&a).await;
    until("stale entries gone", Duration::from_secs(1), || {
        dp.with(|s| s.kernel.routes.is_empty() && s.kernel.neighbours.is_empty())
    })
    .await;
    // One added behind its back goes at the next reconcile.
    dp.with(|s| s.kernel.routes.insert(Route { dst: stale, gateway: stale.addr() }));
    until("reconciled", Duration::from_secs(1), || dp.route_dsts().is_empty()).await;
    a.stop().await;
}

#[tokio::test]
async fn a_network_that_does_not_fit_is_reported_and_nothing_is_leased() {
    let store = MemStore::new(PREFIX);
    assert!(store
        .create_config(r#"{"Network":"10.244.0.0/16","SubnetLen":12,"Backend":{"Type":"vxlan"}}"#)
        .await
        .unwrap());
    let a = start(&store, 1, "nofit-a");
    until("degraded", Duration::from_secs(2), || a.status().state == State::Degraded).await;
    let err = a.status().last_error.unwrap();
    assert!(err.contains("/coreos.com/network/config") && err.contains("subnet length 12 does not fit"), "{err}");
    assert!(store.list().await.unwrap().leases.is_empty());
    a.stop().await;
}

#[tokio::test]
async fn a_network_overlapping_the_host_is_reported() {
    let store = MemStore::new(PREFIX);
    let dp = FakeDataplane::new(ip(1), Mac([2, 0, 0, 0, 0, 1]));
    dp.with(|s| s.host_networks = vec![("10.244.128.0/20".parse().unwrap(), "address on eth1".into())]);
    let a = start_in(&store, 1, dir("overlap-a"), dp, cfg());
    until("degraded", Duration::from_secs(2), || a.status().state == State::Degraded).await;
    let err = a.status().last_error.unwrap();
    assert!(err.contains("overlaps 10.244.128.0/20 on this host (address on eth1)"), "{err}");
    // The config was written from router.toml (create-only) before the check.
    let cfg = store.get_config().await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8(cfg).unwrap(),
        r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}"#
    );
    a.stop().await;
}

#[tokio::test]
async fn repeated_expiries_settle_on_one_lease() {
    // Stale events of its own key (a put from a lease it has since
    // replaced, a delete from before it leased again) must not make the
    // router lease again and again.
    let store = MemStore::new(PREFIX);
    let a = start(&store, 1, "settle-a");
    let sa = running(&a).await;
    let b = start(&store, 2, "settle-b");
    running(&b).await;
    for _ in 0..3 {
        let own = store.list().await.unwrap().leases.into_iter().find(|l| l.subnet == sa).map(|l| l.lease_id);
        if let Some(id) = own {
            store.expire(id);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    until("A holds its subnet again", Duration::from_secs(5), || {
        a.status().state == State::Running && a.subnet() == Some(sa)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lease = a.status().lease_id;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.status().lease_id, lease, "the lease keeps changing");
    assert_eq!(store.leases().len(), 2, "one lease per host: {:?}", store.leases());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_puts_of_its_own_key_do_not_make_it_lease_again_and_again() {
    let store = MemStore::new(PREFIX);
    let a = start(&store, 1, "stale-put-a");
    let sa = running(&a).await;
    // Two puts of A's own key (A's PublicIP, other leases) back to back,
    // as a re-lease racing a keep-alive leaves in A's watch queue.
    let own = store.list().await.unwrap().leases.into_iter().find(|l| l.subnet == sa).unwrap();
    let (x, y) = (store.grant(30).await.unwrap(), store.grant(30).await.unwrap());
    assert!(store.create_lease(sa, &own.attrs, x, Some(own.mod_revision)).await.unwrap());
    let rev = store.list().await.unwrap().leases.into_iter().find(|l| l.subnet == sa).unwrap().mod_revision;
    assert!(store.create_lease(sa, &own.attrs, y, Some(rev)).await.unwrap());
    // A notices at its next list that its key is on another lease, takes
    // it back once, and stays there.
    until("A holds its key on its own lease", Duration::from_secs(3), || {
        let st = a.status();
        st.state == State::Running && st.lease_id.as_deref().is_some_and(|l| l != format!("{:x}", own.lease_id))
    })
    .await;
    let lease = a.status().lease_id;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.status().lease_id, lease, "the lease keeps changing");
    assert_eq!(a.subnet(), Some(sa));
    a.stop().await;
}
