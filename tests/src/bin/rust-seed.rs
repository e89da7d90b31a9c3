//! The Rust twin of `interop/seed.js`: serves a feed over plain TCP, as the Noise
//! responder, to every peer that connects. Same flags, same stdout lines, same lifetime.
//!
//! ```text
//! rust-seed --dir DIR [--blocks N] [--size BYTES] [--host 127.0.0.1] [--port 0]
//!           [--seed HEX32] [--noise-seed HEX32] [--no-live]
//!           [--append-interval MS --append-count K] [--quiet]
//! ```
//!
//! stdout: `{"event":"ready",...}` once listening, then `{"event":"append",...}` after each
//! timed append (`{"event":"error",...}` and exit 1 on failure). stderr: JSON logs
//! (`connection`, `handshake`, `close`, `stream-error`; `RUST_LOG` adds the crates' own).
//! Runs until SIGINT/SIGTERM, or until stdin ends if stdin is a pipe or socket.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hypercore::storage::DiskStorage;
use hypercore::{Feed, FeedOptions, KeyPair};
use hypercore_protocol::{Authenticate, NoiseKeyPair, PeerKey, ProtocolOptions};
use hypercore_replication::{replicate, ReplicateOptions, Replicator};
use hyperd_tests::cli::{emit, hash_range, log, stdin_is_pipe, Args, Line};
use hyperd_tests::{json_line, make_block};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = concat!(
    "usage: rust-seed --dir DIR [--blocks N] [--size BYTES] [--host 127.0.0.1] [--port 0]\n",
    "         [--seed HEX32] [--noise-seed HEX32] [--no-live] ",
    "[--append-interval MS --append-count K] [--quiet]"
);

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Ready<'a> {
    event: &'static str,
    key: String,
    discovery_key: String,
    noise_public_key: String,
    host: &'a str,
    port: u16,
    length: u64,
    byte_length: u64,
    blake2b: String,
    live: bool,
}

#[tokio::main]
async fn main() {
    hyperd_tests::cli::init_tracing();
    if let Err(e) = run().await {
        emit(&json_line! { "event": "error", "error": format!("{e:#}") });
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1), &["no-live", "quiet", "help"])?;
    let Some(dir) = args.get("dir").filter(|_| !args.flag("help")) else {
        eprintln!("{USAGE}");
        std::process::exit(if args.flag("help") { 0 } else { 2 });
    };
    let blocks: u64 = args.parsed("blocks")?.unwrap_or(0);
    let size: usize = args.parsed("size")?.unwrap_or(1024);
    let host = args.get("host").unwrap_or("127.0.0.1");
    let port: u16 = args.parsed("port")?.unwrap_or(0);
    let live = !args.flag("no-live");
    let quiet = args.flag("quiet");
    let append_interval: u64 = args.parsed("append-interval")?.unwrap_or(0);
    let append_count: u64 = args.parsed("append-count")?.unwrap_or(0);

    let mut options = FeedOptions::default();
    if let Some(seed) = args.seed("seed")? {
        let kp = KeyPair::from_seed(&seed);
        options.key = Some(kp.public);
        options.secret_key = Some(kp.secret);
    }
    let noise = match args.seed("noise-seed")? {
        Some(seed) => NoiseKeyPair::from_seed(&seed),
        None => NoiseKeyPair::generate(),
    };
    let feed = Feed::open(DiskStorage::new(dir), options)
        .await
        .with_context(|| format!("opening the feed in {dir}"))?;
    if !feed.writable() {
        bail!("feed in {dir} is not writable (no secret key stored)");
    }
    append_up_to(&feed, blocks, size).await?;

    let listener = TcpListener::bind((host, port)).await?;
    let (blake2b, _) = hash_range(&feed, 0, feed.len()).await?;
    emit(&Ready {
        event: "ready",
        key: feed.key().to_hex(),
        discovery_key: feed.discovery_key().to_hex(),
        noise_public_key: noise.public.to_hex(),
        host,
        port: listener.local_addr()?.port(),
        length: feed.len(),
        byte_length: feed.byte_len(),
        blake2b,
        live,
    });

    let replicator = Replicator::new(feed.clone(), Default::default());
    tokio::spawn(serve(listener, replicator, noise, live, quiet));
    if append_interval > 0 && append_count > 0 {
        let (feed, every) = (feed.clone(), Duration::from_millis(append_interval));
        tokio::spawn(async move {
            let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            for _ in 0..append_count {
                timer.tick().await;
                if let Err(e) = append_one(&feed, size).await {
                    log(json_line! { "event": "append-error", "error": format!("{e:#}") });
                }
            }
        });
    }

    stopped().await?;
    // Like JS: close the feed, but exit after 2 s whatever happens.
    let _ = tokio::time::timeout(Duration::from_secs(2), feed.close()).await;
    std::process::exit(0);
}

/// Appends blocks until the feed has `blocks` of them, in batches of up to 1024 blocks or
/// 16 MiB like `seed.js`.
async fn append_up_to(feed: &Feed, blocks: u64, size: usize) -> Result<()> {
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    for i in feed.len()..blocks {
        batch.push(make_block(i, size));
        batch_bytes += size;
        if batch.len() >= 1024 || batch_bytes >= 16 << 20 {
            feed.append_batch(std::mem::take(&mut batch)).await?;
            batch_bytes = 0;
        }
    }
    if !batch.is_empty() {
        feed.append_batch(batch).await?;
    }
    Ok(())
}

/// One timed append and its `append` line.
async fn append_one(feed: &Feed, size: usize) -> Result<()> {
    feed.append(make_block(feed.len(), size)).await?;
    let (blake2b, _) = hash_range(feed, 0, feed.len()).await?;
    emit(&json_line! {
        "event": "append",
        "length": feed.len(),
        "byteLength": feed.byte_len(),
        "blake2b": blake2b,
    });
    Ok(())
}

/// Accepts connections forever; each one replicates the feed as the Noise responder.
async fn serve(
    listener: TcpListener,
    replicator: Replicator,
    noise: NoiseKeyPair,
    live: bool,
    quiet: bool,
) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log(json_line! { "event": "accept-error", "error": e.to_string() });
                continue;
            }
        };
        let remote = addr.to_string();
        let say = move |line: Line| {
            if !quiet {
                log(line);
            }
        };
        say(json_line! { "event": "connection", "remote": remote });
        let _ = tcp.set_nodelay(true);
        let authenticate: Authenticate = {
            let remote = remote.clone();
            Arc::new(move |key: &PeerKey| {
                say(json_line! {
                    "event": "handshake",
                    "remote": remote,
                    "remotePublicKey": key.to_hex(),
                });
                true
            })
        };
        let options = ReplicateOptions {
            protocol: ProtocolOptions {
                initiator: false,
                live,
                keypair: Some(noise.clone()),
                authenticate: Some(authenticate),
                ..Default::default()
            },
        };
        let replicator = replicator.clone();
        tokio::spawn(async move {
            if let Err(e) = replicate(&replicator, tcp, options).await {
                say(json_line! {
                    "event": "stream-error",
                    "remote": remote,
                    "error": e.to_string(),
                });
            }
            say(json_line! { "event": "close", "remote": remote });
        });
    }
}

/// Resolves on SIGINT, SIGTERM, or the end of stdin when stdin is a pipe.
async fn stopped() -> Result<()> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let stdin_end = async {
        if !stdin_is_pipe() {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 4096];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        () = stdin_end => {}
    }
    Ok(())
}
