//! What clients and peers can make a running daemon hold in memory: API streams a client
//! never reads, and large frames peers leave half sent. Both are bounded, and memory
//! goes back once they end.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use hyperd_proto::v1::cores_client::CoresClient;
use hyperd_proto::v1::{AppendRequest, CreateRequest, ReadRequest};
use hyperd_tests::daemon::Daemon;

const MIB: u64 = 1 << 20;
const BLOCK: usize = 8 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_streams_hold_a_few_blocks_each_and_give_them_back() {
    let daemon = Daemon::start().unwrap();
    let mut cores = CoresClient::new(daemon.channel().await.unwrap())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let key = cores
        .create(CreateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key;
    for i in 0..24u8 {
        cores
            .append(AppendRequest {
                key: key.clone(),
                blocks: vec![Bytes::from(vec![i; BLOCK])],
            })
            .await
            .unwrap();
    }
    // Past the daemon's periodic trim of freed memory.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = daemon.settled_rss().await.unwrap();

    // 16 clients each open a read of the whole core and never read from it.
    let mut streams = Vec::new();
    for _ in 0..16 {
        let mut client =
            CoresClient::new(daemon.channel().await.unwrap()).max_decoding_message_size(64 << 20);
        let stream = client
            .read(ReadRequest {
                key: key.clone(),
                start: 0,
                end: None,
                live: false,
                wait: false,
            })
            .await
            .unwrap()
            .into_inner();
        streams.push((client, stream));
    }
    // Past the daemon's periodic trim, so that only memory in use is counted.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let held = daemon.settled_rss().await.unwrap();
    let per_stream = held.saturating_sub(before) / 16;
    eprintln!(
        "RSS before {} MiB, with 16 unread streams {} MiB: {} MiB a stream",
        before / MIB,
        held / MIB,
        per_stream / MIB
    );
    // Each stream holds at most a few blocks (one being encoded, one in HTTP/2), not the
    // whole core (24 blocks).
    assert!(
        per_stream <= 3 * BLOCK as u64,
        "{} MiB per unread stream",
        per_stream / MIB
    );
    // The daemon still answers.
    cores
        .info(hyperd_proto::v1::InfoRequest { key: key.clone() })
        .await
        .unwrap();

    drop(streams);
    // Freed memory goes back to the system within seconds.
    let mut after = daemon.rss().unwrap();
    for _ in 0..100 {
        if after <= before + 16 * MIB {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = daemon.rss().unwrap();
    }
    eprintln!("RSS after the streams ended {} MiB", after / MIB);
    assert!(
        after <= before + 16 * MIB,
        "RSS stayed at {} MiB after the streams ended (it was {} MiB before)",
        after / MIB,
        before / MIB
    );
}

/// The first `fill` bytes of a frame with a body of `body` bytes on channel 1.
fn frame_start(body: usize, fill: usize) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(&varint::encode(body as u64 + 1));
    out.extend_from_slice(&varint::encode(1 << 4 | 14));
    out.extend_from_slice(&vec![7u8; fill]);
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_large_frames_are_bounded_across_connections() {
    use hyperd_tests::raw_peer::RawPeer;
    let daemon = Daemon::start().unwrap();
    let address: std::net::SocketAddr = daemon.listen.parse().unwrap();
    let before = daemon.settled_rss().await.unwrap();
    // 16 peers (from 4 addresses) each send 7 MB of a frame just under 8 MiB, then stall:
    // 112 MB if the daemon buffered them all.
    let body = (8 << 20) - 64;
    let mut peers = tokio::task::JoinSet::new();
    for i in 0..16u8 {
        let from = std::net::IpAddr::from([127, 0, 0, 10 + i / 4]);
        let mut peer = RawPeer::connect(from, address).await.unwrap();
        peers.spawn(async move {
            // A peer the daemon is not reading from (no budget left) stalls in here...
            peer.send(&frame_start(body, 7_000_000)).await.unwrap();
            // ... the others right after, keeping the connection open.
            std::future::pending::<()>().await;
        });
    }
    // Long enough for the daemon to take in what it will (7 MB a peer).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = daemon.settled_rss().await.unwrap();
    eprintln!(
        "RSS before {} MiB, with 16 half-sent 8 MiB frames {} MiB",
        before / MIB,
        held / MIB
    );
    // The daemon buffers at most its frame budget (64 MiB) across connections, not 7 MB
    // for each.
    assert!(
        held <= before + 80 * MIB,
        "{} MiB held by 16 half-sent frames",
        (held - before) / MIB
    );
    // And it still serves.
    let mut cores = CoresClient::new(daemon.channel().await.unwrap());
    cores.create(CreateRequest::default()).await.unwrap();
    peers.abort_all();
}
