//! The test etcd is a real etcd: a key put with the v3 client reads back,
//! and it survives a kill and restart with its data.

use berth_cluster::testing::EtcdServer;

#[tokio::test]
async fn the_test_etcd_keeps_a_key_across_a_restart() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await.expect("connecting");
    client.put("/berth/test", "1", None).await.expect("put");
    etcd.restart().unwrap_or_else(|e| panic!("{e}"));
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await.expect("connecting again");
    let got = client.get("/berth/test", None).await.expect("get");
    let value = got.kvs().first().map(|kv| kv.value().to_vec());
    assert_eq!(value.as_deref(), Some(&b"1"[..]), "the key did not survive the restart");
}
