//! One feed replicated with one peer over one channel: the state machine of hypercore 9's
//! `lib/replicate.js` `Peer` (see `spec/wire.md` section 9), run as a task.
//!
//! Differences from JS, all on the side of safety: data nobody asked for, a proof that
//! does not verify, a request for a block we never announced, or a flood of requests
//! drops the connection with a logged reason (JS ignores the first).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use hypercore::bitfield::rle;
use hypercore::{Event, Feed, Origin, Proof, ProofRequest, RemoteTree, Signature};
use hypercore_protocol::message::{
    Data, DataNode, Have, Message, Options, Request, Status, Unhave, Want,
};
use hypercore_protocol::{Channel, ChannelEvent, ChannelReceiver, ChannelSender, PeerKey};
use rand::Rng;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::replicator::{Counters, PeerEntry, Shared};
use crate::Error;

/// Identifies a peer of a feed within its replicator.
pub(crate) type PeerId = u64;

/// Blocks per `Want` page (JS wants in pages of 1048576 blocks).
const WANT_PAGE: u64 = 1024 * 1024;
/// Unanswered `Want`s at a time.
const MAX_INFLIGHT_WANTS: usize = 16;
/// Requests we queue for a peer before calling it a flood.
const MAX_PENDING_UPLOADS: usize = 4096;
/// Stop serving uploads while this much is queued on the connection, resume below the low
/// mark: keeps memory bounded without ever blocking the connection's reader.
const HIGH_WATER: usize = 8 << 20;
const LOW_WATER: usize = 2 << 20;
/// Answers verified and stored together at most.
const MAX_DATA_BATCH: usize = 64;
/// Block bytes verified and stored together at most: a quarter of the request window,
/// so that the remote still has requests to answer while a batch is stored (a batch of
/// the whole window left the seeder idle meanwhile: 414 MB/s hyperd to hyperd against
/// 511 MB/s with batches of a quarter).
const MAX_DATA_BATCH_BYTES: usize = (crate::WINDOW_BYTES / 4) as usize;
/// Distinct `Want`s a peer may send (each covers a page of 1 M blocks).
const MAX_REMOTE_WANTS: usize = 1024;
/// Largest bitfield a `Have` may decode to: one `Want` page of blocks (we only ever want
/// pages of this size, and JS answers with the Want's length).
const MAX_HAVE_BITFIELD: usize = (WANT_PAGE / 8) as usize;

#[derive(Clone, Copy, Debug)]
struct Inflight {
    index: u64,
    bytes: u64,
    hash: bool,
}

struct Peer {
    id: PeerId,
    shared: Arc<Shared>,
    feed: Feed,
    tx: ChannelSender,
    remote_key: PeerKey,
    live: bool,
    sparse: bool,
    counters: Arc<Counters>,

    uploading: bool,
    downloading: bool,
    default_downloading: bool,
    ack: bool,
    /// Our side ended downloading (JS `_closed`).
    ended: bool,
    /// The channel is closed; the task exits.
    closed: bool,
    /// We closed it (done, or refusing the remote), rather than the remote or the
    /// connection.
    closed_here: bool,

    remote_opened: bool,
    remote_uploading: bool,
    remote_downloading: bool,
    remote_ack: bool,
    remote_want: bool,
    /// Wants already answered: a repeated Want gets no second bitfield (updates follow as
    /// Haves), so a flood of them cannot fill our send queue.
    answered_wants: HashSet<(u64, u64)>,
    remote_extensions: Vec<String>,

    /// Blocks the remote has and we do not.
    remote: crate::RemoteBitfield,
    /// Every block the remote announced and still has: `remote` forgets blocks we hold
    /// (so picking skips them), this does not, so blocks we clear are wanted again.
    announced: crate::RemoteBitfield,
    remote_length: u64,
    first_have: bool,
    /// `None` in JS's legacy mode (the remote answered a Want with a whole bitfield).
    wants: Option<HashSet<u64>>,
    inflight_wants: usize,
    inflight: Vec<Inflight>,
    /// Requests dropped without an answer (the remote stopped uploading): their data may
    /// still arrive and is welcome.
    abandoned: HashMap<u64, usize>,
    last_progress: Instant,

    remote_tree: RemoteTree,
    uploads: VecDeque<Request>,
    last_bytes: u64,
    announced_length: u64,
}

impl Peer {
    fn misbehaved(&self, reason: String) -> Error {
        Error::PeerMisbehaved {
            peer: self.remote_key,
            reason,
        }
    }

    fn send(&mut self, message: Message) {
        tracing::trace!(peer = %self.remote_key, ?message, "send");
        if self.tx.send(message).is_err() {
            self.closed = true;
        }
    }

    fn close(&mut self) {
        self.tx.close();
        self.closed = true;
        self.closed_here = true;
    }

    // ---- channel events ----------------------------------------------------------

    fn on_open(&mut self) {
        self.remote_opened = true;
        self.announce_options();
        if !self.uploading || !self.downloading {
            self.send_status();
        }
        if self.downloading && self.remote_uploading {
            let demand = self.feed.demand();
            self.send_wants(&demand);
        }
        self.update();
    }

    fn send_status(&mut self) {
        self.send(Message::Status(Status {
            uploading: Some(self.uploading),
            downloading: Some(self.downloading),
        }));
    }

    fn announce_options(&mut self) {
        let names: Vec<String> = self
            .shared
            .lock()
            .extensions
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        if self.ack || !names.is_empty() {
            self.send(Message::Options(Options {
                extensions: names,
                ack: Some(self.ack),
            }));
        }
    }

    async fn on_message(&mut self, message: Message) -> Result<(), Error> {
        tracing::trace!(peer = %self.remote_key, ?message, "recv");
        match message {
            Message::Options(o) => {
                self.remote_ack = o.ack.unwrap_or(false);
                self.remote_extensions = o.extensions.clone();
                if let Some(p) = self.shared.lock().peers.get_mut(&self.id) {
                    p.remote_extensions = o.extensions;
                }
            }
            Message::Status(s) => self.on_status(s),
            Message::Have(h) => self.on_have(h)?,
            Message::Unhave(u) => self.on_unhave(u.start, u.length.unwrap_or(1)),
            Message::Want(w) => self.on_want(w.start, w.length.unwrap_or(0))?,
            Message::Request(r) => self.on_request(r).await?,
            Message::Data(d) => self.on_data(vec![d]).await?,
            Message::Extension { id, payload } => self.on_extension(id, payload),
            // Unwant and Cancel are ignored, like JS; Open/Close are the connection's.
            _ => {}
        }
        Ok(())
    }

    fn on_extension(&self, id: u64, payload: Bytes) {
        let Some(name) = usize::try_from(id)
            .ok()
            .and_then(|i| self.remote_extensions.get(i))
        else {
            return;
        };
        let state = self.shared.lock();
        if let Some((_, handler)) = state.extensions.iter().find(|(n, _)| n == name) {
            if handler.try_send((self.remote_key, payload)).is_err() {
                tracing::debug!(
                    extension = name.as_str(),
                    "feed extension handler is not keeping up; message dropped"
                );
            }
        }
    }

    fn on_status(&mut self, status: Status) {
        // JS decodes absent fields as false.
        self.remote_uploading = status.uploading.unwrap_or(false);
        self.remote_downloading = status.downloading.unwrap_or(false);
        if !self.remote_uploading {
            self.abandon_inflight();
            self.inflight_wants = 0;
            if self.wants.is_some() {
                self.wants = Some(HashSet::new());
            }
        }
        self.update();
        if self.remote_downloading || self.live {
            return;
        }
        if self.downloading && !self.shared.lock().selections.is_empty() {
            return;
        }
        self.auto_end();
    }

    fn auto_end(&mut self) {
        if self.uploading && self.remote_downloading {
            return;
        }
        if (self.sparse || self.live) && (self.remote_uploading || self.downloading) {
            return;
        }
        self.end();
    }

    /// JS `Peer.end`: stop downloading, and close once neither side wants data.
    fn end(&mut self) {
        if !self.downloading && !self.remote_downloading && !self.live {
            if !self.default_downloading {
                self.send(Message::Status(Status {
                    uploading: Some(false),
                    downloading: Some(false),
                }));
            }
            self.close();
            return;
        }
        if !self.ended {
            self.ended = true;
            self.downloading = false;
            self.send(Message::Status(Status {
                uploading: Some(true),
                downloading: Some(false),
            }));
        } else if !self.live {
            self.close();
        }
    }

    fn on_want(&mut self, start: u64, length: u64) -> Result<(), Error> {
        if !self.uploading || !start.is_multiple_of(8192) || !length.is_multiple_of(8192) {
            return Ok(());
        }
        if self.answered_wants.contains(&(start, length)) {
            return Ok(());
        }
        if self.answered_wants.len() >= MAX_REMOTE_WANTS {
            return Err(
                self.misbehaved(format!("sent more than {MAX_REMOTE_WANTS} distinct Wants"))
            );
        }
        self.answered_wants.insert((start, length));
        let len = self.feed.len();
        if !self.remote_want && len > 0 && self.feed.has(len - 1) {
            // Tell the remote our length right away.
            self.send(Message::Have(Have {
                start: len - 1,
                length: None,
                bitfield: None,
                ack: None,
            }));
        }
        if !self.remote_want {
            self.remote_want = true;
            self.announced_length = len;
        }
        let bitfield = Bytes::from(self.feed.have_bitfield(start, length));
        self.send(Message::Have(Have {
            start,
            length: Some(length),
            bitfield: Some(bitfield),
            ack: None,
        }));
        Ok(())
    }

    fn on_have(&mut self, have: Have) -> Result<(), Error> {
        if self.ack
            && have.ack == Some(true)
            && have.bitfield.is_none()
            && self.feed.has(have.start)
        {
            return Ok(()); // an acknowledgement of a block we uploaded
        }
        let mut updated = std::mem::take(&mut self.first_have);
        let length = have.length.unwrap_or(1);
        if length == WANT_PAGE && self.inflight_wants > 0 {
            self.inflight_wants -= 1;
        }
        // Bits are kept as announced; blocks we hold are skipped (and dropped) when picking.
        let end = match have.bitfield {
            Some(bits) => {
                if length <= 1 {
                    self.wants = None;
                }
                // JS sends bitfields only in answer to Wants, at 8192-block boundaries.
                if !have.start.is_multiple_of(8192) || have.start >= hypercore::MAX_BLOCKS {
                    return Err(self.misbehaved(format!(
                        "Have bitfield at block {}, not a page boundary of the feed",
                        have.start
                    )));
                }
                let raw = rle::decode(&bits, MAX_HAVE_BITFIELD)
                    .map_err(|e| self.misbehaved(format!("bad Have bitfield: {e}")))?;
                if have.start + 8 * raw.len() as u64 > hypercore::MAX_BLOCKS {
                    return Err(self.misbehaved(format!(
                        "Have bitfield at block {} runs past 2^53 blocks",
                        have.start
                    )));
                }
                let last = raw
                    .iter()
                    .rposition(|&b| b != 0)
                    .map(|i| 8 * i as u64 + 7 - u64::from(raw[i].trailing_zeros()));
                self.remote
                    .set_from_bytes(have.start, &raw)
                    .map_err(|e| self.misbehaved(e.to_string()))?;
                self.announced
                    .set_from_bytes(have.start, &raw)
                    .map_err(|e| self.misbehaved(e.to_string()))?;
                last.map_or(0, |l| have.start + l + 1)
            }
            None => {
                let end = have
                    .start
                    .saturating_add(length.max(1))
                    .min(hypercore::MAX_BLOCKS);
                self.remote
                    .set_range(have.start, end)
                    .map_err(|e| self.misbehaved(e.to_string()))?;
                self.announced
                    .set_range(have.start, end)
                    .map_err(|e| self.misbehaved(e.to_string()))?;
                end
            }
        };
        if end > self.remote_length {
            self.remote_length = end;
            updated = true;
        }
        {
            let mut state = self.shared.lock();
            if let Some(p) = state.peers.get_mut(&self.id) {
                p.remote_length = Some(self.remote_length);
            }
            if updated {
                self.shared.check_selections(&mut state, self.live);
            }
        }
        if updated {
            self.shared.wake_peers();
        }
        self.update();
        Ok(())
    }

    fn on_unhave(&mut self, start: u64, length: u64) {
        if start == 0 && length >= self.remote_length {
            self.remote_length = 0;
            self.remote.clear();
            self.announced.clear();
            // The scheduler's copy (selection ends, stats) follows, as JS's one field does.
            if let Some(p) = self.shared.lock().peers.get_mut(&self.id) {
                p.remote_length = Some(0);
            }
            return;
        }
        self.remote.clear_range(start, start.saturating_add(length));
        self.announced
            .clear_range(start, start.saturating_add(length));
    }

    async fn on_request(&mut self, request: Request) -> Result<(), Error> {
        if !self.uploading {
            return Ok(());
        }
        if self.uploads.len() >= MAX_PENDING_UPLOADS {
            return Err(self.misbehaved(format!(
                "more than {MAX_PENDING_UPLOADS} requests outstanding"
            )));
        }
        self.uploads.push_back(request);
        self.serve_uploads().await
    }

    fn uploads_blocked(&self) -> bool {
        !self.uploads.is_empty()
    }

    async fn serve_uploads(&mut self) -> Result<(), Error> {
        while !self.closed && self.tx.queued_bytes() <= HIGH_WATER {
            let Some(request) = self.uploads.pop_front() else {
                break;
            };
            self.serve(request).await?;
        }
        Ok(())
    }

    async fn serve(&mut self, r: Request) -> Result<(), Error> {
        let mut index = r.index;
        let mut digest = r.nodes.unwrap_or(0);
        if let Some(bytes) = r.bytes.filter(|&b| b > 0) {
            // Resolve the byte offset locally; if we cannot, answer for `index` as JS does.
            if let Ok(Some((i, _))) = self.feed.seek_local(bytes) {
                if self.last_bytes == bytes {
                    return Ok(()); // a duplicate of a seek we just answered
                }
                self.last_bytes = bytes;
                index = i;
                digest = 0;
            }
        }
        let request = ProofRequest {
            hash: r.hash.unwrap_or(false),
            digest,
        };
        let (value, proof) = match self
            .feed
            .upload(index, request, &mut self.remote_tree)
            .await
        {
            Ok(v) => v,
            // We have the hash but not the data: JS stays silent too.
            Err(hypercore::Error::NotAvailable { .. }) if self.feed.has_hash(index) => {
                return Ok(())
            }
            Err(hypercore::Error::NotAvailable { .. } | hypercore::Error::OutOfRange { .. }) => {
                return Err(
                    self.misbehaved(format!("requested block {index}, which we do not have"))
                );
            }
            Err(e) => return Err(Error::Feed(e)),
        };
        if let Some(v) = &value {
            self.counters.upload(v.len());
            self.shared.totals.upload(v.len());
        }
        self.send(Message::Data(Data {
            index,
            value,
            nodes: proof.nodes.iter().map(DataNode::from).collect(),
            signature: proof.signature.map(|s| Bytes::copy_from_slice(&s.0)),
        }));
        Ok(())
    }

    /// Checks that an answer was asked for and turns it into a verifiable item.
    fn accept_data(&mut self, data: Data) -> Result<(u64, Option<Bytes>, Proof), Error> {
        let index = data.index;
        // Match the answer to a request of its kind: data answers a data request, a
        // hash-only answer a hash request.
        let hash_only = data.value.is_none();
        let requested = match self
            .inflight
            .iter()
            .position(|r| r.index == index && r.hash == hash_only && r.bytes == 0)
        {
            Some(at) => {
                self.inflight.swap_remove(at);
                true
            }
            None => match self.abandoned.get_mut(&index) {
                Some(n) => {
                    *n -= 1;
                    if *n == 0 {
                        self.abandoned.remove(&index);
                    }
                    true
                }
                None => false,
            },
        };
        // A hash-only answer (to `update` or `seek`) may cover another block than asked.
        if !requested && data.value.is_some() {
            return Err(self.misbehaved(format!("sent block {index}, which nobody requested")));
        }
        let nodes = data.proof_nodes().ok_or_else(|| {
            self.misbehaved(format!("a node hash for block {index} is not 32 bytes"))
        })?;
        let signature = match &data.signature {
            Some(s) => Some(Signature::from_slice(s).map_err(|_| {
                self.misbehaved(format!("the signature for block {index} is not 64 bytes"))
            })?),
            None => None,
        };
        Ok((index, data.value, Proof { nodes, signature }))
    }

    /// Verifies and stores answers that arrived together, as one batch.
    async fn on_data(&mut self, batch: Vec<Data>) -> Result<(), Error> {
        let items = batch
            .into_iter()
            .map(|d| self.accept_data(d))
            .collect::<Result<Vec<_>, _>>()?;
        let blocks: Vec<(u64, Option<usize>)> = items
            .iter()
            .map(|(i, d, _)| (*i, d.as_ref().map(|d| d.len())))
            .collect();
        let origin = Origin::Remote {
            peer: self.remote_key.0,
        };
        let results = self.feed.put_batch(items, origin).await?;
        for ((index, size), result) in blocks.iter().zip(results) {
            match result {
                Ok(outcome) => {
                    if let (true, Some(size)) = (outcome.downloaded, size) {
                        self.counters.download(*size);
                        self.shared.totals.download(*size);
                    }
                }
                Err(hypercore::Error::InvalidProof { reason, .. }) => {
                    return Err(
                        self.misbehaved(format!("block {index} failed verification: {reason}"))
                    );
                }
                Err(e) => return Err(Error::Feed(e)),
            }
            if size.is_some() {
                self.remote.set(*index, false);
                if self.remote_ack {
                    self.send(Message::Have(Have {
                        start: *index,
                        length: Some(1),
                        bitfield: None,
                        ack: Some(true),
                    }));
                }
            }
        }
        self.last_progress = Instant::now();
        self.settle_inflight();
        let default_done = {
            let mut state = self.shared.lock();
            for (index, _) in &blocks {
                if state.reserved.get(index) == Some(&self.id) {
                    state.reserved.remove(index);
                }
            }
            self.shared.check_selections(&mut state, self.live);
            state.default_done && state.selections.is_empty()
        };
        self.shared.wake_peers();
        if default_done && !self.live && !self.sparse && self.downloading {
            self.end();
        }
        self.update();
        Ok(())
    }

    /// Stops waiting for in-flight requests answered by what we now hold (seeks resolved,
    /// hashes or blocks that came through another peer). Their answers may still arrive
    /// and are welcome.
    fn settle_inflight(&mut self) {
        let feed = &self.feed;
        let mut settled = Vec::new();
        self.inflight.retain(|r| {
            let done = if r.bytes > 0 {
                matches!(feed.seek_local(r.bytes), Ok(Some(_)))
            } else if r.hash {
                feed.has_hash(r.index)
            } else {
                feed.has(r.index)
            };
            if done {
                settled.push(r.index);
            }
            !done
        });
        if settled.is_empty() {
            return;
        }
        let mut state = self.shared.lock();
        for index in settled {
            if state.reserved.get(&index) == Some(&self.id) {
                state.reserved.remove(&index);
            }
            *self.abandoned.entry(index).or_default() += 1;
        }
    }

    fn abandon_inflight(&mut self) {
        let mut state = self.shared.lock();
        for r in self.inflight.drain(..) {
            if state.reserved.get(&r.index) == Some(&self.id) {
                state.reserved.remove(&r.index);
            }
            *self.abandoned.entry(r.index).or_default() += 1;
        }
        drop(state);
        self.shared.wake_peers();
    }

    // ---- feed events ---------------------------------------------------------------

    fn on_feed_event(&mut self, event: Result<Event, RecvError>) {
        match event {
            Ok(Event::Append { .. }) | Err(RecvError::Lagged(_)) => self.announce_appends(),
            Ok(Event::Download { index, origin, .. }) => {
                self.remote.set(index, false);
                if self.remote_want
                    && origin
                        != (Origin::Remote {
                            peer: self.remote_key.0,
                        })
                {
                    self.send(Message::Have(Have {
                        start: index,
                        length: None,
                        bitfield: None,
                        ack: None,
                    }));
                }
            }
            Ok(Event::Clear { start, end }) => {
                // What we cleared and the remote has is worth fetching again.
                let mut at = start;
                while let Some(i) = self.announced.next(at, end) {
                    self.remote.set(i, true);
                    at = i + 1;
                }
                self.update();
                if self.remote_want {
                    self.send(Message::Unhave(Unhave {
                        start,
                        length: Some(end - start),
                    }));
                }
            }
            Ok(Event::Close) | Err(RecvError::Closed) => self.close(),
            Ok(_) => {}
        }
    }

    /// Announces blocks appended since the last announcement (a writer's new blocks).
    fn announce_appends(&mut self) {
        let len = self.feed.len();
        if !self.remote_want || !self.feed.writable() || len <= self.announced_length {
            return;
        }
        let start = self.announced_length;
        let n = len - start;
        self.send(Message::Have(Have {
            start,
            length: (n > 1).then_some(n),
            bitfield: None,
            ack: None,
        }));
        self.announced_length = len;
    }

    // ---- requesting ----------------------------------------------------------------

    fn request(&mut self, index: u64, bytes: u64, hash: bool) {
        if self.inflight.is_empty() {
            self.last_progress = Instant::now();
        }
        self.inflight.push(Inflight { index, bytes, hash });
        let nodes = self.feed.digest(index);
        self.send(Message::Request(Request {
            index,
            bytes: Some(bytes),
            hash: Some(hash),
            nodes: Some(nodes),
        }));
    }

    /// JS `Peer.update`: fills the request window, urgent waits first, then ranges by
    /// priority.
    fn update(&mut self) {
        if self.closed {
            return;
        }
        if self.downloading && self.remote_uploading && self.remote_opened {
            // What local readers wait for, read once for both uses.
            let demand = self.feed.demand();
            self.request_urgent(&demand);
            self.request_ranges();
            self.send_wants(&demand);
        }
        let end_now = {
            let state = self.shared.lock();
            state.default_done && state.selections.is_empty()
        };
        if end_now && !self.live && !self.sparse && self.downloading {
            self.end();
        }
    }

    fn request_urgent(&mut self, demand: &hypercore::Demand) {
        let urgent_max = self.shared.window() + 16;
        let mut picks = Vec::new();
        {
            let mut state = self.shared.lock();
            let mut room = urgent_max.saturating_sub(self.inflight.len());
            for &i in &demand.blocks {
                if room == 0 {
                    break;
                }
                // A waiter whose block just arrived may not have run yet.
                if self.remote.get(i) && !state.reserved.contains_key(&i) && !self.feed.has(i) {
                    state.reserved.insert(i, self.id);
                    picks.push((i, 0, false));
                    room -= 1;
                }
            }
            // With `follow_length`, a longer feed announced by this peer is wanted too.
            let announced = (self.shared.options.follow_length
                && self.remote_length > self.feed.len())
            .then_some(self.remote_length);
            let length = demand.length.max(announced);
            if let Some(min) = length.filter(|&m| m > self.feed.len()) {
                let asked = self.inflight.iter().any(|r| r.hash && r.bytes == 0);
                let target = min.saturating_sub(1);
                let candidate = if self.remote.get(target) {
                    Some(target)
                } else {
                    self.remote.next(target, u64::MAX)
                };
                if let (false, Some(c), true) = (asked, candidate, room > 0) {
                    if let std::collections::hash_map::Entry::Vacant(e) = state.reserved.entry(c) {
                        e.insert(self.id);
                        picks.push((c, 0, true));
                        room -= 1;
                    }
                }
            }
            for &bytes in &demand.seeks {
                if room == 0 {
                    break;
                }
                let resolved = matches!(self.feed.seek_local(bytes), Ok(Some(_)));
                if !resolved && !self.inflight.iter().any(|r| r.bytes == bytes) {
                    let index = self.remote.next(0, u64::MAX).unwrap_or(0);
                    picks.push((index, bytes, true));
                    room -= 1;
                }
            }
        }
        for (i, bytes, hash) in picks {
            self.request(i, bytes, hash);
        }
    }

    fn request_ranges(&mut self) {
        let max = self.shared.window();
        if self.inflight.len() >= max {
            return;
        }
        let mut picks = Vec::new();
        {
            let mut state = self.shared.lock();
            let mut room = max - self.inflight.len();
            let remote_length = self.remote_length;
            let ranges: Vec<(usize, u64, u64, bool)> = state
                .selections
                .iter()
                .enumerate()
                .map(|(at, s)| {
                    let end = self
                        .shared
                        .selection_end(&state, s)
                        .unwrap_or(remote_length)
                        .min(remote_length);
                    (at, s.range.start, end, s.range.linear)
                })
                .collect();
            let mut rng = rand::thread_rng();
            for (at, start, end, linear) in ranges {
                let state = &mut *state;
                if let Some(blocks) = &state.selections[at].blocks {
                    // Just these blocks: those the remote has and nobody asked for yet.
                    for &i in blocks {
                        if room == 0 {
                            break;
                        }
                        if self.remote.get(i)
                            && !state.reserved.contains_key(&i)
                            && !self.feed.has(i)
                        {
                            state.reserved.insert(i, self.id);
                            picks.push(i);
                            room -= 1;
                        }
                    }
                    continue;
                }
                while room > 0 && start < end {
                    let from = if linear {
                        start
                    } else {
                        rng.gen_range(start..end)
                    };
                    let found = next_free(&self.remote, &state.reserved, from, end).or_else(|| {
                        (from > start)
                            .then(|| next_free(&self.remote, &state.reserved, start, from))
                            .flatten()
                    });
                    let Some(i) = found else { break };
                    if self.feed.has(i) {
                        // Stale: it came through another peer and that event is still queued.
                        self.remote.set(i, false);
                        continue;
                    }
                    state.reserved.insert(i, self.id);
                    picks.push(i);
                    room -= 1;
                }
                if room == 0 {
                    break;
                }
            }
        }
        for i in picks {
            self.request(i, 0, false);
        }
    }

    /// Called when downloading from a remote that uploads and has opened the channel.
    fn send_wants(&mut self, demand: &hypercore::Demand) {
        if self.wants.is_none() {
            return;
        }
        for &b in &demand.blocks {
            if self.inflight_wants >= MAX_INFLIGHT_WANTS {
                return;
            }
            self.send_want(b);
        }
        let ranges: Vec<(u64, Option<u64>)> = {
            let state = self.shared.lock();
            state
                .selections
                .iter()
                .map(|s| (s.range.start, s.range.end))
                .collect()
        };
        for (start, end) in ranges {
            if self.inflight_wants >= MAX_INFLIGHT_WANTS {
                return;
            }
            self.send_want_range(start, end);
        }
        if self.inflight_wants < MAX_INFLIGHT_WANTS {
            // Always subscribe to the first page.
            self.send_want(0);
        }
    }

    fn send_want_range(&mut self, start: u64, end: Option<u64>) {
        let mut want = start / WANT_PAGE * WANT_PAGE;
        loop {
            if want >= self.remote_length || end.is_some_and(|e| want >= e) {
                return;
            }
            if self.send_want(want) {
                return;
            }
            want += WANT_PAGE;
        }
    }

    fn send_want(&mut self, index: u64) -> bool {
        let page = index / WANT_PAGE;
        let Some(wants) = &mut self.wants else {
            return false;
        };
        if !wants.insert(page) {
            return false;
        }
        self.inflight_wants += 1;
        self.send(Message::Want(Want {
            start: page * WANT_PAGE,
            length: Some(WANT_PAGE),
        }));
        true
    }

    /// When the oldest unanswered request times out, if anything is still in flight.
    fn request_deadline(&self) -> Option<Instant> {
        (!self.inflight.is_empty())
            .then(|| self.last_progress + self.shared.options.request_timeout)
    }
}

/// The first block in `[from, end)` the remote has that nobody has requested yet.
fn next_free(
    remote: &crate::RemoteBitfield,
    reserved: &std::collections::HashMap<u64, PeerId>,
    from: u64,
    end: u64,
) -> Option<u64> {
    let mut at = from;
    while let Some(i) = remote.next(at, end) {
        if !reserved.contains_key(&i) {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

/// How a peer ended, when it was not dropped for an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEnd {
    /// Both sides were done, the remote never opened the channel (it does not have the
    /// feed), or our side closed it.
    Finished,
    /// The remote closed a channel it had opened while it still had blocks we want (a
    /// corestore closes cores it has no room for, and opens them again when asked):
    /// worth opening the channel again.
    ClosedEarly,
}

/// A peer on `channel`, known to the feed's shared state from now on (not yet heard
/// from): what [`run`] runs.
pub(crate) struct Registered {
    id: PeerId,
    tx: ChannelSender,
    rx: ChannelReceiver,
    counters: Arc<Counters>,
}

/// Adds the peer on `channel` to the shared state, before its task first runs, so a
/// caller waiting for what peers have (`update_if_available`) sees it at once.
pub(crate) fn register(shared: &Shared, channel: Channel) -> Registered {
    let (tx, rx) = channel.split();
    let counters = Arc::new(Counters::default());
    let id = {
        let mut state = shared.lock();
        let id = state.alloc_id();
        state.peers.insert(
            id,
            PeerEntry {
                remote_key: tx.remote_key(),
                remote_length: None,
                counters: counters.clone(),
                sender: tx.clone(),
                remote_extensions: Vec::new(),
            },
        );
        id
    };
    shared.wake_peers();
    Registered {
        id,
        tx,
        rx,
        counters,
    }
}

/// Runs the peer until its channel closes; the error says why the peer was dropped.
pub(crate) async fn run(
    shared: Arc<Shared>,
    registered: Registered,
    live: bool,
    downloading: bool,
) -> Result<PeerEnd, Error> {
    let Registered {
        id,
        tx,
        mut rx,
        counters,
    } = registered;
    let feed = shared.feed.clone();
    let mut peer = Peer {
        id,
        feed: feed.clone(),
        remote_key: tx.remote_key(),
        tx,
        live,
        sparse: feed.is_sparse(),
        counters,
        uploading: shared.options.upload,
        downloading,
        default_downloading: downloading,
        ack: shared.options.ack,
        ended: false,
        closed: false,
        closed_here: false,
        remote_opened: false,
        remote_uploading: true,
        remote_downloading: true,
        remote_ack: false,
        remote_want: false,
        answered_wants: HashSet::new(),
        remote_extensions: Vec::new(),
        remote: crate::RemoteBitfield::default(),
        announced: crate::RemoteBitfield::default(),
        remote_length: 0,
        first_have: true,
        wants: Some(HashSet::new()),
        inflight_wants: 0,
        inflight: Vec::new(),
        abandoned: HashMap::new(),
        last_progress: Instant::now(),
        remote_tree: RemoteTree::default(),
        uploads: VecDeque::new(),
        last_bytes: 0,
        announced_length: feed.len(),
        shared: shared.clone(),
    };
    let mut events = feed.events();
    let mut wake = shared.wake.subscribe();
    let mut demand = feed.demand_changes();
    let mut extensions = shared.extensions_version.subscribe();
    let result = loop {
        if peer.closed {
            break Ok(());
        }
        let deadline = peer.request_deadline();
        let sender = peer.tx.clone();
        tokio::select! {
            event = rx.recv() => match event {
                None => break Ok(()),
                Some(ChannelEvent::Opened) => peer.on_open(),
                Some(ChannelEvent::Message(Message::Data(first))) => {
                    // Answers that are already queued are verified and stored together.
                    let mut bytes = first.value.as_ref().map_or(0, Bytes::len);
                    let mut batch = vec![first];
                    let mut next = None;
                    while batch.len() < MAX_DATA_BATCH && bytes < MAX_DATA_BATCH_BYTES {
                        match rx.try_recv() {
                            Some(ChannelEvent::Message(Message::Data(d))) => {
                                bytes += d.value.as_ref().map_or(0, Bytes::len);
                                batch.push(d);
                            }
                            other => {
                                next = other;
                                break;
                            }
                        }
                    }
                    let mut result = peer.on_data(batch).await;
                    if let (Ok(()), Some(event)) = (&result, next) {
                        result = match event {
                            ChannelEvent::Opened => {
                                peer.on_open();
                                Ok(())
                            }
                            ChannelEvent::Message(m) => peer.on_message(m).await,
                        };
                    }
                    if let Err(e) = result {
                        break Err(e);
                    }
                }
                Some(ChannelEvent::Message(m)) => {
                    if let Err(e) = peer.on_message(m).await {
                        break Err(e);
                    }
                }
            },
            event = events.recv() => peer.on_feed_event(event),
            _ = wake.changed() => peer.update(),
            _ = demand.changed() => peer.update(),
            _ = extensions.changed() => peer.announce_options(),
            _ = sender.drained(LOW_WATER), if peer.uploads_blocked() => {
                if let Err(e) = peer.serve_uploads().await {
                    break Err(e);
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                peer.settle_inflight();
                if !peer.inflight.is_empty() {
                    break Err(Error::RequestTimeout {
                        peer: peer.remote_key,
                        after: shared.options.request_timeout,
                        outstanding: peer.inflight.len(),
                    });
                }
            }
        }
    };
    // Leave: give our requests back so other peers take them over.
    {
        let mut state = shared.lock();
        state.peers.remove(&id);
        state.reserved.retain(|_, owner| *owner != id);
    }
    shared.wake_peers();
    // Something here wants blocks, and the remote has some we lack, or closed before it
    // said what it has.
    let wanted = || {
        (peer.first_have || peer.remote.next(0, peer.remote_length).is_some())
            && (!shared.lock().selections.is_empty() || !feed.demand().blocks.is_empty())
    };
    let result = result.map(|()| {
        if !peer.closed_here && peer.remote_opened && wanted() {
            PeerEnd::ClosedEarly
        } else {
            PeerEnd::Finished
        }
    });
    match &result {
        Ok(end) => {
            tracing::debug!(peer = %peer.remote_key, feed = %feed.discovery_key(), ?end, "peer left")
        }
        Err(e) => {
            // Only this feed's channel goes: the connection may carry other feeds, which
            // are not at fault (the owner of the connection decides what else to do).
            tracing::warn!(peer = %peer.remote_key, feed = %feed.discovery_key(), error = %e, "dropping peer");
            peer.tx.close();
        }
    }
    result
}
