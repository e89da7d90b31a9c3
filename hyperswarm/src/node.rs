//! What a dht-rpc 4 node answers, without I/O (the socket and timers are `server.rs`'s):
//! `_ping`, `_find_node`, `_holepunch` (relaying between two peers) and @hyperswarm/dht's
//! `peers` (storing announcements and answering lookups), with roundtrip tokens on every
//! answer and checked on every update, as the JS node does (spec §2.5–2.8, §3.4). A node
//! with an id is persistent: it sends its id and others add it to their routing tables.
//! Every node keeps a routing table ([`Table`]) of the persistent nodes it hears from, and
//! decides its upkeep (spec §2.10): which contacts to ping and when to bootstrap again;
//! its socket task sends the pings and reports how they went.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;

use bytes::Bytes;
use prost::Message as _;

use crate::compact::{self, NodeInfo, PEER_LEN};
use crate::message::{Holepunch, Message, MessageType};
use crate::peers::{PeersInput, PeersOutput};
use crate::store::RecordStore;
use crate::table::{Added, Table};
use crate::token::{token, TOKEN_LEN};
use crate::Id;

pub use crate::table::K;
/// Remote peers a lookup answer gives at most (local ones count against it).
const MAX_PEERS: usize = 128;
/// LAN peers a lookup answer gives at most.
const MAX_LOCAL_PEERS: usize = 32;
/// Every how many maintenance ticks the least recently seen contacts are pinged (40 s).
pub const PING_EVERY: u64 = 8;
/// Every how many maintenance ticks a node that knows few others bootstraps again (320 s).
pub const REBOOTSTRAP_EVERY: u64 = 64;
/// Contacts pinged per round; [`PING_BUSY`] while more than two walks run.
pub const PING_ROUND: usize = 5;
/// Contacts pinged per round while more than two walks run.
pub const PING_BUSY: usize = 3;
/// Nodes whose view of our address counts (the most recently heard), as dht-rpc.
const ADDRESS_VOTERS: usize = 10;
/// Votes that must agree, and at most disagree less than, to call an address ours.
const ADDRESS_QUORUM: usize = 3;

/// The `_ping` of a maintenance round or an eviction: it names the id expected, so a
/// node with another id at that address does not answer (its rid is set when sent).
pub fn ping_request(node: &NodeInfo) -> Message {
    Message {
        value: Some(Bytes::copy_from_slice(&node.id.0)),
        ..Message::request(MessageType::Query, "_ping")
    }
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Where.
    pub to: SocketAddrV4,
    /// What.
    pub datagram: Vec<u8>,
}

/// What a node saw happen, for a daemon to count or show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A peer announced itself under a topic.
    Announce {
        /// The topic.
        topic: Bytes,
        /// The address stored.
        peer: SocketAddrV4,
    },
    /// A peer withdrew its announcement.
    Unannounce {
        /// The topic.
        topic: Bytes,
        /// The address removed.
        peer: SocketAddrV4,
    },
    /// A peer looked a topic up.
    Lookup {
        /// The topic.
        topic: Bytes,
        /// Who asked.
        from: SocketAddrV4,
    },
    /// A hole punch was relayed.
    Holepunch {
        /// Who asked.
        from: SocketAddrV4,
        /// To whom it was relayed.
        to: SocketAddrV4,
    },
}

/// A newcomer waiting for a full bucket's least recently seen contacts to be pinged:
/// the first that fails is replaced by it.
#[derive(Debug)]
struct Eviction {
    newcomer: NodeInfo,
    /// The contact being pinged.
    pinging: Id,
    /// The ones to ping after it.
    next: Vec<NodeInfo>,
}

/// A dht-rpc node's state: its id, token secrets, routing table and stored announcements.
#[derive(Debug)]
pub struct Node {
    /// Sent in every message while persistent; ephemeral nodes still build their table
    /// around it and bootstrap towards it, as JS does.
    id: Id,
    persistent: bool,
    /// Current, then previous.
    secrets: [[u8; TOKEN_LEN]; 2],
    table: Table,
    /// Maintenance ticks so far (see [`Self::tick`]).
    tick: u64,
    /// Whether the first bootstrap walk ended: until then a newcomer for a full bucket
    /// is dropped (the walk just heard from everyone).
    bootstrapped: bool,
    /// By bucket: at most one at a time, so that a flood of newcomers costs one ping in
    /// flight per bucket and evicts nobody who answers.
    evictions: HashMap<usize, Eviction>,
    /// Pings asked of the socket task and not reported yet.
    pinging: HashSet<Id>,
    /// Pings to send, for the socket task to take.
    to_ping: Vec<NodeInfo>,
    /// Messages handled, ordering `seen_as`.
    messages: u64,
    peers: RecordStore<[u8; PEER_LEN]>,
    local_peers: RecordStore<[u8; compact::LOCAL_PEER_LEN]>,
    /// What persistent nodes that answered us saw as our address, by node, with the
    /// tick they said it at: the [`ADDRESS_VOTERS`] most recent.
    seen_as: HashMap<Id, (SocketAddrV4, u64)>,
}

impl Node {
    /// A node with `id` (persistent) or none (ephemeral: its table is built around a
    /// random id), minting tokens with `secret`.
    pub fn new(id: Option<Id>, secret: [u8; TOKEN_LEN]) -> Node {
        let persistent = id.is_some();
        Node::with_mode(id.unwrap_or_else(|| Id(rand::random())), persistent, secret)
    }

    /// A node with `id`, sent only when `persistent` (see [`Self::set_persistent`]).
    pub fn with_mode(id: Id, persistent: bool, secret: [u8; TOKEN_LEN]) -> Node {
        Node {
            id,
            persistent,
            secrets: [secret, secret],
            table: Table::new(id),
            tick: 0,
            bootstrapped: false,
            evictions: HashMap::new(),
            pinging: HashSet::new(),
            to_ping: Vec::new(),
            messages: 0,
            peers: RecordStore::default(),
            local_peers: RecordStore::default(),
            seen_as: HashMap::new(),
        }
    }

    /// Our address as the DHT sees it, by dht-rpc's rule: of the 10 persistent nodes
    /// heard from last, at least 3 reported this `host:port` and fewer than 3 another.
    /// Known, we are reachable at it from outside (behind a NAT that keeps the port,
    /// "holepunchable"); `None` until enough nodes agree.
    pub fn public_address(&self) -> Option<SocketAddrV4> {
        let mut votes: HashMap<SocketAddrV4, usize> = HashMap::new();
        for (addr, _) in self.seen_as.values() {
            *votes.entry(*addr).or_default() += 1;
        }
        let (addr, agree) = votes.iter().max_by_key(|(_, n)| **n)?;
        let disagree = self.seen_as.len() - agree;
        (*agree >= ADDRESS_QUORUM && disagree < ADDRESS_QUORUM).then_some(*addr)
    }

    fn saw_us_as(&mut self, node: Id, to: SocketAddrV4) {
        self.seen_as.insert(node, (to, self.messages));
        if self.seen_as.len() > ADDRESS_VOTERS {
            let oldest = self
                .seen_as
                .iter()
                .min_by_key(|(_, (_, tick))| *tick)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.seen_as.remove(&oldest);
            }
        }
    }

    /// Its id, if persistent (sent in every message).
    pub fn id(&self) -> Option<Id> {
        self.persistent.then_some(self.id)
    }

    /// The id its table is built around and its bootstrap walks go to (sent only when
    /// persistent).
    pub fn own_id(&self) -> Id {
        self.id
    }

    /// Starts sending its id (an adaptive node found reachable): others add it to their
    /// routing tables from its next message on.
    pub fn set_persistent(&mut self) {
        self.persistent = true;
    }

    /// Its routing table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Starts minting tokens with `secret`; tokens of the one before stay valid until
    /// the next rotation (JS rotates every 5 minutes).
    pub fn rotate_secret(&mut self, secret: [u8; TOKEN_LEN]) {
        self.secrets = [secret, self.secrets[0]];
    }

    /// Ends a generation of stored announcements (every [`crate::store::GENERATION`]).
    pub fn turn_records(&mut self) {
        self.peers.turn();
        self.local_peers.turn();
    }

    /// Announcements stored.
    pub fn records(&self) -> usize {
        self.peers.len() + self.local_peers.len()
    }

    /// Persistent nodes in the routing table.
    pub fn contacts(&self) -> usize {
        self.table.len()
    }

    /// The first bootstrap walk ended: newcomers for full buckets may now replace
    /// contacts that fail a ping.
    pub fn set_bootstrapped(&mut self) {
        self.bootstrapped = true;
    }

    /// One maintenance tick (every [`crate::dht::MAINTENANCE_TICK`], 5 s), with `walks`
    /// walks running: every [`PING_EVERY`]th queues pings (see [`Self::take_pings`]) of
    /// the [`PING_ROUND`] least recently seen contacts ([`PING_BUSY`] with more than
    /// two walks) not heard from in this tick. Returns whether to bootstrap again: at a
    /// ping round with an empty table, or every [`REBOOTSTRAP_EVERY`]th tick with fewer
    /// than [`K`] contacts.
    pub fn tick(&mut self, walks: usize) -> bool {
        self.tick += 1;
        let mut bootstrap = false;
        if self.tick.is_multiple_of(PING_EVERY) {
            if self.table.is_empty() {
                bootstrap = true;
            }
            let round = if walks > 2 { PING_BUSY } else { PING_ROUND };
            // Least recent first: once one was heard this tick, so were the rest.
            for contact in self.table.least_recent(round) {
                if contact.heard == self.tick {
                    break;
                }
                self.ping(contact.info());
            }
        }
        if self.tick.is_multiple_of(REBOOTSTRAP_EVERY) && self.table.len() < K {
            bootstrap = true;
        }
        bootstrap
    }

    fn ping(&mut self, node: NodeInfo) {
        if self.pinging.insert(node.id) {
            self.to_ping.push(node);
        }
    }

    /// The contacts to ping now (`_ping` with their id as value, see [`ping_request`]);
    /// report each outcome with [`Self::pinged`].
    pub fn take_pings(&mut self) -> Vec<NodeInfo> {
        std::mem::take(&mut self.to_ping)
    }

    /// How a ping of `node` went (`answered`: by a response carrying its id). One that
    /// failed is removed, and a newcomer waiting on it takes its place; one that
    /// answered stays, and the newcomer waits on the next candidate, if any.
    pub fn pinged(&mut self, node: NodeInfo, answered: bool) {
        self.pinging.remove(&node.id);
        if !answered {
            self.remove_contact(node);
        }
        let waiting = self
            .evictions
            .iter()
            .find(|(_, e)| e.pinging == node.id)
            .map(|(bucket, _)| *bucket);
        let Some(bucket) = waiting else { return };
        let mut eviction = self.evictions.remove(&bucket).expect("found");
        if !answered {
            let NodeInfo { id, addr } = eviction.newcomer;
            self.table.add(id, addr, self.tick);
            return;
        }
        if eviction.next.is_empty() {
            return;
        }
        let next = eviction.next.remove(0);
        eviction.pinging = next.id;
        self.evictions.insert(bucket, eviction);
        self.ping(next);
    }

    /// Removes `node` from the table, if the contact with its id is at its address
    /// (a walk got no answer from it): an address named by someone else cannot
    /// remove a live contact.
    pub fn remove_contact(&mut self, node: NodeInfo) {
        if self
            .table
            .get(&node.id)
            .is_some_and(|c| c.addr == node.addr)
        {
            self.table.remove(&node.id);
        }
    }

    /// Handles a datagram from `from`: the datagrams to send in answer (none for what
    /// does not decode or is not to be answered), and what happened.
    pub fn receive(
        &mut self,
        datagram: &[u8],
        from: SocketAddrV4,
    ) -> (Vec<Outgoing>, Option<NodeEvent>) {
        match Message::decode(datagram) {
            Ok(message) => self.handle(message, from),
            Err(_) => (Vec::new(), None),
        }
    }

    /// [`Self::receive`] for a message already decoded.
    pub fn handle(
        &mut self,
        message: Message,
        from: SocketAddrV4,
    ) -> (Vec<Outgoing>, Option<NodeEvent>) {
        if from.port() == 0 || message.id.as_ref().is_some_and(|id| id.len() != 32) {
            return (Vec::new(), None);
        }
        if message.kind == MessageType::Update && !self.token_is_valid(&message, from) {
            return (Vec::new(), None);
        }
        self.messages += 1;
        if let Some(id) = message.id.as_deref().filter(|_| message.version >= Some(1)) {
            let id = Id::from_slice(id).expect("checked: 32 bytes");
            self.add_contact(id, from);
            let to = message.to.as_deref().map(compact::decode_peer);
            if let (MessageType::Response, Some(Ok(to))) = (message.kind, to) {
                self.saw_us_as(id, to);
            }
        }
        match message.kind {
            MessageType::Response => (Vec::new(), None),
            MessageType::Query | MessageType::Update => self.request(message, from),
        }
    }

    fn token_is_valid(&self, message: &Message, from: SocketAddrV4) -> bool {
        let Some(given) = message.roundtrip_token.as_deref() else {
            return false;
        };
        self.secrets
            .iter()
            .any(|secret| token(secret, *from.ip())[..] == *given)
    }

    /// Adds or refreshes a node heard from. For a full bucket that cannot split (and
    /// once bootstrapped), its least recently seen contacts heard in this tick are kept
    /// as the most recent and the others pinged one after another: the first that fails
    /// is replaced by the newcomer. While a bucket's candidates are being pinged, more
    /// newcomers for it are dropped.
    fn add_contact(&mut self, id: Id, addr: SocketAddrV4) {
        let Added::Full { bucket, candidates } = self.table.add(id, addr, self.tick) else {
            return;
        };
        if !self.bootstrapped || self.evictions.contains_key(&bucket) {
            return;
        }
        let mut stale: Vec<NodeInfo> = Vec::new();
        for candidate in candidates {
            if candidate.heard == self.tick {
                self.table.touch(&candidate.id);
            } else {
                stale.push(candidate.info());
            }
        }
        if stale.is_empty() {
            return;
        }
        let first = stale.remove(0);
        let newcomer = NodeInfo { id, addr };
        self.evictions.insert(
            bucket,
            Eviction {
                newcomer,
                pinging: first.id,
                next: stale,
            },
        );
        self.ping(first);
    }

    /// The [`K`] contacts closest to `target` (none for a target that is not 32 bytes).
    pub fn closest(&self, target: &[u8]) -> Vec<NodeInfo> {
        match Id::from_slice(target) {
            Some(target) => self.table.closest(&target, K),
            None => Vec::new(),
        }
    }

    /// A response to `request` from `from`, with a token unless it carries an error.
    fn response(&self, request: &Message, from: SocketAddrV4) -> Message {
        Message {
            version: Some(1),
            kind: MessageType::Response,
            rid: request.rid,
            to: Some(Bytes::copy_from_slice(&compact::encode_peer(from))),
            id: self.id().map(|id| Bytes::copy_from_slice(&id.0)),
            target: None,
            closer_nodes: None,
            roundtrip_token: Some(Bytes::copy_from_slice(&token(&self.secrets[0], *from.ip()))),
            command: None,
            error: None,
            value: None,
        }
    }

    fn reply(message: Message, to: SocketAddrV4) -> Vec<Outgoing> {
        vec![Outgoing {
            to,
            datagram: message.encode(),
        }]
    }

    fn request(
        &mut self,
        message: Message,
        from: SocketAddrV4,
    ) -> (Vec<Outgoing>, Option<NodeEvent>) {
        let query = message.kind == MessageType::Query;
        match message.command.as_deref() {
            Some("_ping") if query => {
                // As JS: an ephemeral node compares with its unsent id, so never answers
                // a ping that names one.
                if message.value.as_ref().is_some_and(|v| v[..] != self.id.0) {
                    return (Vec::new(), None);
                }
                let mut answer = self.response(&message, from);
                answer.value = answer.to.clone();
                (Self::reply(answer, from), None)
            }
            Some("_find_node") if query => {
                let Some(target) = message.target.as_deref().filter(|t| t.len() == 32) else {
                    return (Vec::new(), None);
                };
                let mut answer = self.response(&message, from);
                answer.closer_nodes = Some(compact::encode_nodes(&self.closest(target)).into());
                (Self::reply(answer, from), None)
            }
            Some("_holepunch") if query => self.holepunch(message, from),
            None => (Vec::new(), None),
            // Any other command, `_`-prefixed ones included, is a custom command.
            Some(command) => {
                let Some(target) = message.target.clone() else {
                    return (Vec::new(), None);
                };
                let closer = Some(Bytes::from(compact::encode_nodes(&self.closest(&target))));
                if command != "peers" {
                    let mut answer = self.response(&message, from);
                    answer.roundtrip_token = None;
                    answer.closer_nodes = closer;
                    answer.error = Some("Unsupported command".into());
                    return (Self::reply(answer, from), None);
                }
                self.peers_command(message, target, closer, from)
            }
        }
    }

    fn holepunch(
        &mut self,
        message: Message,
        from: SocketAddrV4,
    ) -> (Vec<Outgoing>, Option<NodeEvent>) {
        let Some(punch) = message
            .value
            .as_ref()
            .and_then(|v| Holepunch::decode(&v[..]).ok())
        else {
            return (Vec::new(), None);
        };
        if let Some(to) = punch.to.as_deref() {
            let Ok(to) = compact::decode_peer(to) else {
                return (Vec::new(), None);
            };
            if to == from {
                return (Vec::new(), None);
            }
            let relayed = Message {
                version: Some(1),
                id: self.id().map(|id| Bytes::copy_from_slice(&id.0)),
                to: Some(Bytes::copy_from_slice(&compact::encode_peer(to))),
                value: Some(
                    Holepunch {
                        from: Some(Bytes::copy_from_slice(&compact::encode_peer(from))),
                        to: None,
                    }
                    .encode_to_vec()
                    .into(),
                ),
                ..message
            };
            let event = NodeEvent::Holepunch { from, to };
            return (Self::reply(relayed, to), Some(event));
        }
        // Asked by a relay to answer the peer it names, or asked directly.
        let answer_to = match punch.from.as_deref().map(compact::decode_peer) {
            Some(Ok(peer)) => peer,
            Some(Err(_)) => return (Vec::new(), None),
            None => from,
        };
        (
            Self::reply(self.response(&message, answer_to), answer_to),
            None,
        )
    }

    fn peers_command(
        &mut self,
        message: Message,
        topic: Bytes,
        closer: Option<Bytes>,
        from: SocketAddrV4,
    ) -> (Vec<Outgoing>, Option<NodeEvent>) {
        let value = message.value.clone().unwrap_or_default();
        let Ok(input) = PeersInput::decode(value) else {
            return (Vec::new(), None);
        };
        let mut answer = self.response(&message, from);
        answer.closer_nodes = closer;
        let port = match input.port.unwrap_or(0) {
            0 => u32::from(from.port()),
            port => port,
        };
        let Ok(port) = u16::try_from(port) else {
            answer.roundtrip_token = None;
            answer.error = Some("Invalid port".into());
            return (Self::reply(answer, from), None);
        };
        let peer = SocketAddrV4::new(*from.ip(), port);
        let remote = compact::encode_peer(peer);
        let local = input
            .local_address
            .as_deref()
            .filter(|l| l.len() == PEER_LEN)
            .map(|l| {
                let mut key = topic.to_vec();
                key.extend_from_slice(&l[..2]);
                (key, <[u8; 4]>::try_from(&l[2..]).expect("4 bytes"))
            });
        if message.kind == MessageType::Update {
            let event = if input.unannounce == Some(true) {
                self.peers.remove(&topic, &remote);
                if let Some((key, record)) = &local {
                    self.local_peers.remove(key, record);
                }
                NodeEvent::Unannounce { topic, peer }
            } else {
                self.peers.add(&topic, remote);
                if let Some((key, record)) = local {
                    self.local_peers.add(&key, record);
                }
                NodeEvent::Announce { topic, peer }
            };
            return (Self::reply(answer, from), Some(event));
        }
        let locals = match &local {
            Some((key, record)) => self.local_peers.get(key, MAX_LOCAL_PEERS, Some(record)),
            None => Vec::new(),
        };
        let remotes = self
            .peers
            .get(&topic, MAX_PEERS - locals.len(), Some(&remote));
        let output = PeersOutput {
            peers: (!remotes.is_empty()).then(|| remotes.concat().into()),
            local_peers: (!locals.is_empty()).then(|| locals.concat().into()),
        };
        answer.value = Some(output.encode_to_vec().into());
        (
            Self::reply(answer, from),
            Some(NodeEvent::Lookup { topic, from }),
        )
    }
}
