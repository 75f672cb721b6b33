//! Planned hand-overs that break no connection ("second chance", after GLB and Beamer).
//!
//! - **The old master keeps serving, silently.** When a master lets go because it heard its
//!   successor advertise ([`hav_vrrp::engine::Action::RemoveVips`] with a successor) and its
//!   instance has a `connection_drain`, its VIPs are *parked*: they stay on the interface, ARP and
//!   neighbour discovery for them are silenced (`arp hav`, `ip6 hav`), and the node goes on
//!   serving the connections it has, and no new one (a stale client's SYN goes on to the
//!   successor, so the count only falls). It lets go when the kernel's socket table holds no more
//!   connection on them, when the drain deadline passes, when the successor says it does not
//!   forward, or when the successor stops acknowledging.
//! - **The new master passes on what it does not own.** A backup with a drain arms
//!   second-chance forwarding toward the master it hears (`ip hav`, `ip6 hav`: a TCP packet to a
//!   VIP of a flow this node did not see begin goes unchanged to that master's MAC, and so does
//!   every packet to a VIP this node does not hold). Armed
//!   ahead, a takeover runs no `nft`. A planned takeover (the master resigned, or was preempted)
//!   keeps the rules under a lease that the old master's beacons renew; any other takeover drops
//!   them at once (a dead master cannot serve).
//! - **Beacons** (UDP, `[node] handover_port`, between the two nodes only): the parked node sends
//!   `Holding` with its connection count every beacon interval and `Released` when it lets go;
//!   the new master answers each `Holding` with `Forwarding` or `NotForwarding`. Nothing is added
//!   to VRRP: a keepalived peer never sees a beacon, and a successor that is not hav (no answer)
//!   ends the drain after a few intervals. Each side knows the other by the address its adverts
//!   come from and accepts only beacons from it, so beacons go out from that address (never
//!   the kernel's choice, which can be a VIP on the same prefix).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
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
/// How long a new master waits, beyond the usual silence, for the first `Holding` of the master
/// it took over from in a planned way: that one parks only once it heard the new master's
/// advert, then marks its VIPs deprecated and runs `nft` before its first beacon, which on a
/// loaded machine takes well over three beacon intervals. Only a master that dies between
/// resigning and parking makes its clients wait this long for their resets.
const FIRST_HOLDING_GRACE: Duration = Duration::from_secs(2);
/// A tick this late was a stall of this node (a stopped or starved process, a frozen machine).
const STALL: Duration = MIN_BEACON_INTERVAL;

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
    /// The address its adverts come from: the peer knows this node by it (the successor it
    /// names, the master it forwards to), so beacons are sent from it.
    pub source: IpAddr,
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
    /// The `Released` beacon to send.
    pub beacon: Option<Outgoing>,
}

/// A beacon to send: to the peer, from the address the peer knows this node by, out of the
/// router's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub beacon: Beacon,
    pub to: SocketAddr,
    pub from: IpAddr,
    pub ifindex: u32,
}

impl Outgoing {
    fn new(beacon: Beacon, to: SocketAddr, router: &RouterHandover) -> Outgoing {
        Outgoing {
            beacon,
            to,
            from: router.source,
            ifindex: router.ifindex,
        }
    }
}

/// The hand-over state of one agent.
#[derive(Debug, Default)]
pub struct Handover {
    routers: HashMap<RouterId, RouterHandover>,
    parked: HashMap<RouterId, Parked>,
    forwards: HashMap<RouterId, Forward>,
    /// Routers that are master now.
    masters: BTreeSet<RouterId>,
    /// Routers (by name, draining or not) master after a planned takeover: a sync-group member
    /// that follows one of them into Master takes over in a planned way too.
    planned_masters: BTreeSet<String>,
    /// Masters to announce again ([`Handover::take_reannouncements`]).
    reannounce: Vec<RouterId>,
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

    /// The router with `vrid` in that family, if this node is its master.
    fn master_of(&self, vrid: u8, ipv6: bool) -> Option<(RouterId, &RouterHandover)> {
        (self.masters.iter())
            .filter_map(|id| Some((*id, self.routers.get(id)?)))
            .find(|(_, r)| r.vrid == vrid && r.ipv6 == ipv6)
    }

    /// The masters whose VIPs must be announced again, since the last call: a peer said it held
    /// them for a moment (it parked them with this node as successor although this node never
    /// stopped being master: adverts were lost), so hosts may have learnt them at its MAC, and
    /// the adverts that would have told this node so may be the very ones lost.
    pub fn take_reannouncements(&mut self) -> Vec<RouterId> {
        std::mem::take(&mut self.reannounce)
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
            tracked: (self.routers.values())
                .flat_map(|r| r.vips.iter().copied())
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
        let first = Outgoing::new(beacon, successor, &config);
        self.parked.insert(
            router,
            Parked {
                deadline: now + config.drain,
                next_beacon: now + beacon_interval(&config),
                // None at park: the let-go waits for no interval.
                next_count: if connections == 0 {
                    now
                } else {
                    now + COUNT_INTERVAL
                },
                acked: now,
                refused: false,
                since: now,
                connections,
                router: config,
                vips,
                successor,
            },
        );
        Some(first)
    }

    /// The router holds its VIPs as master again: nothing of it is parked any more.
    pub fn reclaim(&mut self, router: RouterId) -> bool {
        self.parked.remove(&router).is_some()
    }

    /// A router (`name`) changed state: a planned takeover keeps (or arms) the forwarding
    /// toward the master it took over from, under a lease; any other change to Master drops it.
    /// A takeover is planned when the master resigned or was preempted, or when a sync group
    /// made the router follow a member that took over so (it then forwards toward the master it
    /// was armed toward: the group's old master, which parks this router's VIPs as it parks the
    /// member's). A master that leaves the role keeps forwarding to that node, armed as a backup
    /// is (until [`Handover::follow`] points it at the master it hears): it still holds the VIPs
    /// until it hears its successor, and a client's packets of that node's flows must not meet a
    /// reset here meanwhile.
    pub fn on_state(
        &mut self,
        router: RouterId,
        name: &str,
        to: State,
        cause: &Cause,
        now: Instant,
    ) {
        let predecessor = match cause {
            Cause::MasterResigned { master } | Cause::Preempt { master, .. } => Some(*master),
            Cause::SyncGroup {
                member,
                to: State::Master,
                ..
            } if self.planned_masters.contains(member) => (self.forwards.get(&router))
                .filter(|f| f.lease.is_none())
                .map(|f| f.to),
            _ => None,
        };
        if to == State::Master {
            self.masters.insert(router);
        } else {
            self.masters.remove(&router);
        }
        if to == State::Master && predecessor.is_some() {
            self.planned_masters.insert(name.to_owned());
        } else {
            self.planned_masters.remove(name);
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
        match predecessor {
            Some(master) => {
                let lease = Some(now + silence_timeout(config) + FIRST_HOLDING_GRACE);
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
                // A parked router stays armed toward its successor whatever its state (a
                // stopping node's routers are no longer backups): a stale client's packets of
                // the successor's flows, new ones included, must reach it.
                _ if self.parked.contains_key(id) => continue,
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
                let master = (self.master_of(beacon.vrid, beacon.ipv6))
                    .map(|(id, router)| (id, router.clone()));
                let forward = self.forwards.iter_mut().find(|(_, f)| {
                    f.lease.is_some()
                        && canonical(f.to) == sender
                        && f.router.vrid == beacon.vrid
                        && f.router.ipv6 == beacon.ipv6
                });
                let (kind, router) = match (forward, beacon.kind) {
                    (Some((_, forward)), BeaconKind::Holding { .. }) => {
                        forward.lease = Some(now + silence_timeout(&forward.router));
                        (BeaconKind::Forwarding, forward.router.clone())
                    }
                    (Some((id, _)), _) => {
                        let id = *id;
                        self.forwards.remove(&id);
                        return None;
                    }
                    (None, BeaconKind::Released) => return None,
                    // Only a master that took over otherwise says no; a node between roles (it
                    // just resigned, the sender may take the VIPs back) says nothing.
                    (None, _) => {
                        let (id, router) = master?;
                        self.reannounce.push(id);
                        (BeaconKind::NotForwarding, router)
                    }
                };
                Some(Outgoing::new(Beacon { kind, ..beacon }, from, &router))
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

    /// A count found no connection left: every parked router reads its count at the next tick.
    pub fn count_now(&mut self, now: Instant) {
        for parked in self.parked.values_mut() {
            parked.next_count = parked.next_count.min(now);
        }
    }

    /// Counts connections, expires leases and drains: the beacons to send and the VIPs to let
    /// go. `count` says how many connections a set of local addresses holds.
    pub fn tick(
        &mut self,
        now: Instant,
        mut count: impl FnMut(&BTreeSet<IpAddr>) -> std::io::Result<usize>,
    ) -> (Vec<Outgoing>, Vec<Release>) {
        // Woken late: what this node could not hear meanwhile is not the other side's silence
        // (on a frozen machine both sides stall), so each peer gets a full silence window from
        // now, as if just heard; a peer that did die is given up on that much later.
        if let Some(late) = (self.next_deadline()).map(|due| now.saturating_duration_since(due))
            && late > STALL
        {
            tracing::debug!(
                late_ms = late.as_millis() as u64,
                "hand-over woken late; the stall is nobody's silence"
            );
            for forward in self.forwards.values_mut() {
                if let Some(lease) = &mut forward.lease {
                    *lease = (*lease).max(now + silence_timeout(&forward.router));
                }
            }
            for parked in self.parked.values_mut() {
                parked.acked = parked.acked.max(now);
            }
        }
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
                beacons.push(Outgoing::new(
                    Beacon {
                        vrid: parked.router.vrid,
                        ipv6: parked.router.ipv6,
                        kind: BeaconKind::Holding {
                            connections: u32::try_from(parked.connections).unwrap_or(u32::MAX),
                        },
                    },
                    parked.successor,
                    &parked.router,
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
        let beacon = (why != LetGo::NotForwarded).then(|| {
            Outgoing::new(
                Beacon {
                    vrid: parked.router.vrid,
                    ipv6: parked.router.ipv6,
                    kind: BeaconKind::Released,
                },
                parked.successor,
                &parked.router,
            )
        });
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

    /// Sends one beacon from its source address, out of its router's interface; a failure is
    /// logged (the other side's timeouts cover a lost one).
    pub fn send(&self, outgoing: Outgoing) {
        let dual_stack = matches!(self.socket.local_addr(), Ok(SocketAddr::V6(_)));
        let payload = outgoing.beacon.encode();
        let sent = self.socket.try_io(tokio::io::Interest::WRITABLE, || {
            send_from(self.socket.as_raw_fd(), dual_stack, &outgoing, &payload)
        });
        if let Err(error) = sent {
            tracing::debug!(to = %outgoing.to, from = %outgoing.from, %error, "hand-over beacon not sent");
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

/// `sendmsg` with the source and interface in a packet-info message. On the dual-stack socket an
/// IPv4 peer is a mapped address and the source goes mapped in `IPV6_PKTINFO` (the kernel takes
/// it for IPv4 as `IP_PKTINFO`).
fn send_from(
    fd: std::os::fd::RawFd,
    dual_stack: bool,
    outgoing: &Outgoing,
    payload: &[u8],
) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn, SockaddrIn6, sendmsg};
    let iov = [std::io::IoSlice::new(payload)];
    if dual_stack {
        let to = match outgoing.to {
            SocketAddr::V4(v4) => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
            SocketAddr::V6(v6) => v6,
        };
        let from = match outgoing.from {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: from.octets(),
            },
            ipi6_ifindex: outgoing.ifindex,
        };
        let cmsgs = [ControlMessage::Ipv6PacketInfo(&info)];
        sendmsg(
            fd,
            &iov,
            &cmsgs,
            MsgFlags::empty(),
            Some(&SockaddrIn6::from(to)),
        )?;
        return Ok(());
    }
    let (SocketAddr::V4(to), IpAddr::V4(from)) = (outgoing.to, outgoing.from) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an IPv6 beacon on an IPv4-only socket",
        ));
    };
    let info = libc::in_pktinfo {
        ipi_ifindex: libc::c_int::try_from(outgoing.ifindex).unwrap_or(0),
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(from).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let cmsgs = [ControlMessage::Ipv4PacketInfo(&info)];
    sendmsg(
        fd,
        &iov,
        &cmsgs,
        MsgFlags::empty(),
        Some(&SockaddrIn::from(to)),
    )?;
    Ok(())
}

/// What woke the hand-over side of the loop.
#[derive(Debug)]
pub enum Event {
    /// A deadline of [`Handover::next_deadline`] passed.
    Tick,
    /// A connection count found none left: parked VIPs may be let go now.
    Counted,
    /// A datagram arrived (`None`: not a beacon, dropped).
    Beacon(Option<Beacon>, SocketAddr),
}

/// Whether [`next_event`] can resolve: a beacon socket is open, or a router is parked or a
/// forward leased. When not, the loop need not poll it (most nodes have no hand-over at all).
pub fn has_events(handover: &Handover, socket: Option<&BeaconSocket>) -> bool {
    socket.is_some()
        || !handover.parked.is_empty()
        || handover
            .forwards
            .values()
            .any(|forward| forward.lease.is_some())
}

/// The next hand-over event; never resolves while there is nothing to wait for. Beacons that
/// are queued come before a deadline: woken late (a starved CPU, a stopped process), the node
/// takes the answers that did arrive before it judges the other side silent. `none_left` is
/// notified when a connection count finds none (only while something is parked).
pub async fn next_event(
    handover: &Handover,
    socket: Option<&BeaconSocket>,
    none_left: &tokio::sync::Notify,
) -> Event {
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
    let counted = async {
        if handover.parked.is_empty() {
            std::future::pending::<()>().await;
        }
        none_left.notified().await;
    };
    tokio::select! {
        biased;
        (beacon, from) = beacon => Event::Beacon(beacon, from),
        () = tick => Event::Tick,
        () = counted => Event::Counted,
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
            source: "198.51.100.11".parse().expect("literal"),
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
    fn a_router_parked_without_connections_lets_go_at_the_next_tick_and_a_count_of_none_brings_it_forward()
     {
        let mut h = Handover::default();
        let (a, b) = (id(0), id(1));
        h.configure([(a, router("a")), (b, router("b"))].into(), 7401);
        let t0 = Instant::now();
        let successor: IpAddr = "198.51.100.2".parse().expect("literal");
        h.park(a, successor, vec![vip()], 0, t0).expect("parks");
        // Nothing to keep: due at once, not a count interval later.
        assert_eq!(h.next_deadline(), Some(t0));
        let (_, released) = h.tick(t0, |_| Ok(0));
        assert_eq!(released.len(), 1);
        // With connections, the count is read an interval later, unless a count found none.
        h.park(b, successor, vec![vip()], 3, t0).expect("parks");
        let soon = t0 + Duration::from_millis(5);
        assert!(
            h.tick(soon, |_| Ok(0)).1.is_empty(),
            "not read before its time"
        );
        h.count_now(soon);
        let (_, released) = h.tick(soon, |_| Ok(0));
        assert_eq!(released.len(), 1, "read at once after a count of none");
    }

    #[test]
    fn a_parked_router_lets_go_when_its_last_connection_ends() {
        let mut h = Handover::default();
        let r = id(0);
        h.configure([(r, router("vr"))].into(), 7401);
        let t0 = Instant::now();
        let successor: IpAddr = "198.51.100.2".parse().expect("literal");
        let first = h.park(r, successor, vec![vip()], 2, t0).expect("parks");
        assert_eq!(first.beacon.kind, BeaconKind::Holding { connections: 2 });
        assert_eq!(first.to, SocketAddr::new(successor, 7401));
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
            Some(Outgoing {
                beacon: Beacon {
                    kind: BeaconKind::Released,
                    ..
                },
                ..
            })
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
        h.on_state(
            r,
            "vr",
            State::Master,
            &Cause::MasterResigned { master: old },
            t0,
        );
        assert_eq!(h.rules().forwards.len(), 1);
        let from = SocketAddr::new("::ffff:198.51.100.1".parse().expect("literal"), 7401);
        let holding = Beacon {
            vrid: 7,
            ipv6: false,
            kind: BeaconKind::Holding { connections: 3 },
        };
        let now = t0 + Duration::from_millis(300);
        let answer = h.on_beacon(holding, from, now).expect("answers");
        assert_eq!(answer.beacon.kind, BeaconKind::Forwarding);
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
            "vr",
            State::Master,
            &Cause::MasterDown {
                master: Some(old),
                silent_for: Duration::ZERO,
            },
            now,
        );
        assert!(h.rules().forwards.is_empty());
        // The planned beacons above asked for no announcement.
        assert!(h.take_reannouncements().is_empty());
        let answer = h.on_beacon(holding, from, now).expect("answers");
        assert_eq!(answer.beacon.kind, BeaconKind::NotForwarding);
        // The sender held this master's VIPs for a moment: hosts may have them at its MAC.
        assert_eq!(h.take_reannouncements(), vec![r]);
        assert!(h.take_reannouncements().is_empty());
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
            "vr",
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
        assert_eq!(
            answer.beacon.kind,
            BeaconKind::Forwarding,
            "{:?}",
            h.forwards
        );
        // It resigns: between roles it neither forwards nor tells the parked node to let go
        // (that node may be about to take its VIPs back).
        h.on_state(
            r,
            "vr",
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

    /// The peer accepts beacons only from the address it knows this node by (its adverts'
    /// source); the kernel's own choice of source can be a VIP on the same prefix.
    #[test]
    fn every_beacon_names_the_address_adverts_come_from_as_its_source() {
        let mut h = Handover::default();
        let (r, source) = (id(0), router("vr").source);
        h.configure([(r, router("vr"))].into(), 7401);
        let t0 = Instant::now();
        let peer: IpAddr = "198.51.100.12".parse().expect("literal");
        let first = h.park(r, peer, vec![vip()], 1, t0).expect("parks");
        let (beacons, _) = h.tick(t0 + Duration::from_millis(100), |_| Ok(1));
        let (_, released) = h.tick(t0 + Duration::from_millis(200), |_| Ok(0));
        let last = released[0].beacon.expect("a Released beacon");
        for out in [first, beacons[0], last] {
            assert_eq!((out.from, out.ifindex), (source, 2), "{out:?}");
        }
        // As the new master, it answers both ways from that address too.
        let from = SocketAddr::new(peer, 7401);
        let holding = Beacon {
            vrid: 7,
            ipv6: false,
            kind: BeaconKind::Holding { connections: 1 },
        };
        h.on_state(
            r,
            "vr",
            State::Master,
            &Cause::MasterResigned { master: peer },
            t0,
        );
        let yes = h.on_beacon(holding, from, t0).expect("answers");
        assert_eq!(
            (yes.beacon.kind, yes.from),
            (BeaconKind::Forwarding, source)
        );
        let stranger = SocketAddr::new("198.51.100.13".parse().expect("literal"), 7401);
        let no = h.on_beacon(holding, stranger, t0).expect("answers");
        assert_eq!(
            (no.beacon.kind, no.from),
            (BeaconKind::NotForwarding, source)
        );
    }

    /// On the dual-stack socket, an IPv4 beacon leaves from the source given, not from the
    /// kernel's choice (127.0.0.2 is local on `lo` but never chosen for 127.0.0.1).
    #[test]
    fn a_beacon_socket_sends_from_the_source_it_is_given() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let to = receiver.local_addr().expect("address");
        let lo = nix::net::if_::if_nametoindex("lo").expect("lo");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let beacon = Beacon {
            vrid: 7,
            ipv6: false,
            kind: BeaconKind::Released,
        };
        runtime.block_on(async {
            let socket = BeaconSocket::open(0).expect("beacon socket");
            socket.socket.writable().await.expect("writable");
            socket.send(Outgoing {
                beacon,
                to,
                from: "127.0.0.2".parse().expect("literal"),
                ifindex: lo,
            });
        });
        let mut buffer = [0u8; 64];
        let (len, from) = receiver.recv_from(&mut buffer).expect("a beacon");
        assert_eq!(Beacon::decode(&buffer[..len]), Some(beacon));
        assert_eq!(from.ip(), "127.0.0.2".parse::<IpAddr>().expect("literal"));
    }

    /// Armed toward `master`, as [`Handover::follow`] arms a backup that hears it.
    fn arm(h: &mut Handover, router: RouterId, master: IpAddr) {
        let config = h.routers[&router].clone();
        h.forwards.insert(
            router,
            Forward {
                router: config,
                to: master,
                lease: None,
            },
        );
    }

    /// A sync group moves its members together: the one that follows a member's planned
    /// takeover (its cause is the group, not a resignation) forwards toward the old master too,
    /// which parks both; after an unplanned takeover neither does.
    #[test]
    fn a_sync_group_member_following_a_planned_takeover_forwards_too() {
        let (lead, follower) = (id(0), id(1));
        let mut second = router("follower");
        second.vrid = 8;
        let old: IpAddr = "198.51.100.1".parse().expect("literal");
        let from = SocketAddr::new(old, 7401);
        let holding = Beacon {
            vrid: 8,
            ipv6: false,
            kind: BeaconKind::Holding { connections: 1 },
        };
        let follows = Cause::SyncGroup {
            group: "G".into(),
            member: "lead".into(),
            to: State::Master,
        };
        let preempt = Cause::Preempt {
            ours: hav_vrrp::Priority(150),
            master: old,
            theirs: hav_vrrp::Priority(100),
        };
        let died = Cause::MasterDown {
            master: Some(old),
            silent_for: Duration::from_millis(350),
        };
        for (leader_cause, forwards) in [(preempt, true), (died, false)] {
            let mut h = Handover::default();
            h.configure(
                [(lead, router("lead")), (follower, second.clone())].into(),
                7401,
            );
            arm(&mut h, follower, old);
            let t0 = Instant::now();
            h.on_state(lead, "lead", State::Master, &leader_cause, t0);
            h.on_state(follower, "follower", State::Master, &follows, t0);
            let answer = h.on_beacon(holding, from, t0).expect("answers");
            let leased = |r| {
                h.forwards
                    .get(&r)
                    .is_some_and(|f| f.lease.is_some() && f.to == old)
            };
            assert_eq!(
                (leased(lead), leased(follower)),
                (forwards, forwards),
                "{leader_cause}: {:?}",
                h.forwards
            );
            let expected = if forwards {
                BeaconKind::Forwarding
            } else {
                BeaconKind::NotForwarding
            };
            assert_eq!(answer.beacon.kind, expected, "{leader_cause}");
        }
    }

    /// A node woken late finds its deadline passed and the successor's answers queued: it takes
    /// every answer first (else it would let go of VIPs whose successor did answer).
    #[test]
    fn queued_beacons_come_before_a_passed_deadline() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let socket = BeaconSocket::open(0).expect("beacon socket");
            let port = socket.socket.local_addr().expect("address").port();
            let mut h = Handover::default();
            h.configure([(id(0), router("vr"))].into(), port);
            let late = Instant::now() - Duration::from_secs(1);
            h.park(
                id(0),
                "127.0.0.1".parse().expect("literal"),
                vec![vip()],
                1,
                late,
            );
            assert!(h.next_deadline().is_some_and(|at| at < Instant::now()));
            let answer = Beacon {
                vrid: 7,
                ipv6: false,
                kind: BeaconKind::Forwarding,
            };
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            const QUEUED: usize = 20;
            for _ in 0..QUEUED {
                peer.send_to(&answer.encode(), ("127.0.0.1", port))
                    .expect("send");
            }
            // As after a stall: the reactor reports the socket readable with the deadline past.
            socket.socket.readable().await.expect("readable");
            let none_left = tokio::sync::Notify::new();
            for n in 0..QUEUED {
                match next_event(&h, Some(&socket), &none_left).await {
                    Event::Beacon(Some(beacon), _) => assert_eq!(beacon, answer),
                    other => panic!("event {n}: {other:?} before the queued beacons"),
                }
            }
            assert!(matches!(
                next_event(&h, Some(&socket), &none_left).await,
                Event::Tick
            ));
        });
    }

    /// The old master parks only after it heard the new master and ran `nft`: its first
    /// `Holding` may come long after three beacon intervals, and still finds the forwarding;
    /// from then on the usual silence ends it. An old master that never parks is given up on.
    #[test]
    fn the_first_lease_waits_for_an_old_master_slow_to_park() {
        let old: IpAddr = "198.51.100.1".parse().expect("literal");
        let from = SocketAddr::new(old, 7401);
        let holding = Beacon {
            vrid: 7,
            ipv6: false,
            kind: BeaconKind::Holding { connections: 3 },
        };
        let resigned = Cause::MasterResigned { master: old };
        let t0 = Instant::now();
        let slow = t0 + Duration::from_millis(1500);

        let mut h = Handover::default();
        h.configure([(id(0), router("vr"))].into(), 7401);
        h.on_state(id(0), "vr", State::Master, &resigned, t0);
        h.tick(slow, |_| Ok(0));
        let answer = h.on_beacon(holding, from, slow).expect("answers");
        assert_eq!(answer.beacon.kind, BeaconKind::Forwarding);
        h.tick(slow + Duration::from_millis(399), |_| Ok(0));
        assert_eq!(h.rules().forwards.len(), 1);
        h.tick(slow + Duration::from_millis(401), |_| Ok(0));
        assert!(h.rules().forwards.is_empty(), "the usual silence ends it");

        let mut h = Handover::default();
        h.configure([(id(0), router("vr"))].into(), 7401);
        h.on_state(id(0), "vr", State::Master, &resigned, t0);
        let never = t0 + silence_timeout(&router("vr")) + FIRST_HOLDING_GRACE;
        h.tick(never - Duration::from_millis(1), |_| Ok(0));
        assert_eq!(h.rules().forwards.len(), 1);
        h.tick(never + Duration::from_millis(1), |_| Ok(0));
        assert!(
            h.rules().forwards.is_empty(),
            "an old master that never parks"
        );
    }

    /// A node that stalled (its deadline handled 1.3 s late, as on a frozen machine) does not
    /// count the stall as the other side's silence, on either side of the hand-over; a peer
    /// that stays silent after it is given up on one silence window later.
    #[test]
    fn a_stall_of_this_node_is_not_the_peers_silence() {
        let peer: IpAddr = "198.51.100.12".parse().expect("literal");
        let from = SocketAddr::new(peer, 7401);
        let holding = Beacon {
            vrid: 7,
            ipv6: false,
            kind: BeaconKind::Holding { connections: 3 },
        };
        let t0 = Instant::now();
        let thawed = t0 + Duration::from_millis(2000);

        // The new master: its lease (renewed at 300 ms, due at 700 ms) outlives the stall.
        let mut h = Handover::default();
        h.configure([(id(0), router("vr"))].into(), 7401);
        h.on_state(
            id(0),
            "vr",
            State::Master,
            &Cause::MasterResigned { master: peer },
            t0,
        );
        h.on_beacon(holding, from, t0 + Duration::from_millis(300));
        h.tick(thawed, |_| Ok(0));
        let answer = h.on_beacon(holding, from, thawed + Duration::from_millis(50));
        assert_eq!(answer.map(|a| a.beacon.kind), Some(BeaconKind::Forwarding));

        // The parked node: it keeps its VIPs through the stall, not after a silent window.
        let mut h = Handover::default();
        h.configure([(id(0), router("vr"))].into(), 7401);
        h.park(id(0), peer, vec![vip()], 3, t0);
        assert!(
            h.tick(t0 + Duration::from_millis(100), |_| Ok(3))
                .1
                .is_empty()
        );
        assert!(
            h.tick(thawed, |_| Ok(3)).1.is_empty(),
            "let go after a stall"
        );
        let mut now = thawed;
        let released = loop {
            now += Duration::from_millis(100);
            let (_, released) = h.tick(now, |_| Ok(3));
            if !released.is_empty() {
                break released;
            }
        };
        assert_eq!(released[0].why, LetGo::SuccessorSilent);
        assert!(
            now - thawed <= Duration::from_millis(500),
            "{:?}",
            now - thawed
        );
    }
}
