//! The gRPC API of a real `hyperd` process under bad input: malformed keys, unknown
//! cores, out-of-range indexes, oversized messages, clients that vanish mid-stream, and
//! the token on the optional TCP listener. The daemon answers each with the right code
//! and keeps serving.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;

use hyperd_proto::v1::cores_client::CoresClient;
use hyperd_proto::v1::daemon_client::DaemonClient;
use hyperd_proto::v1::peers_client::PeersClient;
use hyperd_proto::v1::{
    AppendRequest, AppendStreamRequest, CreateRequest, DialRequest, FollowRequest, GetRequest,
    InfoRequest, ReadRequest, StatusRequest,
};
use hyperd_testkit::SmallDisk;
use hyperd_tests::daemon::Daemon;
use tonic::Code;

const ZERO_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A new writable core's key.
async fn new_core(cores: &mut CoresClient<tonic::transport::Channel>) -> String {
    cores
        .create(CreateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key
}

/// The code and message of a call that must fail.
fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let s = r.unwrap_err();
    (s.code(), s.message().to_string())
}

async fn still_serving(daemon: &Daemon) {
    let mut client = DaemonClient::new(daemon.channel().await.unwrap());
    client.status(StatusRequest {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_codes() {
    let daemon = Daemon::start().unwrap();
    let channel = daemon.channel().await.unwrap();
    let mut cores = CoresClient::new(channel.clone());
    let key = new_core(&mut cores).await;
    cores
        .append(AppendRequest {
            key: key.clone(),
            blocks: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
        })
        .await
        .unwrap();

    for bad in ["", "xyz", "hyper://abc", &"g".repeat(64), &"a".repeat(65)] {
        let (c, m) = code(
            cores
                .info(InfoRequest {
                    key: bad.to_string(),
                })
                .await,
        );
        assert_eq!(c, Code::InvalidArgument, "{bad:?}: {m}");
    }
    let (c, m) = code(
        cores
            .info(InfoRequest {
                key: ZERO_KEY.into(),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound, "{m}");
    assert!(m.contains(ZERO_KEY), "{m}");

    let (c, m) = code(
        cores
            .get(GetRequest {
                key: key.clone(),
                index: 2,
                timeout_ms: 0,
            })
            .await,
    );
    assert_eq!(c, Code::OutOfRange, "{m}");
    let (c, m) = code(
        cores
            .get(GetRequest {
                key: key.clone(),
                index: u64::MAX,
                timeout_ms: 50,
            })
            .await,
    );
    // Past 2^53: no core can ever have it, waiting or not.
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("2^53"), "{m}");
    let (c, m) = code(
        cores
            .append(AppendRequest {
                key: key.clone(),
                blocks: vec![],
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");

    // Appending to a core this daemon only follows.
    let other = Daemon::start().unwrap();
    let mut other_cores = CoresClient::new(other.channel().await.unwrap());
    let foreign = new_core(&mut other_cores).await;
    cores
        .follow(FollowRequest {
            key: foreign.clone(),
            download_all: false,
            seeding: None,
        })
        .await
        .unwrap();
    let (c, m) = code(
        cores
            .append(AppendRequest {
                key: foreign,
                blocks: vec![Bytes::from_static(b"x")],
            })
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition, "{m}");

    // A 20 MiB request is refused by size, not by crashing.
    let (c, m) = code(
        cores
            .append(AppendRequest {
                key: key.clone(),
                blocks: vec![vec![7u8; 20 << 20].into()],
            })
            .await,
    );
    // tonic answers an over-limit message with OUT_OF_RANGE and names the limit.
    assert!(
        matches!(c, Code::OutOfRange | Code::ResourceExhausted) && m.contains("limit"),
        "{c:?} {m}"
    );
    // A block over the protocol's 8 MiB limit inside an acceptable message.
    let (c, m) = code(
        cores
            .append(AppendRequest {
                key: key.clone(),
                blocks: vec![vec![7u8; (8 << 20) + 1].into()],
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");

    // Peers: unusable addresses and nobody listening.
    let mut peers = PeersClient::new(channel.clone());
    for bad in ["", "nonsense", "127.0.0.1:0", "[::1"] {
        let (c, m) = code(
            peers
                .dial(DialRequest {
                    address: bad.into(),
                    once: true,
                    timeout_ms: 2000,
                })
                .await,
        );
        assert_eq!(c, Code::InvalidArgument, "{bad:?}: {m}");
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (c, m) = code(
        peers
            .dial(DialRequest {
                address: format!("127.0.0.1:{port}"),
                once: true,
                timeout_ms: 2000,
            })
            .await,
    );
    assert_eq!(c, Code::Unavailable, "{m}");
    // Dialing itself is refused.
    let (c, m) = code(
        peers
            .dial(DialRequest {
                address: daemon.listen.clone(),
                once: true,
                timeout_ms: 2000,
            })
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition, "{m}");

    still_serving(&daemon).await;
    let info = cores
        .info(InfoRequest { key: key.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.length, 2, "nothing invalid was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_stream_leave_the_daemon_serving() {
    let daemon = Daemon::start().unwrap();
    let mut cores = CoresClient::new(daemon.channel().await.unwrap());
    let key = new_core(&mut cores).await;

    // An append stream whose client goes away after some messages: what was sent
    // before stays appended and the core stays writable.
    {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut client = CoresClient::new(daemon.channel().await.unwrap());
        let call = tokio::spawn(async move {
            client
                .append_stream(tokio_stream_from(rx))
                .await
                .map(|_| ())
        });
        for i in 0..3u8 {
            tx.send(AppendStreamRequest {
                key: if i == 0 { key.clone() } else { String::new() },
                blocks: vec![vec![i; 1000].into()],
            })
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        call.abort();
        drop(tx);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = cores
        .info(InfoRequest { key: key.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.length, 3);
    cores
        .append(AppendRequest {
            key: key.clone(),
            blocks: vec![Bytes::from_static(b"after")],
        })
        .await
        .unwrap();

    // A live read abandoned by its client.
    {
        let mut client = CoresClient::new(daemon.channel().await.unwrap());
        let mut stream = client
            .read(ReadRequest {
                key: key.clone(),
                start: 0,
                end: None,
                live: true,
                wait: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stream.message().await.unwrap().unwrap().index, 0);
        drop(stream);
    }
    // An append stream that never names a core.
    let mut client = CoresClient::new(daemon.channel().await.unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(AppendStreamRequest {
        key: String::new(),
        blocks: vec![Bytes::from_static(b"x")],
    })
    .await
    .unwrap();
    drop(tx);
    let status = client
        .append_stream(tokio_stream_from(rx))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");

    still_serving(&daemon).await;
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_api_requires_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!("[rpc]\ntcp = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let _daemon = Daemon::start_in(&home, "127.0.0.1:0").unwrap();
    let token_file = home.join("rpc.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();

    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = DaemonClient::new(channel.clone());
    let status = client.status(StatusRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut request = tonic::Request::new(StatusRequest {});
    request
        .metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    let status = client.status(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut request = tonic::Request::new(StatusRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    let reply = client.status(request).await.unwrap().into_inner();
    assert_eq!(reply.api_version, "hyperd.v1");
}

#[test]
fn a_token_file_readable_by_others_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("config.toml"), "[rpc]\ntcp = \"127.0.0.1:0\"\n").unwrap();
    let token = home.join("rpc.token");
    std::fs::write(&token, "secret").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(hyperd_tests::daemon::bin("hyperd").unwrap())
        .arg("--home")
        .arg(&home)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("readable by other users"), "{err}");
    assert!(!home.join("hyperd.sock").exists(), "nothing was bound");
}

#[test]
fn a_non_loopback_tcp_api_is_refused_at_start() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[rpc]\ntcp = \"0.0.0.0:4000\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(hyperd_tests::daemon::bin("hyperd").unwrap())
        .arg("--home")
        .arg(home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_silent_peers_do_not_disturb_the_daemon() {
    use tokio::io::AsyncWriteExt;
    let daemon = Daemon::start().unwrap();
    // A connection that sends garbage instead of a handshake, and one that says nothing.
    let mut garbage = tokio::net::TcpStream::connect(&daemon.listen)
        .await
        .unwrap();
    garbage.write_all(&[0xff; 4096]).await.unwrap();
    let _silent = tokio::net::TcpStream::connect(&daemon.listen)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    still_serving(&daemon).await;

    // A real peer still connects and replicates.
    let other = Daemon::start().unwrap();
    let mut cores = CoresClient::new(daemon.channel().await.unwrap());
    let key = new_core(&mut cores).await;
    cores
        .append(AppendRequest {
            key: key.clone(),
            blocks: vec![Bytes::from_static(b"ok")],
        })
        .await
        .unwrap();
    let mut other_peers = PeersClient::new(other.channel().await.unwrap());
    other_peers
        .dial(DialRequest {
            address: daemon.listen.clone(),
            once: true,
            timeout_ms: 5000,
        })
        .await
        .unwrap();
    let mut other_cores = CoresClient::new(other.channel().await.unwrap());
    other_cores
        .follow(FollowRequest {
            key: key.clone(),
            download_all: false,
            seeding: None,
        })
        .await
        .unwrap();
    let got = other_cores
        .get(GetRequest {
            key,
            index: 0,
            timeout_ms: 10_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, &b"ok"[..]);
    let log = daemon.log();
    assert!(log.contains("incoming connection from"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_report_appends_and_peers() {
    use hyperd_proto::v1::{core_event, peer_event, WatchPeersRequest, WatchRequest};
    let a = Daemon::start().unwrap();
    let b = Daemon::start().unwrap();
    let mut cores = CoresClient::new(a.channel().await.unwrap());
    let key = new_core(&mut cores).await;
    let mut events = cores
        .watch(WatchRequest { key: key.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut peer_events = PeersClient::new(a.channel().await.unwrap())
        .watch(WatchPeersRequest {})
        .await
        .unwrap()
        .into_inner();
    cores
        .append(AppendRequest {
            key: key.clone(),
            blocks: vec![Bytes::from_static(b"x"), Bytes::from_static(b"yz")],
        })
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        event.event,
        Some(core_event::Event::Appended(core_event::Appended {
            length: 2,
            byte_length: 3
        }))
    );

    PeersClient::new(b.channel().await.unwrap())
        .dial(DialRequest {
            address: a.listen.clone(),
            once: true,
            timeout_ms: 5000,
        })
        .await
        .unwrap();
    let joined = tokio::time::timeout(Duration::from_secs(5), peer_events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let b_key = DaemonClient::new(b.channel().await.unwrap())
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .peer_key;
    match joined.event {
        Some(peer_event::Event::Joined(info)) => assert_eq!(info.remote_key, b_key),
        other => panic!("expected a join, got {other:?}"),
    }
    // B replicates the core as soon as it follows it: A sees the peer on the core.
    CoresClient::new(b.channel().await.unwrap())
        .follow(FollowRequest {
            key: key.clone(),
            download_all: true,
            seeding: None,
        })
        .await
        .unwrap();
    let added = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.message().await.unwrap().unwrap();
            if let Some(core_event::Event::PeerAdded(p)) = event.event {
                return p;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(added.remote_key, b_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_an_error_not_a_crash_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(dir.path().join("disk"), "3m") else {
        eprintln!("SKIPPED: cannot mount a small tmpfs here (needs root) to fill a disk");
        return;
    };
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!("storage = \"{}\"\n", disk.path.join("cores").display()),
    )
    .unwrap();
    let mut daemon = Daemon::start_in(&home, "127.0.0.1:0").unwrap();
    let mut cores = CoresClient::new(daemon.channel().await.unwrap());
    let key = new_core(&mut cores).await;

    let mut acknowledged = 0u64;
    let failure = loop {
        let block = vec![(acknowledged % 251) as u8; 64 << 10];
        match cores
            .append(AppendRequest {
                key: key.clone(),
                blocks: vec![block.into()],
            })
            .await
        {
            Ok(reply) => {
                acknowledged += 1;
                assert_eq!(reply.into_inner().length, acknowledged);
                assert!(acknowledged < 1000, "a 3 MiB disk never filled up");
            }
            Err(status) => break status,
        }
    };
    assert_eq!(failure.code(), Code::ResourceExhausted, "{failure}");
    assert!(acknowledged > 10, "only {acknowledged} blocks fit");

    // Following a core needs room for its files: also RESOURCE_EXHAUSTED, and the failed
    // follows leave no directory behind.
    let mut follow_failures = 0;
    for i in 0..20u8 {
        let result = cores
            .follow(FollowRequest {
                key: hypercore::crypto::to_hex(&[i + 1; 32]),
                download_all: false,
                seeding: None,
            })
            .await;
        if let Err(status) = result {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
            follow_failures += 1;
        }
    }
    assert!(
        follow_failures > 0,
        "every follow found room on a full disk"
    );

    // Still serving, and the core is consistent: what was acknowledged reads back.
    still_serving(&daemon).await;
    let info = cores
        .info(InfoRequest { key: key.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.length, acknowledged);
    let last = cores
        .get(GetRequest {
            key: key.clone(),
            index: acknowledged - 1,
            timeout_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.data, vec![((acknowledged - 1) % 251) as u8; 64 << 10]);

    // After a crash and a restart, everything acknowledged is still there and valid.
    drop(cores);
    daemon.signal_and_wait(9).unwrap();
    daemon.restart().unwrap();
    let mut cores = CoresClient::new(daemon.channel().await.unwrap());
    let info = cores
        .info(InfoRequest { key: key.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.length, acknowledged, "{}", daemon.log());
    let audit = cores
        .audit(hyperd_proto::v1::AuditRequest { key: key.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((audit.valid, audit.invalid), (acknowledged, 0));
    drop(cores);
    drop(daemon);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_and_dialed_connections_have_their_own_budgets() {
    use hyperd_proto::v1::DisconnectRequest;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        "max_peers = 1\nmax_outbound_peers = 1\n",
    )
    .unwrap();
    let a = Daemon::start_in(&home, "127.0.0.1:0").unwrap();
    let b = Daemon::start().unwrap();
    let c = Daemon::start().unwrap();
    let d = Daemon::start().unwrap();
    let dial = |address: String| DialRequest {
        address,
        once: true,
        timeout_ms: 3000,
    };
    let mut b_peers = PeersClient::new(b.channel().await.unwrap());
    let mut c_peers = PeersClient::new(c.channel().await.unwrap());
    b_peers.dial(dial(a.listen.clone())).await.unwrap();

    // A's incoming budget is full (B's connection is new, so it is not made room for):
    // C's connection is closed during the handshake...
    let (c_code, m) = code(c_peers.dial(dial(a.listen.clone())).await);
    assert_eq!(c_code, Code::Unavailable, "{m}");
    assert!(
        a.log().contains("refusing the connection from"),
        "{}",
        a.log()
    );
    // ... but A still dials out, within its own budget, and no further.
    let mut a_peers = PeersClient::new(a.channel().await.unwrap());
    a_peers.dial(dial(c.listen.clone())).await.unwrap();
    let (a_code, m) = code(a_peers.dial(dial(d.listen.clone())).await);
    assert_eq!(a_code, Code::ResourceExhausted, "{m}");
    assert!(m.contains("max_outbound_peers"), "{m}");

    // B leaves; D gets in.
    b_peers
        .disconnect(DisconnectRequest {
            peer: a.listen.clone(),
        })
        .await
        .unwrap();
    let mut d_peers = PeersClient::new(d.channel().await.unwrap());
    let mut joined = false;
    for _ in 0..50 {
        if d_peers.dial(dial(a.listen.clone())).await.is_ok() {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(joined, "the slot B left was never freed\n{}", a.log());
    still_serving(&a).await;
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_clients_and_peers_leaks_no_file_descriptors() {
    use hyperd_proto::v1::{DisconnectRequest, ListPeersRequest};
    let a = Daemon::start().unwrap();
    let b = Daemon::start().unwrap();
    let pid = a.pid().unwrap();
    let mut cores = CoresClient::new(a.channel().await.unwrap());
    let key = new_core(&mut cores).await;
    let baseline = open_fds(pid);

    let mut b_peers = PeersClient::new(b.channel().await.unwrap());
    for round in 0..30 {
        // API clients that connect, call and go away; some abandon a stream.
        for _ in 0..5 {
            let channel = a.channel().await.unwrap();
            let mut client = CoresClient::new(channel);
            client.info(InfoRequest { key: key.clone() }).await.unwrap();
            if round % 3 == 0 {
                let _stream = client
                    .read(ReadRequest {
                        key: key.clone(),
                        start: 0,
                        end: None,
                        live: true,
                        wait: true,
                    })
                    .await
                    .unwrap();
            }
        }
        // A peer that connects and leaves.
        b_peers
            .dial(DialRequest {
                address: a.listen.clone(),
                once: true,
                timeout_ms: 5000,
            })
            .await
            .unwrap();
        b_peers
            .disconnect(DisconnectRequest {
                peer: a.listen.clone(),
            })
            .await
            .unwrap();
    }
    // Let the last connections wind down, then count again.
    let mut a_peers = PeersClient::new(a.channel().await.unwrap());
    let mut now = usize::MAX;
    for _ in 0..50 {
        let peers = a_peers
            .list(ListPeersRequest {})
            .await
            .unwrap()
            .into_inner()
            .peers;
        now = open_fds(pid);
        if peers.is_empty() && now <= baseline + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        now <= baseline + 2,
        "{baseline} descriptors before, {now} after 30 rounds of churn"
    );
}
