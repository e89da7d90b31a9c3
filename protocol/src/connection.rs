//! A replication connection: the handshake, then a reader and a writer task moving
//! encrypted frames, with one [`Channel`] per feed.
//!
//! Channel rules follow `hypercore-protocol@8`: a channel is opened by discovery key with a
//! capability; when both sides have opened it the remote's capability must verify or the
//! connection is destroyed; a remote open for a key we have not opened is reported as
//! [`Event::DiscoveryKey`]; closing the last channel of a non-live connection ends it.
//!
//! Sending never waits: frames go to an unbounded queue whose size in bytes is visible to
//! senders ([`ChannelSender::queued_bytes`], [`ChannelSender::drained`]), so bulk senders
//! can hold back while control messages always go out, and a reader never blocks on a
//! writer (two peers uploading to each other cannot deadlock).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hypercore::{DiscoveryKey, PublicKey};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};

use crate::cipher::XSalsa20;
use crate::error::Error;
use crate::extension::Extensions;
use crate::frame::{self, Frame};
use crate::message::{Close, Message, Open, Options};
use crate::noise::{Established, Handshake, NoiseKeyPair, PeerKey};

/// Decides whether to talk to a peer, given its static key.
pub type Authenticate = Arc<dyn Fn(&PeerKey) -> bool + Send + Sync>;

/// Default idle timeout: JS destroys a stream that received nothing for 20 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Channels (opened by either side) a connection may hold: a peer opening more is
/// destroyed rather than allowed to grow our memory without bound.
pub const MAX_CHANNELS: usize = 16 * 1024;
/// Messages a channel may have waiting before its connection stops reading.
const CHANNEL_BACKLOG: usize = 256;
/// Bytes of frames gathered into one write.
const WRITE_BATCH: usize = 1 << 20;
/// Frames up to this size are buffered by a connection on its own; larger ones first take
/// their size from the connection's [`FrameBudget`], if it has one.
pub const FREE_FRAME_BYTES: usize = 256 << 10;
/// A read buffer that grew past this for a large frame is given back once it is empty.
const KEPT_READ_BUFFER: usize = 256 << 10;

/// Memory for large incoming frames, shared by the connections given clones of it: the
/// total that partly received frames over [`FREE_FRAME_BYTES`] may hold. A connection
/// that needs more than is left stops reading until some is freed, so a flood of large
/// or stalled frames cannot grow memory without bound.
#[derive(Clone, Debug)]
pub struct FrameBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    total: usize,
}

impl FrameBudget {
    /// A budget of `bytes` (at least one largest frame).
    pub fn new(bytes: usize) -> FrameBudget {
        let total = bytes.clamp(
            crate::frame::MAX_MESSAGE_SIZE + 16,
            tokio::sync::Semaphore::MAX_PERMITS,
        );
        FrameBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(total)),
            total,
        }
    }

    /// The budget's size.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not held by any connection now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

/// Options for a connection.
#[derive(Clone)]
pub struct ProtocolOptions {
    /// This side dialed (runs the initiator half of the handshake).
    pub initiator: bool,
    /// Static Noise key pair (default: a fresh random one).
    pub keypair: Option<NoiseKeyPair>,
    /// Destroy the connection when nothing arrives for this long; a keep-alive is sent
    /// after half of it without sending. `None` disables both. Default 20 s.
    pub timeout: Option<Duration>,
    /// Keep the connection open when no channel is left.
    pub live: bool,
    /// Encrypt frames after the handshake (default true; both sides must agree).
    pub encrypted: bool,
    /// Accept or refuse the remote peer after the handshake.
    pub authenticate: Option<Authenticate>,
    /// Shared memory for large incoming frames (default: none, each connection buffers
    /// what it receives).
    pub frame_budget: Option<FrameBudget>,
    /// Reproduce a recorded session: fixed handshake nonce and ephemeral key.
    #[doc(hidden)]
    pub fixed_randomness: Option<([u8; 24], [u8; 32])>,
}

impl Default for ProtocolOptions {
    fn default() -> Self {
        ProtocolOptions {
            initiator: false,
            keypair: None,
            timeout: Some(DEFAULT_TIMEOUT),
            live: false,
            encrypted: true,
            authenticate: None,
            frame_budget: None,
            fixed_randomness: None,
        }
    }
}

impl std::fmt::Debug for ProtocolOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtocolOptions")
            .field("initiator", &self.initiator)
            .field("timeout", &self.timeout)
            .field("live", &self.live)
            .field("encrypted", &self.encrypted)
            .finish_non_exhaustive()
    }
}

/// Something the application should react to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The remote opened a channel for a feed we have not opened. Open it with
    /// [`Protocol::open`] to replicate it, or refuse with [`Protocol::refuse`].
    DiscoveryKey(DiscoveryKey),
}

/// What a channel's owner receives.
#[derive(Clone, Debug, PartialEq)]
pub enum ChannelEvent {
    /// Both sides have opened the channel and the remote's capability verified.
    Opened,
    /// A message from the remote.
    Message(Message),
}

/// How a connection ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Both sides finished.
    Finished,
    /// It failed or was destroyed.
    Failed(Arc<Error>),
}

enum Out {
    /// A frame counted in `Shared::queued` when it was queued (owned, so it can be
    /// encrypted where it is).
    Frame(BytesMut),
    /// An empty frame; never counted as queued.
    KeepAlive,
    Finish,
}

struct Chan {
    key: Option<PublicKey>,
    local_id: Option<u64>,
    remote_id: Option<u64>,
    remote_capability: Option<Vec<u8>>,
    inbox: Option<mpsc::Sender<ChannelEvent>>,
}

struct State {
    channels: HashMap<DiscoveryKey, Chan>,
    remote_ids: HashMap<u64, DiscoveryKey>,
    next_local: u64,
    extensions: Extensions,
    /// Our sending side has ended (or the connection is gone).
    finished: bool,
}

struct Shared {
    live: bool,
    local_key: PeerKey,
    remote_key: PeerKey,
    handshake_hash: [u8; 64],
    tx_key: [u8; 32],
    rx_key: [u8; 32],
    state: Mutex<State>,
    out: mpsc::UnboundedSender<Out>,
    queued: AtomicUsize,
    drained: Notify,
    sent: AtomicU64,
    received: AtomicU64,
    events: mpsc::UnboundedSender<Event>,
    outcome: watch::Sender<Option<Outcome>>,
    shutdown: watch::Sender<bool>,
}

/// An open replication connection. Cheap to clone.
#[derive(Clone)]
pub struct Protocol {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protocol")
            .field("remote", &self.shared.remote_key)
            .finish_non_exhaustive()
    }
}

/// Events of a connection; see [`Event`].
pub type Events = mpsc::UnboundedReceiver<Event>;

fn io_error(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { op, source }
}

/// Reads one varint-prefixed handshake message, buffering what follows it.
async fn read_handshake_message<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
) -> Result<Vec<u8>, Error> {
    loop {
        // A handshake message is at most 64 KiB: its length takes at most 3 bytes.
        let header = match varint::decode_within(buf, 3) {
            Ok(header) => Some(header),
            Err(varint::Error::Incomplete) => None,
            Err(e) => {
                return Err(Error::Handshake(format!(
                    "handshake message length is not a valid varint: {e}"
                )))
            }
        };
        if let Some((len, n)) = header {
            if len as usize > crate::noise::MAX_HANDSHAKE_MESSAGE {
                return Err(Error::Handshake(format!(
                    "handshake message of {len} bytes is too large"
                )));
            }
            if buf.len() >= n + len as usize {
                let _ = buf.split_to(n);
                return Ok(buf.split_to(len as usize).to_vec());
            }
        }
        buf.reserve(4096);
        if io.read_buf(buf).await.map_err(io_error("reading"))? == 0 {
            return Err(Error::Handshake(
                "connection closed during the handshake".into(),
            ));
        }
    }
}

impl Protocol {
    /// Runs the Noise handshake over `io` and starts the connection's tasks.
    pub async fn connect<IO>(
        mut io: IO,
        options: ProtocolOptions,
    ) -> Result<(Protocol, Events), Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let keypair = options
            .keypair
            .clone()
            .unwrap_or_else(NoiseKeyPair::generate);
        let mut hs = match options.fixed_randomness {
            Some((nonce, ephemeral)) => {
                Handshake::with_fixed(options.initiator, &keypair, nonce, Some(ephemeral))?
            }
            None => Handshake::new(options.initiator, &keypair)?,
        };
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut sent = 0u64;
        let handshake = async {
            while !hs.is_finished() {
                if hs.is_my_turn() {
                    let msg = hs.write()?;
                    io.write_all(&msg).await.map_err(io_error("writing"))?;
                    sent += msg.len() as u64;
                } else {
                    let msg = read_handshake_message(&mut io, &mut buf).await?;
                    hs.read(&msg)?;
                }
            }
            io.flush().await.map_err(io_error("writing"))?;
            Ok::<_, Error>(())
        };
        match options.timeout {
            Some(t) => tokio::time::timeout(t, handshake)
                .await
                .map_err(|_| Error::Timeout(t))??,
            None => handshake.await?,
        }
        let established: Established = hs.finish()?;
        if let Some(auth) = &options.authenticate {
            if !auth(&established.remote_key) {
                let _ = io.shutdown().await;
                return Err(Error::Refused(established.remote_key));
            }
        }

        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            live: options.live,
            local_key: keypair.public,
            remote_key: established.remote_key,
            handshake_hash: established.handshake_hash,
            tx_key: established.tx_key,
            rx_key: established.rx_key,
            state: Mutex::new(State {
                channels: HashMap::new(),
                remote_ids: HashMap::new(),
                next_local: 1,
                extensions: Extensions::default(),
                finished: false,
            }),
            out: out_tx,
            queued: AtomicUsize::new(0),
            drained: Notify::new(),
            sent: AtomicU64::new(sent),
            received: AtomicU64::new(0),
            events: events_tx,
            outcome: watch::Sender::new(None),
            shutdown: watch::Sender::new(false),
        });
        let (tx_cipher, rx_cipher) = if options.encrypted {
            (
                Some(XSalsa20::new(&established.tx_key, &established.tx_nonce)),
                Some(XSalsa20::new(&established.rx_key, &established.rx_nonce)),
            )
        } else {
            (None, None)
        };
        let (read_half, write_half) = tokio::io::split(io);
        tokio::spawn(supervise(
            shared.clone(),
            read_half,
            write_half,
            buf,
            rx_cipher,
            tx_cipher,
            out_rx,
            options.timeout,
            options.frame_budget.clone(),
        ));
        tracing::debug!(remote = %shared.remote_key, initiator = options.initiator, "handshake complete");
        Ok((Protocol { shared }, events_rx))
    }

    /// The remote peer's static Noise key.
    pub fn remote_key(&self) -> PeerKey {
        self.shared.remote_key
    }

    /// Our static Noise key.
    pub fn local_key(&self) -> PeerKey {
        self.shared.local_key
    }

    /// The Noise handshake hash.
    pub fn handshake_hash(&self) -> [u8; 64] {
        self.shared.handshake_hash
    }

    /// Bytes sent and received on the underlying stream so far.
    pub fn byte_counts(&self) -> (u64, u64) {
        (
            self.shared.sent.load(Ordering::Relaxed),
            self.shared.received.load(Ordering::Relaxed),
        )
    }

    /// Channels open on this connection (opened by either side, not yet closed).
    pub fn channel_count(&self) -> usize {
        self.shared.lock().map(|s| s.channels.len()).unwrap_or(0)
    }

    /// The capability we send for `key` on this connection.
    pub fn capability(&self, key: &PublicKey) -> [u8; 32] {
        hypercore::crypto::capability(key, &self.shared.tx_key, &self.shared.rx_key)
    }

    /// Opens a channel for the feed `key`. If the remote already opened it with a wrong
    /// capability, the remote is told the channel is closed and this fails.
    pub fn open(&self, key: PublicKey) -> Result<Channel, Error> {
        let dk = key.discovery_key();
        let expected =
            hypercore::crypto::remote_capability(&key, &self.shared.tx_key, &self.shared.rx_key);
        let mut state = self.shared.lock()?;
        if state.finished {
            return Err(Error::Closed(format!(
                "cannot open a channel for {dk}: the connection has ended"
            )));
        }
        let chan = state.channels.entry(dk).or_insert_with(Chan::new);
        if chan.local_id.is_some() {
            return Err(Error::AlreadyOpen(dk));
        }
        let remote_opened = chan.remote_id.is_some();
        if remote_opened && chan.remote_capability.as_deref() != Some(&expected[..]) {
            // As JS does: refuse without revealing more, on a fresh channel id.
            if let Some(rid) = chan.remote_id {
                state.remote_ids.remove(&rid);
            }
            state.channels.remove(&dk);
            let id = state.alloc();
            self.shared.send_frame(
                &mut state,
                id,
                &Message::Close(Close {
                    discovery_key: Some(dk.0.to_vec()),
                }),
            );
            return Err(Error::BadCapability(dk));
        }
        let id = state.alloc();
        let (tx, rx) = mpsc::channel(CHANNEL_BACKLOG);
        if remote_opened {
            let _ = tx.try_send(ChannelEvent::Opened);
        }
        if let Some(chan) = state.channels.get_mut(&dk) {
            chan.key = Some(key);
            chan.local_id = Some(id);
            chan.inbox = Some(tx);
        }
        let capability = Some(self.capability(&key).to_vec());
        self.shared.send_frame(
            &mut state,
            id,
            &Message::Open(Open {
                discovery_key: dk.0.to_vec(),
                capability,
            }),
        );
        drop(state);
        Ok(Channel {
            sender: ChannelSender {
                shared: self.shared.clone(),
                discovery_key: dk,
                key,
                local_id: id,
            },
            inbox: Some(rx),
        })
    }

    /// Closes the channel for `discovery_key`, or, if only the remote opened it, tells the
    /// remote we will not replicate that feed.
    pub fn close(&self, discovery_key: DiscoveryKey) {
        let Ok(mut state) = self.shared.lock() else {
            return;
        };
        match state.channels.get(&discovery_key).and_then(|c| c.local_id) {
            Some(id) => self.shared.close_local(&mut state, discovery_key, id),
            None => self.shared.refuse(&mut state, discovery_key),
        }
    }

    /// Tells the remote we will not replicate the feed of `discovery_key` (the answer to an
    /// [`Event::DiscoveryKey`] for a feed we do not have), unless we have opened its
    /// channel ourselves since: the decision to refuse may predate that open (the feed was
    /// looked up and not found, then created), and closing would take the channel from
    /// whoever opened it. Returns whether it refused.
    pub fn refuse(&self, discovery_key: DiscoveryKey) -> bool {
        let Ok(mut state) = self.shared.lock() else {
            return false;
        };
        if state
            .channels
            .get(&discovery_key)
            .is_some_and(|c| c.local_id.is_some())
        {
            return false;
        }
        self.shared.refuse(&mut state, discovery_key);
        true
    }

    /// Registers a connection-wide extension (sent on channel 0, like JS stream extensions).
    pub fn register_extension(&self, name: &str) -> Result<StreamExtension, Error> {
        let mut state = self.shared.lock()?;
        let inbox = state
            .extensions
            .register(name)
            .ok_or_else(|| Error::Closed(format!("extension {name} is already registered")))?;
        Ok(StreamExtension {
            shared: self.shared.clone(),
            name: name.to_string(),
            inbox,
        })
    }

    /// Sends a keep-alive (an empty frame) now.
    pub fn ping(&self) {
        if let Ok(state) = self.shared.lock() {
            if !state.finished {
                let _ = self.shared.out.send(Out::KeepAlive);
            }
        }
    }

    /// Destroys the connection now.
    pub fn destroy(&self, reason: &str) {
        self.shared.fail(Error::Closed(reason.to_string()));
    }

    /// Waits until the connection has ended.
    pub async fn closed(&self) -> Outcome {
        let mut rx = self.shared.outcome.subscribe();
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(o) => o.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or(Outcome::Finished)
    }

    /// How the connection ended, if it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.shared.outcome.borrow().clone()
    }
}

impl State {
    fn alloc(&mut self) -> u64 {
        let id = self.next_local;
        self.next_local += 1;
        id
    }
}

impl Chan {
    fn new() -> Chan {
        Chan {
            key: None,
            local_id: None,
            remote_id: None,
            remote_capability: None,
            inbox: None,
        }
    }
}

impl Shared {
    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.state
            .lock()
            .map_err(|_| Error::Closed("connection state poisoned by a panic".into()))
    }

    /// Queues a frame (needs the state lock so frames keep their order).
    fn send_frame(&self, state: &mut State, channel: u64, message: &Message) -> bool {
        if state.finished {
            return false;
        }
        let mut buf = BytesMut::new();
        frame::encode(channel, message, &mut buf);
        self.queued.fetch_add(buf.len(), Ordering::Relaxed);
        self.out.send(Out::Frame(buf)).is_ok()
    }

    fn close_local(&self, state: &mut State, dk: DiscoveryKey, local_id: u64) {
        if let Some(chan) = state.channels.remove(&dk) {
            if let Some(rid) = chan.remote_id {
                state.remote_ids.remove(&rid);
            }
        }
        self.send_frame(
            state,
            local_id,
            &Message::Close(Close {
                discovery_key: None,
            }),
        );
        self.maybe_finish(state);
    }

    /// Forgets the remote's channel for `dk`, which we have not opened, and tells the
    /// remote (on a fresh channel id, as JS does).
    fn refuse(&self, state: &mut State, dk: DiscoveryKey) {
        if let Some(rid) = state.channels.remove(&dk).and_then(|c| c.remote_id) {
            state.remote_ids.remove(&rid);
        }
        let id = state.alloc();
        self.send_frame(
            state,
            id,
            &Message::Close(Close {
                discovery_key: Some(dk.0.to_vec()),
            }),
        );
        self.maybe_finish(state);
    }

    /// A non-live connection ends once its last channel is gone.
    fn maybe_finish(&self, state: &mut State) {
        if !self.live && state.channels.is_empty() && !state.finished {
            state.finished = true;
            let _ = self.out.send(Out::Finish);
        }
    }

    fn finish_sending(&self) {
        if let Ok(mut state) = self.lock() {
            if !state.finished {
                state.finished = true;
                let _ = self.out.send(Out::Finish);
            }
        }
    }

    fn fail(&self, error: Error) {
        let error = Arc::new(error);
        let mut first = false;
        self.outcome.send_if_modified(|o| {
            if o.is_none() {
                *o = Some(Outcome::Failed(error.clone()));
                first = true;
            }
            first
        });
        if first {
            tracing::debug!(remote = %self.remote_key, %error, "connection destroyed");
        }
        self.teardown();
    }

    fn teardown(&self) {
        let _ = self.shutdown.send(true);
        if let Ok(mut state) = self.lock() {
            state.finished = true;
            state.channels.clear();
            state.remote_ids.clear();
        }
        self.drained.notify_waiters();
    }

    /// Handles one frame from the remote. Returns the channel inbox to deliver to, if any.
    fn dispatch(
        &self,
        channel: u64,
        message: Message,
    ) -> Result<Option<(mpsc::Sender<ChannelEvent>, ChannelEvent)>, Error> {
        let mut state = self.lock()?;
        match message {
            Message::Open(open) => {
                let dk = DiscoveryKey::from_slice(&open.discovery_key).map_err(|e| {
                    Error::Malformed {
                        what: "Open message",
                        reason: e.to_string(),
                    }
                })?;
                if !state.channels.contains_key(&dk) && state.channels.len() >= MAX_CHANNELS {
                    return Err(Error::Malformed {
                        what: "Open message",
                        reason: format!("more than {MAX_CHANNELS} channels"),
                    });
                }
                let chan = state.channels.entry(dk).or_insert_with(Chan::new);
                let old = chan.remote_id.replace(channel);
                chan.remote_capability = open.capability;
                let verified = chan.key.map(|key| {
                    let expected =
                        hypercore::crypto::remote_capability(&key, &self.tx_key, &self.rx_key);
                    chan.remote_capability.as_deref() == Some(&expected[..])
                });
                let inbox = chan.inbox.clone();
                if let Some(old) = old {
                    state.remote_ids.remove(&old);
                }
                state.remote_ids.insert(channel, dk);
                match verified {
                    Some(false) => Err(Error::BadCapability(dk)),
                    Some(true) => Ok(inbox.map(|i| (i, ChannelEvent::Opened))),
                    None => {
                        let _ = self.events.send(Event::DiscoveryKey(dk));
                        Ok(None)
                    }
                }
            }
            Message::Close(close) => {
                let dk = match state.remote_ids.remove(&channel) {
                    Some(dk) => Some(dk),
                    None => close
                        .discovery_key
                        .as_deref()
                        .and_then(|b| DiscoveryKey::from_slice(b).ok()),
                };
                let Some(dk) = dk else { return Ok(None) };
                let local = state.channels.get(&dk).and_then(|c| c.local_id);
                match local {
                    // Echo the close, as JS does, and drop the channel (its owner sees the
                    // end of its inbox).
                    Some(id) => self.close_local(&mut state, dk, id),
                    None => {
                        state.channels.remove(&dk);
                        self.maybe_finish(&mut state);
                    }
                }
                Ok(None)
            }
            Message::Options(options) if channel == 0 && !state.remote_ids.contains_key(&0) => {
                state.extensions.set_remote(options.extensions);
                Ok(None)
            }
            Message::Extension { id, payload }
                if channel == 0 && !state.remote_ids.contains_key(&0) =>
            {
                state.extensions.deliver(id, payload);
                Ok(None)
            }
            message => {
                let inbox = state
                    .remote_ids
                    .get(&channel)
                    .and_then(|dk| state.channels.get(dk))
                    .filter(|c| c.local_id.is_some())
                    .and_then(|c| c.inbox.clone());
                Ok(inbox.map(|i| (i, ChannelEvent::Message(message))))
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn supervise<R, W>(
    shared: Arc<Shared>,
    read_half: R,
    write_half: W,
    leftover: BytesMut,
    rx_cipher: Option<XSalsa20>,
    tx_cipher: Option<XSalsa20>,
    out_rx: mpsc::UnboundedReceiver<Out>,
    timeout: Option<Duration>,
    budget: Option<FrameBudget>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let keepalive = timeout.map(|t| t / 2);
    let mut reader = tokio::spawn(read_loop(
        shared.clone(),
        read_half,
        leftover,
        rx_cipher,
        timeout,
        budget,
    ));
    let mut writer = tokio::spawn(write_loop(
        shared.clone(),
        write_half,
        out_rx,
        tx_cipher,
        keepalive,
    ));
    let mut shutdown = shared.shutdown.subscribe();
    let mut reader_done = false;
    let mut writer_done = false;
    let result: Result<(), Error> = loop {
        tokio::select! {
            r = &mut reader, if !reader_done => {
                reader_done = true;
                match r {
                    // The remote ended its side: end ours too, as JS does.
                    Ok(Ok(())) => shared.finish_sending(),
                    Ok(Err(e)) => break Err(e),
                    Err(e) => break Err(Error::Closed(format!("reader task failed: {e}"))),
                }
            }
            w = &mut writer, if !writer_done => {
                writer_done = true;
                match w {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e),
                    Err(e) => break Err(Error::Closed(format!("writer task failed: {e}"))),
                }
            }
            _ = shutdown.wait_for(|s| *s) => break Err(Error::Closed("destroyed".into())),
        }
        if reader_done && writer_done {
            break Ok(());
        }
    };
    reader.abort();
    writer.abort();
    match result {
        Ok(()) => {
            shared.outcome.send_if_modified(|o| {
                if o.is_none() {
                    *o = Some(Outcome::Finished);
                    return true;
                }
                false
            });
            shared.teardown();
        }
        Err(e) => shared.fail(e),
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut io: R,
    mut buf: BytesMut,
    mut cipher: Option<XSalsa20>,
    timeout: Option<Duration>,
    budget: Option<FrameBudget>,
) -> Result<(), Error> {
    if let Some(c) = &mut cipher {
        c.apply(&mut buf);
    }
    // Budget held for the large frame being received, if any.
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    loop {
        while let Some(frame) = frame::decode(&mut buf)? {
            let Frame::Message {
                channel,
                type_id,
                body,
            } = frame
            else {
                continue;
            };
            let message = Message::decode(type_id, body)?;
            if let Some((inbox, event)) = shared.dispatch(channel, message)? {
                // Waits while the channel's owner is busy: TCP then slows the remote down.
                let _ = inbox.send(event).await;
            }
        }
        let next = frame::next_frame_size(&buf)?;
        let large = next.filter(|&size| size > FREE_FRAME_BYTES);
        match (&budget, large) {
            // A large frame is coming: its memory comes from the shared budget first.
            (Some(budget), Some(size)) if held.as_ref().is_none_or(|p| p.num_permits() < size) => {
                drop(held.take());
                let permit = budget
                    .bytes
                    .clone()
                    .acquire_many_owned(size as u32)
                    .await
                    .map_err(|_| Error::Closed("the frame budget was closed".into()))?;
                held = Some(permit);
            }
            (_, None) => {
                drop(held.take());
                // Give back a buffer that grew for a large frame.
                if buf.capacity() > KEPT_READ_BUFFER && buf.len() <= KEPT_READ_BUFFER {
                    let mut smaller = BytesMut::with_capacity(64 * 1024);
                    smaller.extend_from_slice(&buf);
                    buf = smaller;
                }
            }
            _ => {}
        }
        // Room for the rest of the frame being received (its memory is accounted for by
        // now), and at least 64 KiB so that many small frames come in one read.
        let rest = next.map_or(0, |size| size.saturating_sub(buf.len()));
        buf.reserve(rest.max(64 * 1024));
        let start = buf.len();
        let read = io.read_buf(&mut buf);
        let n = match timeout {
            Some(t) => tokio::time::timeout(t, read)
                .await
                .map_err(|_| Error::Timeout(t))?,
            None => read.await,
        }
        .map_err(io_error("reading"))?;
        if n == 0 {
            return Ok(());
        }
        shared.received.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(c) = &mut cipher {
            c.apply(&mut buf[start..]);
        }
    }
}

/// Frames smaller than this are copied together into one buffer before writing; larger
/// ones (blocks) are encrypted where they are and written as they are, with one `writev`
/// for the batch, so block data is not copied once more on its way out.
const COALESCE: usize = 4096;

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut io: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
    mut cipher: Option<XSalsa20>,
    keepalive: Option<Duration>,
) -> Result<(), Error> {
    let mut segments: Vec<BytesMut> = Vec::new();
    loop {
        let next = match keepalive {
            Some(k) => match tokio::time::timeout(k, rx.recv()).await {
                Ok(next) => next,
                // Nothing sent for a while: an empty frame keeps the remote's timer happy.
                Err(_) => Some(Out::KeepAlive),
            },
            None => rx.recv().await,
        };
        let Some(first) = next else { return Ok(()) };
        let mut finish = false;
        let mut frames = 0usize;
        let mut batch = 0usize;
        let mut item = Some(first);
        while let Some(out) = item.take() {
            let frame = match out {
                Out::Frame(f) => {
                    frames += f.len();
                    f
                }
                Out::KeepAlive => BytesMut::from(&[0u8][..]),
                Out::Finish => {
                    finish = true;
                    break;
                }
            };
            batch += frame.len();
            match segments.last_mut() {
                // Small frames join the previous small segment.
                Some(last) if frame.len() < COALESCE && last.len() < COALESCE => {
                    last.extend_from_slice(&frame)
                }
                _ => segments.push(frame),
            }
            if batch < WRITE_BATCH {
                item = rx.try_recv().ok();
            }
        }
        if !segments.is_empty() {
            if let Some(c) = &mut cipher {
                for segment in &mut segments {
                    c.apply(segment);
                }
            }
            write_all_vectored(&mut io, &segments)
                .await
                .map_err(io_error("writing"))?;
            shared.sent.fetch_add(batch as u64, Ordering::Relaxed);
            segments.clear();
        }
        shared.queued.fetch_sub(frames, Ordering::Relaxed);
        shared.drained.notify_waiters();
        if finish {
            io.flush().await.map_err(io_error("writing"))?;
            io.shutdown().await.map_err(io_error("writing"))?;
            return Ok(());
        }
    }
}

/// Writes every byte of `segments`, in order, with as few system calls as the stream
/// allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    io: &mut W,
    segments: &[BytesMut],
) -> std::io::Result<()> {
    // Where writing resumes: segment, and offset in it.
    let (mut at, mut offset) = (0usize, 0usize);
    while at < segments.len() {
        let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&segments[at][offset..])
            .chain(segments[at + 1..].iter().map(|s| &s[..]))
            .take(64)
            .map(std::io::IoSlice::new)
            .collect();
        let mut written = io.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while at < segments.len() && written >= segments[at].len() - offset {
            written -= segments[at].len() - offset;
            at += 1;
            offset = 0;
        }
        offset += written;
    }
    Ok(())
}

/// The sending half of a channel. Cheap to clone.
#[derive(Clone)]
pub struct ChannelSender {
    shared: Arc<Shared>,
    discovery_key: DiscoveryKey,
    key: PublicKey,
    local_id: u64,
}

impl std::fmt::Debug for ChannelSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSender")
            .field("discovery_key", &self.discovery_key)
            .field("local_id", &self.local_id)
            .finish()
    }
}

impl ChannelSender {
    /// The feed key.
    pub fn key(&self) -> PublicKey {
        self.key
    }

    /// The feed's discovery key.
    pub fn discovery_key(&self) -> DiscoveryKey {
        self.discovery_key
    }

    /// The remote peer's static Noise key.
    pub fn remote_key(&self) -> PeerKey {
        self.shared.remote_key
    }

    /// Queues a message. Fails once the channel or the connection is closed.
    pub fn send(&self, message: Message) -> Result<(), Error> {
        let mut state = self.shared.lock()?;
        if !self.is_open(&state) {
            return Err(Error::ChannelClosed(self.discovery_key));
        }
        if self.shared.send_frame(&mut state, self.local_id, &message) {
            Ok(())
        } else {
            Err(Error::ChannelClosed(self.discovery_key))
        }
    }

    fn is_open(&self, state: &State) -> bool {
        state
            .channels
            .get(&self.discovery_key)
            .and_then(|c| c.local_id)
            == Some(self.local_id)
    }

    /// Bytes queued on the connection but not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Waits until the queue is at most `limit` bytes (or the connection is gone).
    pub async fn drained(&self, limit: usize) {
        loop {
            let notified = self.shared.drained.notified();
            if self.queued_bytes() <= limit || self.shared.outcome.borrow().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Closes the channel (the remote is told).
    pub fn close(&self) {
        if let Ok(mut state) = self.shared.lock() {
            if self.is_open(&state) {
                self.shared
                    .close_local(&mut state, self.discovery_key, self.local_id);
            }
        }
    }

    /// Destroys the whole connection, e.g. because the peer misbehaved on this channel.
    pub fn destroy(&self, error: Error) {
        self.shared.fail(error);
    }
}

/// A feed's channel on a connection: send with [`Channel::sender`], receive with
/// [`Channel::recv`]. Dropping it closes the channel.
#[derive(Debug)]
pub struct Channel {
    sender: ChannelSender,
    /// `None` once split off (the receiver then owns closing).
    inbox: Option<mpsc::Receiver<ChannelEvent>>,
}

impl Channel {
    /// The sending half.
    pub fn sender(&self) -> &ChannelSender {
        &self.sender
    }

    /// The next event; `None` once the channel is closed (by either side) or the
    /// connection ended.
    pub async fn recv(&mut self) -> Option<ChannelEvent> {
        self.inbox.as_mut()?.recv().await
    }

    /// Splits into the sender and the receiving end (which closes the channel when dropped).
    pub fn split(mut self) -> (ChannelSender, ChannelReceiver) {
        let inbox = self.inbox.take().unwrap_or_else(|| mpsc::channel(1).1);
        let sender = self.sender.clone();
        (sender.clone(), ChannelReceiver { sender, inbox })
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if self.inbox.is_some() {
            self.sender.close();
        }
    }
}

/// The receiving end of a split [`Channel`]; dropping it closes the channel.
#[derive(Debug)]
pub struct ChannelReceiver {
    sender: ChannelSender,
    inbox: mpsc::Receiver<ChannelEvent>,
}

impl ChannelReceiver {
    /// The next event; `None` once the channel is closed or the connection ended.
    pub async fn recv(&mut self) -> Option<ChannelEvent> {
        self.inbox.recv().await
    }

    /// The next event if one is already waiting.
    pub fn try_recv(&mut self) -> Option<ChannelEvent> {
        self.inbox.try_recv().ok()
    }
}

impl Drop for ChannelReceiver {
    fn drop(&mut self) {
        self.sender.close();
    }
}

/// A connection-wide extension; created by [`Protocol::register_extension`].
pub struct StreamExtension {
    shared: Arc<Shared>,
    name: String,
    inbox: mpsc::Receiver<Bytes>,
}

impl std::fmt::Debug for StreamExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamExtension")
            .field("name", &self.name)
            .finish()
    }
}

impl StreamExtension {
    /// Sends a message to the remote's handler of the same name.
    pub fn send(&self, payload: Bytes) -> Result<(), Error> {
        let mut state = self.shared.lock()?;
        if let Some(names) = state.extensions.take_announcement() {
            self.shared.send_frame(
                &mut state,
                0,
                &Message::Options(Options {
                    extensions: names,
                    ack: None,
                }),
            );
        }
        let id = state
            .extensions
            .id_of(&self.name)
            .ok_or_else(|| Error::Closed("extension not registered".into()))?;
        if self
            .shared
            .send_frame(&mut state, 0, &Message::Extension { id, payload })
        {
            Ok(())
        } else {
            Err(Error::Closed("connection closed".into()))
        }
    }

    /// The next message from the remote.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.inbox.recv().await
    }
}
