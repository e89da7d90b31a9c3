//! The service templates in `packaging/`, rendered the way `hyperctl service install`
//! renders them: the systemd unit passes `systemd-analyze verify` (when installed) and
//! has the settings we rely on; the launchd plist is well-formed XML with the keys
//! launchd needs.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hyperctl::service::{render_launchd_plist, render_systemd_unit};

/// A directory whose name needs quoting (space) and escaping (`%`, `&`), with an
/// executable `hyperd` in it.
fn fake_hyperd(dir: &Path) -> PathBuf {
    let bin = dir.join("my bin%1 & co");
    fs::create_dir_all(&bin).unwrap();
    let hyperd = bin.join("hyperd");
    fs::write(&hyperd, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&hyperd, fs::Permissions::from_mode(0o755)).unwrap();
    hyperd
}

/// `[section] key=value` pairs of a unit file (one value per key; good enough here).
fn unit_settings(unit: &str) -> HashMap<(String, String), String> {
    let mut settings = HashMap::new();
    let mut section = String::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value line");
        settings.insert((section.clone(), key.to_string()), value.to_string());
    }
    settings
}

#[test]
fn systemd_unit() {
    let dir = tempfile::tempdir().unwrap();
    let hyperd = fake_hyperd(dir.path());
    let hyperd_text = hyperd.to_str().unwrap();
    let unit = render_systemd_unit(hyperd_text, Some("/srv/hyper d"));
    assert!(!unit.contains('@'), "a placeholder is left:\n{unit}");

    let settings = unit_settings(&unit);
    let get = |section: &str, key: &str| {
        settings
            .get(&(section.to_string(), key.to_string()))
            .map(String::as_str)
    };
    let quoted = format!("\"{}\"", hyperd_text.replace('%', "%%"));
    assert_eq!(
        get("Service", "ExecStart"),
        Some(format!("{quoted} --home \"/srv/hyper d\"").as_str())
    );
    assert_eq!(get("Service", "Type"), Some("notify"));
    assert_eq!(get("Service", "Restart"), Some("on-failure"));
    assert_eq!(get("Service", "RestartSec"), Some("2"));
    assert_eq!(get("Service", "NoNewPrivileges"), Some("yes"));
    // Room for many open cores (4 descriptors each) and peers.
    assert_eq!(get("Service", "LimitNOFILE"), Some("65536"));
    assert_eq!(get("Install", "WantedBy"), Some("default.target"));
    // Needs user namespaces in a user unit, so it must not be there (see the README).
    assert_eq!(get("Service", "PrivateTmp"), None);

    // Without --home the daemon finds its own.
    let plain = render_systemd_unit("/usr/local/bin/hyperd", None);
    assert!(
        plain.contains("\nExecStart=/usr/local/bin/hyperd\n"),
        "{plain}"
    );

    let unit_file = dir.path().join("hyperd.service");
    fs::write(&unit_file, &unit).unwrap();
    verify_with_systemd(&unit_file, dir.path());
}

/// Runs `systemd-analyze --user verify`: no errors and no warnings about the unit.
fn verify_with_systemd(unit_file: &Path, scratch: &Path) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!();
        eprintln!("==================================================================");
        eprintln!("SKIPPED: systemd-analyze not installed; only structural checks ran");
        eprintln!("==================================================================");
        return;
    }
    // A user manager needs a runtime directory, which CI and containers may not have.
    let runtime = scratch.join("runtime");
    fs::create_dir_all(&runtime).unwrap();
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).unwrap();
    let run = |user: bool| {
        let mut command = Command::new("systemd-analyze");
        if user {
            command.arg("--user");
        }
        command
            .args(["verify", unit_file.to_str().unwrap()])
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap()
    };
    let mut output = run(true);
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if stderr.contains("Failed to initialize manager") {
        eprintln!(
            "note: no user manager possible here ({}); verifying in system mode",
            stderr.trim()
        );
        output = run(false);
        stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    }
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("hyperd.service") || l.contains("hyperd"))
        .collect();
    assert!(
        output.status.success() && complaints.is_empty(),
        "systemd-analyze verify failed ({}):\n{stderr}",
        output.status
    );
}

/// The `<dict>` of a plist as key → value element.
fn plist_dict<'a, 'input>(
    dict: roxmltree::Node<'a, 'input>,
) -> HashMap<String, roxmltree::Node<'a, 'input>> {
    assert!(dict.has_tag_name("dict"));
    let children: Vec<_> = dict.children().filter(|n| n.is_element()).collect();
    assert_eq!(children.len() % 2, 0, "a <dict> holds key/value pairs");
    children
        .chunks(2)
        .map(|pair| {
            assert!(
                pair[0].has_tag_name("key"),
                "expected <key>, got {:?}",
                pair[0]
            );
            (pair[0].text().unwrap_or_default().to_string(), pair[1])
        })
        .collect()
}

fn strings(array: roxmltree::Node) -> Vec<String> {
    assert!(array.has_tag_name("array"));
    array
        .children()
        .filter(|n| n.is_element())
        .map(|n| {
            assert!(n.has_tag_name("string"));
            n.text().unwrap_or_default().to_string()
        })
        .collect()
}

#[test]
fn launchd_plist() {
    let dir = tempfile::tempdir().unwrap();
    let hyperd = fake_hyperd(dir.path());
    let hyperd_text = hyperd.to_str().unwrap();
    let home = "/Users/me/hyper <d> & co";
    let log = "/Users/me/hyper <d> & co/logs/hyperd.log";
    let plist = render_launchd_plist(hyperd_text, Some(home), log);
    assert!(!plist.contains("@HYPERD@") && !plist.contains("@ARGS@") && !plist.contains("@LOG@"));

    let options = || roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&plist, options())
        .unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{plist}"));
    let root = doc.root_element();
    assert!(root.has_tag_name("plist"));
    assert_eq!(root.attribute("version"), Some("1.0"));
    let dict = root.children().find(|n| n.is_element()).unwrap();
    let keys = plist_dict(dict);

    assert_eq!(keys["Label"].text(), Some("org.hyperd.hyperd"));
    assert_eq!(
        strings(keys["ProgramArguments"]),
        [hyperd_text, "--home", home]
    );
    assert!(keys["RunAtLoad"].has_tag_name("true"));
    let keep_alive = plist_dict(keys["KeepAlive"]);
    assert!(keep_alive["SuccessfulExit"].has_tag_name("false"));
    let limits = plist_dict(keys["SoftResourceLimits"]);
    assert_eq!(limits["NumberOfFiles"].text(), Some("65536"));
    assert_eq!(keys["StandardOutPath"].text(), Some(log));
    assert_eq!(keys["StandardErrorPath"].text(), Some(log));

    // Without --home, the program is the only argument.
    let plain = render_launchd_plist("/usr/local/bin/hyperd", None, "/tmp/hyperd.log");
    let doc = roxmltree::Document::parse_with_options(&plain, options()).unwrap();
    let keys = plist_dict(
        doc.root_element()
            .children()
            .find(|n| n.is_element())
            .unwrap(),
    );
    assert_eq!(strings(keys["ProgramArguments"]), ["/usr/local/bin/hyperd"]);
}
