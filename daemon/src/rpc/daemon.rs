//! The `Daemon` service: status and stop.

use hyperd_proto::v1::{daemon_server, StatusRequest, StatusResponse, StopRequest, StopResponse};
use tonic::{Request, Response, Status};

use super::status;
use crate::daemon::Daemon;
use crate::error::DaemonError;

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
        let daemon = &self.daemon;
        let store = daemon.store();
        let core_count = store
            .count()
            .await
            .map_err(|e| status(DaemonError::store(e)))?;
        Ok(Response::new(StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: hyperd_proto::API_VERSION.to_string(),
            protocol_version: "hypercore-protocol/8".to_string(),
            uptime_ms: daemon.uptime().as_millis() as u64,
            pid: std::process::id(),
            home: daemon.home().root().display().to_string(),
            storage: daemon.storage().display().to_string(),
            listen_address: daemon
                .network()
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            peer_key: daemon.network().peer_key().to_hex(),
            peer_count: daemon.network().peers().len() as u32,
            core_count: core_count as u32,
            open_core_count: store.open_count() as u32,
            file_limit: daemon.file_limit(),
            max_open_cores: store.options().max_open as u32,
        }))
    }

    async fn stop(&self, _: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
        tracing::info!("stop requested over the API");
        let daemon = self.daemon.clone();
        // Signal after the reply has gone out.
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            daemon.request_stop();
        });
        Ok(Response::new(StopResponse {}))
    }
}
