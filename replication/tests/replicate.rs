//! Rust peers replicating with each other over in-memory byte streams.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use hypercore::Feed;
use hypercore_protocol::{Protocol, ProtocolOptions};
use hypercore_replication::{
    replicate, DownloadRange, ReplicateOptions, Replicator, ReplicatorOptions,
};
use hyperd_testkit::{init_tracing, memory_clone};

/// The longest an update waits for peers in these tests.
const LIMIT: Duration = Duration::from_secs(20);

async fn writer(blocks: u64) -> Feed {
    let feed = Feed::memory().await.unwrap();
    let data: Vec<Bytes> = (0..blocks)
        .map(|i| Bytes::from(format!("block {i}").into_bytes()))
        .collect();
    for chunk in data.chunks(1000) {
        feed.append_batch(chunk.to_vec()).await.unwrap();
    }
    feed
}

fn opts(initiator: bool, live: bool) -> ReplicateOptions {
    ReplicateOptions {
        protocol: ProtocolOptions {
            initiator,
            live,
            ..Default::default()
        },
    }
}

/// Replicates two feeds over a duplex; returns both results.
async fn sync(
    a: &Replicator,
    b: &Replicator,
    live: bool,
) -> (
    Result<(), hypercore_replication::Error>,
    Result<(), hypercore_replication::Error>,
) {
    let (x, y) = tokio::io::duplex(1 << 20);
    let (ra, rb) = tokio::join!(
        replicate(a, x, opts(true, live)),
        replicate(b, y, opts(false, live))
    );
    (ra, rb)
}

#[tokio::test]
async fn one_shot_full_download_ends_on_both_sides() {
    let w = writer(2500).await;
    let r = memory_clone(w.key(), false).await.unwrap();
    let (rw, rr) = (
        Replicator::new(w.clone(), ReplicatorOptions::default()),
        Replicator::new(r.clone(), ReplicatorOptions::default()),
    );
    let (a, b) = tokio::time::timeout(Duration::from_secs(30), sync(&rw, &rr, false))
        .await
        .unwrap();
    a.unwrap();
    b.unwrap();
    assert_eq!(r.len(), 2500);
    assert_eq!(r.downloaded(0, None), 2500);
    for i in [0, 1, 1234, 2499] {
        assert_eq!(r.get(i).await.unwrap(), w.get(i).await.unwrap());
    }
    let audit = r.audit().await.unwrap();
    assert_eq!((audit.valid, audit.invalid), (2500, 0));
    let (ws, rs) = (rw.stats().totals, rr.stats().totals);
    assert_eq!(rs.downloaded_blocks, 2500);
    assert_eq!(ws.uploaded_blocks, 2500);
    assert_eq!(rs.downloaded_bytes, w.byte_len());
}

#[tokio::test]
async fn empty_and_single_block_feeds() {
    for n in [0u64, 1] {
        let w = writer(n).await;
        let r = memory_clone(w.key(), false).await.unwrap();
        let (a, b) = tokio::time::timeout(
            Duration::from_secs(10),
            sync(
                &Replicator::new(w.clone(), Default::default()),
                &Replicator::new(r.clone(), Default::default()),
                false,
            ),
        )
        .await
        .unwrap();
        a.unwrap();
        b.unwrap();
        assert_eq!(r.len(), n);
        assert_eq!(r.downloaded(0, None), n);
    }
}

#[tokio::test]
async fn sparse_clone_fetches_only_what_is_asked() {
    let w = writer(5000).await;
    let r = memory_clone(w.key(), true).await.unwrap();
    let (rw, rr) = (
        Replicator::new(w.clone(), Default::default()),
        Replicator::new(r.clone(), Default::default()),
    );
    let (x, y) = tokio::io::duplex(1 << 20);
    let t1 = tokio::spawn({
        let rw = rw.clone();
        async move { replicate(&rw, x, opts(true, true)).await }
    });
    let t2 = tokio::spawn({
        let rr = rr.clone();
        async move { replicate(&rr, y, opts(false, true)).await }
    });
    // The length arrives with the first Haves; `update` waits for it.
    let len = tokio::time::timeout(Duration::from_secs(10), r.update(Some(1), None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(len, 5000);
    for i in [4999, 3, 2500] {
        let got = tokio::time::timeout(Duration::from_secs(10), r.get(i))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, w.get(i).await.unwrap());
    }
    assert_eq!(r.downloaded(0, None), 3);
    // A range download fetches exactly the range.
    tokio::time::timeout(
        Duration::from_secs(10),
        rr.download(DownloadRange::new(100, 200)),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(r.has_range(100, 200));
    assert_eq!(r.downloaded(0, None), 103);
    t1.abort();
    t2.abort();
}

#[tokio::test]
async fn live_replication_follows_appends() {
    init_tracing();
    let w = writer(10).await;
    let r = memory_clone(w.key(), false).await.unwrap();
    let (rw, rr) = (
        Replicator::new(w.clone(), Default::default()),
        Replicator::new(r.clone(), Default::default()),
    );
    let (x, y) = tokio::io::duplex(1 << 20);
    let t1 = tokio::spawn({
        let rw = rw.clone();
        async move { replicate(&rw, x, opts(true, true)).await }
    });
    let t2 = tokio::spawn({
        let rr = rr.clone();
        async move { replicate(&rr, y, opts(false, true)).await }
    });
    tokio::time::timeout(Duration::from_secs(10), r.update(Some(10), None))
        .await
        .unwrap()
        .unwrap();
    for round in 0..5u64 {
        w.append_batch((0..3).map(|k| Bytes::from(format!("live {round} {k}"))))
            .await
            .unwrap();
        let want = 10 + 3 * (round + 1);
        let len = tokio::time::timeout(Duration::from_secs(10), r.update(Some(want), None))
            .await
            .unwrap()
            .unwrap();
        assert!(len >= want);
        let last = tokio::time::timeout(Duration::from_secs(10), r.get(want - 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&last[..], format!("live {round} 2").as_bytes());
    }
    // Non-sparse live clones download new blocks without being asked.
    tokio::time::timeout(Duration::from_secs(10), async {
        while r.downloaded(0, None) < 25 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    t1.abort();
    t2.abort();
}

#[tokio::test]
async fn follow_length_learns_the_peers_length_without_downloading() {
    let w = writer(4096).await;
    let sparse = memory_clone(w.key(), true).await.unwrap();
    let rw = Replicator::new(w.clone(), ReplicatorOptions::default());
    let rs = Replicator::new(
        sparse.clone(),
        ReplicatorOptions {
            follow_length: true,
            ..ReplicatorOptions::default()
        },
    );
    let (x, y) = tokio::io::duplex(1 << 20);
    let a = tokio::spawn(async move { replicate(&rw, x, opts(true, true)).await });
    let b = tokio::spawn(async move { replicate(&rs, y, opts(false, true)).await });
    let learn = |len| {
        let sparse = sparse.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), sparse.update(Some(len), None))
                .await
                .unwrap_or_else(|_| panic!("the clone never learnt length {len}"))
                .unwrap()
        }
    };
    // Nobody asked for a length: follow_length fetched the last block's proof by itself.
    assert_eq!(learn(4096).await, 4096);
    assert_eq!(sparse.downloaded(0, None), 0);
    // And again when the writer appends.
    w.append_batch(["one more", "and another"]).await.unwrap();
    assert_eq!(learn(4098).await, 4098);
    assert_eq!(sparse.byte_len(), w.byte_len());
    assert_eq!(sparse.downloaded(0, None), 0);
    a.abort();
    b.abort();
}

#[tokio::test]
async fn without_follow_length_a_sparse_clone_learns_nothing_unasked() {
    let w = writer(100).await;
    let sparse = memory_clone(w.key(), true).await.unwrap();
    let rw = Replicator::new(w.clone(), ReplicatorOptions::default());
    let rs = Replicator::new(sparse.clone(), ReplicatorOptions::default());
    let (x, y) = tokio::io::duplex(1 << 20);
    let a = tokio::spawn(async move { replicate(&rw, x, opts(true, true)).await });
    let probe = rs.clone();
    let b = tokio::spawn(async move { replicate(&rs, y, opts(false, true)).await });
    probe.wait_for_peers(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sparse.len(), 0);
    assert_eq!(probe.stats().peers[0].remote_length, 100);
    a.abort();
    b.abort();
}

#[tokio::test]
async fn update_if_available_reaches_the_peers_length_without_data() {
    let w = writer(300).await;
    let sparse = memory_clone(w.key(), true).await.unwrap();
    let rw = Replicator::new(w.clone(), ReplicatorOptions::default());
    let rs = Replicator::new(sparse.clone(), ReplicatorOptions::default());
    // No peer: nothing to wait for.
    assert_eq!(rs.update_if_available(LIMIT).await, 0);
    let (x, y) = tokio::io::duplex(1 << 20);
    let a = tokio::spawn(async move { replicate(&rw, x, opts(true, true)).await });
    let probe = rs.clone();
    let b = tokio::spawn(async move { replicate(&rs, y, opts(false, true)).await });
    let update = || {
        let probe = probe.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), probe.update_if_available(LIMIT))
                .await
                .expect("update_if_available never returned")
        }
    };
    probe.wait_for_peers(1).await;
    assert_eq!(update().await, 300);
    assert_eq!(sparse.downloaded(0, None), 0, "only the proof was fetched");
    w.append_batch(["one more", "and another"]).await.unwrap();
    // The writer's Have for the new blocks arrives on its own; then an update reaches it.
    tokio::time::timeout(Duration::from_secs(10), async {
        while probe.stats().peers[0].remote_length < 302 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the writer never announced its new blocks");
    assert_eq!(update().await, 302);
    assert_eq!(sparse.byte_len(), w.byte_len());
    assert_eq!(sparse.downloaded(0, None), 0);
    a.abort();
    b.abort();
}

#[tokio::test]
async fn update_if_available_right_after_attaching_waits_for_the_new_peer() {
    let w = writer(300).await;
    let sparse = memory_clone(w.key(), true).await.unwrap();
    let rw = Replicator::new(w.clone(), ReplicatorOptions::default());
    let rs = Replicator::new(sparse.clone(), ReplicatorOptions::default());
    let (x, y) = tokio::io::duplex(1 << 20);
    let options = |initiator| ProtocolOptions {
        initiator,
        live: true,
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        Protocol::connect(x, options(true)),
        Protocol::connect(y, options(false))
    );
    let ((pa, _events_a), (pb, _events_b)) = (a.unwrap(), b.unwrap());
    let _writer_peer = rw.attach(pb.open(w.key()).unwrap(), true);
    // Asked before the new peer's task has run at all (as a store does when a core is
    // opened on a running connection): the peer is waited for, not missed.
    let _reader_peer = rs.attach(pa.open(w.key()).unwrap(), true);
    let length = tokio::time::timeout(Duration::from_secs(10), rs.update_if_available(LIMIT))
        .await
        .expect("update_if_available never returned");
    assert_eq!(length, 300);
}

#[tokio::test]
async fn update_if_available_waits_for_a_silent_peer_at_most_its_limit() {
    let w = writer(10).await;
    let sparse = memory_clone(w.key(), true).await.unwrap();
    // The writer serves nothing, so it never says what it has.
    let rw = Replicator::new(
        w.clone(),
        ReplicatorOptions {
            upload: false,
            ..ReplicatorOptions::default()
        },
    );
    let timeout = Duration::from_millis(300);
    let rs = Replicator::new(sparse.clone(), ReplicatorOptions::default());
    let (x, y) = tokio::io::duplex(1 << 20);
    let a = tokio::spawn(async move { replicate(&rw, x, opts(true, true)).await });
    let probe = rs.clone();
    let b = tokio::spawn(async move { replicate(&rs, y, opts(false, true)).await });
    probe.wait_for_peers(1).await;
    let started = std::time::Instant::now();
    let length = tokio::time::timeout(Duration::from_secs(10), probe.update_if_available(timeout))
        .await
        .expect("update_if_available waited past its bound");
    assert_eq!(length, 0);
    assert!(
        started.elapsed() >= timeout,
        "the silent peer was not waited for"
    );
    a.abort();
    b.abort();
}

#[tokio::test]
async fn cleared_blocks_are_downloaded_again_from_the_same_peer() {
    let w = writer(3000).await;
    let r = memory_clone(w.key(), true).await.unwrap();
    let rw = Replicator::new(w.clone(), ReplicatorOptions::default());
    let rr = Replicator::new(r.clone(), ReplicatorOptions::default());
    let (x, y) = tokio::io::duplex(1 << 20);
    let a = tokio::spawn(async move { replicate(&rw, x, opts(true, true)).await });
    let clone = rr.clone();
    let b = tokio::spawn(async move { replicate(&rr, y, opts(false, true)).await });
    let download = |start, end| {
        let clone = clone.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(20),
                clone.download(DownloadRange::new(start, end)),
            )
            .await
            .unwrap_or_else(|_| panic!("blocks {start}..{end} never came"))
            .unwrap()
        }
    };
    download(0, 3000).await;
    assert_eq!(r.downloaded(0, None), 3000);
    // Clear a range and ask for it again, on the same connection.
    r.clear(1000, 2500).await.unwrap();
    assert_eq!(r.downloaded(0, None), 1500);
    download(0, 3000).await;
    assert_eq!(r.downloaded(0, None), 3000);
    assert_eq!(r.get(1234).await.unwrap(), w.get(1234).await.unwrap());
    a.abort();
    b.abort();
}
