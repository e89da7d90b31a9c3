//! The gRPC API: one service per domain (`daemon`, `cores`, `peers`, `drives`, `swarm`,
//! `extensions`), served on a Unix
//! socket private to the user (mode 0600, callers' uid checked) and optionally on a
//! loopback TCP address that requires the token from `rpc.token`.

mod cores;
mod daemon;
mod drives;
mod extensions;
mod peers;
mod swarm;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::stream::{BoxStream, StreamExt};
use hypercore::PublicKey;
use hyperd_config::Config;
use hyperd_proto::v1::cores_server::CoresServer;
use hyperd_proto::v1::daemon_server::DaemonServer;
use hyperd_proto::v1::drives_server::DrivesServer;
use hyperd_proto::v1::extensions_server::ExtensionsServer;
use hyperd_proto::v1::peers_server::PeersServer;
use hyperd_proto::v1::swarm_server::SwarmServer;
use tokio::net::UnixListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Code, Status};

use crate::daemon::Daemon;
use crate::error::{shorten, DaemonError, ErrorKind};

/// Largest request accepted (an append batch); larger ones get RESOURCE_EXHAUSTED.
const MAX_REQUEST: usize = 16 << 20;
/// Largest reply (a block is at most 8 MiB).
const MAX_REPLY: usize = 64 << 20;
/// HTTP/2 flow-control window per stream.
const WINDOW: u32 = 8 << 20;
/// Largest HTTP/2 frame a client may send. A sender writes one DATA frame per system
/// call; at the default 16 KiB, a 256 MiB upload took 16,384 of them.
const FRAME: u32 = 1 << 20;

/// Binds the socket (and the TCP listener if configured) and starts serving, each server
/// a task of the daemon: when the daemon stops, it stops accepting, finishes the calls
/// under way (streams end with ABORTED) and closes its connections.
pub async fn serve(daemon: &Daemon, config: &Config) -> anyhow::Result<()> {
    // A bad token file stops the start before anything is bound.
    let token = match config.rpc.tcp {
        Some(_) => Some(load_or_create_token(&daemon.home().token_file())?),
        None => None,
    };
    let socket = daemon.home().socket();
    // We hold the home's lock, so a socket file here is left over from a daemon that
    // was killed: nobody answers on it.
    match std::fs::remove_file(&socket) {
        Ok(()) => tracing::info!("removed stale socket {}", socket.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(format!("removing stale socket {}", socket.display())),
    }
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("binding the API socket {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", socket.display()))?;

    let uid = nix::unistd::geteuid().as_raw();
    let incoming = futures::stream::unfold(listener, move |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match stream.peer_cred() {
                    Ok(cred) if cred.uid() == uid => {
                        return Some((Ok::<_, std::io::Error>(stream), listener))
                    }
                    Ok(cred) => tracing::warn!(
                        "refused an API connection from uid {} (this daemon serves uid {uid})",
                        cred.uid()
                    ),
                    Err(e) => tracing::warn!("refused an API connection: no credentials: {e}"),
                },
                Err(e) => {
                    tracing::warn!("accepting an API connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });

    let unix = router(daemon, None);
    daemon.spawn_with_stop("API server on the Unix socket", |stop| async move {
        let stopped = stop.cancelled_owned();
        if let Err(e) = unix.serve_with_incoming_shutdown(incoming, stopped).await {
            tracing::error!("the API server on the Unix socket failed: {e}");
        }
    });

    if let (Some(address), Some(token)) = (config.rpc.tcp, token) {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the API TCP address {address}"))?;
        tracing::info!(
            "API also on tcp://{address} (token in {})",
            daemon.home().token_file().display()
        );
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let tcp = router(daemon, Some(token));
        daemon.spawn_with_stop("API server on TCP", |stop| async move {
            let stopped = stop.cancelled_owned();
            if let Err(e) = tcp.serve_with_incoming_shutdown(incoming, stopped).await {
                tracing::error!("the API server on TCP failed: {e}");
            }
        });
    }
    Ok(())
}

/// Lets a request through when no token is required or it carries the right one.
#[derive(Clone)]
struct TokenCheck {
    token: Option<Arc<str>>,
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong token: send \"authorization: Bearer <token from rpc.token>\"",
            ))
        }
    }
}

fn router(daemon: &Daemon, token: Option<String>) -> tonic::transport::server::Router {
    let check = TokenCheck {
        token: token.map(Arc::from),
    };
    let status = DaemonServer::new(daemon::DaemonService::new(daemon.clone()))
        .max_decoding_message_size(MAX_REQUEST)
        .max_encoding_message_size(MAX_REPLY);
    let cores = CoresServer::new(cores::CoresService::new(daemon.clone()))
        .max_decoding_message_size(MAX_REQUEST)
        .max_encoding_message_size(MAX_REPLY);
    let peers = PeersServer::new(peers::PeersService::new(daemon.clone()))
        .max_decoding_message_size(MAX_REQUEST)
        .max_encoding_message_size(MAX_REPLY);
    let drives = DrivesServer::new(drives::DrivesService::new(daemon.clone()))
        .max_decoding_message_size(MAX_REQUEST)
        .max_encoding_message_size(MAX_REPLY);
    let swarm = SwarmServer::new(swarm::SwarmService::new(daemon.clone()))
        .max_decoding_message_size(MAX_REQUEST)
        .max_encoding_message_size(MAX_REPLY);
    let extensions = ExtensionsServer::new(extensions::ExtensionsService::new(daemon.clone()))
        .max_decoding_message_size(MAX_REQUEST)
        .max_encoding_message_size(MAX_REPLY);
    Server::builder()
        // Large appends and reads stream megabytes; HTTP/2's 64 KiB default windows would
        // stall them on round trips.
        .initial_stream_window_size(Some(WINDOW))
        .initial_connection_window_size(Some(2 * WINDOW))
        .max_frame_size(Some(FRAME))
        .add_service(InterceptedService::new(status, check.clone()))
        .add_service(InterceptedService::new(cores, check.clone()))
        .add_service(InterceptedService::new(peers, check.clone()))
        .add_service(InterceptedService::new(drives, check.clone()))
        .add_service(InterceptedService::new(swarm, check.clone()))
        .add_service(InterceptedService::new(extensions, check))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the API token, creating a random one (mode 0600) the first time.
fn load_or_create_token(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                anyhow::bail!(
                    "{} is readable by other users (mode {mode:o}); run chmod 600 on it",
                    path.display()
                );
            }
            return Ok(token.trim().to_string());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(format!("reading {}", path.display())),
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    hypercore::storage::write_private_file(path, token.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// How to join the swarm, as asked.
pub fn seeding(asked: hyperd_proto::v1::Seeding) -> crate::state::Seeding {
    crate::state::Seeding {
        announce: asked.announce,
        lookup: asked.lookup,
    }
}

/// Parses a core key (see [`hyperd_proto::parse_key`]); `field` names it in errors.
pub fn parse_key(field: &str, value: &str) -> Result<PublicKey, Status> {
    if value.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    hyperd_proto::parse_key(value)
        .map(PublicKey)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
            "{field} {:?} is not a core key: expected 64 hex characters, optionally after hyper://",
            shorten(value)
        ))
        })
}

/// The daemon error for a status from tonic (a client's stream that failed): the code
/// decides the kind, the reverse of [`status`].
pub fn error(status: Status) -> DaemonError {
    let kind = match status.code() {
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::OutOfRange => ErrorKind::OutOfRange,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::Aborted | Code::Cancelled => ErrorKind::Aborted,
        _ => ErrorKind::Internal,
    };
    DaemonError::new(kind, status.message())
}

/// The status for a daemon error: its kind decides the code, once, for every call.
pub fn status(error: DaemonError) -> Status {
    let code = match error.kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::Internal => Code::Internal,
    };
    Status::new(code, error.message)
}

/// A server stream for a domain stream: items converted by `convert`, errors by
/// [`status`]; it ends after the first error. Nothing is read ahead: the domain stream
/// is polled only when the client has room, which bounds what a slow client costs.
pub fn server_stream<T, U>(
    stream: BoxStream<'static, Result<T, DaemonError>>,
    convert: impl Fn(T) -> U + Send + 'static,
) -> Pin<Box<dyn futures::Stream<Item = Result<U, Status>> + Send>>
where
    T: Send + 'static,
    U: Send + 'static,
{
    let mut failed = false;
    let converted = stream
        .take_while(move |item| {
            let go = !failed;
            failed |= item.is_err();
            futures::future::ready(go)
        })
        .map(move |item| item.map(&convert).map_err(status));
    Box::pin(converted)
}
