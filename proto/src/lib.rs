//! The gRPC API of hyperd, generated from the `.proto` files next to this crate
//! (`hyperd/v1/*.proto`, package `hyperd.v1`): one service per domain — `Daemon`,
//! `Cores`, `Peers` — with tonic clients and servers.

/// Package `hyperd.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
    tonic::include_proto!("hyperd.v1");
}

/// The API package served, as reported by `Daemon.Status`.
pub const API_VERSION: &str = "hyperd.v1";
