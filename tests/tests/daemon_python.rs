//! A client in another language: `tests/python/client_test.py` generates stubs from
//! `proto/` with grpcio-tools (installed by `scripts/setup` into `tests/python/.venv`)
//! and drives a real `hyperd`: status, create, append, get and a bad request on cores;
//! create, a streamed write and read, readdir, stat and a missing path on drives.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use hyperd_proto::v1::drives_client::DrivesClient;
use hyperd_proto::v1::{Location, StatRequest};
use hyperd_tests::daemon::Daemon;

#[tokio::test]
async fn python_grpc_client_drives_the_daemon() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("python/.venv/bin/python");
    assert!(
        python.exists(),
        "the Python client's environment is missing: run scripts/setup (it creates {})",
        python.display()
    );
    let daemon = Daemon::start().unwrap();
    let out = tokio::process::Command::new(&python)
        .arg(root.join("python/client_test.py"))
        .arg("--socket")
        .arg(daemon.socket())
        .arg("--proto-dir")
        .arg(root.join("../proto"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(result["ok"], true);
    assert_eq!(result["got"], "python");
    assert_eq!(result["badKey"], "INVALID_ARGUMENT");
    // What Python wrote is there for Rust clients too.
    let key = result["key"].as_str().unwrap();
    let info = daemon.ctl_json(&["core", "info", key]).unwrap();
    assert_eq!(info["length"], 3);
    assert_eq!(info["name"], "from-python");
    assert_eq!(result["readBytes"], 150_000);
    assert_eq!(result["names"], serde_json::json!(["py/data.bin"]));
    assert_eq!(result["missing"], "NOT_FOUND");
    let mut drives = DrivesClient::new(daemon.channel().await.unwrap());
    let location = Location {
        key: result["drive"].as_str().unwrap().to_string(),
        path: "/py/data.bin".into(),
        ..Location::default()
    };
    let stat = drives
        .stat(StatRequest {
            location: Some(location),
            lstat: false,
        })
        .await
        .unwrap()
        .into_inner()
        .stat
        .unwrap();
    assert_eq!((stat.size, stat.blocks), (150_000, 3));
    assert_eq!(result["driveVersion"], 2, "the header, then the file");
}
