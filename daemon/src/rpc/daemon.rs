//! The `Daemon` service: status and stop.

use hyperd_proto::v1::{daemon_server, StatusRequest, StatusResponse, StopRequest, StopResponse};
use tonic::{Request, Response, Status};

use super::status;
use crate::daemon::Daemon;

pub struct DaemonService {
    daemon: Daemon,
}

impl DaemonService {
    pub fn new(daemon: Daemon) -> Self {
        DaemonService { daemon }
    }
}

#[tonic::async_trait]
impl daemon_server::Daemon for DaemonService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = self.daemon.status().await.map_err(status)?;
        Ok(Response::new(StatusResponse {
            version: s.version.to_string(),
            api_version: hyperd_proto::API_VERSION.to_string(),
            protocol_version: s.protocol_version.to_string(),
            uptime_ms: s.uptime.as_millis() as u64,
            pid: s.pid,
            home: s.home.display().to_string(),
            storage: s.storage.display().to_string(),
            listen_address: s.listen_address.map(|a| a.to_string()).unwrap_or_default(),
            peer_key: s.peer_key.to_hex(),
            peer_count: s.peers as u32,
            core_count: s.cores as u32,
            open_core_count: s.open_cores as u32,
            file_limit: s.file_limit,
            max_open_cores: s.max_open_cores as u32,
            dht_address: s.dht_address.map(|a| a.to_string()).unwrap_or_default(),
            dht_bootstrap: s.dht_bootstrap.iter().map(ToString::to_string).collect(),
            swarm_topics: s.swarm_topics as u32,
            mdns: s.mdns,
            public_address: s.public_address.map(|a| a.to_string()).unwrap_or_default(),
        }))
    }

    /// Stops the daemon. The reply still goes out: the API servers stop gracefully,
    /// finishing the calls under way (this one among them) before they close.
    async fn stop(&self, _: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
        tracing::info!("stop requested over the API");
        self.daemon.request_stop();
        Ok(Response::new(StopResponse {}))
    }
}
