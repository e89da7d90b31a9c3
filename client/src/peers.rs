//! `hyperctl peer …`: replication connections to other daemons and JS peers.

use std::time::Duration;

use hyperd_proto::v1::{DialRequest, DisconnectRequest, ListPeersRequest, WatchPeersRequest};
use serde_json::json;

use crate::connect::Client;
use crate::output;

/// Checks `HOST:PORT` (IPv6 as `[::1]:PORT`) before anything is sent.
pub fn check_address(address: &str) -> anyhow::Result<()> {
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        Ok(())
    } else {
        anyhow::bail!("invalid address '{address}': expected HOST:PORT (IPv6 as [::1]:PORT)")
    }
}

/// `peer connect HOST:PORT [--once]`.
pub async fn connect(
    client: &Client,
    address: String,
    once: bool,
    json: bool,
) -> anyhow::Result<()> {
    let dial_timeout = client.timeout();
    let request = DialRequest {
        address,
        once,
        timeout_ms: u64::try_from(dial_timeout.as_millis()).unwrap_or(u64::MAX),
    };
    // hyperd tries for --timeout; give its answer a moment more to arrive.
    let deadline = dial_timeout + Duration::from_secs(2);
    let peer = client
        .unary_within(
            deadline,
            client
                .peers()
                .dial(client.request_within(deadline, request)),
        )
        .await?;
    if json {
        return output::print_json(&output::peer_json(&peer));
    }
    let redial = if once {
        ""
    } else {
        "; hyperd redials it when the connection ends"
    };
    output::print(format!(
        "connected to {} (remote key {}, {} core{} replicating){redial}",
        peer.address,
        peer.remote_key,
        peer.cores.len(),
        if peer.cores.len() == 1 { "" } else { "s" }
    ))
}

/// `peer ls`.
pub async fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let response = client
        .unary(client.peers().list(client.request(ListPeersRequest {})))
        .await?;
    if json {
        let peers: Vec<_> = response.peers.iter().map(output::peer_json).collect();
        return output::print_json(&json!({
            "peers": peers,
            "remembered": response.remembered,
        }));
    }
    let mut text = if response.peers.is_empty() {
        "no peers connected".to_string()
    } else {
        let rows: Vec<Vec<String>> = response
            .peers
            .iter()
            .map(|p| {
                vec![
                    p.address.clone(),
                    output::short_key(&p.remote_key),
                    if p.initiator { "out" } else { "in" }.to_string(),
                    p.found_by.clone(),
                    p.transport.clone(),
                    p.cores.len().to_string(),
                    output::bytes(p.bytes_up),
                    output::bytes(p.bytes_down),
                    output::duration(Duration::from_millis(p.connected_ms)),
                ]
            })
            .collect();
        output::table(
            &[
                "ADDRESS",
                "REMOTE KEY",
                "DIR",
                "FOUND BY",
                "TRANSPORT",
                "CORES",
                "UP",
                "DOWN",
                "CONNECTED",
            ],
            &rows,
        )
    };
    let connected: Vec<&str> = response.peers.iter().map(|p| p.address.as_str()).collect();
    let waiting: Vec<&str> = response
        .remembered
        .iter()
        .map(String::as_str)
        .filter(|a| !connected.contains(a))
        .collect();
    if !waiting.is_empty() {
        text.push_str(&format!("\nredialling: {}", waiting.join(", ")));
    }
    output::print(text)
}

/// `peer rm PEER` (an address or a remote key).
pub async fn remove(client: &Client, peer: String, json: bool) -> anyhow::Result<()> {
    let request = DisconnectRequest { peer: peer.clone() };
    let result = client
        .unary(client.peers().disconnect(client.request(request)))
        .await?;
    if result.closed == 0 && !result.forgotten {
        anyhow::bail!("no connection or remembered address matches '{peer}'");
    }
    if json {
        return output::print_json(&json!({
            "closed": result.closed,
            "forgotten": result.forgotten,
        }));
    }
    let mut text = format!(
        "closed {} connection{}",
        result.closed,
        if result.closed == 1 { "" } else { "s" }
    );
    if result.forgotten {
        text.push_str(&format!("; forgot {peer}"));
    }
    output::print(text)
}

/// `peer watch`: one line per peer joining or leaving, until interrupted.
pub async fn watch(client: &Client, json: bool) -> anyhow::Result<()> {
    let mut stream = client
        .unary(client.peers().watch(WatchPeersRequest {}))
        .await?;
    while let Some(event) = stream
        .message()
        .await
        .map_err(|status| client.status_error(status))?
    {
        if json {
            output::print_json(&output::peer_event_json(&event))?;
        } else {
            output::print(output::peer_event_text(&event))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for good in [
            "127.0.0.1:3282",
            "example.org:1",
            "[::1]:3282",
            "localhost:65535",
        ] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "3282",
            ":3282",
            "host:",
            "host:0",
            "host:70000",
            "host:x",
        ] {
            let err = check_address(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid address '{bad}'")),
                "{err}"
            );
        }
    }
}
