//! The download scheduler: several peers share a download, a vanished peer's requests
//! move to another, ranges by priority, linear order, cancellation, feed extensions.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use hypercore::{Event, Feed};
use hypercore_protocol::Protocol;
use hypercore_replication::{DownloadRange, Replicator, ReplicatorOptions};
use hyperd_testkit::{init_tracing, memory_clone, protocol_options, protocol_pair};

async fn writer(blocks: u64, size: usize) -> Feed {
    let feed = Feed::memory().await.unwrap();
    let data: Vec<Bytes> = (0..blocks)
        .map(|i| Bytes::from(vec![(i % 251) as u8; size]))
        .collect();
    for chunk in data.chunks(500) {
        feed.append_batch(chunk.to_vec()).await.unwrap();
    }
    feed
}

/// Connects two replicators over an in-memory stream (live), returning both protocols.
async fn connect(a: &Replicator, b: &Replicator) -> (Protocol, Protocol) {
    let (x, y) = tokio::io::duplex(1 << 20);
    let (a_options, b_options) = (protocol_options(true, true), protocol_options(false, true));
    let ((pa, _), (pb, _)) = protocol_pair(x, a_options, y, b_options).await.unwrap();
    a.attach(pa.open(a.feed().key()).unwrap(), true);
    b.attach(pb.open(b.feed().key()).unwrap(), true);
    (pa, pb)
}

#[tokio::test]
async fn a_download_is_shared_between_seeders() {
    init_tracing();
    let w = writer(3000, 2048).await;
    let mirror = memory_clone(w.key(), false).await.unwrap();
    let (rw, rm) = (
        Replicator::new(w.clone(), Default::default()),
        Replicator::new(mirror.clone(), Default::default()),
    );
    let _c = connect(&rw, &rm).await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while mirror.downloaded(0, None) < 3000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();

    // A sparse reader downloads from both the writer and the mirror.
    let reader = memory_clone(w.key(), true).await.unwrap();
    let rr = Replicator::new(reader.clone(), Default::default());
    let _a = connect(&rw, &rr).await;
    let _b = connect(&rm, &rr).await;
    rr.wait_for_peers(2).await;
    tokio::time::timeout(
        Duration::from_secs(20),
        rr.download(DownloadRange::new(0, 3000)),
    )
    .await
    .unwrap()
    .unwrap();
    let stats = rr.stats();
    assert_eq!(stats.totals.downloaded_blocks, 3000);
    assert_eq!(stats.peers.len(), 2);
    for p in &stats.peers {
        assert!(
            p.traffic.downloaded_blocks > 100,
            "each seeder served a share: {stats:?}"
        );
    }
    assert_eq!(reader.audit().await.unwrap().invalid, 0);
}

#[tokio::test]
async fn a_vanished_seeders_blocks_come_from_another() {
    let w = writer(4000, 4096).await;
    let mirror = memory_clone(w.key(), false).await.unwrap();
    let (rw, rm) = (
        Replicator::new(w.clone(), Default::default()),
        Replicator::new(mirror.clone(), Default::default()),
    );
    let _c = connect(&rw, &rm).await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while mirror.downloaded(0, None) < 4000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();

    let reader = memory_clone(w.key(), true).await.unwrap();
    let rr = Replicator::new(reader.clone(), Default::default());
    let (_pa, _) = connect(&rw, &rr).await;
    let (pb, _) = connect(&rm, &rr).await;
    rr.wait_for_peers(2).await;
    let download = rr.download(DownloadRange::new(0, 4000));
    // Once some blocks have arrived, the mirror vanishes mid-transfer.
    let mut events = reader.events();
    let mut seen = 0;
    while seen < 200 {
        if let Ok(Event::Download { .. }) = events.recv().await {
            seen += 1;
        }
    }
    pb.destroy("test: mirror vanished");
    tokio::time::timeout(Duration::from_secs(20), download)
        .await
        .unwrap()
        .unwrap();
    assert!(reader.has_range(0, 4000));
    assert_eq!(rr.peer_count(), 1);
}

#[tokio::test]
async fn higher_priority_ranges_first_and_linear_in_order() {
    let w = writer(2000, 100).await;
    let reader = memory_clone(w.key(), true).await.unwrap();
    let (rw, rr) = (
        Replicator::new(w.clone(), Default::default()),
        Replicator::new(
            reader.clone(),
            ReplicatorOptions {
                max_requests: 1,
                ..Default::default()
            },
        ),
    );
    let _c = connect(&rw, &rr).await;
    reader
        .update(Some(2000), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    let mut order = Vec::new();
    let mut events = reader.events();
    let low = rr.download(DownloadRange {
        start: 0,
        end: Some(100),
        linear: true,
        priority: 0,
    });
    let high = rr.download(DownloadRange {
        start: 1000,
        end: Some(1100),
        linear: true,
        priority: 5,
    });
    let both = async {
        let (a, b) = tokio::join!(low, high);
        a.unwrap();
        b.unwrap();
    };
    tokio::pin!(both);
    loop {
        tokio::select! {
            _ = &mut both => break,
            e = events.recv() => if let Ok(Event::Download { index, .. }) = e { order.push(index) },
        }
    }
    while let Ok(Event::Download { index, .. }) = events.try_recv() {
        order.push(index);
    }
    assert_eq!(order.len(), 200);
    // With one request at a time, the high-priority range goes first, in order.
    let first_high = order.iter().position(|&i| i >= 1000).unwrap();
    let last_high = order.iter().rposition(|&i| i >= 1000).unwrap();
    assert!(
        first_high <= 1 && last_high < 110,
        "high priority first: {order:?}"
    );
    let highs: Vec<u64> = order.iter().copied().filter(|&i| i >= 1000).collect();
    assert!(
        highs.windows(2).all(|w| w[0] < w[1]),
        "linear order: {highs:?}"
    );
}

#[tokio::test]
async fn dropping_a_download_cancels_it() {
    let w = writer(5000, 10_000).await;
    let reader = memory_clone(w.key(), true).await.unwrap();
    let (rw, rr) = (
        Replicator::new(w.clone(), Default::default()),
        Replicator::new(
            reader.clone(),
            ReplicatorOptions {
                max_requests: 2,
                ..Default::default()
            },
        ),
    );
    let _c = connect(&rw, &rr).await;
    reader
        .update(Some(5000), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    let download = rr.download(DownloadRange::new(0, 5000));
    let _ = tokio::time::timeout(Duration::from_millis(50), download).await;
    // Requests already in flight still land; after that the count must stop growing.
    let started = std::time::Instant::now();
    let mut last = reader.downloaded(0, None);
    let mut stable_since = std::time::Instant::now();
    while stable_since.elapsed() < Duration::from_millis(750) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "downloads never stopped after the cancel ({last} blocks)"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
        let n = reader.downloaded(0, None);
        if n != last {
            last = n;
            stable_since = std::time::Instant::now();
        }
    }
    assert!(
        last < 100,
        "only requests in flight at the cancel completed, got {last}"
    );
}

#[tokio::test]
async fn a_range_already_stored_resolves_at_once() {
    // Found by the JS interop tests: a clone whose blocks arrived with the length, before
    // it asked for the range, waited forever.
    let w = writer(10, 10).await;
    let rw = Replicator::new(w.clone(), Default::default());
    tokio::time::timeout(
        Duration::from_secs(1),
        rw.download(DownloadRange::new(0, 10)),
    )
    .await
    .unwrap()
    .unwrap();
    let r = memory_clone(w.key(), false).await.unwrap();
    let rr = Replicator::new(r.clone(), Default::default());
    let _c = connect(&rw, &rr).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while r.downloaded(0, None) < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(1),
        rr.download(DownloadRange::new(3, 7)),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn feed_extensions_reach_the_other_side() {
    let w = writer(10, 10).await;
    let r = memory_clone(w.key(), false).await.unwrap();
    let (rw, rr) = (
        Replicator::new(w.clone(), Default::default()),
        Replicator::new(r.clone(), Default::default()),
    );
    let mut ew = rw.register_extension("chat").unwrap();
    let mut er = rr.register_extension("chat").unwrap();
    let _other = rr.register_extension("another").unwrap();
    assert!(rr.register_extension("chat").is_err());
    // A dropped handle frees its name.
    let dropped = rr.register_extension("dropped").unwrap();
    assert!(rr.extension_sender("dropped").is_some());
    drop(dropped);
    assert!(rr.extension_sender("dropped").is_none());
    let _again = rr.register_extension("dropped").unwrap();
    let (pw, _pr) = connect(&rw, &rr).await;
    rr.wait_for_peers(1).await;
    rw.wait_for_peers(1).await;
    // Options travel after the channel opens; retry the broadcast until it lands.
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            ew.broadcast(Bytes::from_static(b"hello from the writer"));
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), er.recv()).await {
                return m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&got.1[..], b"hello from the writer");
    assert_eq!(got.0, pw.local_key());
    assert!(er.send(&got.0, Bytes::from_static(b"hi back")));
    let back = tokio::time::timeout(Duration::from_secs(5), ew.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back.1[..], b"hi back");
    assert!(ew.remote_supports(&back.0));

    // Other tasks send through a sender of the registered extension.
    let sender = rr.extension_sender("chat").unwrap();
    assert!(sender == er.sender() && sender != rr.extension_sender("another").unwrap());
    assert!(rr.extension_sender("unknown").is_none());
    assert_eq!(sender.broadcast(Bytes::from_static(b"from a sender")), 1);
    let third = tokio::time::timeout(Duration::from_secs(5), ew.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&third.1[..], b"from a sender");
}

#[tokio::test]
async fn a_block_list_downloads_just_those_blocks() {
    let w = writer(2000, 100).await;
    let reader = memory_clone(w.key(), true).await.unwrap();
    let (rw, rr) = (
        Replicator::new(w.clone(), Default::default()),
        Replicator::new(reader.clone(), Default::default()),
    );
    let _c = connect(&rw, &rr).await;
    let blocks = vec![1500, 7, 900, 7, 1999, 3];
    tokio::time::timeout(Duration::from_secs(10), rr.download_blocks(blocks))
        .await
        .unwrap()
        .unwrap();
    for b in [3, 7, 900, 1500, 1999] {
        assert!(reader.has(b), "block {b}");
    }
    assert_eq!(reader.downloaded(0, None), 5, "only the listed blocks");
    // Blocks already stored (or none at all) are done at once.
    tokio::time::timeout(Duration::from_secs(1), rr.download_blocks(vec![7, 3]))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), rr.download_blocks(Vec::new()))
        .await
        .unwrap()
        .unwrap();
}
