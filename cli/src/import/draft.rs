//! A converted node before validation: what the converter fills in and the emitter writes out.

use std::net::IpAddr;
use std::path::PathBuf;

use super::Finding;
use super::parser::Location;

/// A converted node before validation.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub source: PathBuf,
    pub files: Vec<PathBuf>,
    pub findings: Vec<Finding>,
    pub(crate) node_name: String,
    pub(crate) scripts: Vec<ScriptDraft>,
    pub(crate) processes: Vec<ProcessDraft>,
    pub(crate) probes: Vec<ProbeDraft>,
    pub(crate) track_files: Vec<TrackFileDraft>,
    pub(crate) instances: Vec<InstanceDraft>,
    pub(crate) sync_groups: Vec<SyncGroupDraft>,
    pub(crate) virtual_servers: Vec<VirtualServerDraft>,
    /// `[node] notify_fifo`, `notify_fifo_script`, `max_auto_priority`, `[node.smtp]`.
    pub(crate) node_alerts: NodeAlertsDraft,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct NodeAlertsDraft {
    pub(crate) notify_fifo: Option<String>,
    pub(crate) notify_fifo_script: Option<Vec<String>>,
    pub(crate) max_auto_priority: Option<i64>,
    pub(crate) smtp: Option<SmtpDraft>,
}

/// `[node.smtp]`: only written with a server and at least one recipient.
#[derive(Debug, Clone)]
pub(crate) struct SmtpDraft {
    pub(crate) server: String,
    pub(crate) connect_timeout_ms: Option<u64>,
    pub(crate) helo_name: Option<String>,
    pub(crate) from: String,
    pub(crate) to: Vec<String>,
    pub(crate) alert: Option<bool>,
}

#[derive(Debug, Clone)]
pub(crate) struct ScriptDraft {
    pub(crate) name: String,
    pub(crate) location: Location,
    pub(crate) argv: Vec<String>,
    pub(crate) interval_ms: Option<u64>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) fall: Option<i64>,
    pub(crate) rise: Option<i64>,
    pub(crate) weight: i64,
    pub(crate) user: Option<String>,
    pub(crate) group: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ProcessDraft {
    pub(crate) name: String,
    pub(crate) location: Location,
    pub(crate) process: String,
    pub(crate) min_procs: Option<i64>,
    pub(crate) weight: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct ProbeDraft {
    pub(crate) name: String,
    pub(crate) location: Location,
    pub(crate) address: IpAddr,
    pub(crate) port: u16,
    pub(crate) interval_ms: Option<u64>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) fall: Option<i64>,
    pub(crate) rise: Option<i64>,
    pub(crate) weight: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct TrackFileDraft {
    pub(crate) name: String,
    pub(crate) location: Location,
    pub(crate) path: String,
    pub(crate) weight: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct GarpDraft {
    pub(crate) master_repeat: Option<i64>,
    pub(crate) master_delay_ms: Option<u64>,
    pub(crate) master_refresh_ms: Option<u64>,
    pub(crate) garp_interval_ms: Option<u64>,
    pub(crate) gna_interval_ms: Option<u64>,
}

impl GarpDraft {
    pub(crate) fn overlay(&self, over: &GarpDraft) -> GarpDraft {
        GarpDraft {
            master_repeat: over.master_repeat.or(self.master_repeat),
            master_delay_ms: over.master_delay_ms.or(self.master_delay_ms),
            master_refresh_ms: over.master_refresh_ms.or(self.master_refresh_ms),
            garp_interval_ms: over.garp_interval_ms.or(self.garp_interval_ms),
            gna_interval_ms: over.gna_interval_ms.or(self.gna_interval_ms),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.master_repeat.is_none()
            && self.master_delay_ms.is_none()
            && self.master_refresh_ms.is_none()
            && self.garp_interval_ms.is_none()
            && self.gna_interval_ms.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrackKind {
    Interface,
    Script,
    Process,
    File,
    Probe,
}

impl TrackKind {
    pub(crate) fn key(self) -> &'static str {
        match self {
            TrackKind::Interface => "track_interface",
            TrackKind::Script => "track_script",
            TrackKind::Process => "track_process",
            TrackKind::File => "track_file",
            TrackKind::Probe => "track_probe",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TrackRef {
    pub(crate) kind: TrackKind,
    pub(crate) name: String,
    /// The hav weight, when the reference gives one.
    pub(crate) weight: Option<i64>,
    /// keepalived's effective weight (the reference's, else the definition's).
    pub(crate) keepalived_weight: i64,
    pub(crate) location: Location,
}

#[derive(Debug, Clone)]
pub(crate) struct VipDraft {
    pub(crate) address: IpAddr,
    pub(crate) prefix: Option<u8>,
    pub(crate) dev: Option<String>,
    pub(crate) label: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct PeerDraft {
    pub(crate) address: String,
    pub(crate) priority: Option<i64>,
}

#[derive(Debug, Clone)]
pub(crate) struct InstanceDraft {
    pub(crate) name: String,
    pub(crate) location: Location,
    pub(crate) interface: Option<String>,
    pub(crate) vrid: Option<i64>,
    pub(crate) version: i64,
    /// keepalived's configured priority.
    pub(crate) base_priority: i64,
    /// hav's: the base raised by positive tracking weights.
    pub(crate) priority: i64,
    pub(crate) advert_interval_ms: Option<u64>,
    pub(crate) preempt: Option<bool>,
    pub(crate) preempt_delay_ms: Option<u64>,
    pub(crate) accept: Option<bool>,
    pub(crate) rfc9568_checksum: bool,
    pub(crate) source_address: Option<String>,
    pub(crate) peers: Vec<PeerDraft>,
    pub(crate) auth_pass: Option<String>,
    pub(crate) vips: Vec<VipDraft>,
    pub(crate) tracks: Vec<TrackRef>,
    pub(crate) notify: [Option<Vec<String>>; 5],
    pub(crate) smtp_alert: Option<bool>,
    pub(crate) garp: GarpDraft,
    /// Strict mode, the virtual MAC interface, routes and rules.
    pub(crate) extras: ExtrasDraft,
}

/// keepalived's `strict_mode` (or `vrrp_strict`), `use_vmac`, `virtual_routes`, `virtual_rules`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExtrasDraft {
    /// `strict_mode` as the instance wrote it (`None`: the global `vrrp_strict`).
    pub(crate) strict_mode: Option<bool>,
    /// What is written: strict mode, when the instance runs it and hav accepts it.
    pub(crate) strict: bool,
    pub(crate) vmac: Option<VmacDraft>,
    pub(crate) routes: Vec<RouteDraft>,
    pub(crate) rules: Vec<RuleDraft>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct VmacDraft {
    pub(crate) name: Option<String>,
    pub(crate) xmit_base: bool,
}

/// `[[instance.route]]`, every value checked as the schema checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RouteDraft {
    pub(crate) to: String,
    pub(crate) kind: Option<&'static str>,
    pub(crate) via: Option<IpAddr>,
    pub(crate) dev: Option<String>,
    pub(crate) src: Option<IpAddr>,
    pub(crate) table: Option<i64>,
    pub(crate) metric: Option<i64>,
}

/// `[[instance.rule]]`, every value checked as the schema checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RuleDraft {
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) table: i64,
    pub(crate) priority: Option<i64>,
    pub(crate) fwmark: Option<i64>,
    pub(crate) iif: Option<String>,
    pub(crate) oif: Option<String>,
}

impl InstanceDraft {
    pub(crate) fn is_v6(&self) -> bool {
        self.vips.first().is_some_and(|vip| vip.address.is_ipv6())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SyncGroupDraft {
    pub(crate) name: String,
    pub(crate) location: Location,
    pub(crate) instances: Vec<String>,
    pub(crate) notify: [Option<Vec<String>>; 5],
    pub(crate) smtp_alert: Option<bool>,
}

pub(crate) const NOTIFY_KEYS: [&str; 5] = [
    "notify",
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify_stop",
];

/// A keepalived `virtual_server` as `[[virtual_server]]`: only keys the schema accepts, each
/// checked by the converter against what the validator refuses.
#[derive(Debug, Clone)]
pub(crate) struct VirtualServerDraft {
    pub(crate) name: String,
    pub(crate) location: Location,
    pub(crate) address: IpAddr,
    pub(crate) port: u16,
    pub(crate) protocol: Option<&'static str>,
    /// Set only when `address` is no VIP of a converted instance.
    pub(crate) instance: Option<String>,
    pub(crate) lb_algo: Option<&'static str>,
    pub(crate) lb_kind: Option<&'static str>,
    pub(crate) delay_loop_ms: Option<u64>,
    pub(crate) quorum: Option<i64>,
    pub(crate) hysteresis: Option<i64>,
    pub(crate) quorum_up: Option<Vec<String>>,
    pub(crate) quorum_down: Option<Vec<String>>,
    pub(crate) sorry_server: Option<String>,
    pub(crate) real_servers: Vec<RealServerDraft>,
}

#[derive(Debug, Clone)]
pub(crate) struct RealServerDraft {
    pub(crate) location: Location,
    pub(crate) address: IpAddr,
    pub(crate) port: Option<u16>,
    pub(crate) weight: Option<i64>,
    pub(crate) inhibit_on_failure: bool,
    pub(crate) check: Option<CheckDraft>,
}

/// `[virtual_server.real_server.check]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct CheckDraft {
    /// `tcp`, `http`, `https` or `misc`.
    pub(crate) kind: &'static str,
    pub(crate) connect_ip: Option<IpAddr>,
    pub(crate) connect_port: Option<u16>,
    pub(crate) connect_timeout_ms: Option<u64>,
    pub(crate) retry: Option<i64>,
    pub(crate) delay_before_retry_ms: Option<u64>,
    pub(crate) path: Option<String>,
    pub(crate) virtualhost: Option<String>,
    pub(crate) status_code: Vec<i64>,
    pub(crate) program: Option<Vec<String>>,
}
