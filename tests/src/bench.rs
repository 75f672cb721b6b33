//! The failover benchmark: the same faults inflicted on different VRRP implementations
//! ("contenders") in the [`Pair`] topology, measured from the client.
//!
//! One run = a fresh topology, `hav-test-httpd` on both nodes, node `a` (priority 150) elected
//! master, node `b` (priority 100) in backup, a [`Prober`] polling the VIP every 5 ms, then one
//! [`Scenario`] fault on `a`. The figure is the client-perceived outage: from the fault to the
//! first reply from `b` ([`crate::probe::analyse`]). Timing comes only from the real kernel and
//! processes; nothing here asserts on it.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::{Agent, AgentConfig, InstanceSpec};
use crate::keepalived::{
    Garp, Keepalived, KeepalivedConfig, KeepalivedError, TrackFile, TrackScript, Unicast,
    VrrpInstance, VrrpState,
};
use crate::netns::{NetnsError, NsProcess, Presence, SpawnSpec};
use crate::probe::{self, FailoverReport, ProbeConfig, Prober};
use crate::topology::{Lab, Pair};

pub mod loaded;
pub mod many_instances;
pub mod scale_pair;
pub mod stats;

use stats::{ms, ratio};

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Keepalived(#[from] KeepalivedError),
    #[error("{0} is not yet wired into the benchmark")]
    NotWired(&'static str),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error("{contender} does not support {what}")]
    Unsupported {
        contender: &'static str,
        what: String,
    },
    #[error("{0}")]
    Io(String),
}

/// The fault inflicted on the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// The master's switch port goes down (carrier loss on the master).
    LinkCut,
    /// Every process of the master's daemon gets SIGKILL.
    Crash,
    /// SIGTERM to the master's daemon.
    GracefulStop,
    /// The tracked "proxy" (the master's hav-test-httpd) dies; keepalived learns it through a
    /// `track_file` written at the same instant (an external watcher with zero delay).
    TrackedDeathFile,
    /// The tracked "proxy" dies; keepalived learns it through a 1 s `track_script`.
    TrackedDeathScript,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::LinkCut,
        Scenario::Crash,
        Scenario::GracefulStop,
        Scenario::TrackedDeathFile,
        Scenario::TrackedDeathScript,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Scenario::LinkCut => "link-cut",
            Scenario::Crash => "crash",
            Scenario::GracefulStop => "graceful-stop",
            Scenario::TrackedDeathFile => "tracked-death-file",
            Scenario::TrackedDeathScript => "tracked-death-script",
        }
    }

    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.label() == label)
    }

    fn tracking(self) -> TrackingMode {
        match self {
            Scenario::TrackedDeathFile => TrackingMode::File,
            Scenario::TrackedDeathScript => TrackingMode::Script {
                interval: Duration::from_secs(1),
            },
            _ => TrackingMode::None,
        }
    }
}

/// VRRP version and advertisement interval of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub version: u8,
    pub advert_interval: Duration,
}

impl Timing {
    pub const V2_1S: Timing = Timing {
        version: 2,
        advert_interval: Duration::from_secs(1),
    };
    pub const V3_100MS: Timing = Timing {
        version: 3,
        advert_interval: Duration::from_millis(100),
    };
    pub const V3_20MS: Timing = Timing {
        version: 3,
        advert_interval: Duration::from_millis(20),
    };
    /// VRRPv3's shortest interval that both hav and keepalived accept.
    pub const V3_10MS: Timing = Timing {
        version: 3,
        advert_interval: Duration::from_millis(10),
    };
    pub const ALL: [Timing; 3] = [Timing::V2_1S, Timing::V3_100MS, Timing::V3_20MS];

    pub fn label(self) -> String {
        format!("v{} {} ms", self.version, self.advert_interval.as_millis())
    }

    pub fn parse(label: &str) -> Option<Self> {
        match label {
            "v2-1s" => Some(Timing::V2_1S),
            "v3-100ms" => Some(Timing::V3_100MS),
            "v3-20ms" => Some(Timing::V3_20MS),
            "v3-10ms" => Some(Timing::V3_10MS),
            _ => None,
        }
    }

    /// The protocol's bound on a backup's takeover after the last advert it heard:
    /// Master_Down_Interval = 3 × interval + skew, skew = (256 − backup priority) × interval / 256
    /// (RFC 3768 §6.1, RFC 5798 §6.1).
    pub fn master_down_interval(self, backup_priority: u8) -> Duration {
        let skew = self.advert_interval * (256 - u32::from(backup_priority)) / 256;
        self.advert_interval * 3 + skew
    }
}

/// How the node's daemon learns that the tracked proxy died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackingMode {
    None,
    /// A file whose content becomes non-zero (written by [`ContenderNode::tracked_process_died`]).
    File,
    /// A periodic check of the tracked pid.
    Script {
        interval: Duration,
    },
}

/// Everything a contender needs to start one node.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// `a` or `b`: the host in [`Pair`].
    pub node: String,
    pub iface: String,
    pub address: Ipv4Addr,
    pub peer: Ipv4Addr,
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    pub advert_interval: Duration,
    pub vip: Ipv4Addr,
    pub vip_prefix_len: u8,
    /// Multicast (false) or unicast to `peer` (true).
    pub unicast: bool,
    pub tracking: TrackingMode,
    /// The "proxy" whose death the node must notice: the node's hav-test-httpd.
    pub tracked_pid: u32,
    /// A directory private to this node and contender (configs, pid files, track files).
    pub dir: PathBuf,
}

/// The role a node must reach before the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Backup,
}

/// One VRRP implementation under test.
pub trait Contender {
    /// Short name for the tables (`keepalived`, `hav`).
    fn name(&self) -> &'static str;
    /// Starts one node in `lab`'s host `settings.node`.
    fn start(
        &self,
        lab: &Lab,
        settings: &NodeSettings,
    ) -> Result<Box<dyn ContenderNode>, BenchError>;
}

/// A running node of a contender. Dropping it kills its processes.
pub trait ContenderNode {
    /// Waits (event-driven) until the node reports `role`.
    fn wait_role(&mut self, role: Role, timeout: Duration) -> Result<(), BenchError>;
    /// SIGKILL to every process of the daemon, as simultaneously as possible.
    fn crash(&mut self) -> Result<(), BenchError>;
    /// Graceful stop (SIGTERM), waiting for the daemon to exit.
    fn stop(&mut self) -> Result<(), BenchError>;
    /// Called right after the harness killed the tracked process, for trackers that need an
    /// external write (keepalived's track_file). Most implementations do nothing.
    fn tracked_process_died(&mut self) -> Result<(), BenchError>;
    /// The daemon's processes, for RSS and CPU figures.
    fn pids(&self) -> Vec<u32>;
}

/// keepalived 2.2.x, as installed.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeepalivedContender;

impl Contender for KeepalivedContender {
    fn name(&self) -> &'static str {
        "keepalived"
    }

    fn start(
        &self,
        lab: &Lab,
        settings: &NodeSettings,
    ) -> Result<Box<dyn ContenderNode>, BenchError> {
        let mut instance = VrrpInstance::new(
            settings.version,
            settings.vrid,
            settings.priority,
            settings.advert_interval,
            &settings.iface,
            vec![(IpAddr::V4(settings.vip), settings.vip_prefix_len)],
        );
        if settings.unicast {
            instance.unicast = Some(Unicast {
                source: IpAddr::V4(settings.address),
                peers: vec![IpAddr::V4(settings.peer)],
            });
        }
        let track_path = settings.dir.join("proxy.track");
        match settings.tracking {
            TrackingMode::None => {}
            TrackingMode::File => instance.track_files.push(TrackFile {
                name: "proxy".into(),
                path: track_path.clone(),
                weight: 0,
            }),
            TrackingMode::Script { interval } => instance.track_scripts.push(TrackScript {
                name: "proxy".into(),
                script: format!("/usr/bin/kill -0 {}", settings.tracked_pid),
                interval,
                fall: 1,
                rise: 1,
                weight: 0,
            }),
        }
        let config = KeepalivedConfig {
            router_id: settings.node.clone(),
            instances: vec![instance],
            garp: Garp::default(),
        };
        let daemon = Keepalived::start(lab.host(&settings.node)?, &settings.dir, &config)?;
        Ok(Box::new(KeepalivedNode {
            daemon,
            tracking: settings.tracking,
            track_path,
        }))
    }
}

struct KeepalivedNode {
    daemon: Keepalived,
    tracking: TrackingMode,
    track_path: PathBuf,
}

impl ContenderNode for KeepalivedNode {
    fn wait_role(&mut self, role: Role, timeout: Duration) -> Result<(), BenchError> {
        let state = match role {
            Role::Master => VrrpState::Master,
            Role::Backup => VrrpState::Backup,
        };
        self.daemon.wait_state("VI_1", state, timeout)?;
        Ok(())
    }

    fn crash(&mut self) -> Result<(), BenchError> {
        Ok(self.daemon.crash()?)
    }

    fn stop(&mut self) -> Result<(), BenchError> {
        Ok(self.daemon.stop(Duration::from_secs(10))?)
    }

    fn tracked_process_died(&mut self) -> Result<(), BenchError> {
        if self.tracking == TrackingMode::File {
            fs::write(&self.track_path, "1\n")
                .map_err(|e| BenchError::Io(format!("write {}: {e}", self.track_path.display())))?;
        }
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        self.daemon.pids()
    }
}

/// hav-agent, as built in this workspace (`HAV_AGENT_BIN` overrides the binary). It tracks the
/// "proxy" through its pid file with the pidfd process tracker in both tracked-death scenarios
/// (keepalived needs a track file or a periodic script for the same job), weight 0.
#[derive(Debug, Default, Clone)]
pub struct HavContender {
    /// Another build, run as the contender [`HAV_REFERENCE`] (an A/B of two builds in one run).
    reference: Option<PathBuf>,
}

/// The name of a second hav build measured beside the first.
pub const HAV_REFERENCE: &str = "hav-ref";

impl HavContender {
    /// The build at `binary`, named [`HAV_REFERENCE`].
    pub fn reference(binary: PathBuf) -> Self {
        Self {
            reference: Some(binary),
        }
    }
}

impl Contender for HavContender {
    fn name(&self) -> &'static str {
        match self.reference {
            Some(_) => HAV_REFERENCE,
            None => "hav",
        }
    }

    fn start(
        &self,
        lab: &Lab,
        settings: &NodeSettings,
    ) -> Result<Box<dyn ContenderNode>, BenchError> {
        let vip = format!("{}/{}", settings.vip, settings.vip_prefix_len);
        let mut instance =
            InstanceSpec::new(&settings.iface, settings.vrid, settings.priority, &[&vip]);
        instance.version = settings.version;
        instance.advert_interval = settings.advert_interval;
        if settings.unicast {
            instance.source_address = Some(IpAddr::V4(settings.address));
            instance.unicast_peers = vec![(IpAddr::V4(settings.peer), None)];
        }
        let mut extra = String::new();
        if settings.tracking != TrackingMode::None {
            let pid_file = settings.dir.join("proxy.pid");
            fs::create_dir_all(&settings.dir)
                .and_then(|()| fs::write(&pid_file, format!("{}\n", settings.tracked_pid)))
                .map_err(|e| BenchError::Io(format!("write {}: {e}", pid_file.display())))?;
            let _ = writeln!(
                extra,
                "[[process]]\nname = \"proxy\"\npid_file = {:?}\nweight = 0\n",
                pid_file.display().to_string()
            );
            instance.track.push("track_process = [\"proxy\"]".into());
        }
        let mut config = AgentConfig::new(&settings.node, vec![instance]);
        config.extra = extra;
        let agent = match &self.reference {
            Some(binary) => Agent::start_quiet_as(lab, &settings.node, &config, binary)?,
            None => Agent::start_quiet(lab, &settings.node, &config)?,
        };
        Ok(Box::new(HavNode { agent }))
    }
}

struct HavNode {
    agent: Agent,
}

impl ContenderNode for HavNode {
    fn wait_role(&mut self, role: Role, timeout: Duration) -> Result<(), BenchError> {
        let state = match role {
            Role::Master => "Master",
            Role::Backup => "Backup",
        };
        self.agent.wait_state("VI_1", state, timeout)?;
        Ok(())
    }

    fn crash(&mut self) -> Result<(), BenchError> {
        Ok(self.agent.kill()?)
    }

    fn stop(&mut self) -> Result<(), BenchError> {
        self.agent.terminate()?;
        self.agent.wait_exit(Duration::from_secs(10))?;
        Ok(())
    }

    fn tracked_process_died(&mut self) -> Result<(), BenchError> {
        // The pidfd tracker sees the death itself.
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.agent.pid()]
    }
}

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub httpd: PathBuf,
    pub probe_interval: Duration,
    pub port: u16,
    pub master_priority: u8,
    pub backup_priority: u8,
    pub unicast: bool,
    /// Limit for elections and takeovers (safety net, not a measurement).
    pub wait: Duration,
    /// The fault is inflicted after a uniformly random delay in `[0, fault_jitter)` once the
    /// client reaches the master, so its phase relative to adverts and to periodic checks
    /// (the 1 s track_script) varies between runs instead of being fixed by the start-up.
    pub fault_jitter: Duration,
    /// Whether the idle measurement also counts system calls (with strace, in its own window).
    pub count_syscalls: bool,
    /// While idle cost is measured, each node's daemons run on a CPU of their own (node a on
    /// the first, node b on the second), and what each node's interface receives is processed
    /// on that CPU, as two hosts' are; otherwise both may run anywhere.
    pub idle_apart: bool,
    /// Whether every contender's pair runs through the same idle windows at once; by default
    /// each pair runs alone on the host, the contenders taking turns ([`measure_idle`]).
    pub idle_together: bool,
    /// How long a freshly started pair runs before its idle window opens: past the start-up's
    /// one-off work (keepalived and hav-agent alike send a second burst of gratuitous ARPs
    /// 5 s after the master's transition).
    pub idle_settle: Duration,
}

impl BenchConfig {
    pub fn new(httpd: PathBuf) -> Self {
        BenchConfig {
            httpd,
            probe_interval: Duration::from_millis(5),
            port: 8080,
            master_priority: 150,
            backup_priority: 100,
            unicast: false,
            wait: Duration::from_secs(15),
            fault_jitter: Duration::from_secs(1),
            count_syscalls: false,
            idle_apart: true,
            idle_together: false,
            idle_settle: Duration::from_secs(6),
        }
    }
}

/// The outcome of one fault.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub contender: &'static str,
    pub scenario: Scenario,
    pub timing: Timing,
    pub report: FailoverReport,
}

/// Runs one fault for one contender in a fresh [`Pair`]. On failure the run's logs are kept
/// and their directory is named in the error.
pub fn run_once(
    contender: &dyn Contender,
    scenario: Scenario,
    timing: Timing,
    config: &BenchConfig,
) -> Result<RunResult, BenchError> {
    let pair = Pair::new()?;
    let result = run_in(&pair, contender, scenario, timing, config);
    if let Err(e) = &result
        && !matches!(e, BenchError::NotWired(_))
    {
        pair.lab.keep_logs();
    }
    result
}

fn run_in(
    pair: &Pair,
    contender: &dyn Contender,
    scenario: Scenario,
    timing: Timing,
    config: &BenchConfig,
) -> Result<RunResult, BenchError> {
    let lab = &pair.lab;
    let mut httpd_a = start_httpd(lab, "a", config)?;
    let httpd_b = start_httpd(lab, "b", config)?;

    let settings_a = node_settings(pair, "a", contender, scenario, timing, config, &httpd_a)?;
    let settings_b = node_settings(pair, "b", contender, scenario, timing, config, &httpd_b)?;
    let mut node_a = contender.start(lab, &settings_a)?;
    node_a.wait_role(Role::Master, config.wait)?;
    lab.wait_address("a", IpAddr::V4(pair.vip4), Presence::Present, config.wait)?;
    let mut node_b = contender.start(lab, &settings_b)?;
    node_b.wait_role(Role::Backup, config.wait)?;

    let mut probe_config = ProbeConfig::new(SocketAddr::new(IpAddr::V4(pair.vip4), config.port));
    probe_config.interval = config.probe_interval;
    let prober = Prober::start(lab.host("client")?, probe_config)?;
    prober.wait_for_reply("a", Instant::now(), config.wait)?;
    // Phase randomisation (see `fault_jitter`), not a synchronisation.
    std::thread::sleep(random_below(config.fault_jitter)?);

    let fault = Instant::now();
    match scenario {
        Scenario::LinkCut => lab.link_down("a", &pair.a.iface)?,
        Scenario::Crash => node_a.crash()?,
        Scenario::GracefulStop => node_a.stop()?,
        Scenario::TrackedDeathFile | Scenario::TrackedDeathScript => {
            httpd_a.kill()?;
            node_a.tracked_process_died()?;
        }
    }
    lab.wait_address("b", IpAddr::V4(pair.vip4), Presence::Present, config.wait)?;
    // A missing reply is recorded as "no outage figure", not an error: it is a result.
    let _ = prober.wait_for_reply("b", fault, config.wait);
    let samples = prober.stop();
    drop(node_b);
    drop(node_a);
    Ok(RunResult {
        contender: contender.name(),
        scenario,
        timing,
        report: probe::analyse(&samples, fault, "b"),
    })
}

fn start_httpd(lab: &Lab, node: &str, config: &BenchConfig) -> Result<NsProcess, BenchError> {
    let listen = format!("0.0.0.0:{}", config.port);
    let mut httpd = lab.spawn(
        node,
        SpawnSpec::new(format!("httpd-{node}"), &config.httpd)
            .args(["--node", node, "--listen", &listen])
            .ready_pipe(),
    )?;
    httpd.wait_ready(config.wait)?;
    Ok(httpd)
}

fn node_settings(
    pair: &Pair,
    node: &str,
    contender: &dyn Contender,
    scenario: Scenario,
    timing: Timing,
    config: &BenchConfig,
    httpd: &NsProcess,
) -> Result<NodeSettings, BenchError> {
    let (me, peer, priority) = match node {
        "a" => (&pair.a, &pair.b, config.master_priority),
        _ => (&pair.b, &pair.a, config.backup_priority),
    };
    Ok(NodeSettings {
        node: node.to_owned(),
        iface: me.iface.clone(),
        address: me.ipv4,
        peer: peer.ipv4,
        version: timing.version,
        vrid: 51,
        priority,
        advert_interval: timing.advert_interval,
        vip: pair.vip4,
        vip_prefix_len: 24,
        unicast: config.unicast,
        tracking: scenario.tracking(),
        tracked_pid: httpd.pid(),
        dir: pair
            .lab
            .log_dir()
            .join(format!("{}-{node}", contender.name())),
    })
}

/// A uniformly random duration in `[0, limit)` (zero if `limit` is zero).
pub(crate) fn random_below(limit: Duration) -> Result<Duration, BenchError> {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| BenchError::Io(format!("read /dev/urandom: {e}")))?;
    let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    Ok(Duration::from_nanos(
        u64::from_le_bytes(bytes).checked_rem(nanos).unwrap_or(0),
    ))
}

/// Idle cost of one node pair at a given timing: medians over the windows of
/// [`measure_idle`].
#[derive(Debug, Clone)]
pub struct IdleCost {
    pub contender: &'static str,
    pub timing: Timing,
    /// The length of one window.
    pub window: Duration,
    /// (master, backup): summed VmRSS of the node's processes, in KiB, after the last window.
    pub rss_kib: (u64, u64),
    /// (master, backup): CPU time over a window as % of one core, from utime+stime of
    /// /proc/PID/stat (10 ms tick resolution); the median of the windows.
    pub cpu_percent: (f64, f64),
    /// (master, backup): the same from /proc/PID/task/*/schedstat (nanosecond resolution).
    pub cpu_percent_schedstat: (f64, f64),
    /// (master, backup): context switches per second (voluntary + involuntary, every thread):
    /// how often the daemon is woken.
    pub wakeups_per_second: (f64, f64),
    /// Each window's figures, in order: the n-th window of every contender at one timing is
    /// from the same round (or the same span of time, measured together), so their ratios
    /// pair window by window.
    pub windows: Vec<IdleWindow>,
    /// (master, backup): system calls per second, counted by `strace -c -f` in a second window
    /// of the same length (strace slows the daemon, so it is not attached while CPU is measured).
    pub syscalls_per_second: Option<(f64, f64)>,
    pub processes: (usize, usize),
    /// Whether each node had a CPU of its own ([`BenchConfig::idle_apart`]).
    pub apart: bool,
    /// Whether the contenders ran at once ([`BenchConfig::idle_together`]).
    pub together: bool,
    /// The peer of a mixed measurement: the contender's master was measured beside the peer's
    /// backup, and its backup beside the peer's master.
    pub peer: Option<&'static str>,
}

/// One window's figures of one pair, (master, backup) each.
#[derive(Debug, Clone, Copy)]
pub struct IdleWindow {
    pub cpu_percent: (f64, f64),
    pub cpu_percent_schedstat: (f64, f64),
    pub wakeups_per_second: (f64, f64),
}

impl IdleWindow {
    /// The master's figures of `master`'s window beside the backup's of `backup`'s.
    fn of_sides(master: &IdleWindow, backup: &IdleWindow) -> IdleWindow {
        IdleWindow {
            cpu_percent: (master.cpu_percent.0, backup.cpu_percent.1),
            cpu_percent_schedstat: (
                master.cpu_percent_schedstat.0,
                backup.cpu_percent_schedstat.1,
            ),
            wakeups_per_second: (master.wakeups_per_second.0, backup.wakeups_per_second.1),
        }
    }
}

/// A contender's settled master/backup pair, kept running while its idle cost is sampled.
/// Fields drop in order: the daemons first, then the services they track, then the lab.
struct IdleRun {
    pids: (Vec<u32>, Vec<u32>),
    _nodes: (Box<dyn ContenderNode>, Box<dyn ContenderNode>),
    _httpd: (NsProcess, NsProcess),
    pair: Pair,
}

impl IdleRun {
    /// A settled pair of `master`'s node a and `backup`'s node b (most often one contender).
    fn start(
        master: &dyn Contender,
        backup: &dyn Contender,
        timing: Timing,
        config: &BenchConfig,
    ) -> Result<IdleRun, BenchError> {
        let pair = Pair::new()?;
        let lab = &pair.lab;
        let httpd_a = start_httpd(lab, "a", config)?;
        let httpd_b = start_httpd(lab, "b", config)?;
        let settings = |node: &str, contender: &dyn Contender, httpd: &NsProcess| {
            node_settings(
                &pair,
                node,
                contender,
                Scenario::LinkCut,
                timing,
                config,
                httpd,
            )
        };
        let settings_a = settings("a", master, &httpd_a)?;
        let settings_b = settings("b", backup, &httpd_b)?;
        let mut node_a = master.start(lab, &settings_a)?;
        node_a.wait_role(Role::Master, config.wait)?;
        let mut node_b = backup.start(lab, &settings_b)?;
        node_b.wait_role(Role::Backup, config.wait)?;
        Ok(IdleRun {
            pids: (node_a.pids(), node_b.pids()),
            _nodes: (node_a, node_b),
            _httpd: (httpd_a, httpd_b),
            pair,
        })
    }
}

/// The CPU and context-switch counters of a pair's two nodes at one instant.
#[derive(Debug, Clone, Copy)]
struct Counters {
    at: Instant,
    ticks: (u64, u64),
    ns: (u64, u64),
    switches: (u64, u64),
}

impl Counters {
    fn read(pids: &(Vec<u32>, Vec<u32>)) -> Counters {
        Counters {
            at: Instant::now(),
            ticks: (cpu_ticks(&pids.0), cpu_ticks(&pids.1)),
            ns: (cpu_ns(&pids.0), cpu_ns(&pids.1)),
            switches: (context_switches(&pids.0), context_switches(&pids.1)),
        }
    }

    /// What happened from `self` to `end`.
    fn until(&self, end: &Counters) -> IdleWindow {
        let seconds = end.at.duration_since(self.at).as_secs_f64();
        let both = |f: &dyn Fn(u64) -> f64, start: (u64, u64), end: (u64, u64)| {
            (
                f(end.0.saturating_sub(start.0)),
                f(end.1.saturating_sub(start.1)),
            )
        };
        IdleWindow {
            cpu_percent: both(
                &|ticks| ticks as f64 / clock_ticks_per_second() / seconds * 100.0,
                self.ticks,
                end.ticks,
            ),
            cpu_percent_schedstat: both(&|ns| ns as f64 / 1e9 / seconds * 100.0, self.ns, end.ns),
            wakeups_per_second: both(&|n| n as f64 / seconds, self.switches, end.switches),
        }
    }
}

/// `rounds` windows of `window` over the (master, backup) processes of every pair of `pairs`,
/// all pairs sampled over the same spans of time; each pair's windows, in order.
pub fn sample_windows(
    pairs: &[(Vec<u32>, Vec<u32>)],
    window: Duration,
    rounds: usize,
) -> Vec<Vec<IdleWindow>> {
    let mut windows = vec![Vec::new(); pairs.len()];
    for _ in 0..rounds.max(1) {
        let start: Vec<Counters> = pairs.iter().map(Counters::read).collect();
        // The measurement window itself: a fixed span of idle operation, not a synchronisation.
        std::thread::sleep(window);
        for ((pids, start), windows) in pairs.iter().zip(&start).zip(&mut windows) {
            windows.push(start.until(&Counters::read(pids)));
        }
    }
    windows
}

/// The median over `windows` of what `pick` reads, master and backup apart.
fn median_of(windows: &[IdleWindow], pick: fn(&IdleWindow) -> (f64, f64)) -> (f64, f64) {
    let side = |side: fn((f64, f64)) -> f64| {
        let values: Vec<f64> = windows.iter().map(|w| side(pick(w))).collect();
        stats::median_f64(&values).unwrap_or_default()
    };
    (side(|v| v.0), side(|v| v.1))
}

/// The idle cost of every contender at `timing`, over `rounds` windows of `window` each.
///
/// By default each contender's pair runs alone on the host and the contenders take turns: a
/// round starts a fresh pair of each in turn (in the opposite order the next round, so that a
/// drift of the host's speed weighs on both ends alike), lets it settle
/// ([`BenchConfig::idle_settle`]) and measures one window. Two daemons with the same advert
/// interval on one CPU do not cost what each costs alone: the one whose timer fires second
/// finds the CPU awake, often while the first is still running, and skips the wake-up out of
/// an idle CPU that dominates an advert's cost. So the ratios pair the windows of one round.
///
/// With a `peer`, each turn is two pairs, one after the other: the contender's master with the
/// peer's backup, then the peer's master with the contender's backup. Every master then sends
/// to the same receiver, and every backup hears the same sender. On one host a sender also
/// pays for waking the receiver's CPU (the steering's interrupt, [`place_apart`]), which costs
/// more the longer that CPU has slept, so a thrifty backup makes its own master look dearer.
///
/// With [`BenchConfig::idle_together`], every pair is started first and all are measured
/// through the same windows at once (no `peer`).
pub fn measure_idle(
    contenders: &[&dyn Contender],
    peer: Option<&dyn Contender>,
    timing: Timing,
    window: Duration,
    rounds: usize,
    config: &BenchConfig,
) -> Result<Vec<IdleCost>, BenchError> {
    let apart = config.idle_apart && can_place_apart();
    let start = |master: &dyn Contender, backup: &dyn Contender| {
        let run = IdleRun::start(master, backup, timing, config)?;
        if apart {
            place_apart(&run.pair, &run.pids.0, &run.pids.1)?;
        }
        Ok::<_, BenchError>(run)
    };
    let sides = |run: &IdleRun| -> Result<(Side, Side), BenchError> {
        let syscalls = match config.count_syscalls {
            true => Some(count_syscalls(&run.pids.0, &run.pids.1, window)?),
            false => None,
        };
        let side = |pids: &[u32], syscalls: Option<f64>| Side {
            rss_kib: rss_kib(pids),
            processes: pids.len(),
            syscalls_per_second: syscalls,
        };
        Ok((
            side(&run.pids.0, syscalls.map(|s| s.0)),
            side(&run.pids.1, syscalls.map(|s| s.1)),
        ))
    };
    let cost =
        |contender: &'static str, (master, backup): (Side, Side), windows: Vec<IdleWindow>| {
            IdleCost {
                contender,
                timing,
                window,
                rss_kib: (master.rss_kib, backup.rss_kib),
                cpu_percent: median_of(&windows, |w| w.cpu_percent),
                cpu_percent_schedstat: median_of(&windows, |w| w.cpu_percent_schedstat),
                wakeups_per_second: median_of(&windows, |w| w.wakeups_per_second),
                windows,
                syscalls_per_second: master.syscalls_per_second.zip(backup.syscalls_per_second),
                processes: (master.processes, backup.processes),
                apart,
                together: config.idle_together,
                peer: peer.map(|peer| peer.name()),
            }
        };
    if config.idle_together {
        if peer.is_some() {
            return Err(BenchError::Io(
                "a mixed idle measurement takes turns; it cannot run the pairs together".into(),
            ));
        }
        let runs = (contenders.iter())
            .map(|contender| start(*contender, *contender))
            .collect::<Result<Vec<_>, _>>()?;
        // Settling: a span of operation before the window, not a synchronisation.
        std::thread::sleep(config.idle_settle);
        let pids: Vec<(Vec<u32>, Vec<u32>)> = runs.iter().map(|run| run.pids.clone()).collect();
        let windows = sample_windows(&pids, window, rounds);
        return (contenders.iter().zip(&runs).zip(windows))
            .map(|((contender, run), windows)| Ok(cost(contender.name(), sides(run)?, windows)))
            .collect();
    }
    // One settled pair's window, and its sides' figures when `last`.
    let measure = |master: &dyn Contender, backup: &dyn Contender, last: bool| {
        let run = start(master, backup)?;
        // Settling: a span of operation before the window, not a synchronisation.
        std::thread::sleep(config.idle_settle);
        let measured = sample_windows(std::slice::from_ref(&run.pids), window, 1);
        let window = (measured.into_iter().flatten().next())
            .ok_or_else(|| BenchError::Io("no idle window was measured".into()))?;
        let sides = if last { Some(sides(&run)?) } else { None };
        Ok::<_, BenchError>((window, sides))
    };
    let rounds = rounds.max(1);
    let mut windows: Vec<Vec<IdleWindow>> = vec![Vec::new(); contenders.len()];
    let mut costs: Vec<Option<IdleCost>> = vec![None; contenders.len()];
    for round in 0..rounds {
        let last = round + 1 == rounds;
        let order: Vec<usize> = match round % 2 {
            0 => (0..contenders.len()).collect(),
            _ => (0..contenders.len()).rev().collect(),
        };
        for index in order {
            let contender = contenders[index];
            let (window, sides) = match peer {
                None => measure(contender, contender, last)?,
                Some(peer) => {
                    let (as_master, master_sides) = measure(contender, peer, last)?;
                    let (as_backup, backup_sides) = measure(peer, contender, last)?;
                    let sides = master_sides.zip(backup_sides).map(|(m, b)| (m.0, b.1));
                    (IdleWindow::of_sides(&as_master, &as_backup), sides)
                }
            };
            windows[index].push(window);
            if let Some(sides) = sides {
                let windows = std::mem::take(&mut windows[index]);
                costs[index] = Some(cost(contender.name(), sides, windows));
            }
        }
    }
    Ok(costs.into_iter().flatten().collect())
}

/// One node's figures at the end of its last window.
#[derive(Debug, Clone, Copy)]
struct Side {
    rss_kib: u64,
    processes: usize,
    syscalls_per_second: Option<f64>,
}

/// A CPU's time from `/proc/stat`, in clock ticks: busy (user, nice, system, irq, softirq,
/// steal) and in all (busy, idle and iowait). Unlike a process's own time, busy time includes
/// the receive path's softirq work wherever it ran (in the daemon's context, in idle, or in
/// `ksoftirqd`): with a node's processes and receive path on one CPU, that CPU's busy time is
/// what the node costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    /// CPU `cpu`'s times now.
    pub fn read(cpu: usize) -> Result<CpuTimes, BenchError> {
        let stat = fs::read_to_string("/proc/stat")
            .map_err(|e| BenchError::Io(format!("cannot read /proc/stat: {e}")))?;
        CpuTimes::parse(&stat, cpu)
            .ok_or_else(|| BenchError::Io(format!("no line for CPU {cpu} in /proc/stat")))
    }

    /// CPU `cpu`'s times from the text of `/proc/stat`.
    pub fn parse(stat: &str, cpu: usize) -> Option<CpuTimes> {
        let label = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|line| line.split_whitespace().next() == Some(label.as_str()))?;
        let fields: Vec<u64> = (line.split_whitespace().skip(1))
            .take(8)
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
            return None;
        };
        let busy = user + nice + system + irq + softirq + steal;
        Some(CpuTimes {
            busy,
            total: busy + idle + iowait,
        })
    }

    /// The share of the time from `self` to `later` the CPU was busy, in % (0 if no tick passed).
    pub fn busy_percent_until(&self, later: &CpuTimes) -> f64 {
        let total = later.total.saturating_sub(self.total);
        match total {
            0 => 0.0,
            total => later.busy.saturating_sub(self.busy) as f64 * 100.0 / total as f64,
        }
    }
}

/// Whether the host has the two CPUs [`place_apart`] needs.
pub fn can_place_apart() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// Runs node a's processes `a` and what its interface receives on the first CPU, and node b's
/// on the second, as two hosts would: each node pays for its own sends, receives and wake-ups.
pub fn place_apart(pair: &Pair, a: &[u32], b: &[u32]) -> Result<(), BenchError> {
    pin(a, 0)?;
    pin(b, 1)?;
    steer_receive(pair, "a", 0)?;
    steer_receive(pair, "b", 1)
}

/// Has what `node`'s interface receives processed on CPU `cpu` (receive packet steering), as
/// its own host's CPU would. A veth delivers to its peer on the sending CPU: without this, a
/// master's CPU would also run its backup's receive path (the socket filters, the wake-up of
/// the backup's process), which on two hosts the backup's CPU does.
fn steer_receive(pair: &Pair, node: &str, cpu: usize) -> Result<(), BenchError> {
    let attachment = pair.node(node)?;
    let namespace = pair.lab.host(&attachment.host)?;
    let path = format!("/sys/class/net/{}/queues/rx-0/rps_cpus", attachment.iface);
    let write = format!("echo {:x} > {path}", 1u64 << cpu);
    let out = namespace.exec(&["sh", "-c", &write])?;
    if !out.success() {
        return Err(BenchError::Io(format!(
            "cannot steer {node}'s receive to CPU {cpu} ({path}): {}",
            out.stderr.trim()
        )));
    }
    Ok(())
}

/// Runs every thread of `pids` on CPU `cpu` only; threads and processes they start later
/// inherit it.
fn pin(pids: &[u32], cpu: usize) -> Result<(), BenchError> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let tasks = pids
        .iter()
        .filter_map(|pid| fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flat_map(|tasks| tasks.flatten())
        .filter_map(|task| task.file_name().to_str()?.parse::<libc::pid_t>().ok());
    for tid in tasks {
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            return Err(BenchError::Io(format!(
                "cannot pin thread {tid} to CPU {cpu}: {error}"
            )));
        }
    }
    Ok(())
}

/// Sum of VmRSS (KiB) of `pids`, from /proc/PID/status.
pub fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

/// Sum of utime + stime (clock ticks) of `pids`, from /proc/PID/stat.
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // `rest` starts at field 3; utime and stime are fields 14 and 15.
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .sum()
}

/// Sum of on-CPU time (ns) of every thread of `pids`, from /proc/PID/task/*/schedstat.
pub fn cpu_ns(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flat_map(|tasks| tasks.flatten())
        .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Sum of voluntary and involuntary context switches of every thread of `pids`.
pub fn context_switches(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flat_map(|tasks| tasks.flatten())
        .filter_map(|task| fs::read_to_string(task.path().join("status")).ok())
        .map(|status| {
            (status.lines())
                .filter_map(|line| {
                    let value = line
                        .strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))?;
                    value.trim().parse::<u64>().ok()
                })
                .sum::<u64>()
        })
        .sum()
}

/// System calls per second of the processes `a` and `b` (each a node's daemon), counted by
/// `strace -c -f` attached to both for `window`.
/// Each summary also goes to stderr, as the profile behind the figure.
fn count_syscalls(a: &[u32], b: &[u32], window: Duration) -> Result<(f64, f64), BenchError> {
    let dir = std::env::temp_dir().join(format!("hav-bench-strace-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| BenchError::Io(format!("{}: {e}", dir.display())))?;
    let attach = |pids: &[u32], name: &str| -> Result<(std::process::Child, PathBuf), BenchError> {
        let out = dir.join(name);
        let mut command = std::process::Command::new("strace");
        command.args(["-c", "-f", "-o"]).arg(&out);
        for pid in pids {
            command.arg("-p").arg(pid.to_string());
        }
        let child = command
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Io(format!("strace: {e}")))?;
        Ok((child, out))
    };
    let tracers = [(attach(a, "a")?, a), (attach(b, "b")?, b)];
    let started = Instant::now();
    // The counting window itself: a fixed span of idle operation, not a synchronisation.
    std::thread::sleep(window);
    let elapsed = started.elapsed();
    let mut rates = Vec::new();
    for ((mut child, out), pids) in tracers {
        // SAFETY: kill(2) on our own child; SIGINT makes strace detach and write its summary.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        child
            .wait()
            .map_err(|e| BenchError::Io(format!("strace: {e}")))?;
        let summary = fs::read_to_string(&out)
            .map_err(|e| BenchError::Io(format!("{}: {e}", out.display())))?;
        eprintln!(
            "system calls of pids {pids:?} over {:.1} s:\n{summary}",
            elapsed.as_secs_f64()
        );
        rates.push(strace_total_calls(&summary)? as f64 / elapsed.as_secs_f64());
    }
    let _ = fs::remove_dir_all(&dir);
    Ok((rates[0], rates[1]))
}

/// The total number of calls in an `strace -c` summary: its `total` line, read in the column
/// the header names `calls` (numbers are right-aligned under their heading).
fn strace_total_calls(summary: &str) -> Result<u64, BenchError> {
    let unreadable = || BenchError::Io(format!("unreadable strace summary: {summary}"));
    let header = (summary.lines())
        .find(|line| line.contains("calls") && line.contains("syscall"))
        .ok_or_else(unreadable)?;
    let column_end = header.find("calls").ok_or_else(unreadable)? + "calls".len();
    let total = (summary.lines())
        .find(|line| line.trim_end().ends_with("total"))
        .ok_or_else(unreadable)?;
    (total.get(..column_end))
        .and_then(|head| head.split_whitespace().last()?.parse().ok())
        .ok_or_else(unreadable)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Summary of several runs of one contender in one scenario and timing.
#[derive(Debug, Clone)]
pub struct Summary {
    pub runs: usize,
    pub answered: usize,
    pub median: Option<Duration>,
    pub min: Option<Duration>,
    pub max: Option<Duration>,
    pub failed_probes_median: usize,
    pub old_holder_replies_median: usize,
}

pub fn summarise(results: &[&RunResult]) -> Summary {
    let mut outages: Vec<Duration> = results.iter().filter_map(|r| r.report.outage).collect();
    outages.sort();
    let mut failed: Vec<usize> = results.iter().map(|r| r.report.failed_probes).collect();
    failed.sort();
    let mut old: Vec<usize> = results
        .iter()
        .map(|r| r.report.old_holder_replies)
        .collect();
    old.sort();
    Summary {
        runs: results.len(),
        answered: outages.len(),
        median: median(&outages),
        min: outages.first().copied(),
        max: outages.last().copied(),
        failed_probes_median: median(&failed).unwrap_or(0),
        old_holder_replies_median: median(&old).unwrap_or(0),
    }
}

fn median<T: Copy>(sorted: &[T]) -> Option<T> {
    sorted.get(sorted.len() / 2).copied()
}

/// Renders one table per (scenario, timing) with a row per contender and the hav/keepalived
/// ratio of medians. `skipped` lists contenders that were not run, with the reason.
pub fn render_tables(
    results: &[RunResult],
    scenarios: &[Scenario],
    timings: &[Timing],
    contenders: &[&'static str],
    skipped: &[(&'static str, String)],
    config: &BenchConfig,
) -> String {
    let mut out = String::new();
    for &scenario in scenarios {
        let _ = writeln!(
            out,
            "\n## {} (probe every {} ms)",
            scenario.label(),
            config.probe_interval.as_millis()
        );
        let _ = writeln!(
            out,
            "| timing | contender | runs | outage median | min | max | bound 3×int+skew | failed probes (median) | old-holder replies (median) |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for &timing in timings {
            let bound = timing.master_down_interval(config.backup_priority);
            let mut medians = Vec::new();
            for &name in contenders {
                let runs: Vec<&RunResult> = results
                    .iter()
                    .filter(|r| r.contender == name && r.scenario == scenario && r.timing == timing)
                    .collect();
                if runs.is_empty() {
                    continue;
                }
                let s = summarise(&runs);
                medians.push((name, s.median));
                let _ = writeln!(
                    out,
                    "| {} | {name} | {}/{} | {} | {} | {} | {} | {} | {} |",
                    timing.label(),
                    s.answered,
                    s.runs,
                    ms(s.median),
                    ms(s.min),
                    ms(s.max),
                    ms(Some(bound)),
                    s.failed_probes_median,
                    s.old_holder_replies_median,
                );
            }
            let find = |n: &str| medians.iter().find(|(c, _)| *c == n).and_then(|(_, m)| *m);
            if let (Some(hav), Some(ka)) = (find("hav"), find("keepalived")) {
                let _ = writeln!(
                    out,
                    "| {} | hav/keepalived | | {:.2} | | | | | |",
                    timing.label(),
                    hav.as_secs_f64() / ka.as_secs_f64()
                );
            }
        }
    }
    for (name, why) in skipped {
        let _ = writeln!(out, "\nnote: contender `{name}` skipped: {why}");
    }
    out
}

/// Renders the idle-cost table: one row per contender and timing, then for each timing measured
/// with keepalived and hav the ratio hav / keepalived of CPU (schedstat), wake-ups and system
/// calls, master and backup.
pub fn render_idle(costs: &[IdleCost]) -> String {
    let mut out = String::new();
    let placement = if costs.first().is_some_and(|c| c.apart) {
        "each node and its receive path on a CPU of its own, as on two hosts"
    } else {
        "both nodes free to share the CPUs"
    };
    let turns = match costs.first() {
        Some(c) if c.together => "every pair through the same windows".to_owned(),
        Some(IdleCost {
            peer: Some(peer), ..
        }) => format!(
            "mixed pairs, each alone on the host: each master against {peer}'s backup, each backup against {peer}'s master"
        ),
        _ => "each pair alone on the host, the contenders taking turns".to_owned(),
    };
    let _ = writeln!(
        out,
        "\n## idle cost (node pair settled, window measured; {turns}; {placement})"
    );
    let _ = writeln!(
        out,
        "| contender | timing | windows | master RSS KiB (procs) | backup RSS KiB (procs) | master CPU % stat (schedstat) | backup CPU % stat (schedstat) | wake-ups/s master, backup | syscalls/s master, backup |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for c in costs {
        let syscalls = match c.syscalls_per_second {
            Some((a, b)) => format!("{a:.0}, {b:.0}"),
            None => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} × {:.0} s | {} ({}) | {} ({}) | {:.2} ({:.3}) | {:.2} ({:.3}) | {:.0}, {:.0} | {syscalls} |",
            c.contender,
            c.timing.label(),
            c.windows.len(),
            c.window.as_secs_f64(),
            c.rss_kib.0,
            c.processes.0,
            c.rss_kib.1,
            c.processes.1,
            c.cpu_percent.0,
            c.cpu_percent_schedstat.0,
            c.cpu_percent.1,
            c.cpu_percent_schedstat.1,
            c.wakeups_per_second.0,
            c.wakeups_per_second.1,
        );
    }
    let find = |name: &str, timing: Timing| {
        costs
            .iter()
            .find(|c| c.contender == name && c.timing == timing)
    };
    let mut timings: Vec<Timing> = costs.iter().map(|c| c.timing).collect();
    timings.dedup();
    for against in ["keepalived", HAV_REFERENCE] {
        let mut header = false;
        for &timing in &timings {
            let (Some(hav), Some(reference)) = (find("hav", timing), find(against, timing)) else {
                continue;
            };
            if !header {
                let _ = writeln!(
                    out,
                    "\n| hav / {against} | CPU master | CPU backup | wake-ups master | wake-ups backup | syscalls master | syscalls backup |\n|---|---|---|---|---|---|---|"
                );
                header = true;
            }
            render_ratios(&mut out, timing, hav, reference);
        }
    }
    out
}

/// One row of ratios: `hav` over `reference`, window by window.
fn render_ratios(out: &mut String, timing: Timing, hav: &IdleCost, reference: &IdleCost) {
    // Window by window (the same round, or the same span of time), then the median of the
    // ratios.
    let paired = |pick: &dyn Fn(&IdleWindow) -> f64| {
        let values = |cost: &IdleCost| cost.windows.iter().map(pick).collect::<Vec<_>>();
        stats::paired_ratio(&values(hav), &values(reference))
    };
    let syscalls = match (hav.syscalls_per_second, reference.syscalls_per_second) {
        (Some(h), Some(r)) => format!("{} | {}", ratio(h.0, r.0), ratio(h.1, r.1)),
        _ => "– | –".into(),
    };
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {syscalls} |",
        timing.label(),
        paired(&|w| w.cpu_percent_schedstat.0),
        paired(&|w| w.cpu_percent_schedstat.1),
        paired(&|w| w.wakeups_per_second.0),
        paired(&|w| w.wakeups_per_second.1),
    );
}

/// The directory of the running executable (where cargo puts `hav-test-httpd` next to the
/// benchmark binary).
pub fn sibling_binary(name: &str) -> Result<PathBuf, BenchError> {
    let exe = std::env::current_exe().map_err(|e| BenchError::Io(format!("current_exe: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    // Binaries live in target/<profile>/; test executables in target/<profile>/deps/.
    for candidate in [dir.join(name), dir.join("..").join(name)] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(BenchError::Io(format!(
        "{name} not found next to {}",
        exe.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 0 50 1000 5 0 20 0 0 0\n\
        cpu0 60 0 30 500 2 0 10 0 0 0\n\
        cpu1 40 1 20 500 3 4 10 2 0 0\n\
        intr 12345\n";

    #[test]
    fn a_cpus_busy_time_counts_softirq_and_steal_and_leaves_out_idle_and_iowait() {
        assert_eq!(
            CpuTimes::parse(STAT, 1),
            Some(CpuTimes {
                busy: 40 + 1 + 20 + 4 + 10 + 2,
                total: 77 + 500 + 3
            })
        );
        assert_eq!(CpuTimes::parse(STAT, 0).map(|t| t.busy), Some(60 + 30 + 10));
        assert_eq!(CpuTimes::parse(STAT, 2), None, "no such CPU");
        assert_eq!(CpuTimes::parse("cpu1 1 2 3\n", 1), None, "a short line");
    }

    #[test]
    fn busy_percent_is_the_busy_share_of_the_ticks_between_two_readings() {
        let before = CpuTimes {
            busy: 100,
            total: 1000,
        };
        let after = CpuTimes {
            busy: 130,
            total: 1200,
        };
        assert!((before.busy_percent_until(&after) - 15.0).abs() < 1e-9);
        assert_eq!(before.busy_percent_until(&before), 0.0, "no tick passed");
    }

    #[test]
    fn master_down_interval_matches_the_rfc_formula() {
        // 3 × 1 s + (256 − 100) / 256 s
        assert_eq!(
            Timing::V2_1S.master_down_interval(100),
            Duration::from_secs(3) + Duration::from_secs(156) / 256
        );
        assert_eq!(
            Timing::V3_20MS.master_down_interval(100),
            Duration::from_millis(60) + Duration::from_millis(20) * 156 / 256
        );
    }

    #[test]
    fn the_calls_of_an_strace_summary_are_read_from_their_column() {
        let summary = "% time     seconds  usecs/call     calls    errors syscall\n\
                       ------ ----------- ----------- --------- --------- ----------------\n\
                       \x20 60.00    0.000300           3       100           recvmsg\n\
                       \x20 40.00    0.000200           2        44        19 epoll_wait\n\
                       ------ ----------- ----------- --------- --------- ----------------\n\
                       100.00    0.000500           3       144        19 total\n";
        assert_eq!(strace_total_calls(summary).expect("a summary"), 144);
        assert!(strace_total_calls("nothing traced").is_err());
    }

    #[test]
    fn labels_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.label()), Some(s));
        }
        assert_eq!(Timing::parse("v3-20ms"), Some(Timing::V3_20MS));
        assert_eq!(Timing::parse("v4"), None);
    }
}
