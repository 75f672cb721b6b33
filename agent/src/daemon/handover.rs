//! Planned hand-overs that break no connection ("second chance", after GLB and Beamer).
//!
//! - **The old master keeps serving, silently.** When a master lets go because it heard its
//!   successor advertise ([`hav_vrrp::engine::Action::RemoveVips`] with a successor) and its
//!   instance has a `connection_drain`, its VIPs are *parked*: they stay on the interface, ARP and
//!   neighbour discovery for them are silenced (`arp hav`, `ip6 hav`), and the node goes on
//!   serving the connections it has. It lets go when the kernel's socket table holds no more
//!   connection on them, when the drain deadline passes, when the successor says it does not
//!   forward, or when the successor stops acknowledging.
//! - **The new master passes on what it does not own.** A backup with a drain arms
//!   second-chance forwarding toward the master it hears (`ip hav`, `ip6 hav`: a TCP packet to a
//!   VIP of a flow this node did not see begin goes unchanged to that master's MAC). Armed
//!   ahead, a takeover runs no `nft`. A planned takeover (the master resigned, or was preempted)
//!   keeps the rules under a lease that the old master's beacons renew; any other takeover drops
//!   them at once (a dead master cannot serve).
//! - **Beacons** (UDP, `[node] handover_port`, between the two nodes only): the parked node sends
//!   `Holding` with its connection count every beacon interval and `Released` when it lets go;
//!   the new master answers each `Holding` with `Forwarding` or `NotForwarding`. Nothing is added
//!   to VRRP: a keepalived peer never sees a beacon, and a successor that is not hav (no answer)
//!   ends the drain after a few intervals.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use hav_vrrp::engine::{Cause, Engine, RouterId, State};

use crate::net::Vip;
use crate::net::nft::{HandoverRules, SecondChance};

/// Beacons are sent at the advert interval, within these bounds.
const MIN_BEACON_INTERVAL: Duration = Duration::from_millis(100);
const MAX_BEACON_INTERVAL: Duration = Duration::from_secs(1);
/// How often a parked router counts its connections.
const COUNT_INTERVAL: Duration = Duration::from_millis(100);
/// Beacons missed before either side gives up on the other.
const MISSED_BEACONS: u32 = 3;

const MAGIC: &[u8; 4] = b"HAVH";
const VERSION: u8 = 1;
const BEACON_LEN: usize = 12;

/// What one beacon says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeaconKind {
    /// From the old master: it still serves `connections` on the VIPs.
    Holding { connections: u32 },
    /// From the old master: it let go of the VIPs.
    Released,
    /// From the new master: it passes the old master's flows on.
    Forwarding,
    /// From the new master: it does not (it did not take over from the sender in a planned way).
    NotForwarding,
}

/// A beacon for one virtual router (VRID and family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beacon {
    pub vrid: u8,
    pub ipv6: bool,
    pub kind: BeaconKind,
}

impl Beacon {
    pub fn encode(&self) -> [u8; BEACON_LEN] {
        let mut out = [0u8; BEACON_LEN];
        out[..4].copy_from_slice(MAGIC);
        out[4] = VERSION;
        let (kind, connections) = match self.kind {
            BeaconKind::Holding { connections } => (1, connections),
            BeaconKind::Released => (2, 0),
            BeaconKind::Forwarding => (3, 0),
            BeaconKind::NotForwarding => (4, 0),
        };
        out[5] = kind;
        out[6] = self.vrid;
        out[7] = if self.ipv6 { 6 } else { 4 };
        out[8..12].copy_from_slice(&connections.to_be_bytes());
        out
    }

    /// `None` for anything that is not a beacon of this version.
    pub fn decode(bytes: &[u8]) -> Option<Beacon> {
        if bytes.len() != BEACON_LEN || &bytes[..4] != MAGIC || bytes[4] != VERSION {
            return None;
        }
        let connections = u32::from_be_bytes(bytes[8..12].try_into().ok()?);
        let kind = match bytes[5] {
            1 => BeaconKind::Holding { connections },
            2 => BeaconKind::Released,
            3 => BeaconKind::Forwarding,
            4 => BeaconKind::NotForwarding,
            _ => return None,
        };
        let ipv6 = match bytes[7] {
            4 => false,
            6 => true,
            _ => return None,
        };
        Some(Beacon {
            vrid: bytes[6],
            ipv6,
            kind,
        })
    }
}

/// What a router of the running plan needs for hand-overs.
#[derive(Debug, Clone)]
pub struct RouterHandover {
    pub name: String,
    pub vrid: u8,
    pub ipv6: bool,
    /// The interface VRRP speaks on (the successor is reached there).
    pub device: String,
    pub ifindex: u32,
    pub drain: Duration,
    pub interval: Duration,
    pub vips: BTreeSet<IpAddr>,
}

/// VIPs kept after a planned hand-over.
#[derive(Debug)]
struct Parked {
    router: RouterHandover,
    vips: Vec<Vip>,
    successor: SocketAddr,
    since: Instant,
    deadline: Instant,
    next_beacon: Instant,
    next_count: Instant,
    /// The last `Forwarding` from the successor (or when parking began).
    acked: Instant,
    /// The successor said it does not forward.
    refused: bool,
    connections: usize,
}

/// Forwarding of unowned flows toward `to`.
#[derive(Debug)]
struct Forward {
    router: RouterHandover,
    to: IpAddr,
    /// `None`: armed on a backup, for as long as it hears `to` as master; `Some`: after a
    /// planned takeover, until then unless a beacon renews it.
    lease: Option<Instant>,
}

/// Why parked VIPs were let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LetGo {
    NoConnections,
    Deadline,
    NotForwarded,
    SuccessorSilent,
    Stopping,
}

impl std::fmt::Display for LetGo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LetGo::NoConnections => "no connection left",
            LetGo::Deadline => "drain deadline passed",
            LetGo::NotForwarded => "the successor does not forward",
            LetGo::SuccessorSilent => "the successor stopped answering",
            LetGo::Stopping => "stopping at once",
        })
    }
}

/// VIPs to remove now, and why.
#[derive(Debug)]
pub struct Release {
    pub name: String,
    pub vips: Vec<Vip>,
    pub why: LetGo,
    pub connections: usize,
    pub held_for: Duration,
    /// The `Released` beacon to send, and where.
    pub beacon: Option<(Beacon, SocketAddr)>,
}

/// A beacon to send.
pub type Outgoing = (Beacon, SocketAddr);

/// The hand-over state of one agent.
#[derive(Debug, Default)]
pub struct Handover {
    routers: HashMap<RouterId, RouterHandover>,
    parked: HashMap<RouterId, Parked>,
    forwards: HashMap<RouterId, Forward>,
    /// Routers that are master now.
    masters: BTreeSet<RouterId>,
    port: u16,
    /// What the tables were last made to hold, by router (forward targets, parked routers):
    /// compared after every batch without building the rules. `None`: unknown (a new plan).
    synced: Option<(BTreeMap<RouterId, IpAddr>, BTreeSet<RouterId>)>,
}

impl Handover {
    /// The routers of a new plan that drain connections (the others never park nor forward).
    pub fn configure(&mut self, routers: HashMap<RouterId, RouterHandover>, port: u16) {
        self.forwards
            .retain(|id, f| routers.get(id).is_some_and(|r| r.device == f.router.device));
        self.routers = routers;
        self.port = port;
        self.synced = None;
    }

    /// Whether the tables may differ from [`Handover::rules`] (cheap: no rules are built).
    pub fn needs_sync(&self) -> bool {
        let Some((forwards, parked)) = &self.synced else {
            return true;
        };
        forwards.len() != self.forwards.len()
            || (self.forwards.iter()).any(|(id, f)| forwards.get(id) != Some(&f.to))
            || parked.len() != self.parked.len()
            || self.parked.keys().any(|id| !parked.contains(id))
    }

    /// The tables hold [`Handover::rules`] now.
    pub fn mark_synced(&mut self) {
        self.synced = Some((
            (self.forwards.iter()).map(|(id, f)| (*id, f.to)).collect(),
            self.parked.keys().copied().collect(),
        ));
    }

    /// Whether any router drains connections (then the beacon socket is open).
    pub fn enabled(&self) -> bool {
        !self.routers.is_empty() || !self.parked.is_empty()
    }

    /// Whether this node is master of the router with `vrid` in that family.
    fn is_master_of(&self, vrid: u8, ipv6: bool) -> bool {
        (self.masters.iter())
            .filter_map(|id| self.routers.get(id))
            .any(|r| r.vrid == vrid && r.ipv6 == ipv6)
    }

    /// Whether `router` keeps its connections through a planned hand-over.
    pub fn drains(&self, router: RouterId) -> bool {
        self.routers.contains_key(&router)
    }

    /// No VIPs are parked.
    pub fn is_idle(&self) -> bool {
        self.parked.is_empty()
    }

    /// The connections a parked router still serves, if it is parked.
    pub fn draining(&self, router: RouterId) -> Option<usize> {
        self.parked.get(&router).map(|p| p.connections)
    }

    /// The rules the tables should hold now.
    pub fn rules(&self) -> HandoverRules {
        HandoverRules {
            forwards: (self.forwards.values())
                .map(|f| SecondChance {
                    vips: f.router.vips.clone(),
                    to: f.to,
                    device: f.router.device.clone(),
                })
                .collect(),
            silent: (self.parked.values())
                .flat_map(|p| p.vips.iter().map(|v| v.addr))
                .collect(),
        }
    }

    /// A master let go of `vips` on hearing `successor`, serving `connections` on them: parks
    /// them if its router drains, and returns the first beacon (`None`: not parked, the caller
    /// removes them now).
    pub fn park(
        &mut self,
        router: RouterId,
        successor: IpAddr,
        vips: Vec<Vip>,
        connections: usize,
        now: Instant,
    ) -> Option<Outgoing> {
        let config = self.routers.get(&router)?.clone();
        if vips.is_empty() {
            return None;
        }
        // Its own flows are established here and stay; a new master's that a stale client
        // still sends here go to it.
        self.forwards.insert(
            router,
            Forward {
                router: config.clone(),
                to: successor,
                lease: None,
            },
        );
        let successor = beacon_address(successor, config.ifindex, self.port);
        let beacon = Beacon {
            vrid: config.vrid,
            ipv6: config.ipv6,
            kind: BeaconKind::Holding {
                connections: u32::try_from(connections).unwrap_or(u32::MAX),
            },
        };
        self.parked.insert(
            router,
            Parked {
                deadline: now + config.drain,
                next_beacon: now + beacon_interval(&config),
                next_count: now + COUNT_INTERVAL,
                acked: now,
                refused: false,
                since: now,
                connections,
                router: config,
                vips,
                successor,
            },
        );
        Some((beacon, successor))
    }

    /// The router holds its VIPs as master again: nothing of it is parked any more.
    pub fn reclaim(&mut self, router: RouterId) -> bool {
        self.parked.remove(&router).is_some()
    }

    /// A router changed state: a planned takeover keeps (or arms) the forwarding toward the
    /// master it took over from, under a lease; any other change to Master drops it. A master
    /// that leaves the role keeps forwarding to that node, armed as a backup is (until
    /// [`Handover::follow`] points it at the master it hears): it still holds the VIPs until it
    /// hears its successor, and a client's packets of that node's flows must not meet a reset
    /// here meanwhile.
    pub fn on_state(&mut self, router: RouterId, to: State, cause: &Cause, now: Instant) {
        if to == State::Master {
            self.masters.insert(router);
        } else {
            self.masters.remove(&router);
        }
        let Some(config) = self.routers.get(&router) else {
            return;
        };
        if to != State::Master {
            if let Some(forward) = self.forwards.get_mut(&router) {
                forward.lease = None;
            }
            return;
        }
        let predecessor = match cause {
            Cause::MasterResigned { master } | Cause::Preempt { master, .. } => Some(*master),
            _ => None,
        };
        match predecessor {
            Some(master) => {
                let lease = Some(now + silence_timeout(config));
                let forward = self.forwards.entry(router).or_insert_with(|| Forward {
                    router: config.clone(),
                    to: master,
                    lease,
                });
                forward.to = master;
                forward.lease = lease;
            }
            None => {
                self.forwards.remove(&router);
            }
        }
    }

    /// Arms backups toward the master they hear, and drops armed rules of routers that are no
    /// longer backups; called after every batch of actions (cheap: no allocation per router).
    pub fn follow(&mut self, engine: &Engine) {
        for (id, config) in &self.routers {
            let hearing = match engine.router_role(*id) {
                Some((State::Backup, Some(master))) => Some(master.address),
                // A backup between masters (the master resigned, or it is preempting one that
                // it no longer listens to) stays armed toward the last one: that is where the
                // flows it may take over live.
                Some((State::Backup, None)) => continue,
                _ => None,
            };
            match (hearing, self.forwards.get_mut(id)) {
                (Some(master), Some(forward)) if forward.lease.is_none() => forward.to = master,
                (Some(master), None) => {
                    self.forwards.insert(
                        *id,
                        Forward {
                            router: config.clone(),
                            to: master,
                            lease: None,
                        },
                    );
                }
                (None, Some(forward)) if forward.lease.is_none() => {
                    self.forwards.remove(id);
                }
                _ => {}
            }
        }
        self.forwards
            .retain(|id, _| self.routers.contains_key(id) || engine.router_config(*id).is_some());
    }

    /// A beacon from `from`; returns the answer to send, if any.
    pub fn on_beacon(
        &mut self,
        beacon: Beacon,
        from: SocketAddr,
        now: Instant,
    ) -> Option<Outgoing> {
        let sender = canonical(from.ip());
        match beacon.kind {
            BeaconKind::Holding { .. } | BeaconKind::Released => {
                let master = self.is_master_of(beacon.vrid, beacon.ipv6);
                let forward = self.forwards.iter_mut().find(|(_, f)| {
                    f.lease.is_some()
                        && canonical(f.to) == sender
                        && f.router.vrid == beacon.vrid
                        && f.router.ipv6 == beacon.ipv6
                });
                let kind = match (forward, beacon.kind) {
                    (Some((_, forward)), BeaconKind::Holding { .. }) => {
                        forward.lease = Some(now + silence_timeout(&forward.router));
                        BeaconKind::Forwarding
                    }
                    (Some((id, _)), _) => {
                        let id = *id;
                        self.forwards.remove(&id);
                        return None;
                    }
                    (None, BeaconKind::Released) => return None,
                    // Only a master that took over otherwise says no; a node between roles (it
                    // just resigned, the sender may take the VIPs back) says nothing.
                    (None, _) if master => BeaconKind::NotForwarding,
                    (None, _) => return None,
                };
                Some((Beacon { kind, ..beacon }, from))
            }
            BeaconKind::Forwarding | BeaconKind::NotForwarding => {
                let parked = self.parked.values_mut().find(|p| {
                    canonical(p.successor.ip()) == sender
                        && p.router.vrid == beacon.vrid
                        && p.router.ipv6 == beacon.ipv6
                })?;
                if beacon.kind == BeaconKind::Forwarding {
                    parked.acked = now;
                } else {
                    parked.refused = true;
                    parked.next_count = now;
                }
                None
            }
        }
    }

    /// When [`Handover::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let parked = self
            .parked
            .values()
            .map(|p| p.next_beacon.min(p.next_count).min(p.deadline));
        let leases = self.forwards.values().filter_map(|f| f.lease);
        parked.chain(leases).min()
    }

    /// Counts connections, expires leases and drains: the beacons to send and the VIPs to let
    /// go. `count` says how many connections a set of local addresses holds.
    pub fn tick(
        &mut self,
        now: Instant,
        mut count: impl FnMut(&BTreeSet<IpAddr>) -> std::io::Result<usize>,
    ) -> (Vec<Outgoing>, Vec<Release>) {
        self.forwards
            .retain(|_, f| f.lease.is_none_or(|until| until > now));
        let mut beacons = Vec::new();
        let mut released = Vec::new();
        let mut done = Vec::new();
        for (id, parked) in &mut self.parked {
            if parked.next_count <= now {
                let addresses: BTreeSet<IpAddr> = parked.vips.iter().map(|v| v.addr).collect();
                match count(&addresses) {
                    Ok(n) => parked.connections = n,
                    Err(error) => {
                        tracing::warn!(instance = %parked.router.name, %error, "cannot count connections; keeping the VIPs until the deadline");
                    }
                }
                parked.next_count = now + COUNT_INTERVAL;
            }
            let why = if parked.refused {
                Some(LetGo::NotForwarded)
            } else if parked.connections == 0 {
                Some(LetGo::NoConnections)
            } else if parked.deadline <= now {
                Some(LetGo::Deadline)
            } else if now.duration_since(parked.acked) > silence_timeout(&parked.router) {
                Some(LetGo::SuccessorSilent)
            } else {
                None
            };
            if let Some(why) = why {
                done.push((*id, why));
                continue;
            }
            if parked.next_beacon <= now {
                beacons.push((
                    Beacon {
                        vrid: parked.router.vrid,
                        ipv6: parked.router.ipv6,
                        kind: BeaconKind::Holding {
                            connections: u32::try_from(parked.connections).unwrap_or(u32::MAX),
                        },
                    },
                    parked.successor,
                ));
                parked.next_beacon = now + beacon_interval(&parked.router);
            }
        }
        for (id, why) in done {
            if let Some(release) = self.release(id, why, now) {
                released.push(release);
            }
        }
        (beacons, released)
    }

    /// Lets go of every parked router now (a second stop signal), or of `only` that one (an
    /// operator's command).
    pub fn release_all(&mut self, now: Instant, only: Option<RouterId>) -> Vec<Release> {
        let ids: Vec<RouterId> = (self.parked.keys().copied())
            .filter(|id| only.is_none_or(|only| only == *id))
            .collect();
        (ids.into_iter())
            .filter_map(|id| self.release(id, LetGo::Stopping, now))
            .collect()
    }

    fn release(&mut self, id: RouterId, why: LetGo, now: Instant) -> Option<Release> {
        let parked = self.parked.remove(&id)?;
        let beacon = (why != LetGo::NotForwarded).then_some((
            Beacon {
                vrid: parked.router.vrid,
                ipv6: parked.router.ipv6,
                kind: BeaconKind::Released,
            },
            parked.successor,
        ));
        Some(Release {
            name: parked.router.name,
            vips: parked.vips,
            why,
            connections: parked.connections,
            held_for: now.duration_since(parked.since),
            beacon,
        })
    }
}

fn beacon_interval(router: &RouterHandover) -> Duration {
    router
        .interval
        .clamp(MIN_BEACON_INTERVAL, MAX_BEACON_INTERVAL)
}

/// How long one side waits for the other's beacon before giving up.
fn silence_timeout(router: &RouterHandover) -> Duration {
    beacon_interval(router) * MISSED_BEACONS + MIN_BEACON_INTERVAL
}

/// Where the successor's beacons go: link-local IPv6 addresses need the interface.
fn beacon_address(address: IpAddr, ifindex: u32, port: u16) -> SocketAddr {
    match address {
        IpAddr::V6(v6) if is_link_local(&v6) => {
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, ifindex))
        }
        other => SocketAddr::new(other, port),
    }
}

fn is_link_local(address: &Ipv6Addr) -> bool {
    address.segments()[0] & 0xffc0 == 0xfe80
}

/// An IPv4 address received on a dual-stack socket arrives mapped into IPv6.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The UDP socket beacons travel on: `[::]:port`, dual-stack (IPv4 beacons arrive mapped), or
/// `0.0.0.0:port` where the host has no IPv6.
#[derive(Debug)]
pub struct BeaconSocket {
    socket: tokio::net::UdpSocket,
    port: u16,
}

impl BeaconSocket {
    pub fn open(port: u16) -> std::io::Result<Self> {
        use socket2::{Domain, Protocol, Socket, Type};
        let dual = || -> std::io::Result<Socket> {
            let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_only_v6(false)?;
            socket.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
            Ok(socket)
        };
        let socket = match dual() {
            Ok(socket) => socket,
            Err(_) => {
                let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
                socket.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
                socket
            }
        };
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        Ok(Self {
            socket: tokio::net::UdpSocket::from_std(socket.into())?,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one beacon; a failure is logged (the other side's timeouts cover a lost one).
    pub fn send(&self, (beacon, to): Outgoing) {
        let to = match (to, self.socket.local_addr()) {
            (SocketAddr::V4(v4), Ok(SocketAddr::V6(_))) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            (to, _) => to,
        };
        if let Err(error) = self.socket.try_send_to(&beacon.encode(), to) {
            tracing::debug!(%to, %error, "hand-over beacon not sent");
        }
    }

    async fn recv(&self) -> (Option<Beacon>, SocketAddr) {
        let mut buffer = [0u8; 64];
        loop {
            match self.socket.recv_from(&mut buffer).await {
                Ok((len, from)) => return (Beacon::decode(&buffer[..len]), from),
                Err(error) => {
                    tracing::debug!(%error, "hand-over beacon socket");
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// What woke the hand-over side of the loop.
#[derive(Debug)]
pub enum Event {
    /// A deadline of [`Handover::next_deadline`] passed.
    Tick,
    /// A datagram arrived (`None`: not a beacon, dropped).
    Beacon(Option<Beacon>, SocketAddr),
}

/// The next hand-over event; never resolves while there is nothing to wait for.
pub async fn next_event(handover: &Handover, socket: Option<&BeaconSocket>) -> Event {
    let deadline = handover.next_deadline();
    let tick = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
            None => std::future::pending().await,
        }
    };
    let beacon = async {
        match socket {
            Some(socket) => socket.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tick => Event::Tick,
        (beacon, from) = beacon => Event::Beacon(beacon, from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(name: &str) -> RouterHandover {
        RouterHandover {
            name: name.into(),
            vrid: 7,
            ipv6: false,
            device: "eth0".into(),
            ifindex: 2,
            drain: Duration::from_secs(10),
            interval: Duration::from_millis(100),
            vips: ["198.51.100.100".parse().expect("literal")].into(),
        }
    }

    fn vip() -> Vip {
        Vip::new("198.51.100.100".parse().expect("literal"), 24, "eth0")
    }

    fn id(n: u8) -> RouterId {
        RouterId::from_index(n)
    }

    #[test]
    fn beacons_round_trip_and_anything_else_is_not_one() {
        for kind in [
            BeaconKind::Holding {
                connections: 70_000,
            },
            BeaconKind::Released,
            BeaconKind::Forwarding,
            BeaconKind::NotForwarding,
        ] {
            let beacon = Beacon {
                vrid: 51,
                ipv6: true,
                kind,
            };
            assert_eq!(Beacon::decode(&beacon.encode()), Some(beacon));
        }
        let mut bad = Beacon {
            vrid: 1,
            ipv6: false,
            kind: BeaconKind::Released,
        }
        .encode();
        bad[4] = 2;
        assert_eq!(Beacon::decode(&bad), None);
        assert_eq!(Beacon::decode(b"HAVH"), None);
        assert_eq!(Beacon::decode(&[0u8; 12]), None);
    }

    #[test]
    fn a_parked_router_lets_go_when_its_last_connection_ends() {
        let mut h = Handover::default();
        let r = id(0);
        h.configure([(r, router("vr"))].into(), 7401);
        let t0 = Instant::now();
        let successor: IpAddr = "198.51.100.2".parse().expect("literal");
        let (first, to) = h.park(r, successor, vec![vip()], 2, t0).expect("parks");
        assert_eq!(first.kind, BeaconKind::Holding { connections: 2 });
        assert_eq!(to, SocketAddr::new(successor, 7401));
        assert_eq!(h.rules().silent.len(), 1);
        // Two connections: it keeps them, and renews with the successor's acks.
        let (_, released) = h.tick(t0, |_| Ok(2));
        assert!(released.is_empty());
        let mut now = t0;
        for _ in 0..10 {
            now += Duration::from_millis(100);
            let answer = Beacon {
                vrid: 7,
                ipv6: false,
                kind: BeaconKind::Forwarding,
            };
            h.on_beacon(answer, SocketAddr::new(successor, 7401), now);
            let (_, released) = h.tick(now, |_| Ok(2));
            assert!(released.is_empty(), "released at {now:?}");
        }
        now += Duration::from_millis(100);
        let (_, released) = h.tick(now, |_| Ok(0));
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].why, LetGo::NoConnections);
        assert!(matches!(
            released[0].beacon,
            Some((
                Beacon {
                    kind: BeaconKind::Released,
                    ..
                },
                _
            ))
        ));
        assert!(h.is_idle() && h.rules().silent.is_empty());
    }

    #[test]
    fn a_successor_that_does_not_answer_ends_the_drain() {
        let mut h = Handover::default();
        let r = id(0);
        h.configure([(r, router("vr"))].into(), 7401);
        let t0 = Instant::now();
        h.park(
            r,
            "198.51.100.2".parse().expect("literal"),
            vec![vip()],
            5,
            t0,
        );
        let mut now = t0;
        let mut released = Vec::new();
        while released.is_empty() {
            now += Duration::from_millis(50);
            released = h.tick(now, |_| Ok(5)).1;
        }
        assert_eq!(released[0].why, LetGo::SuccessorSilent);
        assert!(now - t0 <= Duration::from_millis(450), "{:?}", now - t0);
    }

    #[test]
    fn a_planned_takeover_forwards_under_a_lease_that_beacons_renew() {
        let mut h = Handover::default();
        let r = id(0);
        h.configure([(r, router("vr"))].into(), 7401);
        let t0 = Instant::now();
        let old: IpAddr = "198.51.100.1".parse().expect("literal");
        h.on_state(r, State::Master, &Cause::MasterResigned { master: old }, t0);
        assert_eq!(h.rules().forwards.len(), 1);
        let from = SocketAddr::new("::ffff:198.51.100.1".parse().expect("literal"), 7401);
        let holding = Beacon {
            vrid: 7,
            ipv6: false,
            kind: BeaconKind::Holding { connections: 3 },
        };
        let now = t0 + Duration::from_millis(300);
        let answer = h.on_beacon(holding, from, now).expect("answers");
        assert_eq!(answer.0.kind, BeaconKind::Forwarding);
        // Renewed: still there past the first lease, gone once beacons stop.
        assert!(
            h.tick(t0 + Duration::from_millis(500), |_| Ok(0))
                .1
                .is_empty()
        );
        assert_eq!(h.rules().forwards.len(), 1);
        h.tick(now + Duration::from_millis(401), |_| Ok(0));
        assert!(h.rules().forwards.is_empty());
        // An unplanned takeover never forwards; a stranger's beacon is told so.
        h.on_state(
            r,
            State::Master,
            &Cause::MasterDown {
                master: Some(old),
                silent_for: Duration::ZERO,
            },
            now,
        );
        assert!(h.rules().forwards.is_empty());
        let answer = h.on_beacon(holding, from, now).expect("answers");
        assert_eq!(answer.0.kind, BeaconKind::NotForwarding);
    }

    #[test]
    fn a_node_that_let_go_then_preempts_forwards_to_the_one_it_preempted() {
        let mut h = Handover::default();
        let r = id(0);
        h.configure([(r, router("vr"))].into(), 7401);
        let t0 = Instant::now();
        let b: IpAddr = "198.51.100.12".parse().expect("literal");
        h.park(r, b, vec![vip()], 0, t0);
        let (_, released) = h.tick(t0 + Duration::from_millis(100), |_| Ok(0));
        assert_eq!(released.len(), 1);
        let t1 = t0 + Duration::from_millis(300);
        h.on_state(
            r,
            State::Master,
            &Cause::Preempt {
                ours: hav_vrrp::Priority(150),
                master: b,
                theirs: hav_vrrp::Priority(100),
            },
            t1,
        );
        let from = SocketAddr::new("::ffff:198.51.100.12".parse().expect("literal"), 7401);
        let holding = Beacon {
            vrid: 7,
            ipv6: false,
            kind: BeaconKind::Holding { connections: 3 },
        };
        let answer = h
            .on_beacon(holding, from, t1 + Duration::from_millis(5))
            .expect("answers");
        assert_eq!(answer.0.kind, BeaconKind::Forwarding, "{:?}", h.forwards);
        // It resigns: between roles it neither forwards nor tells the parked node to let go
        // (that node may be about to take its VIPs back).
        h.on_state(
            r,
            State::Backup,
            &Cause::Resign {
                ours: hav_vrrp::Priority(50),
                peer: b,
                peer_priority: hav_vrrp::Priority(100),
            },
            t1,
        );
        assert_eq!(
            h.on_beacon(holding, from, t1 + Duration::from_millis(10)),
            None
        );
        // It still holds the VIPs until it hears its successor: a client's packets of the
        // parked node's flows that still arrive here go on to that node, not to a reset.
        let forwards = h.rules().forwards;
        assert_eq!(forwards.len(), 1);
        assert_eq!(h.forwards[&r].to, b);
        assert_eq!(h.forwards[&r].lease, None);
    }
}
