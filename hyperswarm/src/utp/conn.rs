//! One uTP connection without I/O: packets and the time go in ([`Connection::handle`],
//! [`Connection::handle_timeout`]), datagrams come out ([`Connection::poll_transmit`]),
//! bytes are written and read through buffers. It behaves as libutp (utp-native 2.5)
//! does on the wire: connection ids, sequence and ack numbers, selective acks, the
//! advertised receive window, retransmission with RTT-based timeouts, fast retransmit,
//! LEDBAT congestion control aiming at 100 ms of queueing delay, FIN as a half close,
//! keep-alives every 29 s. The connection is not confused by any packet: what does not
//! fit its state is dropped.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::packet::{Packet, PacketType};

/// Payload bytes per packet: libutp's IPv4 MTU guess (1402) minus the header.
pub const MAX_PAYLOAD: usize = 1382;
/// Bytes a connection buffers for reading (the window it advertises, as libutp's 1 MiB).
pub const RECV_BUFFER: usize = 1 << 20;
/// Bytes written but not yet acknowledged that a connection buffers at most.
pub const SEND_BUFFER: usize = 1 << 20;
/// In-order packets accepted past a full receive buffer: what a sender probing a zero
/// window, or one that sent on an older window, may add.
const RECV_SLACK: usize = 16 * MAX_PAYLOAD;
/// Packets in flight at most (libutp's outgoing buffer, one kept for the FIN).
const MAX_IN_FLIGHT: usize = 1023;
/// How far ahead of the next expected packet one is buffered (libutp: 0x3ff).
const REORDER_LIMIT: u16 = 1024;
/// libutp's target queueing delay.
const TARGET_DELAY_US: f64 = 100_000.0;
/// The most the congestion window grows per round trip in congestion avoidance.
const MAX_CWND_INCREASE: f64 = 3000.0;
/// The smallest congestion window (one packet is always allowed when none is in flight).
const MIN_WINDOW: usize = 10;
/// The first retransmission timeout (BEP 29).
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// The smallest retransmission timeout (BEP 29).
const MIN_RTO: Duration = Duration::from_millis(500);
/// Backed-off timeouts stop growing here.
const MAX_RTO: Duration = Duration::from_secs(30);
/// Consecutive timeouts of a connected connection before it fails (libutp: 4).
const MAX_RESENDS: u32 = 4;
/// Consecutive timeouts of a SYN before connecting fails.
const MAX_SYN_RESENDS: u32 = 3;
/// Duplicate or selective acks past a packet that mark it lost.
const DUPLICATE_ACKS: u32 = 3;
/// Packets resent on one selective ack at most (libutp).
const MAX_FAST_RESENDS: usize = 4;
/// The congestion window halves at most this often.
const DECAY_INTERVAL: Duration = Duration::from_millis(100);
/// A connection that sent nothing for this long sends a keep-alive (libutp).
pub const KEEPALIVE: Duration = Duration::from_secs(29);
/// A connection that heard nothing for this long (four missed keep-alives) has failed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long after a zero window a packet is sent anyway (libutp).
const ZERO_WINDOW_PROBE: Duration = Duration::from_secs(15);
/// How long a finished connection still acks retransmissions of the peer's FIN.
const LINGER: Duration = Duration::from_secs(5);
/// Minutes of delay samples the base delay is the minimum of (libutp: 13).
const DELAY_BASE_MINUTES: usize = 13;

/// Why a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The peer answered the SYN with a RESET.
    #[error("the connection was refused")]
    Refused,
    /// The peer reset the connection.
    #[error("the connection was reset")]
    Reset,
    /// Packets went unacknowledged through every retransmission, or the peer fell silent.
    #[error("the connection timed out")]
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Our SYN is out.
    SynSent,
    /// We answered a SYN; we send no data until the peer sends some (libutp).
    SynRecv,
    Connected,
    /// Finished or failed.
    Closed,
}

/// A packet sent and not yet acknowledged.
#[derive(Debug)]
struct Sent {
    seq: u16,
    kind: PacketType,
    payload: Vec<u8>,
    transmissions: u32,
    sent_at: Instant,
    /// Acknowledged by a selective ack while an older packet is missing.
    acked: bool,
    /// Considered lost: to be sent again when the window allows.
    need_resend: bool,
    /// To be sent again at once (fast retransmit, or the oldest after a timeout).
    urgent: bool,
}

/// The minimum of a one-way delay over the last minutes (the base delay) and the
/// latest samples above it, as libutp's delay history.
#[derive(Debug)]
struct DelayHistory {
    base: Option<u32>,
    /// Minimum of each full minute, newest last.
    minutes: VecDeque<u32>,
    this_minute: Option<u32>,
    minute_start: Instant,
    recent: [u32; 3],
    recent_at: usize,
}

impl DelayHistory {
    fn new(now: Instant) -> DelayHistory {
        DelayHistory {
            base: None,
            minutes: VecDeque::new(),
            this_minute: None,
            minute_start: now,
            recent: [u32::MAX; 3],
            recent_at: 0,
        }
    }

    fn add(&mut self, sample: u32, now: Instant) {
        let min = |a: Option<u32>, b: u32| match a {
            Some(a) if !delay_less(b, a) => a,
            _ => b,
        };
        self.base = Some(min(self.base, sample));
        self.this_minute = Some(min(self.this_minute, sample));
        if now.duration_since(self.minute_start) >= Duration::from_secs(60) {
            self.minute_start = now;
            self.minutes.extend(self.this_minute.take());
            while self.minutes.len() > DELAY_BASE_MINUTES {
                self.minutes.pop_front();
            }
            self.base = self
                .minutes
                .iter()
                .fold(None, |base, &m| Some(min(base, m)));
        }
        self.recent[self.recent_at] = sample;
        self.recent_at = (self.recent_at + 1) % self.recent.len();
    }

    /// The latest delay above the base, in microseconds (0 before any sample).
    fn value(&self) -> u32 {
        let Some(base) = self.base else { return 0 };
        self.recent
            .iter()
            .filter(|&&s| s != u32::MAX)
            .map(|&s| s.wrapping_sub(base))
            .filter(|&d| d < 1 << 31)
            .min()
            .unwrap_or(0)
    }
}

/// Sequence number `a` comes before `b` (libutp's `wrapping_compare_less`).
fn seq_less(a: u16, b: u16) -> bool {
    b.wrapping_sub(a) < a.wrapping_sub(b)
}

/// Wrapping microsecond delay `a` is less than `b`.
fn delay_less(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) < a.wrapping_sub(b)
}

/// The state of one uTP connection.
#[derive(Debug)]
pub struct Connection {
    state: State,
    error: Option<ConnectionError>,
    recv_id: u16,
    send_id: u16,
    epoch: Instant,

    /// The next sequence number to use.
    seq_nr: u16,
    /// Packets sent and not acknowledged, oldest first, consecutive sequence numbers.
    in_flight: VecDeque<Sent>,
    /// Payload bytes in `in_flight`.
    in_flight_bytes: usize,
    /// Payload bytes on the way: sent, unacknowledged and not considered lost.
    cur_window: usize,
    /// Written, not yet in a packet.
    send_buf: VecDeque<u8>,
    fin_queued: bool,
    fin_sent: bool,
    fin_acked: bool,
    peer_window: usize,
    zero_window_probe_at: Option<Instant>,
    cwnd: usize,
    ssthresh: usize,
    slow_start: bool,
    /// When the window last held back a packet (growth stops when it does not).
    last_maxed_out: Option<Instant>,
    last_decay: Option<Instant>,
    /// Smoothed round trip and its variation.
    rtt: Option<(Duration, Duration)>,
    rto: Duration,
    /// The timeout now in force (`rto`, backed off on every timeout).
    retransmit_timeout: Duration,
    rto_deadline: Option<Instant>,
    /// Consecutive timeouts.
    resends: u32,
    dup_acks: u32,
    /// Packets before this one are not fast-retransmitted again.
    fast_resend_seq: u16,
    /// How late our packets reach the peer, as it reports.
    our_delay: DelayHistory,
    /// How late the peer's last packet reached us, reported back in every packet.
    reply_micro: u32,
    last_sent: Instant,
    keepalive_due: bool,

    /// The last sequence number received in order.
    ack_nr: u16,
    recv_buf: VecDeque<u8>,
    /// Packets received ahead of a missing one, by sequence number.
    reorder: HashMap<u16, Vec<u8>>,
    reorder_bytes: usize,
    eof_seq: Option<u16>,
    eof_reached: bool,
    /// Closed by us: incoming data is acknowledged and dropped.
    read_shutdown: bool,
    ack_pending: bool,
    last_window_sent: usize,
    last_recv: Instant,
    /// Once closed: when nothing of it needs an answer any more.
    forget_at: Option<Instant>,
    reset_pending: bool,
}

impl Connection {
    fn new(recv_id: u16, send_id: u16, seq_nr: u16, state: State, now: Instant) -> Connection {
        Connection {
            state,
            error: None,
            recv_id,
            send_id,
            epoch: now,
            seq_nr,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            cur_window: 0,
            send_buf: VecDeque::new(),
            fin_queued: false,
            fin_sent: false,
            fin_acked: false,
            peer_window: MAX_PAYLOAD,
            zero_window_probe_at: None,
            cwnd: MAX_PAYLOAD,
            ssthresh: SEND_BUFFER,
            slow_start: true,
            last_maxed_out: None,
            last_decay: None,
            rtt: None,
            rto: INITIAL_RTO,
            retransmit_timeout: INITIAL_RTO,
            rto_deadline: None,
            resends: 0,
            dup_acks: 0,
            fast_resend_seq: seq_nr,
            our_delay: DelayHistory::new(now),
            reply_micro: 0,
            last_sent: now,
            keepalive_due: false,
            ack_nr: 0,
            recv_buf: VecDeque::new(),
            reorder: HashMap::new(),
            reorder_bytes: 0,
            eof_seq: None,
            eof_reached: false,
            read_shutdown: false,
            ack_pending: false,
            last_window_sent: 0,
            last_recv: now,
            forget_at: None,
            reset_pending: false,
        }
    }

    /// A connection we open: receives on `recv_id`, sends on `recv_id + 1`, its SYN
    /// (with sequence number `seq`) is the first datagram to send.
    pub fn connect(recv_id: u16, seq: u16, now: Instant) -> Connection {
        let mut conn = Connection::new(
            recv_id,
            recv_id.wrapping_add(1),
            seq.wrapping_add(1),
            State::SynSent,
            now,
        );
        conn.in_flight.push_back(Sent {
            seq,
            kind: PacketType::Syn,
            payload: Vec::new(),
            transmissions: 0,
            sent_at: now,
            acked: false,
            need_resend: false,
            urgent: true,
        });
        conn
    }

    /// A connection the peer opened with `syn` (a SYN packet); our first sequence number
    /// is `seq`. Its STATE answer is the first datagram to send.
    pub fn accept(syn: &Packet, seq: u16, now: Instant) -> Connection {
        let mut conn = Connection::new(
            syn.conn_id.wrapping_add(1),
            syn.conn_id,
            seq,
            State::SynRecv,
            now,
        );
        conn.ack_nr = syn.seq;
        conn.peer_window = syn.window as usize;
        conn.note_timestamp(syn, now);
        conn.ack_pending = true;
        conn
    }

    /// The id packets to us carry.
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    /// The id packets to the peer carry (a RESET from the peer carries it too).
    pub fn send_id(&self) -> u16 {
        self.send_id
    }

    /// Whether the handshake is over (or the connection ended before it was).
    pub fn is_established(&self) -> bool {
        self.state != State::SynSent
    }

    /// Why it failed, if it did.
    pub fn error(&self) -> Option<ConnectionError> {
        self.error
    }

    /// Whether all the peer will send has been read.
    pub fn at_eof(&self) -> bool {
        self.recv_buf.is_empty() && (self.eof_reached || self.state == State::Closed)
    }

    /// Whether writing is over: shut down, or closed.
    pub fn write_closed(&self) -> bool {
        self.fin_queued || self.state == State::Closed
    }

    /// Whether it is over and no packet of it needs an answer any more.
    pub fn is_finished(&self, now: Instant) -> bool {
        !self.reset_pending && self.forget_at.is_some_and(|at| now >= at)
    }

    fn micros(&self, now: Instant) -> u32 {
        // The wire carries the low 32 bits of a microsecond clock.
        now.duration_since(self.epoch).as_micros() as u32
    }

    fn recv_window(&self) -> usize {
        RECV_BUFFER.saturating_sub(self.recv_buf.len() + self.reorder_bytes)
    }

    /// Buffers up to what fits of `data` for sending; returns how much (0: full, or
    /// writing is over).
    pub fn write(&mut self, data: &[u8]) -> usize {
        if self.write_closed() {
            return 0;
        }
        let room = SEND_BUFFER.saturating_sub(self.send_buf.len() + self.in_flight_bytes);
        let n = room.min(data.len());
        self.send_buf.extend(&data[..n]);
        n
    }

    /// Moves received bytes into `buf`; returns how many (0: none buffered).
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.recv_buf.len());
        let (front, back) = self.recv_buf.as_slices();
        let from_front = n.min(front.len());
        buf[..from_front].copy_from_slice(&front[..from_front]);
        buf[from_front..n].copy_from_slice(&back[..n - from_front]);
        self.recv_buf.drain(..n);
        // Tell a sender held back by our window that it opened.
        let opened = self.recv_window().saturating_sub(self.last_window_sent);
        if n > 0 && (self.last_window_sent < 2 * MAX_PAYLOAD || opened >= RECV_BUFFER / 4) {
            self.ack_pending = true;
        }
        n
    }

    /// Ends our side: a FIN follows the buffered data. The peer may go on sending.
    pub fn shutdown(&mut self) {
        if self.state != State::Closed {
            self.fin_queued = true;
        }
    }

    /// Ends the connection as libutp's close does: a FIN follows the buffered data and
    /// what the peer sends from now on is dropped; before the handshake is over, a
    /// RESET tells the peer at once.
    pub fn close(&mut self, now: Instant) {
        self.read_shutdown = true;
        self.recv_buf.clear();
        match self.state {
            State::SynSent | State::SynRecv => {
                self.reset_pending = true;
                self.finish(now);
            }
            State::Connected => {
                self.fin_queued = true;
                self.check_finished(now);
            }
            State::Closed => {}
        }
    }

    fn finish(&mut self, forget_at: Instant) {
        self.state = State::Closed;
        self.forget_at = Some(forget_at);
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.cur_window = 0;
        self.send_buf.clear();
        self.rto_deadline = None;
    }

    fn fail(&mut self, error: ConnectionError, now: Instant) {
        self.error = Some(error);
        self.ack_pending = false;
        self.reset_pending = false;
        self.finish(now);
    }

    fn check_finished(&mut self, now: Instant) {
        if self.state == State::Connected
            && self.fin_acked
            && (self.eof_reached || self.read_shutdown)
        {
            // Linger, to ack the peer's FIN again if our ack of it is lost.
            self.finish(now + LINGER);
        }
    }

    fn note_timestamp(&mut self, packet: &Packet, now: Instant) {
        if packet.timestamp != 0 {
            self.reply_micro = self.micros(now).wrapping_sub(packet.timestamp);
        }
    }

    /// Handles a packet the endpoint routed here (by address and connection id).
    pub fn handle(&mut self, packet: &Packet, now: Instant) {
        if self.error.is_some() {
            return;
        }
        match packet.kind {
            PacketType::Reset => {
                let error = match self.state {
                    State::SynSent => ConnectionError::Refused,
                    _ => ConnectionError::Reset,
                };
                if self.state != State::Closed {
                    self.fail(error, now);
                }
                return;
            }
            PacketType::Syn => {
                // Our answer to it was lost: answer again (libutp ignores it).
                if self.state == State::SynRecv && packet.seq == self.ack_nr {
                    self.ack_pending = true;
                }
                return;
            }
            PacketType::Data | PacketType::Fin | PacketType::State => {}
        }
        // An ack of something never sent (or long acked) is forged or confused.
        let last_sent = self.seq_nr.wrapping_sub(1);
        let allowed = self.in_flight.len() as u16 + DUPLICATE_ACKS as u16;
        if seq_less(last_sent, packet.ack) || seq_less(packet.ack, last_sent.wrapping_sub(allowed))
        {
            return;
        }
        if self.state == State::SynSent {
            self.ack_nr = packet.seq.wrapping_sub(1);
        }
        self.last_recv = now;
        let offset = packet.seq.wrapping_sub(self.ack_nr).wrapping_sub(1);
        if offset >= REORDER_LIMIT {
            // Old: a retransmission whose ack got lost; ack again.
            if offset >= REORDER_LIMIT.wrapping_neg() && packet.kind != PacketType::State {
                self.ack_pending = true;
            }
            return;
        }
        self.note_timestamp(packet, now);
        self.process_acks(packet, now);

        self.peer_window = packet.window as usize;
        self.zero_window_probe_at = (self.peer_window == 0).then(|| now + ZERO_WINDOW_PROBE);
        match (packet.kind, self.state) {
            (PacketType::Data | PacketType::Fin, State::SynRecv) => self.state = State::Connected,
            (PacketType::State, State::SynSent) => self.state = State::Connected,
            _ => {}
        }
        if self.fin_sent && self.in_flight.is_empty() {
            self.fin_acked = true;
        }
        if packet.kind == PacketType::State || self.state != State::Connected {
            self.check_finished(now);
            return;
        }
        self.receive(packet, offset);
        self.check_finished(now);
    }

    fn oldest_seq(&self) -> u16 {
        self.seq_nr.wrapping_sub(self.in_flight.len() as u16)
    }

    /// Cumulative and selective acks, duplicate-ack counting, RTT and congestion window.
    fn process_acks(&mut self, packet: &Packet, now: Instant) {
        let acked_through = self.oldest_seq().wrapping_sub(1);
        let mut acks = usize::from(packet.ack.wrapping_sub(acked_through));
        if acks > self.in_flight.len() {
            acks = 0;
        }
        let duplicate = !self.in_flight.is_empty()
            && packet.ack == acked_through
            && packet.kind == PacketType::State;
        if duplicate {
            self.dup_acks += 1;
        } else {
            self.dup_acks = 0;
        }
        let mut acked_bytes = 0;
        let mut min_rtt: Option<Duration> = None;
        for _ in 0..acks {
            let Some(sent) = self.in_flight.pop_front() else {
                break;
            };
            if !sent.acked {
                acked_bytes += sent.payload.len();
                if !sent.need_resend {
                    self.cur_window -= sent.payload.len();
                }
                self.sample_rtt(sent.transmissions, sent.sent_at, now, &mut min_rtt);
            }
            self.in_flight_bytes -= sent.payload.len();
        }
        if let Some(mask) = packet.selective_ack {
            acked_bytes += self.selective_ack(packet.ack, mask, now, &mut min_rtt);
        }
        while self.in_flight.front().is_some_and(|s| s.acked) {
            if let Some(sent) = self.in_flight.pop_front() {
                self.in_flight_bytes -= sent.payload.len();
            }
        }
        if min_rtt.is_some() || acks > 0 {
            self.resends = 0;
            self.retransmit_timeout = self.rto;
            self.rto_deadline = (!self.in_flight.is_empty()).then(|| now + self.rto);
        }
        if seq_less(self.fast_resend_seq, packet.ack.wrapping_add(1)) {
            self.fast_resend_seq = packet.ack.wrapping_add(1);
        }
        if self.dup_acks == DUPLICATE_ACKS {
            let oldest = self.oldest_seq();
            if !seq_less(oldest, self.fast_resend_seq) && self.mark_lost(0, true) {
                self.fast_resend_seq = oldest.wrapping_add(1);
                self.decay(now);
            }
        }
        if packet.timestamp_diff != 0 && packet.timestamp_diff != i32::MAX as u32 {
            self.our_delay.add(packet.timestamp_diff, now);
            if acked_bytes > 0 {
                let mut delay = self.our_delay.value();
                if let Some(rtt) = min_rtt {
                    delay = delay.min(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX));
                }
                self.congestion_control(acked_bytes, delay, now);
            }
        }
    }

    /// The round trip of a packet acknowledged, sent `transmissions` times, last at
    /// `sent_at`: the smoothed RTT and the timeout.
    fn sample_rtt(
        &mut self,
        transmissions: u32,
        sent_at: Instant,
        now: Instant,
        min_rtt: &mut Option<Duration>,
    ) {
        let elapsed = now.saturating_duration_since(sent_at);
        *min_rtt = Some(min_rtt.map_or(elapsed, |m| m.min(elapsed)));
        // Karn: only packets sent once time the round trip.
        if transmissions == 1 {
            let (rtt, var) = match self.rtt {
                None => (elapsed, elapsed / 2),
                Some((rtt, var)) => {
                    let delta = rtt.abs_diff(elapsed);
                    let var = if delta > var {
                        var + (delta - var) / 4
                    } else {
                        var - (var - delta) / 4
                    };
                    (rtt - rtt / 8 + elapsed / 8, var)
                }
            };
            self.rtt = Some((rtt, var));
            self.rto = (rtt + 4 * var).clamp(MIN_RTO, MAX_RTO);
        }
    }

    /// Applies a selective ack whose bit `i` stands for `ack + 2 + i`; resends packets
    /// with three or more acknowledged after them. Returns the bytes it acknowledged.
    fn selective_ack(
        &mut self,
        ack: u16,
        mask: &[u8],
        now: Instant,
        min_rtt: &mut Option<Duration>,
    ) -> usize {
        let base = ack.wrapping_add(2);
        let bits = mask.len() * 8;
        let is_set = |i: usize| i < bits && mask[i / 8] & (1 << (i % 8)) != 0;
        let oldest = self.oldest_seq();
        let mut acked_bytes = 0;
        for index in 0..self.in_flight.len() {
            let sent = &mut self.in_flight[index];
            if sent.acked || !is_set(usize::from(sent.seq.wrapping_sub(base))) {
                continue;
            }
            sent.acked = true;
            let (len, lost) = (sent.payload.len(), sent.need_resend);
            let (transmissions, sent_at) = (sent.transmissions, sent.sent_at);
            if !lost {
                self.cur_window -= len;
            }
            acked_bytes += len;
            self.sample_rtt(transmissions, sent_at, now, min_rtt);
        }
        // From the newest bit down: a missing packet with three acknowledged after it is lost.
        let mut lost = Vec::new();
        let mut count = 0;
        for i in (0..bits).rev() {
            let index = usize::from(base.wrapping_add(i as u16).wrapping_sub(oldest));
            if index >= self.in_flight.len() {
                continue;
            }
            if is_set(i) {
                count += 1;
            } else if count >= DUPLICATE_ACKS
                && !seq_less(self.in_flight[index].seq, self.fast_resend_seq)
            {
                lost.push(index);
            }
        }
        // And the one right after the cumulative ack.
        let first = usize::from(ack.wrapping_add(1).wrapping_sub(oldest));
        if count >= DUPLICATE_ACKS
            && first < self.in_flight.len()
            && !seq_less(self.in_flight[first].seq, self.fast_resend_seq)
        {
            lost.push(first);
        }
        let mut resent = 0;
        while let Some(index) = lost.pop() {
            if resent == MAX_FAST_RESENDS {
                break;
            }
            if self.mark_lost(index, true) {
                self.fast_resend_seq = self.in_flight[index].seq.wrapping_add(1);
                resent += 1;
            }
        }
        if resent > 0 {
            self.decay(now);
        }
        acked_bytes
    }

    /// Marks the packet at `index` of `in_flight` for sending again; false if it needs
    /// not be (acknowledged already).
    fn mark_lost(&mut self, index: usize, urgent: bool) -> bool {
        let Some(sent) = self.in_flight.get_mut(index) else {
            return false;
        };
        if sent.acked {
            return false;
        }
        if !sent.need_resend {
            sent.need_resend = true;
            self.cur_window -= sent.payload.len();
        }
        sent.urgent |= urgent;
        true
    }

    /// Halves the congestion window on loss, at most every [`DECAY_INTERVAL`].
    fn decay(&mut self, now: Instant) {
        if self
            .last_decay
            .is_some_and(|at| now.duration_since(at) < DECAY_INTERVAL)
        {
            return;
        }
        self.last_decay = Some(now);
        self.cwnd = (self.cwnd / 2).max(MIN_WINDOW);
        self.ssthresh = self.cwnd;
        self.slow_start = false;
    }

    /// LEDBAT as libutp: grow (at most [`MAX_CWND_INCREASE`] per window acknowledged)
    /// while our queueing delay is under the target, shrink above it; slow start until
    /// the delay nears the target.
    fn congestion_control(&mut self, acked_bytes: usize, our_delay: u32, now: Instant) {
        let cwnd = self.cwnd as f64;
        let acked = acked_bytes as f64;
        let window_factor = acked.min(cwnd) / cwnd.max(acked);
        let delay_factor = (TARGET_DELAY_US - f64::from(our_delay)) / TARGET_DELAY_US;
        let mut gain = MAX_CWND_INCREASE * window_factor * delay_factor;
        // A sender that never fills the window must not grow it without bound.
        let limited = self
            .last_maxed_out
            .is_none_or(|at| now.duration_since(at) > Duration::from_secs(1));
        if gain > 0.0 && limited {
            gain = 0.0;
        }
        let ledbat = (cwnd + gain).max(MIN_WINDOW as f64) as usize;
        if self.slow_start {
            let ss = (cwnd + window_factor * MAX_PAYLOAD as f64) as usize;
            if ss > self.ssthresh {
                self.slow_start = false;
            } else if f64::from(our_delay) > TARGET_DELAY_US * 0.9 {
                self.slow_start = false;
                self.ssthresh = self.cwnd;
            } else {
                self.cwnd = ss.max(ledbat);
            }
        } else {
            self.cwnd = ledbat;
        }
        self.cwnd = self.cwnd.clamp(MIN_WINDOW, SEND_BUFFER);
    }

    /// Data and FIN of the connected state: in order into the read buffer, ahead of a
    /// gap into the reorder buffer.
    fn receive(&mut self, packet: &Packet, offset: u16) {
        if self.eof_reached {
            self.ack_pending = true;
            return;
        }
        if packet.kind == PacketType::Fin && self.eof_seq.is_none() {
            self.eof_seq = Some(packet.seq);
        }
        let buffered = self.recv_buf.len() + self.reorder_bytes;
        if buffered + packet.payload.len() > RECV_BUFFER + RECV_SLACK {
            // Past what we advertised: the sender retransmits once we have read.
            self.ack_pending = true;
            return;
        }
        if offset == 0 {
            self.deliver(packet.payload);
            loop {
                if self.eof_seq == Some(self.ack_nr) {
                    self.eof_reached = true;
                    self.reorder.clear();
                    self.reorder_bytes = 0;
                    break;
                }
                let Some(data) = self.reorder.remove(&self.ack_nr.wrapping_add(1)) else {
                    break;
                };
                self.reorder_bytes -= data.len();
                self.deliver(&data);
            }
        } else {
            if self.eof_seq.is_some_and(|eof| seq_less(eof, packet.seq)) {
                return;
            }
            if !self.reorder.contains_key(&packet.seq) {
                self.reorder_bytes += packet.payload.len();
                self.reorder.insert(packet.seq, packet.payload.to_vec());
            }
        }
        self.ack_pending = true;
    }

    fn deliver(&mut self, data: &[u8]) {
        if !self.read_shutdown {
            self.recv_buf.extend(data);
        }
        self.ack_nr = self.ack_nr.wrapping_add(1);
    }

    /// Whether a packet of `len` payload bytes may go out now.
    fn window_allows(&self, len: usize, now: Instant) -> bool {
        let peer = match self.zero_window_probe_at {
            Some(at) if self.peer_window == 0 && now >= at => MAX_PAYLOAD,
            _ => self.peer_window,
        };
        peer > 0 && (self.cur_window == 0 || self.cur_window + len <= self.cwnd.min(peer))
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.state == State::Closed {
            if self.reset_pending {
                self.reset_pending = false;
                return Some(self.header(PacketType::Reset, self.send_id, self.seq_nr, now));
            }
            return self.take_ack(now);
        }
        if let Some(index) = self.in_flight.iter().position(|s| s.urgent && !s.acked) {
            return Some(self.transmit(index, now));
        }
        if let Some(index) = self
            .in_flight
            .iter()
            .position(|s| s.need_resend && !s.acked)
        {
            if self.window_allows(self.in_flight[index].payload.len(), now) {
                return Some(self.transmit(index, now));
            }
            self.last_maxed_out = Some(now);
            return self.take_ack(now);
        }
        if self.state == State::Connected && !self.fin_sent && self.in_flight.len() < MAX_IN_FLIGHT
        {
            let len = self.send_buf.len().min(MAX_PAYLOAD);
            if len > 0 && self.window_allows(len, now) {
                let payload: Vec<u8> = self.send_buf.drain(..len).collect();
                return Some(self.queue(PacketType::Data, payload, now));
            } else if len > 0 {
                self.last_maxed_out = Some(now);
            } else if self.fin_queued {
                self.fin_sent = true;
                return Some(self.queue(PacketType::Fin, Vec::new(), now));
            }
        }
        self.take_ack(now)
    }

    /// A STATE if one is due (an ack, or a keep-alive: an ack of one packet less).
    fn take_ack(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.ack_pending {
            self.ack_pending = false;
            return Some(self.state_packet(self.ack_nr, now));
        }
        if self.keepalive_due {
            self.keepalive_due = false;
            return Some(self.state_packet(self.ack_nr.wrapping_sub(1), now));
        }
        None
    }

    fn state_packet(&mut self, ack: u16, now: Instant) -> Vec<u8> {
        let mask = self.selective_ack_mask();
        self.last_sent = now;
        let window = self.recv_window();
        self.last_window_sent = window;
        Packet {
            kind: PacketType::State,
            conn_id: self.send_id,
            timestamp: self.micros(now),
            timestamp_diff: self.reply_micro,
            window: window as u32,
            seq: self.seq_nr,
            ack,
            selective_ack: mask.as_ref().map(|m| &m[..]),
            payload: &[],
        }
        .encode()
    }

    /// Which of the 32 packets after the missing one we hold, as libutp sends it.
    fn selective_ack_mask(&self) -> Option<[u8; 4]> {
        if self.reorder.is_empty() || self.eof_reached {
            return None;
        }
        let mut mask = [0u8; 4];
        for i in 0..32u16 {
            if self
                .reorder
                .contains_key(&self.ack_nr.wrapping_add(2).wrapping_add(i))
            {
                mask[usize::from(i / 8)] |= 1 << (i % 8);
            }
        }
        Some(mask)
    }

    fn header(&self, kind: PacketType, conn_id: u16, seq: u16, now: Instant) -> Vec<u8> {
        Packet {
            kind,
            conn_id,
            timestamp: self.micros(now),
            timestamp_diff: self.reply_micro,
            window: self.recv_window() as u32,
            seq,
            ack: self.ack_nr,
            selective_ack: None,
            payload: &[],
        }
        .encode()
    }

    /// Puts a new packet in flight and sends it.
    fn queue(&mut self, kind: PacketType, payload: Vec<u8>, now: Instant) -> Vec<u8> {
        self.in_flight_bytes += payload.len();
        self.in_flight.push_back(Sent {
            seq: self.seq_nr,
            kind,
            payload,
            transmissions: 0,
            sent_at: now,
            acked: false,
            need_resend: false,
            urgent: false,
        });
        self.seq_nr = self.seq_nr.wrapping_add(1);
        self.transmit(self.in_flight.len() - 1, now)
    }

    /// (Re)sends the packet at `index` of `in_flight`.
    fn transmit(&mut self, index: usize, now: Instant) -> Vec<u8> {
        let window = self.recv_window();
        let timestamp = self.micros(now);
        let sent = &mut self.in_flight[index];
        if sent.transmissions == 0 || sent.need_resend {
            self.cur_window += sent.payload.len();
        }
        sent.need_resend = false;
        sent.urgent = false;
        sent.transmissions += 1;
        sent.sent_at = now;
        // A SYN carries the id we receive on.
        let conn_id = match sent.kind {
            PacketType::Syn => self.recv_id,
            _ => self.send_id,
        };
        let datagram = Packet {
            kind: sent.kind,
            conn_id,
            timestamp,
            timestamp_diff: self.reply_micro,
            window: window as u32,
            seq: sent.seq,
            ack: if sent.kind == PacketType::Syn {
                0
            } else {
                self.ack_nr
            },
            selective_ack: None,
            payload: &sent.payload,
        }
        .encode();
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + self.retransmit_timeout);
        }
        // Every packet carries our ack: no separate one needed, unless packets past a
        // gap are held (only a STATE carries the selective ack that gets the gap filled
        // without waiting for the sender's timeout).
        if self.reorder.is_empty() {
            self.ack_pending = false;
        }
        self.keepalive_due = false;
        self.last_window_sent = window;
        self.last_sent = now;
        datagram
    }

    /// When [`Self::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return self.forget_at;
        }
        let mut next = self.rto_deadline;
        let mut consider = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        if self.state == State::Connected && !self.fin_sent {
            consider(self.last_sent + KEEPALIVE);
        }
        if !self.eof_reached {
            consider(self.last_recv + IDLE_TIMEOUT);
        }
        if self.peer_window == 0 && !self.send_buf.is_empty() {
            if let Some(at) = self.zero_window_probe_at {
                consider(at);
            }
        }
        next
    }

    /// Retransmission timeouts, keep-alives and the idle timeout due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if !self.eof_reached && now.duration_since(self.last_recv) >= IDLE_TIMEOUT {
            self.fail(ConnectionError::TimedOut, now);
            return;
        }
        if self.rto_deadline.is_some_and(|at| now >= at) {
            if self.in_flight.iter().all(|s| s.acked) {
                self.rto_deadline = None;
            } else {
                let limit = match self.state {
                    State::SynSent => MAX_SYN_RESENDS,
                    _ => MAX_RESENDS,
                };
                if self.resends >= limit {
                    self.fail(ConnectionError::TimedOut, now);
                    return;
                }
                self.resends += 1;
                self.retransmit_timeout = (self.retransmit_timeout * 2).min(MAX_RTO);
                self.rto_deadline = Some(now + self.retransmit_timeout);
                self.dup_acks = 0;
                self.ssthresh = (self.cwnd / 2).max(MAX_PAYLOAD);
                self.cwnd = MAX_PAYLOAD;
                self.slow_start = true;
                // Everything out is lost; the oldest goes again at once, the rest as
                // the window allows.
                for index in 0..self.in_flight.len() {
                    self.mark_lost(index, false);
                }
                if let Some(oldest) = self.in_flight.iter_mut().find(|s| !s.acked) {
                    oldest.urgent = true;
                }
            }
        }
        if self.state == State::Connected
            && !self.fin_sent
            && now.duration_since(self.last_sent) >= KEEPALIVE
        {
            self.keepalive_due = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Side {
        A,
        B,
    }

    /// What the simulated network does with a datagram.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fate {
        Deliver,
        Drop,
        Duplicate,
        /// Delivered one round later, after the ones sent next.
        Delay,
    }

    type Fault = Box<dyn FnMut(Side, &Packet) -> Fate>;

    /// Two connections, A (the dialler) and B, joined by a lossy network and a clock.
    struct Sim {
        a: Connection,
        b: Connection,
        now: Instant,
        held: Vec<(Side, Vec<u8>)>,
        fault: Fault,
        /// Datagrams each side sent, by type.
        log: Vec<(Side, PacketType, Option<Vec<u8>>)>,
    }

    fn data(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn decode(datagram: &[u8]) -> Packet<'_> {
        Packet::decode(datagram).unwrap()
    }

    impl Sim {
        fn new(fault: Fault) -> Sim {
            let now = Instant::now();
            let mut a = Connection::connect(0x1234, 1000, now);
            let syn = a.poll_transmit(now).unwrap();
            let syn = decode(&syn);
            assert_eq!(
                (syn.kind, syn.conn_id, syn.seq),
                (PacketType::Syn, 0x1234, 1000)
            );
            let b = Connection::accept(&syn, 40_000, now);
            assert_eq!((b.recv_id(), b.send_id()), (0x1235, 0x1234));
            let mut sim = Sim {
                a,
                b,
                now,
                held: Vec::new(),
                fault,
                log: Vec::new(),
            };
            sim.run_until(Duration::from_secs(30), |s| s.a.is_established());
            sim
        }

        fn conn(&mut self, side: Side) -> &mut Connection {
            match side {
                Side::A => &mut self.a,
                Side::B => &mut self.b,
            }
        }

        /// One round: everything each side has to send crosses the network.
        fn step(&mut self) -> bool {
            let mut moved = false;
            let mut arriving = std::mem::take(&mut self.held);
            for side in [Side::A, Side::B] {
                let now = self.now;
                while let Some(datagram) = self.conn(side).poll_transmit(now) {
                    moved = true;
                    let packet = decode(&datagram);
                    self.log
                        .push((side, packet.kind, packet.selective_ack.map(<[u8]>::to_vec)));
                    match (self.fault)(side, &packet) {
                        Fate::Deliver => arriving.push((side, datagram)),
                        Fate::Drop => {}
                        Fate::Duplicate => {
                            arriving.push((side, datagram.clone()));
                            arriving.push((side, datagram));
                        }
                        Fate::Delay => self.held.push((side, datagram)),
                    }
                }
            }
            self.now += Duration::from_millis(1);
            for (from, datagram) in arriving {
                moved = true;
                let to = match from {
                    Side::A => Side::B,
                    Side::B => Side::A,
                };
                let now = self.now;
                self.conn(to).handle(&decode(&datagram), now);
            }
            moved
        }

        /// Rounds until `done`, jumping the clock to the next timer when nothing moves;
        /// panics past `limit` of simulated time.
        fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Sim) -> bool) {
            let start = self.now;
            while !done(self) {
                assert!(
                    self.now.duration_since(start) < limit,
                    "not done within {limit:?}"
                );
                if !self.step() && self.held.is_empty() {
                    let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                        .into_iter()
                        .flatten()
                        .min();
                    if let Some(next) = next {
                        self.now = self.now.max(next);
                    }
                    let now = self.now;
                    self.a.handle_timeout(now);
                    self.b.handle_timeout(now);
                }
            }
        }

        /// A sends `message` and shuts down; B reads it all and answers with `answer`
        /// and shuts down; returns what each read.
        fn exchange(&mut self, message: &[u8], answer: &[u8]) -> (Vec<u8>, Vec<u8>) {
            let (mut a_written, mut b_written) = (0, 0);
            let (mut a_read, mut b_read) = (Vec::new(), Vec::new());
            let mut buf = vec![0; 64 << 10];
            self.run_until(Duration::from_secs(600), |s| {
                a_written += s.a.write(&message[a_written..]);
                if a_written == message.len() {
                    s.a.shutdown();
                }
                b_written += s.b.write(&answer[b_written..]);
                if b_written == answer.len() {
                    s.b.shutdown();
                }
                for (conn, read) in [(&mut s.a, &mut a_read), (&mut s.b, &mut b_read)] {
                    loop {
                        let n = conn.read(&mut buf);
                        if n == 0 {
                            break;
                        }
                        read.extend_from_slice(&buf[..n]);
                    }
                }
                s.a.at_eof() && s.b.at_eof() && s.a.is_finished(s.now) && s.b.is_finished(s.now)
            });
            (a_read, b_read)
        }

        fn count(&self, side: Side, kind: PacketType) -> usize {
            self.log
                .iter()
                .filter(|(s, k, _)| *s == side && *k == kind)
                .count()
        }
    }

    fn deliver_all() -> Fault {
        Box::new(|_, _| Fate::Deliver)
    }

    #[test]
    fn data_and_fin_cross_both_ways_in_order() {
        let mut sim = Sim::new(deliver_all());
        let (message, answer) = (data(300_000, 1), data(200_000, 2));
        let (a_read, b_read) = sim.exchange(&message, &answer);
        assert!(b_read == message, "B read what A wrote");
        assert!(a_read == answer, "A read what B wrote");
        assert!(sim.a.error().is_none() && sim.b.error().is_none());
        // No packet needed sending twice on a perfect network.
        let data_packets = sim.count(Side::A, PacketType::Data);
        assert_eq!(data_packets, message.len().div_ceil(MAX_PAYLOAD));
    }

    #[test]
    fn lost_packets_are_sent_again() {
        let mut n = 0;
        let mut sim = Sim::new(Box::new(move |side, packet| {
            n += 1;
            match (side, packet.kind) {
                (Side::A, PacketType::Data) if n % 7 == 0 => Fate::Drop,
                (Side::B, PacketType::State) if n % 11 == 0 => Fate::Drop,
                _ => Fate::Deliver,
            }
        }));
        let message = data(500_000, 3);
        let (_, b_read) = sim.exchange(&message, b"ok");
        assert!(b_read == message);
        assert!(sim.count(Side::A, PacketType::Data) > message.len().div_ceil(MAX_PAYLOAD));
    }

    #[test]
    fn reordered_packets_are_put_back_in_order_and_selectively_acked() {
        let mut n = 0;
        let mut sim = Sim::new(Box::new(move |side, packet| {
            n += 1;
            if side == Side::A && packet.kind == PacketType::Data && n % 3 == 0 {
                Fate::Delay
            } else {
                Fate::Deliver
            }
        }));
        let message = data(200_000, 4);
        let (_, b_read) = sim.exchange(&message, b"");
        assert!(b_read == message);
        let sacks: Vec<_> = sim
            .log
            .iter()
            .filter(|(s, _, sack)| *s == Side::B && sack.is_some())
            .collect();
        assert!(!sacks.is_empty(), "B told A what it holds past the gap");
        assert!(sacks.iter().all(|(_, _, m)| m.as_ref().unwrap().len() == 4));
    }

    #[test]
    fn duplicated_packets_are_delivered_once() {
        let mut sim = Sim::new(Box::new(|_, _| Fate::Duplicate));
        let (message, answer) = (data(100_000, 5), data(50_000, 6));
        let (a_read, b_read) = sim.exchange(&message, &answer);
        assert!(b_read == message);
        assert!(a_read == answer);
    }

    #[test]
    fn a_gap_with_three_packets_acked_after_it_is_resent_before_the_timeout() {
        let mut sim = Sim::new(deliver_all());
        // A window of more than one packet first.
        sim.exchange_once(&data(100_000, 12));
        let mut dropped = None;
        sim.fault = Box::new(move |side, packet| {
            if side == Side::A && packet.kind == PacketType::Data && dropped.is_none() {
                dropped = Some(packet.seq);
                return Fate::Drop;
            }
            Fate::Deliver
        });
        let message = data(20 * MAX_PAYLOAD, 7);
        assert_eq!(sim.a.write(&message), message.len());
        let start = sim.now;
        let mut read = Vec::new();
        let mut buf = vec![0; 1 << 16];
        sim.run_until(Duration::from_secs(10), |s| {
            let n = s.b.read(&mut buf);
            read.extend_from_slice(&buf[..n]);
            read.len() == message.len()
        });
        assert!(read == message);
        assert!(
            sim.now.duration_since(start) < MIN_RTO,
            "resent on selective acks, not on the timeout ({:?})",
            sim.now.duration_since(start)
        );
    }

    #[test]
    fn a_blackout_is_survived_by_retransmission() {
        let mut sim = Sim::new(deliver_all());
        let message = data(50_000, 8);
        sim.a.write(&message);
        // The network is down for 3 s of the transfer.
        let down_from = sim.now + Duration::from_millis(3);
        let down_until = down_from + Duration::from_secs(3);
        let clock = std::rc::Rc::new(std::cell::Cell::new(sim.now));
        let seen = clock.clone();
        sim.fault = Box::new(move |_, _| {
            let now = seen.get();
            if now >= down_from && now < down_until {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        let mut read = Vec::new();
        let mut buf = vec![0; 1 << 16];
        sim.run_until(Duration::from_secs(60), |s| {
            clock.set(s.now);
            let n = s.b.read(&mut buf);
            read.extend_from_slice(&buf[..n]);
            read.len() == message.len()
        });
        assert!(read == message);
        assert!(sim.a.error().is_none());
    }

    #[test]
    fn a_peer_gone_for_good_fails_the_connection_after_bounded_resends() {
        let mut sim = Sim::new(deliver_all());
        sim.fault = Box::new(|_, _| Fate::Drop);
        sim.a.write(b"hello");
        let start = sim.now;
        sim.run_until(Duration::from_secs(300), |s| s.a.error().is_some());
        assert_eq!(sim.a.error(), Some(ConnectionError::TimedOut));
        let took = sim.now.duration_since(start);
        assert!(took < Duration::from_secs(60), "gave up after {took:?}");
        assert!(sim.count(Side::A, PacketType::Data) <= 1 + MAX_RESENDS as usize);
        assert!(sim.a.is_finished(sim.now) && sim.a.poll_transmit(sim.now).is_none());
    }

    #[test]
    fn an_unanswered_syn_times_out() {
        let now = Instant::now();
        let mut a = Connection::connect(7, 1, now);
        let mut sent = 0;
        let mut at = now;
        while a.error().is_none() {
            while a.poll_transmit(at).is_some() {
                sent += 1;
            }
            at = a.poll_timeout().unwrap();
            a.handle_timeout(at);
        }
        assert_eq!(a.error(), Some(ConnectionError::TimedOut));
        assert_eq!(sent, 1 + MAX_SYN_RESENDS as usize);
        assert!(at.duration_since(now) < Duration::from_secs(30));
    }

    #[test]
    fn a_reset_fails_the_connection_and_refuses_a_connect() {
        let mut sim = Sim::new(deliver_all());
        let reset = |conn: &Connection| {
            Packet {
                kind: PacketType::Reset,
                conn_id: conn.recv_id(),
                timestamp: 0,
                timestamp_diff: 0,
                window: 0,
                seq: 9,
                ack: 0,
                selective_ack: None,
                payload: &[],
            }
            .encode()
        };
        let datagram = reset(&sim.b);
        sim.b.handle(&decode(&datagram), sim.now);
        assert_eq!(sim.b.error(), Some(ConnectionError::Reset));
        assert_eq!(sim.b.write(b"x"), 0);
        assert!(sim.b.write_closed());

        let now = Instant::now();
        let mut a = Connection::connect(7, 1, now);
        a.poll_transmit(now);
        let datagram = reset(&a);
        a.handle(&decode(&datagram), now);
        assert_eq!(a.error(), Some(ConnectionError::Refused));
        assert!(a.is_established(), "connect gives up at once");
    }

    #[test]
    fn a_half_closed_side_still_reads_what_the_other_writes_after() {
        let mut sim = Sim::new(deliver_all());
        sim.a.write(b"request");
        sim.a.shutdown();
        let mut buf = [0; 64];
        let mut request = Vec::new();
        sim.run_until(Duration::from_secs(10), |s| {
            let n = s.b.read(&mut buf);
            request.extend_from_slice(&buf[..n]);
            s.b.at_eof()
        });
        assert_eq!(request, b"request");
        assert!(!sim.a.at_eof() && !sim.b.write_closed());
        let answer = data(100_000, 9);
        let (a_read, _) = sim.exchange(b"", &answer);
        assert!(a_read == answer);
    }

    #[test]
    fn an_accepted_connection_sends_nothing_before_the_peer_does() {
        let now = Instant::now();
        let mut a = Connection::connect(7, 1, now);
        let syn = a.poll_transmit(now).unwrap();
        let mut b = Connection::accept(&decode(&syn), 500, now);
        b.write(b"early");
        let synack = b.poll_transmit(now).unwrap();
        assert_eq!(decode(&synack).kind, PacketType::State);
        assert!(b.poll_transmit(now).is_none(), "no data before the peer's");
        a.handle(&decode(&synack), now);
        a.write(b"first");
        let first = a.poll_transmit(now).unwrap();
        b.handle(&decode(&first), now);
        let answer = b.poll_transmit(now).unwrap();
        let answer = decode(&answer);
        assert_eq!(
            (answer.kind, answer.payload),
            (PacketType::Data, &b"early"[..])
        );
    }

    #[test]
    fn idle_connections_keep_alive() {
        let mut sim = Sim::new(deliver_all());
        sim.exchange_once(b"ping");
        let start = sim.now;
        sim.run_until(Duration::from_secs(400), |s| {
            s.now.duration_since(start) > 3 * IDLE_TIMEOUT
        });
        assert!(sim.a.error().is_none() && sim.b.error().is_none());
        assert!(sim.count(Side::A, PacketType::State) >= 10);
        let keepalive = sim
            .log
            .iter()
            .rev()
            .find(|(side, kind, _)| *side == Side::A && *kind == PacketType::State);
        assert!(keepalive.is_some());
    }

    impl Sim {
        fn exchange_once(&mut self, message: &[u8]) {
            self.a.write(message);
            let mut buf = vec![0; message.len()];
            let mut got = 0;
            self.run_until(Duration::from_secs(10), |s| {
                got += s.b.read(&mut buf[got..]);
                got == message.len()
            });
        }
    }

    #[test]
    fn a_reader_that_does_not_read_holds_the_sender_back() {
        let mut sim = Sim::new(deliver_all());
        let message = data(3 * RECV_BUFFER, 10);
        let mut written = 0;
        let start = sim.now;
        sim.run_until(Duration::from_secs(100), |s| {
            written += s.a.write(&message[written..]);
            s.now.duration_since(start) > Duration::from_secs(20)
        });
        assert!(sim.b.recv_buf.len() <= RECV_BUFFER + RECV_SLACK);
        assert!(written < message.len(), "the sender stopped");
        assert!(sim.a.error().is_none(), "without failing");
        let mut read = Vec::new();
        let mut buf = vec![0; 1 << 16];
        sim.run_until(Duration::from_secs(600), |s| {
            written += s.a.write(&message[written..]);
            let n = s.b.read(&mut buf);
            read.extend_from_slice(&buf[..n]);
            read.len() == message.len()
        });
        assert!(read == message);
    }

    fn connected_pair() -> (Connection, Instant) {
        let sim = Sim::new(deliver_all());
        (sim.b, sim.now)
    }

    proptest! {
        #[test]
        fn any_bytes_into_a_connection_never_panic(datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 20..80), 1..40)) {
            let (mut conn, now) = connected_pair();
            for (i, datagram) in datagrams.iter().enumerate() {
                if let Ok(packet) = Packet::decode(datagram) {
                    conn.handle(&packet, now + Duration::from_millis(i as u64));
                }
                while conn.poll_transmit(now).is_some() {}
                conn.handle_timeout(now + Duration::from_secs(i as u64));
            }
        }

        #[test]
        fn plausible_packets_into_a_connection_never_panic(
            packets in proptest::collection::vec((0u8..5, any::<u16>(), -40i32..40, -40i32..40, any::<u32>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)), 0usize..3000), 1..60)
        ) {
            let (mut conn, now) = connected_pair();
            let (seq0, ack0) = (conn.ack_nr, conn.seq_nr);
            conn.write(&data(100_000, 11));
            for (i, (kind, id, seq, ack, window, sack, len)) in packets.into_iter().enumerate() {
                let at = now + Duration::from_millis(i as u64 * 50);
                while conn.poll_transmit(at).is_some() {}
                let payload = vec![0xab; len];
                let datagram = Packet {
                    kind: [PacketType::Data, PacketType::Fin, PacketType::State, PacketType::Reset, PacketType::Syn][usize::from(kind)],
                    conn_id: if i % 5 == 0 { id } else { conn.recv_id() },
                    timestamp: window.rotate_left(7),
                    timestamp_diff: window,
                    window,
                    seq: seq0.wrapping_add(seq as u16),
                    ack: ack0.wrapping_add(ack as u16),
                    selective_ack: sack.as_deref(),
                    payload: &payload,
                }
                .encode();
                conn.handle(&Packet::decode(&datagram).unwrap(), at);
                conn.handle_timeout(at);
                let mut buf = [0; 4096];
                conn.read(&mut buf);
            }
        }
    }
}
