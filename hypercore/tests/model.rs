//! Property tests against simple models: the merkle tree against a naive recursive hash,
//! sparse replication by random proofs against a set of blocks, and the bitfield against
//! a set of indexes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use bytes::Bytes;
use hypercore::bitfield::Bitfield;
use hypercore::crypto;
use hypercore::storage::MemoryStorage;
use hypercore::{flat_tree, Feed, FeedOptions, Node, Origin, ProofRequest, RemoteTree};
use proptest::prelude::*;

/// The hash of tree node `index` over `blocks`, computed naively from the definition.
fn naive(blocks: &[Vec<u8>], index: u64) -> Node {
    match flat_tree::children(index) {
        None => Node {
            index,
            hash: crypto::leaf_hash(&blocks[(index / 2) as usize]),
            size: blocks[(index / 2) as usize].len() as u64,
        },
        Some((l, r)) => {
            let (a, b) = (naive(blocks, l), naive(blocks, r));
            Node {
                index,
                hash: crypto::parent_hash(&a, &b),
                size: a.size + b.size,
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn blocks_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..120)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn merkle_tree_matches_naive_model(blocks in blocks_strategy(), cuts in proptest::collection::vec(1usize..20, 1..30)) {
        runtime().block_on(async {
            let feed = Feed::memory().await.unwrap();
            let mut at = 0;
            let mut ends = Vec::new();
            for c in cuts.iter().cycle() {
                if at >= blocks.len() { break; }
                let end = (at + c).min(blocks.len());
                feed.append_batch(blocks[at..end].iter().cloned().map(Bytes::from)).await.unwrap();
                ends.push(end);
                at = end;
            }
            let total: u64 = blocks.iter().map(|b| b.len() as u64).sum();
            assert_eq!(feed.byte_len(), total);
            for length in 1..=blocks.len() as u64 {
                let roots = feed.root_hashes(length - 1).unwrap();
                let model: Vec<Node> = flat_tree::full_roots(2 * length).map(|r| naive(&blocks, r)).collect();
                assert_eq!(roots, model, "roots of length {}", length);
            }
            // Exactly the batch ends are signed, and each signature verifies.
            for &end in &ends {
                let sig = feed.signature(end as u64 - 1).unwrap();
                assert_eq!(sig.index, end as u64 - 1);
                assert!(feed.verify(sig.index, &sig.signature).unwrap());
            }
            for (i, b) in blocks.iter().enumerate() {
                assert_eq!(&feed.get(i as u64).await.unwrap()[..], &b[..]);
            }
            // seek agrees with the cumulative sizes.
            let mut offset = 0u64;
            for (i, b) in blocks.iter().enumerate() {
                if !b.is_empty() {
                    assert_eq!(feed.seek(offset + b.len() as u64 - 1, None).await.unwrap(), (i as u64, b.len() as u64 - 1));
                }
                offset += b.len() as u64;
            }
        });
    }

    #[test]
    fn sparse_replication_matches_set_model(
        blocks in blocks_strategy(),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..80),
        remember_peer in any::<bool>(),
    ) {
        runtime().block_on(async {
            let writer = Feed::memory().await.unwrap();
            writer.append_batch(blocks.iter().cloned().map(Bytes::from)).await.unwrap();
            let reader = Feed::open(MemoryStorage::new(), FeedOptions { key: Some(writer.key()), sparse: true, ..Default::default() }).await.unwrap();
            let mut model = BTreeSet::new();
            // One channel's memory of what the reader has, or none at all.
            let mut peer = RemoteTree::default();
            for p in &picks {
                let i = p.index(blocks.len()) as u64;
                let request = ProofRequest { hash: false, digest: reader.digest(i) };
                let mut fresh = RemoteTree::default();
                let remote = if remember_peer { &mut peer } else { &mut fresh };
                let (data, proof) = writer.upload(i, request, remote).await.unwrap();
                let outcome = reader.put(i, data, proof, Origin::Local).await.unwrap();
                assert_eq!(outcome.downloaded, model.insert(i));
            }
            assert_eq!(reader.len(), writer.len());
            assert_eq!(reader.byte_len(), writer.byte_len());
            for i in 0..blocks.len() as u64 {
                assert_eq!(reader.has(i), model.contains(&i));
                if model.contains(&i) {
                    assert_eq!(&reader.get(i).await.unwrap()[..], &blocks[i as usize][..]);
                }
            }
            assert_eq!(reader.downloaded(0, None), model.len() as u64);
            let report = reader.audit().await.unwrap();
            assert_eq!((report.valid, report.invalid), (model.len() as u64, 0));
        });
    }

    #[test]
    fn bitfield_matches_set_model(ops in proptest::collection::vec((0u64..40_000, any::<bool>()), 1..400), nodes in proptest::collection::vec(0u64..80_000, 0..200)) {
        let mut bf = Bitfield::default();
        let mut model = BTreeSet::new();
        for &(i, v) in &ops {
            let changed = bf.set_block(i, v);
            let model_changed = if v { model.insert(i) } else { model.remove(&i) };
            prop_assert_eq!(changed, model_changed);
        }
        let mut node_model = BTreeSet::new();
        for &n in &nodes {
            bf.add_node(n);
            node_model.insert(n);
        }
        for &(i, _) in &ops {
            prop_assert_eq!(bf.has_block(i), model.contains(&i));
            let end = i + 5000;
            prop_assert_eq!(bf.count_blocks(i, end), model.range(i..end).count() as u64);
            prop_assert_eq!(bf.next_block(i, end), model.range(i..end).next().copied());
            let missing = (i..end).find(|k| !model.contains(k));
            prop_assert_eq!(bf.first_missing(i, end), missing);
        }
        for &n in &node_model {
            prop_assert!(bf.has_node(n));
        }
        // What is written to disk reads back to the same bits.
        let mut file = vec![0u8; 0];
        for (offset, page) in bf.clone().take_dirty() {
            let end = offset as usize + page.len();
            if file.len() < end { file.resize(end, 0); }
            file[offset as usize..end].copy_from_slice(&page);
        }
        let loaded = Bitfield::from_bytes(hypercore::bitfield::DEFAULT_PAGE_SIZE, &file);
        for &(i, _) in &ops {
            prop_assert_eq!(loaded.has_block(i), model.contains(&i));
        }
        for &n in &node_model {
            prop_assert!(loaded.has_node(n));
        }
    }
}

#[test]
fn tree_hash_of_model_roots_is_what_is_signed() {
    let rt = runtime();
    rt.block_on(async {
        let blocks: Vec<Vec<u8>> = (0..37u8).map(|i| vec![i; i as usize]).collect();
        let feed = Feed::memory().await.unwrap();
        feed.append_batch(blocks.iter().cloned().map(Bytes::from))
            .await
            .unwrap();
        let roots: Vec<Node> = flat_tree::full_roots(2 * 37)
            .map(|r| naive(&blocks, r))
            .collect();
        let sig = feed.signature(36).unwrap().signature;
        let signable = crypto::signable(&roots, 37);
        assert!(feed.key().verify(&signable, &sig));
        let mut tampered = signable;
        tampered[39] ^= 1;
        assert!(!feed.key().verify(&tampered, &sig));
    });
}
