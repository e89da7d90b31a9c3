//! The `Cores` service: create, follow, read, write, download and remove hypercores.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hypercore::{GetOptions, PublicKey, ReadStreamOptions};
use hypercore_replication::{DownloadRange, Replicator};
use hyperd_proto::v1::{
    core_event, cores_server, AppendRequest, AppendResponse, AppendStreamRequest, AuditRequest,
    AuditResponse, ClearRequest, ClearResponse, CoreEvent, CoreInfo, CreateRequest,
    DownloadProgress, DownloadRequest, FollowRequest, GetRequest, GetResponse, InfoRequest,
    ListRequest, ListResponse, ReadRequest, ReadResponse, RemoveRequest, RemoveResponse,
    WatchRequest,
};
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status, Streaming};

use super::{async_stream, feed_status, parse_key, store_status};
use crate::node::Node;

/// Longest corestore name accepted.
const MAX_NAME: usize = 256;
/// Most bytes appended in one signed batch by `AppendStream`.
const APPEND_BATCH: usize = 4 << 20;
/// How often a download reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

pub struct CoresService {
    node: Arc<Node>,
}

impl CoresService {
    pub fn new(node: Arc<Node>) -> Self {
        CoresService { node }
    }

    /// A core this daemon has, by the key in a request.
    fn core(&self, key: &str) -> Result<(PublicKey, Replicator), Status> {
        let key = parse_key("key", key)?;
        match self.node.store.get_loaded(&key) {
            Some(core) => Ok((key, core)),
            None => Err(Status::not_found(format!(
                "no core {} in this daemon: create it, or follow it to replicate it",
                key.to_hex()
            ))),
        }
    }

    fn info(&self, core: &Replicator) -> CoreInfo {
        let feed = core.feed();
        let key = feed.key();
        let stats = core.stats();
        let name = self
            .node
            .name_of(&key)
            .and_then(|name| String::from_utf8(name).ok())
            .unwrap_or_default();
        CoreInfo {
            key: key.to_hex(),
            discovery_key: hex::encode(feed.discovery_key().0),
            length: feed.len(),
            byte_length: feed.byte_len(),
            downloaded_blocks: feed.downloaded(0, None),
            peers: stats.peers.len() as u32,
            writable: feed.writable(),
            name,
            uploaded_bytes: stats.totals.uploaded_bytes,
            downloaded_bytes: stats.totals.downloaded_bytes,
        }
    }
}

fn writable(key: &PublicKey, core: &Replicator) -> Result<(), Status> {
    if core.feed().writable() {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "core {} is not writable here: this daemon follows it but has no secret key",
            key.to_hex()
        )))
    }
}

/// The exclusive end of a range: `end` if given (checked against `start`), else `default`.
fn range_end(start: u64, end: Option<u64>, default: u64) -> Result<u64, Status> {
    let end = end.unwrap_or(default.max(start));
    if end < start {
        return Err(Status::invalid_argument(format!(
            "end {end} is before start {start}"
        )));
    }
    Ok(end)
}

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl cores_server::Cores for CoresService {
    async fn create(&self, request: Request<CreateRequest>) -> Result<Response<CoreInfo>, Status> {
        let name = request.into_inner().name;
        if name.len() > MAX_NAME {
            return Err(Status::invalid_argument(format!(
                "name is {} bytes; names must be at most {MAX_NAME}",
                name.len()
            )));
        }
        // A core without a name gets 32 random bytes as its name, as in corestore, so
        // its key can be re-derived from the master key after a restart. (Not UTF-8, so
        // it is not shown as a name.)
        let name = if name.is_empty() {
            rand::random::<[u8; 32]>().to_vec()
        } else {
            name.into_bytes()
        };
        let core = self
            .node
            .store
            .get_named(&name)
            .await
            .map_err(store_status)?;
        self.node.set_name(core.feed().key(), name);
        tracing::info!("created core {}", core.feed().key().to_hex());
        Ok(Response::new(self.info(&core)))
    }

    async fn follow(&self, request: Request<FollowRequest>) -> Result<Response<CoreInfo>, Status> {
        let request = request.into_inner();
        let key = parse_key("key", &request.key)?;
        let core = self
            .node
            .store
            .get_by_key(key)
            .await
            .map_err(store_status)?;
        let download_all = request.download_all;
        self.node
            .update_state(|s| {
                s.follows
                    .insert(key.to_hex(), crate::state::Follow { download_all });
            })
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        if download_all {
            self.node.download_all(&core);
        } else {
            self.node.stop_download_all(&key);
        }
        tracing::info!("following core {}", key.to_hex());
        Ok(Response::new(self.info(&core)))
    }

    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<CoreInfo>, Status> {
        let (_, core) = self.core(&request.into_inner().key)?;
        Ok(Response::new(self.info(&core)))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let mut cores: Vec<CoreInfo> = self
            .node
            .store
            .loaded()
            .iter()
            .map(|c| self.info(c))
            .collect();
        cores.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Response::new(ListResponse { cores }))
    }

    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let request = request.into_inner();
        let (key, core) = self.core(&request.key)?;
        writable(&key, &core)?;
        if request.blocks.is_empty() {
            return Err(Status::invalid_argument(
                "blocks is empty: nothing to append",
            ));
        }
        let feed = core.feed();
        let appended = request.blocks.len() as u64;
        let blocks = request.blocks;
        let length = feed
            .append_batch(blocks)
            .await
            .map_err(|e| feed_status(&key, e))?;
        Ok(Response::new(AppendResponse {
            first_index: length - appended,
            appended,
            length,
            byte_length: feed.byte_len(),
        }))
    }

    async fn append_stream(
        &self,
        request: Request<Streaming<AppendStreamRequest>>,
    ) -> Result<Response<AppendResponse>, Status> {
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument(
                "empty stream: the first message must name the core",
            ));
        };
        let (key, core) = self.core(&first.key)?;
        writable(&key, &core)?;
        let feed = core.feed();
        // Receive (and decode) the next messages while the current batch is hashed and
        // written; batches of whatever has arrived, up to APPEND_BATCH bytes.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(8);
        let receiver = tokio::spawn(async move {
            if !first.blocks.is_empty() && tx.send(first.blocks).await.is_err() {
                return Ok(());
            }
            while let Some(message) = stream.message().await? {
                if !message.blocks.is_empty() && tx.send(message.blocks).await.is_err() {
                    break;
                }
            }
            Ok::<(), Status>(())
        });
        let mut first_index = None;
        let mut appended = 0u64;
        while let Some(blocks) = rx.recv().await {
            let mut batch = blocks;
            let mut bytes: usize = batch.iter().map(Bytes::len).sum();
            while bytes < APPEND_BATCH {
                match rx.try_recv() {
                    Ok(more) => {
                        bytes += more.iter().map(Bytes::len).sum::<usize>();
                        batch.extend(more);
                    }
                    Err(_) => break,
                }
            }
            let count = batch.len() as u64;
            let length = feed
                .append_batch(batch)
                .await
                .map_err(|e| feed_status(&key, e))?;
            first_index.get_or_insert(length - count);
            appended += count;
        }
        // A client that goes away mid-stream keeps what was appended so far; the error
        // only ends the call.
        match receiver.await {
            Ok(result) => result?,
            Err(e) => return Err(Status::internal(format!("append stream receiver: {e}"))),
        }
        let length = feed.len();
        Ok(Response::new(AppendResponse {
            first_index: first_index.unwrap_or(length),
            appended,
            length,
            byte_length: feed.byte_len(),
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let request = request.into_inner();
        let (key, core) = self.core(&request.key)?;
        let feed = core.feed();
        let options = if request.timeout_ms == 0 {
            if request.index >= feed.len() {
                return Err(Status::out_of_range(format!(
                    "core {} has {} blocks; there is no block {}",
                    key.to_hex(),
                    feed.len(),
                    request.index
                )));
            }
            GetOptions::no_wait()
        } else {
            GetOptions::timeout(Duration::from_millis(request.timeout_ms))
        };
        let data = feed
            .get_with(request.index, options)
            .await
            .map_err(|e| feed_status(&key, e))?;
        Ok(Response::new(GetResponse { data }))
    }

    type ReadStream = Stream<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let request = request.into_inner();
        let (key, core) = self.core(&request.key)?;
        let feed = core.feed().clone();
        let end = match request.end {
            Some(end) => Some(range_end(request.start, Some(end), 0)?),
            None => None,
        };
        let options = ReadStreamOptions {
            start: request.start,
            end,
            snapshot: !request.live,
            live: request.live && end.is_none(),
            wait: request.wait || request.live,
            ..ReadStreamOptions::default()
        };
        let stream = async_stream(&self.node, move |tx| async move {
            let blocks = feed.read_stream(options);
            futures::pin_mut!(blocks);
            let mut index = request.start;
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = blocks.next() => next,
                };
                let item = match next {
                    None => return,
                    Some(Ok(data)) => Ok(ReadResponse { index, data }),
                    Some(Err(e)) => Err(feed_status(&key, e)),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
                index += 1;
            }
        });
        Ok(Response::new(stream))
    }

    type DownloadStream = Stream<DownloadProgress>;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let request = request.into_inner();
        let (_, core) = self.core(&request.key)?;
        // Open-ended: up to the longest length known now, ours or a peer's, so the
        // download has an end to report.
        let known = core
            .stats()
            .peers
            .iter()
            .map(|p| p.remote_length)
            .max()
            .unwrap_or(0)
            .max(core.feed().len());
        let end = range_end(request.start, request.end, known)?;
        let range = DownloadRange {
            start: request.start,
            end: Some(end),
            linear: request.linear,
            priority: 1,
        };
        let stream = async_stream(&self.node, move |tx| async move {
            let feed = core.feed().clone();
            let before = core.stats().totals.downloaded_bytes;
            let progress = |done: bool| {
                let end = range.end.unwrap_or(range.start);
                DownloadProgress {
                    downloaded: feed.downloaded(range.start, Some(end)),
                    total: end - range.start,
                    bytes: core.stats().totals.downloaded_bytes.saturating_sub(before),
                    done,
                }
            };
            // Dropping the download (when the client goes away) cancels it.
            let download = core.download(range);
            futures::pin_mut!(download);
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    result = &mut download => {
                        let item = match result {
                            Ok(()) => Ok(progress(true)),
                            Err(e) => Err(Status::aborted(format!("download stopped: {e}"))),
                        };
                        let _ = tx.send(item).await;
                        return;
                    }
                    _ = tick.tick() => {
                        if tx.send(Ok(progress(false))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn clear(
        &self,
        request: Request<ClearRequest>,
    ) -> Result<Response<ClearResponse>, Status> {
        let request = request.into_inner();
        let (key, core) = self.core(&request.key)?;
        let feed = core.feed();
        let end = range_end(request.start, request.end, feed.len())?;
        feed.clear(request.start, end)
            .await
            .map_err(|e| feed_status(&key, e))?;
        Ok(Response::new(ClearResponse {}))
    }

    async fn audit(
        &self,
        request: Request<AuditRequest>,
    ) -> Result<Response<AuditResponse>, Status> {
        let (key, core) = self.core(&request.into_inner().key)?;
        let report = core
            .feed()
            .audit()
            .await
            .map_err(|e| feed_status(&key, e))?;
        Ok(Response::new(AuditResponse {
            valid: report.valid,
            invalid: report.invalid,
        }))
    }

    type WatchStream = Stream<CoreEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (_, core) = self.core(&request.into_inner().key)?;
        let stream = async_stream(&self.node, move |tx| async move {
            let mut events = core.feed().events();
            let mut peers: BTreeSet<String> = BTreeSet::new();
            let mut poll = tokio::time::interval(Duration::from_millis(500));
            loop {
                let mut out = Vec::new();
                tokio::select! {
                    _ = tx.closed() => return,
                    event = events.recv() => match event {
                        Ok(event) => match feed_event(event) {
                            Some(event) => out.push(event),
                            None => continue,
                        },
                        Err(RecvError::Lagged(_)) => continue,
                        // The core was closed or removed.
                        Err(RecvError::Closed) => return,
                    },
                    // Peers come and go on connections, not as feed events: compare.
                    _ = poll.tick() => {
                        let now: BTreeSet<String> =
                            core.stats().peers.iter().map(|p| p.remote_key.to_hex()).collect();
                        for added in now.difference(&peers) {
                            out.push(core_event::Event::PeerAdded(core_event::PeerAdded { remote_key: added.clone() }));
                        }
                        for removed in peers.difference(&now) {
                            out.push(core_event::Event::PeerRemoved(core_event::PeerRemoved { remote_key: removed.clone() }));
                        }
                        peers = now;
                    }
                }
                for event in out {
                    if tx.send(Ok(CoreEvent { event: Some(event) })).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        let (key, _) = self.core(&request.into_inner().key)?;
        self.node.stop_download_all(&key);
        self.node
            .update_state(|s| {
                s.follows.remove(&key.to_hex());
            })
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        self.node.store.remove(&key).await.map_err(store_status)?;
        tracing::info!("removed core {}", key.to_hex());
        Ok(Response::new(RemoveResponse {}))
    }
}

fn feed_event(event: hypercore::Event) -> Option<core_event::Event> {
    use hypercore::Event as E;
    Some(match event {
        E::Append {
            length,
            byte_length,
        } => core_event::Event::Appended(core_event::Appended {
            length,
            byte_length,
        }),
        E::Download { index, bytes, .. } => {
            core_event::Event::Downloaded(core_event::Downloaded { index, bytes })
        }
        E::Upload { index, bytes } => {
            core_event::Event::Uploaded(core_event::Uploaded { index, bytes })
        }
        E::Clear { start, end } => core_event::Event::Cleared(core_event::Cleared { start, end }),
        E::Sync | E::Close => return None,
    })
}
