//! A pair of nodes running any number of VRRP instances on one interface, with hav or with
//! keepalived, for the scale benchmarks ([`super::many_instances`], [`super::loaded`]).
//!
//! Guarantees: [`ScalePair::start`] builds a fresh [`Pair`] topology (namespaces and links named
//! with the run's prefix), starts node `a` (the higher priority) and returns only once `a` holds
//! every VIP and `b` reports Backup for every instance; VIP holders are recorded from netlink
//! address events in both node namespaces from before the first daemon starts. Dropping the
//! pair stops the observers, kills the daemons and deletes the namespaces, also on error.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::BenchError;
use crate::agent::{Agent, AgentConfig, InstanceSpec, start_httpd};
use crate::chaos::observe::{BACKSTOP, Observers, Recorder, WatchedNode};
use crate::keepalived::{Garp, Keepalived, KeepalivedConfig, VrrpInstance, VrrpState};
use crate::netns::NsProcess;
use crate::topology::Pair;

/// The daemon of both nodes of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonKind {
    Hav,
    /// hav with `[node] max_auto_priority` set to this realtime priority.
    HavAutoPriority(u8),
    Keepalived,
}

impl DaemonKind {
    pub fn label(self) -> &'static str {
        match self {
            DaemonKind::Hav => "hav",
            DaemonKind::HavAutoPriority(_) => "hav + max_auto_priority",
            DaemonKind::Keepalived => "keepalived",
        }
    }

    pub fn is_hav(self) -> bool {
        !matches!(self, DaemonKind::Keepalived)
    }
}

/// One VRRP instance of a node: its name, VRID and single VIP (the family follows the VIP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleInstance {
    pub name: String,
    pub vrid: u8,
    pub vip: IpAddr,
    pub prefix_len: u8,
}

/// The IPv4 VIPs of [`per_family`]: 203.0.113.VRID/32 (TEST-NET-3, apart from the pair's LAN).
pub const MANY_VIPS_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 0);
/// The IPv6 VIPs of [`per_family`]: 2001:db8:0:100::VRID/64 (apart from the LAN's /64).
pub const MANY_VIPS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0x100, 0, 0, 0, 0);

/// `count` IPv4 and `count` IPv6 instances with VRIDs 1 to `count` in each family (VRRPv3 keeps
/// the two families' VRIDs apart), named `v4-001` … and `v6-001` …, one VIP each (IPv4 /32,
/// IPv6 in a /64 of their own).
pub fn per_family(count: u8) -> Vec<ScaleInstance> {
    let v4 = (1..=count).map(|vrid| {
        let [a, b, c, _] = MANY_VIPS_V4.octets();
        ScaleInstance {
            name: format!("v4-{vrid:03}"),
            vrid,
            vip: IpAddr::V4(Ipv4Addr::new(a, b, c, vrid)),
            prefix_len: 32,
        }
    });
    let v6 = (1..=count).map(|vrid| {
        let mut segments = MANY_VIPS_V6.segments();
        segments[7] = u16::from(vrid);
        ScaleInstance {
            name: format!("v6-{vrid:03}"),
            vrid,
            vip: IpAddr::V6(Ipv6Addr::from(segments)),
            // Not /128: keepalived adds a /128 VIP deprecated (preferred lifetime 0), which
            // an observer of addresses could not tell from a VIP hav parked.
            prefix_len: 64,
        }
    });
    v4.chain(v6).collect()
}

/// What one node runs: every instance at `priority`, adverts every `advert_interval`.
#[derive(Debug, Clone)]
pub struct NodePlan<'a> {
    pub node: &'a str,
    pub iface: &'a str,
    pub priority: u8,
    pub advert_interval: Duration,
    pub instances: &'a [ScaleInstance],
}

/// The hav node config of `plan` (VRRPv3, preempt, multicast), with `max_auto_priority` in
/// `[node]` when given.
pub fn hav_config(plan: &NodePlan<'_>, max_auto_priority: Option<u8>) -> AgentConfig {
    let instances = (plan.instances.iter())
        .map(|instance| {
            let vip = format!("{}/{}", instance.vip, instance.prefix_len);
            let mut spec = InstanceSpec::new(plan.iface, instance.vrid, plan.priority, &[&vip]);
            spec.name = instance.name.clone();
            spec.advert_interval = plan.advert_interval;
            spec
        })
        .collect();
    let mut config = AgentConfig::new(plan.node, instances);
    if let Some(priority) = max_auto_priority {
        // Rendered right after the `[node]` keys, so it belongs to that table.
        let _ = writeln!(config.extra, "max_auto_priority = {priority}");
    }
    config
}

/// The keepalived config of `plan` (VRRPv3, preempt, multicast, keepalived's GARP defaults).
pub fn keepalived_config(plan: &NodePlan<'_>) -> KeepalivedConfig {
    let instances = (plan.instances.iter())
        .map(|instance| {
            let mut vrrp = VrrpInstance::new(
                3,
                instance.vrid,
                plan.priority,
                plan.advert_interval,
                plan.iface,
                vec![(instance.vip, instance.prefix_len)],
            );
            vrrp.name = instance.name.clone();
            vrrp
        })
        .collect();
    KeepalivedConfig {
        router_id: plan.node.to_owned(),
        instances,
        garp: Garp::default(),
    }
}

/// A node's daemon; killed on drop.
#[derive(Debug)]
pub enum Daemon {
    Hav(Agent),
    Keepalived(Keepalived),
}

impl Daemon {
    fn start(kind: DaemonKind, pair: &Pair, plan: &NodePlan<'_>) -> Result<Daemon, BenchError> {
        let lab = &pair.lab;
        Ok(match kind {
            DaemonKind::Hav => {
                Daemon::Hav(Agent::start_quiet(lab, plan.node, &hav_config(plan, None))?)
            }
            DaemonKind::HavAutoPriority(max) => Daemon::Hav(Agent::start_quiet(
                lab,
                plan.node,
                &hav_config(plan, Some(max)),
            )?),
            DaemonKind::Keepalived => Daemon::Keepalived(Keepalived::start(
                lab.host(plan.node)?,
                &lab.log_dir().join(format!("keepalived-{}", plan.node)),
                &keepalived_config(plan),
            )?),
        })
    }

    /// Every process of the daemon (keepalived: the parent and its VRRP child).
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Daemon::Hav(agent) => vec![agent.pid()],
            Daemon::Keepalived(keepalived) => keepalived.pids(),
        }
    }

    /// Everything the daemon logged so far.
    pub fn log(&mut self) -> String {
        match self {
            Daemon::Hav(agent) => agent.log(),
            Daemon::Keepalived(keepalived) => keepalived.process().log(),
        }
    }

    /// Waits until every instance named in `names` reports Backup (hav: its status socket,
    /// re-read as its log grows; keepalived: its notify FIFO).
    fn wait_backup(&mut self, names: &[String], timeout: Duration) -> Result<(), BenchError> {
        match self {
            Daemon::Hav(agent) => {
                let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
                agent.wait_status("every instance in Backup", timeout, |status| {
                    let backups: BTreeSet<&str> = (status["instances"].as_array())
                        .into_iter()
                        .flatten()
                        .filter(|i| i["state"].as_str() == Some("Backup"))
                        .filter_map(|i| i["name"].as_str())
                        .collect();
                    wanted.is_subset(&backups)
                })?;
            }
            Daemon::Keepalived(keepalived) => {
                let deadline = Instant::now() + timeout;
                for name in names {
                    let left = deadline.saturating_duration_since(Instant::now());
                    keepalived.wait_state(name, VrrpState::Backup, left)?;
                }
            }
        }
        Ok(())
    }
}

/// How a [`ScalePair`] is started.
#[derive(Debug, Clone)]
pub struct PairSpec {
    pub kind: DaemonKind,
    pub advert_interval: Duration,
    pub master_priority: u8,
    pub backup_priority: u8,
    /// `hav-test-httpd` on both nodes (for a client prober).
    pub httpd: bool,
    /// Limit of the start-up waits (a safety net, not a measurement).
    pub wait: Duration,
}

/// What runs on a [`Pair`] once [`Running::start`] returns.
struct Running {
    observers: Observers,
    a: Daemon,
    b: Daemon,
    httpd: Vec<NsProcess>,
}

impl Running {
    fn start(
        pair: &Pair,
        spec: &PairSpec,
        instances: &[ScaleInstance],
    ) -> Result<Running, BenchError> {
        let lab = &pair.lab;
        let mut httpd = Vec::new();
        if spec.httpd {
            httpd.push(start_httpd(lab, "a")?);
            httpd.push(start_httpd(lab, "b")?);
        }
        let vips: Vec<IpAddr> = instances.iter().map(|i| i.vip).collect();
        let recorder = Recorder::new(vips.len(), &["a".into(), "b".into()]);
        let nodes = [
            WatchedNode {
                namespace: lab.host("a")?,
                node: NODE_A,
            },
            WatchedNode {
                namespace: lab.host("b")?,
                node: NODE_B,
            },
        ];
        let observers = Observers::start(recorder, &nodes, &vips, lab.log_dir())?;
        let plan = |node, iface, priority| NodePlan {
            node,
            iface,
            priority,
            advert_interval: spec.advert_interval,
            instances,
        };
        let a = Daemon::start(
            spec.kind,
            pair,
            &plan("a", &pair.a.iface, spec.master_priority),
        )?;
        let what = "node a to hold every VIP";
        wait_holders(observers.recorder(), vips.len(), spec.wait, what, |h| {
            h.len() == 1 && h.contains(&NODE_A)
        })?;
        let plan_b = plan("b", &pair.b.iface, spec.backup_priority);
        let mut b = Daemon::start(spec.kind, pair, &plan_b)?;
        let names: Vec<String> = instances.iter().map(|i| i.name.clone()).collect();
        b.wait_backup(&names, spec.wait)?;
        Ok(Running {
            observers,
            a,
            b,
            httpd,
        })
    }
}

/// Index of node `a` in the pair's [`Recorder`].
pub const NODE_A: usize = 0;
/// Index of node `b` in the pair's [`Recorder`].
pub const NODE_B: usize = 1;

/// A running pair; see the module documentation. Fields drop in order: the observers first,
/// the namespaces last.
pub struct ScalePair {
    observers: Observers,
    pub a: Daemon,
    pub b: Daemon,
    _httpd: Vec<NsProcess>,
    pub instances: Vec<ScaleInstance>,
    pub spec: PairSpec,
    pub pair: Pair,
}

impl std::fmt::Debug for ScalePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScalePair")
            .field("kind", &self.spec.kind)
            .field("instances", &self.instances.len())
            .finish_non_exhaustive()
    }
}

impl ScalePair {
    /// Starts `spec.kind` on a fresh pair with the instances `instances` returns for it (they
    /// may use the pair's addresses); see the module documentation. A failure keeps the logs.
    pub fn start(
        spec: PairSpec,
        instances: impl FnOnce(&Pair) -> Vec<ScaleInstance>,
    ) -> Result<ScalePair, BenchError> {
        let pair = Pair::new()?;
        let instances = instances(&pair);
        match Running::start(&pair, &spec, &instances) {
            Ok(running) => Ok(ScalePair {
                observers: running.observers,
                a: running.a,
                b: running.b,
                _httpd: running.httpd,
                instances,
                spec,
                pair,
            }),
            Err(e) => {
                pair.lab.keep_logs();
                Err(e)
            }
        }
    }

    pub fn recorder(&self) -> &Recorder {
        self.observers.recorder()
    }

    /// Starts a client in the pair's `client` host opening a new connection to `target` every
    /// `interval`; its answers go to [`ScalePair::recorder`].
    pub fn start_probing(
        &mut self,
        target: SocketAddr,
        interval: Duration,
    ) -> Result<(), BenchError> {
        let client = self.pair.lab.host("client")?;
        Ok(self.observers.start_probing(client, &[target], interval)?)
    }

    pub fn stop_probing(&mut self) {
        self.observers.stop_probing();
    }

    /// The VIPs, in instance order (the recorder's VIP indexes).
    pub fn vips(&self) -> Vec<IpAddr> {
        self.instances.iter().map(|i| i.vip).collect()
    }

    /// Cuts node `a`'s link at its switch port (carrier loss, as the failover bench's link cut).
    pub fn cut_master_link(&self) -> Result<(), BenchError> {
        Ok(self.pair.lab.link_down("a", &self.pair.a.iface)?)
    }

    /// Restores the link [`ScalePair::cut_master_link`] cut.
    pub fn restore_master_link(&self) -> Result<(), BenchError> {
        Ok(self.pair.lab.link_up("a", &self.pair.a.iface)?)
    }

    /// Waits until every VIP's holders satisfy `accept`; see [`wait_holders`].
    pub fn wait_holders(
        &self,
        what: &str,
        accept: impl Fn(&BTreeSet<usize>) -> bool,
    ) -> Result<(), BenchError> {
        let vips = self.instances.len();
        wait_holders(self.recorder(), vips, self.spec.wait, what, accept)
    }

    /// Keeps the logs of the run after drop (a failed or surprising run).
    pub fn keep_logs(&self) {
        self.pair.lab.keep_logs();
    }
}

/// Waits until the holders of each of the `vips` VIPs `recorder` follows satisfy `accept`,
/// waking on each recorded change (netlink events, log writes); `timeout` is a safety net.
pub fn wait_holders(
    recorder: &Recorder,
    vips: usize,
    timeout: Duration,
    what: &str,
    accept: impl Fn(&BTreeSet<usize>) -> bool,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let generation = recorder.generation();
        let pending: Vec<(usize, BTreeSet<usize>)> = (0..vips)
            .map(|vip| (vip, recorder.holders(vip)))
            .filter(|(_, holders)| !accept(holders))
            .collect();
        let Some((vip, holders)) = pending.first() else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BenchError::Io(format!(
                "timed out after {timeout:?} waiting for {what}: {} VIPs not yet, the first \
                 (index {vip}) held by nodes {holders:?}",
                pending.len()
            )));
        }
        recorder.wait_change(generation, left.min(BACKSTOP));
    }
}

/// A recorded change of a VIP's holders, for the tests of what is read from the record.
#[cfg(test)]
pub(crate) fn holder_event(
    at: Instant,
    vip: usize,
    node: usize,
    present: bool,
) -> crate::chaos::observe::HolderEvent {
    crate::chaos::observe::HolderEvent {
        at,
        vip,
        node,
        present,
        reconciled: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_family_gives_each_family_vrids_one_to_count_and_distinct_vips() {
        let instances = per_family(255);
        assert_eq!(instances.len(), 510);
        let (v4, v6): (Vec<_>, Vec<_>) = instances.iter().partition(|i| i.vip.is_ipv4());
        for family in [&v4, &v6] {
            let vrids: Vec<u8> = family.iter().map(|i| i.vrid).collect();
            assert_eq!(vrids, (1..=255).collect::<Vec<u8>>());
        }
        let vips: BTreeSet<IpAddr> = instances.iter().map(|i| i.vip).collect();
        let names: BTreeSet<&str> = instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!((vips.len(), names.len()), (510, 510));
        assert_eq!(v4[0].vip, "203.0.113.1".parse::<IpAddr>().expect("literal"));
        assert_eq!(
            v4[254].vip,
            "203.0.113.255".parse::<IpAddr>().expect("literal")
        );
        assert_eq!(
            v6[254].vip,
            "2001:db8:0:100::ff".parse::<IpAddr>().expect("literal")
        );
        assert!(
            instances
                .iter()
                .all(|i| i.prefix_len == if i.vip.is_ipv4() { 32 } else { 64 })
        );
    }

    fn plan(instances: &[ScaleInstance]) -> NodePlan<'_> {
        NodePlan {
            node: "a",
            iface: "hx-lan",
            priority: 150,
            advert_interval: Duration::from_millis(100),
            instances,
        }
    }

    #[test]
    fn the_hav_config_has_one_instance_block_per_instance() {
        let instances = per_family(255);
        let text = hav_config(&plan(&instances), Some(10)).render(std::path::Path::new("/d"));
        assert_eq!(text.matches("[[instance]]").count(), 510);
        assert_eq!(text.matches("advert_interval = \"100ms\"").count(), 510);
        for expected in [
            "name = \"v4-001\"\ninterface = \"hx-lan\"\nvrid = 1\nversion = 3\npriority = 150",
            "name = \"v6-255\"\ninterface = \"hx-lan\"\nvrid = 255\n",
            "vips = [\"203.0.113.255/32\"]",
            "vips = [\"2001:db8:0:100::ff/64\"]",
        ] {
            assert!(text.contains(expected), "missing {expected:?}");
        }
        let node_table = text.split("[[instance]]").next().expect("a [node] table");
        assert!(
            node_table.contains("max_auto_priority = 10\n"),
            "{node_table}"
        );
        let plain = hav_config(&plan(&instances), None).render(std::path::Path::new("/d"));
        assert!(!plain.contains("max_auto_priority"));
    }

    #[test]
    fn the_keepalived_config_has_one_vrrp_instance_per_instance() {
        let instances = per_family(255);
        let text = keepalived_config(&plan(&instances)).render(std::path::Path::new("/f"));
        assert_eq!(text.matches("vrrp_instance ").count(), 510);
        assert_eq!(text.matches("    version 3\n").count(), 510);
        assert_eq!(text.matches("    advert_int 0.1\n").count(), 510);
        for expected in [
            "vrrp_instance v4-001 {",
            "vrrp_instance v6-255 {",
            "        203.0.113.255/32 dev hx-lan",
            "        2001:db8:0:100::ff/64 dev hx-lan",
        ] {
            assert!(text.contains(expected), "missing {expected:?}");
        }
    }
}
