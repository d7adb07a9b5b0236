//! `berthctl status`'s etcd section against a real etcd (Debian's
//! /usr/bin/etcd, one member named `berth` as on a single-node machine)
//! and against none: one healthy member, or a loud "not answering" within
//! the timeout.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_init::berthctl::etcd::{section, ETCDCTL, TIMEOUT};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Etcd {
    child: Child,
    dir: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("berthctl-etcd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A unit file whose health check asks `url`, as provisioning writes it.
fn unit(dir: &std::path::Path, url: &str) -> PathBuf {
    let p = dir.join("etcd.toml");
    let text = format!(
        "[service]\nexec = [\"/usr/bin/etcd\", \"--listen-client-urls\", \"{url}\"]\n\
         [health]\ncheck = {{ command = [\"/usr/bin/etcdctl\", \"--endpoints\", \"{url}\", \"endpoint\", \"health\"] }}\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_single_node_shows_one_healthy_member() {
    let dir = temp("one");
    let (client, peer) = (format!("http://127.0.0.1:{}", free_port()), format!("http://127.0.0.1:{}", free_port()));
    let child = Command::new("/usr/bin/etcd")
        .args(["--name", "berth", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("berth={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("/usr/bin/etcd (package etcd-server) is needed by this test");
    let etcd = Etcd { child, dir };
    let unit = unit(&etcd.dir, &client);
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = section(&unit, &etcd.dir.join("none"), std::path::Path::new(ETCDCTL), TIMEOUT);
        if text.contains("1 healthy") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.starts_with(&format!("\netcd: 1 member, 1 healthy (asked {client})\n")), "{text}");
    assert!(text.contains("  berth  healthy ("), "{text}");
    assert!(text.contains(&format!("; client {client}; peer {peer}\n")), "{text}");
}

#[test]
fn no_etcd_is_said_within_the_timeout() {
    let dir = temp("none");
    let url = format!("http://127.0.0.1:{}", free_port());
    let unit = unit(&dir, &url);
    let started = Instant::now();
    let text = section(&unit, &dir.join("none"), std::path::Path::new(ETCDCTL), Duration::from_secs(3));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(text.starts_with(&format!("\netcd: NOT ANSWERING at {url}: `etcdctl member list`: ")), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
