//! Private networks for tests, made of Linux network namespaces that the test creates
//! and removes: a [`Host`] is a namespace of its own (with `lo` up) in which child
//! processes run ([`Host::command`]); a [`Lan`] is a bridge in one more namespace, and
//! [`Lan::attach`] wires a host to it with a veth pair and the next address of its
//! subnet. A host may sit on several LANs (a router, for the NAT tests to come). Nothing
//! is created in the machine's own namespace, so no test traffic (multicast included)
//! can reach a real network or a responder on the machine.
//!
//! Needs root (or CAP_SYS_ADMIN) and iproute2's `ip`. Without them [`Host::new`] fails,
//! saying so: a test that needs a namespace never passes without one. Namespaces are
//! named `hdt-<pid>-<n>-<name>`; ones left by a test process that no longer runs (it was
//! killed) are removed by the next [`Host::new`].

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use anyhow::{bail, Context, Result};

/// The prefix of every namespace made here.
const PREFIX: &str = "hdt-";

/// Namespaces made by this process so far (makes names unique).
static MADE: AtomicU32 = AtomicU32::new(0);

/// Runs `ip args…`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A fresh, unique namespace name ending in `name`, once stale ones are gone.
fn new_namespace(name: &str) -> Result<String> {
    remove_stale();
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let ns = format!("{PREFIX}{}-{n}-{name}", std::process::id());
    ip(&["netns", "add", &ns]).with_context(|| {
        format!(
            "cannot create the network namespace {ns} this test needs: it must run as root \
             (or with CAP_SYS_ADMIN) with iproute2 installed"
        )
    })?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    Ok(ns)
}

/// Removes the namespaces of test processes that no longer run.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        let pid = ns
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = ip(&["netns", "delete", ns]);
            }
        }
    }
}

/// `command` (its program, arguments, directory and environment) made to run inside the
/// namespace `netns` (`ip netns exec`, which execs the program: the child's pid is the
/// program's).
pub fn wrap(netns: &str, command: &Command) -> Command {
    let mut inside = Command::new("ip");
    inside
        .args(["netns", "exec", netns])
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        inside.current_dir(dir);
    }
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => inside.env(name, value),
            None => inside.env_remove(name),
        };
    }
    inside
}

/// A host: a network namespace of its own, removed when dropped (processes still in it
/// keep it alive until they exit).
#[derive(Debug)]
pub struct Host {
    /// The namespace's name.
    pub netns: String,
    /// Interfaces attached so far (`eth0`, `eth1`, …).
    interfaces: AtomicU8,
}

impl Host {
    /// A new host named `name` (a few letters: it ends the namespace's name) with only
    /// `lo`, up.
    pub fn new(name: &str) -> Result<Host> {
        Ok(Host {
            netns: new_namespace(name)?,
            interfaces: AtomicU8::new(0),
        })
    }

    /// A command running `program` inside the host (`ip netns exec`, which then execs
    /// it: the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]).arg(program);
        command
    }

    /// `command` (its program, arguments, directory and environment) made to run inside
    /// the host.
    pub fn wrap(&self, command: &Command) -> Command {
        wrap(&self.netns, command)
    }

    /// Runs `ip args…` inside the host.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", &self.netns];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.netns]);
    }
}

/// An Ethernet segment: a bridge in a namespace of its own, hosts attached to it by veth
/// pairs with addresses in its /24 subnet (`10.201.0.0/24` unless given another; LANs
/// joined by a router need different ones), removed when dropped.
#[derive(Debug)]
pub struct Lan {
    switch: Host,
    /// The first three bytes of its addresses: hosts get `.1`, `.2`, … in attach order.
    subnet: [u8; 3],
    /// Hosts attached so far.
    ports: AtomicU8,
}

impl Lan {
    /// A new, empty LAN on `10.201.0.0/24`.
    pub fn new() -> Result<Lan> {
        Lan::with_subnet([10, 201, 0])
    }

    /// A new, empty LAN on `subnet.0/24`.
    pub fn with_subnet(subnet: [u8; 3]) -> Result<Lan> {
        let switch = Host::new("lan")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        Ok(Lan {
            switch,
            subnet,
            ports: AtomicU8::new(0),
        })
    }

    /// A new host on this LAN that reaches everything else through `gateway` (a
    /// router on it); returns it and its address.
    pub fn add_host_behind(&self, name: &str, gateway: Ipv4Addr) -> Result<(Host, Ipv4Addr)> {
        let host = Host::new(name)?;
        let addr = self.attach(&host, false)?;
        host.ip(&["route", "add", "default", "via", &gateway.to_string()])?;
        Ok((host, addr))
    }

    /// A new host attached to this LAN; returns it and its address.
    pub fn add_host(&self, name: &str) -> Result<(Host, Ipv4Addr)> {
        let host = Host::new(name)?;
        let addr = self.attach(&host, true)?;
        Ok((host, addr))
    }

    /// Wires `host` to the LAN: a veth pair, `ethN` in the host with the LAN's next
    /// address, its other end on the bridge; with `default_route`, the host sends
    /// whatever has no other route (multicast included) out of it.
    pub fn attach(&self, host: &Host, default_route: bool) -> Result<Ipv4Addr> {
        let port = self.ports.fetch_add(1, Ordering::Relaxed);
        if port >= 250 {
            bail!("the LAN is full");
        }
        let [a, b, c] = self.subnet;
        let addr = Ipv4Addr::new(a, b, c, port + 1);
        let eth = format!("eth{}", host.interfaces.fetch_add(1, Ordering::Relaxed));
        let outside = format!("p{port}");
        self.switch.ip(&[
            "link",
            "add",
            &outside,
            "type",
            "veth",
            "peer",
            "name",
            &eth,
            "netns",
            &host.netns,
        ])?;
        self.switch
            .ip(&["link", "set", &outside, "master", "br0", "up"])?;
        host.ip(&["addr", "add", &format!("{addr}/24"), "dev", &eth])?;
        host.ip(&["link", "set", &eth, "up"])?;
        if default_route {
            host.ip(&["route", "add", "default", "dev", &eth])?;
        }
        Ok(addr)
    }
}

/// A NAT router: a host on the `inside` LAN (the gateway of the hosts added behind it)
/// and on the `outside` one, forwarding between them and masquerading what leaves
/// through `outside` as Linux home routers do (iptables `MASQUERADE`: connections
/// from inside get its outside address, the port kept when free; nothing from outside
/// gets in unless it answers a mapping from inside, and what comes unasked is dropped).
#[derive(Debug)]
pub struct Nat {
    /// The router's namespace.
    pub host: Host,
    /// Its address on the inside LAN: the gateway to give hosts behind it.
    pub inside: Ipv4Addr,
    /// Its address on the outside LAN: what hosts behind it look like from there.
    pub outside: Ipv4Addr,
}

impl Nat {
    /// A router between `inside` (attached first, so it gets the LAN's first free
    /// address) and `outside` (its default route). Needs iptables.
    pub fn new(name: &str, inside: &Lan, outside: &Lan) -> Result<Nat> {
        let host = Host::new(name)?;
        let inside_addr = inside.attach(&host, false)?;
        let outside_addr = outside.attach(&host, true)?;
        let out_dev = format!("eth{}", host.interfaces.load(Ordering::Relaxed) - 1);
        run(host
            .command("sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"]))?;
        run(host.command("iptables").args([
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            &out_dev,
            "-j",
            "MASQUERADE",
        ]))
        .context("setting up the NAT (install iptables)")?;
        // As home routers, drop what comes unasked to the router itself. Besides, a
        // packet let in to a closed port would leave a connection-tracking entry that
        // makes the router move the port of an answer from inside (a clash), which no
        // router with a firewall does.
        run(host.command("iptables").args([
            "-A",
            "INPUT",
            "-i",
            &out_dev,
            "-m",
            "conntrack",
            "--ctstate",
            "NEW,INVALID",
            "-j",
            "DROP",
        ]))?;
        Ok(Nat {
            host,
            inside: inside_addr,
            outside: outside_addr,
        })
    }
}

/// Runs `command`, failing with its stderr.
fn run(command: &mut Command) -> Result<()> {
    let out = command
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            command,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
