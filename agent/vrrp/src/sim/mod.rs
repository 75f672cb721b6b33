//! A deterministic simulation of many nodes' [`Engine`]s on one virtual LAN (feature `sim`).
//!
//! The clock is virtual: [`Sim::run_until`] jumps it to the next wake-up (an engine timer or a
//! packet arrival), so minutes of protocol run in microseconds. Packets travel with a fixed
//! delay and are lost with a seeded probability; nodes can be partitioned, crashed (engine
//! dropped, VIPs gone) and restarted. Everything is a function of the seed, which every failure
//! message should print. Each node's state timeline and VIP holdings are recorded, and the
//! per-router invariant "AddVips and RemoveVips alternate" is checked on every action.

pub mod fuzz;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{
    Action, AnnounceSchedule, Engine, EngineConfig, Peers, Preempt, RouterConfig, RouterId, State,
};
use crate::types::{AdvertInterval, Auth, Family, Priority, V3Checksum, Version, VrId};
use crate::wire::RecvMeta;

/// The interface name every simulated router uses.
pub const INTERFACE: &str = "lan0";

/// A small, fast, seeded PRNG (SplitMix64); good enough to decide packet loss.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.next_u64() % 1000 < u64::from(per_mille)
    }
}

/// A state change of one router on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: Instant,
    pub router: String,
    pub from: State,
    pub to: State,
    pub cause: String,
}

/// One simulated host running an engine.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub config: EngineConfig,
    /// `None` while crashed or before the first start.
    pub engine: Option<Engine>,
    /// VIPs this node holds, by router name.
    pub vips: BTreeMap<String, Vec<IpAddr>>,
    pub timeline: Vec<TimelineEntry>,
    /// Actions taken, in order, with their time (kept only if [`Sim::record_actions`]).
    pub actions: Vec<(Instant, Action)>,
    pub announcements: u64,
    /// Broken invariants seen in this node's actions.
    pub violations: Vec<String>,
    names: HashMap<RouterId, String>,
}

impl Node {
    /// Current state of a router (Initialize if crashed or unknown).
    pub fn state(&self, router: &str) -> State {
        self.engine
            .as_ref()
            .and_then(|engine| {
                engine
                    .status()
                    .into_iter()
                    .find(|status| status.name == router)
            })
            .map_or(State::Initialize, |status| status.state)
    }

    pub fn holds(&self, router: &str) -> bool {
        self.vips.get(router).is_some_and(|vips| !vips.is_empty())
    }

    pub fn is_up(&self) -> bool {
        self.engine.is_some()
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    src: IpAddr,
    dst: IpAddr,
    payload: Arc<[u8]>,
}

/// The virtual LAN.
#[derive(Debug)]
pub struct Sim {
    pub nodes: Vec<Node>,
    pub now: Instant,
    pub epoch: Instant,
    pub seed: u64,
    /// One-way delivery delay.
    pub delay: Duration,
    /// Loss probability in per mille.
    pub loss_per_mille: u32,
    /// Keep every action in [`Node::actions`].
    pub record_actions: bool,
    /// Packets delivered and dropped (loss or partition), for figures.
    pub delivered: u64,
    pub dropped: u64,
    rng: SimRng,
    segment: Vec<u32>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
}

impl Sim {
    /// A LAN of nodes (not started), all in one segment.
    pub fn new(seed: u64, configs: Vec<(String, EngineConfig)>) -> Self {
        let epoch = sim_epoch();
        let nodes: Vec<Node> = configs
            .into_iter()
            .map(|(name, config)| Node {
                name,
                config,
                engine: None,
                vips: BTreeMap::new(),
                timeline: Vec::new(),
                actions: Vec::new(),
                announcements: 0,
                violations: Vec::new(),
                names: HashMap::new(),
            })
            .collect();
        let count = nodes.len();
        Self {
            nodes,
            now: epoch,
            epoch,
            seed,
            delay: Duration::from_millis(1),
            loss_per_mille: 0,
            record_actions: false,
            delivered: 0,
            dropped: 0,
            rng: SimRng::new(seed),
            segment: vec![0; count],
            in_flight: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Virtual time since the simulation began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Creates and starts the node's engine now (a start, or a restart after a crash).
    ///
    /// # Panics
    /// If the node's configuration is invalid (a bug of the test that wrote it).
    pub fn start(&mut self, node: usize) {
        let engine = Engine::new(self.nodes[node].config.clone());
        let mut engine =
            engine.unwrap_or_else(|error| panic!("node {node}: invalid config: {error}"));
        engine.start(self.now);
        self.install(node, engine);
    }

    pub fn start_all(&mut self) {
        for node in 0..self.nodes.len() {
            self.start(node);
        }
    }

    /// The node dies: its engine is dropped and its VIPs vanish with it.
    pub fn crash(&mut self, node: usize) {
        self.nodes[node].engine = None;
        self.nodes[node].vips.clear();
    }

    /// Graceful shutdown of the node's engine (it keeps running until stopped).
    pub fn shutdown(&mut self, node: usize) {
        let now = self.now;
        if let Some(engine) = self.nodes[node].engine.as_mut() {
            engine.shutdown(now);
        }
        self.drain(node);
    }

    /// Puts nodes in segments: only nodes of the same segment hear each other.
    pub fn partition(&mut self, segments: &[&[usize]]) {
        for (index, nodes) in segments.iter().enumerate() {
            for &node in *nodes {
                self.segment[node] = index as u32 + 1;
            }
        }
    }

    pub fn heal(&mut self) {
        self.segment.iter_mut().for_each(|segment| *segment = 0);
    }

    /// Runs `f` on a node's engine now, then takes its actions.
    pub fn with_engine(&mut self, node: usize, f: impl FnOnce(&mut Engine, Instant)) {
        let now = self.now;
        if let Some(engine) = self.nodes[node].engine.as_mut() {
            f(engine, now);
        }
        self.drain(node);
    }

    /// Advances virtual time to `until`, handling every timer and delivery on the way.
    pub fn run_until(&mut self, until: Instant) {
        self.run_until_with(until, |_| {});
    }

    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    /// Like [`Sim::run_until`], calling `check` after every instant something happened.
    pub fn run_until_with(&mut self, until: Instant, mut check: impl FnMut(&Sim)) {
        for node in 0..self.nodes.len() {
            self.drain(node);
        }
        check(self);
        loop {
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.as_ref()?.poll_timeout())
                .min();
            let next_packet = self.in_flight.peek().map(|Reverse(packet)| packet.at);
            let Some(next) = next_timer
                .into_iter()
                .chain(next_packet)
                .min()
                .filter(|at| *at <= until)
            else {
                break;
            };
            self.now = self.now.max(next);
            let now = self.now;
            while self
                .in_flight
                .peek()
                .is_some_and(|Reverse(packet)| packet.at <= now)
            {
                let Some(Reverse(packet)) = self.in_flight.pop() else {
                    break;
                };
                let meta = RecvMeta {
                    src: packet.src,
                    dst: packet.dst,
                    hop_limit: 255,
                };
                if let Some(engine) = self.nodes[packet.to].engine.as_mut() {
                    engine.handle_packet(now, INTERFACE, &meta, &packet.payload);
                    self.delivered += 1;
                }
                self.drain(packet.to);
            }
            for node in 0..self.nodes.len() {
                let due = self.nodes[node]
                    .engine
                    .as_ref()
                    .and_then(Engine::poll_timeout)
                    .is_some_and(|at| at <= now);
                if due {
                    if let Some(engine) = self.nodes[node].engine.as_mut() {
                        engine.handle_timeout(now);
                    }
                    self.drain(node);
                }
            }
            check(self);
        }
        self.now = self.now.max(until);
    }

    /// Nodes whose router `name` is Master.
    pub fn masters(&self, router: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| self.nodes[n].state(router) == State::Master)
            .collect()
    }

    /// Nodes holding the VIPs of router `name`.
    pub fn holders(&self, router: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| self.nodes[n].holds(router))
            .collect()
    }

    /// All broken invariants, prefixed by node.
    pub fn violations(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|node| {
                node.violations
                    .iter()
                    .map(move |v| format!("{}: {v}", node.name))
            })
            .collect()
    }

    fn install(&mut self, node: usize, engine: Engine) {
        let names = engine
            .status()
            .into_iter()
            .map(|status| (status.id, status.name))
            .collect();
        let node_ref = &mut self.nodes[node];
        node_ref.names = names;
        node_ref.vips.clear();
        node_ref.engine = Some(engine);
        self.drain(node);
    }

    /// Refreshes the id → name map after a reconfiguration.
    pub fn refresh_names(&mut self, node: usize) {
        if let Some(engine) = self.nodes[node].engine.as_ref() {
            let names: HashMap<RouterId, String> = engine
                .status()
                .into_iter()
                .map(|status| (status.id, status.name))
                .collect();
            self.nodes[node].names.extend(names);
        }
    }

    /// Takes a node's actions and carries them out on the virtual LAN.
    fn drain(&mut self, node: usize) {
        let now = self.now;
        loop {
            let Some(action) = self.nodes[node]
                .engine
                .as_mut()
                .and_then(Engine::poll_action)
            else {
                return;
            };
            if self.record_actions {
                self.nodes[node].actions.push((now, action.clone()));
            }
            let node_ref = &mut self.nodes[node];
            let name_of = |router: &RouterId| {
                node_ref
                    .names
                    .get(router)
                    .cloned()
                    .unwrap_or_else(|| router.to_string())
            };
            match action {
                Action::Transmit {
                    router,
                    dst,
                    payload,
                } => {
                    let name = name_of(&router);
                    let Some(src) = primary_address(&node_ref.config, &name) else {
                        continue;
                    };
                    self.transmit(node, src, dst, payload);
                }
                Action::AddVips { router, vips, .. } => {
                    let name = name_of(&router);
                    let held = node_ref.vips.entry(name.clone()).or_default();
                    let mode_change = vips.iter().all(|vip| held.contains(vip));
                    if !mode_change && vips.iter().any(|vip| held.contains(vip)) {
                        node_ref.violations.push(format!(
                            "AddVips twice for {name} at {:?}",
                            now - self.epoch
                        ));
                    }
                    held.extend(vips);
                }
                Action::RemoveVips { router, vips, .. } => {
                    let name = name_of(&router);
                    let held = node_ref.vips.entry(name.clone()).or_default();
                    if vips.iter().any(|vip| !held.contains(vip)) {
                        node_ref.violations.push(format!(
                            "RemoveVips of unheld VIPs for {name} at {:?}",
                            now - self.epoch
                        ));
                    }
                    held.retain(|vip| !vips.contains(vip));
                }
                Action::Announce { .. } => node_ref.announcements += 1,
                Action::StateChanged {
                    router,
                    from,
                    to,
                    cause,
                    ..
                } => {
                    let router = name_of(&router);
                    node_ref.timeline.push(TimelineEntry {
                        at: now,
                        router,
                        from,
                        to,
                        cause: cause.to_string(),
                    });
                }
                _ => {}
            }
        }
    }

    fn transmit(&mut self, from: usize, src: IpAddr, dst: IpAddr, payload: Arc<[u8]>) {
        let multicast = dst.is_multicast();
        for to in 0..self.nodes.len() {
            if to == from {
                continue;
            }
            let addressed = multicast || owns_address(&self.nodes[to].config, dst);
            if !addressed {
                continue;
            }
            if self.segment[to] != self.segment[from] || self.rng.chance(self.loss_per_mille) {
                self.dropped += 1;
                continue;
            }
            self.seq += 1;
            let packet = InFlight {
                at: self.now + self.delay,
                seq: self.seq,
                to,
                src,
                dst,
                payload: payload.clone(),
            };
            self.in_flight.push(Reverse(packet));
        }
    }
}

fn primary_address(config: &EngineConfig, router: &str) -> Option<IpAddr> {
    config
        .routers
        .iter()
        .find(|r| r.name == router)
        .map(|r| r.primary_address)
}

fn owns_address(config: &EngineConfig, address: IpAddr) -> bool {
    config.routers.iter().any(|r| r.primary_address == address)
}

/// The origin of virtual time: read once from the host clock, only ever added to.
#[allow(clippy::disallowed_methods)]
fn sim_epoch() -> Instant {
    use std::sync::OnceLock;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The `index`-th test address of a family: 198.51.100.(10 + index) or 2001:db8::(10 + index).
pub fn node_address(family: Family, index: u8) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10 + index)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            10 + u16::from(index),
        )),
    }
}

/// The VIP of VRID `vrid`: 203.0.113.`vrid` or 2001:db8:ff::`vrid`.
pub fn vip(family: Family, vrid: u8) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, vrid)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xff,
            0,
            0,
            0,
            0,
            u16::from(vrid),
        )),
    }
}

/// A multicast router on [`INTERFACE`] with test addresses and defaults elsewhere.
///
/// # Panics
/// If `vrid` is 0 or `interval_centis` is 0 (test input).
pub fn router(
    name: &str,
    vrid: u8,
    version: Version,
    family: Family,
    node: u8,
    priority: u8,
    interval_centis: u16,
) -> RouterConfig {
    RouterConfig {
        name: name.to_owned(),
        interface: INTERFACE.to_owned(),
        vrid: VrId::new(vrid).expect("test VRID is not 0"),
        version,
        family,
        priority: Priority(priority),
        advert_interval: AdvertInterval::from_centis(interval_centis)
            .expect("test interval is valid"),
        preempt: Preempt::default(),
        accept: false,
        primary_address: node_address(family, node),
        peers: Peers::Multicast,
        vips: vec![vip(family, vrid)],
        auth: Auth::None,
        checksum: V3Checksum::default(),
        announce: AnnounceSchedule::default(),
        strict: false,
    }
}

/// The family of an address.
pub fn family_of(address: IpAddr) -> Family {
    crate::engine::config_family_of(address)
}
