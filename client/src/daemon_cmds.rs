//! `hyperctl start`, `stop` and `status`: the daemon's lifecycle.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyperd_config::Home;
use hyperd_proto::v1::{StatusRequest, StatusResponse, StopRequest};
use serde_json::json;

use crate::connect::{self, Client, NotRunning};
use crate::output;

/// How long `start` waits for a new daemon to answer and `stop` for it to exit.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
/// Lines of the log shown when a daemon dies during `start`.
const LOG_TAIL_LINES: usize = 20;

/// Options of `hyperctl start`.
pub struct StartOptions {
    /// `--hyperd PATH`.
    pub hyperd: Option<PathBuf>,
    /// `--listen HOST:PORT`, passed on.
    pub listen: Option<String>,
    /// `--config FILE`, passed on.
    pub config: Option<PathBuf>,
}

/// `hyperctl status`.
pub async fn status(home: &Home, timeout: Duration, json: bool) -> anyhow::Result<()> {
    let client = connect::connect(home, timeout).await?;
    let status = fetch_status(&client).await?;
    print_status(&status, json)
}

async fn fetch_status(client: &Client) -> anyhow::Result<StatusResponse> {
    client
        .unary(client.daemon().status(client.request(StatusRequest {})))
        .await
}

/// The status if a daemon answers, `None` if nothing listens on the socket.
async fn try_status(home: &Home, timeout: Duration) -> anyhow::Result<Option<StatusResponse>> {
    match connect::connect(home, timeout).await {
        Ok(client) => Ok(Some(fetch_status(&client).await?)),
        Err(e) if e.downcast_ref::<NotRunning>().is_some() => Ok(None),
        Err(e) => Err(e),
    }
}

fn print_status(status: &StatusResponse, json: bool) -> anyhow::Result<()> {
    if json {
        return output::print_json(&json!({
            "version": status.version,
            "apiVersion": status.api_version,
            "protocolVersion": status.protocol_version,
            "uptimeMs": status.uptime_ms,
            "pid": status.pid,
            "home": status.home,
            "storage": status.storage,
            "listenAddress": status.listen_address,
            "peerKey": status.peer_key,
            "peerCount": status.peer_count,
            "coreCount": status.core_count,
            "openCoreCount": status.open_core_count,
            "maxOpenCores": status.max_open_cores,
            "fileLimit": status.file_limit,
            "dhtAddress": status.dht_address,
            "dhtBootstrap": status.dht_bootstrap,
            "swarmTopics": status.swarm_topics,
            "mdns": status.mdns,
            "publicAddress": status.public_address,
        }));
    }
    let mut api = status.api_version.clone();
    if api != hyperd_proto::API_VERSION {
        api.push_str(&format!(" (hyperctl speaks {})", hyperd_proto::API_VERSION));
    }
    let listen = if status.listen_address.is_empty() {
        "not listening for peers".to_string()
    } else {
        status.listen_address.clone()
    };
    output::print(output::fields(&[
        ("version", status.version.clone()),
        ("api version", api),
        ("protocol", status.protocol_version.clone()),
        ("pid", status.pid.to_string()),
        (
            "uptime",
            output::duration(Duration::from_millis(status.uptime_ms)),
        ),
        ("home", status.home.clone()),
        ("storage", status.storage.clone()),
        ("listening on", listen),
        ("peer key", status.peer_key.clone()),
        ("peers", status.peer_count.to_string()),
        (
            "dht",
            match status.dht_address.is_empty() {
                true => "off (no bootstrap nodes configured)".to_string(),
                false => format!(
                    "on {}, bootstrapping from {}; {} drives and cores joined; {}",
                    status.dht_address,
                    status.dht_bootstrap.join(", "),
                    status.swarm_topics,
                    match status.public_address.is_empty() {
                        true => "public address not known yet".to_string(),
                        false =>
                            format!("public address {} (holepunchable)", status.public_address),
                    }
                ),
            },
        ),
        (
            "mdns",
            match status.mdns {
                true => "on (local discovery)".to_string(),
                false => "off".to_string(),
            },
        ),
        (
            "cores",
            format!(
                "{} ({} open, at most {} kept open; file limit {})",
                status.core_count, status.open_core_count, status.max_open_cores, status.file_limit
            ),
        ),
    ]))
}

/// `hyperctl start`: runs hyperd in the background unless it already answers.
pub async fn start(
    home: &Home,
    options: StartOptions,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(status) = try_status(home, timeout).await? {
        if json {
            return print_status(&status, true);
        }
        return output::print(format!(
            "hyperd is already running (pid {}, home {})",
            status.pid, status.home
        ));
    }

    let program = find_hyperd(options.hyperd.as_deref())?;
    let log_path = home.log_file();
    if let Some(dir) = log_path.parent() {
        crate::service::create_dir(dir)?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let log_err = log
        .try_clone()
        .with_context(|| format!("cannot open {}", log_path.display()))?;

    let mut command = Command::new(&program);
    command.arg("--home").arg(absolute(home.root())?);
    if let Some(listen) = &options.listen {
        command.arg("--listen").arg(listen);
    }
    if let Some(config) = &options.config {
        command.arg("--config").arg(absolute(config)?);
    }
    // Its own process group: a Ctrl-C or hangup aimed at this shell's job does not
    // reach the daemon.
    command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .current_dir("/")
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {}", program.display()))?;
    let pid = child.id();

    let deadline = Instant::now() + WAIT;
    let attempt_timeout = timeout.min(Duration::from_secs(1));
    loop {
        if let Some(exit) = child.try_wait().context("waiting for hyperd")? {
            show_log_tail(&log_path, log_start);
            anyhow::bail!(
                "hyperd exited during startup ({exit}); its log is {}",
                log_path.display()
            );
        }
        if let Ok(Some(status)) = try_status(home, attempt_timeout).await {
            if json {
                return print_status(&status, true);
            }
            output::print(format!("started hyperd (pid {})", status.pid))?;
            return print_status(&status, false);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "hyperd (pid {pid}) did not answer on {} within {}; it may still be starting, its log is {}",
                home.socket().display(),
                connect::seconds(WAIT),
                log_path.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints what the daemon logged since `from` (its last lines) to stderr.
fn show_log_tail(path: &Path, from: u64) {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(())
    });
    if read.is_err() || text.trim().is_empty() {
        return;
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    output::note(format!("last lines of {}:", path.display()));
    for line in tail {
        output::note(format!("  {line}"));
    }
}

/// `hyperctl stop`: asks hyperd to stop and waits until it has exited.
pub async fn stop(home: &Home, timeout: Duration, json: bool) -> anyhow::Result<()> {
    let socket = home.socket();
    let client = match connect::connect(home, timeout).await {
        Ok(client) => client,
        Err(e) if e.downcast_ref::<NotRunning>().is_some() => {
            anyhow::bail!("hyperd is not running (no answer on {})", socket.display())
        }
        Err(e) => return Err(e),
    };
    let pid = fetch_status(&client).await?.pid;
    client
        .unary(client.daemon().stop(client.request(StopRequest {})))
        .await?;
    drop(client);

    // Gone when nothing answers on the socket and the lock is free (the lock is
    // released when the process exits, after it has flushed everything).
    let deadline = Instant::now() + WAIT;
    loop {
        let answers = socket.exists()
            && connect::connect(home, timeout.min(Duration::from_secs(1)))
                .await
                .is_ok();
        if !answers && lock_is_free(&home.lock_file()) {
            break;
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "hyperd (pid {pid}) is still running {} after it was asked to stop",
                connect::seconds(WAIT)
            );
        }
        tokio::time::sleep(POLL).await;
    }
    if json {
        output::print_json(&json!({ "stopped": true, "pid": pid }))
    } else {
        output::print(format!("stopped hyperd (pid {pid})"))
    }
}

/// No process holds the daemon's lock (or it cannot be checked).
fn lock_is_free(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return true;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_released_on_drop) => true,
        Err((_, errno)) => errno != nix::errno::Errno::EWOULDBLOCK,
    }
}

/// The hyperd to run: `explicit`, else the one next to this executable, else the
/// first on `PATH`. The result is absolute.
pub fn find_hyperd(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.is_file() {
            anyhow::bail!("{} is not a file (given with --hyperd)", path.display());
        }
        return absolute(path);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("hyperd")));
    if let Some(path) = &beside {
        if is_executable(path) {
            return Ok(path.clone());
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let path = dir.join("hyperd");
            if is_executable(&path) {
                return absolute(&path);
            }
        }
    }
    let beside = beside
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| format!(" ({})", dir.display()))
        .unwrap_or_default();
    anyhow::bail!("cannot find hyperd next to hyperctl{beside} or on PATH; pass --hyperd PATH")
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `path` made absolute against the current directory (symlinks are kept).
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}
