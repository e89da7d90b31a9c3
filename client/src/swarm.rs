//! `hyperctl swarm …`, `core seed|unseed` and `drive seed|unseed`: the DHT, local
//! discovery (mDNS), and the drives and cores joined on them, announced and/or looked up.

use hyperd_proto::v1::{
    ListPeersRequest, Seeding, SwarmJoinRequest, SwarmLeaveRequest, SwarmStatusRequest, SwarmTopic,
};
use serde_json::json;

use crate::connect::Client;
use crate::output;

/// `swarm status`: the DHT and mDNS, then one line per core joined (drives by their
/// metadata core) with what its last walk and mDNS found.
pub async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let status = client
        .unary(client.swarm().status(client.request(SwarmStatusRequest {})))
        .await?;
    if json {
        let topics: Vec<_> = status.topics.iter().map(topic_json).collect();
        return output::print_json(&json!({
            "dhtAddress": status.dht_address,
            "bootstrap": status.bootstrap,
            "mdns": status.mdns,
            "publicAddress": status.public_address,
            "holepunchable": status.holepunchable,
            "dhtMode": status.dht_mode,
            "dhtPersistent": status.dht_persistent,
            "dhtNodes": status.dht_nodes,
            "topics": topics,
        }));
    }
    let mut text = if status.dht_address.is_empty() {
        "no DHT: no bootstrap nodes configured (set `bootstrap` in config.toml or pass \
         hyperd --bootstrap HOST:PORT)\n"
            .to_string()
    } else {
        format!(
            "DHT on {}, bootstrapping from {}\n{} node ({}), {} nodes in its routing table\n{}\n",
            status.dht_address,
            status.bootstrap.join(", "),
            status.dht_mode,
            match status.dht_persistent {
                true => "sends its id: a storage node for others",
                false => "ephemeral so far: sends no id",
            },
            status.dht_nodes,
            match status.holepunchable {
                true => format!(
                    "public address {} (holepunchable: peers behind NATs can reach us)",
                    status.public_address
                ),
                false => "public address not known yet (fewer than 3 DHT nodes agree)".into(),
            }
        )
    };
    text.push_str(if status.mdns {
        "mDNS local discovery on\n"
    } else {
        "mDNS local discovery off\n"
    });
    if status.dht_address.is_empty() && !status.mdns {
        return output::print(text.trim_end());
    }
    if status.topics.is_empty() {
        text.push_str("nothing joined yet: create or follow a drive, or follow a core");
    } else {
        let rows: Vec<Vec<String>> = status
            .topics
            .iter()
            .map(|t| {
                vec![
                    output::short_key(&t.key),
                    how(t).to_string(),
                    t.walks.to_string(),
                    t.peers_found.to_string(),
                    t.local_peers.join(" "),
                    if t.last_error.is_empty() {
                        "ok".to_string()
                    } else {
                        t.last_error.clone()
                    },
                ]
            })
            .collect();
        text.push_str(&output::table(
            &[
                "KEY",
                "JOINED",
                "WALKS",
                "PEERS FOUND",
                "MDNS PEERS",
                "LAST WALK",
            ],
            &rows,
        ));
    }
    output::print(text)
}

fn topic_json(t: &SwarmTopic) -> serde_json::Value {
    json!({
        "key": t.key,
        "discoveryKey": t.discovery_key,
        "announce": t.announce,
        "lookup": t.lookup,
        "walks": t.walks,
        "peersFound": t.peers_found,
        "found": t.found,
        "localPeers": t.local_peers,
        "lastError": t.last_error,
    })
}

/// How a topic is joined, in words.
fn how(t: &SwarmTopic) -> &'static str {
    match (t.announce, t.lookup) {
        (true, true) => "announce+lookup",
        (true, false) => "announce",
        (false, true) => "lookup",
        (false, false) => "off",
    }
}

/// `swarm join KEY`, `core seed KEY`, `drive seed URL`: joins the core or drive `key`
/// (hex) as `seeding` says.
pub async fn join(
    client: &Client,
    key: String,
    seeding: Seeding,
    json: bool,
) -> anyhow::Result<()> {
    let request = SwarmJoinRequest {
        key,
        seeding: Some(seeding),
    };
    let topic = client
        .unary(client.swarm().join(client.request(request)))
        .await?;
    if json {
        return output::print_json(&topic_json(&topic));
    }
    output::print(format!("{} joined: {}", topic.key, how(&topic)))
}

/// `swarm leave KEY`, `core unseed KEY`, `drive unseed URL`.
pub async fn leave(client: &Client, key: String, json: bool) -> anyhow::Result<()> {
    let request = SwarmLeaveRequest { key: key.clone() };
    client
        .unary(client.swarm().leave(client.request(request)))
        .await?;
    if json {
        return output::print_json(&json!({ "key": key, "left": true }));
    }
    output::print(format!(
        "{key} left the swarm: not announced, not looked up"
    ))
}

/// `swarm ls`: every drive and core joined, how, and what its last walk found.
pub async fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let status = client
        .unary(client.swarm().status(client.request(SwarmStatusRequest {})))
        .await?;
    if json {
        let topics: Vec<_> = status.topics.iter().map(topic_json).collect();
        return output::print_json(&json!({ "topics": topics }));
    }
    if status.topics.is_empty() {
        return output::print("nothing joined: create, follow or seed a drive or core");
    }
    let rows: Vec<Vec<String>> = status
        .topics
        .iter()
        .map(|t| {
            vec![
                output::short_key(&t.key),
                how(t).to_string(),
                t.walks.to_string(),
                t.found.join(" "),
            ]
        })
        .collect();
    output::print(output::table(&["KEY", "JOINED", "WALKS", "FOUND"], &rows))
}

/// `swarm peers`: per drive and core joined, the peers it replicates with now and how
/// each connection came about.
pub async fn peers(client: &Client, json: bool) -> anyhow::Result<()> {
    let status = client
        .unary(client.swarm().status(client.request(SwarmStatusRequest {})))
        .await?;
    let peers = client
        .unary(client.peers().list(client.request(ListPeersRequest {})))
        .await?
        .peers;
    let per_topic: Vec<(&SwarmTopic, Vec<&hyperd_proto::v1::PeerInfo>)> = status
        .topics
        .iter()
        .map(|t| {
            (
                t,
                peers.iter().filter(|p| p.cores.contains(&t.key)).collect(),
            )
        })
        .collect();
    if json {
        let topics: Vec<_> = per_topic
            .iter()
            .map(|(t, peers)| {
                let peers: Vec<_> = peers.iter().map(|p| output::peer_json(p)).collect();
                json!({ "key": t.key, "peers": peers })
            })
            .collect();
        return output::print_json(&json!({ "topics": topics }));
    }
    if per_topic.is_empty() {
        return output::print("nothing joined: create, follow or seed a drive or core");
    }
    let mut rows = Vec::new();
    for (t, peers) in &per_topic {
        if peers.is_empty() {
            rows.push(vec![
                output::short_key(&t.key),
                "-".into(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for p in peers {
            rows.push(vec![
                output::short_key(&t.key),
                p.address.clone(),
                output::short_key(&p.remote_key),
                p.found_by.clone(),
                p.transport.clone(),
            ]);
        }
    }
    output::print(output::table(
        &["KEY", "PEER", "REMOTE KEY", "FOUND BY", "TRANSPORT"],
        &rows,
    ))
}
