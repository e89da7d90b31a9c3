//! `hyperctl`: the command line of hyperd. Parses arguments (clap), runs one command and
//! turns any failure into a single line `hyperctl: <message>` on stderr with exit code
//! 1 (2 for usage errors).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use hyperctl::connect::{self, Client};
use hyperctl::cores::{self, CatOptions, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE};
use hyperctl::daemon_cmds::{self, StartOptions};
use hyperctl::drives::{self, LsOptions, Url};
use hyperctl::key::Key;
use hyperctl::output::{self, BrokenPipe};
use hyperctl::{peers, service};
use hyperd_config::Home;
use hyperd_proto::v1::Seeding;

/// Control hyperd, the Dat2 hyperstack daemon.
///
/// KEY arguments are a core's public key: 64 hex characters or hyper://<key>.
#[derive(Parser)]
#[command(name = "hyperctl", version, arg_required_else_help = true)]
struct Cli {
    /// The daemon's home directory [default: the platform's data directory]
    #[arg(long, global = true, env = hyperd_config::HOME_ENV, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Print JSON (camelCase keys) instead of text
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for connecting and for each request (streams have no total limit)
    #[arg(long, global = true, value_name = "SECS", default_value = "10", value_parser = parse_timeout)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start hyperd in the background (unless it is already running)
    Start {
        /// The hyperd executable [default: next to hyperctl, else on PATH]
        #[arg(long, value_name = "PATH")]
        hyperd: Option<PathBuf>,
        /// Address for peer connections, passed to hyperd
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
        /// Configuration file, passed to hyperd
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Stop hyperd and wait until it has exited
    Stop,
    /// Show the daemon's version, uptime, paths and counts
    Status,
    /// Hypercores: create, follow, read, write
    #[command(subcommand, arg_required_else_help = true)]
    Core(CoreCommand),
    /// Hyperdrives: create, follow, browse, write, import, export
    ///
    /// URL arguments are hyper://KEY[+VERSION]/path (hyper:// may be left out);
    /// +VERSION reads that version of the drive, read-only.
    #[command(subcommand, arg_required_else_help = true)]
    Drive(DriveCommand),
    /// Peer connections
    #[command(subcommand, arg_required_else_help = true)]
    Peer(PeerCommand),
    /// Discovery: the DHT and the drives and cores joined on it
    #[command(subcommand, arg_required_else_help = true)]
    Swarm(SwarmCommand),
    /// Run hyperd at login (systemd user service on Linux, launchd agent on macOS)
    #[command(subcommand, arg_required_else_help = true)]
    Service(ServiceCommand),
    /// Print a shell completion script
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// Where `ext` sends, and whether it reads stdin.
#[derive(clap::Args, Clone)]
struct ExtArgs {
    /// Send to this peer only (its remote key, as `peer ls` shows it) [default: every peer]
    #[arg(long, value_name = "REMOTE_KEY")]
    to: Option<String>,
    /// Read nothing from stdin: print what arrives until interrupted
    #[arg(long, conflicts_with = "to")]
    listen: bool,
}

impl ExtArgs {
    fn options(self, key: String, name: String) -> hyperctl::extensions::ExtOptions {
        hyperctl::extensions::ExtOptions {
            key,
            name,
            to: self.to,
            listen: self.listen,
        }
    }
}

/// How a created, followed or seeded drive or core joins the swarm.
#[derive(clap::Args, Clone, Copy)]
struct SeedingArgs {
    /// Announce it, so that peers find this daemon [default: for what it can write]
    #[arg(long, overrides_with = "no_announce")]
    announce: bool,
    /// Don't announce it
    #[arg(long)]
    no_announce: bool,
    /// Look up peers that have it and connect to them [default]
    #[arg(long, overrides_with = "no_lookup")]
    lookup: bool,
    /// Don't look up peers
    #[arg(long)]
    no_lookup: bool,
}

impl SeedingArgs {
    /// What the flags ask for, `None` without any (the daemon's default then); a flag
    /// left out takes `default`.
    fn asked(self, default: Seeding) -> Option<Seeding> {
        let flag = |yes: bool, no: bool| (yes || no).then_some(yes);
        let announce = flag(self.announce, self.no_announce);
        let lookup = flag(self.lookup, self.no_lookup);
        (announce.is_some() || lookup.is_some()).then(|| Seeding {
            announce: announce.unwrap_or(default.announce),
            lookup: lookup.unwrap_or(default.lookup),
        })
    }

    /// For `seed`: announced and looked up unless a flag says otherwise.
    fn seed(self) -> Seeding {
        let all = Seeding {
            announce: true,
            lookup: true,
        };
        self.asked(all).unwrap_or(all)
    }
}

#[derive(Subcommand)]
enum CoreCommand {
    /// Create a writable core and print its key
    Create {
        /// Derive the key from this name (the same name gives the same core)
        #[arg(long)]
        name: Option<String>,
        /// Re-create a named core that was removed after it had blocks. Its new history
        /// conflicts with the old one, which peers may hold and will then refuse.
        #[arg(long, requires = "name")]
        force: bool,
        #[command(flatten)]
        seeding: SeedingArgs,
    },
    /// Follow (replicate) a core by key
    Follow {
        key: String,
        /// Download every block peers have, not only what is read
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        seeding: SeedingArgs,
    },
    /// Announce a core and look up its peers (flags pick one), persisted
    Seed {
        key: String,
        #[command(flatten)]
        seeding: SeedingArgs,
    },
    /// Stop announcing a core and looking up its peers
    Unseed { key: String },
    /// App messages: send each line of stdin on the extension NAME of a core's channel
    /// and print what its peers send on it (like JS core.registerExtension)
    Ext {
        key: String,
        name: String,
        #[command(flatten)]
        ext: ExtArgs,
    },
    /// Show a core's length, size, storage and traffic
    Info { key: String },
    /// List the daemon's cores
    #[command(visible_alias = "ls")]
    List,
    /// Append blocks: each DATA argument is one block, or --file in blocks of --block-size
    #[command(arg_required_else_help = true)]
    Append {
        key: String,
        /// Blocks to append, one per argument, in one signed batch
        #[arg(conflicts_with = "file")]
        data: Vec<String>,
        /// Stream this file ("-" for stdin), cut into blocks of --block-size
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Bytes per block when reading --file [default: 65536]
        #[arg(long, value_name = "N", requires = "file", value_parser = parse_block_size)]
        block_size: Option<usize>,
    },
    /// Print one block's bytes (with --json: {"index", "data"} with data in hex)
    Get {
        key: String,
        index: u64,
        /// How long hyperd waits for peers when the block is not stored (0: don't wait)
        #[arg(long, value_name = "MS", default_value_t = 0)]
        timeout_ms: u64,
    },
    /// Write blocks START..END to stdout, raw (with --json: one {"index", "data"} line each, data in hex)
    Cat {
        key: String,
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// End (exclusive) [default: the current length, or never with --live]
        #[arg(long)]
        end: Option<u64>,
        /// Keep following appends
        #[arg(long)]
        live: bool,
        /// Wait for blocks that are not stored yet instead of failing
        #[arg(long)]
        wait: bool,
    },
    /// Download a range from peers, with progress
    Download {
        key: String,
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// End (exclusive) [default: the longest length known when it starts]
        #[arg(long)]
        end: Option<u64>,
        /// Fetch in order instead of at random
        #[arg(long)]
        linear: bool,
    },
    /// Delete local copies of blocks START..END (peers can provide them again)
    Clear {
        key: String,
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// End (exclusive) [default: the length]
        #[arg(long)]
        end: Option<u64>,
    },
    /// Check every stored block against its hash; bad blocks are cleared
    Audit { key: String },
    /// Stop following or serving a core and delete its local data
    #[command(visible_alias = "remove")]
    Rm { key: String },
    /// Print a core's events as they happen, one line each
    Watch { key: String },
}

#[derive(Subcommand)]
enum DriveCommand {
    /// Create a writable drive and print its key
    Create {
        /// Derive the key from this name (the same name gives the same drive)
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        seeding: SeedingArgs,
    },
    /// Follow (replicate) a drive by key
    Follow {
        url: String,
        /// Mirror every version of every file, live, not only what is read
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        seeding: SeedingArgs,
    },
    /// Announce a drive and look up its peers (flags pick one), persisted
    Seed {
        url: String,
        #[command(flatten)]
        seeding: SeedingArgs,
    },
    /// Stop announcing a drive and looking up its peers
    Unseed { url: String },
    /// App messages: send each line of stdin on the extension NAME of the drive's
    /// (metadata) channel and print what its peers send on it
    Ext {
        url: String,
        name: String,
        #[command(flatten)]
        ext: ExtArgs,
    },
    /// Show a drive's keys, version, size, storage and peers
    Info { url: String },
    /// List the daemon's drives
    List,
    /// Stop following or serving a drive and delete its local data
    RmDrive { url: String },
    /// List a directory (with -l: mode, owner, size, time in UTC, name)
    Ls {
        url: String,
        /// Everything below, paths relative to the directory
        #[arg(short, long)]
        recursive: bool,
        /// Long listing, like `ls -l`
        #[arg(short = 'l', long)]
        long: bool,
        /// Leave mounted drives out
        #[arg(long)]
        no_mounts: bool,
    },
    /// Write a file's bytes to stdout
    Cat {
        url: String,
        /// First byte
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// End (exclusive) [default: the end of the file]
        #[arg(long)]
        end: Option<u64>,
        /// How long hyperd waits for peers to serve a block [default: 30 s]
        #[arg(long, value_name = "MS", default_value_t = 0)]
        timeout_ms: u32,
        /// Read through the API, not from the daemon's storage even where it can be read
        #[arg(long)]
        stream: bool,
    },
    /// Write a local file (- for stdin) to a drive path (a URL ending in / keeps the name)
    Put { local: PathBuf, url: String },
    /// Copy a file out of a drive [LOCAL: default its name here; a directory; - for stdout]
    Get {
        url: String,
        local: Option<PathBuf>,
        /// Read through the API, not from the daemon's storage even where it can be read
        #[arg(long)]
        stream: bool,
    },
    /// Show an entry's attributes (a symlink itself, unless -L)
    Stat {
        url: String,
        /// Follow a final symlink
        #[arg(short = 'L', long)]
        dereference: bool,
    },
    /// Create a directory
    Mkdir { url: String },
    /// Remove a file, a symlink or an empty directory (with -r, a whole tree)
    Rm {
        url: String,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Move an entry within its drive (TO: a URL of the same drive or an absolute path)
    Mv { from: String, to: String },
    /// Make a symbolic link at URL pointing to TARGET
    Ln {
        /// Symbolic (the only kind a drive has)
        #[arg(short = 's', long = "symbolic", required = true)]
        symbolic: bool,
        target: String,
        url: String,
    },
    /// Cut or extend (with zeros) a file to SIZE bytes
    Truncate { url: String, size: u64 },
    /// Set (KEY=VALUE) and delete per-file metadata, then print it
    Meta {
        url: String,
        /// KEY=VALUE pairs to set
        set: Vec<String>,
        /// Keys to delete
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Mount a drive (or a hypercore) by key at a path
    Mount {
        url: String,
        key: String,
        /// Pin the mount at this version
        #[arg(long)]
        version: Option<u64>,
        /// KEY is a raw hypercore, not a drive
        #[arg(long)]
        hypercore: bool,
    },
    /// Remove the mount at a path
    Unmount { url: String },
    /// List the mounts below a path
    Mounts { url: String },
    /// The drive's history: each change with the version it made
    Log {
        url: String,
        /// Start after this version
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Stop at this version
        #[arg(long)]
        until: Option<u64>,
        /// Keep printing new changes
        #[arg(long)]
        live: bool,
    },
    /// What changed under a path between two versions
    Diff {
        url: String,
        /// The older version
        #[arg(long)]
        from: u64,
        /// The newer version [default: the URL's, else the latest]
        #[arg(long)]
        to: Option<u64>,
    },
    /// Print changes under a path as they happen
    Watch { url: String },
    /// Fetch a file or a tree from peers, with progress
    Download { url: String },
    /// Delete the local copy of a file's or a tree's content
    Clear { url: String },
    /// Content blocks stored per file below a path
    Stats { url: String },
    /// Copy a local folder into a drive path: only what changed is written
    Import {
        dir: PathBuf,
        url: String,
        /// Also remove drive entries the folder does not have
        #[arg(long)]
        delete: bool,
        /// Report what would change, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy a drive path out to a local folder (created if missing)
    Export {
        url: String,
        dir: PathBuf,
        /// Report what would be written, write nothing
        #[arg(long)]
        dry_run: bool,
        /// How long hyperd waits for peers to serve blocks before it gives up [default: 30 s]
        #[arg(long, value_name = "MS", default_value_t = 0)]
        timeout_ms: u32,
    },
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Connect to a peer and replicate every core with it (redialled until removed)
    Connect {
        /// HOST:PORT (IPv6 as [::1]:PORT)
        address: String,
        /// Don't redial when the connection ends
        #[arg(long)]
        once: bool,
    },
    /// List connected peers
    #[command(visible_alias = "list")]
    Ls,
    /// Disconnect a peer (an address or a remote key) and forget its address
    #[command(visible_alias = "disconnect")]
    Rm { peer: String },
    /// Print peers joining and leaving as it happens
    Watch,
}

#[derive(Subcommand)]
enum SwarmCommand {
    /// The DHT's address and bootstrap nodes, and each drive and core joined with what
    /// its last walk found
    Status,
    /// Join a drive or core (KEY: its key or hyper:// URL): announce it and look up its
    /// peers, or what the flags pick; persisted
    Join {
        key: String,
        #[command(flatten)]
        seeding: SeedingArgs,
    },
    /// Leave a drive or core: no more announcing nor looking up
    Leave { key: String },
    /// The drives and cores joined, how, and the peers their last walk found
    #[command(visible_alias = "list")]
    Ls,
    /// Per drive and core joined, the peers it replicates with and how each was found
    Peers,
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Write the service file (and with --now, enable and start it)
    Install {
        /// The hyperd executable [default: next to hyperctl, else on PATH]
        #[arg(long, value_name = "PATH")]
        hyperd: Option<PathBuf>,
        /// Also enable and start the service now
        #[arg(long)]
        now: bool,
    },
    /// Remove the service file (and with --now, stop and disable the service first)
    Uninstall {
        /// Also stop and disable the service now
        #[arg(long)]
        now: bool,
    },
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 31_536_000.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("expected seconds greater than 0, got '{text}'"))
}

fn parse_block_size(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_BLOCK_SIZE).contains(n))
        .ok_or_else(|| format!("expected a size from 1 to {MAX_BLOCK_SIZE} bytes, got '{text}'"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(run(cli));
    // A reader thread may still be blocked on stdin; don't wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<BrokenPipe>().is_some() => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints `hyperctl: <message>` on one line and returns exit code 1.
fn fail(error: &anyhow::Error) -> ExitCode {
    let text = format!("{error:#}");
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    output::note(format!("hyperctl: {line}"));
    ExitCode::from(1)
}

/// Help and version go to stdout (exit 0); a bare `hyperctl` or `hyperctl core` shows
/// help (exit 2); any other usage error is one line (exit 2).
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => error.exit(),
        _ => {}
    }
    // "error: <message>", maybe indented details and tips, then usage and a hint.
    let text = error.to_string();
    let mut message = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        let line = line.trim_start_matches("error: ");
        if !message.is_empty() {
            message.push_str(if line.starts_with("tip:") { "; " } else { " " });
        }
        message.push_str(line);
    }
    if message.is_empty() {
        message.push_str("invalid usage");
    }
    let command = command_path(std::env::args().skip(1));
    output::note(format!("hyperctl: {message} (see `{command} --help`)"));
    ExitCode::from(2)
}

/// "hyperctl core get": the (sub)commands named on the command line, for help hints.
fn command_path(args: impl Iterator<Item = String>) -> String {
    let mut command = Cli::command();
    let mut path = vec!["hyperctl".to_string()];
    for arg in args {
        let Some(sub) = command.find_subcommand(&arg).cloned() else {
            continue;
        };
        path.push(sub.get_name().to_string());
        command = sub;
    }
    path.join(" ")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = || Home::resolve(cli.home.as_deref()).map_err(anyhow::Error::new);
    let (json, timeout) = (cli.json, cli.timeout);
    match cli.command {
        Command::Start {
            hyperd,
            listen,
            config,
        } => {
            let options = StartOptions {
                hyperd,
                listen,
                config,
            };
            daemon_cmds::start(&home()?, options, timeout, json).await
        }
        Command::Stop => daemon_cmds::stop(&home()?, timeout, json).await,
        Command::Status => daemon_cmds::status(&home()?, timeout, json).await,
        Command::Core(command) => core(&home()?, command, timeout, json).await,
        Command::Drive(command) => drive(&home()?, command, timeout, json).await,
        Command::Peer(command) => peer(&home()?, command, timeout, json).await,
        Command::Swarm(command) => swarm(&home()?, command, timeout, json).await,
        Command::Service(ServiceCommand::Install { hyperd, now }) => {
            let options = service::InstallOptions {
                hyperd: hyperd.as_deref(),
                home_arg: cli.home.as_deref(),
                now,
            };
            service::install(&home()?, options, json).await
        }
        Command::Service(ServiceCommand::Uninstall { now }) => service::uninstall(now, json),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hyperctl", &mut script);
            output::write_raw(&script)
        }
    }
}

async fn core(
    home: &Home,
    command: CoreCommand,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<()> {
    // Keys are checked before connecting: a typo is reported without a daemon.
    let client = |key: &str| {
        let key = Key::parse(key);
        async move {
            let key = key?;
            let client: Client = connect::connect(home, timeout).await?;
            anyhow::Ok((client, key))
        }
    };
    match command {
        CoreCommand::Create {
            name,
            force,
            seeding,
        } => {
            let client = connect::connect(home, timeout).await?;
            let seeding = seeding.asked(SEED);
            cores::create(&client, name, force, seeding, json).await
        }
        CoreCommand::Follow { key, all, seeding } => {
            let (client, key) = client(&key).await?;
            let seeding = seeding.asked(LOOKUP);
            cores::follow(&client, key, all, seeding, json).await
        }
        CoreCommand::Seed { key, seeding } => {
            let (client, key) = client(&key).await?;
            hyperctl::swarm::join(&client, key.hex(), seeding.seed(), json).await
        }
        CoreCommand::Unseed { key } => {
            let (client, key) = client(&key).await?;
            hyperctl::swarm::leave(&client, key.hex(), json).await
        }
        CoreCommand::Ext { key, name, ext } => {
            let (client, key) = client(&key).await?;
            hyperctl::extensions::ext(&client, ext.options(key.hex(), name), json).await
        }
        CoreCommand::Info { key } => {
            let (client, key) = client(&key).await?;
            cores::info(&client, key, json).await
        }
        CoreCommand::List => {
            let client = connect::connect(home, timeout).await?;
            cores::list(&client, json).await
        }
        CoreCommand::Append {
            key,
            data,
            file,
            block_size,
        } => {
            if block_size.is_some() && file.is_none() {
                anyhow::bail!(
                    "--block-size applies to --file only; each DATA argument is one block"
                );
            }
            if data.is_empty() && file.is_none() {
                let _ = Key::parse(&key)?;
                anyhow::bail!("nothing to append: give DATA arguments (one block each) or --file FILE (- for stdin)");
            }
            let (client, key) = client(&key).await?;
            match file {
                Some(file) => {
                    let block_size = block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
                    cores::append_file(&client, key, &file, block_size, json).await
                }
                None => cores::append(&client, key, data, json).await,
            }
        }
        CoreCommand::Get {
            key,
            index,
            timeout_ms,
        } => {
            let (client, key) = client(&key).await?;
            cores::get(&client, key, index, timeout_ms, json).await
        }
        CoreCommand::Cat {
            key,
            start,
            end,
            live,
            wait,
        } => {
            let (client, key) = client(&key).await?;
            let options = CatOptions {
                start,
                end,
                live,
                wait,
            };
            cores::cat(&client, key, options, json).await
        }
        CoreCommand::Download {
            key,
            start,
            end,
            linear,
        } => {
            let (client, key) = client(&key).await?;
            cores::download(&client, key, start, end, linear, json).await
        }
        CoreCommand::Clear { key, start, end } => {
            let (client, key) = client(&key).await?;
            cores::clear(&client, key, start, end, json).await
        }
        CoreCommand::Audit { key } => {
            let (client, key) = client(&key).await?;
            cores::audit(&client, key, json).await
        }
        CoreCommand::Rm { key } => {
            let (client, key) = client(&key).await?;
            cores::remove(&client, key, json).await
        }
        CoreCommand::Watch { key } => {
            let (client, key) = client(&key).await?;
            cores::watch(&client, key, json).await
        }
    }
}

/// The defaults of `create` and `follow` for a flag left out.
const SEED: Seeding = Seeding {
    announce: true,
    lookup: true,
};
const LOOKUP: Seeding = Seeding {
    announce: false,
    lookup: true,
};

async fn swarm(
    home: &Home,
    command: SwarmCommand,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<()> {
    // A key is checked before connecting: a typo is reported without a daemon.
    let key = match &command {
        SwarmCommand::Join { key, .. } | SwarmCommand::Leave { key } => {
            Some(Key::parse(key)?.hex())
        }
        SwarmCommand::Status | SwarmCommand::Ls | SwarmCommand::Peers => None,
    };
    let client = connect::connect(home, timeout).await?;
    let c = &client;
    match (command, key) {
        (SwarmCommand::Join { seeding, .. }, Some(key)) => {
            hyperctl::swarm::join(c, key, seeding.seed(), json).await
        }
        (SwarmCommand::Leave { .. }, Some(key)) => hyperctl::swarm::leave(c, key, json).await,
        (SwarmCommand::Ls, _) => hyperctl::swarm::list(c, json).await,
        (SwarmCommand::Peers, _) => hyperctl::swarm::peers(c, json).await,
        _ => hyperctl::swarm::status(c, json).await,
    }
}

/// The URL arguments of a drive command, checked before connecting.
fn drive_urls(command: &DriveCommand) -> anyhow::Result<()> {
    use DriveCommand as D;
    let urls: Vec<&str> = match command {
        D::Create { .. } | D::List => vec![],
        D::Seed { url, .. } | D::Unseed { url } | D::Ext { url, .. } => vec![url],
        D::Mv { from, to } if to.starts_with('/') => vec![from],
        D::Mv { from, to } => vec![from, to],
        D::Mount { url, key, .. } => {
            Key::parse(key)?;
            vec![url]
        }
        D::Follow { url, .. }
        | D::Info { url }
        | D::RmDrive { url }
        | D::Ls { url, .. }
        | D::Cat { url, .. }
        | D::Put { url, .. }
        | D::Get { url, .. }
        | D::Stat { url, .. }
        | D::Mkdir { url }
        | D::Rm { url, .. }
        | D::Ln { url, .. }
        | D::Truncate { url, .. }
        | D::Meta { url, .. }
        | D::Unmount { url }
        | D::Mounts { url }
        | D::Log { url, .. }
        | D::Diff { url, .. }
        | D::Watch { url }
        | D::Download { url }
        | D::Clear { url }
        | D::Stats { url }
        | D::Import { url, .. }
        | D::Export { url, .. } => vec![url],
    };
    for url in urls {
        Url::parse(url)?;
    }
    Ok(())
}

async fn drive(
    home: &Home,
    command: DriveCommand,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<()> {
    use DriveCommand as D;
    // A typo is reported without a daemon.
    drive_urls(&command)?;
    let url = |text: &str| Url::parse(text);
    let via = |stream: bool| match stream {
        true => drives::Via::Api,
        false => drives::Via::Storage,
    };
    let client = connect::connect(home, timeout).await?;
    let c = &client;
    match command {
        D::Create { name, seeding } => drives::create(c, name, seeding.asked(SEED), json).await,
        D::Follow {
            url: u,
            all,
            seeding,
        } => drives::follow(c, url(&u)?, all, seeding.asked(LOOKUP), json).await,
        D::Seed { url: u, seeding } => {
            hyperctl::swarm::join(c, url(&u)?.key_hex(), seeding.seed(), json).await
        }
        D::Unseed { url: u } => hyperctl::swarm::leave(c, url(&u)?.key_hex(), json).await,
        D::Ext { url: u, name, ext } => {
            let options = ext.options(url(&u)?.key_hex(), name);
            hyperctl::extensions::ext(c, options, json).await
        }
        D::Info { url: u } => drives::info(c, url(&u)?, json).await,
        D::List => drives::list(c, json).await,
        D::RmDrive { url: u } => drives::remove(c, url(&u)?, json).await,
        D::Ls {
            url: u,
            recursive,
            long,
            no_mounts,
        } => {
            let options = LsOptions {
                recursive,
                long,
                no_mounts,
            };
            drives::ls(c, url(&u)?, options, json).await
        }
        D::Cat {
            url: u,
            start,
            end,
            timeout_ms,
            stream,
        } => drives::cat(c, url(&u)?, (start, end), timeout_ms, via(stream)).await,
        D::Put { local, url: u } => drives::put(c, &local, url(&u)?, json).await,
        D::Get {
            url: u,
            local,
            stream,
        } => drives::get(c, url(&u)?, local, via(stream), json).await,
        D::Stat {
            url: u,
            dereference,
        } => drives::stat(c, url(&u)?, dereference, json).await,
        D::Mkdir { url: u } => drives::mkdir(c, url(&u)?, json).await,
        D::Rm { url: u, recursive } => drives::rm(c, url(&u)?, recursive, json).await,
        D::Mv { from, to } => drives::mv(c, url(&from)?, &to, json).await,
        D::Ln { target, url: u, .. } => drives::symlink(c, target, url(&u)?, json).await,
        D::Truncate { url: u, size } => drives::truncate(c, url(&u)?, size, json).await,
        D::Meta {
            url: u,
            set,
            delete,
        } => drives::meta(c, url(&u)?, set, delete, json).await,
        D::Mount {
            url: u,
            key,
            version,
            hypercore,
        } => drives::mount(c, url(&u)?, Key::parse(&key)?, version, hypercore, json).await,
        D::Unmount { url: u } => drives::unmount(c, url(&u)?, json).await,
        D::Mounts { url: u } => drives::mounts(c, url(&u)?, json).await,
        D::Log {
            url: u,
            since,
            until,
            live,
        } => drives::log(c, url(&u)?, since, until, live, json).await,
        D::Diff { url: u, from, to } => drives::diff(c, url(&u)?, from, to, json).await,
        D::Watch { url: u } => drives::watch(c, url(&u)?, json).await,
        D::Download { url: u } => drives::download(c, url(&u)?, json).await,
        D::Clear { url: u } => drives::clear(c, url(&u)?, json).await,
        D::Stats { url: u } => drives::stats(c, url(&u)?, json).await,
        D::Import {
            dir,
            url: u,
            delete,
            dry_run,
        } => drives::import(c, &dir, url(&u)?, delete, dry_run, json).await,
        D::Export {
            url: u,
            dir,
            dry_run,
            timeout_ms,
        } => drives::export(c, url(&u)?, &dir, dry_run, timeout_ms, json).await,
    }
}

async fn peer(
    home: &Home,
    command: PeerCommand,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<()> {
    if let PeerCommand::Connect { address, .. } = &command {
        peers::check_address(address)?;
    }
    let client = connect::connect(home, timeout).await?;
    match command {
        PeerCommand::Connect { address, once } => {
            peers::connect(&client, address, once, json).await
        }
        PeerCommand::Ls => peers::list(&client, json).await,
        PeerCommand::Rm { peer } => peers::remove(&client, peer, json).await,
        PeerCommand::Watch => peers::watch(&client, json).await,
    }
}
