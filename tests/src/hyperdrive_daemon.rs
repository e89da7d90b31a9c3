//! hyperdrive-daemon 1.14.5, the JS daemon, as a child process for tests and benchmarks:
//! installed by `scripts/setup` from `tests/bench-js/hyperdrive-daemon` (npm lock file),
//! run in the foreground with its storage, ports and HOME in a temp dir of its own, and
//! driven through its client library (`client.js` next to the lock file).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::netns::Host;

/// Where `scripts/setup` installs hyperdrive-daemon, next to `client.js`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-js/hyperdrive-daemon")
}

/// The installed `hyperdrive-daemon` module, or how to install it: a test never passes
/// without it.
pub fn module() -> Result<PathBuf> {
    let module = dir().join("node_modules/hyperdrive-daemon");
    if !module.join("index.js").exists() {
        bail!(
            "hyperdrive-daemon is not installed in {}: run scripts/setup",
            dir().display()
        );
    }
    Ok(module)
}

/// A free TCP port on the machine's loopback (free when this returns; in a fresh
/// namespace every port is).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How a [`HyperdriveDaemon`] starts.
#[derive(Debug, Default)]
pub struct Options<'a> {
    /// Its DHT bootstrap nodes (`--bootstrap HOST:PORT,…`); none: `--bootstrap false`,
    /// no DHT at all (never the public bootstrap hosts).
    pub bootstrap: Option<String>,
    /// The network namespace it runs in, if not the machine's.
    pub host: Option<&'a Host>,
}

/// A running hyperdrive-daemon: `root` its storage (`--storage`, where it also writes
/// its gRPC endpoint and token), `home` the HOME of it and its CLI, so nothing touches
/// the user's `~/.hyperdrive`. Killed when dropped.
pub struct HyperdriveDaemon {
    child: Child,
    /// The `hyperdrive-daemon` module it runs.
    pub module: PathBuf,
    /// Its storage root.
    pub root: PathBuf,
    /// Its HOME.
    pub home: PathBuf,
    /// The port its swarm prefers (`--swarmPort`; the next ones if taken).
    pub swarm_port: u16,
    log_path: PathBuf,
    netns: Option<String>,
    _dir: tempfile::TempDir,
}

impl HyperdriveDaemon {
    /// Starts the daemon as `hyperdrive start` would (its heap flag, `index.js` run by
    /// node) but in the foreground, on free ports for its gRPC server and swarm; returns
    /// once it serves.
    pub fn start(options: &Options) -> Result<HyperdriveDaemon> {
        let module = module()?;
        let dir = tempfile::Builder::new()
            .prefix("hyperdrive-daemon-test")
            .tempdir()?;
        let (root, home) = (dir.path().join("root"), dir.path().join("home"));
        std::fs::create_dir_all(&home)?;
        let log_path = dir.path().join("daemon.log");
        let log = std::fs::File::create(&log_path)?;
        let swarm_port = free_port()?;
        let mut command = Command::new("node");
        command
            .arg("--max-old-space-size=4096")
            .arg(module.join("index.js"))
            .arg("--storage")
            .arg(&root)
            .args(["--port", &free_port()?.to_string()])
            .args(["--swarmPort", &swarm_port.to_string()])
            .args([
                "--bootstrap",
                options.bootstrap.as_deref().unwrap_or("false"),
            ])
            .env("HOME", &home)
            .env_remove("HYPERDRIVE_ENDPOINT")
            .env_remove("HYPERDRIVE_TOKEN")
            .env_remove("HYPERDRIVE_STORAGE")
            .current_dir(dir.path());
        if let Some(host) = options.host {
            command = host.wrap(&command);
        }
        // `ip netns exec` execs node: the child's pid is the daemon's.
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning hyperdrive-daemon (node)")?;
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("server listening") {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("hyperdrive-daemon exited at start ({status}):\n{log}");
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("hyperdrive-daemon did not listen within 30 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(HyperdriveDaemon {
            child,
            module,
            root,
            home,
            swarm_port,
            log_path,
            netns: options.host.map(|h| h.netns.clone()),
            _dir: dir,
        })
    }

    /// The node process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far (pino JSON lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `node client.js --storage ROOT args…` (see that script), in the daemon's
    /// namespace, where its gRPC endpoint (on localhost) is; fails with the script's
    /// error and the daemon's log, or returns the JSON line it printed.
    pub fn client(&self, args: &[&str]) -> Result<serde_json::Value> {
        let script = dir().join("client.js");
        let mut command = Command::new("node");
        command
            .arg(&script)
            .arg("--storage")
            .arg(&self.root)
            .args(args)
            .env("HOME", &self.home)
            .current_dir(dir());
        if let Some(ns) = &self.netns {
            command = crate::netns::wrap(ns, &command);
        }
        let out = command
            .stdin(Stdio::null())
            .output()
            .context("running node client.js")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        ensure!(
            out.status.success(),
            "client.js {} failed ({}): {line}\n{}\nhyperdrive-daemon's log:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_str(line).with_context(|| format!("client.js printed {stdout:?}"))
    }

    /// Stops it as `hyperdrive stop` does (SIGTERM: it unannounces, closes its
    /// corestore and exits); kills it if it has not exited within 20 s.
    pub fn stop(mut self) -> Result<()> {
        let pid = self.child.id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        ensure!(
            status.success(),
            "kill -TERM {pid} (hyperdrive-daemon) failed"
        );
        crate::daemon::wait_timeout(&mut self.child, Duration::from_secs(20))?;
        Ok(())
    }
}

impl Drop for HyperdriveDaemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
