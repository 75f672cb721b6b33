//! The VRRP state machine of one node: all its virtual routers and sync groups.
//!
//! quinn-style sans-IO: the driver calls `handle_*(now, …)` with what happened, then drains
//! [`Engine::poll_action`] and sleeps until [`Engine::poll_timeout`]. The engine does no IO,
//! reads no clock and never panics on any input; every state change is reported with a
//! [`Cause`], and per router a VIP is only added when not held and only removed when held.
//!
//! Actions must be carried out in order (e.g. `AddVips` comes before the first advert of a new
//! master). `Transmit` goes out from the router's primary address on its interface
//! ([`Engine::router_config`]) with TTL / hop limit 255.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use hav_vrrp::engine::{Action, Engine, EngineConfig};
//!
//! let mut engine = Engine::new(EngineConfig::default()).expect("valid");
//! let mut now = Instant::now(); // the driver's clock; the engine never reads one
//! engine.start(now);
//! loop {
//!     while let Some(action) = engine.poll_action() {
//!         match action {
//!             Action::Transmit { router, dst, payload } => { /* send */ }
//!             Action::StateChanged { router, from, to, cause, .. } => println!("{from} -> {to}: {cause}"),
//!             _ => { /* AddVips, RemoveVips, Announce, SyncGroupChanged */ }
//!         }
//!     }
//!     // Sleep until then, or until a packet arrives (`handle_packet`) or a tracker changes.
//!     let Some(wake) = engine.poll_timeout() else { break };
//!     now = wake;
//!     engine.handle_timeout(now);
//! }
//! ```

mod announce;
mod cause;
mod config;
mod deadlines;
mod repeat;
pub use repeat::Steady;
mod router;
mod sync_group;
mod timer;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub use cause::Cause;
pub use config::{
    AnnounceSchedule, EngineConfig, EngineConfigError, MAX_ANNOUNCE_REPEAT, MAX_DELAY, MAX_VIPS,
    Peer, Peers, Preempt, RouterConfig, RouterConfigError, SyncGroupConfig,
};

use config::family_of;
use deadlines::Deadlines;
use repeat::Repeat;

#[cfg(feature = "sim")]
pub(crate) use config::family_of as config_family_of;
use router::{Out, Renewal, Transition, VirtualRouter};
use sync_group::{SyncGroup, group_state};

use crate::stats::{Counter, Counters};
use crate::types::{Family, Priority, VrId};
use crate::wire::{self, RecvMeta};

/// Identifies a virtual router; stable for its name across [`Engine::reconfigure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouterId(u32);

impl RouterId {
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The id the `index`-th router name an engine ever saw gets (for tests and fuzzers).
    pub const fn from_index(index: u8) -> Self {
        Self(index as u32)
    }
}

/// The VRRP multicast group of a family (224.0.0.18 or ff02::12).
pub fn multicast_address(family: crate::types::Family) -> IpAddr {
    config::multicast_group(family)
}

impl fmt::Display for RouterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// RFC 5798 section 6.4 states, plus keepalived's Fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Not started, or stopped.
    Initialize,
    Backup,
    Master,
    /// A tracker (or a sync-group member) reports a fault: no election, no VIPs.
    Fault,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Initialize => "Initialize",
            State::Backup => "Backup",
            State::Master => "Master",
            State::Fault => "Fault",
        })
    }
}

/// What a health tracker does to a router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackEffect {
    /// Adds a weight (negative lowers) to the base priority; `Adjust(0)` is neutral.
    Adjust(i32),
    /// Puts the router in Fault.
    Fault,
}

/// An effect for the driver to carry out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Send a complete VRRP payload (checksum computed for `dst`) from the router's primary
    /// address, with TTL / hop limit 255.
    Transmit {
        router: RouterId,
        dst: IpAddr,
        /// Shared: a master sends the same bytes every interval.
        payload: Arc<[u8]>,
    },
    /// Add the VIPs (idempotent for the executor); `accept` = RFC 5798 `Accept_Mode`.
    AddVips {
        router: RouterId,
        vips: Vec<IpAddr>,
        accept: bool,
    },
    /// Remove the VIPs. `successor` is set when a master lets go because it heard the router
    /// that now holds them advertise (a planned hand-over: it resigned, stopped, or a better
    /// master preempted it); the executor may then keep serving its established connections
    /// silently (see the agent's hand-over). `None`: a fault, a timeout, a removed router.
    RemoveVips {
        router: RouterId,
        vips: Vec<IpAddr>,
        successor: Option<IpAddr>,
    },
    /// One gratuitous ARP / unsolicited NA round for `vips` now.
    Announce { router: RouterId, vips: Vec<IpAddr> },
    StateChanged {
        router: RouterId,
        from: State,
        to: State,
        priority: Priority,
        cause: Cause,
    },
    SyncGroupChanged {
        group: String,
        from: State,
        to: State,
        cause: Cause,
    },
}

/// A valid advert [`Engine::handle_packet`] decoded: who sent it, for which VRID, with which
/// priority (whether or not a configured router took it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub vrid: crate::types::VrId,
    pub src: IpAddr,
    pub priority: Priority,
}

/// The current master of a virtual router, as far as this node knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterInfo {
    pub address: IpAddr,
    pub priority: Priority,
}

/// One router's state, for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterStatus {
    pub name: String,
    pub id: RouterId,
    pub state: State,
    pub base_priority: Priority,
    pub effective_priority: Priority,
    /// Ourselves when Master; the last advertising master when Backup; `None` if unknown.
    pub master: Option<MasterInfo>,
    /// When the router entered `state` (`None` before start).
    pub since: Option<Instant>,
    pub last_cause: Option<Cause>,
    pub holds_vips: bool,
    /// Per-virtual-router counters (the router-wide ones are [`Engine::counters`]).
    pub counters: Counters,
}

/// The part of a router's status that changes with elections and priorities (no name, cause or
/// counters): cheap to take after every event, to find out whether anything worth publishing
/// changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterBrief {
    pub id: RouterId,
    pub state: State,
    pub effective_priority: Priority,
    /// As in [`RouterStatus::master`].
    pub master: Option<MasterInfo>,
    pub holds_vips: bool,
}

/// A field of [`RouterConfig`] that [`Engine::reconfigure`] found changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangedField {
    /// Interface, VRID, version or family: the router was replaced (remove + add).
    Identity,
    Priority,
    AdvertInterval,
    Preempt,
    Accept,
    PrimaryAddress,
    Peers,
    Vips,
    Auth,
    Checksum,
    Announce,
}

/// A router whose configuration changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterChange {
    pub name: String,
    pub fields: Vec<ChangedField>,
}

/// What [`Engine::reconfigure`] did, by router name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReconfigureReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<RouterChange>,
    pub unchanged: Vec<String>,
    pub sync_groups_changed: bool,
}

impl ReconfigureReport {
    /// Nothing changed at all.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.sync_groups_changed
    }
}

/// Slots of [`Engine`]'s router index: one per family and VRID.
const KEY_SLOTS: usize = 2 * 256;

/// The slot of `family` and `vrid` in the router index, below [`KEY_SLOTS`].
fn key_slot(family: Family, vrid: VrId) -> usize {
    let base = match family {
        Family::V4 => 0,
        Family::V6 => 256,
    };
    base + usize::from(vrid.get())
}

/// All virtual routers of a node, and their sync groups.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    routers: Vec<VirtualRouter>,
    /// Removed routers still handing their VIPs over (make-before-break).
    retiring: Vec<VirtualRouter>,
    groups: Vec<SyncGroup>,
    ids: HashMap<String, RouterId>,
    next_id: u32,
    actions: VecDeque<Action>,
    transitions: Vec<Transition>,
    counters: Counters,
    started: bool,
    shut_down: bool,
    /// Indexes of `routers` by family and VRID, at [`key_slot`] (a packet finds its router
    /// without a scan or a hash).
    by_key: Vec<Vec<usize>>,
    /// Every router's next timer (`routers` by index), earliest first.
    deadlines: Deadlines,
    /// The routers [`Engine::handle_timeout`] found due, kept for its next call.
    due: Vec<usize>,
    /// Bumped whenever a router's [`RouterBrief`] may have changed.
    revision: u64,
    /// The address list of the last advert decoded, handed to the next decode to fill.
    decoded_addresses: Vec<IpAddr>,
    /// The advert a backup last took from its master, to know its repeats ([`repeat`]).
    repeat: Repeat,
    /// Whether a repeat is known as such (off only to test that it changes nothing).
    know_repeats: bool,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Engine, EngineConfigError> {
        config.validate()?;
        let mut engine = Engine {
            config: EngineConfig::default(),
            routers: Vec::new(),
            retiring: Vec::new(),
            groups: Vec::new(),
            ids: HashMap::new(),
            next_id: 0,
            actions: VecDeque::new(),
            transitions: Vec::new(),
            counters: Counters::new(),
            started: false,
            shut_down: false,
            by_key: vec![Vec::new(); KEY_SLOTS],
            deadlines: Deadlines::default(),
            due: Vec::new(),
            revision: 0,
            decoded_addresses: Vec::new(),
            repeat: Repeat::default(),
            know_repeats: true,
        };
        for router in &config.routers {
            let id = engine.id_for(&router.name);
            engine.routers.push(VirtualRouter::new(id, router.clone()));
        }
        engine.groups = build_groups(&config, &engine.routers);
        engine.config = config;
        engine.reindex();
        Ok(engine)
    }

    /// Rebuilds the router indexes and every deadline, and counts a change of the briefs:
    /// after anything but one router's advert or timer.
    fn reindex(&mut self) {
        self.by_key.iter_mut().for_each(Vec::clear);
        for (index, router) in self.routers.iter().enumerate() {
            let slot = key_slot(router.config.family, router.config.vrid);
            self.by_key[slot].push(index);
        }
        self.deadlines.reset(self.routers.len());
        for (index, router) in self.routers.iter().enumerate() {
            self.deadlines.set(index, router.next_timeout());
        }
        self.revision += 1;
    }

    /// Brings one router's deadline up to date.
    fn reindex_deadline(&mut self, index: usize) {
        if let Some(router) = self.routers.get(index) {
            self.deadlines.set(index, router.next_timeout());
        }
    }

    /// The index of the router of `interface`, `family` and `vrid`.
    fn find(&self, interface: &str, family: Family, vrid: VrId) -> Option<usize> {
        self.by_key
            .get(key_slot(family, vrid))?
            .iter()
            .copied()
            .find(|&index| self.routers[index].config.interface == interface)
    }

    /// A number that changes whenever any router's [`RouterBrief`] may have changed (equal
    /// numbers: equal briefs), so an observer compares briefs only when it moved.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Before [`Engine::start`]: `router` starts as master rather than backup (unless a fault
    /// holds it), as an address owner does, because its VIPs are already on the interface and
    /// serving: another VRRP daemon on this node was stopped without releasing them. The peer
    /// hears an advert at once, so it never takes them as well; a peer of higher priority takes
    /// them over as from any master. No effect once started.
    pub fn adopt(&mut self, router: RouterId) {
        if self.started {
            return;
        }
        if let Some(router) = self.routers.iter_mut().find(|r| r.id == router) {
            router.adopt = true;
        }
        self.reindex();
    }

    /// Starts every router (RFC 5798 section 6.4.1, the Startup event). Only the first call
    /// has an effect.
    pub fn start(&mut self, now: Instant) {
        if self.started || self.shut_down {
            return;
        }
        self.started = true;
        let mut out = Out {
            actions: &mut self.actions,
            transitions: &mut self.transitions,
        };
        for router in &mut self.routers {
            router.start(now, Cause::Startup, &mut out);
        }
        self.settle(now);
        self.reindex();
    }

    /// A VRRP payload received on `interface`: decoded, validated, counted and dispatched by
    /// (interface, family, VRID). Returns what was heard when the payload is a valid advert, so
    /// that observers never decode it a second time.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        interface: &str,
        meta: &RecvMeta,
        payload: &[u8],
    ) -> Option<Heard> {
        if let Some(heard) = self.handle_repeat(now, interface, meta, payload) {
            return Some(heard);
        }
        let family = family_of(meta.src);
        let addresses = std::mem::take(&mut self.decoded_addresses);
        let received = match wire::decode_into(meta, payload, addresses) {
            Ok(received) => received,
            Err(error) => {
                let counter = error.counter();
                let router = (!counter.is_router_wide())
                    .then(|| wire::peek_vrid(payload))
                    .flatten()
                    .and_then(|vrid| self.find(interface, family, vrid));
                match router {
                    Some(index) => self.routers[index].bump(counter),
                    None => self.counters.bump(counter),
                }
                return None;
            }
        };
        let heard = self.handle_advert(now, interface, family, meta, &received.advert, payload);
        self.decoded_addresses = received.advert.addresses;
        heard
    }

    /// A decoded advert heard on `interface`.
    fn handle_advert(
        &mut self,
        now: Instant,
        interface: &str,
        family: Family,
        meta: &RecvMeta,
        advert: &wire::Advertisement,
        payload: &[u8],
    ) -> Option<Heard> {
        let heard = Heard {
            vrid: advert.vrid,
            src: meta.src,
            priority: advert.priority,
        };
        let key = (interface, family, advert.vrid);
        let mut out = Out {
            actions: &mut self.actions,
            transitions: &mut self.transitions,
        };
        let mut heard_by_retiring = false;
        for router in self.retiring.iter_mut().filter(|r| r.config.key() == key) {
            heard_by_retiring = true;
            if meta.src != router.config.primary_address && advert.version == router.config.version
            {
                router.handle_advert(now, meta.src, advert, &mut out);
            }
        }
        self.retiring.retain(|router| !router.is_done());
        let Some(index) = self.find(interface, family, advert.vrid) else {
            // RFC 5798 section 7.1: the VRID must be configured on the receiving interface.
            if !heard_by_retiring {
                self.counters.bump(Counter::VrIdErrors);
            }
            self.settle_after(now, &[]);
            return Some(heard);
        };
        let router = &mut self.routers[index];
        if advert.version != router.config.version {
            // RFC 5798 section 7.1: "MUST verify that the VRRP version is 3" (2 for RFC 3768).
            self.counters.bump(Counter::VersionErrors);
            self.settle_after(now, &[]);
            return Some(heard);
        }
        if meta.src == router.config.primary_address {
            // Our own advert, looped back by the host.
            self.settle_after(now, &[]);
            return Some(heard);
        }
        let before = router.brief();
        let actions = self.actions.len();
        let mut out = Out {
            actions: &mut self.actions,
            transitions: &mut self.transitions,
        };
        let renewal = router.handle_advert(now, meta.src, advert, &mut out);
        if router.brief() != before {
            self.revision += 1;
        }
        if let Some(renewal) = renewal
            && self.transitions.is_empty()
            && self.actions.len() == actions
            && self.retiring.is_empty()
        {
            let verdict = repeat::Verdict {
                router: index,
                revision: self.revision,
                renewal,
                heard,
            };
            self.repeat.keep(interface, meta, payload, verdict);
        }
        self.settle_after(now, &[index]);
        Some(heard)
    }

    /// An advert the same as the one kept in [`Engine::repeat`], at the same revision, handed
    /// to its router as a repeat; `None` (nothing done) if it is not one.
    fn handle_repeat(
        &mut self,
        now: Instant,
        interface: &str,
        meta: &RecvMeta,
        payload: &[u8],
    ) -> Option<Heard> {
        if !self.know_repeats || !self.retiring.is_empty() {
            return None;
        }
        let verdict = self
            .repeat
            .matches(interface, meta, payload, self.revision)?;
        let router = self.routers.get_mut(verdict.router)?;
        if !router.repeat_from_master(now, meta.src, verdict.renewal) {
            self.repeat.forget();
            return None;
        }
        self.repeat.hit();
        self.settle_after(now, &[verdict.router]);
        Some(verdict.heard)
    }

    /// The advert a backup takes from its settled master, once it was repeated: while the
    /// engine reports the same one, a repeat of it would only restart that router's master-down
    /// timer, so it may reach [`Engine::handle_packet`] late, with its arrival time, and change
    /// nothing else. `None` while any router is retiring or repeats are not known.
    pub fn steady_repeat(&self) -> Option<Steady<'_>> {
        if !self.know_repeats || !self.retiring.is_empty() {
            return None;
        }
        self.repeat.steady(self.revision)
    }

    /// Every advert is decoded and judged in full, repeats included: for tests that the
    /// shortcut for repeats changes nothing.
    #[cfg(any(test, feature = "sim"))]
    pub fn judge_every_advert(&mut self) {
        self.know_repeats = false;
    }

    /// After an event that touched only the routers at `touched` (and retiring ones): the
    /// sync-group rules when a router changed state (they follow transitions only), and the
    /// deadlines of those routers; everything when a state changed.
    #[cfg_attr(target_os = "linux", unsafe(link_section = ".text.hot"))]
    fn settle_after(&mut self, now: Instant, touched: &[usize]) {
        if self.transitions.is_empty() {
            for &index in touched {
                self.reindex_deadline(index);
            }
        } else {
            self.settle(now);
            self.reindex();
        }
    }

    /// Runs every timer that expired at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut out = Out {
            actions: &mut self.actions,
            transitions: &mut self.transitions,
        };
        // The routers due, found in the deadline index (not by visiting every router), into a
        // list kept between calls, so finding them allocates nothing.
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.deadlines.due(now, &mut due);
        let mut changed = false;
        for &index in &due {
            let router = &mut self.routers[index];
            let before = router.brief();
            router.handle_timeout(now, &mut out);
            changed |= router.brief() != before;
        }
        for router in &mut self.retiring {
            if router.next_timeout().is_some_and(|at| at <= now) {
                router.handle_timeout(now, &mut out);
            }
        }
        self.retiring.retain(|router| !router.is_done());
        if changed {
            self.revision += 1;
        }
        self.settle_after(now, &due);
        self.due = due;
    }

    /// Sets what `tracker` does to `router`, replacing its previous effect.
    pub fn set_tracker(
        &mut self,
        now: Instant,
        router: RouterId,
        tracker: &str,
        effect: TrackEffect,
    ) {
        let mut out = Out {
            actions: &mut self.actions,
            transitions: &mut self.transitions,
        };
        if let Some(router) = self.routers.iter_mut().find(|r| r.id == router) {
            router.set_tracker(now, tracker, effect, &mut out);
        }
        self.settle(now);
        self.reindex();
    }

    /// Replaces the router's effective priority while `Some` (a drain sets a low one).
    pub fn set_priority_override(
        &mut self,
        now: Instant,
        router: RouterId,
        priority: Option<Priority>,
    ) {
        let mut out = Out {
            actions: &mut self.actions,
            transitions: &mut self.transitions,
        };
        if let Some(router) = self.routers.iter_mut().find(|r| r.id == router) {
            router.set_priority_override(now, priority, &mut out);
        }
        self.settle(now);
        self.reindex();
    }

    /// Graceful stop: masters send priority 0 and keep their VIPs until a successor advertises
    /// or a master-down interval passes; then [`Engine::is_stopped`] turns true.
    pub fn shutdown(&mut self, now: Instant) {
        self.shut_down = true;
        self.started = true;
        let mut out = Out {
            actions: &mut self.actions,
            transitions: &mut self.transitions,
        };
        for router in &mut self.routers {
            router.shutdown(now, Cause::Shutdown, &mut out);
        }
        self.settle(now);
        self.reindex();
    }

    /// Whether [`Engine::shutdown`] completed: no router holds VIPs or has anything to send.
    pub fn is_stopped(&self) -> bool {
        self.shut_down
            && self.routers.iter().all(VirtualRouter::is_done)
            && self.retiring.is_empty()
    }

    /// Applies a new configuration with the fewest transitions; see [`ReconfigureReport`].
    /// Routers are matched by name; unchanged ones emit nothing.
    pub fn reconfigure(
        &mut self,
        now: Instant,
        config: EngineConfig,
    ) -> Result<ReconfigureReport, EngineConfigError> {
        config.validate()?;
        if self.shut_down {
            return Err(EngineConfigError::ShutDown);
        }
        let mut report = ReconfigureReport::default();
        let mut old = std::mem::take(&mut self.routers);
        let mut routers = Vec::with_capacity(config.routers.len());
        for router_config in &config.routers {
            let name = router_config.name.clone();
            let position = old.iter().position(|r| r.config.name == name);
            let mut out = Out {
                actions: &mut self.actions,
                transitions: &mut self.transitions,
            };
            match position.map(|position| old.swap_remove(position)) {
                Some(mut router) if router.config.same_identity(router_config) => {
                    let fields = router.reconfigure(now, router_config.clone(), &mut out);
                    if fields.is_empty() {
                        report.unchanged.push(name);
                    } else {
                        report.changed.push(RouterChange { name, fields });
                    }
                    routers.push(router);
                }
                Some(mut router) => {
                    router.stop_now(now, Cause::Reconfigured, &mut out);
                    let mut fresh = VirtualRouter::new(router.id, router_config.clone());
                    fresh.inherit_inputs(&router);
                    if self.started {
                        fresh.start(now, Cause::Reconfigured, &mut out);
                    }
                    report.changed.push(RouterChange {
                        name,
                        fields: vec![ChangedField::Identity],
                    });
                    routers.push(fresh);
                }
                None => {
                    let id = self.ids.get(&name).copied().unwrap_or_else(|| {
                        let id = RouterId(self.next_id);
                        self.next_id += 1;
                        self.ids.insert(name.clone(), id);
                        id
                    });
                    // A router of the same name may still be retiring: it must not hold VIPs
                    // under the id the new one uses.
                    for retiring in self.retiring.iter_mut().filter(|r| r.id == id) {
                        retiring.stop_now(now, Cause::Removed, &mut out);
                    }
                    self.retiring.retain(|r| r.id != id);
                    let mut fresh = VirtualRouter::new(id, router_config.clone());
                    if self.started {
                        fresh.start(now, Cause::Startup, &mut out);
                    }
                    report.added.push(name);
                    routers.push(fresh);
                }
            }
        }
        for mut router in old {
            let mut out = Out {
                actions: &mut self.actions,
                transitions: &mut self.transitions,
            };
            report.removed.push(router.config.name.clone());
            router.shutdown(now, Cause::Removed, &mut out);
            if !router.is_done() {
                self.retiring.push(router);
            }
        }
        self.routers = routers;
        report.sync_groups_changed = self.config.sync_groups != config.sync_groups;
        let previous_states: HashMap<String, State> = self
            .groups
            .iter()
            .map(|group| (group.name.clone(), group.state))
            .collect();
        self.groups = build_groups(&config, &self.routers);
        for group in &mut self.groups {
            group.state = previous_states
                .get(&group.name)
                .copied()
                .unwrap_or(State::Initialize);
        }
        self.config = config;
        self.settle(now);
        self.reindex();
        Ok(report)
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether an action is waiting for [`Engine::poll_action`].
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// The next action, only if it is an [`Action::Transmit`]: what a driver can carry out at
    /// once, before an action it has to wait for.
    pub fn poll_transmit(&mut self) -> Option<Action> {
        match self.actions.front()? {
            Action::Transmit { .. } => self.actions.pop_front(),
            _ => None,
        }
    }

    /// The earliest time [`Engine::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let indexed = self.deadlines.first();
        debug_assert_eq!(
            indexed,
            self.routers
                .iter()
                .filter_map(VirtualRouter::next_timeout)
                .min(),
            "the deadline index follows every router's timers"
        );
        let retiring = self
            .retiring
            .iter()
            .filter_map(VirtualRouter::next_timeout)
            .min();
        indexed.into_iter().chain(retiring).min()
    }

    /// The configuration a router runs (its interface and primary address tell the driver where
    /// to send its [`Action::Transmit`]s from). Routers removed but still handing over are
    /// included.
    pub fn router_config(&self, router: RouterId) -> Option<&RouterConfig> {
        self.routers
            .iter()
            .chain(&self.retiring)
            .find(|r| r.id == router)
            .map(|r| &r.config)
    }

    /// A router's state and the master it knows (itself when master), without building a
    /// status.
    pub fn router_role(&self, router: RouterId) -> Option<(State, Option<MasterInfo>)> {
        self.routers
            .iter()
            .find(|r| r.id == router)
            .map(|r| (r.state, r.master))
    }

    pub fn router_id(&self, name: &str) -> Option<RouterId> {
        self.routers
            .iter()
            .find(|r| r.config.name == name)
            .map(|r| r.id)
    }

    pub fn status(&self) -> Vec<RouterStatus> {
        self.routers.iter().map(VirtualRouter::status).collect()
    }

    /// Every router's [`RouterBrief`], in the order of [`Engine::status`]; allocates nothing.
    pub fn briefs(&self) -> impl ExactSizeIterator<Item = RouterBrief> + '_ {
        self.routers.iter().map(VirtualRouter::brief)
    }

    /// Router-wide counters (checksum, version and VRID errors, and drops that could not be
    /// attributed to a virtual router).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Whether any router (including removed ones still handing over) holds VIPs.
    pub fn holds_any_vips(&self) -> bool {
        self.routers
            .iter()
            .chain(&self.retiring)
            .any(VirtualRouter::holds_vips)
    }

    fn id_for(&mut self, name: &str) -> RouterId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = RouterId(self.next_id);
        self.next_id += 1;
        self.ids.insert(name.to_owned(), id);
        id
    }

    /// Applies the sync-group rules (see `sync_group`) to the transitions of the last event,
    /// then reports group state changes.
    fn settle(&mut self, now: Instant) {
        let mut last_cause: HashMap<usize, Cause> = HashMap::new();
        // Bounded: induced transitions never lead, so the second round only applies rule 1.
        for _ in 0..8 {
            let transitions = std::mem::take(&mut self.transitions);
            let fault_levels = self.fault_levels();
            let mut out = Out {
                actions: &mut self.actions,
                transitions: &mut self.transitions,
            };
            for transition in &transitions {
                let Some((group_index, group)) = self.groups.iter().enumerate().find(|(_, g)| {
                    g.members
                        .iter()
                        .any(|m| self.routers[*m].id == transition.router)
                }) else {
                    continue;
                };
                last_cause.insert(group_index, transition.cause.clone());
                if transition.induced {
                    continue;
                }
                let Some(leader) = self.routers.iter().find(|r| r.id == transition.router) else {
                    continue;
                };
                let cause = Cause::SyncGroup {
                    group: group.name.clone(),
                    member: leader.config.name.clone(),
                    to: transition.to,
                };
                let members = group.members.clone();
                match (transition.from, transition.to) {
                    // Rule 2.
                    (from, State::Master) if from != State::Master => {
                        for member in members {
                            if self.routers[member].id != transition.router {
                                self.routers[member].force_master(now, cause.clone(), &mut out);
                            }
                        }
                    }
                    // Rule 3.
                    (State::Master, State::Backup) if !transition.was_forced_master => {
                        for member in members {
                            if self.routers[member].id != transition.router {
                                self.routers[member].force_resign(now, cause.clone(), &mut out);
                            }
                        }
                    }
                    _ => {}
                }
            }
            // Rule 1.
            for (group_index, faulty) in fault_levels.into_iter().enumerate() {
                let group = &self.groups[group_index];
                for &member in &group.members {
                    // Held in Fault by another faulty member (not by itself).
                    let fault = faulty
                        .iter()
                        .find(|(faulty, _)| *faulty != member)
                        .map(|(_, cause)| cause.clone());
                    let clear_cause = Cause::SyncGroupFaultCleared {
                        group: group.name.clone(),
                    };
                    self.routers[member].set_group_fault(now, fault, clear_cause, &mut out);
                }
            }
            // A router no longer in any group (reconfigured) is not held by one.
            for (index, router) in self.routers.iter_mut().enumerate() {
                if !self
                    .groups
                    .iter()
                    .any(|group| group.members.contains(&index))
                {
                    router.set_group_fault(now, None, Cause::Reconfigured, &mut out);
                }
            }
            if self.transitions.is_empty() {
                break;
            }
        }
        for (group_index, group) in self.groups.iter_mut().enumerate() {
            let state = group_state(group.members.iter().map(|m| self.routers[*m].state));
            if state != group.state {
                let from = group.state;
                group.state = state;
                let cause = last_cause
                    .get(&group_index)
                    .cloned()
                    .unwrap_or(Cause::Reconfigured);
                self.actions.push_back(Action::SyncGroupChanged {
                    group: group.name.clone(),
                    from,
                    to: state,
                    cause,
                });
            }
        }
    }

    /// Per group: the members with a fault of their own, each with the cause the others show.
    fn fault_levels(&self) -> Vec<Vec<(usize, Cause)>> {
        self.groups
            .iter()
            .map(|group| {
                group
                    .members
                    .iter()
                    .copied()
                    .filter(|m| {
                        let router = &self.routers[*m];
                        router.has_own_fault() && router.state == State::Fault
                    })
                    .map(|faulty| {
                        let cause = Cause::SyncGroup {
                            group: group.name.clone(),
                            member: self.routers[faulty].config.name.clone(),
                            to: State::Fault,
                        };
                        (faulty, cause)
                    })
                    .collect()
            })
            .collect()
    }
}

fn build_groups(config: &EngineConfig, routers: &[VirtualRouter]) -> Vec<SyncGroup> {
    config
        .sync_groups
        .iter()
        .map(|group| SyncGroup {
            name: group.name.clone(),
            members: group
                .members
                .iter()
                .filter_map(|name| routers.iter().position(|r| &r.config.name == name))
                .collect(),
            state: State::Initialize,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::sync::OnceLock;
    use std::time::Instant;

    /// A fixed origin for virtual time in unit tests (read once; only durations matter).
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }
}
