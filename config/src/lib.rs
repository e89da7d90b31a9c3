//! Where hyperd keeps its files (its [`Home`]) and its TOML [`Config`]. Shared by the
//! daemon and the client, so both agree on the socket, the lock and the token file.
//!
//! The home is, in order: `--home DIR`, the `HYPERD_HOME` environment variable, or the
//! platform's data directory (`~/.local/share/hyperd` on Linux,
//! `~/Library/Application Support/org.hyperd.hyperd` on macOS).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable that moves the home.
pub const HOME_ENV: &str = "HYPERD_HOME";

/// The port peers connect to unless configured otherwise: the JS daemons' (hyperspace,
/// hyperdrive-daemon), with their fallback when it is taken.
pub const DEFAULT_PEER_PORT: u16 = 49737;

/// What went wrong finding the home or reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No home was given and the platform has no data directory for this user.
    #[error("cannot find a home directory: pass --home DIR or set {HOME_ENV}")]
    NoHome,
    /// The configuration file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid.
    #[error("invalid configuration in {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        message: String,
    },
}

/// The daemon's directory and the files in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Uses `dir` as the home.
    pub fn at(dir: impl Into<PathBuf>) -> Home {
        Home { root: dir.into() }
    }

    /// `explicit` (from `--home`), else `HYPERD_HOME`, else the platform data directory.
    pub fn resolve(explicit: Option<&Path>) -> Result<Home, Error> {
        if let Some(dir) = explicit {
            return Ok(Home::at(dir));
        }
        if let Some(dir) = std::env::var_os(HOME_ENV).filter(|d| !d.is_empty()) {
            return Ok(Home::at(PathBuf::from(dir)));
        }
        directories::ProjectDirs::from("org", "hyperd", "hyperd")
            .map(|dirs| Home::at(dirs.data_dir()))
            .ok_or(Error::NoHome)
    }

    /// The home directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.toml`: optional; every setting has a default.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// The corestore's directory unless the configuration moves it.
    pub fn default_storage(&self) -> PathBuf {
        self.root.join("storage").join("cores")
    }

    /// The gRPC Unix socket (mode 0600).
    pub fn socket(&self) -> PathBuf {
        self.root.join("hyperd.sock")
    }

    /// Held (flock) by the running daemon; holds its pid.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("hyperd.lock")
    }

    /// The token a client must present on the optional TCP gRPC listener (mode 0600).
    pub fn token_file(&self) -> PathBuf {
        self.root.join("rpc.token")
    }

    /// What the daemon follows and which peers it redials.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// Output of a daemon started in the background by `hyperctl start`.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("logs").join("hyperd.log")
    }
}

/// How strongly writes are made durable before they are acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Survives a crash of the daemon (like JS hypercore).
    #[default]
    Process,
    /// Also survives power loss: data is fsync'ed before each acknowledgement.
    Sync,
}

/// How the DHT node takes part in the DHT (dht-rpc's modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhtMode {
    /// Starts ephemeral; turns persistent 20 to 30 minutes after start if the DHT sees
    /// it at a stable public address (JS hyperswarm's default).
    #[default]
    Adaptive,
    /// Sends its id: enters others' routing tables and stores their announcements.
    Persistent,
    /// Never sends its id: stays out of routing tables, stores nothing for others.
    Ephemeral,
}

impl std::str::FromStr for DhtMode {
    type Err = String;

    fn from_str(s: &str) -> Result<DhtMode, String> {
        match s {
            "adaptive" => Ok(DhtMode::Adaptive),
            "persistent" => Ok(DhtMode::Persistent),
            "ephemeral" => Ok(DhtMode::Ephemeral),
            _ => Err(format!(
                "{s:?} is not a DHT mode: adaptive, persistent or ephemeral"
            )),
        }
    }
}

/// `config.toml`. Every field has a default, so an empty or missing file is valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address for peer (replication) connections; `""` disables listening. The DHT uses
    /// the same port over UDP. The default port falls back when taken.
    pub listen: String,
    /// DHT bootstrap nodes (hyperswarm 2 / dht-rpc 4): `HOST:PORT` with an IPv4 address
    /// or a name resolved at start, or a bare port for `127.0.0.1:PORT` (as JS); empty:
    /// no DHT, peers come from `peer connect` only.
    pub bootstrap: Vec<String>,
    /// How the DHT node takes part: `adaptive` (default), `persistent` or `ephemeral`.
    pub dht_mode: DhtMode,
    /// Send our LAN address with DHT announcements and lookups (@hyperswarm/dht's
    /// `localAddress`), so that peers behind the same NAT find each other by it.
    pub announce_local: bool,
    /// Local discovery over mDNS (hyperswarm 2's, on UDP 224.0.0.251:5353): every drive
    /// held and core followed is also announced and looked up on the local network.
    pub mdns: bool,
    /// Most incoming peer connections at once (handshaking or open); when full, a new one
    /// takes the place of one still handshaking or replicating nothing, or is refused.
    pub max_peers: usize,
    /// Most incoming connections from one IP address.
    pub max_peers_per_ip: usize,
    /// Most dialed peer connections at once (their own budget: a flood of incoming
    /// connections never stops the daemon from dialing).
    pub max_outbound_peers: usize,
    /// Most cores kept open at once (four file descriptors each); unused ones are closed
    /// beyond it, least recently used first. Lowered at start to fit the file limit.
    pub max_open_cores: usize,
    /// Log filter, e.g. `info` or `hyperd=debug,info` (`RUST_LOG` wins).
    pub log_level: String,
    /// The corestore's directory; relative paths are relative to the home.
    pub storage: Option<PathBuf>,
    /// `process` or `sync`.
    pub durability: Durability,
    /// The gRPC API.
    pub rpc: RpcConfig,
}

/// The `[rpc]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// Also serve gRPC on this loopback TCP address; clients must send the token from
    /// the home's `rpc.token` file. Off by default.
    pub tcp: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: format!("0.0.0.0:{DEFAULT_PEER_PORT}"),
            bootstrap: Vec::new(),
            dht_mode: DhtMode::default(),
            announce_local: false,
            mdns: true,
            max_peers: 256,
            max_peers_per_ip: 16,
            max_outbound_peers: 64,
            max_open_cores: 256,
            log_level: "info".into(),
            storage: None,
            durability: Durability::default(),
            rpc: RpcConfig::default(),
        }
    }
}

/// The default configuration with every setting explained, as `hyperd --print-config`
/// writes it.
pub const DOCUMENTED_DEFAULTS: &str = r#"# hyperd configuration. Every setting is optional; these are the defaults.

# Address for peer (replication) connections. "" disables listening; port 0 picks one.
# With bootstrap nodes, the DHT uses the same port over UDP. The default port 49737 (as
# the JS daemons) falls back to 49738, 49739, then any free port when it is taken.
listen = "0.0.0.0:49737"

# DHT bootstrap nodes (hyperswarm 2 / dht-rpc 4), as "HOST:PORT" entries (an IPv4
# address or a name, resolved at start; a bare port means 127.0.0.1). Every
# drive held and core followed is then announced and looked up on the DHT under its
# discovery key, and the peers found are dialed. Empty: no DHT (peers come from
# `hyperctl peer connect`). `hyperd bootstrap` runs a bootstrap node of your own.
bootstrap = []

# How our DHT node takes part in the DHT (as JS dht-rpc):
# "adaptive": starts ephemeral, and 20 to 30 minutes after start turns persistent if
#   the DHT sees us at a stable public address (reachable from outside, directly or
#   by hole punching); else checks again as long later. JS hyperswarm's default.
# "persistent": sends its node id from the start, so other nodes add it to their
#   routing tables and it stores announcements and answers lookups for others (a
#   storage node of the DHT; it should be reachable from outside).
# "ephemeral": never sends its id: it only asks, and is never in others' tables.
dht_mode = "adaptive"

# Send our LAN address (the host's first non-loopback IPv4 address and the port of
# `listen`) with DHT announcements and lookups, as @hyperswarm/dht's localAddress:
# peers behind the same NAT, which often cannot reach each other through its outside
# address, then find each other on the LAN. Off by default, as in JS: it tells DHT
# nodes a private address.
announce_local = false

# Local discovery over mDNS, as hyperswarm 2 (Dat2's JS swarm, which always runs it):
# every drive held and core followed is also announced and looked up on the local
# network (multicast to 224.0.0.251, UDP port 5353, shared with other responders), and
# the peers found are dialed. Peers dial the address our announcement came from and the
# port of `listen`, so this finds us when `listen` is on all addresses ("0.0.0.0:…").
mdns = true

# Most incoming peer connections at once (open or still handshaking). When full, a new
# connection takes the place of one that is still handshaking or replicates nothing;
# otherwise it is closed at once, so a flood cannot exhaust the daemon's files.
max_peers = 256

# Most incoming connections from one IP address.
max_peers_per_ip = 16

# Most dialed connections at once. Dialing has its own budget, so incoming connections
# can never keep the daemon from connecting out.
max_outbound_peers = 64

# Most cores kept open at once; each holds four file descriptors. Cores nobody uses are
# closed beyond this (least recently used first) or after 30 s without peers, and opened
# again when an API call or a peer needs them. hyperd raises its soft file limit to the
# hard limit at start and lowers this if the limit cannot hold it.
max_open_cores = 256

# Log filter: error, warn, info, debug, trace, or per module ("hyperd=debug,info").
# The RUST_LOG environment variable wins.
log_level = "info"

# Where cores are stored; relative paths are relative to the home directory.
# storage = "storage/cores"

# "process": an acknowledged append survives a crash of the daemon.
# "sync": it also survives power loss (fsync before acknowledging; slower).
durability = "process"

[rpc]
# Also serve the gRPC API on a loopback TCP address. Clients must send the token stored
# in <home>/rpc.token (created with mode 0600) as "authorization: Bearer <token>".
# tcp = "127.0.0.1:3283"
"#;

impl Config {
    /// Parses a configuration; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Invalid {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Reads the home's `config.toml`, or the defaults when there is none.
    pub fn load(home: &Home) -> Result<Config, Error> {
        let path = home.config_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// Checks values serde cannot; `path` names where they came from in errors.
    pub fn validate(&self, path: &Path) -> Result<(), Error> {
        let invalid = |message: String| Error::Invalid {
            path: path.to_owned(),
            message,
        };
        if !self.listen.is_empty() && self.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(format!(
                "listen = {:?} is not HOST:PORT with an IP address",
                self.listen
            )));
        }
        for entry in &self.bootstrap {
            if let Err(reason) = bootstrap_entry(entry) {
                return Err(invalid(format!("bootstrap entry {entry:?} {reason}")));
            }
        }
        for (name, value) in [
            ("max_peers", self.max_peers),
            ("max_peers_per_ip", self.max_peers_per_ip),
            ("max_outbound_peers", self.max_outbound_peers),
            ("max_open_cores", self.max_open_cores),
        ] {
            if value == 0 {
                return Err(invalid(format!("{name} = 0: it must be at least 1")));
            }
        }
        if let Some(tcp) = self.rpc.tcp {
            if !tcp.ip().is_loopback() {
                return Err(invalid(format!(
                    "rpc.tcp = \"{tcp}\" is not a loopback address; the API must not be reachable from other machines"
                )));
            }
        }
        Ok(())
    }

    /// The bootstrap entries as (host, port) to resolve; `validate` checked them.
    pub fn bootstrap_hosts(&self) -> Vec<(String, u16)> {
        self.bootstrap
            .iter()
            .filter_map(|e| bootstrap_entry(e).ok())
            .collect()
    }

    /// The corestore's directory.
    pub fn storage_dir(&self, home: &Home) -> PathBuf {
        match &self.storage {
            Some(dir) => home.root().join(dir),
            None => home.default_storage(),
        }
    }
}

/// A bootstrap entry as host and port: `HOST:PORT`, or a bare port on 127.0.0.1.
pub fn bootstrap_entry(entry: &str) -> Result<(String, u16), &'static str> {
    let entry = entry.trim();
    if let Ok(port) = entry.parse::<u16>() {
        return Ok(("127.0.0.1".into(), port));
    }
    let (host, port) = entry.rsplit_once(':').ok_or("is not HOST:PORT or a port")?;
    let port: u16 = port.parse().map_err(|_| "has no valid port")?;
    if host.is_empty() || port == 0 || host.contains(['/', ' ', '[', ']']) {
        return Err("is not HOST:PORT with an IPv4 address or a name");
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bootstrap_entries_are_addresses_names_or_ports() {
        assert_eq!(
            bootstrap_entry("10.0.0.1:49737"),
            Ok(("10.0.0.1".into(), 49737))
        );
        assert_eq!(
            bootstrap_entry("bootstrap1.hyperdht.org:49737"),
            Ok(("bootstrap1.hyperdht.org".into(), 49737))
        );
        assert_eq!(bootstrap_entry("4000"), Ok(("127.0.0.1".into(), 4000)));
        for bad in [
            "",
            "host",
            "host:",
            "host:70000",
            ":80",
            "[::1]:80",
            "a b:1",
            "x:0",
        ] {
            assert!(bootstrap_entry(bad).is_err(), "{bad:?}");
        }
        let text = "bootstrap = [\"nowhere\"]";
        let err = Config::parse(text, Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("nowhere"), "{err}");
    }

    #[test]
    fn documented_defaults_are_the_defaults() {
        let parsed = Config::parse(DOCUMENTED_DEFAULTS, Path::new("x")).unwrap();
        assert_eq!(parsed, Config::default());
        assert_eq!(
            Config::parse("", Path::new("x")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn missing_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Config::load(&Home::at(dir.path())).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn settings_are_read() {
        let text = "listen = \"127.0.0.1:0\"\nmdns = false\ndurability = \"sync\"\nstorage = \"/data\"\n[rpc]\ntcp = \"127.0.0.1:9000\"\n";
        let config = Config::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(config.listen, "127.0.0.1:0");
        assert!(!config.mdns);
        assert!(Config::default().mdns, "on by default, as in JS");
        assert_eq!(
            Config::default().dht_mode,
            DhtMode::Adaptive,
            "as JS hyperswarm"
        );
        for (text, mode) in [
            ("dht_mode = \"persistent\"", DhtMode::Persistent),
            ("dht_mode = \"ephemeral\"", DhtMode::Ephemeral),
            ("dht_mode = \"adaptive\"", DhtMode::Adaptive),
        ] {
            let config = Config::parse(text, Path::new("c.toml")).unwrap();
            assert_eq!(config.dht_mode, mode);
        }
        let err = Config::parse("dht_mode = \"always\"", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("always"), "{err}");
        assert_eq!("persistent".parse(), Ok(DhtMode::Persistent));
        assert!("Persistent"
            .parse::<DhtMode>()
            .unwrap_err()
            .contains("adaptive"));
        assert_eq!(config.durability, Durability::Sync);
        assert_eq!(
            config.storage_dir(&Home::at("/home/x")),
            PathBuf::from("/data")
        );
        assert_eq!(config.rpc.tcp, Some("127.0.0.1:9000".parse().unwrap()));
    }

    #[test]
    fn bad_settings_name_the_file_and_the_problem() {
        for (text, needle) in [
            ("listne = \"x\"", "unknown field"),
            ("listen = \"nowhere\"", "nowhere"),
            ("durability = \"fast\"", "fast"),
            ("[rpc]\ntcp = \"0.0.0.0:1\"", "loopback"),
        ] {
            let err = Config::parse(text, Path::new("/h/config.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("/h/config.toml"), "{err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn home_resolution_order() {
        let explicit = Home::resolve(Some(Path::new("/explicit"))).unwrap();
        assert_eq!(explicit.root(), Path::new("/explicit"));
        assert_eq!(explicit.socket(), Path::new("/explicit/hyperd.sock"));
    }
}
