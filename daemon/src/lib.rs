//! `hyperd` as a library: the [`Daemon`] — a corestore, its peer connections and what it
//! follows — with domain operations (create, follow, read, download, dial, …) that fail
//! with one [`DaemonError`] type, and the gRPC front end (`rpc`) that only converts
//! between proto messages and those operations. The `hyperd` binary is a thin `main`
//! over [`run`].

mod cores;
mod daemon;
mod dial_queue;
mod drive_changes;
mod drive_files;
mod drive_set;
mod drive_transfers;
mod drives;
mod error;
mod extensions;
mod follows;
pub mod limits;
mod lock;
pub mod memory;
mod network;
mod notify;
mod peers;
mod port;
mod rpc;
mod seeding;
mod state;
mod swarm;
mod tasks;

use anyhow::Context;
use hyperd_config::{Config, Home};

pub use crate::cores::{Appended, BlockRange, CoreEvent, CoreInfo, DownloadProgress};
pub use crate::daemon::{Daemon, DaemonStatus, StartOptions};
pub use crate::drive_transfers::TransferUpdate;
pub use crate::drives::{DriveInfo, DriveLocation};
pub use crate::error::{DaemonError, ErrorKind};
pub use crate::extensions::{ExtensionEvent, Outgoing};
pub use crate::network::NetworkLimits;
pub use crate::peers::{Disconnected, Origin, Peer, PeerEvent, PeerSnapshot};
pub use crate::state::Seeding;
pub use crate::swarm::{resolve as resolve_bootstrap, SwarmStatus, TopicStatus, Walks};

/// Starts the daemon, serves the API and runs until SIGTERM, SIGINT or a `Stop` request;
/// then answers the running calls, closes the peers and every core, and removes the
/// socket.
pub async fn run(home: Home, config: Config, options: StartOptions) -> anyhow::Result<()> {
    let (daemon, _lock) = Daemon::start(home.clone(), &config, options).await?;
    if let Err(e) = crate::rpc::serve(&daemon, &config).await {
        daemon.shutdown().await;
        return Err(e);
    }
    let trimmer = crate::memory::trim_periodically(daemon.clone());
    daemon.spawn("giving free memory back", trimmer);
    crate::notify::notify("READY=1");
    tracing::info!(
        "hyperd {} ready: home {}, socket {}",
        env!("CARGO_PKG_VERSION"),
        home.root().display(),
        home.socket().display()
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = daemon.stopping() => tracing::info!("stop requested: shutting down"),
    }
    crate::notify::notify("STOPPING=1");
    daemon.shutdown().await;
    let _ = std::fs::remove_file(home.socket());
    tracing::info!("stopped");
    Ok(())
}
