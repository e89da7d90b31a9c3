//! Replicating a store over one connection (spec `corestore.md` §5): every open core runs
//! on it, cores the remote asks for are opened from disk, unknown ones are refused with a
//! `Close`, as JS does. A core whose peer misbehaves loses its channel on that connection
//! (and is not offered to that peer again for a while); the connection and its other cores
//! go on. A remote that closes a core we still want blocks of (a store closing cores for
//! room, as this one does) is asked again, after a backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hypercore::{DiscoveryKey, PublicKey};
use hypercore_protocol::{Events, Outcome, Protocol};
use hypercore_replication::PeerEnd;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::{lock, Corestore, Error};

type PeerResult = (PublicKey, Result<PeerEnd, hypercore_replication::Error>);

/// The first wait before asking a remote again for a core it closed early; it doubles
/// with every early close in a row, up to [`MAX_REOPEN_DELAY`].
const REOPEN_DELAY: Duration = Duration::from_millis(500);
const MAX_REOPEN_DELAY: Duration = Duration::from_secs(30);
/// A channel that lasted this long before an early close starts the backoff afresh.
const REOPEN_RESET: Duration = Duration::from_secs(30);

/// A replication connection the store serves.
pub(crate) struct Stream {
    pub protocol: Protocol,
    live: bool,
    peers: Mutex<JoinSet<PeerResult>>,
    /// Cores attached here, each with a receiver that completes when its peer ends (and
    /// a number telling this attachment from later ones).
    attached: Mutex<HashMap<DiscoveryKey, (u64, oneshot::Receiver<()>)>>,
    next_attachment: std::sync::atomic::AtomicU64,
    /// Early closes in a row per core, for the backoff before asking again.
    reopens: Mutex<HashMap<DiscoveryKey, u32>>,
}

impl Stream {
    fn peers(&self) -> MutexGuard<'_, JoinSet<PeerResult>> {
        lock(&self.peers)
    }

    /// Stops running the core of `dk` here, if it runs here: closes our side of its
    /// channel (the remote is told), which ends the peer once it has handled what it
    /// already received. The returned receiver completes when the peer has ended.
    pub fn detach(&self, dk: DiscoveryKey) -> Option<oneshot::Receiver<()>> {
        let (_, done) = lock(&self.attached).remove(&dk)?;
        self.protocol.close(dk);
        Some(done)
    }

    /// Refuses the remote's channel for `dk` (`why` says why), unless the core was attached
    /// here since: the look-up that found nothing races with local loads of the same core,
    /// and a refusal must not close the channel such a load opened.
    fn refuse(&self, dk: DiscoveryKey, why: &str) {
        let remote = self.protocol.remote_key();
        if self.protocol.refuse(dk) {
            tracing::debug!(%dk, %remote, "refusing a core: {why}");
        } else {
            tracing::debug!(%dk, %remote, "not refusing a core ({why}): it was attached here since");
        }
    }

    /// Runs `core` over this connection, unless it already runs here or its peer was
    /// dropped for misbehaving. Called with the core's slot locked, so it never races
    /// with unloading the core.
    pub fn attach(self: &Arc<Self>, store: &Corestore, core: &hypercore_replication::Replicator) {
        let key = core.feed().key();
        let remote = self.protocol.remote_key();
        if core.feed().is_closed() || store.is_banned(&remote, &key.discovery_key()) {
            return;
        }
        match self.protocol.open(key) {
            Ok(channel) => {
                tracing::debug!(%key, dk = %key.discovery_key(), %remote, "attaching a core to a connection");
                let (done_tx, done_rx) = oneshot::channel();
                let attachment = self
                    .next_attachment
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                lock(&self.attached).insert(key.discovery_key(), (attachment, done_rx));
                let task = core.attach(channel, self.live);
                let store = store.clone();
                let stream = Arc::downgrade(self);
                let started = tokio::time::Instant::now();
                let mut peers = self.peers();
                peers.spawn(async move {
                    let result = task.await.unwrap_or_else(|e| {
                        Err(hypercore_replication::Error::Protocol(
                            hypercore_protocol::Error::Closed(format!(
                                "the peer task failed: {e}"
                            )),
                        ))
                    });
                    if let Err(error) = &result {
                        // Its channel is closed; the other cores here go on.
                        tracing::info!(%key, remote = %remote, %error, "stopped replicating a core with a peer");
                        store.ban(remote, key.discovery_key());
                    }
                    // The channel is gone: a later close must not touch a new one. Still
                    // attached means our side did not close it (`detach`).
                    let mut ours = false;
                    if let Some(stream) = stream.upgrade() {
                        let mut attached = lock(&stream.attached);
                        if attached
                            .get(&key.discovery_key())
                            .is_some_and(|(a, _)| *a == attachment)
                        {
                            attached.remove(&key.discovery_key());
                            ours = true;
                        }
                    }
                    drop(done_tx);
                    if ours && matches!(result, Ok(PeerEnd::ClosedEarly)) {
                        if let Some(stream) = stream.upgrade() {
                            stream.reopen_later(store, key.discovery_key(), started.elapsed()).await;
                        }
                    }
                    (key, result)
                });
                // Reap finished peers so a long connection does not collect them.
                while peers.try_join_next().is_some() {}
            }
            Err(hypercore_protocol::Error::AlreadyOpen(_)) => {}
            Err(e) => {
                tracing::debug!(%key, remote = %remote, error = %e, "not replicating core on this connection")
            }
        }
    }
}

impl Stream {
    /// The remote closed the channel of core `dk` while it had blocks we want: waits, then opens
    /// the channel again, unless the connection ends first. The wait doubles with each
    /// early close in a row, so a remote that keeps closing is asked rarely.
    async fn reopen_later(self: Arc<Self>, store: Corestore, dk: DiscoveryKey, lasted: Duration) {
        let delay = {
            let mut reopens = lock(&self.reopens);
            let count = reopens.entry(dk).or_insert(0);
            if lasted >= REOPEN_RESET {
                *count = 0;
            }
            let delay = REOPEN_DELAY
                .saturating_mul(1 << (*count).min(6))
                .min(MAX_REOPEN_DELAY);
            *count += 1;
            delay
        };
        tracing::debug!(%dk, remote = %self.protocol.remote_key(), ?delay, "the remote closed a core we want; asking again later");
        let protocol = self.protocol.clone();
        let stream = Arc::downgrade(&self);
        drop(self);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = protocol.closed() => return,
        }
        if let Some(stream) = stream.upgrade() {
            // Whatever core the store has open now (none if it was closed or removed
            // here meanwhile: opening it again attaches it everywhere anyway).
            store.attach_open(&stream, dk).await;
        }
    }
}

impl Corestore {
    /// Replicates over this connection every open core and every core opened while it is
    /// open. When the remote opens a channel for a core not running here, the core is
    /// opened from the store (cache or disk) and attached; if the store does not have it,
    /// the channel is refused with a `Close` (JS behaviour, spec §5). A core whose peer
    /// fails (bad data, a flood, a stall) loses its channel; the others go on. Returns
    /// when the connection ends: an error if it failed.
    ///
    /// `protocol` and `events` come from [`Protocol::connect`]; `live` is the replication
    /// mode of every core on it (normally the connection's own `live` option). Dropping
    /// this future stops adding cores to the connection but does not end it: destroy the
    /// protocol for that.
    pub async fn replicate(
        &self,
        protocol: Protocol,
        mut events: Events,
        live: bool,
    ) -> Result<(), Error> {
        let stream = Arc::new(Stream {
            protocol: protocol.clone(),
            live,
            peers: Mutex::new(JoinSet::new()),
            attached: Mutex::new(HashMap::new()),
            next_attachment: std::sync::atomic::AtomicU64::new(0),
            reopens: Mutex::new(HashMap::new()),
        });
        let Some((id, cores)) = self.register_stream(stream.clone()) else {
            protocol.destroy("the corestore is closed");
            return Err(self.closed_error());
        };
        // Forgets the stream however this returns, also if the future is dropped.
        let registration = Registration {
            store: self.clone(),
            id,
        };
        for dk in cores {
            self.attach_open(&stream, dk).await;
        }
        let mut requests = JoinSet::new();
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(hypercore_protocol::Event::DiscoveryKey(dk)) => {
                        let store = self.clone();
                        let stream = stream.clone();
                        requests.spawn(async move { store.on_remote_open(&stream, dk).await });
                    }
                    None => break,
                },
                Some(_) = requests.join_next(), if !requests.is_empty() => {}
                _ = protocol.closed() => break,
            }
        }
        requests.abort_all();
        drop(registration);
        let store_closed = self.is_closed();
        let outcome = protocol.closed().await;
        tracing::debug!(remote = %protocol.remote_key(), ?outcome, "replication connection ended");
        // Every peer ends with the connection.
        let mut peers = std::mem::take(&mut *stream.peers());
        while peers.join_next().await.is_some() {}
        match outcome {
            Outcome::Failed(_) if store_closed => Ok(()),
            Outcome::Failed(source) => Err(Error::Connection {
                remote: protocol.remote_key(),
                source,
            }),
            Outcome::Finished => Ok(()),
        }
    }

    /// The remote opened a channel for `dk`, which does not run on this connection yet.
    async fn on_remote_open(&self, stream: &Arc<Stream>, dk: DiscoveryKey) {
        let remote = stream.protocol.remote_key();
        tracing::debug!(%dk, %remote, "the remote opened a channel");
        if self.is_banned(&remote, &dk) {
            return stream.refuse(dk, "its peer on this remote misbehaved");
        }
        // A core opened for this may be closed for room before it is attached (other
        // peers asking for other cores): open it again, a few times.
        for _ in 0..3 {
            match self.get_by_discovery_key(&dk).await {
                // Opening it attached it to every connection already; if it was open
                // before (or was created locally just now), attach it here. The handle is
                // dropped afterwards: the core stays open while the peer replicates it,
                // and may be closed for room like any unused core.
                Ok(Some(_core)) => {
                    if self.attach_open(stream, dk).await {
                        return;
                    }
                }
                // Found nothing: the core may be loaded here before the refusal goes out,
                // which then leaves it be (`Stream::refuse`).
                Ok(None) => return stream.refuse(dk, "the store does not have it"),
                Err(error) => {
                    tracing::warn!(%dk, %remote, %error, "cannot open the core a peer asked for; refusing it");
                    return stream.refuse(dk, "it cannot be opened");
                }
            }
        }
        stream.refuse(dk, "it was closed for room as often as it was opened")
    }
}

/// Removes a replication stream from the store when dropped.
struct Registration {
    store: Corestore,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.store.unregister_stream(self.id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use hypercore_protocol::Event;
    use hyperd_testkit::{protocol_options, protocol_pair};

    use crate::{Corestore, CorestoreOptions};

    const LIMIT: Duration = Duration::from_secs(10);

    /// The remote opens a core B does not have; B looks it up and finds nothing, then
    /// loads the core itself (attaching it to the connection), then sends the refusal it
    /// decided on: the order in which a store refused its own fresh channel, leaving the
    /// clone without a peer for good. Here the steps of `on_remote_open` run in that order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_decided_before_a_local_load_spares_its_channel() {
        let tmp = tempfile::tempdir().unwrap();
        let options = CorestoreOptions::default();
        let a = Corestore::open(tmp.path().join("a"), options.clone())
            .await
            .unwrap();
        let b = Corestore::open(tmp.path().join("b"), options)
            .await
            .unwrap();
        let source = a.get_named(b"source").await.unwrap();
        source.feed().append_batch(["0", "1"]).await.unwrap();
        let key = source.feed().key();
        let dk = key.discovery_key();

        let (io_a, io_b) = tokio::io::duplex(64 * 1024);
        let ((pa, ea), (pb, mut eb)) = protocol_pair(
            io_a,
            protocol_options(true, true),
            io_b,
            protocol_options(false, true),
        )
        .await
        .unwrap();
        tokio::spawn({
            let (a, pa) = (a.clone(), pa.clone());
            async move { a.replicate(pa, ea, true).await }
        });
        // B's store hears of no remote open by itself: the test takes its steps.
        let (_b_events, b_events) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn({
            let b = b.clone();
            async move { b.replicate(pb, b_events, true).await }
        });
        // A's Open has reached B.
        let event = tokio::time::timeout(LIMIT, eb.recv()).await.unwrap();
        assert_eq!(event, Some(Event::DiscoveryKey(dk)));
        let stream = tokio::time::timeout(LIMIT, async {
            loop {
                if let Some(stream) = b.state().streams.values().next().cloned() {
                    return stream;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();

        // The look-up finds nothing; a load comes before the refusal goes out.
        assert!(b.get_by_discovery_key(&dk).await.unwrap().is_none());
        let clone = b.get_by_key(key).await.unwrap();
        stream.refuse(dk, "the store does not have it");

        // The clone still replicates with A.
        tokio::time::timeout(LIMIT, clone.feed().update(Some(2), None))
            .await
            .unwrap_or_else(|_| panic!("the clone of {key} never learned A's length"))
            .unwrap();
        assert_eq!(&clone.feed().get(1).await.unwrap()[..], b"1");
        assert!(pa.outcome().is_none());
        a.close().await.unwrap();
        b.close().await.unwrap();
    }
}
