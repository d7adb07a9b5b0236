//! The reboot semaphore against a real etcd: one slot is held by one host
//! at a time, a waiter gets it when the holder releases, a holder that
//! dies loses it when its lease expires, and a slot saved before a reboot
//! is kept and released by the next process.

use std::time::{Duration, Instant};

use berth_cluster::reboot_lock::{LockError, RebootLock, Settings, Slot, HOLDERS_PREFIX, MAX_KEY};
use berth_cluster::testing::EtcdServer;

fn settings(etcd: &EtcdServer, ttl: u64) -> Settings {
    Settings {
        endpoints: vec![etcd.endpoint()],
        max: 1,
        ttl: Duration::from_secs(ttl),
        timeout: Duration::from_secs(5),
    }
}

async fn host(etcd: &EtcdServer, n: u32, ttl: u64) -> RebootLock {
    RebootLock::connect(settings(etcd, ttl), &format!("machine{n}"), &format!("host-{n}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn start() -> EtcdServer {
    EtcdServer::start().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_slot_the_second_host_waits_until_the_first_releases() {
    let etcd = start();
    let (one, two) = (host(&etcd, 1, 60).await, host(&etcd, 2, 60).await);
    let held = one.acquire(None, Some(Duration::from_secs(5)), |_| {}).await.unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let waiter = tokio::spawn(async move {
        two.acquire(None, None, move |status| {
            let _ = tx.send(status.holders_text());
        })
        .await
    });
    let said = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert!(said.starts_with("host-1 (machine machine1, since "), "the waiter is told who holds the slot: {said}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "the second host took a slot while the first held the only one");
    let status = one.status().await.unwrap();
    assert_eq!(status.max, 1);
    let queue: Vec<(&str, bool)> = status.queue.iter().map(|h| (h.value.hostname.as_str(), h.holds)).collect();
    assert_eq!(queue, [("host-1", true), ("host-2", false)]);

    let released = Instant::now();
    one.release(&held.slot).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
    assert!(released.elapsed() < Duration::from_secs(3), "the waiter took {:?}", released.elapsed());
    assert_eq!(second.slot.key, format!("{HOLDERS_PREFIX}machine2"));
    let status = one.status().await.unwrap();
    assert_eq!(status.holders_text().split(" (").next(), Some("host-2"));

    // The first host's lease is revoked: its key cannot come back with it.
    let mut c = etcd_client::Client::connect([etcd.endpoint()], None).await.unwrap();
    let ttl = c.lease_time_to_live(held.slot.lease, None).await.unwrap().ttl();
    assert!(ttl <= 0, "the released lease is still alive ({ttl} s)");
    let max = c.get(MAX_KEY, None).await.unwrap();
    assert_eq!(max.kvs().first().map(|kv| kv.value().to_vec()), Some(b"1".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_dies_loses_its_slot_when_its_lease_expires() {
    let etcd = start();
    let (one, two) = (host(&etcd, 1, 3).await, host(&etcd, 2, 60).await);
    let held = one.acquire(None, None, |_| {}).await.unwrap();
    // The holder's process dies: nobody keeps its lease alive any more.
    let died = Instant::now();
    drop(held);
    drop(one);
    let second = tokio::time::timeout(Duration::from_secs(15), two.acquire(None, None, |_| {})).await;
    let second = second.expect("the dead holder kept its slot past its lease").unwrap();
    let waited = died.elapsed();
    assert!(waited >= Duration::from_secs(2), "the slot was free before the dead holder's lease ran out ({waited:?})");
    assert_eq!(second.slot.machine_id, "machine2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_saved_before_a_reboot_is_kept_alive_and_released_by_the_next_process() {
    let etcd = start();
    let dir = std::env::temp_dir().join(format!("berth-reboot-lock-{}", std::process::id()));
    let file = dir.join("reboot-lock.json");
    let _ = std::fs::remove_dir_all(&dir);

    // Before the reboot: take the slot and save it; the process ends
    // (its keep-alives stop) with the lease still alive.
    let before = host(&etcd, 1, 3).await;
    let held = before.acquire(None, None, |_| {}).await.unwrap();
    held.slot.save(&file).unwrap();
    drop(held);
    drop(before);

    // After the reboot: a new process, a new client, the same lease.
    let after = host(&etcd, 1, 3).await;
    let slot = Slot::load(&file).unwrap().expect("the slot file is there");
    let resumed = after.resume(&slot).await.unwrap().expect("the saved lease is alive");
    let other = host(&etcd, 2, 60).await;
    let waiter = tokio::spawn(async move { other.acquire(None, None, |_| {}).await });
    // Well past the 3 s TTL: the new process keeps the lease alive.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!waiter.is_finished(), "the slot was lost across the 'reboot'");
    assert_eq!(after.status().await.unwrap().holders_text().split(" (").next(), Some("host-1"));

    // Blessed: release, and the waiter gets the slot.
    after.release(&resumed.slot).await.unwrap();
    Slot::forget(&file).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(got.slot.machine_id, "machine2");
    assert!(Slot::load(&file).unwrap().is_none());
    // A slot whose lease is gone is not resumed.
    assert!(after.resume(&slot).await.unwrap().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_times_out_says_who_holds_the_slot_and_leaves_the_queue() {
    let etcd = start();
    let (one, two) = (host(&etcd, 1, 60).await, host(&etcd, 2, 60).await);
    let _held = one.acquire(None, None, |_| {}).await.unwrap();
    let err = two.acquire(None, Some(Duration::from_secs(1)), |_| {}).await.err().expect("no timeout");
    match &err {
        LockError::Timeout { holders, .. } => assert!(holders.starts_with("host-1 "), "{err}"),
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(err.to_string().starts_with("no reboot slot free after 1s: held by host-1"), "{err}");
    let queue = one.status().await.unwrap().queue;
    assert_eq!(queue.len(), 1, "the waiter that gave up is still queued: {queue:?}");
}

#[tokio::test]
async fn an_unreachable_etcd_is_an_error_naming_the_endpoint() {
    let port = berth_cluster::testing::free_port().unwrap();
    let s = Settings {
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        timeout: Duration::from_secs(1),
        ..Settings::default()
    };
    let result = match RebootLock::connect(s, "machine1", "host-1").await {
        Err(e) => Err(e),
        Ok(lock) => lock.acquire(None, None, |_| {}).await.map(|_| ()),
    };
    let err = result.expect_err("acquired a slot without etcd");
    assert!(err.to_string().contains(&format!("etcd at http://127.0.0.1:{port}")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_restarts_with_its_saved_slot_keeps_its_place_in_the_queue() {
    let etcd = start();
    let (one, two, three) = (host(&etcd, 1, 60).await, host(&etcd, 2, 60).await, host(&etcd, 3, 60).await);
    let held = one.acquire(None, None, |_| {}).await.unwrap();
    // Host 2 queues, then host 3; host 2's waiting process ends.
    let queued = two.enqueue(None).await.unwrap();
    let saved = queued.slot.clone();
    drop(queued);
    let third = tokio::spawn(async move { three.acquire(None, None, |_| {}).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Host 2 again, with the slot it saved: still ahead of host 3.
    let again = host(&etcd, 2, 60).await;
    let second = tokio::spawn(async move { again.acquire(Some(&saved), None, |_| {}).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    one.release(&held.slot).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), second).await.unwrap().unwrap().unwrap();
    assert_eq!(got.slot.machine_id, "machine2");
    assert!(!third.is_finished(), "host 3 overtook host 2, which was queued first");
    let queue = one.status().await.unwrap().queue;
    let order: Vec<(&str, bool)> = queue.iter().map(|h| (h.value.hostname.as_str(), h.holds)).collect();
    assert_eq!(order, [("host-2", true), ("host-3", false)]);
}
