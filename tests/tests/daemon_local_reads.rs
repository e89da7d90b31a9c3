//! Short-circuit reads: `hyperctl drive cat` and `get` read a file's bytes from the
//! daemon's storage itself when the daemon says where they lie (LocateFile), and use
//! them only while no clear removed blocks meanwhile (StorageClears); otherwise, and for
//! files not stored whole, they read through ReadFile. Against a real `hyperd`: located
//! bytes are the file's, a clear shows in StorageClears and ends locating, reads stay
//! exact while other files are cleared under them, and `--stream` reads the same bytes.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use hyperd_proto::v1::drives_client::DrivesClient;
use hyperd_proto::v1::{DriveClearRequest, LocateFileRequest, Location, StorageClearsRequest};
use hyperd_tests::daemon::Daemon;
use hyperd_tests::pattern;
use tonic::Code;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `hyperctl args…` on `daemon`, which must succeed; returns stdout.
fn ok(daemon: &Daemon, args: &[&str]) -> Vec<u8> {
    daemon.ctl_ok(args).unwrap()
}

fn at(key: &str, path: &str) -> Option<Location> {
    Some(Location {
        url: format!("hyper://{key}{path}"),
        ..Location::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_read_from_storage_only_while_no_clear_touched_them() {
    let d = Daemon::start().unwrap();
    let created = d.ctl_json(&["drive", "create"]).unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let url = |path: &str| format!("hyper://{key}{path}");
    let tmp = tempfile::tempdir().unwrap();
    let bytes = pattern(5, 3 * 1024 * 1024 + 17);
    let local = tmp.path().join("big.bin");
    std::fs::write(&local, &bytes).unwrap();
    ok(
        &d,
        &["drive", "put", local.to_str().unwrap(), &url("/big.bin")],
    );

    // What LocateFile points at is the file's bytes, for a range too.
    let mut drives = DrivesClient::new(d.channel().await.unwrap());
    let locate = |start, end| LocateFileRequest {
        location: at(&key, "/big.bin"),
        start,
        end,
    };
    let located = drives
        .locate_file(locate(1_000, Some(2_500_000)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(located.length, 2_499_000);
    let file = std::fs::File::open(&located.data_path).unwrap();
    let mut read = vec![0; located.length as usize];
    file.read_exact_at(&mut read, located.offset).unwrap();
    assert!(read == bytes[1_000..2_500_000], "located bytes differ");
    let past_end = drives
        .locate_file(locate(5_000_000, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(past_end.length, 0, "a range past the end is cut there");

    // cat and get, from storage and through the API, with ranges.
    assert!(ok(&d, &["drive", "cat", &url("/big.bin")]) == bytes);
    assert!(ok(&d, &["drive", "cat", "--stream", &url("/big.bin")]) == bytes);
    let range = ["--start", "100", "--end", "1048676"];
    let a = ok(
        &d,
        &[&["drive", "cat", &url("/big.bin")][..], &range].concat(),
    );
    let b = ok(
        &d,
        &[&["drive", "cat", "--stream", &url("/big.bin")][..], &range].concat(),
    );
    assert!(a == bytes[100..1_048_676] && a == b, "ranges differ");
    let big = url("/big.bin");
    for (name, stream) in [("got", false), ("streamed", true)] {
        let target = tmp.path().join(name);
        let mut args = vec!["drive", "get", &big, target.to_str().unwrap()];
        if stream {
            args.push("--stream");
        }
        ok(&d, &args);
        assert!(std::fs::read(&target).unwrap() == bytes, "{name} differs");
    }

    // Other files cleared again and again while big files are read: every read is
    // exact, whichever way each chunk came.
    let small = tmp.path().join("small");
    std::fs::write(&small, pattern(6, 200_000)).unwrap();
    let churn = {
        let (home, key) = (d.home.clone(), key.clone());
        std::thread::spawn(move || {
            let ctl = hyperd_tests::daemon::bin("hyperctl").unwrap();
            let run = |args: &[&str]| {
                let out = std::process::Command::new(&ctl)
                    .arg("--home")
                    .arg(&home)
                    .args(args)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
            };
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut clears = 0;
            while Instant::now() < deadline {
                let url = format!("hyper://{key}/churn/{clears}");
                run(&["drive", "put", small.to_str().unwrap(), &url]);
                run(&["drive", "clear", &url]);
                clears += 1;
            }
            clears
        })
    };
    let mut reads = 0;
    while !churn.is_finished() {
        assert!(ok(&d, &["drive", "cat", &url("/big.bin")]) == bytes);
        reads += 1;
    }
    assert!(churn.join().unwrap() > 0 && reads > 0);

    // A clear of the file: counted, and the file is no longer located.
    let before = drives
        .storage_clears(StorageClearsRequest {})
        .await
        .unwrap()
        .into_inner()
        .clears;
    let located = drives
        .locate_file(locate(0, None))
        .await
        .unwrap()
        .into_inner();
    drives
        .clear(DriveClearRequest {
            location: at(&key, "/big.bin"),
        })
        .await
        .unwrap();
    let after = drives
        .storage_clears(StorageClearsRequest {})
        .await
        .unwrap()
        .into_inner()
        .clears;
    assert!(after > before && after > located.clears);
    let refused = drives.locate_file(locate(0, None)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("/big.bin"), "{refused:?}");
    // cat reports the missing blocks rather than printing zeros.
    let out = d
        .ctl(&["drive", "cat", "--timeout-ms", "300", &url("/big.bin")])
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        out.stdout.is_empty(),
        "cat printed {} bytes",
        out.stdout.len()
    );
}
