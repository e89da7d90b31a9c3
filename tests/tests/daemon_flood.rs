//! A flood of connections from many addresses against a real daemon: silent ones that
//! never handshake, and handshaked ones that replicate nothing. The per-address cap holds,
//! replication with a legitimate peer goes on during the flood, new legitimate peers still
//! get in (taking the place of flood connections), and the daemon can still dial out.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyperd_proto::v1::cores_client::CoresClient;
use hyperd_proto::v1::peers_client::PeersClient;
use hyperd_proto::v1::{AppendRequest, CreateRequest, DialRequest, FollowRequest, GetRequest};
use hyperd_tests::daemon::Daemon;
use hyperd_tests::raw_peer::{connect_from, RawPeer};
use tokio::io::AsyncReadExt;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Whether the daemon closed `stream` within `within` (it reads EOF or an error).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn dial(address: &str) -> DialRequest {
    DialRequest {
        address: address.to_string(),
        once: true,
        timeout_ms: 5000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_does_not_lock_out_peers_or_stop_replication() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        "max_peers = 24\nmax_peers_per_ip = 4\n",
    )
    .unwrap();
    let a = Daemon::start_in(&home, "127.0.0.1:0").unwrap();
    let address: SocketAddr = a.listen.parse().unwrap();
    let mut a_cores = CoresClient::new(a.channel().await.unwrap());
    let key = a_cores
        .create(CreateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key;
    let append = |text: String| AppendRequest {
        key: key.clone(),
        blocks: vec![Bytes::from(text)],
    };
    a_cores.append(append("before".into())).await.unwrap();

    // B replicates the core live before the flood.
    let b = Daemon::start().unwrap();
    PeersClient::new(b.channel().await.unwrap())
        .dial(dial(&a.listen))
        .await
        .unwrap();
    let mut b_cores = CoresClient::new(b.channel().await.unwrap());
    b_cores
        .follow(FollowRequest {
            key: key.clone(),
            download_all: true,
            seeding: None,
        })
        .await
        .unwrap();
    let get = |index| GetRequest {
        key: key.clone(),
        index,
        timeout_ms: 10_000,
    };
    b_cores.get(get(0)).await.unwrap();

    // One address may hold 4 connections; the rest are closed at once.
    let mut from_one = Vec::new();
    for _ in 0..8 {
        from_one.push(connect_from(ip(2), address).await.unwrap());
    }
    let mut refused = 0;
    for stream in &mut from_one[4..] {
        if closed_within(stream, Duration::from_secs(1)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, 4, "{}", a.log());
    assert!(a.log().contains("max_peers_per_ip"), "{}", a.log());

    // Silent connections from many addresses fill the rest of the incoming budget, and
    // handshaked ones that replicate nothing come on top.
    let mut silent = Vec::new();
    for i in 0..20u8 {
        silent.push(connect_from(ip(3 + i / 4), address).await.unwrap());
    }
    let mut idle = Vec::new();
    for i in 0..12u8 {
        if let Ok(peer) = RawPeer::connect(ip(20 + i / 4), address).await {
            idle.push(peer);
        }
    }

    // Replication with B goes on.
    for i in 1..=3u64 {
        a_cores.append(append(format!("during {i}"))).await.unwrap();
        let block = b_cores.get(get(i)).await.unwrap().into_inner().data;
        assert_eq!(block, format!("during {i}").as_bytes());
    }

    // A new legitimate peer gets in: a connection still handshaking, or one that has
    // replicated nothing for a while, makes room for it.
    let c = Daemon::start().unwrap();
    let start = Instant::now();
    let joined = loop {
        match PeersClient::new(c.channel().await.unwrap())
            .dial(dial(&a.listen))
            .await
        {
            Ok(_) => break true,
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(_) => break false,
        }
    };
    assert!(joined, "a legitimate peer could not get in\n{}", a.log());
    assert!(
        a.log().contains("to make room for a new one"),
        "{}",
        a.log()
    );
    let mut c_cores = CoresClient::new(c.channel().await.unwrap());
    c_cores
        .follow(FollowRequest {
            key: key.clone(),
            download_all: false,
            seeding: None,
        })
        .await
        .unwrap();
    assert_eq!(
        &c_cores.get(get(3)).await.unwrap().into_inner().data[..],
        b"during 3"
    );

    // A dials out whatever the incoming side looks like.
    let d = Daemon::start().unwrap();
    PeersClient::new(a.channel().await.unwrap())
        .dial(dial(&d.listen))
        .await
        .unwrap();

    // Connections that never handshake are closed within a few seconds.
    let mut timed_out = 0;
    for stream in &mut silent {
        if closed_within(stream, Duration::from_secs(8)).await {
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, silent.len());
    drop((from_one, idle));
}
