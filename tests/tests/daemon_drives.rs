//! The Drives gRPC service of a real `hyperd` process: files written and read through
//! streams, locations as URLs and fields, listings in pages, recursive removal, mounts
//! and versions, bad input answered with the right codes, an upload cut off midway, and
//! everything kept across a restart.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyperd_proto::v1::drives_client::DrivesClient;
use hyperd_proto::v1::write_file_request::Part;
use hyperd_proto::v1::{
    CreateDriveRequest, DiffRequest, DriveInfoRequest, ListDrivesRequest, Location, MkdirRequest,
    MountRequest, MountTarget, MountsRequest, ReadFileRequest, ReaddirRequest, RmRequest,
    StatRequest, WriteFileRequest, WriteFileStart,
};
use hyperd_tests::daemon::Daemon;
use tonic::transport::Channel;
use tonic::Code;

fn url(key: &str, rest: &str) -> Location {
    Location {
        url: format!("hyper://{key}{rest}"),
        ..Location::default()
    }
}

fn writes(location: Location, chunks: Vec<Vec<u8>>) -> Vec<WriteFileRequest> {
    let start = WriteFileRequest {
        part: Some(Part::Start(WriteFileStart {
            location: Some(location),
            attributes: None,
        })),
    };
    std::iter::once(start)
        .chain(chunks.into_iter().map(|c| WriteFileRequest {
            part: Some(Part::Data(Bytes::from(c))),
        }))
        .collect()
}

async fn read(
    drives: &mut DrivesClient<Channel>,
    location: Location,
    start: u64,
    end: Option<u64>,
) -> Vec<u8> {
    let mut stream = drives
        .read_file(ReadFileRequest {
            location: Some(location),
            start,
            end,
            timeout_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap().data);
    }
    out
}

/// A channel on the daemon's socket whose connections the test can sever, as if the
/// client process died.
async fn severable_channel(
    path: &std::path::Path,
) -> (Channel, Arc<Mutex<Vec<std::os::unix::net::UnixStream>>>) {
    let sockets = Arc::new(Mutex::new(Vec::new()));
    let (kept, path) = (sockets.clone(), path.to_owned());
    let channel = tonic::transport::Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let (path, kept) = (path.clone(), kept.clone());
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?.into_std()?;
                kept.lock().unwrap().push(stream.try_clone()?);
                let stream = tokio::net::UnixStream::from_std(stream)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    (channel, sockets)
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let s = r.unwrap_err();
    (s.code(), s.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_through_the_api_of_a_real_daemon() {
    let mut daemon = Daemon::start().unwrap();
    let mut drives = DrivesClient::new(daemon.channel().await.unwrap());
    let info = drives
        .create(CreateDriveRequest {
            name: "docs".into(),
            seeding: None,
        })
        .await
        .unwrap()
        .into_inner();
    let key = info.key.clone();
    assert!(info.writable);

    // A file streamed in three chunks, read back whole and in part, by URL and fields.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
    let chunks = data.chunks(100_000).map(<[u8]>::to_vec).collect();
    let written = drives
        .write_file(futures::stream::iter(writes(
            url(&key, "/dir/f.bin"),
            chunks,
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((written.stat.unwrap().size, written.version), (300_000, 2));
    assert_eq!(
        read(&mut drives, url(&key, "/dir/f.bin"), 0, None).await,
        data
    );
    let fields = Location {
        key: key.clone(),
        path: "dir/f.bin".into(),
        ..Location::default()
    };
    assert_eq!(
        read(&mut drives, fields, 1000, Some(1010)).await,
        data[1000..1010]
    );
    let stat = drives
        .stat(StatRequest {
            location: Some(url(&key, "+2/dir/f.bin")),
            lstat: false,
        })
        .await
        .unwrap()
        .into_inner()
        .stat
        .unwrap();
    assert_eq!(stat.size, 300_000);

    // A listing in pages of two.
    for n in 0..5 {
        let body = vec![vec![n as u8; 10]];
        drives
            .write_file(futures::stream::iter(writes(
                url(&key, &format!("/many/{n}")),
                body,
            )))
            .await
            .unwrap();
    }
    let pages: Vec<_> = drives
        .readdir(ReaddirRequest {
            location: Some(url(&key, "/many")),
            page_size: 2,
            stats: true,
            ..ReaddirRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .map(|p| p.unwrap())
        .collect()
        .await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.entries.len()).collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert!(pages[0].entries[0].stat.as_ref().unwrap().size == 10);

    // Bad input.
    let bad_url = Location {
        url: "hyper://nope/x".into(),
        ..Location::default()
    };
    let (c, m) = code(
        drives
            .stat(StatRequest {
                location: Some(bad_url),
                lstat: false,
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    let (c, m) = code(
        drives
            .stat(StatRequest {
                location: Some(url(&key, "/missing")),
                lstat: false,
            })
            .await,
    );
    assert_eq!(c, Code::NotFound, "{m}");
    assert!(m.contains("/missing"), "{m}");
    let (c, m) = code(
        drives
            .stat(StatRequest {
                location: Some(url(&key, "+99/")),
                lstat: false,
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    let (c, m) = code(
        drives
            .stat(StatRequest {
                location: None,
                lstat: false,
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    let to_checkout = writes(url(&key, "+1/x"), vec![b"x".to_vec()]);
    let (c, m) = code(drives.write_file(futures::stream::iter(to_checkout)).await);
    assert_eq!(c, Code::FailedPrecondition, "{m}");
    let data_first = vec![WriteFileRequest {
        part: Some(Part::Data(Bytes::from_static(b"x"))),
    }];
    let (c, m) = code(drives.write_file(futures::stream::iter(data_first)).await);
    assert_eq!(c, Code::InvalidArgument, "{m}");
    let unknown = "ab".repeat(32);
    let (c, m) = code(
        drives
            .info(DriveInfoRequest {
                drive: Some(url(&unknown, "")),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound, "{m}");

    // A client that dies midway (its connection severed, never a clean end of the
    // upload) leaves nothing behind, and the next writer goes ahead.
    let (channel, sockets) = severable_channel(&daemon.socket()).await;
    let (mut tx, rx) = futures::channel::mpsc::channel(4);
    let upload = tokio::spawn(async move { DrivesClient::new(channel).write_file(rx).await });
    for message in writes(url(&key, "/cut.bin"), vec![vec![1u8; 100_000]]) {
        tx.send(message).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for socket in sockets.lock().unwrap().iter() {
        socket.shutdown(std::net::Shutdown::Both).unwrap();
    }
    assert!(upload.await.unwrap().is_err(), "the severed upload failed");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (c, m) = code(
        drives
            .stat(StatRequest {
                location: Some(url(&key, "/cut.bin")),
                lstat: false,
            })
            .await,
    );
    assert_eq!(c, Code::NotFound, "nothing half-written: {m}");
    drop(tx);
    drives
        .write_file(futures::stream::iter(writes(
            url(&key, "/cut.bin"),
            vec![b"whole".to_vec()],
        )))
        .await
        .unwrap();
    assert_eq!(
        read(&mut drives, url(&key, "/cut.bin"), 0, None).await,
        b"whole"
    );

    // Directories, recursive removal, mounts, diffs.
    drives
        .mkdir(MkdirRequest {
            location: Some(url(&key, "/empty")),
            mode: None,
        })
        .await
        .unwrap();
    let (c, m) = code(
        drives
            .rm(RmRequest {
                location: Some(url(&key, "/many")),
                recursive: false,
            })
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition, "{m}");
    let removed = drives
        .rm(RmRequest {
            location: Some(url(&key, "/many")),
            recursive: true,
        })
        .await
        .unwrap()
        .into_inner()
        .removed;
    assert_eq!(
        removed, 5,
        "five files; the directory had no node of its own"
    );
    let (c, _) = code(
        drives
            .stat(StatRequest {
                location: Some(url(&key, "/many")),
                lstat: false,
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    let other = drives
        .create(CreateDriveRequest {
            name: "other".into(),
            seeding: None,
        })
        .await
        .unwrap()
        .into_inner();
    drives
        .mount(MountRequest {
            location: Some(url(&key, "/other")),
            target: Some(MountTarget {
                key: other.key.clone(),
                version: None,
                hypercore: false,
            }),
        })
        .await
        .unwrap();
    let mounts = drives
        .mounts(MountsRequest {
            location: Some(url(&key, "/")),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].target.as_ref().unwrap().key, other.key);
    let changes: Vec<_> = drives
        .diff(DiffRequest {
            location: Some(url(&key, "/")),
            from: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .map(|c| c.unwrap().path)
        .collect()
        .await;
    assert!(changes.contains(&"/empty".to_string()), "{changes:?}");
    assert!(changes.contains(&"/other".to_string()), "{changes:?}");

    // Kept across a restart.
    daemon.restart().unwrap();
    let mut drives = DrivesClient::new(daemon.channel().await.unwrap());
    let listed: Vec<String> = drives
        .list(ListDrivesRequest {})
        .await
        .unwrap()
        .into_inner()
        .drives
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert!(
        listed.contains(&key) && listed.contains(&other.key),
        "{listed:?}"
    );
    assert_eq!(
        read(&mut drives, url(&key, "/dir/f.bin"), 0, None).await,
        data
    );
}
