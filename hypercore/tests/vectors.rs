//! Every vector in `tests/data/core.json` (produced by JS hypercore 9) reproduced by the
//! Rust log: keys, hashes, nodes, roots, signatures, proofs, digests, seek, audit, the Have
//! bitfield, the storage files byte for byte, flat-tree tables, bitfield RLE, capability.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use hypercore::bitfield::{rle, Bitfield};
use hypercore::crypto::{self, to_hex};
use hypercore::storage::{DiskStorage, MemoryStorage};
use hypercore::{flat_tree, Feed, FeedOptions, KeyPair, Node, Origin, ProofRequest, RemoteTree};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/core.json")).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    crypto::from_hex(v.as_str().unwrap()).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

fn node_json(n: &Node) -> Value {
    serde_json::json!({ "index": n.index, "size": n.size, "hash": to_hex(&n.hash) })
}

fn key_pair(v: &Value) -> KeyPair {
    let seed: [u8; 32] = hex(&v["keyPair"]["seed"]).try_into().unwrap();
    KeyPair::from_seed(&seed)
}

fn blocks(v: &Value) -> Vec<Vec<u8>> {
    v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| hex(&b["hex"]))
        .collect()
}

async fn writer(v: &Value, storage: impl hypercore::storage::Storage + 'static) -> Feed {
    let kp = key_pair(v);
    Feed::open(
        storage,
        FeedOptions {
            secret_key: Some(kp.secret),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[test]
fn keys_and_hashes() {
    let v = vectors();
    let kp = key_pair(&v);
    assert_eq!(
        kp.public.to_hex(),
        v["keyPair"]["publicKey"].as_str().unwrap()
    );
    assert_eq!(
        to_hex(&kp.secret.to_bytes()),
        v["keyPair"]["secretKey"].as_str().unwrap()
    );
    assert_eq!(
        kp.public.discovery_key().to_hex(),
        v["discoveryKey"].as_str().unwrap()
    );
    for b in v["blocks"].as_array().unwrap() {
        assert_eq!(
            to_hex(&crypto::leaf_hash(&hex(&b["hex"]))),
            b["leafHash"].as_str().unwrap()
        );
    }
}

#[tokio::test]
async fn lengths_roots_signatures_nodes() {
    let v = vectors();
    let feed = writer(&v, MemoryStorage::new()).await;
    for (block, expect) in blocks(&v).into_iter().zip(v["lengths"].as_array().unwrap()) {
        let length = feed.append(block).await.unwrap();
        assert_eq!(length, u(&expect["length"]));
        assert_eq!(feed.byte_len(), u(&expect["byteLength"]));
        let roots = feed.root_hashes(length - 1).unwrap();
        let roots_json: Vec<Value> = roots.iter().map(node_json).collect();
        assert_eq!(Value::Array(roots_json), expect["roots"]);
        assert_eq!(
            to_hex(&crypto::tree_hash(&roots)),
            expect["treeHash"].as_str().unwrap()
        );
        assert_eq!(
            to_hex(&crypto::signable(&roots, length)),
            expect["signable"].as_str().unwrap()
        );
        let sig = feed.signature(length - 1).unwrap();
        assert_eq!(sig.index, length - 1);
        assert_eq!(
            sig.signature.to_hex(),
            expect["signature"].as_str().unwrap()
        );
        assert!(feed.verify(length - 1, &sig.signature).unwrap());
    }
    // Every stored node, through the proof API's node source: a proof with hash:true for
    // a digest that says "I have everything else" returns exactly the leaf.
    let mut stored = BTreeMap::new();
    for n in v["nodes"].as_array().unwrap() {
        stored.insert(u(&n["index"]), n.clone());
    }
    for block in 0..7u64 {
        let p = feed
            .proof(
                block,
                ProofRequest {
                    hash: true,
                    digest: 1,
                },
                &mut RemoteTree::default(),
            )
            .unwrap();
        assert_eq!(node_json(&p.nodes[0]), stored[&(2 * block)]);
    }
    // A wrong signature does not verify.
    let other = feed.signature(3).unwrap().signature;
    assert!(!feed.verify(6, &other).unwrap());
}

#[tokio::test]
async fn uploader_proofs() {
    let v = vectors();
    let feed = writer(&v, MemoryStorage::new()).await;
    feed.append_batch(blocks(&v)).await.unwrap();
    for p in v["proofs"].as_array().unwrap() {
        let request = ProofRequest {
            hash: false,
            digest: u(&p["digest"]),
        };
        let proof = feed
            .proof(u(&p["index"]), request, &mut RemoteTree::default())
            .unwrap();
        let nodes: Vec<Value> = proof.nodes.iter().map(node_json).collect();
        assert_eq!(
            Value::Array(nodes),
            p["nodes"],
            "proof of block {}",
            p["index"]
        );
        assert_eq!(
            proof.signature.map(|s| s.to_hex()),
            p["signature"].as_str().map(String::from)
        );
    }
}

#[tokio::test]
async fn downloader_digests_and_put() {
    let v = vectors();
    let writer = writer(&v, MemoryStorage::new()).await;
    writer.append_batch(blocks(&v)).await.unwrap();
    let reader = Feed::open(
        MemoryStorage::new(),
        FeedOptions {
            key: Some(writer.key()),
            sparse: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!reader.writable());
    let digests = v["digests"].as_array().unwrap();
    for d in digests
        .iter()
        .filter(|d| d["haveBlocks"].as_array().unwrap().is_empty())
    {
        assert_eq!(reader.digest(u(&d["index"])), u(&d["digest"]));
    }
    let proof = writer
        .proof(3, ProofRequest::default(), &mut RemoteTree::default())
        .unwrap();
    let outcome = reader
        .put(3, Some(writer.get(3).await.unwrap()), proof, Origin::Local)
        .await
        .unwrap();
    assert!(outcome.downloaded && outcome.length_grew);
    for d in digests
        .iter()
        .filter(|d| !d["haveBlocks"].as_array().unwrap().is_empty())
    {
        assert_eq!(
            reader.digest(u(&d["index"])),
            u(&d["digest"]),
            "digest of block {}",
            d["index"]
        );
    }
    assert_eq!(reader.len(), u(&v["readerAfterPut3"]["length"]));
    assert_eq!(reader.byte_len(), u(&v["readerAfterPut3"]["byteLength"]));
    assert_eq!(&reader.get(3).await.unwrap()[..], b"is");
}

#[tokio::test]
async fn seek_audit_and_have_bitfield() {
    let v = vectors();
    let feed = writer(&v, MemoryStorage::new()).await;
    feed.append_batch(blocks(&v)).await.unwrap();
    for s in v["seek"].as_array().unwrap() {
        let got = feed.seek(u(&s["bytes"]), None).await.unwrap();
        assert_eq!(
            got,
            (u(&s["index"]), u(&s["offset"])),
            "seek to byte {}",
            s["bytes"]
        );
    }
    assert!(feed.seek(28, None).await.is_err());
    let report = feed.audit().await.unwrap();
    assert_eq!(report.valid, u(&v["audit"]["valid"]));
    assert_eq!(report.invalid, u(&v["audit"]["invalid"]));

    let mut bf = Bitfield::default();
    for i in 0..7 {
        bf.set_block(i, true);
    }
    let have = &v["haveBitfield"];
    assert_eq!(
        to_hex(&bf.compress(u(&have["start"]), u(&have["length"]))),
        have["rle"].as_str().unwrap()
    );
}

#[tokio::test]
async fn storage_files_are_byte_identical() {
    let v = vectors();
    let dir = tempfile::tempdir().unwrap();
    {
        // One block per append, as the generator did.
        let feed = writer(&v, DiskStorage::new(dir.path())).await;
        for b in blocks(&v) {
            feed.append(b).await.unwrap();
        }
        feed.close().await.unwrap();
    }
    let st = &v["storage"];
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    for name in ["key", "secret_key", "data"] {
        let bytes = read(name);
        assert_eq!(bytes.len() as u64, u(&st[name]["size"]), "{name} size");
        assert_eq!(
            to_hex(&bytes),
            st[name]["hex"].as_str().unwrap(),
            "{name} content"
        );
    }
    for (name, rec) in [("signatures", 64usize), ("tree", 40)] {
        let bytes = read(name);
        assert_eq!(bytes.len() as u64, u(&st[name]["size"]), "{name} size");
        assert_eq!(to_hex(&bytes[..32]), st[name]["header"].as_str().unwrap());
        assert_eq!(
            to_hex(&bytes[32..32 + rec]),
            st[name]["firstRecord"].as_str().unwrap()
        );
    }
    let bf = read("bitfield");
    assert_eq!(bf.len() as u64, u(&st["bitfield"]["size"]));
    assert_eq!(
        to_hex(&bf[..32]),
        st["bitfield"]["header"].as_str().unwrap()
    );
    let page = &bf[32..];
    let p0 = &st["bitfield"]["page0"];
    assert_eq!(to_hex(&page[0..4]), p0["dataBitsFirst4"].as_str().unwrap());
    assert_eq!(
        to_hex(&page[1024..1028]),
        p0["treeBitsFirst4"].as_str().unwrap()
    );
    assert_eq!(
        to_hex(&page[3072..3076]),
        p0["indexBitsFirst4"].as_str().unwrap()
    );
    let others_zero = page[4..1024]
        .iter()
        .chain(&page[1028..3072])
        .chain(&page[3076..])
        .all(|&b| b == 0);
    assert_eq!(others_zero, p0["allOtherBytesZero"].as_bool().unwrap());
    // The secret key is private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("secret_key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn flat_tree_tables() {
    let v = vectors();
    for row in v["flatTree"].as_array().unwrap() {
        let i = u(&row["index"]);
        assert_eq!(u64::from(flat_tree::depth(i)), u(&row["depth"]));
        assert_eq!(flat_tree::offset(i), u(&row["offset"]));
        assert_eq!(flat_tree::parent(i), u(&row["parent"]));
        assert_eq!(flat_tree::sibling(i), u(&row["sibling"]));
        let children = flat_tree::children(i)
            .map(|(a, b)| serde_json::json!([a, b]))
            .unwrap_or(Value::Null);
        assert_eq!(children, row["children"]);
        assert_eq!(flat_tree::left_span(i), u(&row["leftSpan"]));
        assert_eq!(flat_tree::right_span(i), u(&row["rightSpan"]));
    }
    for row in v["fullRoots"].as_array().unwrap() {
        let roots: Vec<u64> = flat_tree::full_roots(2 * u(&row["blocks"])).collect();
        let expect: Vec<u64> = row["fullRoots"].as_array().unwrap().iter().map(u).collect();
        assert_eq!(roots, expect);
    }
}

#[test]
fn bitfield_rle() {
    let v = vectors();
    for row in v["bitfieldRle"].as_array().unwrap() {
        let raw = match row["rawHex"].as_str() {
            Some(h) => crypto::from_hex(h).unwrap(),
            None => expand(row["rawDescription"].as_str().unwrap()),
        };
        assert_eq!(raw.len() as u64, u(&row["rawLength"]));
        let enc = rle::encode(&raw);
        assert_eq!(to_hex(&enc), row["encoded"].as_str().unwrap());
        let dec = rle::decode(&enc, 1 << 20).unwrap();
        assert_eq!(dec.len() as u64, u(&row["decodedLength"]));
        assert_eq!(
            dec.len().div_ceil(4) as u64 * 4,
            u(&row["decodedLengthAlign4"])
        );
    }
}

/// Expands the generator's "64xff 1xf0 959x00" descriptions.
fn expand(desc: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in desc.split(' ') {
        let (n, b) = part.split_once('x').unwrap();
        out.extend(std::iter::repeat_n(
            u8::from_str_radix(b, 16).unwrap(),
            n.parse().unwrap(),
        ));
    }
    out
}

#[test]
fn capability() {
    let v = vectors();
    let c = &v["capability"];
    let key: hypercore::PublicKey = c["feedKey"].as_str().unwrap().parse().unwrap();
    let tx: [u8; 32] = hex(&c["splitTx"]).try_into().unwrap();
    let rx: [u8; 32] = hex(&c["splitRx"]).try_into().unwrap();
    assert_eq!(
        to_hex(&crypto::capability(&key, &tx, &rx)),
        c["capability"].as_str().unwrap()
    );
    assert_eq!(
        to_hex(&crypto::remote_capability(&key, &tx, &rx)),
        c["remoteCapability"].as_str().unwrap()
    );
}
