//! The `Swarm` service: converts requests to the daemon's seeding operations
//! (`crate::seeding`) and its swarm status (`crate::swarm`) to proto.

use hyperd_proto::v1::{
    swarm_server, SwarmJoinRequest, SwarmLeaveRequest, SwarmLeaveResponse, SwarmStatusRequest,
    SwarmStatusResponse, SwarmTopic,
};
use tonic::{Request, Response, Status};

use super::{parse_key, seeding, status};
use crate::daemon::Daemon;
use crate::state::Seeding;
use crate::swarm::TopicStatus;

pub struct SwarmService {
    daemon: Daemon,
}

impl SwarmService {
    pub fn new(daemon: Daemon) -> Self {
        SwarmService { daemon }
    }
}

fn topic(t: TopicStatus) -> SwarmTopic {
    SwarmTopic {
        key: t.key.to_hex(),
        discovery_key: t.key.discovery_key().to_hex(),
        walks: t.walks.count,
        peers_found: t.walks.found.len() as u32,
        last_error: t.walks.last_error.unwrap_or_default(),
        announce: t.seeding.announce,
        lookup: t.seeding.lookup,
        found: t.walks.found.iter().map(ToString::to_string).collect(),
        local_peers: t.local_peers.iter().map(ToString::to_string).collect(),
    }
}

#[tonic::async_trait]
impl swarm_server::Swarm for SwarmService {
    async fn status(
        &self,
        _: Request<SwarmStatusRequest>,
    ) -> Result<Response<SwarmStatusResponse>, Status> {
        let s = self.daemon.swarm_status().await;
        Ok(Response::new(SwarmStatusResponse {
            dht_address: s.dht_address.map(|a| a.to_string()).unwrap_or_default(),
            bootstrap: s.bootstrap.iter().map(ToString::to_string).collect(),
            mdns: s.mdns,
            public_address: s.public_address.map(|a| a.to_string()).unwrap_or_default(),
            holepunchable: s.public_address.is_some(),
            dht_mode: s
                .dht_mode
                .map(|(mode, _)| mode_name(mode))
                .unwrap_or_default()
                .into(),
            dht_persistent: s.dht_mode.is_some_and(|(_, persistent)| persistent),
            dht_nodes: u32::try_from(s.dht_nodes).unwrap_or(u32::MAX),
            topics: s.topics.into_iter().map(topic).collect(),
        }))
    }

    async fn join(
        &self,
        request: Request<SwarmJoinRequest>,
    ) -> Result<Response<SwarmTopic>, Status> {
        let request = request.into_inner();
        let key = parse_key("key", &request.key)?;
        let asked = request.seeding.map(seeding).unwrap_or(Seeding::SEED);
        self.daemon.seed(key, asked).await.map_err(status)?;
        Ok(Response::new(topic(self.daemon.topic(&key))))
    }

    async fn leave(
        &self,
        request: Request<SwarmLeaveRequest>,
    ) -> Result<Response<SwarmLeaveResponse>, Status> {
        let key = parse_key("key", &request.into_inner().key)?;
        self.daemon.seed(key, Seeding::OFF).await.map_err(status)?;
        Ok(Response::new(SwarmLeaveResponse {}))
    }
}

fn mode_name(mode: hyperswarm::Mode) -> &'static str {
    match mode {
        hyperswarm::Mode::Adaptive => "adaptive",
        hyperswarm::Mode::Persistent => "persistent",
        hyperswarm::Mode::Ephemeral => "ephemeral",
    }
}
