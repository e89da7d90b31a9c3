//! Local discovery over mDNS as hyperswarm 2 runs it (@hyperswarm/discovery on
//! multicast-dns 7, spec §5): [`LocalTopics`] decides, without I/O, what to send and
//! which peers were found; [`Mdns`] runs it on the shared multicast socket
//! `0.0.0.0:5353`.
//!
//! Per joined topic: a lookup topic asks for its name's SRV record at join and every 30
//! to 60 s; an announcing topic answers those questions (SRV with our port and target
//! `0.0.0.0`, TXT with the topic's random instance id, and an A record naming the
//! querier) and tells everyone once, unasked, at join. A response naming a lookup
//! topic is a peer at the packet's source address, unless its TXT id is the topic's own
//! (our own answer coming back over the multicast loop).
//!
//! Unlike JS, a response whose SRV target is a host name rather than `0.0.0.0` or an
//! IPv4 address is ignored (a packet never makes us resolve a name), port 0 is never a
//! peer, answers to one source are limited to [`QUERIES_PER_SECOND`], and found peers
//! wait in a bounded queue ([`FOUND_QUEUE`]) that drops what does not fit.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use rand::Rng;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::limit::RateLimit;
use crate::mdns::{self, Announcement, MdnsError, RecordData, MDNS_ADDR};
use crate::Id;

/// The pause between two queries of a lookup topic: uniform in this range, as JS.
pub const QUERY_INTERVAL: Range<Duration> = Duration::from_secs(30)..Duration::from_secs(60);
/// How often new interfaces are looked for, to join the group on them (as JS).
pub const MEMBERSHIP_CHECK: Duration = Duration::from_secs(5);
/// Queries answered per source address and second: an honest peer asks once per topic
/// every 30 s at most, so this only cuts floods (every answer is multicast to all).
pub const QUERIES_PER_SECOND: u32 = 100;
/// Found peers waiting to be taken; more are dropped (they are found again on the next
/// answer).
pub const FOUND_QUEUE: usize = 256;
/// Announcements per response packet, so an answer to many names stays well under the
/// size of a datagram.
const ANNOUNCEMENTS_PER_PACKET: usize = 32;
const MAX_DATAGRAM: usize = 64 << 10;
/// `id=` and 32 random bytes, as JS.
const INSTANCE_LEN: usize = 35;
const TYPE_SRV: u16 = 33;

/// A peer found by mDNS under a joined topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MdnsPeer {
    /// The topic it announces.
    pub topic: Id,
    /// Where it listens for connections.
    pub addr: SocketAddrV4,
}

/// Why local discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalDiscoveryError {
    /// The multicast socket could not be set up.
    #[error("the mDNS socket: {what}: {source}")]
    Io {
        /// What was done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A topic joined neither to announce nor to look up (JS refuses it too).
    #[error("joining topic {0:?} on mDNS to neither announce nor look up")]
    NothingToDo(Id),
}

/// One joined topic.
#[derive(Debug)]
struct Joined {
    topic: Id,
    instance: Vec<u8>,
    announce: bool,
    lookup: bool,
    /// When the next query goes out (lookup topics only).
    next_query: Option<Instant>,
}

/// The joined topics by mDNS name, and what they send and find: local discovery
/// without I/O. Packets to send are multicast to [`MDNS_ADDR`].
#[derive(Debug)]
pub struct LocalTopics {
    /// The port announced (0: never announce, as JS without a port).
    port: u16,
    /// Several topics can share a name (it holds only 20 of their 32 bytes).
    names: HashMap<String, Vec<Joined>>,
    limit: RateLimit,
}

/// What a received packet asks of us.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Responses to multicast.
    pub send: Vec<Vec<u8>>,
    /// Peers found, each once.
    pub found: Vec<MdnsPeer>,
}

impl LocalTopics {
    /// No topic yet; announcing topics will announce `port`.
    pub fn new(port: u16, now: Instant) -> LocalTopics {
        LocalTopics {
            port,
            names: HashMap::new(),
            limit: RateLimit::with_budget(now, QUERIES_PER_SECOND),
        }
    }

    /// Joins `topic` (again: as a new topic, with a new instance id, as JS); returns the
    /// packets to send now: the query when looking up, then the announcement.
    pub fn join(
        &mut self,
        topic: Id,
        announce: bool,
        lookup: bool,
        now: Instant,
    ) -> Result<Vec<Vec<u8>>, LocalDiscoveryError> {
        if !announce && !lookup {
            return Err(LocalDiscoveryError::NothingToDo(topic));
        }
        self.leave(&topic);
        let name = mdns::topic_name(&topic);
        let mut rng = rand::thread_rng();
        let mut instance = b"id=".to_vec();
        instance.resize(INSTANCE_LEN, 0);
        rng.fill(&mut instance[3..]);
        let next_query = lookup.then(|| now + rng.gen_range(QUERY_INTERVAL));
        let joined = Joined {
            topic,
            instance,
            announce,
            lookup,
            next_query,
        };
        self.names.entry(name.clone()).or_default().push(joined);
        let mut send = Vec::new();
        if lookup {
            send.extend(query(&name));
        }
        if announce {
            send.extend(self.responses(&[name], None));
        }
        Ok(send)
    }

    /// Leaves `topic`: it is no longer asked for or answered.
    pub fn leave(&mut self, topic: &Id) {
        let name = mdns::topic_name(topic);
        if let Some(joined) = self.names.get_mut(&name) {
            joined.retain(|j| j.topic != *topic);
            if joined.is_empty() {
                self.names.remove(&name);
            }
        }
    }

    /// How many topics are joined.
    pub fn len(&self) -> usize {
        self.names.values().map(Vec::len).sum()
    }

    /// Whether no topic is joined.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// When the next query is due, if any topic looks up.
    pub fn next_query(&self) -> Option<Instant> {
        self.names
            .values()
            .flatten()
            .filter_map(|j| j.next_query)
            .min()
    }

    /// The queries due at `now` (each topic's next one is scheduled).
    pub fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut rng = rand::thread_rng();
        let mut send = Vec::new();
        for (name, joined) in &mut self.names {
            let mut asked = false;
            for j in joined.iter_mut() {
                if let Some(at) = j.next_query.filter(|&at| at <= now) {
                    j.next_query = Some(at.max(now) + rng.gen_range(QUERY_INTERVAL));
                    asked = true;
                }
            }
            // Topics sharing a name ask once.
            if asked {
                send.extend(query(name));
            }
        }
        send
    }

    /// What the packet `bytes` from `from` asks of us: answers to its questions for
    /// our announcing topics, or the peers its answers name for our lookup topics.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        from: Ipv4Addr,
        now: Instant,
    ) -> Result<Received, MdnsError> {
        let packet = mdns::decode(bytes)?;
        let mut received = Received::default();
        // The TXT id the packet gives for a name (JS reads the first TXT record's first
        // string for that name).
        let id_of = |name: &str| {
            packet.answers.iter().find_map(|a| match &a.data {
                RecordData::Txt(strings) if a.name == name => strings.first(),
                _ => None,
            })
        };
        if packet.response {
            let mut seen = HashSet::new();
            for answer in &packet.answers {
                let RecordData::Srv { port, target } = &answer.data else {
                    continue;
                };
                let Some(joined) = self.names.get(&answer.name) else {
                    continue;
                };
                let host = if target == "0.0.0.0" {
                    from
                } else {
                    match target.parse::<Ipv4Addr>() {
                        Ok(host) => host,
                        Err(_) => continue,
                    }
                };
                if *port == 0 {
                    continue;
                }
                let id = id_of(&answer.name);
                for j in joined.iter().filter(|j| j.lookup) {
                    if id == Some(&j.instance) {
                        continue;
                    }
                    let peer = MdnsPeer {
                        topic: j.topic,
                        addr: SocketAddrV4::new(host, *port),
                    };
                    if seen.insert(peer) {
                        received.found.push(peer);
                    }
                }
            }
        } else {
            let mut names: Vec<String> = Vec::new();
            for (name, kind) in &packet.questions {
                if *kind == TYPE_SRV && self.names.contains_key(name) && !names.contains(name) {
                    names.push(name.clone());
                }
            }
            if !names.is_empty() && self.limit.allow(from, now) {
                let answered: Vec<(String, Option<Vec<u8>>)> = names
                    .into_iter()
                    .map(|name| {
                        let id = id_of(&name).cloned();
                        (name, id)
                    })
                    .collect();
                received.send = self.answers(&answered, Some(from));
            }
        }
        Ok(received)
    }

    /// Responses announcing every announcing topic under `names`.
    fn responses(&self, names: &[String], referrer: Option<Ipv4Addr>) -> Vec<Vec<u8>> {
        let asked: Vec<(String, Option<Vec<u8>>)> =
            names.iter().map(|n| (n.clone(), None)).collect();
        self.answers(&asked, referrer)
    }

    /// Responses announcing every announcing topic under the names asked, except a topic
    /// whose instance id the question carries; with the A record naming `referrer`
    /// when answering a query.
    fn answers(
        &self,
        asked: &[(String, Option<Vec<u8>>)],
        referrer: Option<Ipv4Addr>,
    ) -> Vec<Vec<u8>> {
        if self.port == 0 {
            return Vec::new();
        }
        let announcements: Vec<Announcement> = asked
            .iter()
            .flat_map(|(name, id)| {
                self.names
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter(move |j| j.announce && id.as_ref() != Some(&j.instance))
                    .map(|j| Announcement {
                        name: name.clone(),
                        port: self.port,
                        instance: j.instance.clone(),
                    })
            })
            .collect();
        announcements
            .chunks(ANNOUNCEMENTS_PER_PACKET)
            .filter_map(|chunk| match mdns::encode_response(chunk, referrer) {
                Ok(packet) => Some(packet),
                Err(e) => {
                    tracing::debug!("mdns: cannot write a response: {e}");
                    None
                }
            })
            .collect()
    }
}

fn query(name: &str) -> Option<Vec<u8>> {
    mdns::encode_query(name)
        .map_err(|e| tracing::debug!("mdns: cannot write a query: {e}"))
        .ok()
}

/// Local discovery on the multicast socket `0.0.0.0:5353`, shared with other responders
/// on the host (JS peers, avahi); dropped, its task ends. Found peers come out of the
/// receiver [`Mdns::bind`] returns.
#[derive(Debug)]
pub struct Mdns {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    socket: UdpSocket,
    topics: Mutex<LocalTopics>,
    /// Wakes the task when a join changed the next query's time.
    wake: Notify,
}

impl Drop for Mdns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mdns {
    /// Binds `0.0.0.0:5353` (with `SO_REUSEADDR` and `SO_REUSEPORT`), joins the group on
    /// every interface (now and every [`MEMBERSHIP_CHECK`]) and announces `port` for
    /// announcing topics. Must run inside a tokio runtime.
    pub fn bind(port: u16) -> Result<(Mdns, mpsc::Receiver<MdnsPeer>), LocalDiscoveryError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| LocalDiscoveryError::Io { what, source }
        };
        let bound = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MDNS_ADDR.port());
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(io("creating a UDP socket"))?;
        socket
            .set_reuse_address(true)
            .map_err(io("setting SO_REUSEADDR"))?;
        socket
            .set_reuse_port(true)
            .map_err(io("setting SO_REUSEPORT"))?;
        socket
            .set_nonblocking(true)
            .map_err(io("making it non-blocking"))?;
        socket
            .bind(&SocketAddr::V4(bound).into())
            .map_err(io(&format!("binding {bound}")))?;
        socket
            .set_multicast_ttl_v4(255)
            .map_err(io("setting the multicast TTL"))?;
        socket
            .set_multicast_loop_v4(true)
            .map_err(io("turning multicast loopback on"))?;
        let socket = UdpSocket::from_std(socket.into()).map_err(io("registering it with tokio"))?;
        let mut memberships = HashSet::new();
        update_memberships(&socket, &mut memberships);
        let shared = Arc::new(Shared {
            socket,
            topics: Mutex::new(LocalTopics::new(port, Instant::now())),
            wake: Notify::new(),
        });
        let (found, peers) = mpsc::channel(FOUND_QUEUE);
        let task = tokio::spawn(serve(shared.clone(), memberships, found));
        Ok((Mdns { shared, task }, peers))
    }

    /// Joins `topic`: announces it (answers queries, and tells everyone now) if
    /// `announce`, looks it up (asks now and every 30 to 60 s; answers become found
    /// peers) if `lookup`. Joining a joined topic starts it over.
    pub fn join(&self, topic: Id, announce: bool, lookup: bool) -> Result<(), LocalDiscoveryError> {
        let send = self
            .topics()
            .join(topic, announce, lookup, Instant::now())?;
        self.shared.send_all(&send);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Leaves `topic`.
    pub fn leave(&self, topic: &Id) {
        self.topics().leave(topic);
    }

    fn topics(&self) -> MutexGuard<'_, LocalTopics> {
        self.shared.topics()
    }
}

impl Shared {
    fn topics(&self) -> MutexGuard<'_, LocalTopics> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Multicasts `packets`; one that cannot go now is dropped (the next query or answer
    /// makes up for it). Sent on the socket directly, from any thread: tokio's
    /// `try_send_to` refuses until its reactor has seen the socket writable.
    fn send_all(&self, packets: &[Vec<u8>]) {
        let socket = SockRef::from(&self.socket);
        let to = SocketAddr::V4(MDNS_ADDR).into();
        for packet in packets {
            if let Err(e) = socket.send_to(packet, &to) {
                tracing::debug!("mdns: sending to {MDNS_ADDR}: {e}");
            }
        }
    }
}

/// Reads packets, sends the queries when due and joins the group on new interfaces,
/// until aborted.
async fn serve(
    shared: Arc<Shared>,
    mut memberships: HashSet<Ipv4Addr>,
    found: mpsc::Sender<MdnsPeer>,
) {
    let mut buf = vec![0; MAX_DATAGRAM];
    let mut check = tokio::time::interval(MEMBERSHIP_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = shared.topics().next_query();
        // Far enough to mean "never", near enough not to overflow.
        let next = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            received = shared.socket.recv_from(&mut buf) => {
                let (len, SocketAddr::V4(from)) = (match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("mdns: receiving: {e}");
                        continue;
                    }
                }) else {
                    continue;
                };
                let received = shared.topics().receive(&buf[..len], *from.ip(), Instant::now());
                match received {
                    Ok(received) => {
                        shared.send_all(&received.send);
                        for peer in received.found {
                            if let Err(mpsc::error::TrySendError::Full(peer)) = found.try_send(peer) {
                                tracing::debug!("mdns: found {peer:?}, but the queue is full");
                            }
                        }
                    }
                    Err(e) => tracing::trace!("mdns: a packet from {from}: {e}"),
                }
            }
            () = tokio::time::sleep_until(next.into()) => {
                let send = shared.topics().due(Instant::now());
                shared.send_all(&send);
            }
            _ = check.tick() => update_memberships(&shared.socket, &mut memberships),
            () = shared.wake.notified() => {}
        }
    }
}

/// Joins the group on the first IPv4 address of every interface that is up and not yet
/// joined, loopback included; after a new one, sends through the system's default
/// interface if the host has an address off loopback, else through 127.0.0.1 (as
/// multicast-dns).
fn update_memberships(socket: &UdpSocket, memberships: &mut HashSet<Ipv4Addr>) {
    let interfaces = match getifaddrs() {
        Ok(interfaces) => interfaces,
        Err(e) => {
            tracing::debug!("mdns: listing the network interfaces: {e}");
            return;
        }
    };
    let up = InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING;
    let mut names = HashSet::new();
    let mut firsts = Vec::new();
    let mut external = false;
    for interface in interfaces {
        let Some(ip) = interface
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|a| a.ip())
        else {
            continue;
        };
        if !interface.flags.contains(up) {
            continue;
        }
        external |= !interface.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        if names.insert(interface.interface_name) {
            firsts.push(ip);
        }
    }
    let socket = SockRef::from(socket);
    let mut updated = false;
    for ip in firsts {
        if memberships.contains(&ip) {
            continue;
        }
        match socket.join_multicast_v4(MDNS_ADDR.ip(), &ip) {
            Ok(()) => {
                tracing::debug!("mdns: joined {} on {ip}", MDNS_ADDR.ip());
                memberships.insert(ip);
                updated = true;
            }
            Err(e) => {
                tracing::debug!("mdns: joining {} on {ip}: {e}", MDNS_ADDR.ip())
            }
        }
    }
    if updated {
        let via = if external {
            Ipv4Addr::UNSPECIFIED
        } else {
            Ipv4Addr::LOCALHOST
        };
        if let Err(e) = socket.set_multicast_if_v4(&via) {
            tracing::debug!("mdns: sending multicast through {via}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::mdns::{decode, encode_query, encode_response, topic_name, Record};

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn topic(n: u8) -> Id {
        Id([n; 32])
    }

    fn instance_of(topics: &LocalTopics, topic: &Id) -> Vec<u8> {
        topics.names[&topic_name(topic)]
            .iter()
            .find(|j| j.topic == *topic)
            .unwrap()
            .instance
            .clone()
    }

    #[test]
    fn joining_to_look_up_asks_and_to_announce_tells() {
        let now = Instant::now();
        let mut topics = LocalTopics::new(4000, now);
        let sent = topics.join(topic(1), false, true, now).unwrap();
        assert_eq!(sent, vec![encode_query(&topic_name(&topic(1))).unwrap()]);

        let sent = topics.join(topic(2), true, false, now).unwrap();
        assert_eq!(sent.len(), 1);
        let packet = decode(&sent[0]).unwrap();
        assert!(packet.response);
        let name = topic_name(&topic(2));
        let instance = instance_of(&topics, &topic(2));
        assert_eq!(instance.len(), 35);
        assert!(instance.starts_with(b"id="));
        // SRV and TXT, no A record: nobody asked.
        assert_eq!(
            packet.answers,
            vec![
                Record {
                    name: name.clone(),
                    data: RecordData::Srv {
                        port: 4000,
                        target: "0.0.0.0".into()
                    }
                },
                Record {
                    name,
                    data: RecordData::Txt(vec![instance])
                },
            ]
        );

        // Both: the query, then the announcement.
        let sent = topics.join(topic(3), true, true, now).unwrap();
        assert_eq!(sent.len(), 2);
        assert!(!decode(&sent[0]).unwrap().response);
        assert!(decode(&sent[1]).unwrap().response);
        assert!(matches!(
            topics.join(topic(4), false, false, now),
            Err(LocalDiscoveryError::NothingToDo(_))
        ));
        assert_eq!(topics.len(), 3);
    }

    #[test]
    fn queries_repeat_every_30_to_60_seconds_for_lookup_topics_only() {
        let now = Instant::now();
        let mut topics = LocalTopics::new(4000, now);
        topics.join(topic(1), true, false, now).unwrap();
        assert_eq!(topics.next_query(), None, "announce-only topics never ask");
        topics.join(topic(2), false, true, now).unwrap();
        let next = topics.next_query().unwrap();
        assert!(next >= now + QUERY_INTERVAL.start && next < now + QUERY_INTERVAL.end);
        assert!(topics.due(next - Duration::from_millis(1)).is_empty());
        assert_eq!(
            topics.due(next),
            vec![encode_query(&topic_name(&topic(2))).unwrap()]
        );
        let after = topics.next_query().unwrap();
        assert!(after >= next + QUERY_INTERVAL.start && after < next + QUERY_INTERVAL.end);
        topics.leave(&topic(2));
        assert_eq!(topics.next_query(), None);
        assert!(topics.due(after).is_empty());
    }

    #[test]
    fn a_query_is_answered_for_announcing_topics_with_the_querier_as_referrer() {
        let now = Instant::now();
        let mut topics = LocalTopics::new(4000, now);
        topics.join(topic(1), true, false, now).unwrap();
        topics.join(topic(2), false, true, now).unwrap();
        let instance = instance_of(&topics, &topic(1));
        let name = topic_name(&topic(1));
        let query = encode_query(&name).unwrap();
        let received = topics.receive(&query, A, now).unwrap();
        let expected = Announcement {
            name: name.clone(),
            port: 4000,
            instance,
        };
        assert_eq!(
            received,
            Received {
                send: vec![encode_response(&[expected], Some(A)).unwrap()],
                found: vec![],
            }
        );
        // Lookup-only topics and unknown names are not answered.
        let other = encode_query(&topic_name(&topic(2))).unwrap();
        assert_eq!(topics.receive(&other, A, now).unwrap(), Received::default());
        let unknown = encode_query(&topic_name(&topic(9))).unwrap();
        assert_eq!(
            topics.receive(&unknown, A, now).unwrap(),
            Received::default()
        );
    }

    #[test]
    fn an_answer_is_a_peer_at_its_source_unless_it_is_our_own() {
        let now = Instant::now();
        let mut topics = LocalTopics::new(4000, now);
        topics.join(topic(1), true, true, now).unwrap();
        let name = topic_name(&topic(1));
        let theirs = Announcement {
            name: name.clone(),
            port: 5000,
            instance: b"id=someone else".to_vec(),
        };
        let answer = encode_response(&[theirs], None).unwrap();
        let received = topics.receive(&answer, A, now).unwrap();
        assert_eq!(
            received.found,
            vec![MdnsPeer {
                topic: topic(1),
                addr: SocketAddrV4::new(A, 5000)
            }]
        );
        assert!(received.send.is_empty());

        // Our own announcement, looped back: not a peer.
        let ours = topics.join(topic(1), true, true, now).unwrap();
        assert_eq!(ours.len(), 2);
        let echo = topics.receive(&ours[1], A, now).unwrap();
        assert_eq!(echo, Received::default());
        // And our own query looped back is answered (JS does too), which is again echo.
        let answer = topics.receive(&ours[0], A, now).unwrap();
        assert_eq!(answer.send.len(), 1);
        let echo = topics.receive(&answer.send[0], A, now).unwrap();
        assert!(echo.found.is_empty());
    }

    #[test]
    fn announce_only_topics_use_no_answers() {
        let now = Instant::now();
        let mut topics = LocalTopics::new(4000, now);
        topics.join(topic(1), true, false, now).unwrap();
        let theirs = Announcement {
            name: topic_name(&topic(1)),
            port: 5000,
            instance: b"id=x".to_vec(),
        };
        let answer = encode_response(&[theirs], None).unwrap();
        assert_eq!(
            topics.receive(&answer, A, now).unwrap(),
            Received::default()
        );
    }

    #[test]
    fn without_a_port_nothing_is_announced() {
        let now = Instant::now();
        let mut topics = LocalTopics::new(0, now);
        assert!(topics.join(topic(1), true, false, now).unwrap().is_empty());
        let query = encode_query(&topic_name(&topic(1))).unwrap();
        assert!(topics.receive(&query, A, now).unwrap().send.is_empty());
    }

    #[test]
    fn a_query_flood_from_one_address_is_answered_within_its_budget() {
        let now = Instant::now();
        let mut topics = LocalTopics::new(4000, now);
        topics.join(topic(1), true, false, now).unwrap();
        let query = encode_query(&topic_name(&topic(1))).unwrap();
        let answered = (0..QUERIES_PER_SECOND + 50)
            .filter(|_| !topics.receive(&query, A, now).unwrap().send.is_empty())
            .count();
        assert_eq!(answered, QUERIES_PER_SECOND as usize);
        let b = Ipv4Addr::new(10, 0, 0, 3);
        assert!(!topics.receive(&query, b, now).unwrap().send.is_empty());
        let later = now + Duration::from_secs(1);
        assert!(!topics.receive(&query, A, later).unwrap().send.is_empty());
    }
}
