//! The `Daemon` service: status and stop.

use std::sync::Arc;
use std::time::Duration;

use hyperd_proto::v1::{daemon_server, StatusRequest, StatusResponse, StopRequest, StopResponse};
use tonic::{Request, Response, Status};

use crate::node::Node;

pub struct DaemonService {
    node: Arc<Node>,
}

impl DaemonService {
    pub fn new(node: Arc<Node>) -> Self {
        DaemonService { node }
    }
}

#[tonic::async_trait]
impl daemon_server::Daemon for DaemonService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let node = &self.node;
        Ok(Response::new(StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: hyperd_proto::API_VERSION.to_string(),
            protocol_version: "hypercore-protocol/8".to_string(),
            uptime_ms: node.started.elapsed().as_millis() as u64,
            pid: std::process::id(),
            home: node.home.root().display().to_string(),
            storage: node.storage.display().to_string(),
            listen_address: node
                .network
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            peer_key: node.network.peer_key().to_hex(),
            peer_count: node.network.peers().len() as u32,
            core_count: node.store.loaded().len() as u32,
        }))
    }

    async fn stop(&self, _: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
        tracing::info!("stop requested over the API");
        let shutdown = self.node.shutdown.clone();
        // Signal after the reply has gone out.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = shutdown.send(true);
        });
        Ok(Response::new(StopResponse {}))
    }
}
