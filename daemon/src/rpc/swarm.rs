//! The `Swarm` service: converts the daemon's swarm status (`crate::swarm`) to proto.

use hyperd_proto::v1::{swarm_server, SwarmStatusRequest, SwarmStatusResponse, SwarmTopic};
use tonic::{Request, Response, Status};

use crate::daemon::Daemon;

pub struct SwarmService {
    daemon: Daemon,
}

impl SwarmService {
    pub fn new(daemon: Daemon) -> Self {
        SwarmService { daemon }
    }
}

#[tonic::async_trait]
impl swarm_server::Swarm for SwarmService {
    async fn status(
        &self,
        _: Request<SwarmStatusRequest>,
    ) -> Result<Response<SwarmStatusResponse>, Status> {
        let s = self.daemon.swarm_status();
        Ok(Response::new(SwarmStatusResponse {
            dht_address: s.dht_address.map(|a| a.to_string()).unwrap_or_default(),
            bootstrap: s.bootstrap.iter().map(ToString::to_string).collect(),
            topics: s
                .topics
                .into_iter()
                .map(|(key, walks)| SwarmTopic {
                    key: key.to_hex(),
                    discovery_key: hex::encode(key.discovery_key().0),
                    walks: walks.count,
                    peers_found: walks.peers_found as u32,
                    last_error: walks.last_error.unwrap_or_default(),
                })
                .collect(),
        }))
    }
}
