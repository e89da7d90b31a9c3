//! hyperswarm's uTP against the real JS utp-native 2.5.3 (libutp), on loopback
//! (`tests/interop/utp-peer.js`: a utp-native socket echoing every connection, with a
//! dht-rpc 4.9.6 node on the same socket, as hyperswarm 2 binds them): 8 MiB both ways
//! with each dialling, FIN and close seen by each side, and the DHT answering on the
//! port uTP shares while a stream flows.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use hyperd_tests::blake2b_concat;
use hyperd_tests::js_peer::JsPeer;
use hyperswarm::message::{Message, MessageType};
use hyperswarm::{compact, Dht, Endpoint, UtpStream};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const SIZE: usize = 8 << 20;
/// A transfer of [`SIZE`] takes a few seconds on loopback, even unoptimised.
const LIMIT: Duration = Duration::from_secs(120);

/// `n` bytes of xorshift32 from `seed`, the low byte of each step (as `utp-peer.js`).
fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The JS peer and its address.
async fn js_peer() -> (JsPeer, SocketAddrV4) {
    let (peer, ready) = JsPeer::spawn("utp-peer.js", &[]).await.unwrap();
    let port = ready["port"].as_u64().unwrap() as u16;
    (peer, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// An endpoint that accepts connections.
async fn endpoint() -> Endpoint {
    let endpoint = Endpoint::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    endpoint.set_accepting(true);
    endpoint
}

/// Writes `data` and shuts down while reading everything the peer sends until its end.
async fn send_and_read(stream: UtpStream, data: &[u8]) -> Vec<u8> {
    let (mut read, mut write) = tokio::io::split(stream);
    let writing = async {
        write.write_all(data).await.unwrap();
        write.shutdown().await.unwrap();
        write
    };
    let reading = async {
        let mut got = Vec::new();
        read.read_to_end(&mut got).await.unwrap();
        got
    };
    let (_write, got) = tokio::join!(writing, reading);
    got
}

/// Echoes what `stream` reads until the peer's end; then, once `release` fires, ends
/// its own side. Returns what it read.
async fn echo(stream: UtpStream, release: oneshot::Receiver<()>) -> Vec<u8> {
    let (mut read, mut write) = tokio::io::split(stream);
    let mut got = Vec::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = read.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        write.write_all(&buf[..n]).await.unwrap();
    }
    release.await.unwrap();
    write.shutdown().await.unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_dials_js_and_8_mib_echo_back_bit_exact_with_fin_seen_by_both() {
    let (mut js, js_addr) = js_peer().await;
    let endpoint = endpoint().await;
    let stream = endpoint.connect(js_addr).await.unwrap();
    assert_eq!(stream.peer_addr(), js_addr);
    let data = pseudo_random(SIZE, 1);
    let echoed = tokio::time::timeout(LIMIT, send_and_read(stream, &data))
        .await
        .unwrap();
    // Rust read to the end: JS's FIN arrived after all its data.
    assert!(echoed == data, "the echo differs from what was sent");
    // JS saw our FIN after all our data (its `end`), then closed without an error.
    let served = js.until("served").await.unwrap();
    assert_eq!(served["bytes"], SIZE);
    assert_eq!(served["blake2b"], blake2b_concat([&data[..]]));
    let closed = js.until("closed").await.unwrap();
    assert!(closed["error"].is_null(), "{closed}");
    js.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_dials_rust_and_8_mib_echo_back_bit_exact_with_fin_seen_by_both() {
    let (mut js, _) = js_peer().await;
    let endpoint = endpoint().await;
    let port = endpoint.local_addr().port();
    js.call(json!({"cmd": "connect", "port": port, "bytes": SIZE, "seed": 2}))
        .await
        .unwrap();
    let (stream, peer) = tokio::time::timeout(LIMIT, endpoint.accept())
        .await
        .unwrap();
    assert_eq!(*peer.ip(), Ipv4Addr::LOCALHOST);
    let (release, released) = oneshot::channel();
    release.send(()).unwrap();
    let got = tokio::time::timeout(LIMIT, echo(stream, released))
        .await
        .unwrap();
    // Rust read to JS's end: all of it, in order.
    let expected = pseudo_random(SIZE, 2);
    assert!(got == expected, "Rust read other bytes than JS wrote");
    // JS read our echo to our end and closed without an error.
    let transfer = js.until("transfer").await.unwrap();
    assert!(transfer["error"].is_null(), "{transfer}");
    assert_eq!(transfer["sentBlake2b"], blake2b_concat([&expected[..]]));
    assert_eq!(transfer["received"], SIZE);
    assert_eq!(transfer["receivedBlake2b"], transfer["sentBlake2b"]);
    js.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_rust_stream_ends_cleanly_for_js_and_is_forgotten() {
    let (mut js, js_addr) = js_peer().await;
    let endpoint = endpoint().await;
    let mut stream = endpoint.connect(js_addr).await.unwrap();
    stream.write_all(b"bye").await.unwrap();
    drop(stream);
    let served = js.until("served").await.unwrap();
    assert_eq!(served["bytes"], 3);
    let closed = js.until("closed").await.unwrap();
    assert!(closed["error"].is_null(), "{closed}");
    // Our FIN was acked and theirs arrived: after lingering, nothing is left.
    let start = tokio::time::Instant::now();
    while endpoint.connections() > 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "never forgotten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    js.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialling_a_port_without_utp_fails_with_the_address() {
    let endpoint = endpoint().await;
    // A bound UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let std::net::SocketAddr::V4(addr) = silent.local_addr().unwrap() else {
        panic!("IPv4 bound");
    };
    let error = endpoint
        .connect_timeout(addr, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

fn ping() -> Message {
    Message::request(MessageType::Query, "_ping")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dht_answers_and_asks_on_the_port_a_utp_stream_flows_through() {
    let (mut js, js_addr) = js_peer().await;
    let endpoint = endpoint().await;
    let dht = Dht::on(endpoint.clone(), Vec::new()).unwrap();
    let ours = endpoint.local_addr();
    assert_eq!(dht.local_addr(), ours);
    assert!(
        Dht::on(endpoint.clone(), Vec::new()).is_err(),
        "one DHT per socket"
    );
    js.call(json!({"cmd": "connect", "port": ours.port(), "bytes": SIZE, "seed": 3}))
        .await
        .unwrap();
    let (stream, _) = tokio::time::timeout(LIMIT, dht.endpoint().accept())
        .await
        .unwrap();
    // The echo does not end its side until the pings are done, so JS's transfer (and
    // its line on stdout) cannot end in between.
    let (release, released) = oneshot::channel();
    let echoing = tokio::spawn(echo(stream, released));
    for _ in 0..5 {
        // JS's dht-rpc asks our DHT, from its own shared socket...
        let pong = js
            .call(json!({"cmd": "ping", "port": ours.port()}))
            .await
            .unwrap();
        assert_eq!(pong["pong"], js_addr.to_string());
        // ...and ours asks its.
        let reply = dht.request(js_addr, ping()).await.unwrap();
        let seen = compact::decode_peer(reply.message.to.as_deref().unwrap()).unwrap();
        assert_eq!(seen, ours);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    release.send(()).unwrap();
    let got = tokio::time::timeout(LIMIT, echoing).await.unwrap().unwrap();
    assert!(got == pseudo_random(SIZE, 3));
    let transfer = js.until("transfer").await.unwrap();
    assert!(transfer["error"].is_null(), "{transfer}");
    assert_eq!(transfer["received"], SIZE);
    assert_eq!(transfer["receivedBlake2b"], transfer["sentBlake2b"]);
    js.finish().await.unwrap();
}
