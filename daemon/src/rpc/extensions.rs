//! The `Extensions` service: converts the request stream to the daemon's extension
//! session (`crate::extensions`) and its events to proto.

use futures::StreamExt;
use hyperd_proto::v1::{
    extension_event, extension_request, extensions_server, ExtensionEvent, ExtensionOpened,
    ExtensionReceived, ExtensionRequest, ExtensionSent,
};
use tonic::{Request, Response, Status, Streaming};

use super::{error, parse_key, server_stream, status};
use crate::daemon::Daemon;
use crate::error::DaemonError;
use crate::extensions::{self, Outgoing};

pub struct ExtensionsService {
    daemon: Daemon,
}

impl ExtensionsService {
    pub fn new(daemon: Daemon) -> Self {
        ExtensionsService { daemon }
    }
}

fn event(event: extensions::ExtensionEvent) -> ExtensionEvent {
    use extensions::ExtensionEvent as E;
    let event = match event {
        E::Opened(peers) => extension_event::Event::Opened(ExtensionOpened {
            peers: peers.iter().map(|p| p.to_hex()).collect(),
        }),
        E::Received(peer, payload) => extension_event::Event::Received(ExtensionReceived {
            peer: peer.to_hex(),
            payload,
        }),
        E::Sent(peers) => extension_event::Event::Sent(ExtensionSent {
            peers: peers as u32,
        }),
    };
    ExtensionEvent { event: Some(event) }
}

fn outgoing(request: ExtensionRequest) -> Result<Outgoing, DaemonError> {
    match request.request {
        Some(extension_request::Request::Send(send)) => {
            let to = match send.peer.as_str() {
                "" => None,
                peer => Some(peer.parse().map_err(|_| {
                    DaemonError::invalid(format!(
                        "peer {peer:?} is not a remote key: expected 64 hex characters"
                    ))
                })?),
            };
            Ok(Outgoing {
                to,
                payload: send.payload,
            })
        }
        Some(extension_request::Request::Open(_)) => Err(DaemonError::invalid(
            "the extension is open already: send `send` requests",
        )),
        None => Err(DaemonError::invalid("a request with neither open nor send")),
    }
}

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl extensions_server::Extensions for ExtensionsService {
    type OpenStream = Stream<ExtensionEvent>;

    async fn open(
        &self,
        request: Request<Streaming<ExtensionRequest>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming.message().await?;
        let Some(extension_request::Request::Open(open)) = first.and_then(|f| f.request) else {
            return Err(Status::invalid_argument(
                "the first message must be `open`, naming the core and the extension",
            ));
        };
        let key = parse_key("key", &open.key)?;
        let sends = incoming
            .map(|request| request.map_err(error).and_then(outgoing))
            .boxed();
        let events = self
            .daemon
            .extension(&key, &open.name, sends)
            .await
            .map_err(status)?;
        Ok(Response::new(server_stream(events, event)))
    }
}
