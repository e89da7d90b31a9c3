//! Damaged storage: clear errors naming the file, never a panic; corrupted blocks are
//! found by audit and cleared while the rest of the feed keeps working.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use bytes::Bytes;
use hypercore::storage::{DiskStorage, FileKind};
use hypercore::{Error, Feed, FeedOptions, GetOptions};
use proptest::prelude::*;

const BLOCKS: [&str; 6] = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];

async fn make_feed(dir: &Path) {
    let feed = Feed::open(DiskStorage::new(dir), FeedOptions::default())
        .await
        .unwrap();
    feed.append_batch(BLOCKS[..3].iter().copied())
        .await
        .unwrap();
    feed.append_batch(BLOCKS[3..].iter().copied())
        .await
        .unwrap();
    feed.close().await.unwrap();
}

async fn open(dir: &Path) -> hypercore::Result<Feed> {
    Feed::open(
        DiskStorage::new(dir),
        FeedOptions {
            create_if_missing: false,
            ..Default::default()
        },
    )
    .await
}

fn patch(dir: &Path, file: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(file))
        .unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn truncate(dir: &Path, file: &str, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(file))
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn assert_corrupt(err: Error, file: &str) {
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Corrupt { .. }),
        "expected a corruption error, got: {msg}"
    );
    assert!(
        msg.contains(&format!("corrupt {file} file")),
        "error should name the {file} file: {msg}"
    );
}

#[tokio::test]
async fn damaged_headers_are_named() {
    for file in ["tree", "signatures", "bitfield"] {
        let dir = tempfile::tempdir().unwrap();
        make_feed(dir.path()).await;
        patch(dir.path(), file, 0, &[9, 9, 9]);
        assert_corrupt(open(dir.path()).await.unwrap_err(), file);

        let dir = tempfile::tempdir().unwrap();
        make_feed(dir.path()).await;
        truncate(dir.path(), file, 20);
        assert_corrupt(open(dir.path()).await.unwrap_err(), file);
    }
}

#[tokio::test]
async fn damaged_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    make_feed(dir.path()).await;
    truncate(dir.path(), "key", 31);
    assert_corrupt(open(dir.path()).await.unwrap_err(), "key");

    let dir = tempfile::tempdir().unwrap();
    make_feed(dir.path()).await;
    patch(dir.path(), "secret_key", 40, &[0xaa; 8]);
    assert_corrupt(open(dir.path()).await.unwrap_err(), "secret_key");
}

#[tokio::test]
async fn truncated_tree_is_named() {
    let dir = tempfile::tempdir().unwrap();
    make_feed(dir.path()).await;
    truncate(dir.path(), "tree", 32 + 40 * 3);
    assert_corrupt(open(dir.path()).await.unwrap_err(), "tree");
}

#[tokio::test]
async fn corrupted_signature_is_named() {
    let dir = tempfile::tempdir().unwrap();
    make_feed(dir.path()).await;
    // The signature for length 6 sits at record 5.
    patch(dir.path(), "signatures", 32 + 64 * 5 + 7, &[0x42]);
    assert_corrupt(open(dir.path()).await.unwrap_err(), "signatures");
}

#[tokio::test]
async fn audit_finds_and_clears_a_corrupted_block() {
    let dir = tempfile::tempdir().unwrap();
    make_feed(dir.path()).await;
    // "gamma" starts at byte 9 of the data file.
    patch(dir.path(), "data", 10, b"X");
    let feed = open(dir.path()).await.unwrap();
    let report = feed.audit().await.unwrap();
    assert_eq!((report.valid, report.invalid), (5, 1));
    assert!(!feed.has(2));
    let err = feed.get_with(2, GetOptions::no_wait()).await.unwrap_err();
    assert!(matches!(err, Error::NotAvailable { index: 2 }));
    assert_eq!(&feed.get(3).await.unwrap()[..], b"delta");
    // The writer keeps appending, and the clearing survives a reopen.
    feed.append("eta").await.unwrap();
    feed.close().await.unwrap();
    let feed = open(dir.path()).await.unwrap();
    assert!(!feed.has(2) && feed.has(6));
    let report = feed.audit().await.unwrap();
    assert_eq!((report.valid, report.invalid), (6, 0));
}

#[tokio::test]
async fn truncated_data_file_is_named_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    make_feed(dir.path()).await;
    truncate(dir.path(), "data", 12);
    let feed = open(dir.path()).await.unwrap();
    assert_corrupt(feed.get(4).await.unwrap_err(), "data");
    assert_eq!(&feed.get(0).await.unwrap()[..], b"alpha");
    let report = feed.audit().await.unwrap();
    assert_eq!((report.valid, report.invalid), (2, 4));
}

/// One kind of damage to one file.
#[derive(Debug, Clone)]
enum Damage {
    Flip { file: usize, at: u64, byte: u8 },
    Truncate { file: usize, at: u64 },
    Extend { file: usize, by: u64 },
}

/// The six files of a feed.
fn files() -> [&'static str; 6] {
    FileKind::ALL.map(FileKind::name)
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0..6usize, 0..4000u64, any::<u8>()).prop_map(|(file, at, byte)| Damage::Flip {
            file,
            at,
            byte
        }),
        (0..6usize, 0..4000u64).prop_map(|(file, at)| Damage::Truncate { file, at }),
        (0..6usize, 1..5000u64).prop_map(|(file, by)| Damage::Extend { file, by }),
    ]
}

fn apply(dir: &Path, d: &Damage) {
    let len = |f: &str| std::fs::metadata(dir.join(f)).unwrap().len();
    match *d {
        Damage::Flip { file, at, byte } => {
            let name = files()[file];
            let l = len(name);
            if l > 0 {
                patch(dir, name, at % l, &[byte]);
            }
        }
        Damage::Truncate { file, at } => {
            let name = files()[file];
            truncate(dir, name, at.min(len(name)));
        }
        Damage::Extend { file, by } => {
            let name = files()[file];
            let l = len(name);
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(name))
                .unwrap()
                .set_len(l + by)
                .unwrap();
        }
    }
}

fn no_panic(res: &hypercore::Result<impl Sized>) {
    if let Err(Error::Internal { reason }) = res {
        panic!("internal error instead of a clean failure: {reason}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever the damage, opening and using the feed gives results or clean errors.
    #[test]
    fn any_damage_is_an_error_or_a_working_feed(damages in proptest::collection::vec(damage(), 1..4)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let feed = Feed::open(DiskStorage::new(dir.path()), FeedOptions::default()).await.unwrap();
            let blocks: Vec<Bytes> = (0..40u32).map(|i| Bytes::from(vec![i as u8; (i % 7) as usize * 30])).collect();
            feed.append_batch(blocks[..25].to_vec()).await.unwrap();
            feed.append_batch(blocks[25..].to_vec()).await.unwrap();
            feed.close().await.unwrap();
            for d in &damages {
                apply(dir.path(), d);
            }
            let opened = open(dir.path()).await;
            no_panic(&opened);
            let Ok(feed) = opened else { return };
            for i in 0..feed.len() {
                let got = feed.get_with(i, GetOptions::no_wait()).await;
                no_panic(&got);
            }
            let audit = feed.audit().await;
            no_panic(&audit);
            if audit.is_ok() {
                // After an audit, every block still claimed is intact.
                for i in 0..feed.len().min(40) {
                    if let Ok(b) = feed.get_with(i, GetOptions::no_wait()).await {
                        assert_eq!(b, blocks[i as usize], "block {i} survived audit but is wrong");
                    }
                }
            }
            if feed.writable() {
                no_panic(&feed.append("more").await);
            }
            no_panic(&feed.close().await);
        });
    }
}
