//! The `Peers` service: converts between the proto messages and the daemon's peer
//! operations (`crate::peers`).

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use hyperd_proto::v1::{
    peer_event, peers_server, DialRequest, DisconnectRequest, DisconnectResponse, ListPeersRequest,
    ListPeersResponse, PeerEvent, PeerInfo, WatchPeersRequest,
};
use tonic::{Request, Response, Status};

use super::{server_stream, status};
use crate::daemon::Daemon;
use crate::peers::{self, PeerSnapshot};

pub struct PeersService {
    daemon: Daemon,
}

impl PeersService {
    pub fn new(daemon: Daemon) -> Self {
        PeersService { daemon }
    }
}

fn info(peer: &PeerSnapshot, cores: Vec<String>) -> PeerInfo {
    PeerInfo {
        address: peer.address.to_string(),
        remote_key: peer.remote_key.to_hex(),
        initiator: peer.initiator,
        found_by: peer.origin.as_str().to_string(),
        transport: peer.transport.as_str().to_string(),
        cores,
        bytes_up: peer.bytes_up,
        bytes_down: peer.bytes_down,
        connected_ms: peer.connected.as_millis() as u64,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<PeerEvent, Status>> + Send>>;

#[tonic::async_trait]
impl peers_server::Peers for PeersService {
    async fn dial(&self, request: Request<DialRequest>) -> Result<Response<PeerInfo>, Status> {
        let request = request.into_inner();
        let timeout = (request.timeout_ms > 0).then(|| Duration::from_millis(request.timeout_ms));
        let snapshot = self
            .daemon
            .dial(&request.address, timeout, request.once)
            .await
            .map_err(status)?;
        Ok(Response::new(info(&snapshot, Vec::new())))
    }

    async fn list(
        &self,
        _: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        let (peers, remembered) = self.daemon.peers();
        let peers = peers
            .iter()
            .map(|p| {
                let cores = p.cores.iter().map(|k| k.to_hex()).collect();
                info(&p.connection, cores)
            })
            .collect();
        Ok(Response::new(ListPeersResponse { peers, remembered }))
    }

    async fn disconnect(
        &self,
        request: Request<DisconnectRequest>,
    ) -> Result<Response<DisconnectResponse>, Status> {
        let done = self
            .daemon
            .disconnect(&request.into_inner().peer)
            .await
            .map_err(status)?;
        Ok(Response::new(DisconnectResponse {
            closed: done.closed as u32,
            forgotten: done.forgotten,
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        _: Request<WatchPeersRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let events = self.daemon.watch_peers();
        Ok(Response::new(server_stream(events, |event| {
            let event = match event {
                peers::PeerEvent::Joined(p) => peer_event::Event::Joined(info(&p, Vec::new())),
                peers::PeerEvent::Left(p, reason) => peer_event::Event::Left(peer_event::Left {
                    peer: Some(info(&p, Vec::new())),
                    reason,
                }),
            };
            PeerEvent { event: Some(event) }
        })))
    }
}
