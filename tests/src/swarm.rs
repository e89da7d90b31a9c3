//! Swarm tests' pieces: a `hyperd bootstrap` DHT node on a loopback address, daemons
//! that bootstrap from it, and reads that wait for the DHT to find a peer.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::daemon::{bin, Daemon};

/// A daemon on `home` listening on `listen` whose `config.toml` names `bootstrap` as its
/// only DHT bootstrap node.
pub fn daemon_with_bootstrap(home: &Path, bootstrap: &str, listen: &str) -> Result<Daemon> {
    std::fs::create_dir_all(home)?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))?;
    std::fs::write(
        home.join("config.toml"),
        format!("bootstrap = [\"{bootstrap}\"]\n"),
    )?;
    Daemon::start_in(home, listen)
}

/// The bytes of `url` read on `daemon` once they can be: a followed drive is readable
/// once the DHT walk has found and dialed a peer and its first blocks came. Panics
/// after 30 s.
pub fn cat_eventually(daemon: &Daemon, url: &str) -> Vec<u8> {
    crate::eventually(
        Duration::from_secs(30),
        &format!("{url} to be read"),
        || daemon.ctl_ok(&["drive", "cat", url]).ok(),
    )
}

/// A `hyperd bootstrap` child process, killed when dropped.
pub struct BootstrapNode {
    child: Child,
    /// Where it serves (`127.0.0.2:PORT`).
    pub addr: String,
    /// Its node id, hex.
    pub id: String,
}

impl BootstrapNode {
    /// Starts one on 127.0.0.2 and a free port: not 127.0.0.1, since Dat2 networkers
    /// ignore peers there (spec §8) and peers on 127.0.0.1 then see another address.
    pub fn start() -> Result<BootstrapNode> {
        BootstrapNode::start_on("127.0.0.2")
    }

    /// Starts one on `host` (an IPv4 address) and a free port.
    pub fn start_on(host: &str) -> Result<BootstrapNode> {
        let mut child = Command::new(bin("hyperd")?)
            .args(["bootstrap", "--listen", &format!("{host}:0")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting hyperd bootstrap")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let ready: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("hyperd bootstrap said {line:?}"))?;
        Ok(BootstrapNode {
            child,
            addr: ready["listening"]
                .as_str()
                .context("no address")?
                .to_string(),
            id: ready["id"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for BootstrapNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
