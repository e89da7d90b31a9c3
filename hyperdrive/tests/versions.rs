//! A drive's versions: its history, every change with the version it made (live too, and
//! from a sparse replica over TCP, fetching only what it reads), diffs typed as JS types
//! them, and watches that see changes inside mounted drives.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use corestore::{Corestore, CorestoreOptions};
use futures::{Stream, StreamExt, TryStreamExt};
use hypercore_protocol::{Protocol, ProtocolOptions};
use hyperdrive::{
    Drive, DriveChange, DriveOptions, Error, HistoryEntry, HistoryOptions, MountOptions,
    WriteOptions,
};

async fn store(dir: &std::path::Path) -> Corestore {
    Corestore::open(dir, CorestoreOptions::default())
        .await
        .unwrap()
}

async fn write(drive: &Drive, path: &str, text: &str) {
    drive
        .write_file(path, text.as_bytes(), WriteOptions::default())
        .await
        .unwrap();
}

/// `(version, kind, path)` of each entry.
fn described(history: &[HistoryEntry]) -> Vec<(u64, &'static str, String)> {
    history
        .iter()
        .map(|h| {
            let kind = match h.change {
                DriveChange::Put { .. } => "put",
                DriveChange::Del { .. } => "del",
                DriveChange::Mount { .. } => "mount",
                DriveChange::Unmount { .. } => "unmount",
            };
            (h.version, kind, h.change.path().to_string())
        })
        .collect()
}

/// Fails if the watch reports a change within 300 ms.
async fn quiet(watch: &mut (impl Stream<Item = Result<(), Error>> + Unpin)) {
    let got = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(got.is_err(), "unexpected change: {got:?}");
}

async fn next<T>(stream: &mut (impl Stream<Item = Result<T, Error>> + Unpin)) -> T {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("nothing within 10 s")
        .expect("the stream ended")
        .unwrap()
}

#[tokio::test]
async fn history_reports_each_change_with_the_version_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    let sub = Drive::open(
        &store,
        store.namespace("sub").default_core().await.unwrap(),
        DriveOptions::default(),
    )
    .await
    .unwrap();
    write(&drive, "/a.txt", "a").await; // version 2
    write(&drive, "/b.txt", "b").await; // 3
    drive.mkdir("/docs", None).await.unwrap(); // 4
    drive.unlink("/a.txt").await.unwrap(); // 5: rewrites a neighbour, not reported
    drive
        .mount("/sub", sub.key(), MountOptions::default())
        .await
        .unwrap(); // 6 (the hidden record), 7
    drive.create_tag("t", None).await.unwrap(); // 8: hidden
    drive.unlink("/sub").await.unwrap(); // 9
    let all: Vec<HistoryEntry> = drive
        .history(HistoryOptions::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        described(&all),
        [
            (2, "put", "a.txt".into()),
            (3, "put", "b.txt".into()),
            (4, "put", "docs".into()),
            (5, "del", "a.txt".into()),
            (7, "mount", "sub".into()),
            (9, "unmount", "sub".into()),
        ]
    );
    match &all[4].change {
        DriveChange::Mount { key, version, .. } => assert_eq!((*key, *version), (sub.key(), None)),
        other => panic!("{other:?}"),
    }
    let DriveChange::Put { stat, seq, .. } = &all[2].change else {
        panic!("{:?}", all[2]);
    };
    assert!(stat.is_dir() && *seq == 3);

    // Bounds are versions; a checkout's history ends at its version.
    let some = HistoryOptions {
        since: 3,
        until: Some(7),
        live: false,
    };
    let got: Vec<HistoryEntry> = drive.history(some).try_collect().await.unwrap();
    assert_eq!(described(&got), described(&all[2..5]));
    let old: Vec<HistoryEntry> = drive
        .checkout(4)
        .history(HistoryOptions::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(described(&old), described(&all[..3]));

    // Live: from the current version on, each new change as it is made.
    let live = HistoryOptions {
        since: drive.version(),
        until: None,
        live: true,
    };
    let mut changes = Box::pin(drive.history(live));
    write(&drive, "/docs/new.txt", "n").await;
    let seen = next(&mut changes).await;
    assert_eq!(
        (seen.version, seen.change.path()),
        (drive.version(), "docs/new.txt")
    );
    drive.unlink("/b.txt").await.unwrap();
    let seen = next(&mut changes).await;
    assert!(matches!(seen.change, DriveChange::Del { ref path, .. } if path == "b.txt"));
}

#[tokio::test]
async fn watching_a_path_sees_changes_in_mounted_drives() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    let sub = Drive::open(
        &store,
        store.namespace("sub").default_core().await.unwrap(),
        DriveOptions::default(),
    )
    .await
    .unwrap();
    drive.mkdir("/docs", None).await.unwrap();
    drive
        .mount("/docs/sub", sub.key(), MountOptions::default())
        .await
        .unwrap();
    let mut docs = Box::pin(drive.watch("/docs"));
    let mut other = Box::pin(drive.watch("/other"));
    quiet(&mut docs).await;
    quiet(&mut other).await;
    // Written in the mounted drive, through the outer one and directly.
    write(&drive, "/docs/sub/a.txt", "a").await;
    next(&mut docs).await;
    write(&sub, "/b.txt", "b").await;
    next(&mut docs).await;
    quiet(&mut other).await;
    write(&drive, "/other/x", "x").await;
    next(&mut other).await;
    quiet(&mut docs).await;
}

#[tokio::test]
async fn a_sparse_replica_reads_history_from_its_peer() {
    let (wdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (writer_store, reader_store) = (store(wdir.path()).await, store(rdir.path()).await);
    let writer = Drive::default_drive(&writer_store, DriveOptions::default())
        .await
        .unwrap();
    for i in 0..60 {
        write(&writer, &format!("/dir-{}/f-{i}", i % 5), "x").await;
    }
    writer.unlink("/dir-1/f-1").await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = |initiator| ProtocolOptions {
        initiator,
        live: true,
        ..ProtocolOptions::default()
    };
    let served = writer_store.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (protocol, events) = Protocol::connect(tcp, options(false)).await.unwrap();
        served.replicate(protocol, events, true).await
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (protocol, events) = Protocol::connect(tcp, options(true)).await.unwrap();
    let dialer = reader_store.clone();
    tokio::spawn(async move { dialer.replicate(protocol, events, true).await });
    let reader = Drive::open_key(&reader_store, writer.key(), DriveOptions::default())
        .await
        .unwrap();
    reader
        .metadata()
        .update(Some(writer.version()), Some(Duration::from_secs(10)))
        .await
        .unwrap();

    // The last changes, read from the peer: only the blocks those diffs walk.
    let recent = HistoryOptions {
        since: writer.version() - 3,
        until: None,
        live: false,
    };
    let ours: Vec<HistoryEntry> = reader.history(recent).try_collect().await.unwrap();
    let theirs: Vec<HistoryEntry> = writer.history(recent).try_collect().await.unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(described(&ours).last().unwrap().1, "del");
    let fetched = reader.metadata().downloaded(0, None);
    eprintln!(
        "the last 3 changes of a {}-version drive, read from a peer: {fetched} metadata blocks fetched",
        writer.version()
    );
    assert!(
        fetched < writer.version() / 2,
        "{fetched} of {} metadata blocks fetched for the last 3 changes",
        writer.version()
    );

    // Live, following the writer.
    let live = HistoryOptions {
        since: writer.version(),
        until: None,
        live: true,
    };
    let mut changes = Box::pin(reader.history(live));
    write(&writer, "/late.txt", "late").await;
    let seen = next(&mut changes).await;
    assert_eq!(
        (seen.version, seen.change.path()),
        (writer.version(), "late.txt")
    );
}
