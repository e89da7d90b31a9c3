#![allow(clippy::unwrap_used)]
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use hypercore::storage::MemoryStorage;
use hypercore::{Feed, FeedOptions};
use hypercore_protocol::ProtocolOptions;
use hypercore_replication::{replicate, ReplicateOptions, Replicator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_clones_from_js_seed() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = hyperd_tests::node("seed.js")
        .unwrap()
        .args([
            "--dir",
            dir.path().join("seed").to_str().unwrap(),
            "--blocks",
            "300",
            "--size",
            "1000",
            "--no-live",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(seed.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let key: hypercore::PublicKey = ready["key"].as_str().unwrap().parse().unwrap();
    let feed = Feed::open(
        MemoryStorage::new(),
        FeedOptions {
            key: Some(key),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let rep = Replicator::new(feed.clone(), Default::default());
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", ready["port"].as_u64().unwrap() as u16))
        .await
        .unwrap();
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        replicate(
            &rep,
            tcp,
            ReplicateOptions {
                protocol: ProtocolOptions {
                    initiator: true,
                    ..Default::default()
                },
            },
        ),
    )
    .await
    .unwrap();
    println!(
        "result {res:?} len {} downloaded {}",
        feed.len(),
        feed.downloaded(0, None)
    );
    res.unwrap();
    assert_eq!(feed.downloaded(0, None), 300);
    let blocks: Vec<bytes::Bytes> = feed.get_batch(0, 300).await.unwrap();
    assert_eq!(
        hyperd_tests::blake2b_concat(blocks.iter().map(|b| &b[..])),
        ready["blake2b"].as_str().unwrap()
    );
    drop(seed.stdin.take());
    seed.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_clones_from_rust_seed() {
    let feed = Feed::memory().await.unwrap();
    let blocks: Vec<Vec<u8>> = (0..300)
        .map(|i| hyperd_tests::make_block(i, 1000))
        .collect();
    feed.append_batch(blocks.clone()).await.unwrap();
    let rep = Replicator::new(feed.clone(), Default::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        replicate(&rep, tcp, ReplicateOptions::default()).await
    });
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        hyperd_tests::node("clone.js")
            .unwrap()
            .args([
                "--key",
                &feed.key().to_hex(),
                "--connect",
                &format!("127.0.0.1:{port}"),
                "--dir",
                dir.path().join("c").to_str().unwrap(),
                "--timeout",
                "15000",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    println!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let res: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(res["ok"], true);
    assert_eq!(
        res["blake2b"].as_str().unwrap(),
        hyperd_tests::blake2b_concat(blocks.iter().map(|b| &b[..]))
    );
    let r = tokio::time::timeout(Duration::from_secs(5), server).await;
    println!("server: {r:?}");
}
