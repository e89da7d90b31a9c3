//! DHTs of Rust nodes on real loopback sockets: persistent nodes bootstrapped from one
//! fill each other's routing tables, an announcement is stored at the 20 nodes closest
//! to its topic (not at the bootstrap node alone) and found from any node, a node that
//! dies leaves the others' tables after their maintenance pings, and an adaptive node
//! turns persistent once three nodes agree on its address (and not before).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use hyperswarm::{Dht, DhtServer, Endpoint, Id, Mode, Options};

fn loopback(last: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, last), 0)
}

/// Polls `check` every 100 ms until it holds, failing after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A bootstrap node and `n` more persistent nodes that bootstrapped from it, each
/// started once the previous one knows the bootstrap node.
async fn network(n: usize) -> Vec<DhtServer> {
    let first = DhtServer::bind(loopback(2), true).await.unwrap();
    let bootstrap = vec![first.local_addr()];
    let mut nodes = vec![first];
    for _ in 0..n {
        let node = DhtServer::bind_with(loopback(2), true, bootstrap.clone())
            .await
            .unwrap();
        eventually(Duration::from_secs(10), "a node bootstraps", || async {
            node.dht().contacts().await > 0
        })
        .await;
        nodes.push(node);
    }
    nodes
}

async fn ids_known_by(node: &DhtServer) -> HashSet<Id> {
    node.dht()
        .routing_table()
        .await
        .into_iter()
        .map(|n| n.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_lands_at_the_closest_of_25_nodes_and_is_found_from_any() {
    let nodes = network(24).await;
    let ids: Vec<Id> = nodes.iter().map(|n| n.id().unwrap()).collect();
    // Every node knows most others: the latecomers walked through them all, the early
    // ones heard from every latecomer's walk.
    for node in &nodes {
        let known = ids_known_by(node).await;
        assert!(known.len() >= 20, "{:?} knows {}", node.id(), known.len());
        assert!(known.iter().all(|id| ids.contains(id)));
        assert!(!known.contains(&node.id().unwrap()), "not itself");
    }
    let topic = Id([0x5c; 32]);
    let announcer = Dht::bind(loopback(1), vec![nodes[0].local_addr()])
        .await
        .unwrap();
    announcer.announce(topic).await.unwrap();
    // Stored exactly at the 20 nodes closest to the topic.
    let mut by_distance: Vec<usize> = (0..nodes.len()).collect();
    by_distance.sort_by_key(|i| ids[*i].distance(&topic));
    let mut storing = HashSet::new();
    for (i, node) in nodes.iter().enumerate() {
        if node.dht().records().await > 0 {
            storing.insert(i);
        }
    }
    let closest: HashSet<usize> = by_distance[..20].iter().copied().collect();
    assert_eq!(storing, closest);
    // Found from every node, through its own table.
    for node in &nodes {
        let found = node.dht().lookup(topic).await.unwrap();
        assert!(
            found.iter().any(|p| p.addr == announcer.local_addr()),
            "{:?} did not find it: {found:?}",
            node.id()
        );
    }
}

#[tokio::test]
async fn a_dead_node_leaves_the_others_tables_after_their_maintenance_pings() {
    let mut nodes = network(7).await;
    let dead = nodes.remove(3);
    let dead_id = dead.id().unwrap();
    for node in &nodes {
        eventually(Duration::from_secs(10), "everyone knows it", || async {
            ids_known_by(node).await.contains(&dead_id)
        })
        .await;
    }
    drop(dead);
    // Time runs fast from here: the pings of 40 s rounds and their 7.5 s timeouts.
    tokio::time::pause();
    let mut rounds = 0;
    loop {
        let mut left = 0;
        for node in &nodes {
            left += usize::from(ids_known_by(node).await.contains(&dead_id));
        }
        if left == 0 {
            break;
        }
        rounds += 1;
        assert!(rounds < 40, "{left} nodes still list the dead one");
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    tokio::time::resume();
    // The living stay: they answer the pings.
    for node in &nodes {
        assert_eq!(ids_known_by(node).await.len(), nodes.len() - 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_node_turns_persistent_once_reachable_and_not_before() {
    let nodes = network(4).await;
    let bootstrap = vec![nodes[0].local_addr()];
    let options = |bootstrap: Vec<SocketAddrV4>| Options {
        adaptive_check: Duration::from_millis(1500)..Duration::from_millis(2000),
        ..Options::new(bootstrap, Mode::Adaptive)
    };
    let adaptive = Dht::with_options(
        Endpoint::bind(loopback(3)).await.unwrap(),
        options(bootstrap),
    )
    .unwrap();
    eventually(Duration::from_secs(10), "it learns its address", || async {
        adaptive.public_address().await == Some(adaptive.local_addr())
    })
    .await;
    assert!(!adaptive.is_persistent().await, "not before the check");
    for node in &nodes {
        assert!(!ids_known_by(node).await.contains(&adaptive.own_id()));
    }
    eventually(Duration::from_secs(10), "it turns persistent", || async {
        adaptive.is_persistent().await
    })
    .await;
    // Its second bootstrap, now with its id, put it in the others' tables.
    for node in &nodes {
        eventually(Duration::from_secs(10), "the others add it", || async {
            ids_known_by(node).await.contains(&adaptive.own_id())
        })
        .await;
    }

    // Two nodes only can never make three votes: it stays ephemeral.
    let small = network(1).await;
    let lonely = Dht::with_options(
        Endpoint::bind(loopback(4)).await.unwrap(),
        options(vec![small[0].local_addr()]),
    )
    .unwrap();
    eventually(Duration::from_secs(10), "it bootstraps", || async {
        lonely.contacts().await == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(lonely.public_address().await, None);
    assert!(!lonely.is_persistent().await);
    for node in &small {
        assert!(!ids_known_by(node).await.contains(&lonely.own_id()));
    }
}
