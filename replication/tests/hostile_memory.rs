//! A hostile peer that opens channel after channel, for feeds nobody here has, over one
//! connection to a Rust seeder. Each `Open` is ~70 bytes on the wire; what the seeder keeps
//! per `Open` must be bounded (or the peer dropped), and the seeder must keep serving.
//!
//! Measured as the process's resident memory, so this file holds one test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hypercore::Feed;
use hypercore_protocol::cipher::XSalsa20;
use hypercore_protocol::frame;
use hypercore_protocol::message::{Message, Open};
use hypercore_protocol::noise::Handshake;
use hypercore_protocol::{NoiseKeyPair, ProtocolOptions};
use hypercore_replication::{replicate, ReplicateOptions, Replicator, ReplicatorOptions};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        * 1024
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Reads one varint-length-prefixed handshake message (all are < 128 bytes here).
async fn read_handshake_message(io: &mut TcpStream) -> Vec<u8> {
    let len = io.read_u8().await.unwrap();
    assert!(len < 0x80);
    let mut m = vec![0u8; len as usize];
    io.read_exact(&mut m).await.unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_flood_does_not_grow_memory_without_bound() {
    const OPENS: u64 = 300_000;
    let writer = Feed::memory().await.unwrap();
    writer
        .append_batch((0..100).map(|i| Bytes::from(vec![i as u8; 100])))
        .await
        .unwrap();
    let rep = Replicator::new(writer.clone(), ReplicatorOptions::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seeder = tokio::spawn({
        let rep = rep.clone();
        async move {
            let (s, _) = listener.accept().await.unwrap();
            replicate(
                &rep,
                s,
                ReplicateOptions {
                    protocol: ProtocolOptions::default(),
                },
            )
            .await
        }
    });

    // The hostile side: a genuine handshake, then nothing but Opens.
    let mut io = TcpStream::connect(addr).await.unwrap();
    let mut hs = Handshake::new(true, &NoiseKeyPair::generate()).unwrap();
    io.write_all(&hs.write().unwrap()).await.unwrap();
    let m2 = read_handshake_message(&mut io).await;
    hs.read(&m2).unwrap();
    io.write_all(&hs.write().unwrap()).await.unwrap();
    let est = hs.finish().unwrap();
    let mut tx = XSalsa20::new(&est.tx_key, &est.tx_nonce);
    let (mut rd, mut wr) = io.into_split();
    // Read (and ignore) whatever the seeder says, so it is never blocked writing.
    let reader = tokio::spawn(async move {
        let mut sink = vec![0u8; 65536];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss();
    let started = Instant::now();
    let mut rng = rand::thread_rng();
    let mut sent = 0u64;
    let mut wire_bytes = 0usize;
    'flood: for batch in 0..OPENS / 1000 {
        let mut wire = BytesMut::new();
        for k in 0..1000 {
            let dk: [u8; 32] = rng.gen();
            let cap: [u8; 32] = rng.gen();
            frame::encode(
                2 + batch * 1000 + k,
                &Message::Open(Open {
                    discovery_key: dk.to_vec(),
                    capability: Some(cap.to_vec()),
                }),
                &mut wire,
            );
        }
        wire_bytes += wire.len();
        tx.apply(&mut wire);
        if wr.write_all(&wire).await.is_err() {
            break 'flood;
        }
        sent += 1000;
        if seeder.is_finished() {
            break;
        }
    }
    // Let the seeder digest what is in flight.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss();
    let dropped = seeder.is_finished();
    println!(
        "open flood: {sent} Opens ({:.1} MiB on the wire) in {:?}; RSS {:.1} -> {:.1} MiB \
         (+{:.1} MiB, {} bytes per Open); seeder dropped the peer: {dropped}",
        mib(wire_bytes as u64),
        started.elapsed(),
        mib(before),
        mib(after),
        mib(after.saturating_sub(before)),
        after.saturating_sub(before) / sent.max(1),
    );
    if dropped {
        let r = seeder.await.unwrap();
        println!("seeder: {r:?}");
    } else {
        seeder.abort();
    }
    reader.abort();
    assert!(
        after.saturating_sub(before) < 32 << 20,
        "{sent} Opens of unknown feeds grew the seeder's memory by {:.1} MiB",
        mib(after.saturating_sub(before))
    );
}
