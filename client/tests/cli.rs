//! The hyperctl binary without a daemon: help, usage errors, key checking, the "not
//! running" message, completions and `service install`.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn hyperctl(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hyperctl"));
    command.args(args).env_remove("HYPERD_HOME");
    command
}

fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// Exactly one line on stderr, starting with "hyperctl: ".
fn one_line(stderr: &str) -> &str {
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line, got:\n{stderr}"
    );
    assert!(stderr.starts_with("hyperctl: "), "{stderr}");
    stderr.trim_end()
}

#[test]
fn help_works() {
    let (output, stdout, _) = run(&mut hyperctl(&["--help"]));
    assert!(output.status.success());
    for word in [
        "start",
        "stop",
        "status",
        "core",
        "drive",
        "peer",
        "service",
        "completions",
    ] {
        assert!(stdout.contains(word), "{word} missing from:\n{stdout}");
    }
    let (output, stdout, _) = run(&mut hyperctl(&["core", "append", "--help"]));
    assert!(output.status.success());
    assert!(stdout.contains("--block-size"), "{stdout}");
}

#[test]
fn usage_errors_are_one_line_with_code_2() {
    for args in [
        &["--bogus"][..],
        &["core", "get", KEY],
        &["core", "get", KEY, "x"],
        &["--timeout", "0", "status"],
        &["core", "append", KEY, "data", "--file", "f"],
    ] {
        let (output, _, stderr) = run(&mut hyperctl(args));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        one_line(&stderr);
    }
}

#[test]
fn status_without_a_daemon_says_so_quickly() {
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (output, stdout, stderr) = run(&mut hyperctl(&[
        "status",
        "--home",
        home.path().to_str().unwrap(),
    ]));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout.is_empty());
    let socket = home.path().join("hyperd.sock");
    assert_eq!(
        one_line(&stderr),
        format!(
            "hyperctl: hyperd is not running (no answer on {}); start it with `hyperctl start`",
            socket.display()
        )
    );

    // HYPERD_HOME works like --home; `stop` has its own wording.
    let (output, _, stderr) = run(hyperctl(&["stop"]).env("HYPERD_HOME", home.path()));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        one_line(&stderr),
        format!(
            "hyperctl: hyperd is not running (no answer on {})",
            socket.display()
        )
    );
}

#[test]
fn keys_are_checked_before_connecting() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path().to_str().unwrap();
    for bad in ["zz", &KEY[..63], "hyper://nope"] {
        let (output, _, stderr) = run(&mut hyperctl(&["--home", home, "core", "info", bad]));
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            one_line(&stderr),
            format!("hyperctl: invalid key '{bad}': expected 64 hex characters or hyper://<key>")
        );
    }
    // Good keys get as far as the (missing) daemon.
    for good in [
        KEY.to_string(),
        format!("hyper://{KEY}"),
        KEY.to_uppercase(),
    ] {
        let (output, _, stderr) = run(&mut hyperctl(&["--home", home, "core", "info", &good]));
        assert_eq!(output.status.code(), Some(1));
        assert!(
            one_line(&stderr).contains("hyperd is not running"),
            "{stderr}"
        );
    }
}

#[test]
fn drive_urls_are_checked_before_connecting() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path().to_str().unwrap();
    for (args, reason) in [
        (
            vec!["drive", "ls", "hyper://abc/x"],
            "the key is not 64 hex characters",
        ),
        (
            vec!["drive", "cat", "dat://x"],
            "the scheme is not hyper://",
        ),
        (
            vec!["drive", "cat", &format!("{KEY}+v1/a")],
            "the version after '+' is not a number",
        ),
        (vec!["drive", "mv", "nope", "/b"], "not a drive URL"),
        (
            vec!["drive", "mount", &format!("{KEY}/m"), "zz"],
            "invalid key 'zz'",
        ),
    ] {
        let mut all = vec!["--home", home];
        all.extend(&args);
        let (output, _, stderr) = run(&mut hyperctl(&all));
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let line = one_line(&stderr);
        assert!(line.contains(reason), "{args:?}: {line}");
    }
    // A good URL gets as far as the (missing) daemon.
    let (output, _, stderr) = run(&mut hyperctl(&["--home", home, "drive", "ls", KEY]));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        one_line(&stderr).contains("hyperd is not running"),
        "{stderr}"
    );
}

#[test]
fn completions() {
    let (output, stdout, _) = run(&mut hyperctl(&["completions", "bash"]));
    assert!(output.status.success());
    assert!(
        stdout.contains("complete ") && stdout.contains("hyperctl"),
        "{stdout}"
    );
    let (output, stdout, _) = run(&mut hyperctl(&["completions", "fish"]));
    assert!(output.status.success());
    assert!(stdout.contains("complete -c hyperctl"), "{stdout}");
}

#[cfg(target_os = "linux")]
#[test]
fn service_install_writes_a_unit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let hyperd = dir.path().join("bin").join("hyperd");
    fs::create_dir_all(hyperd.parent().unwrap()).unwrap();
    fs::write(&hyperd, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&hyperd, fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");

    let (output, stdout, stderr) = run(hyperctl(&[
        "--home",
        home.to_str().unwrap(),
        "service",
        "install",
        "--hyperd",
        hyperd.to_str().unwrap(),
    ])
    .env("XDG_CONFIG_HOME", &config));
    assert!(output.status.success(), "{stderr}");
    let unit_path = config.join("systemd/user/hyperd.service");
    assert!(stdout.contains(unit_path.to_str().unwrap()), "{stdout}");
    assert!(
        stdout.contains("systemctl --user enable --now hyperd"),
        "{stdout}"
    );
    let unit = fs::read_to_string(&unit_path).unwrap();
    let exec = format!(
        "\nExecStart={} --home {}\n",
        hyperd.display(),
        home.display()
    );
    assert!(unit.contains(&exec), "{exec:?} not in:\n{unit}");

    // And uninstall removes it.
    let (output, _, stderr) =
        run(hyperctl(&["service", "uninstall"]).env("XDG_CONFIG_HOME", &config));
    assert!(output.status.success(), "{stderr}");
    assert!(!unit_path.exists());
    let (output, _, stderr) =
        run(hyperctl(&["service", "uninstall"]).env("XDG_CONFIG_HOME", &config));
    assert_eq!(output.status.code(), Some(1));
    assert!(one_line(&stderr).contains("not installed"), "{stderr}");
}

#[test]
fn start_without_hyperd_explains() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-hyperd");
    let (output, _, stderr) = run(&mut hyperctl(&[
        "--home",
        dir.path().to_str().unwrap(),
        "start",
        "--hyperd",
        missing.to_str().unwrap(),
    ]));
    assert_eq!(output.status.code(), Some(1));
    assert!(one_line(&stderr).contains("no-such-hyperd"), "{stderr}");
}
