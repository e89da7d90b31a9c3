//! Helpers shared by the workspace's tests (a dev-dependency only): a raw Noise handshake
//! for peers that then say whatever a test wants, sparse or full in-memory clones of a
//! feed, loopback TCP pairs, and two protocols connected to each other.

pub mod handshake;

use anyhow::{Context, Result};
use hypercore::storage::MemoryStorage;
use hypercore::{Feed, FeedOptions, PublicKey};
use hypercore_protocol::{Events, Protocol, ProtocolOptions};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Logs of the crates under test to the test's output, filtered by `RUST_LOG`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// An empty in-memory feed following `key` (downloading only what is asked for when
/// `sparse`).
pub async fn memory_clone(key: PublicKey, sparse: bool) -> Result<Feed> {
    let options = FeedOptions {
        key: Some(key),
        sparse,
        ..FeedOptions::default()
    };
    Feed::open(MemoryStorage::new(), options)
        .await
        .with_context(|| format!("opening an in-memory clone of {key}"))
}

/// Both ends of a TCP connection on 127.0.0.1: the dialed one, then the accepted one.
pub async fn tcp_pair() -> Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let dialed = dialed.with_context(|| format!("connecting to {addr}"))?;
    Ok((dialed, accepted.context("accepting")?.0))
}

/// Runs the handshake of `a` (with `a_options`) and `b` (with `b_options`) on the two
/// ends of one stream, at the same time.
pub async fn protocol_pair<IO>(
    a: IO,
    a_options: ProtocolOptions,
    b: IO,
    b_options: ProtocolOptions,
) -> Result<((Protocol, Events), (Protocol, Events))>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (pa, pb) = tokio::join!(
        Protocol::connect(a, a_options),
        Protocol::connect(b, b_options)
    );
    Ok((
        pa.context("the first side's handshake")?,
        pb.context("the second side's handshake")?,
    ))
}

/// Options of a protocol that is (or not) the initiator, `live` or not; the rest default.
pub fn protocol_options(initiator: bool, live: bool) -> ProtocolOptions {
    ProtocolOptions {
        initiator,
        live,
        ..ProtocolOptions::default()
    }
}
