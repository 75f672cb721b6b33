//! The soak's fleet: pairs of VRRP daemons on a bridged LAN per implementation, the client that
//! probes every VIP, and the per-node pieces the faults act on.
//!
//! Layout: hav pairs `p0`, `p1`, ... on LAN `lan` (198.51.100.0/24) and, with keepalived, pairs
//! `k0`, `k1`, ... on LAN `klan` (203.0.113.0/24); node `a` of pair `i` is `.{10+2i}`, node `b`
//! `.{11+2i}`; the pair's VIPs are `.{100+2i}` (mastered by `a`, priority 150 against 100) and
//! `.{101+2i}` (mastered by `b`), so each node masters one VIP (round robin). v3, 100 ms adverts,
//! multicast, preemption on ([`crate::chaos::settle`] checks this layout). Every node runs `hav-test-httpd` answering its name, and tracks a
//! "squid" stand-in (a copy of `sleep` with a name unique to the node) with weight 0. A hav node's
//! state directory is a 512 KiB tmpfs (`hav-chaos`) mounted under the run's log directory, so it
//! can be filled without touching any other file system; it is unmounted on drop, and
//! [`sweep_stale_mounts`] removes those of runs that died.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::ChaosError;
use super::observe::{BACKSTOP, Observers, Recorder, WatchedNode};
use super::schedule::{Implementation, Side};
use crate::agent::{Agent, AgentConfig, InstanceSpec, find_instance, start_httpd};
use crate::keepalived::{Keepalived, KeepalivedConfig, TrackFile, VrrpInstance, VrrpState};
use crate::netns::{LOG_ROOT, NsProcess, SpawnSpec, run_is_live};
use crate::topology::{Lab, LanSpec};

/// Advertisement interval of every instance.
pub const ADVERT_INTERVAL: Duration = Duration::from_millis(100);
pub const MASTER_PRIORITY: u8 = 150;
pub const BACKUP_PRIORITY: u8 = 100;
/// The `source` of the state-directory tmpfs mounts, how [`sweep_stale_mounts`] finds them.
pub const TMPFS_SOURCE: &str = "hav-chaos";
const TMPFS_SIZE: &str = "size=512k,mode=0700";
const CLIENT: &str = "client";
const CLIENT_OCTET: u8 = 250;
const HTTP_PORT: u16 = 8080;
/// At most this many pairs per implementation (the octets of the layout above).
pub const MAX_PAIRS: usize = 40;

/// The backup's master-down interval (RFC 5798 §6.1): 3 × interval + (256 − priority) ×
/// interval / 256.
pub fn master_down_interval() -> Duration {
    ADVERT_INTERVAL * 3 + ADVERT_INTERVAL * (256 - u32::from(BACKUP_PRIORITY)) / 256
}

/// A node of the fleet, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMeta {
    /// `p0a`, `k1b`: also its host (namespace suffix) and what its httpd answers.
    pub label: String,
    pub implementation: Implementation,
    /// Index into [`Meta::pairs`].
    pub pair: usize,
    pub side: Side,
}

/// A VIP of the fleet, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipMeta {
    pub address: Ipv4Addr,
    pub pair: usize,
    /// 0: mastered by node `a`; 1: by node `b`.
    pub slot: usize,
    /// `p0.vip1`.
    pub label: String,
}

/// A pair of the fleet, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairMeta {
    pub implementation: Implementation,
    /// The pair number in the schedule.
    pub number: usize,
    /// `p0`, `k0`.
    pub label: String,
    /// Node indexes of `a` and `b`.
    pub nodes: [usize; 2],
    /// VIP indexes of slots 0 and 1.
    pub vips: [usize; 2],
}

/// The fleet's layout, for the invariants and the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub nodes: Vec<NodeMeta>,
    pub vips: Vec<VipMeta>,
    pub pairs: Vec<PairMeta>,
}

impl Meta {
    pub fn new(pairs: usize, implementations: &[Implementation]) -> Meta {
        let mut meta = Meta {
            nodes: Vec::new(),
            vips: Vec::new(),
            pairs: Vec::new(),
        };
        for &implementation in implementations {
            let spec = lan_spec(implementation);
            for number in 0..pairs {
                let pair = meta.pairs.len();
                let letter = pair_letter(implementation);
                let label = format!("{letter}{number}");
                let mut nodes = [0; 2];
                let mut vips = [0; 2];
                for side in [Side::A, Side::B] {
                    nodes[side.slot()] = meta.nodes.len();
                    meta.nodes.push(NodeMeta {
                        label: format!("{label}{}", side.letter()),
                        implementation,
                        pair,
                        side,
                    });
                    vips[side.slot()] = meta.vips.len();
                    meta.vips.push(VipMeta {
                        address: spec.ipv4(vip_octet(number, side.slot())),
                        pair,
                        slot: side.slot(),
                        label: format!("{label}.vip{}", side.slot() + 1),
                    });
                }
                meta.pairs.push(PairMeta {
                    implementation,
                    number,
                    label,
                    nodes,
                    vips,
                });
            }
        }
        meta
    }

    /// The pair indexes of `implementation`.
    pub fn pairs_of(&self, implementation: Implementation) -> Vec<usize> {
        (0..self.pairs.len())
            .filter(|&p| self.pairs[p].implementation == implementation)
            .collect()
    }

    /// The node that masters `vip` when its pair is settled.
    pub fn expected_master(&self, vip: usize) -> usize {
        let v = &self.vips[vip];
        self.pairs[v.pair].nodes[v.slot]
    }
}

fn pair_letter(implementation: Implementation) -> char {
    match implementation {
        Implementation::Hav => 'p',
        Implementation::Keepalived => 'k',
    }
}

fn lan_name(implementation: Implementation) -> &'static str {
    match implementation {
        Implementation::Hav => "lan",
        Implementation::Keepalived => "klan",
    }
}

fn lan_spec(implementation: Implementation) -> LanSpec {
    match implementation {
        Implementation::Hav => LanSpec::PRIMARY,
        Implementation::Keepalived => LanSpec::SECONDARY,
    }
}

fn node_octet(pair: usize, side: Side) -> u8 {
    u8::try_from(10 + 2 * pair + side.slot()).unwrap_or(u8::MAX)
}

fn vip_octet(pair: usize, slot: usize) -> u8 {
    u8::try_from(100 + 2 * pair + slot).unwrap_or(u8::MAX)
}

fn vrid(pair: usize, slot: usize) -> u8 {
    u8::try_from(10 + 2 * pair + slot).unwrap_or(u8::MAX)
}

/// The name of instance `slot` in both implementations.
pub fn instance_name(slot: usize) -> String {
    format!("VIP{}", slot + 1)
}

/// A VRRP instance's role as its daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master,
    Backup,
    Fault,
    Other(String),
    /// The daemon did not say (not running, status socket unreachable, no report yet).
    Unknown(String),
}

/// The daemon of a node.
#[derive(Debug)]
pub enum Daemon {
    Hav(HavDaemon),
    Keepalived(KeepalivedDaemon),
}

/// hav-agent with its config (the running one, restored after reload faults).
#[derive(Debug)]
pub struct HavDaemon {
    pub agent: Agent,
    pub config: AgentConfig,
    pub state_dir: PathBuf,
}

/// keepalived with its config and the file its `track_file`s read.
#[derive(Debug)]
pub struct KeepalivedDaemon {
    pub running: Option<Keepalived>,
    pub config: KeepalivedConfig,
    pub dir: PathBuf,
    pub track_file: PathBuf,
}

/// The "squid" stand-in a node tracks.
#[derive(Debug)]
pub struct Tracked {
    program: PathBuf,
    process: Option<NsProcess>,
}

/// One node: its daemon and the pieces faults act on.
#[derive(Debug)]
pub struct Node {
    pub index: usize,
    pub label: String,
    pub side: Side,
    pub iface: String,
    pub daemon: Daemon,
    /// Counts the daemon's starts (1 after the first); an exit is recorded per generation.
    pub generation: u32,
    pub tracked: Tracked,
}

impl Node {
    /// The daemon's process (keepalived: its parent), for the exit monitor.
    fn pid(&mut self) -> Option<u32> {
        match &mut self.daemon {
            Daemon::Hav(hav) => Some(hav.agent.pid()),
            Daemon::Keepalived(ka) => ka.running.as_mut().map(|k| k.process().pid()),
        }
    }

    /// Whether the current daemon process runs (as far as the exit monitor knows).
    pub fn alive(&self, recorder: &Recorder) -> bool {
        recorder.exited(self.index, self.generation).is_none()
    }

    /// SIGKILL to the daemon (keepalived: every process), announced as expected; reaped.
    pub fn kill(&mut self, recorder: &Recorder) -> Result<(), ChaosError> {
        recorder.expect_exit(self.index, self.generation);
        match &mut self.daemon {
            Daemon::Hav(hav) => hav.agent.kill()?,
            Daemon::Keepalived(ka) => {
                if let Some(k) = ka.running.as_mut() {
                    k.crash()?;
                }
            }
        }
        Ok(())
    }

    /// SIGTERM, announced as expected; waits up to `grace` for the exit (then SIGKILL) and
    /// returns how it ended.
    pub fn terminate(
        &mut self,
        recorder: &Recorder,
        grace: Duration,
    ) -> Result<String, ChaosError> {
        recorder.expect_exit(self.index, self.generation);
        let process = match &mut self.daemon {
            Daemon::Hav(hav) => hav.agent.process(),
            Daemon::Keepalived(ka) => match ka.running.as_mut() {
                Some(k) => k.process(),
                None => return Ok("not running".into()),
            },
        };
        process.signal(Signal::SIGTERM)?;
        if process.wait_timeout(grace)?.is_some() {
            return Ok(process.describe_exit());
        }
        process.kill()?;
        Ok(format!(
            "no exit within {grace:?} of SIGTERM (then SIGKILL)"
        ))
    }

    /// Starts the daemon again (after a kill, a stop, or an unexpected exit) and registers it.
    /// Returns where the new process's log begins in [`Node::log_path`] (keepalived appends to
    /// one file; each hav-agent start gets its own).
    pub fn start(&mut self, lab: &Lab, observers: &Observers) -> Result<u64, ChaosError> {
        let recorder = observers.recorder();
        let offset = match self.daemon {
            Daemon::Hav(_) => 0,
            Daemon::Keepalived(_) => self.log_len(),
        };
        if self.alive(recorder) && self.generation > 0 {
            recorder.expect_exit(self.index, self.generation);
        }
        match &mut self.daemon {
            Daemon::Hav(hav) => hav.agent.restart(lab)?,
            Daemon::Keepalived(ka) => {
                // Dropping the old one kills what is left of it and ends its FIFO reader.
                ka.running = None;
                // A killed keepalived leaves its pid files; the next one refuses to start while
                // the old VRRP child's pid still exists (a zombie until its new parent reaps
                // it). An init system removes them the same way (RuntimeDirectory).
                for file in ["keepalived.pid", "vrrp.pid"] {
                    let _ = fs::remove_file(ka.dir.join(file));
                }
                ka.running = Some(Keepalived::start(
                    lab.host(&self.label)?,
                    &ka.dir,
                    &ka.config,
                )?);
            }
        }
        self.generation += 1;
        if let Some(pid) = self.pid() {
            observers.register_process(self.index, self.generation, pid)?;
        }
        Ok(offset)
    }

    /// Sends `signal` to the daemon (keepalived: to every process of it).
    pub fn signal(&mut self, signal: Signal) -> Result<(), ChaosError> {
        match &mut self.daemon {
            Daemon::Hav(hav) => hav.agent.signal(signal)?,
            Daemon::Keepalived(ka) => {
                if let Some(k) = ka.running.as_ref() {
                    k.signal_all(signal)?;
                }
            }
        }
        Ok(())
    }

    /// The role of instance `slot`.
    pub fn role(&self, slot: usize) -> Role {
        let name = instance_name(slot);
        match &self.daemon {
            Daemon::Hav(hav) => match hav.agent.status() {
                Ok(status) => match find_instance(&status, &name).and_then(|i| i["state"].as_str())
                {
                    Some("Master") => Role::Master,
                    Some("Backup") => Role::Backup,
                    Some("Fault") => Role::Fault,
                    Some(other) => Role::Other(other.to_owned()),
                    None => Role::Unknown(format!("no instance {name}")),
                },
                Err(e) => Role::Unknown(e.to_string()),
            },
            Daemon::Keepalived(ka) => match ka.running.as_ref().map(|k| k.last_state(&name)) {
                Some(Some(VrrpState::Master)) => Role::Master,
                Some(Some(VrrpState::Backup)) => Role::Backup,
                Some(Some(VrrpState::Fault)) => Role::Fault,
                Some(Some(other)) => Role::Other(format!("{other:?}")),
                Some(None) => Role::Unknown("no state reported yet".into()),
                None => Role::Unknown("not running".into()),
            },
        }
    }

    /// The current daemon process's log file.
    pub fn log_path(&mut self) -> Option<PathBuf> {
        match &mut self.daemon {
            Daemon::Hav(hav) => Some(hav.agent.process().log_path().to_owned()),
            Daemon::Keepalived(ka) => ka
                .running
                .as_mut()
                .map(|k| k.process().log_path().to_owned()),
        }
    }

    /// The length of the current log (where a later [`Node::wait_log`] starts reading).
    pub fn log_len(&mut self) -> u64 {
        self.log_path()
            .and_then(|p| fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// Waits until the log, from byte `offset` on, has a line containing one of `needles`;
    /// returns that line. Wakes on log writes (the recorder watches the log directory).
    pub fn wait_log(
        &mut self,
        recorder: &Recorder,
        offset: u64,
        needles: &[&str],
        timeout: Duration,
    ) -> Option<String> {
        let path = self.log_path()?;
        let deadline = Instant::now() + timeout;
        loop {
            let generation = recorder.generation();
            if let Some(line) = strip_ansi(&read_from(&path, offset))
                .lines()
                .find(|l| needles.iter().any(|n| l.contains(n)))
            {
                return Some(line.to_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            recorder.wait_change(generation, left.min(BACKSTOP));
        }
    }

    /// The last `lines` lines of the current log, without colours and without the agent's
    /// `status published` chatter.
    pub fn log_tail(&mut self, lines: usize) -> String {
        let Some(path) = self.log_path() else {
            return String::new();
        };
        let text = strip_ansi(&read_from(&path, 0));
        let all: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("status published"))
            .collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Reaps a daemon that exited by itself (so its status is final).
    pub fn reap(&mut self) {
        let process = match &mut self.daemon {
            Daemon::Hav(hav) => hav.agent.process(),
            Daemon::Keepalived(ka) => match ka.running.as_mut() {
                Some(k) => k.process(),
                None => return,
            },
        };
        let _ = process.wait_timeout(Duration::ZERO);
    }
}

/// `text` without ANSI escape sequences (the agent colours its log even into a file).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

impl Tracked {
    /// Kills the tracked process (if running) and reaps it.
    pub fn kill(&mut self) -> Result<(), ChaosError> {
        if let Some(mut process) = self.process.take() {
            process.kill()?;
        }
        Ok(())
    }

    /// Whether the tracked process was killed and not started again.
    pub fn is_stopped(&self) -> bool {
        self.process.is_none()
    }

    /// Starts the tracked process again in `host`.
    pub fn start(&mut self, lab: &Lab, host: &str) -> Result<(), ChaosError> {
        self.kill()?;
        let comm = self
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.process = Some(lab.spawn(
            host,
            SpawnSpec::new(format!("{comm}-{host}"), &self.program).arg("1000000"),
        )?);
        Ok(())
    }
}

/// One pair: nodes `a` and `b`.
#[derive(Debug)]
pub struct Pair {
    /// Index into [`Meta::pairs`].
    pub index: usize,
    pub implementation: Implementation,
    pub label: String,
    pub a: Node,
    pub b: Node,
    /// Set when a repair failed: the pair takes no more faults.
    pub retired: Option<String>,
}

impl Pair {
    pub fn node(&mut self, side: Side) -> &mut Node {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    pub fn node_ref(&self, side: Side) -> &Node {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }
}

/// What the fleet is made of.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSpec {
    pub pairs: usize,
    pub keepalived: bool,
    pub probe_interval: Duration,
}

/// A tmpfs mounted in the host's mount namespace under the run's log directory; unmounted
/// (lazily) on drop.
#[derive(Debug)]
pub struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    fn mount(path: &Path) -> Result<TmpfsMount, ChaosError> {
        fs::create_dir_all(path)
            .map_err(|e| ChaosError::io(format!("create {}", path.display()), e))?;
        let target = path.display().to_string();
        crate::netns::run(
            "mount",
            &["-t", "tmpfs", "-o", TMPFS_SIZE, TMPFS_SOURCE, &target],
        )?;
        Ok(TmpfsMount {
            path: path.to_owned(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let target = self.path.display().to_string();
        if let Err(e) = crate::netns::run("umount", &["-l", &target]) {
            eprintln!("hav-chaos: cannot unmount {target}: {e}");
        }
    }
}

/// Unmounts the state-directory tmpfs mounts of runs that are gone (killed before their drop
/// ran): mounts of source [`TMPFS_SOURCE`] under `/tmp/hav-tests/<prefix>/` whose run marker is
/// missing or names a dead process. Returns the mount points removed.
pub fn sweep_stale_mounts() -> Vec<String> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let root = format!("{LOG_ROOT}/");
    let mut removed = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source options
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount_point), Some(fstype), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        if *fstype != "tmpfs" || *source != TMPFS_SOURCE {
            continue;
        }
        let Some(prefix) = mount_point
            .strip_prefix(&root)
            .and_then(|rest| rest.split('/').next())
        else {
            continue;
        };
        if crate::netns::RunPrefix::is_harness_prefix(prefix)
            && !run_is_live(prefix)
            && crate::netns::run("umount", &["-l", mount_point]).is_ok()
        {
            removed.push((*mount_point).to_owned());
        }
    }
    removed
}

/// The running fleet. Dropping it stops the daemons and observers, unmounts the tmpfs mounts
/// and deletes the namespaces, in that order.
#[derive(Debug)]
pub struct Cluster {
    pub pairs: Vec<Pair>,
    pub meta: Meta,
    pub observers: Observers,
    httpds: Vec<NsProcess>,
    mounts: Vec<TmpfsMount>,
    pub lab: Lab,
}

impl Cluster {
    /// Builds the topology, starts the observers, the httpds, the tracked processes and the
    /// daemons, and starts probing. Does not wait for the fleet to settle.
    pub fn build(spec: &ClusterSpec) -> Result<Cluster, ChaosError> {
        let mut implementations = vec![Implementation::Hav];
        if spec.keepalived {
            implementations.push(Implementation::Keepalived);
        }
        let meta = Meta::new(spec.pairs, &implementations);
        // Locals drop in reverse order: on an error below, the mounts go before the lab.
        let mut lab = Lab::new()?;
        let mut mounts = Vec::new();
        for &implementation in &implementations {
            lab.add_lan(lan_name(implementation), lan_spec(implementation))?;
        }
        lab.add_host(CLIENT)?;
        for &implementation in &implementations {
            lab.attach(CLIENT, lan_name(implementation), CLIENT_OCTET)?;
        }
        for node in &meta.nodes {
            lab.add_host(&node.label)?;
            let number = meta.pairs[node.pair].number;
            lab.attach(
                &node.label,
                lan_name(node.implementation),
                node_octet(number, node.side),
            )?;
        }
        let names: Vec<String> = meta.nodes.iter().map(|n| n.label.clone()).collect();
        let recorder = Recorder::new(meta.vips.len(), &names);
        let watched: Vec<WatchedNode<'_>> = meta
            .nodes
            .iter()
            .enumerate()
            .map(|(node, n)| {
                Ok(WatchedNode {
                    namespace: lab.host(&n.label)?,
                    node,
                })
            })
            .collect::<Result<_, ChaosError>>()?;
        let vip_addresses: Vec<IpAddr> = meta.vips.iter().map(|v| IpAddr::V4(v.address)).collect();
        let mut observers = Observers::start(recorder, &watched, &vip_addresses, lab.log_dir())?;
        drop(watched);
        let mut httpds = Vec::new();
        for node in &meta.nodes {
            httpds.push(start_httpd(&lab, &node.label)?);
        }
        let mut pairs = Vec::new();
        for (index, pair_meta) in meta.pairs.iter().enumerate() {
            let mut nodes = Vec::new();
            for side in [Side::A, Side::B] {
                let node_index = pair_meta.nodes[side.slot()];
                let label = meta.nodes[node_index].label.clone();
                let iface = lab.prefix().name(lan_name(pair_meta.implementation))?;
                let program = tracked_program(&lab, &label)?;
                let mut tracked = Tracked {
                    program,
                    process: None,
                };
                tracked.start(&lab, &label)?;
                let daemon = match pair_meta.implementation {
                    Implementation::Hav => {
                        let dir = lab.log_dir().join(format!("agent-{label}"));
                        let state_dir = dir.join("state");
                        mounts.push(TmpfsMount::mount(&state_dir)?);
                        let config = hav_config(&label, &iface, pair_meta, &meta, &tracked);
                        let agent = Agent::start(&lab, &label, &config)?;
                        Daemon::Hav(HavDaemon {
                            agent,
                            config,
                            state_dir,
                        })
                    }
                    Implementation::Keepalived => {
                        let dir = lab.log_dir().join(format!("keepalived-{label}"));
                        fs::create_dir_all(&dir)
                            .map_err(|e| ChaosError::io(format!("create {}", dir.display()), e))?;
                        let track_file = dir.join("squid.track");
                        fs::write(&track_file, "0\n").map_err(|e| {
                            ChaosError::io(format!("write {}", track_file.display()), e)
                        })?;
                        let config =
                            keepalived_config(&label, &iface, pair_meta, &meta, &track_file);
                        let running = Keepalived::start(lab.host(&label)?, &dir, &config)?;
                        Daemon::Keepalived(KeepalivedDaemon {
                            running: Some(running),
                            config,
                            dir,
                            track_file,
                        })
                    }
                };
                let mut node = Node {
                    index: node_index,
                    label,
                    side,
                    iface,
                    daemon,
                    generation: 1,
                    tracked,
                };
                if let Some(pid) = node.pid() {
                    observers.register_process(node_index, 1, pid)?;
                }
                nodes.push(node);
            }
            let (Some(b), Some(a)) = (nodes.pop(), nodes.pop()) else {
                return Err(ChaosError::Setup("a pair needs two nodes".into()));
            };
            pairs.push(Pair {
                index,
                implementation: pair_meta.implementation,
                label: pair_meta.label.clone(),
                a,
                b,
                retired: None,
            });
        }
        let targets: Vec<SocketAddr> = meta
            .vips
            .iter()
            .map(|v| SocketAddr::new(IpAddr::V4(v.address), HTTP_PORT))
            .collect();
        observers.start_probing(lab.host(CLIENT)?, &targets, spec.probe_interval)?;
        Ok(Cluster {
            pairs,
            meta,
            observers,
            httpds,
            mounts,
            lab,
        })
    }

    pub fn recorder(&self) -> &Recorder {
        self.observers.recorder()
    }

    /// Keeps the run's logs after drop.
    pub fn keep_logs(&self) {
        self.lab.keep_logs();
    }

    /// How many processes the fleet started that are not daemons (httpds), for sanity.
    pub fn httpd_count(&self) -> usize {
        self.httpds.len()
    }

    /// How many state-directory mounts exist.
    pub fn mount_count(&self) -> usize {
        self.mounts.len()
    }
}

/// A copy of `sleep` named `sq<prefix><label>` (unique on the host, at most 15 bytes, so a
/// process tracker matching by name sees this node's stand-in only).
fn tracked_program(lab: &Lab, label: &str) -> Result<PathBuf, ChaosError> {
    let path = lab.log_dir().join(format!("sq{}{label}", lab.prefix()));
    if !path.exists() {
        fs::create_dir_all(lab.log_dir())
            .map_err(|e| ChaosError::io(format!("create {}", lab.log_dir().display()), e))?;
        fs::copy("/bin/sleep", &path)
            .map_err(|e| ChaosError::io(format!("copy /bin/sleep to {}", path.display()), e))?;
    }
    Ok(path)
}

fn priority_of(pair_meta: &PairMeta, node_label: &str, slot: usize, meta: &Meta) -> u8 {
    if meta.nodes[pair_meta.nodes[slot]].label == node_label {
        MASTER_PRIORITY
    } else {
        BACKUP_PRIORITY
    }
}

/// How long a hav node that handed over on purpose keeps serving its connections at most.
const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

fn hav_config(
    label: &str,
    iface: &str,
    pair_meta: &PairMeta,
    meta: &Meta,
    tracked: &Tracked,
) -> AgentConfig {
    let instances = (0..2)
        .map(|slot| {
            let vip = format!("{}/24", meta.vips[pair_meta.vips[slot]].address);
            let mut instance = InstanceSpec::new(
                iface,
                vrid(pair_meta.number, slot),
                priority_of(pair_meta, label, slot, meta),
                &[&vip],
            );
            instance.name = instance_name(slot);
            instance.advert_interval = ADVERT_INTERVAL;
            // Planned hand-overs keep the connections in flight (a probe is one connection).
            instance.connection_drain = Some(CONNECTION_DRAIN);
            instance.track = vec!["track_process = [\"squid\"]".into()];
            instance
        })
        .collect();
    let comm = tracked
        .program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut config = AgentConfig::new(label, instances);
    config.extra = format!("[[process]]\nname = \"squid\"\nprocess = \"{comm}\"\nweight = 0\n\n");
    config
}

fn keepalived_config(
    label: &str,
    iface: &str,
    pair_meta: &PairMeta,
    meta: &Meta,
    track_file: &Path,
) -> KeepalivedConfig {
    let instances = (0..2)
        .map(|slot| {
            let vip = IpAddr::V4(meta.vips[pair_meta.vips[slot]].address);
            let mut instance = VrrpInstance::new(
                3,
                vrid(pair_meta.number, slot),
                priority_of(pair_meta, label, slot, meta),
                ADVERT_INTERVAL,
                iface,
                vec![(vip, 24)],
            );
            instance.name = instance_name(slot);
            // keepalived cannot track a process by name inside a network namespace (its
            // process events come from the proc connector, which only the initial namespace
            // has): the harness writes this file when it kills or restarts the stand-in.
            instance.track_files.push(TrackFile {
                name: format!("squid_{}", slot + 1),
                path: track_file.to_owned(),
                weight: 0,
            });
            instance
        })
        .collect();
    KeepalivedConfig {
        router_id: label.to_owned(),
        instances,
        garp: crate::keepalived::Garp::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_round_robin_with_distinct_addresses() {
        let meta = Meta::new(3, &[Implementation::Hav, Implementation::Keepalived]);
        assert_eq!(meta.pairs.len(), 6);
        assert_eq!(meta.nodes.len(), 12);
        assert_eq!(meta.vips.len(), 12);
        let labels: Vec<&str> = meta.nodes.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(&labels[..4], ["p0a", "p0b", "p1a", "p1b"]);
        assert_eq!(labels[6], "k0a");
        // Each node masters exactly one VIP.
        for node in 0..meta.nodes.len() {
            let mastered = (0..meta.vips.len())
                .filter(|&v| meta.expected_master(v) == node)
                .count();
            assert_eq!(mastered, 1, "{}", meta.nodes[node].label);
        }
        let hav_vips: Vec<Ipv4Addr> = meta.vips[..6].iter().map(|v| v.address).collect();
        assert_eq!(hav_vips[0], Ipv4Addr::new(198, 51, 100, 100));
        assert_eq!(hav_vips[5], Ipv4Addr::new(198, 51, 100, 105));
        assert_eq!(meta.vips[6].address, Ipv4Addr::new(203, 0, 113, 100));
        assert_eq!(meta.pairs_of(Implementation::Keepalived), vec![3, 4, 5]);
    }

    #[test]
    fn ansi_colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m config reloaded"),
            "2026  INFO config reloaded"
        );
    }

    #[test]
    fn master_down_interval_is_the_rfc_one_for_the_backup() {
        // 3 × 100 ms + (256 − 100) × 100 ms / 256
        assert_eq!(master_down_interval(), Duration::from_nanos(360_937_500));
    }

    #[test]
    fn configs_give_each_node_its_vip_at_the_higher_priority() {
        let meta = Meta::new(1, &[Implementation::Hav]);
        let tracked = Tracked {
            program: PathBuf::from("/x/sqhabcdep0a"),
            process: None,
        };
        let a = hav_config("p0a", "ha-lan", &meta.pairs[0], &meta, &tracked);
        assert_eq!(a.instances[0].priority, MASTER_PRIORITY);
        assert_eq!(a.instances[1].priority, BACKUP_PRIORITY);
        assert_eq!(a.instances[1].vrid, 11);
        let text = a.render(Path::new("/d"));
        assert!(text.contains("process = \"sqhabcdep0a\""), "{text}");
        let b = keepalived_config("p0b", "ha-lan", &meta.pairs[0], &meta, Path::new("/t"));
        assert_eq!(b.instances[1].priority, MASTER_PRIORITY);
        assert_eq!(b.instances[0].priority, BACKUP_PRIORITY);
    }
}
