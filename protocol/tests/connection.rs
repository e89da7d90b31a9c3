//! Connection behaviour: authentication hook, channels for unknown feeds, capabilities,
//! stream extensions, unknown message types, keep-alives and the idle timeout, and how
//! connections end.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hypercore::KeyPair;
use hypercore_protocol::message::{Message, Status};
use hypercore_protocol::{
    ChannelEvent, Error, Event, NoiseKeyPair, Outcome, Protocol, ProtocolOptions,
};

fn opts(initiator: bool) -> ProtocolOptions {
    ProtocolOptions {
        initiator,
        ..Default::default()
    }
}

async fn pair(
    a: ProtocolOptions,
    b: ProtocolOptions,
) -> (
    (Protocol, hypercore_protocol::Events),
    (Protocol, hypercore_protocol::Events),
) {
    let (x, y) = tokio::io::duplex(1 << 16);
    let (pa, pb) = tokio::join!(Protocol::connect(x, a), Protocol::connect(y, b));
    (pa.unwrap(), pb.unwrap())
}

#[tokio::test]
async fn static_keys_are_exposed_and_the_hook_can_refuse() {
    let (ka, kb) = (
        NoiseKeyPair::from_seed(&[1; 32]),
        NoiseKeyPair::from_seed(&[2; 32]),
    );
    let ((a, _), (b, _)) = pair(
        ProtocolOptions {
            keypair: Some(ka.clone()),
            ..opts(true)
        },
        ProtocolOptions {
            keypair: Some(kb.clone()),
            ..opts(false)
        },
    )
    .await;
    assert_eq!(a.remote_key(), kb.public);
    assert_eq!(b.remote_key(), ka.public);
    assert_eq!(a.handshake_hash(), b.handshake_hash());

    // Only peers on an allow list get in.
    let allowed = ka.public;
    let hook: hypercore_protocol::Authenticate = Arc::new(move |k| *k == allowed);
    let (x, y) = tokio::io::duplex(1 << 16);
    let stranger = NoiseKeyPair::from_seed(&[3; 32]);
    let (r1, r2) = tokio::join!(
        Protocol::connect(
            x,
            ProtocolOptions {
                keypair: Some(stranger.clone()),
                ..opts(true)
            }
        ),
        Protocol::connect(
            y,
            ProtocolOptions {
                authenticate: Some(hook),
                ..opts(false)
            }
        ),
    );
    match r2 {
        Err(Error::Refused(k)) => assert_eq!(k, stranger.public),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The refused side sees the connection end (the refuser closes it).
    if let Ok((p, _)) = r1 {
        tokio::time::timeout(Duration::from_secs(5), p.closed())
            .await
            .unwrap();
        assert!(matches!(
            p.open(KeyPair::generate().public),
            Err(Error::Closed(_))
        ));
    }
}

#[tokio::test]
async fn a_channel_for_an_unknown_feed_is_reported_and_can_be_refused() {
    let ((a, _), (b, mut events)) = pair(opts(true), opts(false)).await;
    let key = KeyPair::generate().public;
    let mut ch = a.open(key).unwrap();
    // JS emits `discovery-key` and answers nothing; the application decides.
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, Event::DiscoveryKey(key.discovery_key()));
    b.close(key.discovery_key());
    // The opener sees its channel closed.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), ch.recv())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_refusal_spares_a_channel_opened_here_since() {
    let ((a, _), (b, mut events)) = pair(opts(true), opts(false)).await;
    // The remote opens a feed; we look it up, do not find it, and create it before the
    // refusal is sent (a store does this when it loads the feed meanwhile).
    let key = KeyPair::generate().public;
    let mut ca = a.open(key).unwrap();
    assert_eq!(
        events.recv().await,
        Some(Event::DiscoveryKey(key.discovery_key()))
    );
    let mut cb = b.open(key).unwrap();
    assert!(!b.refuse(key.discovery_key()), "the channel is ours now");
    // The channel stays open at both ends and carries messages.
    assert_eq!(cb.recv().await, Some(ChannelEvent::Opened));
    assert_eq!(ca.recv().await, Some(ChannelEvent::Opened));
    let status = Message::Status(Status {
        uploading: Some(true),
        downloading: Some(false),
    });
    cb.sender().send(status.clone()).unwrap();
    assert_eq!(ca.recv().await, Some(ChannelEvent::Message(status.clone())));
    ca.sender().send(status.clone()).unwrap();
    assert_eq!(cb.recv().await, Some(ChannelEvent::Message(status)));
    assert_eq!(b.channel_count(), 1);

    // A feed we did not open is refused: the opener's channel closes.
    let other = KeyPair::generate().public;
    let mut co = a.open(other).unwrap();
    assert_eq!(
        events.recv().await,
        Some(Event::DiscoveryKey(other.discovery_key()))
    );
    assert!(b.refuse(other.discovery_key()));
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), co.recv())
            .await
            .unwrap(),
        None
    );
    // Only the first feed's channel is left.
    assert_eq!(b.channel_count(), 1);
}

#[tokio::test]
async fn opening_later_pairs_the_channels() {
    let ((a, _), (b, mut events)) = pair(opts(true), opts(false)).await;
    let key = KeyPair::generate().public;
    let mut ca = a.open(key).unwrap();
    assert!(matches!(events.recv().await, Some(Event::DiscoveryKey(_))));
    let mut cb = b.open(key).unwrap();
    assert_eq!(ca.recv().await, Some(ChannelEvent::Opened));
    assert_eq!(cb.recv().await, Some(ChannelEvent::Opened));
    let status = Message::Status(Status {
        uploading: Some(true),
        downloading: Some(false),
    });
    cb.sender().send(status.clone()).unwrap();
    assert_eq!(ca.recv().await, Some(ChannelEvent::Message(status)));
    assert!(matches!(a.open(key), Err(Error::AlreadyOpen(_))));
}

#[tokio::test]
async fn unknown_message_types_are_ignored() {
    let ((a, _), (b, _)) = pair(opts(true), opts(false)).await;
    let key = KeyPair::generate().public;
    let (mut ca, mut cb) = (a.open(key).unwrap(), b.open(key).unwrap());
    assert_eq!(ca.recv().await, Some(ChannelEvent::Opened));
    assert_eq!(cb.recv().await, Some(ChannelEvent::Opened));
    for type_id in 11..=14 {
        ca.sender()
            .send(Message::Unknown {
                type_id,
                body: Bytes::from_static(b"whatever"),
            })
            .unwrap();
    }
    let status = Message::Status(Status {
        uploading: Some(false),
        downloading: Some(true),
    });
    ca.sender().send(status.clone()).unwrap();
    // The unknown ones reach the channel owner as such (to ignore); the connection lives on.
    let mut got = Vec::new();
    while got.last() != Some(&ChannelEvent::Message(status.clone())) {
        got.push(cb.recv().await.unwrap());
    }
    assert_eq!(got.len(), 5);
    assert!(a.outcome().is_none() && b.outcome().is_none());
}

#[tokio::test]
async fn stream_extensions_map_ids_through_the_senders_names() {
    let ((a, _), (b, _)) = pair(opts(true), opts(false)).await;
    let ea = a.register_extension("zebra").unwrap();
    let _ea2 = a.register_extension("alpha").unwrap();
    let mut eb = b.register_extension("zebra").unwrap();
    assert!(a.register_extension("zebra").is_err());
    ea.send(Bytes::from_static(b"stripes")).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), eb.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], b"stripes");
}

#[tokio::test]
async fn keep_alives_hold_an_idle_connection_open() {
    let t = Duration::from_millis(300);
    let ((a, _), (b, _)) = pair(
        ProtocolOptions {
            timeout: Some(t),
            live: true,
            ..opts(true)
        },
        ProtocolOptions {
            timeout: Some(t),
            live: true,
            ..opts(false)
        },
    )
    .await;
    tokio::time::sleep(t * 4).await;
    assert!(
        a.outcome().is_none() && b.outcome().is_none(),
        "pings every {:?} keep it alive",
        t / 2
    );
}

#[tokio::test]
async fn a_silent_peer_times_out() {
    // The other end completes the handshake and then never sends a byte (no keep-alives).
    let ((a, _), (_b, _)) = pair(
        ProtocolOptions {
            timeout: Some(Duration::from_millis(200)),
            live: true,
            ..opts(true)
        },
        ProtocolOptions {
            timeout: None,
            live: true,
            ..opts(false)
        },
    )
    .await;
    match tokio::time::timeout(Duration::from_secs(5), a.closed())
        .await
        .unwrap()
    {
        Outcome::Failed(e) => assert!(matches!(*e, Error::Timeout(_)), "{e}"),
        Outcome::Finished => panic!("expected a timeout"),
    }
}

#[tokio::test]
async fn a_wrong_capability_destroys_the_connection() {
    // Both sides open the same discovery key, but one knows a different feed key: its
    // capability cannot verify.
    let ((a, _), (b, _)) = pair(opts(true), opts(false)).await;
    let key = KeyPair::generate().public;
    let _ca = a.open(key).unwrap();
    // A forged Open for the same discovery key with a random capability.
    let forged = hypercore_protocol::message::Open {
        discovery_key: key.discovery_key().0.to_vec(),
        capability: Some(vec![7; 32]),
    };
    let key2 = KeyPair::generate().public;
    let cb = b.open(key2).unwrap();
    cb.sender().send(Message::Open(forged)).unwrap();
    match tokio::time::timeout(Duration::from_secs(5), a.closed())
        .await
        .unwrap()
    {
        Outcome::Failed(e) => assert!(matches!(*e, Error::BadCapability(_)), "{e}"),
        Outcome::Finished => panic!("expected a capability failure"),
    }
}

#[tokio::test]
async fn non_live_connections_end_with_their_last_channel() {
    let ((a, _), (b, _)) = pair(opts(true), opts(false)).await;
    let key = KeyPair::generate().public;
    let (mut ca, mut cb) = (a.open(key).unwrap(), b.open(key).unwrap());
    assert_eq!(ca.recv().await, Some(ChannelEvent::Opened));
    assert_eq!(cb.recv().await, Some(ChannelEvent::Opened));
    ca.sender().close();
    assert_eq!(cb.recv().await, None);
    for p in [&a, &b] {
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(5), p.closed())
                .await
                .unwrap(),
            Outcome::Finished
        ));
    }
    let (sent, received) = a.byte_counts();
    assert!(sent > 0 && received > 0);
}
