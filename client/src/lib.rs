//! hyperctl, the command-line client of hyperd: starts and stops the daemon, and drives
//! its gRPC API (`hyperd.v1`: `Daemon`, `Cores`, `Peers`, `Drives`, `Swarm`) over the Unix socket in the
//! daemon's home. The binary (`src/main.rs`) parses the command line and calls the
//! functions here, one module per domain.

pub mod connect;
pub mod cores;
pub mod daemon_cmds;
pub mod drives;
pub mod extensions;
pub mod key;
pub mod output;
pub mod peers;
pub mod service;
pub mod swarm;
