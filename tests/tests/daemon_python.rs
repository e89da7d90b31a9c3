//! A client in another language: `tests/python/client_test.py` generates stubs from
//! `proto/` with grpcio-tools (installed by `scripts/setup` into `tests/python/.venv`)
//! and drives a real `hyperd` through status, create, append, get and a bad request.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use hyperd_tests::daemon::Daemon;

#[test]
fn python_grpc_client_drives_the_daemon() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("python/.venv/bin/python");
    assert!(
        python.exists(),
        "the Python client's environment is missing: run scripts/setup (it creates {})",
        python.display()
    );
    let daemon = Daemon::start().unwrap();
    let out = std::process::Command::new(&python)
        .arg(root.join("python/client_test.py"))
        .arg("--socket")
        .arg(daemon.socket())
        .arg("--proto-dir")
        .arg(root.join("../proto"))
        .output()
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
}
