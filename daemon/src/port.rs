//! The one port peers reach us on: TCP for connections and, with a DHT, UDP on the same
//! number (hyperswarm's rule: the DHT stores the port announcements come from, and peers
//! dial that number over TCP). The default port falls back as JS hyperswarm's
//! `preferredPort` does when it is taken: the next two ports, then any free one, so
//! several daemons and JS peers run side by side on one host. Any other port, 0
//! included, is used as given.

use std::io;
use std::net::SocketAddr;

use hyperd_config::DEFAULT_PEER_PORT;
use tokio::net::{TcpListener, UdpSocket};

/// The sockets bound for peers.
pub(crate) struct PeerPort {
    /// Accepts peer connections.
    pub tcp: TcpListener,
    /// The DHT's socket, on the same address and port, when asked for.
    pub udp: Option<UdpSocket>,
}

/// Why no port could be bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for peers on {tried}: {source} (set `listen` in the config or pass --listen)"
)]
pub(crate) struct BindError {
    tried: String,
    #[source]
    source: io::Error,
}

/// Binds `addr` for TCP, and for UDP too if `udp`; the default port may fall back (see
/// the module doc).
pub(crate) async fn bind(addr: SocketAddr, udp: bool) -> Result<PeerPort, BindError> {
    let candidates: Vec<u16> = if addr.port() == DEFAULT_PEER_PORT {
        vec![
            DEFAULT_PEER_PORT,
            DEFAULT_PEER_PORT + 1,
            DEFAULT_PEER_PORT + 2,
            0,
            0,
            0,
            0,
        ]
    } else {
        vec![addr.port()]
    };
    let mut last = None;
    for port in &candidates {
        match bind_both(SocketAddr::new(addr.ip(), *port), udp).await {
            Ok(bound) => {
                if *port != addr.port() {
                    tracing::warn!(
                        "port {} is taken: listening for peers on {} instead",
                        addr.port(),
                        bound
                            .tcp
                            .local_addr()
                            .map(|a| a.to_string())
                            .unwrap_or_default()
                    );
                }
                return Ok(bound);
            }
            Err(e) => last = Some(e),
        }
    }
    let tried = candidates
        .iter()
        .map(|p| SocketAddr::new(addr.ip(), *p).to_string())
        .collect::<Vec<_>>();
    let mut tried_once: Vec<String> = Vec::new();
    for t in tried {
        if !tried_once.contains(&t) {
            tried_once.push(t);
        }
    }
    Err(BindError {
        tried: tried_once.join(", "),
        source: last.unwrap_or_else(|| io::Error::other("no port to try")),
    })
}

/// TCP on `addr`, then UDP on the port TCP got (port 0 picks TCP's).
async fn bind_both(addr: SocketAddr, udp: bool) -> io::Result<PeerPort> {
    let tcp = TcpListener::bind(addr).await?;
    let udp = match udp {
        true => Some(UdpSocket::bind(tcp.local_addr()?).await?),
        false => None,
    };
    Ok(PeerPort { tcp, udp })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_an_error_naming_it_and_port_0_gets_both_on_one_number() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let e = bind(addr, false).await.err().unwrap();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");

        let both = bind("127.0.0.1:0".parse().unwrap(), true).await.unwrap();
        let tcp = both.tcp.local_addr().unwrap();
        assert_eq!(both.udp.unwrap().local_addr().unwrap(), tcp);
    }

    #[tokio::test]
    async fn a_udp_port_taken_is_a_taken_port() {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        assert!(bind(addr, true).await.is_err());
        // TCP alone is free there.
        assert!(bind(addr, false).await.is_ok());
    }
}
