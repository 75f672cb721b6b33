//! The validated node config: what `hav-agent` runs from.
//!
//! Every value here has been checked against the protocol and against the rest of the config:
//! names are unique, references resolve, addresses match their instance's family and version,
//! intervals fit the wire format. Code holding a [`NodeConfig`] never re-checks any of it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hav_vrrp::{AdvertInterval, Auth, Family, Priority, V3Checksum, Version, VrId};
use rustls::pki_types::ServerName;

use super::alerts::{NotifyFifo, RealtimePriority, Smtp};
use super::probe_url::ProbeUrl;

/// A whole node config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub node: NodeSettings,
    pub instances: Vec<Instance>,
    pub scripts: Vec<Script>,
    pub processes: Vec<TrackedProcess>,
    pub track_files: Vec<TrackFile>,
    pub probes: Vec<Probe>,
    pub sync_groups: Vec<SyncGroup>,
    /// `[[virtual_server]]`s: load balancing of real servers behind a VIP of an instance.
    pub virtual_servers: Vec<VirtualServer>,
    /// `[telemetry]`; everything off when the table is absent.
    pub telemetry: Telemetry,
    /// `[coordinator]`: where the fleet control plane is; `None` runs from this file alone.
    pub coordinator: Option<CoordinatorLink>,
}

/// `[coordinator]`: how the agent reaches hav-coordinator over mTLS. The agent never waits on it:
/// VRRP runs whether the coordinator answers or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorLink {
    /// Where coordinators sharing one store listen, tried in this order (never empty): each
    /// `host:port` or `https://host:port`.
    pub addresses: Vec<String>,
    /// The fleet CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate (`havctl certs issue --kind agent`).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// `[node]`: who this node is and where it keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// The node's identity towards the coordinator and in logs.
    pub name: String,
    /// Default `/var/lib/hav`.
    pub state_dir: PathBuf,
    /// Unix socket where the agent serves its status, if any.
    pub status_socket: Option<PathBuf>,
    /// UDP port of the hand-over beacons between the nodes of a pair (default 7401).
    pub handover_port: u16,
    /// keepalived's `vrrp_strict`: every instance's default `strict`.
    pub strict: bool,
    /// keepalived's notify FIFO: a line per state change.
    pub notify_fifo: Option<NotifyFifo>,
    /// `[node.smtp]`: mail on state changes; none when absent.
    pub smtp: Option<Smtp>,
    /// The highest `SCHED_RR` priority the agent raises itself to when it finds itself woken
    /// late; it never changes its scheduling when `None`.
    pub max_auto_priority: Option<RealtimePriority>,
}

/// The UDP port of the hand-over beacons unless `[node] handover_port` says otherwise.
pub const DEFAULT_HANDOVER_PORT: u16 = 7401;

/// `[[instance]]`: one virtual router (keepalived's `vrrp_instance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub interface: String,
    pub vrid: VrId,
    pub version: Version,
    /// The family of every address of the instance, taken from its virtual addresses.
    pub family: Family,
    /// 1..=255; 255 means this node owns the addresses.
    pub priority: Priority,
    /// Fits `version` on the wire.
    pub advert_interval: AdvertInterval,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// After a planned hand-over (a resignation, a graceful stop, a better master's preemption)
    /// the old master keeps serving its established connections to the VIPs, silently, for at
    /// most this long, while the new master passes it the packets of those connections.
    /// Zero: off (the VIPs go at once, as with keepalived).
    pub connection_drain: Duration,
    /// Accept packets sent to the virtual addresses while master (RFC 5798 Accept_Mode). Default
    /// true, unlike the RFC: a proxy must receive the traffic sent to its VIPs, as it does under
    /// keepalived outside `vrrp_strict`.
    pub accept: bool,
    /// Meaningful for VRRPv3 over IPv4 only; the default elsewhere.
    pub checksum: V3Checksum,
    /// Source of adverts (keepalived's `unicast_src_ip`); the interface's primary address if unset.
    pub source_address: Option<IpAddr>,
    pub transport: Transport,
    /// `Auth::None` unless version 2 with `auth_pass`.
    pub auth: Auth,
    /// At least one, each unique on the node.
    pub vips: Vec<Vip>,
    pub track: Vec<Track>,
    pub notify: Notify,
    /// Mail on this instance's state changes; `None` follows `[node.smtp] alert`.
    pub smtp_alert: Option<bool>,
    pub garp: GarpSchedule,
    /// keepalived's `strict_mode` (default `[node] strict`): the config was held to RFC 5798
    /// alone, and adverts whose address list differs from ours are dropped.
    pub strict: bool,
    /// The VIPs on a macvlan with the virtual MAC; `None`: on the interfaces themselves.
    pub vmac: Option<super::network::Vmac>,
    /// Present while master (keepalived's `virtual_routes`).
    pub routes: Vec<super::network::VirtualRoute>,
    /// Present while master (keepalived's `virtual_rules`).
    pub rules: Vec<super::network::VirtualRule>,
}

/// How adverts reach the other routers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// To 224.0.0.18 or ff02::12.
    Multicast,
    /// To each peer in turn; never empty.
    Unicast(Vec<UnicastPeer>),
}

/// A unicast peer (keepalived's `unicast_peer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnicastPeer {
    pub address: IpAddr,
    /// The peer's configured priority, when known: lets a master whose own priority has fallen
    /// below it resign at once instead of waiting to be preempted.
    pub priority: Option<Priority>,
}

/// A virtual address (keepalived's `virtual_ipaddress` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub address: IpAddr,
    /// 0..=32 for IPv4, 0..=128 for IPv6; default the full length.
    pub prefix_len: u8,
    /// The interface the address is added to; default the instance's interface.
    pub dev: String,
    /// IPv4 address label (`ip addr add ... label eth0:vip`).
    pub label: Option<String>,
}

/// A tracked object and how its failure moves the instance's priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub target: TrackTarget,
    pub weight: TrackWeight,
}

/// What a [`Track`] watches; names resolve to definitions in the same config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrackTarget {
    /// A network interface: failed while down.
    Interface(String),
    /// A `[[script]]`.
    Script(String),
    /// A `[[process]]`.
    Process(String),
    /// A `[[track_file]]`.
    File(String),
    /// A `[[probe]]`.
    Probe(String),
}

/// Priority change while a tracked object fails, -253..=253. Zero means the instance goes to
/// fault instead. For a track file the weight multiplies the number in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackWeight(i16);

impl TrackWeight {
    pub const FAULT: Self = Self(0);
    pub const MAX: i16 = 253;

    /// `None` outside -253..=253.
    pub const fn new(weight: i16) -> Option<Self> {
        if weight < -Self::MAX || weight > Self::MAX {
            None
        } else {
            Some(Self(weight))
        }
    }

    pub const fn get(self) -> i16 {
        self.0
    }

    /// Whether a failure puts the instance in fault rather than changing its priority.
    pub const fn is_fault(self) -> bool {
        self.0 == 0
    }
}

/// A program to run, without a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// An absolute path.
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Programs run on state changes; each gets the state appended as keepalived does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    /// Run on every change.
    pub any: Option<Command>,
    pub master: Option<Command>,
    pub backup: Option<Command>,
    pub fault: Option<Command>,
    pub stop: Option<Command>,
}

/// Gratuitous ARP / unsolicited NA schedule after becoming master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GarpSchedule {
    /// Announcements sent at once on becoming master (default 5).
    pub master_repeat: u32,
    /// Delay before the second burst (default 5 s; zero means none).
    pub master_delay: Duration,
    /// Period of repeated announcements while master; `None` (the default) for none.
    pub master_refresh: Option<Duration>,
    /// Gap between packets of one burst (default zero).
    pub interval: Duration,
}

impl Default for GarpSchedule {
    fn default() -> Self {
        Self {
            master_repeat: 5,
            master_delay: Duration::from_secs(5),
            master_refresh: None,
            interval: Duration::ZERO,
        }
    }
}

/// `[[script]]`: a check program (keepalived's `vrrp_script`); exit status 0 means healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub name: String,
    pub command: Command,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures before the script counts as failed (at least 1).
    pub fall: u32,
    /// Consecutive successes before it counts as healthy again (at least 1).
    pub rise: u32,
    /// Used by references that give no weight.
    pub weight: TrackWeight,
    pub user: Option<String>,
    pub group: Option<String>,
}

/// `[[process]]`: a process that must be running (keepalived's `vrrp_track_process`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedProcess {
    pub name: String,
    pub matcher: ProcessMatch,
    /// Fewer running processes than this is a failure (at least 1).
    pub min_procs: u32,
    pub weight: TrackWeight,
}

/// How a tracked process is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessMatch {
    /// Processes whose command name (`/proc/PID/comm`) equals this.
    Name(String),
    /// The process whose pid this file holds.
    PidFile(PathBuf),
}

/// `[[track_file]]`: a file holding an integer (keepalived's `track_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackFile {
    pub name: String,
    pub path: PathBuf,
    /// Multiplies the number in the file; default 1.
    pub weight: TrackWeight,
}

/// `[[probe]]`: a built-in health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    pub weight: TrackWeight,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// Healthy when a TCP connection to the address succeeds.
    Tcp { address: SocketAddr },
    /// Healthy when a GET of `url` answers with one of `expect_status`, sent through `proxy` when
    /// set (to check a forward proxy such as Squid end to end: the absolute URL for `http://`, a
    /// `CONNECT` tunnel for `https://`).
    Http {
        url: ProbeUrl,
        expect_status: Vec<u16>,
        proxy: Option<SocketAddr>,
        /// `https://` only: the CA certificates (PEM) the server's chain must lead to; `None`
        /// trusts the system's store.
        ca_file: Option<PathBuf>,
        /// `https://` only: the name the certificate must be valid for, sent as SNI when it is a
        /// DNS name; `None` uses the URL's host (an IP address host sends no SNI and needs an IP
        /// address SAN).
        server_name: Option<ServerName<'static>>,
    },
}

/// `[[sync_group]]`: instances that change state together (keepalived's `vrrp_sync_group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroup {
    pub name: String,
    /// Names of instances, each in no other group.
    pub instances: Vec<String>,
    pub notify: Notify,
    /// Mail on this group's state changes; `None` follows `[node.smtp] alert`.
    pub smtp_alert: Option<bool>,
}

/// `[[virtual_server]]`: keepalived's `virtual_server`, balanced by nftables on the node that is
/// master of `instance`. Every real server has the family of `address`; in DR mode no real
/// server changes the port; names and `(address, protocol, port)` are unique on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    pub name: String,
    /// A VIP of `instance` (or an address routed to the node while it is master).
    pub address: IpAddr,
    /// One port, or a group of ports balanced as one service (keepalived's fwmark groups).
    pub ports: VirtualPorts,
    pub protocol: LbProtocol,
    /// The instance whose mastership programs this virtual server.
    pub instance: String,
    pub lb_algo: LbAlgo,
    pub lb_kind: LbKind,
    /// Time between two checks of a real server (keepalived's `delay_loop`, default 60 s).
    pub delay_loop: Duration,
    /// DR only: how long a flow the balancer forwarded is remembered after its last packet
    /// (default 5 min); a new flow of the same source address and port may be sent elsewhere.
    pub flow_timeout: Duration,
    /// The least total weight of healthy real servers that keeps the service up (default 1).
    pub quorum: u32,
    /// Quorum is lost below `quorum - hysteresis` and gained at `quorum + hysteresis`.
    pub hysteresis: u32,
    pub quorum_up: Option<Command>,
    pub quorum_down: Option<Command>,
    /// Takes every new connection while quorum is lost.
    pub sorry_server: Option<SorryServer>,
    pub real_servers: Vec<RealServer>,
}

/// The port(s) of a virtual server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtualPorts {
    /// `port = 80`.
    Single(u16),
    /// `ports = [80, 443]`: sorted, unique, at least two; real servers keep the client's port.
    Group(Vec<u16>),
}

impl VirtualPorts {
    /// Every port, in order.
    pub fn ports(&self) -> &[u16] {
        match self {
            VirtualPorts::Single(port) => std::slice::from_ref(port),
            VirtualPorts::Group(ports) => ports,
        }
    }
}

/// The transport protocol of a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LbProtocol {
    Tcp,
    Udp,
}

impl LbProtocol {
    /// `tcp` or `udp`, as written in the config and in nft.
    pub fn as_str(self) -> &'static str {
        match self {
            LbProtocol::Tcp => "tcp",
            LbProtocol::Udp => "udp",
        }
    }
}

/// The scheduler: the ones nftables can run without per-server connection counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbAlgo {
    /// Round robin over the servers of non-zero weight.
    Rr,
    /// Weighted round robin: shares proportional to the weights.
    Wrr,
    /// Source hashing, weighted: one source address always reaches the same server while the
    /// set of healthy servers stays the same.
    Sh,
    /// Weighted failover: every new connection to the healthy server of highest weight.
    Fo,
}

impl LbAlgo {
    pub fn as_str(self) -> &'static str {
        match self {
            LbAlgo::Rr => "rr",
            LbAlgo::Wrr => "wrr",
            LbAlgo::Sh => "sh",
            LbAlgo::Fo => "fo",
        }
    }
}

/// How packets reach a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbKind {
    /// Destination NAT; real servers route their replies back through the balancer.
    Nat,
    /// Direct routing: the packet is sent unchanged to the real server's MAC address; real
    /// servers hold the VIP themselves (on loopback, not answering ARP for it) and reply directly.
    Dr,
}

impl LbKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LbKind::Nat => "nat",
            LbKind::Dr => "dr",
        }
    }
}

/// `sorry_server = "198.51.100.99:8080"` (the port may be left out: the client's port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SorryServer {
    pub address: IpAddr,
    pub port: Option<u16>,
}

/// `[[virtual_server.real_server]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServer {
    pub address: IpAddr,
    /// `None`: the port the client connected to (always so in DR mode and for port groups).
    pub port: Option<u16>,
    /// 0..=65535 (default 1); 0 takes no new connections.
    pub weight: u32,
    /// A failed server keeps its place with weight 0 instead of leaving the set.
    pub inhibit_on_failure: bool,
    /// `None`: always healthy.
    pub check: Option<RealServerCheck>,
}

/// `[virtual_server.real_server.check]`: one check, keepalived's timing. Every `delay_loop` a
/// check runs; a failure is retried `retry` times `delay_before_retry` apart, and the server
/// fails only when every try failed; one success heals it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServerCheck {
    pub kind: CheckKind,
    /// Bound on one try (connect, TLS, request and response; the program's run time for misc).
    pub connect_timeout: Duration,
    /// Tries after a failed one before the server is failed (keepalived's `retry` /
    /// `nb_get_retry`, default 1).
    pub retry: u32,
    pub delay_before_retry: Duration,
}

/// What a real-server check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// TCP_CHECK: a TCP connection to `connect` succeeds.
    Tcp { connect: SocketAddr },
    /// HTTP_GET (`tls` false) or SSL_GET (`tls` true): `GET path` answers one of `status_code`,
    /// and, with `digest`, a body whose SHA-256 is that.
    Http {
        connect: SocketAddr,
        tls: bool,
        /// Origin form, starting with `/`.
        path: String,
        /// The `Host` header (and, with TLS and no `server_name`, the certificate's name);
        /// default the connect address.
        virtualhost: Option<String>,
        status_code: Vec<u16>,
        /// Lower-case hex SHA-256 of the expected body.
        digest: Option<String>,
        ca_file: Option<PathBuf>,
        server_name: Option<ServerName<'static>>,
    },
    /// MISC_CHECK: the program exits 0.
    Misc { command: Command },
}

/// Everything that decides how one instance behaves: equal fingerprints across a reload mean the
/// running instance can be left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFingerprint {
    instance: Instance,
    scripts: Vec<Script>,
    processes: Vec<TrackedProcess>,
    track_files: Vec<TrackFile>,
    probes: Vec<Probe>,
    sync_group: Option<SyncGroup>,
}

/// `[telemetry.metrics_tls]`: the metrics endpoint's certificate, and the CA whose certificates
/// scrapers must present (any scraper when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// `[telemetry]`: metrics and traces. Each part is off unless its key is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Telemetry {
    /// Where `GET /metrics` is served (Prometheus text or OpenMetrics); not served when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve it over TLS (and ask scrapers for certificates) instead of plain HTTP.
    pub metrics_tls: Option<MetricsTls>,
    /// The OTLP/gRPC collector traces are exported to; no exporter when `None`.
    pub otlp_endpoint: Option<OtlpEndpoint>,
    /// The share of failover traces kept (decided per trace id, so both nodes of a failover
    /// decide alike).
    pub sampling_ratio: SamplingRatio,
    /// OpenTelemetry resource attributes added to (or overriding) the agent's own.
    pub resource: BTreeMap<String, String>,
}

impl Telemetry {
    /// Whether the table is all defaults (then the canonical form leaves it out).
    pub fn is_default(&self) -> bool {
        *self == Telemetry::default()
    }
}

/// An `http://` or `https://` URL with a host: the OTLP/gRPC collector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtlpEndpoint(pub(crate) String);

impl OtlpEndpoint {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the collector is reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("https://")
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A probability in `0.0..=1.0` (never NaN, so it compares as `Eq`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingRatio(f64);

impl SamplingRatio {
    /// Keep everything (the default).
    pub const ALWAYS: SamplingRatio = SamplingRatio(1.0);

    /// `None` unless `0.0 <= ratio <= 1.0`.
    pub fn new(ratio: f64) -> Option<Self> {
        (0.0..=1.0).contains(&ratio).then_some(Self(ratio))
    }

    pub const fn get(self) -> f64 {
        self.0
    }
}

impl Default for SamplingRatio {
    fn default() -> Self {
        Self::ALWAYS
    }
}

// Never NaN (checked by `new`), so equality is reflexive.
impl Eq for SamplingRatio {}

impl NodeConfig {
    /// Puts `local`'s `[node]`, `[coordinator]` and `[telemetry]` in this (pushed) config: an
    /// agent always takes them from its local file, since they say where the host keeps its
    /// state and how it reaches the world. A push sets everything else
    /// ([`NodeConfig::pushed_toml`]).
    pub fn keep_local(&mut self, local: &NodeConfig) {
        self.node = local.node.clone();
        self.coordinator = local.coordinator.clone();
        self.telemetry = local.telemetry.clone();
    }

    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|instance| instance.name == name)
    }

    /// The instance named `name` with every definition it depends on (tracked scripts,
    /// processes, files, probes, its sync group); `None` if there is no such instance.
    pub fn instance_fingerprint(&self, name: &str) -> Option<InstanceFingerprint> {
        let instance = self.instance(name)?;
        let tracked = |wanted: fn(&TrackTarget) -> Option<&str>, defined: &str| {
            instance
                .track
                .iter()
                .any(|track| wanted(&track.target) == Some(defined))
        };
        Some(InstanceFingerprint {
            instance: instance.clone(),
            scripts: (self.scripts.iter())
                .filter(|script| tracked(TrackTarget::script_name, &script.name))
                .cloned()
                .collect(),
            processes: (self.processes.iter())
                .filter(|process| tracked(TrackTarget::process_name, &process.name))
                .cloned()
                .collect(),
            track_files: (self.track_files.iter())
                .filter(|file| tracked(TrackTarget::file_name, &file.name))
                .cloned()
                .collect(),
            probes: (self.probes.iter())
                .filter(|probe| tracked(TrackTarget::probe_name, &probe.name))
                .cloned()
                .collect(),
            sync_group: (self.sync_groups.iter())
                .find(|group| group.instances.iter().any(|member| member == name))
                .cloned(),
        })
    }

    /// The sync group `instance` belongs to, if any.
    pub fn sync_group_of(&self, instance: &str) -> Option<&SyncGroup> {
        (self.sync_groups.iter())
            .find(|group| group.instances.iter().any(|member| member == instance))
    }
}

impl TrackTarget {
    fn script_name(&self) -> Option<&str> {
        match self {
            TrackTarget::Script(name) => Some(name),
            _ => None,
        }
    }

    fn process_name(&self) -> Option<&str> {
        match self {
            TrackTarget::Process(name) => Some(name),
            _ => None,
        }
    }

    fn file_name(&self) -> Option<&str> {
        match self {
            TrackTarget::File(name) => Some(name),
            _ => None,
        }
    }

    fn probe_name(&self) -> Option<&str> {
        match self {
            TrackTarget::Probe(name) => Some(name),
            _ => None,
        }
    }
}
