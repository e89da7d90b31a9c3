//! A replication peer that completes a real Noise handshake with a daemon and then sends
//! whatever bytes a test likes (parts of frames, nothing at all), from a chosen loopback
//! address so tests can play many hosts.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result};
use hypercore_protocol::cipher::XSalsa20;
use hyperd_testkit::handshake::handshake;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from `from` (any address of the loopback network, say
/// 127.0.0.7: Linux routes all of 127/8 to the loopback interface).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::new(from, 0))
        .with_context(|| format!("binding to {from}"))?;
    socket
        .connect(to)
        .await
        .with_context(|| format!("connecting from {from} to {to}"))
}

/// A handshaked connection whose traffic the test writes by hand.
pub struct RawPeer {
    io: TcpStream,
    tx: XSalsa20,
}

impl RawPeer {
    /// Connects from `from` to `to` and runs the initiator half of the handshake.
    pub async fn connect(from: IpAddr, to: SocketAddr) -> Result<RawPeer> {
        let mut io = connect_from(from, to).await?;
        let done = handshake(&mut io, true, None).await?;
        Ok(RawPeer { io, tx: done.tx })
    }

    /// Encrypts and sends `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let mut data = bytes.to_vec();
        self.tx.apply(&mut data);
        self.io.write_all(&data).await?;
        Ok(())
    }
}
