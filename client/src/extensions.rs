//! `hyperctl core ext` and `drive ext`: app messages on a core's channel. Each line of
//! stdin is sent (to one peer, or every peer of the core), and every message peers send
//! is printed as it arrives, until stdin ends (or, with `--listen`, until interrupted).

use std::io::BufRead;

use hyperd_proto::v1::{
    extension_event, extension_request, ExtensionOpen, ExtensionRequest, ExtensionSend,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::connect::Client;
use crate::output;

/// What `ext` does.
pub struct ExtOptions {
    /// The core's key, hex.
    pub key: String,
    /// The extension's name.
    pub name: String,
    /// Send to this peer (remote key, hex) only.
    pub to: Option<String>,
    /// Send nothing: only print what arrives, until interrupted.
    pub listen: bool,
}

/// Runs a session: see the module doc.
pub async fn ext(client: &Client, options: ExtOptions, json: bool) -> anyhow::Result<()> {
    let (requests, received) = mpsc::channel::<ExtensionRequest>(16);
    let open = ExtensionRequest {
        request: Some(extension_request::Request::Open(ExtensionOpen {
            key: options.key.clone(),
            name: options.name.clone(),
        })),
    };
    requests.send(open).await?;
    if !options.listen {
        let to = options.to.clone().unwrap_or_default();
        let requests = requests.clone();
        // stdin may block as long as it likes: a thread reads it.
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let send = ExtensionRequest {
                    request: Some(extension_request::Request::Send(ExtensionSend {
                        peer: to.clone(),
                        payload: line.into_bytes().into(),
                    })),
                };
                if requests.blocking_send(send).is_err() {
                    break;
                }
            }
        });
    }
    // With --listen the session runs until interrupted; otherwise until stdin ends.
    let keep = options.listen.then_some(requests);
    let stream = tokio_stream::wrappers::ReceiverStream::new(received);
    let mut events = client.unary(client.extensions().open(stream)).await?;
    while let Some(event) = events.next().await {
        let event = event.map_err(|status| client.status_error(status))?;
        match event.event {
            Some(extension_event::Event::Opened(opened)) => {
                if json {
                    output::print_json(&json!({ "type": "opened", "peers": opened.peers }))?;
                } else {
                    output::note(format!(
                        "extension {:?} open on {} with {} peer{}",
                        options.name,
                        output::short_key(&options.key),
                        opened.peers.len(),
                        if opened.peers.len() == 1 { "" } else { "s" }
                    ));
                }
            }
            Some(extension_event::Event::Received(message)) => {
                if json {
                    output::print_json(&json!({
                        "type": "received",
                        "peer": message.peer,
                        "data": hex::encode(&message.payload),
                    }))?;
                } else {
                    output::print(format!(
                        "{}: {}",
                        output::short_key(&message.peer),
                        String::from_utf8_lossy(&message.payload)
                    ))?;
                }
            }
            Some(extension_event::Event::Sent(sent)) => {
                if json {
                    output::print_json(&json!({ "type": "sent", "peers": sent.peers }))?;
                } else if sent.peers == 0 {
                    output::note("not sent: no peer (or not that peer) replicates the core now");
                }
            }
            None => {}
        }
    }
    drop(keep);
    Ok(())
}
