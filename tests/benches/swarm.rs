//! The `swarm` benchmark: discovery in `hyperd` and the Rust DHT client against JS
//! hyperswarm 2 / @hyperswarm/dht 4 in the same run, over one DHT of 20 nodes on loopback.
//!
//! ```text
//! cargo build --release --bins && cargo bench -p hyperd-tests --bench swarm
//! cargo bench -p hyperd-tests --bench swarm -- --only follow      # or idle, lookup (comma-separated)
//! cargo bench -p hyperd-tests --bench swarm -- --runs 9           # follow runs per side (default 5)
//! cargo bench -p hyperd-tests --bench swarm -- --lookups 500      # lookups per side (default 200)
//! cargo bench -p hyperd-tests --bench swarm -- --idle-secs 20     # the idle window (default 60)
//! cargo bench -p hyperd-tests --bench swarm -- --json             # JSON on stdout, table on stderr
//! ```
//!
//! The DHT: a `hyperd bootstrap` node on 127.0.0.2 and 19 persistent JS nodes
//! (`interop/dht-nodes.js`, one process) on 127.0.0.10–28 that bootstrap from it, one after
//! another, and then once more, so every node knows the others and a walk really goes
//! from node to node (checked: the bootstrap node and a JS node each name 19 others).
//! Everything runs on loopback; daemons run with `--no-mdns` and the JS swarms with mDNS
//! stubbed (`loopbackSwarm` in `interop/common.js`), so nothing leaves the machine.
//!
//! * `follow`: time to the first block of a core found through the DHT. A seeder announces
//!   a core of one 1 KiB block: a `hyperd` that created it (Rust), a hyperswarm 2 +
//!   hypercore 9 peer (`interop/swarm-bench.js`, JS). Each run starts a fresh follower and
//!   waits until it is ready, then times: Rust, the gRPC `Follow` of the key (looked up)
//!   until a `Get` of block 0 that waits for peers returns it; JS, opening the feed,
//!   `swarm.join(discoveryKey, {lookup: true})` and `feed.get(0)` until the block is there
//!   (its swarm listening and its DHT bootstrapped before). One uncounted warm-up run per
//!   side, then the sides alternate. Target: Rust ≤ ½ of JS.
//! * `idle`: a `hyperd` that created 1,000 cores (each announced and looked up) and a
//!   hyperswarm 2 process joined to 1,000 random topics (announce and lookup), set up one
//!   after the other; once both have ended every first walk, the CPU time each uses over
//!   one minute of idle, the same minute for both (`/proc/PID/stat`), and their resident
//!   memory (`VmRSS`), the median of readings every 2 s through it. The JS process holds
//!   topics only, no feeds, while `hyperd` also keeps its 1,000 cores. Checked: neither
//!   walked again during the minute.
//! * `lookup`: a third DHT client (Rust, on 127.0.0.3) announces 10 topics; then a fresh
//!   Rust [`Dht`] client and a JS `@hyperswarm/dht` client (`interop/dht-client.js`,
//!   ephemeral, bootstrapped) each look them up, one lookup at a time, 200 times, in 20
//!   rounds that alternate the sides, after an uncounted pass of 200 lookups by each: node's
//!   compiled code, the JS client's and the JS nodes', gets faster over the first few
//!   hundred (whichever side went first was slowed down); each lookup is timed until its
//!   walk ended, and must find the announcer.
//!   Median and p99 of each side, and the JS nodes' CPU time per lookup.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hyperd_proto::v1::cores_client::CoresClient;
use hyperd_proto::v1::{AppendRequest, CreateRequest, FollowRequest, GetRequest};
use hyperd_tests::bench::{
    percentile, progress, table, warn_if_binaries_stale, Figure, Machine, Row,
};
use hyperd_tests::daemon::{rss_of, Daemon};
use hyperd_tests::js_peer::JsPeer;
use hyperd_tests::swarm::{daemon_with_bootstrap, BootstrapNode};
use hyperd_tests::{make_block, process_cpu_seconds};
use hyperswarm::{compact, Dht, Id, Message, MessageType};
use serde_json::{json, Value};

/// JS DHT nodes besides the `hyperd bootstrap` node.
const JS_NODES: usize = 19;
/// Their addresses: 127.0.0.10 and on.
const JS_FIRST_HOST: &str = "127.0.0.10";
const BLOCK_SIZE: usize = 1024;
/// How long a follower may take to get the first block.
const FOLLOW_LIMIT: Duration = Duration::from_secs(30);
/// Topics announced for the lookups.
const LOOKUP_TOPICS: usize = 10;
/// Rounds of lookups, the sides alternating, so that both meet the machine's moods.
const LOOKUP_ROUNDS: usize = 20;
/// Cores created at once when setting up the idle `hyperd`.
const IN_FLIGHT: usize = 16;
/// How long the first walks of 1,000 topics may take.
const WALKS_LIMIT: Duration = Duration::from_secs(120);
const MIB: f64 = (1 << 20) as f64;
/// How often resident memory is read during the idle window.
const RSS_EVERY: Duration = Duration::from_secs(2);

const WORKLOADS: [&str; 3] = ["lookup", "follow", "idle"];

struct Args {
    only: Vec<String>,
    runs: usize,
    lookups: usize,
    idle_secs: u64,
    topics: usize,
    json: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        only: WORKLOADS.iter().map(ToString::to_string).collect(),
        runs: 5,
        lookups: 200,
        idle_secs: 60,
        topics: 1000,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next())
                .with_context(|| format!("{name} takes a value"))
        };
        match flag.as_str() {
            "--only" => {
                args.only = value("--only")?.split(',').map(str::to_string).collect();
                if let Some(bad) = args.only.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
                    bail!("--only: unknown workload {bad:?} (one of {WORKLOADS:?})");
                }
            }
            "--runs" => args.runs = value("--runs")?.parse().context("--runs")?,
            "--lookups" => args.lookups = value("--lookups")?.parse().context("--lookups")?,
            "--idle-secs" => {
                args.idle_secs = value("--idle-secs")?.parse().context("--idle-secs")?
            }
            "--topics" => args.topics = value("--topics")?.parse().context("--topics")?,
            "--json" => args.json = true,
            // `cargo bench` passes --bench.
            _ => {}
        }
    }
    ensure!(
        args.runs >= 1 && args.lookups >= 1,
        "--runs and --lookups must be at least 1"
    );
    Ok(args)
}

impl Args {
    fn wants(&self, workload: &str) -> bool {
        self.only.iter().any(|w| w == workload)
    }
}

/// The 20-node loopback DHT both sides use; its processes end when it is dropped.
struct TestDht {
    bootstrap: BootstrapNode,
    js_nodes: JsPeer,
}

impl TestDht {
    async fn start() -> Result<TestDht> {
        let bootstrap = BootstrapNode::start()?;
        let count = JS_NODES.to_string();
        let (js_nodes, ready) = JsPeer::spawn(
            "dht-nodes.js",
            &[
                "--count",
                &count,
                "--first-host",
                JS_FIRST_HOST,
                "--bootstrap",
                &bootstrap.addr,
            ],
        )
        .await?;
        let nodes = ready["nodes"]
            .as_array()
            .context("dht-nodes.js named no nodes")?;
        ensure!(nodes.len() == JS_NODES, "dht-nodes.js started {ready}");
        let dht = TestDht {
            bootstrap,
            js_nodes,
        };
        // It routes: the bootstrap node and a JS node each know all the others.
        let probe = Dht::bind("127.0.0.1:0".parse()?, vec![dht.addr()?]).await?;
        let js_node: SocketAddrV4 = format!(
            "{}:{}",
            nodes[0]["host"].as_str().unwrap_or_default(),
            nodes[0]["port"]
        )
        .parse()?;
        for node in [dht.addr()?, js_node] {
            let known = known_nodes(&probe, node).await?;
            ensure!(
                known >= JS_NODES,
                "DHT node {node} knows only {known} other nodes"
            );
        }
        progress(&format!(
            "DHT: hyperd bootstrap on {} and {JS_NODES} JS nodes from {JS_FIRST_HOST}",
            dht.bootstrap.addr
        ));
        Ok(dht)
    }

    fn addr(&self) -> Result<SocketAddrV4> {
        self.bootstrap
            .addr
            .parse()
            .with_context(|| format!("bootstrap address {}", self.bootstrap.addr))
    }
}

/// How many nodes `node` names when asked `_find_node` for a random target.
async fn known_nodes(dht: &Dht, node: SocketAddrV4) -> Result<usize> {
    let target: [u8; 32] = rand::random();
    let message = Message {
        target: Some(bytes::Bytes::copy_from_slice(&target)),
        ..Message::request(MessageType::Query, "_find_node")
    };
    let reply = dht.request(node, message).await?;
    let nodes = reply
        .message
        .closer_nodes
        .as_deref()
        .map(compact::decode_nodes)
        .transpose()?
        .unwrap_or_default();
    Ok(nodes.len())
}

// ---------------------------------------------------------------------------------------
// follow

async fn follow(dht: &TestDht, runs: usize, work: &std::path::Path) -> Result<(Row, Value)> {
    let bootstrap = &dht.bootstrap.addr;
    let block = make_block(0, BLOCK_SIZE);

    // The Rust seeder: a hyperd that created the core, appended the block and announced it.
    let seeder = daemon_with_bootstrap(&work.join("rust-seed"), bootstrap, "127.0.0.1:0")?;
    let mut cores = CoresClient::new(seeder.channel().await?);
    let key = cores
        .create(CreateRequest::default())
        .await?
        .into_inner()
        .key;
    cores
        .append(AppendRequest {
            key: key.clone(),
            blocks: vec![block.clone().into()],
        })
        .await?;
    wait_walked(&seeder, 1).await?;

    // The JS seeder.
    let (mut js_seeder, _) = JsPeer::spawn(
        "swarm-bench.js",
        &[
            "--dir",
            path(&work.join("js-seed"))?,
            "--bootstrap",
            bootstrap,
        ],
    )
    .await?;
    let js_key = js_seeder.call(json!({ "cmd": "seed" })).await?["key"]
        .as_str()
        .context("no key")?
        .to_string();

    let mut rust = Figure::new("ms");
    let mut js = Figure::new("ms");
    let mut js_steps = Vec::new();
    let mut rust_follow_returned = Vec::new();
    for run in 0..=runs {
        let (r, r_follow) =
            follow_rust(bootstrap, &key, &block, &work.join(format!("rust-{run}"))).await?;
        let j = follow_js(bootstrap, &js_key, &work.join(format!("js-{run}"))).await?;
        let step = |name: &str| j[name].as_f64().unwrap_or(f64::NAN);
        let what = if run == 0 { "warm-up" } else { "run" };
        progress(&format!(
            "follow {what} {run}: hyperd {r:.1} ms (Follow returned after {r_follow:.1} ms), \
             JS {:.1} ms (from the join: first peer {:.1} ms, connection {:.1} ms, block \
             {:.1} ms)",
            step("ms"),
            step("peerMs"),
            step("connectionMs"),
            step("joinMs"),
        ));
        if run > 0 {
            rust.runs.push(r);
            js.runs.push(step("ms"));
            js_steps.push(j);
            rust_follow_returned.push(r_follow);
        }
    }
    drop(js_seeder);
    drop(seeder);
    let row = Row::lower_is_better(
        "follow",
        "follow -> first block over the DHT",
        rust,
        ("JS", js),
        Some((2.0, "<= 1/2 JS")),
    );
    let details = json!({ "jsRuns": js_steps, "rustFollowReturnedMs": rust_follow_returned });
    Ok((row, details))
}

/// One Rust run: a fresh hyperd follows `key` and gets block 0; ms from the `Follow`
/// call to the block, and until `Follow` returned.
async fn follow_rust(
    bootstrap: &str,
    key: &str,
    block: &[u8],
    home: &std::path::Path,
) -> Result<(f64, f64)> {
    let follower = daemon_with_bootstrap(home, bootstrap, "127.0.0.1:0")?;
    let mut cores = CoresClient::new(follower.channel().await?);
    let start = Instant::now();
    cores
        .follow(FollowRequest {
            key: key.to_string(),
            download_all: false,
            seeding: None,
        })
        .await?;
    let followed = start.elapsed().as_secs_f64() * 1e3;
    let got = cores
        .get(GetRequest {
            key: key.to_string(),
            index: 0,
            timeout_ms: FOLLOW_LIMIT.as_millis() as u64,
        })
        .await
        .with_context(|| format!("getting block 0 of {key}:\n{}", follower.log()))?
        .into_inner()
        .data;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    ensure!(got == block, "hyperd got another block 0");
    Ok((ms, followed))
}

/// One JS run: a fresh swarm-bench.js follows `key`; its answer (`ms` from opening the
/// feed; `joinMs`, `peerMs`, `connectionMs` from the join).
async fn follow_js(bootstrap: &str, key: &str, dir: &std::path::Path) -> Result<Value> {
    let (mut follower, _) = JsPeer::spawn(
        "swarm-bench.js",
        &["--dir", path(dir)?, "--bootstrap", bootstrap],
    )
    .await?;
    let got = follower
        .call(json!({ "cmd": "follow", "key": key }))
        .await?;
    ensure!(
        got["bytes"] == BLOCK_SIZE && got["ms"].is_f64(),
        "JS got {got}"
    );
    follower.finish().await?;
    Ok(got)
}

/// Waits until `daemon`'s swarm status shows `topics` topics, each walked at least once
/// and without error.
async fn wait_walked(daemon: &Daemon, topics: usize) -> Result<()> {
    let start = Instant::now();
    loop {
        let status = daemon.ctl_json(&["swarm", "status"])?;
        let all = status["topics"].as_array().context("no topics")?;
        let walked = all
            .iter()
            .filter(|t| t["walks"].as_u64() >= Some(1))
            .count();
        if all.len() == topics && walked == topics {
            if let Some(failed) = all.iter().find(|t| t["lastError"] != "") {
                bail!("a walk failed: {failed}");
            }
            return Ok(());
        }
        if start.elapsed() > WALKS_LIMIT {
            bail!("{walked} of {topics} topics walked after {WALKS_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------
// idle

async fn idle(dht: &TestDht, args: &Args, work: &std::path::Path) -> Result<(Vec<Row>, Value)> {
    let bootstrap = &dht.bootstrap.addr;
    let n = args.topics;

    let daemon = daemon_with_bootstrap(&work.join("rust-idle"), bootstrap, "127.0.0.1:0")?;
    let channel = daemon.channel().await?;
    let start = Instant::now();
    let mut creating = tokio::task::JoinSet::new();
    for i in 0..n {
        if creating.len() >= IN_FLIGHT {
            creating.join_next().await.context("no task")???;
        }
        let mut cores = CoresClient::new(channel.clone());
        creating.spawn(async move {
            cores
                .create(CreateRequest::default())
                .await
                .with_context(|| format!("creating core {i}"))
                .map(drop)
        });
    }
    while let Some(created) = creating.join_next().await {
        created??;
    }
    let created_secs = start.elapsed().as_secs_f64();
    wait_walked(&daemon, n).await?;
    let rust_walked_secs = start.elapsed().as_secs_f64();
    progress(&format!(
        "hyperd: {n} cores created in {created_secs:.1} s, all walked after {rust_walked_secs:.1} s"
    ));

    let (mut js, _) = JsPeer::spawn(
        "swarm-bench.js",
        &[
            "--dir",
            path(&work.join("js-idle"))?,
            "--bootstrap",
            bootstrap,
        ],
    )
    .await?;
    let joined = js.call(json!({ "cmd": "topics", "count": n })).await?;
    let js_walked_secs = joined["ms"].as_f64().context("no ms")? / 1e3;
    progress(&format!(
        "JS: {n} topics joined, all walked after {js_walked_secs:.1} s"
    ));

    let rust_pid = daemon.pid().context("hyperd is not running")?;
    let js_pid = js.pid().context("the JS peer is not running")?;
    let window = Duration::from_secs(args.idle_secs);
    let cpu = |pid| process_cpu_seconds(Some(pid));
    let (rust_cpu0, js_cpu0) = (cpu(rust_pid)?, cpu(js_pid)?);
    // Resident memory read every RSS_EVERY through the window: node's moves with its
    // garbage collections, hyperd's with its periodic trim.
    let mut rust_rss = Figure::new("MiB");
    let mut js_rss = Figure::new("MiB");
    progress(&format!("idle for {} s", window.as_secs()));
    let idle_start = Instant::now();
    while idle_start.elapsed() < window {
        rust_rss.runs.push(rss_of(rust_pid)? as f64 / MIB);
        js_rss.runs.push(rss_of(js_pid)? as f64 / MIB);
        tokio::time::sleep(RSS_EVERY.min(window.saturating_sub(idle_start.elapsed()))).await;
    }
    let rust_cpu = cpu(rust_pid)? - rust_cpu0;
    let js_cpu = cpu(js_pid)? - js_cpu0;
    rust_rss.runs.push(rss_of(rust_pid)? as f64 / MIB);
    js_rss.runs.push(rss_of(js_pid)? as f64 / MIB);

    // Nothing walked again in the window: what was measured is idle.
    let js_walks = js.call(json!({ "cmd": "walks" })).await?["walks"]
        .as_u64()
        .context("no walks")?;
    let status = daemon.ctl_json(&["swarm", "status"])?;
    let rust_walks: u64 = status["topics"]
        .as_array()
        .context("no topics")?
        .iter()
        .filter_map(|t| t["walks"].as_u64())
        .sum();
    ensure!(
        rust_walks == n as u64 && js_walks == n as u64,
        "walks during the idle window: hyperd {rust_walks}, JS {js_walks} for {n} topics"
    );
    let range = |f: &Figure| {
        let min = f.runs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = f.runs.iter().copied().fold(0.0, f64::max);
        format!("{:.1} MiB ({min:.1}-{max:.1})", f.median())
    };
    progress(&format!(
        "idle {} s: hyperd RSS {}, CPU {rust_cpu:.2} s; JS RSS {}, CPU {js_cpu:.2} s",
        window.as_secs(),
        range(&rust_rss),
        range(&js_rss),
    ));
    js.finish().await?;
    drop(daemon);

    let one = |v: f64, unit| Figure {
        runs: vec![v],
        unit,
    };
    let rows = vec![
        Row::lower_is_better(
            "idle-rss",
            format!("RSS, {n} topics joined, idle (median)"),
            rust_rss,
            ("JS", js_rss),
            None,
        ),
        Row::lower_is_better(
            "idle-cpu",
            format!("CPU over {} s idle, {n} topics", window.as_secs()),
            one(rust_cpu, "s"),
            ("JS", one(js_cpu, "s")),
            None,
        ),
    ];
    let extra = json!({
        "topics": n,
        "idleSecs": window.as_secs(),
        "rustCreateSecs": created_secs,
        "rustAllWalkedSecs": rust_walked_secs,
        "jsAllWalkedSecs": js_walked_secs,
    });
    Ok((rows, extra))
}

// ---------------------------------------------------------------------------------------
// lookup

async fn lookup(dht: &TestDht, lookups: usize) -> Result<(Vec<Row>, Value)> {
    let bootstrap = dht.addr()?;
    let announcer = Dht::bind("127.0.0.3:0".parse()?, vec![bootstrap]).await?;
    let topics: Vec<Id> = (0..LOOKUP_TOPICS).map(|_| Id(rand::random())).collect();
    for topic in &topics {
        announcer.announce(*topic).await?;
    }
    let announced = announcer.local_addr();

    // The JS nodes' CPU time per lookup: what answering costs them, a part of each
    // lookup's time that does not depend on the client. Both sides send them the same
    // datagrams (checked once by counting in dht-nodes.js: per lookup, 19 `peers` queries
    // of 59 bytes and 19 answers of 819, either side), so one figure for both.
    let nodes_pid = dht
        .js_nodes
        .pid()
        .context("the JS DHT nodes are not running")?;
    let nodes_cpu = || process_cpu_seconds(Some(nodes_pid));

    let client = Dht::bind("127.0.0.1:0".parse()?, vec![bootstrap]).await?;
    let (mut js_client, _) =
        JsPeer::spawn("dht-client.js", &["--bootstrap", &bootstrap.to_string()]).await?;
    let hex: Vec<String> = topics.iter().map(|t| hex::encode(t.0)).collect();
    // Uncounted: as many lookups by each side first, since node answers and asks faster
    // once it has compiled the code (whichever side went first was slowed down).
    rust_lookups(&client, &topics, announced, lookups).await?;
    js_lookups(&mut js_client, &hex, lookups).await?;

    let (mut rust, mut js) = (Vec::new(), Vec::new());
    let before = nodes_cpu()?;
    for round in 0..LOOKUP_ROUNDS {
        let count = lookups / LOOKUP_ROUNDS + usize::from(round < lookups % LOOKUP_ROUNDS);
        rust.extend(rust_lookups(&client, &topics, announced, count).await?);
        js.extend(js_lookups(&mut js_client, &hex, count).await?);
    }
    let nodes_ms = (nodes_cpu()? - before) * 1e3 / (2 * lookups) as f64;
    js_client.finish().await?;
    drop(client);
    progress(&format!(
        "the {JS_NODES} JS nodes (one process) spent {nodes_ms:.2} ms of CPU per lookup"
    ));
    drop(announcer);

    let stat = |v: &[f64], p: Option<f64>| Figure {
        runs: match p {
            None => v.to_vec(),
            Some(p) => vec![percentile(v, p)],
        },
        unit: "ms",
    };
    let rows = vec![
        Row::lower_is_better(
            "lookup-median",
            format!("DHT lookup, median of {lookups}"),
            stat(&rust, None),
            ("JS", stat(&js, None)),
            None,
        ),
        Row::lower_is_better(
            "lookup-p99",
            format!("DHT lookup, p99 of {lookups}"),
            stat(&rust, Some(99.0)),
            ("JS", stat(&js, Some(99.0))),
            None,
        ),
    ];
    let details = json!({
        "topics": LOOKUP_TOPICS,
        "jsNodesCpuMsPerLookup": nodes_ms,
    });
    Ok((rows, details))
}

/// `count` lookups by `client`, one at a time, cycling through `topics`: each one's ms.
/// Each must find `announced`.
async fn rust_lookups(
    client: &Dht,
    topics: &[Id],
    announced: SocketAddrV4,
    count: usize,
) -> Result<Vec<f64>> {
    let mut ms = Vec::with_capacity(count);
    for i in 0..count {
        let start = Instant::now();
        let found = client.lookup(topics[i % topics.len()]).await?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        ensure!(
            found.iter().any(|p| p.addr == announced),
            "a Rust lookup did not find {announced}: {found:?}"
        );
    }
    Ok(ms)
}

/// The same by the JS client (`topics` in hex); each must find a peer.
async fn js_lookups(client: &mut JsPeer, topics: &[String], count: usize) -> Result<Vec<f64>> {
    let answer = client
        .call(json!({ "cmd": "lookups", "topics": topics, "count": count }))
        .await?;
    let ms: Vec<f64> = answer["ms"]
        .as_array()
        .context("no ms")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let found = answer["found"].as_array().context("no found")?;
    ensure!(
        ms.len() == count && found.iter().all(|f| f.as_u64() >= Some(1)),
        "JS lookups: {answer}"
    );
    Ok(ms)
}

// ---------------------------------------------------------------------------------------

fn path(p: &std::path::Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    warn_if_binaries_stale()?;
    let machine = Machine::get();
    eprintln!("{}", machine.line());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("hyperd-bench-swarm")
        .tempdir()?;
    let (rows, details) = runtime.block_on(async {
        let dht = TestDht::start().await?;
        let mut rows = Vec::new();
        let mut details = serde_json::Map::new();
        if args.wants("lookup") {
            let (r, d) = lookup(&dht, args.lookups).await?;
            rows.extend(r);
            details.insert("lookup".into(), d);
        }
        if args.wants("follow") {
            let (r, d) = follow(&dht, args.runs, work.path()).await?;
            rows.push(r);
            details.insert("follow".into(), d);
        }
        if args.wants("idle") {
            let (r, d) = idle(&dht, &args, work.path()).await?;
            rows.extend(r);
            details.insert("idle".into(), d);
        }
        anyhow::Ok((rows, details))
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut report = format!(
        "{}\nload average at the start {}, now {}; {elapsed:.0} s\n\n",
        machine.line(),
        machine.load_start,
        hyperd_tests::bench::loadavg()
    );
    report.push_str(&table(&rows, "JS"));
    let json = json!({
        "machine": machine.json(),
        "seconds": elapsed,
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "details": details,
    });
    if args.json {
        eprint!("{report}");
        println!("{json}");
    } else {
        print!("{report}");
    }
    Ok(())
}
