//! uTP endpoints on real loopback sockets, Rust to Rust: streams both ways with FIN as
//! end of stream, and endpoints fed hostile datagrams (garbage, uTP-looking noise, a
//! SYN flood) that keep working with bounded state.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use hyperswarm::utp::endpoint::ACCEPT_BACKLOG;
use hyperswarm::utp::{Packet, PacketType};
use hyperswarm::{Dht, Endpoint, UtpStream};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(60);

/// An endpoint that accepts connections.
async fn endpoint() -> Endpoint {
    let endpoint = Endpoint::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    endpoint.set_accepting(true);
    endpoint
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The next connection `from` dialled to `endpoint` (others, which the tests' noise
/// opened, are dropped).
async fn accept_from(endpoint: &Endpoint, from: SocketAddrV4) -> UtpStream {
    loop {
        let (stream, peer) = endpoint.accept().await;
        if peer == from {
            return stream;
        }
    }
}

/// A dials B; A writes `to_b` and shuts down, B answers `to_a` after reading all of it;
/// each reads to the other's end.
async fn exchange(a: &Endpoint, b: &Endpoint, to_b: Vec<u8>, to_a: Vec<u8>) {
    let dial = a.connect(b.local_addr());
    let (stream, mut accepted) = tokio::join!(dial, accept_from(b, a.local_addr()));
    let mut stream = stream.unwrap();
    let expected = to_b.clone();
    let serving = tokio::spawn(async move {
        let mut got = Vec::new();
        accepted.read_to_end(&mut got).await.unwrap();
        assert!(got == expected, "B read what A wrote, to A's FIN");
        accepted.write_all(&to_a).await.unwrap();
        accepted.shutdown().await.unwrap();
        to_a
    });
    let (mut read, mut write) = tokio::io::split(&mut stream);
    let writing = async {
        write.write_all(&to_b).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let reading = async {
        let mut got = Vec::new();
        read.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::time::timeout(LIMIT, async { tokio::join!(writing, reading) })
        .await
        .unwrap();
    let to_a = serving.await.unwrap();
    assert!(got == to_a, "A read what B wrote, to B's FIN");
    let mut more = [0; 1];
    assert_eq!(stream.read(&mut more).await.unwrap(), 0, "the end stays");
    assert!(
        stream.write_all(b"late").await.is_err(),
        "no writing after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cross_both_ways_to_each_fin() {
    let (a, b) = (endpoint().await, endpoint().await);
    exchange(&a, &b, data(2 << 20), data(1 << 20)).await;
    exchange(&b, &a, b"small".to_vec(), Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syn_flood_fills_the_backlog_and_no_more() {
    let b = endpoint().await;
    let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
    for id in 0..(4 * ACCEPT_BACKLOG as u16) {
        let syn = Packet {
            kind: PacketType::Syn,
            conn_id: id * 3,
            timestamp: 1,
            timestamp_diff: 0,
            window: 1 << 20,
            seq: 1,
            ack: 0,
            selective_ack: None,
            payload: &[],
        };
        flooder.send_to(&syn.encode(), b.local_addr()).unwrap();
    }
    let start = tokio::time::Instant::now();
    while b.connections() < ACCEPT_BACKLOG {
        assert!(start.elapsed() < LIMIT, "the SYNs never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        b.connections(),
        ACCEPT_BACKLOG,
        "SYNs past the backlog ignored"
    );
    // Accepting one makes room for one more dialler.
    let (_flooded, _) = b.accept().await;
    let a = endpoint().await;
    let dial = a.connect(b.local_addr());
    let (stream, mut accepted) = tokio::join!(dial, accept_from(&b, a.local_addr()));
    let mut stream = stream.unwrap();
    stream.write_all(b"through").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    accepted.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_ignores_syns_until_it_accepts_and_when_firewalled() {
    let b = Endpoint::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let a = endpoint().await;
    let error = a
        .connect_timeout(b.local_addr(), Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&b.local_addr().to_string()));
    assert_eq!(b.connections(), 0, "a new endpoint accepts nothing");
    b.set_accepting(true);
    exchange(&a, &b, b"now".to_vec(), b"yes".to_vec()).await;
    b.set_accepting(false);
    let error = a
        .connect_timeout(b.local_addr(), Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&b.local_addr().to_string()));
    assert!(b.connections() <= 1, "only the finished one, lingering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_syn_is_sent_again_on_an_idle_endpoint() {
    let a = endpoint().await;
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let std::net::SocketAddr::V4(to) = silent.local_addr().unwrap() else {
        panic!("IPv4 bound");
    };
    let dialling = tokio::spawn(async move { a.connect_timeout(to, LIMIT).await });
    let mut syns = Vec::new();
    let mut buf = [0; 100];
    for _ in 0..2 {
        let (len, _) = tokio::time::timeout(Duration::from_secs(10), silent.recv_from(&mut buf))
            .await
            .expect("the SYN was sent (again) within 10 s")
            .unwrap();
        let syn = Packet::decode(&buf[..len]).unwrap();
        assert_eq!(syn.kind, PacketType::Syn);
        syns.push((syn.conn_id, syn.seq));
    }
    assert_eq!(syns[0], syns[1], "the same SYN");
    dialling.abort();
}

/// Datagrams for the endpoint: noise, and noise dressed as uTP of every type.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        (
            0u8..5,
            0u8..3,
            proptest::collection::vec(any::<u8>(), 18..120)
        )
            .prop_map(|(kind, ext, rest)| {
                let mut datagram = vec![kind << 4 | 1, ext];
                datagram.extend(rest);
                datagram
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
    #[test]
    fn hostile_datagrams_leave_the_endpoint_and_its_dht_working(batch in proptest::collection::vec(hostile(), 1..200)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let b = endpoint().await;
            let dht = Dht::on(b.clone(), Vec::new()).unwrap();
            let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
            for datagram in &batch {
                attacker.send_to(datagram, b.local_addr()).unwrap();
            }
            // A real peer still connects (its SYN waits, resent, while noise SYNs fill the
            // backlog), and the DHT still answers.
            let a = endpoint().await;
            exchange(&a, &b, b"after the noise".to_vec(), b"still here".to_vec()).await;
            let asker = Dht::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), Vec::new()).await.unwrap();
            let ping = hyperswarm::Message {
                version: Some(1),
                kind: hyperswarm::MessageType::Query,
                rid: 0,
                to: None,
                id: None,
                target: None,
                closer_nodes: None,
                roundtrip_token: None,
                command: Some("_ping".into()),
                error: None,
                value: None,
            };
            asker.request(dht.local_addr(), ping).await.unwrap();
            assert!(b.connections() <= 1 + ACCEPT_BACKLOG);
        });
    }
}
