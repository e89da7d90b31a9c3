//! Many cores in a daemon with few file descriptors: created, then restarted under a hard
//! limit of 256 open files, every core is still reachable through the API and by a peer,
//! new cores can be created, and the daemon never holds more descriptors than its budget.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use hyperd_proto::v1::cores_client::CoresClient;
use hyperd_proto::v1::daemon_client::DaemonClient;
use hyperd_proto::v1::peers_client::PeersClient;
use hyperd_proto::v1::{
    AppendRequest, CreateRequest, DialRequest, FollowRequest, GetRequest, InfoRequest,
    StatusRequest,
};
use hyperd_tests::daemon::Daemon;

const CORES: usize = 300;
const NOFILE: u64 = 256;
/// Cores a second daemon follows at once: more than the seeder can keep open (16).
const FOLLOWED: usize = 40;
/// 64 KiB blocks after the first in each followed core.
const EXTRA_BLOCKS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_cores_under_a_limit_of_256_files() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mut daemon = Daemon::start_limited(&home, "127.0.0.1:0", Some(NOFILE)).unwrap();
    let mut cores = CoresClient::new(daemon.channel().await.unwrap());
    let mut keys = Vec::new();
    for i in 0..CORES {
        let key = cores
            .create(CreateRequest {
                name: format!("core-{i}"),
                force: false,
                seeding: None,
            })
            .await
            .unwrap_or_else(|e| panic!("creating core {i}: {e}\n{}", daemon.log()))
            .into_inner()
            .key;
        cores
            .append(AppendRequest {
                key: key.clone(),
                blocks: vec![Bytes::from(format!("core {i}"))],
            })
            .await
            .unwrap();
        if i < FOLLOWED {
            // Enough that downloads are still running when the seeder runs out of room.
            cores
                .append(AppendRequest {
                    key: key.clone(),
                    blocks: vec![Bytes::from(vec![i as u8; 64 << 10]); EXTRA_BLOCKS],
                })
                .await
                .unwrap();
        }
        keys.push(key);
    }
    assert!(daemon.open_fds().unwrap() < NOFILE as usize);

    // Restart under the same limit: nothing is opened until asked for.
    DaemonClient::new(daemon.channel().await.unwrap())
        .stop(hyperd_proto::v1::StopRequest {})
        .await
        .unwrap();
    daemon.wait_exit().unwrap();
    daemon.restart_limited(Some(NOFILE)).unwrap();
    let mut status = DaemonClient::new(daemon.channel().await.unwrap());
    let s = status.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.core_count as usize, CORES, "{s:?}");
    assert_eq!(s.file_limit, NOFILE);
    assert!(s.open_core_count as usize <= 16, "{s:?}");
    assert!(
        !daemon.log().contains("Too many open files"),
        "{}",
        daemon.log()
    );

    let mut cores = CoresClient::new(daemon.channel().await.unwrap());
    for (i, key) in keys.iter().enumerate() {
        let info = cores
            .info(InfoRequest { key: key.clone() })
            .await
            .unwrap_or_else(|e| panic!("core {i}: {e}"))
            .into_inner();
        let length = if i < FOLLOWED { 1 + EXTRA_BLOCKS } else { 1 };
        assert_eq!(
            (info.length, info.name.as_str()),
            (length as u64, format!("core-{i}").as_str())
        );
        assert!(info.writable);
        let block = cores
            .get(GetRequest {
                key: key.clone(),
                index: 0,
                timeout_ms: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .data;
        assert_eq!(&block[..], format!("core {i}").as_bytes());
    }
    let listed = cores
        .list(hyperd_proto::v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .cores;
    assert_eq!(listed.len(), CORES);
    assert!(listed
        .iter()
        .all(|c| c.length == 1 || c.length == 1 + EXTRA_BLOCKS as u64));
    let fds = daemon.open_fds().unwrap();
    assert!(fds < 160, "{fds} descriptors open");
    // Creating still works, and a core directory is a whole core.
    cores
        .create(CreateRequest {
            name: "after the restart".into(),
            force: false,
            seeding: None,
        })
        .await
        .unwrap();
    assert!(!daemon.log().contains("skipping"), "{}", daemon.log());

    // A peer that follows 40 of them at once gets them all, though the seeder closes
    // cores under it to stay within its budget.
    let follower = Daemon::start().unwrap();
    PeersClient::new(follower.channel().await.unwrap())
        .dial(DialRequest {
            address: daemon.listen.clone(),
            once: false,
            timeout_ms: 5000,
        })
        .await
        .unwrap();
    let mut theirs = CoresClient::new(follower.channel().await.unwrap());
    for key in &keys[..FOLLOWED] {
        theirs
            .follow(FollowRequest {
                key: key.clone(),
                download_all: true,
                seeding: None,
            })
            .await
            .unwrap();
    }
    for (i, key) in keys[..FOLLOWED].iter().enumerate() {
        let block = theirs
            .get(GetRequest {
                key: key.clone(),
                index: 0,
                timeout_ms: 20_000,
            })
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "core {i} was not served: {e}\nseeder:\n{}\nfollower:\n{}",
                    daemon.log(),
                    follower.log()
                )
            })
            .into_inner()
            .data;
        assert_eq!(&block[..], format!("core {i}").as_bytes());
    }
    // Every block of every followed core arrives, without anyone reading them.
    let all = |info: &hyperd_proto::v1::CoreInfo| info.downloaded_blocks == 1 + EXTRA_BLOCKS as u64;
    for (i, key) in keys[..FOLLOWED].iter().enumerate() {
        let mut info = None;
        for _ in 0..300 {
            let now = theirs
                .info(InfoRequest { key: key.clone() })
                .await
                .unwrap()
                .into_inner();
            if all(&now) {
                info = Some(now);
                break;
            }
            info = Some(now);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let info = info.unwrap();
        assert!(
            all(&info),
            "followed core {i} has {} of {} blocks stored\nseeder:\n{}\nfollower:\n{}",
            info.downloaded_blocks,
            1 + EXTRA_BLOCKS,
            daemon.log(),
            follower.log()
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(daemon.open_fds().unwrap() < NOFILE as usize);
}
