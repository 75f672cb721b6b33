//! Failovers as they happen on this node, and the traces that describe them.
//!
//! [`Failovers`] follows the engine's actions: a Backup → Master change opens a *takeover*
//! (detection, election, VIPs added, first GARP/NA), a change away from Master opens a
//! *resignation* (priority 0 sent, VIPs released, successor heard). Each closes into a
//! [`Record`]: the takeover's duration feeds the failover histogram, and with an exporter it
//! becomes a `vrrp.failover` trace, the resignation a `vrrp.resign` trace.
//!
//! # Linking the two nodes without touching the wire
//!
//! Both sides derive the same trace id from facts both observe: the VRID, the sorted VIP set, the
//! old master's address, the new master's address, and the one-second window holding the new
//! master's first advertisement (the new master sends it; the old master, which keeps its VIPs
//! until it hears a successor, receives it a network delay later). Each side's root span id is
//! derived from the trace id and its role, so each root also carries a span link to the other's
//! root. When the moment lies within [`EDGE`] of a window edge, clock offset could put the two
//! sides in neighbouring windows; then each side also links to the other's root in the
//! neighbouring window, so the pair stays connected. `hav.handover.key` (the same hash without
//! the window) lets a backend find all handovers between the same two nodes.
//!
//! # One trace per handover
//!
//! Two handovers the same way between the same nodes need a handover back in between, so one
//! window of a second rarely holds two. When it does, the node numbers its records of the same
//! id (`repeat`, folded into the id): a node never exports two roots under one trace, and both
//! sides, which saw the same handovers, number them alike (a node keeps its latest ids across a
//! restart, in its state dir).
//!
//! Everything here is plain data: times are passed in as [`Moment`]s, ids come from a stable
//! hash, and nothing is exported until a caller hands the spans to a sink.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hav_vrrp::engine::{Cause, RouterConfig, RouterId, State};
use hav_vrrp::{Family, Priority};
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::small_hash::SmallMap;

/// The window of the shared trace id.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Within this distance of a window edge, both neighbouring windows are linked: the clock offset
/// between the two nodes (and the network delay) the linking tolerates.
pub const EDGE: Duration = Duration::from_millis(250);

/// How many exported trace ids a node remembers to number repeats.
const RECENT_IDS: usize = 64;

/// How many (VRID, source) pairs are remembered.
const MAX_HEARD: usize = 256;

/// A point in time, on the wall clock (for spans) and the monotonic clock (for durations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub wall: SystemTime,
    pub mono: Instant,
}

impl Moment {
    pub fn now() -> Self {
        Self {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    /// `by` earlier (the wall clock never before the epoch).
    pub fn earlier(self, by: Duration) -> Self {
        Self {
            wall: self.wall.checked_sub(by).unwrap_or(UNIX_EPOCH),
            mono: self.mono.checked_sub(by).unwrap_or(self.mono),
        }
    }

    /// The moment of `mono`, read off this one: the wall clock moved as the monotonic clock
    /// did (off by the clock's slew, microseconds over the seconds between the two).
    pub fn at(self, mono: Instant) -> Self {
        match mono.checked_duration_since(self.mono) {
            Some(after) => Self {
                wall: self.wall + after,
                mono,
            },
            None => self.earlier(self.mono.duration_since(mono)),
        }
    }

    fn since(self, earlier: Moment) -> Duration {
        self.mono.saturating_duration_since(earlier.mono)
    }
}

/// A set of VRIDs, one bit each.
#[derive(Debug, Default, Clone, Copy)]
struct VridSet([u64; 4]);

impl VridSet {
    fn insert(&mut self, vrid: u8) {
        self.0[usize::from(vrid >> 6)] |= 1 << (vrid & 63);
    }

    fn contains(&self, vrid: u8) -> bool {
        self.0[usize::from(vrid >> 6)] & (1 << (vrid & 63)) != 0
    }
}

/// What the trace needs to know about a router.
#[derive(Debug, Clone)]
struct RouterFacts {
    name: String,
    vrid: u8,
    family: Family,
    /// Sorted, so both nodes hash them alike.
    vips: Vec<IpAddr>,
    primary: IpAddr,
    /// How long a resignation waits for a successor before it is recorded without one.
    handover_wait: Duration,
}

/// An action the daemon is carrying out, as far as traces care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Transmit,
    AddVips,
    RemoveVips,
    Announce,
}

#[derive(Debug, Clone)]
struct Takeover {
    router: RouterId,
    from: State,
    priority: Priority,
    cause: Cause,
    old_master: Option<IpAddr>,
    detect_start: Moment,
    elected: Moment,
    election_end: Option<Moment>,
    first_advert: Option<Moment>,
    vips_add: Option<(Moment, Moment)>,
    announce: Option<(Moment, Moment)>,
}

#[derive(Debug, Clone)]
struct Resignation {
    router: RouterId,
    to: State,
    priority: Priority,
    cause: Cause,
    started: Moment,
    started_end: Option<Moment>,
    vips_remove: Option<(Moment, Moment)>,
    successor: Option<(IpAddr, Moment)>,
}

/// A finished takeover or resignation.
#[derive(Debug, Clone)]
pub enum Record {
    Takeover(TakeoverRecord),
    Resignation(ResignationRecord),
}

#[derive(Debug, Clone)]
pub struct TakeoverRecord {
    facts: Facts,
    takeover: TakeoverData,
    /// Earlier records of this node with the same base trace id (see the module docs).
    repeat: u32,
}

#[derive(Debug, Clone)]
pub struct ResignationRecord {
    facts: Facts,
    resignation: ResignationData,
    repeat: u32,
}

/// The router facts a record keeps (the router may be gone by the time it is exported).
#[derive(Debug, Clone)]
struct Facts {
    name: String,
    vrid: u8,
    vips: Vec<IpAddr>,
    primary: IpAddr,
}

#[derive(Debug, Clone)]
struct TakeoverData {
    from: State,
    priority: Priority,
    cause: Cause,
    old_master: Option<IpAddr>,
    detect_start: Moment,
    elected: Moment,
    election_end: Moment,
    first_advert: Moment,
    vips_add: Option<(Moment, Moment)>,
    announce: Option<(Moment, Moment)>,
    end: Moment,
}

#[derive(Debug, Clone)]
struct ResignationData {
    to: State,
    priority: Priority,
    cause: Cause,
    started: Moment,
    started_end: Moment,
    vips_remove: Option<(Moment, Moment)>,
    successor: Option<(IpAddr, Moment)>,
    end: Moment,
}

/// Follows failovers from the daemon's actions; see the module documentation.
#[derive(Debug, Default)]
pub struct Failovers {
    node: String,
    routers: SmallMap<RouterId, RouterFacts>,
    /// The VRIDs of `routers`: an advert of any other is not remembered.
    vrids: VridSet,
    /// The last valid advert from each (VRID, source): when (on the monotonic clock, as the
    /// loop read it; the wall clock is derived only when a failover needs it), and with which
    /// priority.
    heard: SmallMap<(u8, IpAddr), (Instant, Priority)>,
    takeovers: HashMap<RouterId, Takeover>,
    resignations: HashMap<RouterId, Resignation>,
    current: Option<(RouterId, Step, Moment)>,
    /// A state change being carried out (its hooks and log), for the election span.
    changing: Option<RouterId>,
    /// The base trace ids of the latest records, newest last, to number repeats.
    recent: std::collections::VecDeque<TraceId>,
}

impl Failovers {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            ..Self::default()
        }
    }

    /// Learns (again) what each router is; `routers` pairs each config with its id.
    pub fn configure<'a>(
        &mut self,
        routers: impl IntoIterator<Item = (RouterId, &'a RouterConfig)>,
    ) {
        self.routers = routers
            .into_iter()
            .map(|(id, config)| {
                let mut vips = config.vips.clone();
                vips.sort_unstable();
                let interval = config.advert_interval.as_duration();
                (
                    id,
                    RouterFacts {
                        name: config.name.clone(),
                        vrid: config.vrid.get(),
                        family: config.family,
                        vips,
                        primary: config.primary_address,
                        handover_wait: 4 * interval + Duration::from_secs(1),
                    },
                )
            })
            .collect();
        self.vrids = VridSet::default();
        for facts in self.routers.values() {
            self.vrids.insert(facts.vrid);
        }
    }

    /// A valid advert arrived (before the engine handles it).
    pub fn heard(&mut self, at: Instant, vrid: u8, src: IpAddr, priority: Priority) {
        if !self.vrids.contains(vrid) {
            return;
        }
        // Bounded whatever the LAN sends: the oldest source goes first.
        if self.heard.len() >= MAX_HEARD && !self.heard.contains_key(&(vrid, src)) {
            let oldest = (self.heard.iter())
                .min_by_key(|(_, (heard, _))| *heard)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.heard.remove(&oldest);
            }
        }
        self.heard.insert((vrid, src), (at, priority));
        if priority == Priority::RESIGN {
            return;
        }
        for resignation in self.resignations.values_mut() {
            let Some(facts) = self.routers.get(&resignation.router) else {
                continue;
            };
            if resignation.successor.is_none()
                && facts.vrid == vrid
                && facts.family == family_of(src)
                && facts.primary != src
            {
                resignation.successor = Some((src, resignation.started.at(at)));
            }
        }
    }

    /// An `Action::StateChanged` is being carried out.
    pub fn state_changed(
        &mut self,
        at: Moment,
        router: RouterId,
        from: State,
        to: State,
        priority: Priority,
        cause: &Cause,
    ) {
        self.close_current(at);
        let Some(facts) = self.routers.get(&router) else {
            return;
        };
        self.changing = Some(router);
        if from == State::Backup && to == State::Master {
            let (old_master, detect_start) = self.detection(facts, at, cause);
            self.takeovers.insert(
                router,
                Takeover {
                    router,
                    from,
                    priority,
                    cause: cause.clone(),
                    old_master,
                    detect_start,
                    elected: at,
                    election_end: None,
                    first_advert: None,
                    vips_add: None,
                    announce: None,
                },
            );
        } else if from == State::Master && to != State::Master {
            let successor = match cause {
                Cause::HigherPriority { from, .. }
                | Cause::EqualPriorityHigherAddress { from, .. } => {
                    let heard_at = self
                        .heard
                        .get(&(facts.vrid, *from))
                        .map_or(at, |(heard, _)| at.at(*heard));
                    Some((*from, heard_at))
                }
                _ => None,
            };
            self.resignations.insert(
                router,
                Resignation {
                    router,
                    to,
                    priority,
                    cause: cause.clone(),
                    started: at,
                    started_end: None,
                    vips_remove: None,
                    successor,
                },
            );
        }
    }

    /// Where detection started and which master failed, from what the cause says and what was
    /// heard: the old master's last advert (master-down: the silence the timer measured), its
    /// priority-0 advert, or the election itself when nothing was heard.
    fn detection(
        &self,
        facts: &RouterFacts,
        elected: Moment,
        cause: &Cause,
    ) -> (Option<IpAddr>, Moment) {
        let last_heard = |master: &IpAddr| {
            self.heard
                .get(&(facts.vrid, *master))
                .map(|(heard, _)| elected.at(*heard))
        };
        match cause {
            Cause::MasterDown { master, silent_for } => (*master, elected.earlier(*silent_for)),
            Cause::MasterResigned { master } => {
                (Some(*master), last_heard(master).unwrap_or(elected))
            }
            Cause::Preempt { master, .. } => (Some(*master), last_heard(master).unwrap_or(elected)),
            _ => (None, elected),
        }
    }

    /// Another action starts; the previous one (if any) ended now.
    /// Whether a step of `router` now would be part of a failover being measured: a takeover or
    /// resignation of it is open, or a step or state change is still to be closed.
    pub fn follows(&self, router: RouterId) -> bool {
        self.current.is_some()
            || self.changing.is_some()
            || self.takeovers.contains_key(&router)
            || self.resignations.contains_key(&router)
    }

    /// Whether nothing is being measured: no takeover, resignation, step or state change open.
    pub fn is_idle(&self) -> bool {
        self.current.is_none()
            && self.changing.is_none()
            && self.takeovers.is_empty()
            && self.resignations.is_empty()
    }

    pub fn begin(&mut self, at: Moment, router: RouterId, step: Step) {
        self.close_current(at);
        self.current = Some((router, step, at));
    }

    /// The action begun last (or the state change) finished now.
    pub fn end(&mut self, at: Moment) {
        self.close_current(at);
    }

    fn close_current(&mut self, at: Moment) {
        if let Some(router) = self.changing.take() {
            if let Some(takeover) = self.takeovers.get_mut(&router) {
                takeover.election_end.get_or_insert(at);
            }
            if let Some(resignation) = self.resignations.get_mut(&router) {
                resignation.started_end.get_or_insert(at);
            }
        }
        let Some((router, step, started)) = self.current.take() else {
            return;
        };
        if let Some(takeover) = self.takeovers.get_mut(&router) {
            match step {
                Step::Transmit => {
                    takeover.first_advert.get_or_insert(started);
                }
                Step::AddVips => {
                    takeover.vips_add.get_or_insert((started, at));
                }
                Step::Announce => {
                    takeover.announce.get_or_insert((started, at));
                }
                Step::RemoveVips => {}
            }
        }
        if let Some(resignation) = self.resignations.get_mut(&router)
            && step == Step::RemoveVips
        {
            resignation.vips_remove.get_or_insert((started, at));
        }
    }

    /// After a batch of actions: takeovers are complete (the engine emits a takeover's VIPs,
    /// advert and first announcement together); resignations are once their VIPs are gone and a
    /// successor was heard, or when they waited long enough.
    pub fn settle(&mut self, at: Moment) -> Vec<Record> {
        self.close_current(at);
        let mut records = Vec::new();
        for (_, takeover) in self.takeovers.drain() {
            let Some(facts) = self.routers.get(&takeover.router) else {
                continue;
            };
            records.push(Record::Takeover(takeover_record(facts, takeover, at)));
        }
        let done: Vec<RouterId> = (self.resignations.iter())
            .filter(|(router, resignation)| {
                let waited = self
                    .routers
                    .get(router)
                    .is_none_or(|facts| at.since(resignation.started) >= facts.handover_wait);
                waited || (resignation.vips_remove.is_some() && resignation.successor.is_some())
            })
            .map(|(router, _)| *router)
            .collect();
        for router in done {
            if let Some(resignation) = self.resignations.remove(&router)
                && let Some(record) = self.resignation_record(resignation, at)
            {
                records.push(record);
            }
        }
        for record in &mut records {
            self.number(record);
        }
        records
    }

    /// The base trace ids of this node's latest records, oldest first (to keep across a
    /// restart, see [`Failovers::remember`]).
    pub fn recent_ids(&self) -> impl Iterator<Item = TraceId> + '_ {
        self.recent.iter().copied()
    }

    /// Takes the base trace ids an earlier run of this node recorded, so that a handover
    /// repeated after a restart is numbered as the peer, which saw both, numbers it.
    pub fn remember(&mut self, ids: impl IntoIterator<Item = TraceId>) {
        for id in ids {
            if self.recent.len() == RECENT_IDS {
                self.recent.pop_front();
            }
            self.recent.push_back(id);
        }
    }

    /// Sets `record`'s repeat: how many of this node's recent records had its base trace id.
    fn number(&mut self, record: &mut Record) {
        let base = record.handover().trace_ids(record.moment(), 0).0;
        let repeat = self.recent.iter().filter(|id| **id == base).count();
        let repeat = u32::try_from(repeat).unwrap_or(u32::MAX);
        match record {
            Record::Takeover(r) => r.repeat = repeat,
            Record::Resignation(r) => r.repeat = repeat,
        }
        if self.recent.len() == RECENT_IDS {
            self.recent.pop_front();
        }
        self.recent.push_back(base);
    }

    /// Everything still open, as it stands (at stop).
    pub fn drain(&mut self, at: Moment) -> Vec<Record> {
        let mut records = self.settle(at);
        let open: Vec<Resignation> = self.resignations.drain().map(|(_, r)| r).collect();
        for resignation in open {
            if let Some(mut record) = self.resignation_record(resignation, at) {
                self.number(&mut record);
                records.push(record);
            }
        }
        records
    }

    fn resignation_record(&self, resignation: Resignation, at: Moment) -> Option<Record> {
        let facts = self.routers.get(&resignation.router)?;
        let end = [
            Some(resignation.started_end.unwrap_or(resignation.started)),
            resignation.vips_remove.map(|(_, end)| end),
            resignation.successor.map(|(_, heard)| heard),
        ]
        .into_iter()
        .flatten()
        .max_by_key(|moment| moment.mono)
        .unwrap_or(at);
        Some(Record::Resignation(ResignationRecord {
            facts: Facts::of(facts),
            resignation: ResignationData {
                to: resignation.to,
                priority: resignation.priority,
                cause: resignation.cause,
                started: resignation.started,
                started_end: resignation.started_end.unwrap_or(resignation.started),
                vips_remove: resignation.vips_remove,
                successor: resignation.successor,
                end,
            },
            repeat: 0,
        }))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The instance name of `router`.
    pub fn name_of(&self, router: RouterId) -> Option<&str> {
        self.routers.get(&router).map(|facts| facts.name.as_str())
    }
}

fn takeover_record(facts: &RouterFacts, takeover: Takeover, at: Moment) -> TakeoverRecord {
    let election_end = takeover.election_end.unwrap_or(at);
    let end = [
        Some(election_end),
        takeover.vips_add.map(|(_, end)| end),
        takeover.announce.map(|(_, end)| end),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|moment| moment.mono)
    .unwrap_or(at);
    TakeoverRecord {
        facts: Facts::of(facts),
        takeover: TakeoverData {
            from: takeover.from,
            priority: takeover.priority,
            cause: takeover.cause,
            old_master: takeover.old_master,
            detect_start: takeover.detect_start,
            elected: takeover.elected,
            election_end,
            first_advert: takeover.first_advert.unwrap_or(takeover.elected),
            vips_add: takeover.vips_add,
            announce: takeover.announce,
            end,
        },
        repeat: 0,
    }
}

impl Facts {
    fn of(facts: &RouterFacts) -> Self {
        Self {
            name: facts.name.clone(),
            vrid: facts.vrid,
            vips: facts.vips.clone(),
            primary: facts.primary,
        }
    }
}

impl TakeoverRecord {
    pub fn instance(&self) -> &str {
        &self.facts.name
    }

    /// The cause kind of the takeover.
    pub fn cause_kind(&self) -> &'static str {
        self.takeover.cause.kind()
    }

    /// Whether a previous master is known: a first election (nothing ever heard) is not a
    /// failover.
    pub fn replaced_a_master(&self) -> bool {
        self.takeover.old_master.is_some()
    }

    /// The failover duration: from detection start (the old master last heard, or its
    /// priority-0 advert received) to the VIPs added and the first GARP/NA sent.
    pub fn duration(&self) -> Duration {
        self.takeover.end.since(self.takeover.detect_start)
    }
}

// --- Trace ids ----------------------------------------------------------------------------------

/// The facts both sides of a handover agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The old master resigned (sent priority 0) rather than being overtaken or silent: a
    /// graceful handover and a takeover between the same two nodes get different traces.
    pub resigned: bool,
    pub vrid: u8,
    /// Sorted.
    pub vips: Vec<IpAddr>,
    pub old_master: IpAddr,
    pub new_master: IpAddr,
}

impl Handover {
    /// A stable 128-bit hash of the facts (the same on every node and build).
    pub fn key(&self) -> [u8; 16] {
        let mut hash = StableHash::new(b"hav.handover.v1");
        hash.write(&[u8::from(self.resigned), self.vrid]);
        for vip in &self.vips {
            write_address(&mut hash, *vip);
        }
        write_address(&mut hash, self.old_master);
        write_address(&mut hash, self.new_master);
        hash.finish()
    }

    /// The trace id of the handover whose new master first advertised at `moment`, and the
    /// neighbouring window's id when `moment` lies within [`EDGE`] of a window edge; `repeat`
    /// numbers the handovers of the same facts in one window (0 for the first).
    pub fn trace_ids(&self, moment: SystemTime, repeat: u32) -> (TraceId, Option<TraceId>) {
        let millis = moment
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let window = WINDOW.as_millis();
        let edge = EDGE.as_millis();
        let bucket = millis / window;
        let offset = millis % window;
        let neighbour = if offset < edge {
            bucket.checked_sub(1)
        } else if offset >= window - edge {
            Some(bucket + 1)
        } else {
            None
        };
        (
            self.trace_id(bucket, repeat),
            neighbour.map(|b| self.trace_id(b, repeat)),
        )
    }

    fn trace_id(&self, bucket: u128, repeat: u32) -> TraceId {
        let mut hash = StableHash::new(b"hav.failover.trace.v2");
        hash.write(&self.key());
        hash.write(&bucket.to_be_bytes());
        if repeat > 0 {
            hash.write(&repeat.to_be_bytes());
        }
        TraceId::from_bytes(hash.finish())
    }
}

/// The root span id of `role` (`vrrp.failover` or `vrrp.resign`) in `trace`.
pub fn root_span_id(trace: TraceId, role: &str) -> SpanId {
    let mut hash = StableHash::new(b"hav.failover.span.v1");
    hash.write(&trace.to_bytes());
    hash.write(role.as_bytes());
    let bytes = hash.finish();
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    SpanId::from_bytes(id)
}

fn write_address(hash: &mut StableHash, address: IpAddr) {
    match address {
        IpAddr::V4(v4) => {
            hash.write(&[4]);
            hash.write(&v4.octets());
        }
        IpAddr::V6(v6) => {
            hash.write(&[6]);
            hash.write(&v6.octets());
        }
    }
}

/// FNV-1a (128 bit) with a SplitMix64 finish on each half: fixed by its definition, unlike the
/// standard library's hasher, so every node computes the same ids.
struct StableHash(u128);

impl StableHash {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn new(domain: &[u8]) -> Self {
        let mut hash = Self(Self::OFFSET);
        hash.write(domain);
        hash
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u128::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> [u8; 16] {
        let high = splitmix((self.0 >> 64) as u64);
        let low = splitmix(self.0 as u64 ^ high);
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&high.to_be_bytes());
        out[8..].copy_from_slice(&low.to_be_bytes());
        out
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn family_of(address: IpAddr) -> Family {
    match address {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

fn unspecified(family_like: IpAddr) -> IpAddr {
    match family_like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

// --- Spans --------------------------------------------------------------------------------------

/// Builds spans with the ids of one trace.
struct TraceBuilder<'a> {
    trace: TraceId,
    scope: &'a InstrumentationScope,
    next_child: u64,
}

impl TraceBuilder<'_> {
    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        id: SpanId,
        parent: SpanId,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
    ) -> SpanData {
        // `SpanLinks` is non-exhaustive: filled through its public field.
        let mut span_links = SpanLinks::default();
        span_links.links = links;
        SpanData {
            span_context: SpanContext::new(
                self.trace,
                id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: parent,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.into(),
            start_time: start,
            end_time: end.max(start),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: span_links,
            status: Status::Unset,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// Child ids: derived from the root's, distinct within the trace.
    fn child_id(&mut self, root: SpanId) -> SpanId {
        self.next_child += 1;
        let mut hash = StableHash::new(b"hav.failover.child.v1");
        hash.write(&root.to_bytes());
        hash.write(&self.next_child.to_be_bytes());
        let bytes = hash.finish();
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[8..]);
        SpanId::from_bytes(id)
    }
}

/// A link to the other side's root span.
fn peer_link(trace: TraceId, role: &'static str, window: &'static str) -> Link {
    Link::new(
        SpanContext::new(
            trace,
            root_span_id(trace, role),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ),
        vec![
            KeyValue::new("hav.link.role", role),
            KeyValue::new("hav.link.window", window),
        ],
        0,
    )
}

fn addresses(vips: &[IpAddr]) -> Value {
    Value::Array(Array::String(
        vips.iter()
            .map(|vip| StringValue::from(vip.to_string()))
            .collect(),
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn state_name(state: State) -> String {
    state.to_string()
}

impl Record {
    /// The trace id this record is exported under.
    pub fn trace_id(&self) -> TraceId {
        self.ids().0
    }

    fn handover(&self) -> Handover {
        match self {
            Record::Takeover(record) => Handover {
                resigned: matches!(record.takeover.cause, Cause::MasterResigned { .. }),
                vrid: record.facts.vrid,
                vips: record.facts.vips.clone(),
                old_master: record
                    .takeover
                    .old_master
                    .unwrap_or_else(|| unspecified(record.facts.primary)),
                new_master: record.facts.primary,
            },
            Record::Resignation(record) => Handover {
                // Every way out of Master sends priority 0, except being overtaken.
                resigned: !matches!(
                    record.resignation.cause,
                    Cause::HigherPriority { .. } | Cause::EqualPriorityHigherAddress { .. }
                ),
                vrid: record.facts.vrid,
                vips: record.facts.vips.clone(),
                old_master: record.facts.primary,
                new_master: (record.resignation.successor)
                    .map_or_else(|| unspecified(record.facts.primary), |(address, _)| address),
            },
        }
    }

    /// When the new master first advertised, as this node saw it.
    fn moment(&self) -> SystemTime {
        match self {
            Record::Takeover(record) => record.takeover.first_advert.wall,
            Record::Resignation(record) => match record.resignation.successor {
                Some((_, heard)) => heard.wall,
                None => record.resignation.started.wall,
            },
        }
    }

    /// (trace id, neighbouring window's trace id) from the new master's first advert.
    fn ids(&self) -> (TraceId, Option<TraceId>) {
        let repeat = match self {
            Record::Takeover(record) => record.repeat,
            Record::Resignation(record) => record.repeat,
        };
        self.handover().trace_ids(self.moment(), repeat)
    }

    /// The spans of this record: a root with its children.
    pub fn spans(&self, node: &str, scope: &InstrumentationScope) -> Vec<SpanData> {
        let (trace, neighbour) = self.ids();
        let handover = self.handover();
        let mut builder = TraceBuilder {
            trace,
            scope,
            next_child: 0,
        };
        let common = |facts: &Facts| {
            vec![
                KeyValue::new("hav.node", node.to_owned()),
                KeyValue::new("hav.instance", facts.name.clone()),
                KeyValue::new("vrrp.vrid", i64::from(facts.vrid)),
                KeyValue::new("hav.vips", addresses(&facts.vips)),
                KeyValue::new("vrrp.old_master", handover.old_master.to_string()),
                KeyValue::new("vrrp.new_master", handover.new_master.to_string()),
                KeyValue::new("hav.failover.id", hex(&trace.to_bytes())),
                KeyValue::new("hav.handover.key", hex(&handover.key())),
            ]
        };
        match self {
            Record::Takeover(record) => {
                let data = &record.takeover;
                let root = root_span_id(trace, "vrrp.failover");
                let knows_peer = data.old_master.is_some();
                let mut links = Vec::new();
                if knows_peer {
                    links.push(peer_link(trace, "vrrp.resign", "same"));
                    if let Some(other) = neighbour {
                        links.push(peer_link(other, "vrrp.resign", "neighbour"));
                    }
                }
                let mut attributes = common(&record.facts);
                attributes.extend([
                    KeyValue::new("vrrp.from_state", state_name(data.from)),
                    KeyValue::new("vrrp.to_state", state_name(State::Master)),
                    KeyValue::new("vrrp.priority", i64::from(data.priority.get())),
                    KeyValue::new("vrrp.cause", data.cause.kind()),
                    KeyValue::new("vrrp.cause.detail", data.cause.to_string()),
                    KeyValue::new(
                        "hav.failover.duration_ms",
                        record.duration().as_secs_f64() * 1000.0,
                    ),
                ]);
                let mut spans = vec![builder.span(
                    root,
                    SpanId::INVALID,
                    "vrrp.failover",
                    data.detect_start.wall,
                    data.end.wall,
                    attributes,
                    links,
                )];
                let mut detect = vec![
                    KeyValue::new("vrrp.cause", data.cause.kind()),
                    KeyValue::new("vrrp.cause.detail", data.cause.to_string()),
                ];
                if let Some(master) = data.old_master {
                    detect.push(KeyValue::new("vrrp.master", master.to_string()));
                }
                if let Cause::MasterDown { silent_for, .. } = &data.cause {
                    detect.push(KeyValue::new(
                        "vrrp.silent_for_ms",
                        silent_for.as_secs_f64() * 1000.0,
                    ));
                }
                let id = builder.child_id(root);
                spans.push(builder.span(
                    id,
                    root,
                    "vrrp.detect",
                    data.detect_start.wall,
                    data.elected.wall,
                    detect,
                    vec![],
                ));
                let id = builder.child_id(root);
                spans.push(builder.span(
                    id,
                    root,
                    "vrrp.election",
                    data.elected.wall,
                    data.election_end.wall,
                    vec![
                        KeyValue::new("vrrp.from_state", state_name(data.from)),
                        KeyValue::new("vrrp.to_state", state_name(State::Master)),
                        KeyValue::new("vrrp.priority", i64::from(data.priority.get())),
                        KeyValue::new("vrrp.cause", data.cause.kind()),
                    ],
                    vec![],
                ));
                if let Some((start, end)) = data.vips_add {
                    let id = builder.child_id(root);
                    spans.push(builder.span(
                        id,
                        root,
                        "vips.add",
                        start.wall,
                        end.wall,
                        vec![
                            KeyValue::new("hav.vips", addresses(&record.facts.vips)),
                            KeyValue::new("hav.vips.count", record.facts.vips.len() as i64),
                        ],
                        vec![],
                    ));
                }
                if let Some((start, end)) = data.announce {
                    let id = builder.child_id(root);
                    let kind = match record.facts.primary {
                        IpAddr::V4(_) => "garp",
                        IpAddr::V6(_) => "unsolicited-na",
                    };
                    spans.push(builder.span(
                        id,
                        root,
                        "announce",
                        start.wall,
                        end.wall,
                        vec![
                            KeyValue::new("hav.vips", addresses(&record.facts.vips)),
                            KeyValue::new("hav.announce.kind", kind),
                        ],
                        vec![],
                    ));
                }
                spans
            }
            Record::Resignation(record) => {
                let data = &record.resignation;
                let root = root_span_id(trace, "vrrp.resign");
                let mut links = Vec::new();
                if data.successor.is_some() {
                    links.push(peer_link(trace, "vrrp.failover", "same"));
                    if let Some(other) = neighbour {
                        links.push(peer_link(other, "vrrp.failover", "neighbour"));
                    }
                }
                let mut attributes = common(&record.facts);
                attributes.extend([
                    KeyValue::new("vrrp.from_state", state_name(State::Master)),
                    KeyValue::new("vrrp.to_state", state_name(data.to)),
                    KeyValue::new("vrrp.priority", i64::from(data.priority.get())),
                    KeyValue::new("vrrp.cause", data.cause.kind()),
                    KeyValue::new("vrrp.cause.detail", data.cause.to_string()),
                    KeyValue::new("hav.successor_heard", data.successor.is_some()),
                ]);
                let mut spans = vec![builder.span(
                    root,
                    SpanId::INVALID,
                    "vrrp.resign",
                    data.started.wall,
                    data.end.wall,
                    attributes,
                    links,
                )];
                let id = builder.child_id(root);
                spans.push(builder.span(
                    id,
                    root,
                    "vrrp.election",
                    data.started.wall,
                    data.started_end.wall,
                    vec![
                        KeyValue::new("vrrp.from_state", state_name(State::Master)),
                        KeyValue::new("vrrp.to_state", state_name(data.to)),
                        KeyValue::new("vrrp.cause", data.cause.kind()),
                    ],
                    vec![],
                ));
                if let Some((start, end)) = data.vips_remove {
                    let id = builder.child_id(root);
                    spans.push(builder.span(
                        id,
                        root,
                        "vips.remove",
                        start.wall,
                        end.wall,
                        vec![KeyValue::new("hav.vips", addresses(&record.facts.vips))],
                        vec![],
                    ));
                }
                spans
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handover() -> Handover {
        Handover {
            resigned: true,
            vrid: 51,
            vips: vec!["198.51.100.1".parse().expect("literal")],
            old_master: "198.51.100.11".parse().expect("literal"),
            new_master: "198.51.100.12".parse().expect("literal"),
        }
    }

    fn at(millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(millis)
    }

    #[test]
    fn ids_are_stable_and_depend_on_every_fact() {
        let base = handover();
        // Pinned: a change of the algorithm would split the two sides of mixed-version pairs.
        assert_eq!(hex(&base.key()), "12402ea687c625192346cc71437b134f");
        let (id, _) = base.trace_ids(at(1_700_000_005_400), 0);
        assert_eq!(
            id,
            base.trace_ids(at(1_700_000_005_600), 0).0,
            "same window"
        );
        assert_ne!(
            id,
            base.trace_ids(at(1_700_000_006_400), 0).0,
            "next window"
        );
        assert_ne!(id, base.trace_ids(at(1_700_000_005_400), 1).0, "a repeat");
        let mut other = base.clone();
        other.resigned = false;
        assert_ne!(other.key(), base.key(), "a takeover is not a resignation");
        let mut other = base.clone();
        other.vrid = 52;
        assert_ne!(other.key(), base.key());
        let mut other = base.clone();
        std::mem::swap(&mut other.old_master, &mut other.new_master);
        assert_ne!(other.key(), base.key(), "direction matters");
        let mut other = base.clone();
        other.vips.push("198.51.100.2".parse().expect("literal"));
        assert_ne!(other.key(), base.key());
        assert_ne!(
            root_span_id(id, "vrrp.failover"),
            root_span_id(id, "vrrp.resign")
        );
    }

    fn router(name: &str, primary: &str) -> RouterConfig {
        RouterConfig {
            name: name.into(),
            interface: "eth0".into(),
            vrid: hav_vrrp::VrId::new(51).expect("valid"),
            version: hav_vrrp::Version::V3,
            family: Family::V4,
            priority: Priority(100),
            advert_interval: hav_vrrp::AdvertInterval::DEFAULT,
            preempt: hav_vrrp::engine::Preempt::default(),
            accept: true,
            primary_address: primary.parse().expect("literal"),
            peers: hav_vrrp::engine::Peers::Multicast,
            vips: vec!["198.51.100.1".parse().expect("literal")],
            auth: hav_vrrp::Auth::None,
            checksum: hav_vrrp::V3Checksum::PseudoHeader,
            announce: hav_vrrp::engine::AnnounceSchedule::default(),
            strict: false,
        }
    }

    fn later(moment: Moment, millis: u64) -> Moment {
        Moment {
            wall: moment.wall + Duration::from_millis(millis),
            mono: moment.mono + Duration::from_millis(millis),
        }
    }

    #[test]
    fn a_moment_is_moved_to_an_instant_either_way() {
        let t0 = Moment::now();
        assert_eq!(t0.at(later(t0, 70).mono), later(t0, 70));
        let earlier = t0.at(t0.mono - Duration::from_millis(30));
        assert_eq!(later(earlier, 30), t0);
        assert_eq!(t0.at(t0.mono), t0);
    }

    #[test]
    fn only_adverts_of_configured_vrids_are_remembered() {
        let mut set = VridSet::default();
        for vrid in [0, 1, 63, 64, 200, 255] {
            set.insert(vrid);
        }
        let members: Vec<u8> = (0..=255).filter(|vrid| set.contains(*vrid)).collect();
        assert_eq!(members, [0, 1, 63, 64, 200, 255]);
        let mut failovers = Failovers::new("b");
        let config = router("vip", "198.51.100.1");
        failovers.configure([(RouterId::from_index(0), &config)]);
        let src: IpAddr = "198.51.100.2".parse().expect("literal");
        let now = Instant::now();
        failovers.heard(now, 52, src, Priority(100));
        assert!(failovers.heard.is_empty(), "VRID 52 is not configured");
        failovers.heard(now, 51, src, Priority(100));
        assert_eq!(failovers.heard.get(&(51, src)), Some(&(now, Priority(100))));
    }

    /// Node b takes over from a silent a; node a, alive, resigns to b: both records share a
    /// trace and link to each other's root.
    #[test]
    fn a_takeover_and_a_resignation_pair_up() {
        let id = RouterId::from_index(0);
        let scope = InstrumentationScope::builder("test").build();
        let t0 = Moment::now();
        let a_addr: IpAddr = "198.51.100.11".parse().expect("literal");
        let b_addr: IpAddr = "198.51.100.12".parse().expect("literal");

        let mut b = Failovers::new("b");
        let config_b = router("VI_1", "198.51.100.12");
        b.configure([(id, &config_b)]);
        b.heard(t0.mono, 51, a_addr, Priority::RESIGN);
        let elected = later(t0, 60);
        b.state_changed(
            elected,
            id,
            State::Backup,
            State::Master,
            Priority(100),
            &Cause::MasterResigned { master: a_addr },
        );
        b.begin(later(t0, 61), id, Step::AddVips);
        b.begin(later(t0, 70), id, Step::Transmit);
        b.begin(later(t0, 71), id, Step::Announce);
        b.end(later(t0, 72));
        let records = b.settle(later(t0, 73));
        assert_eq!(records.len(), 1);
        let Record::Takeover(takeover) = &records[0] else {
            panic!("a takeover");
        };
        assert_eq!(takeover.duration(), Duration::from_millis(72));
        let b_spans = records[0].spans("b", &scope);
        let names: Vec<&str> = b_spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "vrrp.failover",
                "vrrp.detect",
                "vrrp.election",
                "vips.add",
                "announce"
            ]
        );
        let root = &b_spans[0];
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        for child in &b_spans[1..] {
            assert_eq!(child.parent_span_id, root.span_context.span_id());
            assert_eq!(child.span_context.trace_id(), root.span_context.trace_id());
            assert!(child.start_time >= root.start_time && child.end_time <= root.end_time);
        }
        assert_eq!(
            b_spans[3]
                .end_time
                .duration_since(b_spans[3].start_time)
                .ok(),
            Some(Duration::from_millis(9))
        );

        let mut a = Failovers::new("a");
        let config_a = router("VI_1", "198.51.100.11");
        a.configure([(id, &config_a)]);
        a.state_changed(
            t0,
            id,
            State::Master,
            State::Initialize,
            Priority(150),
            &Cause::Shutdown,
        );
        a.end(later(t0, 1));
        assert!(a.settle(later(t0, 2)).is_empty(), "waits for a successor");
        // b's first advert as master, heard a moment after b sent it.
        a.heard(later(t0, 70).mono, 51, b_addr, Priority(100));
        a.begin(later(t0, 70), id, Step::RemoveVips);
        a.end(later(t0, 75));
        let records = a.settle(later(t0, 76));
        assert_eq!(records.len(), 1);
        let a_spans = records[0].spans("a", &scope);
        let resign = &a_spans[0];
        assert_eq!(resign.name, "vrrp.resign");
        assert_eq!(resign.span_context.trace_id(), root.span_context.trace_id());
        let links_to = |from: &SpanData, to: &SpanData| {
            from.links.iter().any(|link| {
                link.span_context.span_id() == to.span_context.span_id()
                    && link.span_context.trace_id() == to.span_context.trace_id()
            })
        };
        assert!(links_to(root, resign));
        assert!(links_to(resign, root));
    }

    #[test]
    fn a_resignation_without_successor_is_recorded_after_waiting() {
        let id = RouterId::from_index(0);
        let t0 = Moment::now();
        let mut a = Failovers::new("a");
        let config_a = router("VI_1", "198.51.100.11");
        a.configure([(id, &config_a)]);
        a.state_changed(
            t0,
            id,
            State::Master,
            State::Fault,
            Priority(150),
            &Cause::TrackerFault {
                tracker: "x".into(),
            },
        );
        a.begin(later(t0, 1), id, Step::RemoveVips);
        a.end(later(t0, 2));
        assert!(a.settle(later(t0, 3)).is_empty());
        let records = a.settle(later(t0, 4 * 1000 + 1000));
        assert_eq!(records.len(), 1);
        let spans = records[0].spans("a", &InstrumentationScope::builder("test").build());
        assert!(spans[0].links.is_empty(), "no successor, no link");
    }

    #[test]
    fn near_a_window_edge_the_neighbour_is_named() {
        let base = handover();
        let (late, late_neighbour) = base.trace_ids(at(1_700_000_009_900), 0);
        let (early, early_neighbour) = base.trace_ids(at(1_700_000_010_200), 0);
        assert_ne!(late, early);
        assert_eq!(late_neighbour, Some(early));
        assert_eq!(early_neighbour, Some(late));
        assert_eq!(base.trace_ids(at(1_700_000_005_500), 0).1, None);
    }

    /// Two handovers from a to b within one window (b handed the VIP back in between): each is
    /// a trace of its own on each node, and both nodes still put each in the same trace.
    #[test]
    fn two_handovers_the_same_way_in_one_window_get_two_traces_on_both_nodes() {
        let id = RouterId::from_index(0);
        let t0 = Moment {
            wall: at(1_700_000_005_100),
            mono: Moment::now().mono,
        };
        let a_addr: IpAddr = "198.51.100.11".parse().expect("literal");
        let b_addr: IpAddr = "198.51.100.12".parse().expect("literal");
        let (config_a, config_b) = (
            router("VI_1", "198.51.100.11"),
            router("VI_1", "198.51.100.12"),
        );
        let mut a = Failovers::new("a");
        a.configure([(id, &config_a)]);
        let mut b = Failovers::new("b");
        b.configure([(id, &config_b)]);
        let mut traces = Vec::new();
        for start in [0, 400] {
            b.heard(later(t0, start).mono, 51, a_addr, Priority::RESIGN);
            b.state_changed(
                later(t0, start + 60),
                id,
                State::Backup,
                State::Master,
                Priority(100),
                &Cause::MasterResigned { master: a_addr },
            );
            b.begin(later(t0, start + 61), id, Step::Transmit);
            b.end(later(t0, start + 62));
            let taken = b.settle(later(t0, start + 63));
            a.state_changed(
                later(t0, start),
                id,
                State::Master,
                State::Backup,
                Priority(50),
                &Cause::PriorityOverride {
                    priority: Some(Priority(50)),
                },
            );
            a.heard(later(t0, start + 62).mono, 51, b_addr, Priority(100));
            a.begin(later(t0, start + 62), id, Step::RemoveVips);
            a.end(later(t0, start + 63));
            let resigned = a.settle(later(t0, start + 64));
            assert_eq!((taken.len(), resigned.len()), (1, 1));
            traces.push((taken[0].trace_id(), resigned[0].trace_id()));
        }
        assert_eq!(traces[0].0, traces[0].1, "the first handover: one trace");
        assert_eq!(traces[1].0, traces[1].1, "the second handover: one trace");
        assert_ne!(traces[0].0, traces[1].0, "two handovers, two traces");
    }
}
