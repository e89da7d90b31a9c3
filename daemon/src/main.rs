//! `hyperd`: the daemon. It owns a corestore and the peer connections, and serves the
//! gRPC API (`proto/`) on a Unix socket private to its user. It runs in the foreground,
//! for systemd, launchd or `hyperctl start`. Everything but the command line, logging,
//! process limits and the runtime is in the library ([`hyperd::run`]).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hyperd_config::{Config, Home};

/// The hyperd daemon.
#[derive(Debug, Parser)]
#[command(name = "hyperd", version, about)]
struct Args {
    /// Home directory (storage, socket, lock, config); default: the platform data dir.
    #[arg(long, env = hyperd_config::HOME_ENV, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Configuration file (default: <home>/config.toml; optional).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for peer connections, overriding the configuration ("" disables).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// DHT bootstrap nodes, overriding the configuration: comma-separated HOST:PORT
    /// entries, IPv4 addresses or names ("" for none: no DHT).
    #[arg(long, value_name = "HOST:PORT,...")]
    bootstrap: Option<String>,
    /// How the DHT node takes part, overriding the configuration: adaptive, persistent
    /// or ephemeral.
    #[arg(long, value_name = "MODE")]
    dht_mode: Option<hyperd_config::DhtMode>,
    /// Send our LAN address with DHT announcements and lookups (announce_local = true).
    #[arg(long)]
    announce_local: bool,
    /// Local discovery over mDNS on, overriding the configuration.
    #[arg(long, overrides_with = "no_mdns")]
    mdns: bool,
    /// Local discovery over mDNS off, overriding the configuration.
    #[arg(long, overrides_with = "mdns")]
    no_mdns: bool,
    /// Print the default configuration, with every setting explained, and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    mode: Option<Mode>,
}

/// Other ways to run.
#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Run a DHT bootstrap node (hyperswarm 2 / dht-rpc 4) for JS and Rust peers, in the
    /// foreground, until SIGINT or SIGTERM: no home, no storage, no API. Prints one JSON
    /// line with its address and id when it is ready.
    Bootstrap {
        /// UDP address to serve on (IPv4).
        #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:49737")]
        listen: std::net::SocketAddrV4,
        /// Send no node id: peers then keep it out of their routing tables.
        #[arg(long)]
        ephemeral: bool,
        /// Other DHT nodes to bootstrap from, so that several bootstrap nodes form one
        /// DHT: comma-separated HOST:PORT entries, IPv4 addresses or names.
        #[arg(long, value_name = "HOST:PORT,...", default_value = "")]
        bootstrap: String,
    },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Logging may not be set up yet; the error goes to stderr either way.
            eprintln!("hyperd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    hyperd::memory::configure();
    let args = Args::parse();
    if args.print_config {
        print!("{}", hyperd_config::DOCUMENTED_DEFAULTS);
        return Ok(());
    }
    if let Some(Mode::Bootstrap {
        listen,
        ephemeral,
        bootstrap: nodes,
    }) = args.mode
    {
        return bootstrap(listen, ephemeral, &nodes);
    }
    let home = Home::resolve(args.home.as_deref())?;
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::parse(&text, path)?
        }
        None => Config::load(&home)?,
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
        config.validate(std::path::Path::new("--listen"))?;
    }
    if let Some(bootstrap) = args.bootstrap {
        config.bootstrap = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        config.validate(std::path::Path::new("--bootstrap"))?;
    }
    if let Some(mode) = args.dht_mode {
        config.dht_mode = mode;
    }
    if args.mdns || args.no_mdns {
        config.mdns = args.mdns;
    }
    if args.announce_local {
        config.announce_local = true;
    }
    init_logging(&config.log_level);
    // Everything hyperd creates (blocks, keys, state) is private to its user, whatever
    // the umask it was started with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let file_limit = match hyperd::limits::raise_file_limit() {
        Ok(limit) => {
            if let Some(before) = limit.raised_from {
                tracing::info!("raised the open-file limit from {before} to {}", limit.soft);
            }
            limit.soft
        }
        Err(e) => {
            tracing::warn!("cannot read or raise the open-file limit: {e}");
            1024
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(hyperd::run(
        home,
        config,
        hyperd::StartOptions { file_limit },
    ))
}

/// `hyperd bootstrap`: a DHT node serving until a signal, bootstrapping from `nodes`
/// (comma-separated entries, as the `bootstrap` setting's).
fn bootstrap(listen: std::net::SocketAddrV4, ephemeral: bool, nodes: &str) -> anyhow::Result<()> {
    init_logging("info");
    let mut hosts = Vec::new();
    for entry in nodes.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let host = hyperd_config::bootstrap_entry(entry)
            .map_err(|reason| anyhow::anyhow!("--bootstrap entry {entry:?} {reason}"))?;
        hosts.push(host);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let nodes = hyperd::resolve_bootstrap(&hosts).await;
        if nodes.is_empty() && !hosts.is_empty() {
            anyhow::bail!("none of the --bootstrap nodes resolves to an IPv4 address");
        }
        let server = hyperswarm::DhtServer::bind_with(listen, !ephemeral, nodes)
            .await
            .with_context(|| format!("binding the DHT node to {listen}"))?;
        let id = server.id().map(|id| hex::encode(id.0));
        println!(
            "{}",
            serde_json::json!({ "listening": server.local_addr().to_string(), "id": id })
        );
        tracing::info!("DHT bootstrap node on {}", server.local_addr());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        server.run(stop).await;
        Ok(())
    })
}

fn init_logging(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .with_target(terminal)
        .init();
}
