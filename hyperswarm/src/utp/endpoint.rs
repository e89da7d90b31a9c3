//! The UDP socket uTP shares with the DHT, on tokio: one task reads every datagram,
//! gives those libutp would claim (spec §2.1) to their connection (by peer address and
//! connection id), answers unknown ones with a RESET, queues new SYNs for
//! [`Endpoint::accept`] and passes every other datagram on to the DHT
//! ([`Endpoint::take_datagrams`]); it also runs the connections' timers. A
//! [`UtpStream`] sends its own datagrams when written to or read from.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::conn::{Connection, ConnectionError};
use super::packet::{is_utp, Packet, PacketType};

/// How long [`Endpoint::connect`] waits for the handshake (hyperswarm's dial timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections an endpoint holds at most (libutp: 3000).
pub const MAX_CONNECTIONS: usize = 512;
/// Accepted connections waiting for [`Endpoint::accept`] at most; SYNs past it are
/// ignored, as libutp ignores SYNs its firewall refuses.
pub const ACCEPT_BACKLOG: usize = 64;
/// Datagrams for the DHT waiting to be read at most; past it they are dropped.
const DATAGRAM_BACKLOG: usize = 256;
/// RESETs answering unknown packets per second at most (no amplification of floods).
const RESETS_PER_SECOND: u32 = 100;
/// Datagrams read in one go before the connections answer (one ack per batch).
const BATCH: usize = 64;
const MAX_DATAGRAM: usize = 64 << 10;

/// Why an endpoint operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UtpError {
    /// The UDP socket could not be bound.
    #[error("binding the uTP/DHT socket {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddrV4,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The address of a socket given could not be read.
    #[error("reading the address of the uTP/DHT socket: {0}")]
    LocalAddr(#[source] io::Error),
    /// The socket is bound to an address that is not IPv4.
    #[error("the uTP/DHT socket is bound to {0}, not an IPv4 address")]
    NotIpv4(SocketAddr),
    /// The peer refused, reset or stopped answering a connection.
    #[error("uTP connection with {peer}: {source}")]
    Connection {
        /// The peer.
        peer: SocketAddrV4,
        /// What happened.
        #[source]
        source: ConnectionError,
    },
    /// The handshake did not finish in time.
    #[error("uTP connect to {peer}: no answer within {after:?}")]
    ConnectTimeout {
        /// The peer.
        peer: SocketAddrV4,
        /// How long it waited.
        after: Duration,
    },
    /// The endpoint holds as many connections as it may.
    #[error(
        "uTP connect to {peer}: the endpoint {local} already holds {MAX_CONNECTIONS} connections"
    )]
    TooManyConnections {
        /// The peer.
        peer: SocketAddrV4,
        /// The endpoint's address.
        local: SocketAddrV4,
    },
    /// Someone already reads the endpoint's non-uTP datagrams.
    #[error("the DHT datagrams of the endpoint {local} are already taken")]
    DatagramsTaken {
        /// The endpoint's address.
        local: SocketAddrV4,
    },
}

/// A datagram that is not uTP, for the DHT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Who sent it.
    pub from: SocketAddrV4,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// One connection and who waits on it.
#[derive(Debug)]
struct Slot {
    conn: Connection,
    peer: SocketAddrV4,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

type SlotRef = Arc<Mutex<Slot>>;

/// Lock order: `Shared` before any `Slot`; a stream takes only its slot.
#[derive(Debug)]
struct Shared {
    /// By peer and the id its packets carry to us.
    conns: HashMap<(SocketAddrV4, u16), SlotRef>,
    accept_queue: VecDeque<(SlotRef, SocketAddrV4)>,
    accepting: bool,
    datagrams: Option<mpsc::Sender<Datagram>>,
    /// RESETs sent in the current second, and when it started.
    resets: (Instant, u32),
}

#[derive(Debug)]
struct Inner {
    socket: UdpSocket,
    local_addr: SocketAddrV4,
    shared: Mutex<Shared>,
    /// A stream changed a connection's timers: the driver looks again.
    wake_driver: Notify,
    accepted: Notify,
}

/// Aborts the driver task when the last endpoint handle goes.
#[derive(Debug)]
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The UDP socket shared by uTP connections and the DHT. Cheap to clone; the socket
/// closes when the last clone (streams hold one) is dropped.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
    _driver: Arc<Driver>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves consistent-enough state behind.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Endpoint {
    /// Binds `addr` (port 0: any) and starts serving it. It accepts no connections
    /// until [`Self::set_accepting`] says so (utp-native's firewall also starts closed,
    /// until `listen`): a SYN nobody will accept had better go unanswered, so that the
    /// JS dialler's TCP attempt wins.
    pub async fn bind(addr: SocketAddrV4) -> Result<Endpoint, UtpError> {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| UtpError::Bind { addr, source })?;
        Endpoint::from_socket(socket)
    }

    /// Serves `socket`, already bound (to an IPv4 address), as [`Self::bind`] does.
    pub fn from_socket(socket: UdpSocket) -> Result<Endpoint, UtpError> {
        let local_addr = match socket.local_addr().map_err(UtpError::LocalAddr)? {
            SocketAddr::V4(bound) => bound,
            bound => return Err(UtpError::NotIpv4(bound)),
        };
        let inner = Arc::new(Inner {
            socket,
            local_addr,
            shared: Mutex::new(Shared {
                conns: HashMap::new(),
                accept_queue: VecDeque::new(),
                accepting: false,
                datagrams: None,
                resets: (now(), 0),
            }),
            wake_driver: Notify::new(),
            accepted: Notify::new(),
        });
        let driver = Driver(tokio::spawn(drive(inner.clone())));
        Ok(Endpoint {
            inner,
            _driver: Arc::new(driver),
        })
    }

    /// Where the socket is bound.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.inner.local_addr
    }

    /// The datagrams that are not uTP, from now on (for the DHT); only one taker.
    pub fn take_datagrams(&self) -> Result<mpsc::Receiver<Datagram>, UtpError> {
        let mut shared = lock(&self.inner.shared);
        if shared.datagrams.is_some() {
            return Err(UtpError::DatagramsTaken {
                local: self.inner.local_addr,
            });
        }
        let (sender, receiver) = mpsc::channel(DATAGRAM_BACKLOG);
        shared.datagrams = Some(sender);
        Ok(receiver)
    }

    /// Sends a datagram from the shared socket (for the DHT).
    pub async fn send_to(&self, datagram: &[u8], to: SocketAddrV4) -> io::Result<usize> {
        self.inner.socket.send_to(datagram, to).await
    }

    /// Whether new connections are accepted (for [`Self::accept`]); when not, SYNs are
    /// ignored (utp-native's firewall, also used when a swarm has all the peers it wants).
    pub fn set_accepting(&self, accepting: bool) {
        lock(&self.inner.shared).accepting = accepting;
    }

    /// Connections it holds now (open, closing, or waiting to be accepted).
    pub fn connections(&self) -> usize {
        lock(&self.inner.shared).conns.len()
    }

    /// Opens a connection to `peer`, failing after [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, peer: SocketAddrV4) -> Result<UtpStream, UtpError> {
        self.connect_timeout(peer, CONNECT_TIMEOUT).await
    }

    /// Opens a connection to `peer`, failing after `timeout`.
    pub async fn connect_timeout(
        &self,
        peer: SocketAddrV4,
        timeout: Duration,
    ) -> Result<UtpStream, UtpError> {
        let slot = {
            let mut shared = lock(&self.inner.shared);
            if shared.conns.len() >= MAX_CONNECTIONS {
                return Err(UtpError::TooManyConnections {
                    peer,
                    local: self.inner.local_addr,
                });
            }
            // libutp's 16-bit seed; 0xffff would make its peer's id 0x10000.
            let recv_id = loop {
                let id = rand::random::<u16>();
                if id != u16::MAX && !shared.conns.contains_key(&(peer, id)) {
                    break id;
                }
            };
            let slot = Arc::new(Mutex::new(Slot {
                conn: Connection::connect(recv_id, rand::random(), now()),
                peer,
                read_waker: None,
                write_waker: None,
            }));
            shared.conns.insert((peer, recv_id), slot.clone());
            slot
        };
        self.inner.flush(&mut lock(&slot));
        // The SYN's retransmission timer is new to the driver.
        self.inner.wake_driver.notify_one();
        let stream = UtpStream {
            endpoint: self.clone(),
            slot,
            peer,
        };
        let handshake = poll_fn(|cx| {
            let mut slot = lock(&stream.slot);
            if let Some(source) = slot.conn.error() {
                return Poll::Ready(Err(UtpError::Connection { peer, source }));
            }
            if slot.conn.is_established() {
                return Poll::Ready(Ok(()));
            }
            slot.write_waker = Some(cx.waker().clone());
            Poll::Pending
        });
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            // Dropping the stream tells the peer with a RESET, should it hear us late.
            Err(_) => Err(UtpError::ConnectTimeout {
                peer,
                after: timeout,
            }),
        }
    }

    /// The next connection a peer opened, and the peer.
    pub async fn accept(&self) -> (UtpStream, SocketAddrV4) {
        loop {
            let accepted = self.inner.accepted.notified();
            tokio::pin!(accepted);
            accepted.as_mut().enable();
            let next = {
                let mut shared = lock(&self.inner.shared);
                let mut next = None;
                // Connections that failed while waiting (their peer went silent) are skipped.
                while let Some((slot, peer)) = shared.accept_queue.pop_front() {
                    if lock(&slot).conn.error().is_none() {
                        next = Some((slot, peer));
                        break;
                    }
                }
                next
            };
            if let Some((slot, peer)) = next {
                let stream = UtpStream {
                    endpoint: self.clone(),
                    slot,
                    peer,
                };
                return (stream, peer);
            }
            accepted.await;
        }
    }
}

impl Inner {
    /// Sends what the connection has to send and wakes whoever waits on it. A datagram
    /// the socket cannot take now is dropped: to uTP, a lost packet.
    fn flush(&self, slot: &mut Slot) {
        let now = now();
        while let Some(datagram) = slot.conn.poll_transmit(now) {
            if let Err(e) = self.socket.try_send_to(&datagram, slot.peer.into()) {
                tracing::trace!("utp: sending to {}: {e}", slot.peer);
            }
        }
        if let Some(waker) = slot.read_waker.take() {
            waker.wake();
        }
        if let Some(waker) = slot.write_waker.take() {
            waker.wake();
        }
    }

    /// Routes one datagram; the connections it went to are added to `touched`.
    fn dispatch(&self, datagram: &[u8], from: SocketAddrV4, touched: &mut Vec<SlotRef>) {
        let mut shared = lock(&self.shared);
        if !is_utp(datagram) {
            if let Some(datagrams) = &shared.datagrams {
                let datagram = Datagram {
                    from,
                    bytes: datagram.to_vec(),
                };
                if let Err(mpsc::error::TrySendError::Closed(_)) = datagrams.try_send(datagram) {
                    shared.datagrams = None;
                }
            }
            return;
        }
        let Ok(packet) = Packet::decode(datagram) else {
            return;
        };
        let now = now();
        let id = packet.conn_id;
        let slot = match packet.kind {
            // Its id is our receive id, or (libutp checks both) our send id.
            PacketType::Reset => [id, id.wrapping_add(1), id.wrapping_sub(1)]
                .into_iter()
                .filter_map(|recv_id| shared.conns.get(&(from, recv_id)))
                .find(|slot| {
                    let slot = lock(slot);
                    slot.conn.recv_id() == id || slot.conn.send_id() == id
                })
                .cloned(),
            PacketType::Syn => match shared.conns.get(&(from, id.wrapping_add(1))) {
                Some(slot) => Some(slot.clone()),
                None => {
                    // The new connection answers the SYN when flushed.
                    touched.extend(self.accept_syn(&mut shared, &packet, from, now));
                    None
                }
            },
            PacketType::Data | PacketType::Fin | PacketType::State => {
                let slot = shared.conns.get(&(from, id)).cloned();
                if slot.is_none() {
                    self.reset_unknown(&mut shared, &packet, from, now);
                }
                slot
            }
        };
        drop(shared);
        let Some(slot) = slot else { return };
        lock(&slot).conn.handle(&packet, now);
        if !touched.iter().any(|t| Arc::ptr_eq(t, &slot)) {
            touched.push(slot);
        }
    }

    /// A new connection for a SYN, if accepting and there is room.
    fn accept_syn(
        &self,
        shared: &mut Shared,
        syn: &Packet,
        from: SocketAddrV4,
        now: Instant,
    ) -> Option<SlotRef> {
        let recv_id = syn.conn_id.wrapping_add(1);
        if !shared.accepting
            || shared.accept_queue.len() >= ACCEPT_BACKLOG
            || shared.conns.len() >= MAX_CONNECTIONS
        {
            tracing::debug!("utp: ignoring a SYN from {from}: not accepting now");
            return None;
        }
        let slot = Arc::new(Mutex::new(Slot {
            conn: Connection::accept(syn, rand::random(), now),
            peer: from,
            read_waker: None,
            write_waker: None,
        }));
        shared.conns.insert((from, recv_id), slot.clone());
        shared.accept_queue.push_back((slot.clone(), from));
        self.accepted.notify_waiters();
        Some(slot)
    }

    /// Answers a packet of no connection with a RESET, as libutp, within a budget.
    fn reset_unknown(&self, shared: &mut Shared, packet: &Packet, to: SocketAddrV4, now: Instant) {
        let (since, count) = &mut shared.resets;
        if now.duration_since(*since) >= Duration::from_secs(1) {
            *since = now;
            *count = 0;
        }
        if *count >= RESETS_PER_SECOND {
            return;
        }
        *count += 1;
        let reset = Packet {
            kind: PacketType::Reset,
            conn_id: packet.conn_id,
            timestamp: 0,
            timestamp_diff: 0,
            window: 0,
            seq: rand::random(),
            ack: packet.seq,
            selective_ack: None,
            payload: &[],
        };
        let _ = self.socket.try_send_to(&reset.encode(), to.into());
    }

    /// Runs due timers, flushes, and forgets finished connections; returns when the
    /// next timer is due.
    fn on_timers(&self) -> Option<Instant> {
        let now = now();
        let mut shared = lock(&self.shared);
        let mut next: Option<Instant> = None;
        shared.conns.retain(|_, slot| {
            let mut slot = lock(slot);
            if slot.conn.poll_timeout().is_some_and(|at| at <= now) {
                slot.conn.handle_timeout(now);
                self.flush(&mut slot);
            }
            if slot.conn.is_finished(now) {
                // Wake a reader or writer to see the end.
                self.flush(&mut slot);
                return false;
            }
            if let Some(at) = slot.conn.poll_timeout() {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            true
        });
        next
    }
}

/// Serves the socket until aborted.
async fn drive(inner: Arc<Inner>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let next = inner.on_timers();
        let timer = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = inner.socket.recv_from(&mut buf) => {
                let (len, from) = match received {
                    Ok(received) => received,
                    // ICMP errors of earlier sends surface here on Linux.
                    Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => continue,
                    Err(e) => {
                        tracing::debug!("utp: receiving on {}: {e}", inner.local_addr);
                        // Whatever it is, do not spin on it.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let mut touched = Vec::new();
                if let SocketAddr::V4(from) = from {
                    inner.dispatch(&buf[..len], from, &mut touched);
                }
                for _ in 0..BATCH {
                    match inner.socket.try_recv_from(&mut buf) {
                        Ok((len, SocketAddr::V4(from))) => {
                            inner.dispatch(&buf[..len], from, &mut touched)
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {}
                    }
                }
                for slot in touched {
                    inner.flush(&mut lock(&slot));
                }
            }
            () = timer => {}
            () = inner.wake_driver.notified() => {}
        }
    }
}

/// A uTP connection: bytes in order, both ways, as a TCP stream. Shutting down sends a
/// FIN after what was written; the peer's FIN reads as end of stream. Dropping it
/// closes it as libutp does (FIN, or RESET before the handshake is over). An accepted
/// stream sends nothing until the peer has sent something (libutp), which the dialling
/// side of hyperswarm always does first.
#[derive(Debug)]
pub struct UtpStream {
    endpoint: Endpoint,
    slot: SlotRef,
    peer: SocketAddrV4,
}

impl UtpStream {
    /// The other end.
    pub fn peer_addr(&self) -> SocketAddrV4 {
        self.peer
    }

    /// Our end (the shared socket's address).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.endpoint.local_addr()
    }

    fn io_error(&self, source: ConnectionError) -> io::Error {
        let kind = match source {
            ConnectionError::Refused => io::ErrorKind::ConnectionRefused,
            ConnectionError::Reset => io::ErrorKind::ConnectionReset,
            ConnectionError::TimedOut => io::ErrorKind::TimedOut,
        };
        let peer = self.peer;
        io::Error::new(kind, UtpError::Connection { peer, source })
    }

    /// Sends what is due and lets the driver see the connection's new timers.
    fn flush(&self, slot: &mut Slot) {
        self.endpoint.inner.flush(slot);
        self.endpoint.inner.wake_driver.notify_one();
    }
}

impl AsyncRead for UtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut slot = lock(&self.slot);
        if let Some(e) = slot.conn.error() {
            return Poll::Ready(Err(self.io_error(e)));
        }
        let n = slot.conn.read(buf.initialize_unfilled());
        if n > 0 {
            buf.advance(n);
            // A window update, if reading opened the window.
            self.endpoint.inner.flush(&mut slot);
            return Poll::Ready(Ok(()));
        }
        if slot.conn.at_eof() {
            return Poll::Ready(Ok(()));
        }
        slot.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for UtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut slot = lock(&self.slot);
        if let Some(e) = slot.conn.error() {
            return Poll::Ready(Err(self.io_error(e)));
        }
        if slot.conn.write_closed() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("uTP connection with {}: written after shutdown", self.peer),
            )));
        }
        let n = slot.conn.write(data);
        if n == 0 {
            slot.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        self.flush(&mut slot);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut slot = lock(&self.slot);
        slot.conn.shutdown();
        self.flush(&mut slot);
        Poll::Ready(Ok(()))
    }
}

impl Drop for UtpStream {
    fn drop(&mut self) {
        let mut slot = lock(&self.slot);
        slot.conn.close(now());
        self.flush(&mut slot);
    }
}
