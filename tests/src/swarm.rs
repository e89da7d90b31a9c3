//! Swarm tests' pieces: a `hyperd bootstrap` DHT node on a loopback address or in a
//! network namespace, daemons that bootstrap from it, and reads that wait for the DHT
//! to find a peer.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::daemon::{bin, Daemon};
use crate::netns::Host;

/// A daemon on `home` listening on `listen` whose `config.toml` names `bootstrap` as its
/// only DHT bootstrap node.
pub fn daemon_with_bootstrap(home: &Path, bootstrap: &str, listen: &str) -> Result<Daemon> {
    write_config(home, &format!("bootstrap = [\"{bootstrap}\"]\n"))?;
    Daemon::start_in(home, listen)
}

/// A daemon on `home` inside `host`'s namespace, listening on all its addresses, whose
/// `config.toml` names `bootstrap` as its only DHT bootstrap node and turns mDNS on or
/// off.
pub fn daemon_on_host_with_bootstrap(
    home: &Path,
    host: &Host,
    bootstrap: &str,
    mdns: bool,
) -> Result<Daemon> {
    write_config(
        home,
        &format!("bootstrap = [\"{bootstrap}\"]\nmdns = {mdns}\n"),
    )?;
    Daemon::start_on_host(home, "0.0.0.0:0", host)
}

/// Creates `home` (private to its user, as hyperd wants it) with `config` as its
/// `config.toml`.
pub fn write_config(home: &Path, config: &str) -> Result<()> {
    std::fs::create_dir_all(home)?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))?;
    std::fs::write(home.join("config.toml"), config)?;
    Ok(())
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
    /// Where it serves (`HOST:PORT`).
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
        BootstrapNode::spawn(Command::new(bin("hyperd")?), &format!("{host}:0"), "")
    }

    /// Starts one on `host` and a free port that bootstraps from `others` (`HOST:PORT`
    /// entries): several form one DHT.
    pub fn start_joining(host: &str, others: &[&str]) -> Result<BootstrapNode> {
        BootstrapNode::spawn(
            Command::new(bin("hyperd")?),
            &format!("{host}:0"),
            &others.join(","),
        )
    }

    /// Starts one inside the network namespace `host`, on `addr` (one of its addresses)
    /// and the port hyperswarm's default bootstrap nodes use, 49737: free in a fresh
    /// namespace, and the port Dat2 peers are used to.
    pub fn start_on_host(host: &Host, addr: Ipv4Addr) -> Result<BootstrapNode> {
        BootstrapNode::spawn(host.command(bin("hyperd")?), &format!("{addr}:49737"), "")
    }

    /// Runs `hyperd bootstrap --listen listen --bootstrap others` with `hyperd`.
    fn spawn(mut hyperd: Command, listen: &str, others: &str) -> Result<BootstrapNode> {
        let mut child = hyperd
            .args(["bootstrap", "--listen", listen, "--bootstrap", others])
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
