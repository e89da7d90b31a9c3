#![allow(clippy::unwrap_used)]
//! Open cores are a cache: cores nobody holds are closed beyond `max_open` or after the
//! idle timeout and reopened on demand; held cores stay open; `list` reports every core
//! without keeping it open; peers get cores that were closed when they asked, and a store
//! of many cores stays within its descriptor budget while serving them.

use std::path::Path;
use std::time::Duration;

use corestore::{Corestore, CorestoreOptions};
use hypercore::PublicKey;
use hypercore_protocol::Protocol;
use hyperd_testkit::{init_tracing, protocol_options, protocol_pair, tcp_pair};

const LIMIT: Duration = Duration::from_secs(10);

async fn store(dir: &Path, max_open: usize, idle_timeout: Duration) -> Corestore {
    let options = CorestoreOptions {
        max_open,
        idle_timeout,
        ..CorestoreOptions::default()
    };
    Corestore::open(dir, options).await.unwrap()
}

/// Descriptors of this process open on files under `dir`.
fn descriptors_under(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .count()
}

/// Creates `n` named cores of `blocks` blocks each and lets go of them.
async fn fill(store: &Corestore, n: usize, blocks: usize) -> Vec<PublicKey> {
    let mut keys = Vec::new();
    for i in 0..n {
        let core = store
            .get_named(format!("core-{i}").as_bytes())
            .await
            .unwrap();
        let data: Vec<Vec<u8>> = (0..blocks)
            .map(|b| format!("core {i} block {b}").into_bytes())
            .collect();
        core.feed().append_batch(data).await.unwrap();
        keys.push(core.feed().key());
    }
    keys
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < LIMIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_cores_beyond_max_open_are_closed_and_reopened_on_demand() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path(), 4, Duration::from_secs(3600)).await;
    let keys = fill(&store, 20, 3).await;
    eventually("at most 4 cores are open", || store.open_count() <= 4).await;
    // An evicted core leaves the open list before its feed's files are closed.
    eventually("the evicted cores' files are closed", || {
        descriptors_under(tmp.path()) <= 4 * 4
    })
    .await;

    // Held cores are never closed for room: 8 held means 8 open.
    let held: Vec<_> = {
        let mut v = Vec::new();
        for key in &keys[..8] {
            v.push(store.get_by_key(*key).await.unwrap());
        }
        v
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(store.open_count() >= 8);
    for core in &held {
        assert!(!core.feed().is_closed());
        assert_eq!(core.feed().len(), 3);
    }
    drop(held);
    eventually("the cache is trimmed again", || store.open_count() <= 4).await;

    // Every core, closed or not, is there with its blocks and still writable.
    for (i, key) in keys.iter().enumerate() {
        let core = store.get_stored(key).await.unwrap().unwrap();
        assert!(core.feed().writable());
        assert_eq!(core.name(), Some(format!("core-{i}").as_bytes()));
        assert_eq!(
            &core.feed().get(2).await.unwrap()[..],
            format!("core {i} block 2").as_bytes()
        );
        core.feed().append("more").await.unwrap();
    }
    store.close().await.unwrap();
    let store = self::store(tmp.path(), 4, Duration::from_secs(3600)).await;
    for key in &keys {
        assert_eq!(
            store.get_stored(key).await.unwrap().unwrap().feed().len(),
            4
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_cores_close_after_the_idle_timeout_and_held_ones_stay_open() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path(), 100, Duration::from_millis(300)).await;
    let keys = fill(&store, 6, 1).await;
    let held = store.get_by_key(keys[0]).await.unwrap();
    eventually("idle cores are closed", || store.open_count() == 1).await;
    assert!(!held.feed().is_closed());
    assert_eq!(store.open_cores()[0].feed().key(), keys[0]);
    // Only the held core's four descriptors remain (once the evicted feeds' files are
    // closed, which follows their leaving the open list).
    eventually("only the held core's files are open", || {
        descriptors_under(tmp.path()) == 4
    })
    .await;
    drop(held);
    eventually("the last core is closed", || store.open_count() == 0).await;
    eventually("no file is open", || descriptors_under(tmp.path()) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_reports_every_core_without_keeping_them_open() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = {
        let store = store(tmp.path(), 8, Duration::from_secs(3600)).await;
        let keys = fill(&store, 40, 2).await;
        store.close().await.unwrap();
        keys
    };
    let store = store(tmp.path(), 8, Duration::from_secs(3600)).await;
    assert_eq!(store.open_count(), 0);
    let held = store.get_by_key(keys[5]).await.unwrap();
    held.feed().append("third").await.unwrap();
    let list = store.list().await.unwrap();
    assert_eq!(list.len(), 40);
    assert_eq!(store.count().await.unwrap(), 40);
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(list.iter().map(|s| s.key).collect::<Vec<_>>(), sorted);
    for summary in &list {
        let i = keys.iter().position(|k| *k == summary.key).unwrap();
        let expected = if i == 5 { 3 } else { 2 };
        assert_eq!(summary.length, expected, "core {i}");
        assert_eq!(summary.downloaded, expected);
        assert!(summary.writable);
        assert_eq!(
            summary.name.as_deref(),
            Some(format!("core-{i}").as_bytes())
        );
        assert_eq!(summary.open, i == 5);
    }
    // Listing opened nothing into the cache.
    assert_eq!(store.open_count(), 1);
    assert!(descriptors_under(tmp.path()) <= 4);
    // A core created after the first listing is listed; a removed one is not.
    let new = store.get_named(b"new").await.unwrap().feed().key();
    store.remove(&keys[0]).await.unwrap();
    let list = store.list().await.unwrap();
    assert_eq!(list.len(), 40);
    assert!(list.iter().any(|s| s.key == new));
    assert!(!list.iter().any(|s| s.key == keys[0]));
}

/// Connects two stores over TCP (live) and replicates on both sides.
async fn connect(a: &Corestore, b: &Corestore) -> (Protocol, Protocol) {
    let (dialed, accepted) = tcp_pair().await.unwrap();
    let (a_options, b_options) = (protocol_options(true, true), protocol_options(false, true));
    let ((pa, ea), (pb, eb)) = protocol_pair(dialed, a_options, accepted, b_options)
        .await
        .unwrap();
    let (a, b) = (a.clone(), b.clone());
    let (ra, rb) = (pa.clone(), pb.clone());
    tokio::spawn(async move { a.replicate(ra, ea, true).await });
    tokio::spawn(async move { b.replicate(rb, eb, true).await });
    (pa, pb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gets_cores_that_were_closed_and_the_seeder_stays_within_budget() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let seeder = store(&tmp.path().join("seeder"), 16, Duration::from_secs(3600)).await;
    let keys = fill(&seeder, 48, 20).await;
    eventually("the seeder's cache is trimmed", || {
        seeder.open_count() <= 16
    })
    .await;
    let follower = store(
        &tmp.path().join("follower"),
        1000,
        Duration::from_secs(3600),
    )
    .await;
    let (_pa, _pb) = connect(&follower, &seeder).await;
    // Three rounds of 12 cores followed at once: the seeder opens each when asked,
    // closing idle ones (including ones whose peer is done) to stay within 16.
    let mut max_open = 0;
    for round in keys.chunks(12) {
        let mut cores = Vec::new();
        for key in round {
            cores.push(follower.get_by_key(*key).await.unwrap());
        }
        for core in &cores {
            let feed = core.feed().clone();
            let done = async {
                feed.update(Some(20), None).await.unwrap();
                for i in 0..20 {
                    feed.get(i).await.unwrap();
                }
            };
            tokio::select! {
                _ = done => {}
                _ = tokio::time::sleep(LIMIT) => panic!("core {} (dk {}) was not served: length {}, {} peers", feed.key(), feed.discovery_key(), feed.len(), core.peer_count()),
            }
            max_open = max_open.max(seeder.open_count());
        }
    }
    assert!(max_open <= 16, "the seeder had {max_open} cores open");
    assert!(descriptors_under(&tmp.path().join("seeder")) <= 16 * 4);
}
