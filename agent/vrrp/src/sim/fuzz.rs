//! The body of the `engine` fuzz target, shared with a proptest so that CI runs it without
//! cargo-fuzz.
//!
//! Bytes become a sequence of events on one engine of three routers (v2, v3 over IPv4 and over
//! IPv6, two in a sync group): adverts built from a small set of valid ones and then mutated,
//! raw bytes, time jumps, tracker and override changes, reconfigurations and shutdown. After
//! every event it checks what must always hold; a broken invariant panics (that is the finding).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use super::{INTERFACE, node_address, router, sim_epoch, vip};
use crate::engine::{
    Action, Engine, EngineConfig, Peer, Peers, Preempt, RouterId, State, SyncGroupConfig,
    TrackEffect,
};
use crate::types::{AdvertInterval, Auth, Family, Priority, Version, VrId};
use crate::wire::{Advertisement, RecvMeta};

/// Reads the fuzz input a byte at a time; zeros once exhausted.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((first, rest)) => {
                self.data = rest;
                *first
            }
            None => 0,
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let len = len.min(self.data.len());
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        head.to_vec()
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// One of the configurations the fuzzer switches between.
pub fn config(variant: u8) -> EngineConfig {
    let mut v2 = router("v2", 1, Version::V2, Family::V4, 0, 100, 100);
    let mut v3 = router("v3", 2, Version::V3, Family::V4, 0, 150, 20);
    let mut v6 = router("v6", 3, Version::V3, Family::V6, 0, 200, 50);
    v2.auth = Auth::SimpleText(*b"secret\0\0");
    // A lower master is obeyed for a while: a verdict that changes with the time alone.
    v2.preempt = Preempt::On {
        delay: Duration::from_millis(1500),
    };
    v3.peers = Peers::Unicast(vec![
        Peer {
            address: node_address(Family::V4, 1),
            priority: Some(Priority(120)),
        },
        Peer {
            address: node_address(Family::V4, 2),
            priority: None,
        },
    ]);
    match variant % 4 {
        1 => v3.priority = Priority(90),
        2 => {
            v6.vips.push(vip(Family::V6, 99));
            v2.preempt = Preempt::Off;
        }
        3 => {
            v2.vrid = VrId::new(9).unwrap_or(v2.vrid);
            v6.priority = Priority::OWNER;
            v3.preempt = Preempt::On {
                delay: Duration::from_secs(2),
            };
        }
        _ => {}
    }
    let mut routers = vec![v2, v3, v6];
    if variant % 5 == 4 {
        routers.pop();
    }
    let sync_groups = if routers.len() == 3 {
        vec![SyncGroupConfig {
            name: "g".into(),
            members: vec!["v3".into(), "v6".into()],
        }]
    } else {
        Vec::new()
    };
    EngineConfig {
        routers,
        sync_groups,
    }
}

/// Runs the events encoded in `data`; panics on a broken invariant.
pub fn run(data: &[u8]) {
    run_traced(data, false);
}

/// [`run`], printing every event and action to stderr if `trace`.
pub fn run_traced(data: &[u8], trace: bool) {
    let Ok(engine) = Engine::new(config(0)) else {
        panic!("the fuzz configuration is valid")
    };
    drive(data, &mut [engine], trace);
}

/// [`run`] on two engines, the second judging every advert in full
/// ([`Engine::judge_every_advert`]): after each event both must have asked for the same actions
/// and agree on every router's status (counters included) and on their next deadline, so the
/// shortcut for an advert repeated by a backup's master changes nothing.
pub fn run_against_full_judgement(data: &[u8]) {
    let (Ok(engine), Ok(mut judging)) = (Engine::new(config(0)), Engine::new(config(0))) else {
        panic!("the fuzz configuration is valid")
    };
    judging.judge_every_advert();
    drive(data, &mut [engine, judging], false);
}

/// Feeds the events encoded in `data` to every engine alike; checks the first one's actions,
/// and that the others asked for the same.
fn drive(data: &[u8], engines: &mut [Engine], trace: bool) {
    let mut input = Input { data };
    let start = sim_epoch();
    let mut now = start;
    let mut checker = Checker::default();
    let trackers = ["a", "b"];
    let mut events = 0;
    while !input.is_empty() && events < 2000 {
        events += 1;
        let op = input.byte() % 10;
        if trace {
            eprintln!("-- event {events} op {op} at {:?}", now - start);
        }
        match op {
            0 => engines.iter_mut().for_each(|engine| engine.start(now)),
            1 | 2 => {
                let (meta, payload) = mutated_advert(&mut input);
                for engine in engines.iter_mut() {
                    engine.handle_packet(now, INTERFACE, &meta, &payload);
                }
            }
            3 => {
                let len = usize::from(input.byte());
                let payload = input.bytes(len);
                let meta = RecvMeta {
                    src: source(input.byte()),
                    dst: destination(input.byte()),
                    hop_limit: 255,
                };
                for engine in engines.iter_mut() {
                    engine.handle_packet(now, INTERFACE, &meta, &payload);
                }
            }
            4 | 5 => {
                // Jump to the next wake-up, or a little ahead.
                let step = Duration::from_millis(u64::from(input.byte()) * 10);
                now = match engines[0].poll_timeout() {
                    Some(at) if input.byte().is_multiple_of(2) => at.max(now),
                    _ => now + step,
                };
                for engine in engines.iter_mut() {
                    engine.handle_timeout(now);
                    if let Some(next) = engine.poll_timeout() {
                        assert!(next > now, "a timer stayed expired after handle_timeout");
                    }
                }
            }
            6 => {
                let router = RouterId::from_index(input.byte() % 4);
                let tracker = trackers[usize::from(input.byte() % 2)];
                let effect = match input.byte() {
                    selector if selector < 40 => TrackEffect::Fault,
                    selector => TrackEffect::Adjust(i32::from(selector) - 150),
                };
                for engine in engines.iter_mut() {
                    engine.set_tracker(now, router, tracker, effect);
                }
            }
            7 => {
                let router = RouterId::from_index(input.byte() % 4);
                let priority = match input.byte() {
                    0 => None,
                    value => Some(Priority(value)),
                };
                for engine in engines.iter_mut() {
                    engine.set_priority_override(now, router, priority);
                }
            }
            8 => {
                let variant = input.byte();
                for engine in engines.iter_mut() {
                    let _ = engine.reconfigure(now, config(variant));
                }
            }
            _ => {
                if input.byte().is_multiple_of(4) {
                    engines.iter_mut().for_each(|engine| engine.shutdown(now));
                }
            }
        }
        take_actions(engines, &mut checker, trace);
    }
    // Whatever happened, a shut-down engine stops within a bounded virtual time.
    engines.iter_mut().for_each(|engine| engine.shutdown(now));
    for _ in 0..10_000 {
        take_actions(engines, &mut checker, false);
        match engines[0].poll_timeout() {
            Some(at) => {
                now = at;
                engines
                    .iter_mut()
                    .for_each(|engine| engine.handle_timeout(now));
            }
            None => break,
        }
    }
    take_actions(engines, &mut checker, false);
    for engine in engines.iter() {
        assert!(engine.is_stopped(), "shutdown did not complete");
    }
    assert!(!checker.holds_any(), "VIPs still held after shutdown");
    assert!(now - start < Duration::from_secs(365 * 24 * 3600));
}

/// Checks the first engine's actions; the others must have asked for the same, and agree on
/// their routers' status and next deadline.
fn take_actions(engines: &mut [Engine], checker: &mut Checker, trace: bool) {
    let Some((first, others)) = engines.split_first_mut() else {
        return;
    };
    let actions: Vec<Action> = std::iter::from_fn(|| first.poll_action()).collect();
    for action in &actions {
        if trace {
            eprintln!("   {action:?}");
        }
        checker.check(action);
    }
    for other in others {
        let theirs: Vec<Action> = std::iter::from_fn(|| other.poll_action()).collect();
        assert_eq!(theirs, actions, "the engines asked for different actions");
        assert_eq!(
            other.status(),
            first.status(),
            "the engines' routers differ"
        );
        assert_eq!(
            other.poll_timeout(),
            first.poll_timeout(),
            "the engines' deadlines differ"
        );
    }
}

/// Invariants over the action stream.
#[derive(Default)]
struct Checker {
    /// VIPs held per router, and the accept mode they were added with.
    held: HashMap<RouterId, (HashSet<IpAddr>, bool)>,
    states: HashMap<RouterId, State>,
}

impl Checker {
    fn check(&mut self, action: &Action) {
        match action {
            Action::AddVips {
                router,
                vips,
                accept,
            } => {
                assert!(!vips.is_empty(), "empty AddVips");
                let (held, held_accept) = self.held.entry(*router).or_default();
                let mode_change = !held.is_empty() && *held_accept != *accept;
                assert!(
                    mode_change || vips.iter().all(|vip| !held.contains(vip)),
                    "{router}: AddVips {vips:?} while holding {held:?}"
                );
                held.extend(vips.iter().copied());
                *held_accept = *accept;
            }
            Action::RemoveVips { router, vips, .. } => {
                assert!(!vips.is_empty(), "empty RemoveVips");
                let (held, _) = self.held.entry(*router).or_default();
                assert!(
                    vips.iter().all(|vip| held.contains(vip)),
                    "{router}: RemoveVips {vips:?} while holding {held:?}"
                );
                held.retain(|vip| !vips.contains(vip));
            }
            Action::StateChanged {
                router, from, to, ..
            } => {
                let previous = self
                    .states
                    .get(router)
                    .copied()
                    .unwrap_or(State::Initialize);
                assert_eq!(
                    previous, *from,
                    "{router}: reported from {from} but was {previous}"
                );
                assert_ne!(from, to, "{router}: transition to the same state");
                self.states.insert(*router, *to);
            }
            Action::Transmit { payload, .. } => assert!(payload.len() >= 8),
            _ => {}
        }
    }

    fn holds_any(&self) -> bool {
        self.held.values().any(|(held, _)| !held.is_empty())
    }
}

fn source(selector: u8) -> IpAddr {
    match selector % 8 {
        // Our own primary addresses.
        0 => node_address(Family::V4, 0),
        1 => node_address(Family::V6, 0),
        n @ 2..=5 => node_address(Family::V4, n - 1),
        n => node_address(Family::V6, n - 5),
    }
}

fn destination(selector: u8) -> IpAddr {
    match selector % 4 {
        0 => crate::engine::multicast_address(Family::V4),
        1 => crate::engine::multicast_address(Family::V6),
        2 => node_address(Family::V4, 0),
        _ => node_address(Family::V6, 0),
    }
}

/// A valid advert for one of the configured (or unconfigured) VRIDs, with some fields and then
/// some bytes changed.
fn mutated_advert(input: &mut Input<'_>) -> (RecvMeta, Vec<u8>) {
    let template = input.byte();
    let (version, family, vrid, interval) = match template % 4 {
        0 => (Version::V2, Family::V4, 1, 100),
        1 => (Version::V3, Family::V4, 2, 20),
        2 => (Version::V3, Family::V6, 3, 50),
        _ => (Version::V3, Family::V4, 7, 100),
    };
    let priority = match input.byte() {
        0..=40 => 0,
        41..=60 => 255,
        value => value,
    };
    let src_index = 1 + input.byte() % 3;
    let src = if input.byte() < 10 {
        node_address(family, 0)
    } else {
        node_address(family, src_index)
    };
    let mut addresses = vec![vip(family, vrid)];
    if input.byte() < 30 {
        addresses.push(vip(family, 99));
    }
    let auth = if input.byte() < 200 {
        Auth::SimpleText(*b"secret\0\0")
    } else {
        Auth::None
    };
    let interval = if input.byte() < 20 {
        interval * 2
    } else {
        interval
    };
    let advert = Advertisement {
        version,
        vrid: VrId::new(vrid).unwrap_or(VrId::new(1).unwrap_or_else(|| unreachable!())),
        priority: Priority(priority),
        interval: AdvertInterval::from_centis(interval).unwrap_or(AdvertInterval::DEFAULT),
        addresses,
        auth,
    };
    let dst = crate::engine::multicast_address(family);
    let mut payload = advert.to_bytes(src, dst, Default::default());
    for _ in 0..input.byte() % 4 {
        let position = usize::from(input.byte());
        let flip = input.byte();
        let len = payload.len().max(1);
        if let Some(byte) = payload.get_mut(position % len) {
            *byte ^= flip;
        }
    }
    let hop_limit = if input.byte() < 5 { 64 } else { 255 };
    (
        RecvMeta {
            src,
            dst,
            hop_limit,
        },
        payload,
    )
}
