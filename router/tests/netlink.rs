//! The real data plane (rtnetlink) in a fresh network namespace: the
//! VXLAN device as flannel makes it, the bridge, the peers' route,
//! neighbour and FDB entries, checked with iproute2's `ip` and `bridge`;
//! stale entries removed by a convergence. Needs root (it never skips).

use std::net::Ipv4Addr;
use std::process::Command;

use berth_router::netlink::{Dataplane, RtDataplane, VxlanSpec};
use berth_router::plan::{self, Mac, Peer};

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn peer(n: u8) -> Peer {
    Peer {
        subnet: format!("10.244.{n}.0/24").parse().unwrap(),
        public_ip: Ipv4Addr::new(192, 0, 2, 10 + n),
        vtep_mac: Mac([2, 0, 0, 0, 0, n]),
    }
}

/// Runs `f` on a thread of its own in a new network namespace (the
/// namespace is the thread's; commands it spawns inherit it).
fn in_netns(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET): this test needs root");
        f();
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p));
}

async fn converge(dp: &RtDataplane, index: u32, peers: &[Peer]) -> usize {
    let kernel = dp.observe(index).await.unwrap();
    let changes = plan::plan(peers, &kernel);
    for c in &changes {
        dp.apply(index, c).await.unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    changes.len()
}

#[test]
fn vxlan_bridge_and_peer_entries_in_a_fresh_netns() {
    in_netns(|| {
        sh("ip link set lo up && ip link add eth0 type veth peer name eth0p && ip link set eth0p up && ip link set eth0 mtu 1500 up && ip addr add 192.0.2.11/24 dev eth0 && ip route add default via 192.0.2.1 dev eth0");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dp = RtDataplane::new().unwrap();
            let u = dp.underlay(None, None).await.unwrap();
            assert_eq!((u.name.as_str(), u.mtu, u.ip), ("eth0", 1500, Ipv4Addr::new(192, 0, 2, 11)), "the default route's interface");
            let host = dp.host_networks(&["flannel.1".into(), "cni0".into()]).await.unwrap();
            assert!(host.iter().any(|(n, w)| n.to_string() == "192.0.2.0/24" && w == "address on eth0"), "{host:?}");

            let spec = VxlanSpec {
                name: "flannel.1".into(),
                vni: 1,
                port: 8472,
                local: u.ip,
                underlay_index: u.index,
                mtu: u.mtu - 50,
                address: Some(Ipv4Addr::new(10, 244, 1, 0)),
            };
            let vtep = dp.ensure_vxlan(&spec).await.unwrap();
            let again = dp.ensure_vxlan(&spec).await.unwrap();
            assert_eq!(vtep, again, "ensuring twice keeps the device");
            let link = sh("ip -d link show flannel.1");
            for want in ["mtu 1450", "vxlan id 1", "local 192.0.2.11", "dev eth0", "dstport 8472", "nolearning", &vtep.mac.to_string()] {
                assert!(link.contains(want), "{want:?} not in:\n{link}");
            }
            assert!(link.contains("UP"), "{link}");
            assert!(sh("ip -4 addr show dev flannel.1").contains("inet 10.244.1.0/32"));

            dp.ensure_bridge("cni0", Ipv4Addr::new(10, 244, 1, 1), 24, 1450).await.unwrap();
            dp.ensure_bridge("cni0", Ipv4Addr::new(10, 244, 1, 1), 24, 1450).await.unwrap();
            let br = sh("ip -d -4 addr show dev cni0");
            assert!(br.contains("bridge") && br.contains("inet 10.244.1.1/24"), "{br}");

            assert_eq!(converge(&dp, vtep.index, &[peer(2), peer(3)]).await, 6);
            assert_eq!(converge(&dp, vtep.index, &[peer(2), peer(3)]).await, 0, "converged");
            let routes = sh("ip route show dev flannel.1");
            for n in [2, 3] {
                let want = format!("10.244.{n}.0/24 via 10.244.{n}.0 ");
                assert!(routes.lines().any(|l| l.starts_with(&want) && l.contains("onlink")), "{want:?} onlink not in:\n{routes}");
            }
            let neigh = sh("ip neigh show dev flannel.1");
            assert!(neigh.contains("10.244.2.0 lladdr 02:00:00:00:00:02 PERMANENT"), "{neigh}");
            let fdb = sh("bridge fdb show dev flannel.1");
            assert!(fdb.contains("02:00:00:00:00:03 dst 192.0.2.13 self permanent"), "{fdb}");

            // Host 3 leaves, and someone adds a stray route and neighbour by hand.
            sh("ip route add 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink && ip neigh add 10.244.9.0 lladdr 02:00:00:00:00:09 dev flannel.1 nud permanent && bridge fdb append 02:00:00:00:00:09 dev flannel.1 dst 192.0.2.19");
            assert_eq!(converge(&dp, vtep.index, &[peer(2)]).await, 6);
            let routes = sh("ip route show dev flannel.1");
            assert!(routes.contains("10.244.2.0/24") && !routes.contains("10.244.3.0") && !routes.contains("10.244.9.0"), "{routes}");
            let neigh = sh("ip neigh show dev flannel.1");
            assert!(!neigh.contains("10.244.3.0") && !neigh.contains("10.244.9.0"), "{neigh}");
            let fdb = sh("bridge fdb show dev flannel.1");
            assert!(fdb.contains("02:00:00:00:00:02 dst 192.0.2.12") && !fdb.contains("192.0.2.13") && !fdb.contains("192.0.2.19"), "{fdb}");

            // A device whose settings differ (another port) is made again.
            let other = VxlanSpec { port: 4789, ..spec.clone() };
            dp.ensure_vxlan(&other).await.unwrap();
            assert!(sh("ip -d link show flannel.1").contains("dstport 4789"));
        });
    });
}

#[test]
fn nat_chains_are_made_once_and_hooked_first() {
    use berth_router::nat::{Iptables, Nat};
    in_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // Something else's masquerade rule is already there (the image's default CNI network).
            sh("iptables -w -t nat -A POSTROUTING -s 10.88.0.0/16 -j MASQUERADE");
            let nat = Iptables::default();
            let net = "10.244.0.0/16".parse().unwrap();
            nat.ensure(net).await.unwrap();
            nat.ensure(net).await.unwrap();
            let chain = sh("iptables -w -t nat -S BERTH-ROUTER-POSTRTG");
            assert_eq!(
                chain.lines().filter(|l| l.starts_with("-A")).collect::<Vec<_>>(),
                [
                    "-A BERTH-ROUTER-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN",
                    "-A BERTH-ROUTER-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE"
                ]
            );
            let post = sh("iptables -w -t nat -S POSTROUTING");
            let rules: Vec<&str> = post.lines().filter(|l| l.starts_with("-A")).collect();
            assert_eq!(rules.first(), Some(&"-A POSTROUTING -j BERTH-ROUTER-POSTRTG"), "{post}");
            assert_eq!(rules.iter().filter(|l| l.contains("BERTH-ROUTER")).count(), 1, "hooked twice:\n{post}");
            let fwd = sh("iptables -w -S BERTH-ROUTER-FWD");
            assert!(fwd.contains("-A BERTH-ROUTER-FWD -s 10.244.0.0/16 -j ACCEPT"), "{fwd}");
            // Another network: the chain is rewritten, not appended to.
            nat.ensure("10.50.0.0/16".parse().unwrap()).await.unwrap();
            let chain = sh("iptables -w -t nat -S BERTH-ROUTER-POSTRTG");
            assert!(!chain.contains("10.244.") && chain.contains("10.50.0.0/16"), "{chain}");
        });
    });
}
