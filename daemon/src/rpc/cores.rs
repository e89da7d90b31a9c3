//! The `Cores` service: converts between the proto messages and the daemon's core
//! operations (`crate::cores`).

use std::time::Duration;

use futures::StreamExt;
use hyperd_proto::v1::{
    core_event, cores_server, AppendRequest, AppendResponse, AppendStreamRequest, AuditRequest,
    AuditResponse, ClearRequest, ClearResponse, CoreEvent, CoreInfo, CreateRequest,
    DownloadProgress, DownloadRequest, FollowRequest, GetRequest, GetResponse, InfoRequest,
    ListRequest, ListResponse, ReadRequest, ReadResponse, RemoveRequest, RemoveResponse,
    WatchRequest,
};
use tonic::{Request, Response, Status, Streaming};

use super::{error, parse_key, seeding, server_stream, status};
use crate::cores::{self, Appended, BlockRange};
use crate::daemon::Daemon;

pub struct CoresService {
    daemon: Daemon,
}

impl CoresService {
    pub fn new(daemon: Daemon) -> Self {
        CoresService { daemon }
    }
}

fn core_info(info: cores::CoreInfo) -> CoreInfo {
    CoreInfo {
        key: info.key.to_hex(),
        discovery_key: info.key.discovery_key().to_hex(),
        length: info.length,
        byte_length: info.byte_length,
        downloaded_blocks: info.downloaded,
        peers: info.peers,
        writable: info.writable,
        name: info.name.unwrap_or_default(),
        uploaded_bytes: info.uploaded_bytes,
        downloaded_bytes: info.downloaded_bytes,
        peer_length: info.peer_length,
    }
}

fn appended(a: Appended) -> AppendResponse {
    AppendResponse {
        first_index: a.first_index,
        appended: a.appended,
        length: a.length,
        byte_length: a.byte_length,
    }
}

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl cores_server::Cores for CoresService {
    async fn create(&self, request: Request<CreateRequest>) -> Result<Response<CoreInfo>, Status> {
        let request = request.into_inner();
        let info = self
            .daemon
            .create(&request.name, request.force, request.seeding.map(seeding))
            .await
            .map_err(status)?;
        Ok(Response::new(core_info(info)))
    }

    async fn follow(&self, request: Request<FollowRequest>) -> Result<Response<CoreInfo>, Status> {
        let request = request.into_inner();
        let key = parse_key("key", &request.key)?;
        let info = self
            .daemon
            .follow(key, request.download_all, request.seeding.map(seeding))
            .await
            .map_err(status)?;
        Ok(Response::new(core_info(info)))
    }

    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<CoreInfo>, Status> {
        let key = parse_key("key", &request.into_inner().key)?;
        let info = self.daemon.info(&key).await.map_err(status)?;
        Ok(Response::new(core_info(info)))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let cores = self.daemon.list().await.map_err(status)?;
        Ok(Response::new(ListResponse {
            cores: cores.into_iter().map(core_info).collect(),
        }))
    }

    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let request = request.into_inner();
        let key = parse_key("key", &request.key)?;
        let core = self.daemon.writable_core(&key).await.map_err(status)?;
        let result = self
            .daemon
            .append(&core, request.blocks)
            .await
            .map_err(status)?;
        Ok(Response::new(appended(result)))
    }

    type AppendStreamStream = Stream<AppendResponse>;

    async fn append_stream(
        &self,
        request: Request<Streaming<AppendStreamRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let mut incoming = request.into_inner();
        let Some(first) = incoming.message().await? else {
            return Err(Status::invalid_argument(
                "empty stream: the first message must name the core",
            ));
        };
        let key = parse_key("key", &first.key)?;
        let core = self.daemon.writable_core(&key).await.map_err(status)?;
        let blocks = futures::stream::once(async move { Ok(first.blocks) })
            .chain(incoming.map(|message| message.map(|m| m.blocks).map_err(error)))
            .boxed();
        let acks = self.daemon.append_stream(core, blocks);
        Ok(Response::new(server_stream(acks, appended)))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let request = request.into_inner();
        let key = parse_key("key", &request.key)?;
        let timeout = (request.timeout_ms > 0).then(|| Duration::from_millis(request.timeout_ms));
        let data = self
            .daemon
            .get(&key, request.index, timeout)
            .await
            .map_err(status)?;
        Ok(Response::new(GetResponse { data }))
    }

    type ReadStream = Stream<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let request = request.into_inner();
        let key = parse_key("key", &request.key)?;
        let range = BlockRange {
            start: request.start,
            end: request.end,
        };
        let blocks = self
            .daemon
            .read(&key, range, request.live, request.wait)
            .await
            .map_err(status)?;
        Ok(Response::new(server_stream(blocks, |(index, data)| {
            ReadResponse { index, data }
        })))
    }

    type DownloadStream = Stream<DownloadProgress>;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let request = request.into_inner();
        let key = parse_key("key", &request.key)?;
        let range = BlockRange {
            start: request.start,
            end: request.end,
        };
        let progress = self
            .daemon
            .download(&key, range, request.linear)
            .await
            .map_err(status)?;
        Ok(Response::new(server_stream(progress, |p| {
            DownloadProgress {
                downloaded: p.downloaded,
                total: p.total,
                bytes: p.bytes,
                done: p.done,
            }
        })))
    }

    async fn clear(
        &self,
        request: Request<ClearRequest>,
    ) -> Result<Response<ClearResponse>, Status> {
        let request = request.into_inner();
        let key = parse_key("key", &request.key)?;
        let range = BlockRange {
            start: request.start,
            end: request.end,
        };
        self.daemon.clear(&key, range).await.map_err(status)?;
        Ok(Response::new(ClearResponse {}))
    }

    async fn audit(
        &self,
        request: Request<AuditRequest>,
    ) -> Result<Response<AuditResponse>, Status> {
        let key = parse_key("key", &request.into_inner().key)?;
        let (valid, invalid) = self.daemon.audit(&key).await.map_err(status)?;
        Ok(Response::new(AuditResponse { valid, invalid }))
    }

    type WatchStream = Stream<CoreEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let key = parse_key("key", &request.into_inner().key)?;
        let events = self.daemon.watch(&key).await.map_err(status)?;
        Ok(Response::new(server_stream(events, |e| CoreEvent {
            event: Some(core_event(e)),
        })))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        let key = parse_key("key", &request.into_inner().key)?;
        self.daemon.remove(&key).await.map_err(status)?;
        Ok(Response::new(RemoveResponse {}))
    }
}

fn core_event(event: cores::CoreEvent) -> core_event::Event {
    use cores::CoreEvent as E;
    match event {
        E::Appended {
            length,
            byte_length,
        } => core_event::Event::Appended(core_event::Appended {
            length,
            byte_length,
        }),
        E::Downloaded { index, bytes } => {
            core_event::Event::Downloaded(core_event::Downloaded { index, bytes })
        }
        E::Uploaded { index, bytes } => {
            core_event::Event::Uploaded(core_event::Uploaded { index, bytes })
        }
        E::Cleared { start, end } => core_event::Event::Cleared(core_event::Cleared { start, end }),
        E::PeerAdded(key) => core_event::Event::PeerAdded(core_event::PeerAdded {
            remote_key: key.to_hex(),
        }),
        E::PeerRemoved(key) => core_event::Event::PeerRemoved(core_event::PeerRemoved {
            remote_key: key.to_hex(),
        }),
    }
}
