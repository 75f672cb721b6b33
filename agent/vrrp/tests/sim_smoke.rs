use std::time::Duration;

use hav_vrrp::engine::{EngineConfig, State};
use hav_vrrp::sim::{Sim, router};
use hav_vrrp::{Family, Version};

#[test]
fn two_routers_elect_one_master() {
    let configs = (0..2)
        .map(|n| {
            let config = EngineConfig {
                routers: vec![router(
                    "vr",
                    1,
                    Version::V3,
                    Family::V4,
                    n,
                    100 + n * 50,
                    100,
                )],
                sync_groups: vec![],
            };
            (format!("n{n}"), config)
        })
        .collect();
    let mut sim = Sim::new(1, configs);
    sim.start_all();
    sim.run_for(Duration::from_secs(10));
    for node in &sim.nodes {
        for entry in &node.timeline {
            println!(
                "{} {:?} {} {}->{} {}",
                node.name,
                entry.at - sim.epoch,
                entry.router,
                entry.from,
                entry.to,
                entry.cause
            );
        }
    }
    assert_eq!(sim.masters("vr"), [1]);
    assert_eq!(sim.nodes[0].state("vr"), State::Backup);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// After a partition heals, the better master hears the other master's lower-priority advert;
/// besides answering at once it announces its VIPs again, because hosts learnt them at the
/// other master's MAC meanwhile (found by the cross-process link-cut test: without it the client
/// stayed on the old MAC until its ARP entry went stale, about 4.5 s).
#[test]
fn healed_split_brain_master_announces_its_vips_again() {
    let configs = (0..2)
        .map(|n| {
            let config = EngineConfig {
                routers: vec![router(
                    "vr",
                    1,
                    Version::V3,
                    Family::V4,
                    n,
                    100 + n * 50,
                    10,
                )],
                sync_groups: vec![],
            };
            (format!("n{n}"), config)
        })
        .collect();
    let mut sim = Sim::new(7, configs);
    sim.start_all();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.masters("vr"), [1]);
    sim.partition(&[&[0], &[1]]);
    // Long enough for both GARP bursts of the isolated backup turned master to be over.
    sim.run_for(Duration::from_secs(12));
    assert_eq!(sim.masters("vr"), [0, 1]);
    let before = sim.nodes[1].announcements;
    sim.heal();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.masters("vr"), [1]);
    assert!(
        sim.nodes[1].announcements > before,
        "the remaining master did not announce again ({before} before the heal)"
    );
}
