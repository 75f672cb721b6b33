//! Whether a pair is settled: the layout it must return to after every fault, and the wait for
//! it.
//!
//! Settled means: both daemons running; node `a` Master of the first VIP's instance and Backup
//! of the second, node `b` the reverse; each VIP on its master alone (netlink); the client
//! answered by that master since the fault cleared. The wait wakes on every change the recorder
//! sees (VIP holders, client answers, daemon logs), with a short backstop for the daemons'
//! status, and ends at its deadline, when a daemon is found dead, or on `stop`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::cluster::{Meta, Pair, Role, instance_name};
use super::observe::{BACKSTOP, Recorder};
use super::schedule::Side;

/// How a pair looks compared with its settled layout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// What differs from the settled layout; empty when settled.
    pub problems: Vec<String>,
    /// (VIP, node) where a node holds a VIP whose instance it does not master.
    pub stale: Vec<(usize, usize)>,
    /// A daemon is not running: waiting will not help.
    pub dead: bool,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Compares `pair` with its settled layout: both daemons running; node `a` Master of slot 0 and
/// Backup of slot 1, node `b` the reverse; each VIP on its master alone; the client answered
/// by that master after `since`.
pub fn pair_health(pair: &Pair, meta: &Meta, recorder: &Recorder, since: Instant) -> Health {
    let mut health = Health::default();
    let pair_meta = &meta.pairs[pair.index];
    for side in [Side::A, Side::B] {
        let node = pair.node_ref(side);
        if !node.alive(recorder) {
            health.dead = true;
            let status = recorder
                .exited(node.index, node.generation)
                .map(|e| e.status)
                .unwrap_or_default();
            health
                .problems
                .push(format!("{}: daemon not running ({status})", node.label));
        }
    }
    if health.dead {
        return health;
    }
    let roles: Vec<[Role; 2]> = [Side::A, Side::B]
        .iter()
        .map(|&side| {
            let node = pair.node_ref(side);
            [node.role(0), node.role(1)]
        })
        .collect();
    for (slot, (&vip, &master)) in pair_meta.vips.iter().zip(&pair_meta.nodes).enumerate() {
        for side in [Side::A, Side::B] {
            let role = &roles[side.slot()][slot];
            let want = if side.slot() == slot {
                Role::Master
            } else {
                Role::Backup
            };
            if *role != want {
                health.problems.push(format!(
                    "{} {}: {role:?}, want {want:?}",
                    pair.node_ref(side).label,
                    instance_name(slot)
                ));
            }
        }
        let holders = recorder.holders(vip);
        for &holder in &holders {
            let holder_role = meta.nodes[holder]
                .pair
                .eq(&pair.index)
                .then(|| &roles[meta.nodes[holder].side.slot()][slot]);
            if holder_role != Some(&Role::Master) {
                health.stale.push((vip, holder));
            }
        }
        if holders.len() != 1 || !holders.contains(&master) {
            let names: Vec<&str> = holders
                .iter()
                .map(|&n| meta.nodes[n].label.as_str())
                .collect();
            health.problems.push(format!(
                "{} held by {names:?}, want [{}]",
                meta.vips[vip].label, meta.nodes[master].label
            ));
        }
        match recorder.last_answer(vip) {
            Some((node, at)) if node == master && at >= since => {}
            other => health.problems.push(format!(
                "{}: client last answered by {:?}, want {} after the fault",
                meta.vips[vip].label,
                other.map(|(n, _)| meta.nodes[n].label.as_str()),
                meta.nodes[master].label
            )),
        }
    }
    health
}

/// How waiting for a settled pair ended.
#[derive(Debug, Clone)]
pub struct Settle {
    /// When the pair first looked settled and then stayed so for the quiet period.
    pub settled_at: Option<Instant>,
    /// The last look (at the deadline, or when a daemon was found dead).
    pub last: Health,
}

/// Waits until `pair` is settled ([`pair_health`]) and stays so for `quiet`, at most `timeout`.
/// Returns early when a daemon is dead (waiting would not help) or `stop` is set.
pub fn wait_settled(
    pair: &Pair,
    meta: &Meta,
    recorder: &Recorder,
    since: Instant,
    timeout: Duration,
    quiet: Duration,
    stop: &AtomicBool,
) -> Settle {
    let deadline = Instant::now() + timeout;
    let mut ok_since: Option<Instant> = None;
    loop {
        let generation = recorder.generation();
        let health = pair_health(pair, meta, recorder, since);
        let now = Instant::now();
        if health.ok() {
            let first = *ok_since.get_or_insert(now);
            if now.duration_since(first) >= quiet {
                return Settle {
                    settled_at: Some(first),
                    last: health,
                };
            }
        } else {
            ok_since = None;
            if health.dead {
                return Settle {
                    settled_at: None,
                    last: health,
                };
            }
        }
        if now >= deadline || stop.load(Ordering::SeqCst) {
            return Settle {
                settled_at: None,
                last: health,
            };
        }
        let wake = ok_since.map_or(deadline, |first| (first + quiet).min(deadline));
        recorder.wait_change(
            generation,
            wake.saturating_duration_since(now).min(BACKSTOP),
        );
    }
}
