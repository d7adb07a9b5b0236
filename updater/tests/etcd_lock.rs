//! The updater's real reboot lock against a real etcd: the slot is saved
//! in the state directory, a new process (after the reboot) re-attaches
//! and releases it, and another host waiting for the only slot gets it
//! then, told meanwhile who holds it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_cluster::testing::EtcdServer;
use berth_updater::config::{RebootLock as LockConfig, RebootStrategy};
use berth_updater::daemon::etcd_lock::{EtcdRebootLock, SLOT_FILE};
use berth_updater::daemon::RebootLock;

fn config(etcd: &EtcdServer) -> LockConfig {
    LockConfig {
        strategy: RebootStrategy::EtcdLock,
        max: 1,
        ttl: Duration::from_secs(3),
        endpoints: vec![etcd.endpoint()],
    }
}

fn state_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("berth-updater-lock-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_survives_the_updaters_restart_and_the_waiting_host_gets_it_after_the_release() {
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let (dir_a, dir_b) = (state_dir("a"), state_dir("b"));
    let a = EtcdRebootLock::new(&config(&etcd), "aaaa", "host-a", &dir_a);
    a.acquire(&|_| {}).await.unwrap();
    assert!(dir_a.join(SLOT_FILE).exists(), "the slot is not saved for after the reboot");
    drop(a); // the reboot: the process and its keep-alives end

    let b = Arc::new(EtcdRebootLock::new(&config(&etcd), "bbbb", "host-b", &dir_b));
    let said = Arc::new(Mutex::new(Vec::<String>::new()));
    let (b2, said2) = (Arc::clone(&b), Arc::clone(&said));
    let waiter = tokio::spawn(async move {
        let tell = move |what: String| said2.lock().unwrap().push(what);
        b2.acquire(&tell).await
    });

    let after = EtcdRebootLock::new(&config(&etcd), "aaaa", "host-a", &dir_a);
    assert!(after.resume().await.unwrap(), "the saved slot was not re-attached");
    // Past the 3 s TTL: kept alive by the new process, so B still waits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!waiter.is_finished(), "host-b took the slot host-a holds across its reboot");
    let first = said.lock().unwrap().first().cloned().unwrap_or_default();
    assert!(
        first.starts_with("waiting for a reboot slot (1 at once): held by host-a (machine aaaa, since "),
        "{first}"
    );

    assert!(after.release().await.unwrap(), "nothing was released");
    assert!(!dir_a.join(SLOT_FILE).exists(), "the saved slot outlived its release");
    tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
    assert!(dir_b.join(SLOT_FILE).exists());
    assert!(!after.release().await.unwrap(), "a second release found a slot");
    for d in [dir_a, dir_b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::test]
async fn without_etcd_no_slot_is_taken_and_the_error_names_etcd() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = state_dir("down");
    let lock = EtcdRebootLock::new(&config(&etcd), "cccc", "host-c", &dir);
    etcd.kill();
    let e = lock.acquire(&|_| {}).await.unwrap_err();
    assert!(e.starts_with(&format!("etcd at {}", etcd.endpoint())), "{e}");
    assert!(!dir.join(SLOT_FILE).exists());
    let _ = std::fs::remove_dir_all(dir);
}
