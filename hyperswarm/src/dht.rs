//! The client side of the DHT: a UDP socket (shared with uTP, [`Endpoint`]) that sends requests (each matched to its
//! response by rid, sent again and given up on as dht-rpc does) while its [`Node`]
//! answers whatever others ask; the iterative walk towards a target; and on it
//! @hyperswarm/dht's `lookup`, `announce` and `unannounce` (spec §2.9–2.12, §3.5). The
//! node is ephemeral: it sends no id, so it stays out of routing tables, as hyperswarm
//! peers start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddrV4;
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
use crate::node::{Node, K};
use crate::peers::{PeersInput, PeersOutput};
use crate::utp::{Datagram, Endpoint, UtpError};
use crate::Id;

/// How often pending requests are looked at.
pub const TICK: Duration = Duration::from_millis(750);
/// Ticks after which a request without answer is sent again (JS: at most 3 sends).
const RESEND_AT: [u32; 2] = [2, 5];
/// Ticks after which a request fails.
const GIVE_UP_AT: u32 = 10;
/// Requests one walk keeps in flight.
const CONCURRENCY: usize = 16;
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
}

enum Command {
    Request {
        to: SocketAddrV4,
        message: Box<Message>,
        reply: oneshot::Sender<Result<Reply, DhtError>>,
    },
    Closest {
        target: Id,
        reply: oneshot::Sender<Vec<NodeInfo>>,
    },
    Holepunch {
        peer: SocketAddrV4,
        referrer: SocketAddrV4,
        reply: oneshot::Sender<Result<Reply, DhtError>>,
    },
    PublicAddress {
        reply: oneshot::Sender<Option<SocketAddrV4>>,
    },
}

/// A DHT client on a UDP socket it shares with uTP; dropped, its task ends (the socket
/// stays open while the endpoint has other users).
#[derive(Debug)]
pub struct Dht {
    commands: mpsc::Sender<Command>,
    endpoint: Endpoint,
    addr: SocketAddrV4,
    bootstrap: Vec<SocketAddrV4>,
    task: JoinHandle<()>,
}

impl Drop for Dht {
    fn drop(&mut self) {
        self.task.abort();
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
    /// Binds `addr` (port 0: any) as an [`Endpoint`] and runs on it (see [`Self::on`]);
    /// uTP connections on the same port go through [`Self::endpoint`].
    pub async fn bind(addr: SocketAddrV4, bootstrap: Vec<SocketAddrV4>) -> Result<Dht, DhtError> {
        Dht::on(Endpoint::bind(addr).await?, bootstrap)
    }

    /// Runs on `socket` (bound to an IPv4 address: the Dat2 DHT is IPv4 only), made an
    /// [`Endpoint`] so that uTP shares it, bootstrapping from `bootstrap`.
    pub fn on_socket(socket: UdpSocket, bootstrap: Vec<SocketAddrV4>) -> Result<Dht, DhtError> {
        Dht::on(Endpoint::from_socket(socket)?, bootstrap)
    }

    /// Runs on `endpoint`'s socket (taking its non-uTP datagrams, so only one DHT per
    /// endpoint) and bootstraps from `bootstrap` (none: a DHT of one).
    pub fn on(endpoint: Endpoint, bootstrap: Vec<SocketAddrV4>) -> Result<Dht, DhtError> {
        let datagrams = endpoint.take_datagrams()?;
        let (commands, receiver) = mpsc::channel(64);
        let node = Node::new(None, rand::random());
        let task = tokio::spawn(serve(endpoint.clone(), datagrams, node, receiver));
        Ok(Dht {
            commands,
            addr: endpoint.local_addr(),
            endpoint,
            bootstrap,
            task,
        })
    }

    /// Where its socket is bound.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// The socket it shares with uTP: connect and accept uTP connections on it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends `message` to `to` (its rid is chosen here) and waits for the answer.
    pub async fn request(&self, to: SocketAddrV4, message: Message) -> Result<Reply, DhtError> {
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
        self.commands
            .send(command)
            .await
            .map_err(|_| DhtError::Closed)?;
        answer.await.map_err(|_| DhtError::Closed)?
    }

    /// Our address as the DHT sees it, once enough nodes agree on it (see
    /// [`Node::public_address`]): known, peers behind other NATs can punch through to
    /// us.
    pub async fn public_address(&self) -> Option<SocketAddrV4> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::PublicAddress { reply })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }

    /// The peers announced under `topic`, from every node of a walk towards it.
    pub async fn lookup(&self, topic: Id) -> Result<Vec<FoundPeer>, DhtError> {
        let value = PeersInput::default().encode_to_vec();
        let replies = self.walk("peers", topic, value.into(), Walk::Query).await?;
        Ok(found_peers(replies))
    }

    /// Announces this socket's address under `topic`: nodes store the port it sends
    /// from (so listen for connections on the same port number); returns the peers the
    /// walk found meanwhile.
    pub async fn announce(&self, topic: Id) -> Result<Vec<FoundPeer>, DhtError> {
        let value = PeersInput {
            port: Some(0),
            ..PeersInput::default()
        };
        let replies = self
            .walk(
                "peers",
                topic,
                value.encode_to_vec().into(),
                Walk::QueryAndUpdate,
            )
            .await?;
        Ok(found_peers(replies))
    }

    /// Withdraws the announcement of this socket's address under `topic`.
    pub async fn unannounce(&self, topic: Id) -> Result<(), DhtError> {
        let value = PeersInput {
            port: Some(0),
            unannounce: Some(true),
            ..PeersInput::default()
        };
        self.walk("peers", topic, value.encode_to_vec().into(), Walk::Update)
            .await
            .map(drop)
    }

    /// The iterative walk of dht-rpc towards `target`: asks the closest nodes known (and
    /// the bootstrap nodes while few are known), then the closer ones they name, until
    /// none is left; in update modes, then sends the update to the closest that answered
    /// with an id and a token. Returns the answers to the command (query modes).
    async fn walk(
        &self,
        command: &str,
        target: Id,
        value: Bytes,
        walk: Walk,
    ) -> Result<Vec<Reply>, DhtError> {
        let asked_command = match walk {
            Walk::Update => "_find_node",
            Walk::Query | Walk::QueryAndUpdate => command,
        };
        let (reply, known) = oneshot::channel();
        self.commands
            .send(Command::Closest { target, reply })
            .await
            .map_err(|_| DhtError::Closed)?;
        let known = known.await.map_err(|_| DhtError::Closed)?;
        // Unasked nodes by distance; bootstrap nodes (ids unknown) go first.
        let mut unasked: BTreeMap<([u8; 32], SocketAddrV4), ()> = BTreeMap::new();
        let mut first: Vec<SocketAddrV4> = Vec::new();
        if known.len() < self.bootstrap.len().max(1) {
            first.extend(&self.bootstrap);
        }
        for node in known {
            unasked.insert((node.id.distance(&target), node.addr), ());
        }
        let mut asked: HashSet<SocketAddrV4> = HashSet::new();
        let mut in_flight = FuturesUnordered::new();
        let mut answers = Vec::new();
        let mut answered = 0usize;
        // The closest nodes that answered with an id and a token: updates go there.
        let mut closest: BTreeMap<[u8; 32], (SocketAddrV4, Bytes)> = BTreeMap::new();
        loop {
            while in_flight.len() < CONCURRENCY && asked.len() < MAX_ASKED {
                let next = match first.pop() {
                    Some(addr) => addr,
                    None => match unasked.pop_first() {
                        Some(((_, addr), ())) => addr,
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
                in_flight.push(self.request(next, message));
            }
            let Some(result) = in_flight.next().await else {
                break;
            };
            let Ok(reply) = result else {
                continue;
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
                    unasked.insert((node.id.distance(&target), node.addr), ());
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

/// The peers `peers` answers name, each once, with the node that named it first.
fn found_peers(replies: Vec<Reply>) -> Vec<FoundPeer> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for reply in replies {
        let peers = reply
            .message
            .value
            .and_then(|v| PeersOutput::decode(v).ok())
            .and_then(|o| o.peers)
            .and_then(|p| compact::decode_peers(&p).ok())
            .unwrap_or_default();
        for addr in peers {
            if seen.insert(addr) {
                found.push(FoundPeer {
                    addr,
                    referrer: reply.from,
                });
            }
        }
    }
    found
}

/// A request of `command` about `target` (its rid is set when sent).
fn request(kind: MessageType, command: &str, target: Id) -> Message {
    Message {
        version: Some(1),
        kind,
        rid: 0,
        to: None,
        id: None,
        target: Some(Bytes::copy_from_slice(&target.0)),
        closer_nodes: None,
        roundtrip_token: None,
        command: Some(command.to_string()),
        error: None,
        value: None,
    }
}

/// A rid no pending request has: the next of a 16-bit counter, as JS.
fn free_rid(next: &mut u16, pending: &HashMap<u64, Pending>) -> Option<u64> {
    (0..=u16::MAX).find_map(|_| {
        *next = next.wrapping_add(1);
        (!pending.contains_key(&u64::from(*next))).then_some(u64::from(*next))
    })
}

/// A hole punch's two requests with rid `rid` (spec §4.1): to the peer with no value
/// (it only opens our NAT towards it), and to the referrer naming the peer to relay to.
fn holepunch_requests(rid: u64, peer: SocketAddrV4, referrer: SocketAddrV4) -> (Vec<u8>, Vec<u8>) {
    let punch = |to: SocketAddrV4, value: Option<Bytes>| Message {
        version: Some(1),
        kind: MessageType::Query,
        rid,
        to: Some(Bytes::copy_from_slice(&compact::encode_peer(to))),
        id: None,
        target: None,
        closer_nodes: None,
        roundtrip_token: None,
        command: Some("_holepunch".into()),
        error: None,
        value,
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

/// A request waiting for its response.
struct Pending {
    to: SocketAddrV4,
    datagram: Vec<u8>,
    /// Sent (and resent) along with it: a hole punch's request to the referrer.
    relay: Option<(SocketAddrV4, Vec<u8>)>,
    command: String,
    ticks: u32,
    reply: oneshot::Sender<Result<Reply, DhtError>>,
}

/// The socket task: sends requests, matches responses by rid, resends and gives up on
/// the tick, and lets the node answer everything else.
async fn serve(
    socket: Endpoint,
    mut datagrams: mpsc::Receiver<Datagram>,
    mut node: Node,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    // A 16-bit counter from a random start, as JS.
    let mut next_rid: u16 = rand::thread_rng().gen();
    let mut ticks = tokio::time::interval(TICK);
    let mut limit = RateLimit::new(std::time::Instant::now());
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Closest { target, reply }) => {
                    let _ = reply.send(node.closest(&target.0));
                }
                Some(Command::PublicAddress { reply }) => {
                    let _ = reply.send(node.public_address());
                }
                Some(Command::Request { to, mut message, reply }) => {
                    let Some(rid) = free_rid(&mut next_rid, &pending) else { continue };
                    message.rid = rid;
                    message.to = Some(Bytes::copy_from_slice(&compact::encode_peer(to)));
                    let datagram = message.encode();
                    let _ = socket.send_to(&datagram, to).await;
                    let command = message.command.unwrap_or_default();
                    let request = Pending { to, datagram, relay: None, command, ticks: 0, reply };
                    pending.insert(rid, request);
                }
                Some(Command::Holepunch { peer, referrer, reply }) => {
                    let Some(rid) = free_rid(&mut next_rid, &pending) else { continue };
                    let (direct, relayed) = holepunch_requests(rid, peer, referrer);
                    let _ = socket.send_to(&direct, peer).await;
                    let _ = socket.send_to(&relayed, referrer).await;
                    let request = Pending {
                        to: peer,
                        datagram: direct,
                        relay: Some((referrer, relayed)),
                        command: "_holepunch".into(),
                        ticks: 0,
                        reply,
                    };
                    pending.insert(rid, request);
                }
            },
            _ = ticks.tick() => {
                let mut expired = Vec::new();
                for (rid, request) in &mut pending {
                    request.ticks += 1;
                    if request.ticks >= GIVE_UP_AT || request.reply.is_closed() {
                        expired.push(*rid);
                    } else if RESEND_AT.contains(&request.ticks) {
                        let _ = socket.send_to(&request.datagram, request.to).await;
                        if let Some((referrer, relayed)) = &request.relay {
                            let _ = socket.send_to(relayed, *referrer).await;
                        }
                    }
                }
                for rid in expired {
                    if let Some(request) = pending.remove(&rid) {
                        let error = DhtError::Timeout { to: request.to, command: request.command };
                        let _ = request.reply.send(Err(error));
                    }
                }
            },
            received = datagrams.recv() => {
                let Some(Datagram { from, bytes }) = received else { return };
                let Ok(message) = Message::decode(&bytes) else { continue };
                if message.kind != MessageType::Response {
                    if limit.allow(*from.ip(), std::time::Instant::now()) {
                        let (answers, _) = node.handle(message, from);
                        for answer in answers {
                            let _ = socket.send_to(&answer.datagram, answer.to).await;
                        }
                    }
                    continue;
                }
                // Responses update the routing table.
                node.handle(message.clone(), from);
                // Matched by rid alone, as dht-rpc does.
                if let Some(request) = pending.remove(&message.rid) {
                    let _ = request.reply.send(Ok(Reply { from, message }));
                }
            }
        }
    }
}
