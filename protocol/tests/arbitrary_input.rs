//! Arbitrary input against every decoder a remote peer can reach: the frame decoder, the
//! message decoders, the handshake reader, and a whole connection. Nothing may panic,
//! malformed input must fail (promptly, without waiting for a timeout), and what decodes
//! must re-encode to the same message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hypercore_protocol::cipher::XSalsa20;
use hypercore_protocol::frame::{self, Frame};
use hypercore_protocol::message::{
    Cancel, Close, Data, DataNode, Have, Message, Open, Options, Request, Status, Unhave, Unwant,
    Want,
};
use hypercore_protocol::noise::Handshake;
use hypercore_protocol::{NoiseKeyPair, Outcome, Protocol, ProtocolOptions};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn opt_bytes(max: usize) -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(bytes(max).prop_map(Bytes::from))
}

/// Any message of any type with arbitrary field values.
fn arb_message() -> impl Strategy<Value = Message> {
    let o64 = || proptest::option::of(any::<u64>());
    let obool = || proptest::option::of(any::<bool>());
    let node = (any::<u64>(), bytes(40), any::<u64>()).prop_map(|(index, hash, size)| DataNode {
        index,
        hash,
        size,
    });
    prop_oneof![
        (bytes(40), proptest::option::of(bytes(40))).prop_map(|(discovery_key, capability)| {
            Message::Open(Open {
                discovery_key,
                capability,
            })
        }),
        (proptest::collection::vec(".{0,12}", 0..4), obool())
            .prop_map(|(extensions, ack)| Message::Options(Options { extensions, ack })),
        (obool(), obool()).prop_map(|(uploading, downloading)| Message::Status(Status {
            uploading,
            downloading
        })),
        (any::<u64>(), o64(), opt_bytes(40), obool()).prop_map(|(start, length, bitfield, ack)| {
            Message::Have(Have {
                start,
                length,
                bitfield,
                ack,
            })
        }),
        (any::<u64>(), o64()).prop_map(|(start, length)| Message::Unhave(Unhave { start, length })),
        (any::<u64>(), o64()).prop_map(|(start, length)| Message::Want(Want { start, length })),
        (any::<u64>(), o64()).prop_map(|(start, length)| Message::Unwant(Unwant { start, length })),
        (any::<u64>(), o64(), obool(), o64()).prop_map(|(index, bytes, hash, nodes)| {
            Message::Request(Request {
                index,
                bytes,
                hash,
                nodes,
            })
        }),
        (any::<u64>(), o64(), obool()).prop_map(|(index, bytes, hash)| Message::Cancel(Cancel {
            index,
            bytes,
            hash
        })),
        (
            any::<u64>(),
            opt_bytes(100),
            proptest::collection::vec(node, 0..5),
            opt_bytes(70)
        )
            .prop_map(|(index, value, nodes, signature)| Message::Data(Data {
                index,
                value,
                nodes,
                signature
            })),
        proptest::option::of(bytes(40))
            .prop_map(|discovery_key| Message::Close(Close { discovery_key })),
        (any::<u64>(), bytes(40)).prop_map(|(id, payload)| Message::Extension {
            id,
            payload: payload.into()
        }),
        (11u8..15, bytes(40)).prop_map(|(type_id, body)| Message::Unknown {
            type_id,
            body: body.into()
        }),
    ]
}

/// Decodes everything in `wire` as `frame::decode` sees it: the messages, and whether an
/// error stopped it.
/// Messages by channel (or why each did not decode), and the error that stopped framing.
type Decoded = (Vec<(u64, Result<Message, String>)>, Option<String>);

fn decode_all(wire: &[u8]) -> Decoded {
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    loop {
        match frame::decode(&mut buf) {
            Ok(Some(Frame::Message {
                channel,
                type_id,
                body,
            })) => out.push((
                channel,
                Message::decode(type_id, body).map_err(|e| e.to_string()),
            )),
            Ok(Some(Frame::KeepAlive)) => {}
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e.to_string())),
        }
    }
}

/// A decoded message encodes to a body that decodes to the same message.
fn assert_stable(type_id: u8, m: &Message) {
    let mut body = BytesMut::new();
    m.encode_body(&mut body);
    assert_eq!(m.type_id(), type_id);
    assert_eq!(body.len(), m.encoded_len());
    assert_eq!(&Message::decode(type_id, body.freeze()).unwrap(), m);
}

// ---- handshakes ----------------------------------------------------------------------------

/// A handshake on each side, run to the point where `reader` must read the remote's
/// message number `step` (1, 2 or 3). Returns the reader and the genuine message.
fn handshake_at(step: u8) -> (Handshake, Vec<u8>) {
    let mut i = Handshake::new(true, &NoiseKeyPair::generate()).unwrap();
    let mut r = Handshake::new(false, &NoiseKeyPair::generate()).unwrap();
    let strip = |m: Vec<u8>| {
        // Messages here are < 128 bytes: a one-byte length prefix.
        assert!(m[0] < 0x80);
        m[1..].to_vec()
    };
    let m1 = strip(i.write().unwrap());
    if step == 1 {
        return (r, m1);
    }
    r.read(&m1).unwrap();
    let m2 = strip(r.write().unwrap());
    if step == 2 {
        return (i, m2);
    }
    i.read(&m2).unwrap();
    let m3 = strip(i.write().unwrap());
    (r, m3)
}

async fn read_exact_handshake<R: AsyncRead + Unpin>(io: &mut R) -> Vec<u8> {
    let len = io.read_u8().await.unwrap();
    assert!(len < 0x80);
    let mut m = vec![0u8; len as usize];
    io.read_exact(&mut m).await.unwrap();
    m
}

/// Our end of a connection to a `Protocol` after a hand-run handshake.
struct Remote {
    io: DuplexStream,
    tx: XSalsa20,
    rx: XSalsa20,
    victim: tokio::task::JoinHandle<Result<Protocol, hypercore_protocol::Error>>,
    tx_key: [u8; 32],
    rx_key: [u8; 32],
}

/// Runs the initiator half of a handshake by hand against a `Protocol` responder.
async fn handshake_with_protocol(options: ProtocolOptions) -> Remote {
    let (mut a, b) = tokio::io::duplex(1 << 20);
    let victim = tokio::spawn(async move { Protocol::connect(b, options).await.map(|(p, _)| p) });
    let mut hs = Handshake::new(true, &NoiseKeyPair::generate()).unwrap();
    a.write_all(&hs.write().unwrap()).await.unwrap();
    let m2 = read_exact_handshake(&mut a).await;
    hs.read(&m2).unwrap();
    a.write_all(&hs.write().unwrap()).await.unwrap();
    let est = hs.finish().unwrap();
    let tx = XSalsa20::new(&est.tx_key, &est.tx_nonce);
    let rx = XSalsa20::new(&est.rx_key, &est.rx_nonce);
    Remote {
        io: a,
        tx,
        rx,
        victim,
        tx_key: est.tx_key,
        rx_key: est.rx_key,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits for the connection to end and returns how; panics inside its tasks fail the test.
async fn ended(protocol: &Protocol, within: Duration) -> Option<Outcome> {
    let outcome = tokio::time::timeout(within, protocol.closed()).await.ok()?;
    if let Outcome::Failed(e) = &outcome {
        assert!(!e.to_string().contains("panicked"), "{e}");
    }
    Some(outcome)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any byte string fed to the frame decoder in arbitrary pieces decodes exactly as when
    /// fed at once, and never panics.
    #[test]
    fn frames_decode_the_same_however_the_bytes_arrive(
        wire in bytes(2048),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let whole = decode_all(&wire);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(wire.len());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut error = None;
        let mut at = 0;
        'feed: for cut in cuts {
            buf.extend_from_slice(&wire[at..cut]);
            at = cut;
            loop {
                match frame::decode(&mut buf) {
                    Ok(Some(Frame::Message { channel, type_id, body })) => {
                        got.push((channel, Message::decode(type_id, body).map_err(|e| e.to_string())));
                    }
                    Ok(Some(Frame::KeepAlive)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e.to_string());
                        break 'feed;
                    }
                }
            }
        }
        prop_assert_eq!(got, whole.0);
        prop_assert_eq!(error, whole.1);
    }

    /// Frames with a valid length and header but a random body, for every type and for
    /// channels up to the largest header: the body decoder never panics, and what it
    /// accepts is stable under re-encoding.
    #[test]
    fn random_bodies_of_every_type(
        type_id in 0u8..16,
        channel in prop_oneof![0u64..4, any::<u64>().prop_map(|c| c >> 12)],
        body in prop_oneof![bytes(64), bytes(600)],
    ) {
        let mut wire = BytesMut::new();
        let m = Message::Unknown { type_id, body: Bytes::from(body.clone()) };
        frame::encode(channel, &m, &mut wire);
        let Some(Frame::Message { channel: c, type_id: t, body: b }) = frame::decode(&mut wire).unwrap() else {
            panic!("a well-framed message did not decode as one");
        };
        prop_assert_eq!((c, t, &b[..]), (channel, type_id, &body[..]));
        prop_assert!(wire.is_empty());
        if let Ok(decoded) = Message::decode(t, b) {
            // Unknown fields are skipped on decode, so compare decoded forms only.
            assert_stable(type_id, &decoded);
        }
    }

    /// Every message survives framing and decoding unchanged.
    #[test]
    fn arbitrary_messages_round_trip(
        m in arb_message(),
        channel in prop_oneof![0u64..4, any::<u64>().prop_map(|c| c >> 12)],
    ) {
        let mut wire = BytesMut::new();
        frame::encode(channel, &m, &mut wire);
        let Some(Frame::Message { channel: c, type_id, body }) = frame::decode(&mut wire).unwrap() else {
            panic!("no frame");
        };
        prop_assert_eq!(c, channel);
        prop_assert_eq!(Message::decode(type_id, body).unwrap(), m);
    }

    /// Random, truncated and bit-flipped handshake messages at each of the three steps are
    /// refused without panicking; only the genuine message is accepted.
    #[test]
    fn handshake_reader_refuses_what_is_not_genuine(
        step in 1u8..4,
        random in bytes(300),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
    ) {
        // A random message, then whatever the handshake is asked next: errors, no panic.
        let (mut reader, genuine) = handshake_at(step);
        if reader.read(&random).is_err() {
            let _ = reader.read(&genuine);
            let _ = reader.write();
            let _ = reader.is_finished();
        }
        let (mut reader, genuine2) = handshake_at(step);
        let mut flipped = genuine2.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= 1 << bit;
        let r = reader.read(&flipped);
        // Message 1 is the ephemeral key and a cleartext payload: a flipped bit there may
        // still be a well-formed message. Messages 2 and 3 are authenticated.
        if step > 1 {
            prop_assert!(r.is_err(), "a flipped bit at {} of message {} was accepted", at, step);
        }
        let (mut reader, genuine3) = handshake_at(step);
        let n = cut.index(genuine3.len());
        let truncated = reader.read(&genuine3[..n]);
        // Message 1 cut right after the ephemeral key reads as a message without a payload;
        // the payload (the nonce) then has to come with message 3, or `finish` refuses.
        if !(step == 1 && n == 32) {
            prop_assert!(truncated.is_err(), "message {} cut to {} bytes was accepted", step, n);
        }
        // And the genuine message is accepted (the harness itself is sound).
        let (mut reader, genuine4) = handshake_at(step);
        prop_assert!(reader.read(&genuine4).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// A remote that sends arbitrary bytes instead of a handshake: `connect` fails (it does
    /// not hang: the remote then hangs up) and never panics.
    #[test]
    fn connect_refuses_an_arbitrary_handshake(
        initiator in any::<bool>(),
        junk in prop_oneof![bytes(200), bytes(70_000)],
    ) {
        runtime().block_on(async move {
            let (mut a, b) = tokio::io::duplex(1 << 20);
            let victim = tokio::spawn(Protocol::connect(
                b,
                ProtocolOptions { initiator, timeout: Some(Duration::from_secs(5)), ..Default::default() },
            ));
            let _ = a.write_all(&junk).await;
            let _ = a.shutdown().await;
            // Drain what the victim writes so it never blocks.
            let drain = tokio::spawn(async move {
                let mut sink = vec![0u8; 4096];
                while let Ok(n) = a.read(&mut sink).await {
                    if n == 0 { break; }
                }
            });
            let r = tokio::time::timeout(Duration::from_secs(10), victim)
                .await
                .expect("connect hung")
                .expect("connect panicked");
            assert!(r.is_err(), "an arbitrary handshake was accepted");
            drain.abort();
        });
    }

    /// After a genuine handshake, a remote sends arbitrary bytes and stays connected.
    /// Whatever the bytes, nothing panics. When they are correctly encrypted and do not
    /// decode, the connection fails at once (well before the 30 s idle timeout).
    #[test]
    fn a_connection_survives_arbitrary_bytes_after_the_handshake(
        junk in prop_oneof![bytes(64), bytes(4096), bytes(100_000)],
        encrypt in any::<bool>(),
        open_first in any::<bool>(),
    ) {
        runtime().block_on(async move {
            let key = hypercore::KeyPair::generate().public;
            let Remote { io: a, mut tx, mut rx, victim, tx_key: our_tx, rx_key: our_rx } = handshake_with_protocol(ProtocolOptions {
                initiator: false,
                timeout: Some(Duration::from_secs(30)),
                ..Default::default()
            })
            .await;
            let protocol = victim.await.unwrap().unwrap();
            // The victim has a channel open for `key`, drained by its owner.
            let mut channel = protocol.open(key).unwrap();
            let owner = tokio::spawn(async move { while channel.recv().await.is_some() {} });
            let mut plain = BytesMut::new();
            if open_first {
                // Open the channel properly first, so junk on channel 1 reaches the owner.
                frame::encode(
                    1,
                    &Message::Open(Open {
                        discovery_key: key.discovery_key().0.to_vec(),
                        capability: Some(hypercore::crypto::capability(&key, &our_tx, &our_rx).to_vec()),
                    }),
                    &mut plain,
                );
            }
            plain.extend_from_slice(&junk);
            let (messages, frame_error) = decode_all(&plain);
            let malformed = frame_error.is_some()
                || messages.iter().any(|(_, m)| match m {
                    Err(_) => true,
                    Ok(Message::Open(o)) => o.discovery_key.len() != 32,
                    _ => false,
                });
            let mut wire = plain.to_vec();
            if encrypt {
                tx.apply(&mut wire);
            }
            let (mut rd, mut wr) = tokio::io::split(a);
            let reader = tokio::spawn(async move {
                let mut sink = vec![0u8; 4096];
                while let Ok(n) = rd.read(&mut sink).await {
                    if n == 0 { break; }
                    rx.apply(&mut sink[..n]);
                }
            });
            // The victim may stop reading at any point: write from a task, and stay
            // connected afterwards.
            let writer = tokio::spawn(async move {
                let _ = wr.write_all(&wire).await;
                std::future::pending::<()>().await;
                drop(wr);
            });
            if encrypt && malformed {
                let outcome = ended(&protocol, Duration::from_secs(10)).await;
                assert!(
                    matches!(outcome, Some(Outcome::Failed(_))),
                    "malformed input did not fail the connection: {outcome:?} ({frame_error:?})"
                );
            } else {
                // Anything goes (random bytes may wait for the rest of a frame), but no panic.
                let _ = ended(&protocol, Duration::from_millis(300)).await;
                protocol.destroy("test over");
            }
            writer.abort();
            reader.abort();
            owner.abort();
        });
    }
}

impl Remote {
    /// Encrypts and writes `bytes` as they are (frames or parts of frames).
    async fn send(&mut self, bytes: &[u8]) {
        let mut data = bytes.to_vec();
        self.tx.apply(&mut data);
        self.io.write_all(&data).await.unwrap();
    }
}

/// The first `fill` bytes of a frame of `body` bytes on channel 1 (an unknown message
/// type, which the connection passes on and nothing minds).
fn frame_start(body: usize, fill: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.extend_from_slice(&varint::encode(body as u64 + 1));
    out.extend_from_slice(&varint::encode(1 << 4 | 14));
    out.extend_from_slice(&vec![7u8; fill]);
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_partial_frames_share_one_budget() {
    use hypercore_protocol::FrameBudget;
    let budget = FrameBudget::new(0); // the smallest: one largest frame
    let options = || ProtocolOptions {
        timeout: None,
        frame_budget: Some(budget.clone()),
        ..ProtocolOptions::default()
    };
    let mut a = handshake_with_protocol(options()).await;
    let mut b = handshake_with_protocol(options()).await;
    let size = 6 << 20;
    let full = budget.total();
    let settle = |want: usize| {
        let budget = budget.clone();
        async move {
            for _ in 0..200 {
                if budget.available() == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("budget available {} instead of {want}", budget.available());
        }
    };
    // A's frame takes its size from the budget as soon as its length is known.
    a.send(&frame_start(size, 1 << 20)).await;
    let frame_bytes = frame_start(size, 0).len() + size;
    settle(full - frame_bytes).await;
    // B's frame does not fit: B's connection waits (queued for what is left, so it
    // cannot be starved by later frames), buffering nothing more.
    b.send(&frame_start(size, 1 << 20)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(budget.available(), 0);
    // A's frame completes and its memory goes to B's.
    a.send(&vec![7u8; size - (1 << 20)]).await;
    settle(full - frame_bytes).await;
    b.send(&vec![7u8; size - (1 << 20)]).await;
    settle(full).await;
    // Small frames need no budget, and both connections are alive.
    let mut small = BytesMut::new();
    frame::encode(
        1,
        &Message::Status(Status {
            uploading: Some(true),
            downloading: None,
        }),
        &mut small,
    );
    a.send(&small).await;
    b.send(&small).await;
    let (pa, pb) = (
        a.victim.await.unwrap().unwrap(),
        b.victim.await.unwrap().unwrap(),
    );
    assert!(pa.outcome().is_none() && pb.outcome().is_none());
    assert_eq!(budget.available(), full);
}
