//! Talking to hyperd: a gRPC channel over its Unix socket, deadlines, and readable
//! messages for everything that can go wrong on the way.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyperd_config::Home;
use hyperd_proto::v1::cores_client::CoresClient;
use hyperd_proto::v1::daemon_client::DaemonClient;
use hyperd_proto::v1::drives_client::DrivesClient;
use hyperd_proto::v1::extensions_client::ExtensionsClient;
use hyperd_proto::v1::peers_client::PeersClient;
use hyperd_proto::v1::swarm_client::SwarmClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Response, Status};

/// Largest message accepted from hyperd (blocks can be several MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// Nothing answers on the daemon's socket: it does not exist or nobody listens on it.
#[derive(Debug)]
pub struct NotRunning {
    /// The socket that was tried.
    pub socket: PathBuf,
}

impl fmt::Display for NotRunning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hyperd is not running (no answer on {}); start it with `hyperctl start`",
            self.socket.display()
        )
    }
}

impl std::error::Error for NotRunning {}

/// A connection to hyperd and the deadline for its unary calls.
pub struct Client {
    channel: Channel,
    timeout: Duration,
    socket: PathBuf,
}

/// Connects to the daemon of `home`, giving up after `timeout`.
pub async fn connect(home: &Home, timeout: Duration) -> anyhow::Result<Client> {
    let socket = home.socket();
    let attempt = open_channel(socket.clone(), timeout);
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(channel)) => Ok(Client {
            channel,
            timeout,
            socket,
        }),
        Ok(Err(e)) => Err(connect_error(&socket, &e)),
        Err(_) => Err(anyhow::anyhow!(
            "hyperd did not answer on {} within {} (use --timeout to wait longer)",
            socket.display(),
            seconds(timeout)
        )),
    }
}

async fn open_channel(
    socket: PathBuf,
    timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    // The URI is required by the API but unused: every connection goes to the socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(timeout)
        // Appending a large file streams megabytes: HTTP/2's 64 KiB default windows
        // would make it wait on flow-control round trips.
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        // hyperd writes one DATA frame per system call: at the default 16 KiB a 256 MiB
        // `drive cat` took 16,384 of them.
        .max_frame_size(1 << 20)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
}

fn connect_error(socket: &Path, error: &tonic::transport::Error) -> anyhow::Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io_error) = e.downcast_ref::<io::Error>() {
            return match io_error.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    anyhow::Error::new(NotRunning {
                        socket: socket.to_owned(),
                    })
                }
                io::ErrorKind::PermissionDenied => anyhow::anyhow!(
                    "permission denied on {} (is hyperd running as another user?)",
                    socket.display()
                ),
                _ => anyhow::anyhow!(
                    "cannot connect to hyperd on {}: {io_error}",
                    socket.display()
                ),
            };
        }
        source = e.source();
    }
    anyhow::anyhow!("cannot connect to hyperd on {}: {error}", socket.display())
}

/// "10 s", "0.5 s".
pub fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

impl Client {
    /// The `Daemon` service.
    pub fn daemon(&self) -> DaemonClient<Channel> {
        DaemonClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// The `Cores` service.
    pub fn cores(&self) -> CoresClient<Channel> {
        CoresClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// The `Drives` service.
    pub fn drives(&self) -> DrivesClient<Channel> {
        DrivesClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// The `Peers` service.
    pub fn peers(&self) -> PeersClient<Channel> {
        PeersClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// The `Extensions` service.
    pub fn extensions(&self) -> ExtensionsClient<Channel> {
        ExtensionsClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// The `Swarm` service.
    pub fn swarm(&self) -> SwarmClient<Channel> {
        SwarmClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// The deadline of unary calls (`--timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A request carrying the unary deadline, so hyperd gives up when the client does.
    pub fn request<T>(&self, message: T) -> Request<T> {
        self.request_within(self.timeout, message)
    }

    /// A request carrying a deadline other than `--timeout`.
    pub fn request_within<T>(&self, deadline: Duration, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(deadline);
        request
    }

    /// Awaits a unary call, or the opening of a streaming call, for at most `--timeout`
    /// (an opened stream then has no deadline).
    pub async fn unary<T>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> anyhow::Result<T> {
        self.unary_within(self.timeout, call).await
    }

    /// Awaits a unary call for at most `deadline`.
    pub async fn unary_within<T>(
        &self,
        deadline: Duration,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.status_error(status)),
            Err(_) => Err(anyhow::anyhow!(
                "hyperd did not answer within {} (use --timeout to wait longer)",
                seconds(deadline)
            )),
        }
    }

    /// Turns a status from hyperd into one readable line, keeping the server's message.
    pub fn status_error(&self, status: Status) -> anyhow::Error {
        let message = status.message().trim();
        let or = |fallback: &str| {
            if message.is_empty() {
                fallback.to_string()
            } else {
                message.to_string()
            }
        };
        // A status hyperd sent (a peer that does not answer, say) has no transport error
        // behind it; only a broken connection to hyperd does.
        let transport = std::error::Error::source(&status).is_some();
        let text = match status.code() {
            Code::Unavailable if !self.socket.exists() => {
                return anyhow::Error::new(NotRunning {
                    socket: self.socket.clone(),
                })
            }
            // tonic's own client-side deadline (the grpc-timeout we send).
            Code::Cancelled if message == "Timeout expired" => {
                "hyperd did not answer in time (use --timeout to wait longer)".to_string()
            }
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled if transport => {
                format!("lost the connection to hyperd: {}", or("unavailable"))
            }
            Code::Unavailable => or("unavailable"),
            Code::DeadlineExceeded => format!(
                "hyperd did not finish in time: {} (use --timeout to wait longer)",
                or("deadline exceeded")
            ),
            Code::Unimplemented => format!(
                "hyperd does not support this request ({}); is it older than hyperctl?",
                or("unimplemented")
            ),
            Code::Unauthenticated => {
                format!("hyperd refused the request: {}", or("unauthenticated"))
            }
            Code::PermissionDenied => format!("permission denied: {}", or("by hyperd")),
            Code::Cancelled => format!("cancelled: {}", or("the request was cancelled")),
            Code::Internal | Code::Unknown | Code::DataLoss => {
                format!("hyperd failed: {}", or("internal error"))
            }
            Code::InvalidArgument => or("invalid argument"),
            Code::NotFound => or("not found"),
            Code::AlreadyExists => or("already exists"),
            Code::FailedPrecondition => or("not possible in the current state"),
            Code::OutOfRange => or("out of range"),
            Code::ResourceExhausted => or("hyperd is out of resources"),
            Code::Aborted => or("aborted"),
            Code::Ok => or("no error"),
        };
        anyhow::anyhow!(text)
    }
}
