//! Hostile peers against healthy Rust peers, over real TCP sockets on 127.0.0.1.
//!
//! [`Hostile`] is a peer built from the protocol crate's public pieces (the Noise handshake
//! run by hand in [`handshake`], the [`XSalsa20`] stream, [`frame`] and [`message`] types):
//! it completes a genuine handshake and then sends whatever a test wants, raw bytes or well-formed frames
//! with lying contents. Each test checks that the healthy side drops the connection, stores
//! nothing that does not verify, stays usable for an honest peer afterwards, and (where an
//! honest peer is connected at the same time) keeps serving that peer.
//!
//! [`message`]: hypercore_protocol::message
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hypercore::{Feed, KeyPair, Node, ProofRequest, PublicKey, RemoteTree};
use hypercore_protocol::cipher::XSalsa20;
use hypercore_protocol::frame::{self, Frame};
use hypercore_protocol::message::{
    Cancel, Close, Data, DataNode, Have, Message, Open, Options, Request, Status, Unhave, Unwant,
    Want,
};
use hypercore_protocol::noise::Established;
use hypercore_protocol::{PeerKey, Protocol, ProtocolOptions};
use hypercore_replication::{
    replicate, Error as ReplError, ReplicateOptions, Replicator, ReplicatorOptions,
};
use hyperd_testkit::{handshake, memory_clone};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Blocks per `Want` page, as JS and the Rust peer use.
const WANT_PAGE: u64 = 1 << 20;
/// Upper bound for anything a test waits for (tests normally take far less).
const LIMIT: Duration = Duration::from_secs(30);

type PeerResult = Result<(), ReplError>;

// ---- log capture -------------------------------------------------------------------------

/// Everything the crates under test logged, from every test of this binary. Tests find
/// their own lines by the hostile peer's (unique, random) Noise key.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "hypercore_replication=debug,hypercore_protocol=debug",
        ))
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
}

/// The logged lines that mention `peer` and contain every one of `words`.
fn log_lines(peer: &PeerKey, words: &[&str]) -> Vec<String> {
    let hex = peer.to_hex();
    let logs = logs().lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(&hex) && words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

/// Asserts a line naming `peer` with all of `words` is logged (waiting briefly: the line may
/// be written just after the connection ends).
async fn assert_logged(peer: &PeerKey, words: &[&str]) {
    let start = Instant::now();
    while log_lines(peer, words).is_empty() {
        if start.elapsed() > Duration::from_secs(5) {
            panic!("no log line mentions {peer} with {words:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- the hostile peer --------------------------------------------------------------------

/// A peer that completes a real handshake and then says whatever it likes.
struct Hostile<S> {
    io: S,
    tx: XSalsa20,
    rx: XSalsa20,
    established: Established,
    key: PeerKey,
    /// Decrypted bytes not yet taken as frames.
    inbuf: BytesMut,
}

impl Hostile<TcpStream> {
    /// Dials `addr` and runs the initiator half of the handshake.
    async fn dial(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Hostile::handshake(s, true).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Hostile<S> {
    async fn handshake(io: S, initiator: bool) -> Self {
        Self::handshake_with(io, initiator, None).await
    }

    /// As [`Hostile::handshake`]; an initiator sends `piggyback` (plaintext, encrypted here)
    /// in the same write as the last handshake message.
    async fn handshake_with(mut io: S, initiator: bool, piggyback: Option<Vec<u8>>) -> Self {
        let done = handshake::handshake(&mut io, initiator, piggyback)
            .await
            .unwrap();
        Hostile {
            io,
            tx: done.tx,
            rx: done.rx,
            established: done.established,
            key: done.key,
            inbuf: done.leftover,
        }
    }

    /// The capability that proves we know `key`, on this connection.
    fn capability(&self, key: &PublicKey) -> [u8; 32] {
        hypercore::crypto::capability(key, &self.established.tx_key, &self.established.rx_key)
    }

    /// Encrypts and sends raw plaintext bytes (frames or junk).
    async fn send_raw(&mut self, plain: &[u8]) -> std::io::Result<()> {
        let mut b = plain.to_vec();
        self.tx.apply(&mut b);
        self.io.write_all(&b).await
    }

    async fn send(&mut self, channel: u64, message: Message) -> std::io::Result<()> {
        let mut b = BytesMut::new();
        frame::encode(channel, &message, &mut b);
        self.send_raw(&b).await
    }

    /// Opens our channel 1 for `key` with a valid capability.
    async fn open(&mut self, key: &PublicKey) {
        let capability = Some(self.capability(key).to_vec());
        self.send(
            1,
            Message::Open(Open {
                discovery_key: key.discovery_key().0.to_vec(),
                capability,
            }),
        )
        .await
        .unwrap();
    }

    /// The next message from the victim; `Ok(None)` when it closed the connection.
    async fn recv(&mut self) -> std::io::Result<Option<(u64, Message)>> {
        loop {
            match frame::decode(&mut self.inbuf) {
                Ok(Some(Frame::Message {
                    channel,
                    type_id,
                    body,
                })) => return Ok(Some((channel, Message::decode(type_id, body).unwrap()))),
                Ok(Some(Frame::KeepAlive)) => continue,
                Ok(None) => {}
                Err(e) => panic!("the healthy peer sent an undecodable frame: {e}"),
            }
            self.inbuf.reserve(64 * 1024);
            let start = self.inbuf.len();
            if self.io.read_buf(&mut self.inbuf).await? == 0 {
                return Ok(None);
            }
            self.rx.apply(&mut self.inbuf[start..]);
        }
    }

    /// Waits for the victim's `Open` for `key`, then opens ours.
    async fn accept_channel(&mut self, key: &PublicKey) {
        loop {
            match self.recv().await.unwrap() {
                Some((_, Message::Open(o))) if o.discovery_key == key.discovery_key().0 => break,
                Some(_) => {}
                None => panic!("victim closed before opening the channel"),
            }
        }
        self.open(key).await;
    }

    /// Reads and discards until the victim closes the connection; whether it did so
    /// within `within` (EOF and reset both count).
    async fn closed_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            while let Ok(Some(_)) = self.recv().await {}
        })
        .await
        .is_ok()
    }

    /// Plays an honest seeder of `writer` (answering Wants with its real Haves) until the
    /// victim sends a Request; returns it, or `None` if the victim hung up or is done (then
    /// the channel is closed, as a JS seeder does).
    async fn next_request(&mut self, writer: &Feed) -> Option<Request> {
        loop {
            match self.recv().await.ok()?? {
                (_, Message::Want(w)) => self.answer_want(writer, &w).await,
                (_, Message::Request(r)) => return Some(r),
                (_, Message::Status(s)) if s.downloading == Some(false) => {
                    let _ = self
                        .send(
                            1,
                            Message::Close(Close {
                                discovery_key: None,
                            }),
                        )
                        .await;
                    return None;
                }
                _ => {}
            }
        }
    }

    async fn answer_want(&mut self, writer: &Feed, w: &Want) {
        let len = writer.len();
        let length = w.length.unwrap_or(0);
        let _ = self
            .send(
                1,
                Message::Have(Have {
                    start: len - 1,
                    length: None,
                    bitfield: None,
                    ack: None,
                }),
            )
            .await;
        let _ = self
            .send(
                1,
                Message::Have(Have {
                    start: w.start,
                    length: Some(length),
                    bitfield: Some(Bytes::from(writer.have_bitfield(w.start, length))),
                    ack: None,
                }),
            )
            .await;
    }
}

/// What `writer` signed for its current length.
fn signable(writer: &Feed) -> [u8; 40] {
    let roots: Vec<Node> = writer.root_hashes(writer.len() - 1).unwrap();
    hypercore::crypto::signable(&roots, writer.len())
}

/// A genuine `Data` answer to `r` from `writer`.
async fn genuine_data(writer: &Feed, r: &Request) -> Data {
    let request = ProofRequest {
        hash: r.hash.unwrap_or(false),
        digest: r.nodes.unwrap_or(0),
    };
    let (value, proof) = writer
        .upload(r.index, request, &mut RemoteTree::default())
        .await
        .unwrap();
    Data {
        index: r.index,
        value,
        nodes: proof.nodes.iter().map(DataNode::from).collect(),
        signature: proof.signature.map(|s| Bytes::copy_from_slice(&s.0)),
    }
}

// ---- healthy peers -----------------------------------------------------------------------

fn block(i: u64, size: usize) -> Bytes {
    let mut rng = StdRng::seed_from_u64(i);
    let mut b = vec![0u8; size];
    rng.fill(&mut b[..]);
    b[..8].copy_from_slice(&i.to_be_bytes());
    Bytes::from(b)
}

async fn writer(blocks: u64, size: usize) -> Feed {
    let feed = Feed::memory().await.unwrap();
    let all: Vec<Bytes> = (0..blocks).map(|i| block(i, size)).collect();
    for chunk in all.chunks(500) {
        feed.append_batch(chunk.to_vec()).await.unwrap();
    }
    feed
}

fn opts(initiator: bool, timeout: Option<Duration>) -> ReplicateOptions {
    ReplicateOptions {
        protocol: ProtocolOptions {
            initiator,
            timeout,
            ..Default::default()
        },
    }
}

/// A writer feed served to whoever connects to `addr` (the responder side).
struct Seeder {
    writer: Feed,
    rep: Replicator,
    listener: TcpListener,
    addr: SocketAddr,
    timeout: Option<Duration>,
    /// Snapshot of the feed when the test started.
    len: u64,
    byte_len: u64,
}

impl Seeder {
    async fn new(blocks: u64, size: usize) -> Seeder {
        Self::serving(writer(blocks, size).await).await
    }

    async fn serving(writer: Feed) -> Seeder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Seeder {
            rep: Replicator::new(writer.clone(), ReplicatorOptions::default()),
            len: writer.len(),
            byte_len: writer.byte_len(),
            writer,
            listener,
            addr,
            timeout: Some(Duration::from_secs(20)),
        }
    }

    /// Accepts one connection and replicates over it in a task.
    async fn accept(&self) -> JoinHandle<PeerResult> {
        let (s, _) = self.listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let rep = self.rep.clone();
        let o = opts(false, self.timeout);
        tokio::spawn(async move { replicate(&rep, s, o).await })
    }

    /// A hostile peer connected to this seeder, and the seeder's side of the connection.
    async fn hostile(&self) -> (Hostile<TcpStream>, JoinHandle<PeerResult>) {
        tokio::join!(Hostile::dial(self.addr), self.accept())
    }

    /// An honest clone replicating from this seeder, running.
    async fn honest(&self) -> Honest {
        let (clone, server) = tokio::join!(
            Honest::dial(self.addr, self.writer.key(), None),
            self.accept()
        );
        Honest {
            server: Some(server),
            ..clone
        }
    }

    /// The feed is as it was and every block still verifies.
    async fn assert_intact(&self) {
        assert_eq!(self.writer.len(), self.len);
        assert_eq!(self.writer.byte_len(), self.byte_len);
        assert_eq!(self.writer.downloaded(0, None), self.len);
        let audit = self.writer.audit().await.unwrap();
        assert_eq!((audit.valid, audit.invalid), (self.len, 0));
    }

    /// A fresh honest clone still gets everything.
    async fn assert_serves_honest_peers(&self) {
        let honest = self.honest().await;
        honest.finish(&self.writer).await;
    }
}

/// An honest Rust clone replicating over TCP.
struct Honest {
    feed: Feed,
    task: JoinHandle<PeerResult>,
    /// The seeder's side of the connection, when the seeder is ours.
    server: Option<JoinHandle<PeerResult>>,
}

impl Honest {
    async fn dial(addr: SocketAddr, key: PublicKey, feed: Option<Feed>) -> Honest {
        let feed = match feed {
            Some(f) => f,
            None => memory_clone(key, false).await.unwrap(),
        };
        let rep = Replicator::new(feed.clone(), ReplicatorOptions::default());
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let task = tokio::spawn(async move { replicate(&rep, s, opts(true, None)).await });
        Honest {
            feed,
            task,
            server: None,
        }
    }

    /// Waits for the clone to finish; asserts both ends succeeded and it holds `writer`.
    async fn finish(self, writer: &Feed) {
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("honest clone did not finish")
            .unwrap()
            .unwrap();
        if let Some(server) = self.server {
            tokio::time::timeout(LIMIT, server)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        assert_same(&self.feed, writer).await;
    }
}

async fn assert_same(clone: &Feed, writer: &Feed) {
    assert_eq!(clone.len(), writer.len());
    assert_eq!(clone.downloaded(0, None), writer.len());
    let audit = clone.audit().await.unwrap();
    assert_eq!((audit.valid, audit.invalid), (writer.len(), 0));
    for i in [0, writer.len() / 2, writer.len() - 1] {
        assert_eq!(clone.get(i).await.unwrap(), writer.get(i).await.unwrap());
    }
}

/// The victim's result for the hostile connection: it must have failed, and not by a panic.
async fn expect_dropped(task: JoinHandle<PeerResult>) -> ReplError {
    let r = tokio::time::timeout(LIMIT, task)
        .await
        .expect("the connection to the hostile peer was not dropped")
        .expect("the replication task panicked");
    let e = r.expect_err("replication with the hostile peer succeeded");
    assert!(!e.to_string().contains("panicked"), "a task panicked: {e}");
    e
}

/// A Rust clone of `writer` dialing a hostile seeder (the victim is the initiator here).
struct Victim {
    feed: Feed,
    rep: Replicator,
}

impl Victim {
    async fn new(writer: &Feed, options: ReplicatorOptions) -> Victim {
        let feed = memory_clone(writer.key(), false).await.unwrap();
        Victim {
            rep: Replicator::new(feed.clone(), options),
            feed,
        }
    }

    /// Connects to a hostile peer; returns it and the victim's replication task.
    async fn meet_hostile(
        &self,
        timeout: Option<Duration>,
    ) -> (Hostile<TcpStream>, JoinHandle<PeerResult>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rep = self.rep.clone();
        let task = tokio::spawn(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            replicate(&rep, s, opts(true, timeout)).await
        });
        let (s, _) = listener.accept().await.unwrap();
        (Hostile::handshake(s, false).await, task)
    }

    /// Connects to an honest seeder of `seeder`'s feed.
    async fn meet_honest(
        &self,
        seeder: &Seeder,
    ) -> (JoinHandle<PeerResult>, JoinHandle<PeerResult>) {
        let rep = self.rep.clone();
        let addr = seeder.addr;
        let (s, server) = tokio::join!(
            async move { TcpStream::connect(addr).await.unwrap() },
            seeder.accept()
        );
        let task = tokio::spawn(async move { replicate(&rep, s, opts(true, None)).await });
        (task, server)
    }

    /// Stored nothing, or only blocks that verify.
    async fn assert_nothing_invalid(&self) {
        let audit = self.feed.audit().await.unwrap();
        assert_eq!(audit.invalid, 0);
        assert_eq!(audit.valid, self.feed.downloaded(0, None));
    }
}

// ---- seeder facing a hostile downloader ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_drops_the_peer() {
    init_logs();
    let mut seeder = Seeder::new(2000, 1024).await;
    // Random bytes can parse as a frame that waits for more: the idle timeout ends those.
    seeder.timeout = Some(Duration::from_secs(3));
    let honest = seeder.honest().await;
    let mut by_parse_error = 0;
    for seed in 0..12u64 {
        let (mut h, task) = seeder.hostile().await;
        let mut rng = StdRng::seed_from_u64(seed);
        let len = [16usize, 1000, 64 * 1024, 1 << 20][seed as usize % 4];
        let mut junk = vec![0u8; len];
        rng.fill(&mut junk[..]);
        // The junk may be refused before all of it is read.
        let _ = h.send_raw(&junk).await;
        let e = expect_dropped(task).await;
        assert!(h.closed_within(Duration::from_secs(5)).await);
        println!("junk of {len} bytes: {e}");
        if !e.to_string().contains("no data received") {
            by_parse_error += 1;
            assert_logged(&h.key, &["connection destroyed"]).await;
        }
    }
    assert!(
        by_parse_error >= 6,
        "only {by_parse_error} of 12 junk streams were refused as malformed"
    );
    honest.finish(&seeder.writer).await;
    seeder.assert_intact().await;
    seeder.assert_serves_honest_peers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_drop_the_peer() {
    init_logs();
    let seeder = Seeder::new(2000, 1024).await;
    let honest = seeder.honest().await;
    // 9 MiB claimed; then the smallest refused length (8 MiB body + 8 header bytes + 1).
    for claimed in [9u64 << 20, (8 << 20) + 9, u64::MAX >> 8] {
        let (mut h, task) = seeder.hostile().await;
        h.accept_channel(&seeder.writer.key()).await;
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&varint::encode(claimed));
        wire.extend_from_slice(&[0x19, 1, 2, 3]);
        h.send_raw(&wire).await.unwrap();
        let e = expect_dropped(task).await;
        assert!(e.to_string().contains("larger than"), "{e}");
        assert!(h.closed_within(Duration::from_secs(5)).await);
        assert_logged(&h.key, &["connection destroyed", "larger than"]).await;
    }
    honest.finish(&seeder.writer).await;
    seeder.assert_intact().await;
    seeder.assert_serves_honest_peers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_at_the_size_limit_is_accepted() {
    let seeder = Seeder::new(50, 100).await;
    let (mut h, task) = seeder.hostile().await;
    h.accept_channel(&seeder.writer.key()).await;
    // Type 11 on channel 1: passed through and ignored. Body exactly 8 MiB.
    h.send(
        1,
        Message::Unknown {
            type_id: 11,
            body: Bytes::from(vec![7u8; 8 << 20]),
        },
    )
    .await
    .unwrap();
    // The connection still works: a Want is answered.
    h.send(
        1,
        Message::Want(Want {
            start: 0,
            length: Some(WANT_PAGE),
        }),
    )
    .await
    .unwrap();
    let answered = tokio::time::timeout(LIMIT, async {
        loop {
            if let Some((_, Message::Have(_))) = h.recv().await.unwrap() {
                return;
            }
        }
    })
    .await;
    assert!(answered.is_ok());
    assert!(!task.is_finished());
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_varints_drop_the_peer() {
    init_logs();
    let seeder = Seeder::new(2000, 1024).await;
    let honest = seeder.honest().await;
    let cases: [(&str, Vec<u8>); 4] = [
        // A length varint that never ends.
        ("endless length", vec![0xff; 9]),
        (
            "endless length after a keep-alive",
            [&[0u8][..], &[0x80; 12]].concat(),
        ),
        // A frame whose header varint is longer than 8 bytes.
        ("endless header", [&[9u8][..], &[0xff; 9]].concat()),
        // A frame whose header varint runs past its end.
        ("header past the end", vec![2, 0x80, 0x80]),
    ];
    for (what, wire) in cases {
        let (mut h, task) = seeder.hostile().await;
        h.accept_channel(&seeder.writer.key()).await;
        h.send_raw(&wire).await.unwrap();
        let e = expect_dropped(task).await;
        assert!(e.to_string().contains("malformed frame"), "{what}: {e}");
        assert!(h.closed_within(Duration::from_secs(5)).await, "{what}");
        assert_logged(&h.key, &["connection destroyed", "malformed frame"]).await;
    }
    honest.finish(&seeder.writer).await;
    seeder.assert_intact().await;
    seeder.assert_serves_honest_peers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_ends_the_connection() {
    let mut seeder = Seeder::new(100, 100).await;
    seeder.timeout = Some(Duration::from_secs(2));
    // Half a varint, then silence: the idle timeout drops the peer.
    let (mut h, task) = seeder.hostile().await;
    h.accept_channel(&seeder.writer.key()).await;
    h.send_raw(&[0x80, 0x80]).await.unwrap();
    let e = expect_dropped(task).await;
    assert!(e.to_string().contains("no data received"), "{e}");
    assert!(h.closed_within(Duration::from_secs(5)).await);
    // Half a frame, then the hostile side hangs up: the connection ends too.
    let (mut h, task) = seeder.hostile().await;
    h.accept_channel(&seeder.writer.key()).await;
    h.send_raw(&[0x40, 0x19, 1, 2]).await.unwrap();
    h.io.shutdown().await.unwrap();
    let r = tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
    assert!(h.closed_within(Duration::from_secs(5)).await);
    println!("truncated frame then EOF: seeder result {r:?}");
    seeder.assert_intact().await;
    seeder.assert_serves_honest_peers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_capability_drops_the_peer() {
    init_logs();
    let seeder = Seeder::new(2000, 1024).await;
    let honest = seeder.honest().await;
    let key = seeder.writer.key();
    let other = KeyPair::generate().public;
    for case in 0..5 {
        let (mut h, task) = seeder.hostile().await;
        while !matches!(h.recv().await.unwrap(), Some((_, Message::Open(_)))) {}
        let capability = match case {
            0 => Some(vec![0x42; 32]),
            1 => None,
            2 => Some(h.capability(&key)[..31].to_vec()),
            // A valid capability, for another feed.
            3 => Some(h.capability(&other).to_vec()),
            // The capability the *seeder* would send (keys not swapped).
            _ => Some(
                hypercore::crypto::remote_capability(
                    &key,
                    &h.established.tx_key,
                    &h.established.rx_key,
                )
                .to_vec(),
            ),
        };
        h.send(
            1,
            Message::Open(Open {
                discovery_key: key.discovery_key().0.to_vec(),
                capability,
            }),
        )
        .await
        .unwrap();
        let e = expect_dropped(task).await;
        assert!(e.to_string().contains("capability"), "case {case}: {e}");
        assert!(h.closed_within(Duration::from_secs(5)).await);
        assert_logged(&h.key, &["connection destroyed", "capability"]).await;
    }
    honest.finish(&seeder.writer).await;
    seeder.assert_intact().await;
    seeder.assert_serves_honest_peers().await;
}

/// The wrong capability arrives with the last handshake message, typically before the
/// seeder opened its side: `replicate` fails, and the connection must not outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_capability_sent_with_the_handshake_drops_the_peer() {
    init_logs();
    let seeder = Seeder::new(200, 100).await;
    let key = seeder.writer.key();
    let mut open = BytesMut::new();
    frame::encode(
        1,
        &Message::Open(Open {
            discovery_key: key.discovery_key().0.to_vec(),
            capability: Some(vec![0x42; 32]),
        }),
        &mut open,
    );
    let mut leaked = 0;
    for _ in 0..8 {
        let (mut h, task) = tokio::join!(
            async {
                let s = TcpStream::connect(seeder.addr).await.unwrap();
                Hostile::handshake_with(s, true, Some(open.to_vec())).await
            },
            seeder.accept()
        );
        let e = expect_dropped(task).await;
        println!("capability sent with the handshake: {e}");
        assert!(e.to_string().contains("capability"), "{e}");
        // The seeder's idle timeout is 20 s: only a deliberate close comes sooner.
        if !h.closed_within(Duration::from_secs(3)).await {
            leaked += 1;
        }
    }
    assert_eq!(
        leaked, 0,
        "replicate() returned its error but left {leaked} of 8 connections open"
    );
    seeder.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_open_drops_the_peer() {
    init_logs();
    let seeder = Seeder::new(200, 100).await;
    let (mut h, task) = seeder.hostile().await;
    h.send(
        1,
        Message::Open(Open {
            discovery_key: vec![1, 2, 3],
            capability: None,
        }),
    )
    .await
    .unwrap();
    let e = expect_dropped(task).await;
    assert!(e.to_string().contains("Open"), "{e}");
    assert!(h.closed_within(Duration::from_secs(5)).await);
    seeder.assert_intact().await;
    seeder.assert_serves_honest_peers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_drops_the_peer_and_spares_the_others() {
    init_logs();
    // 16 MiB of 64 KiB blocks: the flood fills the upload queue long before it ends.
    let seeder = Seeder::new(256, 64 * 1024).await;
    let honest = seeder.honest().await;
    let (mut h, task) = seeder.hostile().await;
    h.accept_channel(&seeder.writer.key()).await;
    // Requests for blocks the seeder has, without ever reading the answers.
    let mut wire = BytesMut::new();
    for i in 0..20_000u64 {
        frame::encode(
            1,
            &Message::Request(Request {
                index: i % 256,
                bytes: Some(0),
                hash: Some(false),
                nodes: Some(0),
            }),
            &mut wire,
        );
    }
    let sent = tokio::time::timeout(LIMIT, h.send_raw(&wire)).await;
    let e = expect_dropped(task).await;
    println!("request flood: sending {sent:?}; seeder said {e}");
    assert!(matches!(e, ReplError::PeerMisbehaved { .. }), "{e}");
    assert!(e.to_string().contains("requests outstanding"), "{e}");
    assert_logged(
        &h.key,
        &["dropping peer", "misbehaved", "requests outstanding"],
    )
    .await;
    assert!(h.closed_within(Duration::from_secs(10)).await);
    honest.finish(&seeder.writer).await;
    seeder.assert_intact().await;
    seeder.assert_serves_honest_peers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_blocks_the_seeder_never_had_drop_the_peer() {
    init_logs();
    let seeder = Seeder::new(2000, 1024).await;
    let honest = seeder.honest().await;
    let len = seeder.len;
    let requests = [
        (len, false, None),
        (len + 1000, false, None),
        (len, true, None),
        ((1 << 53) - 1, false, None),
        (1 << 53, true, None),
        (u64::MAX, false, None),
        // A byte offset the seeder cannot resolve falls back to the (missing) index.
        (len + 5, false, Some(u64::MAX)),
    ];
    for (index, hash, bytes) in requests {
        let (mut h, task) = seeder.hostile().await;
        h.accept_channel(&seeder.writer.key()).await;
        h.send(
            1,
            Message::Request(Request {
                index,
                bytes,
                hash: Some(hash),
                nodes: Some(0),
            }),
        )
        .await
        .unwrap();
        let e = expect_dropped(task).await;
        assert!(
            matches!(e, ReplError::PeerMisbehaved { .. }),
            "request {index}: {e}"
        );
        assert!(h.closed_within(Duration::from_secs(5)).await);
        assert_logged(&h.key, &["dropping peer", "misbehaved", "do not have"]).await;
    }
    honest.finish(&seeder.writer).await;
    seeder.assert_intact().await;
    seeder.assert_serves_honest_peers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sent_to_a_seeder_is_refused() {
    init_logs();
    let seeder = Seeder::new(200, 100).await;
    let (mut h, task) = seeder.hostile().await;
    h.accept_channel(&seeder.writer.key()).await;
    // Even a genuine block is unwelcome when nobody asked.
    let data = genuine_data(
        &seeder.writer,
        &Request {
            index: 3,
            bytes: None,
            hash: None,
            nodes: None,
        },
    )
    .await;
    h.send(1, Message::Data(data)).await.unwrap();
    let e = expect_dropped(task).await;
    assert!(e.to_string().contains("nobody requested"), "{e}");
    assert!(h.closed_within(Duration::from_secs(5)).await);
    assert_logged(&h.key, &["dropping peer", "misbehaved", "nobody requested"]).await;
    seeder.assert_intact().await;
    seeder.assert_serves_honest_peers().await;
}

/// A Want costs the seeder a `Have` with its bitfield of that page. A peer that sends Wants
/// and never reads makes the seeder queue those answers: the queue must stay bounded (or
/// the peer be dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_want_flood_cannot_grow_the_send_queue_without_bound() {
    init_logs();
    // A seeder whose bitfield is fragmented (every other block cleared), so a Want's answer
    // is large, as for any partial replica.
    let w = writer(32_768, 16).await;
    for i in (0..32_768).step_by(2) {
        w.clear(i, i + 1).await.unwrap();
    }
    let answer = w.have_bitfield(0, WANT_PAGE).len();
    let seeder = Seeder::serving(w).await;
    let (mut h, (protocol, sender, task)) = tokio::join!(Hostile::dial(seeder.addr), async {
        let (s, _) = seeder.listener.accept().await.unwrap();
        let (protocol, _events) = Protocol::connect(s, ProtocolOptions::default())
            .await
            .unwrap();
        let channel = protocol.open(seeder.writer.key()).unwrap();
        let sender = channel.sender().clone();
        (protocol, sender, seeder.rep.attach(channel, false))
    });
    h.accept_channel(&seeder.writer.key()).await;
    // Round 0: one Want repeated 1000 times (answered once). Later rounds: 1000 distinct
    // Wants each, every one covering the whole feed.
    let round = |r: u64| {
        let mut wire = BytesMut::new();
        for k in 0..1000u64 {
            let length = if r == 0 {
                WANT_PAGE
            } else {
                8192 * (1000 * r + k)
            };
            frame::encode(
                1,
                &Message::Want(Want {
                    start: 0,
                    length: Some(length),
                }),
                &mut wire,
            );
        }
        wire
    };
    let bound = 64usize << 20;
    let mut peak = 0;
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < 40 && start.elapsed() < LIMIT && protocol.outcome().is_none() {
        let sent = tokio::time::timeout(Duration::from_secs(2), h.send_raw(&round(rounds))).await;
        if !matches!(sent, Ok(Ok(()))) {
            break; // the seeder stopped reading or hung up
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(sender.queued_bytes());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    peak = peak.max(sender.queued_bytes());
    let outcome = protocol.outcome();
    println!(
        "want flood: {rounds} rounds of 1000 Wants, answer {answer} bytes each, \
         peak queued {:.1} MiB, connection outcome {outcome:?}",
        peak as f64 / (1 << 20) as f64,
    );
    protocol.destroy("test over");
    let r = task.await.unwrap();
    println!("the seeder's peer task: {r:?}");
    if outcome.is_some() {
        let e = r.unwrap_err();
        assert!(e.to_string().contains("distinct Wants"), "{e}");
        assert_logged(&h.key, &["dropping peer", "misbehaved", "Wants"]).await;
    }
    assert!(
        peak < bound,
        "the seeder queued {peak} bytes of answers to a peer that never reads \
         ({rounds}k Wants of 8 bytes)"
    );
}

/// What a probe found: the seeder answered (after digesting the message before it), or
/// dropped the connection.
#[derive(Debug)]
enum Probe {
    Answered(Duration),
    Dropped(Duration),
}

/// Sends `hostile_message`, then a Want for a page nobody asked for before, and measures
/// how long the seeder takes to answer that Want: what the message cost it.
async fn probe(h: &mut Hostile<TcpStream>, hostile_message: Message) -> Probe {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let page = NEXT.fetch_add(1, Ordering::Relaxed) * WANT_PAGE;
    let start = Instant::now();
    let sent = async {
        h.send(1, hostile_message).await?;
        h.send(
            1,
            Message::Want(Want {
                start: page,
                length: Some(WANT_PAGE),
            }),
        )
        .await
    }
    .await;
    if sent.is_err() {
        return Probe::Dropped(start.elapsed());
    }
    let answered = tokio::time::timeout(LIMIT, async {
        loop {
            match h.recv().await {
                Ok(Some((_, Message::Have(hv)))) if hv.start == page => return true,
                Ok(Some(_)) => {}
                _ => return false,
            }
        }
    })
    .await
    .expect("the seeder neither answered nor hung up");
    if answered {
        Probe::Answered(start.elapsed())
    } else {
        Probe::Dropped(start.elapsed())
    }
}

/// One small `Have` (or `Unhave`) with a huge range must cost the seeder little: either it
/// is applied cheaply (page by page) or the peer is dropped at once. Ranges go up to 2^53
/// (Have) and 2^64 (Unhave); a loop over the blocks would never end. An honest clone syncs
/// from the same seeder meanwhile.
async fn huge_range_case(message: impl Fn(u64) -> Message, what: &str) {
    init_logs();
    let seeder = Seeder::new(2000, 1024).await;
    let key = seeder.writer.key();
    let (mut h, mut task) = seeder.hostile().await;
    h.accept_channel(&key).await;
    let Probe::Answered(baseline) = probe(&mut h, message(1000)).await else {
        panic!("{what}: a range of 1000 blocks got the peer dropped");
    };
    let honest = seeder.honest().await;
    for span in [1u64 << 24, 1 << 30, 1 << 40, (1 << 53) - 4096, u64::MAX - 1] {
        let result = probe(&mut h, message(span)).await;
        println!("{what}: a range of 1000 blocks took {baseline:?}, one of {span}: {result:?}");
        match result {
            Probe::Answered(t) => assert!(
                t < Duration::from_secs(1),
                "{what}: one message with a range of {span} kept the seeder busy for {t:?}"
            ),
            Probe::Dropped(t) => {
                assert!(
                    t < Duration::from_secs(3),
                    "{what}: dropped only after {t:?}"
                );
                let e = expect_dropped(task).await;
                assert!(matches!(e, ReplError::PeerMisbehaved { .. }), "{e}");
                assert_logged(&h.key, &["dropping peer", "misbehaved"]).await;
                (h, task) = seeder.hostile().await;
                h.accept_channel(&key).await;
            }
        }
    }
    honest.finish(&seeder.writer).await;
    task.abort();
    seeder.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_have_with_a_huge_length_is_cheap() {
    huge_range_case(
        |n| {
            Message::Have(Have {
                start: 4096,
                length: Some(n),
                bitfield: None,
                ack: None,
            })
        },
        "Have{start: 4096, length}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhave_with_a_huge_length_is_cheap() {
    huge_range_case(
        |n| {
            Message::Unhave(Unhave {
                start: 1,
                length: Some(n),
            })
        },
        "Unhave{start: 1, length}",
    )
    .await;
}

/// A bitfield `Have` whose RLE is one run of `bytes` bytes of 0xff (a few bytes on the
/// wire): `bytes * 8` blocks announced.
fn have_run(start: u64, bytes: u64) -> Message {
    let mut b = BytesMut::new();
    b.extend_from_slice(&varint::encode(bytes << 2 | 3));
    Message::Have(Have {
        start,
        length: Some(WANT_PAGE),
        bitfield: Some(b.freeze()),
        ack: None,
    })
}

/// The cost of bitfield Haves, as it affects other peers: two hostile peers repeat the
/// largest allowed bitfield Have (17 bytes each; the RLE is one run) at `start` while an
/// honest clone downloads from the same seeder. The honest download must not stall while
/// the seeder digests them.
async fn bitfield_stall_case(start: u64) {
    init_logs();
    let seeder = Seeder::new(10_000, 1024).await;
    let key = seeder.writer.key();
    let (mut h1, t1) = seeder.hostile().await;
    h1.accept_channel(&key).await;
    let (mut h2, t2) = seeder.hostile().await;
    h2.accept_channel(&key).await;
    let honest = seeder.honest().await;
    let feed = honest.feed.clone();
    // Measure, from another thread, the longest time the clone's progress stands still.
    let sampler = std::thread::spawn(move || {
        let start = Instant::now();
        let (mut last, mut since, mut worst) = (0, Instant::now(), Duration::ZERO);
        while feed.downloaded(0, None) < 10_000 && start.elapsed() < Duration::from_secs(90) {
            std::thread::sleep(Duration::from_millis(5));
            let now = feed.downloaded(0, None);
            if now != last {
                if last > 0 {
                    worst = worst.max(since.elapsed());
                }
                (last, since) = (now, Instant::now());
            }
        }
        worst
    });
    while honest.feed.downloaded(0, None) < 100 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // As many Haves as take the seeder ~3 s of work by its current cost per Have (at most
    // 2000, 34 KB). Cheap messages interleave with the honest peer's work; one that blocks
    // a worker for long stalls everything scheduled behind it.
    let cost = match probe(&mut h1, have_run(start, WANT_PAGE / 8)).await {
        Probe::Answered(t) => t,
        p => panic!("the largest allowed bitfield Have: {p:?}"),
    };
    let n = (3.0 / cost.as_secs_f64()).ceil().clamp(10.0, 2000.0) as usize;
    println!("one Have of 1 Mi blocks costs ~{cost:?}: sending {n} from each of two peers");
    let mut wire = BytesMut::new();
    for _ in 0..n {
        frame::encode(1, &have_run(start, WANT_PAGE / 8), &mut wire);
    }
    println!("each hostile peer sends {} bytes", wire.len());
    h1.send_raw(&wire).await.unwrap();
    h2.send_raw(&wire).await.unwrap();
    let started = Instant::now();
    honest.finish(&seeder.writer).await;
    let took = started.elapsed();
    let stall = sampler.join().unwrap();
    println!(
        "Haves at {start}: honest download finished {took:?} after them; longest stall {stall:?}"
    );
    t1.abort();
    t2.abort();
    // Digesting the Haves takes the seeder seconds (more when the machine is busy); what
    // must not happen is that they take it all at once, ahead of the honest peer: then the
    // download stands still for about as long as it takes to finish.
    let bound = Duration::from_secs(2).max(took / 3);
    assert!(
        stall < bound,
        "{} bytes from each of two other peers stalled an honest download for {stall:?} \
         (of {took:?})",
        wire.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitfield_haves_from_two_peers_do_not_stall_an_honest_download() {
    bitfield_stall_case(1 << 30).await;
}

/// A bitfield Have at a start that is not a page boundary (JS only sends multiples of
/// 8192, in answer to Wants) gets its sender dropped at once, so it cannot cost the seeder
/// anything more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaligned_bitfield_haves_get_the_peer_dropped() {
    init_logs();
    let seeder = Seeder::new(2000, 1024).await;
    let key = seeder.writer.key();
    let honest = seeder.honest().await;
    for start in [(1u64 << 30) + 3, 8191, 1] {
        let (mut h, _task) = seeder.hostile().await;
        h.accept_channel(&key).await;
        match probe(&mut h, have_run(start, WANT_PAGE / 8)).await {
            Probe::Dropped(_) => {}
            p => panic!("an unaligned bitfield Have at {start} was taken: {p:?}"),
        }
    }
    honest.finish(&seeder.writer).await;
}

/// Bitfield Haves placed where no feed can reach (past 2^53 blocks, up to the end of the
/// `u64` range), to a seeder and to a clone (which would then request those blocks): the
/// peer is ignored or dropped, never a panic (overflow checks are on in debug builds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitfield_haves_at_the_end_of_the_index_range() {
    init_logs();
    let w = writer(300, 64).await;
    let starts = [
        1u64 << 53,
        1 << 62,
        (1 << 63) - 64,
        1 << 63,
        u64::MAX - 95,
        u64::MAX - 7,
        u64::MAX,
    ];
    let mut failures = Vec::new();
    for start in starts {
        for clone_victim in [false, true] {
            let what = if clone_victim { "clone" } else { "seeder" };
            let (mut h, task, victim_feed) = if clone_victim {
                let victim = Victim::new(&w, ReplicatorOptions::default()).await;
                let (mut h, task) = victim.meet_hostile(Some(Duration::from_secs(5))).await;
                h.accept_channel(&w.key()).await;
                (h, task, victim.feed)
            } else {
                // A seeder of its own, in case this one breaks.
                let seeder = Seeder::new(300, 64).await;
                let (mut h, task) = seeder.hostile().await;
                h.accept_channel(&seeder.writer.key()).await;
                (h, task, seeder.writer.clone())
            };
            let _ = h.send(1, have_run(start, 1)).await;
            // Give the victim time to act on it (a clone requests what was announced).
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Ok(Some(_)) = h.recv().await {}
            })
            .await;
            let _ = h.io.shutdown().await;
            let r = tokio::time::timeout(LIMIT, task)
                .await
                .expect("the victim did not end the session");
            println!("Have bitfield at {start} to a {what}: {r:?}");
            match r {
                Err(e) => failures.push(format!("{what}, Have at {start}: task failed: {e}")),
                Ok(Err(e)) if e.to_string().contains("panicked") => {
                    failures.push(format!("{what}, Have at {start}: {e}"))
                }
                Ok(_) => {}
            }
            // The victim's feed must still work (a panic under its lock poisons it).
            match victim_feed.audit().await {
                Ok(audit) => assert_eq!(audit.invalid, 0),
                Err(e) => failures.push(format!("{what}, Have at {start}: feed broken: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Bitfield Haves: the largest one allowed (a Want page, 1 M blocks) is taken, also when
/// repeated; a larger one gets the peer dropped; and announcements at ever new places stop
/// at the per-peer cap instead of growing without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitfield_haves_are_bounded() {
    init_logs();
    let seeder = Seeder::new(2000, 1024).await;
    let key = seeder.writer.key();
    let honest = seeder.honest().await;
    let (mut h, task) = seeder.hostile().await;
    h.accept_channel(&key).await;
    let max = WANT_PAGE / 8;
    let mut times = Vec::new();
    for _ in 0..5 {
        match probe(&mut h, have_run(1 << 30, max)).await {
            Probe::Answered(t) => times.push(t),
            p => panic!("the largest allowed bitfield Have: {p:?}"),
        }
    }
    println!("largest allowed bitfield Have (1 Mi blocks), 5 times at one place: {times:?}");
    let over = probe(&mut h, have_run(2 << 30, max + 1)).await;
    println!("a bitfield one byte over: {over:?}");
    assert!(matches!(over, Probe::Dropped(_)), "{over:?}");
    let e = expect_dropped(task).await;
    assert!(e.to_string().contains("bitfield"), "{e}");
    assert_logged(&h.key, &["dropping peer", "misbehaved", "bitfield"]).await;
    // Announcements at ever new places stop at the per-peer cap of 128 Mi blocks (16 MiB of
    // pages). Ranges reach it in two messages (bitfields take 129, at the cost above each).
    let (mut h, task) = seeder.hostile().await;
    h.accept_channel(&key).await;
    let mut outcomes = Vec::new();
    for k in 1..=3u64 {
        let have = Message::Have(Have {
            start: k << 27,
            length: Some(1 << 27),
            bitfield: None,
            ack: None,
        });
        let p = probe(&mut h, have).await;
        let dropped = matches!(p, Probe::Dropped(_));
        outcomes.push(p);
        if dropped {
            break;
        }
    }
    println!("Haves of 128 Mi blocks at new places: {outcomes:?}");
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    let e = expect_dropped(task).await;
    assert!(e.to_string().contains("announced more than"), "{e}");
    honest.finish(&seeder.writer).await;
    seeder.assert_intact().await;
    // What each such Have costs the seeder is the subject of
    // `bitfield_haves_from_two_peers_do_not_stall_an_honest_download`.
    println!("cost of the largest allowed bitfield Have: {times:?}");
}

// ---- clone facing a hostile seeder ---------------------------------------------------------

/// Ways to corrupt an answer.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    FlipSignature,
    ShortSignature,
    NoSignature,
    ForeignSignature,
    FlipFirstNodeHash,
    FlipLastNodeHash,
    FirstNodeSize,
    LastNodeSize,
    HugeNodeSize,
    NodeIndex,
    DropLastNode,
    ShortHash,
    ExtraNode,
    NoNodes,
    FlipValue,
    EmptyValue,
    LongerValue,
    OtherIndex,
}

impl Tamper {
    const ALL: [Tamper; 18] = [
        Tamper::FlipSignature,
        Tamper::ShortSignature,
        Tamper::NoSignature,
        Tamper::ForeignSignature,
        Tamper::FlipFirstNodeHash,
        Tamper::FlipLastNodeHash,
        Tamper::FirstNodeSize,
        Tamper::LastNodeSize,
        Tamper::HugeNodeSize,
        Tamper::NodeIndex,
        Tamper::DropLastNode,
        Tamper::ShortHash,
        Tamper::ExtraNode,
        Tamper::NoNodes,
        Tamper::FlipValue,
        Tamper::EmptyValue,
        Tamper::LongerValue,
        Tamper::OtherIndex,
    ];

    /// Corrupts `d`; `signable` is what the writer signed for the proof's length.
    fn apply(self, d: &mut Data, signable: &[u8; 40]) {
        let last = d.nodes.len().saturating_sub(1);
        match self {
            Tamper::FlipSignature => {
                let mut s = d.signature.as_ref().unwrap().to_vec();
                s[10] ^= 1;
                d.signature = Some(s.into());
            }
            Tamper::ShortSignature => {
                d.signature = Some(d.signature.as_ref().unwrap().slice(..63));
            }
            Tamper::NoSignature => d.signature = None,
            Tamper::ForeignSignature => {
                // Over the right roots and length, by the wrong key.
                let sig = KeyPair::generate().secret.sign(signable);
                d.signature = Some(Bytes::copy_from_slice(&sig.0));
            }
            Tamper::FlipFirstNodeHash => d.nodes[0].hash[0] ^= 0x80,
            Tamper::FlipLastNodeHash => d.nodes[last].hash[31] ^= 1,
            Tamper::FirstNodeSize => d.nodes[0].size += 1,
            Tamper::LastNodeSize => d.nodes[last].size -= 1,
            Tamper::HugeNodeSize => d.nodes[0].size = u64::MAX,
            Tamper::NodeIndex => d.nodes[0].index += 2,
            Tamper::DropLastNode => {
                d.nodes.pop();
            }
            Tamper::ShortHash => d.nodes[0].hash.truncate(31),
            Tamper::ExtraNode => d.nodes.insert(
                0,
                DataNode {
                    index: 1 << 40,
                    hash: vec![9; 32],
                    size: 1,
                },
            ),
            Tamper::NoNodes => d.nodes.clear(),
            Tamper::FlipValue => {
                let mut v = d.value.as_ref().unwrap().to_vec();
                v[5] ^= 4;
                d.value = Some(v.into());
            }
            Tamper::EmptyValue => d.value = Some(Bytes::new()),
            Tamper::LongerValue => {
                let mut v = d.value.as_ref().unwrap().to_vec();
                v.push(0);
                d.value = Some(v.into());
            }
            Tamper::OtherIndex => d.index ^= 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_data_is_refused_and_nothing_is_stored() {
    init_logs();
    let w = writer(300, 256).await;
    for tamper in Tamper::ALL {
        let victim = Victim::new(&w, ReplicatorOptions::default()).await;
        let (mut h, task) = victim.meet_hostile(None).await;
        h.accept_channel(&w.key()).await;
        let r = h.next_request(&w).await.expect("no request");
        let mut data = genuine_data(&w, &r).await;
        tamper.apply(&mut data, &signable(&w));
        h.send(1, Message::Data(data)).await.unwrap();
        let e = expect_dropped(task).await;
        assert!(
            matches!(e, ReplError::PeerMisbehaved { .. }),
            "{tamper:?}: {e}"
        );
        assert!(h.closed_within(Duration::from_secs(5)).await, "{tamper:?}");
        assert_logged(&h.key, &["dropping peer", "misbehaved"]).await;
        assert_eq!(victim.feed.len(), 0, "{tamper:?}");
        assert_eq!(victim.feed.downloaded(0, None), 0, "{tamper:?}");
        victim.assert_nothing_invalid().await;
        if matches!(tamper, Tamper::FlipSignature | Tamper::FlipLastNodeHash) {
            // The clone is still healthy: an honest seeder completes it.
            let seeder = Seeder::serving(w.clone()).await;
            let (task, server) = victim.meet_honest(&seeder).await;
            tokio::time::timeout(LIMIT, task)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            server.await.unwrap().unwrap();
            assert_same(&victim.feed, &w).await;
        }
    }
}

/// Blocks after the first few are proven against what the clone already has. A forged
/// block must be caught there too. A forged proof node must be caught when the clone needs
/// it; when the clone already trusts a lower node it ignores the rest of the proof (stale
/// digests make uploaders send nodes the clone has meanwhile), and then must store only
/// genuine data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_late_in_a_download_is_refused() {
    init_logs();
    let w = writer(300, 256).await;
    for tamper in [
        Tamper::FlipValue,
        Tamper::ShortHash,
        Tamper::FlipFirstNodeHash,
        Tamper::FirstNodeSize,
    ] {
        let victim = Victim::new(&w, ReplicatorOptions::default()).await;
        let (mut h, task) = victim.meet_hostile(None).await;
        h.accept_channel(&w.key()).await;
        let mut served = 0;
        // Serve honestly but for the 40th answer, until the victim is done or hangs up.
        let serving = async {
            while let Some(r) = h.next_request(&w).await {
                let mut data = genuine_data(&w, &r).await;
                served += 1;
                if served == 40 {
                    if data.nodes.is_empty() && !matches!(tamper, Tamper::FlipValue) {
                        data.value = Some(Bytes::from_static(b"forged"));
                    } else {
                        tamper.apply(&mut data, &signable(&w));
                    }
                }
                if h.send(1, Message::Data(data)).await.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(LIMIT, serving)
            .await
            .expect("the victim neither finished nor dropped the peer");
        // Done (or dropped): end our side too, as a JS peer does.
        let _ = h.io.shutdown().await;
        let result = tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
        println!("{tamper:?} in the 40th answer: {result:?}");
        match result {
            Err(e) => {
                assert!(
                    matches!(e, ReplError::PeerMisbehaved { .. }),
                    "{tamper:?}: {e}"
                );
                assert!(victim.feed.downloaded(0, None) < 300, "{tamper:?}");
            }
            Ok(()) => {
                // Only a node the clone did not need may have been forged.
                assert!(
                    matches!(tamper, Tamper::FlipFirstNodeHash | Tamper::FirstNodeSize),
                    "{tamper:?} went unnoticed"
                );
                assert_same(&victim.feed, &w).await;
            }
        }
        victim.assert_nothing_invalid().await;
        let seeder = Seeder::serving(w.clone()).await;
        let (task, server) = victim.meet_honest(&seeder).await;
        tokio::time::timeout(LIMIT, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        server.await.unwrap().unwrap();
        assert_same(&victim.feed, &w).await;
    }
}

/// A hostile seeder lies while an honest one serves the same clone at the same time: the
/// liar is dropped, the honest connection carries on and the clone completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_seeder_does_not_disturb_an_honest_one() {
    init_logs();
    let w = writer(3000, 1024).await;
    let seeder = Seeder::serving(w.clone()).await;
    // Only tampering that is always caught: once the clone holds part of the tree (from the
    // honest seeder), a proof may verify against it and the signature is not consulted.
    for tamper in [Tamper::FlipValue, Tamper::ShortHash, Tamper::EmptyValue] {
        let victim = Victim::new(&w, ReplicatorOptions::default()).await;
        let (mut h, task) = victim.meet_hostile(None).await;
        h.accept_channel(&w.key()).await;
        let first = h.next_request(&w).await.expect("no request");
        // Now the honest seeder joins and the download gets going.
        let (honest, server) = victim.meet_honest(&seeder).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut data = genuine_data(&w, &first).await;
        tamper.apply(&mut data, &signable(&w));
        h.send(1, Message::Data(data)).await.unwrap();
        let e = expect_dropped(task).await;
        assert!(
            matches!(e, ReplError::PeerMisbehaved { .. }),
            "{tamper:?}: {e}"
        );
        tokio::time::timeout(LIMIT, honest)
            .await
            .expect("the honest download stalled")
            .unwrap()
            .unwrap();
        server.await.unwrap().unwrap();
        assert_same(&victim.feed, &w).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrequested_data_is_refused() {
    init_logs();
    let w = writer(300, 256).await;
    let seeder = Seeder::serving(w.clone()).await;
    for hash_only_forgery in [false, true] {
        let victim = Victim::new(&w, ReplicatorOptions::default()).await;
        let (mut h, task) = victim.meet_hostile(None).await;
        h.accept_channel(&w.key()).await;
        let data = if hash_only_forgery {
            // Hash-only answers are accepted unasked (they only prove a length), so they
            // must verify: here the signature is forged.
            let mut d = genuine_data(
                &w,
                &Request {
                    index: 299,
                    bytes: None,
                    hash: Some(true),
                    nodes: None,
                },
            )
            .await;
            Tamper::FlipSignature.apply(&mut d, &signable(&w));
            d
        } else {
            // A genuine block with a valid proof, that nobody asked for.
            genuine_data(
                &w,
                &Request {
                    index: 7,
                    bytes: None,
                    hash: None,
                    nodes: None,
                },
            )
            .await
        };
        h.send(1, Message::Data(data)).await.unwrap();
        let e = expect_dropped(task).await;
        assert!(
            matches!(e, ReplError::PeerMisbehaved { .. }),
            "hash only {hash_only_forgery}: {e}"
        );
        assert!(h.closed_within(Duration::from_secs(5)).await);
        let reason = if hash_only_forgery {
            "failed verification"
        } else {
            "nobody requested"
        };
        assert_logged(&h.key, &["dropping peer", "misbehaved", reason]).await;
        assert_eq!(victim.feed.len(), 0);
        assert_eq!(victim.feed.downloaded(0, None), 0);
        victim.assert_nothing_invalid().await;
        let (task, server) = victim.meet_honest(&seeder).await;
        tokio::time::timeout(LIMIT, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        server.await.unwrap().unwrap();
        assert_same(&victim.feed, &w).await;
    }
}

/// A seeder that announces blocks and never delivers: the clone's requests time out, the
/// peer is dropped, and its reserved blocks go to an honest peer connected meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_seeder_is_dropped_when_requests_time_out() {
    init_logs();
    let w = writer(2000, 1024).await;
    let seeder = Seeder::serving(w.clone()).await;
    let victim = Victim::new(
        &w,
        ReplicatorOptions {
            request_timeout: Duration::from_millis(1500),
            ..Default::default()
        },
    )
    .await;
    // The connection timeout is long: only the request timeout can drop this peer, which
    // keeps the connection alive with keep-alives.
    let (mut h, task) = victim.meet_hostile(Some(Duration::from_secs(60))).await;
    h.accept_channel(&w.key()).await;
    let started = Instant::now();
    let _first = h.next_request(&w).await.expect("no request");
    let (honest, server) = victim.meet_honest(&seeder).await;
    // Keep the connection busy (keep-alives) but answer nothing.
    let keepalive = async {
        loop {
            if h.send_raw(&[0]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let e = tokio::select! {
        e = expect_dropped(task) => e,
        _ = keepalive => panic!("connection closed without an error"),
    };
    let after = started.elapsed();
    assert!(matches!(e, ReplError::RequestTimeout { .. }), "{e}");
    assert!(after < Duration::from_secs(10), "took {after:?}");
    assert_logged(&h.key, &["dropping peer", "answered none"]).await;
    assert!(h.closed_within(Duration::from_secs(5)).await);
    tokio::time::timeout(LIMIT, honest)
        .await
        .expect("the honest download stalled")
        .unwrap()
        .unwrap();
    server.await.unwrap().unwrap();
    assert_same(&victim.feed, &w).await;
}

/// A peer that completes the handshake, opens the channel and then says nothing at all is
/// dropped by the connection's idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_by_the_idle_timeout() {
    init_logs();
    let w = writer(500, 256).await;
    let victim = Victim::new(
        &w,
        ReplicatorOptions {
            request_timeout: Duration::from_millis(1000),
            ..Default::default()
        },
    )
    .await;
    let (mut h, task) = victim.meet_hostile(Some(Duration::from_millis(1500))).await;
    h.accept_channel(&w.key()).await;
    let started = Instant::now();
    // Read (so the victim is never blocked writing) but say nothing.
    let e = tokio::select! {
        e = expect_dropped(task) => e,
        _ = async { while let Ok(Some(_)) = h.recv().await {} ; std::future::pending::<()>().await } => unreachable!(),
    };
    assert!(e.to_string().contains("no data received"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(h.closed_within(Duration::from_secs(5)).await);
    assert_eq!(victim.feed.downloaded(0, None), 0);
    // Same as a seeder facing a silent downloader.
    let mut seeder = Seeder::serving(w.clone()).await;
    seeder.timeout = Some(Duration::from_millis(1500));
    let (mut h, task) = seeder.hostile().await;
    h.accept_channel(&seeder.writer.key()).await;
    let e = tokio::select! {
        e = expect_dropped(task) => e,
        _ = async { while let Ok(Some(_)) = h.recv().await {} ; std::future::pending::<()>().await } => unreachable!(),
    };
    assert!(e.to_string().contains("no data received"), "{e}");
    seeder.assert_intact().await;
}

// ---- arbitrary input ------------------------------------------------------------------------

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Numbers that are mostly small (block indexes near the feed) and sometimes extreme.
fn arb_index() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..300,
        1 => Just(u64::MAX),
        1 => Just(1u64 << 53),
        1 => any::<u64>(),
    ]
}

/// Lengths for Have/Unhave/Want ranges: small, page-sized, and extreme.
fn arb_length() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(prop_oneof![
        4 => 0u64..20_000,
        1 => Just(WANT_PAGE),
        1 => Just(8192),
        1 => Just(1u64 << 53),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ])
}

fn arb_message() -> impl Strategy<Value = Message> {
    let node = (
        arb_index(),
        proptest::collection::vec(any::<u8>(), 30..34),
        any::<u64>(),
    )
        .prop_map(|(index, hash, size)| DataNode { index, hash, size });
    prop_oneof![
        (any::<bool>(), proptest::collection::vec("[a-z]{0,8}", 0..3)).prop_map(|(ack, ext)| {
            Message::Options(Options {
                extensions: ext,
                ack: Some(ack),
            })
        }),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(uploading, downloading)| Message::Status(Status {
                uploading,
                downloading
            })),
        (
            arb_index(),
            arb_length(),
            proptest::option::of(arb_bytes(16)),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(start, length, bitfield, ack)| Message::Have(Have {
                start,
                length,
                bitfield,
                ack
            })),
        (arb_index(), arb_length())
            .prop_map(|(start, length)| Message::Unhave(Unhave { start, length })),
        (arb_index(), arb_length())
            .prop_map(|(start, length)| Message::Want(Want { start, length })),
        (arb_index(), arb_length())
            .prop_map(|(start, length)| Message::Unwant(Unwant { start, length })),
        (
            arb_index(),
            proptest::option::of(arb_index()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(index, bytes, hash, nodes)| Message::Request(Request {
                index,
                bytes,
                hash,
                nodes
            })),
        (
            arb_index(),
            proptest::option::of(arb_index()),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(index, bytes, hash)| Message::Cancel(Cancel {
                index,
                bytes,
                hash
            })),
        (
            arb_index(),
            proptest::option::of(arb_bytes(64)),
            proptest::collection::vec(node, 0..6),
            proptest::option::of(arb_bytes(70))
        )
            .prop_map(|(index, value, nodes, signature)| Message::Data(Data {
                index,
                value,
                nodes,
                signature
            })),
        (any::<u64>(), arb_bytes(16)).prop_map(|(id, payload)| Message::Extension { id, payload }),
        (11u8..15, arb_bytes(16)).prop_map(|(type_id, body)| Message::Unknown { type_id, body }),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 32))
            .prop_map(|dk| { Message::Close(Close { discovery_key: dk }) }),
    ]
}

/// One hostile session over an in-memory stream: the victim (a seeder, or a clone) must
/// neither panic nor store anything invalid, and must end the session in bounded time.
async fn hostile_session(seed_victim: bool, messages: Vec<(u64, Message)>, w: Feed) -> PeerResult {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (victim_feed, rep) = if seed_victim {
        (
            w.clone(),
            Replicator::new(w.clone(), ReplicatorOptions::default()),
        )
    } else {
        let f = memory_clone(w.key(), false).await.unwrap();
        (f.clone(), Replicator::new(f, ReplicatorOptions::default()))
    };
    let victim = tokio::spawn({
        let rep = rep.clone();
        async move {
            replicate(
                &rep,
                a,
                ReplicateOptions {
                    protocol: ProtocolOptions {
                        initiator: false,
                        timeout: Some(Duration::from_secs(5)),
                        ..Default::default()
                    },
                },
            )
            .await
        }
    });
    let mut h = Hostile::handshake(b, true).await;
    h.accept_channel(&w.key()).await;
    let mut io_ok = true;
    for (channel, m) in messages {
        if h.send(channel, m).await.is_err() {
            io_ok = false;
            break;
        }
    }
    // A Want nobody sent before: once the victim answers it, it has digested everything
    // before it (a victim that hung up instead is fine too).
    let barrier = (1u64 << 40) + 4321 * WANT_PAGE;
    if io_ok {
        let _ = h
            .send(
                1,
                Message::Want(Want {
                    start: barrier,
                    length: Some(WANT_PAGE),
                }),
            )
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match h.recv().await {
                    Ok(Some((_, Message::Have(hv)))) if hv.start == barrier => return,
                    Ok(Some(_)) => {}
                    _ => return,
                }
            }
        })
        .await;
    }
    // Hang up: a victim that is still waiting for something then ends the session.
    let _ = h.io.shutdown().await;
    // Drain (so the victim never blocks writing) until it ends the session.
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(_)) = h.recv().await {}
    })
    .await;
    let r = tokio::time::timeout(Duration::from_secs(20), victim)
        .await
        .expect("the victim did not end the session")
        .expect("the victim's task panicked");
    if let Err(e) = &r {
        assert!(!e.to_string().contains("panicked"), "{e}");
    }
    assert!(drained.is_ok() || !io_ok);
    let audit = victim_feed.audit().await.unwrap();
    assert_eq!(audit.invalid, 0);
    if seed_victim {
        assert_eq!(victim_feed.len(), w.len());
        assert_eq!(audit.valid, w.len());
    }
    r
}

/// The session harness does reach the peer logic: a request for a block the seeder never
/// had gets the hostile peer dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_harness_reaches_the_peer() {
    let request = Message::Request(Request {
        index: 1_000_000,
        bytes: None,
        hash: None,
        nodes: None,
    });
    let r = hostile_session(true, vec![(1, request)], shared_writer_async().await).await;
    assert!(matches!(r, Err(ReplError::PeerMisbehaved { .. })), "{r:?}");
}

async fn shared_writer_async() -> Feed {
    tokio::task::spawn_blocking(shared_writer).await.unwrap()
}

fn shared_writer() -> Feed {
    static W: OnceLock<Feed> = OnceLock::new();
    W.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(writer(300, 64))
    })
    .clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary well-formed messages (on the open channel or random ones) after a valid
    /// handshake and Open, to a seeder and to a clone.
    #[test]
    fn arbitrary_messages_never_panic_or_corrupt(
        seed_victim in any::<bool>(),
        messages in proptest::collection::vec((prop_oneof![8 => Just(1u64), 1 => 0u64..4, 1 => any::<u64>().prop_map(|c| c >> 8)], arb_message()), 0..24),
    ) {
        let w = shared_writer();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(hostile_session(seed_victim, messages, w))
            .ok();
    }

    /// Random proofs built by mutating a genuine one are either still genuine or refused;
    /// what is stored always verifies.
    #[test]
    fn mutated_proofs_never_store_anything_invalid(
        index in 0u64..300,
        mutations in proptest::collection::vec((0usize..8, any::<u64>(), any::<u8>()), 1..4),
        digest in prop_oneof![Just(0u64), any::<u64>()],
    ) {
        let w = shared_writer();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let clone = memory_clone(w.key(), false).await.unwrap();
                let r = Request { index, bytes: None, hash: Some(false), nodes: Some(digest) };
                let mut d = genuine_data(&w, &r).await;
                let original = d.clone();
                for (what, n, byte) in mutations {
                    let k = if d.nodes.is_empty() { 0 } else { (n as usize) % d.nodes.len() };
                    match what {
                        0 if !d.nodes.is_empty() => d.nodes[k].hash[(n % 32) as usize] ^= byte | 1,
                        1 if !d.nodes.is_empty() => d.nodes[k].size = n,
                        2 if !d.nodes.is_empty() => d.nodes[k].index = n % 2048,
                        3 if !d.nodes.is_empty() => { d.nodes.remove(k); }
                        4 => d.index = n % 400,
                        5 => d.value = Some(Bytes::from(vec![byte; (n % 100) as usize])),
                        6 => if let Some(s) = &d.signature { let mut s = s.to_vec(); s[(n % 64) as usize] ^= byte | 1; d.signature = Some(s.into()); },
                        _ => d.nodes.push(DataNode { index: n % 4096, hash: vec![byte; 32], size: n % 1000 }),
                    }
                }
                let Some(nodes) = d.proof_nodes() else { return };
                let signature = d.signature.as_ref().and_then(|s| hypercore::Signature::from_slice(s).ok());
                let result = clone
                    .put(d.index, d.value.clone(), hypercore::Proof { nodes, signature }, hypercore::Origin::Local)
                    .await;
                let audit = clone.audit().await.unwrap();
                assert_eq!(audit.invalid, 0);
                if result.is_ok() && d.value.is_some() {
                    // Accepted: then it is the genuine block.
                    assert_eq!(clone.get(d.index).await.unwrap(), w.get(d.index).await.unwrap());
                }
                if d == original && digest == 0 {
                    assert!(result.is_ok(), "{result:?}");
                }
            });
    }
}

/// A full `Unhave` resets the length the scheduler sees for the peer, as JS's single
/// `remoteLength` does (the peer's own copy and the shared one must agree).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_unhave_resets_the_length_the_scheduler_sees() {
    let seeder = Seeder::new(10, 100).await;
    let key = seeder.writer.key();
    let (mut h, task) = seeder.hostile().await;
    h.accept_channel(&key).await;
    let peer = h.key;
    let announced = || {
        seeder
            .rep
            .stats()
            .peers
            .iter()
            .find(|p| p.remote_key == peer)
            .map(|p| p.remote_length)
    };
    let have = Message::Have(Have {
        start: 0,
        length: Some(100),
        bitfield: None,
        ack: None,
    });
    assert!(matches!(probe(&mut h, have).await, Probe::Answered(_)));
    assert_eq!(announced(), Some(100));
    let unhave = Message::Unhave(Unhave {
        start: 0,
        length: Some(100),
    });
    assert!(matches!(probe(&mut h, unhave).await, Probe::Answered(_)));
    assert_eq!(announced(), Some(0));
    task.abort();
}
