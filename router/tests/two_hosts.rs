//! Two hosts end to end: two network namespaces on one veth "segment"
//! (192.0.2.11 and 192.0.2.12), etcd in the first, the real `berth-router`
//! binary in each. The overlay carries a ping from host 1 to host 2's
//! container gateway, and host 2's clean stop removes it from host 1.
//! Needs root, etcd, iptables and busybox (its ping; all from
//! `berth-image deps`); it never skips.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_router::ipnet::Ipv4Net;
use berth_router::status::{State, Status};

struct Lab {
    ns: [String; 2],
    dir: PathBuf,
    children: Vec<Child>,
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

impl Lab {
    fn new() -> Lab {
        let id = std::process::id();
        let ns = [format!("brt1-{id}"), format!("brt2-{id}")];
        let dir = std::env::temp_dir().join(format!("berth-router-lab-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab { ns: ns.clone(), dir, children: Vec::new() };
        for n in &ns {
            run(&["ip", "netns", "add", n]);
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        run(&["ip", "link", "add", "v1", "netns", &ns[0], "type", "veth", "peer", "name", "v2", "netns", &ns[1]]);
        for (i, n) in ns.iter().enumerate() {
            let dev = format!("v{}", i + 1);
            run(&["ip", "-n", n, "addr", "add", &format!("192.0.2.1{}/24", i + 1), "dev", &dev]);
            run(&["ip", "-n", n, "link", "set", &dev, "up"]);
        }
        lab
    }

    fn exec(&self, host: usize, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[host]]).args(args);
        c
    }

    fn sh(&self, host: usize, cmd: &str) -> String {
        let out = self.exec(host, &["sh", "-c", cmd]).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn start_etcd(&mut self) {
        let data = self.dir.join("etcd");
        let url = "http://192.0.2.11:2379";
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        let child = self
            .exec(0, &["/usr/bin/etcd", "--name", "lab", "--data-dir", data.to_str().unwrap()])
            .args(["--listen-client-urls", url, "--advertise-client-urls", url])
            .args([
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
            ])
            .args(["--initial-cluster", "lab=http://127.0.0.1:2380"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        let t = Instant::now();
        while !self.exec(1, &["etcdctl", "--endpoints", url, "endpoint", "health"]).output().unwrap().status.success() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "etcd not healthy:\n{}",
                std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn host_dir(&self, host: usize) -> PathBuf {
        self.dir.join(format!("host{}", host + 1))
    }

    fn start_router(&mut self, host: usize) -> usize {
        let d = self.host_dir(host);
        std::fs::create_dir_all(&d).unwrap();
        let config = d.join("router.toml");
        std::fs::write(
            &config,
            format!(
                "etcd_endpoints = [\"http://192.0.2.11:2379\"]\ninterface = \"v{}\"\npublic_ip = \"192.0.2.1{}\"\nlease_ttl = \"5s\"\nreconcile_interval = \"1s\"\n",
                host + 1,
                host + 1
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("router.log")).unwrap();
        let p = |x: &str| d.join(x).to_str().unwrap().to_string();
        let child = self
            .exec(
                host,
                &[env!("CARGO_BIN_EXE_berth-router"), "--config", &p("router.toml"), "--status", &p("status.json")],
            )
            .args(["--state-dir", &p("state"), "--cni-dir", &p("cni")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    fn status(&self, host: usize) -> Status {
        Status::read(&self.host_dir(host).join("status.json")).unwrap_or_default()
    }

    fn log(&self, host: usize) -> String {
        std::fs::read_to_string(self.host_dir(host).join("router.log")).unwrap_or_default()
    }

    fn until(&self, what: &str, within: Duration, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(
                t.elapsed() < within,
                "not within {within:?}: {what}\nhost 1:\n{}\nhost 2:\n{}",
                self.log(0),
                self.log(1)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sigterm(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
}

#[test]
fn two_hosts_reach_each_other_over_the_overlay_and_a_leave_is_seen() {
    let mut lab = Lab::new();
    lab.start_etcd();
    lab.start_router(0);
    let r2 = lab.start_router(1);
    lab.until("both running with a peer", Duration::from_secs(20), || {
        (0..2).all(|h| {
            let s = lab.status(h);
            s.state == State::Running && s.peers.len() == 1
        })
    });
    let s1: Ipv4Net = lab.status(0).subnet.unwrap().parse().unwrap();
    let s2: Ipv4Net = lab.status(1).subnet.unwrap().parse().unwrap();
    assert_ne!(s1, s2);
    assert!(lab.host_dir(0).join("cni/05-berth-router.conflist").exists());

    // Host 1 -> host 2's container gateway (cni0's address), through
    // flannel.1: route, neighbour, FDB, VXLAN over the veth, and back.
    let gw2 = s2.hosts().next().unwrap().to_string();
    let ping = lab.sh(0, &format!("busybox ping -c 3 -W 2 {gw2}"));
    assert!(ping.contains("3 received") || ping.contains("3 packets received"), "{ping}");
    let link = lab.sh(0, "ip -d link show flannel.1");
    assert!(link.contains("vxlan id 1") && link.contains("dstport 8472") && link.contains("mtu 1450"), "{link}");
    let nat = lab.sh(0, "iptables -w -t nat -S BERTH-ROUTER-POSTRTG");
    assert!(nat.contains("-j MASQUERADE"), "{nat}");

    // Host 2 stops cleanly: host 1 drops its route, neighbour and FDB entry.
    sigterm(&lab.children[r2]);
    lab.until("host 2 stopped", Duration::from_secs(10), || lab.status(1).state == State::Stopped);
    lab.until("host 1 dropped host 2", Duration::from_secs(2), || {
        lab.sh(0, "ip route show dev flannel.1; ip neigh show dev flannel.1 nud permanent; bridge fdb show dev flannel.1 | grep dst || true").trim().is_empty()
    });
    assert!(lab.status(0).peers.is_empty());
    // Host 2 comes back with the same subnet, and is reachable again.
    lab.start_router(1);
    lab.until("host 2 back", Duration::from_secs(20), || {
        lab.status(1).state == State::Running && lab.status(0).peers.len() == 1
    });
    assert_eq!(lab.status(1).subnet.unwrap(), s2.to_string());
    let ping = lab.sh(0, &format!("busybox ping -c 1 -W 2 {gw2}"));
    assert!(ping.contains("1 received") || ping.contains("1 packets received"), "{ping}");
}
