//! One virtual router: the RFC 5798 / RFC 3768 section 6 state machine, plus the keepalived
//! behaviours hav keeps (Fault state, preempt delay, answering a lower-priority master at once)
//! and its own (resigning at once, make-before-break release).
//!
//! Guarantees: every state change emits exactly one [`Action::StateChanged`] with its [`Cause`];
//! `AddVips` is only emitted when the router does not hold its VIPs and `RemoveVips` only when
//! it does; no input panics.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::announce::Announcer;
use super::cause::Cause;
use super::config::{Preempt, RouterConfig};
use super::timer::{Timer, TimerTable};
use super::{
    Action, ChangedField, MasterInfo, RouterBrief, RouterId, RouterStatus, State, TrackEffect,
};
use crate::stats::{Counter, Counters};
use crate::types::{AdvertInterval, Auth, Priority, Version};
use crate::wire::Advertisement;

/// A router's adverts as sent, one per destination.
type EncodedAdverts = Vec<(IpAddr, Arc<[u8]>)>;

/// Each tracker's effect on a router, and the sum of their weights kept with them (read on
/// every advert).
#[derive(Debug, Clone, Default)]
struct TrackerEffects {
    effects: BTreeMap<String, TrackEffect>,
    weight: i64,
}

impl TrackerEffects {
    /// Sets `tracker`'s effect; its effect before, if it had one.
    fn set(&mut self, tracker: &str, effect: TrackEffect) -> Option<TrackEffect> {
        let before = self.effects.insert(tracker.to_owned(), effect);
        self.weight = (self.effects.values())
            .map(|effect| match effect {
                TrackEffect::Adjust(weight) => i64::from(*weight),
                TrackEffect::Fault => 0,
            })
            .sum();
        before
    }
}

/// Most sources whose advertised priority a router remembers.
const MAX_HEARD: usize = 64;

/// Where a router's effects go while the engine handles one event.
pub(crate) struct Out<'a> {
    pub(crate) actions: &'a mut VecDeque<Action>,
    pub(crate) transitions: &'a mut Vec<Transition>,
}

/// A state change, kept for the sync-group rules.
#[derive(Debug, Clone)]
pub(crate) struct Transition {
    pub(crate) router: RouterId,
    pub(crate) from: State,
    pub(crate) to: State,
    pub(crate) cause: Cause,
    /// The change was imposed by the router's sync group: it does not propagate further.
    pub(crate) induced: bool,
    /// The router left Master that it had only entered because its group told it to.
    pub(crate) was_forced_master: bool,
}

/// Why a router that stopped being master still holds its VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// It resigned and is Backup.
    Resign,
    /// It is shutting down (or was removed) and will end stopped.
    Stop,
}

/// What a master leaving its duties does with its VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vips {
    /// Keeps them until a successor advertises (make-before-break).
    Keep,
    /// Removes them now; `successor` is the better master it heard, if that is why.
    Remove { successor: Option<IpAddr> },
}

/// What a Backup expects to make it master when the master-down timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MasterDownReason {
    Silence,
    Resigned { master: IpAddr },
    Preempt { master: IpAddr, theirs: Priority },
}

/// What a backup's judgement of an advert from its master comes to when all it did was restart
/// the master-down timer: what an identical advert would count again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Renewal {
    /// The advert's address list differed from the VIPs (counted, not fatal).
    pub address_list_error: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct VirtualRouter {
    pub(crate) id: RouterId,
    pub(crate) config: RouterConfig,
    pub(crate) state: State,
    since: Option<Instant>,
    last_cause: Option<Cause>,
    trackers: TrackerEffects,
    priority_override: Option<Priority>,
    /// Another member of the sync group is faulty.
    group_fault: Option<Cause>,
    /// RFC 5798 `Master_Adver_Interval`: the interval the current master advertises (v3).
    master_adver_interval: AdvertInterval,
    pub(crate) master: Option<MasterInfo>,
    last_master_advert: Option<(IpAddr, Instant)>,
    listening_since: Option<Instant>,
    master_down_reason: MasterDownReason,
    /// Priorities last heard from other routers (for resigning at once), one entry per
    /// source, at most [`MAX_HEARD`]: a short list scanned in place, as a LAN has a few.
    heard: Vec<(IpAddr, Priority)>,
    preempt_not_before: Option<Instant>,
    /// The VIPs we hold (added and not removed), and the accept mode they were added with.
    held_vips: Vec<IpAddr>,
    held_accept: bool,
    release: Option<Release>,
    forced_master: bool,
    /// Starts as master, keeping VIPs another daemon left on the interface.
    pub(crate) adopt: bool,
    shutting_down: bool,
    timers: TimerTable,
    announcer: Option<Announcer>,
    /// After another master was heard: when to announce the VIPs once more, past the hosts'
    /// neighbour lock time ([`NEIGHBOUR_LOCKTIME_PAST`]).
    late_reannounce: Option<Instant>,
    counters: Counters,
    /// The adverts last encoded, one per destination, and the priority they carry: a master
    /// sends the same bytes every interval until its priority or configuration changes.
    encoded: Option<(Priority, EncodedAdverts)>,
}

/// How long after hearing another master its last announcement is sure to be outside a Linux
/// host's neighbour lock time (`locktime`, 1 s by default): an ARP update within that time of
/// the previous one is ignored, so the bursts sent as the other master announced may all be
/// lost on hosts that heard it first, and this one is not.
pub const NEIGHBOUR_LOCKTIME_PAST: std::time::Duration = std::time::Duration::from_millis(1500);

impl VirtualRouter {
    pub(crate) fn new(id: RouterId, config: RouterConfig) -> Self {
        Self {
            id,
            master_adver_interval: config.advert_interval,
            config,
            state: State::Initialize,
            since: None,
            last_cause: None,
            trackers: TrackerEffects::default(),
            priority_override: None,
            group_fault: None,
            master: None,
            last_master_advert: None,
            listening_since: None,
            master_down_reason: MasterDownReason::Silence,
            heard: Vec::new(),
            preempt_not_before: None,
            held_vips: Vec::new(),
            held_accept: false,
            release: None,
            forced_master: false,
            adopt: false,
            shutting_down: false,
            timers: TimerTable::default(),
            announcer: None,
            late_reannounce: None,
            counters: Counters::new(),
            encoded: None,
        }
    }

    /// Carries trackers and the override over to a router that replaces this one.
    pub(crate) fn inherit_inputs(&mut self, from: &VirtualRouter) {
        self.trackers = from.trackers.clone();
        self.priority_override = from.priority_override;
    }

    /// Base priority plus tracker weights, clamped to 1..=254; the owner's 255 is not weighted;
    /// an override replaces it (clamped to 1..=255).
    pub(crate) fn effective_priority(&self) -> Priority {
        if let Some(priority) = self.priority_override {
            return Priority(priority.get().max(1));
        }
        let base = self.config.priority;
        if base == Priority::OWNER {
            return base;
        }
        let value = (i64::from(base.get()) + self.trackers.weight).clamp(1, 254);
        // In range by the clamp.
        Priority(u8::try_from(value).unwrap_or(254))
    }

    fn own_fault(&self) -> Option<&str> {
        (self.trackers.effects.iter())
            .find(|(_, effect)| **effect == TrackEffect::Fault)
            .map(|(name, _)| name.as_str())
    }

    pub(crate) fn has_own_fault(&self) -> bool {
        self.own_fault().is_some()
    }

    /// Skew_Time (RFC 5798 section 6.1; RFC 3768 section 6.1 for v2, in seconds).
    fn skew_time(&self) -> Duration {
        let weight = 256 - u64::from(self.effective_priority().get());
        match self.config.version {
            Version::V2 => Duration::from_micros(weight * 1_000_000 / 256),
            _ => Duration::from_micros(
                weight * self.master_adver_interval.as_duration().as_micros() as u64 / 256,
            ),
        }
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time.
    pub(crate) fn master_down_interval(&self) -> Duration {
        3 * self.master_adver_interval.as_duration() + self.skew_time()
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Shut down and nothing left to release.
    pub(crate) fn is_done(&self) -> bool {
        self.shutting_down && self.release.is_none()
    }

    pub(crate) fn holds_vips(&self) -> bool {
        !self.held_vips.is_empty()
    }

    pub(crate) fn status(&self) -> RouterStatus {
        RouterStatus {
            name: self.config.name.clone(),
            id: self.id,
            state: self.state,
            base_priority: self.config.priority,
            effective_priority: self.effective_priority(),
            master: self.master,
            since: self.since,
            last_cause: self.last_cause.clone(),
            holds_vips: self.holds_vips(),
            counters: self.counters.clone(),
        }
    }

    pub(crate) fn brief(&self) -> RouterBrief {
        RouterBrief {
            id: self.id,
            state: self.state,
            effective_priority: self.effective_priority(),
            master: self.master,
            holds_vips: self.holds_vips(),
        }
    }

    pub(crate) fn bump(&mut self, counter: Counter) {
        self.counters.bump(counter);
    }

    // --- Events ------------------------------------------------------------------------------

    /// RFC 5798 section 6.4.1 (Initialize): the startup event.
    pub(crate) fn start(&mut self, now: Instant, cause: Cause, out: &mut Out<'_>) {
        if self.state != State::Initialize || self.shutting_down {
            return;
        }
        self.listening_since = Some(now);
        let adopt = std::mem::take(&mut self.adopt);
        if let Some(tracker) = self.own_fault().map(str::to_owned) {
            // keepalived: a router whose tracker already fails starts in Fault.
            self.enter_fault(now, Cause::TrackerFault { tracker }, false, out);
        } else if let Some(cause) = self.group_fault.clone() {
            self.enter_fault(now, cause, true, out);
        } else if self.effective_priority() == Priority::OWNER || adopt {
            // 6.4.1: "If the Priority = 255 ... transition to the Master state". A router that
            // adopts VIPs already serving clients here takes the same path: waiting as backup
            // would leave them unowned, and a peer would add them a second time.
            let cause = match cause {
                Cause::Startup if self.effective_priority() == Priority::OWNER => {
                    Cause::StartupOwner
                }
                Cause::Startup => Cause::StartupAdopted,
                cause => cause,
            };
            self.become_master(now, cause, false, out);
        } else {
            // 6.4.1: else set the Master_Down_Timer and transition to Backup.
            if let Preempt::On { delay } = self.config.preempt
                && !delay.is_zero()
            {
                self.preempt_not_before = Some(now + delay);
            }
            self.enter_backup(now, State::Initialize, cause, false, out);
        }
    }

    /// A valid advert for this router (VRID, family, version and interface already matched; not
    /// our own). Runs the rest of RFC 5798 / RFC 3768 section 7.1, then section 6.4. `Some`: as
    /// a backup it took `src` as its master and restarted the master-down timer, and (if no
    /// action came of it) that is all it did.
    pub(crate) fn handle_advert(
        &mut self,
        now: Instant,
        src: IpAddr,
        advert: &Advertisement,
        out: &mut Out<'_>,
    ) -> Option<Renewal> {
        if let super::config::Peers::Unicast(peers) = &self.config.peers
            && !peers.iter().any(|peer| peer.address == src)
        {
            self.counters.bump(Counter::UnicastSourceNotPeer);
            return None;
        }
        if self.config.version == Version::V2 {
            // RFC 3768 section 7.1 / RFC 2787 counters: authentication must match.
            match (self.config.auth, advert.auth) {
                (Auth::None, Auth::None) => {}
                (Auth::SimpleText(ours), Auth::SimpleText(theirs)) => {
                    if ours != theirs {
                        self.counters.bump(Counter::AuthFailures);
                        return None;
                    }
                }
                _ => {
                    self.counters.bump(Counter::AuthTypeMismatch);
                    return None;
                }
            }
            // RFC 3768 section 7.1: an interval other than ours is dropped.
            if advert.interval != self.config.advert_interval {
                self.counters.bump(Counter::AdvIntervalErrors);
                return None;
            }
        }
        // RFC 5798 section 7.1: a differing address list is logged, not fatal (as keepalived),
        // unless in strict mode, where the advert is dropped (as keepalived's `vrrp_strict`).
        let address_list_error = !same_addresses(&advert.addresses, &self.config.vips);
        if address_list_error {
            self.counters.bump(Counter::AddressListErrors);
            if self.config.strict {
                return None;
            }
        }
        self.counters.bump(Counter::RcvdAdvertisements);
        if advert.priority == Priority::RESIGN {
            self.counters.bump(Counter::RcvdPriorityZero);
        } else {
            self.remember(src, advert.priority);
            // Make-before-break: a successor is advertising, so our VIPs can go.
            if self.release.is_some() {
                self.finish_release(Some(src), out);
            }
        }
        match self.state {
            State::Backup => {
                (self.backup_advert(now, src, advert)).then_some(Renewal { address_list_error })
            }
            State::Master => {
                self.master_advert(now, src, advert, out);
                None
            }
            // Fault and Initialize ignore adverts (RFC 5798 section 6.4.1 for Initialize).
            State::Initialize | State::Fault => None,
        }
    }

    /// RFC 5798 section 6.4.2 (Backup), "If an ADVERTISEMENT is received". `true`: the master
    /// was taken as such and the master-down timer restarted, whatever the time (not so for a
    /// lower master obeyed only until the preempt delay ends).
    fn backup_advert(&mut self, now: Instant, src: IpAddr, advert: &Advertisement) -> bool {
        let ours = self.effective_priority();
        if advert.priority == Priority::RESIGN {
            // "If the Priority in the ADVERTISEMENT is zero, then: Set the Master_Down_Timer to
            // Skew_Time".
            self.master = None;
            self.master_down_reason = MasterDownReason::Resigned { master: src };
            self.timers.set(Timer::MasterDown, now + self.skew_time());
            return false;
        }
        self.master = Some(MasterInfo {
            address: src,
            priority: advert.priority,
        });
        let lower = advert.priority < ours;
        // Obeyed for now, but the verdict changes with the time.
        let until_preempted = lower && self.preempts();
        if until_preempted {
            // "else (preempt and lower priority): Discard the ADVERTISEMENT" — the master-down
            // timer runs out and we take over. keepalived's preempt_delay holds that back: until
            // the delay (from start-up or first sight of this lower master) passes, act as if
            // preemption were off.
            let delay = match self.config.preempt {
                Preempt::On { delay } if self.config.priority != Priority::OWNER => delay,
                _ => Duration::ZERO,
            };
            let not_before = *self.preempt_not_before.get_or_insert(now + delay);
            if now >= not_before {
                self.master_down_reason = MasterDownReason::Preempt {
                    master: src,
                    theirs: advert.priority,
                };
                return false;
            }
        } else if !lower {
            // A master at least as good as us: a later preempt delay counts from its fall.
            self.preempt_not_before = None;
        }
        // "If Preempt_Mode is False, or if the Priority in the ADVERTISEMENT is greater than or
        // equal to the local Priority, then: Set Master_Adver_Interval to Adver Interval
        // contained in the ADVERTISEMENT, Recompute the Skew_Time, Recompute the
        // Master_Down_Interval, Reset the Master_Down_Timer to Master_Down_Interval".
        if self.config.version != Version::V2 {
            self.master_adver_interval = advert.interval;
        }
        self.master_down_reason = MasterDownReason::Silence;
        self.master_heard(now, src);
        !until_preempted
    }

    /// A backup heard its master at `now`: the master-down timer starts again.
    #[cfg_attr(target_os = "linux", unsafe(link_section = ".text.hot"))]
    fn master_heard(&mut self, now: Instant, src: IpAddr) {
        self.last_master_advert = Some((src, now));
        self.timers
            .set(Timer::MasterDown, now + self.master_down_interval());
    }

    /// Handles an advert byte for byte the same as one that [`VirtualRouter::handle_advert`]
    /// said only restarted the timer, from the same source, with nothing the judgement depends
    /// on changed since: the counters that advert bumped, and the timer. `false` (nothing
    /// done) if the router is no longer a backup following that master.
    pub(crate) fn repeat_from_master(
        &mut self,
        now: Instant,
        src: IpAddr,
        renewal: Renewal,
    ) -> bool {
        if self.state != State::Backup
            || self.release.is_some()
            || self.master.is_none_or(|master| master.address != src)
        {
            return false;
        }
        if renewal.address_list_error {
            self.counters.bump(Counter::AddressListErrors);
        }
        self.counters.bump(Counter::RcvdAdvertisements);
        self.master_down_reason = MasterDownReason::Silence;
        self.master_heard(now, src);
        true
    }

    /// RFC 5798 section 6.4.3 (Master), "If an ADVERTISEMENT is received".
    fn master_advert(
        &mut self,
        now: Instant,
        src: IpAddr,
        advert: &Advertisement,
        out: &mut Out<'_>,
    ) {
        let ours = self.effective_priority();
        if advert.priority == Priority::RESIGN {
            // "If the Priority in the ADVERTISEMENT is zero, then: Send an ADVERTISEMENT; Reset
            // the Adver_Timer to Advertisement_Interval".
            self.send_advert(now, ours, out);
            self.timers.set(
                Timer::Advert,
                now + self.config.advert_interval.as_duration(),
            );
            return;
        }
        let higher = advert.priority > ours;
        let tie_lost = advert.priority == ours
            && address_value(src) > address_value(self.config.primary_address);
        if higher || tie_lost {
            // "Else, if the Priority in the ADVERTISEMENT is greater than the local Priority, or
            // the Priority in the ADVERTISEMENT is equal to the local Priority and the primary
            // IPvX address of the sender is greater than the local primary IPvX address, then:
            // Cancel Adver_Timer, Set Master_Adver_Interval, Recompute Skew_Time and
            // Master_Down_Interval, Set Master_Down_Timer, Transition to the Backup state".
            let cause = if higher {
                Cause::HigherPriority {
                    from: src,
                    priority: advert.priority,
                }
            } else {
                Cause::EqualPriorityHigherAddress {
                    from: src,
                    priority: advert.priority,
                }
            };
            let was_forced = self.forced_master;
            // Not in the RFC: our advert once more, as we step down. While we were master, hosts
            // learnt the VIPs at our MAC; the winner re-announces them when it hears a lower
            // master (below), and this second copy makes it hear us even if it lost the first
            // (adverts lost on the LAN are what made us master).
            self.send_advert(now, ours, out);
            self.leave_master(
                Vips::Remove {
                    successor: Some(src),
                },
                out,
            );
            if self.config.version != Version::V2 {
                self.master_adver_interval = advert.interval;
            }
            self.master = Some(MasterInfo {
                address: src,
                priority: advert.priority,
            });
            self.enter_backup(now, State::Master, cause, false, out);
            self.last_master_advert = Some((src, now));
            if let Some(last) = out.transitions.last_mut() {
                last.was_forced_master = was_forced;
            }
        } else {
            // "Else: Discard the ADVERTISEMENT". keepalived answers at once so that the other
            // master steps down without waiting for our next advert; so do we. Another master
            // means a split brain is healing: hosts and switches may have learnt the VIPs at
            // the other master's MAC, so announce them again (one burst per such advert), once
            // more an interval later (the other master sends its advert before its own
            // announcement, so that announcement can reach hosts after ours; by then it has heard
            // us and stepped down), and a last time past the hosts' neighbour lock time, which
            // made them ignore both bursts if they came within it of the other's.
            self.send_advert(now, ours, out);
            self.timers.set(
                Timer::Advert,
                now + self.config.advert_interval.as_duration(),
            );
            self.announce_burst(out);
            self.timers.set(
                Timer::Reannounce,
                now + self.config.advert_interval.as_duration(),
            );
            self.late_reannounce = Some(now + NEIGHBOUR_LOCKTIME_PAST);
        }
    }

    #[cfg_attr(target_os = "linux", unsafe(link_section = ".text.hot"))]
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Out<'_>) {
        // Bounded: a handler re-arms its timer in the future or not at all.
        for _ in 0..4 * Timer::ALL.len() {
            let Some(timer) = self.timers.take_expired(now) else {
                return;
            };
            match timer {
                Timer::MasterDown if self.state == State::Backup => {
                    // RFC 5798 section 6.4.2: "If the Master_Down_Timer fires, then: Send an
                    // ADVERTISEMENT ... Transition to the Master state".
                    let cause = self.master_down_cause(now);
                    self.become_master(now, cause, false, out);
                }
                Timer::Advert if self.state == State::Master => {
                    // RFC 5798 section 6.4.3: "If the Adver_Timer fires, then: Send an
                    // ADVERTISEMENT; Reset the Adver_Timer".
                    self.send_advert(now, self.effective_priority(), out);
                    self.timers.set(
                        Timer::Advert,
                        now + self.config.advert_interval.as_duration(),
                    );
                }
                Timer::Advert if self.release.is_some() => {
                    // Still handing over: repeat the resignation in case it was lost.
                    self.send_advert(now, Priority::RESIGN, out);
                    self.timers.set(
                        Timer::Advert,
                        now + self.config.advert_interval.as_duration(),
                    );
                }
                Timer::Release if self.release.is_some() => self.finish_release(None, out),
                Timer::Announce if self.state == State::Master => self.run_announcer(now, out),
                Timer::Reannounce if self.state == State::Master => {
                    self.announce_burst(out);
                    // The last burst goes past the hosts' neighbour lock time.
                    if let Some(at) = self.late_reannounce.take()
                        && at > now
                    {
                        self.timers.set(Timer::Reannounce, at);
                    }
                }
                _ => {}
            }
        }
    }

    /// Replaces a tracker's effect; may move to or from Fault, or resign.
    pub(crate) fn set_tracker(
        &mut self,
        now: Instant,
        tracker: &str,
        effect: TrackEffect,
        out: &mut Out<'_>,
    ) {
        let before = self.effective_priority();
        let was_own_fault = self.trackers.set(tracker, effect) == Some(TrackEffect::Fault);
        let cause = if effect == TrackEffect::Fault {
            Cause::TrackerFault {
                tracker: tracker.to_owned(),
            }
        } else if was_own_fault {
            Cause::FaultCleared {
                tracker: tracker.to_owned(),
            }
        } else {
            Cause::TrackerWeight {
                tracker: tracker.to_owned(),
                priority: self.effective_priority(),
            }
        };
        self.reevaluate(now, before, cause, out);
    }

    pub(crate) fn set_priority_override(
        &mut self,
        now: Instant,
        priority: Option<Priority>,
        out: &mut Out<'_>,
    ) {
        let before = self.effective_priority();
        self.priority_override = priority;
        self.reevaluate(now, before, Cause::PriorityOverride { priority }, out);
    }

    /// Sets or clears the Fault imposed by another faulty member of the sync group.
    pub(crate) fn set_group_fault(
        &mut self,
        now: Instant,
        fault: Option<Cause>,
        clear_cause: Cause,
        out: &mut Out<'_>,
    ) {
        if self.group_fault.is_some() == fault.is_some() {
            return;
        }
        let before = self.effective_priority();
        let cause = fault.clone().unwrap_or(clear_cause);
        self.group_fault = fault;
        self.reevaluate_with(now, before, cause, true, out);
    }

    /// Sync group: another member became master by its own right.
    pub(crate) fn force_master(&mut self, now: Instant, cause: Cause, out: &mut Out<'_>) {
        if self.state == State::Backup && !self.shutting_down {
            self.become_master(now, cause, true, out);
        }
    }

    /// Sync group: another member left Master for Backup.
    pub(crate) fn force_resign(&mut self, now: Instant, cause: Cause, out: &mut Out<'_>) {
        if self.state == State::Master {
            self.resign(now, Release::Resign, cause, true, out);
        }
    }

    /// Graceful stop: RFC 5798 sections 6.4.2 and 6.4.3, "If a Shutdown event is received",
    /// with make-before-break for a master.
    pub(crate) fn shutdown(&mut self, now: Instant, cause: Cause, out: &mut Out<'_>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        match self.state {
            State::Master => self.resign(now, Release::Stop, cause, false, out),
            State::Backup | State::Fault => {
                // Backup: "Cancel the Master_Down_Timer; Transition to the Initialize state".
                let from = self.state;
                self.timers.stop(Timer::MasterDown);
                if self.release.is_some() {
                    self.release = Some(Release::Stop);
                }
                self.state = State::Initialize;
                self.transition(now, from, State::Initialize, cause, false, out);
            }
            State::Initialize => {}
        }
    }

    /// Break-before-make stop, for a router replaced by one with another identity: priority 0
    /// and the VIPs removed at once (the replacement may claim the same VIPs under the same id).
    pub(crate) fn stop_now(&mut self, now: Instant, cause: Cause, out: &mut Out<'_>) {
        self.shutdown(now, cause, out);
        if self.release.is_some() {
            self.finish_release(None, out);
        }
        self.timers.stop_all();
    }

    /// Applies a new configuration of the same identity in place; returns what changed.
    pub(crate) fn reconfigure(
        &mut self,
        now: Instant,
        config: RouterConfig,
        out: &mut Out<'_>,
    ) -> Vec<ChangedField> {
        let old = std::mem::replace(&mut self.config, config);
        self.encoded = None;
        let new = &self.config;
        let mut changed = Vec::new();
        let mut note = |differs: bool, field: ChangedField| {
            if differs {
                changed.push(field);
            }
        };
        note(old.priority != new.priority, ChangedField::Priority);
        note(
            old.advert_interval != new.advert_interval,
            ChangedField::AdvertInterval,
        );
        note(old.preempt != new.preempt, ChangedField::Preempt);
        note(old.accept != new.accept, ChangedField::Accept);
        note(
            old.primary_address != new.primary_address,
            ChangedField::PrimaryAddress,
        );
        note(old.peers != new.peers, ChangedField::Peers);
        note(old.vips != new.vips, ChangedField::Vips);
        note(old.auth != new.auth, ChangedField::Auth);
        note(old.checksum != new.checksum, ChangedField::Checksum);
        note(old.announce != new.announce, ChangedField::Announce);
        if changed.is_empty() {
            return changed;
        }
        if changed.contains(&ChangedField::AdvertInterval) {
            if self.config.version == Version::V2 || self.state != State::Backup {
                self.master_adver_interval = self.config.advert_interval;
            }
            if self.state == State::Master {
                let next = now + self.config.advert_interval.as_duration();
                if self.timers.get(Timer::Advert).is_none_or(|at| at > next) {
                    self.timers.set(Timer::Advert, next);
                }
            }
        }
        if self.state == State::Master {
            let added = self.claim_vips(out);
            if !added.is_empty() {
                for _ in 0..self.config.announce.repeat.max(1) {
                    out.actions.push_back(Action::Announce {
                        router: self.id,
                        vips: added.clone(),
                    });
                }
            }
        } else {
            // Still handing over: let go of what is no longer configured, claim nothing new.
            self.drop_unconfigured_vips(out);
        }
        let before = old_effective(&old, self);
        self.reevaluate(now, before, Cause::Reconfigured, out);
        changed
    }

    // --- Transitions -------------------------------------------------------------------------

    fn reevaluate(&mut self, now: Instant, before: Priority, cause: Cause, out: &mut Out<'_>) {
        self.reevaluate_with(now, before, cause, false, out);
    }

    /// After an input changed: Fault in or out, or resign if a known peer now beats us.
    fn reevaluate_with(
        &mut self,
        now: Instant,
        before: Priority,
        cause: Cause,
        induced: bool,
        out: &mut Out<'_>,
    ) {
        if self.state == State::Initialize {
            return;
        }
        let faulted = self.has_own_fault() || self.group_fault.is_some();
        if faulted {
            if self.state != State::Fault {
                let cause = match (self.own_fault(), &self.group_fault) {
                    (Some(tracker), _) if !induced => Cause::TrackerFault {
                        tracker: tracker.to_owned(),
                    },
                    (_, Some(group_cause)) => group_cause.clone(),
                    _ => cause,
                };
                let induced = induced || !self.has_own_fault();
                self.enter_fault(now, cause, induced, out);
            }
            return;
        }
        if self.state == State::Fault {
            // keepalived: leaving Fault goes to Backup (a new master election).
            self.listening_since = Some(now);
            self.master = None;
            self.enter_backup(now, State::Fault, cause, induced, out);
            return;
        }
        let ours = self.effective_priority();
        if self.state == State::Master && ours < before {
            // hav: resign at once when a known peer's priority is now above ours.
            if let Some((peer, peer_priority)) = self.best_known_peer().filter(|(_, p)| *p > ours) {
                let cause = Cause::Resign {
                    ours,
                    peer,
                    peer_priority,
                };
                self.resign(now, Release::Resign, cause, false, out);
            }
        }
    }

    /// Records a priority heard from `src`, keeping at most [`MAX_HEARD`] sources (spoofed
    /// sources must not grow memory): the lowest-priority one makes room.
    fn remember(&mut self, src: IpAddr, priority: Priority) {
        if let Some(entry) = self.heard.iter_mut().find(|(address, _)| *address == src) {
            entry.1 = priority;
            return;
        }
        if self.heard.len() >= MAX_HEARD {
            let lowest = (self.heard.iter().enumerate())
                .min_by_key(|(_, (_, priority))| *priority)
                .map(|(index, _)| index);
            if let Some(lowest) = lowest {
                self.heard.swap_remove(lowest);
            }
        }
        self.heard.push((src, priority));
    }

    fn best_known_peer(&self) -> Option<(IpAddr, Priority)> {
        let configured = match &self.config.peers {
            super::config::Peers::Unicast(peers) => peers
                .iter()
                .filter_map(|peer| Some((peer.address, peer.priority?)))
                .collect(),
            super::config::Peers::Multicast => Vec::new(),
        };
        let heard = self.heard.iter().copied();
        let mut known: HashMap<IpAddr, Priority> = configured.into_iter().collect();
        // What we heard is newer than what was configured.
        known.extend(heard);
        known
            .into_iter()
            .max_by_key(|(address, priority)| (*priority, address_value(*address)))
    }

    fn preempts(&self) -> bool {
        // RFC 5798 section 6.1: the owner always preempts, whatever Preempt_Mode says.
        self.config.priority == Priority::OWNER || matches!(self.config.preempt, Preempt::On { .. })
    }

    fn master_down_cause(&self, now: Instant) -> Cause {
        match self.master_down_reason {
            MasterDownReason::Resigned { master } => Cause::MasterResigned { master },
            MasterDownReason::Preempt { master, theirs } => Cause::Preempt {
                ours: self.effective_priority(),
                master,
                theirs,
            },
            MasterDownReason::Silence => match self.last_master_advert {
                Some((master, at)) => Cause::MasterDown {
                    master: Some(master),
                    silent_for: now - at,
                },
                None => Cause::MasterDown {
                    master: None,
                    silent_for: now - self.listening_since.unwrap_or(now),
                },
            },
        }
    }

    fn enter_backup(
        &mut self,
        now: Instant,
        from: State,
        cause: Cause,
        induced: bool,
        out: &mut Out<'_>,
    ) {
        self.state = State::Backup;
        self.master_down_reason = MasterDownReason::Silence;
        self.timers
            .set(Timer::MasterDown, now + self.master_down_interval());
        self.transition(now, from, State::Backup, cause, induced, out);
    }

    fn become_master(&mut self, now: Instant, cause: Cause, induced: bool, out: &mut Out<'_>) {
        let from = self.state;
        let priority = self.effective_priority();
        self.state = State::Master;
        self.forced_master = induced;
        self.master = Some(MasterInfo {
            address: self.config.primary_address,
            priority,
        });
        self.timers.stop(Timer::MasterDown);
        self.timers.stop(Timer::Release);
        self.release = None;
        self.counters.bump(Counter::MasterTransitions);
        self.transition(now, from, State::Master, cause, induced, out);
        self.claim_vips(out);
        // RFC 5798 section 6.4.1/6.4.2: announce, send an ADVERTISEMENT, start the Adver_Timer.
        // The announcement goes first: a master that resigned lets go of the VIPs when it hears
        // this advert, and hosts must already be sending to us by then, or a connection opened
        // in between reaches neither node.
        self.announcer = Some(Announcer::start(self.config.announce, now));
        self.run_announcer(now, out);
        self.send_advert(now, priority, out);
        self.timers.set(
            Timer::Advert,
            now + self.config.advert_interval.as_duration(),
        );
    }

    /// One round of announcements of every VIP, as many as the schedule's burst.
    fn announce_burst(&mut self, out: &mut Out<'_>) {
        for _ in 0..self.config.announce.repeat.max(1) {
            out.actions.push_back(Action::Announce {
                router: self.id,
                vips: self.config.vips.clone(),
            });
        }
    }

    /// Stops master duties; removes the VIPs if asked.
    fn leave_master(&mut self, vips: Vips, out: &mut Out<'_>) {
        self.timers.stop(Timer::Advert);
        self.timers.stop(Timer::Announce);
        self.timers.stop(Timer::Reannounce);
        self.late_reannounce = None;
        self.announcer = None;
        self.forced_master = false;
        if let Vips::Remove { successor } = vips {
            self.remove_vips(successor, out);
        }
    }

    /// A master hands over: priority 0 now (RFC 5798 section 6.4.3 shutdown), keep the VIPs
    /// until a successor advertises or a master-down interval passes.
    fn resign(
        &mut self,
        now: Instant,
        release: Release,
        cause: Cause,
        induced: bool,
        out: &mut Out<'_>,
    ) {
        let was_forced = self.forced_master;
        self.send_advert(now, Priority::RESIGN, out);
        self.leave_master(Vips::Keep, out);
        self.release = Some(release);
        self.master = None;
        let deadline = now + self.master_down_interval();
        self.timers.set(Timer::Release, deadline);
        self.timers.set(
            Timer::Advert,
            now + self.config.advert_interval.as_duration(),
        );
        match release {
            Release::Resign => {
                self.listening_since = Some(now);
                self.last_master_advert = None;
                self.enter_backup(now, State::Master, cause, induced, out);
            }
            Release::Stop => {
                self.state = State::Initialize;
                self.transition(now, State::Master, State::Initialize, cause, induced, out);
            }
        }
        if let Some(last) = out.transitions.last_mut() {
            last.was_forced_master = was_forced;
        }
    }

    /// Lets go of the VIPs kept through a hand-over; `successor` is the router whose advert
    /// ended it, if one did.
    fn finish_release(&mut self, successor: Option<IpAddr>, out: &mut Out<'_>) {
        self.release = None;
        self.timers.stop(Timer::Release);
        if self.state != State::Master {
            self.timers.stop(Timer::Advert);
        }
        self.remove_vips(successor, out);
    }

    fn enter_fault(&mut self, now: Instant, cause: Cause, induced: bool, out: &mut Out<'_>) {
        let from = self.state;
        if from == State::Master {
            // keepalived: a faulty master resigns with priority 0 and drops its VIPs at once.
            self.send_advert(now, Priority::RESIGN, out);
            self.leave_master(Vips::Remove { successor: None }, out);
        }
        if self.release.is_some() {
            self.finish_release(None, out);
        }
        self.timers.stop_all();
        self.master = None;
        self.state = State::Fault;
        self.transition(now, from, State::Fault, cause, induced, out);
    }

    fn remove_vips(&mut self, successor: Option<IpAddr>, out: &mut Out<'_>) {
        if !self.held_vips.is_empty() {
            let vips = std::mem::take(&mut self.held_vips);
            out.actions.push_back(Action::RemoveVips {
                router: self.id,
                vips,
                successor,
            });
        }
    }

    /// Makes the held VIPs exactly the configured ones, in the configured accept mode; returns
    /// the VIPs newly added. A router still holding its VIPs from a hand-over adds nothing.
    fn claim_vips(&mut self, out: &mut Out<'_>) -> Vec<IpAddr> {
        self.drop_unconfigured_vips(out);
        if !self.held_vips.is_empty() && self.held_accept != self.config.accept {
            // Re-adding in the new mode (the executor's add is idempotent).
            let vips = self.held_vips.clone();
            out.actions.push_back(Action::AddVips {
                router: self.id,
                vips,
                accept: self.config.accept,
            });
        }
        self.held_accept = self.config.accept;
        let missing: Vec<IpAddr> = self
            .config
            .vips
            .iter()
            .filter(|vip| !self.held_vips.contains(vip))
            .copied()
            .collect();
        if !missing.is_empty() {
            self.held_vips.extend(missing.iter().copied());
            let vips = missing.clone();
            out.actions.push_back(Action::AddVips {
                router: self.id,
                vips,
                accept: self.config.accept,
            });
        }
        missing
    }

    fn drop_unconfigured_vips(&mut self, out: &mut Out<'_>) {
        let extra: Vec<IpAddr> = self
            .held_vips
            .iter()
            .filter(|vip| !self.config.vips.contains(vip))
            .copied()
            .collect();
        if !extra.is_empty() {
            self.held_vips.retain(|vip| !extra.contains(vip));
            out.actions.push_back(Action::RemoveVips {
                router: self.id,
                vips: extra,
                successor: None,
            });
        }
    }

    fn transition(
        &mut self,
        now: Instant,
        from: State,
        to: State,
        cause: Cause,
        induced: bool,
        out: &mut Out<'_>,
    ) {
        self.since = Some(now);
        self.last_cause = Some(cause.clone());
        out.actions.push_back(Action::StateChanged {
            router: self.id,
            from,
            to,
            priority: self.effective_priority(),
            cause: cause.clone(),
        });
        out.transitions.push(Transition {
            router: self.id,
            from,
            to,
            cause,
            induced,
            was_forced_master: false,
        });
    }

    #[cfg_attr(target_os = "linux", unsafe(link_section = ".text.hot"))]
    fn send_advert(&mut self, _now: Instant, priority: Priority, out: &mut Out<'_>) {
        let encoded = match &mut self.encoded {
            Some((encoded_for, payloads)) if *encoded_for == priority => payloads,
            slot => {
                let config = &self.config;
                let advert = Advertisement {
                    version: config.version,
                    vrid: config.vrid,
                    priority,
                    interval: config.advert_interval,
                    addresses: config.vips.clone(),
                    auth: config.auth,
                };
                let payloads = (config.destinations().into_iter())
                    .map(|dst| {
                        let payload = advert.to_bytes(config.primary_address, dst, config.checksum);
                        (dst, Arc::from(payload))
                    })
                    .collect();
                &mut slot.insert((priority, payloads)).1
            }
        };
        for (dst, payload) in encoded.iter() {
            out.actions.push_back(Action::Transmit {
                router: self.id,
                dst: *dst,
                payload: Arc::clone(payload),
            });
        }
        self.counters.bump(Counter::SentAdvertisements);
        if priority == Priority::RESIGN {
            self.counters.bump(Counter::SentPriorityZero);
        }
    }

    fn run_announcer(&mut self, now: Instant, out: &mut Out<'_>) {
        let Some(announcer) = self.announcer.as_mut() else {
            return;
        };
        for _ in 0..announcer.due(now) {
            out.actions.push_back(Action::Announce {
                router: self.id,
                vips: self.config.vips.clone(),
            });
        }
        match announcer.next() {
            Some(at) => self.timers.set(Timer::Announce, at),
            None => self.timers.stop(Timer::Announce),
        }
    }
}

/// The effective priority the router had under its old configuration.
fn old_effective(old: &RouterConfig, router: &VirtualRouter) -> Priority {
    let mut probe = router.clone();
    probe.config.priority = old.priority;
    probe.effective_priority()
}

/// Addresses compared as unsigned integers (RFC 5798 section 6.4.3 tie-break).
pub(crate) fn address_value(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn same_addresses(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|address| b.contains(address))
}
