//! `hyperctl drive …` against real `hyperd` processes, typed as a user would: every
//! command on one daemon (human and `--json` output, errors), then two daemons sharing a
//! drive: import on one, follow, list, read and download on the other, live changes seen
//! by `watch` and `log --live`, and everything kept when both restart.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hyperd_tests::daemon::{bin, Daemon};
use hyperd_tests::eventually;
use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `hyperctl args…` on `daemon`, which must succeed; returns stdout.
fn ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.ctl(args).unwrap();
    assert!(
        out.status.success(),
        "hyperctl {args:?} failed: {}\n{}",
        text(&out.stderr),
        daemon.log()
    );
    text(&out.stdout)
}

/// Runs `hyperctl args…`, which must fail with exit code 1 and one line on stderr
/// containing `expected`.
fn fails(daemon: &Daemon, args: &[&str], expected: &str) {
    let out: Output = daemon.ctl(args).unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "hyperctl {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "hyperctl {args:?}: {err}");
    assert!(err.contains(expected), "hyperctl {args:?}: {err}");
}

/// A `hyperctl` process left running (watch, log --live), its stdout read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(daemon: &Daemon, args: &[&str]) -> Running {
        let mut child = Command::new(bin("hyperctl").unwrap())
            .arg("--home")
            .arg(&daemon.home)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    /// Waits for a line containing `needle`; returns it.
    fn expect(&self, needle: &str, daemon: &Daemon) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?}; saw {seen:?}\n{}", daemon.log());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn drive_commands_on_one_daemon() {
    let d = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let created = d.ctl_json(&["drive", "create", "--name", "docs"]).unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert_eq!(created["writable"], true);
    assert_eq!(created["name"], "docs");
    assert_eq!(created["url"], format!("hyper://{key}"));
    // The same name gives the same drive.
    let again = d.ctl_json(&["drive", "create", "--name", "docs"]).unwrap();
    assert_eq!(again["key"], key.as_str());
    let url = |path: &str| format!("hyper://{key}{path}");

    // put: a file (keeping its mode), into a directory URL, and stdin.
    let local = work.path().join("run.sh");
    std::fs::write(&local, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o755)).unwrap();
    let put = d
        .ctl_json(&["drive", "put", local.to_str().unwrap(), &url("/bin/")])
        .unwrap();
    assert_eq!(put["url"], url("/bin/run.sh"));
    assert_eq!(put["size"], 18);
    let out = Command::new(bin("hyperctl").unwrap())
        .arg("--home")
        .arg(&d.home)
        .args(["drive", "put", "-", &url("/notes/a b ü.txt")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"from stdin\n")
                .unwrap();
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("wrote 11 B to hyper://"));

    // cat, ranges, and the key without hyper://.
    assert_eq!(
        ok(&d, &["drive", "cat", &url("/notes/a b ü.txt")]),
        "from stdin\n"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "drive",
                "cat",
                &format!("{key}/bin/run.sh"),
                "--start",
                "10",
                "--end",
                "14"
            ]
        ),
        "echo"
    );

    // mkdir, ln -s, stat.
    ok(&d, &["drive", "mkdir", &url("/empty")]);
    ok(&d, &["drive", "ln", "-s", "bin/run.sh", &url("/run")]);
    let stat = d.ctl_json(&["drive", "stat", &url("/run")]).unwrap();
    assert_eq!(stat["type"], "symlink");
    assert_eq!(stat["linkname"], "bin/run.sh");
    let stat = d.ctl_json(&["drive", "stat", "-L", &url("/run")]).unwrap();
    assert_eq!(stat["type"], "file");
    assert_eq!(stat["mode"].as_u64().unwrap() & 0o777, 0o755);
    assert_eq!(stat["size"], 18);
    let human = ok(&d, &["drive", "stat", &url("/bin/run.sh")]);
    assert!(human.contains("-rwxr-xr-x (755)"), "{human}");

    // ls: sorted names, -l like ls -l, -r relative paths, --json one object per line.
    assert_eq!(
        ok(&d, &["drive", "ls", &url("/")]),
        "bin\nempty\nnotes\nrun\n"
    );
    let long = ok(&d, &["drive", "ls", "-l", &url("/")]);
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 4, "{long}");
    assert!(
        lines[0].starts_with("drwx") && lines[0].ends_with(" bin"),
        "{long}"
    );
    assert!(
        lines[1].starts_with("drwxr-xr-x") && lines[1].ends_with(" empty"),
        "{long}"
    );
    assert!(
        lines[3].starts_with('l') && lines[3].ends_with(" run -> bin/run.sh"),
        "{long}"
    );
    assert_eq!(
        ok(&d, &["drive", "ls", "-r", &url("/")]),
        "bin/run.sh\nempty\nnotes/a b ü.txt\nrun\n"
    );
    let listed: Vec<Value> = ok(&d, &["--json", "drive", "ls", "-r", &url("/notes")])
        .lines()
        .map(json_line)
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "a b ü.txt");
    assert_eq!(listed[0]["stat"]["size"], 11);

    // get: into a directory, to a name, to stdout; the mode comes along.
    ok(
        &d,
        &[
            "drive",
            "get",
            &url("/bin/run.sh"),
            work.path().to_str().unwrap(),
        ],
    );
    let got = work.path().join("run.sh");
    assert_eq!(std::fs::read(&got).unwrap(), b"#!/bin/sh\necho hi\n");
    let got_as = work.path().join("copy.txt");
    ok(
        &d,
        &[
            "drive",
            "get",
            &url("/notes/a b ü.txt"),
            got_as.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&got_as).unwrap(), b"from stdin\n");
    assert_eq!(
        std::fs::metadata(&got_as).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        ok(&d, &["drive", "get", &url("/notes/a b ü.txt"), "-"]),
        "from stdin\n"
    );
    fails(&d, &["drive", "get", &url("/notes")], "is a directory");

    // mv, truncate, meta.
    ok(
        &d,
        &["drive", "mv", &url("/notes/a b ü.txt"), "/notes/b.txt"],
    );
    fails(&d, &["drive", "cat", &url("/notes/a b ü.txt")], "a b ü.txt");
    ok(&d, &["drive", "truncate", &url("/notes/b.txt"), "4"]);
    assert_eq!(ok(&d, &["drive", "cat", &url("/notes/b.txt")]), "from");
    assert_eq!(
        ok(
            &d,
            &[
                "drive",
                "meta",
                &url("/notes/b.txt"),
                "color=blue",
                "size=xl"
            ]
        ),
        "color=blue\nsize=xl\n"
    );
    let meta = d
        .ctl_json(&["drive", "meta", &url("/notes/b.txt"), "--delete", "size"])
        .unwrap();
    assert_eq!(meta, serde_json::json!({ "color": hex::encode("blue") }));

    // A second drive mounted inside the first.
    let other = d.ctl_json(&["drive", "create"]).unwrap();
    let other_key = other["key"].as_str().unwrap().to_string();
    ok(
        &d,
        &[
            "drive",
            "put",
            local.to_str().unwrap(),
            &format!("{other_key}/x.sh"),
        ],
    );
    ok(&d, &["drive", "mount", &url("/mnt"), &other_key]);
    let mounts = d.ctl_json(&["drive", "mounts", &url("/")]).unwrap();
    assert_eq!(mounts[0]["path"], "/mnt", "{mounts}");
    assert_eq!(mounts[0]["mount"]["key"], other_key.as_str(), "{mounts}");
    assert_eq!(ok(&d, &["drive", "ls", &url("/mnt")]), "x.sh\n");
    assert!(ok(&d, &["drive", "ls", "-l", &url("/")])
        .contains(&format!("mnt (mount of hyper://{other_key})")));
    assert!(ok(&d, &["drive", "ls", "-r", &url("/")]).contains("mnt/x.sh\n"));
    assert!(!ok(&d, &["drive", "ls", "-r", "--no-mounts", &url("/")]).contains("x.sh"));
    ok(&d, &["drive", "unmount", &url("/mnt")]);
    fails(&d, &["drive", "ls", &url("/mnt")], "/mnt");

    // rm: a file, a non-empty directory only with -r.
    fails(&d, &["drive", "rm", &url("/bin")], "use -r");
    let removed = d.ctl_json(&["drive", "rm", "-r", &url("/bin")]).unwrap();
    assert_eq!(removed["removed"].as_u64().unwrap(), 1, "{removed}");

    // History: log, a checkout by URL, diff between versions.
    let log: Vec<Value> = ok(&d, &["--json", "drive", "log", &url("/")])
        .lines()
        .map(json_line)
        .collect();
    let first_put = log
        .iter()
        .find(|c| c["path"] == "/bin/run.sh" && c["type"] == "put")
        .unwrap();
    let v = first_put["version"].as_u64().unwrap();
    assert_eq!(
        ok(
            &d,
            &["drive", "cat", &format!("hyper://{key}+{v}/bin/run.sh")]
        ),
        "#!/bin/sh\necho hi\n"
    );
    fails(
        &d,
        &[
            "drive",
            "put",
            local.to_str().unwrap(),
            &format!("hyper://{key}+{v}/x"),
        ],
        "read-only",
    );
    let diff = ok(&d, &["drive", "diff", &url("/"), "--from", &v.to_string()]);
    assert!(diff.contains("del     /bin/run.sh"), "{diff}");
    assert!(diff.contains("put     /notes/b.txt"), "{diff}");

    // info and list.
    let info = d.ctl_json(&["drive", "info", &url("/")]).unwrap();
    let version = info["version"].as_u64().unwrap();
    assert!(version > v, "{info}");
    assert_eq!(info["contentKey"].as_str().unwrap().len(), 64);
    let list = d.ctl_json(&["drive", "list"]).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let table = ok(&d, &["drive", "list"]);
    assert!(table.starts_with("KEY") && table.contains(&key), "{table}");

    // Errors name the input; a malformed URL is refused before connecting.
    fails(&d, &["drive", "cat", &url("/nope")], "/nope");
    fails(&d, &["drive", "ls", "hyper://abc/x"], "not a drive URL");
    fails(
        &d,
        &["drive", "cat", &format!("hyper://{key}+{}/x", version + 5)],
        "version",
    );

    // Content no peer serves: an export gives up as a read does.
    ok(&d, &["drive", "clear", &url("/notes/b.txt")]);
    let out = work.path().join("export");
    let started = Instant::now();
    fails(
        &d,
        &[
            "drive",
            "export",
            &url("/notes"),
            out.to_str().unwrap(),
            "--timeout-ms",
            "500",
        ],
        "no peer served",
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A followed drive no peer has served: reads say so rather than "no such file".
    let unknown = "ab".repeat(32);
    ok(&d, &["drive", "follow", &unknown]);
    fails(&d, &["drive", "ls", &unknown], "nothing of drive");
    fails(
        &d,
        &["drive", "cat", &format!("{unknown}/a.txt")],
        "no peer has served it",
    );
    ok(&d, &["drive", "rm-drive", &unknown]);

    // rm-drive: gone from the list and from the daemon.
    ok(&d, &["drive", "rm-drive", &other_key]);
    fails(&d, &["drive", "info", &other_key], &other_key);
    assert_eq!(
        d.ctl_json(&["drive", "list"])
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Writes the test tree: nested directories, an empty file and directory, a symlink,
/// unicode and spaces in names, an executable, and a multi-block file.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("docs/deep/er")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    std::fs::write(root.join("docs/deep/er/leaf.txt"), "leaf\n").unwrap();
    std::fs::write(root.join("docs/naïve café.txt"), "unicode\n").unwrap();
    std::fs::write(root.join("zero"), "").unwrap();
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), big).unwrap();
    let tool = root.join("tool.sh");
    std::fs::write(&tool, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("docs/deep/er/leaf.txt", root.join("leaf")).unwrap();
}

#[test]
fn two_daemons_share_a_drive_live_and_across_restarts() {
    let mut a = Daemon::start().unwrap();
    let mut b = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_tree(&tree);

    let key = a.ctl_json(&["drive", "create"]).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let url = |path: &str| format!("hyper://{key}{path}");
    let summary = a
        .ctl_json(&["drive", "import", tree.to_str().unwrap(), &url("/site")])
        .unwrap();
    assert_eq!(summary["bytesWritten"], 1_500_000 + 5 + 8 + 10, "{summary}");
    assert!(summary["version"].as_u64().unwrap() > 1, "{summary}");
    let human = ok(
        &a,
        &["drive", "import", tree.to_str().unwrap(), &url("/site")],
    );
    assert!(human.contains("0 added, 0 changed"), "{human}");

    // B connects and follows; the listing and reads come from A.
    ok(&b, &["peer", "connect", &a.listen]);
    let followed = b.ctl_json(&["drive", "follow", &url("/")]).unwrap();
    assert_eq!(followed["writable"], false);
    let info = eventually(Duration::from_secs(20), "B to learn A's version", || {
        let info = b.ctl_json(&["drive", "info", &key]).unwrap();
        (info["version"].as_u64().unwrap() > 1).then_some(info)
    });
    assert_eq!(
        info["version"],
        a.ctl_json(&["drive", "info", &key]).unwrap()["version"]
    );
    let listing = ok(&b, &["drive", "ls", "-r", &url("/site")]);
    assert_eq!(
        listing,
        "big.bin\ndocs\ndocs/deep\ndocs/deep/er\ndocs/deep/er/leaf.txt\ndocs/naïve café.txt\nempty dir\nleaf\ntool.sh\nzero\n"
    );
    assert_eq!(
        ok(&b, &["drive", "cat", &url("/site/leaf")]),
        "leaf\n",
        "through the symlink"
    );
    let stats = b
        .ctl_json(&["drive", "stats", &url("/site/big.bin")])
        .unwrap();
    assert_eq!(stats[0]["downloadedBlocks"], 0, "sparse: {stats}");
    let done = b.ctl_json(&["drive", "download", &url("/site")]).unwrap();
    assert_eq!(done["done"], true);
    assert_eq!(done["bytesDone"], done["bytesTotal"]);
    let stats = b
        .ctl_json(&["drive", "stats", &url("/site/big.bin")])
        .unwrap();
    assert_eq!(stats[0]["downloadedBlocks"], stats[0]["blocks"], "{stats}");

    // Export from B equals the tree.
    let out = work.path().join("out");
    ok(
        &b,
        &["drive", "export", &url("/site"), out.to_str().unwrap()],
    );
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&tree)
        .arg(&out)
        .output()
        .unwrap();
    assert!(diff.status.success(), "{}", text(&diff.stdout));

    // Live: B's watch and log --live see what A writes.
    let since = info["version"].as_u64().unwrap().to_string();
    let watch = Running::start(&b, &["drive", "watch", &url("/site")]);
    let log = Running::start(
        &b,
        &[
            "--json",
            "drive",
            "log",
            &url("/"),
            "--since",
            &since,
            "--live",
        ],
    );
    // The watch starts when hyperd has opened it: until then, probe.
    let mut probes = 0;
    loop {
        ok(
            &a,
            &["drive", "mkdir", &url(&format!("/site/probe{probes}"))],
        );
        probes += 1;
        match watch.lines.recv_timeout(Duration::from_secs(2)) {
            Ok(line) if line.contains("/site/probe") => break,
            Ok(line) => panic!("unexpected change {line}"),
            Err(_) => assert!(probes < 10, "the watch never reported\n{}", b.log()),
        }
    }
    ok(&a, &["drive", "mkdir", &url("/site/new")]);
    let file = work.path().join("fresh.txt");
    std::fs::write(&file, "fresh\n").unwrap();
    ok(
        &a,
        &["drive", "put", file.to_str().unwrap(), &url("/site/new/")],
    );
    let line = watch.expect("/site/new/fresh.txt", &b);
    assert!(line.contains("put"), "{line}");
    let change = json_line(&log.expect("/site/new/fresh.txt", &b));
    assert_eq!(change["type"], "put");
    let made = change["version"].as_u64().unwrap();
    assert_eq!(
        ok(&b, &["drive", "cat", &url("/site/new/fresh.txt")]),
        "fresh\n"
    );
    drop((watch, log));

    // Both restart: B keeps what it downloaded (read with A stopped), A its drive.
    assert!(a.signal_and_wait(15).unwrap().success());
    assert!(b.signal_and_wait(15).unwrap().success());
    b.restart().unwrap();
    let info = b.ctl_json(&["drive", "info", &key]).unwrap();
    assert_eq!(info["version"].as_u64().unwrap(), made, "{info}");
    assert_eq!(info["writable"], false);
    let big = Command::new(bin("hyperctl").unwrap())
        .arg("--home")
        .arg(&b.home)
        .args(["drive", "cat", &url("/site/big.bin"), "--timeout-ms", "500"])
        .output()
        .unwrap();
    assert!(big.status.success(), "{}", text(&big.stderr));
    assert_eq!(big.stdout, std::fs::read(tree.join("big.bin")).unwrap());
    a.restart().unwrap();
    let info = a.ctl_json(&["drive", "info", &key]).unwrap();
    assert_eq!(info["writable"], true);
    assert_eq!(info["version"].as_u64().unwrap(), made);
    std::fs::write(&file, "after restart\n").unwrap();
    ok(
        &a,
        &["drive", "put", file.to_str().unwrap(), &url("/site/new/")],
    );
    // B redials A by itself and reads the new version.
    eventually(Duration::from_secs(30), "B to read A's new write", || {
        let out = b
            .ctl(&[
                "drive",
                "cat",
                &url("/site/new/fresh.txt"),
                "--timeout-ms",
                "2000",
            ])
            .unwrap();
        (out.stdout == b"after restart\n").then_some(())
    });
}
