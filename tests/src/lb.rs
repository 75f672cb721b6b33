//! A load-balancing lab: two hav-agents `a` (priority 150) and `b` (100) balancing real servers
//! `rs1..` (each a `hav-test-httpd` answering its name over TCP and UDP) for a client in its own
//! namespace, in NAT or DR mode, and the client's side of it: connections counted per real server,
//! with their connect latency.
//!
//! - **NAT**: the client and the VIP 203.0.113.1 on LAN `front`; the real servers on LAN `back`
//!   (198.51.100.0/24) route back through 198.51.100.1, a second VIP of the same instance, so
//!   replies follow the master.
//! - **DR**: one LAN (198.51.100.0/24); the real servers hold the VIP 198.51.100.1 on `lo`, do
//!   not answer ARP for it (`arp_ignore = 1`, `arp_announce = 2`) and reply to the client directly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::agent::{Agent, AgentConfig, AgentError};
use crate::netns::{NetnsError, NsProcess, SpawnSpec};
use crate::topology::{Lab, LanSpec};

/// Safety-net timeout of every wait.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a client connect may take: the LAN answers in microseconds, so this bounds how
/// coarsely an outage is measured.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// The port the real servers listen on in NAT mode (TCP and UDP).
pub const REAL_PORT: u16 = 8080;

/// How the balancer reaches the real servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Nat,
    Dr,
}

/// The lab, the two agents and the real servers.
pub struct LbLab {
    pub lab: Lab,
    pub mode: Mode,
    pub a: Agent,
    pub b: Agent,
    /// The client-facing VIP.
    pub vip: IpAddr,
    /// Real server host names, `rs1..`.
    pub servers: Vec<String>,
    backends: BTreeMap<String, NsProcess>,
    client_iface: String,
    /// The `[[instance]]` text of `a` and `b`, to which the services are appended.
    instances: BTreeMap<&'static str, String>,
    /// The interfaces of `a` and `b`.
    node_ifaces: BTreeMap<&'static str, Vec<String>>,
}

/// What one connection through the balancer found.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The real server that answered.
    pub server: String,
    /// From `connect()` to the established connection.
    pub connect: Duration,
}

impl LbLab {
    /// Builds the lab for `mode` with `servers` real servers and starts both agents with the
    /// `[[virtual_server]]` tables `services` (which names real servers by address:
    /// [`LbLab::server_address`]); waits until `a` is master.
    pub fn start(mode: Mode, servers: usize, services: &str) -> Result<LbLab, AgentError> {
        let mut lab = Lab::new()?;
        let names: Vec<String> = (1..=servers).map(|i| format!("rs{i}")).collect();
        let (client_lan, server_lan) = match mode {
            Mode::Nat => ("front", "back"),
            Mode::Dr => ("lan", "lan"),
        };
        lab.add_lan(server_lan, LanSpec::PRIMARY)?;
        if mode == Mode::Nat {
            lab.add_lan(client_lan, LanSpec::SECONDARY)?;
        }
        for host in ["a", "b", "client"]
            .into_iter()
            .chain(names.iter().map(String::as_str))
        {
            lab.add_host(host)?;
        }
        let a_front = lab.attach("a", client_lan, 11)?;
        let b_front = lab.attach("b", client_lan, 12)?;
        let client_iface = lab.attach("client", client_lan, 100)?.iface;
        let (a_back, b_back) = if mode == Mode::Nat {
            (
                Some(lab.attach("a", server_lan, 11)?),
                Some(lab.attach("b", server_lan, 12)?),
            )
        } else {
            (None, None)
        };
        for (index, name) in names.iter().enumerate() {
            lab.attach(name, server_lan, 21 + index as u8)?;
        }
        let vip = match mode {
            Mode::Nat => IpAddr::V4(LanSpec::SECONDARY.ipv4(1)),
            Mode::Dr => IpAddr::V4(LanSpec::PRIMARY.ipv4(1)),
        };
        for node in ["a", "b"] {
            lab.host(node)?.sysctl("net.ipv4.ip_forward", "1")?;
        }
        let binary = crate::bench::sibling_binary("hav-test-httpd")
            .map_err(|e| AgentError::BinaryMissing(e.to_string()))?;
        let mut backends = BTreeMap::new();
        for name in &names {
            let host = lab.host(name)?;
            let port = match mode {
                Mode::Nat => {
                    host.ip(&["route", "add", "default", "via", "198.51.100.1"])?;
                    REAL_PORT
                }
                Mode::Dr => {
                    host.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
                    host.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
                    host.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
                    80
                }
            };
            let mut backend = lab.spawn(
                name,
                SpawnSpec::new(format!("httpd-{name}"), &binary)
                    .args(["--node", name])
                    .args(["--listen", &format!("[::]:{port}")])
                    .args(["--udp", &format!("[::]:{port}")])
                    .ready_pipe(),
            )?;
            backend.wait_ready(WAIT)?;
            backends.insert(name.clone(), backend);
        }
        let config = |node: &str, priority: u8| {
            let front = if node == "a" { &a_front } else { &b_front };
            let back = if node == "a" { &a_back } else { &b_back };
            let mut text = String::new();
            let _ = writeln!(text, "[[instance]]\nname = \"VI_1\"");
            let _ = writeln!(text, "interface = {:?}", front.iface);
            let _ = writeln!(text, "vrid = 51\nversion = 3\npriority = {priority}");
            let _ = writeln!(text, "advert_interval = \"100ms\"");
            match back {
                Some(back) => {
                    let _ = writeln!(
                        text,
                        "vips = [\"{vip}/24\", {{ address = \"198.51.100.1\", prefix = 24, dev = {:?} }}]",
                        back.iface
                    );
                }
                None => {
                    let _ = writeln!(text, "vips = [\"{vip}/24\"]");
                }
            }
            text
        };
        let instances: BTreeMap<&'static str, String> =
            [("a", config("a", 150)), ("b", config("b", 100))].into();
        let node_config = |node: &str| {
            let mut config = AgentConfig::new(node, Vec::new());
            config.extra = format!("{}{services}", instances[node]);
            config
        };
        let a = Agent::start(&lab, "a", &node_config("a"))?;
        let b = Agent::start(&lab, "b", &node_config("b"))?;
        let mut lb = LbLab {
            lab,
            mode,
            a,
            b,
            vip,
            servers: names,
            backends,
            client_iface,
            instances,
            node_ifaces: [
                ("a", [Some(&a_front), a_back.as_ref()]),
                ("b", [Some(&b_front), b_back.as_ref()]),
            ]
            .into_iter()
            .map(|(node, attachments)| {
                (
                    node,
                    attachments
                        .into_iter()
                        .flatten()
                        .map(|a| a.iface.clone())
                        .collect(),
                )
            })
            .collect(),
        };
        lb.a.wait_state("VI_1", "Master", WAIT)?;
        lb.b.wait_state("VI_1", "Backup", WAIT)?;
        // The master programs its virtual servers in a task of its own, after the transition:
        // a client before that would reach the master's own (closed) ports.
        let count = services.matches("[[virtual_server]]").count();
        lb.a.wait_log(
            &format!("virtual servers programmed: {count} services"),
            WAIT,
        )?;
        Ok(lb)
    }

    /// Gives both agents `services` instead (the config file rewritten, then SIGHUP).
    pub fn reconfigure(&mut self, services: &str) -> Result<(), AgentError> {
        for (node, agent) in [("a", &mut self.a), ("b", &mut self.b)] {
            let mut config = AgentConfig::new(node, Vec::new());
            config.extra = format!("{}{services}", self.instances[node]);
            agent.write_config(&config)?;
            agent.reload()?;
        }
        Ok(())
    }

    /// Node `node` dies: its agent is SIGKILLed and its links go down (a killed agent alone
    /// leaves its VIPs and rules in the kernel, which would go on serving).
    pub fn node_dies(&mut self, node: &str) -> Result<(), AgentError> {
        let agent = if node == "a" {
            &mut self.a
        } else {
            &mut self.b
        };
        agent.kill()?;
        for iface in self.node_ifaces.get(node).into_iter().flatten() {
            self.lab.link_down(node, iface)?;
        }
        Ok(())
    }

    /// hav's nftables tables in `node`, as `nft list` prints them.
    pub fn tables(&self, node: &str) -> Result<String, NetnsError> {
        let inet = self
            .lab
            .exec(node, &["nft", "list", "table", "inet", "hav"])?;
        let netdev = self
            .lab
            .exec(node, &["nft", "list", "table", "netdev", "hav"])?;
        Ok(format!("{}{}", inet.stdout, netdev.stdout))
    }

    /// The address of real server `index` (0-based).
    pub fn server_address(index: usize) -> Ipv4Addr {
        LanSpec::PRIMARY.ipv4(21 + index as u8)
    }

    /// Kills real server `name`'s backend (connections to it are refused from now on).
    pub fn kill_server(&mut self, name: &str) -> Result<(), NetnsError> {
        if let Some(mut backend) = self.backends.remove(name) {
            backend.kill()?;
        }
        Ok(())
    }

    /// Starts real server `name`'s backend again.
    pub fn heal_server(&mut self, name: &str) -> Result<(), AgentError> {
        let binary = crate::bench::sibling_binary("hav-test-httpd")
            .map_err(|e| AgentError::BinaryMissing(e.to_string()))?;
        let port = if self.mode == Mode::Nat {
            REAL_PORT
        } else {
            80
        };
        let mut backend = self.lab.spawn(
            name,
            SpawnSpec::new(format!("httpd-{name}"), &binary)
                .args(["--node", name])
                .args(["--listen", &format!("[::]:{port}")])
                .args(["--udp", &format!("[::]:{port}")])
                .ready_pipe(),
        )?;
        backend.wait_ready(WAIT)?;
        self.backends.insert(name.to_owned(), backend);
        Ok(())
    }

    /// Adds `count` more addresses to the client (203.0.113.101.. or 198.51.100.101..), for
    /// source-hash tests; returns them.
    pub fn client_sources(&self, count: u8) -> Result<Vec<IpAddr>, NetnsError> {
        let spec = match self.mode {
            Mode::Nat => LanSpec::SECONDARY,
            Mode::Dr => LanSpec::PRIMARY,
        };
        let iface = self.client_iface.clone();
        let mut sources = Vec::new();
        for octet in 101..101 + count {
            let address = spec.ipv4(octet);
            self.lab.host("client")?.ip(&[
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                &iface,
            ])?;
            sources.push(IpAddr::V4(address));
        }
        Ok(sources)
    }

    /// `count` TCP connections from the client to `vip:port` (from `source` if given), one
    /// after the other: each sends a request and reads the real server's name.
    pub fn connect(
        &self,
        port: u16,
        source: Option<IpAddr>,
        count: usize,
    ) -> Result<Vec<Result<Reply, String>>, NetnsError> {
        let target = SocketAddr::new(self.vip, port);
        let client = self.lab.host("client")?;
        let handle =
            client.in_thread(move || Ok((0..count).map(|_| tcp_ask(target, source)).collect()))?;
        handle.join().map_err(|_| NetnsError::Io {
            what: "the client thread".into(),
            source: std::io::Error::other("panicked"),
        })?
    }

    /// `count` UDP requests from the client to `vip:port`, each from a fresh socket (a new flow).
    pub fn ask_udp(
        &self,
        port: u16,
        count: usize,
    ) -> Result<Vec<Result<Reply, String>>, NetnsError> {
        let target = SocketAddr::new(self.vip, port);
        let client = self.lab.host("client")?;
        let handle = client.in_thread(move || Ok((0..count).map(|_| udp_ask(target)).collect()))?;
        handle.join().map_err(|_| NetnsError::Io {
            what: "the client thread".into(),
            source: std::io::Error::other("panicked"),
        })?
    }
}

impl LbLab {
    /// Connects to the VIP's `port` until `run` connections in a row succeed, each established
    /// without a retransmitted SYN (under 200 ms); the time from `since` to the start of the
    /// first of them, and those replies. Panics after `limit`.
    pub fn settle(
        &self,
        port: u16,
        run: usize,
        since: Instant,
        limit: Duration,
    ) -> (Duration, Vec<Reply>) {
        let mut streak = Vec::new();
        let mut streak_start = Duration::ZERO;
        while streak.len() < run {
            assert!(
                since.elapsed() < limit,
                "no run of {run} successes within {limit:?}"
            );
            let started = since.elapsed();
            match self.connect(port, None, 1).map(|mut r| r.remove(0)) {
                Ok(Ok(reply)) if reply.connect < Duration::from_millis(200) => {
                    if streak.is_empty() {
                        streak_start = started;
                    }
                    streak.push(reply);
                }
                _ => streak.clear(),
            }
        }
        (streak_start, streak)
    }
}

/// One TCP request; the answering server's name and the connect time.
pub fn tcp_ask(target: SocketAddr, source: Option<IpAddr>) -> Result<Reply, String> {
    let started = Instant::now();
    let stream = match source {
        None => TcpStream::connect_timeout(&target, CONNECT_TIMEOUT),
        Some(source) => bound_connect(source, target),
    }
    .map_err(|e| format!("connect: {e}"))?;
    let connect = started.elapsed();
    read_name(stream).map(|server| Reply { server, connect })
}

fn bound_connect(source: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&target.into(), CONNECT_TIMEOUT)?;
    Ok(socket.into())
}

/// Sends a request on `stream` and reads the answering server's name.
pub fn read_name(mut stream: TcpStream) -> Result<String, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    reply
        .lines()
        .last()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| format!("no name in {reply:?}"))
}

fn udp_ask(target: SocketAddr) -> Result<Reply, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    socket.send_to(b"who", target).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 256];
    let (n, _) = socket
        .recv_from(&mut buf)
        .map_err(|e| format!("recv: {e}"))?;
    Ok(Reply {
        server: String::from_utf8_lossy(&buf[..n]).trim().to_owned(),
        connect: started.elapsed(),
    })
}

/// Connections per real server among the successful ones.
pub fn shares(replies: &[Result<Reply, String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for reply in replies.iter().flatten() {
        *counts.entry(reply.server.clone()).or_insert(0) += 1;
    }
    counts
}
