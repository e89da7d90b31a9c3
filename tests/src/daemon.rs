//! Running real `hyperd` processes and `hyperctl` commands in tests, each daemon in its
//! own temporary home, and a gRPC client on a daemon's Unix socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyperd_proto::v1::daemon_client::DaemonClient;
use tonic::transport::{Channel, Endpoint};

/// A workspace binary (`hyperd`, `hyperctl`) built next to the test executable.
/// `scripts/test` builds them first (`cargo build --bins`); running a test without them
/// fails with that instruction rather than testing something else.
pub fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the test executable")?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is not built: run `cargo build --bins` first (scripts/test does)",
            path.display()
        );
    }
    Ok(path)
}

/// A `hyperd` child process with its own home.
pub struct Daemon {
    /// The daemon's home.
    pub home: PathBuf,
    /// Its peer address (`127.0.0.1:PORT`).
    pub listen: String,
    child: Option<Child>,
    /// The network namespace it runs in ([`crate::netns::Host`]), if not the machine's.
    netns: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts a daemon in a fresh temporary home (which the daemon creates), listening
    /// on a free loopback port.
    pub fn start() -> Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("hyperd-test").tempdir()?;
        let mut daemon = Daemon::start_in(&dir.path().join("home"), "127.0.0.1:0")?;
        daemon._dir = Some(dir);
        Ok(daemon)
    }

    /// Starts a daemon on `home` (kept after the daemon exits).
    pub fn start_in(home: &Path, listen: &str) -> Result<Daemon> {
        Daemon::start_limited(home, listen, None)
    }

    /// Starts a daemon on `home` whose open-file limit (soft and hard, so it cannot be
    /// raised) is `nofile`, when given: run under `prlimit`.
    pub fn start_limited(home: &Path, listen: &str, nofile: Option<u64>) -> Result<Daemon> {
        Daemon::spawn(home, listen, nofile, None)
    }

    /// Starts a daemon on `home` inside `host`'s network namespace, with mDNS local
    /// discovery as configured (on by default). Daemons on the machine's own network
    /// run with `--no-mdns`: they would multicast on its real interfaces and find the
    /// daemons of other tests.
    pub fn start_on_host(home: &Path, listen: &str, host: &crate::netns::Host) -> Result<Daemon> {
        Daemon::spawn(home, listen, None, Some(&host.netns))
    }

    fn spawn(
        home: &Path,
        listen: &str,
        nofile: Option<u64>,
        netns: Option<&str>,
    ) -> Result<Daemon> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(home))?;
        // What runs hyperd: `ip netns exec` and `prlimit` exec it in turn, so the child's
        // pid is hyperd's.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ns) = netns {
            argv.extend(["ip", "netns", "exec", ns].map(Into::into));
        }
        if let Some(n) = nofile {
            argv.extend([
                "prlimit".into(),
                format!("--nofile={n}:{n}").into(),
                "--".into(),
            ]);
        }
        argv.push(bin("hyperd")?.into());
        if netns.is_none() {
            argv.push("--no-mdns".into());
        }
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        let child = command
            .arg("--home")
            .arg(home)
            .arg("--listen")
            .arg(listen)
            // HYPERD_TEST_LOG sets another filter when debugging a test.
            .env(
                "RUST_LOG",
                std::env::var("HYPERD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning hyperd")?;
        let mut daemon = Daemon {
            home: home.to_owned(),
            listen: String::new(),
            child: Some(child),
            netns: netns.map(str::to_string),
            _dir: None,
        };
        daemon.wait_ready()?;
        let status = daemon.ctl_json(&["status"])?;
        daemon.listen = status["listenAddress"]
            .as_str()
            .context("status has no listenAddress")?
            .to_string();
        Ok(daemon)
    }

    /// Restarts the daemon on the same home and port: stops it first (SIGTERM) if it
    /// still runs.
    pub fn restart(&mut self) -> Result<()> {
        self.restart_limited(None)
    }

    /// Restarts the daemon on the same home and port, with an open-file limit if given
    /// (stopping it first if it still runs).
    pub fn restart_limited(&mut self, nofile: Option<u64>) -> Result<()> {
        if self.child.is_some() {
            // Whatever its exit status (it may have been stopped already), it is gone.
            self.signal_and_wait(15)?;
        }
        let dir = self._dir.take();
        let listen = self.listen.clone();
        let mut next = Daemon::spawn(&self.home, &listen, nofile, self.netns.as_deref())?;
        next._dir = dir;
        // `next` becomes the old daemon, which has exited: dropping it kills nothing.
        std::mem::swap(self, &mut next);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("hyperd exited at start ({status}):\n{}", self.log());
                }
            }
            let status = self.ctl(&["--json", "status"])?;
            if status.status.success() {
                // Answered by this child, not by another daemon still on the home.
                let pid = serde_json::from_slice::<serde_json::Value>(&status.stdout)
                    .ok()
                    .and_then(|s| s["pid"].as_u64());
                let ours = self.child.as_ref().map(|c| u64::from(c.id()));
                if pid != ours {
                    bail!(
                        "another hyperd (pid {pid:?}) answers on {}",
                        self.home.display()
                    );
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("hyperd did not answer within 20 s:\n{}", self.log())
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(&self.home)).unwrap_or_default()
    }

    /// The daemon's API socket.
    pub fn socket(&self) -> PathBuf {
        self.home.join("hyperd.sock")
    }

    /// Runs `hyperctl --home HOME args…`.
    pub fn ctl(&self, args: &[&str]) -> Result<Output> {
        Command::new(bin("hyperctl")?)
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running hyperctl")
    }

    /// Runs `hyperctl args…`, which must succeed; returns its stdout (an error names the
    /// command, its stderr and the daemon's log).
    pub fn ctl_ok(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = self.ctl(args)?;
        if !out.status.success() {
            bail!(
                "hyperctl {} failed ({}): {}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(out.stdout)
    }

    /// Runs `hyperctl --json args…`, which must succeed, and parses its output.
    pub fn ctl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all)?;
        if !out.status.success() {
            bail!(
                "hyperctl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "hyperctl {} printed no JSON: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's resident memory, in bytes (`VmRSS`).
    pub fn rss(&self) -> Result<u64> {
        let pid = self.pid().context("the daemon is not running")?;
        rss_of(pid)
    }

    /// The daemon's resident memory once it has stopped moving (two readings 200 ms apart
    /// within 1 MiB), or the last reading after 5 s.
    pub async fn settled_rss(&self) -> Result<u64> {
        let mut last = self.rss()?;
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.rss()?;
            if now.abs_diff(last) < 1 << 20 {
                return Ok(now);
            }
            last = now;
        }
        Ok(last)
    }

    /// The daemon's open file descriptors.
    pub fn open_fds(&self) -> Result<usize> {
        let pid = self.pid().context("the daemon is not running")?;
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
    }

    /// Sends `signal` and waits for the process to exit; returns its exit status.
    pub fn signal_and_wait(&mut self, signal: i32) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("the daemon is not running")?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} failed");
        }
        wait_timeout(&mut child, Duration::from_secs(20))
    }

    /// Waits for the daemon to exit by itself (after `hyperctl stop`).
    pub fn wait_exit(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("the daemon is not running")?;
        wait_timeout(&mut child, Duration::from_secs(20))
    }

    /// A gRPC channel on the daemon's Unix socket.
    pub async fn channel(&self) -> Result<Channel> {
        unix_channel(&self.socket()).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The resident memory of process `pid`, in bytes.
pub fn rss_of(pid: u32) -> Result<u64> {
    proc_status_bytes(pid, "VmRSS")
}

/// The peak resident memory of process `pid` so far, in bytes (`VmHWM`).
pub fn peak_rss_of(pid: u32) -> Result<u64> {
    proc_status_bytes(pid, "VmHWM")
}

/// A `kB` field of `/proc/PID/status`, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kb * 1024)
}

/// The daemon's output, next to its home so the daemon creates the home itself.
fn log_path(home: &Path) -> PathBuf {
    let mut name = home.file_name().unwrap_or_default().to_owned();
    name.push(".log");
    home.with_file_name(name)
}

/// Waits at most `limit` for `child` to exit; kills it after that.
pub(crate) fn wait_timeout(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            bail!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gRPC channel on a Unix socket.
pub async fn unix_channel(path: &Path) -> Result<Channel> {
    let path = path.to_owned();
    let channel = Endpoint::from_static("http://[::1]:50051")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(channel)
}

/// A `Daemon` service client on a Unix socket.
pub async fn daemon_client(path: &Path) -> Result<DaemonClient<Channel>> {
    Ok(DaemonClient::new(unix_channel(path).await?))
}
