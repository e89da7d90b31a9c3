//! Setup shared by the drive tests: stores and drives in temporary directories, and two
//! stores replicating over an in-memory connection.
#![allow(clippy::unwrap_used, dead_code)]

use corestore::{Corestore, CorestoreOptions};
use hypercore_protocol::{Protocol, ProtocolOptions};
use hyperdrive::{Drive, DriveOptions};

/// A store in `dir`, sparse or not.
pub async fn store(dir: &std::path::Path, sparse: bool) -> Corestore {
    let options = CorestoreOptions {
        sparse,
        ..CorestoreOptions::default()
    };
    Corestore::open(dir, options).await.unwrap()
}

/// The store in `dir` and its default drive, opened with `options`.
pub async fn open(dir: &std::path::Path, options: DriveOptions) -> (Corestore, Drive) {
    let store = store(dir, false).await;
    let drive = Drive::default_drive(&store, options).await.unwrap();
    (store, drive)
}

/// The default drive of a new store (keep the directory while the drive is used).
pub async fn new_drive() -> (tempfile::TempDir, Corestore, Drive) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), false).await;
    let drive = Drive::default_drive(&store, DriveOptions::default())
        .await
        .unwrap();
    (dir, store, drive)
}

/// Another new drive of `store` (to mount).
pub async fn another_drive(store: &Corestore) -> Drive {
    let core = store.create().await.unwrap();
    Drive::open(store, core, DriveOptions::default())
        .await
        .unwrap()
}

/// Replicates two stores over an in-memory connection, live.
pub async fn connect(a: &Corestore, b: &Corestore) {
    let (x, y) = tokio::io::duplex(1 << 20);
    let options = |initiator| ProtocolOptions {
        initiator,
        live: true,
        ..ProtocolOptions::default()
    };
    let (pa, pb) = tokio::join!(
        Protocol::connect(x, options(true)),
        Protocol::connect(y, options(false))
    );
    let ((pa, ea), (pb, eb)) = (pa.unwrap(), pb.unwrap());
    let (a, b) = (a.clone(), b.clone());
    tokio::spawn(async move { a.replicate(pa, ea, true).await });
    tokio::spawn(async move { b.replicate(pb, eb, true).await });
}
