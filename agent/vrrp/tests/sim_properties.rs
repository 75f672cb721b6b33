//! Properties of the election over random LANs of 2–5 routers, in virtual time.
//!
//! Every case is a pure function of its generated parameters (the seed included), which
//! proptest prints on failure. Each test prints how many scenarios it ran and how long they
//! took. With loss, the properties are stated over the loss-free window that follows.

use std::cell::Cell;
use std::time::{Duration, Instant};

use hav_vrrp::engine::{EngineConfig, Peer, Peers, Preempt, State, SyncGroupConfig, TrackEffect};
use hav_vrrp::sim::{Sim, node_address, router};
use hav_vrrp::{Family, Priority, Version};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const ROUTER: &str = "vr";

#[derive(Debug, Clone)]
struct Lan {
    version: Version,
    family: Family,
    interval_centis: u16,
    priorities: Vec<u8>,
    preempt: bool,
    delay: Duration,
    loss_per_mille: u32,
    start_offsets: Vec<Duration>,
    seed: u64,
}

impl Lan {
    fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_centis) * 10)
    }

    fn skew(&self, priority: u8) -> Duration {
        let weight = 256 - u64::from(priority);
        match self.version {
            Version::V2 => Duration::from_micros(weight * 1_000_000 / 256),
            _ => Duration::from_micros(weight * self.interval().as_micros() as u64 / 256),
        }
    }

    /// 3 × interval + the largest skew: the longest any backup waits.
    fn master_down(&self) -> Duration {
        let lowest = self.priorities.iter().copied().min().unwrap_or(1);
        3 * self.interval() + self.skew(lowest)
    }

    fn configs(&self) -> Vec<(String, EngineConfig)> {
        (0..self.priorities.len())
            .map(|n| {
                let mut config = router(
                    ROUTER,
                    1,
                    self.version,
                    self.family,
                    n as u8,
                    self.priorities[n],
                    self.interval_centis,
                );
                if !self.preempt {
                    config.preempt = Preempt::Off;
                }
                (
                    format!("n{n}"),
                    EngineConfig {
                        routers: vec![config],
                        sync_groups: vec![],
                    },
                )
            })
            .collect()
    }

    /// Nodes with the highest priority.
    fn best(&self) -> Vec<usize> {
        let top = self.priorities.iter().copied().max().unwrap_or(0);
        (0..self.priorities.len())
            .filter(|&n| self.priorities[n] == top)
            .collect()
    }

    fn sim(&self) -> Sim {
        let mut sim = Sim::new(self.seed, self.configs());
        sim.delay = self.delay;
        sim.loss_per_mille = self.loss_per_mille;
        sim
    }

    /// Starts the nodes at their offsets.
    fn start(&self, sim: &mut Sim) {
        let mut order: Vec<usize> = (0..self.priorities.len()).collect();
        order.sort_by_key(|&n| self.start_offsets[n]);
        for n in order {
            sim.run_until(sim.epoch + self.start_offsets[n]);
            sim.start(n);
        }
    }
}

fn lan(max_nodes: usize, max_loss: u32) -> impl Strategy<Value = Lan> {
    let kind = prop_oneof![
        Just((Version::V2, Family::V4)),
        Just((Version::V3, Family::V4)),
        Just((Version::V3, Family::V6)),
    ];
    (kind, 2..=max_nodes).prop_flat_map(move |((version, family), nodes)| {
        let interval = match version {
            Version::V2 => (1u16..=3).prop_map(|secs| secs * 100).boxed(),
            _ => (10u16..=300).boxed(),
        };
        (
            interval,
            proptest::collection::vec(1u8..=254, nodes),
            any::<bool>(),
            0u64..=3000,
            0..=max_loss,
            proptest::collection::vec(0u64..=3000, nodes),
            any::<u64>(),
        )
            .prop_map(
                move |(interval_centis, priorities, preempt, delay_us, loss, offsets, seed)| Lan {
                    version,
                    family,
                    interval_centis,
                    priorities,
                    preempt,
                    delay: Duration::from_micros(delay_us),
                    loss_per_mille: loss,
                    start_offsets: offsets.into_iter().map(Duration::from_millis).collect(),
                    seed,
                },
            )
    })
}

/// Prints the figures of a property test when it ends.
struct Figures {
    name: &'static str,
    scenarios: Cell<u64>,
    started: Instant,
}

impl Figures {
    #[allow(clippy::disallowed_methods)] // Wall time of the test run, for the printed figure only.
    fn new(name: &'static str) -> Self {
        Self {
            name,
            scenarios: Cell::new(0),
            started: Instant::now(),
        }
    }

    fn count(&self) {
        self.scenarios.set(self.scenarios.get() + 1);
    }
}

impl Drop for Figures {
    fn drop(&mut self) {
        eprintln!(
            "property {}: {} scenarios, {} packets delivered, in {:.2} s",
            self.name,
            self.scenarios.get(),
            PACKETS.with(Cell::get),
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Checks that exactly one node is Master (and holds the VIPs) at every instant until `until`,
/// and that it never changes; returns it.
fn exactly_one_master_until(
    sim: &mut Sim,
    until: Instant,
    lan: &Lan,
) -> Result<usize, TestCaseError> {
    let mut failure = None;
    let mut master = None;
    sim.run_until_with(until, |sim| {
        if failure.is_some() {
            return;
        }
        let masters = sim.masters(ROUTER);
        match (masters.as_slice(), master) {
            ([only], None) => master = Some(*only),
            ([only], Some(previous)) if *only == previous => {}
            _ => {
                failure = Some(format!(
                    "masters {masters:?} at {:?} (before: {master:?})",
                    sim.elapsed()
                ))
            }
        }
    });
    if let Some(failure) = failure {
        return Err(TestCaseError::fail(format!(
            "{failure}; seed {}; {}",
            lan.seed,
            timelines(sim)
        )));
    }
    let master = master.ok_or_else(|| TestCaseError::fail("no master"))?;
    prop_assert_eq!(
        sim.holders(ROUTER),
        vec![master],
        "VIP holders; seed {}",
        lan.seed
    );
    prop_assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    Ok(master)
}

/// Adds a passed scenario's packets to the printed figures.
fn count_packets(sim: &Sim) {
    PACKETS.with(|packets| packets.set(packets.get() + sim.delivered));
}

fn timelines(sim: &Sim) -> String {
    let mut out = String::new();
    for node in &sim.nodes {
        for entry in &node.timeline {
            out.push_str(&format!(
                "\n  {:>12?} {} {} {} -> {}: {}",
                entry.at - sim.epoch,
                node.name,
                entry.router,
                entry.from,
                entry.to,
                entry.cause
            ));
        }
    }
    out
}

/// `PROPTEST_CASES` overrides the default number of cases per property.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Exactly one master within 3 × interval + skew once the LAN is connected and loss-free,
    /// and the highest effective priority (base + tracker weight) wins when preemption is on
    /// (ties: any of the highest).
    #[test]
    fn one_master_after_loss_stops(
        lan in lan(5, 200),
        chaos_intervals in 0u32..20,
        weights in proptest::collection::vec(-60i32..60, 5),
    ) {
        FIGURES_ELECTION.with(Figures::count);
        let mut sim = lan.sim();
        lan.start(&mut sim);
        // Trackers move the effective priorities; from here on the LAN runs on those.
        for (node, weight) in weights.iter().copied().enumerate().take(lan.priorities.len()) {
            sim.with_engine(node, |engine, now| {
                if let Some(id) = engine.router_id(ROUTER) {
                    engine.set_tracker(now, id, "weight", TrackEffect::Adjust(weight));
                }
            });
        }
        // A master-down timer armed before the change still runs on the old (larger) skew.
        let slowest = lan.master_down();
        let mut lan = lan;
        for (priority, weight) in lan.priorities.iter_mut().zip(&weights) {
            *priority = (i32::from(*priority) + weight).clamp(1, 254) as u8;
        }
        sim.run_for(lan.interval() * chaos_intervals);
        sim.loss_per_mille = 0;
        let settled = sim.now + slowest.max(lan.master_down()) + 2 * lan.delay + Duration::from_micros(1);
        sim.run_until(settled);
        let master = exactly_one_master_until(&mut sim, settled + 20 * lan.interval(), &lan)?;
        if lan.preempt {
            prop_assert!(lan.best().contains(&master), "master n{} is not among the best {:?}; seed {}{}",
                master, lan.best(), lan.seed, timelines(&sim));
        }
        count_packets(&sim);
    }

    /// Simultaneous start, no loss: the highest priority wins, ties by the highest address.
    #[test]
    fn highest_priority_then_address_wins(mut lan in lan(5, 0)) {
        FIGURES_ELECTION.with(Figures::count);
        lan.start_offsets.iter_mut().for_each(|offset| *offset = Duration::ZERO);
        lan.preempt = true;
        let mut sim = lan.sim();
        lan.start(&mut sim);
        let settled = sim.now + lan.master_down() + 2 * lan.delay + Duration::from_micros(1);
        sim.run_until(settled);
        let master = exactly_one_master_until(&mut sim, settled + 20 * lan.interval(), &lan)?;
        // Node addresses grow with the index.
        let expected = lan.best().into_iter().max();
        prop_assert_eq!(Some(master), expected, "seed {}{}", lan.seed, timelines(&sim));
        count_packets(&sim);
    }

    /// Without preemption a recovered higher-priority router does not take over.
    #[test]
    fn nopreempt_keeps_the_master(mut lan in lan(5, 0)) {
        FIGURES_NOPREEMPT.with(Figures::count);
        lan.preempt = false;
        let mut sim = lan.sim();
        lan.start(&mut sim);
        let settled = sim.now + lan.master_down() + 2 * lan.delay + Duration::from_micros(1);
        sim.run_until(settled);
        let first = exactly_one_master_until(&mut sim, settled + lan.interval(), &lan)?;
        // Crash the master; another one takes over; the crashed one comes back.
        sim.crash(first);
        let settled = sim.now + lan.master_down() + 2 * lan.delay + Duration::from_micros(1);
        sim.run_until(settled);
        let second = exactly_one_master_until(&mut sim, settled + lan.interval(), &lan)?;
        prop_assert_ne!(second, first);
        sim.start(first);
        let until = sim.now + 3 * lan.master_down();
        let third = exactly_one_master_until(&mut sim, until, &lan)?;
        prop_assert_eq!(third, second, "the recovered router took over; seed {}{}", lan.seed, timelines(&sim));
        count_packets(&sim);
    }

    /// After a partition heals, no two masters remain after one advert interval.
    #[test]
    fn partition_heals_within_one_interval(lan in lan(5, 0), split_mask in 0u32..32) {
        FIGURES_PARTITION.with(Figures::count);
        let nodes = lan.priorities.len();
        // Node 0 on the left, node 1 on the right, the others by the mask.
        let on_left = |n: usize| n == 0 || (n > 1 && split_mask & (1 << n) != 0);
        let left: Vec<usize> = (0..nodes).filter(|&n| on_left(n)).collect();
        let right: Vec<usize> = (0..nodes).filter(|&n| !on_left(n)).collect();
        let mut sim = lan.sim();
        lan.start(&mut sim);
        sim.run_for(lan.master_down() + 2 * lan.delay);
        sim.partition(&[&left, &right]);
        sim.run_for(2 * lan.master_down() + 2 * lan.delay);
        for side in [&left, &right] {
            let masters: Vec<usize> = sim.masters(ROUTER).into_iter().filter(|n| side.contains(n)).collect();
            prop_assert_eq!(masters.len(), 1, "side {:?}; seed {}{}", side, lan.seed, timelines(&sim));
        }
        sim.heal();
        let healed = sim.now + lan.interval() + lan.delay + Duration::from_micros(1);
        sim.run_until(healed);
        exactly_one_master_until(&mut sim, healed + 20 * lan.interval(), &lan)?;
        count_packets(&sim);
    }

    /// A graceful shutdown hands over within skew time (+ delay), and some node holds the VIPs
    /// at every instant (make-before-break).
    #[test]
    fn shutdown_hands_over_without_a_gap(lan in lan(5, 0)) {
        FIGURES_SHUTDOWN.with(Figures::count);
        let mut sim = lan.sim();
        lan.start(&mut sim);
        let settled = sim.now + lan.master_down() + 2 * lan.delay + Duration::from_micros(1);
        sim.run_until(settled);
        let old = exactly_one_master_until(&mut sim, settled + lan.interval(), &lan)?;
        let best_backup = (0..lan.priorities.len()).filter(|&n| n != old).map(|n| lan.priorities[n]).max().unwrap_or(1);
        sim.shutdown(old);
        let deadline = sim.now + lan.delay + lan.skew(best_backup) + Duration::from_micros(1);
        let mut gap = None;
        sim.run_until_with(deadline + 3 * lan.master_down(), |sim| {
            if gap.is_none() && sim.holders(ROUTER).is_empty() {
                gap = Some(sim.elapsed());
            }
        });
        prop_assert_eq!(gap, None, "no VIP holder; seed {}{}", lan.seed, timelines(&sim));
        let new_master = sim.nodes.iter().enumerate().filter(|(n, _)| *n != old)
            .filter_map(|(n, node)| node.timeline.iter().find(|e| e.to == State::Master && e.at > settled + lan.interval()).map(|e| (n, e.at)))
            .min_by_key(|(_, at)| *at);
        let (_, took_over) = new_master.ok_or_else(|| TestCaseError::fail(format!("nobody took over; seed {}", lan.seed)))?;
        prop_assert!(took_over <= deadline, "took over at {:?}, deadline {:?}; seed {}{}",
            took_over - sim.epoch, deadline - sim.epoch, lan.seed, timelines(&sim));
        let stopped = sim.nodes[old].engine.as_ref().is_some_and(|engine| engine.is_stopped());
        prop_assert!(stopped, "the old master did not stop");
        prop_assert!(!sim.nodes[old].holds(ROUTER));
        prop_assert_eq!(sim.holders(ROUTER).len(), 1);
        prop_assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        count_packets(&sim);
    }

    /// A master whose priority falls below a peer's (configured) priority resigns at once: a
    /// peer takes over within skew time (+ delay), and some node holds the VIPs at every
    /// instant (make-before-break).
    #[test]
    fn resign_hands_over_within_skew_time(lan in lan(5, 0)) {
        FIGURES_RESIGN.with(Figures::count);
        let nodes = lan.priorities.len();
        let mut configs = lan.configs();
        for (n, (_, config)) in configs.iter_mut().enumerate() {
            let peers = (0..nodes).filter(|&m| m != n).map(|m| Peer {
                address: node_address(lan.family, m as u8),
                priority: Some(Priority(lan.priorities[m])),
            });
            config.routers[0].peers = Peers::Unicast(peers.collect());
        }
        let mut sim = Sim::new(lan.seed, configs);
        sim.delay = lan.delay;
        lan.start(&mut sim);
        let settled = sim.now + lan.master_down() + 2 * lan.delay + Duration::from_micros(1);
        sim.run_until(settled);
        let old = exactly_one_master_until(&mut sim, settled + lan.interval(), &lan)?;
        let best_other = (0..nodes).filter(|&n| n != old).map(|n| lan.priorities[n]).max().unwrap_or(1);
        // The tracker can only lower a priority above 1, and only a peer above 1 beats that.
        prop_assume!(lan.priorities[old] > 1 && best_other > 1);
        let weight = -i32::from(lan.priorities[old]);
        sim.with_engine(old, |engine, now| {
            if let Some(id) = engine.router_id(ROUTER) {
                engine.set_tracker(now, id, "drain", TrackEffect::Adjust(weight));
            }
        });
        prop_assert_eq!(sim.nodes[old].state(ROUTER), State::Backup, "did not resign; seed {}{}", lan.seed, timelines(&sim));
        let resigned = sim.now;
        let deadline = resigned + lan.delay + lan.skew(best_other) + Duration::from_micros(1);
        let mut gap = None;
        sim.run_until_with(deadline + 3 * lan.master_down(), |sim| {
            if gap.is_none() && sim.holders(ROUTER).is_empty() {
                gap = Some(sim.elapsed());
            }
        });
        prop_assert_eq!(gap, None, "no VIP holder; seed {}{}", lan.seed, timelines(&sim));
        let took_over = sim.nodes.iter().enumerate().filter(|(n, _)| *n != old)
            .filter_map(|(_, node)| node.timeline.iter().find(|e| e.to == State::Master && e.at >= resigned).map(|e| e.at))
            .min();
        let took_over = took_over.ok_or_else(|| TestCaseError::fail(format!("nobody took over; seed {}", lan.seed)))?;
        prop_assert!(took_over <= deadline, "took over at {:?}, deadline {:?}; seed {}{}",
            took_over - sim.epoch, deadline - sim.epoch, lan.seed, timelines(&sim));
        prop_assert!(!sim.nodes[old].holds(ROUTER), "the resigned master kept its VIPs");
        prop_assert_eq!(sim.holders(ROUTER).len(), 1);
        prop_assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        count_packets(&sim);
    }

    /// Reconfiguring with an identical configuration emits no action at all, and the LAN then
    /// behaves exactly like a twin that was not reconfigured (same seed, same losses).
    #[test]
    fn identical_reconfigure_is_silent(lan in lan(4, 100), at_intervals in 0u32..20) {
        FIGURES_RECONFIGURE.with(Figures::count);
        let mut sim = lan.sim();
        let mut twin = lan.sim();
        lan.start(&mut sim);
        lan.start(&mut twin);
        sim.run_for(lan.interval() * at_intervals);
        twin.run_for(lan.interval() * at_intervals);
        for node in 0..lan.priorities.len() {
            let config = sim.nodes[node].config.clone();
            let now = sim.now;
            let Some(engine) = sim.nodes[node].engine.as_mut() else { continue };
            let report = engine.reconfigure(now, config).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(report.is_empty(), "{:?}", report);
            prop_assert_eq!(report.unchanged.len(), 1);
            let action = engine.poll_action();
            prop_assert!(action.is_none(), "reconfigure emitted {:?}", action);
        }
        let until = sim.now + 3 * lan.master_down();
        sim.run_until(until);
        twin.run_until(until);
        for (node, other) in sim.nodes.iter().zip(&twin.nodes) {
            prop_assert_eq!(&node.timeline, &other.timeline, "seed {}", lan.seed);
        }
        count_packets(&sim);
    }
}

thread_local! {
    /// Packets delivered in the simulations that passed.
    static PACKETS: Cell<u64> = const { Cell::new(0) };
    static FIGURES_ELECTION: Figures = Figures::new("election");
    static FIGURES_NOPREEMPT: Figures = Figures::new("nopreempt");
    static FIGURES_PARTITION: Figures = Figures::new("partition");
    static FIGURES_SHUTDOWN: Figures = Figures::new("shutdown");
    static FIGURES_RECONFIGURE: Figures = Figures::new("reconfigure");
    static FIGURES_SYNC: Figures = Figures::new("sync-group");
    static FIGURES_RESIGN: Figures = Figures::new("resign");
}

/// Two to three nodes, each with routers "a" and "b" in sync group "g" at one priority per
/// node; trackers fault members and crashes happen; after settling, the members of every live
/// node agree.
#[derive(Debug, Clone)]
enum Disturbance {
    Fault { node: usize, member: bool },
    Clear { node: usize, member: bool },
    Lower { node: usize, by: i32 },
    Crash { node: usize },
    Restart { node: usize },
}

fn disturbance(nodes: usize) -> impl Strategy<Value = Disturbance> {
    prop_oneof![
        (0..nodes, any::<bool>()).prop_map(|(node, member)| Disturbance::Fault { node, member }),
        (0..nodes, any::<bool>()).prop_map(|(node, member)| Disturbance::Clear { node, member }),
        (0..nodes, 0i32..100).prop_map(|(node, by)| Disturbance::Lower { node, by }),
        (0..nodes).prop_map(|node| Disturbance::Crash { node }),
        (0..nodes).prop_map(|node| Disturbance::Restart { node }),
    ]
}

fn sync_scenario() -> impl Strategy<Value = (Lan, Vec<Disturbance>)> {
    lan(3, 0).prop_flat_map(|lan| {
        let nodes = lan.priorities.len();
        (
            Just(lan),
            proptest::collection::vec(disturbance(nodes), 1..6),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: config().cases / 2, ..config() })]

    #[test]
    fn sync_group_members_agree(scenario in sync_scenario()) {
        FIGURES_SYNC.with(Figures::count);
        let (lan, disturbances) = scenario;
        let configs = (0..lan.priorities.len())
            .map(|n| {
                let member = |name: &str, vrid: u8| {
                    let mut config = router(name, vrid, lan.version, lan.family, n as u8, lan.priorities[n], lan.interval_centis);
                    if !lan.preempt {
                        config.preempt = Preempt::Off;
                    }
                    config
                };
                let group = SyncGroupConfig { name: "g".into(), members: vec!["a".into(), "b".into()] };
                (format!("n{n}"), EngineConfig { routers: vec![member("a", 1), member("b", 2)], sync_groups: vec![group] })
            })
            .collect();
        let mut sim = Sim::new(lan.seed, configs);
        sim.delay = lan.delay;
        lan.start(&mut sim);
        let settle = 3 * lan.master_down() + 4 * lan.delay + lan.interval();
        sim.run_for(settle);
        for disturbance in disturbances {
            match disturbance {
                Disturbance::Fault { node, member } | Disturbance::Clear { node, member } => {
                    let fault = matches!(disturbance, Disturbance::Fault { .. });
                    let name = if member { "a" } else { "b" };
                    sim.with_engine(node, |engine, now| {
                        if let Some(id) = engine.router_id(name) {
                            let effect = if fault { TrackEffect::Fault } else { TrackEffect::Adjust(0) };
                            engine.set_tracker(now, id, "check", effect);
                        }
                    });
                }
                Disturbance::Lower { node, by } => sim.with_engine(node, |engine, now| {
                    for name in ["a", "b"] {
                        if let Some(id) = engine.router_id(name) {
                            engine.set_tracker(now, id, "weight", TrackEffect::Adjust(-by));
                        }
                    }
                }),
                Disturbance::Crash { node } => sim.crash(node),
                Disturbance::Restart { node } => {
                    if !sim.nodes[node].is_up() {
                        sim.start(node);
                    }
                }
            }
            sim.run_for(settle);
            for (n, node) in sim.nodes.iter().enumerate().filter(|(_, node)| node.is_up()) {
                prop_assert_eq!(node.state("a"), node.state("b"), "node n{} disagrees; seed {}{}", n, lan.seed, timelines(&sim));
            }
            prop_assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        }
        count_packets(&sim);
    }
}
