#![allow(clippy::unwrap_used)]
//! Running out of file descriptors (its own test binary: it lowers the process's limit).
//! A create that fails for want of descriptors leaves no directory behind; once cores are
//! let go of, opening closes unused ones to make room instead of failing.

use std::time::Duration;

use corestore::{Corestore, CorestoreOptions};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_leaves_nothing_behind_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let options = CorestoreOptions {
        max_open: 10_000,
        idle_timeout: Duration::from_secs(3600),
        ..CorestoreOptions::default()
    };
    let store = Corestore::open(tmp.path(), options).await.unwrap();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, open_descriptors() + 60, hard).unwrap();

    let mut held = Vec::new();
    let failure = loop {
        match store
            .get_named(format!("core-{}", held.len()).as_bytes())
            .await
        {
            Ok(core) => {
                core.feed().append("x").await.unwrap();
                held.push(core);
                assert!(held.len() < 1000, "the limit was never reached");
            }
            Err(e) => break e,
        }
    };
    assert!(failure.is_out_of_descriptors(), "{failure}");
    assert!(held.len() >= 5, "only {} cores opened", held.len());
    // The core that failed left no directory: every directory is a held core.
    let stored = store.stored().await.unwrap();
    assert_eq!(stored.len(), held.len());
    let failed = corestore::derive_key_pair(
        store.master_key(),
        format!("core-{}", held.len()).as_bytes(),
    );
    assert!(!store.core_dir(&failed.public.discovery_key()).exists());

    // Let go of half: opening more now closes unused cores instead of failing.
    let kept = held.len() / 2;
    let keys: Vec<_> = held.iter().map(|c| c.feed().key()).collect();
    held.truncate(kept);
    for i in 0..20 {
        let core = store
            .get_named(format!("more-{i}").as_bytes())
            .await
            .unwrap();
        core.feed().append("y").await.unwrap();
    }
    for key in &keys {
        let core = store.get_stored(key).await.unwrap().unwrap();
        assert_eq!(&core.feed().get(0).await.unwrap()[..], b"x");
    }
    drop(held);
    store.close().await.unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
}
