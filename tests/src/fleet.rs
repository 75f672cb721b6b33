//! A fleet lab: real hav-agents in namespaces on one LAN, a real hav-coordinator in its own
//! namespace on that LAN (198.51.100.1), real certificates made with `havctl certs`, and
//! `havctl` run in the coordinator's namespace. Everything is removed with the [`Lab`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::agent::{Agent, AgentConfig};
use crate::bench::sibling_binary;
use crate::etcd::EtcdCluster;
use crate::netns::{ExecOutput, NsProcess, SpawnSpec};
use crate::topology::{Lab, LanSpec};

/// The coordinator's host and address on the LAN.
pub const COORDINATOR_HOST: &str = "coord";
pub const COORDINATOR_OCTET: u8 = 1;
pub const COORDINATOR_PORT: u16 = 7400;
/// A host that only reaches the VIPs.
pub const CLIENT_HOST: &str = "client";
pub const CLIENT_OCTET: u8 = 200;
/// The LAN everything is on.
pub const LAN: &str = "lan";

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What hav-coordinator logs once it listens.
const LISTENING: &str = "hav-coordinator listening";

/// The lab, the certificates, the coordinator and the agents.
pub struct FleetLab {
    pub lab: Lab,
    certs: PathBuf,
    data: PathBuf,
    pub coordinator: Option<NsProcess>,
    coordinator_starts: u32,
    pub agents: BTreeMap<String, Agent>,
    /// Node → (LAN octet, interface name in its namespace).
    pub nodes: BTreeMap<String, (u8, String)>,
    /// Further arguments of every coordinator started (e.g. `--otlp-endpoint`).
    pub coordinator_args: Vec<String>,
    /// Further text of every agent's local file (e.g. a `[telemetry]` table).
    pub agent_extra: String,
    /// What agents and havctl dial, in order: the coordinator's address, or every coordinator
    /// of a fleet that runs several ([`FleetLab::spawn_coordinator`]).
    pub dial: Vec<String>,
    /// What a node's agent dials instead of `dial`, by node (spreading agents over several
    /// coordinators).
    pub node_dial: BTreeMap<String, Vec<String>>,
}

impl FleetLab {
    /// A LAN with the coordinator host, a client and `nodes` (name, octet); certificates for the
    /// coordinator, an operator, a viewer and every node.
    pub fn new(nodes: &[(&str, u8)]) -> Result<FleetLab, Error> {
        let mut lab = Lab::new()?;
        lab.add_lan(LAN, LanSpec::PRIMARY)?;
        lab.add_host(COORDINATOR_HOST)?;
        lab.attach(COORDINATOR_HOST, LAN, COORDINATOR_OCTET)?;
        lab.add_host(CLIENT_HOST)?;
        lab.attach(CLIENT_HOST, LAN, CLIENT_OCTET)?;
        let mut attached = BTreeMap::new();
        for (name, octet) in nodes {
            lab.add_host(name)?;
            let attachment = lab.attach(name, LAN, *octet)?;
            attached.insert((*name).to_owned(), (*octet, attachment.iface));
        }
        let certs = lab.log_dir().join("certs");
        let data = lab.log_dir().join("coordinator-data");
        std::fs::create_dir_all(&certs)?;
        let dir = certs.display().to_string();
        havctl_local(&["certs", "init", "--dir", &dir])?;
        let coordinator_ip = LanSpec::PRIMARY.ipv4(COORDINATOR_OCTET).to_string();
        havctl_local(&[
            "certs",
            "issue",
            "--dir",
            &dir,
            "--kind",
            "coordinator",
            "--name",
            "coord",
            "--san",
            &coordinator_ip,
        ])?;
        for (name, role) in [("olga", "operator"), ("vera", "viewer")] {
            havctl_local(&[
                "certs", "issue", "--dir", &dir, "--kind", "operator", "--name", name, "--role",
                role,
            ])?;
        }
        for name in attached.keys() {
            havctl_local(&[
                "certs", "issue", "--dir", &dir, "--kind", "agent", "--name", name,
            ])?;
        }
        let dial = vec![format!("{coordinator_ip}:{COORDINATOR_PORT}")];
        Ok(FleetLab {
            dial,
            node_dial: BTreeMap::new(),
            lab,
            certs,
            data,
            coordinator: None,
            coordinator_starts: 0,
            agents: BTreeMap::new(),
            nodes: attached,
            coordinator_args: Vec::new(),
            agent_extra: String::new(),
        })
    }

    /// `host:port` of the coordinator.
    pub fn coordinator_address(&self) -> String {
        format!(
            "{}:{COORDINATOR_PORT}",
            LanSpec::PRIMARY.ipv4(COORDINATOR_OCTET)
        )
    }

    /// Starts hav-coordinator (same data dir every time) and waits until it listens.
    pub fn start_coordinator(&mut self) -> Result<(), Error> {
        let binary = sibling_binary("hav-coordinator")?;
        let spec = SpawnSpec::new(format!("coordinator-{}", self.coordinator_starts), binary)
            .args([
                "--listen".to_owned(),
                self.coordinator_address(),
                "--cert".into(),
                self.cert("coordinator-coord.pem"),
                "--key".into(),
                self.cert("coordinator-coord.key"),
                "--ca".into(),
                self.cert("ca.pem"),
                "--data".into(),
                self.data.display().to_string(),
            ])
            .args(self.coordinator_args.iter().cloned())
            .env("RUST_LOG", "info,hav_coordinator=debug");
        self.coordinator_starts += 1;
        let process = self.lab.spawn(COORDINATOR_HOST, spec)?;
        let log = process.log_path().to_owned();
        self.coordinator = Some(process);
        wait_file_contains(&log, "hav-coordinator listening", Duration::from_secs(20))
    }

    /// Starts another hav-coordinator on the coordinator's host, on `port`, named `name`, with
    /// `args` (e.g. `--etcd`), and waits until it listens; the caller owns the process.
    pub fn spawn_coordinator(
        &self,
        name: &str,
        port: u16,
        args: &[String],
    ) -> Result<NsProcess, Error> {
        let binary = sibling_binary("hav-coordinator")?;
        let listen = format!("{}:{port}", LanSpec::PRIMARY.ipv4(COORDINATOR_OCTET));
        let data = self.lab.log_dir().join(format!("data-{name}"));
        let spec = SpawnSpec::new(format!("coordinator-{name}"), binary)
            .args([
                "--listen".to_owned(),
                listen,
                "--name".into(),
                name.into(),
                "--cert".into(),
                self.cert("coordinator-coord.pem"),
                "--key".into(),
                self.cert("coordinator-coord.key"),
                "--ca".into(),
                self.cert("ca.pem"),
                "--data".into(),
                data.display().to_string(),
            ])
            .args(args.iter().cloned())
            .env("RUST_LOG", "info,hav_coordinator=debug");
        // A coordinator started again under the same name appends to the same log.
        let log = self.lab.log_dir().join(format!("coordinator-{name}.log"));
        let before = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(LISTENING)
            .count();
        let process = self.lab.spawn(COORDINATOR_HOST, spec)?;
        wait_file_count(
            process.log_path(),
            LISTENING,
            before + 1,
            Duration::from_secs(20),
        )?;
        Ok(process)
    }

    /// A three-member etcd cluster on the coordinator host's loopback, for coordinators that
    /// share a store.
    pub fn start_etcd(&self) -> Result<NamespacedEtcd, Error> {
        let (endpoints_tx, endpoints) = std::sync::mpsc::channel();
        let (control, controls) = std::sync::mpsc::channel::<(EtcdControl, EtcdReply)>();
        // The members die with the thread that started them: it lives until the stop, and
        // starts them again itself.
        let thread = self.lab.host(COORDINATOR_HOST)?.in_thread(move || {
            match EtcdCluster::start() {
                Ok(mut cluster) => {
                    let _ = endpoints_tx.send(Ok(cluster.endpoints()));
                    for (what, reply) in controls {
                        let result = match what {
                            EtcdControl::Leader => cluster.leader().map(Some),
                            EtcdControl::Kill(index) => cluster.kill(index).map(|()| None),
                            EtcdControl::KillAll => cluster.kill_all().map(|()| None),
                            EtcdControl::RestartStopped => cluster.restart_stopped().map(|()| None),
                        };
                        let _ = reply.send(result.map_err(|e| e.to_string()));
                    }
                    drop(cluster);
                }
                Err(e) => {
                    let _ = endpoints_tx.send(Err(e.to_string()));
                }
            }
            Ok(())
        })?;
        let endpoints = endpoints
            .recv()
            .map_err(|_| "the etcd thread ended without a word")??;
        Ok(NamespacedEtcd {
            endpoints,
            control: Some(control),
            thread: Some(thread),
        })
    }

    /// SIGKILL: the coordinator dies without a word.
    pub fn kill_coordinator(&mut self) -> Result<(), Error> {
        if let Some(mut process) = self.coordinator.take() {
            process.kill()?;
        }
        Ok(())
    }

    /// Starts hav-agent on `node` with only `[node]` and `[coordinator]` in its local file.
    pub fn start_agent(&mut self, node: &str) -> Result<(), Error> {
        let mut config = AgentConfig::new(node, Vec::new());
        let dial = self.node_dial.get(node).unwrap_or(&self.dial);
        let address = match dial.as_slice() {
            [one] => format!("{one:?}"),
            several => format!("{several:?}"),
        };
        let _ = writeln!(
            config.extra,
            "[coordinator]\naddress = {address}\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            self.cert("ca.pem"),
            self.cert(&format!("agent-{node}.pem")),
            self.cert(&format!("agent-{node}.key")),
        );
        config.extra.push_str(&self.agent_extra);
        let agent = Agent::start(&self.lab, node, &config)?;
        self.agents.insert(node.to_owned(), agent);
        Ok(())
    }

    /// Kills `node`'s agent and starts it again on the same local file and state dir.
    pub fn restart_agent(&mut self, node: &str) -> Result<(), Error> {
        let agent = self
            .agents
            .get_mut(node)
            .ok_or_else(|| format!("no agent {node}"))?;
        agent.restart(&self.lab)?;
        Ok(())
    }

    pub fn agent(&mut self, node: &str) -> Result<&mut Agent, Error> {
        self.agents
            .get_mut(node)
            .ok_or_else(|| format!("no agent {node}").into())
    }

    /// Waits until `node`'s agent has logged "control link up" `count` times in its current run.
    pub fn wait_link_up(&mut self, node: &str, count: usize) -> Result<(), Error> {
        let agent = self.agent(node)?;
        let path = agent.process().log_path().to_owned();
        wait_file_count(&path, "control link up", count, Duration::from_secs(30))
    }

    /// The version in `node`'s `applied.toml` (0 when it has none): what the agent keeps.
    pub fn applied_version(&self, node: &str) -> u64 {
        let path = self
            .lab
            .log_dir()
            .join(format!("agent-{node}"))
            .join("state")
            .join("applied.toml");
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| {
                text.lines()
                    .next()?
                    .strip_prefix("# hav applied config version ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Runs havctl as operator `olga` in the coordinator's namespace.
    pub fn havctl(&self, args: &[&str]) -> Result<ExecOutput, Error> {
        self.havctl_as("operator-olga", args)
    }

    /// Runs havctl with the certificate `<stem>.pem` in the coordinator's namespace.
    pub fn havctl_as(&self, stem: &str, args: &[&str]) -> Result<ExecOutput, Error> {
        let binary = sibling_binary("havctl")?.display().to_string();
        let address = self.dial.join(",");
        let (cert, key, ca) = (
            self.cert(&format!("{stem}.pem")),
            self.cert(&format!("{stem}.key")),
            self.cert("ca.pem"),
        );
        let mut argv: Vec<&str> = vec![
            &binary,
            "--coordinator",
            &address,
            "--cert",
            &cert,
            "--key",
            &key,
            "--ca",
            &ca,
        ];
        argv.extend_from_slice(args);
        Ok(self.lab.exec(COORDINATOR_HOST, &argv)?)
    }

    /// Starts a long-running havctl (e.g. `watch -o json`) as operator `olga` in the
    /// coordinator's namespace; its output goes to the process's log.
    pub fn spawn_havctl(&self, name: &str, args: &[&str]) -> Result<NsProcess, Error> {
        let spec = SpawnSpec::new(name, sibling_binary("havctl")?)
            .args([
                "--coordinator".to_owned(),
                self.dial.join(","),
                "--cert".into(),
                self.cert("operator-olga.pem"),
                "--key".into(),
                self.cert("operator-olga.key"),
                "--ca".into(),
                self.cert("ca.pem"),
            ])
            .args(args.iter().copied());
        Ok(self.lab.spawn(COORDINATOR_HOST, spec)?)
    }

    /// `havctl status -o json`, parsed.
    pub fn status(&self) -> Result<serde_json::Value, Error> {
        let out = self.havctl(&["status", "-o", "json"])?;
        if !out.success() {
            return Err(format!("havctl status failed: {}", out.stderr).into());
        }
        Ok(serde_json::from_str(&out.stdout)?)
    }

    /// Waits until the coordinator's view (`havctl status -o json`) has each `(instance, node)`
    /// of `masters` master on exactly that node, holding VIPs, and every other node's instance
    /// of that name in backup, holding none. The kernel can be settled before the coordinator
    /// has the agents' last snapshots; a drain planned on the earlier ones is refused.
    ///
    /// Polled every 50 ms (20 s at most): the API announces no "snapshot stored".
    pub fn wait_masters(&self, masters: &[(&str, &str)]) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.status()?;
            let settled = masters.iter().all(|(instance, master)| {
                let mut seen = 0;
                let agrees = status.as_array().into_iter().flatten().all(|node| {
                    let is_master = node["name"] == *master;
                    node["instances"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|i| i["name"] == *instance)
                        .all(|i| {
                            seen += 1;
                            let holds = i["vips_held"].as_array().is_some_and(|v| !v.is_empty());
                            let state = if is_master { "master" } else { "backup" };
                            i["state"] == state && holds == is_master
                        })
                });
                agrees && seen >= 2
            });
            if settled {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(
                    format!("the coordinator never saw masters {masters:?}: {status}").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes a file in the lab's log dir; its path.
    pub fn write(&self, name: &str, text: &str) -> Result<String, Error> {
        let path = self.lab.log_dir().join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    }

    /// Waits until `address` is on `host` (or gone, with `present` false).
    pub fn wait_vip(&self, host: &str, address: IpAddr, present: bool) -> Result<(), Error> {
        let want = if present {
            crate::netns::Presence::Present
        } else {
            crate::netns::Presence::Absent
        };
        Ok(self
            .lab
            .wait_address(host, address, want, Duration::from_secs(20))?)
    }

    /// The client pings `address` once, resolving it afresh (ARP/ND) to whoever holds it now.
    ///
    /// The cache is flushed first because two nodes configured within milliseconds of each
    /// other can both be master for a moment; the loser's gratuitous ARP may then be the last
    /// one the client heard until the winner's second burst (`garp.master_delay`).
    pub fn client_reaches(&self, address: IpAddr) -> Result<bool, Error> {
        let target = address.to_string();
        self.lab
            .exec(CLIENT_HOST, &["ip", "neigh", "flush", "to", &target])?;
        let out = self
            .lab
            .exec(CLIENT_HOST, &["ping", "-c", "1", "-W", "2", &target])?;
        if !out.success() {
            eprintln!("client ping {target} failed: {}{}", out.stdout, out.stderr);
        }
        Ok(out.success())
    }

    fn cert(&self, name: &str) -> String {
        self.certs.join(name).display().to_string()
    }
}

/// An etcd cluster in the coordinator host's namespace ([`FleetLab::start_etcd`]); stopped and
/// removed when dropped.
pub struct NamespacedEtcd {
    /// The members' client URLs (`http://127.0.0.1:PORT`, reachable from that host only).
    pub endpoints: Vec<String>,
    control: Option<std::sync::mpsc::Sender<(EtcdControl, EtcdReply)>>,
    thread: Option<std::thread::JoinHandle<Result<(), crate::netns::NetnsError>>>,
}

/// What the thread that owns the members is asked to do.
enum EtcdControl {
    Leader,
    Kill(usize),
    KillAll,
    RestartStopped,
}

type EtcdReply = std::sync::mpsc::Sender<Result<Option<usize>, String>>;

impl NamespacedEtcd {
    /// The index of the member that is the raft leader now.
    pub fn leader(&self) -> Result<usize, Error> {
        self.ask(EtcdControl::Leader)?
            .ok_or_else(|| "no leader index".into())
    }

    /// SIGKILLs member `index`; its data stays.
    pub fn kill(&self, index: usize) -> Result<(), Error> {
        self.ask(EtcdControl::Kill(index)).map(drop)
    }

    /// SIGKILLs every member; their data stays.
    pub fn kill_all(&self) -> Result<(), Error> {
        self.ask(EtcdControl::KillAll).map(drop)
    }

    /// Starts every stopped member again on its data directory and waits until each serves.
    pub fn restart_stopped(&self) -> Result<(), Error> {
        self.ask(EtcdControl::RestartStopped).map(drop)
    }

    fn ask(&self, what: EtcdControl) -> Result<Option<usize>, Error> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.control
            .as_ref()
            .ok_or("the etcd cluster is stopped")?
            .send((what, reply))
            .map_err(|_| "the etcd thread has ended")?;
        Ok(answer
            .recv()
            .map_err(|_| "the etcd thread ended without an answer")??)
    }
}

impl Drop for NamespacedEtcd {
    fn drop(&mut self) {
        drop(self.control.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs havctl in the test's own namespace (certificates only: no network).
/// Runs havctl on the host (certificates, no coordinator needed).
pub fn havctl_local(args: &[&str]) -> Result<(), Error> {
    let binary = sibling_binary("havctl")?;
    let out = Command::new(binary).args(args).output()?;
    if !out.status.success() {
        return Err(format!("havctl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

fn wait_file_contains(path: &Path, needle: &str, timeout: Duration) -> Result<(), Error> {
    wait_file_count(path, needle, 1, timeout)
}

/// Waits until `path` contains `needle` at least `count` times: re-read whenever the file
/// changes (inotify), `timeout` as a safety net.
pub fn wait_file_count(
    path: &Path,
    needle: &str,
    count: usize,
    timeout: Duration,
) -> Result<(), Error> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(path, AddWatchFlags::IN_MODIFY)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "timeout after {timeout:?}: {count}× {needle:?} in {}",
                path.display()
            )
            .into());
        }
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&inotify),
            nix::poll::PollFlags::POLLIN,
        )];
        let wait = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait))?;
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
        }
    }
}
