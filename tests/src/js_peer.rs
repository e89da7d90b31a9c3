//! A long-running JS peer of the harness (`tests/interop/drive-peer.js`) that answers one
//! JSON line per JSON command on its stdin, and corestores replicating over TCP on
//! 127.0.0.1 (serving every connection, or connecting to a port).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use corestore::Corestore;
use hypercore_protocol::{Protocol, ProtocolOptions};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

/// How long one command (or the start, or the exit) of a JS peer may take.
pub const JS_LIMIT: Duration = Duration::from_secs(60);

/// A running harness script that takes commands on stdin.
pub struct JsPeer {
    script: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: JoinHandle<String>,
    /// Everything it logged so far, for error messages.
    log: Arc<Mutex<String>>,
}

impl JsPeer {
    /// Starts `script` with `args` and returns it with its first line (its "ready" line).
    pub async fn spawn(script: &str, args: &[&str]) -> Result<(JsPeer, Value)> {
        JsPeer::spawn_command(script, crate::node(script)?, args).await
    }

    /// Starts `script` with `args` inside `host`'s network namespace.
    pub async fn spawn_on(
        host: &crate::netns::Host,
        script: &str,
        args: &[&str],
    ) -> Result<(JsPeer, Value)> {
        JsPeer::spawn_command(script, host.wrap(&crate::node(script)?), args).await
    }

    async fn spawn_command(
        script: &str,
        command: std::process::Command,
        args: &[&str],
    ) -> Result<(JsPeer, Value)> {
        let mut cmd = tokio::process::Command::from(command);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting node {script}"))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let mut err = child.stderr.take().context("no stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        // Drained all along, so a chatty peer never blocks on a full pipe.
        let stderr = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&text);
            }
            sink.lock().unwrap_or_else(|e| e.into_inner()).clone()
        });
        let mut peer = JsPeer {
            script: script.to_string(),
            child,
            stdin: Some(stdin),
            stdout,
            stderr,
            log,
        };
        let ready = peer.line().await.context("waiting for the ready line")?;
        if ready["ok"] == false {
            bail!("node {script} failed to start: {ready}");
        }
        Ok((peer, ready))
    }

    /// Its process id (`None` once it has exited and been waited for).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn logged(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Its next line of stdout, parsed (failing after [`JS_LIMIT`] of silence).
    pub async fn line(&mut self) -> Result<Value> {
        let line = tokio::time::timeout(JS_LIMIT, self.stdout.next_line())
            .await
            .with_context(|| {
                format!(
                    "node {} said nothing for {JS_LIMIT:?}; stderr:\n{}",
                    self.script,
                    self.logged()
                )
            })??;
        let Some(line) = line else {
            bail!("node {} exited; stderr:\n{}", self.script, self.logged());
        };
        serde_json::from_str(&line)
            .with_context(|| format!("parsing a line of node {}: {line}", self.script))
    }

    /// Reads lines until one whose `event` is `event`; returns it.
    pub async fn until(&mut self, event: &str) -> Result<Value> {
        loop {
            let line = self.line().await?;
            if line["event"] == event {
                return Ok(line);
            }
        }
    }

    /// Sends `command` and returns the answer, failing unless it says `"ok": true`.
    pub async fn call(&mut self, command: Value) -> Result<Value> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(format!("{command}\n").as_bytes()).await?;
        stdin.flush().await?;
        let answer = self.line().await?;
        if answer["ok"] != true {
            bail!("node {}: {command} failed: {answer}", self.script);
        }
        Ok(answer)
    }

    /// Ends its stdin and waits for it to exit; fails if it failed or logged an error
    /// (`stream-error`, `socket-error`). Returns what it logged.
    pub async fn finish(mut self) -> Result<String> {
        drop(self.stdin.take());
        let status = tokio::time::timeout(JS_LIMIT, self.child.wait())
            .await
            .with_context(|| format!("node {} did not exit", self.script))??;
        let stderr = self.stderr.await?;
        if !status.success() {
            bail!(
                "node {} exited with {status}; stderr:\n{stderr}",
                self.script
            );
        }
        if stderr.contains("stream-error") || stderr.contains("socket-error") {
            bail!("node {} logged errors:\n{stderr}", self.script);
        }
        Ok(stderr)
    }
}

/// How a replication connection of a store ended: the handshake's error, or what
/// [`Corestore::replicate`] returned (a [`corestore::Error`] inside).
pub type Ended = Result<()>;

/// Accepts TCP connections on a free port of 127.0.0.1 and replicates `store` (live, as
/// the responder) on each; each connection's end is sent to the returned receiver.
pub async fn serve_store(store: Corestore) -> Result<(u16, UnboundedReceiver<Ended>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (store, tx) = (store.clone(), tx.clone());
            tokio::spawn(async move {
                let _ = tx.send(replicate(store, socket, false).await);
            });
        }
    });
    Ok((port, rx))
}

/// Connects to `port` on 127.0.0.1 and replicates `store` there (live, as the initiator)
/// until the connection ends.
pub async fn connect_store(store: Corestore, port: u16) -> Result<JoinHandle<Ended>> {
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    Ok(tokio::spawn(replicate(store, socket, true)))
}

async fn replicate(store: Corestore, socket: tokio::net::TcpStream, initiator: bool) -> Ended {
    let _ = socket.set_nodelay(true);
    let options = ProtocolOptions {
        initiator,
        live: true,
        ..ProtocolOptions::default()
    };
    let (protocol, events) = Protocol::connect(socket, options)
        .await
        .context("the replication handshake")?;
    Ok(store.replicate(protocol, events, true).await?)
}
