//! A genuine hypercore-protocol 8 Noise handshake run by hand, for a peer that then sends
//! whatever a test wants: raw bytes, parts of frames, or well-formed frames that lie.

use anyhow::{bail, Result};
use bytes::BytesMut;
use hypercore_protocol::cipher::XSalsa20;
use hypercore_protocol::noise::{Established, Handshake};
use hypercore_protocol::{NoiseKeyPair, PeerKey};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a finished handshake leaves: the ciphers of both directions, the session keys
/// (for capabilities), our static key, and what the other side sent after it.
pub struct Handshaked {
    /// Encrypts what we send.
    pub tx: XSalsa20,
    /// Decrypts what we receive.
    pub rx: XSalsa20,
    /// The session's keys.
    pub established: Established,
    /// Our static Noise key.
    pub key: PeerKey,
    /// Bytes that followed the other side's last handshake message, already decrypted.
    pub leftover: BytesMut,
}

/// Runs our half of the handshake on `io` with a fresh key pair. An initiator sends
/// `piggyback` (plaintext, encrypted here) in the same write as its last handshake
/// message, as JS does with its first frames.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    initiator: bool,
    piggyback: Option<Vec<u8>>,
) -> Result<Handshaked> {
    let keypair = NoiseKeyPair::generate();
    let mut hs = Handshake::new(initiator, &keypair)?;
    let mut buf = BytesMut::new();
    let mut last = None;
    while !hs.is_finished() {
        if hs.is_my_turn() {
            let message = hs.write()?;
            if hs.is_finished() && piggyback.is_some() {
                last = Some(message);
            } else {
                io.write_all(&message).await?;
            }
        } else {
            let message = read_message(io, &mut buf).await?;
            hs.read(&message)?;
        }
    }
    let established = hs.finish()?;
    let mut tx = XSalsa20::new(&established.tx_key, &established.tx_nonce);
    if let (Some(mut message), Some(mut plain)) = (last, piggyback) {
        tx.apply(&mut plain);
        message.extend_from_slice(&plain);
        io.write_all(&message).await?;
    }
    let mut rx = XSalsa20::new(&established.rx_key, &established.rx_nonce);
    // Whatever followed the last handshake message is already ciphertext.
    rx.apply(&mut buf);
    Ok(Handshaked {
        tx,
        rx,
        established,
        key: keypair.public,
        leftover: buf,
    })
}

/// Reads one varint-length-prefixed handshake message (its length in at most 3 bytes).
pub async fn read_message<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> Result<Vec<u8>> {
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
            bail!("the other side closed the connection during the handshake");
        }
    }
}
