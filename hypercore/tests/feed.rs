//! Behaviour of the `Feed` API: appends and reads, waiting, streams, events, encodings,
//! options, verified inserts from peers and what they reject.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hypercore::storage::{DiskStorage, MemoryStorage};
use hypercore::{
    Error, Event, Feed, FeedOptions, GetOptions, HashedBlocks, Json, KeyPair, Origin, Proof,
    ProofRequest, ReadStreamOptions, RemoteTree, Utf8,
};
use hyperd_testkit::memory_clone;

async fn writer_with(blocks: &[&str]) -> Feed {
    let feed = Feed::memory().await.unwrap();
    feed.append_batch(blocks.iter().map(|b| Bytes::copy_from_slice(b.as_bytes())))
        .await
        .unwrap();
    feed
}

/// Sends block `index` from `from` to `to` the way replication does: digest, proof, put.
async fn transfer(from: &Feed, to: &Feed, index: u64) -> hypercore::PutOutcome {
    let request = ProofRequest {
        hash: false,
        digest: to.digest(index),
    };
    let (data, proof) = from
        .upload(index, request, &mut RemoteTree::default())
        .await
        .unwrap();
    to.put(index, data, proof, Origin::Remote { peer: [7; 32] })
        .await
        .unwrap()
}

#[tokio::test]
async fn append_get_head_and_lengths() {
    let feed = Feed::memory().await.unwrap();
    assert!(feed.writable());
    assert_eq!(feed.len(), 0);
    assert!(matches!(feed.head().await, Err(Error::OutOfRange { .. })));
    assert_eq!(feed.append("hello").await.unwrap(), 1);
    assert_eq!(feed.append_batch(["world", "", "!"]).await.unwrap(), 4);
    assert_eq!(feed.append_batch(Vec::<Bytes>::new()).await.unwrap(), 4);
    assert_eq!(feed.byte_len(), 11);
    assert_eq!(&feed.get(0).await.unwrap()[..], b"hello");
    assert_eq!(&feed.get(2).await.unwrap()[..], b"");
    assert_eq!(&feed.head().await.unwrap()[..], b"!");
    let batch = feed.get_batch(0, 4).await.unwrap();
    assert_eq!(
        batch.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![5, 5, 0, 1]
    );
    assert!(feed.has(3) && !feed.has(4));
    assert!(feed.has_range(0, 4) && !feed.has_range(0, 5));
    assert_eq!(feed.downloaded(0, None), 4);
    // A batch is signed once, at its end.
    assert_eq!(feed.signature(1).unwrap().index, 3);
    assert_eq!(feed.signature(0).unwrap().index, 0);
}

#[tokio::test]
async fn oversized_blocks_and_read_only_appends_are_refused() {
    let feed = Feed::memory().await.unwrap();
    let big = Bytes::from(vec![0u8; hypercore::MAX_BLOCK_SIZE + 1]);
    let err = feed
        .append_batch([Bytes::from_static(b"ok"), big])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::BlockTooLarge { index: 1, .. }),
        "{err}"
    );
    assert_eq!(feed.len(), 0, "a refused batch stores nothing");
    let clone = memory_clone(feed.key(), true).await.unwrap();
    let err = clone.append("x").await.unwrap_err();
    assert!(matches!(err, Error::NotWritable { .. }));
    assert!(err.to_string().contains(&feed.key().to_hex()));
}

#[tokio::test]
async fn get_waits_for_a_block_that_arrives_later() {
    let writer = writer_with(&["a", "b", "c"]).await;
    let clone = memory_clone(writer.key(), true).await.unwrap();
    let err = clone.get_with(1, GetOptions::no_wait()).await.unwrap_err();
    assert!(matches!(err, Error::NotAvailable { index: 1 }));
    let err = clone
        .get_with(1, GetOptions::timeout(Duration::from_millis(30)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");

    let waiting = tokio::spawn({
        let clone = clone.clone();
        async move { clone.get(1).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished());
    let outcome = transfer(&writer, &clone, 1).await;
    assert!(outcome.downloaded && outcome.length_grew);
    assert_eq!(&waiting.await.unwrap().unwrap()[..], b"b");
    assert_eq!(clone.len(), 3);
    assert_eq!(clone.downloaded(0, None), 1);
}

#[tokio::test]
async fn update_resolves_when_a_longer_feed_is_proven() {
    let writer = writer_with(&["a"]).await;
    let clone = memory_clone(writer.key(), true).await.unwrap();
    let err = clone
        .update(None, Some(Duration::from_millis(20)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }));
    let waiting = tokio::spawn({
        let clone = clone.clone();
        async move { clone.update(Some(3), None).await }
    });
    writer.append_batch(["b", "c"]).await.unwrap();
    // A hash-only proof of the last block is how a peer announces a new length.
    let request = ProofRequest {
        hash: true,
        digest: clone.digest(2),
    };
    let (data, proof) = writer
        .upload(2, request, &mut RemoteTree::default())
        .await
        .unwrap();
    assert!(data.is_none());
    let outcome = clone.put(2, None, proof, Origin::Local).await.unwrap();
    assert!(outcome.length_grew && !outcome.downloaded);
    assert_eq!(waiting.await.unwrap().unwrap(), 3);
    assert!(!clone.has(2), "a hash-only proof stores no data");
}

#[tokio::test]
async fn a_sparse_clone_filled_in_random_order_matches_the_writer() {
    let writer = Feed::memory().await.unwrap();
    let blocks: Vec<Bytes> = (0..300u32)
        .map(|i| Bytes::from(vec![i as u8; (i * 13 % 97) as usize]))
        .collect();
    for chunk in blocks.chunks(37) {
        writer.append_batch(chunk.to_vec()).await.unwrap();
    }
    let clone = memory_clone(writer.key(), true).await.unwrap();
    let mut events = clone.events();
    let mut order: Vec<u64> = (0..300).collect();
    // Deterministic shuffle.
    for i in (1..order.len()).rev() {
        order.swap(i, (i * 7919 + 13) % (i + 1));
    }
    let (mut downloads, mut synced) = (0, false);
    for &i in &order {
        transfer(&writer, &clone, i).await;
        // Read as they come: the feed keeps only EVENT_BACKLOG events for a slow reader.
        while let Ok(e) = events.try_recv() {
            match e {
                Event::Download { .. } => downloads += 1,
                Event::Sync => synced = true,
                _ => {}
            }
        }
    }
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(&clone.get(i as u64).await.unwrap(), b);
    }
    assert_eq!(
        (clone.len(), clone.byte_len()),
        (writer.len(), writer.byte_len())
    );
    let report = clone.audit().await.unwrap();
    assert_eq!((report.valid, report.invalid), (300, 0));
    assert_eq!(downloads, 300);
    assert!(synced, "a clone that holds every block emits Sync");
    // Sending a block again changes nothing.
    assert!(!transfer(&writer, &clone, 5).await.downloaded);
}

#[tokio::test]
async fn puts_that_do_not_verify_are_rejected_and_store_nothing() {
    let writer = writer_with(&["zero", "one", "two", "three", "four"]).await;
    let clone = memory_clone(writer.key(), true).await.unwrap();
    let proof = |i| {
        writer
            .proof(i, ProofRequest::default(), &mut RemoteTree::default())
            .unwrap()
    };

    let cases: Vec<(&str, Option<Bytes>, Proof)> = vec![
        ("tampered data", Some(Bytes::from_static(b"tw0")), proof(2)),
        ("tampered node", Some(Bytes::from_static(b"two")), {
            let mut p = proof(2);
            p.nodes[0].hash[0] ^= 1;
            p
        }),
        ("tampered size", Some(Bytes::from_static(b"two")), {
            let mut p = proof(2);
            p.nodes[0].size += 1;
            p
        }),
        ("bad signature", Some(Bytes::from_static(b"two")), {
            let mut p = proof(2);
            p.signature.as_mut().unwrap().0[10] ^= 1;
            p
        }),
        (
            "no signature",
            Some(Bytes::from_static(b"two")),
            Proof {
                signature: None,
                ..proof(2)
            },
        ),
        (
            "missing nodes",
            Some(Bytes::from_static(b"two")),
            Proof {
                nodes: vec![],
                ..proof(2)
            },
        ),
        (
            "hash-only without node",
            None,
            Proof {
                nodes: vec![],
                ..proof(2)
            },
        ),
        ("wrong block", Some(Bytes::from_static(b"two")), proof(3)),
    ];
    for (what, data, proof) in cases {
        let err = clone.put(2, data, proof, Origin::Local).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidProof { index: 2, .. }),
            "{what}: {err}"
        );
        assert_eq!(clone.len(), 0, "{what}: length must not change");
        assert!(!clone.has(2), "{what}: nothing stored");
    }
    // A proof from another feed (a different key) fails the signature check.
    let other = writer_with(&["zero", "one", "two", "three", "four"]).await;
    let foreign = other
        .proof(2, ProofRequest::default(), &mut RemoteTree::default())
        .unwrap();
    assert!(clone
        .put(2, Some(Bytes::from_static(b"two")), foreign, Origin::Local)
        .await
        .is_err());
    // Absurd indexes are refused, not overflowed.
    let err = clone
        .put(
            u64::MAX / 2,
            Some(Bytes::from_static(b"x")),
            proof(2),
            Origin::Local,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidProof { .. }));
    // The feed is intact and still accepts the genuine block.
    assert!(transfer(&writer, &clone, 2).await.downloaded);
    assert_eq!(&clone.get(2).await.unwrap()[..], b"two");
}

#[tokio::test]
async fn read_runs_stop_at_gaps_and_at_their_byte_budget() {
    let feed = writer_with(&["a", "bb", "ccc", "dddd", "eeeee", "ffffff"]).await;
    let run = |start, end, max_bytes| {
        let feed = feed.clone();
        async move {
            let blocks = feed.read_run(start, end, max_bytes).await.unwrap();
            blocks.iter().map(|b| b.len()).collect::<Vec<_>>()
        }
    };
    assert_eq!(run(0, 6, 1 << 10).await, [1, 2, 3, 4, 5, 6]);
    assert_eq!(run(1, 4, 1 << 10).await, [2, 3, 4]);
    // About `max_bytes`: what fits, and at least one block.
    assert_eq!(run(0, 6, 7).await, [1, 2, 3]);
    assert_eq!(run(5, 6, 1).await, [6]);
    feed.clear(3, 4).await.unwrap();
    assert_eq!(run(1, 6, 1 << 10).await, [2, 3]);
    assert!(run(3, 6, 1 << 10).await.is_empty());

    // A first block larger than a small run is read whole too (off the runtime thread).
    let large = vec![7u8; 300 << 10];
    feed.append(large.clone()).await.unwrap();
    let blocks = feed.read_run(6, 7, 1 << 10).await.unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0], large);
}

#[tokio::test]
async fn clear_removes_blocks_and_audit_counts() {
    let feed = writer_with(&["a", "bb", "ccc", "dddd"]).await;
    let mut events = feed.events();
    feed.clear(1, 3).await.unwrap();
    assert!(feed.has(0) && !feed.has(1) && !feed.has(2) && feed.has(3));
    assert_eq!(feed.downloaded(0, None), 2);
    assert_eq!(feed.len(), 4, "clearing keeps the length");
    assert!(matches!(
        feed.get_with(1, GetOptions::no_wait()).await,
        Err(Error::NotAvailable { .. })
    ));
    assert_eq!(&feed.get(3).await.unwrap()[..], b"dddd");
    assert_eq!(
        events.recv().await.unwrap(),
        Event::Clear { start: 1, end: 3 }
    );
    let report = feed.audit().await.unwrap();
    assert_eq!((report.valid, report.invalid), (2, 0));
    // The writer can still append and prove.
    feed.append("e").await.unwrap();
    assert!(feed
        .verify(4, &feed.signature(4).unwrap().signature)
        .unwrap());
}

#[tokio::test]
async fn read_streams_snapshot_live_tail_and_ranges() {
    let feed = writer_with(&["0", "1", "2", "3", "4"]).await;
    let collect = |opts| {
        let feed = feed.clone();
        async move {
            feed.read_stream(opts)
                .map(|b| String::from_utf8(b.unwrap().to_vec()).unwrap())
                .collect::<Vec<_>>()
                .await
        }
    };
    assert_eq!(
        collect(ReadStreamOptions::default()).await,
        ["0", "1", "2", "3", "4"]
    );
    assert_eq!(
        collect(ReadStreamOptions {
            start: 1,
            end: Some(3),
            ..Default::default()
        })
        .await,
        ["1", "2"]
    );

    // Snapshot: appends after the start are not included.
    let mut snap = Box::pin(feed.read_stream(ReadStreamOptions::default()));
    assert_eq!(&snap.next().await.unwrap().unwrap()[..], b"0");
    feed.append("5").await.unwrap();
    assert_eq!(snap.count().await, 4);
    // Not a snapshot: the end follows the length.
    let mut follow = Box::pin(feed.read_stream(ReadStreamOptions {
        start: 5,
        snapshot: false,
        ..Default::default()
    }));
    feed.append("6").await.unwrap();
    assert_eq!(&follow.next().await.unwrap().unwrap()[..], b"5");
    assert_eq!(&follow.next().await.unwrap().unwrap()[..], b"6");
    assert!(follow.next().await.is_none());

    // Live + tail: only new blocks, forever.
    let mut live = Box::pin(feed.read_stream(ReadStreamOptions {
        tail: true,
        live: true,
        ..Default::default()
    }));
    let next = tokio::spawn(async move {
        let a = live.next().await.unwrap().unwrap();
        let b = live.next().await.unwrap().unwrap();
        (a, b)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    feed.append_batch(["7", "8"]).await.unwrap();
    let (a, b) = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&a[..], &b[..]), (&b"7"[..], &b"8"[..]));
}

#[tokio::test]
async fn stream_over_missing_blocks_times_out_or_fails_fast() {
    let writer = writer_with(&["a", "b", "c"]).await;
    let clone = memory_clone(writer.key(), true).await.unwrap();
    transfer(&writer, &clone, 0).await;
    let items: Vec<_> = clone
        .read_stream(ReadStreamOptions {
            timeout: Some(Duration::from_millis(20)),
            ..Default::default()
        })
        .collect()
        .await;
    assert_eq!(items.len(), 2);
    assert_eq!(&items[0].as_ref().unwrap()[..], b"a");
    assert!(matches!(items[1], Err(Error::Timeout { .. })));
    let items: Vec<_> = clone
        .read_stream(ReadStreamOptions {
            wait: false,
            ..Default::default()
        })
        .collect()
        .await;
    assert!(matches!(items[1], Err(Error::NotAvailable { index: 1 })));
}

#[tokio::test]
async fn write_sink_batches_appends() {
    let feed = Feed::memory().await.unwrap();
    let mut sink = feed.write_sink();
    for i in 0..2500u32 {
        sink.feed(Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    sink.close().await.unwrap();
    assert_eq!(feed.len(), 2500);
    assert_eq!(&feed.get(2499).await.unwrap()[..], &2499u32.to_be_bytes());
    // Batches of up to 1024 are signed once each.
    assert_eq!(feed.signature(0).unwrap().index, 1023);
}

#[tokio::test]
async fn events_for_append_upload_and_close() {
    let feed = Feed::memory().await.unwrap();
    let mut events = feed.events();
    feed.append_batch(["a", "bc"]).await.unwrap();
    assert_eq!(
        events.recv().await.unwrap(),
        Event::Append {
            length: 2,
            byte_length: 3
        }
    );
    feed.upload(1, ProofRequest::default(), &mut RemoteTree::default())
        .await
        .unwrap();
    assert_eq!(
        events.recv().await.unwrap(),
        Event::Upload { index: 1, bytes: 2 }
    );
    let stream = feed.event_stream();
    feed.close().await.unwrap();
    assert_eq!(events.recv().await.unwrap(), Event::Close);
    assert_eq!(stream.take(1).collect::<Vec<_>>().await, vec![Event::Close]);
}

#[tokio::test]
async fn close_wakes_waiters_and_refuses_further_use() {
    let writer = writer_with(&["a"]).await;
    let clone = memory_clone(writer.key(), true).await.unwrap();
    let get = tokio::spawn({
        let c = clone.clone();
        async move { c.get(0).await }
    });
    let update = tokio::spawn({
        let c = clone.clone();
        async move { c.update(Some(5), None).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    clone.close().await.unwrap();
    assert!(matches!(get.await.unwrap(), Err(Error::Closed { .. })));
    assert!(matches!(update.await.unwrap(), Err(Error::Closed { .. })));
    assert!(clone.is_closed());
    assert!(matches!(clone.append("x").await, Err(Error::Closed { .. })));
    assert!(matches!(clone.get(0).await, Err(Error::Closed { .. })));
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Message {
    id: u32,
    text: String,
}

#[tokio::test]
async fn value_encodings() {
    let feed = Feed::memory().await.unwrap();
    let text = feed.typed::<Utf8>();
    text.append(&"héllo".to_string()).await.unwrap();
    assert_eq!(text.get(0).await.unwrap(), "héllo");

    let json = feed.typed::<Json<Message>>();
    json.append_batch(&[
        Message {
            id: 1,
            text: "a".into(),
        },
        Message {
            id: 2,
            text: "b".into(),
        },
    ])
    .await
    .unwrap();
    assert_eq!(
        json.get(2).await.unwrap(),
        Message {
            id: 2,
            text: "b".into()
        }
    );
    // Stored as newline-terminated JSON, like JS `valueEncoding: 'json'`.
    assert_eq!(
        &feed.get(1).await.unwrap()[..],
        b"{\"id\":1,\"text\":\"a\"}\n"
    );
    let all: Vec<_> = json
        .read_stream(ReadStreamOptions {
            start: 1,
            ..Default::default()
        })
        .collect()
        .await;
    assert_eq!(all.len(), 2);
    // The UTF-8 block does not decode as a Message: a clear error naming the block.
    let err = json.get(0).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Encoding {
                encoding: "json",
                index: 0,
                ..
            }
        ),
        "{err}"
    );
    feed.append(vec![0xff, 0xfe]).await.unwrap();
    assert!(matches!(
        text.get(3).await,
        Err(Error::Encoding {
            encoding: "utf-8",
            index: 3,
            ..
        })
    ));
}

#[tokio::test]
async fn on_write_hook_can_refuse_blocks() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook_seen = seen.clone();
    let hook: hypercore::OnWrite = Arc::new(move |index, data, origin| {
        hook_seen
            .lock()
            .unwrap()
            .push((index, data.to_vec(), origin));
        if data == b"forbidden" {
            Err("no thanks".into())
        } else {
            Ok(())
        }
    });
    let feed = Feed::open(
        MemoryStorage::new(),
        FeedOptions {
            on_write: Some(hook.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    feed.append("fine").await.unwrap();
    let err = feed.append_batch(["ok", "forbidden"]).await.unwrap_err();
    assert!(matches!(err, Error::Rejected { index: 2, .. }), "{err}");
    assert_eq!(feed.len(), 1);
    assert_eq!(
        seen.lock().unwrap()[0],
        (0, b"fine".to_vec(), Origin::Local)
    );

    let clone = Feed::open(
        MemoryStorage::new(),
        FeedOptions {
            key: Some(feed.key()),
            sparse: true,
            on_write: Some(hook),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    transfer(&feed, &clone, 0).await;
    assert_eq!(
        seen.lock().unwrap().last().unwrap().2,
        Origin::Remote { peer: [7; 32] }
    );
}

#[tokio::test]
async fn seek_on_a_sparse_clone_waits_for_the_tree() {
    let writer = writer_with(&["aaaa", "bbbb", "cccc", "dddd"]).await;
    let clone = memory_clone(writer.key(), true).await.unwrap();
    transfer(&writer, &clone, 3).await;
    // The clone knows the roots (length 4, 16 bytes) but not the inner nodes.
    let err = clone
        .seek(5, Some(Duration::from_millis(20)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let seeking = tokio::spawn({
        let c = clone.clone();
        async move { c.seek(5, Some(Duration::from_secs(5))).await }
    });
    transfer(&writer, &clone, 1).await;
    assert_eq!(seeking.await.unwrap().unwrap(), (1, 1));
    assert_eq!(writer.seek(16, None).await.unwrap(), (4, 0));
    assert!(matches!(
        writer.seek(17, None).await,
        Err(Error::OutOfRange { .. })
    ));
}

#[tokio::test]
async fn reopening_from_disk_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let feed = Feed::open_dir(dir.path()).await.unwrap();
        feed.append_batch(["a", "b"]).await.unwrap();
        feed.append("c").await.unwrap();
        feed.close().await.unwrap();
        feed.key()
    };
    let feed = Feed::open_dir(dir.path()).await.unwrap();
    assert_eq!(feed.key(), key);
    assert!(feed.writable());
    assert_eq!((feed.len(), feed.byte_len()), (3, 3));
    assert_eq!(&feed.get(1).await.unwrap()[..], b"b");
    feed.append("d").await.unwrap();
    assert_eq!(feed.len(), 4);
}

/// Descriptors of this process open on files under `dir` (other tests' files are
/// elsewhere, so parallel tests do not disturb the count).
fn descriptors_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[tokio::test]
async fn an_open_feed_holds_four_descriptors_and_none_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let kp = KeyPair::from_seed(&[9; 32]);
    let feed = Feed::open(
        DiskStorage::new(&dir),
        FeedOptions {
            secret_key: Some(kp.secret.clone()),
            store_secret_key: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    feed.append("a").await.unwrap();
    // data, tree, signatures and the bitfield, which also holds the lock.
    assert_eq!(descriptors_under(&dir), 4);
    // The lock is still taken.
    let err = Feed::open(DiskStorage::new(&dir), FeedOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    feed.close().await.unwrap();
    assert_eq!(descriptors_under(&dir), 0);
    // The key files were written before they were closed.
    let feed = Feed::open(DiskStorage::new(&dir), FeedOptions::default())
        .await
        .unwrap();
    assert!(feed.writable());
    assert_eq!(feed.key(), kp.public);
    assert_eq!(feed.len(), 1);
}

#[tokio::test]
async fn open_options() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed");
    // create_if_missing: false on an empty directory.
    let err = Feed::open(
        DiskStorage::new(&path),
        FeedOptions {
            create_if_missing: false,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { .. }) && err.to_string().contains("feed"),
        "{err}"
    );

    let kp = KeyPair::from_seed(&[1; 32]);
    let feed = Feed::open(
        DiskStorage::new(&path),
        FeedOptions {
            secret_key: Some(kp.secret.clone()),
            store_secret_key: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(feed.key(), kp.public);
    feed.append("x").await.unwrap();
    // Opening the same directory again while it is open is refused.
    let err = Feed::open(DiskStorage::new(&path), FeedOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    feed.close().await.unwrap();
    assert_eq!(
        std::fs::metadata(path.join("secret_key")).unwrap().len(),
        0,
        "secret key not stored"
    );

    // Without the secret key the feed opens read-only...
    let ro = Feed::open(DiskStorage::new(&path), FeedOptions::default())
        .await
        .unwrap();
    assert!(!ro.writable());
    assert_eq!(&ro.get(0).await.unwrap()[..], b"x");
    ro.close().await.unwrap();
    // ...and becomes writable when the key is given again.
    let rw = Feed::open(
        DiskStorage::new(&path),
        FeedOptions {
            secret_key: Some(kp.secret.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(rw.writable());
    rw.close().await.unwrap();

    // A different key than the stored one.
    let other = KeyPair::from_seed(&[2; 32]);
    let err = Feed::open(
        DiskStorage::new(&path),
        FeedOptions {
            key: Some(other.public),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    // A secret key that does not belong to the public key.
    let err = Feed::open(
        DiskStorage::new(&path),
        FeedOptions {
            key: Some(kp.public),
            secret_key: Some(other.secret.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyMismatch { .. } | Error::SecretKeyMismatch { .. }
        ),
        "{err}"
    );

    // overwrite: a fresh feed in the same place.
    let fresh = Feed::open(
        DiskStorage::new(&path),
        FeedOptions {
            overwrite: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_ne!(fresh.key(), kp.public);
    assert_eq!(fresh.len(), 0);
    fresh.close().await.unwrap();

    // No tree-node cache at all still works.
    let nocache = Feed::open(
        MemoryStorage::new(),
        FeedOptions {
            storage_cache_size: 0,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    nocache.append_batch(["a", "b", "c"]).await.unwrap();
    assert_eq!(&nocache.get(2).await.unwrap()[..], b"c");
}

#[tokio::test]
async fn memory_storage_survives_close_and_reopen() {
    let storage = MemoryStorage::new();
    let feed = Feed::open(storage.clone(), FeedOptions::default())
        .await
        .unwrap();
    feed.append_batch(["a", "b"]).await.unwrap();
    feed.close().await.unwrap();
    let again = Feed::open(storage, FeedOptions::default()).await.unwrap();
    assert_eq!(again.key(), feed.key());
    assert_eq!(again.len(), 2);
}

#[tokio::test]
async fn large_blocks_read_off_the_runtime() {
    let feed = Feed::memory().await.unwrap();
    let big = Bytes::from((0..3_000_000u32).map(|i| i as u8).collect::<Vec<_>>());
    feed.append_batch([big.clone(), Bytes::from_static(b"small")])
        .await
        .unwrap();
    assert_eq!(feed.get(0).await.unwrap(), big);
    assert_eq!(feed.get_batch(0, 2).await.unwrap()[0], big);
}

#[tokio::test]
async fn downloaded_bytes_sums_the_stored_blocks_sizes() {
    // Blocks of distinct sizes, so any wrong node shows in the sum.
    let blocks: Vec<String> = (0..37).map(|i| "x".repeat(i * 3 + 1)).collect();
    let refs: Vec<&str> = blocks.iter().map(String::as_str).collect();
    let writer = writer_with(&refs).await;
    let size = |range: std::ops::Range<u64>, stored: &dyn Fn(u64) -> bool| -> u64 {
        range
            .filter(|&i| stored(i))
            .map(|i| blocks[i as usize].len() as u64)
            .sum()
    };
    assert_eq!(
        writer.downloaded_bytes(0, None).await.unwrap(),
        writer.byte_len()
    );
    assert_eq!(
        writer.downloaded_bytes(5, Some(29)).await.unwrap(),
        size(5..29, &|_| true)
    );
    // A sparse clone holding a scattered selection, then after a clear.
    let clone = memory_clone(writer.key(), true).await.unwrap();
    for i in [0, 1, 2, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 31, 36] {
        transfer(&writer, &clone, i).await;
    }
    for (start, end) in [(0, 37), (0, 16), (8, 16), (3, 21), (17, 19), (30, 37)] {
        let expected = size(start..end, &|i| clone.has(i));
        assert_eq!(
            clone.downloaded_bytes(start, Some(end)).await.unwrap(),
            expected,
            "blocks {start}..{end}"
        );
    }
    clone.clear(9, 13).await.unwrap();
    assert_eq!(
        clone.downloaded_bytes(0, None).await.unwrap(),
        size(0..37, &|i| clone.has(i))
    );
}

#[tokio::test]
async fn leaves_are_the_blocks_hashes_without_their_data() {
    let writer = writer_with(&["a", "", "ccc", "dddd"]).await;
    let leaves = writer.leaves(1, 4).unwrap();
    let hashes: Vec<_> = ["", "ccc", "dddd"]
        .iter()
        .map(|b| hypercore::crypto::leaf_hash(b.as_bytes()))
        .collect();
    assert_eq!(leaves.iter().map(|l| l.hash).collect::<Vec<_>>(), hashes);
    assert_eq!(leaves.iter().map(|l| l.size).collect::<Vec<_>>(), [0, 3, 4]);
    assert_eq!(
        leaves.iter().map(|l| l.index).collect::<Vec<_>>(),
        [2, 4, 6]
    );
    assert!(writer.leaves(2, 2).unwrap().is_empty());
    assert!(matches!(writer.leaves(3, 5), Err(Error::OutOfRange { .. })));

    // A sparse clone has the leaves of the blocks it verified, and says which it lacks.
    let clone = memory_clone(writer.key(), true).await.unwrap();
    transfer(&writer, &clone, 2).await;
    assert_eq!(clone.leaves(2, 3).unwrap(), writer.leaves(2, 3).unwrap());
    assert!(matches!(
        clone.leaves(0, 3),
        Err(Error::NotAvailable { index: 0 })
    ));
}

/// A feed of its own key pair in memory.
async fn feed_of(kp: &KeyPair) -> Feed {
    Feed::open(
        MemoryStorage::new(),
        FeedOptions {
            secret_key: Some(kp.secret.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn prepared_appends_store_what_plain_appends_store() {
    let kp = KeyPair::from_seed(&[3; 32]);
    let (plain, prepared, hashed) = (feed_of(&kp).await, feed_of(&kp).await, feed_of(&kp).await);
    let big = "x".repeat(700_000);
    let batches: [&[&str]; 4] = [&["a", "bc"], &["def"], &["", "g", "hi", "j"], &[&big, &big]];
    for batch in batches {
        let blocks: Vec<Bytes> = batch.iter().map(|b| Bytes::from(b.to_string())).collect();
        let at = plain.append_batch_at(blocks.clone()).await.unwrap();
        let (p, h) = (prepared.clone(), hashed.clone());
        let got = tokio::task::spawn_blocking(move || {
            let signed = p.prepare_append(blocks.clone()).unwrap();
            let ahead = h.prepare_hashed(HashedBlocks::new(blocks)).unwrap();
            (
                p.commit_append(signed).unwrap(),
                h.commit_append(ahead).unwrap(),
            )
        })
        .await
        .unwrap();
        assert_eq!(got, (at, at));
    }
    for feed in [&prepared, &hashed] {
        assert_eq!(feed.byte_len(), plain.byte_len());
        for index in 0..plain.len() {
            assert_eq!(
                feed.get(index).await.unwrap(),
                plain.get(index).await.unwrap()
            );
            // Same blocks, same key: same tree and the same (deterministic) signatures.
            assert_eq!(
                feed.root_hashes(index).unwrap(),
                plain.root_hashes(index).unwrap()
            );
            assert_eq!(
                feed.signature(index).unwrap(),
                plain.signature(index).unwrap()
            );
        }
    }
}

#[tokio::test]
async fn a_prepared_append_overtaken_by_another_is_signed_again() {
    let dir = tempfile::tempdir().unwrap();
    let feed = Feed::open_dir(dir.path()).await.unwrap();
    feed.append_batch(["a", "b"]).await.unwrap();
    let f = feed.clone();
    let (first, second) = tokio::task::spawn_blocking(move || {
        // Both prepared for length 2; the second lands there, the first after it.
        let x = f.prepare_append(vec![Bytes::from("x")]).unwrap();
        let y = f.prepare_append(vec![Bytes::from("yy")]).unwrap();
        let second = f.commit_append(y).unwrap();
        (f.commit_append(x).unwrap(), second)
    })
    .await
    .unwrap();
    assert_eq!((second.start, second.start_byte, second.length), (2, 2, 3));
    assert_eq!((first.start, first.start_byte, first.length), (3, 4, 4));
    for (index, block) in [(2, "yy"), (3, "x")] {
        assert_eq!(&feed.get(index).await.unwrap()[..], block.as_bytes());
        let signature = feed.signature(index).unwrap();
        assert_eq!(signature.index, index);
        assert!(feed.verify(index, &signature.signature).unwrap());
    }
    feed.close().await.unwrap();
    // The files agree: the reopened feed proves all four blocks.
    let feed = Feed::open_dir(dir.path()).await.unwrap();
    assert_eq!((feed.len(), feed.byte_len()), (4, 5));
    assert_eq!(&feed.get(3).await.unwrap()[..], b"x");
}

#[tokio::test]
async fn a_read_only_feed_prepares_no_append() {
    let writer = writer_with(&["a"]).await;
    let reader = memory_clone(writer.key(), false).await.unwrap();
    let err = reader.prepare_append(vec![Bytes::from("b")]).unwrap_err();
    assert!(matches!(err, Error::NotWritable { .. }), "{err}");
}
