//! The `Peers` service: dial, list, disconnect, watch.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use hypercore_protocol::PeerKey;
use hyperd_proto::v1::{
    peer_event, peers_server, DialRequest, DisconnectRequest, DisconnectResponse, ListPeersRequest,
    ListPeersResponse, PeerEvent, PeerInfo, WatchPeersRequest,
};
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use super::async_stream;
use crate::network::{self, DialError, PeerSnapshot, DIAL_TIMEOUT};
use crate::node::Node;

pub struct PeersService {
    node: Arc<Node>,
}

impl PeersService {
    pub fn new(node: Arc<Node>) -> Self {
        PeersService { node }
    }

    /// Which loaded cores replicate with which peer.
    fn shared_cores(&self) -> HashMap<PeerKey, Vec<String>> {
        let mut shared: HashMap<PeerKey, Vec<String>> = HashMap::new();
        for core in self.node.store.loaded() {
            let key = core.feed().key().to_hex();
            for peer in core.stats().peers {
                shared.entry(peer.remote_key).or_default().push(key.clone());
            }
        }
        for cores in shared.values_mut() {
            cores.sort();
        }
        shared
    }
}

fn info(peer: &PeerSnapshot, cores: Vec<String>) -> PeerInfo {
    PeerInfo {
        address: peer.address.to_string(),
        remote_key: peer.remote_key.to_hex(),
        initiator: peer.initiator,
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
        let address = request.address.trim().to_string();
        if address.is_empty() {
            return Err(Status::invalid_argument("address is required (HOST:PORT)"));
        }
        let timeout = match request.timeout_ms {
            0 => DIAL_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let (snapshot, protocol) =
            self.node
                .network
                .dial(&address, timeout)
                .await
                .map_err(|e| match e {
                    DialError::BadAddress { .. } => Status::invalid_argument(e.to_string()),
                    DialError::SelfConnection { .. } => Status::failed_precondition(e.to_string()),
                    DialError::Failed { .. } => Status::unavailable(e.to_string()),
                    DialError::TooManyPeers { .. } => Status::resource_exhausted(e.to_string()),
                })?;
        if !request.once {
            self.node
                .update_state(|s| {
                    s.peers.insert(address.clone());
                })
                .map_err(|e| Status::internal(format!("{e:#}")))?;
            self.node.network.remember(address, Some(protocol));
        }
        Ok(Response::new(info(&snapshot, Vec::new())))
    }

    async fn list(
        &self,
        _: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        let mut shared = self.shared_cores();
        let peers = self
            .node
            .network
            .peers()
            .iter()
            .map(|p| info(p, shared.remove(&p.remote_key).unwrap_or_default()))
            .collect();
        let remembered = self.node.state.get().peers.into_iter().collect();
        Ok(Response::new(ListPeersResponse { peers, remembered }))
    }

    async fn disconnect(
        &self,
        request: Request<DisconnectRequest>,
    ) -> Result<Response<DisconnectResponse>, Status> {
        let peer = request.into_inner().peer.trim().to_string();
        if peer.is_empty() {
            return Err(Status::invalid_argument(
                "peer is required (an address or a remote key)",
            ));
        }
        let remembered = self.node.state.get().peers.contains(&peer);
        if remembered {
            self.node
                .update_state(|s| {
                    s.peers.remove(&peer);
                })
                .map_err(|e| Status::internal(format!("{e:#}")))?;
        }
        self.node.network.forget(&peer);
        let closed = self.node.network.disconnect(&peer).await;
        if closed == 0 && !remembered {
            return Err(Status::not_found(format!(
                "no connected or remembered peer {:?}",
                super::truncate(&peer)
            )));
        }
        Ok(Response::new(DisconnectResponse {
            closed: closed as u32,
            forgotten: remembered,
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        _: Request<WatchPeersRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut events = self.node.network.subscribe();
        let stream = async_stream(&self.node, move |tx| async move {
            loop {
                let received = tokio::select! {
                    _ = tx.closed() => return,
                    received = events.recv() => received,
                };
                let event = match received {
                    Ok(network::PeerEvent::Joined(p)) => {
                        peer_event::Event::Joined(info(&p, Vec::new()))
                    }
                    Ok(network::PeerEvent::Left(p, reason)) => {
                        peer_event::Event::Left(peer_event::Left {
                            peer: Some(info(&p, Vec::new())),
                            reason,
                        })
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!("a peer watcher missed {n} events");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if tx.send(Ok(PeerEvent { event: Some(event) })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }
}
