//! Reproduces `tests/data/wire.json`, a session recorded between two JS peers, byte for
//! byte: the handshake messages, keys and capabilities, every frame's plaintext and its
//! encryption; then the same session end to end through two `Protocol`s.
#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hypercore::crypto::{from_hex, to_hex};
use hypercore_protocol::cipher::XSalsa20;
use hypercore_protocol::frame;
use hypercore_protocol::message::{
    Data, DataNode, Have, Message, Open, Options, Request, Status, Want,
};
use hypercore_protocol::noise::Handshake;
use hypercore_protocol::{ChannelEvent, NoiseKeyPair, Protocol, ProtocolOptions};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/wire.json")).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    from_hex(v.as_str().unwrap()).unwrap()
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    hex(v).try_into().unwrap()
}

fn feed_key(v: &Value) -> hypercore::PublicKey {
    v["feed"]["publicKey"].as_str().unwrap().parse().unwrap()
}

fn keypair(v: &Value, role: &str) -> NoiseKeyPair {
    NoiseKeyPair::from_seed(&arr(&v["staticKeys"][role]["seed"]))
}

fn nonce(v: &Value, role: &str) -> [u8; 24] {
    // The payload is `0a 18` + the 24-byte nonce.
    hex(&v["handshakePayloads"][role])[2..].try_into().unwrap()
}

/// The messages of the recorded session after the handshake, in transcript order, by label.
fn session_messages(v: &Value) -> Vec<(&'static str, Message)> {
    let dk = hex(&v["feed"]["discoveryKey"]);
    let data = &v["decodedByResponder"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["type"] == "data")
        .unwrap()["message"];
    let nodes = data["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| DataNode {
            index: n["index"].as_u64().unwrap(),
            hash: hex(&n["hash"]),
            size: n["size"].as_u64().unwrap(),
        })
        .collect();
    vec![
        (
            "initiator",
            Message::Open(Open {
                discovery_key: dk.clone(),
                capability: Some(hex(&v["capability"]["sentByInitiator"])),
            }),
        ),
        (
            "responder",
            Message::Open(Open {
                discovery_key: dk,
                capability: Some(hex(&v["capability"]["sentByResponder"])),
            }),
        ),
        (
            "responder",
            Message::Want(Want {
                start: 0,
                length: Some(1_048_576),
            }),
        ),
        (
            "initiator",
            Message::Status(Status {
                uploading: Some(true),
                downloading: Some(false),
            }),
        ),
        (
            "initiator",
            Message::Have(Have {
                start: 6,
                length: None,
                bitfield: None,
                ack: None,
            }),
        ),
        (
            "initiator",
            Message::Have(Have {
                start: 0,
                length: Some(1_048_576),
                bitfield: Some(Bytes::from_static(&[0x02, 0xfe])),
                ack: None,
            }),
        ),
        (
            "responder",
            Message::Request(Request {
                index: 3,
                bytes: Some(0),
                hash: Some(false),
                nodes: Some(0),
            }),
        ),
        (
            "initiator",
            Message::Data(Data {
                index: 3,
                value: Some(Bytes::from_static(b"is")),
                nodes,
                signature: Some(Bytes::from(hex(&data["signature"]))),
            }),
        ),
        (
            "responder",
            Message::Options(Options {
                extensions: vec!["example-ext".into()],
                ack: Some(true),
            }),
        ),
        (
            "responder",
            Message::Extension {
                id: 0,
                payload: Bytes::from_static(b"hi"),
            },
        ),
        (
            "responder",
            Message::Have(Have {
                start: 3,
                length: Some(1),
                bitfield: None,
                ack: Some(true),
            }),
        ),
        (
            "initiator",
            Message::Unknown {
                type_id: 255,
                body: Bytes::new(),
            },
        ), // stands for the ping
        ("responder", Message::Close(Default::default())),
        ("initiator", Message::Close(Default::default())),
    ]
}

#[test]
fn handshake_keys_and_every_frame_match() {
    let v = vectors();
    let transcript = v["transcript"].as_array().unwrap();
    let (ik, rk) = (keypair(&v, "initiator"), keypair(&v, "responder"));
    assert_eq!(
        ik.public.to_hex(),
        v["staticKeys"]["initiator"]["publicKey"].as_str().unwrap()
    );
    assert_eq!(
        rk.public.to_hex(),
        v["staticKeys"]["responder"]["publicKey"].as_str().unwrap()
    );
    let eph = |role: &str| arr::<32>(&v["ephemeralKeys"][role]["secretKey"]);
    let mut i =
        Handshake::with_fixed(true, &ik, nonce(&v, "initiator"), Some(eph("initiator"))).unwrap();
    let mut r =
        Handshake::with_fixed(false, &rk, nonce(&v, "responder"), Some(eph("responder"))).unwrap();

    let m1 = i.write().unwrap();
    assert_eq!(
        to_hex(&m1),
        transcript[0]["wire"].as_str().unwrap(),
        "noise msg 1"
    );
    r.read(&m1[1..]).unwrap();
    let m2 = r.write().unwrap();
    assert_eq!(
        to_hex(&m2),
        transcript[1]["wire"].as_str().unwrap(),
        "noise msg 2"
    );
    i.read(&m2[1..]).unwrap();
    let m3 = i.write().unwrap();
    assert_eq!(
        to_hex(&m3),
        transcript[2]["wire"].as_str().unwrap(),
        "noise msg 3"
    );
    r.read(&m3[1..]).unwrap();
    let (i, r) = (i.finish().unwrap(), r.finish().unwrap());
    assert_eq!(
        to_hex(&i.tx_key),
        v["split"]["initiatorTx"].as_str().unwrap()
    );
    assert_eq!(
        to_hex(&i.rx_key),
        v["split"]["initiatorRx"].as_str().unwrap()
    );
    assert_eq!((r.tx_key, r.rx_key), (i.rx_key, i.tx_key));
    assert_eq!(
        to_hex(&i.handshake_hash),
        v["handshakeHash"].as_str().unwrap()
    );
    assert_eq!(
        i.remote_key.to_hex(),
        v["remoteStaticSeenByInitiator"].as_str().unwrap()
    );
    assert_eq!(
        r.remote_key.to_hex(),
        v["remoteStaticSeenByResponder"].as_str().unwrap()
    );
    let key = feed_key(&v);
    let cap = |e: &hypercore_protocol::noise::Established| {
        to_hex(&hypercore::crypto::capability(&key, &e.tx_key, &e.rx_key))
    };
    assert_eq!(
        cap(&i),
        v["capability"]["sentByInitiator"].as_str().unwrap()
    );
    assert_eq!(
        cap(&r),
        v["capability"]["sentByResponder"].as_str().unwrap()
    );

    let mut ciphers = [
        XSalsa20::new(&i.tx_key, &i.tx_nonce),
        XSalsa20::new(&r.tx_key, &r.tx_nonce),
    ];
    for ((role, message), entry) in session_messages(&v).into_iter().zip(&transcript[3..]) {
        assert_eq!(entry["from"].as_str().unwrap(), role);
        let mut plain = BytesMut::new();
        if let Message::Unknown { .. } = message {
            plain.extend_from_slice(&[0]);
        } else {
            frame::encode(1, &message, &mut plain);
        }
        let label = entry["label"].as_str().unwrap();
        assert_eq!(
            to_hex(&plain),
            entry["plain"].as_str().unwrap(),
            "plaintext of {label}"
        );
        ciphers[usize::from(role == "responder")].apply(&mut plain);
        assert_eq!(
            to_hex(&plain),
            entry["wire"].as_str().unwrap(),
            "ciphertext of {label}"
        );
    }
}

/// A duplex end that records every byte written through it.
struct Tap<T> {
    inner: T,
    written: Arc<Mutex<Vec<u8>>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &res {
            self.written.lock().unwrap().extend_from_slice(&data[..*n]);
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn the_recorded_session_end_to_end() {
    let v = vectors();
    let (a, b) = tokio::io::duplex(1 << 20);
    let (wa, wb) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let opts = |role: &str, initiator| ProtocolOptions {
        initiator,
        keypair: Some(keypair(&v, role)),
        fixed_randomness: Some((nonce(&v, role), arr(&v["ephemeralKeys"][role]["secretKey"]))),
        timeout: None,
        ..Default::default()
    };
    let (i, r) = tokio::join!(
        Protocol::connect(
            Tap {
                inner: a,
                written: wa.clone()
            },
            opts("initiator", true)
        ),
        Protocol::connect(
            Tap {
                inner: b,
                written: wb.clone()
            },
            opts("responder", false)
        ),
    );
    let ((i, _ie), (r, _re)) = (i.unwrap(), r.unwrap());
    let key = feed_key(&v);
    let mut ic = i.open(key).unwrap();
    let mut rc = r.open(key).unwrap();
    assert_eq!(ic.recv().await, Some(ChannelEvent::Opened));
    assert_eq!(rc.recv().await, Some(ChannelEvent::Opened));
    let mut got = (Vec::new(), Vec::new());
    for (role, message) in session_messages(&v).into_iter().skip(2) {
        let (proto, sender, receiver, log) = if role == "initiator" {
            (&i, &ic, &mut rc, &mut got.1)
        } else {
            (&r, &rc, &mut ic, &mut got.0)
        };
        match message {
            Message::Unknown { .. } => proto.ping(),
            Message::Close(_) if role == "initiator" => {
                // The initiator's close is its echo of the responder's.
                assert_eq!(receiver.recv().await, None, "the responder closed");
            }
            Message::Close(_) => sender.sender().close(),
            message => {
                sender.sender().send(message.clone()).unwrap();
                let Some(ChannelEvent::Message(m)) = receiver.recv().await else {
                    panic!("no message")
                };
                assert_eq!(m, message);
                log.push(m);
            }
        }
    }
    assert_eq!(ic.recv().await, None);
    i.closed().await;
    r.closed().await;
    // Each direction carried exactly the recorded bytes.
    let transcript = v["transcript"].as_array().unwrap();
    let expected = |from: &str| -> String {
        to_hex(
            &transcript
                .iter()
                .filter(|t| t["from"] == from)
                .flat_map(|t| hex(&t["wire"]))
                .collect::<Vec<u8>>(),
        )
    };
    assert_eq!(to_hex(&wa.lock().unwrap()), expected("initiator"));
    assert_eq!(to_hex(&wb.lock().unwrap()), expected("responder"));
    assert_eq!(got.0.len() + got.1.len(), 9);
}
