//! The Noise handshake that opens every connection: `Noise_XX_25519_ChaChaPoly_BLAKE2b`,
//! each message prefixed with its varint length and carrying a `NoisePayload` with the
//! sender's 24-byte XSalsa20 nonce. Its split keys then key the XSalsa20 streams (the Noise
//! transport ciphers are not used). See `spec/wire.md` section 2.
//!
//! This is a state machine without I/O; [`crate::Protocol::connect`] drives it.

use std::fmt;
use std::str::FromStr;

use prost::Message as _;

use crate::error::Error;

const PATTERN: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2b";
/// Largest Noise message.
pub const MAX_HANDSHAKE_MESSAGE: usize = 65535;

/// A peer's static Noise public key (X25519): how peers are identified on connections.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub [u8; 32]);

impl PeerKey {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hypercore::crypto::to_hex(&self.0)
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerKey({})", self.to_hex())
    }
}

impl FromStr for PeerKey {
    type Err = hypercore::crypto::KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let k: hypercore::PublicKey = s.parse()?;
        Ok(PeerKey(k.0))
    }
}

/// A static X25519 key pair for the handshake (not the feed's Ed25519 key).
#[derive(Clone)]
pub struct NoiseKeyPair {
    /// The public key peers see.
    pub public: PeerKey,
    secret: [u8; 32],
}

impl fmt::Debug for NoiseKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoiseKeyPair(public {}, secret <redacted>)", self.public)
    }
}

impl NoiseKeyPair {
    /// A fresh random key pair.
    pub fn generate() -> Self {
        Self::from_secret(rand::random())
    }

    /// libsodium's `crypto_kx_seed_keypair`: secret = BLAKE2b-256(seed).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let h = blake2b_simd::Params::new().hash_length(32).hash(seed);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(h.as_bytes());
        Self::from_secret(secret)
    }

    /// From a raw X25519 secret scalar.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret));
        NoiseKeyPair {
            public: PeerKey(public.to_bytes()),
            secret,
        }
    }
}

/// The protobuf `NoisePayload { required bytes nonce = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
struct NoisePayload {
    #[prost(bytes = "vec", required, tag = "1")]
    nonce: Vec<u8>,
}

/// What a finished handshake established.
#[derive(Clone)]
pub struct Established {
    /// Key of the XSalsa20 stream we send.
    pub tx_key: [u8; 32],
    /// Key of the XSalsa20 stream we receive.
    pub rx_key: [u8; 32],
    /// Our nonce (for what we send).
    pub tx_nonce: [u8; 24],
    /// The remote's nonce (for what we receive).
    pub rx_nonce: [u8; 24],
    /// The remote's static key.
    pub remote_key: PeerKey,
    /// The 64-byte Noise handshake hash.
    pub handshake_hash: [u8; 64],
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("remote_key", &self.remote_key)
            .finish_non_exhaustive()
    }
}

/// One side of the handshake.
pub struct Handshake {
    state: snow::HandshakeState,
    initiator: bool,
    payload: Vec<u8>,
    nonce: [u8; 24],
    remote_nonce: Option<[u8; 24]>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

fn noise_error(what: &str) -> impl FnOnce(snow::Error) -> Error + '_ {
    move |e| Error::Handshake(format!("{what}: {e}"))
}

impl Handshake {
    /// Starts a handshake with a random nonce and ephemeral key.
    pub fn new(initiator: bool, keypair: &NoiseKeyPair) -> Result<Self, Error> {
        Self::with_fixed(initiator, keypair, rand::random(), None)
    }

    /// Starts a handshake with a given nonce and, for reproducing recorded sessions only, a
    /// fixed ephemeral secret key.
    #[doc(hidden)]
    pub fn with_fixed(
        initiator: bool,
        keypair: &NoiseKeyPair,
        nonce: [u8; 24],
        ephemeral: Option<[u8; 32]>,
    ) -> Result<Self, Error> {
        let params = PATTERN.parse().map_err(noise_error("noise parameters"))?;
        let mut builder = snow::Builder::new(params)
            .local_private_key(&keypair.secret)
            .map_err(noise_error("static key"))?
            .prologue(&[])
            .map_err(noise_error("prologue"))?;
        if let Some(e) = &ephemeral {
            builder = builder.fixed_ephemeral_key_for_testing_only(e);
        }
        let state = if initiator {
            builder.build_initiator()
        } else {
            builder.build_responder()
        }
        .map_err(noise_error("starting the handshake"))?;
        let payload = NoisePayload {
            nonce: nonce.to_vec(),
        }
        .encode_to_vec();
        Ok(Handshake {
            state,
            initiator,
            payload,
            nonce,
            remote_nonce: None,
        })
    }

    /// Whether we send the next message.
    pub fn is_my_turn(&self) -> bool {
        self.state.is_my_turn()
    }

    /// Whether all three messages have been exchanged.
    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// Our next message, with its varint length prefix, ready for the wire.
    pub fn write(&mut self) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; MAX_HANDSHAKE_MESSAGE];
        let n = self
            .state
            .write_message(&self.payload, &mut buf)
            .map_err(noise_error("writing a handshake message"))?;
        let mut out = Vec::with_capacity(n + 3);
        out.extend_from_slice(&varint::encode(n as u64));
        out.extend_from_slice(&buf[..n]);
        Ok(out)
    }

    /// Reads one message from the remote (without its length prefix).
    pub fn read(&mut self, message: &[u8]) -> Result<(), Error> {
        let mut payload = vec![0u8; MAX_HANDSHAKE_MESSAGE];
        let n = self
            .state
            .read_message(message, &mut payload)
            .map_err(noise_error("reading a handshake message"))?;
        if n > 0 {
            let p = NoisePayload::decode(&payload[..n]).map_err(|e| {
                Error::Handshake(format!("could not parse the remote handshake payload: {e}"))
            })?;
            let nonce: [u8; 24] = p.nonce.as_slice().try_into().map_err(|_| {
                Error::Handshake(format!(
                    "remote handshake nonce is {} bytes, not 24",
                    p.nonce.len()
                ))
            })?;
            self.remote_nonce = Some(nonce);
        }
        Ok(())
    }

    /// The keys and identities the finished handshake established.
    pub fn finish(mut self) -> Result<Established, Error> {
        if !self.is_finished() {
            return Err(Error::Handshake("handshake is not finished".into()));
        }
        let rx_nonce = self
            .remote_nonce
            .ok_or_else(|| Error::Handshake("remote did not include a handshake payload".into()))?;
        let remote = self
            .state
            .get_remote_static()
            .ok_or_else(|| Error::Handshake("remote sent no static key".into()))?;
        let remote_key = PeerKey(
            remote
                .try_into()
                .map_err(|_| Error::Handshake("remote static key has the wrong size".into()))?,
        );
        let mut handshake_hash = [0u8; 64];
        handshake_hash.copy_from_slice(self.state.get_handshake_hash());
        let (k1, k2) = self.state.dangerously_get_raw_split();
        let (tx_key, rx_key) = if self.initiator { (k1, k2) } else { (k2, k1) };
        Ok(Established {
            tx_key,
            rx_key,
            tx_nonce: self.nonce,
            rx_nonce,
            remote_key,
            handshake_hash,
        })
    }
}
