//! A DHT node on a UDP socket (shared with uTP, [`Endpoint`]): it sends requests (each
//! matched to its response by rid, sent again and given up on as dht-rpc does) while its
//! [`Node`] answers whatever others ask; the iterative walk towards a target; and on it
//! @hyperswarm/dht's `lookup`, `announce` and `unannounce` (spec §2.9–2.12, §3.5). It
//! bootstraps at start and looks after its routing table on a 5-second tick (pinging
//! the least recently seen contacts, bootstrapping again when it knows few), and is
//! ephemeral, persistent or adaptive ([`Mode`], spec §2.13).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddrV4;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use prost::Message as _;
use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::compact::{self, NodeInfo};
use crate::limit::RateLimit;
use crate::message::{Holepunch, Message, MessageType};
use crate::node::{ping_request, Node, NodeEvent, K};
use crate::peers::{PeersInput, PeersOutput};
use crate::store::GENERATION;
use crate::utp::{Datagram, Endpoint, UtpError};
use crate::Id;

/// How often pending requests are looked at.
pub const TICK: Duration = Duration::from_millis(750);
/// Ticks after which a request without answer is sent again (JS: at most 3 sends).
const RESEND_AT: [u32; 2] = [2, 5];
/// Ticks after which a request fails.
const GIVE_UP_AT: u32 = 10;
/// Backpressure, as dht-rpc: past this many requests a second over [`RATE_WINDOW`], with
/// [`BUSY_IN_FLIGHT`] or more unanswered, new requests wait and retries are skipped.
const BUSY_RATE: f64 = 50.0;
const BUSY_IN_FLIGHT: usize = 16;
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Requests held back at most; more fail at once.
const MAX_WAITING: usize = 4096;
/// Requests one walk keeps in flight.
const CONCURRENCY: usize = 16;
/// Requests a bootstrap walk keeps in flight while other walks run.
const BACKGROUND_CONCURRENCY: usize = 2;
/// How often the routing table is looked after (see [`Node::tick`]).
pub const MAINTENANCE_TICK: Duration = Duration::from_secs(5);
/// How often the token secret changes.
pub const SECRET_ROTATION: Duration = Duration::from_secs(5 * 60);
/// How long an adaptive node waits before each check of its reachability (JS: 20 to 30
/// minutes after its first bootstrap, then again as long while unreachable).
pub const ADAPTIVE_CHECK: Range<Duration> =
    Duration::from_secs(20 * 60)..Duration::from_secs(30 * 60);
/// Nodes one walk asks at most, however many it hears of.
const MAX_ASKED: usize = 256;

/// Why a DHT operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    /// The shared socket could not be bound, or its datagrams were taken.
    #[error(transparent)]
    Socket(#[from] UtpError),
    /// A node did not answer in time.
    #[error("{to} did not answer {command} within {:?}", TICK * GIVE_UP_AT)]
    Timeout {
        /// The node.
        to: SocketAddrV4,
        /// The command asked.
        command: String,
    },
    /// The DHT was shut down.
    #[error("the DHT is closed")]
    Closed,
    /// No node answered a walk (no bootstrap node reachable).
    #[error("no DHT node answered {command}")]
    NoNodes {
        /// The command of the walk.
        command: String,
    },
    /// No node took the walk's updates.
    #[error("no close DHT node took the {command} update")]
    NoCloseNodes {
        /// The command of the walk.
        command: String,
    },
}

/// A response and the node it came from.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Who answered.
    pub from: SocketAddrV4,
    /// The answer.
    pub message: Message,
}

/// A peer found under a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FoundPeer {
    /// Where it listens.
    pub addr: SocketAddrV4,
    /// The DHT node that told us (it can relay a hole punch).
    pub referrer: SocketAddrV4,
    /// On our LAN, by the address it announced there (`localPeers`): dialed directly,
    /// no hole punch needed.
    pub local: bool,
}

/// How a node takes part in the DHT (spec §2.13).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Sends no id: stays out of routing tables, stores nothing for others.
    Ephemeral,
    /// Sends its id from the start: others add it to their routing tables, it receives
    /// announcements to store and answers lookups for them.
    Persistent,
    /// Starts ephemeral; some time after its first bootstrap (see
    /// [`Options::adaptive_check`]), if the DHT sees it at a stable public address
    /// ([`Node::public_address`]), turns persistent and bootstraps again, else looks
    /// again as long later. JS hyperswarm's default.
    #[default]
    Adaptive,
}

/// What a [`Dht`] runs with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes to bootstrap from (none: a DHT of one, until others bootstrap from it).
    pub bootstrap: Vec<SocketAddrV4>,
    /// How it takes part.
    pub mode: Mode,
    /// How long an adaptive node waits before each check, uniformly within the range
    /// ([`ADAPTIVE_CHECK`] unless a test shortens it).
    pub adaptive_check: Range<Duration>,
    /// Our address on the LAN and the port peers connect to, sent with lookups and
    /// announcements (@hyperswarm/dht's `localAddress`): peers behind the same NAT
    /// (whose LAN address shares its first two bytes) then find each other by it.
    pub local_address: Option<SocketAddrV4>,
}

impl Options {
    /// Bootstrapping from `bootstrap` in `mode`, checking adaptively every
    /// [`ADAPTIVE_CHECK`].
    pub fn new(bootstrap: Vec<SocketAddrV4>, mode: Mode) -> Options {
        Options {
            bootstrap,
            mode,
            adaptive_check: ADAPTIVE_CHECK,
            local_address: None,
        }
    }
}

type Inspection = Box<dyn FnOnce(&Node) + Send>;

enum Command {
    Request {
        to: SocketAddrV4,
        message: Box<Message>,
        reply: oneshot::Sender<Result<Reply, DhtError>>,
    },
    Holepunch {
        peer: SocketAddrV4,
        referrer: SocketAddrV4,
        reply: oneshot::Sender<Result<Reply, DhtError>>,
    },
    /// Runs a function on the node (to read it).
    Inspect(Inspection),
    /// A walk got no answer from this node: out of the table.
    Unresponsive(NodeInfo),
    /// A bootstrap walk ended.
    Bootstrapped,
}

/// What a walk needs of the socket task, cheap to clone: the socket task holds one (on a
/// weak sender, so that it ends with its [`Dht`]) to bootstrap again.
#[derive(Clone, Debug)]
struct Client {
    commands: mpsc::Sender<Command>,
    addr: SocketAddrV4,
    bootstrap: Arc<[SocketAddrV4]>,
    /// Walks running.
    walks: Arc<AtomicUsize>,
}

/// A DHT node on a UDP socket it shares with uTP: answers what others ask, walks for
/// lookups and announcements, keeps its routing table; dropped, its task ends (the
/// socket stays open while the endpoint has other users).
#[derive(Debug)]
pub struct Dht {
    client: Client,
    endpoint: Endpoint,
    own_id: Id,
    mode: Mode,
    local_address: Option<SocketAddrV4>,
    task: JoinHandle<()>,
}

impl Drop for Dht {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a walk as running while alive.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(walks: &Arc<AtomicUsize>) -> Running {
        walks.fetch_add(1, Ordering::Relaxed);
        Running(walks.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What was asked of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walk {
    /// Ask the command on the way; no update.
    Query,
    /// Ask the command on the way, then update the closest nodes.
    QueryAndUpdate,
    /// Walk with `_find_node`, then update the closest nodes.
    Update,
}

impl Dht {
    /// Binds `addr` (port 0: any) as an [`Endpoint`] and runs on it, ephemeral (see
    /// [`Self::on`]); uTP connections on the same port go through [`Self::endpoint`].
    pub async fn bind(addr: SocketAddrV4, bootstrap: Vec<SocketAddrV4>) -> Result<Dht, DhtError> {
        Dht::on(Endpoint::bind(addr).await?, bootstrap)
    }

    /// Runs on `socket` (bound to an IPv4 address: the Dat2 DHT is IPv4 only), made an
    /// [`Endpoint`] so that uTP shares it, ephemeral, bootstrapping from `bootstrap`.
    pub fn on_socket(socket: UdpSocket, bootstrap: Vec<SocketAddrV4>) -> Result<Dht, DhtError> {
        Dht::on(Endpoint::from_socket(socket)?, bootstrap)
    }

    /// Runs ephemeral on `endpoint`'s socket (see [`Self::with_options`]).
    pub fn on(endpoint: Endpoint, bootstrap: Vec<SocketAddrV4>) -> Result<Dht, DhtError> {
        Dht::with_options(endpoint, Options::new(bootstrap, Mode::Ephemeral))
    }

    /// Runs on `endpoint`'s socket (taking its non-uTP datagrams, so only one DHT per
    /// endpoint) as `options` say, with a random id, and bootstraps: a `_find_node` walk
    /// towards its own id, as JS nodes start, ephemeral ones too.
    pub fn with_options(endpoint: Endpoint, options: Options) -> Result<Dht, DhtError> {
        let datagrams = endpoint.take_datagrams()?;
        let (commands, receiver) = mpsc::channel(64);
        let own_id = Id(rand::random());
        let node = Node::with_mode(own_id, options.mode == Mode::Persistent, rand::random());
        let client = Client {
            commands,
            addr: endpoint.local_addr(),
            bootstrap: options.bootstrap.into(),
            walks: Arc::new(AtomicUsize::new(0)),
        };
        let task = Task {
            socket: endpoint.clone(),
            node,
            client: client.downgrade(),
            adaptive_check: (options.mode == Mode::Adaptive).then_some(options.adaptive_check),
            pending: HashMap::new(),
            next_rid: rand::thread_rng().gen(),
            bootstrapping: false,
            sent: VecDeque::new(),
            waiting: VecDeque::new(),
        };
        let task = tokio::spawn(task.run(datagrams, receiver));
        Ok(Dht {
            client,
            endpoint,
            own_id,
            mode: options.mode,
            local_address: options.local_address,
            task,
        })
    }

    /// Where its socket is bound.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.client.addr
    }

    /// The socket it shares with uTP: connect and accept uTP connections on it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Its id: sent in every message while persistent, the target of its bootstrap
    /// walks in any case.
    pub fn own_id(&self) -> Id {
        self.own_id
    }

    /// The mode it was started in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether it sends its id now (persistent, or adaptive and switched on).
    pub async fn is_persistent(&self) -> bool {
        self.inspect(|node| node.id().is_some())
            .await
            .unwrap_or(false)
    }

    /// The nodes in its routing table.
    pub async fn routing_table(&self) -> Vec<NodeInfo> {
        let all = |node: &Node| {
            node.table()
                .buckets()
                .iter()
                .flatten()
                .map(|c| c.info())
                .collect()
        };
        self.inspect(all).await.unwrap_or_default()
    }

    /// How many nodes its routing table holds.
    pub async fn contacts(&self) -> usize {
        self.inspect(Node::contacts).await.unwrap_or(0)
    }

    /// Announcements it stores for others.
    pub async fn records(&self) -> usize {
        self.inspect(Node::records).await.unwrap_or(0)
    }

    /// Our address as the DHT sees it, once enough nodes agree on it (see
    /// [`Node::public_address`]): known, peers behind other NATs can punch through to
    /// us.
    pub async fn public_address(&self) -> Option<SocketAddrV4> {
        self.inspect(Node::public_address).await.flatten()
    }

    /// `look` applied to the node (`None` once the DHT is closed).
    async fn inspect<T: Send + 'static>(
        &self,
        look: impl FnOnce(&Node) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        let inspection: Inspection = Box::new(move |node| {
            let _ = reply.send(look(node));
        });
        self.client
            .commands
            .send(Command::Inspect(inspection))
            .await
            .ok()?;
        answer.await.ok()
    }

    /// Sends `message` to `to` (its rid is chosen here) and waits for the answer.
    pub async fn request(&self, to: SocketAddrV4, message: Message) -> Result<Reply, DhtError> {
        self.client.request(to, message).await
    }

    /// Punches a hole towards `peer` (found through `referrer`) as dht-rpc does (spec
    /// §4.1): a `_holepunch` straight to the peer (which opens our NAT towards it) and,
    /// with the same rid, one to the referrer, which relays it; the peer's answer opens
    /// its NAT towards us. Resent and given up on as any request. Once it returns,
    /// datagrams pass both ways: a uTP connection to `peer` on this socket can follow.
    pub async fn holepunch(
        &self,
        peer: SocketAddrV4,
        referrer: SocketAddrV4,
    ) -> Result<Reply, DhtError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Holepunch {
            peer,
            referrer,
            reply,
        };
        self.client
            .commands
            .send(command)
            .await
            .map_err(|_| DhtError::Closed)?;
        answer.await.map_err(|_| DhtError::Closed)?
    }

    /// The peers announced under `topic`, from every node of a walk towards it.
    pub async fn lookup(&self, topic: Id) -> Result<Vec<FoundPeer>, DhtError> {
        let value = self.peers_input(None, false).encode_to_vec();
        let replies = self
            .client
            .walk("peers", topic, value.into(), Walk::Query, CONCURRENCY)
            .await?;
        Ok(found_peers(replies, self.local_address))
    }

    /// The value of a `peers` request: our LAN address if we give it.
    fn peers_input(&self, port: Option<u32>, unannounce: bool) -> PeersInput {
        PeersInput {
            port,
            local_address: self
                .local_address
                .map(|a| Bytes::copy_from_slice(&compact::encode_peer(a))),
            unannounce: unannounce.then_some(true),
        }
    }

    /// Announces this socket's address under `topic`: nodes store the port it sends
    /// from (so listen for connections on the same port number); returns the peers the
    /// walk found meanwhile.
    pub async fn announce(&self, topic: Id) -> Result<Vec<FoundPeer>, DhtError> {
        let value = self.peers_input(Some(0), false);
        let replies = self
            .client
            .walk(
                "peers",
                topic,
                value.encode_to_vec().into(),
                Walk::QueryAndUpdate,
                CONCURRENCY,
            )
            .await?;
        Ok(found_peers(replies, self.local_address))
    }

    /// Withdraws the announcement of this socket's address under `topic`.
    pub async fn unannounce(&self, topic: Id) -> Result<(), DhtError> {
        let value = self.peers_input(Some(0), true);
        self.client
            .walk(
                "peers",
                topic,
                value.encode_to_vec().into(),
                Walk::Update,
                CONCURRENCY,
            )
            .await
            .map(drop)
    }
}

/// A [`Client`] the socket task can hold without keeping itself alive.
#[derive(Clone, Debug)]
struct WeakClient {
    commands: mpsc::WeakSender<Command>,
    addr: SocketAddrV4,
    bootstrap: Arc<[SocketAddrV4]>,
    walks: Arc<AtomicUsize>,
}

impl WeakClient {
    fn upgrade(&self) -> Option<Client> {
        Some(Client {
            commands: self.commands.upgrade()?,
            addr: self.addr,
            bootstrap: self.bootstrap.clone(),
            walks: self.walks.clone(),
        })
    }
}

impl Client {
    fn downgrade(&self) -> WeakClient {
        WeakClient {
            commands: self.commands.downgrade(),
            addr: self.addr,
            bootstrap: self.bootstrap.clone(),
            walks: self.walks.clone(),
        }
    }

    async fn request(&self, to: SocketAddrV4, message: Message) -> Result<Reply, DhtError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Request {
            to,
            message: Box::new(message),
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| DhtError::Closed)?;
        answer.await.map_err(|_| DhtError::Closed)?
    }

    /// The `_find_node` walk towards `own` (our id) that fills the routing table, with
    /// all of [`CONCURRENCY`] when no other walk runs, else 2 (as JS); then tells the
    /// socket task it ended, whatever came of it.
    async fn bootstrap(self, own: Id) {
        let concurrency = match self.walks.load(Ordering::Relaxed) {
            0 => CONCURRENCY,
            _ => BACKGROUND_CONCURRENCY,
        };
        if let Err(e) = self
            .walk("_find_node", own, Bytes::new(), Walk::Query, concurrency)
            .await
        {
            tracing::debug!("dht: bootstrap walk: {e}");
        }
        let _ = self.commands.send(Command::Bootstrapped).await;
    }

    /// The iterative walk of dht-rpc towards `target`: asks the closest nodes known (and
    /// the bootstrap nodes while few are known), then the closer ones they name, until
    /// none is left, `concurrency` at a time; a known node that does not answer leaves
    /// the routing table. In update modes, then sends the update to the closest that
    /// answered with an id and a token. Returns the answers to the command (query
    /// modes).
    async fn walk(
        &self,
        command: &str,
        target: Id,
        value: Bytes,
        walk: Walk,
        concurrency: usize,
    ) -> Result<Vec<Reply>, DhtError> {
        let _running = Running::start(&self.walks);
        let asked_command = match walk {
            Walk::Update => "_find_node",
            Walk::Query | Walk::QueryAndUpdate => command,
        };
        let (reply, known) = oneshot::channel();
        let closest: Inspection = Box::new(move |node| {
            let _ = reply.send(node.closest(&target.0));
        });
        self.commands
            .send(Command::Inspect(closest))
            .await
            .map_err(|_| DhtError::Closed)?;
        let known = known.await.map_err(|_| DhtError::Closed)?;
        // Unasked nodes by distance, with their ids; bootstrap nodes (ids unknown) go
        // first.
        let mut unasked: BTreeMap<([u8; 32], SocketAddrV4), Id> = BTreeMap::new();
        let mut first: Vec<SocketAddrV4> = Vec::new();
        if known.len() < self.bootstrap.len().max(1) {
            first.extend(self.bootstrap.iter());
        }
        for node in known {
            unasked.insert((node.id.distance(&target), node.addr), node.id);
        }
        let mut asked: HashSet<SocketAddrV4> = HashSet::new();
        let mut in_flight = FuturesUnordered::new();
        let mut answers = Vec::new();
        let mut answered = 0usize;
        // The closest nodes that answered with an id and a token: updates go there.
        let mut closest: BTreeMap<[u8; 32], (SocketAddrV4, Bytes)> = BTreeMap::new();
        loop {
            while in_flight.len() < concurrency && asked.len() < MAX_ASKED {
                let (next, id) = match first.pop() {
                    Some(addr) => (addr, None),
                    None => match unasked.pop_first() {
                        Some(((_, addr), id)) => (addr, Some(id)),
                        None => break,
                    },
                };
                if !asked.insert(next) {
                    continue;
                }
                let mut message = request(MessageType::Query, asked_command, target);
                if walk != Walk::Update {
                    message.value = Some(value.clone());
                }
                let request = self.request(next, message);
                in_flight.push(async move { (next, id, request.await) });
            }
            let Some((addr, id, result)) = in_flight.next().await else {
                break;
            };
            let reply = match result {
                Ok(reply) => reply,
                Err(_) => {
                    if let Some(id) = id {
                        let gone = Command::Unresponsive(NodeInfo { id, addr });
                        let _ = self.commands.send(gone).await;
                    }
                    continue;
                }
            };
            answered += 1;
            let message = &reply.message;
            if let (Some(id), Some(token)) = (
                message.id.as_deref().and_then(Id::from_slice),
                message.roundtrip_token.clone(),
            ) {
                closest.insert(id.distance(&target), (reply.from, token));
                while closest.len() > K {
                    closest.pop_last();
                }
            }
            let named = message
                .closer_nodes
                .as_deref()
                .and_then(|n| compact::decode_nodes(n).ok())
                .unwrap_or_default();
            for node in named {
                if !asked.contains(&node.addr) && node.addr != self.addr {
                    unasked.insert((node.id.distance(&target), node.addr), node.id);
                }
            }
            while unasked.len() > K {
                unasked.pop_last();
            }
            if message.error.is_none() && walk != Walk::Update {
                answers.push(reply);
            }
        }
        if answered == 0 {
            return Err(DhtError::NoNodes {
                command: command.to_string(),
            });
        }
        if walk == Walk::Query {
            return Ok(answers);
        }
        let updates: FuturesUnordered<_> = closest
            .into_values()
            .map(|(to, token)| {
                let mut message = request(MessageType::Update, command, target);
                message.roundtrip_token = Some(token);
                message.value = Some(value.clone());
                self.request(to, message)
            })
            .collect();
        let taken = updates
            .filter(|r| std::future::ready(r.as_ref().is_ok_and(|r| r.message.error.is_none())))
            .count()
            .await;
        if taken == 0 {
            return Err(DhtError::NoCloseNodes {
                command: command.to_string(),
            });
        }
        Ok(answers)
    }
}

/// The peers `peers` answers name, each once, with the node that named it first; with
/// `local` (our LAN address), also the peers on our LAN, whose addresses start with its
/// first two bytes.
fn found_peers(replies: Vec<Reply>, local: Option<SocketAddrV4>) -> Vec<FoundPeer> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for reply in replies {
        let Some(output) = reply
            .message
            .value
            .and_then(|v| PeersOutput::decode(v).ok())
        else {
            continue;
        };
        let peers = output
            .peers
            .and_then(|p| compact::decode_peers(&p).ok())
            .unwrap_or_default();
        let lan = match (local, output.local_peers) {
            (Some(ours), Some(list)) => {
                let [a, b, _, _] = ours.ip().octets();
                compact::decode_local_peers(&list)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| p.address_with([a, b]))
                    .filter(|addr| *addr != ours)
                    .collect()
            }
            _ => Vec::new(),
        };
        let named = peers.into_iter().map(|a| (a, false));
        for (addr, local) in named.chain(lan.into_iter().map(|a| (a, true))) {
            if seen.insert(addr) {
                found.push(FoundPeer {
                    addr,
                    referrer: reply.from,
                    local,
                });
            }
        }
    }
    found
}

/// A request of `command` about `target` (its rid is set when sent).
fn request(kind: MessageType, command: &str, target: Id) -> Message {
    Message {
        target: Some(Bytes::copy_from_slice(&target.0)),
        ..Message::request(kind, command)
    }
}

/// A hole punch's two requests with rid `rid` and our id if persistent (spec §4.1): to
/// the peer with no value (it only opens our NAT towards it), and to the referrer
/// naming the peer to relay to.
fn holepunch_requests(
    rid: u64,
    id: Option<Id>,
    peer: SocketAddrV4,
    referrer: SocketAddrV4,
) -> (Vec<u8>, Vec<u8>) {
    let punch = |to: SocketAddrV4, value: Option<Bytes>| Message {
        rid,
        to: Some(Bytes::copy_from_slice(&compact::encode_peer(to))),
        id: id.map(|id| Bytes::copy_from_slice(&id.0)),
        value,
        ..Message::request(MessageType::Query, "_holepunch")
    };
    let relay = Holepunch {
        from: None,
        to: Some(Bytes::copy_from_slice(&compact::encode_peer(peer))),
    };
    (
        punch(peer, None).encode(),
        punch(referrer, Some(relay.encode_to_vec().into())).encode(),
    )
}

/// Who waits for a request's outcome.
enum Waiter {
    /// A caller of [`Dht::request`] (or a walk).
    Caller(oneshot::Sender<Result<Reply, DhtError>>),
    /// The node: a maintenance or eviction ping of this contact.
    Ping(NodeInfo),
}

/// A request waiting for its response.
struct Pending {
    to: SocketAddrV4,
    datagram: Vec<u8>,
    /// Sent (and resent) along with it: a hole punch's request to the referrer.
    relay: Option<(SocketAddrV4, Vec<u8>)>,
    command: String,
    ticks: u32,
    waiter: Waiter,
}

/// The socket task's state.
struct Task {
    socket: Endpoint,
    node: Node,
    client: WeakClient,
    /// For an adaptive node not persistent yet: how long to wait before each check.
    adaptive_check: Option<Range<Duration>>,
    pending: HashMap<u64, Pending>,
    /// A 16-bit counter from a random start, as JS.
    next_rid: u16,
    /// Whether a bootstrap walk runs (one at a time).
    bootstrapping: bool,
    /// When the requests of the last [`RATE_WINDOW`] were sent.
    sent: VecDeque<tokio::time::Instant>,
    /// Requests held back while congested, in order.
    waiting: VecDeque<(SocketAddrV4, Message, Waiter)>,
}

impl Task {
    /// Sends requests, matches responses by rid, resends and gives up on the request
    /// tick, lets the node answer everything else, and looks after the node: tokens'
    /// secret, stored announcements' generations, routing-table maintenance, bootstrap
    /// walks and the adaptive switch.
    async fn run(
        mut self,
        mut datagrams: mpsc::Receiver<Datagram>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let start = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval(TICK);
        let mut maintenance = tokio::time::interval_at(start + MAINTENANCE_TICK, MAINTENANCE_TICK);
        let mut rotate = tokio::time::interval_at(start + SECRET_ROTATION, SECRET_ROTATION);
        let mut turn = tokio::time::interval_at(start + GENERATION, GENERATION);
        // Armed once bootstrapped, for an adaptive node.
        let adaptive = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(adaptive);
        let mut armed = false;
        let mut limit = RateLimit::new(std::time::Instant::now());
        self.bootstrap();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Bootstrapped) => {
                        self.bootstrapping = false;
                        self.node.set_bootstrapped();
                        if let (Some(range), false) = (&self.adaptive_check, armed) {
                            armed = true;
                            adaptive.as_mut().reset(tokio::time::Instant::now() + pick(range));
                        }
                    }
                    Some(command) => self.command(command).await,
                },
                _ = ticks.tick() => self.request_tick().await,
                _ = maintenance.tick() => {
                    let walks = self.client.walks.load(Ordering::Relaxed);
                    if self.node.tick(walks) {
                        self.bootstrap();
                    }
                    self.send_pings().await;
                }
                _ = rotate.tick() => self.node.rotate_secret(rand::random()),
                _ = turn.tick() => self.node.turn_records(),
                () = &mut adaptive, if armed => {
                    let Some(range) = &self.adaptive_check else { continue };
                    match self.node.public_address() {
                        Some(public) => {
                            tracing::info!("dht: reachable at {public}: turning persistent");
                            self.node.set_persistent();
                            self.adaptive_check = None;
                            armed = false;
                            self.bootstrap();
                        }
                        None => {
                            let again = tokio::time::Instant::now() + pick(range);
                            adaptive.as_mut().reset(again);
                        }
                    }
                }
                received = datagrams.recv() => {
                    let Some(Datagram { from, bytes }) = received else { return };
                    let Ok(message) = Message::decode(&bytes) else { continue };
                    if message.kind != MessageType::Response {
                        if limit.allow(*from.ip(), std::time::Instant::now()) {
                            let (answers, event) = self.node.handle(message, from);
                            if let Some(event) = event {
                                log(&event);
                            }
                            for answer in answers {
                                let _ = self.socket.send_to(&answer.datagram, answer.to).await;
                            }
                            self.send_pings().await;
                        }
                        continue;
                    }
                    // Responses update the routing table.
                    self.node.handle(message.clone(), from);
                    // Matched by rid alone, as dht-rpc does.
                    if let Some(request) = self.pending.remove(&message.rid) {
                        match request.waiter {
                            Waiter::Caller(reply) => {
                                let _ = reply.send(Ok(Reply { from, message }));
                            }
                            Waiter::Ping(node) => {
                                let answered = message.id.as_deref() == Some(&node.id.0[..]);
                                self.node.pinged(node, answered);
                            }
                        }
                        self.release_waiting().await;
                    }
                    self.send_pings().await;
                }
            }
        }
    }

    /// Starts a bootstrap walk unless one runs.
    fn bootstrap(&mut self) {
        if self.bootstrapping {
            return;
        }
        if let Some(client) = self.client.upgrade() {
            self.bootstrapping = true;
            tokio::spawn(client.bootstrap(self.node.own_id()));
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Inspect(look) => look(&self.node),
            Command::Unresponsive(node) => self.node.remove_contact(node),
            Command::Request { to, message, reply } => {
                self.send(to, *message, Waiter::Caller(reply)).await;
            }
            Command::Holepunch {
                peer,
                referrer,
                reply,
            } => {
                let Some(rid) = self.free_rid() else { return };
                let (direct, relayed) = holepunch_requests(rid, self.node.id(), peer, referrer);
                self.sent.push_back(tokio::time::Instant::now());
                let _ = self.socket.send_to(&direct, peer).await;
                let _ = self.socket.send_to(&relayed, referrer).await;
                let request = Pending {
                    to: peer,
                    datagram: direct,
                    relay: Some((referrer, relayed)),
                    command: "_holepunch".into(),
                    ticks: 0,
                    waiter: Waiter::Caller(reply),
                };
                self.pending.insert(rid, request);
            }
            Command::Bootstrapped => {}
        }
    }

    /// Whether to hold requests back, as dht-rpc does: at least [`BUSY_RATE`] a second
    /// sent over the last [`RATE_WINDOW`] with at least [`BUSY_IN_FLIGHT`] unanswered.
    fn congested(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        while self.sent.front().is_some_and(|t| now - *t > RATE_WINDOW) {
            self.sent.pop_front();
        }
        let rate = self.sent.len() as f64 / RATE_WINDOW.as_secs_f64();
        rate >= BUSY_RATE && self.pending.len() >= BUSY_IN_FLIGHT
    }

    /// Sends `message` to `to` (see [`Self::transmit`]), or holds it back while
    /// congested (in order; bounded: past [`MAX_WAITING`] it fails at once).
    async fn send(&mut self, to: SocketAddrV4, message: Message, waiter: Waiter) {
        if !self.congested() && self.waiting.is_empty() {
            return self.transmit(to, message, waiter).await;
        }
        if self.waiting.len() < MAX_WAITING {
            self.waiting.push_back((to, message, waiter));
            return;
        }
        let command = message.command.unwrap_or_default();
        match waiter {
            Waiter::Caller(reply) => {
                let _ = reply.send(Err(DhtError::Timeout { to, command }));
            }
            Waiter::Ping(node) => self.node.pinged(node, false),
        }
    }

    /// Sends what was held back, as long as it is not congested.
    async fn release_waiting(&mut self) {
        while !self.congested() {
            let Some((to, message, waiter)) = self.waiting.pop_front() else {
                return;
            };
            self.transmit(to, message, waiter).await;
        }
    }

    /// Sends `message` to `to` with a fresh rid, our id if persistent and `to` as we
    /// address it, to be resent and given up on by the request tick.
    async fn transmit(&mut self, to: SocketAddrV4, mut message: Message, waiter: Waiter) {
        let Some(rid) = self.free_rid() else { return };
        self.sent.push_back(tokio::time::Instant::now());
        message.rid = rid;
        message.to = Some(Bytes::copy_from_slice(&compact::encode_peer(to)));
        message.id = self.node.id().map(|id| Bytes::copy_from_slice(&id.0));
        let datagram = message.encode();
        let _ = self.socket.send_to(&datagram, to).await;
        let command = message.command.unwrap_or_default();
        let request = Pending {
            to,
            datagram,
            relay: None,
            command,
            ticks: 0,
            waiter,
        };
        self.pending.insert(rid, request);
    }

    /// Sends the pings the node asks for.
    async fn send_pings(&mut self) {
        for node in self.node.take_pings() {
            self.send(node.addr, ping_request(&node), Waiter::Ping(node))
                .await;
        }
    }

    /// Resends what went unanswered long enough (not while congested: retries wait),
    /// fails what went unanswered too long.
    async fn request_tick(&mut self) {
        let mut expired = Vec::new();
        let congested = self.congested();
        for (rid, request) in &mut self.pending {
            request.ticks += 1;
            let abandoned = matches!(&request.waiter, Waiter::Caller(reply) if reply.is_closed());
            if request.ticks >= GIVE_UP_AT || abandoned {
                expired.push(*rid);
            } else if RESEND_AT.contains(&request.ticks) && !congested {
                let _ = self.socket.send_to(&request.datagram, request.to).await;
                if let Some((referrer, relayed)) = &request.relay {
                    let _ = self.socket.send_to(relayed, *referrer).await;
                }
            }
        }
        for rid in expired {
            let Some(request) = self.pending.remove(&rid) else {
                continue;
            };
            match request.waiter {
                Waiter::Caller(reply) => {
                    let error = DhtError::Timeout {
                        to: request.to,
                        command: request.command,
                    };
                    let _ = reply.send(Err(error));
                }
                Waiter::Ping(node) => self.node.pinged(node, false),
            }
        }
        self.release_waiting().await;
        self.send_pings().await;
    }

    /// A rid no pending request has: the next of a 16-bit counter, as JS.
    fn free_rid(&mut self) -> Option<u64> {
        (0..=u16::MAX).find_map(|_| {
            self.next_rid = self.next_rid.wrapping_add(1);
            let rid = u64::from(self.next_rid);
            (!self.pending.contains_key(&rid)).then_some(rid)
        })
    }
}

/// A duration picked uniformly in `range`.
fn pick(range: &Range<Duration>) -> Duration {
    if range.is_empty() {
        return range.start;
    }
    rand::thread_rng().gen_range(range.clone())
}

/// Logs what the node saw, for whoever debugs a DHT.
fn log(event: &NodeEvent) {
    let hex = |b: &[u8]| {
        b.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    match event {
        NodeEvent::Announce { topic, peer } => {
            tracing::debug!("dht: {peer} announced {}…", hex(topic))
        }
        NodeEvent::Unannounce { topic, peer } => {
            tracing::debug!("dht: {peer} unannounced {}…", hex(topic))
        }
        NodeEvent::Lookup { topic, from } => {
            tracing::debug!("dht: {from} looked up {}…", hex(topic))
        }
        NodeEvent::Holepunch { from, to } => tracing::debug!("dht: hole punch {from} -> {to}"),
    }
}
