//! A `hyperd bootstrap` DHT node for swarm tests, on a loopback address.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::daemon::bin;

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
