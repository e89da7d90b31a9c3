//! `hyperctl swarm …`: the DHT and the drives and cores joined on it.

use hyperd_proto::v1::SwarmStatusRequest;
use serde_json::json;

use crate::connect::Client;
use crate::output;

/// `swarm status`: the DHT, then one line per core joined (drives by their metadata
/// core) with what its last walk found.
pub async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let status = client
        .unary(client.swarm().status(client.request(SwarmStatusRequest {})))
        .await?;
    if json {
        let topics: Vec<_> = status
            .topics
            .iter()
            .map(|t| {
                json!({
                    "key": t.key,
                    "discoveryKey": t.discovery_key,
                    "walks": t.walks,
                    "peersFound": t.peers_found,
                    "lastError": t.last_error,
                })
            })
            .collect();
        return output::print_json(&json!({
            "dhtAddress": status.dht_address,
            "bootstrap": status.bootstrap,
            "topics": topics,
        }));
    }
    if status.dht_address.is_empty() {
        return output::print(
            "no DHT: no bootstrap nodes configured (set `bootstrap` in config.toml or pass \
             hyperd --bootstrap HOST:PORT)",
        );
    }
    let mut text = format!(
        "DHT on {}, bootstrapping from {}\n",
        status.dht_address,
        status.bootstrap.join(", ")
    );
    if status.topics.is_empty() {
        text.push_str("nothing joined yet: create or follow a drive, or follow a core");
    } else {
        let rows: Vec<Vec<String>> = status
            .topics
            .iter()
            .map(|t| {
                vec![
                    output::short_key(&t.key),
                    t.walks.to_string(),
                    t.peers_found.to_string(),
                    if t.last_error.is_empty() {
                        "ok".to_string()
                    } else {
                        t.last_error.clone()
                    },
                ]
            })
            .collect();
        text.push_str(&output::table(
            &["KEY", "WALKS", "PEERS FOUND", "LAST WALK"],
            &rows,
        ));
    }
    output::print(text)
}
