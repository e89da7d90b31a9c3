//! Hostile clients of the Drives service of a real `hyperd` process. Every call with
//! malformed URLs, keys, paths and versions, writes to a followed drive and to a
//! checkout, broken upload streams and unknown drives get the code the proto documents
//! and a message naming the input, while the daemon keeps answering and nothing stored
//! changes. And a thousand concurrent readers on one daemon all get their exact bytes
//! while it stays responsive and its memory bounded.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hyperd_proto::v1::daemon_client::DaemonClient;
use hyperd_proto::v1::drives_client::DrivesClient;
use hyperd_proto::v1::write_file_request::Part;
use hyperd_proto::v1::*;
use hyperd_tests::daemon::Daemon;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How long a call may take before it counts as hung: a refusal is immediate.
const PATIENCE: Duration = Duration::from_secs(5);

/// A call, made when awaited: `Ok` if it succeeded (a stream: to its end).
type Call = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// A unary call of method `$m` on a clone of the client `$d`.
macro_rules! unary {
    ($d:expr, $m:ident, $request:expr) => {{
        let (mut d, request) = ($d.clone(), $request);
        Box::pin(async move { d.$m(request).await.map(drop) }) as Call
    }};
}

/// A server-streaming call of method `$m`, read to its end (its first error, if any).
macro_rules! streamed {
    ($d:expr, $m:ident, $request:expr) => {{
        let (mut d, request) = ($d.clone(), $request);
        Box::pin(async move {
            let mut stream = d.$m(request).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok(())
        }) as Call
    }};
}

type Drives = DrivesClient<Channel>;

fn url(key: &str, rest: &str) -> Location {
    Location {
        url: format!("hyper://{key}{rest}"),
        ..Location::default()
    }
}

fn fields(key: &str, path: &str) -> Location {
    Location {
        key: key.into(),
        path: path.into(),
        ..Location::default()
    }
}

fn start(location: Location) -> WriteFileRequest {
    WriteFileRequest {
        part: Some(Part::Start(WriteFileStart {
            location: Some(location),
            attributes: None,
        })),
    }
}

fn data(bytes: impl Into<Bytes>) -> WriteFileRequest {
    WriteFileRequest {
        part: Some(Part::Data(bytes.into())),
    }
}

fn write(d: &Drives, messages: Vec<WriteFileRequest>) -> Call {
    unary!(d, write_file, futures::stream::iter(messages))
}

/// Local folders for Import and Export.
struct Local {
    /// An existing directory holding a file.
    dir: String,
    /// A directory to export into.
    out: String,
}

/// Every call that writes, at `at`: what a read-only drive must refuse.
fn writing_calls(
    d: &Drives,
    at: &Location,
    mount: &str,
    local: &Local,
) -> Vec<(&'static str, Call)> {
    let at = || Some(at.clone());
    let target = MountTarget {
        key: mount.into(),
        version: None,
        hypercore: false,
    };
    vec![
        ("WriteFile", write(d, vec![start(at().unwrap()), data("x")])),
        (
            "Mkdir",
            unary!(
                d,
                mkdir,
                MkdirRequest {
                    location: at(),
                    mode: None
                }
            ),
        ),
        (
            "Rm",
            unary!(
                d,
                rm,
                RmRequest {
                    location: at(),
                    recursive: true
                }
            ),
        ),
        ("Rename", {
            let to = Some(Location {
                path: "/renamed".into(),
                ..Location::default()
            });
            unary!(d, rename, RenameRequest { from: at(), to })
        }),
        ("Symlink", {
            unary!(
                d,
                symlink,
                SymlinkRequest {
                    location: at(),
                    target: "/elsewhere".into()
                }
            )
        }),
        (
            "Truncate",
            unary!(
                d,
                truncate,
                TruncateRequest {
                    location: at(),
                    size: 1
                }
            ),
        ),
        ("SetMetadata", {
            let metadata = [("k".to_string(), Bytes::from_static(b"v"))].into();
            unary!(
                d,
                set_metadata,
                SetMetadataRequest {
                    location: at(),
                    metadata
                }
            )
        }),
        ("DeleteMetadata", {
            let keys = vec!["k".into()];
            unary!(
                d,
                delete_metadata,
                DeleteMetadataRequest {
                    location: at(),
                    keys
                }
            )
        }),
        (
            "Mount",
            unary!(
                d,
                mount,
                MountRequest {
                    location: at(),
                    target: Some(target)
                }
            ),
        ),
        (
            "Unmount",
            unary!(d, unmount, UnmountRequest { location: at() }),
        ),
        ("Import", {
            let r = ImportRequest {
                local_path: local.dir.clone(),
                location: at(),
                delete: false,
                dry_run: false,
            };
            streamed!(d, import, r)
        }),
    ]
}

/// Every call that reads inside a drive, at `at`.
fn reading_calls(d: &Drives, at: &Location, local: &Local) -> Vec<(&'static str, Call)> {
    let at = || Some(at.clone());
    vec![
        (
            "Stat",
            unary!(
                d,
                stat,
                StatRequest {
                    location: at(),
                    lstat: false
                }
            ),
        ),
        ("Readdir", {
            streamed!(
                d,
                readdir,
                ReaddirRequest {
                    location: at(),
                    ..ReaddirRequest::default()
                }
            )
        }),
        ("ReadFile", {
            let r = ReadFileRequest {
                location: at(),
                start: 0,
                end: None,
                timeout_ms: 2_000,
            };
            streamed!(d, read_file, r)
        }),
        ("LocateFile", {
            let r = LocateFileRequest {
                location: at(),
                start: 0,
                end: None,
            };
            unary!(d, locate_file, r)
        }),
        (
            "Readlink",
            unary!(d, readlink, ReadlinkRequest { location: at() }),
        ),
        (
            "Mounts",
            unary!(d, mounts, MountsRequest { location: at() }),
        ),
        (
            "Diff",
            streamed!(
                d,
                diff,
                DiffRequest {
                    location: at(),
                    from: 1
                }
            ),
        ),
        ("History", {
            let r = HistoryRequest {
                location: at(),
                since: 0,
                until: None,
                live: false,
            };
            streamed!(d, history, r)
        }),
        (
            "Watch",
            streamed!(d, watch, WatchDriveRequest { location: at() }),
        ),
        (
            "Download",
            streamed!(d, download, DriveDownloadRequest { location: at() }),
        ),
        (
            "Clear",
            unary!(d, clear, DriveClearRequest { location: at() }),
        ),
        (
            "FileStats",
            unary!(d, file_stats, FileStatsRequest { location: at() }),
        ),
        ("Export", {
            let r = ExportRequest {
                location: at(),
                local_path: local.out.clone(),
                dry_run: false,
                timeout_ms: 0,
            };
            streamed!(d, export, r)
        }),
    ]
}

/// The calls on a whole drive (Follow apart: it follows any well-formed key).
fn drive_calls(d: &Drives, at: &Location) -> Vec<(&'static str, Call)> {
    let at = || Some(at.clone());
    vec![
        ("Info", unary!(d, info, DriveInfoRequest { drive: at() })),
        (
            "Version",
            unary!(d, version, VersionRequest { drive: at() }),
        ),
        (
            "Remove",
            unary!(d, remove, RemoveDriveRequest { drive: at() }),
        ),
    ]
}

/// Makes calls that must fail, and collects how they did not.
struct Checker {
    /// Asked after every call whether the daemon still answers.
    drives: Drives,
    key: String,
    failures: Vec<String>,
    checked: usize,
}

impl Checker {
    /// Each call must fail within [`PATIENCE`] with `code` and a message containing
    /// `names`, and the daemon must answer right after.
    async fn expect(
        &mut self,
        case: &str,
        calls: Vec<(&'static str, Call)>,
        code: Code,
        names: &str,
    ) {
        for (name, call) in calls {
            self.checked += 1;
            let failure = match tokio::time::timeout(PATIENCE, call).await {
                Err(_) => Some("hung".to_string()),
                Ok(Ok(())) => Some("succeeded".to_string()),
                Ok(Err(s)) if s.code() != code || !s.message().contains(names) => {
                    Some(format!("{:?} {:?}", s.code(), s.message()))
                }
                Ok(Err(_)) => None,
            };
            if let Some(failure) = failure {
                let case: String = case.chars().take(60).collect();
                self.failures.push(format!(
                    "{case}: {name}: {failure}; expected {code:?} naming {names:?}"
                ));
            }
            let request = VersionRequest {
                drive: Some(url(&self.key, "")),
            };
            let answer = tokio::time::timeout(PATIENCE, self.drives.version(request)).await;
            if !matches!(answer, Ok(Ok(_))) {
                self.failures
                    .push(format!("after {case}: {name}, no answer: {answer:?}"));
            }
        }
    }
}

async fn read_all(
    d: &mut Drives,
    location: Location,
    start: u64,
    end: Option<u64>,
) -> Result<Vec<u8>, Status> {
    let request = ReadFileRequest {
        location: Some(location),
        start,
        end,
        timeout_ms: 0,
    };
    let mut stream = d.read_file(request).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await? {
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

async fn readdir(d: &mut Drives, location: Location, page_size: u32) -> Vec<ReaddirResponse> {
    let request = ReaddirRequest {
        location: Some(location),
        recursive: true,
        page_size,
        ..ReaddirRequest::default()
    };
    let pages = d.readdir(request).await.unwrap().into_inner();
    pages.map(|p| p.unwrap()).collect().await
}

async fn names(d: &mut Drives, location: Location) -> Vec<String> {
    let pages = readdir(d, location, 0).await;
    let mut names: Vec<String> = pages
        .into_iter()
        .flat_map(|p| p.entries)
        .map(|e| e.name)
        .collect();
    names.sort();
    names
}

async fn version(d: &mut Drives, key: &str) -> u64 {
    d.version(VersionRequest {
        drive: Some(url(key, "")),
    })
    .await
    .unwrap()
    .into_inner()
    .version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_documented_code_and_the_daemon_keeps_serving() {
    let a = Daemon::start().unwrap();
    let mut d = DrivesClient::new(a.channel().await.unwrap());
    let create = |name: &str| CreateDriveRequest {
        name: name.into(),
        seeding: None,
    };
    let key = d.create(create("main")).await.unwrap().into_inner().key;
    let other = d.create(create("other")).await.unwrap().into_inner().key;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let file = || url(&key, "/dir/f.bin");
    d.write_file(futures::stream::iter(vec![
        start(file()),
        data(body.clone()),
    ]))
    .await
    .unwrap();
    let link = SymlinkRequest {
        location: Some(url(&key, "/link")),
        target: "/dir/f.bin".into(),
    };
    d.symlink(link).await.unwrap();
    let target = MountTarget {
        key: other.clone(),
        version: None,
        hypercore: false,
    };
    d.mount(MountRequest {
        location: Some(url(&key, "/m")),
        target: Some(target),
    })
    .await
    .unwrap();
    // Empty path components are no error: "//e//f" is "/e/f".
    d.write_file(futures::stream::iter(vec![
        start(url(&key, "//e//f")),
        data("ef"),
    ]))
    .await
    .unwrap();
    assert_eq!(
        read_all(&mut d, url(&key, "/e/f"), 0, None).await.unwrap(),
        b"ef"
    );
    assert_eq!(
        read_all(&mut d, fields(&key, "e///f/"), 0, None)
            .await
            .unwrap(),
        b"ef"
    );
    let version_before = version(&mut d, &key).await;
    let listed = names(&mut d, url(&key, "/")).await;
    assert!(listed.contains(&"dir/f.bin".to_string()), "{listed:?}");

    let scratch = tempfile::tempdir().unwrap();
    let local_dir = scratch.path().join("in");
    std::fs::create_dir(&local_dir).unwrap();
    std::fs::write(local_dir.join("new.txt"), b"new").unwrap();
    let local = Local {
        dir: local_dir.to_str().unwrap().into(),
        out: scratch.path().join("out").to_str().unwrap().into(),
    };

    // Daemon B follows the drive: read-only there.
    let b = Daemon::start().unwrap();
    let out = b.ctl(&["peer", "connect", &a.listen]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bd = DrivesClient::new(b.channel().await.unwrap());
    let follow = FollowDriveRequest {
        drive: Some(url(&key, "")),
        all: false,
        seeding: None,
    };
    assert!(!bd.follow(follow).await.unwrap().into_inner().writable);
    let mut seen = None;
    for _ in 0..100 {
        seen = read_all(&mut bd, file(), 0, Some(10)).await.ok();
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen.as_deref(),
        Some(&body[..10]),
        "B reads the followed drive"
    );

    let mut check = Checker {
        drives: d.clone(),
        key: key.clone(),
        failures: Vec::new(),
        checked: 0,
    };
    let every = |d: &Drives, at: &Location| {
        let mut all = writing_calls(d, at, &other, &local);
        all.extend(reading_calls(d, at, &local));
        all.extend(drive_calls(d, at));
        all
    };

    // Malformed URLs and keys, and parts that disagree: INVALID_ARGUMENT from every
    // call, Follow too, naming what is wrong.
    let in_url = |text: String| Location {
        url: text,
        ..Location::default()
    };
    let bad_locations: Vec<(Location, String)> = vec![
        (in_url(format!("http://{key}/x")), "http://".into()),
        (in_url("hyper://abc/x".into()), "hyper://abc/x".into()),
        (
            in_url(format!("hyper://{}/x", "z".repeat(64))),
            "zzzz".into(),
        ),
        (
            in_url(format!("hyper://{}/x", &key[..63])),
            key[..63].into(),
        ),
        (url(&key, "+abc/x"), "+abc".into()),
        (url(&key, "+/x"), format!("{key}+/x")),
        (url(&key, "+"), format!("{key}+\"")),
        (
            url(&key, &format!("+{}/x", "9".repeat(30))),
            "99999999999".into(),
        ),
        (fields("abc", ""), "\"abc\"".into()),
        (fields(&"g".repeat(64), ""), "g".repeat(64)),
        (fields("", "/x"), "no drive given".into()),
        (
            Location {
                key: other.clone(),
                ..url(&key, "/x")
            },
            other.clone(),
        ),
        (
            Location {
                version: Some(2),
                ..url(&key, "+3/x")
            },
            "version 2".into(),
        ),
        (
            Location {
                path: "/y".into(),
                ..url(&key, "/x")
            },
            "\"/y\"".into(),
        ),
    ];
    for (bad, names) in &bad_locations {
        let case = format!("location {bad:?}");
        let follow = FollowDriveRequest {
            drive: Some(bad.clone()),
            all: false,
            seeding: None,
        };
        let mut calls = every(&d, bad);
        calls.push(("Follow", unary!(d, follow, follow)));
        check
            .expect(&case, calls, Code::InvalidArgument, names)
            .await;
    }

    // Paths no drive could hold: INVALID_ARGUMENT from every call on a location, in a
    // URL or a field, and as a destination.
    let bad_paths: Vec<(String, &str)> = vec![
        ("/dir/a\0b".into(), "NUL"),
        ("/dir/../dir/f.bin".into(), "/dir/../dir/f.bin"),
        ("/dir/./f.bin".into(), "/dir/./f.bin"),
        ("/..".into(), "/.."),
        (format!("/dir/{}", "n".repeat(256)), "255"),
        ("/d".repeat(2_500), "4096"),
    ];
    for (path, names) in &bad_paths {
        let case = format!("path {path:?}");
        for at in [url(&key, path), fields(&key, path)] {
            let mut calls = writing_calls(&d, &at, &other, &local);
            calls.extend(reading_calls(&d, &at, &local));
            let to = Some(Location {
                path: path.clone(),
                ..Location::default()
            });
            calls.push((
                "Rename to it",
                unary!(
                    d,
                    rename,
                    RenameRequest {
                        from: Some(file()),
                        to
                    }
                ),
            ));
            check
                .expect(&case, calls, Code::InvalidArgument, names)
                .await;
        }
    }

    // Versions past the end, version 0 (no drive has it), in a URL or a field:
    // INVALID_ARGUMENT from every call that reads, naming the version.
    let past = version_before + 5;
    for v in [past, 0, u64::MAX] {
        let case = format!("checkout {v}");
        for at in [
            url(&key, &format!("+{v}/dir/f.bin")),
            Location {
                version: Some(v),
                ..fields(&key, "/dir/f.bin")
            },
        ] {
            // A watch of a checkout is refused as such.
            let calls = reading_calls(&d, &at, &local)
                .into_iter()
                .filter(|(n, _)| *n != "Watch")
                .collect();
            check
                .expect(&case, calls, Code::InvalidArgument, &format!("version {v}"))
                .await;
        }
    }
    let root = || Some(url(&key, "/"));
    let history = |since, until| HistoryRequest {
        location: root(),
        since,
        until,
        live: false,
    };
    let past_end = vec![
        (
            "Diff",
            streamed!(
                d,
                diff,
                DiffRequest {
                    location: root(),
                    from: past
                }
            ),
        ),
        ("History since", streamed!(d, history, history(past, None))),
    ];
    check
        .expect(
            "past the end",
            past_end,
            Code::InvalidArgument,
            &past.to_string(),
        )
        .await;
    let until = vec![(
        "History until",
        streamed!(d, history, history(0, Some(u64::MAX))),
    )];
    check
        .expect(
            "past the end",
            until,
            Code::InvalidArgument,
            &u64::MAX.to_string(),
        )
        .await;

    // Writes to a checkout, and to a followed drive: FAILED_PRECONDITION from every
    // call that writes.
    let unmount = |d: &Drives, at: Location| {
        let calls = writing_calls(d, &at, &other, &local);
        calls
            .into_iter()
            .filter(|(n, _)| *n == "Unmount")
            .collect::<Vec<_>>()
    };
    let checkout = writing_calls(&d, &url(&key, "+3/dir/f.bin"), &other, &local);
    check
        .expect(
            "checkout",
            checkout,
            Code::FailedPrecondition,
            "+3/dir/f.bin",
        )
        .await;
    check
        .expect(
            "checkout",
            unmount(&d, url(&key, "+3/m")),
            Code::FailedPrecondition,
            "+3/m",
        )
        .await;
    let mut on_b = Checker {
        drives: bd.clone(),
        key: key.clone(),
        failures: Vec::new(),
        checked: 0,
    };
    let followed = writing_calls(&bd, &file(), &other, &local);
    on_b.expect("followed", followed, Code::FailedPrecondition, "/dir/f.bin")
        .await;
    on_b.expect(
        "followed",
        unmount(&bd, url(&key, "/m")),
        Code::FailedPrecondition,
        "/m",
    )
    .await;
    check.failures.append(&mut on_b.failures);
    check.checked += on_b.checked;

    // Broken uploads (a first message of data is daemon_drives'): INVALID_ARGUMENT.
    let no_location = WriteFileRequest {
        part: Some(Part::Start(WriteFileStart::default())),
    };
    let no_part = WriteFileRequest { part: None };
    let uploads = [
        (
            "a second start",
            vec![start(url(&key, "/up")), data("x"), start(url(&key, "/up2"))],
            "`data`",
        ),
        ("an empty stream", vec![], "`start`"),
        (
            "a message with no part",
            vec![start(url(&key, "/up")), no_part],
            "`data`",
        ),
        ("a start with no location", vec![no_location], "location"),
    ];
    for (case, messages, names) in uploads {
        check
            .expect(
                case,
                vec![("WriteFile", write(&d, messages))],
                Code::InvalidArgument,
                names,
            )
            .await;
    }

    // Drives this daemon does not have: NOT_FOUND from every call, naming the key.
    let unknown = "ab".repeat(32);
    let mut calls = writing_calls(&d, &url(&unknown, "/dir/f.bin"), &other, &local);
    calls.extend(reading_calls(&d, &url(&unknown, "/dir/f.bin"), &local));
    calls.extend(drive_calls(&d, &url(&unknown, "")));
    check
        .expect("unknown drive", calls, Code::NotFound, &unknown)
        .await;

    // Each call's own input.
    let nothing = || Some(url(&key, "/nothing"));
    let import = |local_path: String| ImportRequest {
        local_path,
        location: Some(url(&key, "/imported")),
        delete: false,
        dry_run: false,
    };
    let rename = |to: Option<Location>| RenameRequest {
        from: Some(file()),
        to,
    };
    let mount = |target: &str| MountRequest {
        location: Some(url(&key, "/m2")),
        target: Some(MountTarget {
            key: target.into(),
            version: None,
            hypercore: false,
        }),
    };
    let read = |location: Location, start, end| ReadFileRequest {
        location: Some(location),
        start,
        end,
        timeout_ms: 0,
    };
    let locate = |location: Location, start, end| LocateFileRequest {
        location: Some(location),
        start,
        end,
    };
    let own: Vec<(&str, Call, Code, String)> = vec![
        (
            "Create with a 300-byte name",
            unary!(d, create, create(&"n".repeat(300))),
            Code::InvalidArgument,
            "300 bytes".into(),
        ),
        (
            "Rename to another drive",
            unary!(d, rename, rename(Some(url(&other, "/f.bin")))),
            Code::InvalidArgument,
            other.clone(),
        ),
        (
            "Rename to a checkout",
            unary!(d, rename, rename(Some(url(&key, "+3/moved")))),
            Code::FailedPrecondition,
            "+3/moved".into(),
        ),
        (
            "Rename with no destination",
            unary!(d, rename, rename(None)),
            Code::InvalidArgument,
            "to is required".into(),
        ),
        (
            "Rename out of a mount",
            {
                let r = RenameRequest {
                    from: Some(url(&key, "/m/x")),
                    to: Some(fields("", "/x")),
                };
                unary!(d, rename, r)
            },
            Code::InvalidArgument,
            "/m/x".into(),
        ),
        (
            "Mount nothing",
            {
                unary!(
                    d,
                    mount,
                    MountRequest {
                        location: Some(url(&key, "/m2")),
                        target: None
                    }
                )
            },
            Code::InvalidArgument,
            "target".into(),
        ),
        (
            "Mount a bad key",
            unary!(d, mount, mount("xyz")),
            Code::InvalidArgument,
            "\"xyz\"".into(),
        ),
        (
            "Truncate to 16 EiB",
            {
                unary!(
                    d,
                    truncate,
                    TruncateRequest {
                        location: Some(file()),
                        size: u64::MAX
                    }
                )
            },
            Code::InvalidArgument,
            u64::MAX.to_string(),
        ),
        (
            "ReadFile with end before start",
            streamed!(d, read_file, read(file(), 10, Some(5))),
            Code::InvalidArgument,
            "end 5".into(),
        ),
        (
            "ReadFile of a directory",
            streamed!(d, read_file, read(url(&key, "/dir"), 0, None)),
            Code::FailedPrecondition,
            "/dir".into(),
        ),
        (
            "LocateFile with end before start",
            unary!(d, locate_file, locate(file(), 10, Some(5))),
            Code::InvalidArgument,
            "end 5".into(),
        ),
        (
            "LocateFile of a directory",
            unary!(d, locate_file, locate(url(&key, "/dir"), 0, None)),
            Code::FailedPrecondition,
            "/dir".into(),
        ),
        (
            "Readdir of a file",
            {
                streamed!(
                    d,
                    readdir,
                    ReaddirRequest {
                        location: Some(file()),
                        ..ReaddirRequest::default()
                    }
                )
            },
            Code::FailedPrecondition,
            "/dir/f.bin".into(),
        ),
        (
            "Readlink of a file",
            unary!(
                d,
                readlink,
                ReadlinkRequest {
                    location: Some(file())
                }
            ),
            Code::FailedPrecondition,
            "/dir/f.bin".into(),
        ),
        (
            "Watch a checkout",
            {
                streamed!(
                    d,
                    watch,
                    WatchDriveRequest {
                        location: Some(url(&key, "+3/"))
                    }
                )
            },
            Code::InvalidArgument,
            "+3".into(),
        ),
        (
            "History until before since",
            streamed!(d, history, history(3, Some(2))),
            Code::InvalidArgument,
            "until 2".into(),
        ),
        (
            "History of a checkout, live",
            {
                let r = HistoryRequest {
                    location: Some(url(&key, "+3/")),
                    since: 0,
                    until: None,
                    live: true,
                };
                streamed!(d, history, r)
            },
            Code::InvalidArgument,
            "+3".into(),
        ),
        (
            "Remove a drive by a file's URL",
            {
                unary!(
                    d,
                    remove,
                    RemoveDriveRequest {
                        drive: Some(file())
                    }
                )
            },
            Code::InvalidArgument,
            "/dir/f.bin".into(),
        ),
        (
            "Remove a checkout",
            {
                unary!(
                    d,
                    remove,
                    RemoveDriveRequest {
                        drive: Some(url(&key, "+3"))
                    }
                )
            },
            Code::InvalidArgument,
            "+3".into(),
        ),
        (
            "Import from a relative path",
            streamed!(d, import, import("in".into())),
            Code::InvalidArgument,
            "\"in\"".into(),
        ),
        (
            "Import from a missing folder",
            { streamed!(d, import, import(format!("{}/missing", local.dir))) },
            Code::NotFound,
            "missing".into(),
        ),
        (
            "Import from a file",
            { streamed!(d, import, import(format!("{}/new.txt", local.dir))) },
            Code::InvalidArgument,
            "new.txt".into(),
        ),
        (
            "Export to a relative path",
            {
                let r = ExportRequest {
                    location: Some(url(&key, "/dir")),
                    local_path: "out".into(),
                    dry_run: false,
                    timeout_ms: 0,
                };
                streamed!(d, export, r)
            },
            Code::InvalidArgument,
            "\"out\"".into(),
        ),
        (
            "Download a missing path",
            {
                streamed!(
                    d,
                    download,
                    DriveDownloadRequest {
                        location: nothing()
                    }
                )
            },
            Code::NotFound,
            "/nothing".into(),
        ),
        (
            "Clear a missing path",
            unary!(
                d,
                clear,
                DriveClearRequest {
                    location: nothing()
                }
            ),
            Code::NotFound,
            "/nothing".into(),
        ),
        (
            "FileStats of a missing path",
            unary!(
                d,
                file_stats,
                FileStatsRequest {
                    location: nothing()
                }
            ),
            Code::NotFound,
            "/nothing".into(),
        ),
        (
            "SetMetadata of a missing path",
            {
                let metadata = [("k".to_string(), Bytes::new())].into();
                unary!(
                    d,
                    set_metadata,
                    SetMetadataRequest {
                        location: nothing(),
                        metadata
                    }
                )
            },
            Code::NotFound,
            "/nothing".into(),
        ),
    ];
    for (name, call, code, names) in own {
        check.expect(name, vec![("", call)], code, &names).await;
    }

    eprintln!("{} bad calls checked", check.checked);
    assert!(
        check.failures.is_empty(),
        "{} of {} bad calls misbehaved:\n{}",
        check.failures.len(),
        check.checked,
        check.failures.join("\n")
    );

    // Odd ranges and pages that are fine: a range past the file is cut at its end (and
    // empty from past it, like read(2)); a huge page holds everything.
    let tail = read_all(&mut d, file(), 199_990, Some(1 << 40))
        .await
        .unwrap();
    assert_eq!(tail, &body[199_990..]);
    assert_eq!(read_all(&mut d, file(), 1 << 40, None).await.unwrap(), b"");
    assert_eq!(
        read_all(&mut d, file(), 500_000, Some(600_000))
            .await
            .unwrap(),
        b""
    );
    let pages = readdir(&mut d, url(&key, "/"), u32::MAX).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].entries.len(), listed.len());

    // Nothing was written, nothing lost, and both daemons still serve.
    assert_eq!(
        version(&mut d, &key).await,
        version_before,
        "a refused call wrote"
    );
    assert_eq!(names(&mut d, url(&key, "/")).await, listed);
    assert_eq!(read_all(&mut d, file(), 0, None).await.unwrap(), body);
    assert_eq!(read_all(&mut bd, file(), 0, None).await.unwrap(), body);
    let drives = d
        .list(ListDrivesRequest {})
        .await
        .unwrap()
        .into_inner()
        .drives;
    assert_eq!(drives.len(), 2, "{drives:?}");
}

const MIB: u64 = 1 << 20;

/// `readers` concurrent ReadFile streams of `files` (by turns) over `channels`: each
/// opened, then, once all are open, read to the end. The number that did not get their
/// exact bytes, with the first few errors.
async fn concurrent_reads(
    channels: &[Channel],
    readers: usize,
    files: &[(Location, Arc<Vec<u8>>)],
    all_open: Arc<tokio::sync::Barrier>,
) -> tokio::task::JoinSet<Result<(), String>> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..readers {
        let mut d = DrivesClient::new(channels[i % channels.len()].clone());
        let (location, expected) = files[i % files.len()].clone();
        let all_open = all_open.clone();
        tasks.spawn(async move {
            let request = ReadFileRequest {
                location: Some(location.clone()),
                start: 0,
                end: None,
                timeout_ms: 0,
            };
            let opened = d.read_file(request).await;
            // Waiting here even after a failure, so that the others are not held up.
            all_open.wait().await;
            let mut stream = opened.map_err(|s| format!("reader {i}: {s}"))?.into_inner();
            let mut got = Vec::with_capacity(expected.len());
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| format!("reader {i}: {s}"))?
            {
                got.extend_from_slice(&chunk.data);
            }
            if got != *expected {
                return Err(format!(
                    "reader {i} of {}: {} bytes, not the {} written",
                    location.url,
                    got.len(),
                    expected.len()
                ));
            }
            Ok(())
        });
    }
    tasks
}

/// Waits for `tasks`, `limit` at most; panics with the first failures.
async fn all_succeed(
    what: &str,
    mut tasks: tokio::task::JoinSet<Result<(), String>>,
    limit: Duration,
) {
    let count = tasks.len();
    let mut failures = Vec::new();
    tokio::time::timeout(limit, async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done.unwrap() {
                failures.push(e);
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{what}: {} of {count} still running after {limit:?}",
            tasks.len()
        )
    });
    failures.truncate(5);
    assert!(
        failures.is_empty(),
        "{what} failed, e.g.:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_readers_get_their_exact_bytes() {
    const READERS: usize = 1_000;
    // 250 streams a connection: more than HTTP/2 clients open before the server's
    // settings (100); hyperd sets no limit.
    const CONNECTIONS: usize = 4;
    let a = Daemon::start().unwrap();
    let mut d = DrivesClient::new(a.channel().await.unwrap());
    let key = d
        .create(CreateDriveRequest {
            name: "many".into(),
            seeding: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key;
    let mut files = Vec::new();
    // Uploaded in 64 KiB messages, as the blocks JS writes: a 1 MiB file is 16 blocks.
    for (n, size) in [(0u32, 1 << 20), (1, 70_000), (2, 10), (3, 0)] {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + n) as u8).collect();
        let at = url(&key, &format!("/f{n}.bin"));
        let chunks = bytes.chunks(64 << 10).map(|c| data(c.to_vec()));
        let upload = std::iter::once(start(at.clone())).chain(chunks);
        d.write_file(futures::stream::iter(upload.collect::<Vec<_>>()))
            .await
            .unwrap();
        files.push((at, Arc::new(bytes)));
    }
    for n in 0..40 {
        let at = url(&key, &format!("/dir/{n}"));
        d.write_file(futures::stream::iter(vec![
            start(at),
            data(vec![n as u8; 100]),
        ]))
        .await
        .unwrap();
    }
    let before = a.settled_rss().await.unwrap();

    // The peak RSS while the readers run.
    let (peak, done) = (
        Arc::new(AtomicU64::new(before)),
        Arc::new(AtomicBool::new(false)),
    );
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), a.pid().unwrap());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(rss) = hyperd_tests::daemon::rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let started = Instant::now();
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(a.channel().await.unwrap());
    }
    let all_open = Arc::new(tokio::sync::Barrier::new(READERS + 1));
    let readers = concurrent_reads(&channels, READERS, &files, all_open.clone()).await;
    tokio::time::timeout(Duration::from_secs(60), all_open.wait())
        .await
        .expect("the thousand streams opened");
    let opened = started.elapsed();

    // While they read: Stats and Readdirs on the same connections, and the daemon's
    // Status on a new one, answered at once.
    let mut others = tokio::task::JoinSet::new();
    for i in 0..120 {
        let mut d = DrivesClient::new(channels[i % CONNECTIONS].clone());
        let (at, expected) = files[i % files.len()].clone();
        let dir = url(&key, "/dir");
        others.spawn(async move {
            if i % 6 == 0 {
                let pages = d.readdir(ReaddirRequest {
                    location: Some(dir),
                    ..ReaddirRequest::default()
                });
                let pages: Vec<_> = pages
                    .await
                    .map_err(|s| s.to_string())?
                    .into_inner()
                    .collect()
                    .await;
                let n: usize = pages
                    .into_iter()
                    .map(|p| p.map(|p| p.entries.len()).unwrap_or(0))
                    .sum();
                return if n == 40 {
                    Ok(())
                } else {
                    Err(format!("readdir listed {n} of 40"))
                };
            }
            let stat = d
                .stat(StatRequest {
                    location: Some(at),
                    lstat: false,
                })
                .await
                .map_err(|s| s.to_string())?;
            let size = stat.into_inner().stat.unwrap().size;
            if size == expected.len() as u64 {
                Ok(())
            } else {
                Err(format!("stat: size {size}"))
            }
        });
    }
    let asked = Instant::now();
    let mut status = DaemonClient::new(a.channel().await.unwrap());
    let answer =
        tokio::time::timeout(Duration::from_secs(5), status.status(StatusRequest {})).await;
    let answered = asked.elapsed();
    assert!(
        matches!(answer, Ok(Ok(_))),
        "Status during the storm: {answer:?}"
    );

    all_succeed("the readers", readers, Duration::from_secs(120)).await;
    all_succeed("the stats and readdirs", others, Duration::from_secs(30)).await;
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    let total: usize = files.iter().map(|(_, b)| b.len()).sum::<usize>() * READERS / files.len();
    eprintln!(
        "{READERS} readers over {CONNECTIONS} connections, {} MB: open after {opened:?}, done after \
         {took:?}; Status answered in {answered:?}; RSS {} MiB before, {} MiB at the peak",
        total / 1_000_000,
        before / MIB,
        peak / MIB
    );
    // Each open stream holds a few of the blocks it reads ahead (about 130 MiB in all;
    // 320 MiB when each read 1 MiB ahead).
    assert!(
        peak <= before + 224 * MIB,
        "RSS peaked at {} MiB from {} MiB",
        peak / MIB,
        before / MIB
    );

    // A follower reading a file whose blocks it does not have yet, 200 times at once:
    // fetched from the writer, every reader gets the exact bytes.
    let b = Daemon::start().unwrap();
    let out = b.ctl(&["peer", "connect", &a.listen]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bd = DrivesClient::new(b.channel().await.unwrap());
    bd.follow(FollowDriveRequest {
        drive: Some(url(&key, "")),
        all: false,
        seeding: None,
    })
    .await
    .unwrap();
    let big = vec![files[0].clone()];
    let all_open = Arc::new(tokio::sync::Barrier::new(201));
    let channel = [b.channel().await.unwrap()];
    let readers = concurrent_reads(&channel, 200, &big, all_open.clone()).await;
    tokio::time::timeout(Duration::from_secs(30), all_open.wait())
        .await
        .expect("the follower's streams opened");
    all_succeed("the follower's readers", readers, Duration::from_secs(60)).await;

    // Both still serve.
    assert_eq!(
        read_all(&mut d, files[1].0.clone(), 0, None).await.unwrap(),
        *files[1].1
    );
    assert_eq!(
        read_all(&mut bd, files[1].0.clone(), 0, None)
            .await
            .unwrap(),
        *files[1].1
    );
}
