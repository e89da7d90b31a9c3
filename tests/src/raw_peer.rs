//! A replication peer that completes a real Noise handshake with a daemon and then sends
//! whatever bytes a test likes (parts of frames, nothing at all), from a chosen loopback
//! address so tests can play many hosts.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use hypercore_protocol::cipher::XSalsa20;
use hypercore_protocol::noise::Handshake;
use hypercore_protocol::NoiseKeyPair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let mut hs = Handshake::new(true, &NoiseKeyPair::generate())?;
        let mut buf = BytesMut::new();
        while !hs.is_finished() {
            if hs.is_my_turn() {
                io.write_all(&hs.write()?).await?;
            } else {
                let message = read_message(&mut io, &mut buf).await?;
                hs.read(&message)?;
            }
        }
        let established = hs.finish()?;
        Ok(RawPeer {
            io,
            tx: XSalsa20::new(&established.tx_key, &established.tx_nonce),
        })
    }

    /// Encrypts and sends `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let mut data = bytes.to_vec();
        self.tx.apply(&mut data);
        self.io.write_all(&data).await?;
        Ok(())
    }
}

/// Reads one varint-length-prefixed handshake message.
async fn read_message(io: &mut TcpStream, buf: &mut BytesMut) -> Result<Vec<u8>> {
    loop {
        match varint::decode_within(buf, 3) {
            Ok((len, n)) => {
                let len = len as usize;
                if buf.len() >= n + len {
                    let _ = buf.split_to(n);
                    return Ok(buf.split_to(len).to_vec());
                }
            }
            Err(varint::Error::Incomplete) => {}
            Err(e) => bail!("handshake message length: {e}"),
        }
        if io.read_buf(buf).await? == 0 {
            bail!("the daemon closed the connection during the handshake");
        }
    }
}
