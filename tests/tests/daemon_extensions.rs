//! App messages (`Extensions.Open`): protocol extension messages on a core's channel,
//! between two `hyperd`s and between `hyperd` and a real JS hypercore 9 peer that
//! registered the same extension (`tests/interop/ext-peer.js`), both ways, to one peer
//! and to all; and the errors: an unknown core, a name held by another session, a
//! stream that does not start with `open`, a malformed peer, an oversized payload.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hyperd_proto::v1 as pb;
use hyperd_proto::v1::extensions_client::ExtensionsClient;
use hyperd_tests::daemon::Daemon;
use hyperd_tests::js_peer::JsPeer;
use pb::extension_event::Event;
use pb::extension_request::Request;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

/// An open extension session on a daemon.
struct Session {
    requests: mpsc::Sender<pb::ExtensionRequest>,
    events: Streaming<pb::ExtensionEvent>,
}

impl Session {
    async fn open(
        daemon: &Daemon,
        key: &str,
        name: &str,
    ) -> Result<(Session, Vec<String>), tonic::Status> {
        let (requests, rx) = mpsc::channel(16);
        let open = Request::Open(pb::ExtensionOpen {
            key: key.into(),
            name: name.into(),
        });
        requests
            .send(pb::ExtensionRequest {
                request: Some(open),
            })
            .await
            .unwrap();
        let mut client = ExtensionsClient::new(daemon.channel().await.unwrap());
        let mut events = client.open(ReceiverStream::new(rx)).await?.into_inner();
        let first = events.message().await?.unwrap();
        let Some(Event::Opened(opened)) = first.event else {
            panic!("first event {first:?}")
        };
        Ok((Session { requests, events }, opened.peers))
    }

    async fn send(&mut self, peer: &str, text: &str) -> u32 {
        let send = Request::Send(pb::ExtensionSend {
            peer: peer.into(),
            payload: text.as_bytes().to_vec().into(),
        });
        self.requests
            .send(pb::ExtensionRequest {
                request: Some(send),
            })
            .await
            .unwrap();
        match self.events.message().await.unwrap().unwrap().event {
            Some(Event::Sent(sent)) => sent.peers,
            other => panic!("expected sent, got {other:?}"),
        }
    }

    /// The next message received within `limit`.
    async fn received(&mut self, limit: Duration) -> Option<(String, String)> {
        let event = tokio::time::timeout(limit, self.events.message())
            .await
            .ok()?;
        match event.unwrap().unwrap().event {
            Some(Event::Received(r)) => {
                Some((r.peer, String::from_utf8(r.payload.to_vec()).unwrap()))
            }
            other => panic!("expected received, got {other:?}"),
        }
    }
}

/// Sends `text` from `from` (to `peer`, or all) until `to` receives it: a peer learns of
/// the other side's extension from its channel options, which may still be on the way.
async fn deliver(from: &mut Session, peer: &str, to: &mut Session, text: &str) -> String {
    for _ in 0..50 {
        assert_eq!(from.send(peer, text).await, 1);
        if let Some((sender, got)) = to.received(Duration::from_millis(200)).await {
            assert_eq!(got, text);
            return sender;
        }
    }
    panic!("{text:?} never arrived");
}

fn peer_key(daemon: &Daemon) -> String {
    daemon.ctl_json(&["status"]).unwrap()["peerKey"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_exchange_app_messages_on_a_core() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::start_in(&tmp.path().join("a"), "127.0.0.1:0").unwrap();
    let b = Daemon::start_in(&tmp.path().join("b"), "127.0.0.1:0").unwrap();
    let key = a.ctl_json(&["core", "create"]).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    a.ctl_ok(&["core", "append", &key, "block"]).unwrap();
    b.ctl_ok(&["core", "follow", &key]).unwrap();
    b.ctl_ok(&["peer", "connect", &a.listen]).unwrap();
    b.ctl_ok(&["core", "get", &key, "0", "--timeout-ms", "10000"])
        .unwrap();
    let (a_key, b_key) = (peer_key(&a), peer_key(&b));

    let (mut on_a, peers) = Session::open(&a, &key, "chat").await.unwrap();
    assert_eq!(peers, vec![b_key.clone()]);
    let (mut on_b, _) = Session::open(&b, &key, "chat").await.unwrap();

    // To all, and to one peer by its key: each side sees who sent it.
    assert_eq!(
        deliver(&mut on_a, "", &mut on_b, "hello from a").await,
        a_key
    );
    assert_eq!(
        deliver(&mut on_b, &a_key, &mut on_a, "hello from b").await,
        b_key
    );
    // A peer that is not connected gets nothing.
    assert_eq!(on_a.send(&"ab".repeat(32), "nobody").await, 0);

    // One session per extension and core; another name is another session.
    let taken = Session::open(&a, &key, "chat").await.err().unwrap();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert!(Session::open(&a, &key, "other").await.is_ok());
    // Closed, the name is free again.
    drop(on_a);
    let (mut again, _) = eventually_open(&a, &key, "chat").await;
    assert_eq!(
        deliver(&mut on_b, "", &mut again, "after a reopen").await,
        b_key
    );

    // Bad requests.
    let unknown = Session::open(&a, &"cd".repeat(32), "chat")
        .await
        .err()
        .unwrap();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let empty = Session::open(&a, &key, "").await.err().unwrap();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    let mut client = ExtensionsClient::new(a.channel().await.unwrap());
    let send_first = pb::ExtensionRequest {
        request: Some(Request::Send(pb::ExtensionSend {
            peer: String::new(),
            payload: b"x".to_vec().into(),
        })),
    };
    let refused = client
        .open(tokio_stream::iter(vec![send_first]))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    for (peer, size) in [("not a key", 1), ("", (1 << 20) + 1)] {
        let send = Request::Send(pb::ExtensionSend {
            peer: peer.into(),
            payload: vec![0; size].into(),
        });
        again
            .requests
            .send(pb::ExtensionRequest {
                request: Some(send),
            })
            .await
            .unwrap();
        let status = loop {
            match again.events.message().await {
                Err(status) => break status,
                Ok(Some(pb::ExtensionEvent {
                    event: Some(Event::Received(_)),
                })) => continue,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(if size == 1 {
                "not a remote key"
            } else {
                "payload"
            }),
            "{status:?}"
        );
        again = eventually_open(&a, &key, "chat").await.0;
    }
    // The daemon is fine after all that.
    a.ctl_ok(&["core", "info", &key]).unwrap();
}

/// The session `name` on `key`, opened as soon as the last one's end reached the daemon.
async fn eventually_open(daemon: &Daemon, key: &str, name: &str) -> (Session, Vec<String>) {
    for _ in 0..100 {
        match Session::open(daemon, key, name).await {
            Ok(opened) => return opened,
            Err(status) if status.code() == Code::AlreadyExists => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    panic!("{name} stayed taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_peer_and_hyperd_exchange_app_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(&tmp.path().join("a"), "127.0.0.1:0").unwrap();
    let key = daemon.ctl_json(&["core", "create"]).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    daemon.ctl_ok(&["core", "append", &key, "block"]).unwrap();
    let (mut session, _) = Session::open(&daemon, &key, "chat").await.unwrap();
    let (mut js, ready) = JsPeer::spawn(
        "ext-peer.js",
        &["--key", &key, "--connect", &daemon.listen, "--name", "chat"],
    )
    .await
    .unwrap();
    assert_eq!(ready["event"], "ready", "{ready}");
    let js_key = ready["noisePublicKey"].as_str().unwrap().to_string();
    let ours = peer_key(&daemon);

    // JS → hyperd, to all; the daemon learns of JS's extension from its options, so
    // JS sends until it arrives.
    let mut got = None;
    for _ in 0..50 {
        js.call(json!({ "broadcast": "from js" })).await.unwrap();
        if let Some(message) = session.received(Duration::from_millis(200)).await {
            got = Some(message);
            break;
        }
    }
    assert_eq!(got, Some((js_key.clone(), "from js".to_string())));

    // hyperd → JS, to that one peer.
    assert_eq!(session.send(&js_key, "from hyperd").await, 1);
    let message = js.until("message").await.unwrap();
    assert_eq!(message["data"], "from hyperd", "{message}");
    assert_eq!(message["peer"], ours.as_str(), "{message}");
    js.finish().await.unwrap();
}
