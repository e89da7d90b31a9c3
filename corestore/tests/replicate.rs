#![allow(clippy::unwrap_used)]
//! Two stores replicating many cores over one connection (an in-memory duplex or TCP):
//! cores loaded before and after the connection started, cores the remote asks for that
//! are only on disk, cores only one side has (refused with a Close, no error), unloading a
//! core mid-connection, and one-shot sessions that end by themselves.

use std::path::Path;
use std::time::Duration;

use corestore::{Core, Corestore, CorestoreOptions, Replicator};
use hypercore_protocol::{Protocol, ProtocolOptions};
use hypercore_replication::DownloadRange;
use hyperd_testkit::{init_tracing, protocol_options, protocol_pair, tcp_pair};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(20);

async fn store(dir: &Path, sparse: bool) -> Corestore {
    let options = CorestoreOptions {
        sparse,
        ..CorestoreOptions::default()
    };
    Corestore::open(dir, options).await.unwrap()
}

fn block(core: usize, i: usize) -> Vec<u8> {
    format!("core {core} block {i}").into_bytes()
}

/// A named core with `blocks` blocks.
async fn filled(store: &Corestore, n: usize, blocks: usize) -> Core {
    let core = store
        .get_named(format!("core-{n}").as_bytes())
        .await
        .unwrap();
    let data: Vec<Vec<u8>> = (0..blocks).map(|i| block(n, i)).collect();
    core.feed().append_batch(data).await.unwrap();
    core
}

/// Connects two stores over `a_io`/`b_io` and runs `replicate` on both.
async fn connect<IO>(
    a: &Corestore,
    a_io: IO,
    b: &Corestore,
    b_io: IO,
    live: bool,
) -> (
    Protocol,
    Protocol,
    JoinHandle<Result<(), corestore::Error>>,
    JoinHandle<Result<(), corestore::Error>>,
)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (a_options, b_options) = (protocol_options(true, live), protocol_options(false, live));
    let ((pa, ea), (pb, eb)) = protocol_pair(a_io, a_options, b_io, b_options)
        .await
        .unwrap();
    let ta = tokio::spawn({
        let (a, pa) = (a.clone(), pa.clone());
        async move { a.replicate(pa, ea, live).await }
    });
    let tb = tokio::spawn({
        let (b, pb) = (b.clone(), pb.clone());
        async move { b.replicate(pb, eb, live).await }
    });
    (pa, pb, ta, tb)
}

async fn read_all(core: &Replicator) -> Vec<Vec<u8>> {
    let feed = core.feed();
    let mut out = Vec::new();
    for i in 0..feed.len() {
        let b = tokio::time::timeout(LIMIT, feed.get(i))
            .await
            .unwrap()
            .unwrap();
        out.push(b.to_vec());
    }
    out
}

async fn wait_for_length(core: &Replicator, len: u64) {
    tokio::time::timeout(LIMIT, core.feed().update(Some(len), None))
        .await
        .unwrap_or_else(|_| panic!("core {} never reached length {len}", core.feed().key()))
        .unwrap();
}

#[tokio::test]
async fn live_replication_of_many_cores_over_a_duplex() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let a = store(&tmp.path().join("a"), true).await;
    let b = store(&tmp.path().join("b"), true).await;
    // A: three loaded cores, one stored but not loaded, one only A has.
    let mut a_cores = Vec::new();
    for n in 0..3 {
        a_cores.push(filled(&a, n, 5 + n).await);
    }
    let on_disk = filled(&a, 3, 4).await;
    let on_disk_key = on_disk.feed().key();
    a.close_core(&on_disk_key).await.unwrap();
    let _only_a = filled(&a, 4, 2).await;
    // B: clones of two of them before connecting, and a core only B has.
    let b0 = b.get_by_key(a_cores[0].feed().key()).await.unwrap();
    let b1 = b.get_by_key(a_cores[1].feed().key()).await.unwrap();
    let only_b = b.get_named(b"mine").await.unwrap();
    only_b.feed().append("private").await.unwrap();

    let (io_a, io_b) = tokio::io::duplex(64 * 1024);
    let (pa, pb, ta, tb) = connect(&a, io_a, &b, io_b, true).await;

    // Sparse clones fetch what is read.
    wait_for_length(&b0, 5).await;
    assert_eq!(
        read_all(&b0).await,
        (0..5).map(|i| block(0, i)).collect::<Vec<_>>()
    );
    wait_for_length(&b1, 6).await;
    assert_eq!(
        read_all(&b1).await,
        (0..6).map(|i| block(1, i)).collect::<Vec<_>>()
    );

    // Loaded on B after the connection started: added to the running connection.
    let b2 = b.get_by_key(a_cores[2].feed().key()).await.unwrap();
    wait_for_length(&b2, 7).await;
    assert_eq!(
        read_all(&b2).await,
        (0..7).map(|i| block(2, i)).collect::<Vec<_>>()
    );

    // Stored on A but not loaded: A opens it from disk when B asks for it.
    assert!(a.get_open(&on_disk_key).is_none());
    let b3 = b.get_by_key(on_disk_key).await.unwrap();
    wait_for_length(&b3, 4).await;
    assert_eq!(
        read_all(&b3).await,
        (0..4).map(|i| block(3, i)).collect::<Vec<_>>()
    );
    let a3 = a.get_open(&on_disk_key).unwrap();
    assert!(a3.feed().writable());

    // Live: appends on A reach B.
    a_cores[0].feed().append("late").await.unwrap();
    wait_for_length(&b0, 6).await;
    assert_eq!(&b0.feed().get(5).await.unwrap()[..], b"late");

    // B's own core was refused by A and A's own core by B: nothing was created for them.
    assert!(a.get_open(&only_b.feed().key()).is_none());
    assert!(!a.core_dir(&only_b.feed().discovery_key()).exists());
    assert_eq!(b.open_cores().len(), 5); // b0..b3 and B's own core

    // Unloading a core on A mid-connection drops its peer; the others keep going.
    a.close_core(&a_cores[1].feed().key()).await.unwrap();
    tokio::time::timeout(LIMIT, async {
        while b1.peer_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    a_cores[2].feed().append("still").await.unwrap();
    wait_for_length(&b2, 8).await;

    // Ending the connection ends both `replicate` calls without error.
    pa.destroy("test over");
    let _ = pb;
    let ra = tokio::time::timeout(LIMIT, ta).await.unwrap().unwrap();
    let rb = tokio::time::timeout(LIMIT, tb).await.unwrap().unwrap();
    assert!(ra.is_err(), "A destroyed the connection: {ra:?}");
    let rb_text = format!("{rb:?}");
    assert!(rb.is_ok() || rb_text.contains("Connection"), "{rb_text}");
    assert_eq!(b0.peer_count(), 0);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn one_shot_full_clone_over_tcp_ends_by_itself() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    // Neither side sparse: by JS's rules a sparse peer never ends a one-shot session.
    let a = store(&tmp.path().join("a"), false).await;
    // B downloads everything, as a backup would.
    let b = store(&tmp.path().join("b"), false).await;
    let mut keys = Vec::new();
    for n in 0..4 {
        keys.push(filled(&a, n, 3 + 10 * n).await.feed().key());
    }
    let clones: Vec<Core> = {
        let mut v = Vec::new();
        for k in &keys {
            v.push(b.get_by_key(*k).await.unwrap());
        }
        v
    };
    // A core each side has alone: the other refuses it with a Close, and nothing fails.
    let only_a = filled(&a, 9, 2).await.feed().key();
    let only_b = b.get_named(b"only b").await.unwrap();
    only_b.feed().append("b's").await.unwrap();
    let (dialed, accepted) = tcp_pair().await.unwrap();
    let (_pa, _pb, ta, tb) = connect(&a, accepted, &b, dialed, false).await;
    let ra = tokio::time::timeout(LIMIT, ta).await.unwrap().unwrap();
    let rb = tokio::time::timeout(LIMIT, tb).await.unwrap().unwrap();
    ra.unwrap();
    rb.unwrap();
    for (n, clone) in clones.iter().enumerate() {
        let feed = clone.feed();
        assert_eq!(feed.len() as usize, 3 + 10 * n);
        assert!(feed.has_range(0, feed.len()), "core {n} fully downloaded");
        assert_eq!(
            read_all(clone).await,
            (0..3 + 10 * n).map(|i| block(n, i)).collect::<Vec<_>>()
        );
    }
    assert!(b.get_open(&only_a).is_none());
    assert!(!b.core_dir(&only_a.discovery_key()).exists());
    assert!(a.get_open(&only_b.feed().key()).is_none());
    // The clones are read-only and remain so after a restart.
    b.close().await.unwrap();
    let b = store(&tmp.path().join("b"), false).await;
    let stored = b.stored().await.unwrap();
    assert_eq!(stored.len(), 5);
    assert_eq!(
        stored
            .iter()
            .filter(|c| !c.writable && c.name.is_none())
            .count(),
        4
    );
}

#[tokio::test]
async fn a_range_download_through_the_replicator() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let a = store(&tmp.path().join("a"), true).await;
    let b = store(&tmp.path().join("b"), true).await;
    let source = filled(&a, 7, 50).await;
    let (io_a, io_b) = tokio::io::duplex(16 * 1024);
    let (pa, _pb, ta, tb) = connect(&a, io_a, &b, io_b, true).await;
    // Loaded on B while connected; A learns of it from B's Open.
    let clone = b.get_by_key(source.feed().key()).await.unwrap();
    wait_for_length(&clone, 50).await;
    tokio::time::timeout(LIMIT, clone.download(DownloadRange::new(10, 20)))
        .await
        .unwrap()
        .unwrap();
    assert!(clone.feed().has_range(10, 20));
    assert!(!clone.feed().has(30));
    assert_eq!(clone.stats().totals.downloaded_blocks, 10);
    pa.destroy("done");
    let _ = tokio::time::timeout(LIMIT, ta).await.unwrap();
    let _ = tokio::time::timeout(LIMIT, tb).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_a_busy_core_keeps_the_connection() {
    // Either side unloads a core while its blocks are in flight: that core's peers stop,
    // and the connection and the other cores on it carry on.
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let a = store(&tmp.path().join("a"), true).await;
    let b = store(&tmp.path().join("b"), true).await;
    let big: Vec<Core> = {
        let mut v = Vec::new();
        for n in 0..2 {
            let core = a.get_named(format!("big-{n}").as_bytes()).await.unwrap();
            let data: Vec<Vec<u8>> = (0..400).map(|i| vec![(i % 251) as u8; 8192]).collect();
            core.feed().append_batch(data).await.unwrap();
            v.push(core);
        }
        v
    };
    let small = filled(&a, 1, 1).await;
    let (io_a, io_b) = tokio::io::duplex(64 * 1024);
    let (pa, _pb, ta, tb) = connect(&a, io_a, &b, io_b, true).await;
    let clones: Vec<Core> = {
        let mut v = Vec::new();
        for core in &big {
            v.push(b.get_by_key(core.feed().key()).await.unwrap());
        }
        v
    };
    let small_clone = b.get_by_key(small.feed().key()).await.unwrap();
    for clone in &clones {
        wait_for_length(clone, 400).await;
    }
    wait_for_length(&small_clone, 1).await;
    let downloads: Vec<_> = clones
        .iter()
        .map(|c| tokio::spawn(c.download(DownloadRange::new(0, 400))))
        .collect();
    // Wait until both downloads are under way, then unload the first core on A (the
    // uploader) and the second on B (the downloader).
    tokio::time::timeout(LIMIT, async {
        while clones
            .iter()
            .any(|c| c.stats().totals.downloaded_blocks < 5)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    a.close_core(&big[0].feed().key()).await.unwrap();
    b.close_core(&clones[1].feed().key()).await.unwrap();
    for d in downloads {
        d.abort();
    }
    // The connection is alive: an append to the small core still arrives.
    small.feed().append("after").await.unwrap();
    wait_for_length(&small_clone, 2).await;
    assert_eq!(&small_clone.feed().get(1).await.unwrap()[..], b"after");
    assert!(!ta.is_finished() && !tb.is_finished());
    assert!(pa.outcome().is_none());
    // And the core unloaded on A is served again once something loads it: B asks anew.
    b.close_core(&clones[0].feed().key()).await.unwrap();
    let again = b.get_by_key(big[0].feed().key()).await.unwrap();
    tokio::time::timeout(LIMIT, again.download(DownloadRange::new(0, 400)))
        .await
        .unwrap()
        .unwrap();
    assert!(again.feed().has_range(0, 400));
    pa.destroy("done");
    let _ = tokio::time::timeout(LIMIT, ta).await.unwrap();
    let _ = tokio::time::timeout(LIMIT, tb).await.unwrap();
}

/// Connects `a` (dialing) and `b` (with `b_keys`) over TCP, live, replicating on both.
async fn connect_tcp(
    a: &Corestore,
    b: &Corestore,
    b_keys: &hypercore_protocol::NoiseKeyPair,
) -> (Protocol, Protocol) {
    let (dialed, accepted) = tcp_pair().await.unwrap();
    let b_options = ProtocolOptions {
        keypair: Some(b_keys.clone()),
        ..protocol_options(false, true)
    };
    let ((pa, ea), (pb, eb)) =
        protocol_pair(dialed, protocol_options(true, true), accepted, b_options)
            .await
            .unwrap();
    let (a, b) = (a.clone(), b.clone());
    let (ra, rb) = (pa.clone(), pb.clone());
    tokio::spawn(async move { a.replicate(ra, ea, true).await });
    tokio::spawn(async move { b.replicate(rb, eb, true).await });
    (pa, pb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_core_loses_its_channel_and_spares_the_other_cores() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    // The original writer, and a second store with the same master key that signs a
    // different history under the same name (what re-creating a removed core did).
    let original = store(&tmp.path().join("original"), true).await;
    let forked = Corestore::open_with_master_key(
        tmp.path().join("forked"),
        original.master_key().clone(),
        CorestoreOptions::default(),
    )
    .await
    .unwrap();
    let x = original.get_named(b"x").await.unwrap();
    x.feed().append_batch(["x0", "x1"]).await.unwrap();
    let x_fork = forked.get_named(b"x").await.unwrap();
    assert_eq!(x_fork.feed().key(), x.feed().key());
    x_fork
        .feed()
        .append_batch(["other 0", "other 1", "other 2"])
        .await
        .unwrap();
    // A second core the fork serves honestly.
    let y = forked.get_named(b"y").await.unwrap();
    y.feed()
        .append_batch(["y0", "y1", "y2", "y3"])
        .await
        .unwrap();

    // The follower has x from the original, then meets the fork.
    let follower = store(&tmp.path().join("follower"), true).await;
    let fx = follower.get_by_key(x.feed().key()).await.unwrap();
    let (p1, _) = connect_tcp(
        &follower,
        &original,
        &hypercore_protocol::NoiseKeyPair::generate(),
    )
    .await;
    for i in 0..2 {
        tokio::time::timeout(LIMIT, fx.feed().get(i))
            .await
            .unwrap()
            .unwrap();
    }
    p1.destroy("done with the original");

    let fy = follower.get_by_key(y.feed().key()).await.unwrap();
    let fork_keys = hypercore_protocol::NoiseKeyPair::generate();
    let (p2, fork_side) = connect_tcp(&follower, &forked, &fork_keys).await;
    // x asks the fork for its longer history, whose proofs do not verify.
    let asked = fx
        .feed()
        .get_with(2, hypercore::GetOptions::timeout(Duration::from_secs(3)));
    assert!(asked.await.is_err(), "a forked block was accepted");
    // y still replicates over the same connection.
    for i in 0..4 {
        let block = tokio::time::timeout(LIMIT, fy.feed().get(i))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&block[..], format!("y{i}").as_bytes());
    }
    assert!(p2.outcome().is_none(), "the connection was dropped");
    assert!(fork_side.outcome().is_none());
    // What x stored is intact, and x is not replicated with the fork any more.
    assert_eq!(fx.feed().len(), 2);
    let audit = fx.feed().audit().await.unwrap();
    assert_eq!((audit.valid, audit.invalid), (2, 0));
    assert_eq!(fx.peer_count(), 0);
    assert_eq!(fy.peer_count(), 1);
    // After a reconnect, x is still not offered to that peer (which has the same key).
    p2.destroy("reconnecting");
    let (p3, _) = connect_tcp(&follower, &forked, &fork_keys).await;
    y.feed().append("y4").await.unwrap();
    tokio::time::timeout(LIMIT, fy.feed().get(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fx.peer_count(), 0);
    assert!(p3.outcome().is_none());
}
